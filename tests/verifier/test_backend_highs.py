"""Tests of the HiGHS backend with the real solver."""

from __future__ import annotations

import numpy as np
import pytest
from netkit import (
    encode_box,
    hand_relu_program,
    random_net,
)

from encoders.errors import UnsupportedQueryError
from encoders.milp import write_model
from encoders.network import network_from_layers
from encoders.program import Kind, Program, Sense
from verifier.backends.base import get_backend
from verifier.backends.highs import HighsBackend
from verifier.results import SolveStatus

pytest.importorskip("highspy")


# --------------------------------------------------------------------------------------------------
# tests (helpers: tests/netkit.py)
# --------------------------------------------------------------------------------------------------
def test_registry_and_capabilities():
    b = get_backend("highs")
    assert isinstance(b, HighsBackend) and b.name == "highs"
    assert Kind.QUADRATIC not in b.capabilities and Kind.RELU in b.capabilities
    import highspy

    assert b.version() == highspy.Highs().version()


def test_two_layer_absolute_value():
    """f(x) = relu(x) + relu(−x) = |x| on [-1, 0.6]: max 1 at x = −1, min 0; |x| <= 0.3 & x >= 0.5 UNSAT."""
    net = network_from_layers(
        [(np.array([[1.0], [-1.0]]), np.zeros(2)), (np.array([[1.0, 1.0]]), np.zeros(1))]
    )
    lo, hi = np.array([-1.0]), np.array([0.6])
    for maximize, want in ((True, 1.0), (False, 0.0)):
        p, enc = encode_box(net, lo, hi)
        p.set_objective(enc.outputs, [1.0], maximize=maximize)
        out = HighsBackend().solve(p, timeout=30)
        assert out.status is SolveStatus.OPTIMAL
        assert out.objective == pytest.approx(want, abs=1e-6)  # solver tolerances
        assert (out.bound >= want - 1e-9) if maximize else (out.bound <= want + 1e-9)
        assert out.assignment[enc.inputs][0] == pytest.approx(-1.0 if maximize else 0.0, abs=1e-6)
    p, enc = encode_box(net, lo, hi)
    p.add_row(enc.outputs, [1.0], Sense.LE, 0.3)
    p.add_row(enc.inputs, [1.0], Sense.GE, 0.5)
    assert HighsBackend().solve(p, timeout=30).status is SolveStatus.UNSAT


@pytest.mark.parametrize("seed", range(2))
def test_objective_bound_dominates_dense_grid_1d(seed):
    net = random_net(10 + seed, [1, 12, 12, 1])
    lo, hi = np.array([-2.0]), np.array([2.0])
    grid = np.linspace(lo, hi, 20001)
    vals = net.evaluate(grid)[:, 0]
    for maximize in (True, False):
        p, enc = encode_box(net, lo, hi)
        p.set_objective(enc.outputs, [1.0], maximize=maximize)
        out = HighsBackend().solve(p, timeout=60)
        assert out.status is SolveStatus.OPTIMAL
        best = vals.max() if maximize else vals.min()
        tol = 1e-6 * (1 + abs(best))
        if maximize:
            assert out.bound >= best - tol and out.bound >= out.objective - tol
            assert out.objective >= best - 1e-3 * (1 + abs(best))  # grid step is tiny
        else:
            assert out.bound <= best + tol and out.bound <= out.objective + tol
            assert out.objective <= best + 1e-3 * (1 + abs(best))
        # the incumbent is a real input whose network value is the objective
        x = out.assignment[enc.inputs]
        assert net.evaluate(x)[0] == pytest.approx(out.objective, abs=1e-5)


def test_objective_bound_dominates_dense_grid_2d():
    net = random_net(21, [2, 12, 12, 2])
    lo, hi = -np.ones(2), np.ones(2)
    g = np.stack(np.meshgrid(np.linspace(-1, 1, 401), np.linspace(-1, 1, 401)), -1).reshape(-1, 2)
    vals = net.evaluate(g) @ np.array([1.0, -1.0]) + 0.5
    p, enc = encode_box(net, lo, hi)
    p.set_objective(enc.outputs, [1.0, -1.0], maximize=True, constant=0.5)
    out = HighsBackend(mip_rel_gap=0.0).solve(p, timeout=60)
    assert out.status is SolveStatus.OPTIMAL
    assert out.bound >= vals.max() - 1e-6
    assert out.objective == pytest.approx(out.bound, abs=1e-6)
    y = net.evaluate(out.assignment[enc.inputs])
    assert y @ np.array([1.0, -1.0]) + 0.5 == pytest.approx(out.objective, abs=1e-5)


def test_pure_lp_objective_bound():
    p = Program()
    x = p.add_vars("x", [0.0, 0.0], [4.0, 4.0])
    p.add_row(x, [1.0, 2.0], Sense.LE, 4.0)
    p.set_objective(x, [3.0, 1.0], maximize=True, constant=1.0)
    out = HighsBackend().solve(p, timeout=10)
    assert out.status is SolveStatus.OPTIMAL
    assert out.objective == pytest.approx(13.0) and out.bound == pytest.approx(13.0)
    assert out.stats["binaries"] == 0


def test_quadratic_is_refused():
    p = Program()
    x = p.add_vars("x", [0.0, 0.0], [1.0, 1.0])
    p.add_ball(x, np.zeros(2), 0.5)
    b = HighsBackend()
    assert b.unsupported(p) == ["quadratic"]
    with pytest.raises(UnsupportedQueryError):
        b.solve(p, timeout=10)


def test_empty_program_and_trivial_infeasibility():
    assert HighsBackend().solve(Program(), timeout=5).status is SolveStatus.SAT
    p = Program()
    p.add_row([], [], Sense.LE, -1.0)  # 0 <= -1
    assert HighsBackend().solve(p, timeout=5).status is SolveStatus.UNSAT


def test_timeouts_are_reported_with_sound_bounds():
    net = random_net(7, [12, 48, 48, 48, 2])
    lo, hi = -np.ones(12), np.ones(12)
    p, enc = encode_box(net, lo, hi)
    p.set_objective(enc.outputs, [1.0, -1.0], maximize=True)
    assert HighsBackend().solve(p, timeout=0.0).status is SolveStatus.TIMEOUT  # before the solve starts
    out = HighsBackend(mip_rel_gap=0.0).solve(p, timeout=0.3)
    assert out.status in (SolveStatus.TIMEOUT, SolveStatus.OPTIMAL)
    samples = np.random.default_rng(0).uniform(lo, hi, size=(20000, 12))
    best = (net.evaluate(samples) @ np.array([1.0, -1.0])).max()
    assert out.bound is not None and out.bound >= best - 1e-6
    if out.objective is not None:
        assert out.bound >= out.objective - 1e-6


def test_thread_counts_can_change_between_solves():
    p, _ = hand_relu_program([("y", Sense.GE, 1.5)])
    for threads in (2, 1, 2):
        assert HighsBackend().solve(p, timeout=10, threads=threads).status is SolveStatus.SAT


def test_solver_output_never_reaches_stdout(capfd, tmp_path):
    net = random_net(3, [3, 8, 2])
    p, enc = encode_box(net, np.zeros(3), np.ones(3))
    p.set_objective(enc.outputs, [1.0, 0.0], maximize=True)
    HighsBackend().solve(p, timeout=10)
    HighsBackend().solve(hand_relu_program([("y", Sense.GE, 2.5)])[0], timeout=10)
    write_model(p, tmp_path / "m.mps")
    write_model(p, tmp_path / "m.lp")
    captured = capfd.readouterr()
    assert captured.out == ""
