"""Z3 backend on real solver calls: hand-built programs with known answers (both ReLU encodings), exact
rational conversion, quadratic balls, optimisation, fixed-input network encodings vs onnxruntime."""

from __future__ import annotations

from fractions import Fraction

import numpy as np
import pytest

pytest.importorskip("z3")

from netkit import ibp, relu_of_difference  # noqa: E402

from encoders.encode import encode_network  # noqa: E402
from encoders.errors import ConfigError  # noqa: E402
from encoders.network import network_from_layers  # noqa: E402
from encoders.program import Program, Sense  # noqa: E402
from verifier.backends.base import Backend, get_backend  # noqa: E402
from verifier.backends.z3 import RELU_ENCODINGS, Z3Backend  # noqa: E402
from verifier.results import SolveStatus  # noqa: E402

TIMEOUT = 20.0
FEAS_TOL = 1e-9  # z3 is exact; only the final rational → double rounding remains


@pytest.fixture(params=sorted(RELU_ENCODINGS))
def backend(request) -> Z3Backend:
    return Z3Backend(relu_encoding=request.param)


# ---------------------------------------------------------------------------------------------
# helpers
# ---------------------------------------------------------------------------------------------
def _random_weights(rng: np.random.Generator, sizes: list[int]) -> list[tuple[np.ndarray, np.ndarray]]:
    return [(rng.normal(0.0, 0.6, (m, n)), rng.normal(0.0, 0.3, m)) for n, m in zip(sizes[:-1], sizes[1:])]


def _assert_feasible(prog: Program, x: np.ndarray, tol: float = FEAS_TOL) -> None:
    viol = prog.violation(x)
    assert max(viol.values()) <= tol, viol


# ---------------------------------------------------------------------------------------------
# protocol
# ---------------------------------------------------------------------------------------------
def test_registry_and_protocol() -> None:
    b = get_backend("z3")
    assert isinstance(b, Z3Backend) and isinstance(b, Backend)
    assert b.name == "z3" and b.version()[0].isdigit()
    p, v = relu_of_difference(0.5)
    p.add_ball(np.array([v["x0"], v["x1"]]), np.zeros(2), 0.5)
    p.set_objective([v["y"]], [1.0])
    assert b.unsupported(p) == []
    with pytest.raises(ConfigError, match="relu_encoding"):
        Z3Backend(relu_encoding="bigm")


# ---------------------------------------------------------------------------------------------
# hand-built programs with known answers
# ---------------------------------------------------------------------------------------------
@pytest.mark.parametrize(
    "y_lower, expected",
    [
        (1.5, SolveStatus.SAT),
        (2.0, SolveStatus.SAT),
        (2.0 + 1e-12, SolveStatus.UNSAT),
        (2.5, SolveStatus.UNSAT),
    ],
)
def test_relu_of_difference(backend: Z3Backend, y_lower: float, expected: SolveStatus) -> None:
    p, v = relu_of_difference(y_lower)
    out = backend.solve(p, TIMEOUT)
    assert out.status is expected, out.message
    assert out.backend == "z3" and out.solver_version
    if expected is SolveStatus.SAT:
        x = out.assignment
        assert x is not None and x.shape == (p.n_vars,)
        _assert_feasible(p, x)
        assert x[v["y"]] >= y_lower


def test_relu_semantics_not_just_bounds(backend: Z3Backend) -> None:
    p, v = relu_of_difference(-5.0)
    q = p.copy()
    q.add_row([v["y"]], [1.0], Sense.LE, -0.1)
    assert backend.solve(q, TIMEOUT).status is SolveStatus.UNSAT
    q = p.copy()
    q.add_row([v["y"]], [1.0], Sense.EQ, 0.0)
    q.add_row([v["z"]], [1.0], Sense.GE, 1e-9)
    assert backend.solve(q, TIMEOUT).status is SolveStatus.UNSAT
    q = p.copy()
    q.add_row([v["z"]], [1.0], Sense.LE, -0.5)
    out = backend.solve(q, TIMEOUT)
    assert out.status is SolveStatus.SAT and out.assignment[v["y"]] == 0.0


def test_infeasible_box() -> None:
    b = Z3Backend()
    p = Program()
    x = p.add_vars("x", [0.0, 0.0], [1.0, 1.0])
    p.add_row(x, [1.0, 1.0], Sense.GE, 2.0 + 2.0**-50)
    assert b.solve(p, TIMEOUT).status is SolveStatus.UNSAT
    q = Program()
    y = q.add_vars("x", [0.0, 0.0], [1.0, 1.0])
    q.add_row(y, [1.0, 1.0], Sense.GE, 2.0)  # the corner (1, 1) only
    out = b.solve(q, TIMEOUT)
    assert out.status is SolveStatus.SAT
    np.testing.assert_array_equal(out.assignment, [1.0, 1.0])


def test_coefficients_are_the_exact_doubles() -> None:
    """``x == 0.1`` means the double 0.1000000000000000055511…, so ``10 x <= 1`` is infeasible and
    ``10 x >= 1`` feasible — a decimal (``"0.1"``) translation would get both the other way round."""
    b = Z3Backend()
    assert Fraction(0.1) * 10 > 1  # premise
    p = Program()
    x = p.add_var("x", 0.1, 0.1)
    q = p.copy()
    q.add_row([x], [10.0], Sense.LE, 1.0)
    assert b.solve(q, TIMEOUT).status is SolveStatus.UNSAT
    q = p.copy()
    q.add_row([x], [10.0], Sense.GE, 1.0)
    out = b.solve(q, TIMEOUT)
    assert out.status is SolveStatus.SAT and out.assignment[0] == 0.1


# ---------------------------------------------------------------------------------------------
# quadratic balls
# ---------------------------------------------------------------------------------------------
@pytest.mark.parametrize(
    "threshold, expected",
    [
        (1.4142, SolveStatus.SAT),
        (1.41421356, SolveStatus.SAT),
        (1.41421357, SolveStatus.UNSAT),
        (1.5, SolveStatus.UNSAT),
    ],
)
def test_ball_meets_half_plane_iff_close_enough(threshold: float, expected: SolveStatus) -> None:
    """Unit disc around (0.3, −0.2) meets ``(x − 0.3) + (y + 0.2) >= t`` iff ``t <= √2 = 1.414213562…``."""
    p = Program()
    x = p.add_vars("x", [-3.0, -3.0], [3.0, 3.0])
    c = np.array([0.3, -0.2])
    p.add_ball(x, c, 1.0)
    p.add_row(x, [1.0, 1.0], Sense.GE, threshold + 0.3 - 0.2)
    out = Z3Backend().solve(p, TIMEOUT)
    assert out.status is expected, out.message
    if expected is SolveStatus.SAT:
        _assert_feasible(p, out.assignment, tol=1e-8)


def test_ball_around_a_network_input(tmp_path) -> None:
    """L2 ball of radius 0.05 around x0: the output cannot move by more than ‖W‖-Lipschitz · 0.05,
    while a 0.2-ball does reach a value the 0.05-ball cannot."""
    rng = np.random.default_rng(3)
    net = network_from_layers(_random_weights(rng, [2, 4, 1]))
    x0 = np.array([0.2, -0.4])
    grid = x0 + 0.2 * np.stack(np.meshgrid(np.linspace(-1, 1, 41), np.linspace(-1, 1, 41)), -1).reshape(-1, 2)
    inside = np.linalg.norm(grid - x0, axis=1) <= 0.2
    y_far = float(net.evaluate(grid[inside]).max())  # reachable within 0.2
    lip = np.prod([np.linalg.norm(a.W, 2) for a in net.affines])
    y0 = float(net.evaluate(x0)[0])
    assert y_far > y0 + lip * 0.05 + 1e-6, "premise: the 0.2-ball reaches beyond the 0.05-ball's bound"
    for radius, expected in ((0.2, SolveStatus.SAT), (0.05, SolveStatus.UNSAT)):
        prog = Program()
        inp = prog.add_vars("x", x0 - 0.2, x0 + 0.2)
        enc = encode_network(prog, net, inp, *ibp(net, x0 - 0.2, x0 + 0.2))
        prog.add_ball(inp, x0, radius)
        prog.add_row([enc.outputs[0]], [1.0], Sense.GE, y_far - 1e-9)
        out = Z3Backend().solve(prog, TIMEOUT)
        assert out.status is expected, (radius, out.message)
        if expected is SolveStatus.SAT:
            _assert_feasible(prog, out.assignment, tol=1e-8)
            assert net.evaluate(out.assignment[inp])[0] >= y_far - 1e-6


def test_algebraic_model_values_are_approximated() -> None:
    import z3

    from verifier.backends.z3 import _Translator

    p = Program()
    p.add_var("x", 0.0, 2.0)
    tr = _Translator(z3, p, "ite")
    s = z3.Solver(ctx=tr.ctx)
    s.from_string(tr.script())
    x = tr.var("x0")
    s.add(x * x == 2)
    assert s.check() == z3.sat
    assert z3.is_algebraic_value(s.model().eval(x))
    assert float(tr.value(s.model(), x)) == pytest.approx(2.0**0.5, abs=1e-15)


def test_script_numbers_are_exact() -> None:
    from verifier.backends.z3 import _smt_number

    assert _smt_number(Fraction(3)) == "3.0"
    assert _smt_number(Fraction(-3, 4)) == "(- (/ 3.0 4.0))"
    assert _smt_number(Fraction(0.1)) == "(/ 3602879701896397.0 36028797018963968.0)"


# ---------------------------------------------------------------------------------------------
# optimisation
# ---------------------------------------------------------------------------------------------
def test_lp_optimum_is_exact() -> None:
    """max 3x + y s.t. x + 2y <= 4, x, y ∈ [0, 3]: optimum 19/2 at (3, 1/2)."""
    p = Program()
    x = p.add_vars("x", [0.0, 0.0], [3.0, 3.0])
    p.add_row(x, [1.0, 2.0], Sense.LE, 4.0)
    p.set_objective(x, [3.0, 1.0], maximize=True)
    out = Z3Backend().solve(p, TIMEOUT)
    assert out.status is SolveStatus.OPTIMAL, out.message
    assert out.bound == 9.5 and out.objective == 9.5
    np.testing.assert_array_equal(out.assignment, [3.0, 0.5])


@pytest.mark.parametrize("maximize", [False, True])
def test_optimum_bound_is_rounded_towards_safety(maximize: bool) -> None:
    """min x s.t. 3x >= 1 has optimum 1/3; max x s.t. 3x <= 2 has 2/3 — neither is a double."""
    p = Program()
    x = p.add_var("x", -1.0, 1.0)
    p.add_row([x], [3.0], Sense.LE if maximize else Sense.GE, 2.0 if maximize else 1.0)
    p.set_objective([x], [1.0], maximize=maximize, constant=0.0)
    out = Z3Backend().solve(p, TIMEOUT)
    assert out.status is SolveStatus.OPTIMAL
    exact = Fraction(2, 3) if maximize else Fraction(1, 3)
    if maximize:
        assert Fraction(out.bound) >= exact
    else:
        assert Fraction(out.bound) <= exact
    assert abs(Fraction(out.bound) - exact) < Fraction(1, 2**52)
    assert out.objective == pytest.approx(float(exact), abs=1e-15)


def test_network_maximum_dominates_samples_and_is_attained(backend: Z3Backend) -> None:
    """Max of a 2-6-1 network over [-1, 1]²: ≥ every grid sample, and the argmax evaluates to it."""
    rng = np.random.default_rng(5)
    net = network_from_layers(_random_weights(rng, [2, 6, 1]))
    lo, hi = -np.ones(2), np.ones(2)
    prog = Program()
    inp = prog.add_vars("x", lo, hi)
    enc = encode_network(prog, net, inp, *ibp(net, lo, hi))
    prog.set_objective(enc.outputs, [1.0], maximize=True, constant=0.25)
    out = backend.solve(prog, TIMEOUT)
    assert out.status is SolveStatus.OPTIMAL, out.message
    grid = np.stack(np.meshgrid(np.linspace(-1, 1, 101), np.linspace(-1, 1, 101)), -1).reshape(-1, 2)
    assert out.bound >= net.evaluate(grid).max() + 0.25
    assert net.evaluate(out.assignment[inp])[0] + 0.25 == pytest.approx(out.bound, abs=1e-9)
    assert out.objective == pytest.approx(out.bound, abs=1e-12)


# ---------------------------------------------------------------------------------------------
# fixed-input network encodings vs onnxruntime
# ---------------------------------------------------------------------------------------------
# ---------------------------------------------------------------------------------------------
# limits
# ---------------------------------------------------------------------------------------------
def test_hard_query_times_out() -> None:
    """90 unstable ReLUs and an output threshold 5 % above the sampled maximum: far beyond 0.3 s."""
    rng = np.random.default_rng(0)
    net = network_from_layers(_random_weights(rng, [5, 30, 30, 30, 1]))
    lo, hi = -np.ones(5), np.ones(5)
    y_max = float(net.evaluate(rng.uniform(-1.0, 1.0, (20000, 5))).max())
    prog = Program()
    enc = encode_network(prog, net, prog.add_vars("x", lo, hi), *ibp(net, lo, hi))
    prog.add_row([enc.outputs[0]], [1.0], Sense.GE, 1.05 * y_max)
    out = Z3Backend().solve(prog, 0.3)
    assert out.status is SolveStatus.TIMEOUT, out.message
    assert "timeout" in out.message or "cancel" in out.message
    assert out.time_s < 10.0 and out.assignment is None
    # optimisation: z3.Optimize reports a bare "unknown" at its time limit — still a TIMEOUT
    prog.rows.pop()
    prog.set_objective(enc.outputs, [1.0], maximize=True)
    out = Z3Backend().solve(prog, 0.3)
    assert out.status is SolveStatus.TIMEOUT, out.message
    assert out.bound is None and out.time_s < 10.0
