"""An independent ground-truth oracle for tiny ReLU networks.

It decides robustness properties *exactly* (up to LP tolerances, which the margin policy absorbs) by
enumerating the activation patterns a network can take over the input region, and it shares no code
with the verifier: it imports nothing from ``encoders`` or ``verifier`` — it works on plain lists of
NumPy weights ``[(W1, b1), …, (Wk, bk)]`` (``W`` of shape ``(out, in)``, a ReLU between consecutive
layers) — and uses only :func:`scipy.optimize.linprog` plus closed-form geometry.

Method (activation regions)
---------------------------
Let the LP variable be ``v ∈ ℝ^d`` with box bounds ``lo <= v <= hi`` and extra rows ``A0 v <= b0``.
Each network ``N_k`` reads the input ``x_k = E_k v + e_k`` (one network: ``E = I``; two copies of one
network for the global property: ``x = [I 0] v``, ``x' = [0 I] v``).  A hidden neuron's
pre-activation is affine in ``v`` once the phases of all earlier neurons are fixed:
``z_i(v) = g_i · v + g0_i``.  Fixing its phase adds one half-space,

* active   ``z_i >= 0``  i.e. ``−g_i · v <= g0_i``,  and then ``h_i = z_i``;
* inactive ``z_i <= 0``  i.e. ``g_i · v <= −g0_i``,   and then ``h_i = 0``.

A depth-first search fixes the neurons one at a time (all neurons of ``N_1``, then of ``N_2``) and
prunes a branch as soon as its polytope is empty (one LP; skipped when the parent's witness point
already satisfies the new half-space).  Every leaf is a *piece*: a non-empty polytope ``P`` on which
every network is affine, ``y_k = F_k v + f_k``.  The closed pieces cover the whole region (every
point has some phase pattern; a neuron at exactly 0 fits both), so

    sup_{v ∈ region} φ(v)  =  max_pieces  sup_{v ∈ P} φ(v).

Decision by slack LPs
---------------------
Every property here has the form "violated iff ∃ v in the region with ``G(v) >= 0`` row-wise" for
rows ``G(v) = Gv + g`` that are affine on a piece.  On each piece we solve

    t*(P) = max t   s.t.  v ∈ P,  G v + g >= t  (every row),  t <= T_CAP,

and the oracle's *value* is ``max_P t*(P)`` (over pieces and over the alternatives of a
disjunction).  The property is **violated iff value >= 0** and holds iff value < 0.  ``value`` is
measured in output units; an oracle answer is *robust* when ``|value| >= margin`` (see
:meth:`Truth.robust`); generators discard (regenerate) non-robust cases, so a correct verifier must
agree with the oracle whatever its float tolerances (solver feasibility 1e-6…1e-9, float32
onnxruntime replay) as long as they are far below the margin.

* L∞ local robustness at ``x0`` with label ``c``: region ``[x0 − ε, x0 + ε] ∩ D``; alternatives
  ``j ≠ c`` with the single row ``y_j − y_c`` (ties count as violations).
* VNN-LIB box + output DNF ``⋁_k A_k y <= b_k``: alternative ``k`` has rows ``b_k − A_k y``.
* Global two-copy κ-robustness of a 2-class network for class ``c`` (L∞ coupling): variables
  ``v = (x, x')`` over ``D × D`` with ``|x_i − x'_i| <= δ``; rows
  ``(z_c(x) − z_j(x)) − ln(κ/(1−κ))`` (κ-confidence of class ``c`` at ``x``, exact for two classes:
  ``softmax_c(z) >= κ ⟺ z_c − z_j >= ln(κ/(1−κ))``; for κ > 1/2 it also makes ``c`` the argmax) and
  ``z_j(x') − z_c(x')`` (misclassified at ``x'``).
* L2 local robustness (two inputs only): on each piece, ``max_{x ∈ P ∩ B_2(x0, ε)} (y_j − y_c)`` is a
  linear objective over a convex 2-D set; its maximum is attained at one of finitely many candidate
  points — a vertex of ``P`` inside the disc, a point where an edge line of ``P`` meets the circle, or
  the circle point ``x0 + ε ĝ`` in the gradient direction (KKT: at the optimum, 0, 1 or 2 constraints
  of ``P`` are active besides, or instead of, the circle) — so enumerating and filtering the candidates
  is exact.  ``value`` is then the largest ``y_j − y_c`` (not a slack over several rows).
"""

from __future__ import annotations

import itertools
import math
from collections.abc import Sequence
from dataclasses import dataclass

import numpy as np
from scipy.optimize import linprog

__all__ = [
    "Weights",
    "OracleError",
    "Piece",
    "Truth",
    "MARGIN",
    "random_weights",
    "evaluate",
    "pieces",
    "local_linf",
    "local_l2",
    "output_dnf",
    "global_two_class",
    "disagreement",
]

Weights = Sequence[tuple[np.ndarray, np.ndarray]]
Arr = np.ndarray
LPResult = tuple[float, np.ndarray] | None

#: Default robustness margin (output units) for generated cases; see the module docstring.
MARGIN = 1e-3
#: Upper cap on the slack variable, so that every slack LP is bounded.
T_CAP = 1e3
#: Tolerance used when checking a closed-form candidate against a polytope or a disc.
GEOM_TOL = 1e-9


class OracleError(RuntimeError):
    """An LP of the oracle did not solve (never expected; a test must not silently pass)."""


@dataclass(frozen=True)
class Piece:
    """A non-empty polytope ``{v : A v <= b, lo <= v <= hi}`` on which network ``k`` is
    ``y_k = F[k] @ v + f[k]``; ``witness`` is a point of it."""

    A: np.ndarray
    b: np.ndarray
    F: tuple[np.ndarray, ...]
    f: tuple[np.ndarray, ...]
    witness: np.ndarray
    pattern: tuple[tuple[bool, ...], ...]


@dataclass(frozen=True)
class Truth:
    """The oracle's answer: ``violated`` iff ``value >= 0``; ``witness`` attains ``value``."""

    value: float
    witness: np.ndarray | None
    n_pieces: int

    @property
    def violated(self) -> bool:
        return self.value >= 0.0

    @property
    def holds(self) -> bool:
        return not self.violated

    def robust(self, margin: float = MARGIN) -> bool:
        return abs(self.value) >= margin


# ------------------------------------------------------------------------------------------------
# networks
# ------------------------------------------------------------------------------------------------
def random_weights(rng: np.random.Generator, sizes: Sequence[int], scale: float = 1.0,
                   bias_scale: float = 0.5) -> list[tuple[np.ndarray, np.ndarray]]:
    """He-style random weights for layer sizes ``[n_in, h1, …, n_out]``, rounded to float32 values
    (so the float32 ONNX file holds exactly the same numbers), returned as float64."""
    out = []
    for n, m in zip(sizes[:-1], sizes[1:], strict=False):
        W = rng.normal(0.0, scale * math.sqrt(2.0 / n), (m, n)).astype(np.float32).astype(np.float64)
        b = rng.normal(0.0, bias_scale, m).astype(np.float32).astype(np.float64)
        out.append((W, b))
    return out


def evaluate(weights: Weights, x: np.ndarray) -> np.ndarray:
    """Float64 forward pass on ``(n,)`` or ``(batch, n)`` inputs."""
    h = np.atleast_2d(np.asarray(x, dtype=np.float64))
    for i, (W, b) in enumerate(weights):
        h = h @ np.asarray(W).T + np.asarray(b)
        if i < len(weights) - 1:
            h = np.maximum(h, 0.0)
    return h[0] if np.ndim(x) == 1 else h


# ------------------------------------------------------------------------------------------------
# LPs
# ------------------------------------------------------------------------------------------------
def _lp_scipy(c: Arr, A: Arr, b: Arr, lo: Arr, hi: Arr) -> LPResult:
    res = linprog(c, A_ub=A if A.size else None, b_ub=b if A.size else None,
                  bounds=list(zip(lo, hi, strict=True)), method="highs")
    if res.status == 2:
        return None
    if res.status != 0:
        raise OracleError(f"linprog failed: status {res.status}, {res.message}")
    return float(res.fun), np.asarray(res.x, dtype=np.float64)


def _lp_highspy(c: Arr, A: Arr, b: Arr, lo: Arr, hi: Arr) -> LPResult:
    """The same LP through HiGHS' own Python API: ~20x less overhead than ``linprog`` (which calls HiGHS
    too).  Dense column-wise matrix, no presolve, one thread."""
    import highspy

    h = _HIGHS.get("h")
    if h is None:
        h = highspy.Highs()
        h.setOptionValue("output_flag", False)
        h.setOptionValue("presolve", "off")
        h.setOptionValue("threads", 1)
        _HIGHS["h"] = h
    n, m = c.size, A.shape[0]
    lp = highspy.HighsLp()
    lp.num_col_, lp.num_row_ = n, m
    inf = highspy.kHighsInf
    lp.col_cost_ = np.asarray(c, dtype=np.float64)
    lp.col_lower_ = np.where(np.isfinite(lo), lo, -inf).astype(np.float64)
    lp.col_upper_ = np.where(np.isfinite(hi), hi, inf).astype(np.float64)
    lp.row_lower_ = np.full(m, -inf)
    lp.row_upper_ = np.asarray(b, dtype=np.float64)
    At = np.asarray(A, dtype=np.float64).T  # column-wise = rows of A transposed
    lp.a_matrix_.format_ = highspy.MatrixFormat.kColwise
    lp.a_matrix_.start_ = (np.arange(n + 1) * m).astype(np.int32)
    lp.a_matrix_.index_ = np.tile(np.arange(m, dtype=np.int32), n)
    lp.a_matrix_.value_ = At.reshape(-1)
    h.clearModel()
    h.passModel(lp)
    h.run()
    st = h.getModelStatus()
    if st == highspy.HighsModelStatus.kInfeasible:
        return None
    if st != highspy.HighsModelStatus.kOptimal:  # retry once through scipy before giving up
        return _lp_scipy(c, A, b, lo, hi)
    x = np.asarray(h.getSolution().col_value, dtype=np.float64)
    return float(c @ x), x


_HIGHS: dict[str, object] = {}


def _lp(c: Arr, A: Arr, b: Arr, lo: Arr, hi: Arr) -> LPResult:
    """``min c·v`` s.t. ``A v <= b``, ``lo <= v <= hi``; None when infeasible."""
    try:
        import highspy  # noqa: F401
    except ImportError:
        return _lp_scipy(c, A, b, lo, hi)
    return _lp_highspy(c, A, b, lo, hi)


def _feasible_point(A: np.ndarray, b: np.ndarray, lo: np.ndarray, hi: np.ndarray) -> np.ndarray | None:
    out = _lp(np.zeros(lo.size), A, b, lo, hi)
    return None if out is None else out[1]


def _max_slack(piece: Piece, G: Arr, g: Arr, lo: Arr, hi: Arr) -> tuple[float, Arr]:
    """``max t`` s.t. ``v ∈ piece``, ``G v + g >= t`` row-wise, ``t <= T_CAP``; returns ``(t*, v*)``."""
    d = lo.size
    k = G.shape[0]
    A = np.vstack([np.hstack([piece.A, np.zeros((piece.A.shape[0], 1))]),
                   np.hstack([-G, np.ones((k, 1))])])
    b = np.concatenate([piece.b, g])
    c = np.zeros(d + 1)
    c[-1] = -1.0
    vlo, vhi = np.append(lo, -np.inf), np.append(hi, T_CAP)
    out = _lp(c, A, b, vlo, vhi)
    if out is None:  # the piece was found non-empty; tolerances can make this LP disagree marginally
        out = _lp(c, A, b + 1e-9, vlo, vhi)
        if out is None:
            raise OracleError("slack LP infeasible on a non-empty piece")
    return -out[0], out[1][:d]


# ------------------------------------------------------------------------------------------------
# activation regions
# ------------------------------------------------------------------------------------------------
def pieces(nets: Sequence[tuple[Weights, np.ndarray, np.ndarray]], lo: np.ndarray, hi: np.ndarray,
           A0: np.ndarray | None = None, b0: np.ndarray | None = None,
           max_pieces: int = 200_000) -> list[Piece]:
    """All non-empty activation regions of the networks ``nets = [(weights, E, e), …]`` (network
    ``k`` reads ``E v + e``) over ``{lo <= v <= hi, A0 v <= b0}``; see the module docstring."""
    lo = np.asarray(lo, dtype=np.float64)
    hi = np.asarray(hi, dtype=np.float64)
    d = lo.size
    A_init = np.zeros((0, d)) if A0 is None else np.asarray(A0, dtype=np.float64).reshape(-1, d)
    b_init = np.zeros(0) if b0 is None else np.asarray(b0, dtype=np.float64).reshape(-1)
    w0 = _feasible_point(A_init, b_init, lo, hi)
    out: list[Piece] = []
    if w0 is None:
        return out

    def run_net(k: int, rows: list[np.ndarray], rhs: list[float], w: np.ndarray,
                Fs: tuple, fs: tuple, pats: tuple) -> None:
        if k == len(nets):
            A = np.vstack([A_init, np.asarray(rows, dtype=np.float64).reshape(-1, d)])
            out.append(Piece(A, np.concatenate([b_init, np.asarray(rhs, dtype=np.float64)]), Fs, fs, w, pats))
            if len(out) > max_pieces:
                raise OracleError(f"more than {max_pieces} pieces: the network is too large for the oracle")
            return
        weights, E, e = nets[k]
        layer(k, weights, 0, np.asarray(E, float), np.asarray(e, float), rows, rhs, w, Fs, fs, pats, ())

    def layer(k: int, weights: Weights, li: int, H: np.ndarray, h0: np.ndarray, rows: list, rhs: list,
              w: np.ndarray, Fs: tuple, fs: tuple, pats: tuple, pat: tuple) -> None:
        W, bias = (np.asarray(a, dtype=np.float64) for a in weights[li])
        Z, z0 = W @ H, W @ h0 + bias
        if li == len(weights) - 1:
            run_net(k + 1, rows, rhs, w, (*Fs, Z), (*fs, z0), (*pats, pat))
            return
        neuron(k, weights, li, Z, z0, 0, np.zeros(Z.shape[0], dtype=bool), rows, rhs, w, Fs, fs, pats, pat)

    def neuron(k: int, weights: Weights, li: int, Z: np.ndarray, z0: np.ndarray, i: int, mask: np.ndarray,
               rows: list, rhs: list, w: np.ndarray, Fs: tuple, fs: tuple, pats: tuple, pat: tuple) -> None:
        if i == Z.shape[0]:
            H = Z * mask[:, None]
            h0 = z0 * mask
            layer(k, weights, li + 1, H, h0, rows, rhs, w, Fs, fs, pats, pat + tuple(bool(m) for m in mask))
            return
        g, g0 = Z[i], z0[i]
        for active in (True, False):
            row, r = (-g, g0) if active else (g, -g0)  # row · v <= r
            if not np.any(row):
                if r < 0.0:
                    continue  # constant pre-activation of the wrong sign
                w_new = w
                new_rows, new_rhs = rows, rhs
            else:
                new_rows, new_rhs = [*rows, row], [*rhs, r]
                if float(row @ w) <= r:
                    w_new = w
                else:
                    A = np.vstack([A_init, np.asarray(new_rows).reshape(-1, d)])
                    bb = np.concatenate([b_init, np.asarray(new_rhs, dtype=np.float64)])
                    w_new = _feasible_point(A, bb, lo, hi)
                    if w_new is None:
                        continue
            m2 = mask.copy()
            m2[i] = active
            neuron(k, weights, li, Z, z0, i + 1, m2, new_rows, new_rhs, w_new, Fs, fs, pats, pat)

    run_net(0, [], [], w0, (), (), ())
    return out


def _single(weights: Weights, d: int) -> list[tuple[Weights, np.ndarray, np.ndarray]]:
    return [(weights, np.eye(d), np.zeros(d))]


def _decide(ps: list[Piece], alternatives: Sequence, lo: np.ndarray, hi: np.ndarray) -> Truth:
    """``max`` over pieces and alternatives of the slack LP; ``alternatives(piece) -> [(G, g), …]``."""
    best, arg = -math.inf, None
    for p in ps:
        for G, g in alternatives(p):
            t, v = _max_slack(p, G, g, lo, hi)
            if t > best:
                best, arg = t, v
    return Truth(best, arg, len(ps))


# ------------------------------------------------------------------------------------------------
# properties
# ------------------------------------------------------------------------------------------------
def _local_box(x0: np.ndarray, eps: float, dom_lo: np.ndarray | None, dom_hi: np.ndarray | None) -> tuple:
    lo, hi = x0 - eps, x0 + eps
    if dom_lo is not None:
        lo = np.maximum(lo, dom_lo)
    if dom_hi is not None:
        hi = np.minimum(hi, dom_hi)
    return lo, hi


def local_linf(weights: Weights, x0: np.ndarray, eps: float, label: int,
               dom_lo: np.ndarray | None = None, dom_hi: np.ndarray | None = None) -> Truth:
    """L∞ local robustness: value = ``max_{x ∈ box} max_{j≠c} (y_j − y_c)``."""
    x0 = np.asarray(x0, dtype=np.float64)
    lo, hi = _local_box(x0, eps, dom_lo, dom_hi)
    ps = pieces(_single(weights, x0.size), lo, hi)

    def alts(p: Piece) -> list:
        F, f = p.F[0], p.f[0]
        return [((F[j] - F[label])[None, :], np.array([f[j] - f[label]]))
                for j in range(F.shape[0]) if j != label]

    return _decide(ps, alts, lo, hi)


def output_dnf(weights: Weights, lo: np.ndarray, hi: np.ndarray,
               alternatives: Sequence[tuple[np.ndarray, np.ndarray]]) -> Truth:
    """Box + unsafe output DNF ``⋁_k A_k y <= b_k``: value = max slack ``min_r (b_k − A_k y)_r``."""
    lo, hi = np.asarray(lo, dtype=np.float64), np.asarray(hi, dtype=np.float64)
    ps = pieces(_single(weights, lo.size), lo, hi)

    def alts(p: Piece) -> list:
        F, f = p.F[0], p.f[0]
        return [(-np.asarray(A) @ F, np.asarray(b) - np.asarray(A) @ f) for A, b in alternatives]

    return _decide(ps, alts, lo, hi)


def global_two_class(weights: Weights, delta: float, kappa: float, dom_lo: np.ndarray, dom_hi: np.ndarray,
                     label: int) -> Truth:
    """Two-copy global κ-robustness of a 2-class network for class ``label`` (L∞ coupling)."""
    if not 0.5 < kappa < 1.0:
        raise ValueError("the exact two-class oracle needs 1/2 < kappa < 1 (confidence implies argmax)")
    dom_lo, dom_hi = np.asarray(dom_lo, dtype=np.float64), np.asarray(dom_hi, dtype=np.float64)
    n = dom_lo.size
    if np.asarray(weights[-1][0]).shape[0] != 2:
        raise ValueError("global_two_class needs a 2-output network")
    c, j = label, 1 - label
    m = math.log(kappa / (1.0 - kappa))
    I, Z = np.eye(n), np.zeros((n, n))
    nets = [(weights, np.hstack([I, Z]), np.zeros(n)), (weights, np.hstack([Z, I]), np.zeros(n))]
    A0 = np.vstack([np.hstack([I, -I]), np.hstack([-I, I])])
    b0 = np.full(2 * n, float(delta))
    lo, hi = np.concatenate([dom_lo, dom_lo]), np.concatenate([dom_hi, dom_hi])
    ps = pieces(nets, lo, hi, A0, b0)

    def alts(p: Piece) -> list:
        (Fa, Fb), (fa, fb) = p.F, p.f
        G = np.vstack([Fa[c] - Fa[j], Fb[j] - Fb[c]])
        g = np.array([fa[c] - fa[j] - m, fb[j] - fb[c]])
        return [(G, g)]

    return _decide(ps, alts, lo, hi)


def disagreement(teacher: Weights, student: Weights, x0: np.ndarray, eps: float,
                 dom_lo: np.ndarray | None = None, dom_hi: np.ndarray | None = None) -> Truth:
    """Teacher–student disagreement on ``B_∞(x0, ε) ∩ D`` (ties count as disagreement).

    Violated iff ``∃x, i, k ≠ i: t_i(x) >= t_j(x) ∀j ∧ s_k(x) >= s_i(x)``; alternative ``(i, k)`` has the
    rows ``t_i − t_j`` (``j ≠ i``) and ``s_k − s_i``.  Both networks read the same input.
    """
    x0 = np.asarray(x0, dtype=np.float64)
    lo, hi = _local_box(x0, eps, dom_lo, dom_hi)
    d = x0.size
    ps = pieces([(teacher, np.eye(d), np.zeros(d)), (student, np.eye(d), np.zeros(d))], lo, hi)

    def alts(p: Piece) -> list:
        (T, S), (t, s) = p.F, p.f
        n = T.shape[0]
        out = []
        for i in range(n):
            rows = [(T[i] - T[j], t[i] - t[j]) for j in range(n) if j != i]
            for k in range(n):
                if k != i:
                    G = np.vstack([r for r, _ in rows] + [S[k] - S[i]])
                    g = np.array([c for _, c in rows] + [s[k] - s[i]])
                    out.append((G, g))
        return out

    return _decide(ps, alts, lo, hi)


def _disc_candidates(A: Arr, b: Arr, x0: Arr, r: float, grad: Arr) -> list[Arr]:
    """Candidate maximisers of ``grad · x`` over ``{A x <= b} ∩ disc(x0, r)`` in 2-D (see module doc)."""
    cands: list[np.ndarray] = []
    gn = float(np.linalg.norm(grad))
    cands.append(x0 + r * (grad / gn if gn > 0 else np.array([1.0, 0.0])))
    rows = [(A[i], float(b[i])) for i in range(A.shape[0]) if np.linalg.norm(A[i]) > 0]
    for a, bi in rows:  # line a·x = bi meets the circle
        na2 = float(a @ a)
        p = x0 + a * ((bi - a @ x0) / na2)  # foot of the perpendicular from x0
        dist2 = float((p - x0) @ (p - x0))
        if dist2 <= r * r:
            t = np.array([-a[1], a[0]]) / math.sqrt(na2)
            s = math.sqrt(max(r * r - dist2, 0.0))
            cands += [p + s * t, p - s * t]
    for (a1, b1), (a2, b2) in itertools.combinations(rows, 2):  # vertices
        M = np.vstack([a1, a2])
        if abs(np.linalg.det(M)) < 1e-14:
            continue
        cands.append(np.linalg.solve(M, np.array([b1, b2])))
    ok = []
    for x in cands:
        if np.all(A @ x <= b + GEOM_TOL * (1 + np.abs(b))) and np.linalg.norm(x - x0) <= r * (1 + GEOM_TOL):
            ok.append(x)
    return ok


def local_l2(weights: Weights, x0: np.ndarray, eps: float, label: int,
             dom_lo: np.ndarray | None = None, dom_hi: np.ndarray | None = None) -> Truth:
    """L2 local robustness of a 2-input network: value = ``max_{x ∈ B_2(x0,ε) ∩ D} max_{j≠c} (y_j − y_c)``."""
    x0 = np.asarray(x0, dtype=np.float64)
    if x0.size != 2:
        raise ValueError("the exact L2 oracle handles two inputs only")
    lo, hi = _local_box(x0, eps, dom_lo, dom_hi)
    ps = pieces(_single(weights, 2), lo, hi)
    best, arg = -math.inf, None
    box_A = np.vstack([np.eye(2), -np.eye(2)])
    box_b = np.concatenate([hi, -lo])
    for p in ps:
        A = np.vstack([p.A, box_A])
        b = np.concatenate([p.b, box_b])
        F, f = p.F[0], p.f[0]
        for j in range(F.shape[0]):
            if j == label:
                continue
            grad, const = F[j] - F[label], f[j] - f[label]
            for x in _disc_candidates(A, b, x0, eps, grad):
                val = float(grad @ x + const)
                if val > best:
                    best, arg = val, x
    return Truth(best, arg, len(ps))


# ------------------------------------------------------------------------------------------------
# random cases (numpy only; the tests turn them into ONNX files and property objects)
# ------------------------------------------------------------------------------------------------
@dataclass(frozen=True)
class LocalCase:
    """Local robustness at ``x0`` (label = the network's float64 argmax at ``x0``) over ``D = [0, 1]^n``."""

    seed: int
    weights: tuple
    x0: np.ndarray
    eps: float
    label: int
    norm: str
    dom_lo: np.ndarray
    dom_hi: np.ndarray
    truth: Truth

    @property
    def n_hidden(self) -> int:
        return sum(W.shape[0] for W, _ in self.weights[:-1])


@dataclass(frozen=True)
class DnfCase:
    """A VNN-LIB style property: input box and unsafe output DNF ``⋁_k A_k y <= b_k``."""

    seed: int
    weights: tuple
    lo: np.ndarray
    hi: np.ndarray
    alternatives: tuple
    truth: Truth

    @property
    def n_hidden(self) -> int:
        return sum(W.shape[0] for W, _ in self.weights[:-1])


@dataclass(frozen=True)
class GlobalCase:
    """Two-copy global κ-robustness of a 2-class, 2-input network for one class, L∞ coupling."""

    seed: int
    weights: tuple
    delta: float
    kappa: float
    dom_lo: np.ndarray
    dom_hi: np.ndarray
    label: int
    truth: Truth

    @property
    def n_hidden(self) -> int:
        return sum(W.shape[0] for W, _ in self.weights[:-1])


def _hidden_sizes(rng: np.random.Generator, max_layers: int, max_width: int, max_total: int) -> list[int]:
    hid = [int(rng.integers(2, max_width + 1)) for _ in range(int(rng.integers(1, max_layers + 1)))]
    while sum(hid) > max_total:
        i = int(np.argmax(hid))
        hid[i] -= 1
    return [h for h in hid if h > 0] or [2]


def _want_ok(truth: Truth, want: bool | None, margin: float) -> bool:
    return truth.robust(margin) and (want is None or truth.violated == want)


def gen_local(seed: int, norm: str = "inf", want: bool | None = None, margin: float = MARGIN,
              max_total: int = 12, max_inputs: int = 6, tries: int = 400) -> LocalCase:
    """A random robust local-robustness case; ``want`` = True (violated) / False (holds) / None.

    L2 cases have two inputs (the exact L2 oracle is 2-D).  Non-robust (ambiguous) draws are
    regenerated from the next sub-seed.
    """
    for k in range(tries):
        rng = np.random.default_rng([seed, k])
        n = 2 if norm == "2" else int(rng.integers(2, max_inputs + 1))
        hid = _hidden_sizes(rng, 3, 8, max_total)
        n_out = int(rng.integers(2, 4))
        w = random_weights(rng, [n, *hid, n_out])
        x0 = rng.uniform(0.0, 1.0, n).astype(np.float32).astype(np.float64)
        y0 = evaluate(w, x0)
        label = int(np.argmax(y0))
        if np.sort(y0)[-1] - np.sort(y0)[-2] < margin:
            continue  # x0 itself is (nearly) tied
        eps = float(np.float32(np.exp(rng.uniform(np.log(0.01), np.log(0.6)))))
        dlo, dhi = np.zeros(n), np.ones(n)
        fn = local_l2 if norm == "2" else local_linf
        truth = fn(w, x0, eps, label, dlo, dhi)
        if _want_ok(truth, want, margin):
            return LocalCase(seed, tuple(w), x0, eps, label, norm, dlo, dhi, truth)
    raise OracleError(f"no robust local case for seed {seed} (want={want}) in {tries} tries")


def gen_dnf(seed: int, want: bool | None = None, margin: float = MARGIN, max_total: int = 12,
            max_inputs: int = 6, tries: int = 400) -> DnfCase:
    """A random robust box + output-DNF case (1–3 alternatives of 1–2 rows each)."""
    for k in range(tries):
        rng = np.random.default_rng([seed, 10_000 + k])
        n = int(rng.integers(2, max_inputs + 1))
        hid = _hidden_sizes(rng, 3, 8, max_total)
        n_out = int(rng.integers(2, 4))
        w = random_weights(rng, [n, *hid, n_out])
        ctr = rng.uniform(-1.0, 1.0, n)
        rad = rng.uniform(0.02, 0.5, n)
        lo = (ctr - rad).astype(np.float32).astype(np.float64)
        hi = (ctr + rad).astype(np.float32).astype(np.float64)
        yc = evaluate(w, (lo + hi) / 2)
        alts = []
        for _ in range(int(rng.integers(1, 4))):
            rows = int(rng.integers(1, 3))
            A = np.round(rng.normal(0.0, 1.0, (rows, n_out)), 2)
            A[np.all(A == 0, axis=1), 0] = 1.0
            b = np.round(A @ yc + rng.normal(0.0, 0.6, rows), 3)
            alts.append((A, b))
        truth = output_dnf(w, lo, hi, alts)
        if _want_ok(truth, want, margin):
            return DnfCase(seed, tuple(w), lo, hi, tuple(alts), truth)
    raise OracleError(f"no robust DNF case for seed {seed} (want={want}) in {tries} tries")


def gen_global(seed: int, want: bool | None = None, margin: float = MARGIN, max_total: int = 4,
               tries: int = 400) -> GlobalCase:
    """A random robust two-copy global case: 2 inputs, 2 classes, ``max_total`` hidden units per copy."""
    for k in range(tries):
        rng = np.random.default_rng([seed, 20_000 + k])
        hid = _hidden_sizes(rng, 2, 4, max_total)
        w = random_weights(rng, [2, *hid, 2], scale=1.5)
        delta = float(np.float32(rng.uniform(0.02, 0.4)))
        kappa = float(np.float32(rng.uniform(0.55, 0.95)))
        label = int(rng.integers(0, 2))
        dlo, dhi = np.zeros(2), np.ones(2)
        truth = global_two_class(w, delta, kappa, dlo, dhi, label)
        if _want_ok(truth, want, margin):
            return GlobalCase(seed, tuple(w), delta, kappa, dlo, dhi, label, truth)
    raise OracleError(f"no robust global case for seed {seed} (want={want}) in {tries} tries")


def vnnlib_source(lo: np.ndarray, hi: np.ndarray, alternatives: Sequence[tuple[np.ndarray, np.ndarray]],
                  n_outputs: int) -> str:
    """VNN-LIB text for ``x ∈ [lo, hi] ∧ ⋁_k A_k y <= b_k`` (written here, not by ``encoders.vnnlib``).

    Numbers are printed with ``repr`` (shortest round-tripping decimal), so the parser reads back
    exactly the floats the oracle used.
    """
    out = [f"(declare-const X_{i} Real)" for i in range(len(lo))]
    out += [f"(declare-const Y_{j} Real)" for j in range(n_outputs)]
    for i, (a, b) in enumerate(zip(lo, hi, strict=True)):
        out.append(f"(assert (>= X_{i} {float(a)!r}))")
        out.append(f"(assert (<= X_{i} {float(b)!r}))")

    def row(a: np.ndarray, b: float) -> str:
        terms = " ".join(f"(* {float(c)!r} Y_{j})" for j, c in enumerate(a) if c != 0.0)
        return f"(<= (+ {terms} 0.0) {float(b)!r})"

    conj = ["(and " + " ".join(row(A[r], b[r]) for r in range(A.shape[0])) + ")" for A, b in alternatives]
    out.append("(assert (or " + " ".join(conj) + "))")
    return "\n".join(out) + "\n"


@dataclass(frozen=True)
class DisagreementCase:
    """Teacher/student disagreement at ``x0`` over ``B_∞(x0, ε) ∩ [0, 1]^n``."""

    seed: int
    teacher: tuple
    student: tuple
    x0: np.ndarray
    eps: float
    dom_lo: np.ndarray
    dom_hi: np.ndarray
    truth: Truth

    @property
    def n_hidden(self) -> int:
        return max(sum(W.shape[0] for W, _ in net[:-1]) for net in (self.teacher, self.student))


def gen_disagreement(seed: int, want: bool | None = None, margin: float = MARGIN,
                     tries: int = 400) -> DisagreementCase:
    """A teacher and a noisy copy of it as the student (same architecture, ≤ 6 hidden units each)."""
    for k in range(tries):
        rng = np.random.default_rng([seed, 30_000 + k])
        n = int(rng.integers(2, 4))
        hid = _hidden_sizes(rng, 2, 4, 6)
        n_out = int(rng.integers(2, 4))
        t = random_weights(rng, [n, *hid, n_out])
        noise = float(rng.uniform(0.02, 0.4))
        s = [((W + rng.normal(0, noise, W.shape)).astype(np.float32).astype(np.float64),
              (b + rng.normal(0, noise, b.shape)).astype(np.float32).astype(np.float64)) for W, b in t]
        x0 = rng.uniform(0.0, 1.0, n).astype(np.float32).astype(np.float64)
        eps = float(np.float32(np.exp(rng.uniform(np.log(0.01), np.log(0.3)))))
        dlo, dhi = np.zeros(n), np.ones(n)
        truth = disagreement(t, s, x0, eps, dlo, dhi)
        if _want_ok(truth, want, margin):
            return DisagreementCase(seed, tuple(t), tuple(s), x0, eps, dlo, dhi, truth)
    raise OracleError(f"no robust disagreement case for seed {seed} (want={want}) in {tries} tries")
