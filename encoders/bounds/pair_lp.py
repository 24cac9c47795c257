r"""Bounds of two coupled network copies under the global property's constraints, by LP with sound duals.

Setting (the global two-copy κ-confidence property, :class:`encoders.properties.GlobalRobustness`):
a *violating pair* for class ``c`` through competitor ``j`` is ``(x, x')`` with

    x ∈ X_a, x' ∈ X_b (boxes ⊆ D),   |x_i − x'_i| ≤ δ,   z_c(x) − z_k(x) ≥ m  (all k ≠ c),
    tangent cuts of the softmax confidence set at z(x),   z_j(x') − z_c(x') ≥ 0            (V)

(``m = ln(κ/(1−κ))``; the last row is dropped when no single ``j`` is fixed).  Every bound computed
here is valid over the violating pairs ``V`` only — which is all a proof of "no violating pair"
needs: a constraint every point of ``V`` satisfies cuts off nothing that matters.

The LP relaxation ``P ⊇ V``
---------------------------
Columns ``x, x'``, and per hidden layer ``k`` and copy ``s ∈ {a, b}`` the pre-activations ``z_s,k``
and activations ``h_s,k``, then the outputs ``y, y'``.  Rows:

* ``z_s,k = W_k h_s,k−1 + b_k``, ``y_s = W_L h_s,L−1 + b_L`` (exact);
* ReLU of copy ``s`` with ``z ∈ [l, u]`` (its current bounds): active ``h = z``; inactive ``h = 0``;
  unstable the triangle ``h ≥ 0, h ≥ z, h ≤ u (z − l)/(u − l)`` (the convex hull of the graph on
  ``[l, u]``);
* the difference rows of :mod:`encoders.bounds.twin` (all valid over every coupled pair):
  ``Δz ∈ [dl, du]``, ``Δh ∈ [hl, hu]``, ``s_lo Δz + t_lo ≤ Δh ≤ s_up Δz + t_up`` and
  ``Δy ∈ [dl_L, du_L]``;
* the property rows of (V) (confidence items (i) and tangent cuts (ii) of the class docstring of
  :class:`~encoders.properties.GlobalRobustness`, all outer approximations of the confident set).

Every point of ``V`` (with its hidden values) lies in ``P``, so ``min_P φ ≤ min_V φ``.

*Couples.*  With ``u = z_c − z_j``, a violating pair of class ``c`` through ``j`` has ``u(x) ≥ m`` and
``u(x') ≤ 0``; a violating pair of class ``j`` through ``c``, with its copies exchanged (``(x', x)``),
has ``u(x) ≥ 0`` and ``u(x') ≤ −m``.  Both lie in

    R = { u(x) ≥ 0,   u(x') ≤ 0,   u(x) − u(x') ≥ m }                                          (R)

so the LP ``P_R`` with the rows (R) in place of the property rows of (V) (``couple=True``) bounds both
pairs at once: its bounds hold for ``(c, j)`` as they are and for ``(j, c)`` after
:func:`swap_copies` (copies exchanged, differences negated).  On the digits student every twin bound
the couple LP reaches equals the one of each pair's own LP (to 1e-3, 7 couples at two settings),
with 25–35 % fewer seconds per run and one run instead of two.

Sound values from the LP duals
------------------------------
The solver's optimum is not itself a bound (tolerances).  For an LP ``min cᵀv`` over rows
``L_r ≤ a_rᵀ v ≤ U_r`` and columns ``l ≤ v ≤ u``, *any* multipliers ``y`` give (weak duality)

    cᵀv = Σ_r y_r a_rᵀv + (c − Aᵀy)ᵀv ≥ Σ_r (y_r L_r if y_r > 0 else y_r U_r)
                                          + Σ_i min(d_i l_i, d_i u_i),        d = c − Aᵀy,

for every ``v`` in the LP (a positive ``y_r`` needs a finite ``L_r``, a negative one a finite
``U_r``; multipliers that break this are set to 0, which keeps the bound valid).  We evaluate this
with the solver's row duals, in float64, and lower the result by ``1e-9·(1 + Σ|terms| + Σ_i (|c_i| +
(|A|ᵀ|y|)_i)·max(|l_i|, |u_i|))``: a bound on the rounding of the sums and of ``d`` itself (far above
``n·ε``; the last sum covers a cancellation in ``d``; an unbounded column with a nonzero ``|c_i| +
(|A|ᵀ|y|)_i`` gives no bound) and on the few-ulp rounding of the row constants (e.g.
the triangle slope ``u/(u − l)``), whose effect on the bound is at most ``|y_r|`` times a few ulps of
the row's magnitude, i.e. a tiny fraction of the terms already summed.  As everywhere in
:mod:`encoders.bounds`, the network is the float64 IR evaluated in exact arithmetic; the twin bounds
recomputed from these bounds add their own rounding margins (:func:`~encoders.bounds.twin.twin_bounds`).
The value is therefore a rigorous lower bound of
``min_P φ`` whatever the solver did; a poor dual only makes it weaker.  When the LP is reported
infeasible we do not use it (no bound is claimed).

Optimisation-based bound tightening (OBBT) then takes, layer by layer, the sound minima and maxima of
``z_a,i``, ``z_b,i`` and ``z_a,i − z_b,i`` over ``P`` and intersects them with the current bounds;
the next layer's LP uses the tightened triangles.  Each step keeps every bound valid over ``V``.
"""

from __future__ import annotations

import time
from collections.abc import Callable, Sequence
from dataclasses import dataclass, field
from typing import Any

import numpy as np

from .. import relaxations as rx
from ..network import Network
from .crown import crown_bounds
from .twin import TwinBounds, twin_bounds

__all__ = [
    "PairBounds",
    "PairLP",
    "initial_pair_bounds",
    "tighten_pair",
    "sound_lp_lower",
    "cross_copy_bounds",
    "cross_copy_box",
    "swap_copies",
]

_REL = 1e-9


@dataclass(frozen=True, eq=False)
class PairBounds:
    """Per-copy bounds of every affine layer and the difference bounds, valid over a set of pairs.

    ``lower_a[k] ≤ z_k(x) ≤ upper_a[k]``, ``lower_b[k] ≤ z_k(x') ≤ upper_b[k]`` and
    ``dlower[k] ≤ z_k(x) − z_k(x') ≤ dupper[k]`` (last entry = the outputs); ``twin`` is the
    :class:`TwinBounds` built from them (its relaxations are the ones the LP and the MILP use).
    """

    lower_a: tuple[np.ndarray, ...]
    upper_a: tuple[np.ndarray, ...]
    lower_b: tuple[np.ndarray, ...]
    upper_b: tuple[np.ndarray, ...]
    twin: TwinBounds
    stats: dict = field(default_factory=dict)

    def n_unstable(self) -> tuple[int, int]:
        """Unstable hidden neurons of copy a and of copy b."""
        ua = sum(int(np.sum((lo < 0) & (up > 0))) for lo, up in zip(self.lower_a[:-1], self.upper_a[:-1]))
        ub = sum(int(np.sum((lo < 0) & (up > 0))) for lo, up in zip(self.lower_b[:-1], self.upper_b[:-1]))
        return ua, ub


def _with_twin(
    net: Network,
    lo: np.ndarray,
    hi: np.ndarray,
    delta: float,
    la: Sequence[np.ndarray],
    ua: Sequence[np.ndarray],
    lb: Sequence[np.ndarray],
    ub: Sequence[np.ndarray],
    diff: tuple[Sequence[np.ndarray], Sequence[np.ndarray]] | None,
    stats: dict | None = None,
) -> PairBounds:
    tb = twin_bounds(net, lo, hi, delta, "inf", (list(la), list(ua)), (list(lb), list(ub)), diff=diff)
    return PairBounds(tuple(la), tuple(ua), tuple(lb), tuple(ub), tb, dict(stats or {}))


def _down(v: np.ndarray) -> np.ndarray:
    return np.nextafter(v, -np.inf)


def _up(v: np.ndarray) -> np.ndarray:
    return np.nextafter(v, np.inf)


def cross_copy_bounds(
    la: Sequence[np.ndarray],
    ua: Sequence[np.ndarray],
    lb: Sequence[np.ndarray],
    ub: Sequence[np.ndarray],
    dl: Sequence[np.ndarray],
    du: Sequence[np.ndarray],
) -> tuple[list[np.ndarray], list[np.ndarray], list[np.ndarray], list[np.ndarray]]:
    r"""Each copy's bounds from the other copy's and the difference bounds, intersected with its own.

    For every affine layer ``k`` and every pair of interest, ``z_b = z_a − Δz`` with
    ``z_a ∈ [l_a, u_a]`` and ``Δz = z_a − z_b ∈ [dl, du]``, hence

        l_a − du ≤ z_b ≤ u_a − dl,        l_b + dl ≤ z_a ≤ u_b + du,

    and each copy's bounds become the intersection with these.  Used after the LP tightens one copy
    (e.g. copy a under the confidence rows, where it is thin) to carry the gain to the other copy
    without its own LPs.  The sums are computed in float64 and each rounded *outward* by one ulp
    (``nextafter``): a correctly rounded sum or difference is within half an ulp of the exact one, so
    the widened value is an over-approximation of the exact interval.  The bounds are valid over
    whatever set of pairs all inputs are valid over (e.g. the violating pairs of one ``(c, j)``).
    Returns ``(la, ua, lb, ub)`` (new arrays; an empty intersection ``l > u`` is kept as it is: it
    means that no pair of interest exists, which the caller must not claim unless it proves it).
    """
    out_la, out_ua, out_lb, out_ub = [], [], [], []
    for k in range(len(la)):
        a_l, a_u = np.asarray(la[k], float), np.asarray(ua[k], float)
        b_l, b_u = np.asarray(lb[k], float), np.asarray(ub[k], float)
        d_l, d_u = np.asarray(dl[k], float), np.asarray(du[k], float)
        with np.errstate(invalid="ignore"):
            nb_l = np.maximum(b_l, np.nan_to_num(_down(a_l - d_u), nan=-np.inf))
            nb_u = np.minimum(b_u, np.nan_to_num(_up(a_u - d_l), nan=np.inf))
            na_l = np.maximum(a_l, np.nan_to_num(_down(b_l + d_l), nan=-np.inf))
            na_u = np.minimum(a_u, np.nan_to_num(_up(b_u + d_u), nan=np.inf))
        out_la.append(na_l)
        out_ua.append(na_u)
        out_lb.append(nb_l)
        out_ub.append(nb_u)
    return out_la, out_ua, out_lb, out_ub


def cross_copy_box(
    lo_a: np.ndarray, hi_a: np.ndarray, delta: float, lo: np.ndarray, hi: np.ndarray
) -> tuple[np.ndarray, np.ndarray]:
    r"""Copy b's input box when copy a ranges over ``[lo_a, hi_a]`` (L∞, radius ``δ``, domain ``[lo, hi]``).

    ``x' ∈ [lo_a − δ, hi_a + δ] ∩ [lo, hi]``, the sums rounded outward by one ulp (a superset of the
    exact box).  Splitting copy a's domain thus shrinks copy b's box with it.
    """
    lo_a, hi_a = np.asarray(lo_a, float), np.asarray(hi_a, float)
    return (
        np.maximum(np.asarray(lo, float), _down(lo_a - delta)),
        np.minimum(np.asarray(hi, float), _up(hi_a + delta)),
    )


def initial_pair_bounds(net: Network, lo: np.ndarray, hi: np.ndarray, delta: float) -> PairBounds:
    """CROWN over ``[lo, hi]`` for both copies and the twin-network difference bounds (L∞)."""
    cb = crown_bounds(net, lo, hi)
    low, up = list(cb.lower), list(cb.upper)
    return _with_twin(net, lo, hi, delta, low, up, low, up, None)


def swap_copies(net: Network, pb: PairBounds, lo: np.ndarray, hi: np.ndarray, delta: float) -> PairBounds:
    """``pb`` with the copies exchanged: bounds valid over a set of pairs ``(x, x')`` become bounds valid
    over the pairs ``(x', x)`` — copy a's and copy b's bounds trade places and every difference bound
    is negated and reversed (exact in floating point); the twin relaxations are rebuilt from them.
    The domain and δ are symmetric, so the exchanged pairs satisfy the same coupling."""
    dl = [-np.asarray(d, float) for d in pb.twin.dupper]
    du = [-np.asarray(d, float) for d in pb.twin.dlower]
    return _with_twin(net, lo, hi, delta, pb.lower_b, pb.upper_b, pb.lower_a, pb.upper_a, (dl, du), pb.stats)


def _csr(rows: Sequence[tuple[np.ndarray, np.ndarray]], n_cols: int) -> Any:
    """The rows ``(column indices, coefficients)`` as a SciPy CSR matrix (duplicate entries summed)."""
    import scipy.sparse as sp

    starts = np.zeros(len(rows) + 1, dtype=np.int64)
    starts[1:] = np.cumsum([r[0].size for r in rows])
    index = np.concatenate([r[0] for r in rows]) if rows else np.zeros(0, np.int64)
    value = np.concatenate([r[1] for r in rows]) if rows else np.zeros(0)
    A = sp.csr_matrix((value, index, starts), shape=(len(rows), n_cols))
    A.sum_duplicates()
    return A


def sound_lp_lower(
    c: np.ndarray,
    A_rows: Any,
    row_lo: np.ndarray,
    row_hi: np.ndarray,
    col_lo: np.ndarray,
    col_hi: np.ndarray,
    y: np.ndarray,
) -> float:
    """The weak-duality bound of the module docstring: ``min cᵀv`` over the LP is at least this.

    ``A_rows``: a SciPy sparse matrix, or a list of rows ``(column indices, coefficients)``; ``y`` are
    any multipliers (one per row).
    """
    y = np.asarray(y, dtype=np.float64).copy()
    y[~np.isfinite(y)] = 0.0
    y[(y > 0) & ~np.isfinite(row_lo)] = 0.0
    y[(y < 0) & ~np.isfinite(row_hi)] = 0.0
    A = A_rows if hasattr(A_rows, "T") else _csr(A_rows, np.asarray(c).size)
    d = np.asarray(c, dtype=np.float64) - A.T @ y
    rlo = np.where(np.isfinite(row_lo), row_lo, 0.0)
    rhi = np.where(np.isfinite(row_hi), row_hi, 0.0)
    rterm = np.where(y > 0, y * rlo, y * rhi)
    with np.errstate(invalid="ignore"):
        cterm = np.minimum(d * col_lo, d * col_hi)
    cterm = np.where(d == 0.0, 0.0, cterm)
    if not np.all(np.isfinite(cterm)):
        return -np.inf
    # the rounding of d = c − Aᵀy itself: |d̂_i − d_i| ≤ γ (|c_i| + (|A|ᵀ|y|)_i), which multiplies
    # max(|l_i|, |u_i|); a cancellation in d can make this larger than the terms summed above
    dmag = np.abs(np.asarray(c, dtype=np.float64)) + abs(A).T @ np.abs(y)
    colmag = np.maximum(np.abs(col_lo), np.abs(col_hi))
    busy = dmag > 0
    if not np.all(np.isfinite(colmag[busy])):
        return -np.inf  # an unbounded column: d_i = 0 is not certain in floating point
    dterm = float(np.sum(dmag[busy] * colmag[busy]))
    total = float(np.sum(rterm) + np.sum(cterm))
    scale = float(np.sum(np.abs(rterm)) + np.sum(np.abs(cterm))) + dterm
    return total - _REL * (1.0 + scale)


class PairLP:
    """The LP relaxation ``P`` of the module docstring for given bounds, on HiGHS (warm-started).

    ``target``: the competitor ``j`` of the flip row (``None``: no flip row).  ``couple`` (with a
    ``target``): the rows (R) of the module docstring instead of the property rows of (V).
    """

    def __init__(
        self,
        net: Network,
        pb: PairBounds,
        xa: tuple[np.ndarray, np.ndarray],
        xb: tuple[np.ndarray, np.ndarray],
        delta: float,
        c: int,
        kappa: float,
        target: int | None,
        extra_tangents: Sequence[np.ndarray] = (),
        confidence: bool = True,
        couple: bool = False,
    ) -> None:
        import highspy

        if couple and target is None:
            raise ValueError("PairLP: a couple needs its competitor (target)")

        self.net = net
        aff = net.affines
        L = len(aff) - 1
        n0 = net.n_inputs
        self.cols_lo: list[np.ndarray] = []
        self.cols_hi: list[np.ndarray] = []
        rows: list[tuple[np.ndarray, np.ndarray]] = []
        rlo: list[float] = []
        rhi: list[float] = []
        ncol = 0

        def cols(lo_: np.ndarray, hi_: np.ndarray) -> np.ndarray:
            nonlocal ncol
            idx = np.arange(ncol, ncol + lo_.size)
            ncol += lo_.size
            self.cols_lo.append(np.asarray(lo_, float))
            self.cols_hi.append(np.asarray(hi_, float))
            return idx

        def row(
            idx: Sequence[int] | np.ndarray, coef: Sequence[float] | np.ndarray, lo_: float, hi_: float
        ) -> None:
            rows.append((np.asarray(idx, dtype=np.int64), np.asarray(coef, dtype=np.float64)))
            rlo.append(float(lo_))
            rhi.append(float(hi_))

        inf = np.inf
        self.xa = cols(*xa)
        self.xb = cols(*xb)
        for i in range(n0):
            row([self.xa[i], self.xb[i]], [1.0, -1.0], -delta, delta)
        tb = pb.twin
        prev = {"a": self.xa, "b": self.xb}
        self.z: dict[str, list[np.ndarray]] = {"a": [], "b": []}
        self.h: dict[str, list[np.ndarray]] = {"a": [], "b": []}
        bounds = {"a": (pb.lower_a, pb.upper_a), "b": (pb.lower_b, pb.upper_b)}
        for k in range(L):
            W, b = aff[k].W, aff[k].b
            for s in ("a", "b"):
                lo_k = np.asarray(bounds[s][0][k], float)
                hi_k = np.asarray(bounds[s][1][k], float)
                z = cols(lo_k, hi_k)
                h = cols(np.maximum(lo_k, 0.0), np.maximum(hi_k, 0.0))
                for i in range(W.shape[0]):
                    row(np.concatenate([[z[i]], prev[s]]), np.concatenate([[1.0], -W[i]]), b[i], b[i])
                for i in range(W.shape[0]):
                    li, ui = lo_k[i], hi_k[i]
                    if li >= 0.0:
                        row([h[i], z[i]], [1.0, -1.0], 0.0, 0.0)
                    elif ui <= 0.0:
                        pass  # h ∈ [0, 0] by its column bounds
                    else:
                        row([h[i], z[i]], [1.0, -1.0], 0.0, inf)
                        sl = ui / (ui - li)
                        row([h[i], z[i]], [1.0, -sl], -inf, -sl * li)
                self.z[s].append(z)
                self.h[s].append(h)
                prev[s] = h
            za, zb, ha, hb = self.z["a"][k], self.z["b"][k], self.h["a"][k], self.h["b"][k]
            r = tb.relax[k]
            for i in range(W.shape[0]):
                row([za[i], zb[i]], [1.0, -1.0], tb.dlower[k][i], tb.dupper[k][i])
                row([ha[i], hb[i]], [1.0, -1.0], r.hl[i], r.hu[i])
                row([ha[i], hb[i], za[i], zb[i]], [1.0, -1.0, -r.s_up[i], r.s_up[i]], -inf, r.t_up[i])
                row([ha[i], hb[i], za[i], zb[i]], [1.0, -1.0, -r.s_lo[i], r.s_lo[i]], r.t_lo[i], inf)
        W, b = aff[L].W, aff[L].b
        self.y: dict[str, np.ndarray] = {}
        for s in ("a", "b"):
            lo_k = np.asarray(bounds[s][0][L], float)
            hi_k = np.asarray(bounds[s][1][L], float)
            y = cols(lo_k, hi_k)
            for i in range(W.shape[0]):
                row(np.concatenate([[y[i]], prev[s]]), np.concatenate([[1.0], -W[i]]), b[i], b[i])
            self.y[s] = y
        ya, yb = self.y["a"], self.y["b"]
        for i in range(W.shape[0]):
            row([ya[i], yb[i]], [1.0, -1.0], tb.dlower[L][i], tb.dupper[L][i])
        # property rows (V)
        n = W.shape[0]
        others = [k for k in range(n) if k != c]
        m = rx.confidence_margin(kappa)
        if couple and target is not None:  # (R): u(x) ≥ 0, u(x') ≤ 0, u(x) − u(x') ≥ m, u = z_c − z_j
            j = target
            row([ya[c], ya[j]], [1.0, -1.0], 0.0, inf)
            row([yb[c], yb[j]], [1.0, -1.0], -inf, 0.0)
            row([ya[c], ya[j], yb[c], yb[j]], [1.0, -1.0, -1.0, 1.0], m, inf)
        else:
            for k in others if confidence else ():
                row([ya[c], ya[k]], [1.0, -1.0], m, inf)
            if n > 2 and confidence:
                pts = list(rx.initial_tangent_points(n - 1, kappa)) + [np.asarray(p) for p in extra_tangents]
                for dhat in pts:
                    coef_d, rhs = rx.tangent_cut(np.asarray(dhat), kappa)
                    coef = list(coef_d) + [-float(np.sum(coef_d))]
                    row([ya[k] for k in others] + [ya[c]], coef, -inf, rhs)
            if target is not None:
                row([yb[target], yb[c]], [1.0, -1.0], 0.0, inf)
        self.n_cols = ncol
        self.rows = rows
        self.A = _csr(rows, ncol)
        self.row_lo = np.array(rlo)
        self.row_hi = np.array(rhi)
        self.col_lo = np.concatenate(self.cols_lo)
        self.col_hi = np.concatenate(self.cols_hi)
        # CSR for HiGHS
        starts = np.zeros(len(rows) + 1, dtype=np.int64)
        starts[1:] = np.cumsum([r[0].size for r in rows])
        index = np.concatenate([r[0] for r in rows]).astype(np.int32)
        value = np.concatenate([r[1] for r in rows])
        hs = highspy.Highs()
        hs.setOptionValue("output_flag", False)
        hs.setOptionValue("presolve", "off")
        hs.setOptionValue("solver", "simplex")
        hs.setOptionValue("simplex_strategy", 4)  # primal: after a cost change the basis stays feasible
        hinf = highspy.kHighsInf
        hs.addVars(ncol, np.maximum(self.col_lo, -hinf), np.minimum(self.col_hi, hinf))
        hs.addRows(
            len(rows),
            np.maximum(self.row_lo, -hinf),
            np.minimum(self.row_hi, hinf),
            index.size,
            starts[:-1].astype(np.int32),
            index,
            value,
        )
        self.hs = hs
        self.infeasible = False
        self.n_solves = 0
        self.last_primal: np.ndarray | None = None  # the LP optimum of the last solve (a search start)

    def lower(self, cost: dict[int, float]) -> float:
        """A sound lower bound of ``Σ cost[i]·v_i`` over the LP (``+inf`` when the LP is infeasible and
        HiGHS proves it — used only as "no point", see :meth:`min_max`; ``-inf`` when nothing is known)."""
        import highspy

        c = np.zeros(self.n_cols)
        for i, v in cost.items():
            c[i] += v
        self.hs.changeColsCost(self.n_cols, np.arange(self.n_cols, dtype=np.int32), c)
        self.hs.run()
        self.n_solves += 1
        st = self.hs.getModelStatus()
        if st == highspy.HighsModelStatus.kInfeasible:
            self.infeasible = True
            return -np.inf
        if st != highspy.HighsModelStatus.kOptimal:
            return -np.inf
        sol = self.hs.getSolution()
        self.last_primal = np.asarray(sol.col_value, dtype=np.float64)
        y = np.asarray(sol.row_dual, dtype=np.float64)
        return sound_lp_lower(c, self.A, self.row_lo, self.row_hi, self.col_lo, self.col_hi, y)

    def min_max(self, cost: dict[int, float]) -> tuple[float, float]:
        """Sound ``(min, max)`` of ``Σ cost·v`` over the LP."""
        lo = self.lower(cost)
        hi = -self.lower({i: -v for i, v in cost.items()})
        return lo, hi


def tighten_pair(
    net: Network,
    pb: PairBounds,
    lo: np.ndarray,
    hi: np.ndarray,
    delta: float,
    c: int,
    kappa: float,
    target: int | None,
    deadline: float,
    layers: Sequence[int] | None = None,
    per_copy: bool = True,
    confidence: bool = True,
    goal: Callable[[PairBounds], bool] | None = None,
    chunk: int = 8,
    copies: tuple[str, ...] = ("a", "b"),
    diffs: bool = True,
    couple: bool = False,
) -> PairBounds:
    """OBBT over the LP relaxation ``P`` of the violating pairs (module docstring), layer by layer.

    For every hidden layer ``k`` (in order): the sound min/max over ``P`` of ``Δz_i`` (neurons whose
    difference relaxation is not exact) and, with ``per_copy``, of ``z_a,i`` and ``z_b,i`` (unstable
    neurons), intersected with the current bounds; the twin bounds of the deeper layers are then
    recomputed from the tightened bounds (:func:`encoders.bounds.twin.twin_bounds` with ``diff``).
    Neurons go in order of their weight in the pair's margin ``z_c − z_j`` times their difference
    width; every ``chunk`` neurons the bounds are rebuilt and ``goal(bounds)`` asked — ``True`` stops
    (e.g. "the twin bound now proves the pair").  Stops early (returning the bounds it has, all valid)
    at ``deadline`` (``time.perf_counter()``).

    ``couple``: the LP of the couple ``(c, target)``/``(target, c)`` (rows (R)); the bounds returned hold
    for ``(c, target)``, and :func:`swap_copies` of them for ``(target, c)``.

    ``copies`` restricts the per-copy tightening to some copies (e.g. ``("a",)``: copy a is the thin
    one under the confidence rows); ``diffs=False`` skips the difference LPs (except at layer 0).
    After each layer both copies' bounds are also intersected with :func:`cross_copy_bounds`.
    """
    L = len(net.affines) - 1
    aff = net.affines
    la, ua = [a.copy() for a in pb.lower_a], [a.copy() for a in pb.upper_a]
    lb, ub = [a.copy() for a in pb.lower_b], [a.copy() for a in pb.upper_b]
    dl, du = [a.copy() for a in pb.twin.dlower], [a.copy() for a in pb.twin.dupper]
    stats = dict(pb.stats)
    stats.setdefault("lp_solves", 0)
    cur = pb
    box = (np.asarray(lo, float), np.asarray(hi, float))
    # influence of each hidden neuron on the margin (crude magnitude back-propagation)
    if target is not None:
        w = np.abs(aff[L].W[c] - aff[L].W[target])
    else:
        w = np.abs(aff[L].W).sum(axis=0)
    influence = [np.zeros(0)] * L
    for k in range(L - 1, -1, -1):
        influence[k] = w
        w = np.abs(aff[k].W).T @ w

    def rebuild(k: int) -> PairBounds:
        xla, xua, xlb, xub = cross_copy_bounds(la, ua, lb, ub, dl, du)
        la[k], ua[k], lb[k], ub[k] = xla[k], xua[k], xlb[k], xub[k]
        for arr_l, arr_u in ((la, ua), (lb, ub), (dl, du)):
            arr_l[k] = np.minimum(arr_l[k], arr_u[k])  # (a crossing only means "no pair"; not claimed)
        return _with_twin(net, lo, hi, delta, la, ua, lb, ub, (dl, du), stats)

    for k in layers if layers is not None else range(L):
        if time.perf_counter() > deadline:
            break
        lp = PairLP(net, cur, box, box, delta, c, kappa, target, confidence=confidence, couple=couple)
        za, zb = lp.z["a"][k], lp.z["b"][k]
        order = np.argsort(-(influence[k] * (du[k] - dl[k])), kind="stable")
        done = False
        for n_done, i in enumerate(order, start=1):
            if time.perf_counter() > deadline:
                break
            if per_copy and "a" in copies and la[k][i] < 0 < ua[k][i]:
                lo_, hi_ = lp.min_max({int(za[i]): 1.0})
                la[k][i], ua[k][i] = max(la[k][i], lo_), min(ua[k][i], hi_)
            if per_copy and "b" in copies and lb[k][i] < 0 < ub[k][i]:
                lo_, hi_ = lp.min_max({int(zb[i]): 1.0})
                lb[k][i], ub[k][i] = max(lb[k][i], lo_), min(ub[k][i], hi_)
            both_active = la[k][i] >= 0 and lb[k][i] >= 0
            both_inactive = ua[k][i] <= 0 and ub[k][i] <= 0
            if (diffs and not (both_inactive or both_active)) or k == 0:
                lo_, hi_ = lp.min_max({int(za[i]): 1.0, int(zb[i]): -1.0})
                dl[k][i], du[k][i] = max(dl[k][i], lo_), min(du[k][i], hi_)
            if lp.infeasible:
                break
            if goal is not None and n_done % chunk == 0 and n_done < order.size:
                trial = rebuild(k)
                if goal(trial):
                    cur, done = trial, True
                    break
        stats["lp_solves"] = stats.get("lp_solves", 0) + lp.n_solves
        if lp.infeasible:
            stats["lp_infeasible"] = True
        if done:
            break
        cur = rebuild(k)
        dl = [a.copy() for a in cur.twin.dlower]
        du = [a.copy() for a in cur.twin.dupper]
        if goal is not None and goal(cur):
            break
    cur.stats["lp_solves"] = stats["lp_solves"]
    return cur
