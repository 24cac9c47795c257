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
    """Sound lower bounds ``lb ≤ min_x Λ z_k`` and the slopes that gave them (per relaxed layer)."""

    lb: np.ndarray
    alpha: tuple[np.ndarray, ...]
    iterations: int


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

    def alpha_init(self) -> list[np.ndarray]:
        m = self.A_top.shape[0]
        return [np.broadcast_to(self.relax[j].alpha0, (m, self.relax[j].alpha0.size)).copy()
                for j in range(self.k)]

    def run(self, alpha: list[np.ndarray], grad: bool) -> tuple[np.ndarray, list[np.ndarray] | None]:
        """Bound ``B(α)`` for every row and (optionally) ``∂B/∂α`` per relaxed layer."""
        k, aff = self.k, self.aff
        if k == 0:
            A = self.A_top
            return self.kappa0 + _box_min(A, self.lo, self.hi), ([] if grad else None)
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
        val = kappa + _box_min(A, self.lo, self.hi)
        if not grad:
            return val, None
        grads = [np.zeros_like(a) for a in alpha]
        gA = np.where(A >= 0, self.lo, self.hi)
        for j, Aj, negj, Dj in reversed(store):
            gG = gA @ aff[j].W.T + aff[j].b
            grads[j] = np.where(self.relax[j].unstable & ~negj, gG * Aj, 0.0)
            gA = gG * Dj + np.where(negj, self.relax[j].t, 0.0)
        gGU = gA @ self.WU.T + self.bU
        gk = np.zeros_like(alpha[k - 1])
        gk[:, self.U] = np.where(~self.neg_U, gGU * self.A_U, 0.0)
        grads[k - 1] = gk
        return val, grads


def _box_min(A: np.ndarray, lo: np.ndarray, hi: np.ndarray) -> np.ndarray:
    """``min_{lo ≤ x ≤ hi} A x`` row-wise (exact up to rounding): ``A⁺ lo + A⁻ hi``."""
    pos = np.maximum(A, 0.0)
    return pos @ lo + (A - pos) @ hi


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
    return AlphaResult(lb, tuple(best_alpha), it)


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
