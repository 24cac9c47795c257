"""α-CROWN and the triangle-relaxation LP (``encoders.bounds.alpha``).

Invariants a wrong bound would break: sampled points (box corners included) satisfy every tightened
bound, for every α the backward pass is a lower bound of the true minimum (random α, not only the
optimised ones), optimisation never loosens CROWN, the hand-derived gradient matches finite
differences, and with one relaxed layer α-CROWN reaches the LP optimum (they are the same LP,
primal and dual) while the LP's sound bound (from its duals) never exceeds the LP value by more than
the tolerances.  One hand-checkable case pins the numbers.
"""

from __future__ import annotations

import itertools

import numpy as np
import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from encoders.bounds import crown_bounds, crown_linear
from encoders.bounds.alpha import (
    AlphaConfig,
    SplitContext,
    _Pass,
    _Relax,
    alpha_crown_lower,
    lp_layer_bounds,
    tighten_bounds,
)
from encoders.errors import ConfigError, SpecError
from encoders.network import Network, network_from_layers

SETTINGS = settings(max_examples=40, deadline=None)


@st.composite
def nets_and_boxes(draw: st.DrawFn, min_hidden: int = 1, max_hidden: int = 3) -> tuple[Network, np.ndarray,
                                                                                       np.ndarray]:
    n_in = draw(st.integers(1, 4))
    hidden = draw(st.lists(st.integers(1, 7), min_size=min_hidden, max_size=max_hidden))
    n_out = draw(st.integers(1, 3))
    rng = np.random.default_rng(draw(st.integers(0, 2**32 - 1)))
    integer = draw(st.booleans())
    layers = []
    for a, b in itertools.pairwise([n_in, *hidden, n_out]):
        if integer:  # exact zeros and ties at the kinks
            layers.append((rng.integers(-2, 3, (b, a)).astype(float), rng.integers(-1, 2, b).astype(float)))
        else:
            layers.append((rng.normal(size=(b, a)), rng.normal(size=b)))
    c = rng.uniform(-1, 1, n_in)
    r = rng.uniform(0.0, 1.5, n_in)
    return network_from_layers(layers), c - r, c + r


def _samples(lo: np.ndarray, hi: np.ndarray, rng: np.random.Generator, n: int = 300) -> np.ndarray:
    pts = rng.uniform(lo, hi, size=(n, lo.size))
    if lo.size <= 4:
        corners = np.array(list(itertools.product(*zip(lo, hi))))
        pts = np.vstack([pts, corners])
    return pts


@SETTINGS
@given(case=nets_and_boxes(), seed=st.integers(0, 10_000))
def test_tightened_bounds_contain_samples_and_are_never_looser(case, seed) -> None:
    net, lo, hi = case
    base = crown_bounds(net, lo, hi)
    tb = tighten_bounds(net, lo, hi, base, AlphaConfig(iterations=15))
    pre = net.pre_activations(_samples(lo, hi, np.random.default_rng(seed)))
    for k, z in enumerate(pre):
        assert np.all(z >= tb.lower[k] - 1e-9), f"layer {k}: a sample below the tightened lower bound"
        assert np.all(z <= tb.upper[k] + 1e-9), f"layer {k}: a sample above the tightened upper bound"
        assert np.all(tb.lower[k] >= base.lower[k]) and np.all(tb.upper[k] <= base.upper[k])


@SETTINGS
@given(case=nets_and_boxes(), seed=st.integers(0, 10_000))
def test_alpha_encoding_bounds_contain_samples_and_are_within_crown(case, seed) -> None:
    """``EncodeOptions(bounds="alpha")``: the big-M bounds of every encoding (LAYER_BOUNDS["alpha"])."""
    from encoders.properties import LAYER_BOUNDS

    net, lo, hi = case
    crown = crown_bounds(net, lo, hi)
    ab = LAYER_BOUNDS["alpha"](net, lo, hi)
    pre = net.pre_activations(_samples(lo, hi, np.random.default_rng(seed)))
    for k, z in enumerate(pre):
        assert np.all(z >= ab.lower[k] - 1e-9) and np.all(z <= ab.upper[k] + 1e-9), f"layer {k}"
        assert np.all(ab.lower[k] >= crown.lower[k]) and np.all(ab.upper[k] <= crown.upper[k]), f"layer {k}"


def test_unknown_encoding_bounds_method() -> None:
    from encoders.properties import EncodeOptions, LocalRobustness

    net = network_from_layers([(np.eye(2), np.zeros(2)), (np.eye(2), np.zeros(2))])
    prop = LocalRobustness(np.array([0.5, 0.2]), 0.1, 0)
    with pytest.raises(SpecError, match="unknown method 'lp'"):
        prop.encode({"net": net}, EncodeOptions(bounds="lp"))


@SETTINGS
@given(case=nets_and_boxes(), seed=st.integers(0, 10_000))
def test_every_alpha_gives_a_sound_bound(case, seed) -> None:
    """The backward pass is a lower bound for *any* slopes in [0, 1] (not just the optimised ones)."""
    net, lo, hi = case
    rng = np.random.default_rng(seed)
    base = crown_bounds(net, lo, hi)
    L = len(net.affines) - 1
    Lam = rng.normal(size=(3, net.n_outputs))
    relax = [_Relax.of(base.lower[j], base.upper[j]) for j in range(L)]
    pas = _Pass(net, lo, hi, relax, L, Lam)
    alpha = [rng.uniform(0, 1, (3, r.s.size)) for r in relax]
    val, _ = pas.run(alpha, grad=False)
    y = net.evaluate(_samples(lo, hi, rng))
    true_min = (y @ Lam.T).min(axis=0)
    assert np.all(val <= true_min + 1e-9)


@SETTINGS
@given(case=nets_and_boxes(min_hidden=1, max_hidden=2), seed=st.integers(0, 10_000))
def test_alpha_crown_on_outputs_is_sound_and_at_least_crown(case, seed) -> None:
    net, lo, hi = case
    rng = np.random.default_rng(seed)
    base = crown_bounds(net, lo, hi)
    L = len(net.affines) - 1
    Lam = rng.normal(size=(4, net.n_outputs))
    res = alpha_crown_lower(net, lo, hi, base.lower, base.upper, L, Lam, AlphaConfig(iterations=30))
    crown_lb, _ = crown_linear(net, lo, hi, Lam, bounds=base)
    y = net.evaluate(_samples(lo, hi, rng))
    assert np.all(res.lb <= (y @ Lam.T).min(axis=0) + 1e-9)
    # the first iterate is CROWN's adaptive pass (without the IBP intersection): allow the IBP part
    plain = alpha_crown_lower(net, lo, hi, base.lower, base.upper, L, Lam, AlphaConfig(iterations=0))
    assert np.all(res.lb >= plain.lb - 1e-12)
    assert np.all(plain.lb <= crown_lb + 1e-9)


@pytest.mark.parametrize("k", [1, 2])
def test_gradient_matches_finite_differences(k: int) -> None:
    """Both code paths: one relaxed layer (precomputed products) and two (general reverse pass)."""
    rng = np.random.default_rng(3)
    net = network_from_layers([(rng.normal(size=(6, 3)), rng.normal(size=6)),
                               (rng.normal(size=(5, 6)), rng.normal(size=5)),
                               (rng.normal(size=(2, 5)), rng.normal(size=2))])
    lo, hi = -np.ones(3), np.ones(3)
    base = crown_bounds(net, lo, hi)
    relax = [_Relax.of(base.lower[j], base.upper[j]) for j in range(k)]
    assert all(r.unstable.any() for r in relax), "the test needs unstable neurons in every relaxed layer"
    Lam = rng.normal(size=(2, net.affines[k].W.shape[0]))
    pas = _Pass(net, lo, hi, relax, k, Lam)
    alpha = [rng.uniform(0.2, 0.8, (2, r.s.size)) for r in relax]
    _, grads = pas.run(alpha, grad=True)
    h = 1e-6
    for j in range(k):
        for q, i in itertools.product(range(2), np.flatnonzero(relax[j].unstable)):
            ap = [a.copy() for a in alpha]
            am = [a.copy() for a in alpha]
            ap[j][q, i] += h
            am[j][q, i] -= h
            fd = (pas.run(ap, grad=False)[0][q] - pas.run(am, grad=False)[0][q]) / (2 * h)
            assert grads[j][q, i] == pytest.approx(fd, abs=1e-5), (j, q, i)


def test_hand_checked_one_neuron_case() -> None:
    """z0 = (x, x + 2) on x ∈ [−1, 1]: neuron 0 unstable, neuron 1 stably active (h = x + 2);
    z1 = −h0 + h1 − 2 = x − relu(x) = min(x, 0), whose true range is [−1, 0].

    Lower bound of z1: the coefficient of h0 is −1 < 0, so the chord h0 ≤ (x + 1)/2 is used:
    z1 ≥ −(x + 1)/2 + x = x/2 − 1/2 ≥ −1 (at x = −1) — exact.
    Lower bound of −z1 = h0 − x: coefficient +1, so h0 ≥ α x: −z1 ≥ (α − 1) x ≥ −(1 − α); the best
    slope α = 1 gives −z1 ≥ 0, i.e. z1 ≤ 0 — exact.
    """
    net = network_from_layers([(np.array([[1.0], [1.0]]), np.array([0.0, 2.0])),
                               (np.array([[-1.0, 1.0]]), np.array([-2.0])),
                               (np.array([[1.0]]), np.zeros(1))])
    lo, hi = np.array([-1.0]), np.array([1.0])
    base = crown_bounds(net, lo, hi)
    res = alpha_crown_lower(net, lo, hi, base.lower, base.upper, 1, np.array([[1.0], [-1.0]]),
                            AlphaConfig(iterations=20), alpha_init=[np.zeros((2, 2))])
    assert res.lb[0] == pytest.approx(-1.0, abs=1e-8)
    assert -res.lb[1] == pytest.approx(0.0, abs=1e-8)


@SETTINGS
@given(case=nets_and_boxes(min_hidden=2, max_hidden=2), seed=st.integers(0, 10_000))
def test_one_relaxed_layer_alpha_crown_reaches_the_lp(case, seed) -> None:
    """Second hidden layer: the triangle LP is the best any α can do, and its duals give its slopes.

    α-CROWN (projected Adam) never beats the LP optimum (that would be unsound: every α is a dual
    point of the LP) and never falls below CROWN; the bound evaluated at the slopes read off the LP
    duals reproduces the LP optimum (up to solver tolerances) and is sound on samples.  (Gradient
    ascent need not reach the LP optimum exactly — it is a subgradient method on a piecewise-linear
    function — so no closeness is asserted for it.)
    """
    net, lo, hi = case
    rng = np.random.default_rng(seed)
    base = crown_bounds(net, lo, hi)
    n1 = net.affines[1].W.shape[0]
    Lam = np.vstack([np.eye(n1), -np.eye(n1)])
    lp_val, lp_sound = lp_layer_bounds(net, lo, hi, base.lower, base.upper, 1, Lam)
    res = alpha_crown_lower(net, lo, hi, base.lower, base.upper, 1, Lam,
                            AlphaConfig(iterations=300, tol=0.0, patience=300))
    scale = 1.0 + np.abs(lp_val)
    assert np.all(lp_sound <= lp_val + 1e-6 * scale), "the dual-derived bound exceeds the LP optimum"
    assert np.all(res.lb <= lp_val + 1e-6 * scale), "α-CROWN exceeds the LP optimum: unsound"
    crown_lb = alpha_crown_lower(net, lo, hi, base.lower, base.upper, 1, Lam, AlphaConfig(iterations=0)).lb
    assert np.all(res.lb >= crown_lb - 1e-12)
    assert np.all(lp_sound >= lp_val - 1e-5 * scale), "dual-derived slopes do not reproduce the LP"
    z1 = net.pre_activations(_samples(lo, hi, rng))[1]
    assert np.all(lp_sound[:n1] <= z1.min(axis=0) + 1e-9)


def test_bad_input() -> None:
    net = network_from_layers([(np.eye(2), np.zeros(2)), (np.eye(2), np.zeros(2))])
    with pytest.raises(ConfigError):
        AlphaConfig(iterations=-1)
    with pytest.raises(SpecError):
        alpha_crown_lower(net, np.zeros(2), np.ones(2), [], [], 1, np.eye(2))
    with pytest.raises(SpecError):
        alpha_crown_lower(net, np.ones(2), np.zeros(2), [np.zeros(2)], [np.ones(2)], 1, np.eye(2))


# --------------------------------------------------------------------------------------------------
# β-CROWN on split sub-domains
# --------------------------------------------------------------------------------------------------
@SETTINGS
@given(case=nets_and_boxes(min_hidden=1, max_hidden=3), seed=st.integers(0, 10_000))
def test_split_bounds_are_sound_for_any_multipliers(case, seed) -> None:
    """Random sub-domains (random splits of root-unstable neurons), random α ∈ [0,1], β ≥ 0: the
    bound never exceeds the objective at sampled points that satisfy the sub-domain's split
    constraints — and optimisation keeps it sound."""
    net, lo, hi = case
    rng = np.random.default_rng(seed)
    base = crown_bounds(net, lo, hi)
    L = len(net.affines) - 1
    lam = rng.normal(size=net.n_outputs)
    ctx = SplitContext(net, lo, hi, base.lower, base.upper, L, lam)
    m = 6
    S, _, _ = ctx.initial(m)
    xs = _samples(lo, hi, rng, 3000)
    pre = net.pre_activations(xs)
    anchors = rng.integers(0, xs.shape[0], m)  # each sub-domain is built around a sample: never empty
    for j in range(L):
        cand = np.flatnonzero(ctx.unstable[j])
        for q in range(m):
            pick = cand[rng.random(cand.size) < 0.5]
            S[j][q, pick] = np.where(pre[j][anchors[q], ctx.live[j][pick]] >= 0, 1, -1)
    alpha = [rng.uniform(0, 1, (m, lv.size)) for lv in ctx.live]
    beta = [rng.exponential(1.0, (m, lv.size)) * (S[j] != 0) for j, lv in enumerate(ctx.live)]
    val, *_ = ctx.run(S, alpha, beta, grad=False)
    lb_rand = ctx.sound(val, beta)
    lb_opt = ctx.optimise(S, alpha, beta, AlphaConfig(iterations=15)).lb
    obj = pre[-1] @ lam
    for q in range(m):
        inside = np.ones(xs.shape[0], dtype=bool)
        for j in range(L):
            zq = pre[j][:, ctx.live[j]]
            inside &= np.all((S[j][q] == 0) | (S[j][q] * zq >= 0), axis=1)
        assert inside[anchors[q]]
        assert lb_rand[q] <= obj[inside].min() + 1e-9
        assert lb_opt[q] <= obj[inside].min() + 1e-9


def test_split_gradients_match_finite_differences() -> None:
    rng = np.random.default_rng(4)
    net = network_from_layers([(rng.normal(size=(6, 3)), rng.normal(size=6)),
                               (rng.normal(size=(5, 6)), rng.normal(size=5)),
                               (rng.normal(size=(2, 5)), rng.normal(size=2))])
    lo, hi = -np.ones(3), np.ones(3)
    base = crown_bounds(net, lo, hi)
    ctx = SplitContext(net, lo, hi, base.lower, base.upper, 2, np.array([1.0, -0.5]))
    S, _, _ = ctx.initial(1)
    for j in range(2):
        u = np.flatnonzero(ctx.unstable[j])
        assert u.size >= 2, "the test needs two unstable neurons per layer"
        S[j][0, u[0]] = 1 if j == 0 else -1
    alpha = [rng.uniform(0.2, 0.8, (1, lv.size)) for lv in ctx.live]
    beta = [rng.uniform(0.2, 1.0, (1, lv.size)) * (S[j] != 0) for j, lv in enumerate(ctx.live)]
    _, ga, gb, *_ = ctx.run(S, alpha, beta, grad=True)
    h = 1e-6
    for which, params, grads in (("alpha", alpha, ga), ("beta", beta, gb)):
        for j in range(2):
            for i in range(params[j].shape[1]):
                p_, m_ = [p.copy() for p in params], [p.copy() for p in params]
                p_[j][0, i] += h
                m_[j][0, i] -= h
                args_p = (p_, beta) if which == "alpha" else (alpha, p_)
                args_m = (m_, beta) if which == "alpha" else (alpha, m_)
                fd = (ctx.run(S, *args_p, grad=False)[0][0] - ctx.run(S, *args_m, grad=False)[0][0]) / (2 * h)
                if which == "beta" and S[j][0, i] == 0:
                    continue  # β of an unsplit neuron is never used (kept at 0)
                assert grads[j][0, i] == pytest.approx(fd, abs=1e-5), (which, j, i)


def test_splitting_every_neuron_gives_the_exact_minimum_on_a_tiny_net() -> None:
    """z = relu(x) − relu(−x) = x on [−1, 1] (neurons x and −x): min z = −1.

    Root (triangle relaxations): both neurons unstable, CROWN cannot reach −1 exactly from below
    without splits… with the split x ≥ 0 (neuron 0 active, neuron 1 inactive) the sub-domain is
    [0, 1] and the exact minimum there is 0; β-CROWN must prove ``≥ 0`` up to rounding, which needs
    β > 0 (the box still contains x < 0).
    """
    net = network_from_layers([(np.array([[1.0], [-1.0]]), np.zeros(2)),
                               (np.array([[1.0, -1.0]]), np.zeros(1))])
    lo, hi = np.array([-1.0]), np.array([1.0])
    base = crown_bounds(net, lo, hi)
    ctx = SplitContext(net, lo, hi, base.lower, base.upper, 1, np.array([1.0]))
    S, al, be = ctx.initial(1)
    S[0][0, :] = [1, -1]
    plain = ctx.optimise(S, al, be, AlphaConfig(iterations=0)).lb[0]
    opt = ctx.optimise(S, al, be, AlphaConfig(iterations=200, lr=0.1, patience=200)).lb[0]
    assert plain == pytest.approx(-1.0, abs=1e-8)  # β = 0: the split constraint is ignored
    assert -1e-3 <= opt <= 1e-8


# --------------------------------------------------------------------------------------------------
# per-sub-domain intermediate bounds (SplitContext.refine)
# --------------------------------------------------------------------------------------------------
@SETTINGS
@given(case=nets_and_boxes(min_hidden=2, max_hidden=4), seed=st.integers(0, 10_000), use_slopes=st.booleans())
def test_refined_bounds_contain_every_point_of_the_sub_domain(case, seed, use_slopes) -> None:
    """Random splits around a sample: the refined pre-activation bounds contain the pre-activations of
    every sampled point of the sub-domain, are never looser than the root's, and the β-CROWN bound
    computed on them stays below the objective there (with random or α-CROWN-optimised slopes)."""
    net, lo, hi = case
    rng = np.random.default_rng(seed)
    base = crown_bounds(net, lo, hi)
    slopes: dict = {}
    if use_slopes:
        base = tighten_bounds(net, lo, hi, base, AlphaConfig(iterations=5), slopes=slopes)
    L = len(net.affines) - 1
    lam = rng.normal(size=net.n_outputs)
    ctx = SplitContext(net, lo, hi, base.lower, base.upper, L, lam, slopes)
    m = 5
    S, alpha, beta = ctx.initial(m)
    xs = _samples(lo, hi, rng, 3000)
    pre = net.pre_activations(xs)
    anchors = rng.integers(0, xs.shape[0], m)
    for j in range(L):
        cand = np.flatnonzero(ctx.unstable[j])
        for q in range(m):
            pick = cand[rng.random(cand.size) < 0.4]
            S[j][q, pick] = np.where(pre[j][anchors[q], ctx.live[j][pick]] >= 0, 1, -1)
    lw, uw = ctx.root_bounds(m)
    lw2, uw2, empty = ctx.refine(S, lw, uw)
    assert not empty.any()  # every sub-domain holds its anchor
    beta = [rng.exponential(1.0, (m, lv.size)) * (S[j] != 0) for j, lv in enumerate(ctx.live)]
    lb = ctx.optimise(S, alpha, beta, AlphaConfig(iterations=5), bounds=(lw2, uw2)).lb
    obj = pre[-1] @ lam
    for q in range(m):
        inside = np.ones(xs.shape[0], dtype=bool)
        for j in range(L):
            zq = pre[j][:, ctx.live[j]]
            inside &= np.all((S[j][q] == 0) | (S[j][q] * zq >= 0), axis=1)
        assert inside[anchors[q]]
        for j in range(L):
            zq = pre[j][inside][:, ctx.live[j]]
            assert np.all(lw2[j][q] <= zq.min(axis=0) + 1e-9)
            assert np.all(uw2[j][q] >= zq.max(axis=0) - 1e-9)
            assert np.all(lw2[j][q] >= lw[j][q]) and np.all(uw2[j][q] <= uw[j][q])
        assert lb[q] <= obj[inside].min() + 1e-9


def test_refine_makes_a_neuron_stable_by_hand() -> None:
    """x ∈ [−1, 1]; z0 = x; z1 = relu(z0) − 0.5 ∈ [−0.5, 0.5] (unstable at the root).

    Sub-domain z0 ≤ 0: h0 = 0, so z1 = −0.5 exactly and the refined bounds are [−0.5, −0.5] up to the
    rounding margin (the neuron becomes stably inactive).  Sub-domain z0 ≥ 0: h0 = x, z1 = x − 0.5 ∈
    [−1.5, 0.5] by CROWN, intersected with the root's [−0.5, 0.5]: unchanged, and z0's own bounds
    become [0, 1]."""
    net = network_from_layers(
        [
            (np.array([[1.0]]), np.zeros(1)),
            (np.array([[1.0]]), np.array([-0.5])),
            (np.array([[1.0]]), np.zeros(1)),
        ]
    )
    lo, hi = np.array([-1.0]), np.array([1.0])
    base = crown_bounds(net, lo, hi)
    assert base.lower[1][0] < 0 < base.upper[1][0]
    ctx = SplitContext(net, lo, hi, base.lower, base.upper, 2, np.array([1.0]))
    S, _, _ = ctx.initial(2)
    S[0][0, 0] = -1
    S[0][1, 0] = 1
    lw, uw = ctx.root_bounds(2)
    lw2, uw2, empty = ctx.refine(S, lw, uw)
    assert not empty.any()
    assert uw2[0][0, 0] == 0.0 and lw2[0][1, 0] == 0.0
    assert lw2[1][0, 0] == pytest.approx(-0.5, abs=1e-9) and uw2[1][0, 0] == pytest.approx(-0.5, abs=1e-9)
    assert lw2[1][0, 0] <= -0.5 <= uw2[1][0, 0]  # the widening keeps the exact value inside
    assert lw2[1][1, 0] == pytest.approx(-0.5, abs=1e-9) and uw2[1][1, 0] == pytest.approx(0.5, abs=1e-9)


def test_split_context_with_slopes_and_a_layer_without_live_neurons() -> None:
    """Regression (found by hypothesis): slopes known for a layer whose neurons are all stable."""
    net = network_from_layers(
        [
            (np.array([[1.0], [2.0], [-2.0], [1.0]]), np.array([-1.0, 1.0, 0.0, -1.0])),
            (np.array([[0.0, -1.0, -2.0, -2.0]]), np.array([0.0])),
            (np.array([[2.0]]), np.array([-1.0])),
            (np.array([[-2.0], [1.0]]), np.array([-1.0, -1.0])),
            (np.array([[1.0, 2.0], [-1.0, 1.0]]), np.array([0.0, 0.0])),
        ]
    )
    lo, hi = np.array([-1.71244652]), np.array([1.07624271])
    base = crown_bounds(net, lo, hi)
    slopes: dict = {}
    bounds = tighten_bounds(net, lo, hi, base, slopes=slopes)
    L = len(net.affines) - 1
    ctx = SplitContext(net, lo, hi, bounds.lower, bounds.upper, L, np.array([1.0, -1.0]), slopes)
    S, al, be = ctx.initial(1)
    lw, uw = ctx.root_bounds(1)
    res = ctx.run(S, al, be, grad=False, bounds=(lw, uw))[0]
    xs = np.linspace(lo, hi, 201)
    assert np.all(res[0] <= (net.evaluate(xs) @ np.array([1.0, -1.0])).min() + 1e-9)
