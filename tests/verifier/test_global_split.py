"""Pair-by-pair global robustness (verifier.search.global_split), the pair LP (encoders.bounds.pair_lp)
and the certified global radius.

* the weak-duality bound of the pair LP is below the value of every feasible point, for random LPs and
  random (even wrong-signed) multipliers (hypothesis);
* bounds tightened under one pair's constraints hold on every real violating pair through that pair
  (sampled on small random networks);
* verdicts are monotone in δ and the radius interval brackets the hand-computed threshold of the
  step network; the falsifying pair replays within the reported radius.
"""

from __future__ import annotations

import math
import time
from collections import Counter
from pathlib import Path

import hypothesis.strategies as st
import numpy as np
import pytest
from hypothesis import given, settings

from encoders import relaxations as rx
from encoders.bounds.pair_lp import (
    PairLP,
    cross_copy_bounds,
    cross_copy_box,
    initial_pair_bounds,
    sound_lp_lower,
    swap_copies,
    tighten_pair,
)
from encoders.bounds.twin import pair_margin_upper
from encoders.network import Affine, Network, load_onnx, network_from_layers, save_onnx
from encoders.properties import GlobalRobustness
from verifier.backends.solve import SolveGroup
from verifier.dispatch import DispatchConfig
from verifier.results import Verdict
from verifier.search import global_split as gs
from verifier.search.global_split import (
    PAIR_TOL,
    GlobalSplitConfig,
    _pair_milp,
    _PairMilpRun,
    certified_global_radius,
    decide_global,
    pair_program,
)

K = 10.0


def _step_net(tmp_path: Path) -> Network:
    """The step network of tests/test_twin.py: a violating pair exists iff ``δ ≥ ln(κ/(1−κ))/(2K)``."""
    w = [(np.array([[1.0], [-1.0]]), np.array([-0.5, 0.5])), (np.array([[K, -K], [-K, K]]), np.zeros(2))]
    return load_onnx(save_onnx(w, tmp_path / "step.onnx"))


def _layers(net: Network, x: np.ndarray) -> list[np.ndarray]:
    zs = []
    h = x
    for lay in net.layers:
        if isinstance(lay, Affine):
            h = h @ lay.W.T + lay.b
            zs.append(h)
        else:
            h = np.maximum(h, 0.0)
    return zs


@settings(max_examples=60, deadline=None)
@given(st.integers(0, 2**31 - 1), st.integers(1, 6), st.integers(1, 8))
def test_sound_lp_lower_is_below_every_feasible_point(seed: int, n_rows: int, n_cols: int) -> None:
    rng = np.random.default_rng(seed)
    A = rng.normal(size=(n_rows, n_cols))
    col_lo, col_hi = -rng.uniform(0, 2, n_cols), rng.uniform(0, 2, n_cols)
    v0 = rng.uniform(col_lo, col_hi)  # a feasible point by construction of the row bounds
    act = A @ v0
    row_lo = np.where(rng.random(n_rows) < 0.3, -np.inf, act - rng.uniform(0, 1, n_rows))
    row_hi = np.where(rng.random(n_rows) < 0.3, np.inf, act + rng.uniform(0, 1, n_rows))
    c = rng.normal(size=n_cols)
    rows = [(np.arange(n_cols), A[r]) for r in range(n_rows)]
    y = rng.normal(size=n_rows) * 3  # any multipliers: the bound must stay valid
    b = sound_lp_lower(c, rows, row_lo, row_hi, col_lo, col_hi, y)
    pts = rng.uniform(col_lo, col_hi, size=(4000, n_cols))
    ok = np.all((pts @ A.T >= row_lo - 1e-12) & (pts @ A.T <= row_hi + 1e-12), axis=1)
    feas = np.vstack([v0[None], pts[ok]])
    assert b <= float(np.min(feas @ c)) + 1e-9


def test_sound_lp_lower_matches_the_lp_optimum_on_the_pair_lp() -> None:
    """With HiGHS's own duals the certified value is (nearly) the LP optimum, and it never exceeds it."""
    import highspy

    lo, hi = np.zeros(3), np.ones(3)
    n_opt = 0
    for seed in range(1, 7):
        net = _rand_net(seed)
        pb = initial_pair_bounds(net, lo, hi, 0.2)
        lp = PairLP(net, pb, (lo, hi), (lo, hi), 0.2, 0, 0.4, None)
        for col in (int(lp.z["a"][0][0]), int(lp.z["b"][1][1]), int(lp.y["b"][2])):
            for sign in (1.0, -1.0):
                bound = lp.lower({col: sign})
                if lp.hs.getModelStatus() != highspy.HighsModelStatus.kOptimal:
                    assert bound == -np.inf
                    continue
                opt = lp.hs.getInfo().objective_function_value
                assert bound <= opt + 1e-9
                assert bound >= opt - 1e-6 * (1 + abs(opt))
                n_opt += 1
    assert n_opt >= 6


def _rand_net(seed: int) -> Network:
    rng = np.random.default_rng(seed)
    return network_from_layers(
        [
            (rng.normal(size=(5, 3)), rng.normal(size=5) * 0.3),
            (rng.normal(size=(4, 5)), rng.normal(size=4) * 0.3),
            (rng.normal(size=(3, 4)), rng.normal(size=3)),
        ]
    )


@pytest.mark.parametrize("couple", [False, True])
@pytest.mark.parametrize("seed", [1, 3, 8, 9, 10])
def test_tightened_bounds_hold_on_real_violating_pairs(seed: int, couple: bool) -> None:
    """Sample pairs; keep those that violate through (c, j); all of them satisfy the tightened bounds.

    ``couple``: the bounds of ``(c, j)`` come from the couple LP of ``(min(c, j), max(c, j))`` (rows
    (R)), read with the copies exchanged (:func:`swap_copies`) when ``c > j``.

    (The seeds are ones whose networks have violating pairs at these settings; that the samples are
    not empty is asserted by ``test_the_soundness_samples_are_not_empty``.)"""
    _check_tightened(seed, couple)


def test_the_soundness_samples_are_not_empty() -> None:
    assert sum(_check_tightened(s) for s in (1, 3, 8, 9, 10)) >= 10


def test_swap_copies_twice_gives_the_same_bounds() -> None:
    net = _rand_net(3)
    lo, hi = np.zeros(3), np.ones(3)
    pb0 = initial_pair_bounds(net, lo, hi, 0.3)
    pb = tighten_pair(net, pb0, lo, hi, 0.3, 0, 0.5, 1, math.inf, couple=True)
    sw = swap_copies(net, pb, lo, hi, 0.3)
    back = swap_copies(net, sw, lo, hi, 0.3)
    for k in range(len(pb.lower_a)):
        assert np.array_equal(sw.lower_a[k], pb.lower_b[k]) and np.array_equal(sw.upper_b[k], pb.upper_a[k])
        assert np.all(sw.twin.dlower[k] >= -pb.twin.dupper[k])
        assert np.all(sw.twin.dupper[k] <= -pb.twin.dlower[k])
        assert np.array_equal(back.lower_a[k], pb.lower_a[k])
        assert np.array_equal(back.upper_b[k], pb.upper_b[k])
        assert np.all(back.twin.dlower[k] >= pb.twin.dlower[k])
        assert np.all(back.twin.dupper[k] <= pb.twin.dupper[k])


def _check_tightened(seed: int, couple: bool = False) -> int:
    net = _rand_net(seed)
    rng = np.random.default_rng(100 + seed)
    lo, hi = np.zeros(3), np.ones(3)
    delta, kappa = 0.3, 0.5
    m = rx.confidence_margin(kappa)
    n = 200_000
    x = rng.uniform(lo, hi, size=(n, 3))
    xp = np.clip(x + delta * rng.choice([-1.0, 1.0, 0.5, -0.5], size=(n, 3)), lo, hi)
    za, zb = _layers(net, x), _layers(net, xp)
    ya, yb = za[-1], zb[-1]
    checked = 0
    pb0 = initial_pair_bounds(net, lo, hi, delta)
    for c in range(3):
        conf = rx.confidence_gap(ya, np.full(n, c), kappa) >= 0
        for j in range(3):
            if j == c:
                continue
            viol = conf & (yb[:, j] >= yb[:, c])
            if viol.sum() == 0:
                continue
            if not couple:
                pb = tighten_pair(net, pb0, lo, hi, delta, c, kappa, j, math.inf, per_copy=True)
            else:  # the couple LP of (min, max), copies exchanged for (max, min)
                a, b = min(c, j), max(c, j)
                pb = tighten_pair(net, pb0, lo, hi, delta, a, kappa, b, math.inf, per_copy=True, couple=True)
                if c > j:
                    pb = swap_copies(net, pb, lo, hi, delta)
            for k in range(len(za)):
                a, b = za[k][viol], zb[k][viol]
                assert np.all(a >= pb.lower_a[k] - 1e-9) and np.all(a <= pb.upper_a[k] + 1e-9)
                assert np.all(b >= pb.lower_b[k] - 1e-9) and np.all(b <= pb.upper_b[k] + 1e-9)
                assert np.all(a - b >= pb.twin.dlower[k] - 1e-9) and np.all(a - b <= pb.twin.dupper[k] + 1e-9)
            # and the twin bound of the pair's margin difference (what proves a pair)
            dm = (ya[viol, c] - ya[viol, j]) - (yb[viol, c] - yb[viol, j])
            assert np.all(dm <= pair_margin_upper(net, pb.twin, c)[j] + 1e-9)
            assert np.all(dm >= m - 1e-9)
            checked += 1
    return checked


def test_verdicts_are_monotone_in_delta(tmp_path: Path) -> None:
    """Along a grid of δ, every VERIFIED lies below every FALSIFIED, and the threshold sits between."""
    net = _step_net(tmp_path)
    star = math.log(9) / (2 * K)
    grid = [0.02, 0.05, 0.08, 0.1, 0.105, 0.115, 0.13, 0.2, 0.4]
    verdicts = [
        decide_global(
            net, d, 0.9, (np.zeros(1), np.ones(1)), DispatchConfig(backend="highs", timeout=30)
        ).verdict
        for d in grid
    ]
    assert all(v.decided for v in verdicts), verdicts
    proved = [d for d, v in zip(grid, verdicts) if v is Verdict.VERIFIED]
    refuted = [d for d, v in zip(grid, verdicts) if v is Verdict.FALSIFIED]
    assert max(proved) < min(refuted)
    assert max(proved) <= star <= min(refuted)


def test_certified_radius_brackets_the_threshold(tmp_path: Path) -> None:
    net = _step_net(tmp_path)
    star = math.log(9) / (2 * K)
    r = certified_global_radius(
        net,
        0.9,
        (np.zeros(1), np.ones(1)),
        DispatchConfig(backend="highs", timeout=20),
        budget=120,
        gap=0.05,
        per_class=True,
    )
    ov = r.overall
    assert ov.lower <= star <= ov.upper
    assert ov.upper - ov.lower <= 0.05 * ov.upper + 1e-12 and r.complete
    cx = ov.pair
    assert cx is not None and abs(float(cx.x[0] - cx.x2[0])) <= ov.upper
    assert set(r.per_class) == {0, 1}
    for c, cr in r.per_class.items():  # the network is symmetric: both classes have the same threshold
        assert cr.lower <= star <= cr.upper, (c, cr)
    js = r.to_json()
    assert js["overall"]["lower"] == ov.lower and js["complete"]


def test_cli_max_delta(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    from verifier.cli.main import main

    net = _step_net(tmp_path)
    star = math.log(9) / (2 * K)
    rc = main(
        [
            "verify",
            "global",
            "--onnx",
            str(net.path),
            "--kappa",
            "0.9",
            "--max-delta",
            "--budget",
            "60",
            "--json",
        ]
    )
    out = capsys.readouterr().out
    assert rc == 0, out
    import json

    js = json.loads(out)
    assert js["overall"]["lower"] <= star <= js["overall"]["upper"]
    rc = main(["verify", "global", "--onnx", str(net.path), "--kappa", "0.9"])  # no --delta, no --max-delta
    assert rc == 2


# --------------------------------------------------------------------------------------------------
# cross-copy bounds, the pair MILP, the closed-pair cache
# --------------------------------------------------------------------------------------------------
def test_cross_copy_bounds_by_hand() -> None:
    """z_b = z_a − Δz: [0, 1] − [−0.1, 0.2] = [−0.2, 1.1]; copy a gains nothing from the wide copy b."""
    la, ua, lb, ub = cross_copy_bounds(
        [np.array([0.0])],
        [np.array([1.0])],
        [np.array([-5.0])],
        [np.array([5.0])],
        [np.array([-0.1])],
        [np.array([0.2])],
    )
    assert -0.2 - 1e-15 <= lb[0][0] <= -0.2 and 1.1 <= ub[0][0] <= 1.1 + 1e-15
    assert lb[0][0] < -0.2 + 1e-16 and ub[0][0] > 1.1 - 1e-16  # rounded outward
    assert la[0][0] == 0.0 and ua[0][0] == 1.0
    lo_b, hi_b = cross_copy_box(np.array([0.3]), np.array([0.4]), 0.1, np.zeros(1), np.ones(1))
    assert lo_b[0] <= 0.2 and hi_b[0] >= 0.5 and lo_b[0] > 0.2 - 1e-15 and hi_b[0] < 0.5 + 1e-15


@pytest.mark.parametrize("seed", [1, 2, 3, 4])
def test_cross_copy_bounds_contain_sampled_pairs(seed: int) -> None:
    """Copy a on a sub-box X_a (its own CROWN bounds), copy b over D, the twin bounds over D: the
    cross-copy bounds hold on every sampled pair with x ∈ X_a, and they tighten copy b somewhere."""
    from encoders.bounds.crown import crown_bounds
    from encoders.bounds.twin import twin_bounds

    net = _rand_net(seed)
    rng = np.random.default_rng(seed)
    lo, hi, delta = np.zeros(3), np.ones(3), 0.05
    lo_a = rng.uniform(0, 0.6, 3)
    hi_a = lo_a + 0.2
    ca, cd = crown_bounds(net, lo_a, hi_a), crown_bounds(net, lo, hi)
    tb = twin_bounds(net, lo, hi, delta, "inf")
    la, ua, lb, ub = cross_copy_bounds(ca.lower, ca.upper, cd.lower, cd.upper, tb.dlower, tb.dupper)
    lo_b, hi_b = cross_copy_box(lo_a, hi_a, delta, lo, hi)
    n = 20_000
    x = rng.uniform(lo_a, hi_a, size=(n, 3))
    xp = np.clip(x + rng.uniform(-delta, delta, size=(n, 3)), lo, hi)
    assert np.all(xp >= lo_b) and np.all(xp <= hi_b)
    za, zb = _layers(net, x), _layers(net, xp)
    gained = 0.0
    for k in range(len(za)):
        assert np.all(za[k] >= la[k]) and np.all(za[k] <= ua[k])
        assert np.all(zb[k] >= lb[k]) and np.all(zb[k] <= ub[k])
        gained += float(np.sum(cd.upper[k] - cd.lower[k]) - np.sum(ub[k] - lb[k]))
    assert gained > 0.0


def _gurobi() -> bool:
    from verifier.backends.base import is_available

    return is_available("gurobi")


@pytest.mark.skipif(not _gurobi(), reason="gurobipy not installed")
def test_pair_milp_closes_and_refutes_the_step_network(tmp_path: Path) -> None:
    """Step network: z_0 − z_1 = 2K(x − 1/2).  Copy a κ-confident for 0 ⟺ x ≥ 1/2 + ln 9/(2K) = 1/2 + s,
    so min z_0(x') − z_1(x') over |x − x'| ≤ δ is 2K(s − δ): ≈ 0.60 at δ = 0.08 (closed, and the proven
    bound never exceeds it), −1.80 at δ = 0.2 (a pair, replayed)."""
    net = _step_net(tmp_path)
    s = math.log(9) / (2 * K)
    cfg = DispatchConfig(timeout=30)
    for delta in (0.08, 0.105):
        prop = GlobalRobustness(delta, 0.9, np.zeros(1), np.ones(1), "inf", 0)
        pm = _pair_milp(prop, net, 1, 30.0, cfg)
        mu = 2 * K * (s - delta)
        assert pm.how == "closed", pm
        assert (
            pm.bound is not None and pm.bound >= PAIR_TOL and (pm.bound <= mu + 1e-6 or pm.bound == math.inf)
        )
    prop = GlobalRobustness(0.2, 0.9, np.zeros(1), np.ones(1), "inf", 0)
    pm = _pair_milp(prop, net, 1, 30.0, cfg)
    assert pm.how == "falsified" and pm.cex is not None
    cx = pm.cex
    assert abs(float(cx.x[0] - cx.x2[0])) <= 0.2
    assert rx.confidence_gap(np.asarray(cx.y), 0, 0.9) >= 0 and cx.y2[1] >= cx.y2[0]
    # the program: the flip row is the objective, not a constraint
    prog = pair_program(prop, net, 1)
    assert prog.objective is not None and not any(r.name == "b.y1>=y0" for r in prog.rows)


def _tightened_pairs(tmp_path: Path, prefix: str, rng_base: int, delta: float, kappa: float):
    """For random networks (seeds 1, 3, 8) on [0, 1]³ and every pair ``(c, j)``: ``(seed, net, c, j,
    prop, sampled)`` with ``prop`` carrying the LP-tightened pair bounds and ``sampled`` whether 100,000
    sampled coupled pairs hold a violating one through ``j``."""
    lo, hi = np.zeros(3), np.ones(3)
    for seed in (1, 3, 8):
        rnd = _rand_net(seed)
        net = load_onnx(save_onnx([(a.W, a.b) for a in rnd.affines], tmp_path / f"{prefix}{seed}.onnx"))
        rng = np.random.default_rng(rng_base + seed)
        x = rng.uniform(lo, hi, size=(100_000, 3))
        xp = np.clip(x + delta * rng.choice([-1.0, 1.0, 0.5, -0.5], size=x.shape), lo, hi)
        ya, yb = _layers(net, x)[-1], _layers(net, xp)[-1]
        pb0 = initial_pair_bounds(net, lo, hi, delta)
        for c in range(3):
            conf = rx.confidence_gap(ya, np.full(len(x), c), kappa) >= 0
            for j in range(3):
                if j == c:
                    continue
                pb = tighten_pair(net, pb0, lo, hi, delta, c, kappa, j, math.inf, per_copy=True)
                prop = GlobalRobustness(delta, kappa, lo, hi, "inf", c, pair_bounds=pb)
                yield seed, net, c, j, prop, bool(np.any(conf & (yb[:, j] >= yb[:, c])))


@pytest.mark.skipif(not _gurobi(), reason="gurobipy not installed")
def test_pair_milp_with_tightened_bounds_agrees_with_sampling(tmp_path: Path) -> None:
    """On small random networks: a pair the MILP closes (with LP-tightened bounds) has no sampled
    violating pair; a pair it refutes has a replayed one."""
    delta, kappa = 0.3, 0.5
    n_closed = n_refuted = 0
    for seed, net, c, j, prop, sampled in _tightened_pairs(tmp_path, "r", 100, delta, kappa):
        pm = _pair_milp(prop, net, j, 20.0, DispatchConfig(timeout=20))
        if pm.how == "closed":
            assert not sampled, (seed, c, j)
            n_closed += 1
        elif pm.how == "falsified":
            assert pm.cex is not None
            n_refuted += 1
    assert n_closed >= 1 and n_refuted >= 1


@pytest.mark.parametrize("backend", ["highs", "auto"])
def test_verdicts_are_monotone_in_delta_both_milp_paths(tmp_path: Path, backend: str) -> None:
    """The monotone grid with the pair MILP on Gurobi (auto) and on the dispatcher's HiGHS path."""
    net = _step_net(tmp_path)
    star = math.log(9) / (2 * K)
    grid = [0.05, 0.1, 0.105, 0.115, 0.2]
    cfg = DispatchConfig(backend=backend, timeout=30)
    verdicts = [decide_global(net, d, 0.9, (np.zeros(1), np.ones(1)), cfg).verdict for d in grid]
    proved = [d for d, v in zip(grid, verdicts) if v is Verdict.VERIFIED]
    refuted = [d for d, v in zip(grid, verdicts) if v is Verdict.FALSIFIED]
    assert all(v.decided for v in verdicts), verdicts
    assert max(proved) <= star <= min(refuted)


def test_closed_pair_cache_is_used_only_below_its_delta(tmp_path: Path) -> None:
    net = _step_net(tmp_path)
    dom = (np.zeros(1), np.ones(1))
    cfg = DispatchConfig(backend="highs", timeout=30)
    known = {(0, 1): 0.105, (1, 0): 0.105}
    r = decide_global(net, 0.1, 0.9, dom, cfg, known_closed=known)
    assert r.verdict is Verdict.VERIFIED
    # above the δ it was closed at, the cache says nothing: the real answer (a replayed pair) comes back
    r = decide_global(net, 0.2, 0.9, dom, cfg, known_closed=known)
    assert r.verdict is Verdict.FALSIFIED and r.counterexample is not None


# --------------------------------------------------------------------------------------------------
# the pair MILPs in the background (solver children beside the LP tightening)
# --------------------------------------------------------------------------------------------------
def _onnx_rand_net(seed: int, tmp_path: Path) -> Network:
    rnd = _rand_net(seed)
    return load_onnx(save_onnx([(a.W, a.b) for a in rnd.affines], tmp_path / f"r{seed}.onnx"))


def _sampled_violations(net: Network, delta: float, kappa: float, seed: int = 0) -> int:
    """How many of 100 000 sampled pairs ``‖x − x'‖_∞ ≤ δ`` in ``[0, 1]³`` violate (any class)."""
    rng = np.random.default_rng(1000 + seed)
    lo, hi = np.zeros(3), np.ones(3)
    n = 100_000
    x = rng.uniform(lo, hi, size=(n, 3))
    step = np.where(
        rng.random((n, 3)) < 0.5, rng.choice([-1.0, 1.0], size=(n, 3)), rng.uniform(-1, 1, (n, 3))
    )
    xp = np.clip(x + delta * step, lo, hi)
    ya, yb = _layers(net, x)[-1], _layers(net, xp)[-1]
    c = ya.argmax(axis=1)
    conf = rx.confidence_gap(ya, c, kappa) >= 0
    yc = yb[np.arange(n), c]
    other = yb.copy()
    other[np.arange(n), c] = -np.inf
    return int(np.sum(conf & (other.max(axis=1) >= yc)))


@pytest.mark.skipif(not _gurobi(), reason="gurobipy not installed")
def test_partial_pair_milp_is_a_relaxation_and_hands_over_to_the_exact_one(tmp_path: Path) -> None:
    """The partial round (binaries on the last hidden layer only) solves a relaxation of the pair
    MILP: on small random networks its optimum is never above the exact one (and is below it for some
    pair, so the relaxation is real); a pair it closes has no sampled violating pair; and the pair
    MILP with the partial round first ends as the exact one alone (closed, falsified or open)."""
    from verifier.backends.solve import solve

    delta, kappa = 0.3, 0.5
    cfg = DispatchConfig(timeout=20)
    with_partial, exact_only = GlobalSplitConfig(), GlobalSplitConfig(partial_layers=())
    n_below = n_partial_closed = 0
    for seed, net, c, j, prop, sampled in _tightened_pairs(tmp_path, "p", 200, delta, kappa):
        prog = pair_program(prop, net, j)
        part = prog.relaxed([int(i) for ns in ("a", "b") for i in prog.blocks[ns].get("h2", ())])
        assert len(part.relus) < len(prog.relus) or not prog.relus
        v = [solve("gurobi", p, 20.0, 1, in_process=True) for p in (part, prog)]
        if all(o.objective is not None for o in v):
            assert v[0].objective <= v[1].objective + 1e-6, (seed, c, j)
            n_below += v[0].objective < v[1].objective - 1e-3
        run = _PairMilpRun(prop, net, j, 20.0, cfg, with_partial)
        while (limit := run.next_limit()) is not None:
            run.feed(solve("gurobi", run.program, limit, 1, params=run.params, in_process=True))
        assert run.result is not None
        if run.result.message.endswith("(partial)"):
            n_partial_closed += 1
            assert run.result.how == "closed"
            assert not sampled, (seed, c, j)
        assert run.result.how == _pair_milp(prop, net, j, 20.0, cfg, exact_only).how, (seed, c, j)
    assert n_below >= 1 and n_partial_closed >= 1


@pytest.mark.skipif(not _gurobi(), reason="gurobipy not installed")
def test_pair_milp_run_in_a_group_matches_the_synchronous_form(tmp_path: Path) -> None:
    """The asynchronous pair MILP (start / collect in a SolveGroup) ends as :func:`_pair_milp` does:
    closed at δ = 0.08 and a replayed pair at δ = 0.2 on the step network."""
    net = _step_net(tmp_path)
    cfg = DispatchConfig(timeout=30)
    for delta, how in ((0.08, "closed"), (0.2, "falsified")):
        prop = GlobalRobustness(delta, 0.9, np.zeros(1), np.ones(1), "inf", 0)
        run = _PairMilpRun(prop, net, 1, 30.0, cfg)
        with SolveGroup() as group:
            job = run.start(group, tag=("pair", delta))
            assert job is not None and run.result is None
            end = None
            while end is None:
                for done in group.wait():
                    assert done.tag == ("pair", delta)
                    end = run.collect(group, done)
        assert end is run.result and end.how == how == _pair_milp(prop, net, 1, 30.0, cfg).how
        if how == "falsified":
            assert end.cex is not None and abs(float(end.cex.x[0] - end.cex.x2[0])) <= delta


@pytest.mark.skipif(not _gurobi(), reason="gurobipy not installed")
def test_background_milps_agree_with_sampling_and_monotonicity(tmp_path: Path) -> None:
    """Random networks on which LP tightening closes no pair (every proof needs the pair MILPs): with
    one and with two MILP children beside the LP — and with the sequential schedule (``milp_jobs=0``),
    and with one LP per pair instead of one per mirror couple (``couples=False``) — the verdicts are
    the same, decided, monotone in δ; a VERIFIED has no sampled violating pair and a FALSIFIED's pair
    is a real violation within δ."""
    lo, hi = np.zeros(3), np.ones(3)
    kappa, grid = 0.5, (0.05, 0.1, 0.2)
    by_milp = n_couples = 0
    for seed in (1, 10):
        net = _onnx_rand_net(seed, tmp_path)
        verdicts: dict[tuple[int, float], Verdict] = {}
        for jobs, couples in ((1, True), (2, True), (0, True), (1, False)):
            split = GlobalSplitConfig(milp_jobs=jobs, couples=couples)
            for d in grid:
                r = decide_global(net, d, kappa, (lo, hi), DispatchConfig(timeout=30), split=split)
                verdicts[(jobs if couples else -1, d)] = r.verdict
                n_couples += r.stats.get("lp_couples", 0)
                assert r.verdict.decided, (seed, jobs, d, r.message)
                if r.verdict is Verdict.VERIFIED:
                    assert "lp" not in r.stats["closed_by"]
                    by_milp += r.stats["closed_by"].get("milp", 0)
                    if jobs == 1:
                        assert _sampled_violations(net, d, kappa, seed) == 0, (seed, d)
                else:
                    cx = r.counterexample
                    assert cx is not None and cx.x2 is not None
                    assert float(np.max(np.abs(np.asarray(cx.x) - np.asarray(cx.x2)))) <= d + 1e-9
                    ya, yb = (_layers(net, np.asarray(v, float)[None])[-1][0] for v in (cx.x, cx.x2))
                    c = int(np.argmax(ya))
                    assert rx.confidence_gap(ya[None], np.array([c]), kappa)[0] >= -1e-6
                    assert max(yb[k] for k in range(3) if k != c) >= yb[c] - 1e-6
        for d in grid:
            assert verdicts[(0, d)] == verdicts[(1, d)] == verdicts[(2, d)] == verdicts[(-1, d)], (seed, d)
        proved = [d for d in grid if verdicts[(1, d)] is Verdict.VERIFIED]
        refuted = [d for d in grid if verdicts[(1, d)] is Verdict.FALSIFIED]
        assert proved and refuted and max(proved) < min(refuted), (seed, verdicts)
    assert by_milp >= 6
    assert n_couples >= 1  # the couple LP was used


@pytest.mark.skipif(not _gurobi(), reason="gurobipy not installed")
def test_background_milp_closes_its_pair_and_stops_the_lp(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    """LP tightening alone leaves both pairs of class 0 open (``milp=False``: UNKNOWN).  With the LP
    steps made slow (0.5 s each, as on a real network), the MILP started in the background after a
    pair's first step closes the pair while its LP works on the next step: the LP stops there (fewer
    steps than the plan) and the pair is closed before the second pass."""
    net = _onnx_rand_net(8, tmp_path)
    dom, delta, kappa = (np.zeros(3), np.ones(3)), 0.1, 0.8
    cfg = DispatchConfig(timeout=30, samples=0)
    r0 = decide_global(net, delta, kappa, dom, cfg, classes=[0], split=GlobalSplitConfig(milp=False))
    assert r0.verdict is Verdict.UNKNOWN and len(r0.stats["open"]) == 2, r0.stats

    steps: Counter[tuple[int, int]] = Counter()
    real_tighten = gs.tighten_pair

    def slow_tighten(*args: object, **kw: object) -> object:
        steps[(args[5], args[7])] += 1  # (c, j)
        out = real_tighten(*args, **kw)  # type: ignore[arg-type]
        time.sleep(0.5)
        return out

    closed_before_second: set[tuple[int, int]] = set()
    real_second = gs._PairMilps.second_pass

    def spy_second(self: gs._PairMilps, pairs: list[tuple[int, int]]) -> object:
        closed_before_second.update(self.ended)
        return real_second(self, pairs)

    monkeypatch.setattr(gs, "tighten_pair", slow_tighten)
    monkeypatch.setattr(gs._PairMilps, "second_pass", spy_second)
    split = GlobalSplitConfig(milp_jobs=1)
    r = decide_global(net, delta, kappa, dom, cfg, classes=[0], split=split)
    assert r.verdict is Verdict.VERIFIED, r.message
    assert r.stats["closed_by"] == {"milp": 2}
    assert r.stats["milp_runs"]["background"] >= 2
    assert closed_before_second == {(0, 1), (0, 2)}
    assert set(steps) == {(0, 1), (0, 2)} and max(steps.values()) < len(split.obbt_plan), steps
