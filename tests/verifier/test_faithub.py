"""Joint FAITHUB (encoders.bounds.pair, verifier.search.pair_split): soundness on sampled points, exactness
of the slab LP bound, a hand-worked coupled case, monotonicity of the branch and bound, EMPLB ≤ FAITHUB."""

from __future__ import annotations

import math

import numpy as np
import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from encoders import relaxations as rx
from encoders.bounds import LayerBounds, crown_linear
from encoders.bounds.pair import _slab_min, decoupled_terms, pair_linear_bounds, slab_terms
from encoders.errors import ConfigError, SpecError
from encoders.network import network_from_layers
from encoders.properties import faithub_crown
from verifier.search.pair_split import FaithubConfig, faithub_joint


def _random_net(rng: np.random.Generator, sizes: list[int], scale: float = 1.0):
    layers = []
    for a, b in zip(sizes[:-1], sizes[1:]):
        layers.append((rng.normal(size=(b, a)) * scale / math.sqrt(a), rng.normal(size=b) * 0.3 * scale))
    return network_from_layers(layers)


def _softmax(z: np.ndarray) -> np.ndarray:
    e = np.exp(z - z.max(axis=-1, keepdims=True))
    return e / e.sum(axis=-1, keepdims=True)


def _true_gaps(t, s, X: np.ndarray) -> np.ndarray:
    return np.abs(_softmax(t.evaluate(X)) - _softmax(s.evaluate(X))).max(axis=1)


def _samples(rng: np.random.Generator, lo: np.ndarray, hi: np.ndarray, k: int) -> np.ndarray:
    X = lo + (hi - lo) * rng.random((k, lo.size))
    corners = np.where(rng.random((k // 4, lo.size)) < 0.5, lo, hi)  # box corners, where extremes often lie
    return np.vstack([X, corners, lo, hi])


# --------------------------------------------------------------------------------------------------
# soundness
# --------------------------------------------------------------------------------------------------
@settings(max_examples=25, deadline=None, suppress_health_check=[HealthCheck.too_slow])
@given(seed=st.integers(0, 2**31 - 1), n_in=st.integers(1, 4), n_out=st.integers(2, 4),
       width=st.sampled_from([0.05, 0.3, 1.0]), scale=st.sampled_from([1.0, 3.0]))
def test_joint_bound_is_above_every_sampled_gap(seed: int, n_in: int, n_out: int, width: float,
                                                scale: float) -> None:
    rng = np.random.default_rng(seed)
    t = _random_net(rng, [n_in, 6, 5, n_out], scale)
    s = _random_net(rng, [n_in, 4, n_out], scale)
    x0 = rng.normal(size=n_in)
    lo, hi = x0 - width, x0 + width
    res = faithub_joint(t, s, lo, hi, FaithubConfig(time_limit=0.05, max_boxes=24, split_per_round=4))
    gaps = _true_gaps(t, s, _samples(rng, lo, hi, 400))
    assert gaps.max() <= res.faithub
    assert res.faithub <= res.root <= res.root_decoupled + 1e-12
    # the decoupled root bound is seed 001's Eq. 11 on CROWN bounds (up to CROWN's interval intersection)
    assert res.root_decoupled >= faithub_crown(t, s, lo, hi) - 1e-9


@settings(max_examples=20, deadline=None, suppress_health_check=[HealthCheck.too_slow])
@given(seed=st.integers(0, 2**31 - 1), n_in=st.integers(1, 4), width=st.sampled_from([0.3, 1.0]),
       relu_weight=st.sampled_from([1e9, 1.0]), weighted=st.booleans())
def test_relu_split_branch_and_bound_is_sound(seed: int, n_in: int, width: float, relu_weight: float,
                                              weighted: bool) -> None:
    """ReLU-phase splitting (teacher and student) never cuts off a sampled gap, and tightens the root."""
    rng = np.random.default_rng(seed)
    t = _random_net(rng, [n_in, 8, 8, 3], 2.0)
    s = _random_net(rng, [n_in, 6, 3], 2.0)
    x0 = rng.normal(size=n_in)
    lo, hi = x0 - width, x0 + width
    cfg = FaithubConfig(time_limit=10.0, max_boxes=40, split_per_round=4, relu_weight=relu_weight,
                        relu_weighted=weighted)
    res = faithub_joint(t, s, lo, hi, cfg)
    gaps = _true_gaps(t, s, _samples(rng, lo, hi, 600))
    assert gaps.max() <= res.faithub <= res.root


def _split_prior(net, lo, hi, layer: int, neuron: int, active: bool) -> LayerBounds:
    base = pair_linear_bounds(net, lo[None], hi[None]).bounds
    low = [np.atleast_2d(a).copy() for a in base.lower]
    up = [np.atleast_2d(a).copy() for a in base.upper]
    if active:
        low[layer][0, neuron] = max(low[layer][0, neuron], 0.0)
    else:
        up[layer][0, neuron] = min(up[layer][0, neuron], 0.0)
    return LayerBounds(tuple(low), tuple(up), "crown")


def _pre_activations(net, X: np.ndarray) -> list[np.ndarray]:
    out, h = [], X
    for k, a in enumerate(net.affines):
        z = h @ a.W.T + a.b
        out.append(z)
        h = np.maximum(z, 0.0) if k < len(net.affines) - 1 else z
    return out


@settings(max_examples=25, deadline=None)
@given(seed=st.integers(0, 2**31 - 1), n_in=st.integers(1, 4), active=st.booleans())
def test_pair_linear_bounds_with_a_relu_split_hold_on_the_sub_domain(seed: int, n_in: int,
                                                                     active: bool) -> None:
    """With a split neuron's bound forced to 0, the linear bounds hold on {x : sign of z_k as split}
    (and may fail outside it), and the split neuron's relaxation is exact there."""
    rng = np.random.default_rng(seed)
    net = _random_net(rng, [n_in, 8, 7, 3], 2.0)
    lo, hi = rng.normal(size=n_in) - 1.0, rng.normal(size=n_in) + 1.0
    lo, hi = np.minimum(lo, hi), np.maximum(lo, hi)
    base = pair_linear_bounds(net, lo[None], hi[None])
    lb = [np.atleast_2d(a)[0] for a in base.bounds.lower]
    ub = [np.atleast_2d(a)[0] for a in base.bounds.upper]
    unst = [np.nonzero((lb[j] < 0) & (ub[j] > 0))[0] for j in range(2)]
    cands = [(j, int(k)) for j in range(2) for k in unst[j]]
    if not cands:
        return
    layer, neuron = cands[rng.integers(len(cands))]
    P = pair_linear_bounds(net, lo[None], hi[None], _split_prior(net, lo, hi, layer, neuron, active))
    X = _samples(rng, lo, hi, 600)
    z = _pre_activations(net, X)
    inside = z[layer][:, neuron] >= 0 if active else z[layer][:, neuron] <= 0
    X = X[inside]
    if P.empty[0]:
        assert X.shape[0] == 0
        return
    if X.shape[0] == 0:
        return
    out = net.evaluate(X)
    D = out[:, None, :] - out[:, :, None]  # d_ij = z_j − z_i
    low = np.einsum("ijm,km->kij", P.A_lo[0], X) + P.c_lo[0]
    upp = np.einsum("ijm,km->kij", P.A_up[0], X) + P.c_up[0]
    assert np.all(low <= D + 1e-9) and np.all(upp + 1e-9 >= D)
    assert np.all(P.dl[0] <= D + 1e-9) and np.all(P.du[0] + 1e-9 >= D)


def test_a_contradictory_split_is_an_empty_leaf() -> None:
    """Forcing a neuron active where its upper bound is negative leaves no input: flagged empty."""
    net = network_from_layers([(np.array([[1.0], [-1.0]]), np.array([-5.0, 0.0])),
                               (np.eye(2), np.zeros(2))])
    lo, hi = np.array([0.0]), np.array([1.0])
    base = pair_linear_bounds(net, lo[None], hi[None])
    assert not base.empty[0]
    prior = _split_prior(net, lo, hi, 0, 0, active=True)  # z_0 = x − 5 ≤ −4 on the box
    assert pair_linear_bounds(net, lo[None], hi[None], prior).empty[0]


def test_relu_splitting_alone_tightens_the_root_bound() -> None:
    """ReLU-phase splits only (same box, no input split) tighten the root bound, and both the ReLU-split
    and the input-split searches stay above the sampled gaps.  (Which kind of split pays more depends on
    the instance: on low-dimensional inputs with wide boxes input splits win, on the 64-input digits
    models ReLU splits do.)"""
    rng = np.random.default_rng(11)
    t = _random_net(rng, [8, 24, 24, 4], 1.0)
    Ws = [(a.W.copy(), a.b.copy()) for a in t.affines]
    Ws[-1] = (Ws[-1][0] + 0.1 * rng.normal(size=Ws[-1][0].shape), Ws[-1][1])
    s = network_from_layers(Ws)
    lo, hi = np.full(8, -0.3), np.full(8, 0.3)
    res = {w: faithub_joint(t, s, lo, hi, FaithubConfig(time_limit=30.0, max_boxes=48, relu_weight=w))
           for w in (0.0, 1e9)}
    gaps = _true_gaps(t, s, _samples(rng, lo, hi, 3000))
    assert gaps.max() <= min(r.faithub for r in res.values())
    assert res[1e9].faithub < res[1e9].root - 0.02
    assert res[0.0].faithub < res[0.0].root - 0.02


@settings(max_examples=25, deadline=None)
@given(seed=st.integers(0, 2**31 - 1), n_in=st.integers(1, 5), width=st.sampled_from([0.01, 0.2, 1.0]))
def test_pair_linear_bounds_enclose_every_logit_difference(seed: int, n_in: int, width: float) -> None:
    rng = np.random.default_rng(seed)
    net = _random_net(rng, [n_in, 7, 6, 3], 2.0)
    x0 = rng.normal(size=(2, n_in))
    lo, hi = x0 - width, x0 + width
    P = pair_linear_bounds(net, lo, hi)
    for b in range(2):
        X = _samples(rng, lo[b], hi[b], 200)
        z = net.evaluate(X)
        d = z[:, None, :] - z[:, :, None]  # d[:, i, j] = z_j − z_i
        low = np.einsum("ijm,km->kij", P.A_lo[b], X) + P.c_lo[b]
        up = np.einsum("ijm,km->kij", P.A_up[b], X) + P.c_up[b]
        assert np.all(low <= d) and np.all(d <= up)
        assert np.all(P.dl[b] <= d.min(axis=0)) and np.all(d.max(axis=0) <= P.du[b])
        # the concretised bounds are CROWN's (crown_linear also intersects with an interval bound)
        C = np.zeros((6, 3))
        pairs = [(i, j) for i in range(3) for j in range(3) if i != j]
        for r, (i, j) in enumerate(pairs):
            C[r, j], C[r, i] = 1.0, -1.0
        lb, ub = crown_linear(net, lo[b], hi[b], C)
        dl = np.array([P.dl[b, i, j] for i, j in pairs])
        du = np.array([P.du[b, i, j] for i, j in pairs])
        # the same bounds as crown_linear (CROWN ∩ the last layer's interval bound) up to rounding margins
        assert dl == pytest.approx(lb, rel=1e-9, abs=1e-9) and du == pytest.approx(ub, rel=1e-9, abs=1e-9)
        tol_l, tol_u = 1e-12 * (1 + np.abs(lb)), 1e-12 * (1 + np.abs(ub))
        assert np.all(dl <= lb + tol_l) and np.all(du >= ub - tol_u)


@settings(max_examples=40, deadline=None)
@given(seed=st.integers(0, 2**31 - 1), m=st.integers(1, 6), K=st.integers(1, 5))
def test_slab_min_is_the_lp_optimum(seed: int, m: int, K: int) -> None:
    """``_slab_min`` is the exact LP value ``min c·x`` over box ∩ slab (to 1e-7), never above it."""
    from scipy.optimize import linprog

    rng = np.random.default_rng(seed)
    A = rng.normal(size=(1, 3, m))
    A[0, 0, : m // 2] = 0.0  # some zero coefficients
    w = rng.normal(size=(1, m))
    if m > 1:
        w[0, -1] = 0.0  # a coordinate the slab does not constrain
    lo = rng.normal(size=(1, m))
    hi = lo + rng.random((1, m)) * 2
    wmin = float(np.sum(np.minimum(w * lo, w * hi)))
    wmax = float(np.sum(np.maximum(w * lo, w * hi)))
    tau = np.sort(rng.uniform(wmin, wmax, size=K - 1)) if K > 1 else np.zeros(0)
    tau = np.concatenate([[-np.inf], tau, [np.inf]])[None, :]
    c = rng.normal(size=(1, 3))
    got = _slab_min(A, c, w, tau, lo, hi)
    for k in range(K):
        A_ub, b_ub = [], []
        if np.isfinite(tau[0, k + 1]):
            A_ub.append(w[0]), b_ub.append(tau[0, k + 1])
        if np.isfinite(tau[0, k]):
            A_ub.append(-w[0]), b_ub.append(-tau[0, k])
        for q in range(3):
            r = linprog(A[0, q], A_ub=np.array(A_ub) if A_ub else None, b_ub=b_ub or None,
                        bounds=list(zip(lo[0], hi[0])), method="highs")
            if r.status == 2:  # empty slab (a cut at the range's end): any value is sound
                continue
            exact = r.fun + c[0, q]
            assert got[0, k, q] <= exact + 1e-9
            assert got[0, k, q] >= exact - 1e-7


# --------------------------------------------------------------------------------------------------
# worked example: one network against itself (true gap 0)
# --------------------------------------------------------------------------------------------------
def _two_class_identity():
    # one input, h = relu(x + 10) (stably active on [−1, 1]), logits (0, h − 10) = (0, x): CROWN is exact.
    return network_from_layers([(np.array([[1.0]]), np.array([10.0])),
                                (np.array([[0.0], [1.0]]), np.array([0.0, -10.0]))])


def _sig(v: float) -> float:
    return 1.0 / (1.0 + math.exp(-v))


def test_worked_example_network_against_itself() -> None:
    """Teacher = student, logits (0, x) on x ∈ [−1, 1].  σ_0 = 1/(1 + e^x) ranges over [σ(−1), σ(1)], so
    Eq. 11 gives σ(1) − σ(−1) = 0.4621 although the true gap is 0.  Slabs along w = ±e_1 (the only
    direction) cut [−1, 1] into K equal pieces; on each, the bound is σ(τ_{k+1}) − σ(τ_k), largest for the
    piece at 0: σ(2/K) − σ(0) (pieces [−1 + 2k/K, −1 + 2(k+1)/K]; one starts at 0 for even K)."""
    net = _two_class_identity()
    lo, hi = np.array([-1.0]), np.array([1.0])
    dec = faithub_crown(net, net, lo, hi)
    assert dec == pytest.approx(_sig(1) - _sig(-1), abs=1e-9)
    K = 8
    res = faithub_joint(net, net, lo, hi, FaithubConfig(time_limit=0.0, slabs=K))
    assert res.root_decoupled == pytest.approx(dec, abs=1e-9)
    assert res.root == pytest.approx(_sig(2 / K) - _sig(0), abs=1e-9)
    # branch and bound: each split halves the interval; the bound keeps shrinking towards 0
    cfg = FaithubConfig(time_limit=5.0, slabs=K, max_boxes=16, tolerance=0.0)
    deep = faithub_joint(net, net, lo, hi, cfg)
    assert deep.boxes == 16
    assert deep.faithub <= res.root / 2 + 1e-12


def test_slab_terms_for_selected_terms_and_scores() -> None:
    net = _two_class_identity()
    lo, hi = np.array([[-1.0]]), np.array([[1.0]])
    P = pair_linear_bounds(net, lo, hi)
    dec = decoupled_terms(P, P)
    assert dec.shape == (1, 2, 2)
    assert np.allclose(dec, _sig(1) - _sig(-1), atol=1e-9)
    which = np.array([[0, 0, 0], [0, 1, 1]])
    val, score = slab_terms(P, P, lo, hi, which, slabs=4)
    assert np.allclose(val, _sig(0.5) - _sig(0), atol=1e-9)
    assert score.shape == (2, 1) and np.all(score > 0)


# --------------------------------------------------------------------------------------------------
# branch and bound, config, errors
# --------------------------------------------------------------------------------------------------
def test_branch_and_bound_never_increases_and_beats_eq11_on_a_distilled_pair() -> None:
    rng = np.random.default_rng(3)
    t = _random_net(rng, [3, 16, 16, 4], 2.0)
    # a student that mimics the teacher: the teacher plus a small perturbation of its last layer
    Ws = [(a.W.copy(), a.b.copy()) for a in t.affines]
    Ws[-1] = (Ws[-1][0] + 0.05 * rng.normal(size=Ws[-1][0].shape), Ws[-1][1])
    s = network_from_layers(Ws)
    lo, hi = np.full(3, -0.3), np.full(3, 0.3)
    dec = faithub_crown(t, s, lo, hi)
    values = [faithub_joint(t, s, lo, hi, FaithubConfig(time_limit=10.0, max_boxes=b)).faithub
              for b in (1, 9, 33)]
    assert values[0] <= dec + 1e-12
    assert values[2] <= values[1] <= values[0]
    assert values[2] < 0.8 * dec  # the coupled bound is much tighter than Eq. 11 for near-copies
    gaps = _true_gaps(t, s, _samples(rng, lo, hi, 2000))
    assert gaps.max() <= values[2]


def test_config_and_input_errors() -> None:
    with pytest.raises(ConfigError):
        FaithubConfig(time_limit=-1)
    with pytest.raises(ConfigError):
        FaithubConfig(slabs=-1)
    with pytest.raises(ConfigError):
        FaithubConfig(max_boxes=0)
    with pytest.raises(ConfigError):
        FaithubConfig(relu_weight=-1.0)
    net = _two_class_identity()
    other = network_from_layers([(np.ones((3, 1)), np.zeros(3))])
    with pytest.raises(SpecError):
        faithub_joint(net, other, np.array([0.0]), np.array([1.0]))
    with pytest.raises(SpecError):
        pair_linear_bounds(net, np.array([[1.0]]), np.array([[0.0]]))


def test_agrees_with_eq11_helper_on_point_boxes() -> None:
    """On a degenerate box (a point) every bound equals the exact gap there."""
    rng = np.random.default_rng(5)
    t = _random_net(rng, [2, 5, 3], 2.0)
    s = _random_net(rng, [2, 4, 3], 2.0)
    x = rng.normal(size=2)
    exact = float(_true_gaps(t, s, x[None])[0])
    res = faithub_joint(t, s, x, x, FaithubConfig(time_limit=0.0))
    assert res.faithub == pytest.approx(exact, abs=1e-9)
    assert res.faithub >= exact
    zt, zs = t.evaluate(x), s.evaluate(x)
    d = lambda z: z[None, :] - z[:, None]  # noqa: E731
    assert rx.faithub(d(zt), d(zt), d(zs), d(zs)) == pytest.approx(exact, abs=1e-9)


# --------------------------------------------------------------------------------------------------
# EMPLB ≤ FAITHUB with the real PGD lower bound
# --------------------------------------------------------------------------------------------------
def test_emplb_below_joint_faithub_on_torch_models() -> None:
    torch = pytest.importorskip("torch")
    from distill.attacks import emplb
    from distill.models import affine_layers

    torch.manual_seed(0)
    mk = lambda h: torch.nn.Sequential(  # noqa: E731
        torch.nn.Linear(4, h), torch.nn.ReLU(), torch.nn.Linear(h, h), torch.nn.ReLU(), torch.nn.Linear(h, 3)
    )
    t, s = mk(12), mk(6)
    X = np.random.default_rng(0).random((4, 4))
    eps = 0.1
    strong = emplb(t, s, X, eps, steps=30, restarts=2, domain=(0.0, 1.0), targeted_restarts=1)
    weak = emplb(t, s, X, eps, steps=30, restarts=2, domain=(0.0, 1.0), targeted_restarts=0)
    tn, sn = network_from_layers(affine_layers(t)), network_from_layers(affine_layers(s))
    for i, x in enumerate(X):
        lo, hi = np.maximum(x - eps, 0.0), np.minimum(x + eps, 1.0)
        fu = faithub_joint(tn, sn, lo, hi, FaithubConfig(time_limit=0.2)).faithub
        assert weak[i] <= fu + 1e-6 and strong[i] <= fu + 1e-6
        # the clean point is feasible, so both lower bounds are at least the gap there
        clean = float(_true_gaps(tn, sn, x[None])[0])
        assert weak[i] >= clean - 1e-6 and strong[i] >= clean - 1e-6
    with pytest.raises(ConfigError):
        emplb(t, s, X, eps, targeted_restarts=-1)
