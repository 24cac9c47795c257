r"""Difference ("twin network") bounds for two copies of one network with coupled inputs.

Setting.  Two executions of the same network ``f`` (layers ``z_k = W_k h_{k−1} + b_k``,
``h_k = relu(z_k)``, ``h_{−1} = x``, output ``z_L``) on inputs ``x`` (copy *a*) and ``x'`` (copy *b*)
with ``x, x' ∈ D = [lo, hi]`` and ``‖x − x'‖_p ≤ δ`` (``p ∈ {∞, 2}``).  We bound the *differences*

    Δz_k = z_k(x) − z_k(x'),        Δh_k = h_k(x) − h_k(x')

layer by layer (the twin-network / difference-bound method: Wang et al., DATE 2022, "Efficient
Global Robustness Certification of Neural Networks via Interleaving Twin-Network Encoding";
Athavale et al., CAV 2024).  Each copy also has its own pre-activation bounds ``z_k(x) ∈ [la_k, ua_k]``
and ``z_k(x') ∈ [lb_k, ub_k]`` (CROWN over ``D`` by default; copy *a*'s may be tighter when the caller
knows more about it).

Input layer
-----------
Biases cancel: ``Δz_0 = W_0 Δx`` with ``Δx = x − x'``.  Per coordinate ``|Δx_i| ≤ r_i =
min(δ, hi_i − lo_i)`` (both norms: ``|Δx_i| ≤ ‖Δx‖_p``), hence exactly over that box

    |Δz_0| ≤ |W_0| r                                         (L∞, exact range over the box)
    |Δz_0,i| ≤ min(δ ‖W_0,i‖₂, |W_0,i|·r)                     (L2: Cauchy–Schwarz, and the box)

ReLU differences
----------------
For one neuron with ``Δz ∈ [dl, du]`` (valid over all feasible pairs):

* ReLU is monotone and 1-Lipschitz, so ``Δh`` has the sign of ``Δz`` and ``|Δh| ≤ |Δz|``::

      min(Δz, 0) ≤ Δh ≤ max(Δz, 0).                                                        (1)

* From each copy's own bounds: ``relu(la) − relu(ub) ≤ Δh ≤ relu(ua) − relu(lb)``.          (2)
* Copy *a* stable active (``la ≥ 0``): ``Δh = z − relu(z') ≤ z − z' = Δz``; copy *b* stable active
  (``lb ≥ 0``): ``Δh = relu(z) − z' ≥ Δz``; copy *a* stable inactive: ``Δh = −relu(z') ≤ 0``; copy *b*
  stable inactive: ``Δh = relu(z) ≥ 0``.                                                     (3)
  Both active ⇒ ``Δh = Δz``; both inactive ⇒ ``Δh = 0`` (exact).

Linear relaxation ``s_lo Δz + t_lo ≤ Δh ≤ s_up Δz + t_up`` on ``[dl, du]``: the upper function
``max(Δz, 0)`` of (1) is convex, so its chord lies above it::

      dl < 0 < du:  Δh ≤ du (Δz − dl)/(du − dl)      (s_up = du/(du − dl), t_up = −du·dl/(du − dl))

(``dl ≥ 0``: ``Δh ≤ Δz``; ``du ≤ 0``: ``Δh ≤ 0``), and the lower function ``min(Δz, 0)`` is concave, so
its chord lies below it::

      dl < 0 < du:  Δh ≥ dl (du − Δz)/(du − dl)      (s_lo = −dl/(du − dl), t_lo = dl·du/(du − dl))

(``dl ≥ 0``: ``Δh ≥ 0``; ``du ≤ 0``: ``Δh ≥ Δz``).  Every line lying above a function that is convex on
the interval passes above both end points, so the chords are the tightest single lines for (1).  The
candidates from (2) (the constants) and (3) (``Δz`` or ``0``) are sound too; per neuron we take the
candidate with the smallest (upper) or largest (lower) value at the interval midpoint, i.e. the least
area.  The interval bound of ``Δh`` is the intersection of (1) and (2) evaluated on ``[dl, du]``.

Deeper layers (back-substitution)
---------------------------------
``Δz_k = W_k Δh_{k−1}`` (biases cancel).  A lower bound of ``Λ Δz_k`` is found by the CROWN-style
backward pass through the *difference* relaxations::

    A ← Λ W_k,  κ ← 0
    for j = k−1, …, 0:
        κ ← κ + A⁺ t_lo,j + A⁻ t_up,j,      A ← (A⁺ diag(s_lo,j) + A⁻ diag(s_up,j)) W_j
    Λ Δz_k ≥ A Δx + κ ≥ κ − Σ_i |A_i| r_i                (L∞; L2: also κ − δ ‖A‖₂, take the max)

(``A⁺ = max(A, 0)``, ``A⁻ = min(A, 0)``; each step is valid because a non-negative coefficient times
``Δh`` is at least that coefficient times the lower line, a non-positive one times the upper line.)
Upper bounds use ``[Λ; −Λ]`` in one pass.  Every layer's final bound is the intersection of this
back-substituted bound, the interval step ``W_k [Δh_lo, Δh_hi]`` from the previous layer, and the
per-copy bound ``[la_k − ub_k, ua_k − lb_k]``.  All three are sound, so the intersection is.

Floating point: like :mod:`encoders.bounds`, every bound is widened by ``rtol·(|Λ| M_k) + atol`` with
``rtol = rounding_tolerance(net)`` and the magnitude recursion ``M_{−1} = r``, ``M_k = |W_k| M_{k−1}``
(every relaxation slope lies in ``[0, 1]`` and every intercept or constant is bounded by the
magnitude of the corresponding ``Δz`` bound).  This is the same first-order analysis as in
:mod:`encoders.bounds`.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass
from typing import Any

import numpy as np

from ..errors import SpecError
from ..network import Network
from ..relaxations import log_softmax as _log_softmax
from .crown import crown_bounds
from .rounding import ATOL as _ATOL
from .rounding import EPS64, rounding_tolerance

__all__ = [
    "DiffRelaxation",
    "TwinBounds",
    "diff_relu_relaxation",
    "twin_bounds",
    "twin_linear",
    "pair_margin_upper",
]



@dataclass(frozen=True, eq=False)
class DiffRelaxation:
    """Per-neuron relaxation of ``Δh = relu(z) − relu(z')`` on ``Δz = z − z' ∈ [dl, du]``.

    ``s_lo Δz + t_lo ≤ Δh ≤ s_up Δz + t_up`` and ``hl ≤ Δh ≤ hu`` for every feasible pair.
    """

    s_lo: np.ndarray
    t_lo: np.ndarray
    s_up: np.ndarray
    t_up: np.ndarray
    hl: np.ndarray
    hu: np.ndarray


@dataclass(frozen=True, eq=False)
class TwinBounds:
    """Per-copy and difference bounds of every affine layer (last entry = the outputs).

    Attributes
    ----------
    lower_a, upper_a, lower_b, upper_b
        ``z_k(x) ∈ [lower_a[k], upper_a[k]]``, ``z_k(x') ∈ [lower_b[k], upper_b[k]]``.
    dlower, dupper
        ``z_k(x) − z_k(x') ∈ [dlower[k], dupper[k]]`` for every feasible pair.
    relax
        The :class:`DiffRelaxation` of every ReLU layer (built from the final bounds).
    radius
        ``r_i``: the per-coordinate bound on ``|x_i − x'_i|``.
    """

    delta: float
    norm: str
    lower_a: tuple[np.ndarray, ...]
    upper_a: tuple[np.ndarray, ...]
    lower_b: tuple[np.ndarray, ...]
    upper_b: tuple[np.ndarray, ...]
    dlower: tuple[np.ndarray, ...]
    dupper: tuple[np.ndarray, ...]
    relax: tuple[DiffRelaxation, ...]
    radius: np.ndarray

    def summary(self) -> dict[str, Any]:
        """JSON-ready digest: widest difference bound per layer, neurons whose Δh is exact."""
        exact = [int(np.sum((r.s_lo == r.s_up) & (r.t_lo == r.t_up))) for r in self.relax]
        return {
            "delta": self.delta,
            "norm": self.norm,
            "max_abs_dz": [float(max(np.max(-lo), np.max(up))) for lo, up in zip(self.dlower, self.dupper)],
            "exact_diff_relus": exact,
        }


def _relu(v: np.ndarray) -> np.ndarray:
    return np.maximum(v, 0.0)


def diff_relu_relaxation(
    la: np.ndarray, ua: np.ndarray, lb: np.ndarray, ub: np.ndarray, dl: np.ndarray, du: np.ndarray
) -> DiffRelaxation:
    """The relaxation of ``Δh = relu(z) − relu(z')`` (module docstring, rules (1)–(3)).

    ``z ∈ [la, ua]`` (copy a), ``z' ∈ [lb, ub]`` (copy b), ``z − z' ∈ [dl, du]``; arrays of one layer.
    """
    la, ua, lb, ub, dl, du = (np.asarray(v, dtype=np.float64) for v in (la, ua, lb, ub, dl, du))
    # interval of Δh: (1) ∩ (2) ∩ (3)
    hl = np.maximum(np.minimum(dl, 0.0), _relu(la) - _relu(ub))
    hu = np.minimum(np.maximum(du, 0.0), _relu(ua) - _relu(lb))
    hl = np.where(ub <= 0.0, np.maximum(hl, 0.0), hl)  # copy b inactive: Δh = relu(z) ≥ 0
    hu = np.where(ua <= 0.0, np.minimum(hu, 0.0), hu)  # copy a inactive: Δh = −relu(z') ≤ 0
    hl = np.where(lb >= 0.0, np.maximum(hl, dl), hl)  # copy b active: Δh ≥ Δz ≥ dl
    hu = np.where(la >= 0.0, np.minimum(hu, du), hu)  # copy a active: Δh ≤ Δz ≤ du
    hl = np.minimum(hl, hu)  # (only rounding could make them cross; keep the interval non-empty)
    mid = 0.5 * (dl + du)
    width = du - dl
    mixed = (dl < 0.0) & (du > 0.0)
    safe = np.where(mixed, width, 1.0)
    # chords of (1)
    cu_s = np.where(mixed, du / safe, np.where(dl >= 0.0, 1.0, 0.0))
    cu_t = np.where(mixed, -du * dl / safe, 0.0)
    cl_s = np.where(mixed, -dl / safe, np.where(du <= 0.0, 1.0, 0.0))
    cl_t = np.where(mixed, dl * du / safe, 0.0)
    # upper candidates: chord, constant hu, Δz (a active), 0 (a inactive)
    ups = [(cu_s, cu_t, np.ones_like(dl, dtype=bool)), (np.zeros_like(dl), hu, np.ones_like(dl, dtype=bool))]
    ups.append((np.ones_like(dl), np.zeros_like(dl), la >= 0.0))
    ups.append((np.zeros_like(dl), np.zeros_like(dl), ua <= 0.0))
    lows = [(cl_s, cl_t, np.ones_like(dl, dtype=bool)), (np.zeros_like(dl), hl, np.ones_like(dl, dtype=bool))]
    lows.append((np.ones_like(dl), np.zeros_like(dl), lb >= 0.0))
    lows.append((np.zeros_like(dl), np.zeros_like(dl), ub <= 0.0))
    s_up, t_up = ups[0][0], ups[0][1]
    best = s_up * mid + t_up
    for s, t, ok in ups[1:]:
        v = np.where(ok, s * mid + t, np.inf)
        better = v < best
        s_up, t_up, best = np.where(better, s, s_up), np.where(better, t, t_up), np.minimum(best, v)
    s_lo, t_lo = lows[0][0], lows[0][1]
    best = s_lo * mid + t_lo
    for s, t, ok in lows[1:]:
        v = np.where(ok, s * mid + t, -np.inf)
        better = v > best
        s_lo, t_lo, best = np.where(better, s, s_lo), np.where(better, t, t_lo), np.maximum(best, v)
    return DiffRelaxation(s_lo, t_lo, s_up, t_up, hl, hu)


def _radius(lo: np.ndarray, hi: np.ndarray, delta: float) -> np.ndarray:
    return np.minimum(delta, hi - lo)


def _concretise_lower(A: np.ndarray, r: np.ndarray, delta: float, norm: str) -> np.ndarray:
    """``min A Δx`` over ``|Δx_i| ≤ r_i`` (and ``‖Δx‖₂ ≤ δ`` for L2): rows of ``A`` ``(m, n)`` → ``(m,)``."""
    val = -(np.abs(A) @ r)
    if norm == "2":
        val = np.maximum(val, -delta * np.sqrt(np.einsum("ij,ij->i", A, A)))
    return val


def _backward_diff(
    net: Network,
    relax: Sequence[DiffRelaxation],
    k: int,
    A: np.ndarray,
    r: np.ndarray,
    delta: float,
    norm: str,
) -> np.ndarray:
    """Lower bound of ``A Δh_{k−1}`` (``A`` acting on the input of affine layer ``k``) over the pairs."""
    affines = net.affines
    kappa = np.zeros(A.shape[0])
    for j in range(k - 1, -1, -1):
        rx = relax[j]
        pos = np.maximum(A, 0.0)
        neg = A - pos
        kappa = kappa + pos @ rx.t_lo + neg @ rx.t_up
        A = (pos * rx.s_lo + neg * rx.s_up) @ affines[j].W
    return kappa + _concretise_lower(A, r, delta, norm)


def twin_bounds(
    net: Network,
    lo: np.ndarray,
    hi: np.ndarray,
    delta: float,
    norm: str = "inf",
    copy_a: tuple[Sequence[np.ndarray], Sequence[np.ndarray]] | None = None,
    copy_b: tuple[Sequence[np.ndarray], Sequence[np.ndarray]] | None = None,
    backsub: bool = True,
    diff: tuple[Sequence[np.ndarray], Sequence[np.ndarray]] | None = None,
) -> TwinBounds:
    """Difference bounds of every layer for pairs ``x, x' ∈ [lo, hi]``, ``‖x − x'‖_norm ≤ delta``.

    Parameters
    ----------
    copy_a, copy_b
        ``(lower, upper)`` pre-activation bounds of every affine layer for each copy (valid over every
        input that copy may take); by default CROWN over ``[lo, hi]`` for both.
    backsub
        Back-substitute through the difference relaxations (default); ``False`` gives the interval
        (IBP-style) difference bounds only.
    diff
        ``(dlower, dupper)``: known difference bounds of every affine layer (e.g. from the LP of
        :mod:`encoders.bounds.pair_lp`), intersected with the computed ones layer by layer.  Like
        ``copy_a``/``copy_b`` they need only hold over the pairs of interest (e.g. the violating
        pairs of one query); the result is then valid over those pairs.
    """
    lo = np.asarray(lo, dtype=np.float64).reshape(-1)
    hi = np.asarray(hi, dtype=np.float64).reshape(-1)
    if lo.size != net.n_inputs or hi.size != net.n_inputs:
        raise SpecError(f"twin bounds: the domain has {lo.size} values but the network takes {net.n_inputs}")
    if norm not in ("inf", "2"):
        raise SpecError(f"--norm: must be 'inf' or '2', got {norm!r}")
    if not (delta >= 0 and np.isfinite(delta)):
        raise SpecError(f"--delta: must be a non-negative finite number, got {delta}")
    if copy_a is None or copy_b is None:
        cb = crown_bounds(net, lo, hi)
        default = (list(cb.lower), list(cb.upper))
        copy_a = default if copy_a is None else copy_a
        copy_b = default if copy_b is None else copy_b
    la_all = [np.asarray(v, dtype=np.float64) for v in copy_a[0]]
    ua_all = [np.asarray(v, dtype=np.float64) for v in copy_a[1]]
    lb_all = [np.asarray(v, dtype=np.float64) for v in copy_b[0]]
    ub_all = [np.asarray(v, dtype=np.float64) for v in copy_b[1]]
    affines = net.affines
    rtol = rounding_tolerance(net)
    r = _radius(lo, hi, float(delta))
    mag = r.copy()
    dls: list[np.ndarray] = []
    dus: list[np.ndarray] = []
    relax: list[DiffRelaxation] = []
    for k, a in enumerate(affines):
        mag = np.abs(a.W) @ mag
        margin = rtol * mag + _ATOL * (mag > 0)
        if k == 0:
            rad = np.abs(a.W) @ r
            if norm == "2":
                rad = np.minimum(rad, delta * np.linalg.norm(a.W, axis=1))
            dl, du = -rad, rad
        else:
            prev = relax[k - 1]
            c = a.W @ (0.5 * (prev.hl + prev.hu))
            rad = np.abs(a.W) @ (0.5 * (prev.hu - prev.hl))
            dl, du = c - rad, c + rad
            if backsub:
                n_k = a.W.shape[0]
                lb = _backward_diff(net, relax, k, np.vstack([a.W, -a.W]), r, float(delta), norm)
                dl, du = np.maximum(dl, lb[:n_k]), np.minimum(du, -lb[n_k:])
        dl, du = dl - margin, du + margin
        # per-copy bounds: z − z' ∈ [la − ub, ua − lb]
        dl = np.maximum(dl, la_all[k] - ub_all[k])
        du = np.minimum(du, ua_all[k] - lb_all[k])
        if diff is not None:
            dl = np.maximum(dl, np.asarray(diff[0][k], dtype=np.float64))
            du = np.minimum(du, np.asarray(diff[1][k], dtype=np.float64))
            dl = np.minimum(dl, du)  # (a crossing would only mean an empty pair set; keep it non-empty)
        dls.append(dl)
        dus.append(du)
        if k < len(affines) - 1:
            relax.append(diff_relu_relaxation(la_all[k], ua_all[k], lb_all[k], ub_all[k], dl, du))
    return TwinBounds(
        float(delta),
        norm,
        tuple(la_all),
        tuple(ua_all),
        tuple(lb_all),
        tuple(ub_all),
        tuple(dls),
        tuple(dus),
        tuple(relax),
        r,
    )


def twin_linear(net: Network, tb: TwinBounds, C: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    """Bounds ``lb ≤ C (f(x) − f(x')) ≤ ub`` over the pairs (back-substitution ∩ interval step).

    ``C`` is ``(m, n_out)``; returns ``(lb, ub)`` of shape ``(m,)``.
    """
    C = np.asarray(C, dtype=np.float64)
    if C.ndim != 2 or C.shape[1] != net.n_outputs:
        raise SpecError(f"twin bounds: the specification must be (m, {net.n_outputs}), got {C.shape}")
    affines = net.affines
    L = len(affines) - 1
    rtol = rounding_tolerance(net)
    mag = tb.radius.copy()
    for a in affines:
        mag = np.abs(a.W) @ mag
    margin = rtol * (np.abs(C) @ mag) + _ATOL
    # interval step from the last hidden layer (or exact on the input box for L = 0)
    if L == 0:
        CW = C @ affines[0].W
        rad = np.abs(CW) @ tb.radius
        if tb.norm == "2":
            rad = np.minimum(rad, tb.delta * np.linalg.norm(CW, axis=1))
        il, iu = -rad, rad
    else:
        prev = tb.relax[L - 1]
        CW = C @ affines[L].W
        cen = CW @ (0.5 * (prev.hl + prev.hu))
        rad = np.abs(CW) @ (0.5 * (prev.hu - prev.hl))
        il, iu = cen - rad, cen + rad
    m = C.shape[0]
    lb = _backward_diff(net, tb.relax, L, np.vstack([CW, -CW]), tb.radius, tb.delta, tb.norm)
    lo_, up_ = np.maximum(il, lb[:m]), np.minimum(iu, -lb[m:])
    return lo_ - margin, up_ + margin


def pair_margin_upper(net: Network, tb: TwinBounds, c: int) -> np.ndarray:
    """Upper bounds of ``(f_c − f_j)(x) − (f_c − f_j)(x')`` for every ``j`` (entry ``c`` is 0).

    A κ-confidence violation for class ``c`` through competitor ``j`` needs ``(f_c − f_j)(x) ≥ m`` and
    ``(f_c − f_j)(x') ≤ 0``, hence this difference ``≥ m``: when its upper bound is below ``m``, no pair
    violates the property through ``j``.
    """
    n = net.n_outputs
    C = np.zeros((n, n))
    for j in range(n):
        if j != c:
            C[j, c], C[j, j] = 1.0, -1.0
    _, ub = twin_linear(net, tb, C)
    ub = np.asarray(ub, dtype=np.float64).copy()
    ub[c] = 0.0
    return ub


# ==================================================================================================
# Falsification: a cheap search for violating pairs (the candidates still have to be replayed)
# ==================================================================================================
def _forward_backward(net: Network, X: np.ndarray, G: Any) -> tuple[np.ndarray, np.ndarray]:
    """Logits ``Z = f(X)`` (batch) and the input gradients of ``Σ_k G(Z)_k · f_k`` per row."""
    from ..network import Affine

    masks = []
    h = X
    for lay in net.layers:
        if isinstance(lay, Affine):
            h = h @ lay.W.T + lay.b
        else:
            masks.append(h > 0)
            h = np.maximum(h, 0.0)
    Z = h
    g = G(Z)
    for lay in reversed(net.layers):
        g = g @ lay.W if isinstance(lay, Affine) else g * masks.pop()
    return Z, g


def _couple(
    x: np.ndarray, xp: np.ndarray, lo: np.ndarray, hi: np.ndarray, delta: float, norm: str
) -> np.ndarray:
    """Move ``x'`` into ``{‖x − x'‖ ≤ δ} ∩ D`` (clipping to ``D`` only shrinks ``|x_i − x'_i|``)."""
    d = xp - x
    if norm == "inf":
        r = delta - 4.0 * EPS64 * (np.abs(x) + delta)  # fl(x + d) − x stays ≤ δ
        d = np.clip(d, -r, r)
    else:
        n = np.linalg.norm(d, axis=1, keepdims=True)
        d = d * np.minimum(1.0, delta * (1 - 1e-12) / np.maximum(n, 1e-300))
    return np.clip(x + d, lo, hi)


def _project_offset(eta: np.ndarray, delta: float, norm: str) -> np.ndarray:
    """``η`` moved into the δ-ball (L∞: clipped per coordinate; L2: scaled down)."""
    if norm == "inf":
        return np.clip(eta, -delta, delta)
    n = np.linalg.norm(eta, axis=1, keepdims=True)
    return eta * np.minimum(1.0, delta / np.maximum(n, 1e-300))


def pair_attack(
    net: Network,
    lo: np.ndarray,
    hi: np.ndarray,
    delta: float,
    kappa: float,
    c: int,
    norm: str = "inf",
    batch: int = 72,
    steps: int = 150,
    step: float = 0.05,
    seed: int = 0,
    keep: int = 4,
    start: tuple[np.ndarray, np.ndarray] | None = None,
    near: list[tuple[float, int, np.ndarray, np.ndarray]] | None = None,
    targets: Sequence[int] | None = None,
) -> tuple[list[tuple[np.ndarray, np.ndarray]], float]:
    r"""Search for pairs ``(x, x')`` violating κ-confidence robustness for class ``c`` (float64).

    Projected sign-gradient steps on a pair written as ``x' = clip_D(x + η)``, ``η`` in the δ-ball,
    one competitor ``j`` per batch row (the competitors ``targets``, default every ``j ≠ c``, in turn):
    the objective is ``w_a g(x) + w_b v(x')`` with the confidence gap ``g(x) = log softmax_c(f(x)) −
    log κ`` and the flip ``v(x') = f_j(x') − f_c(x')``, each weighted 1 while negative and 0.1 once
    satisfied (a small push that enlarges the margin).  ``x`` follows the gradient of *both* terms
    (``x'`` moves with ``x``) and ``η`` the gradient of the flip term; the step (a fraction of the box
    width for ``x``, four times that fraction of δ for ``η``) decays linearly from ``step`` to
    ``step/25``.  On the 64-32-32-10 digits student at δ = 0.02, κ = 0.9, 256 rows and 400 steps per
    class find violating pairs for classes 4 and 5 in 0.3 s each; the earlier scheme (both copies
    stepped independently, ``x'`` projected back after each step, a constant step) found none for any
    class, nor for classes 0 and 2 with 2,048 rows per competitor.

    Rows where both ``g ≥ 0`` and ``v ≥ 0`` (checked in float64, on ``x'`` moved exactly into
    ``{‖x − x'‖ ≤ δ} ∩ D``) are returned, best ``min(g, v)`` first, after a few extra steps that enlarge
    both margins (so that float32 replay keeps them).  Returns ``(pairs, best)`` with ``best`` the
    largest ``min(g, v)`` seen (a hint of how close the search came).  ``start = (x, x')`` (e.g. a
    solver's near-miss candidate or an LP optimum) replaces the random start of the first row of every
    competitor.  ``near`` (a list) receives, for every competitor ``j``, its best final row ``(score,
    j, x, x')`` — near misses included (e.g. the centres of a local exact search).

    This is a heuristic: finding nothing proves nothing, and every pair
    must still pass :func:`verifier.replay.replay`.
    """
    lo = np.asarray(lo, dtype=np.float64).reshape(-1)
    hi = np.asarray(hi, dtype=np.float64).reshape(-1)
    n_out = net.n_outputs
    js = np.array([j for j in (range(n_out) if targets is None else targets) if j != c], dtype=np.int64)
    if js.size == 0:
        return [], -np.inf
    rng = np.random.default_rng(seed)
    B = max(batch, js.size)
    J = np.resize(js, B)
    rows = np.arange(B)
    x = rng.uniform(lo, hi, size=(B, lo.size))
    x[: js.size] = 0.5 * (lo + hi)
    eta = _project_offset(rng.uniform(-delta, delta, size=x.shape), delta, norm)
    eta[: js.size] = 0.0
    if start is not None:
        x[: js.size] = np.clip(np.asarray(start[0], dtype=np.float64).reshape(-1), lo, hi)
        x1 = np.clip(np.asarray(start[1], dtype=np.float64).reshape(-1), lo, hi)
        eta[: js.size] = _project_offset(x1[None, :] - x[: js.size], delta, norm)
    width = np.maximum(hi - lo, 1e-12)
    log_k = float(np.log(kappa))

    def grad_conf(Z: np.ndarray) -> np.ndarray:
        g = -np.exp(_log_softmax(Z))
        g[:, c] += 1.0
        return g

    def grad_flip(Z: np.ndarray) -> np.ndarray:
        g = np.zeros_like(Z)
        g[rows, J] = 1.0
        g[:, c] -= 1.0
        return g

    def direction(G: np.ndarray) -> np.ndarray:
        if norm == "inf":
            return np.sign(G)
        return G / np.maximum(np.abs(G).max(axis=1, keepdims=True), 1e-300)

    def pair(x: np.ndarray, eta: np.ndarray) -> np.ndarray:
        return _couple(x, np.clip(x + eta, lo, hi), lo, hi, delta, norm)

    def scores(x: np.ndarray, xp: np.ndarray) -> np.ndarray:
        Za, Zb = net.evaluate(x), net.evaluate(xp)
        return np.minimum(_log_softmax(Za)[:, c] - log_k, Zb[rows, J] - Zb[:, c])

    found_at: int | None = None
    best = -np.inf
    for t in range(steps):
        raw = x + eta
        xp = np.clip(raw, lo, hi)
        inside = (raw > lo) & (raw < hi)  # where x' follows x + η (elsewhere it sits on D's face)
        Za, Ga = _forward_backward(net, x, grad_conf)
        Zb, Gb = _forward_backward(net, xp, grad_flip)
        gap = _log_softmax(Za)[:, c] - log_k
        v = Zb[rows, J] - Zb[:, c]
        score = np.minimum(gap, v)
        best = max(best, float(score.max()))
        if found_at is None and np.any(score >= 0):
            found_at = t
        if found_at is not None and t >= found_at + 10:
            break
        wa = np.where(gap < 0, 1.0, 0.1)[:, None]
        wb = np.where(v < 0, 1.0, 0.1)[:, None]
        flip = wb * Gb * inside
        lr = step * (1.0 - t / max(1, steps)) + step / 25.0
        cand_x = np.clip(x + lr * width * direction(wa * Ga + flip), lo, hi)
        cand_eta = _project_offset(eta + 4.0 * lr * delta * direction(flip), delta, norm)
        # keep rows that already violate unless the step improves their score
        if found_at is not None:
            s2 = scores(cand_x, pair(cand_x, cand_eta))
            s1 = scores(x, pair(x, eta))
            take = (s1 < 0) | (s2 > s1)
            x = np.where(take[:, None], cand_x, x)
            eta = np.where(take[:, None], cand_eta, eta)
        else:
            x, eta = cand_x, cand_eta
    xp = pair(x, eta)
    score = scores(x, xp)
    best = max(best, float(score.max()))
    order = [i for i in np.argsort(-score) if score[i] >= 0][:keep]
    if near is not None:
        for j in js:
            mine = np.flatnonzero(np.equal(J, j))
            i = int(mine[np.argmax(score[mine])])
            near.append((float(score[i]), int(j), x[i].copy(), xp[i].copy()))
    return [(x[i].copy(), xp[i].copy()) for i in order], best
