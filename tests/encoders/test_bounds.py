"""Soundness and consistency of IBP / CROWN bounds (``encoders.bounds``).

Hypothesis draws small random networks (1–3 hidden layers, ≤ 8 units; sometimes small integer
weights, which produce exact zeros and ties at the ReLU kinks) and random boxes.  Every test checks
an invariant that a wrong bound would break: concrete points (box corners included) inside every
layer's bounds, CROWN never looser than IBP, margins sound, batched == per-box, L2-ball soundness.
The real-network tests use the VNN-COMP 2021 mnist and ACAS Xu files and the benchmark's own
ground truth (``expected.csv``): a CROWN "robust" verdict on an instance known to be ``sat`` would
be a soundness bug.
"""

from __future__ import annotations

import csv
import itertools
import re
from pathlib import Path

import numpy as np
import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from encoders.bounds import (
    ALPHA_MODES,
    LayerBounds,
    crown_bounds,
    crown_bounds_l2,
    crown_linear,
    crown_linear_ball_l2,
    interval_bounds,
    margin_bounds,
    margin_bounds_l2,
    margin_spec,
    rounding_tolerance,
)
from encoders.errors import ConfigError, SpecError
from encoders.network import Network, load_onnx, network_from_layers

TOL = 1e-9
SETTINGS = settings(max_examples=60, deadline=None)


# --------------------------------------------------------------------------------------------------
# strategies
# --------------------------------------------------------------------------------------------------
@st.composite
def networks(draw: st.DrawFn) -> Network:
    n_in = draw(st.integers(1, 4))
    hidden = draw(st.lists(st.integers(1, 8), min_size=1, max_size=3))
    n_out = draw(st.integers(1, 4))
    integer = draw(st.booleans())
    rng = np.random.default_rng(draw(st.integers(0, 2**32 - 1)))
    sizes = [n_in, *hidden, n_out]
    layers = []
    for a, b in itertools.pairwise(sizes):
        if integer:  # exact zeros and ties: pre-activations that sit exactly on the kink
            W, bias = (
                rng.integers(-2, 3, size=(b, a)).astype(float),
                rng.integers(-1, 2, size=b).astype(float),
            )
        else:
            W, bias = rng.normal(size=(b, a)) / np.sqrt(a), rng.normal(size=b) * 0.5
        layers.append((W, bias))
    return network_from_layers(layers)


@st.composite
def boxes(draw: st.DrawFn, n: int, n_boxes: int = 1) -> tuple[np.ndarray, np.ndarray]:
    rng = np.random.default_rng(draw(st.integers(0, 2**32 - 1)))
    centre = rng.uniform(-1, 1, size=(n_boxes, n))
    width = rng.uniform(0, 1.5, size=(n_boxes, n)) * (rng.random((n_boxes, n)) > 0.15)  # some zero widths
    return centre - width, centre + width


def sample_box(lo: np.ndarray, hi: np.ndarray, n: int, seed: int) -> np.ndarray:
    """All corners (n ≤ 6), the centre and ``n`` uniform points of the box."""
    rng = np.random.default_rng(seed)
    corners = np.array(list(itertools.product(*zip(lo, hi))))
    return np.vstack([corners, 0.5 * (lo + hi), rng.uniform(lo, hi, size=(n, lo.size))])


def assert_contains(bounds: LayerBounds, net: Network, X: np.ndarray, box: int | None = None) -> None:
    pre = net.pre_activations(X)
    for k, z in enumerate(pre):
        lo = bounds.lower[k] if box is None else bounds.lower[k][box]
        up = bounds.upper[k] if box is None else bounds.upper[k][box]
        assert np.all(z >= lo), f"{bounds.method} layer {k}: point below lower bound by {np.max(lo - z)}"
        assert np.all(z <= up), f"{bounds.method} layer {k}: point above upper bound by {np.max(z - up)}"


# --------------------------------------------------------------------------------------------------
# hypothesis: soundness
# --------------------------------------------------------------------------------------------------
@SETTINGS
@given(net=networks(), data=st.data(), seed=st.integers(0, 10_000))
def test_points_inside_ibp_and_crown_bounds(net: Network, data: st.DataObject, seed: int) -> None:
    lo, hi = data.draw(boxes(net.n_inputs))
    lo, hi = lo[0], hi[0]
    X = sample_box(lo, hi, 200, seed)
    ibp = interval_bounds(net, lo, hi)
    assert ibp.method == "ibp" and not ibp.batched
    assert_contains(ibp, net, X)
    for alpha in (*ALPHA_MODES, 0.3):
        assert_contains(crown_bounds(net, lo, hi, alpha=alpha), net, X)


@SETTINGS
@given(net=networks(), data=st.data())
def test_crown_never_looser_than_ibp(net: Network, data: st.DataObject) -> None:
    lo, hi = data.draw(boxes(net.n_inputs, n_boxes=3))
    ibp = interval_bounds(net, lo, hi)
    crown = crown_bounds(net, lo, hi)
    for k in range(ibp.n_layers):
        assert np.all(crown.lower[k] >= ibp.lower[k] - TOL)
        assert np.all(crown.upper[k] <= ibp.upper[k] + TOL)
        assert np.all(crown.lower[k] <= crown.upper[k])
    assert all(c <= i for c, i in zip(crown.unstable_counts(), ibp.unstable_counts()))


@SETTINGS
@given(net=networks(), data=st.data(), seed=st.integers(0, 10_000))
def test_prior_bounds_of_a_superset_box(net: Network, data: st.DataObject, seed: int) -> None:
    """Bounds of a parent box as ``prior`` for sub-boxes: sound on the sub-box and inside the prior."""
    lo, hi = data.draw(boxes(net.n_inputs))
    lo, hi = lo[0], hi[0]
    rng = np.random.default_rng(seed)
    parent = crown_bounds(net, lo, hi)
    # three random sub-boxes of the parent box, bounded in one batch with the parent's bounds tiled
    a, b = rng.uniform(lo, hi, size=(2, 3, lo.size))
    slo, shi = np.minimum(a, b), np.maximum(a, b)
    tile = lambda xs: tuple(np.tile(x, (3, 1)) for x in xs)  # noqa: E731
    tiled = type(parent)(tile(parent.lower), tile(parent.upper), "crown")
    child = crown_bounds(net, slo, shi, prior=tiled)
    for i in range(3):
        assert_contains(child.box(i), net, sample_box(slo[i], shi[i], 100, seed + i))
        for k in range(child.n_layers - 1):
            assert np.all(child.lower[k][i] >= parent.lower[k])
            assert np.all(child.upper[k][i] <= parent.upper[k])
        # a neuron stable under the prior stays stable
        for m_child, m_parent in zip(child.box(i).unstable_masks(), parent.unstable_masks()):
            assert not np.any(m_child & ~m_parent)
    two = type(parent)(tuple(x[:2] for x in tiled.lower), tuple(x[:2] for x in tiled.upper), "crown")
    with pytest.raises(SpecError, match="prior: .* hold 2 boxes, expected 3"):
        crown_bounds(net, slo, shi, prior=two)


@SETTINGS
@given(net=networks(), data=st.data(), seed=st.integers(0, 10_000))
def test_prior_with_a_relu_split(net: Network, data: st.DataObject, seed: int) -> None:
    """A prior that forces one unstable neuron active (lower bound 0) bounds the box ∩ {z ≥ 0}."""
    lo, hi = data.draw(boxes(net.n_inputs))
    lo, hi = lo[0], hi[0]
    base = crown_bounds(net, lo, hi)
    masks = base.unstable_masks()
    layer = next((k for k, m in enumerate(masks) if m.any()), None)
    if layer is None:
        return
    i = int(np.flatnonzero(masks[layer])[0])
    lower = [a.copy() for a in base.lower]
    lower[layer][i] = 0.0  # the active side of the split
    split = type(base)(tuple(lower), base.upper, "crown")
    child = crown_bounds(net, lo, hi, prior=split)
    X = sample_box(lo, hi, 400, seed)
    inside = X[net.pre_activations(X)[layer][:, i] >= 0.0]
    if inside.size:
        assert_contains(child, net, inside)
    assert child.lower[layer][i] >= 0.0


def test_prior_stable_neurons_skip_the_backward_pass() -> None:
    """One ReLU stable under the prior: the child keeps the prior's exact-relaxation bounds for it."""
    net = network_from_layers([(np.array([[1.0], [1.0]]), [0.0, 5.0]), (np.array([[1.0, -1.0]]), [0.0])])
    parent = crown_bounds(net, [-1.0], [1.0])
    assert parent.unstable_masks()[0].tolist() == [True, False]
    child = crown_bounds(net, [0.0], [1.0], prior=parent)
    # neuron 0 on [0, 1]: interval bounds [0, 1] (widened); neuron 1 stays [4, 6] ∩ IBP [5, 6]
    assert -1e-9 < child.lower[0][0] <= 0.0 and 1.0 <= child.upper[0][0] < 1.0 + 1e-9
    assert 5.0 - 1e-9 < child.lower[0][1] <= 5.0 and 6.0 <= child.upper[0][1] < 6.0 + 1e-9
    # output x − (x + 5) = −5 exactly on [0, 1]
    assert child.output_lower[0] == pytest.approx(-5.0) and child.output_upper[0] == pytest.approx(-5.0)


@SETTINGS
@given(net=networks(), data=st.data(), seed=st.integers(0, 10_000))
def test_crown_linear_and_margins_sound(net: Network, data: st.DataObject, seed: int) -> None:
    lo, hi = data.draw(boxes(net.n_inputs))
    lo, hi = lo[0], hi[0]
    rng = np.random.default_rng(seed)
    C = rng.integers(-2, 3, size=(3, net.n_outputs)).astype(float)
    X = sample_box(lo, hi, 200, seed)
    Y = net.evaluate(X)
    ibp = interval_bounds(net, lo, hi)
    lb, ub = crown_linear(net, lo, hi, C)
    assert lb.shape == ub.shape == (3,)
    V = Y @ C.T
    assert np.all(lb <= V)
    assert np.all(ub >= V)
    # never looser than IBP on the output composed with C (interval arithmetic on C y)
    Cp, Cn = np.maximum(C, 0), np.minimum(C, 0)
    assert np.all(lb >= Cp @ ibp.output_lower + Cn @ ibp.output_upper - TOL)
    assert np.all(ub <= Cp @ ibp.output_upper + Cn @ ibp.output_lower + TOL)
    # intermediate bounds supplied by IBP instead of CROWN: still sound
    lb_i, ub_i = crown_linear(net, lo, hi, C, bounds=ibp)
    assert np.all(lb_i <= V)
    assert np.all(ub_i >= V)
    # the spec variant of crown_bounds reports the same bounds in its last entry
    spec = crown_bounds(net, lo, hi, C=C)
    np.testing.assert_allclose(spec.output_lower, lb, rtol=1e-12, atol=1e-12)
    assert spec.spec is not None and spec.n_layers == ibp.n_layers
    # margins f_c − f_j, both methods; CROWN margins at least as tight as IBP ones
    c = int(rng.integers(net.n_outputs))
    m_crown = margin_bounds(net, lo, hi, c)
    m_ibp = margin_bounds(net, lo, hi, c, method="ibp")
    assert m_crown[c] == np.inf and m_ibp[c] == np.inf
    true = Y[:, [c]] - Y
    others = np.arange(net.n_outputs) != c
    assert np.all(true[:, others] >= m_crown[others]) and np.all(true[:, others] >= m_ibp[others])
    assert np.all(m_crown[others] >= m_ibp[others] - TOL)


@SETTINGS
@given(net=networks(), data=st.data(), seed=st.integers(0, 10_000))
def test_batched_equals_per_box(net: Network, data: st.DataObject, seed: int) -> None:
    n_boxes = data.draw(st.integers(2, 5))
    lo, hi = data.draw(boxes(net.n_inputs, n_boxes=n_boxes))
    rng = np.random.default_rng(seed)
    C = rng.normal(size=(n_boxes, 2, net.n_outputs))  # one spec per box
    cls = rng.integers(net.n_outputs, size=n_boxes)
    batch = {f.__name__: f(net, lo, hi) for f in (interval_bounds, crown_bounds)}
    lbB, ubB = crown_linear(net, lo, hi, C)
    mB = margin_bounds(net, lo, hi, cls)
    for b in range(n_boxes):
        for name, f in (("interval_bounds", interval_bounds), ("crown_bounds", crown_bounds)):
            one = f(net, lo[b], hi[b])
            sel = batch[name].box(b)
            for k in range(one.n_layers):
                np.testing.assert_allclose(sel.lower[k], one.lower[k], rtol=1e-12, atol=1e-12)
                np.testing.assert_allclose(sel.upper[k], one.upper[k], rtol=1e-12, atol=1e-12)
        lb, ub = crown_linear(net, lo[b], hi[b], C[b])
        np.testing.assert_allclose(lbB[b], lb, rtol=1e-12, atol=1e-12)
        np.testing.assert_allclose(ubB[b], ub, rtol=1e-12, atol=1e-12)
        np.testing.assert_allclose(
            mB[b], margin_bounds(net, lo[b], hi[b], int(cls[b])), rtol=1e-12, atol=1e-12
        )
    # one box, one spec per row of C: the box is shared
    lb1, _ = crown_linear(net, lo[0], hi[0], C)
    assert lb1.shape == (n_boxes, 2)
    for b in range(n_boxes):
        np.testing.assert_allclose(lb1[b], crown_linear(net, lo[0], hi[0], C[b])[0], rtol=1e-12, atol=1e-12)
    # points of box b lie inside batch bounds of box b
    X = sample_box(lo[0], hi[0], 50, seed)
    assert_contains(batch["crown_bounds"], net, X, box=0)
    # precomputed intermediate bounds give the same crown_linear answer
    lb2, _ = crown_linear(net, lo, hi, C, bounds=batch["crown_bounds"])
    np.testing.assert_allclose(lb2, lbB, rtol=1e-12, atol=1e-12)


def _ball_points(x0: np.ndarray, r: float, lo: np.ndarray, hi: np.ndarray, n: int, seed: int) -> np.ndarray:
    """Points of ``{‖x − x0‖ ≤ r} ∩ [lo, hi]``: uniform in the ball and on its sphere, projected on the box.

    Projection onto a box that contains ``x0`` does not increase the distance to ``x0``.
    """
    rng = np.random.default_rng(seed)
    d = rng.normal(size=(2 * n, x0.size))
    d /= np.linalg.norm(d, axis=1, keepdims=True)
    radii = np.concatenate([r * rng.random(n) ** (1 / x0.size), np.full(n, r * (1 - 1e-12))])
    return np.clip(x0 + d * radii[:, None], lo, hi)


@SETTINGS
@given(net=networks(), seed=st.integers(0, 10_000), r=st.floats(0.0, 2.0), with_box=st.booleans())
def test_l2_ball_bounds_sound(net: Network, seed: int, r: float, with_box: bool) -> None:
    rng = np.random.default_rng(seed)
    n = net.n_inputs
    x0 = rng.uniform(-1, 1, size=n)
    lo, hi = (x0 - rng.uniform(0, 1, n), x0 + rng.uniform(0, 1, n)) if with_box else (None, None)
    X = _ball_points(x0, r, -np.inf if lo is None else lo, np.inf if hi is None else hi, 200, seed)
    X = np.vstack([X, x0])
    bounds = crown_bounds_l2(net, x0, r, lo, hi)
    assert bounds.method == "crown-l2"
    assert_contains(bounds, net, X)
    C = rng.integers(-2, 3, size=(3, net.n_outputs)).astype(float)
    lb, ub = crown_linear_ball_l2(net, x0, r, C, lo, hi)
    V = net.evaluate(X) @ C.T
    assert np.all(lb <= V)
    assert np.all(ub >= V)
    c = int(rng.integers(net.n_outputs))
    m = margin_bounds_l2(net, x0, r, c, lo, hi)
    Y = net.evaluate(X)
    others = np.arange(net.n_outputs) != c
    assert np.all(Y[:, [c]] - Y[:, others] >= m[others])
    # never looser than IBP on the ball's bounding box
    blo, bhi = x0 - r, x0 + r
    if with_box:
        blo, bhi = np.maximum(blo, lo), np.minimum(bhi, hi)
    ibp = interval_bounds(net, blo, bhi)
    assert np.all(bounds.output_lower >= ibp.output_lower - TOL)
    assert np.all(bounds.output_upper <= ibp.output_upper + TOL)


@SETTINGS
@given(net=networks(), seed=st.integers(0, 10_000))
def test_l2_ball_batched_equals_per_ball(net: Network, seed: int) -> None:
    rng = np.random.default_rng(seed)
    x0 = rng.uniform(-1, 1, size=(3, net.n_inputs))
    r = rng.uniform(0, 1, size=3)
    batch = crown_bounds_l2(net, x0, r)
    for b in range(3):
        one = crown_bounds_l2(net, x0[b], r[b])
        for k in range(one.n_layers):
            np.testing.assert_allclose(batch.lower[k][b], one.lower[k], rtol=1e-12, atol=1e-12)
            np.testing.assert_allclose(batch.upper[k][b], one.upper[k], rtol=1e-12, atol=1e-12)


# --------------------------------------------------------------------------------------------------
# hand-worked example
# --------------------------------------------------------------------------------------------------
def _abs_net() -> Network:
    """x ∈ [−1, 2];  z0 = (x, −x);  z1 = relu(z0_0) + relu(z0_1) − 1.5 = |x| − 1.5;  y = relu(z1)."""
    return network_from_layers([([[1.0], [-1.0]], [0.0, 0.0]), ([[1.0, 1.0]], [-1.5]), ([[1.0]], [0.0])])


def test_hand_worked_bounds() -> None:
    """Bounds worked out by hand (module docstring formulas).

    Layer 0: z0 ∈ [−1, 2] × [−2, 1], both unstable.  IBP: z1 ∈ [0 + 0 − 1.5, 2 + 1 − 1.5] = [−1.5, 1.5].
    CROWN on z1: neuron 0 (l=−1, u=2): upper (2/3) z + 2/3, α = 1 (u ≥ −l); neuron 1 (l=−2, u=1): upper
    (1/3) z + 2/3, α = 0.  Upper: (2/3) x + 2/3 + (1/3)(−x) + 2/3 − 1.5 = x/3 + 1/6 ≤ 0.5 at x = 2.
    Lower: x + 0 − 1.5 ≥ −2.5, so max with IBP gives −1.5.  Hence z1 ∈ [−1.5, 0.5] (the exact range).
    Output y = relu(z1), z1 ∈ [−1.5, 0.5]: upper 0.25 z1 + 0.375; back-substituting,
    0.25 (x/3 + 1/6) + 0.375 ≤ 0.25 · 0.5 + 0.375 = 0.5; α = 0, so lower 0.  IBP on y: [0, 1.5].
    """
    net = _abs_net()
    ibp = interval_bounds(net, [-1.0], [2.0])
    crown = crown_bounds(net, [-1.0], [2.0])
    tol = 1e-8
    np.testing.assert_allclose(ibp.lower[0], [-1, -2], atol=tol)
    np.testing.assert_allclose(ibp.upper[0], [2, 1], atol=tol)
    np.testing.assert_allclose([ibp.lower[1][0], ibp.upper[1][0]], [-1.5, 1.5], atol=tol)
    np.testing.assert_allclose([crown.lower[1][0], crown.upper[1][0]], [-1.5, 0.5], atol=tol)
    np.testing.assert_allclose([ibp.output_lower[0], ibp.output_upper[0]], [0, 1.5], atol=tol)
    np.testing.assert_allclose([crown.output_lower[0], crown.output_upper[0]], [0, 0.5], atol=tol)
    assert ibp.unstable_counts() == [2, 1] and crown.unstable_counts() == [2, 1]
    assert crown.n_unstable == 3
    # rounding widening is outward and tiny
    assert crown.output_upper[0] > 0.5 and crown.output_upper[0] - 0.5 < 1e-7


def test_margin_quick_verdict_hand_net() -> None:
    """y0 = relu(x), y1 = relu(−x) on x ∈ [0.5, 1]: y0 = x, y1 = 0, so f0 − f1 = x ≥ 0.5 > 0 (robust)."""
    net = network_from_layers([([[1.0], [-1.0]], [0.0, 0.0]), ([[1.0, 0.0], [0.0, 1.0]], [0.0, 0.0])])
    m = margin_bounds(net, [0.5], [1.0], 0)
    assert m[0] == np.inf and m[1] == pytest.approx(0.5, abs=1e-8) and np.all(m > 0)
    m1 = margin_bounds(net, [0.5], [1.0], 1)
    assert m1[1] == np.inf and m1[0] == pytest.approx(-1.0, abs=1e-8)  # f1 − f0 = −x ≥ −1
    # the box [−0.5, 1] contains x = 0 where f0 = f1 (a tie counts as a violation): no verdict
    assert margin_bounds(net, [-0.5], [1.0], 0)[1] <= 0


def test_zero_rows_keep_exact_bounds() -> None:
    """A pre-activation that is identically 0 keeps bounds [0, 0] (stable), others get widened."""
    net = network_from_layers([([[0.0, 0.0], [1.0, 1.0]], [0.0, 0.0]), ([[1.0, 1.0]], [0.0])])
    for b in (interval_bounds(net, [0, 0], [1, 1]), crown_bounds(net, [0, 0], [1, 1])):
        assert b.lower[0][0] == 0.0 and b.upper[0][0] == 0.0
        assert not b.unstable_masks()[0][0] and b.inactive_masks()[0][0] and b.active_masks()[0][0]
        # x1 + x2 on [0, 1]²: exact range [0, 2]; the lower bound 0 is widened below 0 (soundness first)
        assert -1e-8 < b.lower[0][1] < 0.0 and 2.0 < b.upper[0][1] < 2.0 + 1e-8
    # L = 1, n_max = 2: rtol = 2^3 · 2 · 4 · 2^-53 (the first-order bound of the module docstring)
    assert rounding_tolerance(net) == 2.0**3 * 2 * 4 * 2.0**-53


def test_single_affine_network() -> None:
    """No hidden layer: IBP, CROWN and the ball bounds of an affine map are its exact ranges."""
    W = np.array([[1.0, -2.0], [0.5, 0.5]])
    net = network_from_layers([(W, [1.0, 0.0])])
    lo, hi = np.array([0.0, -1.0]), np.array([1.0, 1.0])
    for b in (interval_bounds(net, lo, hi), crown_bounds(net, lo, hi)):
        np.testing.assert_allclose(b.output_lower, [-1.0, -0.5], atol=1e-8)
        np.testing.assert_allclose(b.output_upper, [4.0, 1.0], atol=1e-8)
        assert b.unstable_counts() == []
    # ball of radius 1 at 0: row (1, −2) ranges over ±√5 (+1); the box cut on top of it is not binding
    lb, ub = crown_linear_ball_l2(net, [0.0, 0.0], 1.0, [[1.0, 0.0]])
    np.testing.assert_allclose([lb[0], ub[0]], [1 - np.sqrt(5), 1 + np.sqrt(5)], atol=1e-8)


# --------------------------------------------------------------------------------------------------
# input validation
# --------------------------------------------------------------------------------------------------
def test_bad_inputs_raise_typed_errors() -> None:
    net = _abs_net()
    with pytest.raises(SpecError, match="exceeds upper bound"):
        interval_bounds(net, [1.0], [0.0])
    with pytest.raises(SpecError, match="1 inputs"):
        crown_bounds(net, [0.0, 0.0], [1.0, 1.0])
    with pytest.raises(SpecError, match="finite"):
        crown_bounds(net, [np.nan], [1.0])
    with pytest.raises(ConfigError, match="alpha"):
        crown_bounds(net, [0.0], [1.0], alpha="best")
    with pytest.raises(ConfigError, match="alpha"):
        crown_bounds(net, [0.0], [1.0], alpha=1.5)
    with pytest.raises(SpecError, match="specification matrix"):
        crown_linear(net, [0.0], [1.0], np.ones((2, 3)))
    with pytest.raises(ConfigError, match="method"):
        margin_bounds(net, [0.0], [1.0], 0, method="lp")
    with pytest.raises(SpecError, match="class index"):
        margin_spec(3, 3)
    with pytest.raises(SpecError, match="radius"):
        crown_bounds_l2(net, [0.0], -1.0)
    with pytest.raises(SpecError, match="does not meet"):
        crown_bounds_l2(net, [0.0], 0.1, [1.0], [2.0])


# --------------------------------------------------------------------------------------------------
# real networks (VNN-COMP 2021)
# --------------------------------------------------------------------------------------------------
_BOUND_RE = re.compile(r"\(assert \((<=|>=) X_(\d+) ([-+0-9.eE]+)\)\)")


def _vnnlib_box(path: Path, n: int) -> tuple[np.ndarray, np.ndarray]:
    """The input box of a VNN-LIB file written as one ``(assert (<= X_i v))`` per bound."""
    lo, hi = np.full(n, np.nan), np.full(n, np.nan)
    for op, i, v in _BOUND_RE.findall(path.read_text()):
        (hi if op == "<=" else lo)[int(i)] = float(v)
    assert not (np.isnan(lo).any() or np.isnan(hi).any()), f"{path}: incomplete input box"
    return lo, hi


@pytest.mark.shared
def test_mnist_256x2_eps003(vnncomp_root: Path) -> None:
    folder = vnncomp_root / "mnistfc"
    net = load_onnx(folder / "mnist-net_256x2.onnx")
    prop = folder / "prop_0_0.03.vnnlib"
    lo, hi = _vnnlib_box(prop, net.n_inputs)
    label = int(re.search(r"label: (\d+)", prop.read_text()).group(1))
    ibp = interval_bounds(net, lo, hi)
    crown = crown_bounds(net, lo, hi)
    print(
        f"\nmnist-net_256x2 prop_0 eps=0.03: unstable ReLUs IBP {ibp.unstable_counts()} "
        f"(total {ibp.n_unstable})"
        f", CROWN {crown.unstable_counts()} (total {crown.n_unstable})"
    )
    assert crown.n_unstable <= ibp.n_unstable < net.n_relus
    rng = np.random.default_rng(0)
    corners = np.where(rng.random((50, net.n_inputs)) < 0.5, lo, hi)  # random corners of the box
    X = np.vstack([rng.uniform(lo, hi, (300, net.n_inputs)), corners, 0.5 * (lo + hi)])
    assert_contains(ibp, net, X)
    assert_contains(crown, net, X)
    Y = net.evaluate(X)
    m = margin_bounds(net, lo, hi, label)
    others = np.arange(10) != label
    assert np.all(Y[:, [label]] - Y[:, others] >= m[others])


@pytest.mark.shared
def test_mnist_quick_verdicts_agree_with_ground_truth(vnncomp_root: Path) -> None:
    """CROWN may only call an instance robust if the benchmark's expected answer is ``unsat``."""
    folder = vnncomp_root / "mnistfc"
    net = load_onnx(folder / "mnist-net_256x2.onnx")
    rows = [r for r in csv.reader((folder / "expected.csv").open()) if r and r[0] == "mnist-net_256x2.onnx"]
    assert rows
    los, his, labels, truth = [], [], [], []
    for _, prop, answer in rows:
        lo, hi = _vnnlib_box(folder / prop, net.n_inputs)
        los.append(lo)
        his.append(hi)
        labels.append(int(re.search(r"label: (\d+)", (folder / prop).read_text()).group(1)))
        truth.append(answer.strip())
    m = margin_bounds(net, np.array(los), np.array(his), np.array(labels))
    certified = np.all(m > 0, axis=1)
    for ok, answer, (_, prop, _) in zip(certified, truth, rows):
        assert not (ok and answer == "sat"), f"{prop}: CROWN certified an instance whose answer is sat"
    assert certified.any()  # e.g. prop_2_0.03 is certified by CROWN alone
    m_ibp = margin_bounds(net, np.array(los), np.array(his), np.array(labels), method="ibp")
    assert np.all(m >= m_ibp - TOL)


@pytest.mark.shared
def test_acasxu_prop1_box(vnncomp_root: Path) -> None:
    net = load_onnx(vnncomp_root / "acasxu" / "ACASXU_run2a_1_1_batch_2000.onnx")
    lo = np.array([0.6, -0.5, -0.5, 0.45, -0.5])
    hi = np.array([0.679857769, 0.5, 0.5, 0.5, -0.45])
    ibp = interval_bounds(net, lo, hi)
    crown = crown_bounds(net, lo, hi)
    print(
        f"\nACAS Xu 1_1 prop_1 box: unstable ReLUs IBP {ibp.unstable_counts()} (total {ibp.n_unstable})"
        f", CROWN {crown.unstable_counts()} (total {crown.n_unstable})"
    )
    assert crown.n_unstable <= ibp.n_unstable
    X = sample_box(lo, hi, 2000, 0)  # 32 corners + centre + uniform points
    assert_contains(ibp, net, X)
    assert_contains(crown, net, X)
    # CROWN is much tighter than IBP on the outputs of this deep network
    assert np.all(crown.output_upper - crown.output_lower < ibp.output_upper - ibp.output_lower)
