"""VNN-LIB 2.0 queries: reader (through the official ``vnnlib`` parser), normal form and writer.

A VNN-LIB 2.0 query declares one or more networks, each with typed, shaped input, hidden and output
tensors, and asserts constraints over their elements (``X[0,3]``)::

    (vnnlib-version <2.0>)
    (declare-network N (declare-input X float32 [1,2]) (declare-output Y float32 [2]))
    (declare-network M (equal-to N) (declare-input X2 float32 [1,2]) (declare-output Y2 float32 [2]))
    (assert (<= X[0,0] 1.0)) ...

The query is **satisfiable** (answer ``sat``) iff some assignment of every declared variable satisfies
all asserts, where each network's outputs (and hidden tensors) are its function of its inputs.  As in
the 2021 dialect (:mod:`encoders.vnnlib`), the asserts describe the *unsafe* region.

Parsing and typing are the official parser's (``vnnlib.parse_query_file``, package ``vnnlib``): it
checks the grammar, declarations, the element types of constants and the scoping of variables.  This
module then builds the normal form below from its typed syntax tree.

Normal form
-----------
Every tensor element gets one index in a *flat variable space* (tensors in declaration order, each in
row-major order).  An arithmetic expression is turned into a polynomial over the flat variables with
exact rational coefficients; a comparison ``p ⋈ q`` becomes the atom ``p − q ⋈ 0`` written as

.. math::  \\sum_v a_v x_v + \\sum_{v \\le w} c_{vw} x_v x_w \\le b \\quad(\\text{or } < b),

``(== p q)`` is two atoms, ``(!= p q)`` is the disjunction ``p < q ∨ p > q``.  The conjunction of all
asserts is brought to disjunctive normal form: :attr:`Query.terms` is a tuple of conjunctions of
atoms; the query is sat iff some term is satisfiable.

Numerics (soundness)
--------------------
* A numeric literal means its nearest float64 (as in the 2021 reader and every VNN-COMP tool);
  arithmetic on literals is exact (``fractions.Fraction``).
* Coefficients and right-hand sides stay exact rationals in :class:`Atom`; whoever turns an atom into
  float64 rows rounds the right-hand side outward (:meth:`Atom.rhs_up`), so the encoded unsafe region
  contains the written one (an ``unsat`` answer for the encoding is one for the file).
* Strict inequalities are kept as strict (``Atom.strict``): the encodings use the closure (a superset
  of the unsafe region, sound for ``unsat``), and a witness must satisfy the strict atom on the
  replayed values to be reported ``sat``.
* Degree above 2 is refused; degree-2 atoms are kept (``Atom.quad``) for the encoders that can use
  them (the L2 coupling of two copies); every other consumer refuses them with a clear message.

Errors
------
Every problem raises :class:`~encoders.errors.SpecError` with one line naming the file.
"""

from __future__ import annotations

import math
import re
from collections.abc import Iterable, Sequence
from dataclasses import dataclass, field
from decimal import Decimal
from fractions import Fraction
from pathlib import Path
from typing import Any

import numpy as np

from .errors import SpecError
from .vnnlib import read_vnnlib_text

__all__ = [
    "TensorVar",
    "NetworkDecl",
    "Atom",
    "Query",
    "is_vnnlib2_text",
    "is_vnnlib2_file",
    "parse_vnnlib2",
    "parse_vnnlib2_text",
    "decimal",
    "MAX_TERMS",
]

#: Largest number of DNF terms a query may expand to.
MAX_TERMS = 100_000

#: VNN-LIB element type names (as written in queries) for the parser's ``DType`` names.
DTYPE_NAMES: dict[str, str] = {
    "F16": "float16",
    "F32": "float32",
    "F64": "float64",
    "BF16": "bfloat16",
    "F8E4M3FN": "float8e4m3fn",
    "F8E5M2": "float8e5m2",
    "F8E4M3FNUZ": "float8e4m3fnuz",
    "F8E5M2FNUZ": "float8e5m2fnuz",
    "F4E2M1": "float4e2m1",
    "I8": "int8",
    "I16": "int16",
    "I32": "int32",
    "I64": "int64",
    "U8": "uint8",
    "U16": "uint16",
    "U32": "uint32",
    "U64": "uint64",
    "C64": "complex64",
    "C128": "complex128",
    "Bool": "bool",
    "String": "string",
    "Real": "real",
}

#: Element types whose values the encoders treat as real numbers (see docs/vnnlib.md).
REAL_LIKE_TYPES = frozenset({"real", "float16", "float32", "float64", "bfloat16"})


# ==================================================================================================
# data model
# ==================================================================================================
@dataclass(frozen=True)
class TensorVar:
    """One declared tensor: ``kind`` is ``"input"``, ``"hidden"`` or ``"output"``.

    ``offset`` is the flat index of its first element; element ``idx`` (row-major) is
    ``offset + flat(idx)``.  ``onnx_name`` is the ONNX tensor/node name a declaration names (``None``
    when it refers to the network's inputs/outputs by position).
    """

    name: str
    kind: str
    dtype: str
    shape: tuple[int, ...]
    network: str
    onnx_name: str | None
    offset: int

    @property
    def size(self) -> int:
        return int(np.prod(self.shape)) if self.shape else 1

    @property
    def indices(self) -> np.ndarray:
        return np.arange(self.offset, self.offset + self.size, dtype=np.int64)

    def flat(self, idx: Sequence[int]) -> int:
        if len(idx) != len(self.shape):
            raise ValueError(f"{self.name}: {len(idx)} indices for a rank-{len(self.shape)} tensor")
        for i, d in zip(idx, self.shape):
            if not 0 <= i < d:
                raise ValueError(f"{self.name}{list(idx)}: index out of range for shape {list(self.shape)}")
        return self.offset + (int(np.ravel_multi_index(tuple(idx), self.shape)) if self.shape else 0)

    def element_name(self, k: int) -> str:
        """``X[0,3]`` for the ``k``-th element (row-major)."""
        if not self.shape:
            return self.name
        return f"{self.name}[{','.join(str(int(i)) for i in np.unravel_index(k, self.shape))}]"


@dataclass(frozen=True)
class NetworkDecl:
    """A ``declare-network``: its tensors and its relation to an earlier network (if any)."""

    name: str
    inputs: tuple[TensorVar, ...]
    hidden: tuple[TensorVar, ...]
    outputs: tuple[TensorVar, ...]
    equal_to: str | None = None
    isomorphic_to: str | None = None

    @property
    def tensors(self) -> tuple[TensorVar, ...]:
        return (*self.inputs, *self.hidden, *self.outputs)


@dataclass(frozen=True, eq=False)
class Atom:
    """``Σ coefs[v]·x_v + Σ quad[(v, w)]·x_v·x_w  <=  rhs`` (``<`` when ``strict``), exact rationals."""

    coefs: dict[int, Fraction]
    rhs: Fraction
    strict: bool = False
    quad: dict[tuple[int, int], Fraction] = field(default_factory=dict)
    line: int = 0

    @property
    def variables(self) -> set[int]:
        vs = set(self.coefs)
        for v, w in self.quad:
            vs.update((v, w))
        return vs

    @property
    def linear(self) -> bool:
        return not self.quad

    def rhs_up(self) -> float:
        """The right-hand side rounded up to a float64 (the encoded region contains the exact one)."""
        return _round_up(self.rhs)

    def value(self, x: np.ndarray) -> float:
        """Left-hand side at a concrete assignment (float64)."""
        s = sum(float(a) * float(x[v]) for v, a in self.coefs.items())
        s += sum(float(c) * float(x[v]) * float(x[w]) for (v, w), c in self.quad.items())
        return s

    def holds(self, x: np.ndarray) -> bool:
        """Exact check at a concrete float assignment (rational arithmetic, strictness respected)."""
        s = sum((a * Fraction(float(x[v])) for v, a in self.coefs.items()), Fraction(0))
        s += sum(
            (c * Fraction(float(x[v])) * Fraction(float(x[w])) for (v, w), c in self.quad.items()),
            Fraction(0),
        )
        return s < self.rhs if self.strict else s <= self.rhs


@dataclass(frozen=True, eq=False)
class Query:
    """A parsed VNN-LIB 2.0 query (see the module docstring).

    Attributes
    ----------
    networks
        The ``declare-network`` blocks in order.
    variables
        Every declared tensor in declaration order (their ``offset`` define the flat space).
    n_vars
        Size of the flat variable space.
    terms
        The DNF of the conjunction of all asserts: the query is sat iff some term is satisfiable.
    path
        The file it was read from.
    """

    networks: tuple[NetworkDecl, ...]
    variables: tuple[TensorVar, ...]
    n_vars: int
    terms: tuple[tuple[Atom, ...], ...]
    path: str = "<vnnlib>"
    version: str = "2.0"

    def network(self, name: str) -> NetworkDecl:
        for n in self.networks:
            if n.name == name:
                return n
        raise KeyError(name)

    def root(self, name: str) -> str:
        """The network whose ONNX file implements ``name`` (follows ``equal-to`` chains)."""
        seen = set()
        n = self.network(name)
        while n.equal_to:
            if n.name in seen:
                raise SpecError(f"{self.path}: equal-to cycle through network {n.name!r}")
            seen.add(n.name)
            n = self.network(n.equal_to)
        return n.name

    @property
    def file_networks(self) -> list[str]:
        """Networks that need a ``--network NAME=FILE`` mapping (those not marked ``equal-to``)."""
        return [n.name for n in self.networks if not n.equal_to]

    def var_of(self, v: int) -> tuple[TensorVar, int]:
        """The tensor holding flat variable ``v`` and the element's row-major position in it."""
        for t in self.variables:
            if t.offset <= v < t.offset + t.size:
                return t, v - t.offset
        raise IndexError(v)

    def kind_mask(self, kind: str) -> np.ndarray:
        m = np.zeros(self.n_vars, dtype=bool)
        for t in self.variables:
            if t.kind == kind:
                m[t.offset : t.offset + t.size] = True
        return m

    @property
    def linear(self) -> bool:
        return all(a.linear for t in self.terms for a in t)

    def satisfied_by(self, x: np.ndarray) -> bool:
        """Whether a full assignment of the flat space satisfies some term exactly."""
        return any(all(a.holds(x) for a in term) for term in self.terms)


# ==================================================================================================
# detection
# ==================================================================================================
_V2_RE = re.compile(r"\(\s*(vnnlib-version|declare-network)\b")


def is_vnnlib2_text(text: str) -> bool:
    """Whether source text is VNN-LIB 2.0 (it has ``vnnlib-version`` or ``declare-network``)."""
    stripped = "\n".join(line.split(";", 1)[0] for line in text.splitlines())
    return _V2_RE.search(stripped) is not None


def is_vnnlib2_file(path: str | Path) -> bool:
    """:func:`is_vnnlib2_text` of a file's first 64 KiB (``False`` if it cannot be read)."""
    try:
        with open(path, "rb") as fh:
            head = fh.read(1 << 16)
    except OSError:
        return False
    return is_vnnlib2_text(head.decode("utf-8", errors="replace"))


# ==================================================================================================
# reading
# ==================================================================================================
def _round_up(q: Fraction) -> float:
    f = float(q) + 0.0
    if Fraction(f) < q:
        f = math.nextafter(f, math.inf)
    return f


def _round_down(q: Fraction) -> float:
    f = float(q) + 0.0
    if Fraction(f) > q:
        f = math.nextafter(f, -math.inf)
    return f


# A polynomial of degree <= 2: {(): const, (v,): coef, (v, w) with v <= w: coef}.
_Poly = dict


def _padd(p: _Poly, q: _Poly, s: int = 1) -> _Poly:
    out = dict(p)
    for k, v in q.items():
        out[k] = out.get(k, Fraction(0)) + s * v
    return out


def _pmul(p: _Poly, q: _Poly) -> _Poly:
    out: _Poly = {}
    for k1, v1 in p.items():
        for k2, v2 in q.items():
            if v1 == 0 or v2 == 0:
                continue
            k = tuple(sorted(k1 + k2))
            if len(k) > 2:
                raise _Refused("a polynomial of degree above 2")
            out[k] = out.get(k, Fraction(0)) + v1 * v2
    return out


class _Refused(Exception):
    pass


class _Builder:
    """Turns the official parser's typed tree into a :class:`Query`."""

    def __init__(self, vq: Any, name: str, max_terms: int):
        self.vq = vq
        self.name = name
        self.max_terms = max_terms
        self.tensors: dict[str, TensorVar] = {}

    def err(self, msg: str, line: int | None = None) -> SpecError:
        where = f"{self.name}:{line}" if line else self.name
        return SpecError(f"{where}: {msg}")

    def run(self) -> Query:
        import vnnlib

        nets: list[NetworkDecl] = []
        variables: list[TensorVar] = []
        offset = 0
        names = set()
        for n in self.vq.networks:
            if n.name in names:
                raise self.err(f"network {n.name!r} declared twice")
            names.add(n.name)
            groups: dict[str, list[TensorVar]] = {"input": [], "hidden": [], "output": []}
            for kind, decls in (("input", n.inputs), ("hidden", n.hidden), ("output", n.outputs)):
                for d in decls:
                    shape = tuple(int(s) for s in d.shape)
                    if any(s <= 0 for s in shape):
                        raise self.err(f"tensor {d.name!r} has a non-positive dimension in {list(shape)}")
                    dt = DTYPE_NAMES.get(d.dtype.name, d.dtype.name.lower())
                    onnx = d.onnx_name
                    onnx = onnx.strip('"') if onnx else None
                    t = TensorVar(d.name, kind, dt, shape, n.name, onnx, offset)
                    if d.name in self.tensors:
                        raise self.err(f"variable {d.name!r} declared twice")
                    self.tensors[d.name] = t
                    offset += t.size
                    groups[kind].append(t)
                    variables.append(t)
            nets.append(
                NetworkDecl(
                    n.name,
                    tuple(groups["input"]),
                    tuple(groups["hidden"]),
                    tuple(groups["output"]),
                    n.equal_to or None,
                    n.isometric_to or None,
                )
            )
        self._vnnlib = vnnlib
        terms: list[tuple[Atom, ...]] = [()]
        for a in self.vq.assertions:
            dnf = self._bool(a.expr)
            if len(terms) * len(dnf) > self.max_terms:
                raise self.err(f"the asserts expand to more than {self.max_terms} disjunctive terms")
            terms = [t + d for t in terms for d in dnf]
        return Query(tuple(nets), tuple(variables), offset, tuple(terms), self.name)

    # ---- boolean structure: lists of conjunctions --------------------------------------------
    def _bool(self, e: Any) -> list[tuple[Atom, ...]]:
        v = self._vnnlib
        if isinstance(e, v.And):
            out: list[tuple[Atom, ...]] = [()]
            for arg in e.args:
                d = self._bool(arg)
                if len(out) * len(d) > self.max_terms:
                    raise self.err(f"an 'and' expands to more than {self.max_terms} disjunctive terms")
                out = [t + s for t in out for s in d]
            return out
        if isinstance(e, v.Or):
            out = []
            for arg in e.args:
                out.extend(self._bool(arg))
                if len(out) > self.max_terms:
                    raise self.err(f"an 'or' expands to more than {self.max_terms} disjunctive terms")
            return out
        if isinstance(e, v.Comparison):
            return self._cmp(e)
        raise self.err(f"unsupported boolean expression {str(e)[:60]!r}")

    def _cmp(self, e: Any) -> list[tuple[Atom, ...]]:
        v = self._vnnlib
        try:
            p = _padd(self._arith(e.lhs), self._arith(e.rhs), -1)  # p ⋈ 0
        except _Refused as ex:
            raise self.err(f"cannot encode {str(e)[:80]!r}: {ex}") from None
        line = self._line(e)
        if isinstance(e, v.LessEqual):
            return [(self._atom(p, False, line),)]
        if isinstance(e, v.LessThan):
            return [(self._atom(p, True, line),)]
        if isinstance(e, v.GreaterEqual):
            return [(self._atom(_neg(p), False, line),)]
        if isinstance(e, v.GreaterThan):
            return [(self._atom(_neg(p), True, line),)]
        if isinstance(e, v.Equal):
            return [(self._atom(p, False, line), self._atom(_neg(p), False, line))]
        if isinstance(e, v.NotEqual):
            return [(self._atom(p, True, line),), (self._atom(_neg(p), True, line),)]
        raise self.err(f"unsupported comparison {str(e)[:60]!r}")

    @staticmethod
    def _line(e: Any) -> int:
        for c in e.children():
            ln = getattr(c, "line", None)
            if isinstance(ln, int) and ln > 0:
                return ln
        return 0

    @staticmethod
    def _atom(p: _Poly, strict: bool, line: int) -> Atom:
        coefs = {k[0]: c for k, c in p.items() if len(k) == 1 and c != 0}
        quad = {(k[0], k[1]): c for k, c in p.items() if len(k) == 2 and c != 0}
        return Atom(coefs, -p.get((), Fraction(0)), strict, quad, line)

    # ---- arithmetic ---------------------------------------------------------------------------
    def _arith(self, e: Any) -> _Poly:
        v = self._vnnlib
        if isinstance(e, v.Var):
            t = self.tensors.get(e.name)
            if t is None:
                raise self.err(f"undeclared variable {e.name!r}", getattr(e, "line", None))
            try:
                k = t.flat(list(e.indices))
            except ValueError as ex:
                raise self.err(str(ex), getattr(e, "line", None)) from None
            return {(k,): Fraction(1)}
        if isinstance(e, v.Literal):
            lex = e.lexeme
            try:
                val = float(lex)
            except ValueError:
                raise self.err(f"not a number: {lex!r}", getattr(e, "line", None)) from None
            if not math.isfinite(val):
                raise self.err(f"non-finite constant {lex!r}", getattr(e, "line", None))
            return {(): Fraction(val)}
        if isinstance(e, v.Negate):
            return _neg(self._arith(e.expr))
        if isinstance(e, v.Plus):
            out: _Poly = {}
            for a in e.args:
                out = _padd(out, self._arith(a))
            return out
        if isinstance(e, v.Minus):
            out = self._arith(e.head)
            for a in e.rest:
                out = _padd(out, self._arith(a), -1)
            return out
        if isinstance(e, v.Multiply):
            out = {(): Fraction(1)}
            for a in e.args:
                out = _pmul(out, self._arith(a))
            return out
        raise _Refused(f"unsupported arithmetic {type(e).__name__}")


def _neg(p: _Poly) -> _Poly:
    return {k: -c for k, c in p.items()}


def parse_vnnlib2_text(text: str, name: str = "<vnnlib>", max_terms: int = MAX_TERMS) -> Query:
    """Parse VNN-LIB 2.0 source text with the official parser; see the module docstring."""
    try:
        import vnnlib
    except ImportError:  # pragma: no cover - a declared dependency
        raise SpecError(
            f"{name}: reading VNN-LIB 2.0 needs the 'vnnlib' package (pip install vnnlib)"
        ) from None
    try:
        vq = vnnlib.parse_query_string(text)
    except vnnlib.VNNLibException as ex:
        raise SpecError(f"{name}: {_parser_message(str(ex))}") from None
    except Exception as ex:  # the binding may raise other C++ errors
        raise SpecError(f"{name}: the VNN-LIB parser failed ({type(ex).__name__}: {str(ex)[:200]})") from None
    return _Builder(vq, name, max_terms).run()


def _parser_message(msg: str) -> str:
    """One line from the parser's message (it is sometimes a JSON report)."""
    msg = msg.strip()
    if msg.startswith("{"):
        import json

        try:
            rep = json.loads(msg)
            errs = rep.get("errors") or []
            if errs:
                e = errs[0]
                more = f" (and {len(errs) - 1} more)" if len(errs) > 1 else ""
                return (
                    f"line {e.get('line', '?')}: {e.get('message', 'error')}: {e.get('hint', '')}{more}"
                ).strip()
        except (ValueError, AttributeError):
            pass
    return " ".join(msg.split())[:300]


def parse_vnnlib2(path: str | Path, max_terms: int = MAX_TERMS) -> Query:
    """Read and parse a VNN-LIB 2.0 file; :class:`SpecError` (one line naming the file) on any problem."""
    return parse_vnnlib2_text(read_vnnlib_text(path), str(path), max_terms)


# ==================================================================================================
# writing
# ==================================================================================================
def decimal(v: float) -> str:
    """A float64 as a plain decimal the 2.0 grammar accepts (no exponent, always a point), exact.

    ``float(decimal(v)) == v`` (the shortest round-tripping digits, written out positionally).
    """
    v = float(v)
    if not math.isfinite(v):
        raise ValueError(f"non-finite number {v!r}")
    s = format(Decimal(repr(v)), "f")
    if "." not in s:
        s += ".0"
    if s.startswith("-") and float(s) == 0.0:
        s = "0.0"
    return s


def tensor_decl(
    kind: str, name: str, shape: Iterable[int], dtype: str = "float32", onnx_name: str | None = None
) -> str:
    """``(declare-input X float32 [1,784])`` (``onnx_name`` quoted for hidden nodes)."""
    dims = ",".join(str(int(d)) for d in shape)
    tail = f' "{onnx_name}"' if onnx_name else ""
    return f"(declare-{kind} {name} {dtype} [{dims}]{tail})"


def linear_text(terms: Sequence[tuple[float, str]], rhs: float, sense: str = "<=") -> str:
    """``(<= (+ (* 2.0 Y[0]) (* -1.0 Y[1])) 0.0)`` for ``[(2.0, "Y[0]"), (-1.0, "Y[1]")]``."""
    parts = [v if c == 1.0 else f"(* {decimal(c)} {v})" for c, v in terms if c != 0.0]
    if not parts:
        lhs = "0.0"
    elif len(parts) == 1:
        lhs = parts[0]
    else:
        lhs = "(+ " + " ".join(parts) + ")"
    return f"({sense} {lhs} {decimal(rhs)})"


__all__ += ["tensor_decl", "linear_text", "DTYPE_NAMES", "REAL_LIKE_TYPES"]


# --------------------------------------------------------------------------------------------------
# queries distillcert writes (verify global / faithfulness --save-vnnlib)
# --------------------------------------------------------------------------------------------------
def _io_shape(shape: Sequence[int], n: int) -> tuple[int, ...]:
    """A declaration shape for an ONNX tensor shape (dynamic dimensions as 1); ``[n]`` if it does not
    hold ``n`` elements."""
    dims = tuple(int(d) if int(d) > 0 else 1 for d in shape)
    return dims if dims and int(np.prod(dims)) == n else (n,)


def _elems(name: str, shape: tuple[int, ...]) -> list[str]:
    return [f"{name}[{','.join(str(int(i)) for i in idx)}]" for idx in np.ndindex(*shape)]


def _box_asserts(elems: Sequence[str], lo: np.ndarray, hi: np.ndarray) -> list[str]:
    return [
        f"(assert (and (>= {e} {decimal(lo[i])}) (<= {e} {decimal(hi[i])})))" for i, e in enumerate(elems)
    ]


def _header(comment: str, decls: Sequence[str]) -> list[str]:
    out = [f"; {ln}".rstrip() for ln in comment.splitlines()]
    return [*out, "", "(vnnlib-version <2.0>)", "", *decls, ""]


def global_robustness_text(
    in_shape: Sequence[int],
    out_shape: Sequence[int],
    n_in: int,
    n_out: int,
    delta: float,
    kappa: float,
    lo: np.ndarray,
    hi: np.ndarray,
    norm: str = "inf",
    classes: Sequence[int] | None = None,
) -> str:
    """VNN-LIB 2.0 source of the global two-copy κ-confidence δ-robustness violation.

    Networks ``N`` and ``N2`` ``(equal-to N)``; both inputs in the domain box ``[lo, hi]``; coupling
    ``|X_i − X2_i| <= δ`` for every element (L∞) or ``Σ (X_i − X2_i)² <= δ²`` (L2, the ``POLY``
    theory); violation ``⋁_c ⋁_{j≠c} ( ⋀_{k≠c} Y_c − Y_k >= m  ∧  Y2_j >= Y2_c )`` with
    ``m = ln(κ/(1−κ))`` rounded down.

    Softmax confidence is not linear.  ``softmax_c(y) >= κ`` implies ``y_c − y_k >= m`` for every k, and
    for two classes the two are equivalent, so the written query is exact for two classes and a
    *superset* of the violations otherwise: its ``unsat`` proves the property; a ``sat`` witness of it
    must still be checked against the softmax condition.
    """
    if norm not in ("inf", "2"):
        raise SpecError(f"--norm: {norm!r} cannot be written (inf or 2)")
    if not (delta > 0 and 0 < kappa < 1):
        raise SpecError("global robustness needs delta > 0 and 0 < kappa < 1")
    lo = np.asarray(lo, dtype=np.float64).reshape(-1)
    hi = np.asarray(hi, dtype=np.float64).reshape(-1)
    si, so = _io_shape(in_shape, n_in), _io_shape(out_shape, n_out)
    X, X2, Y, Y2 = _elems("X", si), _elems("X2", si), _elems("Y", so), _elems("Y2", so)
    m = _round_down(Fraction(math.log(kappa / (1.0 - kappa))))
    m = math.nextafter(m, -math.inf)  # the logarithm itself is rounded: one more ulp down
    exact = "exact (two classes)" if n_out == 2 else "the logit-margin superset (see the docstring)"
    comment = (
        f"Global two-copy robustness written by distillcert: delta={delta!r} ({norm}), kappa={kappa!r}.\n"
        f"sat = a kappa-confident input of N whose delta-neighbour is classified differently; "
        f"confidence is {exact}."
    )
    decls = [
        f"(declare-network N {tensor_decl('input', 'X', si)} {tensor_decl('output', 'Y', so)})",
        "(declare-network N2 (equal-to N) "
        f"{tensor_decl('input', 'X2', si)} {tensor_decl('output', 'Y2', so)})",
    ]
    out = _header(comment, decls)
    out += ["; domain", *_box_asserts(X, lo, hi), *_box_asserts(X2, lo, hi), "", "; coupling"]
    d = decimal(delta)
    if norm == "inf":
        for a, b in zip(X, X2):
            out.append(f"(assert (and (<= (- {a} {b}) {d}) (<= (- {b} {a}) {d})))")
    else:
        sq = " ".join(f"(* (- {a} {b}) (- {a} {b}))" for a, b in zip(X, X2))
        r2 = _round_up(Fraction(delta) * Fraction(delta))
        out.append(
            f"(assert (<= (+ {sq}) {decimal(r2)}))" if len(X) > 1 else f"(assert (<= {sq} {decimal(r2)}))"
        )
    out += ["", "; violation: confident at X, another class at least as high at X2"]
    terms = []
    for c in classes if classes is not None else range(n_out):
        conf = " ".join(f"(>= (- {Y[c]} {Y[k]}) {decimal(m)})" for k in range(n_out) if k != c)
        for j in range(n_out):
            if j != c:
                terms.append(f"    (and {conf} (>= {Y2[j]} {Y2[c]}))")
    out += ["(assert (or", *terms, "))"]
    return "\n".join(out) + "\n"


def disagreement_text(
    in_shape: Sequence[int],
    out_shape: Sequence[int],
    n_in: int,
    n_out: int,
    lo: np.ndarray,
    hi: np.ndarray,
    eps: float | None = None,
) -> str:
    """VNN-LIB 2.0 source of teacher–student disagreement on the box ``[lo, hi]``.

    Networks ``T`` (teacher) and ``S`` (student) with inputs ``XT = XS`` (element-wise equalities: one
    shared input) in the box; violation ``⋁_i ⋁_{k≠i} ( ⋀_{j≠i} YT_i >= YT_j  ∧  YS_k >= YS_i )`` — the
    teacher ranks ``i`` first (ties included) and the student does not rank it strictly first; exactly
    :class:`~encoders.properties.Disagreement`.
    """
    lo = np.asarray(lo, dtype=np.float64).reshape(-1)
    hi = np.asarray(hi, dtype=np.float64).reshape(-1)
    si, so = _io_shape(in_shape, n_in), _io_shape(out_shape, n_out)
    XT, XS, YT, YS = _elems("XT", si), _elems("XS", si), _elems("YT", so), _elems("YS", so)
    comment = (
        "Teacher-student disagreement written by distillcert"
        + (f" (L-inf ball, eps={eps!r})" if eps is not None else "")
        + ".\nsat = one input on which the student does not rank the teacher's top class strictly first."
    )
    decls = [
        f"(declare-network T {tensor_decl('input', 'XT', si)} {tensor_decl('output', 'YT', so)})",
        f"(declare-network S {tensor_decl('input', 'XS', si)} {tensor_decl('output', 'YS', so)})",
    ]
    out = _header(comment, decls)
    out += ["; input box", *_box_asserts(XT, lo, hi), *_box_asserts(XS, lo, hi), "", "; one shared input"]
    out += [f"(assert (== {a} {b}))" for a, b in zip(XT, XS)]
    out += ["", "; violation", "(assert (or"]
    for i in range(n_out):
        top = " ".join(f"(>= {YT[i]} {YT[j]})" for j in range(n_out) if j != i)
        for k in range(n_out):
            if k != i:
                out.append(f"    (and {top} (>= {YS[k]} {YS[i]}))")
    out.append("))")
    return "\n".join(out) + "\n"


def save_query_bundle(path: str | Path, text: str, networks: dict[str, str | Path]) -> dict[str, str]:
    """Write ``text`` to ``path`` and copy each network's ONNX file next to it as ``NAME.onnx``.

    Returns ``{"vnnlib": path, NAME: onnx path, …, "command": the distillcert-vnnlib command line}``.
    The query is checked with the official parser before anything is written.
    """
    import shutil

    parse_vnnlib2_text(text, str(path))
    p = Path(path)
    p.parent.mkdir(parents=True, exist_ok=True)
    out: dict[str, str] = {"vnnlib": str(p)}
    for name, src in networks.items():
        dst = p.parent / f"{p.stem}.{name}.onnx"
        if Path(src).resolve() != dst.resolve():
            shutil.copyfile(src, dst)
        out[name] = str(dst)
    p.write_text(text)
    out["command"] = (
        "distillcert-vnnlib verify " + str(p) + "".join(f" --network {n}={out[n]}" for n in networks)
    )
    return out


__all__ += ["global_robustness_text", "disagreement_text", "save_query_bundle"]
