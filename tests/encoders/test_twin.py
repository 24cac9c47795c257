"""Twin-network difference bounds (encoders.bounds.twin) and their use by the global κ-robustness query.

Soundness is tested by sampling: for random networks, domains, radii and both norms, pairs
``x, x' ∈ D`` with ``‖x − x'‖ ≤ δ`` are drawn (many of them on the corners of the coupling set, where
bounds are tight) and every layer's ``z(x) − z(x')``, ``relu`` difference and output-spec difference
must lie within the computed bounds and satisfy the relaxation lines.  The global property is
checked on hand-worked networks (VERIFIED without a solver, VERIFIED by the solver with the cuts,
FALSIFIED by the search) and against the exact two-class oracle of ``tests/oracle.py``.
"""

from __future__ import annotations

import math
from pathlib import Path

import hypothesis.strategies as st
import numpy as np
import oracle as O
import pytest
from hypothesis import given, settings

from encoders.bounds import crown_bounds
from encoders.bounds.twin import (
    diff_relu_relaxation,
    pair_attack,
    pair_margin_upper,
    twin_bounds,
    twin_linear,
)
from encoders.network import Affine, Network, load_onnx, network_from_layers, save_onnx
from encoders.properties import GlobalRobustness
from verifier.dispatch import DispatchConfig, verify
from verifier.queries import verify_global
from verifier.results import Verdict

SETTINGS = settings(max_examples=40, deadline=None)
TOL = 1e-9


@st.composite
def networks(draw: st.DrawFn) -> Network:
    seed = draw(st.integers(0, 2**31 - 1))
    rng = np.random.default_rng(seed)
    n_in = draw(st.integers(1, 5))
    hidden = draw(st.lists(st.integers(1, 6), min_size=0, max_size=3))
    n_out = draw(st.integers(1, 4))
    sizes = [n_in, *hidden, n_out]
    return network_from_layers(
        [(rng.normal(size=(b, a)), rng.normal(size=b) * 0.5) for a, b in zip(sizes[:-1], sizes[1:])]
    )


def _layers(net: Network, x: np.ndarray) -> tuple[list[np.ndarray], list[np.ndarray]]:
    """Pre-activations ``z_k`` and post-activations ``h_k`` of every affine layer (batched)."""
    zs, hs = [], []
    h = x
    for lay in net.layers:
        if isinstance(lay, Affine):
            h = h @ lay.W.T + lay.b
            zs.append(h)
        else:
            h = np.maximum(h, 0.0)
            hs.append(h)
    return zs, hs


def _pairs(rng: np.random.Generator, lo: np.ndarray, hi: np.ndarray, delta: float, norm: str, n: int):
    """``n`` coupled pairs: random, corner-heavy x and δ-sized steps (L∞ corners or L2 sphere)."""
    x = rng.uniform(lo, hi, size=(n, lo.size))
    corner = rng.random((n, lo.size)) < 0.3
    x = np.where(corner, np.where(rng.random((n, lo.size)) < 0.5, lo, hi), x)
    if norm == "inf":
        d = delta * np.where(
            rng.random((n, lo.size)) < 0.6,
            rng.choice([-1.0, 1.0], (n, lo.size)),
            rng.uniform(-1, 1, (n, lo.size)),
        )
    else:
        d = rng.normal(size=(n, lo.size))
        d *= delta * rng.uniform(0.5, 1.0, (n, 1)) / np.linalg.norm(d, axis=1, keepdims=True)
    xp = np.clip(x + d, lo, hi)  # clipping into D only shrinks |x_i − x'_i|
    return x, xp


@SETTINGS
@given(net=networks(), data=st.data(), seed=st.integers(0, 10_000), norm=st.sampled_from(["inf", "2"]))
def test_twin_bounds_contain_sampled_pair_differences(net: Network, data, seed: int, norm: str) -> None:
    rng = np.random.default_rng(seed)
    lo = rng.uniform(-1, 0.5, net.n_inputs)
    hi = lo + rng.uniform(0.0, 1.5, net.n_inputs)
    delta = data.draw(st.floats(0.0, 1.0))
    tb = twin_bounds(net, lo, hi, delta, norm)
    x, xp = _pairs(rng, lo, hi, delta, norm, 400)
    za, ha = _layers(net, x)
    zb, hb = _layers(net, xp)
    for k in range(len(za)):
        dz = za[k] - zb[k]
        assert np.all(dz >= tb.dlower[k] - TOL), (k, (dz - tb.dlower[k]).min())
        assert np.all(dz <= tb.dupper[k] + TOL), (k, (tb.dupper[k] - dz).min())
    for k, r in enumerate(tb.relax):
        dz, dh = za[k] - zb[k], ha[k] - hb[k]
        assert np.all(dh >= r.hl - TOL) and np.all(dh <= r.hu + TOL)
        assert np.all(dh >= r.s_lo * dz + r.t_lo - TOL), k
        assert np.all(dh <= r.s_up * dz + r.t_up + TOL), k
    C = rng.normal(size=(3, net.n_outputs))
    lb, ub = twin_linear(net, tb, C)
    dy = (za[-1] - zb[-1]) @ C.T
    assert np.all(dy >= lb - TOL) and np.all(dy <= ub + TOL)


@SETTINGS
@given(net=networks(), seed=st.integers(0, 10_000), norm=st.sampled_from(["inf", "2"]))
def test_twin_bounds_with_a_tighter_copy_a(net: Network, seed: int, norm: str) -> None:
    """Copy a restricted to a sub-box (its own CROWN bounds), copy b on the whole domain."""
    rng = np.random.default_rng(seed)
    lo, hi = np.zeros(net.n_inputs), np.ones(net.n_inputs)
    a_lo = rng.uniform(0, 0.5, net.n_inputs)
    a_hi = a_lo + rng.uniform(0, 0.5, net.n_inputs)
    delta = float(rng.uniform(0, 0.5))
    ca, cb = crown_bounds(net, a_lo, a_hi), crown_bounds(net, lo, hi)
    tb = twin_bounds(net, lo, hi, delta, norm, (ca.lower, ca.upper), (cb.lower, cb.upper))
    x, xp = _pairs(rng, a_lo, a_hi, delta, norm, 400)
    xp = np.clip(xp, lo, hi)
    za, ha = _layers(net, x)
    zb, hb = _layers(net, xp)
    for k in range(len(za)):
        dz = za[k] - zb[k]
        assert np.all(dz >= tb.dlower[k] - TOL) and np.all(dz <= tb.dupper[k] + TOL), k
    for k, r in enumerate(tb.relax):
        dz, dh = za[k] - zb[k], ha[k] - hb[k]
        assert np.all(dh >= r.s_lo * dz + r.t_lo - TOL) and np.all(dh <= r.s_up * dz + r.t_up + TOL), k


@SETTINGS
@given(net=networks(), seed=st.integers(0, 10_000), norm=st.sampled_from(["inf", "2"]))
def test_backsubstitution_never_looser_than_interval(net: Network, seed: int, norm: str) -> None:
    rng = np.random.default_rng(seed)
    lo, hi = np.zeros(net.n_inputs), np.ones(net.n_inputs)
    delta = float(rng.uniform(0, 0.3))
    full, ibp = twin_bounds(net, lo, hi, delta, norm), twin_bounds(net, lo, hi, delta, norm, backsub=False)
    for k in range(len(full.dlower)):
        assert np.all(full.dlower[k] >= ibp.dlower[k] - 1e-12)
        assert np.all(full.dupper[k] <= ibp.dupper[k] + 1e-12)


def test_diff_relu_relaxation_brute_force() -> None:
    """Random per-neuron bounds; dense samples of (z, z') inside them obey every bound and line."""
    rng = np.random.default_rng(7)
    n = 400
    la = rng.uniform(-2, 1, n)
    ua = la + rng.uniform(0, 2, n)
    lb = la + rng.uniform(-0.5, 0.5, n)
    ub = lb + rng.uniform(0, 2, n)
    dl = np.minimum(-rng.uniform(0, 1, n) * (rng.random(n) < 0.8), la - ub)
    du = np.maximum(rng.uniform(0, 1, n), ua - lb) * (rng.random(n) < 0.9)
    dl, du = np.maximum(dl, la - ub), np.minimum(du, ua - lb)
    ok = dl <= du
    la, ua, lb, ub, dl, du = (v[ok] for v in (la, ua, lb, ub, dl, du))
    r = diff_relu_relaxation(la, ua, lb, ub, dl, du)
    z = rng.uniform(la, ua, (3000, la.size))
    zp = rng.uniform(lb, ub, (3000, la.size))
    dz = z - zp
    inside = (dz >= dl) & (dz <= du)
    dh = np.maximum(z, 0) - np.maximum(zp, 0)
    assert inside.sum() > 10_000
    assert np.all(~inside | (dh >= r.hl - TOL)) and np.all(~inside | (dh <= r.hu + TOL))
    assert np.all(~inside | (dh >= r.s_lo * dz + r.t_lo - TOL))
    assert np.all(~inside | (dh <= r.s_up * dz + r.t_up + TOL))


def test_diff_relu_relaxation_exact_cases() -> None:
    one = np.ones(1)
    # both copies active: Δh = Δz; both inactive: Δh = 0; mixed Δz: the two chords
    r = diff_relu_relaxation(one, 3 * one, 0.5 * one, 2 * one, -one, one)
    assert (r.s_lo[0], r.t_lo[0], r.s_up[0], r.t_up[0]) == (1.0, 0.0, 1.0, 0.0)
    r = diff_relu_relaxation(-3 * one, -one, -2 * one, -0.5 * one, -one, one)
    assert (r.s_lo[0], r.t_lo[0], r.s_up[0], r.t_up[0]) == (0.0, 0.0, 0.0, 0.0)
    r = diff_relu_relaxation(-5 * one, 5 * one, -5 * one, 5 * one, -one, 3 * one)
    assert r.s_up[0] == pytest.approx(0.75) and r.t_up[0] == pytest.approx(0.75)  # 3(Δz + 1)/4
    assert r.s_lo[0] == pytest.approx(0.25) and r.t_lo[0] == pytest.approx(-0.75)  # −(3 − Δz)/4
    assert r.hl[0] == -1.0 and r.hu[0] == 3.0


# --------------------------------------------------------------------------------------------------
# the global property on a hand-worked network
# --------------------------------------------------------------------------------------------------
K = 10.0  # logit scale


def _step_net(tmp_path: Path) -> Network:
    r"""``x ∈ [0, 1]``; ``h = (relu(x − ½), relu(½ − x))``; ``y0 = K (h1 − h2) = K (x − ½) = −y1``.

    Class 0 is κ-confident iff ``y0 − y1 = 2K(x − ½) ≥ m = ln(κ/(1−κ))``; x' is misclassified iff
    ``x' ≤ ½``.  So a violating pair exists iff ``δ ≥ m / (2K)`` (κ = 0.9: ``δ* = ln 9 / 20 ≈ 0.1099``).
    Twin bound (hand-computed): ``Δz = (Δx, −Δx)``, ``Δx ∈ [−δ, δ]``, both chords have slope ½ and
    intercept ±δ/2, so ``Δ(y0 − y1) = 2K(Δh1 − Δh2) ≤ 2K(Δx + δ) ≤ 4Kδ``: the pre-solve proof works for
    ``δ < m/(4K) ≈ 0.0549``.
    """
    w = [(np.array([[1.0], [-1.0]]), np.array([-0.5, 0.5])), (np.array([[K, -K], [-K, K]]), np.zeros(2))]
    return load_onnx(save_onnx(w, tmp_path / "step.onnx"))


def test_pair_margin_bound_hand_computed(tmp_path: Path) -> None:
    net = _step_net(tmp_path)
    for delta in (0.01, 0.05, 0.2):
        tb = twin_bounds(net, np.zeros(1), np.ones(1), delta)
        ub = pair_margin_upper(net, tb, 0)
        assert ub[1] == pytest.approx(4 * K * delta, rel=1e-9)
        assert ub[1] >= 2 * K * delta  # the true maximum


@pytest.mark.parametrize(
    ("delta", "verdict", "backend"),
    [
        (0.04, Verdict.VERIFIED, "twin"),  # < m/(4K): proved without a solver
        (0.2, Verdict.FALSIFIED, "attack"),  # > δ*: the pair search finds it
    ],
)
def test_verify_global_stages(tmp_path: Path, delta: float, verdict: Verdict, backend: str) -> None:
    net = _step_net(tmp_path)
    res = verify_global(net, delta, 0.9, (np.zeros(1), np.ones(1)), DispatchConfig(timeout=30))
    assert res.verdict is verdict, res
    assert backend in res.backend
    if verdict is Verdict.FALSIFIED:
        cx = res.counterexample
        assert abs(float(cx.x[0] - cx.x2[0])) <= delta
        assert cx.y[0] - cx.y[1] >= math.log(9) and cx.y2[1] >= cx.y2[0]


def test_solver_with_twin_cuts_verifies_between_the_thresholds(tmp_path: Path) -> None:
    """δ = 0.08: the pre-solve bound (3.2 > ln 9) does not prove it, the MILP with the cuts does."""
    net = _step_net(tmp_path)
    prop = GlobalRobustness(0.08, 0.9, np.zeros(1), np.ones(1), "inf", 0)
    assert not prop.quick_check({"a": net, "b": net})
    prog = prop.encode({"a": net, "b": net})
    assert any(r.name.startswith("twin.") for r in prog.rows)
    res = verify(prop, {"a": net, "b": net}, DispatchConfig(backend="highs", timeout=30, bab=False))
    assert res.verdict is Verdict.VERIFIED, res
    # classes: class 1 symmetric
    res = verify_global(
        net, 0.08, 0.9, (np.zeros(1), np.ones(1)), DispatchConfig(backend="highs", timeout=30)
    )
    assert res.verdict is Verdict.VERIFIED, res


def test_dispatch_attack_searches_pairs_for_the_global_property(tmp_path: Path) -> None:
    """``dispatch.verify`` on one class of the global property falsifies by the pair search (δ > δ*),
    before any solver; the pair replays on onnxruntime."""
    net = _step_net(tmp_path)
    prop = GlobalRobustness(0.2, 0.9, np.zeros(1), np.ones(1), "inf", 0)
    res = verify(prop, {"a": net, "b": net}, DispatchConfig(backend="highs", timeout=30, bab=False))
    assert res.verdict is Verdict.FALSIFIED and res.backend == "attack", res
    cx = res.counterexample
    assert abs(float(cx.x[0] - cx.x2[0])) <= 0.2 and cx.y2[1] >= cx.y2[0]


def test_polish_turns_a_near_miss_pair_into_a_counterexample(tmp_path: Path) -> None:
    """A solver-like candidate just outside the violation set (copy a not quite κ-confident) is moved
    into it by the pair search started from the candidate, and only then replays."""
    from verifier.replay import polish, replay

    net = _step_net(tmp_path)
    nets = {"a": net, "b": net}
    prop = GlobalRobustness(0.2, 0.9, np.zeros(1), np.ones(1), "inf", 0)
    near = {"a": np.array([0.6]), "b": np.array([0.45])}  # 2K(x − ½) = 2 < ln 9 ≈ 2.197
    assert not replay(prop, nets, near).ok
    rep = polish(prop, nets, near)
    assert rep.ok, rep.reason
    cx = rep.counterexample
    assert abs(float(cx.x[0] - cx.x2[0])) <= 0.2
    assert cx.y[0] - cx.y[1] >= math.log(9) and cx.y2[1] >= cx.y2[0]


def test_twin_cuts_hold_on_real_pairs(tmp_path: Path) -> None:
    """Every ``twin.*`` row is satisfied by the assignment of a real pair (built by forward evaluation)."""
    rng = np.random.default_rng(3)
    w = [(rng.normal(size=(4, 3)), rng.normal(size=4) * 0.3), (rng.normal(size=(3, 4)), rng.normal(size=3))]
    net = network_from_layers(w)
    lo, hi = np.zeros(3), np.ones(3)
    prop = GlobalRobustness(0.2, 0.6, lo, hi, "inf", 0)
    prog = prop.encode({"a": net, "b": net})
    cuts = [r for r in prog.rows if r.name.startswith("twin.")]
    assert cuts
    x, xp = _pairs(rng, lo, hi, 0.2, "inf", 200)
    names = {n: i for i, n in enumerate(prog.names)}
    za, ha = _layers(net, x)
    zb, hb = _layers(net, xp)
    cb = crown_bounds(net, lo, hi)
    unstable = [np.flatnonzero((lw < 0) & (up > 0)) for lw, up in zip(cb.lower[:-1], cb.upper[:-1])]
    for p in range(len(x)):
        v = np.zeros(prog.n_vars)
        for ns, zz, hh in (("a", za, ha), ("b", zb, hb)):
            for k, uidx in enumerate(unstable):
                for m, i in enumerate(uidx):
                    v[names[f"{ns}.z{k + 1}[{m}]"]] = zz[k][p, i]
                    v[names[f"{ns}.h{k + 1}[{m}]"]] = hh[k][p, i]
            v[prog.blocks[ns]["output"]] = zz[-1][p]
        for r in cuts:
            assert r.violation(v) <= 1e-9, r.name


def test_pair_attack_candidates_violate_in_float64(tmp_path: Path) -> None:
    net = _step_net(tmp_path)
    pairs, best = pair_attack(net, np.zeros(1), np.ones(1), 0.2, 0.9, 0)
    assert pairs and best >= 0
    prop = GlobalRobustness(0.2, 0.9, np.zeros(1), np.ones(1), "inf", 0)
    for a, b in pairs:
        assert prop.violated({"a": a, "b": b}, {"a": net.evaluate(a), "b": net.evaluate(b)})
    pairs, best = pair_attack(net, np.zeros(1), np.ones(1), 0.05, 0.9, 0)
    assert not pairs and best < 0  # no violation exists below δ* ≈ 0.11


def test_pair_attack_finds_the_thin_sliver_just_above_the_threshold(tmp_path: Path) -> None:
    """At δ = 1.02 δ* the violating pairs of the step network have ``x ∈ [½ + m/20, ½ + δ]``, a sliver
    of width 0.0022 (0.2 % of the domain), with ``x' ≤ ½`` at distance ≥ 0.11 from ``x``: the search
    must move ``x`` and ``x'`` together; every pair it returns violates in float64 within δ."""
    net = _step_net(tmp_path)
    m = np.log(9.0)
    delta = 1.02 * m / (2 * K)
    near: list = []
    pairs, best = pair_attack(net, np.zeros(1), np.ones(1), delta, 0.9, 0, batch=16, steps=100, near=near)
    assert pairs and best >= 0
    prop = GlobalRobustness(delta, 0.9, np.zeros(1), np.ones(1), "inf", 0)
    for a, b in pairs:
        assert abs(float(a[0] - b[0])) <= delta
        assert 0.5 + m / (2 * K) <= a[0] <= 0.5 + delta and b[0] <= 0.5
        assert prop.violated({"a": a, "b": b}, {"a": net.evaluate(a), "b": net.evaluate(b)})
    assert [j for _, j, _, _ in near] == [1]


def test_pair_attack_searches_only_the_given_competitors(tmp_path: Path) -> None:
    rng = np.random.default_rng(5)
    w = [(rng.normal(size=(6, 3)), rng.normal(size=6)), (rng.normal(size=(4, 6)), rng.normal(size=4))]
    net = load_onnx(save_onnx(w, tmp_path / "four.onnx"))
    near: list = []
    pair_attack(net, np.zeros(3), np.ones(3), 0.1, 0.9, 1, batch=8, steps=5, near=near, targets=[3, 1, 0])
    assert sorted(j for _, j, _, _ in near) == [0, 3]


@pytest.mark.parametrize("seed", [3, 11, 29, 41])
def test_verify_global_agrees_with_the_oracle(seed: int, tmp_path: Path) -> None:
    for want in (True, False):
        g = O.gen_global(seed, want=want)
        net = load_onnx(save_onnx(list(g.weights), tmp_path / f"g{seed}{want}.onnx"))
        res = verify_global(
            net,
            g.delta,
            g.kappa,
            (g.dom_lo, g.dom_hi),
            DispatchConfig(backend="highs", timeout=30),
            "inf",
            classes=[g.label],
        )
        if g.truth.violated:
            assert res.verdict is not Verdict.VERIFIED, (seed, res)
        else:
            assert res.verdict is not Verdict.FALSIFIED, (seed, res)
        assert res.verdict.decided, (seed, want, res)
