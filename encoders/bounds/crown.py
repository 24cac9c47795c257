r"""Interval (IBP) and CROWN backward linear bounds on a :class:`~encoders.network.Network`.

Notation.  The network is ``Affine_0, Relu, Affine_1, Relu, …, Affine_{L}``; the pre-activation of
affine layer ``k`` is ``z_k = W_k h_{k-1} + b_k`` with ``h_{-1} = x`` and ``h_j = relu(z_j)``; the
output is ``f(x) = z_L``.  Every function works on one input box ``lo ≤ x ≤ hi`` (arrays ``(n,)``) or
on ``B`` boxes at once (arrays ``(B, n)``); the results have a leading ``B`` axis exactly when the
inputs had one.  Everything is float64 numpy (no torch in ``encoders``).

Interval bound propagation (IBP)
--------------------------------
With centre ``c = (l + u)/2`` and radius ``r = (u − l)/2`` of the bounds on ``h_{k-1}``::

    l_k = W_k c + b_k − |W_k| r,        u_k = W_k c + b_k + |W_k| r,

and ``h_k ∈ [relu(l_k), relu(u_k)]``.  This is the exact range of each affine coordinate over a box.

CROWN (backward linear bounds)
------------------------------
ReLU relaxation of ``h = relu(z)`` for ``z ∈ [l, u]`` (``l, u`` = the pre-activation bounds already
computed for that layer)::

    stable active   (l ≥ 0):      h = z                     (d_lo = d_up = 1, t_up = 0)
    stable inactive (u ≤ 0):      h = 0                     (d_lo = d_up = 0, t_up = 0)
    unstable        (l < 0 < u):  α z  ≤  h  ≤  u (z − l)/(u − l)
                                  d_lo = α,  d_up = u/(u − l),  t_up = −u l/(u − l)

The upper line is the chord through ``(l, 0)`` and ``(u, u)``, which lies above the convex ``relu`` on
``[l, u]``; the lower line ``α z`` with ``α ∈ [0, 1]`` lies below ``relu`` everywhere.  The default
``alpha="adaptive"`` picks ``α = 1`` if ``u ≥ −l`` else ``α = 0`` (the choice minimising the area of the
relaxation, as in CROWN / DeepPoly).

Backward pass for a lower bound of ``Λ z_k`` (``Λ`` has ``m`` rows)::

    A ← Λ W_k,                 κ ← Λ b_k                                 (A acts on h_{k-1})
    for j = k−1, …, 0:
        # A h_j ≥ A⁺ (d_lo ⊙ z_j) + A⁻ (d_up ⊙ z_j + t_up)    with A⁺ = max(A, 0), A⁻ = min(A, 0)
        κ ← κ + A⁻ t_up,       A ← A⁺ diag(d_lo) + A⁻ diag(d_up)           (A acts on z_j)
        κ ← κ + A b_j,         A ← A W_j                                 (A acts on h_{j-1})
    Λ z_k ≥ A x + κ  for every x in the input set,

then concretisation over the box ``[lo, hi]``::

    min_{lo ≤ x ≤ hi} A x + κ = κ + Σ_i max(A_i, 0) lo_i + min(A_i, 0) hi_i,

and over the L2 ball ``‖x − x0‖₂ ≤ r`` (Cauchy–Schwarz; ignores the box)::

    min_{‖x − x0‖₂ ≤ r} A x + κ = κ + A x0 − r ‖A‖₂.

Rounding of the ball term.  ``A x0 − r ‖A‖₂`` cancels two numbers of size up to ``|A|·|x0|`` and
``r ‖A‖₂ ≤ r ‖A‖₁ = |A|·(r 1)``: its summands are bounded by ``|A|·(|x0| + r 1)``, whatever the box.
When the centre lies outside the box (or ``r`` is large), ``|x0| + r`` exceeds ``max(|lo|, |hi|)``,
so the magnitude recursion below starts, for an input set with a ball, from
``M_{-1} = max(|lo|, |hi|, |x0| + r)`` (elementwise): every summand of the backward pass and of both
concretisations is then bounded by ``2^L |Λ| M_k`` as in the box case, and the same ``rtol`` covers
the rounding — also of ``‖A‖₂`` (a sum of ``n`` squares and a square root: relative error
``γ_{n+1}``, inside ``γ_{n_max+2}``) and of the entries of ``A`` themselves, each off by at most
``γ·2^L|Λ||W|…`` relative to the same magnitudes.

For an input set ``ball ∩ box`` both are sound lower bounds, so their maximum is one too.  Upper bounds
use ``max Λ z_k = −min (−Λ) z_k``: every pass stacks ``[Λ; −Λ]`` and runs once.

Intermediate layers are bounded layer by layer (``Λ`` = the rows ``e_i`` of the neurons that need it),
each using the relaxations built from the earlier layers' final bounds; every layer's final bound is
the intersection of the CROWN bound, the IBP bound from the tightened previous layer and the plain IBP
bound, so it is never looser than IBP.  The backward pass only runs for neurons that the two interval
bounds leave unstable: a stable neuron's relaxation is exact whatever its bounds, so skipping it
changes no relaxation (its reported bounds are then the interval ones).  Layer 0 is affine in ``x``:
its interval bound is exact and CROWN is not run on it.  Bounds valid on a superset of the box (a
parent's, in branch and bound) may be given as ``prior``; they are intersected in first.

Floating point
--------------
Bounds are computed in float64 with round-to-nearest, so every computed bound may be off from the
exact-arithmetic value by rounding.  By the standard analysis of dot products and matrix chains
(Higham, *Accuracy and Stability of Numerical Algorithms*, §3.1: ``|fl(aᵀb) − aᵀb| ≤ γ_n |a|ᵀ|b|``,
``γ_n = n u/(1 − n u)``) the error of any bound computed here is at most a small multiple of ``u``
times the *magnitude* of the summands, which we bound by the forward recursion::

    M_{-1} = max(|lo|, |hi|)  (with an L2 ball: max(|lo|, |hi|, |x0| + r)),      M_k = |W_k| M_{k-1} + |b_k|

(the relaxations have slopes in ``[0, 1]`` and intercepts at most ``max(|l|, |u|) ≤ M_j``, so every
summand of the backward pass for ``Λ z_k`` is bounded by ``|Λ| M_k`` up to a factor ``2`` per layer).
Every bound (intermediate ones included, since they feed the relaxations) is therefore widened by::

    margin = rtol · (|Λ| M_k) + atol · [|Λ| M_k > 0]
    rtol   = 2^{L+2} · (L+1) · (n_max + 2) · u,     atol = 1e-12,

with ``u = 2^-53``, ``L`` the number of ReLU layers and ``n_max`` the widest layer.  Why this covers the
error: each of the ``L+1`` backward steps is a matrix product of length at most ``n_max`` plus two
additions (``γ_{n_max+2}`` relative to the summands' magnitude), the concretisation is one more, every
summand is bounded by ``2^L |Λ| M_k`` (slopes in ``[0, 1]``, intercepts at most ``M_j``), and the factor
``4`` covers the rounding of the relaxation slopes and intercepts themselves and the ``1/(1 − n u)`` of
``γ_n``.  (ACAS Xu: ``rtol ≈ 1e-11``; mnistfc 784-256-256-10: ``rtol ≈ 4e-12``.)  The absolute
term (only where the summands are nonzero, so that an exactly-zero pre-activation keeps its exact
bounds ``[0, 0]``) covers gradual underflow.  This is a
first-order rounding-error analysis, not a machine-checked proof; for an exact certificate replay the
final query in exact arithmetic.
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass
from typing import Any

import numpy as np

from ..errors import ConfigError, SpecError
from ..network import Affine, Network
from .rounding import ATOL as _ATOL
from .rounding import U as _U
from .rounding import rounding_tolerance

__all__ = [
    "LayerBounds",
    "interval_bounds",
    "crown_bounds",
    "crown_linear",
    "crown_bounds_l2",
    "crown_linear_ball_l2",
    "margin_bounds",
    "margin_bounds_l2",
    "margin_spec",
    "rounding_tolerance",
    "ALPHA_MODES",
]

#: Target size (float64 elements) of the largest per-chunk array: boxes are processed in cache-sized chunks.
_CHUNK_ELEMENTS = 1 << 18
#: Above this fraction of unstable neurons in a chunk, an intermediate layer is bounded densely ([I; −I]).
_DENSE_FRACTION = 0.6


# --------------------------------------------------------------------------------------------------
# result type
# --------------------------------------------------------------------------------------------------
@dataclass(frozen=True, eq=False)
class LayerBounds:
    """Pre-activation bounds of every Affine layer (the last entry = output bounds).

    Attributes
    ----------
    lower, upper
        One array per affine layer, shape ``(n_j,)`` for a single box or ``(B, n_j)`` for ``B`` boxes.
        Entries ``0 … L−1`` are the inputs of the ReLU layers; the last entry bounds the network
        output ``f(x)`` — or ``C f(x)`` when a specification matrix ``spec`` was given.
    method
        ``"ibp"``, ``"crown"`` (box input set) or ``"crown-l2"`` (L2 ball ∩ box).
    spec
        The matrix ``C`` the last entry refers to (``(k, n_out)`` or ``(B, k, n_out)``); ``None`` means
        the identity (plain output bounds).
    """

    lower: tuple[np.ndarray, ...]
    upper: tuple[np.ndarray, ...]
    method: str
    spec: np.ndarray | None = None

    # ---- shape ---------------------------------------------------------------------------------
    @property
    def batched(self) -> bool:
        """True when the bounds carry a leading box axis."""
        return self.lower[0].ndim == 2

    @property
    def n_boxes(self) -> int:
        return int(self.lower[0].shape[0]) if self.batched else 1

    @property
    def n_layers(self) -> int:
        """Number of affine layers (ReLU layers + 1)."""
        return len(self.lower)

    # ---- output --------------------------------------------------------------------------------
    @property
    def output_lower(self) -> np.ndarray:
        return self.lower[-1]

    @property
    def output_upper(self) -> np.ndarray:
        return self.upper[-1]

    # ---- ReLU phases ---------------------------------------------------------------------------
    def unstable_masks(self) -> list[np.ndarray]:
        """Per ReLU layer, boolean mask of the unstable neurons ``l < 0 < u`` (shape of the bounds)."""
        return [(lo < 0) & (up > 0) for lo, up in zip(self.lower[:-1], self.upper[:-1])]

    def active_masks(self) -> list[np.ndarray]:
        """Per ReLU layer, mask of the stably active neurons ``l ≥ 0`` (ReLU is the identity)."""
        return [lo >= 0 for lo in self.lower[:-1]]

    def inactive_masks(self) -> list[np.ndarray]:
        """Per ReLU layer, mask of the stably inactive neurons ``u ≤ 0`` (ReLU is zero)."""
        return [up <= 0 for up in self.upper[:-1]]

    def unstable_counts(self) -> list[int]:
        """Number of unstable ReLUs per ReLU layer (summed over boxes when batched)."""
        return [int(m.sum()) for m in self.unstable_masks()]

    def unstable_per_box(self) -> np.ndarray:
        """Unstable counts per box, ``(B, n_relu_layers)`` (``(n_relu_layers,)`` for one box)."""
        counts = [m.sum(axis=-1) for m in self.unstable_masks()]
        if not counts:
            return np.zeros((self.n_boxes, 0) if self.batched else (0,), dtype=np.int64)
        return np.stack(counts, axis=-1).astype(np.int64)

    @property
    def n_unstable(self) -> int:
        """Total number of unstable ReLUs (summed over layers and boxes)."""
        return sum(self.unstable_counts())

    def box(self, i: int) -> LayerBounds:
        """The bounds of box ``i`` of a batched result, as a single-box result."""
        if not self.batched:
            raise IndexError("box(): these bounds are not batched")
        spec = self.spec[i] if self.spec is not None and self.spec.ndim == 3 else self.spec
        return LayerBounds(
            tuple(a[i] for a in self.lower), tuple(a[i] for a in self.upper), self.method, spec
        )

    def summary(self) -> dict[str, Any]:
        """JSON-ready digest: method, unstable counts per layer, output bound ranges."""
        return {
            "method": self.method,
            "n_boxes": self.n_boxes,
            "unstable_per_layer": self.unstable_counts(),
            "n_unstable": self.n_unstable,
            "output_lower_min": float(np.min(self.output_lower)),
            "output_upper_max": float(np.max(self.output_upper)),
        }


# --------------------------------------------------------------------------------------------------
# input handling
# --------------------------------------------------------------------------------------------------
def _as_boxes(net: Network, lo: Any, hi: Any) -> tuple[np.ndarray, np.ndarray, bool]:
    """Validate a box (or batch of boxes) and return ``(lo, hi)`` as ``(B, n)`` arrays plus ``single``."""
    lo = np.asarray(lo, dtype=np.float64)
    hi = np.asarray(hi, dtype=np.float64)
    if lo.ndim > 2 or hi.ndim > 2:
        raise SpecError(f"input box: expected arrays of shape (n,) or (B, n), got {lo.shape} and {hi.shape}")
    single = lo.ndim <= 1 and hi.ndim <= 1
    try:
        lo2, hi2 = np.broadcast_arrays(np.atleast_2d(lo), np.atleast_2d(hi))
    except ValueError:
        raise SpecError(
            f"input box: lower bounds {lo.shape} and upper bounds {hi.shape} differ in shape"
        ) from None
    n = net.n_inputs
    if lo2.shape[1] != n:
        raise SpecError(f"input box: has {lo2.shape[1]} entries but the network has {n} inputs")
    if not (np.all(np.isfinite(lo2)) and np.all(np.isfinite(hi2))):
        raise SpecError("input box: bounds must be finite numbers (found NaN or inf)")
    bad = np.argwhere(lo2 > hi2)
    if bad.size:
        b, i = (int(v) for v in bad[0])
        where = f"index {i}" if single else f"box {b}, index {i}"
        raise SpecError(f"input box: lower bound {lo2[b, i]!r} exceeds upper bound {hi2[b, i]!r} at {where}")
    return np.ascontiguousarray(lo2), np.ascontiguousarray(hi2), single


def _as_ball(net: Network, x0: Any, r: Any, lo: Any, hi: Any) -> tuple[np.ndarray, ...]:
    """Validate an L2 ball ``‖x − x0‖₂ ≤ r`` intersected with an optional box.

    Returns ``(x0 (B, n), r (B,), lo (B, n), hi (B, n), single)`` where ``[lo, hi]`` is the box
    intersected with the ball's bounding box ``[x0 − r, x0 + r]``.
    """
    x0 = np.asarray(x0, dtype=np.float64)
    r = np.asarray(r, dtype=np.float64)
    if x0.ndim > 2 or r.ndim > 1:
        raise SpecError(
            f"L2 ball: expected x0 of shape (n,) or (B, n) and a scalar or (B,) radius, got {x0.shape}"
        )
    single = x0.ndim == 1 and r.ndim == 0
    x02 = np.atleast_2d(x0)
    if x02.shape[1] != net.n_inputs:
        raise SpecError(
            f"L2 ball: centre has {x02.shape[1]} entries but the network has {net.n_inputs} inputs"
        )
    if not (np.all(np.isfinite(x02)) and np.all(np.isfinite(r))):
        raise SpecError("L2 ball: centre and radius must be finite numbers")
    if np.any(r < 0):
        raise SpecError(f"L2 ball: radius must be non-negative, got {r.min()!r}")
    B = max(x02.shape[0], r.shape[0] if r.ndim else 1)
    if x02.shape[0] not in (1, B) or (r.ndim and r.shape[0] not in (1, B)):
        raise SpecError(f"L2 ball: {x02.shape[0]} centres but {r.shape[0] if r.ndim else 1} radii")
    x02 = np.broadcast_to(x02, (B, x02.shape[1]))
    r1 = np.broadcast_to(r.reshape(-1), (B,))
    blo = x02 - r1[:, None]
    bhi = x02 + r1[:, None]
    # x0 ± r is rounded: widen the bounding box by one ulp-scale margin so it still contains the ball.
    pad = 4 * _U * (np.abs(x02) + r1[:, None])
    blo, bhi = blo - pad, bhi + pad
    if lo is None and hi is None:
        lo2, hi2 = blo, bhi
    else:
        lo_in = np.full(net.n_inputs, -np.inf) if lo is None else lo
        hi_in = np.full(net.n_inputs, np.inf) if hi is None else hi
        lo_a = np.asarray(lo_in, dtype=np.float64)
        hi_a = np.asarray(hi_in, dtype=np.float64)
        if np.any(np.isnan(lo_a)) or np.any(np.isnan(hi_a)):
            raise SpecError("input box: bounds must not be NaN")
        lo2 = np.maximum(blo, lo_a)
        hi2 = np.minimum(bhi, hi_a)
        if np.any(lo2 > hi2):
            raise SpecError("L2 ball: the ball does not meet the input box (empty input set)")
        single = single and lo_a.ndim <= 1 and hi_a.ndim <= 1
    lo2, hi2 = np.broadcast_arrays(np.atleast_2d(lo2), np.atleast_2d(hi2))
    if lo2.shape[0] != B:
        raise SpecError(f"L2 ball: {B} balls but {lo2.shape[0]} boxes")
    return (
        np.ascontiguousarray(x02),
        np.ascontiguousarray(r1),
        np.ascontiguousarray(lo2),
        np.ascontiguousarray(hi2),
        single,
    )


def _as_spec(net: Network, C: Any, B: int) -> tuple[np.ndarray, int]:
    """Validate a specification matrix; return it as ``(k, n_out)`` or ``(B', k, n_out)`` and the batch."""
    C = np.asarray(C, dtype=np.float64)
    if C.ndim == 1:
        C = C[None, :]
    if C.ndim not in (2, 3) or C.shape[-1] != net.n_outputs:
        raise SpecError(
            f"specification matrix C: expected shape (k, {net.n_outputs}) or (B, k, {net.n_outputs}), "
            f"got {C.shape}"
        )
    if not np.all(np.isfinite(C)):
        raise SpecError("specification matrix C: entries must be finite")
    if C.ndim == 3:
        if B not in (1, C.shape[0]):
            raise SpecError(f"specification matrix C: {C.shape[0]} matrices for {B} input boxes")
        B = C.shape[0]
    return C, B


def _widen(lo: np.ndarray, up: np.ndarray, mag: np.ndarray, rtol: float) -> tuple[np.ndarray, np.ndarray]:
    """``[lo − margin, up + margin]`` with ``margin = rtol·mag + atol·[mag > 0]``."""
    margin = rtol * mag + _ATOL * (mag > 0)
    return lo - margin, up + margin


def _magnitudes(affines: list[Affine], lo: np.ndarray, hi: np.ndarray) -> list[np.ndarray]:
    """Forward magnitude bounds ``M_k = |W_k| M_{k-1} + |b_k|``, ``M_{-1} = max(|lo|, |hi|)``."""
    m = np.maximum(np.abs(lo), np.abs(hi))
    out = []
    for a in affines:
        m = m @ np.abs(a.W).T + np.abs(a.b)
        out.append(m)
    return out


# --------------------------------------------------------------------------------------------------
# IBP
# --------------------------------------------------------------------------------------------------
def _interval_affine(
    W: np.ndarray, b: np.ndarray, lo: np.ndarray, hi: np.ndarray
) -> tuple[np.ndarray, np.ndarray]:
    """Exact-arithmetic range of ``W x + b`` over ``lo ≤ x ≤ hi`` (batched rows)."""
    c = 0.5 * (lo + hi)
    r = 0.5 * (hi - lo)
    mu = c @ W.T + b
    rad = r @ np.abs(W).T
    return mu - rad, mu + rad


def _ibp_chunk(net: Network, lo: np.ndarray, hi: np.ndarray, rtol: float) -> tuple[list, list, list]:
    affines = net.affines
    mags = _magnitudes(affines, lo, hi)
    lows, ups = [], []
    hl, hu = lo, hi
    for k, a in enumerate(affines):
        zl, zu = _widen(*_interval_affine(a.W, a.b, hl, hu), mags[k], rtol)
        lows.append(zl)
        ups.append(zu)
        hl, hu = np.maximum(zl, 0.0), np.maximum(zu, 0.0)
    return lows, ups, mags


def interval_bounds(net: Network, lo: Any, hi: Any) -> LayerBounds:
    """Interval bound propagation over the box ``lo ≤ x ≤ hi``.

    Parameters
    ----------
    net
        The network.
    lo, hi
        Box bounds, shape ``(n,)`` (one box) or ``(B, n)`` (``B`` boxes; one side may be ``(n,)``).

    Returns
    -------
    LayerBounds
        ``method="ibp"``; per affine layer ``k``: ``W_k c + b_k ∓ |W_k| r`` with centre/radius of the
        previous layer's post-ReLU interval, widened for rounding (module docstring).
    """
    lo2, hi2, single = _as_boxes(net, lo, hi)
    rtol = rounding_tolerance(net)
    lows, ups, _ = _ibp_chunk(net, lo2, hi2, rtol)
    return _pack(lows, ups, "ibp", None, single)


def _pack(lows: list, ups: list, method: str, spec: np.ndarray | None, single: bool) -> LayerBounds:
    if single:
        lows = [a[0] for a in lows]
        ups = [a[0] for a in ups]
    return LayerBounds(tuple(lows), tuple(ups), method, spec)


# --------------------------------------------------------------------------------------------------
# CROWN
# --------------------------------------------------------------------------------------------------
def _alpha_adaptive(lo: np.ndarray, up: np.ndarray) -> np.ndarray:
    return (up >= -lo).astype(np.float64)


def _alpha_zero(lo: np.ndarray, up: np.ndarray) -> np.ndarray:
    return np.zeros_like(lo)


def _alpha_one(lo: np.ndarray, up: np.ndarray) -> np.ndarray:
    return np.ones_like(lo)


def _alpha_parallel(lo: np.ndarray, up: np.ndarray) -> np.ndarray:
    den = up - lo
    return np.divide(up, den, out=np.zeros_like(up), where=den > 0)


#: Lower-slope rules for unstable ReLUs (any α ∈ [0, 1] is sound; a float selects a constant α).
ALPHA_MODES: dict[str, Callable[[np.ndarray, np.ndarray], np.ndarray]] = {
    "adaptive": _alpha_adaptive,  # α = 1 if u ≥ −l else 0 (CROWN-Ada / DeepPoly)
    "zero": _alpha_zero,
    "one": _alpha_one,
    "parallel": _alpha_parallel,  # α = u/(u − l): lower line parallel to the upper one
}


def _alpha_rule(alpha: str | float) -> Callable[[np.ndarray, np.ndarray], np.ndarray]:
    if isinstance(alpha, str):
        rule = ALPHA_MODES.get(alpha)
        if rule is None:
            raise ConfigError(
                f"alpha: unknown mode {alpha!r}; choose one of {', '.join(ALPHA_MODES)} or a number in [0, 1]"
            )
        return rule
    a = float(alpha)
    if not 0.0 <= a <= 1.0:
        raise ConfigError(f"alpha: a constant lower slope must lie in [0, 1], got {a!r}")
    return lambda lo, up: np.full_like(lo, a)


def _relaxation(lo: np.ndarray, up: np.ndarray, rule: Callable) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """Slopes and intercept ``(d_lo, d_up, t_up)`` of the relaxation ``d_lo z ≤ relu(z) ≤ d_up z + t_up``."""
    active = lo >= 0
    unstable = (lo < 0) & (up > 0)
    den = up - lo
    s = np.divide(up, den, out=np.zeros_like(up), where=unstable)
    d_up = np.where(active, 1.0, s)
    t_up = np.where(unstable, -s * lo, 0.0)
    d_lo = np.where(active, 1.0, np.where(unstable, rule(lo, up), 0.0))
    return d_lo, d_up, t_up


class _Domain:
    """The input set: a box ``[lo, hi]``, optionally intersected with an L2 ball ``‖x − x0‖₂ ≤ r``."""

    def __init__(
        self, lo: np.ndarray, hi: np.ndarray, x0: np.ndarray | None = None, r: np.ndarray | None = None
    ):
        self.lo, self.hi, self.x0, self.r = lo, hi, x0, r

    def chunk(self, s: slice) -> _Domain:
        return _Domain(
            self.lo[s],
            self.hi[s],
            None if self.x0 is None else self.x0[s],
            None if self.r is None else self.r[s],
        )

    def magnitude(self) -> np.ndarray:
        """``M_{-1}``: ``max(|lo|, |hi|)``, and with a ball also ``|x0| + r`` (module docstring)."""
        m = np.maximum(np.abs(self.lo), np.abs(self.hi))
        if self.x0 is not None:
            m = np.maximum(m, np.abs(self.x0) + self.r[:, None])
        return m

    def lower(self, A: np.ndarray) -> np.ndarray:
        """``min_x A x`` over the set (rows of ``A`` (B, m, n) or (m, n)) → ``(B, m)``.

        Box: ``Σ max(A,0) lo + min(A,0) hi``; ball: ``A x0 − r ‖A‖₂``; the maximum of the two.
        """
        pos = np.maximum(A, 0.0)
        neg = A - pos
        val = _rowdot(pos, self.lo) + _rowdot(neg, self.hi)
        if self.x0 is not None:
            ball = _rowdot(A, self.x0) - self.r[:, None] * np.sqrt(np.einsum("...i,...i->...", A, A))
            val = np.maximum(val, ball)
        return val


def _rowdot(A: np.ndarray, x: np.ndarray) -> np.ndarray:
    """``(B, m, n)·(B, n) → (B, m)`` or ``(m, n)·(B, n) → (B, m)``."""
    if A.ndim == 2:
        return x @ A.T
    return np.einsum("bmn,bn->bm", A, x)


def _mm(A: np.ndarray, W: np.ndarray) -> np.ndarray:
    """``A @ W`` for ``A`` of shape ``(m, n)`` or ``(B, m, n)``, as a single 2-D GEMM."""
    if A.ndim == 3:
        B, m, n = A.shape
        return (A.reshape(B * m, n) @ W).reshape(B, m, -1)
    return A @ W


def _backward_lower(
    affines: list[Affine], relax: list[tuple], k: int, Lam: np.ndarray | None, dom: _Domain
) -> np.ndarray:
    """Lower bound of ``Lam z_k`` over the domain (see the module docstring for the recursion).

    ``Lam`` is ``(m, n_k)`` or ``(B, m, n_k)``, or ``None`` for the stacked ``[I; −I]`` (lower and
    upper bounds of every neuron of layer ``k``); ``relax[j]`` holds ``(d_lo, d_up, t_up)``, each
    ``(B, n_j)``, for every ReLU layer ``j < k``.  Returns ``(B, m)``.
    """
    a = affines[k]
    if Lam is None:
        kappa = np.concatenate([a.b, -a.b])
        A = np.vstack([a.W, -a.W])
    else:
        kappa = _mm(Lam, a.b[:, None])[..., 0]
        A = _mm(Lam, a.W)
    return _backward_from(affines, relax, k, A, kappa, dom)


def _backward_from(
    affines: list[Affine], relax: list[tuple], k: int, A: np.ndarray, kappa: np.ndarray, dom: _Domain
) -> np.ndarray:
    """Continue the backward pass from ``A h_{k−1} + κ`` (``A`` acting on the input of layer ``k``)."""
    for j in range(k - 1, -1, -1):
        d_lo, d_up, t_up = relax[j]
        neg = A < 0
        # κ += A⁻ t_up ;  A ← A⁺ diag(d_lo) + A⁻ diag(d_up)  (slope d_lo where A ≥ 0, d_up where A < 0)
        kappa = kappa + _rowdot(np.where(neg, A, 0.0), t_up)
        A = A * np.where(neg, d_up[:, None, :], d_lo[:, None, :])
        aj = affines[j]
        kappa = kappa + _mm(A, aj.b[:, None])[..., 0]
        A = _mm(A, aj.W)
    return kappa + dom.lower(A)


def _crown_chunk(
    net: Network,
    dom: _Domain,
    C: np.ndarray | None,
    rule: Callable,
    rtol: float,
    given: tuple[list, list] | None = None,
    upper: bool = True,
    prior: tuple[list, list] | None = None,
) -> tuple[list, list, np.ndarray | None, np.ndarray | None]:
    """CROWN on one chunk of boxes.

    Returns the per-layer bounds ``(lows, ups)`` (entries ``0…L``, plain output last) and, when ``C``
    is given, the bounds ``(lb, ub)`` of ``C f(x)``.  ``given`` supplies precomputed intermediate bounds
    (layers ``0…L−1``) instead of recomputing them; ``prior`` supplies bounds of layers ``0…L−1`` valid
    on a superset of each box, intersected with the interval bounds before anything else.
    """
    affines = net.affines
    L = len(affines) - 1
    lo, hi = dom.lo, dom.hi
    ibp_l, ibp_u, mags = _ibp_chunk(net, lo, hi, rtol)
    if dom.x0 is not None:  # the ball term's summands scale with |x0| + r (module docstring)
        m0 = dom.magnitude()
        mags = _magnitudes(affines, m0, m0)
    if prior is not None:
        for k in range(L):
            ibp_l[k], ibp_u[k] = np.maximum(ibp_l[k], prior[0][k]), np.minimum(ibp_u[k], prior[1][k])
    lows, ups, relax = [], [], []
    if given is not None:
        lows, ups = list(given[0]), list(given[1])
        relax = [_relaxation(lows[j], ups[j], rule) for j in range(L)]
    for k in range(len(lows), L):
        zl, zu = _crown_layer(affines, relax, k, dom, lows, ups, ibp_l[k], ibp_u[k], mags[k], rtol)
        lows.append(zl)
        ups.append(zu)
        relax.append(_relaxation(zl, zu, rule))
    if C is None:
        zl, zu = _crown_layer(affines, relax, L, dom, lows, ups, ibp_l[L], ibp_u[L], mags[L], rtol)
        return [*lows, zl], [*ups, zu], None, None
    # C f(x): run the backward pass with [C; −C]; intersect with the interval bound of (C W_L) h + C b_L.
    # (The plain output entry is then only the IBP one: callers replace it by the bounds on C f.)
    # With upper=False only the lower bound is back-propagated (the upper one is then IBP's).
    kk = C.shape[-2]
    lb = _backward_lower(affines, relax, L, np.concatenate([C, -C], axis=-2) if upper else C, dom)
    mag = _rowdot(np.abs(C), mags[L])
    cl, cu = _widen(lb[:, :kk], -lb[:, kk:] if upper else np.inf, mag, rtol)
    hl, hu = (lo, hi) if L == 0 else (np.maximum(lows[L - 1], 0), np.maximum(ups[L - 1], 0))
    sl, su = _widen(*_interval_spec(C, affines[L], hl, hu), mag, rtol)
    return [*lows, ibp_l[L]], [*ups, ibp_u[L]], np.maximum(cl, sl), np.minimum(cu, su)


def _crown_layer(
    affines: list[Affine],
    relax: list[tuple],
    k: int,
    dom: _Domain,
    lows: list[np.ndarray],
    ups: list[np.ndarray],
    ibp_l: np.ndarray,
    ibp_u: np.ndarray,
    mag: np.ndarray,
    rtol: float,
) -> tuple[np.ndarray, np.ndarray]:
    """Final bounds of layer ``k``: CROWN ∩ (IBP step from the tightened layer ``k−1``) ∩ plain IBP.

    For a ReLU layer (``k < L``) the backward pass only runs for the neurons that the two interval
    bounds leave unstable; the others keep the interval bounds (their relaxation is exact anyway).

    Layer 0 is affine in ``x``: its interval bound is exact on a box, so CROWN only runs there when an
    L2 ball cuts the input set further.
    """
    if k == 0 and dom.x0 is None:
        return ibp_l, ibp_u
    a = affines[k]
    nk = a.W.shape[0]
    zl, zu = ibp_l, ibp_u
    if k > 0:
        hl, hu = np.maximum(lows[k - 1], 0), np.maximum(ups[k - 1], 0)
        sl, su = _widen(*_interval_affine(a.W, a.b, hl, hu), mag, rtol)
        zl, zu = np.maximum(zl, sl), np.minimum(zu, su)
    # Only neurons unstable under these cheap (sound) bounds need the backward pass: a stable neuron's
    # relaxation is exact whatever its bounds, so the relaxations built from the result are the same.
    unstable = (zl < 0) & (zu > 0)
    m = int(unstable.sum(axis=1).max()) if unstable.size else 0
    if m == 0 and k < len(affines) - 1:
        return zl, zu
    if k == len(affines) - 1:  # the output layer: every bound matters
        lb = _backward_lower(affines, relax, k, None, dom)
        cl, cu = _widen(lb[:, :nk], -lb[:, nk:], mag, rtol)
        return np.maximum(zl, cl), np.minimum(zu, cu)
    if m > _DENSE_FRACTION * nk:  # most neurons unstable: one dense pass, kept for the unstable ones only
        lb = _backward_lower(affines, relax, k, None, dom)
        cl, cu = _widen(lb[:, :nk], -lb[:, nk:], mag, rtol)
        # (stable neurons keep the interval bounds, so the result does not depend on the chunk's mix)
        return np.where(unstable, np.maximum(zl, cl), zl), np.where(unstable, np.minimum(zu, cu), zu)
    order = np.argsort(~unstable, axis=1, kind="stable")[:, :m]  # per box: unstable neurons first, padded
    valid = np.take_along_axis(unstable, order, 1)
    Ws = a.W[order] * valid[..., None]  # rows e_i W_k of the selected neurons, (B, m, n_{k−1})
    bs = a.b[order] * valid
    lb = _backward_from(
        affines, relax, k, np.concatenate([Ws, -Ws], axis=1), np.concatenate([bs, -bs], axis=1), dom
    )
    cl, cu = _widen(lb[:, :m], -lb[:, m:], np.take_along_axis(mag, order, 1), rtol)
    rows = np.arange(zl.shape[0])[:, None]
    zl, zu = zl.copy(), zu.copy()
    cur_l, cur_u = zl[rows, order], zu[rows, order]
    zl[rows, order] = np.where(valid, np.maximum(cur_l, cl), cur_l)
    zu[rows, order] = np.where(valid, np.minimum(cur_u, cu), cur_u)
    return zl, zu


def _interval_spec(C: np.ndarray, a: Affine, hl: np.ndarray, hu: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    """Interval range of ``C (W h + b) = (C W) h + C b`` over ``hl ≤ h ≤ hu``; ``C`` 2-D or batched 3-D."""
    CW = C @ a.W
    mu = _rowdot(CW, 0.5 * (hl + hu)) + C @ a.b
    rad = _rowdot(np.abs(CW), 0.5 * (hu - hl))
    return mu - rad, mu + rad


def _chunk_size(net: Network, k_spec: int) -> int:
    sizes = [a.W.shape[0] for a in net.affines]
    widest_in = max(a.W.shape[1] for a in net.affines)
    per_box = 2 * max(max(sizes[1:] or [1]), k_spec, 1) * widest_in
    return max(1, _CHUNK_ELEMENTS // per_box)


def _hidden_bounds(net: Network, bounds: LayerBounds, B: int, what: str) -> tuple[list, list]:
    """The hidden-layer entries of ``bounds`` broadcast to ``B`` boxes (checked against the network)."""
    L = net.hidden_sizes
    if bounds.n_layers != len(L) + 1 or any(bounds.lower[j].shape[-1] != n for j, n in enumerate(L)):
        raise SpecError(f"{what}: the given LayerBounds do not match the network's layer sizes")
    if bounds.batched and bounds.n_boxes != B:
        raise SpecError(f"{what}: the given LayerBounds hold {bounds.n_boxes} boxes, expected {B}")
    gl = [np.broadcast_to(np.atleast_2d(a), (B, a.shape[-1])) for a in bounds.lower[:-1]]
    gu = [np.broadcast_to(np.atleast_2d(a), (B, a.shape[-1])) for a in bounds.upper[:-1]]
    return gl, gu


def _run_crown(
    net: Network,
    dom: _Domain,
    single: bool,
    C: Any,
    alpha: str | float,
    method: str,
    bounds: LayerBounds | None = None,
    upper: bool = True,
    prior: LayerBounds | None = None,
) -> tuple[LayerBounds, np.ndarray | None, np.ndarray | None]:
    rule = _alpha_rule(alpha)
    rtol = rounding_tolerance(net)
    B = dom.lo.shape[0]
    Cm = None
    if C is not None:
        Cm, B2 = _as_spec(net, C, B)
        if B2 != B:  # one box, many specs: repeat the box
            dom = _Domain(
                *(None if v is None else np.repeat(v, B2, axis=0) for v in (dom.lo, dom.hi, dom.x0, dom.r))
            )
            B = B2
            single = False
    given_all = None if bounds is None else _hidden_bounds(net, bounds, B, "bounds")
    prior_all = None if prior is None else _hidden_bounds(net, prior, B, "prior")
    k_spec = 2 * (Cm.shape[-2] if Cm is not None else net.n_outputs)
    step = _chunk_size(net, k_spec)
    parts = []
    for s0 in range(0, B, step):
        s = slice(s0, min(B, s0 + step))
        Cs = Cm[s] if Cm is not None and Cm.ndim == 3 else Cm
        given = None if given_all is None else ([a[s] for a in given_all[0]], [a[s] for a in given_all[1]])
        pri = None if prior_all is None else ([a[s] for a in prior_all[0]], [a[s] for a in prior_all[1]])
        parts.append(_crown_chunk(net, dom.chunk(s), Cs, rule, rtol, given, upper, pri))
    n_aff = len(net.affines)
    lows = [np.concatenate([p[0][k] for p in parts]) for k in range(n_aff)]
    ups = [np.concatenate([p[1][k] for p in parts]) for k in range(n_aff)]
    if Cm is None:
        return _pack(lows, ups, method, None, single), None, None
    lb = np.concatenate([p[2] for p in parts])
    ub = np.concatenate([p[3] for p in parts])
    if single:
        lb, ub = lb[0], ub[0]
    return _pack(lows, ups, method, None, single), lb, ub


def crown_bounds(
    net: Network,
    lo: Any,
    hi: Any,
    C: Any = None,
    alpha: str | float = "adaptive",
    prior: LayerBounds | None = None,
) -> LayerBounds:
    """CROWN bounds of every layer over the box ``lo ≤ x ≤ hi``.

    Each intermediate layer ``k`` is bounded by a backward pass with ``Λ = I`` to the input box,
    using the relaxations of the earlier layers' final bounds; its final bounds are the element-wise
    intersection with IBP (never looser than IBP).  See the module docstring for the maths.

    Parameters
    ----------
    lo, hi
        Box bounds ``(n,)`` or ``(B, n)``.
    C
        Optional specification matrix ``(k, n_out)`` or ``(B, k, n_out)``; the last entry of the result
        then bounds ``C f(x)`` (and ``spec`` records ``C``).
    alpha
        Lower slope of unstable ReLUs: ``"adaptive"`` (default), ``"zero"``, ``"one"``, ``"parallel"``
        or a constant in ``[0, 1]``.
    prior
        Optional hidden-layer bounds that hold at every input ``x`` of a region ``R`` (e.g. a parent
        box's bounds in input branch and bound, where ``R`` is the parent box, or bounds with a ReLU
        split imposed, where ``R`` is the part of the box on one side of that neuron).  They are
        intersected with every hidden layer's bounds before the relaxations are built.  Every step is
        then valid at each ``x ∈ box ∩ R`` (the intersection of sound bounds is sound, the relaxations
        hold wherever the bounds do, and concretising over the whole box is a bound over ``box ∩ R``),
        so **the result bounds the network on ``box ∩ R``** — on the whole box when ``R`` contains it.
        Neurons stable under the prior stay stable (no backward pass for them).  If the prior makes
        some lower bound exceed its upper bound, ``box ∩ R`` is empty and the result is meaningless
        (callers detect this).  Its last entry is not used.
    """
    lo2, hi2, single = _as_boxes(net, lo, hi)
    res, lb, ub = _run_crown(net, _Domain(lo2, hi2), single, C, alpha, "crown", prior=prior)
    if C is None:
        return res
    return LayerBounds(
        res.lower[:-1] + (lb,), res.upper[:-1] + (ub,), "crown", np.asarray(C, dtype=np.float64)
    )


def crown_linear(
    net: Network, lo: Any, hi: Any, C: Any, bounds: LayerBounds | None = None, alpha: str | float = "adaptive"
) -> tuple[np.ndarray, np.ndarray]:
    """Bounds ``lb ≤ C f(x) ≤ ub`` over the box ``lo ≤ x ≤ hi``.

    ``C`` is ``(k, n_out)`` (shared) or ``(B, k, n_out)`` (one per box), e.g. rows ``e_c − e_j`` for the
    margins ``f_c − f_j``.  ``bounds`` (from :func:`crown_bounds` or :func:`interval_bounds` on the same
    boxes) supplies the intermediate bounds for the relaxations; by default CROWN computes them.
    Returns ``(lb, ub)`` of shape ``(k,)`` or ``(B, k)``.  The result is the intersection of the CROWN
    backward bound ``[C; −C]`` and the interval bound of ``(C W_L) h + C b_L``.
    """
    lo2, hi2, single = _as_boxes(net, lo, hi)
    _, lb, ub = _run_crown(net, _Domain(lo2, hi2), single, C, alpha, "crown", bounds)
    assert lb is not None and ub is not None
    return lb, ub


def crown_bounds_l2(
    net: Network,
    x0: Any,
    r: Any,
    lo: Any = None,
    hi: Any = None,
    C: Any = None,
    alpha: str | float = "adaptive",
) -> LayerBounds:
    """CROWN bounds over ``{‖x − x0‖₂ ≤ r} ∩ [lo, hi]`` (the box is optional).

    Every concretisation takes the maximum of the box bound (on the box intersected with the ball's
    bounding box ``[x0 − r, x0 + r]``) and the ball bound ``A x0 + κ − r ‖A‖₂``; both are sound for the
    intersection, hence so is their maximum.  IBP runs on the intersected box.  ``x0`` is ``(n,)`` or
    ``(B, n)``, ``r`` a scalar or ``(B,)``.  ``method="crown-l2"``.
    """
    x02, r1, lo2, hi2, single = _as_ball(net, x0, r, lo, hi)
    res, lb, ub = _run_crown(net, _Domain(lo2, hi2, x02, r1), single, C, alpha, "crown-l2")
    if C is None:
        return res
    return LayerBounds(
        res.lower[:-1] + (lb,), res.upper[:-1] + (ub,), "crown-l2", np.asarray(C, dtype=np.float64)
    )


def crown_linear_ball_l2(
    net: Network,
    x0: Any,
    r: Any,
    C: Any,
    lo: Any = None,
    hi: Any = None,
    bounds: LayerBounds | None = None,
    alpha: str | float = "adaptive",
) -> tuple[np.ndarray, np.ndarray]:
    """Bounds ``lb ≤ C f(x) ≤ ub`` over ``{‖x − x0‖₂ ≤ r} ∩ [lo, hi]``; see :func:`crown_bounds_l2`."""
    x02, r1, lo2, hi2, single = _as_ball(net, x0, r, lo, hi)
    _, lb, ub = _run_crown(net, _Domain(lo2, hi2, x02, r1), single, C, alpha, "crown-l2", bounds)
    assert lb is not None and ub is not None
    return lb, ub


# --------------------------------------------------------------------------------------------------
# margins (local robustness quick verdicts)
# --------------------------------------------------------------------------------------------------
def margin_spec(n_out: int, c: Any) -> np.ndarray:
    """Specification rows ``e_c − e_j`` for every ``j`` (row ``c`` is zero): ``(n_out, n_out)`` or ``(B, …)``.

    ``c`` is a class index or a ``(B,)`` array of them.
    """
    c_arr = np.asarray(c)
    if not np.issubdtype(c_arr.dtype, np.integer) or np.any(c_arr < 0) or np.any(c_arr >= n_out):
        raise SpecError(f"class index: expected integer(s) in [0, {n_out}), got {c!r}")
    eye = np.eye(n_out)
    if c_arr.ndim == 0:
        return eye[int(c_arr)][None, :] - eye
    return eye[c_arr][:, None, :] - eye[None, :, :]


def _margins_from(lb: np.ndarray, c: Any) -> np.ndarray:
    c_arr = np.asarray(c)
    out = np.array(lb, dtype=np.float64, copy=True)
    if c_arr.ndim == 0:
        out[..., int(c_arr)] = np.inf
    else:
        out[np.arange(out.shape[0]), c_arr] = np.inf
    return out


def _margin_ibp(net: Network, lo: Any, hi: Any, c: Any) -> np.ndarray:
    """IBP margins: interval of ``(C W_L) h + C b_L`` on the IBP bounds of the last hidden layer."""
    lo2, hi2, single = _as_boxes(net, lo, hi)
    C, B = _as_spec(net, margin_spec(net.n_outputs, c), lo2.shape[0])
    if lo2.shape[0] != B:
        lo2, hi2 = np.repeat(lo2, B, axis=0), np.repeat(hi2, B, axis=0)
        single = False
    rtol = rounding_tolerance(net)
    lows, ups, mags = _ibp_chunk(net, lo2, hi2, rtol)
    hl, hu = (lo2, hi2) if len(lows) == 1 else (np.maximum(lows[-2], 0), np.maximum(ups[-2], 0))
    sl, su = _widen(*_interval_spec(C, net.affines[-1], hl, hu), _rowdot(np.abs(C), mags[-1]), rtol)
    return sl[0] if single else sl


def _margin_crown(net: Network, lo: Any, hi: Any, c: Any) -> np.ndarray:
    lo2, hi2, single = _as_boxes(net, lo, hi)
    C = margin_spec(net.n_outputs, c)
    _, lb, _ = _run_crown(net, _Domain(lo2, hi2), single, C, "adaptive", "crown", upper=False)
    return lb


_MARGIN_METHODS: dict[str, Callable[[Network, Any, Any, Any], np.ndarray]] = {
    "ibp": _margin_ibp,
    "crown": _margin_crown,
}


def margin_bounds(net: Network, lo: Any, hi: Any, c: Any, method: str = "crown") -> np.ndarray:
    """Lower bounds of ``f_c(x) − f_j(x)`` over the box, for every ``j`` (entry ``c`` is ``+inf``).

    The quick verdict for local robustness: if every entry is ``> 0`` then ``argmax f = c`` on the
    whole box (ties count as violations, hence the strict inequality).

    Parameters
    ----------
    lo, hi
        Box ``(n,)`` or ``(B, n)``.
    c
        Class index, or a ``(B,)`` integer array (one class per box).
    method
        ``"crown"`` (default; :func:`crown_linear` with rows ``e_c − e_j``) or ``"ibp"``.

    Returns
    -------
    ``(n_out,)`` or ``(B, n_out)`` array.
    """
    fn = _MARGIN_METHODS.get(method)
    if fn is None:
        raise ConfigError(
            f"method: unknown bound method {method!r}; choose one of {', '.join(_MARGIN_METHODS)}"
        )
    return _margins_from(fn(net, lo, hi, c), c)


def margin_bounds_l2(net: Network, x0: Any, r: Any, c: Any, lo: Any = None, hi: Any = None) -> np.ndarray:
    """Lower bounds of ``f_c − f_j`` over ``{‖x − x0‖₂ ≤ r} ∩ [lo, hi]`` (CROWN); entry ``c`` is ``+inf``."""
    x02, r1, lo2, hi2, single = _as_ball(net, x0, r, lo, hi)
    C = margin_spec(net.n_outputs, c)
    _, lb, _ = _run_crown(net, _Domain(lo2, hi2, x02, r1), single, C, "adaptive", "crown-l2", upper=False)
    return _margins_from(lb, c)
