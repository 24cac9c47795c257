"""Marabou backend on real solver calls: hand-built programs with known answers, fixed-input network
encodings checked against onnxruntime, and a clean stdout."""

from __future__ import annotations

import numpy as np
import pytest

pytest.importorskip("maraboupy")

from netkit import ibp, relu_of_difference  # noqa: E402

from encoders.encode import encode_network  # noqa: E402
from encoders.errors import UnsupportedQueryError  # noqa: E402
from encoders.network import load_onnx, ort_evaluate, save_onnx  # noqa: E402
from encoders.program import Program, Sense  # noqa: E402
from verifier.backends.base import Backend, get_backend  # noqa: E402
from verifier.backends.marabou import MarabouBackend, silence_stdout  # noqa: E402
from verifier.results import SolveStatus  # noqa: E402

TIMEOUT = 20.0
FEAS_TOL = 1e-6


@pytest.fixture(scope="module")
def backend() -> MarabouBackend:
    return MarabouBackend()


# ---------------------------------------------------------------------------------------------
# helpers
# ---------------------------------------------------------------------------------------------
def _random_weights(rng: np.random.Generator, sizes: list[int]) -> list[tuple[np.ndarray, np.ndarray]]:
    return [(rng.normal(0.0, 0.6, (m, n)), rng.normal(0.0, 0.3, m)) for n, m in zip(sizes[:-1], sizes[1:])]


def _pinned_program(net, x0: np.ndarray, box_radius: float = 1.0):
    """Encode ``net`` with bounds valid over ``x0 ± box_radius`` but the input pinned to ``x0``.

    The wide box keeps many ReLUs unstable, so the solver really has to decide their phases.
    """
    prog = Program()
    inp = prog.add_vars("x", x0, x0)
    lower, upper = ibp(net, x0 - box_radius, x0 + box_radius)
    enc = encode_network(prog, net, inp, lower, upper)
    return prog, enc


def _assert_feasible(prog: Program, x: np.ndarray, tol: float = FEAS_TOL) -> None:
    viol = prog.violation(x)
    assert max(viol.values()) <= tol, viol


# ---------------------------------------------------------------------------------------------
# protocol
# ---------------------------------------------------------------------------------------------
def test_registry_and_protocol() -> None:
    b = get_backend("marabou")
    assert isinstance(b, MarabouBackend) and isinstance(b, Backend)
    assert b.name == "marabou"
    assert b.version().startswith("2.")


def test_options_mirror_create_options() -> None:
    """``make_options`` must equal maraboupy's own ``createOptions`` (defaults and overrides)."""
    import warnings

    from maraboupy import MarabouCore

    from verifier.backends.marabou import OPTION_DEFAULTS, make_options

    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        from maraboupy import Marabou
    theirs = Marabou.createOptions(timeoutInSeconds=7, numWorkers=3, verbosity=0, snc=True)
    ours = make_options(MarabouCore, _timeoutInSeconds=7, _numWorkers=3, _verbosity=0, _snc=True)
    fields = {a for a in dir(theirs) if a.startswith("_") and not a.startswith("__")}
    assert fields == set(OPTION_DEFAULTS)
    for key in OPTION_DEFAULTS:
        assert getattr(ours, key) == getattr(theirs, key), key
    with pytest.raises(ValueError, match="unknown"):
        make_options(MarabouCore, _noSuchOption=1)


def test_unsupported_kinds_are_reported_and_refused(backend: MarabouBackend) -> None:
    p, v = relu_of_difference(0.5)
    assert backend.unsupported(p) == []
    q = p.copy()
    q.set_objective([v["y"]], [1.0])
    assert backend.unsupported(q) == ["objective"]
    with pytest.raises(UnsupportedQueryError, match="objective"):
        backend.solve(q, TIMEOUT)
    r = p.copy()
    r.add_ball(np.array([v["x0"], v["x1"]]), np.zeros(2), 0.5)
    assert backend.unsupported(r) == ["quadratic"]


# ---------------------------------------------------------------------------------------------
# hand-built programs with known answers
# ---------------------------------------------------------------------------------------------
@pytest.mark.parametrize(
    "y_lower, expected",
    [(1.5, SolveStatus.SAT), (1.99, SolveStatus.SAT), (2.01, SolveStatus.UNSAT), (2.5, SolveStatus.UNSAT)],
)
def test_relu_of_difference(backend: MarabouBackend, y_lower: float, expected: SolveStatus) -> None:
    p, v = relu_of_difference(y_lower)
    out = backend.solve(p, TIMEOUT)
    assert out.status is expected, out.message
    assert out.backend == "marabou" and out.solver_version
    if expected is SolveStatus.SAT:
        x = out.assignment
        assert x is not None and x.shape == (p.n_vars,)
        _assert_feasible(p, x)
        assert x[v["y"]] >= y_lower - FEAS_TOL


def test_relu_semantics_not_just_bounds(backend: MarabouBackend) -> None:
    """``y`` may be negative by its bounds, but not as a ReLU output; nor 0 when ``z`` is positive."""
    p, v = relu_of_difference(-5.0)
    q = p.copy()
    q.add_row([v["y"]], [1.0], Sense.LE, -0.1)
    assert backend.solve(q, TIMEOUT).status is SolveStatus.UNSAT
    q = p.copy()
    q.add_row([v["y"]], [1.0], Sense.EQ, 0.0)
    q.add_row([v["z"]], [1.0], Sense.GE, 0.5)
    assert backend.solve(q, TIMEOUT).status is SolveStatus.UNSAT
    q = p.copy()  # the inactive phase is reachable
    q.add_row([v["z"]], [1.0], Sense.LE, -0.5)
    out = backend.solve(q, TIMEOUT)
    assert out.status is SolveStatus.SAT
    assert abs(out.assignment[v["y"]]) <= FEAS_TOL


def test_constant_rows_are_decided_exactly(backend: MarabouBackend) -> None:
    """Rows whose variables all cancelled: ``0 <= -1`` is infeasible, ``0 <= 1`` holds; inside a
    disjunction a false one removes its alternative."""
    p = Program()
    x = p.add_vars("x", [0.0], [1.0])
    p.add_row(x, [0.0], Sense.LE, 1.0)  # coefficient dropped → 0 <= 1
    assert backend.solve(p, TIMEOUT).status is SolveStatus.SAT
    q = p.copy()
    q.add_row(x, [0.0], Sense.LE, -1.0)
    assert backend.solve(q, TIMEOUT).status is SolveStatus.UNSAT
    q = p.copy()
    q.add_disjunction([[q.row(x, [0.0], Sense.EQ, 1.0)], [q.row(x, [1.0], Sense.GE, 0.75)]])
    out = backend.solve(q, TIMEOUT)
    assert out.status is SolveStatus.SAT and out.assignment[0] >= 0.75 - FEAS_TOL
    q.add_row(x, [1.0], Sense.LE, 0.5)
    assert backend.solve(q, TIMEOUT).status is SolveStatus.UNSAT


# ---------------------------------------------------------------------------------------------
# fixed-input network encodings vs onnxruntime
# ---------------------------------------------------------------------------------------------
def test_fixed_input_split_and_conquer(backend: MarabouBackend, tmp_path) -> None:
    """``threads > 1`` runs Marabou's split-and-conquer mode on the marked network inputs."""
    rng = np.random.default_rng(7)
    path = save_onnx(_random_weights(rng, [4, 8, 8, 3]), tmp_path / "net.onnx")
    net = load_onnx(path)
    x0 = rng.uniform(-1.0, 1.0, 4).astype(np.float32).astype(np.float64)
    prog, enc = _pinned_program(net, x0)
    out = backend.solve(prog, TIMEOUT, threads=2)
    assert out.status is SolveStatus.SAT, out.message
    assert out.stats["snc_workers"] == 2
    y_ort = ort_evaluate(path, x0)
    assert np.all(np.abs(out.assignment[enc.outputs] - y_ort) <= 1e-6 * np.maximum(1.0, np.abs(y_ort)))


def test_output_region_unreachable_is_unsat(backend: MarabouBackend, tmp_path) -> None:
    """Pinned input, output forced 0.1 away from its true value: infeasible."""
    rng = np.random.default_rng(11)
    path = save_onnx(_random_weights(rng, [3, 6, 6, 2]), tmp_path / "net.onnx")
    net = load_onnx(path)
    x0 = rng.uniform(-1.0, 1.0, 3).astype(np.float32).astype(np.float64)
    prog, enc = _pinned_program(net, x0)
    y0 = net.evaluate(x0)
    prog.add_row([enc.outputs[0]], [1.0], Sense.GE, float(y0[0]) + 0.1)
    assert backend.solve(prog, TIMEOUT).status is SolveStatus.UNSAT


def test_hard_query_times_out(backend: MarabouBackend) -> None:
    """90 unstable ReLUs and an output threshold 5 % above the sampled maximum: far beyond 1 s."""
    from encoders.network import network_from_layers

    rng = np.random.default_rng(0)
    net = network_from_layers(_random_weights(rng, [5, 30, 30, 30, 1]))
    lo, hi = -np.ones(5), np.ones(5)
    y_max = float(net.evaluate(rng.uniform(-1.0, 1.0, (20000, 5))).max())
    prog = Program()
    enc = encode_network(prog, net, prog.add_vars("x", lo, hi), *ibp(net, lo, hi))
    prog.add_row([enc.outputs[0]], [1.0], Sense.GE, 1.05 * y_max)
    out = backend.solve(prog, 1.0)
    assert out.status is SolveStatus.TIMEOUT, out.message
    assert out.time_s < 10.0
    assert out.assignment is None


# ---------------------------------------------------------------------------------------------
# stdout stays clean
# ---------------------------------------------------------------------------------------------
def test_stdout_is_clean_even_when_marabou_is_verbose(capfd) -> None:
    p, _ = relu_of_difference(1.5)
    # control: Marabou at verbosity 2 does print to fd 1 when not silenced …
    from maraboupy import MarabouCore

    from verifier.backends.marabou import _c_fflush, _QueryBuilder, make_options

    ipq = _QueryBuilder(MarabouCore, p).build()
    MarabouCore.solve(ipq, make_options(MarabouCore, _verbosity=2), "")
    _c_fflush()
    assert capfd.readouterr().out != ""
    # … but nothing reaches fd 1 through the backend
    out = MarabouBackend(verbosity=2).solve(p, TIMEOUT)
    assert out.status is SolveStatus.SAT
    captured = capfd.readouterr()
    assert captured.out == ""


def test_silence_stdout_restores_fd1(capfd) -> None:
    """Writes to file descriptor 1 (what C/C++ code does) vanish inside the block only."""
    import os

    os.write(1, b"before\n")
    with silence_stdout():
        os.write(1, b"hidden\n")
    os.write(1, b"after\n")
    assert capfd.readouterr().out == "before\nafter\n"
