"""Property encoders: each property builds a :class:`~encoders.program.Program` whose feasible points
are *violations*, plus the exact check that replay applies to a candidate's real outputs.

Every property implements

``encode(nets, options) -> Program``
    The violation query.  Infeasible ⇒ the property holds (given sound bounds and exact solving).
``violated(xs, ys) -> bool``
    The exact definition, evaluated on concrete inputs ``xs`` (name space → flat input) and the
    outputs ``ys`` that onnxruntime computed for them.  Replay uses it; it is the only thing that can
    turn a solver's candidate into FALSIFIED.
``project(xs) -> xs``
    Move a candidate (which satisfies the constraints only up to solver tolerances) into the exact
    input region (clip to the box / ball) before replay.
``refine(program, assignment) -> list[LinearRow]``
    For encodings that use a relaxation (L2 ball as a polyhedron, the softmax-confidence set as
    tangent cuts), the cuts that separate a spurious candidate; ``[]`` when the candidate satisfies
    every exact constraint (then a failed replay is a numerical discrepancy → UNKNOWN).
``quick_check(nets) -> bool``
    True when cheap bound propagation (CROWN) already proves the property.
``region() -> (lo, hi)``, ``namespaces``
    The box that contains the input region of each name space (for the two-copy property: the domain
    D of both copies), and the name spaces the property reads.
``contains(xs) -> bool``, ``evaluated_point(xs) -> xs | None``
    Exact membership of concrete inputs in the region, and the float32 point onnxruntime evaluates
    for a projected candidate, moved back into the region if rounding left it (replay).

These are the :class:`Property` protocol.  Single-network properties whose unsafe set is a DNF over
the outputs (:class:`LocalRobustness`, :class:`OutputDNFProperty`) are also :class:`OutputProperty`:
``output_dnf(n_out)`` returns it as ``[(A_k, b_k)]`` meaning ``OR_k (A_k y ≤ b_k)``, ``ball()`` the L2
ball that cuts the region (or ``None``), and ``score``/``score_grad`` the violation score that attacks
ascend (``score(y) ≥ 0`` iff ``y`` is unsafe).  The searches and the dispatcher read the unsafe set only
through ``output_dnf``: the LocalRobustness → DNF translation exists once, here.

Name spaces: ``"net"`` for single-network properties, ``"a"``/``"b"`` for the two copies of the
global property, ``"teacher"``/``"student"`` for the product network.
"""

from __future__ import annotations

import math
from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass, field
from typing import Any, Protocol, runtime_checkable

import numpy as np

from . import relaxations as rx
from .bounds import crown_bounds, crown_linear, interval_bounds
from .bounds.alpha import tighten_bounds
from .bounds.rounding import EPS64, f32, f32_toward, within_box, within_l2, within_linf
from .bounds.twin import TwinBounds, pair_margin_upper, twin_bounds
from .encode import encode_network, widen_bounds
from .errors import SpecError
from .network import Network
from .program import LinearRow, Program, Sense, Tag

__all__ = [
    "Alternative",
    "Property",
    "OutputProperty",
    "EncodeOptions",
    "LocalRobustness",
    "OutputDNFProperty",
    "GlobalRobustness",
    "Disagreement",
    "margin_matrix",
    "LAYER_BOUNDS",
]

# A candidate must violate the property on onnxruntime's outputs by at least nothing: ties count as
# violations (f_j >= f_c).  Inputs are projected into the exact region before replay, then rounded to
# the float32 point onnxruntime evaluates, which must lie in the region itself (``evaluated_point``).

#: float32 steps towards the region's anchor that :func:`_f32_inside` tries before giving up
_F32_STEPS = 16


def _f32_inside(
    x: np.ndarray,
    anchor: np.ndarray,
    coord_ok: Callable[[np.ndarray], np.ndarray],
    whole_ok: Callable[[np.ndarray], bool] | None = None,
) -> np.ndarray | None:
    """A float32-representable point near ``x`` that passes the exact region checks, or ``None``.

    ``x`` is rounded to float32 (to nearest); coordinates that ``coord_ok`` rejects (a box or an L∞
    ball, checked exactly) are moved one float32 step at a time towards ``anchor`` (a point of the
    region's box, so that the steps go inwards); then, while ``whole_ok`` (an L2 ball) rejects the
    point, every coordinate is moved one float32 step towards ``anchor``.  At most ``_F32_STEPS``
    steps each: rounding moves a coordinate by at most half a float32 step, so a projected candidate
    needs one or two.  The result is returned only if every check passes on it.
    """
    y = f32(x)
    if not np.all(np.isfinite(y)):
        return None
    for _ in range(_F32_STEPS):
        bad = ~coord_ok(y)
        if not bad.any():
            break
        y = f32_toward(y, anchor, bad)
    if whole_ok is not None:
        for _ in range(_F32_STEPS):
            if whole_ok(y):
                break
            y = f32_toward(y, anchor)
    ok = bool(np.all(coord_ok(y))) and (whole_ok is None or whole_ok(y))
    return y if ok else None


Alternative = tuple[np.ndarray, np.ndarray]  # (A (k, n_out), b (k,)) meaning A y <= b


@dataclass(frozen=True)
class EncodeOptions:
    """How to encode: bounds method, quadratic constraints allowed, restriction to one target class."""

    bounds: str = "crown"  # a key of LAYER_BOUNDS: "crown" | "ibp" | "alpha"
    quadratic: bool = False  # backend accepts NormBall constraints
    target: int | None = None  # restrict a local-robustness query to one competing class j


@runtime_checkable
class Property(Protocol):
    """What the dispatcher, the searches and replay may ask of a property (module docstring)."""

    @property
    def namespaces(self) -> tuple[str, ...]: ...

    def region(self) -> tuple[np.ndarray, np.ndarray]: ...

    def encode(self, nets: Mapping[str, Network], options: EncodeOptions = ...) -> Program: ...

    def quick_check(self, nets: Mapping[str, Network]) -> bool: ...

    def project(self, xs: Mapping[str, np.ndarray]) -> dict[str, np.ndarray]: ...

    def contains(self, xs: Mapping[str, np.ndarray]) -> bool: ...

    def evaluated_point(self, xs: Mapping[str, np.ndarray]) -> dict[str, np.ndarray] | None: ...

    def violated(self, xs: Mapping[str, np.ndarray], ys: Mapping[str, np.ndarray]) -> bool: ...

    def refine(self, prog: Program, assignment: np.ndarray) -> list[LinearRow]: ...


@runtime_checkable
class OutputProperty(Property, Protocol):
    """A single-network property whose unsafe set is a DNF over the outputs (module docstring)."""

    ns: str

    def output_dnf(self, n_out: int) -> list[Alternative]: ...

    def ball(self) -> tuple[np.ndarray, float] | None: ...

    def score(self, y: np.ndarray) -> float: ...

    def score_grad(self, y: np.ndarray) -> np.ndarray: ...


def _alpha_layer_bounds(net: Network, lo: np.ndarray, hi: np.ndarray) -> Any:
    """CROWN, then every hidden layer tightened by α-CROWN (:func:`encoders.bounds.alpha.tighten_bounds`)."""
    return tighten_bounds(net, lo, hi, crown_bounds(net, lo, hi))


#: ``EncodeOptions.bounds`` → the function computing the big-M bounds of every layer over a box.
#: All three are sound over the box (each bound widened for rounding): ``ibp`` interval arithmetic,
#: ``crown`` CROWN (never looser than IBP), ``alpha`` α-CROWN on top of CROWN (never looser than CROWN:
#: the per-neuron slopes are optimised for every hidden neuron's lower and upper bound; any slope in
#: ``[0, 1]`` gives a valid bound, so the optimisation only changes how tight it is).
LAYER_BOUNDS: dict[str, Callable[[Network, np.ndarray, np.ndarray], Any]] = {
    "ibp": interval_bounds,
    "crown": crown_bounds,
    "alpha": _alpha_layer_bounds,
}


def _layer_bounds(net: Network, lo: np.ndarray, hi: np.ndarray, method: str) -> tuple[list, list]:
    """The pre-activation bounds of every layer over ``[lo, hi]`` by ``method`` (:data:`LAYER_BOUNDS`)."""
    try:
        fn = LAYER_BOUNDS[method]
    except KeyError:
        known = ", ".join(LAYER_BOUNDS)
        raise SpecError(f"bounds: unknown method {method!r} (choose from {known})") from None
    lb = fn(net, lo, hi)
    return list(lb.lower), list(lb.upper)


def margin_matrix(n: int, c: int, targets: Sequence[int] | None = None) -> np.ndarray:
    """Rows ``e_c − e_j`` (so ``C @ y = y_c − y_j``) for ``j`` in ``targets`` (default: all j ≠ c)."""
    js = [j for j in (targets if targets is not None else range(n)) if j != c]
    C = np.zeros((len(js), n))
    for r, j in enumerate(js):
        C[r, c] = 1.0
        C[r, j] = -1.0
    return C


def _check_domain(lo: np.ndarray, hi: np.ndarray, what: str) -> None:
    if np.any(lo > hi):
        i = int(np.argmax(lo > hi))
        raise SpecError(f"{what}: empty input box (lower {lo[i]} > upper {hi[i]} at input {i})")


# ==================================================================================================
# 1. Local robustness
# ==================================================================================================
@dataclass(frozen=True, eq=False)
class LocalRobustness:
    r"""Local δ-robustness of ``f`` at ``x0`` (seed 000 Def. 3.1; seed 001 uses L∞).

    ``f`` is locally δ-robust at ``x0`` iff ``∀x' ∈ B_δ(x0) ∩ D: argmax f(x') = argmax f(x0) = c``.

    Violation query
        ∃ x' ∈ B_δ(x0) ∩ D, ∃ j ≠ c:  f_j(x') ≥ f_c(x')         (ties count as violations)

    encoded as: input variables ``x' ∈ box``, where the box is ``[x0 − δ, x0 + δ] ∩ D`` (for L∞ this
    is exactly the ball; for L2 it is the ball's bounding box), the network (see
    :mod:`encoders.encode`), and one disjunction ``OR_{j≠c} (y_j − y_c ≥ 0)`` — or, with
    ``options.target = j``, the single row ``y_j − y_c ≥ 0`` (the per-j query).

    L2: with a quadratic-capable backend the constraint ``Σ_i (x'_i − x0_i)² ≤ δ²`` is added as is.
    Otherwise the ball is outer-approximated by its bounding box plus tangent cuts
    ``u·(x' − x0) ≤ δ`` (``‖u‖ = 1``), every one satisfied by all ball points; when a candidate lies
    outside the true ball, :meth:`refine` returns the cut through the point where the ray
    ``x0 → x'`` meets the sphere, which separates it, and the query is re-solved.
    """

    x0: np.ndarray
    eps: float
    label: int
    norm: str = "inf"
    domain_lo: np.ndarray | None = None
    domain_hi: np.ndarray | None = None
    ns: str = "net"

    def __post_init__(self) -> None:
        if not (self.eps > 0 and math.isfinite(self.eps)):
            raise SpecError(f"--eps: the radius must be a positive finite number, got {self.eps}")
        if self.norm not in ("inf", "2"):
            raise SpecError(f"--norm: must be 'inf' or '2', got {self.norm!r}")
        object.__setattr__(self, "x0", np.asarray(self.x0, dtype=np.float64).reshape(-1))
        lo, hi = self.box()
        _check_domain(lo, hi, "local robustness domain")

    def box(self) -> tuple[np.ndarray, np.ndarray]:
        lo, hi = self.x0 - self.eps, self.x0 + self.eps
        if self.domain_lo is not None:
            lo = np.maximum(lo, np.asarray(self.domain_lo, dtype=np.float64))
        if self.domain_hi is not None:
            hi = np.minimum(hi, np.asarray(self.domain_hi, dtype=np.float64))
        return lo, hi

    @property
    def namespaces(self) -> tuple[str, ...]:
        return (self.ns,)

    def region(self) -> tuple[np.ndarray, np.ndarray]:
        """The box ``[x0 − δ, x0 + δ] ∩ D`` (for L2 the ball's bounding box; see :meth:`ball`)."""
        return self.box()

    def ball(self) -> tuple[np.ndarray, float] | None:
        """``(x0, δ)`` for the L2 norm (the region is the ball ∩ D), ``None`` for L∞ (the box is exact)."""
        return (self.x0, float(self.eps)) if self.norm == "2" else None

    def targets(self, n_out: int) -> list[int]:
        return [j for j in range(n_out) if j != self.label]

    def output_dnf(self, n_out: int) -> list[Alternative]:
        """One alternative per ``j ≠ c``: ``(e_c − e_j)·y ≤ 0``, i.e. ``y_j ≥ y_c`` (ties violate)."""
        alts = []
        for j in self.targets(n_out):
            a = np.zeros((1, n_out))
            a[0, self.label], a[0, j] = 1.0, -1.0
            alts.append((a, np.zeros(1)))
        return alts

    def crown_margins(self, net: Network) -> np.ndarray:
        """Sound lower bounds of ``f_c − f_j`` over the box, one per ``j ≠ c`` (in target order)."""
        lo, hi = self.box()
        lb, _ = crown_linear(net, lo, hi, margin_matrix(net.n_outputs, self.label))
        return np.asarray(lb)

    def quick_check(self, nets: Mapping[str, Network]) -> bool:
        return bool(np.all(self.crown_margins(nets[self.ns]) > 0.0))

    def ordered_targets(self, net: Network) -> list[int]:
        """Competing classes, likeliest violation first (smallest CROWN margin), proven ones dropped."""
        m = self.crown_margins(net)
        ts = self.targets(net.n_outputs)
        return [ts[i] for i in np.argsort(m) if m[i] <= 0.0]

    def encode(self, nets: Mapping[str, Network], options: EncodeOptions = EncodeOptions()) -> Program:
        net = nets[self.ns]
        if self.x0.size != net.n_inputs:
            raise SpecError(f"point has {self.x0.size} values but the network takes {net.n_inputs} inputs")
        if not 0 <= self.label < net.n_outputs:
            raise SpecError(f"label {self.label} out of range for {net.n_outputs} outputs")
        lo, hi = self.box()
        prog = Program()
        x = prog.add_vars(f"{self.ns}.x", lo, hi)
        lower, upper = _layer_bounds(net, lo, hi, options.bounds)
        enc = encode_network(prog, net, x, lower, upper, self.ns)
        y = enc.outputs
        targets = [options.target] if options.target is not None else self.targets(net.n_outputs)
        alts = [
            [
                Program.row(
                    [y[j], y[self.label]], [1.0, -1.0], Sense.GE, 0.0, Tag.PROPERTY, f"y{j}>=y{self.label}"
                )
            ]
            for j in targets
        ]
        prog.add_disjunction(alts)
        if self.norm == "2" and options.quadratic:
            prog.add_ball(x, self.x0, self.eps)
        prog.meta.update(property="local", norm=self.norm, eps=self.eps, label=self.label)
        return prog

    def project(self, xs: Mapping[str, np.ndarray]) -> dict[str, np.ndarray]:
        lo, hi = self.box()
        x = np.clip(np.asarray(xs[self.ns], dtype=np.float64), lo, hi)
        if self.norm == "2":
            d = x - self.x0
            n = float(np.linalg.norm(d))
            if n > self.eps:
                x = np.clip(self.x0 + d * (self.eps / n) * (1 - 1e-12), lo, hi)
        return {self.ns: x}

    def _coord_ok(self, x: np.ndarray) -> np.ndarray:
        ok = within_box(x, self.domain_lo, self.domain_hi)
        if self.norm == "inf":
            ok &= within_linf(x, self.x0, self.eps)
        return ok

    def in_region(self, x: np.ndarray) -> bool:
        """Exactly (real arithmetic on the float64 values): ``x ∈ B_δ(x0) ∩ D``."""
        x = np.asarray(x, dtype=np.float64).reshape(-1)
        if x.size != self.x0.size or not np.all(self._coord_ok(x)):
            return False
        return self.norm == "inf" or within_l2(x, self.x0, self.eps)

    def contains(self, xs: Mapping[str, np.ndarray]) -> bool:
        return self.in_region(xs[self.ns])

    def evaluated_point(self, xs: Mapping[str, np.ndarray]) -> dict[str, np.ndarray] | None:
        """The float32 point onnxruntime evaluates for the (projected) candidate, inside the region
        (exact check), or ``None`` when rounding cannot be brought back inside (:func:`_f32_inside`)."""
        lo, hi = self.box()
        anchor = np.clip(self.x0, lo, hi)
        whole = (lambda y: within_l2(y, self.x0, self.eps)) if self.norm == "2" else None
        y = _f32_inside(np.asarray(xs[self.ns], dtype=np.float64), anchor, self._coord_ok, whole)
        return None if y is None else {self.ns: y}

    def violated(
        self, xs: Mapping[str, np.ndarray], ys: Mapping[str, np.ndarray], target: int | None = None
    ) -> bool:
        x, y = np.asarray(xs[self.ns]), np.asarray(ys[self.ns]).reshape(-1)
        if not self.in_region(x):
            return False
        js = [target] if target is not None else self.targets(y.size)
        return any(y[j] >= y[self.label] for j in js)

    def score(self, y: np.ndarray) -> float:
        """``max_{j≠c} (y_j − y_c)``: ``>= 0`` iff the outputs violate the property."""
        y = np.asarray(y).reshape(-1)
        return float(max(y[j] - y[self.label] for j in self.targets(y.size)))

    def score_grad(self, y: np.ndarray) -> np.ndarray:
        """A (sub)gradient of :meth:`score` with respect to the outputs."""
        y = np.asarray(y).reshape(-1)
        js = self.targets(y.size)
        j = js[int(np.argmax([y[k] - y[self.label] for k in js]))]
        g = np.zeros(y.size)
        g[j], g[self.label] = 1.0, -1.0
        return g

    def refine(self, prog: Program, assignment: np.ndarray) -> list[LinearRow]:
        if self.norm != "2" or any(True for _ in prog.balls):
            return []
        xv = prog.blocks[self.ns]["input"]
        xp = np.asarray(assignment)[xv]
        if np.linalg.norm(xp - self.x0) <= self.eps * (1 + 1e-9):
            return []
        u, rhs = rx.l2_tangent_cut(self.x0, self.eps, xp)
        return [Program.row(xv, u, Sense.LE, rhs, Tag.PROPERTY, "l2cut")]


# ==================================================================================================
# 2. General VNN-LIB properties (output DNF over a box)
# ==================================================================================================
@dataclass(frozen=True, eq=False)
class OutputDNFProperty:
    r"""A VNN-LIB property: an input box and an *unsafe* output region given as a DNF.

    Violation query (VNN-COMP "sat")
        ∃ x ∈ [lo, hi]:  OR_k AND_r (A_k y ≤ b_k)_r   with y = f(x).

    One VNN-LIB file may hold several (box, DNF) cases; each case is its own property object.
    CROWN quick check: an alternative is impossible when some row ``a·y ≤ b`` has a CROWN lower bound
    of ``a·y`` above ``b``; when every alternative is impossible the property holds.
    """

    lo: np.ndarray
    hi: np.ndarray
    alternatives: tuple[tuple[np.ndarray, np.ndarray], ...]  # (A (k, n_out), b (k,)) meaning A y <= b
    ns: str = "net"
    source: str = ""

    def __post_init__(self) -> None:
        object.__setattr__(self, "lo", np.asarray(self.lo, dtype=np.float64).reshape(-1))
        object.__setattr__(self, "hi", np.asarray(self.hi, dtype=np.float64).reshape(-1))
        _check_domain(self.lo, self.hi, self.source or "VNN-LIB input box")

    @property
    def namespaces(self) -> tuple[str, ...]:
        return (self.ns,)

    def region(self) -> tuple[np.ndarray, np.ndarray]:
        return self.lo, self.hi

    def ball(self) -> None:
        return None

    def output_dnf(self, n_out: int) -> list[Alternative]:
        return [
            (np.asarray(A, dtype=np.float64), np.asarray(b, dtype=np.float64).reshape(-1))
            for A, b in self.alternatives
        ]

    def possible_alternatives(
        self, net: Network, lo: np.ndarray | None = None, hi: np.ndarray | None = None
    ) -> list[int]:
        """Indices of alternatives CROWN cannot rule out over the box (or a sub-box)."""
        lo = self.lo if lo is None else lo
        hi = self.hi if hi is None else hi
        keep = []
        for k, (A, b) in enumerate(self.alternatives):
            lb, _ = crown_linear(net, lo, hi, A)
            if not np.any(np.asarray(lb) > b):
                keep.append(k)
        return keep

    def quick_check(self, nets: Mapping[str, Network]) -> bool:
        return not self.possible_alternatives(nets[self.ns])

    def encode(
        self,
        nets: Mapping[str, Network],
        options: EncodeOptions = EncodeOptions(),
        alternatives: Sequence[int] | None = None,
    ) -> Program:
        net = nets[self.ns]
        if self.lo.size != net.n_inputs:
            raise SpecError(
                f"{self.source}: declares {self.lo.size} inputs but the network takes {net.n_inputs}"
            )
        n_out = self.alternatives[0][0].shape[1] if self.alternatives else net.n_outputs
        if n_out != net.n_outputs:
            raise SpecError(f"{self.source}: declares {n_out} outputs but the network has {net.n_outputs}")
        prog = Program()
        x = prog.add_vars(f"{self.ns}.x", self.lo, self.hi)
        lower, upper = _layer_bounds(net, self.lo, self.hi, options.bounds)
        y = encode_network(prog, net, x, lower, upper, self.ns).outputs
        ks = self.possible_alternatives(net) if alternatives is None else alternatives
        alts = []
        for k in ks:
            A, b = self.alternatives[k]
            alts.append(
                [
                    Program.row(y, A[r], Sense.LE, float(b[r]), Tag.PROPERTY, f"alt{k}.{r}")
                    for r in range(A.shape[0])
                ]
            )
        if not alts:  # every alternative ruled out: an infeasible program
            alts = [[Program.row([], [], Sense.GE, 1.0, Tag.PROPERTY, "false")]]
        prog.add_disjunction(alts)
        prog.meta.update(property="vnnlib", source=self.source)
        return prog

    def project(self, xs: Mapping[str, np.ndarray]) -> dict[str, np.ndarray]:
        return {self.ns: np.clip(np.asarray(xs[self.ns], dtype=np.float64), self.lo, self.hi)}

    def contains(self, xs: Mapping[str, np.ndarray]) -> bool:
        x = np.asarray(xs[self.ns], dtype=np.float64).reshape(-1)
        return x.size == self.lo.size and bool(np.all(within_box(x, self.lo, self.hi)))

    def evaluated_point(self, xs: Mapping[str, np.ndarray]) -> dict[str, np.ndarray] | None:
        """The float32 point onnxruntime evaluates, inside the box, or ``None`` (:func:`_f32_inside`)."""
        y = _f32_inside(
            np.asarray(xs[self.ns], dtype=np.float64),
            0.5 * (self.lo + self.hi),
            lambda v: within_box(v, self.lo, self.hi),
        )
        return None if y is None else {self.ns: y}

    def violated(self, xs: Mapping[str, np.ndarray], ys: Mapping[str, np.ndarray]) -> bool:
        y = np.asarray(ys[self.ns]).reshape(-1)
        if not self.contains(xs):
            return False
        return any(bool(np.all(A @ y <= b)) for A, b in self.alternatives)

    def score(self, y: np.ndarray) -> float:
        """``max_k min_r (b_k − A_k y)_r``: ``>= 0`` iff ``y`` lies in the unsafe region."""
        y = np.asarray(y).reshape(-1)
        return float(max((np.min(b - A @ y) if A.shape[0] else np.inf) for A, b in self.alternatives))

    def score_grad(self, y: np.ndarray) -> np.ndarray:
        y = np.asarray(y).reshape(-1)
        vals = [(np.min(b - A @ y) if A.shape[0] else np.inf) for A, b in self.alternatives]
        A, b = self.alternatives[int(np.argmax(vals))]
        if not A.shape[0]:
            return np.zeros(y.size)
        return -A[int(np.argmin(b - A @ y))]

    def refine(self, prog: Program, assignment: np.ndarray) -> list[LinearRow]:
        return []


# ==================================================================================================
# 3. Global two-copy κ-confidence robustness
# ==================================================================================================
@dataclass(frozen=True, eq=False)
class GlobalRobustness:
    r"""Global κ-confidence δ-robustness (seed 000 Def. 3.2–3.3; Athavale et al., CAV 2024).

    Violation (for predicted class ``c``)
        ∃ x, x' ∈ D:  ‖x − x'‖_p ≤ δ,  softmax_c(f(x)) ≥ κ,  ∃ j ≠ c: f_j(x') ≥ f_c(x').

    With ``symmetric=True`` the confidence may hold at either copy (the query is the union of the
    two orientations; by the symmetry of the coupling this is the same query with the copies
    swapped, so it is answered by the same encoding — we state it for the certificate's wording).

    Encoding (one query per class ``c``; two copies ``a`` (x) and ``b`` (x') of the network with
    shared weights, each bounded over D):

    * coupling, L∞: ``−δ ≤ x_i − x'_i ≤ δ`` rows; L2: difference variables ``d = x − x'`` with
      ``Σ d_i² ≤ δ²`` (quadratic backends) or the box ``|d_i| ≤ δ`` plus lazy tangent cuts;
    * confidence: ``softmax_c(z) ≥ κ  ⟺  g(d) = Σ_{j≠c} exp(z_j − z_c) ≤ (1−κ)/κ``.
      n = 2: exact, ``z_c − z_j ≥ ln(κ/(1−κ))``.  n > 2: the confident set is convex in
      ``d_j = z_j − z_c``; it is outer-approximated by constraints every confident z satisfies —
      (i) ``z_c − z_j ≥ ln(κ/(1−κ))`` for each j (since each term of g is ≤ g), and (ii) tangent cuts
      ``g(d̂) + ∇g(d̂)·(d − d̂) ≤ (1−κ)/κ`` (sound because the convex g lies above its tangents).
      Lazy refinement: when a candidate's real confidence (float64 softmax of the replayed logits)
      is below κ, :meth:`refine` adds the tangent cut at the candidate's logits and the query is
      re-solved.  Nothing piecewise-linear that is not a proven bound is ever used.
    * misclassification at x': ``OR_{j≠c} (z'_j − z'_c ≥ 0)``.

    Twin-network (difference) bounds, :mod:`encoders.bounds.twin`
        A violation through competitor ``j`` needs ``(z_c − z_j)(x) ≥ m = ln(κ/(1−κ))`` (confidence
        item (i)) and ``(z_c − z_j)(x') ≤ 0``, hence

            Δ_j = (z_c − z_j)(x) − (z_c − z_j)(x') ≥ m.                                   (T)

        :func:`encoders.bounds.twin.twin_bounds` bounds the layer-wise differences of the two copies over all
        coupled pairs, and back-substitutes ``Δ_j`` through the difference relaxation
        (:func:`encoders.bounds.twin.pair_margin_upper`).  A competitor ``j`` is *excluded* when
        ``max Δ_j < m`` (T fails), or when ``z_c − z_j > 0`` on all of ``D`` (no copy b can prefer
        ``j``).  :meth:`quick_check` proves the class when every competitor is excluded or class c can
        never be κ-confident; :meth:`encode` keeps only the competitors left in the disjunction.
        With ``twin_cuts`` (default) the encoding also gets, for every neuron that has variables in
        both copies, the valid rows ``Δz ∈ [dl, du]``, ``Δh ∈ [hl, hu]``, the two chord rows of the
        ReLU-difference relaxation ``s_lo Δz + t_lo ≤ Δh ≤ s_up Δz + t_up``, output rows
        ``y − y' ∈ [dl_L, du_L]`` and ``Δ_j ≤ max Δ_j`` — every real pair satisfies them, so they cut
        off only points that are not two executions of the network (tag ``property``, names
        ``twin.*``).

    ``pair_bounds`` (optional, a :class:`encoders.bounds.pair_lp.PairBounds`)
        Per-copy and difference bounds valid over every *violating* pair of the encoded targets
        (e.g. tightened by :func:`encoders.bounds.pair_lp.tighten_pair` under the flip row of one
        competitor ``j``; the caller then encodes with ``EncodeOptions(target=j)``).  :meth:`encode`
        uses them for the big-M constants of each copy and for the ``twin.*`` rows instead of the
        bounds over all of ``D``.  Sound: a bound that every violating pair satisfies removes no
        violating pair, so the program is still feasible whenever a violation exists.
    """

    delta: float
    kappa: float
    domain_lo: np.ndarray
    domain_hi: np.ndarray
    norm: str = "inf"
    label: int = 0
    symmetric: bool = False
    twin_cuts: bool = True
    pair_bounds: Any = None

    def __post_init__(self) -> None:
        if not (self.delta > 0 and math.isfinite(self.delta)):
            raise SpecError(f"--delta: must be positive, got {self.delta}")
        if not 0.0 < self.kappa < 1.0:
            raise SpecError(f"--kappa: must lie in (0, 1), got {self.kappa}")
        if self.norm not in ("inf", "2"):
            raise SpecError(f"--norm: must be 'inf' or '2', got {self.norm!r}")
        object.__setattr__(self, "domain_lo", np.asarray(self.domain_lo, dtype=np.float64).reshape(-1))
        object.__setattr__(self, "domain_hi", np.asarray(self.domain_hi, dtype=np.float64).reshape(-1))
        _check_domain(self.domain_lo, self.domain_hi, "--domain")

    @property
    def margin(self) -> float:
        return rx.confidence_margin(self.kappa)

    @property
    def namespaces(self) -> tuple[str, ...]:
        return ("a", "b")

    def region(self) -> tuple[np.ndarray, np.ndarray]:
        """The domain D (both copies range over it; the coupling is checked by :meth:`contains`)."""
        return self.domain_lo, self.domain_hi

    def _margins(self, net: Network) -> tuple[np.ndarray, np.ndarray]:
        """CROWN bounds ``(lb, ub)`` of ``z_c − z_j`` (every ``j ≠ c``, in order) over D."""
        lb, ub = crown_linear(net, self.domain_lo, self.domain_hi, margin_matrix(net.n_outputs, self.label))
        return np.asarray(lb), np.asarray(ub)

    def never_confident(self, net: Network) -> bool:
        """Class ``c`` can never be κ-confident on D: some ``z_c − z_j`` is always below the margin."""
        return bool(np.any(self._margins(net)[1] < self.margin))

    def twin(self, net: Network) -> TwinBounds:
        """Difference bounds of the two copies over the coupled pairs (see :mod:`encoders.bounds.twin`)."""
        return twin_bounds(net, self.domain_lo, self.domain_hi, self.delta, self.norm)

    def pair_margins(self, net: Network, tb: TwinBounds | None = None) -> np.ndarray:
        """``max Δ_j`` for every class ``j`` (entry ``c`` is 0): see (T) in the class docstring."""
        return pair_margin_upper(net, self.twin(net) if tb is None else tb, self.label)

    def open_targets(self, net: Network, tb: TwinBounds | None = None) -> list[int]:
        """Competitors ``j`` that bounds cannot exclude (class docstring), likeliest violation first."""
        c = self.label
        lb_b, ub_a = self._margins(net)
        if np.any(ub_a < self.margin):  # class c is never κ-confident on D
            return []
        others = [j for j in range(net.n_outputs) if j != c]
        pm = self.pair_margins(net, tb)
        keep = [(float(pm[j]), j) for r, j in enumerate(others) if pm[j] >= self.margin and lb_b[r] <= 0.0]
        return [j for _, j in sorted(keep, reverse=True)]

    def quick_check(self, nets: Mapping[str, Network]) -> bool:
        """True when class ``c`` cannot be κ-confident on D or every competitor is excluded."""
        return not self.open_targets(nets["a"])

    def encode(self, nets: Mapping[str, Network], options: EncodeOptions = EncodeOptions()) -> Program:
        net = nets["a"]
        n, c = net.n_outputs, self.label
        if self.domain_lo.size != net.n_inputs:
            raise SpecError(
                f"--domain: {self.domain_lo.size} values but the network takes {net.n_inputs} inputs"
            )
        prog = Program()
        lo, hi = self.domain_lo, self.domain_hi
        pb = self.pair_bounds
        if pb is not None:
            lower, upper = list(pb.lower_a), list(pb.upper_a)
            lower_b, upper_b = list(pb.lower_b), list(pb.upper_b)
        else:
            lower, upper = _layer_bounds(net, lo, hi, options.bounds)
            lower_b, upper_b = lower, upper
        xa = prog.add_vars("a.x", lo, hi)
        za = encode_network(prog, net, xa, lower, upper, "a").outputs
        xb = prog.add_vars("b.x", lo, hi)
        zb = encode_network(prog, net, xb, lower_b, upper_b, "b").outputs
        if pb is not None:
            tb = pb.twin
        else:
            tb = twin_bounds(net, lo, hi, self.delta, self.norm, (lower, upper), (lower, upper))
        targets = self.open_targets(net, tb) if options.target is None else [options.target]
        if self.norm == "inf":
            for i in range(xa.size):
                prog.add_row([xa[i], xb[i]], [1.0, -1.0], Sense.LE, self.delta, Tag.PROPERTY, f"dx{i}<=")
                prog.add_row([xa[i], xb[i]], [1.0, -1.0], Sense.GE, -self.delta, Tag.PROPERTY, f"dx{i}>=")
        else:
            d = prog.add_vars("d", np.full(xa.size, -self.delta), np.full(xa.size, self.delta))
            for i in range(xa.size):
                prog.add_row([d[i], xa[i], xb[i]], [1.0, -1.0, 1.0], Sense.EQ, 0.0, Tag.PROPERTY, f"d{i}")
            prog.blocks["coupling"] = {"d": d}
            if options.quadratic:
                prog.add_ball(d, np.zeros(d.size), self.delta)
        # confidence at copy a
        others = [j for j in range(n) if j != c]
        for j in others:
            prog.add_row([za[c], za[j]], [1.0, -1.0], Sense.GE, self.margin, Tag.PROPERTY, f"conf{j}")
        if n > 2:
            for dhat in rx.initial_tangent_points(n - 1, self.kappa):
                prog.rows.append(self._cut(za, c, others, np.asarray(dhat)))
        # misclassification at copy b (only competitors that the bounds leave open)
        alts = [
            [Program.row([zb[j], zb[c]], [1.0, -1.0], Sense.GE, 0.0, Tag.PROPERTY, f"b.y{j}>=y{c}")]
            for j in targets
        ]
        if not alts:  # every competitor excluded: an infeasible program
            alts = [[Program.row([], [], Sense.GE, 1.0, Tag.PROPERTY, "false")]]
        prog.add_disjunction(alts)
        if self.twin_cuts:
            _add_twin_cuts(prog, net, tb, (lower, upper), (lower_b, upper_b), c, targets)
        prog.meta.update(
            property="global", delta=self.delta, kappa=self.kappa, label=c, norm=self.norm, targets=targets
        )
        return prog

    def _cut(self, za: np.ndarray, c: int, others: list[int], dhat: np.ndarray) -> LinearRow:
        coef_d, rhs = rx.tangent_cut(dhat, self.kappa)
        # Σ_j coef_j (z_j − z_c) <= rhs
        idx = [za[j] for j in others] + [za[c]]
        coef = list(coef_d) + [-float(np.sum(coef_d))]
        return Program.row(idx, coef, Sense.LE, rhs, Tag.PROPERTY, "tangent")

    def project(self, xs: Mapping[str, np.ndarray]) -> dict[str, np.ndarray]:
        lo, hi = self.domain_lo, self.domain_hi
        a = np.clip(np.asarray(xs["a"], dtype=np.float64), lo, hi)
        b = np.clip(np.asarray(xs["b"], dtype=np.float64), lo, hi)
        diff = b - a
        if self.norm == "inf":
            # a radius shrunk by a few ulps of |a| so that fl(a + d) − a still lies within δ
            r = self.delta - 4.0 * EPS64 * (np.abs(a) + self.delta)
            b = np.clip(a + np.clip(diff, -r, r), lo, hi)
        else:
            nrm = float(np.linalg.norm(diff))
            if nrm > self.delta:
                b = np.clip(a + diff * (self.delta / nrm) * (1 - 1e-12), lo, hi)
        return {"a": a, "b": b}

    def coupled(self, a: np.ndarray, b: np.ndarray) -> bool:
        """Exactly (real arithmetic on the float64 values): ``‖a − b‖_p ≤ δ``."""
        a = np.asarray(a, dtype=np.float64).reshape(-1)
        b = np.asarray(b, dtype=np.float64).reshape(-1)
        if self.norm == "inf":
            return bool(np.all(within_linf(b, a, self.delta)))
        return within_l2(b, a, self.delta)

    def contains(self, xs: Mapping[str, np.ndarray]) -> bool:
        a = np.asarray(xs["a"], dtype=np.float64).reshape(-1)
        b = np.asarray(xs["b"], dtype=np.float64).reshape(-1)
        n = self.domain_lo.size
        if a.size != n or b.size != n:
            return False
        in_d = within_box(a, self.domain_lo, self.domain_hi) & within_box(b, self.domain_lo, self.domain_hi)
        return bool(np.all(in_d)) and self.coupled(a, b)

    def evaluated_point(self, xs: Mapping[str, np.ndarray]) -> dict[str, np.ndarray] | None:
        """The float32 pair onnxruntime evaluates, inside ``D × D`` and coupled (exact checks), or
        ``None``: copy ``a`` is rounded (and moved into D), then ``b`` is rounded and moved towards the
        rounded ``a`` until the coupling holds (:func:`_f32_inside`)."""
        lo, hi = self.domain_lo, self.domain_hi
        a = _f32_inside(
            np.asarray(xs["a"], dtype=np.float64), 0.5 * (lo + hi), lambda v: within_box(v, lo, hi)
        )
        if a is None:
            return None
        if self.norm == "inf":
            coord = lambda v: within_box(v, lo, hi) & within_linf(v, a, self.delta)  # noqa: E731
            whole = None
        else:
            coord = lambda v: within_box(v, lo, hi)  # noqa: E731
            whole = lambda v: within_l2(v, a, self.delta)  # noqa: E731
        b = _f32_inside(np.asarray(xs["b"], dtype=np.float64), a, coord, whole)
        return None if b is None else {"a": a, "b": b}

    def violated(self, xs: Mapping[str, np.ndarray], ys: Mapping[str, np.ndarray]) -> bool:
        if not self.contains(xs):
            return False
        za, zb = np.asarray(ys["a"]).reshape(-1), np.asarray(ys["b"]).reshape(-1)
        if int(np.argmax(za)) != self.label or rx.confidence_gap(za, self.label, self.kappa) < 0:
            return False
        return any(zb[j] >= zb[self.label] for j in range(zb.size) if j != self.label)

    def refine(self, prog: Program, assignment: np.ndarray) -> list[LinearRow]:
        cuts: list[LinearRow] = []
        za = prog.blocks["a"]["output"]
        z = np.asarray(assignment)[za]
        c = self.label
        others = [j for j in range(z.size) if j != c]
        dhat = z[others] - z[c]
        if z.size > 2 and float(np.sum(np.exp(dhat))) > (1 - self.kappa) / self.kappa * (1 + 1e-9):
            cuts.append(self._cut(za, c, others, dhat))
        if self.norm == "2" and not prog.balls:
            d = prog.blocks["coupling"]["d"]
            dv = np.asarray(assignment)[d]
            if np.linalg.norm(dv) > self.delta * (1 + 1e-9):
                u, rhs = rx.l2_tangent_cut(np.zeros(d.size), self.delta, dv)
                cuts.append(Program.row(d, u, Sense.LE, rhs, Tag.PROPERTY, "l2cut"))
        return cuts


def _add_twin_cuts(
    prog: Program,
    net: Network,
    tb: TwinBounds,
    bounds_a: tuple[Sequence[np.ndarray], Sequence[np.ndarray]],
    bounds_b: tuple[Sequence[np.ndarray], Sequence[np.ndarray]],
    c: int,
    targets: Sequence[int],
) -> None:
    """Add the difference rows of :class:`GlobalRobustness` (``twin.*``) to a two-copy encoding.

    Neuron ``i`` of ReLU layer ``k`` has variables ``{ns}.z{k+1}[m]`` / ``{ns}.h{k+1}[m]`` exactly when
    it is unstable under the widened bounds the encoder used for that copy
    (:func:`encoders.encode.widen_bounds`), ``m`` being its rank among those neurons.  Rows are added
    for the neurons that have variables in both copies (fewer rows is always sound).
    """
    where = {name: i for i, name in enumerate(prog.names)}
    ulp = 16.0 * EPS64

    def add(
        idx: list[int], coef: list[float], sense: Sense, rhs: float, name: str, scale: float = 0.0
    ) -> None:
        # the rows' coefficients are rounded: relax the right-hand side by a few ulps of the magnitudes
        # involved (``scale`` bounds |coef·v| over the box), in the direction that keeps every real pair
        if np.isfinite(rhs):
            slack = ulp * (1.0 + abs(rhs) + scale)
            prog.add_row(
                idx, coef, sense, float(rhs + slack if sense is Sense.LE else rhs - slack), Tag.PROPERTY, name
            )

    def rank(bounds: tuple[Sequence[np.ndarray], Sequence[np.ndarray]], k: int) -> dict[int, int]:
        lo_k, hi_k = widen_bounds(np.asarray(bounds[0][k], float), np.asarray(bounds[1][k], float))
        return {int(i): m for m, i in enumerate(np.flatnonzero((lo_k < 0.0) & (hi_k > 0.0)))}

    for k, rx_k in enumerate(tb.relax):
        ra, rb = rank(bounds_a, k), rank(bounds_b, k)
        for i in sorted(set(ra) & set(rb)):
            ma, mb = ra[i], rb[i]
            za, zb = where[f"a.z{k + 1}[{ma}]"], where[f"b.z{k + 1}[{mb}]"]
            ha, hb = where[f"a.h{k + 1}[{ma}]"], where[f"b.h{k + 1}[{mb}]"]
            tag = f"twin.{k + 1}[{i}]"
            mag = float(max(abs(tb.dlower[k][i]), abs(tb.dupper[k][i])))
            add([za, zb], [1.0, -1.0], Sense.LE, tb.dupper[k][i], tag + ".dz<=")
            add([za, zb], [1.0, -1.0], Sense.GE, tb.dlower[k][i], tag + ".dz>=")
            add([ha, hb], [1.0, -1.0], Sense.LE, rx_k.hu[i], tag + ".dh<=")
            add([ha, hb], [1.0, -1.0], Sense.GE, rx_k.hl[i], tag + ".dh>=")
            su, tu, sl, tl = rx_k.s_up[i], rx_k.t_up[i], rx_k.s_lo[i], rx_k.t_lo[i]
            add([ha, hb, za, zb], [1.0, -1.0, -su, su], Sense.LE, tu, tag + ".chord_up", 4.0 * mag)
            add([ha, hb, za, zb], [1.0, -1.0, -sl, sl], Sense.GE, tl, tag + ".chord_lo", 4.0 * mag)
    ya, yb = prog.blocks["a"]["output"], prog.blocks["b"]["output"]
    for i in range(ya.size):
        add([ya[i], yb[i]], [1.0, -1.0], Sense.LE, tb.dupper[-1][i], f"twin.y[{i}]<=")
        add([ya[i], yb[i]], [1.0, -1.0], Sense.GE, tb.dlower[-1][i], f"twin.y[{i}]>=")
    pm = pair_margin_upper(net, tb, c)
    for j in targets:
        add([ya[c], ya[j], yb[c], yb[j]], [1.0, -1.0, -1.0, 1.0], Sense.LE, pm[j], f"twin.margin{j}")


# ==================================================================================================
# 4. Teacher–student disagreement (product network)
# ==================================================================================================
@dataclass(frozen=True, eq=False)
class Disagreement:
    r"""Adversarial disagreement (seed 001 Def. 1) on the product network.

    One input ``x ∈ B_ε(x0) ∩ D`` (L∞) feeds the teacher ``g_t`` and the student ``g_s``.
    Violation: ``argmax g_t(x) ≠ argmax g_s(x)``, with ties counted as disagreement:

        ∃ x, ∃ i, ∃ k ≠ i:  t_i ≥ t_j ∀j   ∧   s_k ≥ s_i.

    Encoded as a disjunction over the pairs (i, k) of conjunctions of linear rows; pairs where CROWN
    shows ``i`` cannot be the teacher's top class (some ``t_i − t_j`` has a negative upper bound) or
    ``k`` cannot beat ``i`` for the student are dropped.  VERIFIED means x0 is certified not to be an
    adversarial disagreement example.
    """

    x0: np.ndarray
    eps: float
    domain_lo: np.ndarray | None = None
    domain_hi: np.ndarray | None = None

    def __post_init__(self) -> None:
        if not (self.eps > 0 and math.isfinite(self.eps)):
            raise SpecError(f"--eps: the radius must be a positive finite number, got {self.eps}")
        object.__setattr__(self, "x0", np.asarray(self.x0, dtype=np.float64).reshape(-1))

    def box(self) -> tuple[np.ndarray, np.ndarray]:
        return LocalRobustness(self.x0, self.eps, 0, "inf", self.domain_lo, self.domain_hi).box()

    @property
    def namespaces(self) -> tuple[str, ...]:
        return ("teacher", "student")

    def region(self) -> tuple[np.ndarray, np.ndarray]:
        return self.box()

    def _pairs(self, nets: Mapping[str, Network]) -> list[tuple[int, int]]:
        lo, hi = self.box()
        t, s = nets["teacher"], nets["student"]
        n = t.n_outputs
        pairs = []
        for i in range(n):
            _, ub_t = crown_linear(t, lo, hi, margin_matrix(n, i))
            if np.any(np.asarray(ub_t) < 0.0):
                continue  # i is never the teacher's top class on the ball
            lb_s, _ = crown_linear(s, lo, hi, margin_matrix(n, i))
            ks = [k for k in range(n) if k != i]
            for r, k in enumerate(ks):
                if np.asarray(lb_s)[r] <= 0.0:  # s_i − s_k can be <= 0
                    pairs.append((i, k))
        return pairs

    def quick_check(self, nets: Mapping[str, Network]) -> bool:
        return not self._pairs(nets)

    def encode(self, nets: Mapping[str, Network], options: EncodeOptions = EncodeOptions()) -> Program:
        t, s = nets["teacher"], nets["student"]
        if t.n_inputs != s.n_inputs or t.n_outputs != s.n_outputs:
            raise SpecError("teacher and student differ in input or output size")
        if self.x0.size != t.n_inputs:
            raise SpecError(f"point has {self.x0.size} values but the networks take {t.n_inputs} inputs")
        lo, hi = self.box()
        prog = Program()
        x = prog.add_vars("x", lo, hi)
        lt, ut = _layer_bounds(t, lo, hi, options.bounds)
        ls, us = _layer_bounds(s, lo, hi, options.bounds)
        yt = encode_network(prog, t, x, lt, ut, "teacher").outputs
        ys = encode_network(prog, s, x, ls, us, "student").outputs
        prog.blocks["teacher"]["input"] = x
        prog.blocks["student"]["input"] = x
        n = t.n_outputs
        alts = []
        for i, k in self._pairs(nets):
            rows = [
                Program.row([yt[i], yt[j]], [1.0, -1.0], Sense.GE, 0.0, Tag.PROPERTY, f"t{i}>=t{j}")
                for j in range(n)
                if j != i
            ]
            rows.append(Program.row([ys[k], ys[i]], [1.0, -1.0], Sense.GE, 0.0, Tag.PROPERTY, f"s{k}>=s{i}"))
            alts.append(rows)
        if not alts:
            alts = [[Program.row([], [], Sense.GE, 1.0, Tag.PROPERTY, "false")]]
        prog.add_disjunction(alts)
        prog.meta.update(property="disagreement", eps=self.eps)
        return prog

    def project(self, xs: Mapping[str, np.ndarray]) -> dict[str, np.ndarray]:
        lo, hi = self.box()
        x = np.clip(np.asarray(xs.get("teacher", xs.get("student")), dtype=np.float64), lo, hi)
        return {"teacher": x, "student": x}

    def _coord_ok(self, x: np.ndarray) -> np.ndarray:
        return within_box(x, self.domain_lo, self.domain_hi) & within_linf(x, self.x0, self.eps)

    def contains(self, xs: Mapping[str, np.ndarray]) -> bool:
        """Exactly: both networks get the same input, and it lies in ``B_ε(x0) ∩ D`` (L∞)."""
        x = np.asarray(xs["teacher"], dtype=np.float64).reshape(-1)
        if "student" in xs and not np.array_equal(x, np.asarray(xs["student"], dtype=np.float64).reshape(-1)):
            return False
        return x.size == self.x0.size and bool(np.all(self._coord_ok(x)))

    def evaluated_point(self, xs: Mapping[str, np.ndarray]) -> dict[str, np.ndarray] | None:
        """The float32 input both networks evaluate, inside the ball ∩ D, or ``None``."""
        lo, hi = self.box()
        x = np.asarray(xs.get("teacher", xs.get("student")), dtype=np.float64)
        y = _f32_inside(x, np.clip(self.x0, lo, hi), self._coord_ok)
        return None if y is None else {"teacher": y, "student": y.copy()}

    def violated(self, xs: Mapping[str, np.ndarray], ys: Mapping[str, np.ndarray]) -> bool:
        if not self.contains(xs):
            return False
        t, s = np.asarray(ys["teacher"]).reshape(-1), np.asarray(ys["student"]).reshape(-1)
        # some teacher top class i (ties included) that the student does not rank strictly first
        return any(any(s[k] >= s[i] for k in range(s.size) if k != i) for i in np.flatnonzero(t >= t.max()))

    def refine(self, prog: Program, assignment: np.ndarray) -> list[LinearRow]:
        return []


@dataclass(frozen=True)
class FaithubResult:
    """FAITHUB (sound upper bound on max_x ‖softmax g_t − softmax g_s‖∞) and how it was computed."""

    faithub: float
    method: str
    per_class: np.ndarray = field(default_factory=lambda: np.zeros(0))


def logit_difference_bounds_crown(
    net: Network, lo: np.ndarray, hi: np.ndarray
) -> tuple[np.ndarray, np.ndarray]:
    """Bounds on ``d_ij = z_j − z_i`` for all pairs over the box, by CROWN (diagonal 0)."""
    n = net.n_outputs
    rows = [(i, j) for i in range(n) for j in range(n) if i != j]
    C = np.zeros((len(rows), n))
    for r, (i, j) in enumerate(rows):
        C[r, j], C[r, i] = 1.0, -1.0
    lb, ub = crown_linear(net, lo, hi, C)
    dl, du = np.zeros((n, n)), np.zeros((n, n))
    for r, (i, j) in enumerate(rows):
        dl[i, j], du[i, j] = float(np.asarray(lb)[r]), float(np.asarray(ub)[r])
    return dl, du


def faithub_crown(teacher: Network, student: Network, lo: np.ndarray, hi: np.ndarray) -> float:
    """FAITHUB by CROWN logit-difference bounds, then seed 001 Eq. 10 and Eq. 11."""
    tl, tu = logit_difference_bounds_crown(teacher, lo, hi)
    sl, su = logit_difference_bounds_crown(student, lo, hi)
    return float(rx.faithub(tl, tu, sl, su))


def faithub_split(
    teacher: Network, student: Network, lo: np.ndarray, hi: np.ndarray, splits: int = 16
) -> float:
    """Joint variant: split the input box into sub-boxes and take the max of per-box FAITHUB.

    Both networks are bounded on the *same* sub-box, so the correlation through the shared input is
    kept at the granularity of the split; since every x lies in some sub-box, the maximum over
    sub-boxes of a sound per-box bound is a sound bound on ``max_x``, and never looser than the
    unsplit bound (each sub-box bound is at most the whole-box bound, CROWN being monotone in the
    box only approximately — so we return the minimum of the two).
    """
    whole = faithub_crown(teacher, student, lo, hi)
    boxes = [(lo.copy(), hi.copy())]
    while len(boxes) < splits:
        lo_b, hi_b = boxes.pop(0)
        d = int(np.argmax(hi_b - lo_b))
        mid = 0.5 * (lo_b[d] + hi_b[d])
        h1, l2 = hi_b.copy(), lo_b.copy()
        h1[d], l2[d] = mid, mid
        boxes += [(lo_b, h1), (l2, hi_b)]
    return float(min(whole, max(faithub_crown(teacher, student, a, b) for a, b in boxes)))
