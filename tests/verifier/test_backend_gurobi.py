"""Tests of the Gurobi backend with the real solver (pip licence: small models only)."""

from __future__ import annotations

import subprocess
import sys
import textwrap

import numpy as np
import pytest
from netkit import (
    encode_box,
    random_net,
)

from encoders.errors import BackendUnavailableError, LicenseLimitError
from encoders.program import Kind, Program, Sense
from verifier.backends import gurobi as gurobi_mod
from verifier.backends.base import get_backend
from verifier.backends.gurobi import GurobiBackend
from verifier.backends.highs import HighsBackend
from verifier.results import SolveStatus

gp = pytest.importorskip("gurobipy")

MODES = [pytest.param(False, id="bigm"), pytest.param(True, id="indicator")]


# --------------------------------------------------------------------------------------------------
# helpers (the shared ones live in tests/netkit.py)
# --------------------------------------------------------------------------------------------------
def _size_limited() -> bool:
    try:
        return gurobi_mod.licence_is_size_limited()
    except BackendUnavailableError:
        return False


# --------------------------------------------------------------------------------------------------
# basics
# --------------------------------------------------------------------------------------------------
def test_registry_and_capabilities():
    b = get_backend("gurobi")
    assert isinstance(b, GurobiBackend) and b.name == "gurobi"
    assert Kind.QUADRATIC in b.capabilities
    assert b.version() == ".".join(map(str, gp.gurobi.version()))


@pytest.mark.parametrize("seed", range(12))
def test_agrees_with_highs_on_network_queries(seed):
    """Random 'is some class j ≠ c at least class c over the box' queries, and output maxima."""
    rng = np.random.default_rng(seed)
    net = random_net(200 + seed, [3, 10, 10, 3])
    x0 = rng.uniform(0.2, 0.8, 3)
    eps = [0.02, 0.1, 0.3][seed % 3]
    lo, hi = x0 - eps, x0 + eps
    c = int(np.argmax(net.evaluate(x0)))
    p, enc = encode_box(net, lo, hi)
    y = enc.outputs
    p.add_disjunction([[Program.row([y[j], y[c]], [1.0, -1.0], Sense.GE, 0.0)] for j in range(3) if j != c])
    g = GurobiBackend().solve(p, timeout=60)
    h = HighsBackend().solve(p, timeout=60)
    assert g.status is h.status and g.status in (SolveStatus.SAT, SolveStatus.UNSAT)
    q, enc = encode_box(net, lo, hi)
    q.set_objective(enc.outputs, [1.0, -1.0, 0.5], maximize=bool(seed % 2))
    g = GurobiBackend(mip_gap=0.0).solve(q, timeout=60)
    h = HighsBackend(mip_rel_gap=0.0).solve(q, timeout=60)
    assert g.status is h.status is SolveStatus.OPTIMAL
    assert g.objective == pytest.approx(h.objective, abs=1e-5, rel=1e-6)


# --------------------------------------------------------------------------------------------------
# quadratic
# --------------------------------------------------------------------------------------------------
def test_norm_ball_is_the_real_ball():
    """max x0 + x1 over the ball (inside the box) is c0 + c1 + r√2; the box alone would give 2r more."""
    c, r = np.array([0.4, 0.5]), 0.2
    p = Program()
    x = p.add_vars("x", c - r, c + r)
    p.add_ball(x, c, r)
    p.set_objective(x, [1.0, 1.0], maximize=True)
    out = GurobiBackend().solve(p, timeout=30)
    assert out.status is SolveStatus.OPTIMAL
    assert out.objective == pytest.approx(c.sum() + r * np.sqrt(2), abs=1e-5)
    assert np.linalg.norm(out.assignment - c) <= r + 1e-5
    # feasibility: the corner region x0 + x1 >= c0 + c1 + 1.5 r is in the box but not in the ball
    q = Program()
    x = q.add_vars("x", c - r, c + r)
    q.add_ball(x, c, r)
    q.add_row(x, [1.0, 1.0], Sense.GE, c.sum() + 1.5 * r)
    assert GurobiBackend().solve(q, timeout=30).status is SolveStatus.UNSAT
    q.balls.clear()
    assert GurobiBackend().solve(q, timeout=30).status is SolveStatus.SAT


@pytest.mark.parametrize("indicators", MODES)
def test_miqcp_network_over_l2_ball_dominates_sampling(indicators):
    net = random_net(31, [4, 12, 12, 2])
    x0 = np.full(4, 0.5)
    r = 0.3
    lo, hi = x0 - r, x0 + r
    p, enc = encode_box(net, lo, hi)
    p.add_ball(enc.inputs, x0, r)
    p.set_objective(enc.outputs, [1.0, -1.0], maximize=True)
    out = GurobiBackend(indicators=indicators, mip_gap=0.0).solve(p, timeout=60)
    assert out.status is SolveStatus.OPTIMAL
    rng = np.random.default_rng(0)
    d = rng.normal(size=(50000, 4))
    d *= (r * rng.uniform(0, 1, size=(50000, 1)) ** 0.25) / np.linalg.norm(d, axis=1, keepdims=True)
    best = (net.evaluate(x0 + d) @ np.array([1.0, -1.0])).max()
    assert out.bound >= best - 1e-6
    xs = out.assignment[enc.inputs]
    assert np.linalg.norm(xs - x0) <= r + 1e-5
    assert net.evaluate(xs) @ np.array([1.0, -1.0]) == pytest.approx(out.objective, abs=1e-5)
    # the ball matters: the box optimum is larger
    q, enc = encode_box(net, lo, hi)
    q.set_objective(enc.outputs, [1.0, -1.0], maximize=True)
    assert GurobiBackend(mip_gap=0.0).solve(q, timeout=60).objective > out.objective + 1e-3


# --------------------------------------------------------------------------------------------------
# licence limits
# --------------------------------------------------------------------------------------------------
def _wide_program(n_vars: int, ball: bool = False) -> Program:
    p = Program()
    x = p.add_vars("x", np.zeros(n_vars), np.ones(n_vars))
    p.add_row(x, np.ones(n_vars), Sense.GE, 1.0)
    if ball:
        p.add_ball(x[:5], np.zeros(5), 1.0)
    return p


@pytest.mark.skipif(not _size_limited(), reason="a full Gurobi licence is installed")
def test_licence_limit_is_detected_before_building():
    with pytest.raises(LicenseLimitError, match="--backend highs") as exc:
        GurobiBackend().solve(_wide_program(2500), timeout=30)
    assert "2500 variables" in str(exc.value)
    with pytest.raises(LicenseLimitError, match="highs"):
        GurobiBackend().solve(_wide_program(250, ball=True), timeout=30)  # 200-variable limit with a QC
    assert GurobiBackend().solve(_wide_program(1999), timeout=30).status is SolveStatus.SAT
    assert GurobiBackend().solve(_wide_program(150, ball=True), timeout=30).status is SolveStatus.SAT


def test_fits_licence_is_exact():
    limited = _size_limited()
    assert gurobi_mod.fits_licence(_wide_program(1999))
    assert gurobi_mod.fits_licence(_wide_program(2500)) is not limited
    assert gurobi_mod.fits_licence(_wide_program(150, ball=True))
    assert gurobi_mod.fits_licence(_wide_program(250, ball=True)) is not limited
    # stable ReLUs cost no binary and at most one row (none when inactive)
    p = Program()
    z = p.add_vars("z", np.r_[np.full(475, 0.5), np.full(475, -1.0)], np.r_[np.ones(475), np.full(475, -0.5)])
    h = p.add_vars("h", np.zeros(950), np.ones(950))
    for a, b in zip(h, z):
        p.add_relu(a, b)
    for k in range(150):
        p.add_row([h[k], h[k + 1]], [1.0, 1.0], Sense.LE, 1.9)
    from encoders.milp import compile_milp

    assert p.stats()["milp_constraints"] >= compile_milp(p).n_rows  # the cheap estimate is an upper bound
    assert gurobi_mod.fits_licence(p)
    assert GurobiBackend().solve(p, timeout=30).status is SolveStatus.SAT


@pytest.mark.skipif(not _size_limited(), reason="a full Gurobi licence is installed")
def test_licence_error_from_gurobi_itself_is_translated(monkeypatch):
    """Without the pre-check, Gurobi's error 10010 becomes the same typed error."""
    monkeypatch.setattr(gurobi_mod, "licence_is_size_limited", lambda: False)
    with pytest.raises(LicenseLimitError, match="highs"):
        GurobiBackend().solve(_wide_program(2500), timeout=30)


def test_timeout_before_solving():
    out = GurobiBackend().solve(_wide_program(10), timeout=0.0)
    assert out.status is SolveStatus.TIMEOUT


def test_nothing_reaches_stdout_in_a_fresh_process():
    """The licence banner and logs must not reach stdout (``--json`` output stays clean)."""
    code = textwrap.dedent("""
        import numpy as np
        from encoders.program import Program, Sense
        from verifier.backends.gurobi import GurobiBackend, licence_is_size_limited
        from encoders.errors import LicenseLimitError
        licence_is_size_limited()
        p = Program()
        x = p.add_vars("x", np.zeros(3), np.ones(3))
        z = p.add_var("z", -1.0, 1.0); y = p.add_var("y", 0.0, 1.0)
        p.add_row([x[0], x[1], z], [1.0, -1.0, -1.0], Sense.EQ, 0.0)
        p.add_relu(y, z)
        p.set_objective([y], [1.0], maximize=True)
        GurobiBackend().solve(p, 10)
        GurobiBackend(indicators=True).solve(p, 10)
        q = Program()
        q.add_vars("x", np.zeros(2500), np.ones(2500))
        try:
            GurobiBackend().solve(q, 10)
        except LicenseLimitError:
            pass
    """)
    res = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, timeout=120)
    assert res.returncode == 0, res.stderr
    assert res.stdout == ""
