r"""Tighter intermediate bounds: α-CROWN (optimised lower slopes) and the triangle-relaxation LP.

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

from encoders.bounds import LayerBounds, crown_bounds, crown_linear, rounding_tolerance
from encoders.errors import ConfigError, SpecError
from encoders.network import Network

__all__ = [
    "AlphaConfig",
    "AlphaResult",
    "alpha_crown_lower",
    "tighten_bounds",
    "lp_layer_bounds",
    "SplitBoundResult",
    "beta_crown_lower",
    "bound_magnitudes",
]

_ATOL = 1e-12


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

    def __init__(self, net: Network, lo: np.ndarray, hi: np.ndarray, relax: list[_Relax], k: int,
                 Lam: np.ndarray) -> None:
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
        return [np.broadcast_to(self.relax[j].alpha0, (m, self.relax[j].alpha0.size)).copy()
                for j in range(self.k)]

    def run(self, alpha: list[np.ndarray], grad: bool) -> tuple[np.ndarray, list[np.ndarray] | None]:
        """Bound ``B(α)`` for every row and (optionally) ``∂B/∂α`` per relaxed layer."""
        val, grads, _ = self.run_full(alpha, grad)
        return val, grads

    def run_full(self, alpha: list[np.ndarray], grad: bool) -> tuple[np.ndarray, list[np.ndarray] | None,
                                                                     np.ndarray]:
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


def _margin(net: Network, lo: np.ndarray, hi: np.ndarray, k: int, Lam: np.ndarray) -> np.ndarray:
    mag = np.abs(Lam) @ bound_magnitudes(net, lo, hi)[k]
    return rounding_tolerance(net) * mag + _ATOL * (mag > 0)


# --------------------------------------------------------------------------------------------------
# α-CROWN
# --------------------------------------------------------------------------------------------------
def alpha_crown_lower(net: Network, lo: np.ndarray, hi: np.ndarray, lower, upper, k: int, Lam: np.ndarray,
                      config: AlphaConfig = AlphaConfig(), deadline: float | None = None,
                      alpha_init: list[np.ndarray] | None = None) -> AlphaResult:
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
    alpha = pas.alpha_init() if alpha_init is None else [np.clip(np.array(a, dtype=np.float64), 0, 1)
                                                         for a in alpha_init]
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
        p = config.patience
        if len(history) > p and history[-1] - history[-1 - p] <= config.tol * (1.0 + float(np.sum(np.abs(best)))):
            break
    lb = best - _margin(net, lo, hi, k, Lam)
    _, _, coef = pas.run_full(best_alpha, grad=False)
    return AlphaResult(lb, tuple(best_alpha), it, coef)


# --------------------------------------------------------------------------------------------------
# β-CROWN: bounds on sub-domains defined by ReLU splits
# --------------------------------------------------------------------------------------------------
@dataclass(frozen=True, eq=False)
class SplitBoundResult:
    """Sound lower bounds of ``λ_q · z_k`` over sub-domains ``q`` (one row per sub-domain).

    ``alpha``/``beta`` per relaxed layer (``(m, n_j)``) are the best multipliers found (warm starts for
    children); ``coef`` (``(m, n_in)``) the input coefficients of the linear bound at them; ``scores``
    per layer (``(m, n_j)``) a branching score for every neuron still unstable and unsplit in the row's
    sub-domain (``|A_i| · u_i (−l_i)/(u_i − l_i)``, the coefficient times the triangle's height; 0 for
    the others).
    """

    lb: np.ndarray
    alpha: tuple[np.ndarray, ...]
    beta: tuple[np.ndarray, ...]
    coef: np.ndarray
    scores: tuple[np.ndarray, ...]


class _SplitPass:
    """The backward pass of the module docstring on sub-domains with split ReLUs (β-CROWN).

    Sub-domain ``q`` fixes the phase of some neurons: ``S^{(j)}_{q,i} = +1`` adds the constraint
    ``z_{j,i} ≥ 0``, ``−1`` adds ``z_{j,i} ≤ 0``; 0 leaves the neuron as in the root bounds.  On the
    sub-domain a split neuron is linear (``h = z`` or ``h = 0``), so its relaxation is exact there,
    and the split constraints ``S z_j ≥ 0`` enter by Lagrangian relaxation with ``β ≥ 0``::

        min_{x ∈ box ∩ splits} λ·z_k(x)  ≥  min_{x ∈ box ∩ splits} [λ·z_k(x) − Σ_j β_j ⊙ S_j · z_j(x)]
                                         ≥  B(α, β)

    (the subtracted term is ``≤ 0`` on the sub-domain), where ``B`` is the backward pass of the
    combined function with the split neurons' relaxation ``D = 1`` (``S = +1``) or ``0`` (``S = −1``)
    and the term ``−β_j ⊙ S_j`` added to the coefficients ``G^{(j)}`` on ``z_j``.  ``B`` is a valid
    bound for every ``α ∈ [0,1]``, ``β ≥ 0`` (Wang et al., *Beta-CROWN*, NeurIPS 2021); the root
    bounds of unsplit neurons stay valid because every sub-domain lies in the box.  The gradient in
    ``β_j`` is ``−S_j ⊙ ∂B/∂G^{(j)}``.
    """

    def __init__(self, net: Network, lo: np.ndarray, hi: np.ndarray, relax: list[_Relax], k: int,
                 Lam: np.ndarray, splits: list[np.ndarray]) -> None:
        aff = net.affines
        self.k = k
        self.c, self.r = 0.5 * (lo + hi), 0.5 * (hi - lo)
        # Neurons inactive at the root have h = 0 in every sub-domain: only the *live* ones (active or
        # unstable at the root) enter the pass, which shrinks every product to the live columns.
        self.live = [np.flatnonzero(r.active | r.unstable) for r in relax]
        live_prev = [np.arange(net.n_inputs)] + self.live[:-1] if k else []
        self.W = [aff[j].W[np.ix_(self.live[j], live_prev[j])] for j in range(k)]
        self.b = [aff[j].b[self.live[j]] for j in range(k)]
        self.s = [r.s[lv] for r, lv in zip(relax, self.live)]
        self.t = [r.t[lv] for r, lv in zip(relax, self.live)]
        self.alpha0 = [r.alpha0[lv] for r, lv in zip(relax, self.live)]
        self.S = [np.asarray(sj, dtype=np.float64)[:, lv] for sj, lv in zip(splits, self.live)]
        # per row and live neuron: still relaxed (unstable at the root and unsplit), or linear with slope 1
        self.unst = [r.unstable[lv] & (sj == 0) for r, lv, sj in zip(relax, self.live, self.S)]
        self.act = [((r.active[lv] & (sj == 0)) | (sj > 0)).astype(np.float64)
                    for r, lv, sj in zip(relax, self.live, self.S)]
        top = self.live[k - 1] if k else np.arange(net.n_inputs)
        self.A_top = Lam @ aff[k].W[:, top]
        self.kappa0 = Lam @ aff[k].b

    def run(self, alpha: list[np.ndarray], beta: list[np.ndarray], grad: bool):
        """``B(α, β)`` per row (α, β, splits restricted to the live columns) and its gradients."""
        k = self.k
        A = self.A_top
        kappa = self.kappa0
        store = []
        for j in range(k - 1, -1, -1):
            unst = self.unst[j]
            neg = A < 0
            D = np.where(unst, np.where(neg, self.s[j], alpha[j]), self.act[j])
            kappa = kappa + np.sum(np.where(neg & unst, A * self.t[j], 0.0), axis=1)
            G = A * D - beta[j] * self.S[j]
            kappa = kappa + G @ self.b[j]
            store.append((j, A, neg, D))
            A = G @ self.W[j]
        val = kappa + A @ self.c - np.abs(A) @ self.r
        if not grad:
            return val, None, None, A, store
        ga = [np.zeros_like(a) for a in alpha]
        gb = [np.zeros_like(b) for b in beta]
        gA = self.c - np.sign(A) * self.r
        for j, Aj, negj, Dj in reversed(store):
            gG = gA @ self.W[j].T + self.b[j]
            ga[j] = np.where(self.unst[j] & ~negj, gG * Aj, 0.0)
            gb[j] = -self.S[j] * gG
            gA = gG * Dj + np.where(negj & self.unst[j], self.t[j], 0.0)
        return val, ga, gb, A, store


def beta_crown_lower(net: Network, lo: np.ndarray, hi: np.ndarray, lower, upper, k: int, Lam: np.ndarray,
                     splits: list[np.ndarray], config: AlphaConfig = AlphaConfig(),
                     deadline: float | None = None, alpha_init: list[np.ndarray] | None = None,
                     beta_init: list[np.ndarray] | None = None) -> SplitBoundResult:
    """Sound lower bounds of ``Λ_q z_k`` over the sub-domains ``q`` given by ``splits`` (β-CROWN).

    Parameters
    ----------
    lower, upper
        Root pre-activation bounds of layers ``0 … k−1`` (sound over the whole box).
    Lam
        ``(m, n_k)``: one objective row per sub-domain.
    splits
        Per relaxed layer ``j < k``, an ``(m, n_j)`` array in ``{−1, 0, +1}`` (see :class:`_SplitPass`);
        only neurons unstable under the root bounds may be split.
    alpha_init, beta_init
        Warm starts (``(m, n_j)`` per layer), e.g. the parent's multipliers.

    Returns
    -------
    SplitBoundResult
        ``lb`` widened for rounding: ``rtol · (|λ| M_k + Σ_j β_j·M_j) + atol`` (the β terms add
        summands bounded by ``β M_j``).
    """
    lo = np.asarray(lo, dtype=np.float64).reshape(-1)
    hi = np.asarray(hi, dtype=np.float64).reshape(-1)
    Lam = np.atleast_2d(np.asarray(Lam, dtype=np.float64))
    _check(net, lo, hi, lower, upper, k)
    relax = [_Relax.of(lower[j], upper[j]) for j in range(k)]
    m = Lam.shape[0]
    if len(splits) != k or any(np.shape(splits[j]) != (m, relax[j].s.size) for j in range(k)):
        raise SpecError(f"splits: expected {k} arrays of shape (m, n_j) with m = {m}")
    if any(np.any((np.asarray(splits[j]) != 0) & ~relax[j].unstable) for j in range(k)):
        raise SpecError("splits: only neurons unstable under the root bounds may be split")
    pas = _SplitPass(net, lo, hi, relax, k, Lam, splits)
    lv = pas.live
    alpha = ([np.broadcast_to(a0, (m, a0.size)).copy() for a0 in pas.alpha0] if alpha_init is None
             else [np.clip(np.asarray(a, dtype=np.float64)[:, lv[j]], 0.0, 1.0) for j, a in enumerate(alpha_init)])
    beta = ([np.zeros((m, x.size)) for x in lv] if beta_init is None
            else [np.maximum(np.asarray(b, dtype=np.float64)[:, lv[j]], 0.0) * (pas.S[j] != 0)
                  for j, b in enumerate(beta_init)])
    params = alpha + beta
    best, ga, gb, _, _ = pas.run(alpha, beta, grad=config.iterations > 0)
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
            step = lr * (mom[q] / (1 - b1**it)) / (np.sqrt(vel[q] / (1 - b2**it)) + eps)
            params[q] = params[q] + step
            params[q] = np.clip(params[q], 0.0, 1.0) if q < k else np.maximum(params[q], 0.0)
        val, ga, gb, _, _ = pas.run(params[:k], params[k:], grad=True)
        better = val > best
        if better.any():
            best = np.where(better, val, best)
            for q in range(2 * k):
                best_params[q][better] = params[q][better]
        history.append(float(np.sum(best)))
        p = config.patience
        if len(history) > p and history[-1] - history[-1 - p] <= config.tol * (1.0 + float(np.sum(np.abs(best)))):
            break
    val, _, _, coef, store = pas.run(best_params[:k], best_params[k:], grad=False)
    mags = bound_magnitudes(net, lo, hi)
    mag = np.abs(Lam) @ mags[k] + sum(best_params[k + j] @ mags[j][lv[j]] for j in range(k))
    lb = val - (rounding_tolerance(net) * mag + _ATOL)

    def expand(arrs: list[np.ndarray]) -> tuple[np.ndarray, ...]:
        out = []
        for j, a in enumerate(arrs):
            f = np.zeros((m, relax[j].s.size))
            f[:, lv[j]] = a
            out.append(f)
        return tuple(out)

    scores = [np.zeros((m, x.size)) for x in lv]
    for j, Aj, _negj, _Dj in store:  # the triangle's height u(−l)/(u − l) is the chord intercept t
        scores[j] = np.where(pas.unst[j], np.abs(Aj) * pas.t[j], 0.0)
    return SplitBoundResult(lb, expand(best_params[:k]), expand(best_params[k:]), coef, expand(scores))


def tighten_bounds(net: Network, lo: np.ndarray, hi: np.ndarray, base: LayerBounds | None = None,
                   config: AlphaConfig = AlphaConfig(), deadline: float | None = None,
                   chunk: int = 256) -> LayerBounds:
    """Intermediate bounds tightened layer by layer with α-CROWN; outputs by CROWN on top of them.

    For each hidden layer ``k ≥ 1`` (layer 0 is exact on a box), the neurons that ``base`` leaves
    unstable get ``max(base lower, α-CROWN lower)`` and ``min(base upper, −α-CROWN lower of −z)``,
    using the already tightened layers ``< k`` for the relaxation.  Never looser than ``base``
    (default: :func:`encoders.bounds.crown_bounds`).  ``method`` of the result: ``"alpha-crown"``.
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
            part = idx[s0:s0 + chunk]
            n = part.size
            Lam = np.zeros((2 * n, lows[k].size))
            Lam[np.arange(n), part] = 1.0
            Lam[n + np.arange(n), part] = -1.0
            res = alpha_crown_lower(net, lo, hi, lows, ups, k, Lam, config, deadline)
            lows[k][part] = np.maximum(lows[k][part], res.lb[:n])
            ups[k][part] = np.minimum(ups[k][part], -res.lb[n:])
    eye = np.eye(net.n_outputs)
    mid = LayerBounds(tuple(lows), tuple(ups), "alpha-crown")
    olb, oub = crown_linear(net, lo, hi, eye, bounds=mid)
    lows[L] = np.maximum(lows[L], olb)
    ups[L] = np.minimum(ups[L], oub)
    return LayerBounds(tuple(lows), tuple(ups), "alpha-crown")


# --------------------------------------------------------------------------------------------------
# the triangle-relaxation LP (reference; sound through its duals)
# --------------------------------------------------------------------------------------------------
def lp_layer_bounds(net: Network, lo: np.ndarray, hi: np.ndarray, lower, upper, k: int, Lam: np.ndarray,
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
            rows.append((np.concatenate([[z[i]], cols_prev]), np.concatenate([[1.0], -aff[j].W[i]]),
                         float(aff[j].b[i]), float(aff[j].b[i])))
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
