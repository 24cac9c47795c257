r"""Teacher–student pair bounds (joint FAITHUB).

A tighter sound upper bound on ``max_x ‖softmax g_t(x) − softmax g_s(x)‖∞`` than seed 001's Eq. 11.

Seed 001's FAITHUB (Eq. 10–11, :func:`encoders.properties.faithub_crown`) bounds teacher and student
*separately*: per network, bounds on every logit difference ``d_ij = z_j − z_i`` over the input box,
then Eq. 10 ``σ_i^ub = 1/(1 + Σ_{j≠i} exp(d_ij^lb))``, ``σ_i^lb = 1/(1 + Σ_{j≠i} exp(d_ij^ub))`` and
Eq. 11 ``max_i max(σ_t,i^ub − σ_s,i^lb, σ_s,i^ub − σ_t,i^lb)``.  The teacher's largest ``σ_t,i`` and the
student's smallest ``σ_s,i`` are usually attained at different inputs, although one input feeds both
networks; every bound of this decoupled form is therefore at least the *decoupling floor* (Eq. 11 on the
exact per-network ranges).  This module keeps the coupling through the shared input in two ways.

1. Linear coupling through slabs (the per-box bound)
----------------------------------------------------
CROWN (:mod:`encoders.bounds`) gives, for every ordered pair ``(i, j)`` and each network, linear
functions of the *same* input ``x`` with, for every ``x`` in the box ``X``,

.. math::

    \underline a_{ij}·x + \underline c_{ij} \;\le\; d_{ij}(x) \;\le\; \overline a_{ij}·x + \overline c_{ij}.

Fix a class ``i`` and the sign "teacher minus student" (the other sign swaps the roles).  Since
``σ_i`` is decreasing in every ``d_ij``,

.. math::

    σ_{t,i}(x) − σ_{s,i}(x) \;\le\; φ\big(\underline a^t_{i·} x + \underline c^t_{i·}\big)
                                   − φ\big(\overline a^s_{i·} x + \overline c^s_{i·}\big),
    \qquad φ(v) = 1 / (1 + Σ_j e^{v_j}).

Cover ``X`` by slabs ``S_k = X ∩ \{x : τ_k ≤ w·x ≤ τ_{k+1}\}`` (``τ_0 = −∞``, ``τ_K = +∞``, so the
slabs cover ``X`` whatever the direction ``w`` and the cuts ``τ``).  On each slab, the minimum of each
teacher lower function and the maximum of each student upper function give Eq. 10 bounds valid on
``S_k`` only, and Eq. 11 on them bounds the difference over ``S_k``; the maximum over ``k`` bounds it
over ``X``.  Both networks are bounded on the same slab, so inputs where the teacher is confident and
inputs where the student is not are no longer combined when they lie in different slabs.  The
directions used are ``w = Σ_j p_j \underline a^t_{ij}`` and ``w = Σ_j q_j \overline a^s_{ij}``, the
gradients of ``log(1 + Σ_j e^{d_ij})`` of the linearised teacher and student at the box centre
(``p``, ``q`` the softmax weights there) — each slab family takes the minimum with the other and with
the unsliced bound (all three are sound).  Each slab bound is also intersected with the box-level
bounds (CROWN ∩ the interval bound of the last layer), which hold on every slab.  An optional
two-direction grid (cells ``slab_t ∩ slab_s``, :func:`_cell_min`) is available (``grid``); on the
digits students it did not improve on the two 1-D families and is off by default.

Minimum of a linear function over a slab (exact LP value by Lagrangian duality).  For
``m(c) = min {c·x : x ∈ X, τ_lo ≤ w·x ≤ τ_hi}`` and any multiplier ``μ ∈ ℝ``,

.. math::

    m(c) \;\ge\; g(μ) = \min_{x ∈ X} (c + μ w)·x − π(μ),
    \qquad π(μ) = μ τ_{hi} \ (μ ≥ 0), \quad π(μ) = μ τ_{lo} \ (μ < 0)

(weak duality: on the slab, ``μ(w·x − τ_hi) ≤ 0`` for ``μ ≥ 0`` and ``μ(w·x − τ_lo) ≤ 0`` for
``μ < 0``).  ``g`` is concave and piecewise linear with breakpoints at ``μ = −c_k / w_k``, so its
maximum (= the LP optimum, by strong duality) is attained at a breakpoint or at ``μ = 0``; we evaluate
``g`` at all of them and keep the largest.  Every evaluated ``g(μ)`` is a sound bound on its own, so
the choice of ``μ`` never affects soundness, only tightness.

Floating point
--------------
The CROWN backward pass of :mod:`encoders.bounds` is widened by ``rtol·(|Λ| M_L) + atol`` (its module
docstring: a first-order bound on the rounding error of every summand for *every* ``x`` of the box, so
it also covers the computed coefficients ``(a, c)`` used as functions of ``x``); we subtract this
margin twice, once for the backward pass and once for evaluating ``g(μ)`` (whose summands
``|c + μw|·max(|lo|,|hi|) + |μ τ|`` are widened by ``4(n+4)u`` of their magnitude on top).  Eq. 10 is
evaluated with outward rounding by :func:`_sigma` and the difference rounded up, as in
:func:`encoders.relaxations.faithub`.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any

import numpy as np

from ..errors import SpecError
from ..network import Network
from .crown import LayerBounds, crown_bounds, rounding_tolerance
from .rounding import ATOL as _ATOL
from .rounding import U as _U

__all__ = [
    "PairLinear",
    "pair_linear_bounds",
    "decoupled_terms",
    "slab_terms",
    "faithub_box_bound",
]

_TINY = 1e-300


@dataclass(frozen=True, eq=False)
class PairLinear:
    """Linear bounds of every logit difference over ``B`` boxes (one network).

    ``A_lo[b, i, j] · x + c_lo[b, i, j] ≤ d_ij(x) = z_j(x) − z_i(x) ≤ A_up[b, i, j] · x + c_up[b, i, j]``
    for every ``x`` in box ``b`` (diagonal zero); ``dl``/``du`` are their minimum/maximum over the box.
    Shapes: ``A_*`` ``(B, n, n, m)``, the others ``(B, n, n)``.  The constants already include the
    rounding margins (module docstring).
    """

    A_lo: np.ndarray
    c_lo: np.ndarray
    A_up: np.ndarray
    c_up: np.ndarray
    dl: np.ndarray
    du: np.ndarray
    bounds: LayerBounds | None = None
    chord: tuple[np.ndarray, ...] = ()
    empty: np.ndarray | None = None


# --------------------------------------------------------------------------------------------------
# per-network linear bounds
# --------------------------------------------------------------------------------------------------
def _pair_rows(n: int) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    ii, jj = np.nonzero(~np.eye(n, dtype=bool))
    C = np.zeros((ii.size, n))
    C[np.arange(ii.size), jj] = 1.0
    C[np.arange(ii.size), ii] -= 1.0
    return C, ii, jj


def _box_min(A: np.ndarray, lo: np.ndarray, hi: np.ndarray) -> np.ndarray:
    """``min_{lo ≤ x ≤ hi} A x`` for ``A`` ``(B, q, m)`` and boxes ``(B, m)`` → ``(B, q)``."""
    pos = np.maximum(A, 0.0)
    return np.einsum("bqm,bm->bq", pos, lo) + np.einsum("bqm,bm->bq", A - pos, hi)


def pair_linear_bounds(net: Network, lo: np.ndarray, hi: np.ndarray,
                       prior: LayerBounds | None = None) -> PairLinear:
    """CROWN linear bounds of all ``d_ij`` over each of ``B`` boxes ``lo, hi`` ``(B, m)``.

    Intermediate bounds: :func:`encoders.bounds.crown_bounds` (CROWN ∩ IBP).  Output: one backward pass
    with the rows ``[C; −C]``, ``C`` the ``n(n−1)`` rows ``e_j − e_i``, with CROWN's adaptive lower
    slopes (``1`` if ``u ≥ −l`` else ``0``) and the chord ``s(z − l)``, ``s = u/(u − l)``, as upper line
    of every unstable ReLU::

        A ← Λ W_L,  c ← Λ b_L;   for j = L−1 … 0:   c += A⁻ t_j,  A ← (A⁺ D^lo_j + A⁻ D^up_j) W_j,
                                                      c += (A⁺ D^lo_j + A⁻ D^up_j) b_j

    so that ``Λ z(x) ≥ A x + c`` on the box.  The constant is lowered by ``2·(rtol·|Λ| M_L + atol)``.
    """
    lo = np.atleast_2d(np.asarray(lo, dtype=np.float64))
    hi = np.atleast_2d(np.asarray(hi, dtype=np.float64))
    if lo.shape != hi.shape or lo.shape[1] != net.n_inputs:
        raise SpecError(f"boxes: expected (B, {net.n_inputs}) arrays, got {lo.shape} and {hi.shape}")
    if np.any(lo > hi):
        raise SpecError("boxes: a lower bound exceeds its upper bound")
    n = net.n_outputs
    Cp, ii, jj = _pair_rows(n)
    Lam = Cp  # the upper bound of d_ij is minus the lower bound of d_ji: one pass serves both
    lb = crown_bounds(net, lo, hi, prior=prior)
    aff = net.affines
    L = len(aff) - 1
    B = lo.shape[0]
    A = np.broadcast_to(Lam @ aff[L].W, (B, *(Lam @ aff[L].W).shape)).copy()
    c = np.broadcast_to(Lam @ aff[L].b, (B, Lam.shape[0])).copy()
    chord: list[np.ndarray] = [np.zeros(0)] * L
    empty = np.zeros(B, dtype=bool)
    for j in range(L - 1, -1, -1):
        zl, zu = np.atleast_2d(lb.lower[j]), np.atleast_2d(lb.upper[j])
        empty |= np.any(zl > zu, axis=1)
        active = zl >= 0
        unstable = (zl < 0) & (zu > 0)
        s = np.divide(zu, zu - zl, out=np.zeros_like(zu), where=unstable)
        t = np.where(unstable, -s * zl, 0.0)
        d_up = np.where(active, 1.0, s)
        d_lo = np.where(active, 1.0, np.where(unstable, (zu >= -zl).astype(np.float64), 0.0))
        neg = A < 0
        An = np.where(neg, A, 0.0)
        chord[j] = -An * t[:, None, :]  # (B, P, n_j): what the chord's intercept costs each row
        c = c + np.einsum("bqn,bn->bq", An, t)
        A = A * np.where(neg, d_up[:, None, :], d_lo[:, None, :])
        c = c + A @ aff[j].b
        A = A @ aff[j].W
    # rounding margin (twice: backward pass, and use of (A, c) as a function of x)
    M = np.maximum(np.abs(lo), np.abs(hi))
    for a in aff:
        M = M @ np.abs(a.W).T + np.abs(a.b)
    mag = M @ np.abs(Lam).T
    margin = rounding_tolerance(net) * mag + _ATOL * (mag > 0)
    c = c - 2.0 * margin
    val = c + _box_min(A, lo, hi) - margin  # the concretisation's own rounding (one more margin)
    # intersect with the interval bound of (Λ W_L) h + Λ b_L on the last hidden layer (often tighter
    # for pairs the backward pass bounds loosely); it only tightens dl/du, not the linear functions
    if L > 0:
        hl = np.maximum(np.atleast_2d(lb.lower[L - 1]), 0.0)
        hu = np.maximum(np.atleast_2d(lb.upper[L - 1]), 0.0)
        LW = Lam @ aff[L].W
        ival = (0.5 * (hl + hu)) @ LW.T - (0.5 * (hu - hl)) @ np.abs(LW).T + Lam @ aff[L].b - margin
        val = np.maximum(val, ival)
    shape = (B, n, n)
    A_lo = np.zeros((*shape, lo.shape[1]))
    c_lo, dl = np.zeros(shape), np.zeros(shape)
    A_lo[:, ii, jj], c_lo[:, ii, jj], dl[:, ii, jj] = A, c, val
    # d_ij = −d_ji ≤ −(A_ji x + c_ji): the upper functions are the negated lower ones, transposed
    A_up = -A_lo.transpose(0, 2, 1, 3)
    c_up, du = -c_lo.transpose(0, 2, 1), -dl.transpose(0, 2, 1)
    return PairLinear(A_lo, c_lo, A_up, c_up, dl, du, lb, tuple(chord), empty)


# --------------------------------------------------------------------------------------------------
# Eq. 10 / 11 terms
# --------------------------------------------------------------------------------------------------
def _sigma_ub(d_lo_row: np.ndarray) -> np.ndarray:
    """Rigorous ``1/(1 + Σ_j exp(v_j))`` rounded *up*, for lower bounds ``v`` (``(..., n−1)``) of ``d_i·``."""
    return _sigma(d_lo_row, upper=True)


def _sigma_lb(d_up_row: np.ndarray) -> np.ndarray:
    """Rigorous ``1/(1 + Σ_j exp(v_j))`` rounded *down*, for upper bounds ``v`` of ``d_i·``."""
    return _sigma(d_up_row, upper=False)


def _sigma(v: np.ndarray, upper: bool) -> np.ndarray:
    """``1/(1 + S)``, ``S = Σ_j exp(v_j)`` over the last axis (length ``k``), rounded outward.

    ``exp`` is within ``2u`` relative (``u = 2^-53``) of the exact value, and the sum of ``k``
    non-negative terms within ``(k−1)u`` relative, so ``S_comp (1 − 2(k+4)u) ≤ S ≤ S_comp (1 + 2(k+4)u)``
    up to underflowed terms, each below ``1e-300`` (added to the upper end).  The quotient is within
    ``u`` relative; it is moved outward by ``4u`` relative and one ulp.  An upper bound is at least
    ``2e-300`` (``S`` may overflow to ``∞``), a lower bound below ``1e-300`` is set to 0.
    """
    v = np.asarray(v, dtype=np.float64)
    k = v.shape[-1]
    with np.errstate(over="ignore", under="ignore"):
        S = np.sum(np.exp(v), axis=-1)
        if upper:
            S = S * (1.0 - 2.0 * (k + 4) * _U)
            out = np.nextafter((1.0 / (1.0 + S)) * (1.0 + 4.0 * _U), np.inf)
            return np.clip(out, 2.0 * _TINY, 1.0)
        S = S * (1.0 + 2.0 * (k + 4) * _U) + k * _TINY
        out = np.nextafter((1.0 / (1.0 + S)) * (1.0 - 4.0 * _U), -np.inf)
        return np.clip(np.where(out < _TINY, 0.0, out), 0.0, 1.0)


def _others(n: int) -> np.ndarray:
    """``(n, n−1)`` indices ``j ≠ i`` per row ``i``."""
    return np.array([[j for j in range(n) if j != i] for i in range(n)])


def decoupled_terms(t: PairLinear, s: PairLinear) -> np.ndarray:
    """Seed 001 Eq. 11 per class and sign: ``(B, n, 2)`` with ``[..., 0] = σ_t,i^ub − σ_s,i^lb`` and
    ``[..., 1] = σ_s,i^ub − σ_t,i^lb`` (Eq. 10 from the concretised CROWN bounds, rounded outward).
    The maximum over the last two axes is FAITHUB of each box."""
    n = t.dl.shape[-1]
    oth = _others(n)
    rows = np.arange(n)[:, None]
    tdl, tdu = t.dl[:, rows, oth], t.du[:, rows, oth]
    sdl, sdu = s.dl[:, rows, oth], s.du[:, rows, oth]
    plus = np.nextafter(_sigma_ub(tdl) - _sigma_lb(sdu), np.inf)
    minus = np.nextafter(_sigma_ub(sdl) - _sigma_lb(tdu), np.inf)
    return np.minimum(np.stack([plus, minus], axis=-1), 1.0)


def _slab_min(A: np.ndarray, c: np.ndarray, w: np.ndarray, tau: np.ndarray, lo: np.ndarray,
              hi: np.ndarray, return_mu: bool = False) -> Any:
    """Lower bounds of ``A_q·x + c_q`` over the slabs ``X ∩ {τ_k ≤ w·x ≤ τ_{k+1}}`` (module docstring).

    Shapes: ``A`` ``(R, q, m)``, ``c`` ``(R, q)``, ``w`` ``(R, m)``, ``tau`` ``(R, K+1)`` (``τ_0 = −∞``,
    ``τ_K = +∞``), boxes ``lo, hi`` ``(R, m)``.  Returns ``(R, K, q)``.

    ``h(μ) = min_{x∈X} (a + μw)·x`` is evaluated at all its breakpoints ``μ_k = −a_k/w_k`` at once:
    sorted by ``μ``, the minimiser ``x(μ)`` flips one coordinate per breakpoint (from the side that
    minimises ``μ w_k x_k`` for ``μ → −∞`` to the other), so ``h(μ_p) = α_p + μ_p β_p`` with ``α_p``,
    ``β_p`` cumulative sums of the flips' changes of ``a·x`` and ``w·x``.  ``μ = 0`` (``h(0) = min_X a·x``)
    is added directly.  Rounding: ``α_p`` and ``β_p`` are sums of at most ``3m`` terms whose absolute
    values sum to at most ``3 Σ_k |a_k| x̄_k`` and ``3 Σ_k |w_k| x̄_k`` (``x̄ = max(|lo|, |hi|)``), so
    ``|error of g(μ_p)| ≤ 8(m+4)u (Σ|a|x̄ + |μ_p|(Σ|w|x̄ + |τ|)) + atol``, which is subtracted.
    """
    R, q, m = A.shape
    wb = np.broadcast_to(w[:, None, :], A.shape)
    lo_b = np.broadcast_to(lo[:, None, :], A.shape)
    hi_b = np.broadcast_to(hi[:, None, :], A.shape)
    nz = wb != 0
    with np.errstate(divide="ignore", invalid="ignore"):
        mu = np.where(nz, -A / np.where(nz, wb, 1.0), np.inf)  # coordinates with w_k = 0 never flip
    x_start = np.where(wb > 0, hi_b, np.where(wb < 0, lo_b, np.where(A >= 0, lo_b, hi_b)))
    x_end = np.where(wb > 0, lo_b, np.where(wb < 0, hi_b, x_start))
    order = np.argsort(mu, axis=2)
    mu_s = np.take_along_axis(mu, order, 2)
    dx = np.take_along_axis(x_end - x_start, order, 2)
    alpha = np.sum(A * x_start, axis=2)[..., None] + np.cumsum(np.take_along_axis(A, order, 2) * dx, axis=2)
    beta = np.sum(wb * x_start, axis=2)[..., None] + np.cumsum(np.take_along_axis(wb, order, 2) * dx, axis=2)
    fin = np.isfinite(mu_s)
    mu_s = np.where(fin, mu_s, 0.0)
    xm = np.maximum(np.abs(lo), np.abs(hi))
    amag = np.einsum("rqm,rm->rq", np.abs(A), xm)[..., None]
    wmag = np.einsum("rm,rm->r", np.abs(w), xm)[:, None, None]
    e = 8.0 * (m + 4) * _U
    # h(μ_p) minus the rounding allowance that does not depend on τ; −∞ for never-flipping coordinates
    H = np.where(fin, alpha + mu_s * beta, -np.inf) - e * (amag + np.abs(mu_s) * wmag) - _ATOL
    pos = np.maximum(A, 0.0)
    H0 = np.einsum("rqm,rm->rq", pos, lo) + np.einsum("rqm,rm->rq", A - pos, hi) - e * amag[..., 0] - _ATOL
    t_lo, t_hi = tau[:, :-1], tau[:, 1:]  # (R, K)
    tmag = np.maximum(np.abs(np.where(np.isfinite(t_lo), t_lo, 0.0)),
                      np.abs(np.where(np.isfinite(t_hi), t_hi, 0.0)))
    # g is concave with right-derivative β_p − τ at μ_p: its maximum is next to the first p with
    # β_p ≤ τ (β_p decreases with p).  Evaluate g at the neighbours for τ_hi and τ_lo and at μ = 0;
    # any μ gives a sound bound, so a misplaced candidate can only cost tightness.
    Bk = np.where(fin, beta, -np.inf)[:, None]  # (R, 1, q, m)
    best = np.broadcast_to(H0[:, None, :], (R, t_lo.shape[1], q)).copy()  # μ = 0
    best_mu = np.zeros_like(best)
    for t_side in (t_hi, t_lo):
        cnt = np.sum(Bk > t_side[:, :, None, None], axis=-1)  # (R, K, q)
        for idx in (cnt - 1, cnt):
            idx = np.clip(idx, 0, m - 1)
            mu_c = np.take_along_axis(mu_s[:, None], idx[..., None], -1)[..., 0]
            H_c = np.take_along_axis(H[:, None], idx[..., None], -1)[..., 0]
            side = np.where(mu_c >= 0, t_hi[:, :, None] + e * tmag[:, :, None],
                            t_lo[:, :, None] - e * tmag[:, :, None])
            with np.errstate(invalid="ignore"):
                g = H_c - mu_c * side
            g = np.where(mu_c == 0, H_c, g)
            g = np.where(np.isnan(g), -np.inf, g)
            best_mu = np.where(g > best, mu_c, best_mu)
            best = np.maximum(best, g)
    if return_mu:
        return best + c[:, None, :], best_mu
    return best + c[:, None, :]


def _cell_min(A: np.ndarray, c: np.ndarray, w1: np.ndarray, tau1: np.ndarray, w2: np.ndarray,
              tau2: np.ndarray, lo: np.ndarray, hi: np.ndarray) -> np.ndarray:
    """Lower bounds of ``A_q·x + c_q`` over the cells ``X ∩ {τ1_k ≤ w1·x ≤ τ1_{k+1}} ∩ {τ2_l ≤ w2·x ≤
    τ2_{l+1}}``: ``(R, K1, K2, q)``.

    Two multipliers: for any ``μ1, μ2``, ``min_cell a·x ≥ min_X (a + μ1 w1 + μ2 w2)·x − π1(μ1) − π2(μ2)``
    with ``π(μ) = μ τ_hi`` (``μ ≥ 0``) or ``μ τ_lo`` (``μ < 0``).  ``μ1`` is the best multiplier of the
    slab ``k`` alone (:func:`_slab_min`), then ``μ2`` is optimised exactly for ``a' = fl(a + μ1 w1)``
    with the constant ``c − π1(μ1)``.  Rounding: ``a·x = a'·x − μ1 w1·x + (a + μ1 w1 − a')·x`` and
    ``|(a + μ1 w1 − a')·x| ≤ u (|a| + |μ1||w1|)·x̄``; with the error of ``π1`` this is covered by
    subtracting ``8(m+4)u (Σ|a|x̄ + |μ1|(Σ|w1|x̄ + τ̄1)) + atol`` from the constant.
    """
    R, q, m = A.shape
    K1 = tau1.shape[1] - 1
    _, mu1 = _slab_min(A, np.zeros_like(c), w1, tau1, lo, hi, return_mu=True)  # (R, K1, q)
    A2 = A[:, None] + mu1[..., None] * w1[:, None, None, :]  # (R, K1, q, m)
    t_lo, t_hi = tau1[:, :-1], tau1[:, 1:]
    with np.errstate(invalid="ignore"):
        pen = np.where(mu1 >= 0, mu1 * t_hi[:, :, None], mu1 * t_lo[:, :, None])
    pen = np.where(mu1 == 0, 0.0, pen)
    xm = np.maximum(np.abs(lo), np.abs(hi))
    amag = np.einsum("rqm,rm->rq", np.abs(A), xm)[:, None]
    wmag = np.einsum("rm,rm->r", np.abs(w1), xm)[:, None, None]
    tmag = np.maximum(np.abs(np.where(np.isfinite(t_lo), t_lo, 0.0)),
                      np.abs(np.where(np.isfinite(t_hi), t_hi, 0.0)))[:, :, None]
    err = 8.0 * (m + 4) * _U * (amag + np.abs(mu1) * (wmag + tmag)) + _ATOL
    c2 = c[:, None] - pen - err  # (R, K1, q)
    rep = lambda v: np.repeat(v, K1, axis=0)  # noqa: E731
    out = _slab_min(A2.reshape(R * K1, q, m), c2.reshape(R * K1, q), rep(w2), rep(tau2), rep(lo), rep(hi))
    return out.reshape(R, K1, -1, q)


def _lse_direction(A: np.ndarray, c: np.ndarray, x: np.ndarray) -> np.ndarray:
    """``Σ_j p_j A_j`` with ``p = softmax(A x + c)`` over the rows (plus an implicit row 0 at value 0,
    i.e. the gradient of ``log(1 + Σ_j e^{A_j x + c_j})``).  ``A`` ``(R, q, m)``, ``x`` ``(R, m)``."""
    v = np.einsum("rqm,rm->rq", A, x) + c
    top = np.maximum(v.max(axis=1, keepdims=True), 0.0)
    e = np.exp(v - top)
    p = e / (e.sum(axis=1, keepdims=True) + np.exp(-top))
    return np.einsum("rq,rqm->rm", p, A)


def slab_terms(t: PairLinear, s: PairLinear, lo: np.ndarray, hi: np.ndarray, which: np.ndarray,
               slabs: int, grid: int = 0) -> tuple[np.ndarray, np.ndarray]:
    """Slab-coupled bound (module docstring, part 1) for selected ``(box, class, sign)`` triples.

    ``which`` is ``(R, 3)`` integer rows ``(b, i, sign)`` (sign 0: teacher − student, 1: student −
    teacher).  Returns ``(bound (R,), split score (R, m))``: the bound is the minimum over the two slab
    families (teacher and student directions) of the maximum over their slabs; the score is
    ``|w^t| + |w^s|`` (used to choose the split coordinate).
    """
    b, i, sg = which[:, 0], which[:, 1], which[:, 2]
    n = t.dl.shape[-1]
    oth = _others(n)[i]  # (R, n−1)
    bb = b[:, None]
    ii = i[:, None]
    # "first" network: its σ_i is bounded above (needs lower bounds of d); "second": below (upper bounds)
    first_A = np.where(sg[:, None, None] == 0, t.A_lo[bb, ii, oth], s.A_lo[bb, ii, oth])
    first_c = np.where(sg[:, None] == 0, t.c_lo[bb, ii, oth], s.c_lo[bb, ii, oth])
    second_A = np.where(sg[:, None, None] == 0, s.A_up[bb, ii, oth], t.A_up[bb, ii, oth])
    second_c = np.where(sg[:, None] == 0, s.c_up[bb, ii, oth], t.c_up[bb, ii, oth])
    blo, bhi = lo[b], hi[b]
    centre = 0.5 * (blo + bhi)
    # box-level bounds (valid on every slab): lower of the first network's d, upper of the second's
    first_box = np.where(sg[:, None] == 0, t.dl[bb, ii, oth], s.dl[bb, ii, oth])
    second_box = np.where(sg[:, None] == 0, s.du[bb, ii, oth], t.du[bb, ii, oth])
    w1 = _lse_direction(first_A, first_c, centre)
    w2 = _lse_direction(second_A, second_c, centre)
    score = np.abs(w1) + np.abs(w2)
    best = np.full(len(b), np.inf)

    def cuts(w: np.ndarray, K: int) -> np.ndarray:
        wpos = np.maximum(w, 0.0)
        wmin = np.einsum("rm,rm->r", wpos, blo) + np.einsum("rm,rm->r", w - wpos, bhi)
        wmax = np.einsum("rm,rm->r", wpos, bhi) + np.einsum("rm,rm->r", w - wpos, blo)
        tau = wmin[:, None] + (wmax - wmin)[:, None] * np.linspace(0.0, 1.0, K + 1)[None, :]
        tau[:, 0], tau[:, -1] = -np.inf, np.inf
        return tau

    def gap(lo1: np.ndarray, up2: np.ndarray) -> np.ndarray:
        # an empty slab may give lower > upper; Eq. 10 uses each side on its own, so that is harmless
        shape = (lo1.shape[0],) + (1,) * (lo1.ndim - 2) + (lo1.shape[-1],)
        lo1 = np.maximum(lo1, first_box.reshape(shape))
        up2 = np.minimum(up2, second_box.reshape(shape))
        return np.nextafter(_sigma_ub(lo1) - _sigma_lb(up2), np.inf)

    if slabs > 0:
        for w in (w1, w2):
            tau = cuts(w, slabs)
            lo1 = _slab_min(first_A, first_c, w, tau, blo, bhi)  # (R, K, n−1) lower bounds of first's d
            up2 = -_slab_min(-second_A, -second_c, w, tau, blo, bhi)  # upper bounds of second's d
            best = np.minimum(best, np.max(gap(lo1, up2), axis=1))
    if grid > 0:
        t1, t2 = cuts(w1, grid), cuts(w2, grid)
        lo1 = _cell_min(first_A, first_c, w1, t1, w2, t2, blo, bhi)
        up2 = -_cell_min(-second_A, -second_c, w1, t1, w2, t2, blo, bhi)
        best = np.minimum(best, np.max(gap(lo1, up2), axis=(1, 2)))
    return np.minimum(best, 1.0), score


def faithub_box_bound(t: PairLinear, s: PairLinear, lo: np.ndarray, hi: np.ndarray, slabs: int,
                      refine: int, grid: int = 0, return_term: bool = False) -> tuple[np.ndarray, ...]:
    """Per-box bound: Eq. 11 per ``(class, sign)``, the ``refine`` largest terms replaced by the minimum
    with their slab bound.  Returns ``(value (B,), decoupled value (B,), split score (B, m))``; the score
    belongs to the term attaining the value.  With ``return_term`` a fourth array ``(B,)`` holds the
    attaining term as ``2 i + sign``."""
    dec = decoupled_terms(t, s)  # (B, n, 2)
    B, n, _ = dec.shape
    flat = dec.reshape(B, 2 * n).copy()
    dec_val = flat.max(axis=1)
    m = lo.shape[1]
    score = np.ones((B, m))
    if (slabs <= 0 and grid <= 0) or refine <= 0:
        return (dec_val, dec_val, score, flat.argmax(axis=1)) if return_term else (dec_val, dec_val, score)
    r = min(refine, 2 * n)
    top = np.argsort(-flat, axis=1)[:, :r]  # (B, r)
    bi = np.repeat(np.arange(B), r)
    code = top.reshape(-1)
    which = np.stack([bi, code // 2, code % 2], axis=1)
    joint, sc = slab_terms(t, s, lo, hi, which, slabs, grid)
    flat[bi, code] = np.minimum(flat[bi, code], joint)
    val = flat.max(axis=1)
    arg = flat.argmax(axis=1)
    sc = sc.reshape(B, r, m)
    pos = np.argmax(top == arg[:, None], axis=1)
    has = np.any(top == arg[:, None], axis=1)
    score = np.where(has[:, None], sc[np.arange(B), pos], sc[:, 0])
    return (val, dec_val, score, arg) if return_term else (val, dec_val, score)
