"""Soundness of the relaxations in ``encoders.relaxations``, checked against exact references.

The references avoid the code under test's own float arithmetic: logits are dyadic (multiples of
1/1024), so logit differences are exact; ``exp`` is evaluated with 60-digit :mod:`decimal`; dot
products with :class:`fractions.Fraction`.  A claim "lb <= truth <= ub" is therefore checked with
no tolerance at all, including logit gaps of 800 where float ``exp`` overflows.
"""

from __future__ import annotations

import math
import warnings
from decimal import Context, Decimal
from fractions import Fraction

import numpy as np
import pytest
from hypothesis import assume, given, settings
from hypothesis import strategies as st

from encoders import relaxations as rx
from encoders.errors import ConfigError

CTX = Context(prec=60, Emax=10**6, Emin=-(10**6))


def _dexp(x) -> Decimal:
    return CTX.exp(Decimal(float(x)) if not isinstance(x, Decimal) else x)


def _softmax_exact(z: np.ndarray) -> list[Decimal]:
    """60-digit softmax of float logits (each logit taken exactly)."""
    zs = [Decimal(float(v)) for v in z]
    out = []
    for i in range(len(zs)):
        s = CTX.add(Decimal(1), sum((CTX.exp(CTX.subtract(zs[j], zs[i])) for j in range(len(zs)) if j != i),
                                    Decimal(0)))
        out.append(CTX.divide(Decimal(1), s))
    return out


def _dyadic_logits(draw, n: int, scale: int) -> np.ndarray:
    ks = draw(st.lists(st.integers(-scale * 1024, scale * 1024), min_size=n, max_size=n))
    return np.array(ks, dtype=np.float64) / 1024.0


def _diffs(z: np.ndarray) -> np.ndarray:
    return z[None, :] - z[:, None]  # d[i, j] = z_j - z_i (exact for dyadic z)


_scales = st.sampled_from([1, 10, 60, 800])


# --------------------------------------------------------------------------------------------------
# Eq. 10 softmax bounds
# --------------------------------------------------------------------------------------------------
@settings(max_examples=150, deadline=None)
@given(data=st.data(), n=st.integers(2, 6), scale=_scales)
def test_softmax_bounds_contain_the_exact_softmax(data, n: int, scale: int) -> None:
    """Bounds built around a point: random slack (0 included, i.e. tight) on each difference."""
    z = _dyadic_logits(data.draw, n, scale)
    d = _diffs(z)
    slack_lo = np.array(data.draw(st.lists(st.sampled_from([0.0, 1e-9, 0.5, 3.0, np.inf]),
                                           min_size=n * n, max_size=n * n))).reshape(n, n)
    slack_hi = np.array(data.draw(st.lists(st.sampled_from([0.0, 1e-9, 0.5, 3.0, np.inf]),
                                           min_size=n * n, max_size=n * n))).reshape(n, n)
    with warnings.catch_warnings():
        warnings.simplefilter("error")  # no overflow / invalid warnings escape
        lb, ub = rx.softmax_bounds(d - slack_lo, d + slack_hi)
    exact = _softmax_exact(z)
    for i in range(n):
        assert 0.0 <= lb[i] <= ub[i] <= 1.0
        assert Decimal(float(lb[i])) <= exact[i] <= Decimal(float(ub[i])), (i, z, lb, ub)


@settings(max_examples=60, deadline=None)
@given(data=st.data(), n=st.integers(2, 5), scale=_scales, seed=st.integers(0, 2**31))
def test_softmax_bounds_from_a_logit_box(data, n: int, scale: int, seed: int) -> None:
    """Bounds from a box on z; every dyadic z sampled in the box has its softmax inside."""
    centre = _dyadic_logits(data.draw, n, scale)
    radius = np.array(data.draw(st.lists(st.integers(0, 4096), min_size=n, max_size=n))) / 1024.0
    zlo, zhi = centre - radius, centre + radius
    d_lb = zlo[None, :] - zhi[:, None]
    d_ub = zhi[None, :] - zlo[:, None]
    lb, ub = rx.softmax_bounds(d_lb, d_ub)
    rng = np.random.default_rng(seed)
    pts = np.round(rng.uniform(zlo, zhi, (20, n)) * 1024) / 1024
    pts = np.vstack([pts, zlo, zhi, np.where(np.arange(n) == 0, zhi, zlo)])
    for z in pts:
        exact = _softmax_exact(z)
        for i in range(n):
            assert Decimal(float(lb[i])) <= exact[i] <= Decimal(float(ub[i]))


def test_softmax_bounds_are_tight_at_a_point_and_batched() -> None:
    z = np.array([0.5, -1.0, 2.0, 0.0])
    d = _diffs(z)
    lb, ub = rx.softmax_bounds(d, d)
    p = rx.softmax_confidence(z)
    np.testing.assert_allclose(lb, p, rtol=1e-13)
    np.testing.assert_allclose(ub, p, rtol=1e-13)
    assert np.all(lb <= ub) and np.any(lb < ub)  # outward rounding is visible but tiny
    batch_lb, batch_ub = rx.softmax_bounds(np.stack([d, d - 1]), np.stack([d, d + 1]))
    np.testing.assert_array_equal(batch_lb[0], lb)
    ref_lb, ref_ub = rx.softmax_bounds(d - 1, d + 1)
    np.testing.assert_array_equal(batch_lb[1], ref_lb)
    np.testing.assert_array_equal(batch_ub[1], ref_ub)


def test_softmax_bounds_extreme_gaps() -> None:
    z = np.array([0.0, 800.0, -800.0])
    d = _diffs(z)
    lb, ub = rx.softmax_bounds(d, d)
    exact = _softmax_exact(z)
    for i in range(3):
        assert Decimal(float(lb[i])) <= exact[i] <= Decimal(float(ub[i]))
    assert lb[1] > 1 - 1e-13 and ub[0] > 0.0 and ub[2] > 0.0  # underflowed upper bounds stay positive
    # unbounded differences give the trivial bounds, not NaN
    inf = np.where(np.eye(3, dtype=bool), 0.0, np.inf)
    lb, ub = rx.softmax_bounds(-inf, inf)
    np.testing.assert_array_equal(lb, 0.0)
    np.testing.assert_array_equal(ub, 1.0)


def test_antisymmetry_tightening() -> None:
    # only d_01 in [1, 2] is known; d_10 is left unbounded but must be in [-2, -1]
    d_lb = np.array([[0.0, 1.0], [-np.inf, 0.0]])
    d_ub = np.array([[0.0, 2.0], [np.inf, 0.0]])
    lb, ub = rx.softmax_bounds(d_lb, d_ub)
    np.testing.assert_allclose(lb, [1 / (1 + math.e**2), 1 / (1 + math.e**-1)], rtol=1e-13)
    np.testing.assert_allclose(ub, [1 / (1 + math.e), 1 / (1 + math.e**-2)], rtol=1e-13)
    with pytest.raises(ValueError, match="contradictory"):
        rx.softmax_bounds(np.array([[0.0, 1.0], [1.0, 0.0]]), np.array([[0.0, 2.0], [2.0, 0.0]]))
    with pytest.raises(ValueError, match="empty"):
        rx.softmax_bounds(np.array([[0.0, 1.0], [-2.0, 0.0]]), np.array([[0.0, 0.5], [-1.0, 0.0]]))
    with pytest.raises(ValueError, match="NaN"):
        rx.softmax_bounds(np.full((2, 2), np.nan), np.zeros((2, 2)))


# --------------------------------------------------------------------------------------------------
# Eq. 11 FAITHUB
# --------------------------------------------------------------------------------------------------
@settings(max_examples=80, deadline=None)
@given(data=st.data(), n=st.integers(2, 5), scale=_scales, k=st.integers(1, 6))
def test_faithub_bounds_every_sampled_disagreement(data, n: int, scale: int, k: int) -> None:
    """k teacher/student logit pairs (the images of k inputs); bounds = min/max of their differences."""
    zt = np.array([_dyadic_logits(data.draw, n, scale) for _ in range(k)])
    zs = np.array([_dyadic_logits(data.draw, n, scale) for _ in range(k)])
    dt = np.array([_diffs(z) for z in zt])
    ds = np.array([_diffs(z) for z in zs])
    ub = rx.faithub(dt.min(0), dt.max(0), ds.min(0), ds.max(0))
    assert 0.0 <= ub <= 1.0
    for a, b in zip(zt, zs):
        pa, pb = _softmax_exact(a), _softmax_exact(b)
        assert max(abs(x - y) for x, y in zip(pa, pb)) <= Decimal(ub)


def test_faithub_is_tight_for_point_bounds_and_batches() -> None:
    zt, zs = np.array([1.0, 0.0, -1.0]), np.array([0.0, 0.5, -2.0])
    dt, ds = _diffs(zt), _diffs(zs)
    ub = rx.faithub(dt, dt, ds, ds)
    true = float(np.max(np.abs(rx.softmax_confidence(zt) - rx.softmax_confidence(zs))))
    assert true <= ub <= true + 1e-13
    batched = rx.faithub(np.stack([dt, dt - 1]), np.stack([dt, dt + 1]),
                         np.stack([ds, ds]), np.stack([ds, ds]))
    assert batched.shape == (2,) and batched[0] == ub and batched[1] > ub
    assert rx.faithub(dt, dt, dt, dt) < 1e-13  # a network against itself


# --------------------------------------------------------------------------------------------------
# confidence set: margin and tangent cuts
# --------------------------------------------------------------------------------------------------
_kappas = st.floats(0.05, 0.999) | st.sampled_from([0.5, 0.9, 0.99, 1 - 1e-9])


def _confident_exact(d: np.ndarray, kappa: float) -> bool:
    """Σ_j exp(d_j) <= (1-κ)/κ in 60-digit arithmetic (d_j and κ taken exactly)."""
    g = sum((_dexp(x) for x in d), Decimal(0))
    k = Decimal(kappa)
    return g <= CTX.divide(Decimal(1) - k, k)


def _dot_exact(coef: np.ndarray, v: np.ndarray) -> Fraction:
    return sum((Fraction(float(a)) * Fraction(float(b)) for a, b in zip(coef, v)), Fraction(0))


def _confident_points(d_hat: np.ndarray, kappa: float, rng: np.random.Generator) -> list[np.ndarray]:
    """Points of the confidence set: the support point of the cut's normal, boundary and interior points."""
    k = d_hat.size
    T = (1 - kappa) / kappa
    pts = []
    cut = rx.tangent_cut(d_hat, kappa)
    c = cut.coef[cut.coef > 0]
    if c.size == k:  # the maximiser of coef·d over the set: d_j = ln(c_j T / Σc)
        pts.append(np.log(cut.coef * T / cut.coef.sum()))
    for _ in range(30):
        d = rng.normal(0, rng.choice([0.1, 3.0, 50.0]), k) + rng.normal(0, 5)
        g = np.logaddexp.reduce(d)
        shrink = rng.choice([1.0, 1.0, 0.999999, 0.5, 1e-3])
        pts.append(d + (math.log(T * shrink) - g))  # moved onto (or inside) the boundary
    return pts


@settings(max_examples=120, deadline=None)
@given(data=st.data(), k=st.integers(1, 6), kappa=_kappas, seed=st.integers(0, 2**31),
       scale=st.sampled_from([0.5, 5.0, 50.0, 800.0]))
def test_tangent_cuts_keep_every_confident_point(data, k: int, kappa: float, seed: int, scale: float) -> None:
    rng = np.random.default_rng(seed)
    d_hat = np.array(data.draw(st.lists(st.floats(-scale, scale), min_size=k, max_size=k)))
    cuts = [rx.tangent_cut(d_hat, kappa, project=p) for p in (True, False)]
    assert cuts[0].rhs <= cuts[1].rhs or math.isclose(cuts[0].rhs, cuts[1].rhs, rel_tol=1e-12, abs_tol=1e-12)
    np.testing.assert_array_equal(cuts[0].coef, cuts[1].coef)
    for cut in cuts:
        assert np.all(cut.coef >= 0) and cut.coef.max() == 1.0
    n_checked = 0
    for d in _confident_points(d_hat, kappa, rng):
        if not _confident_exact(d, kappa):
            continue
        n_checked += 1
        for cut in cuts:
            assert _dot_exact(cut.coef, d) <= Fraction(cut.rhs), (d_hat, d, cut)
        # and the pairwise margin: z_c - z_j = -d_j >= ln(κ/(1-κ))
        assert np.all(-d >= rx.confidence_margin(kappa))
    assert n_checked >= 5


@settings(max_examples=100, deadline=None)
@given(k=st.integers(1, 6), kappa=_kappas, seed=st.integers(0, 2**31), factor=st.floats(1.001, 1e6))
def test_tangent_cut_separates_non_confident_points(k: int, kappa: float, seed: int, factor: float) -> None:
    rng = np.random.default_rng(seed)
    T = (1 - kappa) / kappa
    d = rng.normal(0, 3, k)
    d_hat = d + (math.log(T * factor) - np.logaddexp.reduce(d))  # g(d̂) = factor · T > T
    assume(np.all(np.isfinite(d_hat)))
    for project in (True, False):
        cut = rx.tangent_cut(d_hat, kappa, project=project)
        assert cut.violation(d_hat) > 0


def test_confidence_margin_and_two_classes() -> None:
    for kappa in (0.5, 0.6, 0.9, 0.999, 1 - 1e-12, 1e-3):
        m = rx.confidence_margin(kappa)
        exact = math.log(kappa / (1 - kappa))
        assert m <= exact and math.isclose(m, exact, rel_tol=1e-12, abs_tol=1e-13)
        # two classes: the cut at any point is the exact constraint d <= ln T = -margin
        for d_hat in (-5.0, 0.0, 3.0):
            cut = rx.tangent_cut([d_hat], kappa)
            assert cut.coef.tolist() == [1.0]
            assert cut.rhs >= -exact and math.isclose(cut.rhs, -exact, rel_tol=1e-12, abs_tol=1e-12)
    for bad in (0.0, 1.0, -0.5, 1.5, float("nan"), "x"):
        with pytest.raises(ConfigError, match="kappa"):
            rx.confidence_margin(bad)
        with pytest.raises(ConfigError, match="kappa"):
            rx.tangent_cut([0.0, 0.0], bad)


def test_initial_tangent_points_lie_on_the_boundary() -> None:
    for k in (1, 2, 4, 9):
        for kappa in (0.6, 0.9, 0.99):
            pts = rx.initial_tangent_points(k, kappa)
            assert pts.shape == (1 + (k if k >= 2 else 0), k)
            T = (1 - kappa) / kappa
            np.testing.assert_allclose(np.exp(pts).sum(axis=1), T, rtol=1e-12)
            # at a boundary point, the projected and the literal tangent coincide
            for p in pts:
                a, b = rx.tangent_cut(p, kappa), rx.tangent_cut(p, kappa, project=False)
                assert math.isclose(a.rhs, b.rhs, rel_tol=1e-12, abs_tol=1e-12)
    sym = rx.initial_tangent_points(3, 0.9)[0]
    np.testing.assert_allclose(sym, math.log((0.1 / 0.9) / 3))


@settings(max_examples=60, deadline=None)
@given(n=st.integers(2, 7), kappa=_kappas, seed=st.integers(0, 2**31))
def test_cut_over_logits_is_the_same_half_space(n: int, kappa: float, seed: int) -> None:
    rng = np.random.default_rng(seed)
    c = int(rng.integers(n))
    z_hat = rng.normal(0, 5, n)
    zcut = rx.confidence_cut_z(z_hat, c, kappa)
    others = np.arange(n) != c
    dcut = rx.tangent_cut(z_hat[others] - z_hat[c], kappa)
    assert zcut.rhs == dcut.rhs and sum(Fraction(float(v)) for v in zcut.coef) == 0
    for z in rng.normal(0, 10, (10, n)):  # same value on every z, exactly
        zf = [Fraction(float(v)) for v in z]
        lhs_z = sum(Fraction(float(a)) * v for a, v in zip(zcut.coef, zf))
        lhs_d = sum(Fraction(float(a)) * (zf[j] - zf[c])
                    for a, j in zip(dcut.coef, np.flatnonzero(others)))
        assert lhs_z == lhs_d


def test_softmax_confidence_and_gap() -> None:
    z = np.array([[800.0, 0.0, -800.0], [1.0, 2.0, 3.0]])
    with warnings.catch_warnings():
        warnings.simplefilter("error")
        p = rx.softmax_confidence(z)
    np.testing.assert_allclose(p.sum(axis=1), 1.0)
    assert p[0, 0] == 1.0 and p[0, 2] == 0.0
    exact = _softmax_exact(z[1])
    np.testing.assert_allclose(p[1], [float(e) for e in exact], rtol=1e-14)
    assert rx.confidence_gap(z[0], 0, 0.999999) > 0 and rx.confidence_gap(z[0], 1, 0.5) < 0
    g = rx.confidence_gap(z[1], 2, 0.6)
    assert (g >= 0) == (float(exact[2]) >= 0.6)
    np.testing.assert_allclose(rx.confidence_gap(z, [0, 2], 0.6), [rx.confidence_gap(z[0], 0, 0.6), g])


# --------------------------------------------------------------------------------------------------
# L2 ball
# --------------------------------------------------------------------------------------------------
def _in_ball_exact(x: np.ndarray, x0: np.ndarray, r: float) -> bool:
    return sum((Fraction(float(a)) - Fraction(float(b))) ** 2 for a, b in zip(x, x0)) <= Fraction(r) ** 2


@settings(max_examples=150, deadline=None)
@given(n=st.integers(1, 8), seed=st.integers(0, 2**31), r=st.floats(1e-3, 10.0),
       x0_scale=st.sampled_from([0.0, 1.0, 100.0]), excess=st.floats(1e-6, 10.0))
def test_l2_cut_keeps_the_ball_and_separates_the_point(n, seed, r, x0_scale, excess) -> None:
    rng = np.random.default_rng(seed)
    x0 = rng.uniform(-x0_scale, x0_scale, n)
    u = rng.normal(size=n)
    u /= np.linalg.norm(u)
    x_out = x0 + r * (1 + excess) * u
    cut = rx.l2_tangent_cut(x0, r, x_out)
    assert cut.violation(x_out) > 0
    lo, hi = rx.l2_box(x0, r)
    cuts = [cut, *rx.l2_initial_cuts(x0, r, n_random=3, seed=seed)]
    # ball points: the tangent point itself, boundary points, interior points
    pts = [x0 + r * cut.coef / np.linalg.norm(cut.coef), x0]
    for _ in range(20):
        w = rng.normal(size=n)
        pts.append(x0 + r * rng.choice([1.0, 1 - 1e-12, rng.uniform()]) * w / np.linalg.norm(w))
    checked = 0
    for x in pts:
        if not _in_ball_exact(x, x0, r):
            continue
        checked += 1
        for c in cuts:
            assert _dot_exact(c.coef, x) <= Fraction(c.rhs)
        assert np.all(lo <= x) and np.all(x <= hi)
    assert checked >= 5


def test_l2_box_is_outward_rounded_and_cuts_shrink_it() -> None:
    x0 = np.array([0.1, 0.7, 1e8, -3.3])
    r = 0.3
    lo, hi = rx.l2_box(x0, r)
    for i in range(4):
        assert Fraction(lo[i]) <= Fraction(x0[i]) - Fraction(r)
        assert Fraction(hi[i]) >= Fraction(x0[i]) + Fraction(r)
        assert hi[i] - lo[i] <= 2 * r + 4 * np.spacing(abs(x0[i]) + r)
    corner = hi  # a box corner is outside the ball (for n >= 2) and the diagonal cut removes it
    assert max(c.violation(corner) for c in rx.l2_initial_cuts(x0, r)) > 0
    with pytest.raises(ConfigError, match="radius"):
        rx.l2_box(x0, 0.0)
    with pytest.raises(ConfigError, match="radius"):
        rx.l2_tangent_cut(x0, -1.0, x0 + 1)
    with pytest.raises(ValueError, match="non-zero"):
        rx.l2_tangent_cut(x0, 1.0, x0)
