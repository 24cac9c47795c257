r"""Floating-point soundness in one place: the rounding constants every sound bound is widened by, and
the exact checks replay applies to the float32 points onnxruntime evaluates.

Bound widening (float64, round to nearest)
------------------------------------------
``U = 2^-53`` is the unit roundoff of float64.  A dot product of length ``n`` computed in float64 is off
from the exact one by at most ``γ_n |a|ᵀ|b|`` with ``γ_n = n U/(1 − n U)`` (Higham, *Accuracy and
Stability of Numerical Algorithms*, §3.1).  The bound modules (:mod:`.crown`, :mod:`.alpha`,
:mod:`.twin`, the input-split search, FAITHUB) therefore widen every computed bound by

    margin = rtol · mag + ATOL · [mag > 0],     rtol = rounding_tolerance(net),

where ``mag`` bounds the magnitude of the summands (see :mod:`.crown` for the derivation of
``rtol = 2^{L+2} (L+1) (n_max + 2) U``) and ``ATOL = 1e-12`` covers gradual underflow (only where the
summands are nonzero, so that an exact zero keeps its exact bounds).

Exact region checks (replay)
----------------------------
onnxruntime evaluates float32 inputs.  A counterexample is the float32 point ``x̂`` that was actually
evaluated (held as float64, which represents every float32 exactly), so its membership in the
property's region must be decided for ``x̂`` itself and *exactly* (in real arithmetic on the float64
values of the region's data).  :func:`within_linf`, :func:`within_l2` and :func:`within_box` do that:
a float64 fast path with a rigorous error bound decides the clear cases, and the remaining borderline
coordinates are decided in exact rational arithmetic (:class:`fractions.Fraction`, which converts a
float exactly).  :func:`f32` rounds to float32 (round to nearest) and :func:`f32_toward` moves one
float32 step towards a target, which replay uses to bring a rounded point back into the region.
"""

from __future__ import annotations

from fractions import Fraction

import numpy as np

from ..network import Network

__all__ = [
    "U",
    "ATOL",
    "EPS64",
    "rounding_tolerance",
    "widen_margin",
    "f32",
    "f32_toward",
    "within_box",
    "within_linf",
    "within_l2",
]

#: unit roundoff of float64 (round to nearest)
U = 2.0**-53
#: machine epsilon of float64 (the spacing of floats in [1, 2)), ``2 U``
EPS64 = float(np.finfo(np.float64).eps)
#: absolute widening that covers gradual underflow (applied only where the summands are nonzero)
ATOL = 1e-12

# legacy private names (the modules used to define their own copies)
_U = U
_ATOL = ATOL


def rounding_tolerance(net: Network) -> float:
    """The relative widening ``rtol = 2^{L+2} (L+1) (n_max + 2) U`` applied to every bound.

    ``L`` is the number of ReLU layers and ``n_max`` the widest layer (inputs included); see
    :mod:`encoders.bounds.crown` for why it covers the rounding of every bound computation.
    """
    affines = net.affines
    L = len(affines) - 1
    n_max = max(max(a.W.shape) for a in affines)
    return 2.0 ** (L + 2) * (L + 1) * (n_max + 2) * U


def widen_margin(mag: np.ndarray, rtol: float) -> np.ndarray:
    """``rtol · mag + ATOL · [mag > 0]``: how far a bound of summand magnitude ``mag`` is widened."""
    mag = np.asarray(mag, dtype=np.float64)
    return rtol * mag + ATOL * (mag > 0)


# --------------------------------------------------------------------------------------------------
# float32 points
# --------------------------------------------------------------------------------------------------
def f32(x: np.ndarray) -> np.ndarray:
    """``x`` rounded to float32 (to nearest), returned as float64 (exactly the same values)."""
    return np.asarray(x, dtype=np.float64).astype(np.float32).astype(np.float64)


def f32_toward(x: np.ndarray, target: np.ndarray, mask: np.ndarray | None = None) -> np.ndarray:
    """One float32 step of every coordinate of the float32 point ``x`` towards ``target`` (float64).

    Coordinates already equal to ``target`` (after rounding ``target`` to float32 in the direction of
    ``x``) and coordinates outside ``mask`` stay.  The result is float32-representable.
    """
    x = np.asarray(x, dtype=np.float64)
    t = np.asarray(target, dtype=np.float64)
    x32 = x.astype(np.float32)
    # a float32 target on x's side of the real target, so that stepping never overshoots it by more
    # than one float32 step
    step = np.nextafter(x32, np.where(t > x, np.float32(np.inf), np.float32(-np.inf)).astype(np.float32))
    moved = np.where(t != x, step, x32).astype(np.float64)
    if mask is not None:
        moved = np.where(mask, moved, x)
    return moved


# --------------------------------------------------------------------------------------------------
# exact region membership
# --------------------------------------------------------------------------------------------------
def within_box(x: np.ndarray, lo: np.ndarray | None, hi: np.ndarray | None) -> np.ndarray:
    """Per coordinate: ``lo ≤ x ≤ hi`` (float comparisons are exact; ``None`` = unbounded)."""
    x = np.asarray(x, dtype=np.float64)
    ok = np.isfinite(x)
    if lo is not None:
        ok &= x >= np.asarray(lo, dtype=np.float64)
    if hi is not None:
        ok &= x <= np.asarray(hi, dtype=np.float64)
    return ok


def within_linf(x: np.ndarray, c: np.ndarray, r: float) -> np.ndarray:
    """Per coordinate, exactly: ``|x_i − c_i| ≤ r`` in real arithmetic on the float64 values.

    Fast path: ``d = fl(|x − c|)`` has ``|d − |x − c|| ≤ U·|x − c|``, so ``d ≤ r (1 − 4U)`` proves the
    coordinate inside and ``d > r (1 + 4U)`` proves it outside; the rest is decided with
    :class:`fractions.Fraction`.
    """
    x = np.asarray(x, dtype=np.float64).reshape(-1)
    c = np.broadcast_to(np.asarray(c, dtype=np.float64).reshape(-1), x.shape)
    r = float(r)
    with np.errstate(invalid="ignore", over="ignore"):
        d = np.abs(x - c)
    inside = np.isfinite(d) & (d <= r * (1.0 - 4.0 * U))
    outside = ~np.isfinite(d) | (d > r * (1.0 + 4.0 * U))
    for i in np.flatnonzero(~inside & ~outside):
        inside[i] = abs(Fraction(float(x[i])) - Fraction(float(c[i]))) <= Fraction(r)
    return inside


def within_l2(x: np.ndarray, c: np.ndarray, r: float) -> bool:
    """Exactly: ``Σ_i (x_i − c_i)² ≤ r²`` in real arithmetic on the float64 values.

    Fast path: ``s = fl(Σ fl(x_i − c_i)²)`` is within ``γ_{n+3} · Σ (x_i − c_i)²`` of the exact sum
    (one rounding for the difference, squared: ``(1+U)² ≤ 1 + 3U``, plus the sum of ``n`` terms), so
    with ``σ = 2γ + 8U`` (which also absorbs the roundings of the test's own products and of
    ``fl(r²)``, within ``U`` of ``r²``) ``s (1 + σ) ≤ r² (1 − 4U)`` proves the point inside and
    ``s (1 − σ) > r² (1 + 4U)`` proves it outside; the borderline case is decided with
    :class:`fractions.Fraction`.
    """
    x = np.asarray(x, dtype=np.float64).reshape(-1)
    c = np.broadcast_to(np.asarray(c, dtype=np.float64).reshape(-1), x.shape)
    if not np.all(np.isfinite(x)):
        return False
    r = float(r)
    n = x.size
    gamma = (n + 3) * U / (1.0 - (n + 3) * U)
    slack = 2.0 * gamma + 8.0 * U  # |S − s| ≤ γ S/(1 − γ) ≤ 2γ s, plus the roundings of these products
    d = x - c
    s = float(d @ d)
    r2 = r * r
    if s * (1.0 + slack) <= r2 * (1.0 - 4.0 * U):
        return True
    if s * (1.0 - slack) > r2 * (1.0 + 4.0 * U):
        return False
    exact = sum((Fraction(float(a)) - Fraction(float(b))) ** 2 for a, b in zip(x, c))
    return exact <= Fraction(r) ** 2
