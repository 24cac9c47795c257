"""Tests of encoders.milp: exactness of the big-M formulations, and MPS/LP export round trips."""

from __future__ import annotations

import itertools

import numpy as np
import pytest
from hypothesis import HealthCheck, assume, given, settings
from hypothesis import strategies as st
from netkit import ibp, random_net

from encoders.encode import encode_network
from encoders.errors import UnsupportedQueryError
from encoders.milp import compile_milp, highs_from_milp, write_lp, write_model, write_mps
from encoders.program import Program, Sense

TOL = 1e-9


# --------------------------------------------------------------------------------------------------
# helpers
# --------------------------------------------------------------------------------------------------
def _feasible_for_some_binary(model, x_orig):
    """Does some 0/1 completion of ``x_orig`` satisfy every row and bound of ``model``?"""
    n = model.n_original
    nb = model.n_vars - n
    for bits in itertools.product([0.0, 1.0], repeat=nb):
        x = np.concatenate([x_orig, bits])
        r = model.residual(x)
        if r["rows"] <= TOL and r["bounds"] <= TOL:
            return True
    return False


def _relu_program(lz, uz, ylo=-5.0, yhi=5.0):
    p = Program()
    z = p.add_var("z", lz, uz)
    y = p.add_var("y", ylo, yhi)
    p.add_relu(y, z)
    return p


# --------------------------------------------------------------------------------------------------
# ReLU
# --------------------------------------------------------------------------------------------------
def test_relu_stable_cases_use_no_binary():
    active = compile_milp(_relu_program(0.5, 2.0))
    assert active.n_binaries == 0 and active.n_rows == 1  # y − z = 0
    inactive = compile_milp(_relu_program(-2.0, 0.0))
    assert inactive.n_binaries == 0 and inactive.n_rows == 0
    assert inactive.lb[1] == 0.0 and inactive.ub[1] == 0.0  # y fixed to 0 by its bounds
    unstable = compile_milp(_relu_program(-1.0, 2.0))
    assert unstable.n_binaries == 1 and unstable.n_rows == 3
    assert unstable.lb[1] == 0.0  # y >= 0 as a bound
    assert unstable.indicator_rows.size == 2


@settings(max_examples=200, deadline=None)
@given(
    l=st.floats(-10, 10), w=st.floats(0.01, 10), tz=st.floats(0, 1), y=st.floats(-12, 12), snap=st.booleans()
)
def test_relu_formulation_is_exact_on_the_box(l, w, tz, y, snap):
    """(z, y) with z in [l, u] is feasible for some binary iff y == relu(z)."""
    u = l + w
    z = l + tz * w
    if snap:
        y = max(0.0, z)
    assume(snap or abs(y - max(0.0, z)) > 1e-6)  # away from the solver-tolerance band
    model = compile_milp(_relu_program(l, u, -20.0, 20.0))
    assert _feasible_for_some_binary(model, np.array([z, y])) == snap


def test_relu_with_incompatible_output_bounds_stays_infeasible():
    # y in [0.5, 1] but z <= 0 forces y = 0: the model must be infeasible, not ill-formed
    model = compile_milp(_relu_program(-2.0, -0.5, 0.5, 1.0))
    assert np.all(model.lb <= model.ub)
    for z in np.linspace(-2, -0.5, 5):
        for y in (0.0, 0.5, 1.0):
            assert not _feasible_for_some_binary(model, np.array([z, y]))


# --------------------------------------------------------------------------------------------------
# disjunctions
# --------------------------------------------------------------------------------------------------
def _random_disjunction_program(seed):
    rng = np.random.default_rng(seed)
    n = 2
    p = Program()
    x = p.add_vars("x", -np.ones(n), np.ones(n))
    alts = []
    for _ in range(rng.integers(2, 4)):
        alt = []
        for _ in range(rng.integers(1, 3)):
            coef = rng.normal(size=n)
            sense = [Sense.LE, Sense.GE, Sense.EQ][rng.integers(0, 3)] if rng.random() < 0.3 else Sense.LE
            rhs = rng.normal() * (2.5 if rng.random() < 0.3 else 0.7)
            alt.append(Program.row(x, coef, sense, rhs))
        alts.append(alt)
    p.add_disjunction(alts)
    return p


@pytest.mark.parametrize("seed", range(30))
def test_disjunction_formulation_is_exact(seed):
    """On random points of the box: a binary completion exists iff the disjunction holds."""
    p = _random_disjunction_program(seed)
    model = compile_milp(p)
    rng = np.random.default_rng(1000 + seed)
    d = p.disjunctions[0] if p.disjunctions else None
    pts = rng.uniform(-1, 1, size=(60, 2))
    # EQ rows are measure-zero: also test points on them
    if d is not None:
        for alt in d.alternatives:
            for r in alt:
                if r.sense is Sense.EQ and abs(r.coef[1]) > 1e-3:
                    x0 = rng.uniform(-1, 1)
                    x1 = (r.rhs - r.coef[0] * x0) / r.coef[1]
                    if abs(x1) <= 1:
                        pts = np.vstack([pts, [x0, x1]])
    for x in pts:
        truth = d.violation(x) <= 1e-9 if d is not None else p.violation(x)["linear"] <= 1e-9
        assert _feasible_for_some_binary(model, x) == truth


def test_disjunction_big_m_is_sound_and_shortcuts():
    p = Program()
    x = p.add_vars("x", [0.0, 0.0], [1.0, 1.0])
    always = Program.row(x, [1.0, 1.0], Sense.LE, 5.0)  # max 2 <= 5: always true -> dropped
    never = Program.row(x, [1.0, 1.0], Sense.GE, 3.0)  # max 2 < 3: alternative impossible
    real = Program.row(x, [1.0, -1.0], Sense.LE, -0.5)
    p.add_disjunction([[never], [always, real], [Program.row(x, [1.0, 0.0], Sense.GE, 0.9)]])
    model = compile_milp(p)
    assert model.n_binaries == 3
    s = np.arange(2, 5)
    assert model.ub[s[0]] == 0.0  # impossible alternative switched off
    # rows: choice, one big-M row for `real`, one for the third alternative
    assert model.n_rows == 3
    # the big-M of `real`: max over box of x0 - x1 - (-0.5) = 1.5 (plus a tiny margin)
    A = model.A.toarray()
    r = [i for i in range(model.n_rows) if A[i, s[1]] != 0 and np.isfinite(model.row_hi[i])][0]
    assert 1.5 <= A[r, s[1]] <= 1.5 + 1e-6

    # a disjunction with an always-true alternative is dropped altogether
    q = Program()
    y = q.add_vars("y", [0.0], [1.0])
    q.add_disjunction([[Program.row(y, [1.0], Sense.LE, 2.0)], [Program.row(y, [1.0], Sense.GE, 0.5)]])
    m2 = compile_milp(q)
    assert m2.n_binaries == 0 and m2.n_rows == 0


def test_all_alternatives_impossible_is_infeasible():
    p = Program()
    x = p.add_vars("x", [0.0], [1.0])
    p.add_disjunction([[Program.row(x, [1.0], Sense.GE, 2.0)], [Program.row(x, [1.0], Sense.LE, -1.0)]])
    model = compile_milp(p)
    for v in np.linspace(0, 1, 7):
        assert not _feasible_for_some_binary(model, np.array([v]))


# --------------------------------------------------------------------------------------------------
# the rest of the model
# --------------------------------------------------------------------------------------------------
def test_rows_objective_and_layout():
    p = Program()
    x = p.add_vars("x", [-1.0, -2.0, 0.0], [1.0, 2.0, 3.0])
    p.add_row(x[:2], [1.0, 2.0], Sense.LE, 1.0)
    p.add_row(x[1:], [1.0, -1.0], Sense.GE, -1.0)
    p.add_row([x[0], x[2]], [3.0, 1.0], Sense.EQ, 0.5)
    p.set_objective([x[2], x[0]], [2.0, -1.0], maximize=True, constant=4.0)
    p.add_ball(x[:2], np.zeros(2), 0.5)
    m = compile_milp(p)
    assert m.n_original == 3 and m.n_vars == 3 and m.names[:3] == tuple(p.names)
    np.testing.assert_array_equal(m.row_lo, [-np.inf, -1.0, 0.5])
    np.testing.assert_array_equal(m.row_hi, [1.0, np.inf, 0.5])
    np.testing.assert_array_equal(m.A.toarray(), [[1, 2, 0], [0, 1, -1], [3, 0, 1]])
    np.testing.assert_array_equal(m.c, [-1.0, 0.0, 2.0])
    assert m.offset == 4.0 and m.maximize and m.has_objective
    assert len(m.balls) == 1 and m.stats()["quadratic"] == 1


def test_infinite_bounds_and_bad_indices_are_refused():
    p = Program()
    p.add_var("x", -np.inf, 1.0)
    with pytest.raises(ValueError, match="finite"):
        compile_milp(p)
    q = Program()
    q.add_var("x", 0.0, 1.0)
    q.add_relu(0, 5)
    with pytest.raises(ValueError, match="missing"):
        compile_milp(q)


def test_program_stats_agree_with_compiled_sizes():
    net = random_net(3, [3, 6, 5, 2])
    lo, hi = np.zeros(3), np.ones(3)
    p = Program()
    xin = p.add_vars("x", lo, hi)
    lows, ups = ibp(net, lo, hi)
    encode_network(p, net, xin, lows, ups)
    m = compile_milp(p)
    assert m.n_binaries == p.stats()["unstable_relus"] == len(p.unstable_relus())
    assert m.n_vars == p.stats()["milp_variables"]


# --------------------------------------------------------------------------------------------------
# MPS / LP export
# --------------------------------------------------------------------------------------------------
def _optimisation_program(seed):
    net = random_net(seed, [2, 8, 8, 3])
    lo, hi = -np.ones(2), np.ones(2)
    p = Program()
    xin = p.add_vars("x", lo, hi)
    lows, ups = ibp(net, lo, hi)
    enc = encode_network(p, net, xin, lows, ups)
    # a property disjunction too: output 0 or output 1 is the largest
    y = enc.outputs
    p.add_disjunction(
        [
            [Program.row([y[0], y[2]], [1.0, -1.0], Sense.GE, 0.0)],
            [Program.row([y[1], y[2]], [1.0, -1.0], Sense.GE, 0.0)],
        ]
    )
    p.set_objective([y[2], y[0]], [1.0, -0.5], maximize=True, constant=0.125)
    return p


def _highs_optimum(h):
    import highspy

    h.setOptionValue("output_flag", False)
    h.setOptionValue("mip_rel_gap", 0.0)
    h.run()
    assert h.getModelStatus() == highspy.HighsModelStatus.kOptimal
    return h.getInfo().objective_function_value


@pytest.mark.parametrize("seed", [1, 4])
@pytest.mark.parametrize("fmt", ["mps", "lp"])
def test_written_model_reread_by_highs_gives_same_optimum(tmp_path, seed, fmt):
    import highspy

    p = _optimisation_program(seed)
    m = compile_milp(p)
    assert m.n_binaries > 0
    direct = _highs_optimum(highs_from_milp(m))
    path = (write_mps if fmt == "mps" else write_lp)(p, tmp_path / f"enc.{fmt}")
    assert path.stat().st_size > 0
    h = highspy.Highs()
    h.setOptionValue("output_flag", False)
    assert h.readModel(str(path)) != highspy.HighsStatus.kError
    extra = 1 if fmt == "lp" else 0  # LP files carry the objective constant as a fixed column
    assert h.getNumCol() == m.n_vars + extra and h.getNumRow() == m.n_rows
    reread = _highs_optimum(h)
    assert reread == pytest.approx(direct, abs=1e-6, rel=1e-6)
    # readable names, program variables first
    if fmt == "lp":
        text = path.read_text()
        assert "net.z1_" in text or "net.y_" in text


@pytest.mark.parametrize("fmt", ["mps", "lp"])
def test_written_model_reread_by_gurobi_gives_same_optimum(tmp_path, fmt):
    gp = pytest.importorskip("gurobipy")
    p = _optimisation_program(4)
    m = compile_milp(p)
    direct = _highs_optimum(highs_from_milp(m))
    path = write_model(p, tmp_path / f"enc.{fmt}")
    env = gp.Env(empty=True)
    env.setParam("OutputFlag", 0)
    env.start()
    with env, gp.read(str(path), env=env) as g:
        g.Params.MIPGap = 0.0
        g.optimize()
        assert g.Status == gp.GRB.OPTIMAL
        assert g.ObjVal == pytest.approx(direct, abs=1e-6, rel=1e-6)


def test_write_refuses_balls_and_bad_suffix(tmp_path):
    p = Program()
    x = p.add_vars("x", [0.0, 0.0], [1.0, 1.0])
    p.add_ball(x, np.zeros(2), 1.0)
    with pytest.raises(UnsupportedQueryError):
        write_mps(p, tmp_path / "a.mps")
    q = Program()
    q.add_vars("x", [0.0], [1.0])
    with pytest.raises(ValueError, match=r"\.mps"):
        write_mps(q, tmp_path / "a.lp")
    with pytest.raises(ValueError, match=r"\.lp"):
        write_model(q, tmp_path / "a.txt")


def test_write_sanitises_and_uniquifies_names(tmp_path):
    p = Program()
    p.add_var("a b", 0.0, 1.0)
    p.add_var("a_b", 0.0, 1.0)
    p.add_var("1x", 0.0, 1.0)
    p.add_row([0, 1, 2], [1.0, 1.0, 1.0], Sense.GE, 1.0, name="e1")
    path = write_lp(p, tmp_path / "n.lp")
    text = path.read_text()
    assert "a_b_1" in text and "x_1x" in text and "a b" not in text


@settings(max_examples=25, deadline=None, suppress_health_check=[HealthCheck.function_scoped_fixture])
@given(seed=st.integers(0, 10_000))
def test_compiled_model_contains_the_network_graph(seed):
    """Any network evaluation inside the box completes to a feasible MILP point (encoding ⊇ graph)."""
    net = random_net(seed, [2, 5, 4, 2])
    lo, hi = -np.ones(2), np.ones(2)
    p = Program()
    xin = p.add_vars("x", lo, hi)
    lows, ups = ibp(net, lo, hi)
    enc = encode_network(p, net, xin, lows, ups)
    m = compile_milp(p)
    rng = np.random.default_rng(seed)
    x0 = rng.uniform(lo, hi)
    # complete the program's variables from the network's pre-activations
    full = np.zeros(p.n_vars)
    full[xin] = x0
    pre = net.pre_activations(x0)
    for k, lay in enumerate(pre[:-1]):
        zi = [i for i, nm in enumerate(p.names) if nm.startswith(f"net.z{k + 1}[")]
        hi_ = [i for i, nm in enumerate(p.names) if nm.startswith(f"net.h{k + 1}[")]
        # unstable neurons appear in index order
        unstable = np.flatnonzero((lows[k] < 0) & (ups[k] > 0))
        full[zi] = lay[0][unstable]
        full[hi_] = np.maximum(lay[0][unstable], 0)
    full[enc.outputs] = net.evaluate(x0)
    assert p.violation(full)["linear"] <= 1e-9 * (1 + np.abs(full).max())
    # pick the binaries from the signs
    bins = np.array([1.0 if full[r.inp] > 0 else 0.0 for r in p.relus if p.lb[r.inp] < 0 < p.ub[r.inp]])
    res = m.residual(np.concatenate([full, bins]))
    assert res["rows"] <= 1e-7 and res["bounds"] <= 1e-9


# --------------------------------------------------------------------------------------------------
# Program.relaxed: the triangle relaxation of chosen ReLUs
# --------------------------------------------------------------------------------------------------
def test_relaxed_relu_rows_by_hand():
    """z ∈ [−1, 3]: the chord is h ≤ 0.75 (z + 1) (through (−1, 0) and (3, 3)), and h ≥ z; a kept ReLU
    stays a ReLU; stable ReLUs become h = z and h ≤ 0."""
    p = Program()
    z = p.add_vars("z", np.array([-1.0, -2.0, 0.5, -4.0]), np.array([3.0, 2.0, 2.0, -1.0]))
    h = p.add_vars("h", np.zeros(4), np.array([3.0, 2.0, 2.0, 0.0]))
    for k in range(4):
        p.add_relu(int(h[k]), int(z[k]))
    r = p.relaxed([int(h[1])])
    assert [x.out for x in r.relus] == [int(h[1])] and len(p.relus) == 4  # the original is untouched
    rows = {x.name: x for x in r.rows}
    up = rows["h[0]<=chord"]
    assert up.sense is Sense.LE and np.allclose(up.coef, [1.0, -0.75]) and 0.75 <= up.rhs <= 0.75 + 1e-8
    assert rows["h[0]>=z"].sense is Sense.GE and rows["h[0]>=z"].rhs == 0.0
    assert rows["h[2]=z"].sense is Sense.EQ and rows["h[3]=0"].sense is Sense.LE
    # the ReLU's graph satisfies every relaxed row; a point above the chord does not
    for zz in np.linspace(-1.0, 3.0, 41):
        x = np.zeros(p.n_vars)
        x[z[0]], x[h[0]] = zz, max(zz, 0.0)
        assert up.violation(x) == 0.0 and rows["h[0]>=z"].violation(x) == 0.0
    x = np.zeros(p.n_vars)
    x[z[0]], x[h[0]] = 1.0, 1.6  # chord at z = 1 is 1.5
    assert up.violation(x) > 0.09


@given(st.integers(0, 10_000))
@settings(max_examples=25, deadline=None, suppress_health_check=[HealthCheck.too_slow])
def test_relaxed_network_program_bounds_the_exact_one_from_below(seed):
    """Minimising a random output over a random network's box: the program with every ReLU relaxed
    (an LP) ≤ the program with the last hidden layer exact ≤ the exact MILP; and the exact optimum is
    attained by a real input (checked by evaluating the network)."""
    import highspy

    net = random_net(seed, [3, 6, 5, 2])
    lo, hi = -np.ones(3), np.ones(3)
    lows, ups = ibp(net, lo, hi)
    p = Program()
    x = p.add_vars("x", lo, hi)
    enc = encode_network(p, net, x, lows, ups, "n")
    c = np.random.default_rng(seed).normal(size=2)
    p.set_objective([int(i) for i in enc.outputs], list(c))
    last = p.blocks["n"].get("h2", np.zeros(0, dtype=np.int64))

    def opt(prog):
        hs = highs_from_milp(compile_milp(prog))
        hs.setOptionValue("output_flag", False)
        hs.setOptionValue("mip_rel_gap", 0.0)
        hs.run()
        assert hs.getModelStatus() == highspy.HighsModelStatus.kOptimal
        return hs.getInfo().objective_function_value, np.asarray(hs.getSolution().col_value)

    v_lp, _ = opt(p.relaxed([]))
    v_part, _ = opt(p.relaxed(last))
    v_exact, sol = opt(p)
    assert v_lp <= v_part + 1e-7 and v_part <= v_exact + 1e-7
    y = net.evaluate(sol[x][None, :])[0]
    assert abs(float(c @ y) - v_exact) <= 1e-5
