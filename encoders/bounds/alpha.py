r"""Tighter bounds: α-CROWN (optimised lower slopes), β-CROWN on ReLU-split sub-domains
(:class:`SplitContext`, the bounding step of :class:`verifier.search.relu_split.BabSearch`), and the
triangle-relaxation LP (reference).

Notation as in :mod:`encoders.bounds`: the network is ``Affine_0, Relu, …, Affine_L``; ``z_k`` is the
pre-activation of affine layer ``k`` (``z_k = W_k h_{k−1} + b_k``, ``h_{−1} = x``, ``h_j = relu(z_j)``),
and ``l_j ≤ z_j ≤ u_j`` are bounds already known to hold over the input box ``lo ≤ x ≤ hi``.

Triangle relaxation of an unstable ReLU (``l < 0 < u``)
-------------------------------------------------------
::

    h ≥ 0,    h ≥ z,    h ≤ s (z − l),     s = u / (u − l),

the convex hull of the graph of ``relu`` on ``[l, u]``.  Stable neurons are exact (``h = z`` when
``l ≥ 0``, ``h = 0`` when ``u ≤ 0``).  Any lower line ``h ≥ α z`` with ``α ∈ [0, 1]`` is a convex
combination of the two lower facets, so it is implied by the relaxation.

α-CROWN (optimised CROWN)
-------------------------
For a batch of objectives ``Λ z_k`` (rows ``λ_1 … λ_m``; ``λ = e_i`` bounds neuron ``i`` from below,
``λ = −e_i`` from above) and *per-row* lower slopes ``α^{(j)} ∈ [0, 1]^{m × n_j}`` of every relaxed layer
``j < k``, the CROWN backward pass (:mod:`encoders.bounds`) gives for every ``α``::

    A^{(k−1)} = Λ W_k,          κ = Λ b_k
    for j = k−1, …, 0:                                   (A^{(j)} acts on h_j)
        D^{(j)} = α^{(j)}  where A^{(j)} ≥ 0 (unstable),   s_j where A^{(j)} < 0 (unstable),
                  1 (active),  0 (inactive)
        κ ← κ + Σ_i min(A^{(j)}_i, 0) t_i               (t_i = −s_i l_i, the chord's intercept)
        G^{(j)} = A^{(j)} ⊙ D^{(j)},   κ ← κ + G^{(j)} b_j,   A^{(j−1)} = G^{(j)} W_j
    B(α) = κ + Σ_i min(A^{(−1)}_i lo_i, A^{(−1)}_i hi_i)  ≤  min_{x ∈ box} Λ z_k(x)

— a sound lower bound for *every* ``α`` (each step replaces ``A h_j`` by something not larger, by the
relaxation's lines; the last step is the exact minimum of a linear function over a box).  So ``α`` may
be chosen freely per row: we maximise ``B(α)`` by projected Adam ascent on ``α ∈ [0,1]`` (Xu et al.,
*Fast and complete*, ICLR 2021), starting from CROWN's adaptive choice ``α = [u ≥ −l]``, and keep
the best bound seen per row.  The (sub)gradient is the reverse pass of the recursion above::

    ∂B/∂A^{(−1)} = lo where A^{(−1)} ≥ 0 else hi
    for j = 0, …, k−1:
        ∂B/∂G^{(j)} = (∂B/∂A^{(j−1)}) W_jᵀ + b_jᵀ
        ∂B/∂α^{(j)} = ∂B/∂G^{(j)} ⊙ A^{(j)}   on unstable neurons with A^{(j)} ≥ 0   (0 elsewhere)
        ∂B/∂A^{(j)} = ∂B/∂G^{(j)} ⊙ D^{(j)} + [A^{(j)} < 0] t

With a single relaxed layer (``k = 1``: the second hidden layer, whose input layer has exact interval
bounds) the optimum of ``B`` over ``α`` equals the optimum of the triangle-relaxation LP (the LP dual
is exactly this family: Salman et al., *A convex relaxation barrier*, NeurIPS 2019), which
:func:`lp_layer_bounds` computes for comparison.

Floating point.  Every ``B(α)`` is computed in float64 and widened by the margin of
:mod:`encoders.bounds` (``rtol · |λ| M_k + atol``, ``M_k`` the forward magnitude recursion, valid for
any slopes in ``[0, 1]``), before it is used.  LP optima are *not* used as bounds directly (a solver's
optimum is only as good as its tolerances): :func:`lp_layer_bounds` turns the LP's dual solution into
slopes ``α`` (``α_i = μ_i / (μ_i + ν_i)`` from the multipliers ``μ`` of ``h ≥ z`` and ``ν`` of
``h ≥ 0``) and evaluates ``B(α)`` — a sound bound whatever the LP's accuracy.
"""

from __future__ import annotations

import time
from dataclasses import dataclass

import numpy as np

from encoders.errors import ConfigError, SpecError
from encoders.network import Network

from .crown import LayerBounds, crown_bounds, crown_linear
from .rounding import ATOL as _ATOL
from .rounding import rounding_tolerance

__all__ = [
    "AlphaConfig",
    "AlphaResult",
    "alpha_crown_lower",
    "tighten_bounds",
    "lp_layer_bounds",
    "SplitBoundResult",
    "SplitContext",
    "beta_crown_lower",
    "bound_magnitudes",
]



@dataclass(frozen=True)
class AlphaConfig:
    """Settings of the α optimisation.

    Attributes
    ----------
    iterations
        Projected Adam steps (0: plain CROWN with adaptive slopes, no optimisation).
    lr
        Adam step size on ``α`` (``α`` lives in ``[0, 1]``), multiplied by ``decay`` every iteration
        (a subgradient method on a piecewise-linear concave function needs shrinking steps to settle
        on a ridge instead of zig-zagging across it).
    tol, patience
        Stop early when the summed bound improved by at most ``tol · (1 + Σ|B|)`` over the last
        ``patience`` iterations.
    """

    iterations: int = 40
    lr: float = 0.25
    decay: float = 0.95
    tol: float = 1e-4
    patience: int = 8

    def __post_init__(self) -> None:
        if self.iterations < 0:
            raise ConfigError(f"alpha iterations: must be >= 0, got {self.iterations}")
        if not self.lr > 0:
            raise ConfigError(f"alpha lr: must be positive, got {self.lr}")
        if not 0 < self.decay <= 1:
            raise ConfigError(f"alpha decay: must lie in (0, 1], got {self.decay}")
        if self.patience < 1:
            raise ConfigError(f"alpha patience: must be >= 1, got {self.patience}")


@dataclass(frozen=True, eq=False)
class AlphaResult:
    """Sound lower bounds ``lb ≤ min_x Λ z_k`` and the slopes that gave them (per relaxed layer).

    ``coef`` (``(m, n_in)``) are the input coefficients of the linear lower bound at those slopes
    (``Λ z_k(x) ≥ coef x + κ``); the box corner minimising ``coef_q x`` (``lo`` where ``coef ≥ 0``,
    else ``hi``) is where row ``q``'s relaxation is tightest — a good attack start.
    """

    lb: np.ndarray
    alpha: tuple[np.ndarray, ...]
    iterations: int
    coef: np.ndarray


# --------------------------------------------------------------------------------------------------
# helpers
# --------------------------------------------------------------------------------------------------
def bound_magnitudes(net: Network, lo: np.ndarray, hi: np.ndarray) -> list[np.ndarray]:
    """``M_k = |W_k| M_{k−1} + |b_k|``, ``M_{−1} = max(|lo|, |hi|)``: bounds every summand's size."""
    m = np.maximum(np.abs(lo), np.abs(hi))
    out = []
    for a in net.affines:
        m = np.abs(a.W) @ m + np.abs(a.b)
        out.append(m)
    return out


@dataclass(frozen=True, eq=False)
class _Relax:
    """Phases and chord of one ReLU layer from its pre-activation bounds."""

    active: np.ndarray
    unstable: np.ndarray
    s: np.ndarray  # chord slope on unstable neurons (0 elsewhere)
    t: np.ndarray  # chord intercept −s·l on unstable neurons (0 elsewhere)
    alpha0: np.ndarray  # CROWN's adaptive lower slope

    @staticmethod
    def of(lo: np.ndarray, up: np.ndarray) -> _Relax:
        lo = np.asarray(lo, dtype=np.float64)
        up = np.asarray(up, dtype=np.float64)
        active = lo >= 0
        unstable = (lo < 0) & (up > 0)
        den = up - lo
        s = np.divide(up, den, out=np.zeros_like(up), where=unstable)
        t = np.where(unstable, -s * lo, 0.0)
        return _Relax(active, unstable, s, t, (up >= -lo).astype(np.float64))


def _check(net: Network, lo: np.ndarray, hi: np.ndarray, lower, upper, k: int) -> None:
    L = len(net.affines) - 1
    if not 0 <= k <= L:
        raise SpecError(f"layer index {k} out of range 0..{L}")
    if lo.shape != (net.n_inputs,) or hi.shape != (net.n_inputs,):
        raise SpecError(f"input box: expected shape ({net.n_inputs},), got {lo.shape} and {hi.shape}")
    if np.any(lo > hi):
        raise SpecError("input box: a lower bound exceeds its upper bound")
    if len(lower) < k or len(upper) < k:
        raise SpecError(f"need pre-activation bounds of layers 0..{k - 1}, got {min(len(lower), len(upper))}")


class _Pass:
    """The CROWN backward pass for a fixed objective matrix, as a function of the slopes ``α``.

    The top relaxed layer ``k−1`` has a fixed ``A^{(k−1)} = Λ W_k``, so its stable part (and the
    products with the stable rows of ``W_{k−1}``) is computed once.
    """

    def __init__(
        self, net: Network, lo: np.ndarray, hi: np.ndarray, relax: list[_Relax], k: int, Lam: np.ndarray
    ) -> None:
        aff = net.affines
        self.aff, self.lo, self.hi, self.relax, self.k = aff, lo, hi, relax, k
        self.c, self.r = 0.5 * (lo + hi), 0.5 * (hi - lo)
        self.A_top = Lam @ aff[k].W
        self.kappa0 = Lam @ aff[k].b
        if k > 0:
            r = relax[k - 1]
            A = self.A_top
            neg = A < 0
            G_st = A * r.active  # stable columns: D = 1 on active, 0 on inactive
            self.U = np.flatnonzero(r.unstable)
            W = aff[k - 1]
            self.kappa_top = self.kappa0 + (np.where(neg, A, 0.0) @ r.t) + G_st @ W.b
            self.Ax_top_stable = G_st @ W.W
            self.A_U, self.neg_U = A[:, self.U], neg[:, self.U]
            self.sU, self.tU = r.s[self.U], r.t[self.U]
            self.WU, self.bU = W.W[self.U], W.b[self.U]
            if k == 1:  # ∂B/∂G on U = (c − sign(A) ⊙ r) W_Uᵀ + b_U: precompute both products
                self.cWU = self.WU @ self.c + self.bU
                self.rWU = np.ascontiguousarray((self.WU * self.r).T)

    def alpha_init(self) -> list[np.ndarray]:
        m = self.A_top.shape[0]
        return [
            np.broadcast_to(self.relax[j].alpha0, (m, self.relax[j].alpha0.size)).copy()
            for j in range(self.k)
        ]

    def run(self, alpha: list[np.ndarray], grad: bool) -> tuple[np.ndarray, list[np.ndarray] | None]:
        """Bound ``B(α)`` for every row and (optionally) ``∂B/∂α`` per relaxed layer."""
        val, grads, _ = self.run_full(alpha, grad)
        return val, grads

    def run_full(
        self, alpha: list[np.ndarray], grad: bool
    ) -> tuple[np.ndarray, list[np.ndarray] | None, np.ndarray]:
        """:meth:`run` plus the input coefficients ``A^{(−1)}`` (rows: ``Λ z_k ≥ A^{(−1)} x + κ``)."""
        k, aff = self.k, self.aff
        if k == 0:
            A = self.A_top
            return self.kappa0 + A @ self.c - np.abs(A) @ self.r, ([] if grad else None), A
        # top relaxed layer j = k−1: only the unstable columns vary with α
        aU = alpha[k - 1][:, self.U]
        DU = np.where(self.neg_U, self.sU, aU)
        GU = self.A_U * DU
        kappa = self.kappa_top + GU @ self.bU
        A = self.Ax_top_stable + GU @ self.WU  # acts on h_{k−2} (or x when k = 1)
        store = []
        for j in range(k - 2, -1, -1):
            r = self.relax[j]
            neg = A < 0
            D = np.where(r.unstable, np.where(neg, r.s, alpha[j]), r.active.astype(np.float64))
            kappa = kappa + np.where(neg, A, 0.0) @ r.t
            G = A * D
            kappa = kappa + G @ aff[j].b
            store.append((j, A, neg, D))
            A = G @ aff[j].W
        # min over the box of A x = A c − |A| r;  its subgradient in A is c − sign(A) r
        val = kappa + A @ self.c - np.abs(A) @ self.r
        if not grad:
            return val, None, A
        grads = [np.zeros_like(a) for a in alpha]
        if k == 1:
            gGU = self.cWU - np.sign(A) @ self.rWU
        else:
            gA = self.c - np.sign(A) * self.r
            for j, Aj, negj, Dj in reversed(store):
                gG = gA @ aff[j].W.T + aff[j].b
                grads[j] = np.where(self.relax[j].unstable & ~negj, gG * Aj, 0.0)
                gA = gG * Dj + np.where(negj, self.relax[j].t, 0.0)
            gGU = gA @ self.WU.T + self.bU
        gk = np.zeros_like(alpha[k - 1])
        gk[:, self.U] = np.where(~self.neg_U, gGU * self.A_U, 0.0)
        grads[k - 1] = gk
        return val, grads, A


def _stalled(history: list[float], best: np.ndarray, config: AlphaConfig) -> bool:
    """The summed bound improved by at most ``tol·(1 + Σ|B|)`` over the last ``patience`` iterations."""
    p = config.patience
    scale = 1.0 + float(np.sum(np.abs(best)))
    return len(history) > p and history[-1] - history[-1 - p] <= config.tol * scale


def _margin(net: Network, lo: np.ndarray, hi: np.ndarray, k: int, Lam: np.ndarray) -> np.ndarray:
    mag = np.abs(Lam) @ bound_magnitudes(net, lo, hi)[k]
    return rounding_tolerance(net) * mag + _ATOL * (mag > 0)


# --------------------------------------------------------------------------------------------------
# α-CROWN
# --------------------------------------------------------------------------------------------------
def alpha_crown_lower(
    net: Network,
    lo: np.ndarray,
    hi: np.ndarray,
    lower,
    upper,
    k: int,
    Lam: np.ndarray,
    config: AlphaConfig = AlphaConfig(),
    deadline: float | None = None,
    alpha_init: list[np.ndarray] | None = None,
) -> AlphaResult:
    """Sound lower bounds of ``Λ z_k`` over the box, optimised over the lower slopes (module docstring).

    Parameters
    ----------
    lower, upper
        Pre-activation bounds of layers ``0 … k−1`` (sound over the box; e.g. from CROWN).
    Lam
        ``(m, n_k)`` objective rows.
    deadline
        ``time.perf_counter()`` value after which the optimisation stops (the best bound so far is
        returned; it is sound at every iteration).
    alpha_init
        Starting slopes per relaxed layer (``(m, n_j)``); default: CROWN's adaptive slopes.

    Returns
    -------
    AlphaResult
        ``lb`` (``(m,)``) already widened for rounding.
    """
    lo = np.asarray(lo, dtype=np.float64).reshape(-1)
    hi = np.asarray(hi, dtype=np.float64).reshape(-1)
    Lam = np.atleast_2d(np.asarray(Lam, dtype=np.float64))
    _check(net, lo, hi, lower, upper, k)
    relax = [_Relax.of(lower[j], upper[j]) for j in range(k)]
    pas = _Pass(net, lo, hi, relax, k, Lam)
    alpha = (
        pas.alpha_init()
        if alpha_init is None
        else [np.clip(np.array(a, dtype=np.float64), 0, 1) for a in alpha_init]
    )
    best, grads = pas.run(alpha, grad=config.iterations > 0 and k > 0)
    best_alpha = [a.copy() for a in alpha]
    m1 = [np.zeros_like(a) for a in alpha]
    m2 = [np.zeros_like(a) for a in alpha]
    b1, b2, eps = 0.9, 0.999, 1e-12
    history = [float(np.sum(best))]
    it = 0
    while k > 0 and it < config.iterations and grads is not None:
        if deadline is not None and time.perf_counter() > deadline:
            break
        it += 1
        lr = config.lr * config.decay ** (it - 1)
        for j in range(k):
            g = grads[j]
            m1[j] = b1 * m1[j] + (1 - b1) * g
            m2[j] = b2 * m2[j] + (1 - b2) * g * g
            step = lr * (m1[j] / (1 - b1**it)) / (np.sqrt(m2[j] / (1 - b2**it)) + eps)
            alpha[j] = np.clip(alpha[j] + step, 0.0, 1.0)
        val, grads = pas.run(alpha, grad=True)
        better = val > best
        if better.any():
            best = np.where(better, val, best)
            for j in range(k):
                best_alpha[j][better] = alpha[j][better]
        history.append(float(np.sum(best)))
        if _stalled(history, best, config):
            break
    lb = best - _margin(net, lo, hi, k, Lam)
    _, _, coef = pas.run_full(best_alpha, grad=False)
    return AlphaResult(lb, tuple(best_alpha), it, coef)


# --------------------------------------------------------------------------------------------------
# β-CROWN: bounds on sub-domains defined by ReLU splits
# --------------------------------------------------------------------------------------------------
@dataclass(frozen=True, eq=False)
class SplitBoundResult:
    """Sound lower bounds of ``λ · z_k`` over sub-domains ``q`` (one row per sub-domain).

    All per-neuron arrays are over the *live* neurons of each relaxed layer (``SplitContext.live``):
    ``alpha``/``beta`` (``(m, n_live_j)``) are the best multipliers found (warm starts for children);
    ``coef`` (``(m, n_in)``) the input coefficients of the linear bound at them; ``gain`` per layer a
    first-order estimate of how much splitting each neuron raises the *worse* child's bound (``−inf``
    for neurons that cannot be split: stable at the root or already split).
    """

    lb: np.ndarray
    alpha: tuple[np.ndarray, ...]
    beta: tuple[np.ndarray, ...]
    coef: np.ndarray
    gain: tuple[np.ndarray, ...]


class SplitContext:
    r"""β-CROWN bounds of one objective ``λ · z_k`` on sub-domains of a box defined by ReLU splits.

    Sub-domain ``q`` fixes the phase of some neurons: ``S^{(j)}_{q,i} = +1`` adds the constraint
    ``z_{j,i} ≥ 0``, ``−1`` adds ``z_{j,i} ≤ 0``; 0 leaves the neuron as in the root bounds.  On the
    sub-domain a split neuron is linear (``h = z`` or ``h = 0``), so its relaxation is exact there,
    and the split constraints ``S z_j ≥ 0`` enter by Lagrangian relaxation with ``β ≥ 0``::

        min_{x ∈ box ∩ splits} λ·z_k(x)  ≥  min_{x ∈ box ∩ splits} [λ·z_k(x) − Σ_j β_j ⊙ S_j · z_j(x)]
                                         ≥  B(α, β)

    (the subtracted term is ``≤ 0`` on the sub-domain), where ``B`` is the backward pass of the
    module docstring for the combined function, with the split neurons' slope ``D = 1`` (``S = +1``)
    or ``0`` (``S = −1``) and the term ``−β_j ⊙ S_j`` added to the coefficients ``G^{(j)}`` on
    ``z_j``.  ``B`` is a valid bound for every ``α ∈ [0,1]`` and ``β ≥ 0`` (Wang et al., *Beta-CROWN*,
    NeurIPS 2021); the root bounds of unsplit neurons stay valid because every sub-domain lies in the
    box.  The gradient in ``β_j`` is ``−S_j ⊙ ∂B/∂G^{(j)}``.

    Neurons inactive at the root have ``h = 0`` in every sub-domain, so only the *live* ones (active
    or unstable at the root) enter the pass: every product shrinks to the live columns.

    Split gain (branching).  With the slopes below a neuron held fixed, ``B`` is linear in
    ``G^{(j)}``, so splitting unsplit unstable neuron ``i`` of layer ``j`` changes it by about::

        Δ± = −[A_i < 0] A_i t_i  +  ΔG_i · ∂B/∂G_i,     ΔG_i = A_i (1 − D_i)  (active child, +)
                                                          ΔG_i = −A_i D_i       (inactive child, −)

    (the chord's intercept disappears in both children; the slope becomes 1 or 0).  ``gain =
    min(Δ+, Δ−)``; exact when no coefficient changes sign below layer ``j``.  Used only to rank
    candidates, never as a bound.
    """

    def __init__(
        self,
        net: Network,
        lo: np.ndarray,
        hi: np.ndarray,
        lower,
        upper,
        k: int,
        lam: np.ndarray,
        slopes: dict[int, tuple[np.ndarray, list[np.ndarray], list[np.ndarray]]] | None = None,
    ) -> None:
        lo = np.asarray(lo, dtype=np.float64).reshape(-1)
        hi = np.asarray(hi, dtype=np.float64).reshape(-1)
        _check(net, lo, hi, lower, upper, k)
        lam = np.asarray(lam, dtype=np.float64).reshape(-1)
        aff = net.affines
        relax = [_Relax.of(lower[j], upper[j]) for j in range(k)]
        self.k, self.n_sizes = k, [r.s.size for r in relax]
        self.c, self.r = 0.5 * (lo + hi), 0.5 * (hi - lo)
        self.live = [np.flatnonzero(r.active | r.unstable) for r in relax]
        live_prev = [np.arange(net.n_inputs)] + self.live[:-1]
        self.W = [aff[j].W[np.ix_(self.live[j], live_prev[j])] for j in range(k)]
        self.b = [aff[j].b[self.live[j]] for j in range(k)]
        self.s = [r.s[lv] for r, lv in zip(relax, self.live)]
        self.t = [r.t[lv] for r, lv in zip(relax, self.live)]
        self.alpha0 = [r.alpha0[lv] for r, lv in zip(relax, self.live)]
        self.unstable = [r.unstable[lv] for r, lv in zip(relax, self.live)]
        self.active = [r.active[lv] for r, lv in zip(relax, self.live)]
        top = self.live[k - 1] if k else np.arange(net.n_inputs)
        self.A_top = (lam @ aff[k].W)[top][None, :]
        self.kappa0 = float(lam @ aff[k].b)
        mags = bound_magnitudes(net, lo, hi)
        self.mag_obj = float(np.abs(lam) @ mags[k])
        self.mag_live = [mags[j][lv] for j, lv in enumerate(self.live)]
        self.rtol = rounding_tolerance(net)
        self.lw0 = [np.asarray(lower[j], dtype=np.float64)[lv] for j, lv in enumerate(self.live)]
        self.uw0 = [np.asarray(upper[j], dtype=np.float64)[lv] for j, lv in enumerate(self.live)]
        # slopes for the intermediate rows of refine(): slope_lo[j][jj][i] = slopes of layer jj for the
        # lower-bound row of live neuron i of layer j (NaN: none known, use the adaptive slope)
        self.slope_lo: list[list[np.ndarray]] = []
        self.slope_up: list[list[np.ndarray]] = []
        for j in range(k):
            nl = self.live[j].size
            lo_j = [np.full((nl, lv.size), np.nan) for lv in self.live[:j]]
            up_j = [np.full((nl, lv.size), np.nan) for lv in self.live[:j]]
            if slopes is not None and j in slopes and nl > 0:  # no live neuron: no row to warm-start
                idx, al, au = slopes[j]
                pos = np.searchsorted(self.live[j], idx)
                ok = (pos < nl) & (self.live[j][np.minimum(pos, nl - 1)] == idx)
                for jj in range(j):
                    lo_j[jj][pos[ok]] = al[jj][ok][:, self.live[jj]]
                    up_j[jj][pos[ok]] = au[jj][ok][:, self.live[jj]]
            self.slope_lo.append(lo_j)
            self.slope_up.append(up_j)

    # ---- per-domain relaxations ------------------------------------------------------------------
    def root_bounds(self, m: int) -> tuple[list[np.ndarray], list[np.ndarray]]:
        """The root pre-activation bounds of the live neurons, copied for ``m`` sub-domains."""
        lw = [np.broadcast_to(a, (m, a.size)).copy() for a in self.lw0]
        uw = [np.broadcast_to(a, (m, a.size)).copy() for a in self.uw0]
        return lw, uw

    def _relax(self, j: int, Sj: np.ndarray, dom: tuple[np.ndarray, np.ndarray] | None):
        """``(unstable, active, s, t)`` of relaxed layer ``j``: from the root bounds and the splits
        (``dom`` None), or from per-domain bounds ``dom = (l_j, u_j)`` (rows; splits already applied)."""
        if dom is None:
            unst = self.unstable[j] & (Sj == 0)
            act = np.where(Sj == 0, self.active[j], Sj > 0)
            return unst, act, self.s[j], self.t[j]
        lw, uw = dom
        unst = (lw < 0) & (uw > 0)
        act = lw >= 0
        s = np.divide(uw, uw - lw, out=np.zeros_like(uw), where=unst)
        return unst, act, s, np.where(unst, -s * lw, 0.0)

    def apply_splits(self, S: list[np.ndarray], lw: list[np.ndarray], uw: list[np.ndarray]) -> None:
        """In place: ``l ← max(l, 0)`` where ``S = +1``, ``u ← min(u, 0)`` where ``S = −1``."""
        for j in range(self.k):
            np.maximum(lw[j], 0.0, out=lw[j], where=S[j] > 0)
            np.minimum(uw[j], 0.0, out=uw[j], where=S[j] < 0)

    def refine(
        self,
        S: list[np.ndarray],
        lw: list[np.ndarray],
        uw: list[np.ndarray],
        start: np.ndarray | None = None,
        max_rows: int = 4096,
        depth: int | None = None,
    ) -> tuple[list[np.ndarray], list[np.ndarray], np.ndarray]:
        r"""Intermediate bounds of every sub-domain recomputed under its splits (CROWN with splits).

        Sub-domain ``q`` has splits ``S_q`` and bounds ``(l, u)`` valid on it (a parent's); the splits
        are applied (``l ← max(l, 0)`` on ``S = +1``, ``u ← min(u, 0)`` on ``S = −1``), then for
        ``j = 1 … k−1`` (only ``j ≥ start_q``) every neuron that is unstable on the sub-domain gets the
        CROWN bounds of ``±z_{j,i}`` computed with the sub-domain's relaxations of layers ``< j``
        (lower slopes: the root's optimised ones given as ``slopes`` to the constructor, else adaptive;
        any slope in ``[0, 1]`` is sound; split neurons linear), widened for rounding
        (``rtol·M_{j,i} + atol``, as every CROWN bound) and intersected with ``(l, u)`` (with
        ``depth``: only layers ``start_q ≤ j < start_q + depth``).

        Sound on the sub-domain: every point of it satisfies all relaxations used (``h = z`` for
        ``S = +1`` since ``z ≥ 0`` there, ``h = 0`` for ``S = −1``, the triangle on ``[l, u]`` by
        induction over the layers), so the minimum over the relaxation bounds it from below.  The
        bounds stay inside the root's, so the magnitude bound ``M`` behind the rounding margin still
        holds.  A sub-domain with some ``l > u`` is empty (returned in ``empty``).

        Returns ``(lw, uw, empty)`` (new arrays).
        """
        k = self.k
        lw = [a.copy() for a in lw]
        uw = [a.copy() for a in uw]
        self.apply_splits(S, lw, uw)
        m = S[0].shape[0] if k else 0
        if start is None:
            start = np.ones(m, dtype=np.int64)
        for j in range(1, k):
            todo = np.flatnonzero((start <= j) & (True if depth is None else j < start + depth))
            if todo.size == 0:
                continue
            q_all, i_all = np.nonzero((lw[j][todo] < 0) & (uw[j][todo] > 0))
            q_all = todo[q_all]
            step = max(1, max_rows // 2)
            for p0 in range(0, q_all.size, step):
                q, i = q_all[p0 : p0 + step], i_all[p0 : p0 + step]
                n = q.size
                A = np.concatenate([self.W[j][i], -self.W[j][i]])
                kappa = np.concatenate([self.b[j][i], -self.b[j][i]])
                dq = np.concatenate([q, q])
                for jj in range(j - 1, -1, -1):
                    unst, act, s, t = self._relax(jj, S[jj][dq], (lw[jj][dq], uw[jj][dq]))
                    neg = A < 0
                    alpha0 = np.concatenate([self.slope_lo[j][jj][i], self.slope_up[j][jj][i]])
                    alpha0 = np.where(np.isnan(alpha0), uw[jj][dq] >= -lw[jj][dq], alpha0)
                    D = np.where(unst, np.where(neg, s, alpha0), act.astype(np.float64))
                    kappa = kappa + np.sum(np.where(neg & unst, A * t, 0.0), axis=1)
                    A = A * D
                    kappa = kappa + A @ self.b[jj]
                    A = A @ self.W[jj]
                val = kappa + A @ self.c - np.abs(A) @ self.r
                margin = self.rtol * self.mag_live[j][i] + _ATOL
                lw[j][q, i] = np.maximum(lw[j][q, i], val[:n] - margin)
                uw[j][q, i] = np.minimum(uw[j][q, i], -val[n:] + margin)
        empty = np.zeros(m, dtype=bool)
        for j in range(k):
            empty |= np.any(lw[j] > uw[j], axis=1)
        return lw, uw, empty

    # ---- the pass ----------------------------------------------------------------------------
    def run(
        self,
        S: list[np.ndarray],
        alpha: list[np.ndarray],
        beta: list[np.ndarray],
        grad: bool,
        bounds: tuple[list[np.ndarray], list[np.ndarray]] | None = None,
    ):
        """``B(α, β)`` per row; with ``grad``, the gradients and ``∂B/∂G`` per layer as well.

        ``bounds``: per-domain ``(lw, uw)`` (lists of ``(m, n_live_j)``, splits applied, e.g. from
        :meth:`refine`) for the relaxations; default the root bounds.
        Returns ``(val, grad_alpha, grad_beta, A_x, store, gG)``; ``store`` holds
        ``(j, A, neg, D, unstable, t)``.
        """
        k = self.k
        m = S[0].shape[0] if k else 1
        A = np.broadcast_to(self.A_top, (m, self.A_top.shape[1]))
        kappa = np.full(m, self.kappa0)
        store = []
        for j in range(k - 1, -1, -1):
            Sj = S[j]
            unst, act, s, t = self._relax(j, Sj, None if bounds is None else (bounds[0][j], bounds[1][j]))
            neg = A < 0
            D = np.where(unst, np.where(neg, s, alpha[j]), act.astype(np.float64))
            kappa = kappa + np.sum(np.where(neg & unst, A * t, 0.0), axis=1)
            G = A * D - beta[j] * Sj
            kappa = kappa + G @ self.b[j]
            store.append((j, A, neg, D, unst, t))
            A = G @ self.W[j]
        val = kappa + A @ self.c - np.abs(A) @ self.r
        if not grad:
            return val, None, None, A, store, None
        ga = [np.zeros_like(a) for a in alpha]
        gb = [np.zeros_like(b) for b in beta]
        gGs: list[np.ndarray] = [np.zeros(0)] * k
        gA = self.c - np.sign(A) * self.r
        for j, Aj, negj, Dj, unst, tj in reversed(store):
            gG = gA @ self.W[j].T + self.b[j]
            gGs[j] = gG
            ga[j] = np.where(unst & ~negj, gG * Aj, 0.0)
            gb[j] = -S[j] * gG
            gA = gG * Dj + np.where(negj & unst, tj, 0.0)
        return val, ga, gb, A, store, gGs

    def sound(self, val: np.ndarray, beta: list[np.ndarray]) -> np.ndarray:
        """``val`` widened for rounding: ``rtol·(|λ| M_k + Σ_j β_j·M_j) + atol``."""
        mag = self.mag_obj + sum(beta[j] @ self.mag_live[j] for j in range(self.k))
        return val - (self.rtol * mag + _ATOL)

    def initial(self, m: int) -> tuple[list[np.ndarray], list[np.ndarray], list[np.ndarray]]:
        """Root splits (none), CROWN's adaptive slopes and zero β for ``m`` rows."""
        S = [np.zeros((m, lv.size), dtype=np.int8) for lv in self.live]
        alpha = [np.broadcast_to(a0, (m, a0.size)).copy() for a0 in self.alpha0]
        beta = [np.zeros((m, lv.size)) for lv in self.live]
        return S, alpha, beta

    # ---- optimisation ------------------------------------------------------------------------
    def optimise(
        self,
        S: list[np.ndarray],
        alpha: list[np.ndarray],
        beta: list[np.ndarray],
        config: AlphaConfig = AlphaConfig(),
        deadline: float | None = None,
        bounds: tuple[list[np.ndarray], list[np.ndarray]] | None = None,
    ) -> SplitBoundResult:
        """Projected Adam ascent on ``(α, β)`` per row; the best (sound, widened) bound per row.

        ``bounds``: per-domain intermediate bounds (:meth:`run`); they must be valid on each
        sub-domain (e.g. from :meth:`refine`).
        """
        k = self.k
        for j in range(k):
            if np.any((S[j] != 0) & ~self.unstable[j]):
                raise SpecError("splits: only neurons unstable under the root bounds may be split")
        params = [np.clip(np.asarray(a, dtype=np.float64), 0.0, 1.0) for a in alpha]
        params += [np.maximum(np.asarray(b, dtype=np.float64), 0.0) * (S[j] != 0) for j, b in enumerate(beta)]
        best, ga, gb, _, _, _ = self.run(S, params[:k], params[k:], grad=config.iterations > 0, bounds=bounds)
        best_params = [p.copy() for p in params]
        mom = [np.zeros_like(p) for p in params]
        vel = [np.zeros_like(p) for p in params]
        b1, b2, eps = 0.9, 0.999, 1e-12
        history = [float(np.sum(best))]
        it = 0
        while it < config.iterations and ga is not None:
            if deadline is not None and time.perf_counter() > deadline:
                break
            it += 1
            lr = config.lr * config.decay ** (it - 1)
            for q, g in enumerate(ga + gb):
                mom[q] = b1 * mom[q] + (1 - b1) * g
                vel[q] = b2 * vel[q] + (1 - b2) * g * g
                params[q] = params[q] + lr * (mom[q] / (1 - b1**it)) / (np.sqrt(vel[q] / (1 - b2**it)) + eps)
                params[q] = np.clip(params[q], 0.0, 1.0) if q < k else np.maximum(params[q], 0.0)
            val, ga, gb, _, _, _ = self.run(S, params[:k], params[k:], grad=True, bounds=bounds)
            better = val > best
            if better.any():
                best = np.where(better, val, best)
                for q in range(2 * k):
                    best_params[q][better] = params[q][better]
            history.append(float(np.sum(best)))
            if _stalled(history, best, config):
                break
        al, be = best_params[:k], best_params[k:]
        val, _, _, coef, store, gGs = self.run(S, al, be, grad=True, bounds=bounds)
        gain = []
        for j, Aj, negj, Dj, unst, tj in sorted(store, key=lambda e: e[0]):
            lost = np.where(negj & unst, -Aj * tj, 0.0)  # the chord's intercept, gone in both children
            plus = lost + Aj * (1.0 - Dj) * gGs[j]
            minus = lost - Aj * Dj * gGs[j]
            gain.append(np.where(unst, np.minimum(plus, minus), -np.inf))
        return SplitBoundResult(self.sound(val, be), tuple(al), tuple(be), coef, tuple(gain))


def beta_crown_lower(
    net: Network,
    lo: np.ndarray,
    hi: np.ndarray,
    lower,
    upper,
    k: int,
    lam: np.ndarray,
    splits: list[np.ndarray],
    config: AlphaConfig = AlphaConfig(),
    deadline: float | None = None,
) -> np.ndarray:
    """Sound lower bounds of ``λ · z_k`` over the sub-domains given by ``splits`` (full-width arrays).

    ``splits``: per relaxed layer ``j < k`` an ``(m, n_j)`` array in ``{−1, 0, +1}`` (see
    :class:`SplitContext`); only neurons unstable under the root bounds ``lower``/``upper`` may be
    split.  Returns ``(m,)`` bounds, widened for rounding.
    """
    ctx = SplitContext(net, lo, hi, lower, upper, k, lam)
    m = np.shape(splits[0])[0] if k else 1
    if len(splits) != k or any(np.shape(splits[j]) != (m, ctx.n_sizes[j]) for j in range(k)):
        raise SpecError(f"splits: expected {k} arrays of shape (m, n_j)")
    for j in range(k):
        dead = np.setdiff1d(np.arange(ctx.n_sizes[j]), ctx.live[j])
        if np.any(np.asarray(splits[j])[:, dead] != 0):
            raise SpecError("splits: only neurons unstable under the root bounds may be split")
    S = [np.asarray(splits[j], dtype=np.int8)[:, ctx.live[j]] for j in range(k)]
    _, alpha, beta = ctx.initial(m)
    return ctx.optimise(S, alpha, beta, config, deadline).lb


def tighten_bounds(
    net: Network,
    lo: np.ndarray,
    hi: np.ndarray,
    base: LayerBounds | None = None,
    config: AlphaConfig = AlphaConfig(),
    deadline: float | None = None,
    chunk: int = 256,
    slopes: dict[int, tuple[np.ndarray, list[np.ndarray], list[np.ndarray]]] | None = None,
) -> LayerBounds:
    """Intermediate bounds tightened layer by layer with α-CROWN; outputs by CROWN on top of them.

    For each hidden layer ``k ≥ 1`` (layer 0 is exact on a box), the neurons that ``base`` leaves
    unstable get ``max(base lower, α-CROWN lower)`` and ``min(base upper, −α-CROWN lower of −z)``,
    using the already tightened layers ``< k`` for the relaxation.  Never looser than ``base``
    (default: :func:`encoders.bounds.crown_bounds`).  ``method`` of the result: ``"alpha-crown"``.

    ``slopes``: if a dict is given, it receives for every layer ``k ≥ 1`` the optimised slopes as
    ``slopes[k] = (idx, lower, upper)``: the neurons bounded (``idx``) and per relaxed layer ``j < k``
    the slopes of their lower-bound rows (``lower[j]``, ``(idx.size, n_j)``) and of their upper-bound
    rows (``upper[j]``) — warm starts / fixed slopes for :meth:`SplitContext.refine`.
    """
    lo = np.asarray(lo, dtype=np.float64).reshape(-1)
    hi = np.asarray(hi, dtype=np.float64).reshape(-1)
    if base is None:
        base = crown_bounds(net, lo, hi)
    if base.batched:
        raise SpecError("tighten_bounds: expected bounds of a single box")
    lows = [np.array(a, dtype=np.float64) for a in base.lower]
    ups = [np.array(a, dtype=np.float64) for a in base.upper]
    L = len(net.affines) - 1
    for k in range(1, L):
        idx = np.flatnonzero((lows[k] < 0) & (ups[k] > 0))
        for s0 in range(0, idx.size, chunk):
            part = idx[s0 : s0 + chunk]
            n = part.size
            Lam = np.zeros((2 * n, lows[k].size))
            Lam[np.arange(n), part] = 1.0
            Lam[n + np.arange(n), part] = -1.0
            res = alpha_crown_lower(net, lo, hi, lows, ups, k, Lam, config, deadline)
            lows[k][part] = np.maximum(lows[k][part], res.lb[:n])
            ups[k][part] = np.minimum(ups[k][part], -res.lb[n:])
            if slopes is not None:
                got = slopes.get(
                    k,
                    (
                        np.zeros(0, dtype=np.int64),
                        [np.zeros((0, lows[j].size)) for j in range(k)],
                        [np.zeros((0, lows[j].size)) for j in range(k)],
                    ),
                )
                slopes[k] = (
                    np.concatenate([got[0], part]),
                    [np.concatenate([got[1][j], res.alpha[j][:n]]) for j in range(k)],
                    [np.concatenate([got[2][j], res.alpha[j][n:]]) for j in range(k)],
                )
    eye = np.eye(net.n_outputs)
    mid = LayerBounds(tuple(lows), tuple(ups), "alpha-crown")
    olb, oub = crown_linear(net, lo, hi, eye, bounds=mid)
    lows[L] = np.maximum(lows[L], olb)
    ups[L] = np.minimum(ups[L], oub)
    return LayerBounds(tuple(lows), tuple(ups), "alpha-crown")


# --------------------------------------------------------------------------------------------------
# the triangle-relaxation LP (reference; sound through its duals)
# --------------------------------------------------------------------------------------------------
def lp_layer_bounds(
    net: Network,
    lo: np.ndarray,
    hi: np.ndarray,
    lower,
    upper,
    k: int,
    Lam: np.ndarray,
) -> tuple[np.ndarray, np.ndarray]:
    """Lower bounds of ``Λ z_k`` by the triangle-relaxation LP, one HiGHS solve per row (warm-started).

    LP over ``(x, z_0, h_0, …, z_{k−1}, h_{k−1})``::

        min λ·(W_k h_{k−1} + b_k)   s.t.  lo ≤ x ≤ hi,   z_j = W_j h_{j−1} + b_j,   z_j ∈ [l_j, u_j],
                                          h_j = z_j (active),  h_j = 0 (inactive),
                                          h_j ≥ 0, h_j ≥ z_j, h_j ≤ s (z_j − l_j) (unstable).

    Returns ``(lp_value, sound_lb)``: the solver's optimum (not a sound bound: tolerances) and the
    sound bound ``B(α)`` of the α-CROWN pass at the slopes read off the LP duals (module docstring).
    """
    import highspy

    lo = np.asarray(lo, dtype=np.float64).reshape(-1)
    hi = np.asarray(hi, dtype=np.float64).reshape(-1)
    Lam = np.atleast_2d(np.asarray(Lam, dtype=np.float64))
    _check(net, lo, hi, lower, upper, k)
    aff = net.affines
    relax = [_Relax.of(lower[j], upper[j]) for j in range(k)]
    n0 = net.n_inputs
    # column layout
    cols_prev = np.arange(n0)
    n_cols = n0
    col_lo, col_hi = [lo], [hi]
    rows: list[tuple[np.ndarray, np.ndarray, float, float]] = []
    ge_rows: list[tuple[int, int, np.ndarray]] = []  # (row index, layer, neuron) of h ≥ z rows
    h_cols = []
    for j in range(k):
        nj = aff[j].W.shape[0]
        z = np.arange(n_cols, n_cols + nj)
        h = np.arange(n_cols + nj, n_cols + 2 * nj)
        n_cols += 2 * nj
        lj, uj = np.asarray(lower[j], float), np.asarray(upper[j], float)
        r = relax[j]
        col_lo += [lj, np.where(r.active, np.maximum(lj, 0.0), 0.0)]
        col_hi += [uj, np.maximum(uj, 0.0)]
        for i in range(nj):  # z_i − W_i h_prev = b_i
            rows.append(
                (
                    np.concatenate([[z[i]], cols_prev]),
                    np.concatenate([[1.0], -aff[j].W[i]]),
                    float(aff[j].b[i]),
                    float(aff[j].b[i]),
                )
            )
        for i in range(nj):
            if r.active[i]:
                rows.append((np.array([h[i], z[i]]), np.array([1.0, -1.0]), 0.0, 0.0))
            elif r.unstable[i]:
                ge_rows.append((len(rows), j, i))
                rows.append((np.array([h[i], z[i]]), np.array([1.0, -1.0]), 0.0, np.inf))
                rows.append((np.array([h[i], z[i]]), np.array([1.0, -r.s[i]]), -np.inf, float(r.t[i])))
        cols_prev = h
        h_cols.append(h)
    clo, chi = np.concatenate(col_lo), np.concatenate(col_hi)
    hs = highspy.Highs()
    hs.setOptionValue("output_flag", False)
    inf = highspy.kHighsInf
    hs.addVars(n_cols, np.maximum(clo, -inf), np.minimum(chi, inf))
    for idx, coef, rlo, rhi in rows:
        hs.addRow(max(rlo, -inf), min(rhi, inf), idx.size, idx.astype(np.int32), coef.astype(np.float64))
    values = np.zeros(Lam.shape[0])
    alphas = [np.broadcast_to(r.alpha0, (Lam.shape[0], r.alpha0.size)).copy() for r in relax]
    for q in range(Lam.shape[0]):
        c = np.zeros(n_cols)
        c[cols_prev] = Lam[q] @ aff[k].W
        hs.changeColsCost(n_cols, np.arange(n_cols, dtype=np.int32), c)
        hs.run()
        info = hs.getInfo()
        values[q] = info.objective_function_value + float(Lam[q] @ aff[k].b)
        sol = hs.getSolution()
        row_dual = np.asarray(sol.row_dual)
        col_dual = np.asarray(sol.col_dual)
        for ri, j, i in ge_rows:
            mu = max(0.0, row_dual[ri])  # multiplier of h − z ≥ 0 (minimisation: ≥ 0)
            nu = max(0.0, col_dual[h_cols[j][i]])  # reduced cost of h at its lower bound 0
            if mu + nu > 0:
                alphas[j][q, i] = mu / (mu + nu)
    pas = _Pass(net, lo, hi, relax, k, Lam)
    val, _ = pas.run(alphas, grad=False)
    return values, val - _margin(net, lo, hi, k, Lam)
