"""Sound relaxations used by the property encoders: softmax bounds, confidence cuts, L2-ball cuts.

Everything here is pure float64 NumPy maths.  Each function states its formula and why the result
over-approximates in the safe direction, *including floating-point rounding*: every bound that must
be an upper bound is rounded up, every lower bound down, and every linear cut ``coef·v <= rhs`` gets
a right-hand side that is at least the exact support value ``max coef·v`` over the set it must keep.

Conventions
-----------
* Logit differences: ``d[..., i, j]`` bounds ``z_j - z_i`` (so ``d[i, i] = 0`` and ``d[i, j] = -d[j, i]``).
* Confidence threshold: for ``κ ∈ (0, 1)``, ``T = (1 − κ)/κ`` and, for a class ``c``,
  ``softmax_c(z) >= κ  ⟺  g(d) = Σ_{j≠c} exp(d_j) <= T`` with ``d_j = z_j − z_c``.
* A :class:`LinearCut` ``(coef, rhs)`` is the half-space ``coef · v <= rhs``.
"""

from __future__ import annotations

import math
from typing import NamedTuple

import numpy as np

from .bounds.rounding import EPS64
from .errors import ConfigError

__all__ = [
    "LinearCut",
    "softmax_bounds",
    "faithub",
    "softmax_confidence",
    "softmax",
    "log_softmax",
    "confidence_gap",
    "confidence_threshold",
    "confidence_margin",
    "tangent_cut",
    "confidence_cut_z",
    "initial_tangent_points",
    "linf_box",
    "l2_box",
    "l2_support_cut",
    "l2_tangent_cut",
    "l2_initial_cuts",
]

_EPS = EPS64  # 2^-52
_TINY = 1e-300  # below this, exp() results are treated as "underflowed"


class LinearCut(NamedTuple):
    """The half-space ``coef · v <= rhs`` (``coef`` float64 vector, ``rhs`` float)."""

    coef: np.ndarray
    rhs: float

    def violation(self, v: np.ndarray) -> float | np.ndarray:
        """``coef · v − rhs`` (``> 0`` means ``v`` is cut off); ``v`` is ``(n,)`` or ``(batch, n)``."""
        out = np.asarray(v, dtype=np.float64) @ self.coef - self.rhs
        return float(out) if np.ndim(out) == 0 else out


def _up(x):
    return np.nextafter(x, np.inf)


def _down(x):
    return np.nextafter(x, -np.inf)


# ==================================================================================================
# log-sum-exp with a rigorous enclosure
# ==================================================================================================
def _lse_enclosure(x: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    """Bounds ``L_lo <= log Σ_j exp(x_j) <= L_hi`` along the last axis, for rows whose max is ``>= 0``.

    Computed as ``L = m + log Σ_j exp(x_j − m)`` with ``m = max_j x_j``.  Error analysis (``ε = 2^-52``,
    ``k`` terms): ``x_j − m`` is one rounding (relative ε/2); ``exp`` is within 2ε relative; hence each
    term's absolute error is ``<= e^t (ε|t|/2 + 2ε) <= (1/(2e) + 2) ε`` (``t e^t >= −1/e``).  The sum
    ``s`` contains the exact term ``exp(0) = 1``, so ``s >= 1`` and its relative error is ``<= 3.2 k ε``;
    the ``log`` and the final addition add ``2ε|log s| + ε|L|``.  We widen by twice this,
    ``tol = 8 ε (k + |L| + 1)``.  ``+inf`` entries give ``L = +inf``; ``−inf`` entries contribute 0.
    """
    k = x.shape[-1]
    m = np.max(x, axis=-1)
    finite_m = np.where(np.isfinite(m), m, 0.0)
    with np.errstate(invalid="ignore", over="ignore", under="ignore"):
        s = np.sum(np.exp(x - finite_m[..., None]), axis=-1)
        L = finite_m + np.log(s)
        tol = 8.0 * _EPS * (k + np.abs(L) + 1.0)
        lo = np.where(np.isposinf(m), np.inf, L - 2.0 * tol)
        hi = np.where(np.isposinf(m), np.inf, L + 2.0 * tol)
    return lo, hi


def _exp_neg_down(L: np.ndarray) -> np.ndarray:
    """A lower bound of ``exp(−L)`` for ``L >= 0`` (values below 1e-300 become 0)."""
    with np.errstate(under="ignore", over="ignore"):
        v = np.exp(-L) * (1.0 - 4.0 * _EPS)
    v = _down(v)
    return np.clip(np.where(v < _TINY, 0.0, v), 0.0, 1.0)


def _exp_neg_up(L: np.ndarray) -> np.ndarray:
    """An upper bound of ``exp(−L)`` for ``L >= 0`` (at least 2e-300, at most 1)."""
    with np.errstate(under="ignore", over="ignore"):
        v = np.exp(-L) * (1.0 + 4.0 * _EPS)
    v = _up(v)
    return np.clip(np.where(v < _TINY, 2.0 * _TINY, v), 0.0, 1.0)


# ==================================================================================================
# Eq. 10 and Eq. 11 (seed 001)
# ==================================================================================================
def _diff_bounds(d_lb, d_ub) -> tuple[np.ndarray, np.ndarray]:
    lb = np.array(d_lb, dtype=np.float64, copy=True)
    ub = np.array(d_ub, dtype=np.float64, copy=True)
    if lb.shape != ub.shape or lb.ndim < 2 or lb.shape[-1] != lb.shape[-2] or lb.shape[-1] < 1:
        raise ValueError(f"logit-difference bounds must be (..., n, n) arrays of one shape, got {lb.shape} "
                         f"and {ub.shape}")
    if np.isnan(lb).any() or np.isnan(ub).any():
        raise ValueError("logit-difference bounds contain NaN")
    n = lb.shape[-1]
    eye = np.eye(n, dtype=bool)
    lb[..., eye] = 0.0
    ub[..., eye] = 0.0
    if np.any(lb > ub):
        raise ValueError("logit-difference bounds are empty (d_lb > d_ub somewhere)")
    # d_ij = -d_ji exactly, so each bound may be tightened by the opposite one.
    lb2 = np.maximum(lb, -np.swapaxes(ub, -1, -2))
    ub2 = np.minimum(ub, -np.swapaxes(lb, -1, -2))
    if np.any(lb2 > ub2):
        raise ValueError("logit-difference bounds are contradictory (d_ij and d_ji bounds do not overlap)")
    return lb2, ub2


def softmax_bounds(d_lb: np.ndarray, d_ub: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    """Bounds on every softmax output from bounds on the logit differences (seed 001, Eq. 10).

    With ``d_ij = z_j − z_i`` and ``d_lb <= d <= d_ub``:

    .. math::

        σ_i(z) = \\frac{1}{1 + \\sum_{j \\ne i} e^{d_{ij}}},\\qquad
        σ_i^{lb} = \\frac{1}{1 + \\sum_{j \\ne i} e^{d^{ub}_{ij}}},\\qquad
        σ_i^{ub} = \\frac{1}{1 + \\sum_{j \\ne i} e^{d^{lb}_{ij}}}.

    Soundness: ``σ_i`` is decreasing in every ``d_ij`` (``j ≠ i``), so it is smallest when each
    ``d_ij`` takes its upper bound and largest at the lower bounds.  Before use, the bounds are
    tightened by antisymmetry (``d_ij = −d_ji``): ``ub_ij ← min(ub_ij, −lb_ji)``, ``lb_ij ← max(lb_ij,
    −ub_ji)``, which every real ``z`` satisfies.  The diagonal is set to 0.

    Numerics: ``σ_i = exp(−L_i)`` with ``L_i = log Σ_j exp(d_ij)`` (the ``j = i`` term is ``e^0 = 1``);
    ``L_i`` is enclosed rigorously by :func:`_lse_enclosure` and the exponential is rounded outward, so
    ``σ^{lb}`` never rounds above and ``σ^{ub}`` never below the exact Eq. 10 value, also for gaps of
    hundreds (``exp`` overflow) — an underflowed lower bound becomes 0, an underflowed upper bound
    becomes 2e-300.

    Parameters
    ----------
    d_lb, d_ub
        Arrays ``(..., n, n)``; ``±inf`` allowed (unbounded).

    Returns
    -------
    (sigma_lb, sigma_ub)
        Arrays ``(..., n)`` with ``0 <= sigma_lb <= softmax(z) <= sigma_ub <= 1`` for every ``z`` whose
        differences lie in the bounds.
    """
    lb, ub = _diff_bounds(d_lb, d_ub)
    _, L_hi_for_lb = _lse_enclosure(ub)
    L_lo_for_ub, _ = _lse_enclosure(lb)
    return _exp_neg_down(L_hi_for_lb), _exp_neg_up(L_lo_for_ub)


def faithub(dt_lb: np.ndarray, dt_ub: np.ndarray, ds_lb: np.ndarray, ds_ub: np.ndarray) -> float | np.ndarray:
    """FAITHUB: an upper bound on ``‖softmax(g_t(x)) − softmax(g_s(x))‖∞`` (seed 001, Eq. 11).

    .. math::

        \\mathrm{FAITHUB} = \\max_i \\max\\big(σ^{ub}_{t,i} − σ^{lb}_{s,i},\\;
                                            σ^{ub}_{s,i} − σ^{lb}_{t,i}\\big)

    with the Eq. 10 bounds of teacher (``dt``) and student (``ds``) from :func:`softmax_bounds`.
    Soundness: for every ``x`` in the region, ``σ_{t,i} − σ_{s,i} <= σ^{ub}_{t,i} − σ^{lb}_{s,i}`` and
    ``σ_{s,i} − σ_{t,i} <= σ^{ub}_{s,i} − σ^{lb}_{t,i}``; the maximum over ``i`` of both bounds the
    ∞-norm.  The subtraction is rounded up and the result capped at 1 (both softmaxes lie in [0, 1]).

    Returns a float for ``(n, n)`` inputs, an array over the leading axes for batched inputs.
    """
    t_lb, t_ub = softmax_bounds(dt_lb, dt_ub)
    s_lb, s_ub = softmax_bounds(ds_lb, ds_ub)
    if t_lb.shape != s_lb.shape:
        raise ValueError(f"teacher and student bounds differ in shape: {t_lb.shape} vs {s_lb.shape}")
    gap = np.maximum(_up(t_ub - s_lb), _up(s_ub - t_lb))
    out = np.minimum(np.max(gap, axis=-1), 1.0)
    return float(out) if out.ndim == 0 else out


# ==================================================================================================
# softmax in float64 and the confidence set
# ==================================================================================================
def _log_sum_exp_others(z: np.ndarray, c) -> np.ndarray:
    """``log Σ_{j≠c} exp(z_j − z_c)`` along the last axis (``c`` an int or an index array)."""
    z = np.asarray(z, dtype=np.float64)
    c = np.broadcast_to(np.asarray(c, dtype=np.intp), z.shape[:-1])
    zc = np.take_along_axis(z, c[..., None], axis=-1)
    d = z - zc
    np.put_along_axis(d, c[..., None], -np.inf, axis=-1)
    m = np.max(d, axis=-1, keepdims=True)
    with np.errstate(under="ignore"):
        return (m + np.log(np.sum(np.exp(d - m), axis=-1, keepdims=True)))[..., 0]


def log_softmax(z: np.ndarray) -> np.ndarray:
    """``z_i − LSE(z)`` along the last axis, in float64 (max-shifted: no overflow)."""
    z = np.asarray(z, dtype=np.float64)
    m = np.max(z, axis=-1, keepdims=True)
    with np.errstate(under="ignore"):
        return z - m - np.log(np.sum(np.exp(z - m), axis=-1, keepdims=True))


def softmax_confidence(z: np.ndarray) -> np.ndarray:
    """The float64 softmax probabilities ``p_i = exp(z_i − LSE(z))`` (confidences of every class).

    ``z`` is ``(n,)`` or ``(batch, n)``; the result has the same shape.  Stable for logit gaps of
    hundreds (no overflow; underflowed probabilities are 0).  To *decide* ``p_c >= κ`` when ``1 − κ``
    is tiny, prefer :func:`confidence_gap`, which works in log space.
    """
    z = np.asarray(z, dtype=np.float64)
    m = np.max(z, axis=-1, keepdims=True)
    with np.errstate(under="ignore"):
        lse = m + np.log(np.sum(np.exp(z - m), axis=-1, keepdims=True))
        return np.exp(z - lse)


def _check_kappa(kappa: float) -> float:
    try:
        k = float(kappa)
    except (TypeError, ValueError):
        k = math.nan
    if not (0.0 < k < 1.0):
        raise ConfigError(f"kappa must lie strictly between 0 and 1, got {kappa!r}")
    return k


def _log_T(kappa: float) -> float:
    """``ln((1 − κ)/κ)`` computed as ``log1p(−κ) − log κ`` (accurate for κ near 0 and 1)."""
    return math.log1p(-kappa) - math.log(kappa)


def confidence_threshold(kappa: float) -> float:
    """``T = (1 − κ)/κ``, rounded up (the confidence set ``g(d) <= T`` is never shrunk)."""
    k = _check_kappa(kappa)
    return float(_up(((1.0 - k) / k) * (1.0 + 2.0 * _EPS)))


def confidence_gap(z: np.ndarray, c: int | np.ndarray, kappa: float) -> float | np.ndarray:
    """``ln T − log Σ_{j≠c} exp(z_j − z_c)``: ``>= 0`` iff ``softmax_c(z) >= κ`` (float64).

    Working in log space keeps the test accurate when ``1 − κ`` is tiny; replay code can demand a
    small positive gap before calling a confidence real.
    """
    k = _check_kappa(kappa)
    out = _log_T(k) - _log_sum_exp_others(z, c)
    return float(out) if np.ndim(out) == 0 else out


def confidence_margin(kappa: float) -> float:
    """``ln(κ/(1 − κ))``, rounded down: every ``z`` with ``softmax_c(z) >= κ`` has ``z_c − z_j >=`` it.

    Proof: ``softmax_c >= κ`` gives ``exp(z_j − z_c) <= Σ_{j'≠c} exp(z_{j'} − z_c) <= T``, i.e.
    ``z_c − z_j >= −ln T = ln(κ/(1−κ))``.  For two classes the two conditions are equivalent, so the
    constraint is exact there.  The value is lowered by ``4ε(|·| + 1)`` to absorb rounding.
    """
    k = _check_kappa(kappa)
    v = math.log(k) - math.log1p(-k)
    return float(_down(v - 4.0 * _EPS * (abs(v) + 1.0)))


def _quantise(c: np.ndarray) -> np.ndarray:
    """Round non-negative coefficients ``<= 1`` to a dyadic grid on which their sum is exact.

    With ``k`` coefficients, ``q = 2^{-(52 − ⌈log2(k+1)⌉)}``; every partial sum is a multiple of ``q``
    below ``2^{53} q``, so it is a float64 computed without rounding.  That makes the cut over ``z``
    (``coef_c = −Σ_j coef_j``) exactly the same half-space as the cut over ``d``.
    """
    k = c.size
    q = math.ldexp(1.0, -(52 - math.ceil(math.log2(k + 1))))
    return np.round(c / q) * q


def tangent_cut(d_hat: np.ndarray, kappa: float, project: bool = True) -> LinearCut:
    """A linear cut over ``d = (z_j − z_c)_{j≠c}`` valid for the whole κ-confidence set of class ``c``.

    The confidence set ``C = {d : g(d) = Σ_j e^{d_j} <= T}`` (``T = (1−κ)/κ``) is convex because ``g``
    is.  The tangent of ``g`` at ``d̂`` gives

    .. math::

        g(d̂) + ∇g(d̂)·(d − d̂) <= T
        \\;⟺\\; \\sum_j e^{d̂_j} d_j <= T − \\sum_j e^{d̂_j} (1 − d̂_j).

    Soundness: ``g`` is convex, so it lies above its tangent, ``g(d) >= g(d̂) + ∇g(d̂)·(d − d̂)``;
    hence every ``d ∈ C`` (``g(d) <= T``) satisfies the cut.  A point ``d̂ ∉ C`` violates the cut at
    ``d̂`` itself (it reads ``g(d̂) <= T``), so the cut separates it.

    ``project=True`` (default) first moves ``d̂`` along ``(1, …, 1)`` onto the boundary,
    ``d* = d̂ + ln(T / g(d̂))`` (shifting every ``d_j`` by ``t`` multiplies ``g`` by ``e^t``), and takes
    the tangent there.  The normal direction is the same, and the right-hand side becomes the exact
    support value ``h(c) = max_{d∈C} c·d = Σ_j c_j ln(c_j T / Σ_i c_i)`` — never larger than the
    tangent at ``d̂`` (as ``S ln(T/S) <= T − S``), so the projected cut is at least as tight and still
    cuts off every ``d̂ ∉ C``.  ``project=False`` gives the tangent at ``d̂`` as written above.

    Numerics: the cut is scaled by ``e^{−max d̂}`` (no overflow), coefficients ``c_j = e^{d̂_j − max d̂}``
    are rounded to a dyadic grid (see :func:`_quantise`), and the returned ``rhs`` is at least the
    exact support value ``h(c)`` for the *rounded* coefficients plus a rigorous error allowance — so the
    cut is valid for the float coefficients actually returned, not only for the ideal ones.

    Parameters
    ----------
    d_hat
        Point ``(n−1,)`` (finite) — typically the solver's ``(z_j − z_c)_{j≠c}`` at a spurious pair.
    kappa
        Confidence threshold in ``(0, 1)``.
    project
        See above.

    Returns
    -------
    LinearCut
        ``coef · d <= rhs`` with ``coef >= 0`` of shape ``(n−1,)`` (max entry 1).
    """
    k = _check_kappa(kappa)
    d_hat = np.asarray(d_hat, dtype=np.float64).reshape(-1)
    if d_hat.size == 0 or not np.all(np.isfinite(d_hat)):
        raise ValueError("tangent point must be a non-empty finite vector")
    M = float(np.max(d_hat))
    with np.errstate(under="ignore"):
        c = _quantise(np.exp(d_hat - M))
    pos = c > 0
    cp = c[pos]
    S = float(np.sum(cp))  # exact, by the quantisation
    log_T = _log_T(k)
    log_S = math.log(S)
    log_c = np.log(cp)
    terms = cp * (log_c + log_T - log_S)
    h = float(np.sum(terms))
    n_terms = cp.size
    # |error| of h: log/exp/sum roundings, each a few ε relative to Σ c_j(|ln c_j| + |ln T| + |ln S| + 1).
    tol = 8.0 * _EPS * float(np.sum(cp * (np.abs(log_c) + abs(log_T) + abs(log_S) + n_terms + 2.0))) + _TINY
    rhs = h + 2.0 * tol
    if not project:
        # Tangent at d̂, scaled by e^{-M}: Σ c_j d_j <= T e^{-M} − Σ c_j (1 − d̂_j).
        lit = math.exp(log_T - M) if log_T - M < 700 else math.inf
        lit = lit - float(np.sum(c * (1.0 - d_hat)))
        if math.isfinite(lit):
            rhs = max(rhs, lit)  # the literal tangent is valid whenever it is >= h(c)
    return LinearCut(coef=c, rhs=float(_up(rhs)))


def confidence_cut_z(z_hat: np.ndarray, c: int, kappa: float, project: bool = True) -> LinearCut:
    """:func:`tangent_cut` at ``d̂ = (ẑ_j − ẑ_c)_{j≠c}`` rewritten over the logits ``z`` (length ``n``).

    ``Σ_{j≠c} a_j (z_j − z_c) <= rhs`` becomes ``coef·z <= rhs`` with ``coef_j = a_j`` (``j ≠ c``) and
    ``coef_c = −Σ_j a_j``; the sum is exact (dyadic coefficients), so both forms are the same half-space.
    """
    z_hat = np.asarray(z_hat, dtype=np.float64).reshape(-1)
    n = z_hat.size
    if not (n >= 2 and 0 <= c < n):
        raise ValueError(f"class {c} is not one of {n} logits")
    others = np.arange(n) != c
    cut = tangent_cut(z_hat[others] - z_hat[c], kappa, project=project)
    coef = np.zeros(n)
    coef[others] = cut.coef
    coef[c] = -float(np.sum(cut.coef))
    return LinearCut(coef=coef, rhs=cut.rhs)


def initial_tangent_points(n_minus_1: int, kappa: float, spreads: tuple[float, ...] = (0.9,)) -> np.ndarray:
    """Points on the boundary ``g(d) = T`` where :func:`tangent_cut` gives good first cuts.

    * the symmetric point ``d_j = ln(T/(n−1))`` for all ``j`` (the cut ``Σ_j d_j <= (n−1) ln(T/(n−1))``);
    * for each ``j`` and each ``ρ`` in ``spreads``: ``d_j = ln(ρT)``, the others ``ln((1−ρ)T/(n−2))``
      (one runner-up class holds most of the non-``c`` mass).

    For ``n − 1 = 1`` the single point ``d = ln T`` gives the exact two-class constraint
    ``d <= ln T``.  Returns an array ``(m, n−1)``.
    """
    k = int(n_minus_1)
    if k < 1:
        raise ValueError("n_minus_1 must be >= 1")
    log_T = _log_T(_check_kappa(kappa))
    pts = [np.full(k, log_T - math.log(k))]
    if k >= 2:
        for rho in spreads:
            if not 0.0 < rho < 1.0:
                raise ValueError(f"spread {rho} must lie in (0, 1)")
            for j in range(k):
                p = np.full(k, log_T + math.log((1.0 - rho) / (k - 1)))
                p[j] = log_T + math.log(rho)
                pts.append(p)
    return np.array(pts)


# ==================================================================================================
# L2 ball: polyhedral outer approximation
# ==================================================================================================
def linf_box(x0: np.ndarray, r: float) -> tuple[np.ndarray, np.ndarray]:
    """The box ``[x0 − r, x0 + r]`` rounded outward (it contains every real point of the ball).

    ``x0 ± r`` is computed with Knuth's TwoSum, which yields the exact rounding error; when the float
    result lies inside the real bound it is moved one ulp outward.
    """
    x0 = np.asarray(x0, dtype=np.float64)
    r_arr = np.full_like(x0, float(r))
    lo = x0 - r_arr
    bb = lo - x0
    err_lo = (x0 - (lo - bb)) + (-r_arr - bb)
    lo = np.where(err_lo < 0, _down(lo), lo)
    hi = x0 + r_arr
    bb = hi - x0
    err_hi = (x0 - (hi - bb)) + (r_arr - bb)
    hi = np.where(err_hi > 0, _up(hi), hi)
    return lo, hi


def l2_box(x0: np.ndarray, r: float) -> tuple[np.ndarray, np.ndarray]:
    """The L∞ box of radius ``r`` around ``x0``: the first outer approximation of the L2 ball.

    ``‖x − x0‖₂ <= r`` implies ``|x_i − x0_i| <= r`` for every ``i``.  Rounded outward (see
    :func:`linf_box`).
    """
    x0 = np.asarray(x0, dtype=np.float64)
    _check_radius(r)
    return linf_box(x0, r)


def _check_radius(r: float) -> float:
    try:
        rr = float(r)
    except (TypeError, ValueError):
        rr = math.nan
    if not (math.isfinite(rr) and rr > 0):
        raise ConfigError(f"radius must be a finite number > 0, got {r!r}")
    return rr


def l2_support_cut(x0: np.ndarray, r: float, direction: np.ndarray) -> LinearCut:
    """The supporting half-space of the ball ``‖x − x0‖₂ <= r`` with outer normal ``direction``.

    ``u = direction/‖direction‖``; the cut is ``u·x <= u·x0 + r‖u‖₂`` (``‖u‖₂ = 1`` in exact
    arithmetic).  Soundness: by Cauchy–Schwarz, ``u·x = u·x0 + u·(x − x0) <= u·x0 + ‖u‖ r`` for every
    ball point.  The right-hand side is computed for the *rounded* ``u`` and enlarged by a rigorous
    bound on the dot-product and norm rounding errors, ``4(n+2)ε(Σ|u_i x0_i| + r‖u‖)``.
    """
    rr = _check_radius(r)
    x0 = np.asarray(x0, dtype=np.float64).reshape(-1)
    v = np.asarray(direction, dtype=np.float64).reshape(-1)
    if v.shape != x0.shape:
        raise ValueError(f"direction has shape {v.shape}, centre has {x0.shape}")
    scale = float(np.max(np.abs(v))) if v.size else 0.0
    if not (np.all(np.isfinite(v)) and scale > 0):
        raise ValueError("direction must be finite and non-zero")
    v = v / scale
    u = v / float(np.linalg.norm(v))
    nu = float(np.linalg.norm(u))
    dot = float(math.fsum((u * x0).tolist()))
    n = x0.size
    tol = 4.0 * (n + 2) * _EPS * (float(np.sum(np.abs(u * x0))) + rr * nu) + _TINY
    return LinearCut(coef=u, rhs=float(_up(dot + rr * nu + tol)))


def l2_tangent_cut(x0: np.ndarray, r: float, x_out: np.ndarray) -> LinearCut:
    """The tangent half-space of the sphere where the ray ``x0 → x_out`` meets it.

    With ``u = (x_out − x0)/‖x_out − x0‖`` the cut is ``u·(x − x0) <= r`` (returned as ``u·x <= u·x0 +
    r``, rounded up, see :func:`l2_support_cut`).  Every ball point satisfies it (Cauchy–Schwarz); a
    point ``x_out`` outside the ball violates it by ``‖x_out − x0‖ − r`` (minus rounding allowances of
    order ``n ε (‖x0‖₁ + r)``), so lazily adding this cut after a spurious counterexample removes it.
    """
    x0 = np.asarray(x0, dtype=np.float64).reshape(-1)
    x_out = np.asarray(x_out, dtype=np.float64).reshape(-1)
    if x_out.shape != x0.shape:
        raise ValueError(f"point has shape {x_out.shape}, centre has {x0.shape}")
    return l2_support_cut(x0, r, x_out - x0)


def l2_initial_cuts(x0: np.ndarray, r: float, n_random: int = 0, seed: int = 0) -> list[LinearCut]:
    """First cuts beyond the box: the two diagonals ``±(1, …, 1)/√n`` and ``n_random`` sign vectors.

    The diagonal cut ``Σ_i (x_i − x0_i) <= r√n`` removes the box corners that lie furthest from the
    ball.  Random sign directions come from ``numpy.random.default_rng(seed)`` (deterministic).
    """
    x0 = np.asarray(x0, dtype=np.float64).reshape(-1)
    n = x0.size
    dirs = [np.ones(n), -np.ones(n)]
    rng = np.random.default_rng(seed)
    for _ in range(int(n_random)):
        dirs.append(rng.choice([-1.0, 1.0], size=n))
    return [l2_support_cut(x0, r, d) for d in dirs] if n >= 2 else []


#: the softmax of distillcert (float64, row-wise): defined once, here
softmax = softmax_confidence
