r"""Joint FAITHUB: a tighter sound upper bound on ``max_x ‖softmax g_t(x) − softmax g_s(x)‖∞``.

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

2. Branch and bound on ReLU phases and input coordinates
--------------------------------------------------------
The per-box bound is computed on the leaves of a partition of ``X``.  A leaf is a sub-box ``X'`` together
with sign constraints on some hidden neurons of either network, i.e. the set
``D = {x ∈ X' : z_k(x) ≥ 0 for k ∈ S⁺, z_k(x) ≤ 0 for k ∈ S⁻}``.  Every ``x ∈ X`` lies in some leaf
(a ReLU split of ``D`` gives ``D ∩ {z_k ≤ 0}`` and ``D ∩ {z_k ≥ 0}``; an input split halves ``X'``), so the
maximum over the leaves of sound per-leaf bounds is a sound bound on ``max_{x∈X}``.

Per-leaf bounds.  Each leaf stores its networks' hidden-layer bounds ``l ≤ z ≤ u`` (valid on ``D``).  A
child is bounded by :func:`encoders.bounds.crown_bounds` on its box with the parent's bounds as
``prior`` (intersected in first), after setting ``l_k ← max(l_k, 0)`` (child ``z_k ≥ 0``) or
``u_k ← min(u_k, 0)`` (child ``z_k ≤ 0``) for the split neuron.  These priors hold on the child's
domain ``D_c`` (a subset of the parent's), and every later step of CROWN (interval steps, the
relaxations built from the intersected bounds, the backward passes) is valid for every ``x`` at which
the priors hold, so all of the child's bounds — and its linear functions ``a·x + c`` of part 1 — hold
for every ``x ∈ D_c``.  A split neuron becomes stable (``h = z`` or ``h = 0`` exactly on ``D_c``).
The slab bound of part 1 minimises the linear functions over the slab ``∩ X'``, a superset of
``slab ∩ D_c``, so it stays sound (this is CROWN-style splitting without β multipliers: looser than
β-CROWN, but with no optimisation).  If some ``l_k > u_k`` the domain ``D_c`` is empty and the leaf's
value is 0.  A child's value is also capped at its parent's (the parent's bound holds on ``D_c``), so
the maximum over the leaves never increases.

Branching.  Each round splits the ``split_per_round`` leaves with the largest values.  The ReLU
candidate of a leaf is the unstable neuron (teacher or student, any hidden layer) with the largest
BaBSR-like score ``Σ_r p_r max(−A_{r,k}, 0) t_k`` — the cost of its chord intercept ``t_k = −s_k l_k``
in the backward passes of the rows ``r`` bounding the attaining term (lower bounds of ``d_{i·}`` of the
network whose ``σ_i`` is bounded above, upper bounds for the other), weighted by ``p_r``, the softmax
weight of row ``r`` in ``φ`` at the box centre.  The input candidate is the coordinate maximising
``(hi_k − lo_k)(|w^t_k| + |w^s_k|)``, the width times the influence of ``x_k`` on the linearised
``log(1 + Σ_j e^{d_ij})`` of both networks.  The ReLU split is taken when ``relu_weight`` times its
score is at least the input score (both in logit units).  On the digits models ReLU splitting is far
more effective than input splitting (64 input dimensions, ~80 unstable teacher ReLUs).  The search
stops at a time limit or a box budget; the bound is sound at every point of the search.

Measured (digits, ε = 0.05, teacher 64-128-128-10, five 64-32-32-10 students): see the report in
``benchmarks/faithfulness.py``'s summary (``joint`` entry of the headline).

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

import time
from dataclasses import dataclass
from typing import Any

import numpy as np

from encoders.bounds import LayerBounds, crown_bounds, rounding_tolerance
from encoders.bounds.rounding import ATOL as _ATOL
from encoders.bounds.rounding import U as _U
from encoders.errors import ConfigError, SpecError
from encoders.network import Network

__all__ = [
    "FaithubConfig",
    "FaithubBound",
    "PairLinear",
    "pair_linear_bounds",
    "decoupled_terms",
    "slab_terms",
    "faithub_box_bound",
    "faithub_joint",
]

_TINY = 1e-300


@dataclass(frozen=True)
class FaithubConfig:
    """Settings of :func:`faithub_joint`.

    Attributes
    ----------
    time_limit
        Seconds for the branch and bound (the root bound is always computed; 0: root only).  A
        round is started only if the previous round's duration still fits before the limit.
    max_boxes
        Largest number of leaves.
    split_per_round
        Leaves split per round (their children are bounded in one batched CROWN call).
    slabs
        Slabs per direction in the per-box joint bound (0: decoupled Eq. 11 per box).
    refine
        Per box, the number of ``(class, sign)`` terms (largest decoupled values first) that get the
        slab bound; the others keep their decoupled value (sound either way).
    grid
        Cells per direction of an additional two-direction (teacher × student) grid bound (0: off).
    relu_weight
        Split a leaf on its best unstable ReLU when ``relu_weight ×`` its score is at least its best input
        coordinate's score (0: input splits only; module docstring, part 2).
    relu_weighted
        Weight the ReLU scores' rows by their softmax weights at the box centre (else uniformly).
    tolerance
        Stop when the bound is within this absolute distance of the largest gap attained at a leaf
        centre (a lower bound on the true maximum): more search cannot gain more than that.
    """

    time_limit: float = 0.9
    max_boxes: int = 4096
    split_per_round: int = 8
    slabs: int = 16
    refine: int = 4
    grid: int = 0
    tolerance: float = 1e-3
    relu_weight: float = 10.0
    relu_weighted: bool = True

    def __post_init__(self) -> None:
        if not (self.time_limit >= 0):
            raise ConfigError(f"faithub time_limit: must be >= 0, got {self.time_limit}")
        if self.max_boxes < 1 or self.split_per_round < 1:
            raise ConfigError("faithub max_boxes and split_per_round must be >= 1")
        if not (self.tolerance >= 0):
            raise ConfigError(f"faithub tolerance: must be >= 0, got {self.tolerance}")
        if not (self.relu_weight >= 0):
            raise ConfigError(f"faithub relu_weight: must be >= 0, got {self.relu_weight}")
        if self.slabs < 0 or self.refine < 0 or self.grid < 0:
            raise ConfigError("faithub slabs and refine must be >= 0")


@dataclass(frozen=True)
class FaithubBound:
    """A sound upper bound on ``max_{x ∈ box} ‖softmax g_t(x) − softmax g_s(x)‖∞`` and its provenance.

    ``root_decoupled`` is seed 001's Eq. 11 with CROWN on the whole box (what
    :func:`encoders.properties.faithub_crown` returns, up to the interval intersection there),
    ``root`` the joint bound on the whole box, ``faithub`` the final (branch-and-bound) value;
    ``attained`` is the largest gap evaluated at a leaf centre (a lower bound on the true maximum).
    """

    faithub: float
    root: float
    root_decoupled: float
    boxes: int
    rounds: int
    seconds: float
    attained: float = 0.0
    method: str = "joint-bab"


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


# --------------------------------------------------------------------------------------------------
# branch and bound
# --------------------------------------------------------------------------------------------------
@dataclass(eq=False)
class _Leaves:
    """The open leaves: boxes, per-network hidden-layer bounds valid on each leaf (its own CROWN bounds,
    which carry the ReLU splits made so far), values and branching data."""

    lo: np.ndarray
    hi: np.ndarray
    t_bounds: tuple[list[np.ndarray], list[np.ndarray]]
    s_bounds: tuple[list[np.ndarray], list[np.ndarray]]
    value: np.ndarray
    in_score: np.ndarray  # (N, m): (hi − lo)·(|w^t| + |w^s|) per coordinate
    relu: np.ndarray  # (N, 4): best ReLU split (network 0/1, layer, neuron, score)

    def take(self, idx: np.ndarray) -> _Leaves:
        sub = lambda bb: ([a[idx] for a in bb[0]], [a[idx] for a in bb[1]])  # noqa: E731
        return _Leaves(self.lo[idx], self.hi[idx], sub(self.t_bounds), sub(self.s_bounds), self.value[idx],
                       self.in_score[idx], self.relu[idx])

    @staticmethod
    def cat(a: _Leaves, b: _Leaves) -> _Leaves:
        cb = lambda x, y: ([np.vstack([p, q]) for p, q in zip(x[0], y[0])],  # noqa: E731
                           [np.vstack([p, q]) for p, q in zip(x[1], y[1])])
        return _Leaves(np.vstack([a.lo, b.lo]), np.vstack([a.hi, b.hi]), cb(a.t_bounds, b.t_bounds),
                       cb(a.s_bounds, b.s_bounds), np.concatenate([a.value, b.value]),
                       np.vstack([a.in_score, b.in_score]), np.vstack([a.relu, b.relu]))


def _hidden(P: PairLinear) -> tuple[list[np.ndarray], list[np.ndarray]]:
    assert P.bounds is not None
    return ([np.atleast_2d(a) for a in P.bounds.lower[:-1]], [np.atleast_2d(a) for a in P.bounds.upper[:-1]])


def _prior(bb: tuple[list[np.ndarray], list[np.ndarray]] | None) -> LayerBounds | None:
    if bb is None:
        return None
    return LayerBounds(tuple(bb[0]) + (np.zeros((bb[0][0].shape[0], 1)),),
                       tuple(bb[1]) + (np.zeros((bb[0][0].shape[0], 1)),), "crown")


def _swap(n: int) -> np.ndarray:
    """Index of row ``(j, i)`` for each row ``(i, j)`` of :func:`_pair_rows`."""
    _, ii, jj = _pair_rows(n)
    pos = {(a, b): r for r, (a, b) in enumerate(zip(ii, jj))}
    return np.array([pos[(b, a)] for a, b in zip(ii, jj)])


def _relu_choice(t: PairLinear, s: PairLinear, term: np.ndarray, lo: np.ndarray, hi: np.ndarray,
                 weighted: bool = True) -> np.ndarray:
    """Best ReLU to split per box: ``(B, 4)`` rows ``(network, layer, neuron, score)``.

    The score of an unstable neuron is what its chord's intercept costs the linear bounds of the
    attaining term (BaBSR-like): ``Σ_r max(−A_r, 0) t`` over the rows ``r`` that bound the first
    network's ``d_i·`` from below and the second's from above (``A_r`` the backward-pass coefficient of
    the neuron in row ``r``, ``t = −s l`` the chord's intercept).  Both sides are in logit units.  With
    ``weighted`` the rows are weighted by their softmax weights in ``φ`` at the box centre.  Only the
    choice of the split depends on this score, never the soundness of a bound.
    """
    B = term.shape[0]
    n = t.dl.shape[-1]
    _, ii, jj = _pair_rows(n)
    i, sg = term // 2, term % 2
    sel_lo = (ii[None, :] == i[:, None]).astype(np.float64)  # rows (i, j): lower bounds of d_i·
    sel_up = (jj[None, :] == i[:, None]).astype(np.float64)  # rows (j, i): upper bounds of d_i· = −d_·i
    best = np.zeros((B, 4))
    best[:, 3] = -1.0
    centre = 0.5 * (lo + hi)
    for k, (net, first) in enumerate(((t, sg == 0), (s, sg == 1))):
        sel = np.where(first[:, None], sel_lo, sel_up)
        if weighted:
            # weight row (i, j) by the softmax weight of d_ij in φ at the box centre (∂ log φ / ∂ d_ij)
            Al, cl = net.A_lo[:, ii, jj], net.c_lo[:, ii, jj]
            v = np.einsum("bqm,bm->bq", Al, centre) + cl
            v = np.where(first[:, None], v, -v[:, _swap(n)])
            v = np.where(sel_lo > 0, v, -np.inf)  # both sides now indexed by the rows (i, j)
            top = np.maximum(v.max(axis=1, keepdims=True), 0.0)
            e = np.exp(v - top)
            w = e / (e.sum(axis=1, keepdims=True) + np.exp(-top))
            sel = np.where(first[:, None], w, w[:, _swap(n)]) * (sel > 0)
        for j, ch in enumerate(net.chord):
            if ch.size == 0:
                continue
            sc = np.einsum("bq,bqn->bn", sel, ch)
            arg = sc.argmax(axis=1)
            v = sc[np.arange(B), arg]
            better = v > best[:, 3]
            best[better] = np.stack([np.full(B, k), np.full(B, j), arg, v], axis=1)[better]
    return best


def _bound_leaves(teacher: Network, student: Network, lo: np.ndarray, hi: np.ndarray,
                  t_prior: tuple | None, s_prior: tuple | None,
                  config: FaithubConfig) -> tuple[_Leaves, np.ndarray, np.ndarray]:
    """Bound ``B`` leaves; returns them (values not yet capped by the parents') and the decoupled
    values."""
    t = pair_linear_bounds(teacher, lo, hi, _prior(t_prior))
    s = pair_linear_bounds(student, lo, hi, _prior(s_prior))
    val, dec, score, term = faithub_box_bound(t, s, lo, hi, config.slabs, config.refine, config.grid,
                                              return_term=True)
    empty = t.empty | s.empty
    val = np.where(empty, 0.0, val)  # an empty leaf holds no input: any value bounds its (empty) maximum
    if config.relu_weight > 0:
        relu = _relu_choice(t, s, term, lo, hi, config.relu_weighted)
    else:
        relu = np.tile([0.0, 0.0, 0.0, -1.0], (len(val), 1))
    leaves = _Leaves(lo, hi, _hidden(t), _hidden(s), val, (hi - lo) * score, relu)
    return leaves, val, dec


def _gap_at(teacher: Network, student: Network, X: np.ndarray) -> np.ndarray:
    """``‖softmax g_t(x) − softmax g_s(x)‖∞`` at the rows of ``X`` (float64)."""

    def soft(z: np.ndarray) -> np.ndarray:
        e = np.exp(z - z.max(axis=1, keepdims=True))
        return e / e.sum(axis=1, keepdims=True)

    return np.abs(soft(teacher.evaluate(X)) - soft(student.evaluate(X))).max(axis=1)


def _split(P: _Leaves, relu_weight: float) -> tuple[np.ndarray, np.ndarray, tuple, tuple, np.ndarray]:
    """Children of the leaves ``P``: each is split on its best ReLU if that scores at least
    ``1/relu_weight`` times its best input coordinate, else at the midpoint of that coordinate.
    Returns ``(lo, hi, teacher prior, student prior, parent index)`` of the ``2k`` children."""
    k = len(P.value)
    ar = np.arange(k)
    dim = np.argmax(P.in_score, axis=1)
    use_relu = relu_weight * P.relu[:, 3] >= P.in_score[ar, dim]
    use_relu &= P.relu[:, 3] > 0
    mid = 0.5 * (P.lo[ar, dim] + P.hi[ar, dim])
    h1, l2 = P.hi.copy(), P.lo.copy()
    h1[ar, dim] = np.where(use_relu, P.hi[ar, dim], mid)
    l2[ar, dim] = np.where(use_relu, P.lo[ar, dim], mid)
    cl, ch = np.vstack([P.lo, l2]), np.vstack([h1, P.hi])
    priors = []
    for k_net, bb in enumerate((P.t_bounds, P.s_bounds)):
        low = [np.vstack([a, a]) for a in bb[0]]
        up = [np.vstack([a, a]) for a in bb[1]]
        sel = np.nonzero(use_relu & (P.relu[:, 0] == k_net))[0]
        for r in sel:
            j, u = int(P.relu[r, 1]), int(P.relu[r, 2])
            up[j][r, u] = min(up[j][r, u], 0.0)  # first child: z_u ≤ 0 (inactive)
            low[j][k + r, u] = max(low[j][k + r, u], 0.0)  # second child: z_u ≥ 0 (active)
        priors.append((low, up))
    return cl, ch, priors[0], priors[1], np.concatenate([ar, ar])


def faithub_joint(teacher: Network, student: Network, lo: np.ndarray, hi: np.ndarray,
                  config: FaithubConfig = FaithubConfig()) -> FaithubBound:
    """Sound upper bound on ``max_{lo ≤ x ≤ hi} ‖softmax g_t(x) − softmax g_s(x)‖∞`` (module docstring).

    Parameters
    ----------
    teacher, student
        Networks with the same numbers of inputs and outputs.
    lo, hi
        The input box (e.g. ``B_ε(x0) ∩ D`` for L∞).
    """
    t0 = time.perf_counter()
    lo = np.asarray(lo, dtype=np.float64).reshape(1, -1)
    hi = np.asarray(hi, dtype=np.float64).reshape(1, -1)
    if teacher.n_inputs != student.n_inputs or teacher.n_outputs != student.n_outputs:
        raise SpecError(
            f"teacher ({teacher.n_inputs} → {teacher.n_outputs}) and student ({student.n_inputs} → "
            f"{student.n_outputs}) differ in their numbers of inputs or outputs"
        )
    leaves, val, dec = _bound_leaves(teacher, student, lo, hi, None, None, config)
    root, root_dec = float(val[0]), float(dec[0])
    attained = float(_gap_at(teacher, student, 0.5 * (lo + hi)).max())
    rounds = 0
    deadline = t0 + config.time_limit
    last = 0.0  # duration of the last round: a round is only started if it should end by the deadline
    while (time.perf_counter() + last < deadline and len(leaves.value) < config.max_boxes
           and leaves.value.max() > attained + config.tolerance):
        t_round = time.perf_counter()
        rounds += 1
        V = leaves.value
        k = min(config.split_per_round, len(V), config.max_boxes - len(V))
        if k < 1:
            break
        pick = np.argsort(-V)[:k]
        keep = np.setdiff1d(np.arange(len(V)), pick)
        parents = leaves.take(pick)
        cl, ch, tp, sp, par = _split(parents, config.relu_weight)
        kids, cv, _ = _bound_leaves(teacher, student, cl, ch, tp, sp, config)
        kids.value = np.minimum(cv, parents.value[par])  # the parent's bound holds on its children
        attained = max(attained, float(_gap_at(teacher, student, 0.5 * (cl + ch)).max()))
        leaves = _Leaves.cat(leaves.take(keep), kids)
        last = time.perf_counter() - t_round
    return FaithubBound(
        faithub=float(min(leaves.value.max(), root)),
        root=root,
        root_decoupled=root_dec,
        boxes=len(leaves.value),
        rounds=rounds,
        seconds=time.perf_counter() - t0,
        attained=attained,
    )
