"""VNN-LIB property files: parser and writer.

A VNN-LIB file (an SMT-LIB subset) declares real inputs ``X_0 … X_{m-1}`` and outputs
``Y_0 … Y_{n-1}`` and asserts constraints over them.  The conjunction of all asserts describes the
**unsafe** region: the property is *violated* (VNN-COMP answer ``sat``) iff some input ``x`` that
satisfies the input constraints has network outputs ``y = f(x)`` satisfying the output constraints.

Normal form
-----------
The conjunction of all asserts is brought to disjunctive normal form over atoms (negations are pushed
to the atoms first).  Every atom is a linear inequality ``Σ a_i X_i + Σ c_j Y_j <= b``; an atom must
mention only inputs (and then only one of them: a box bound) or only outputs.  Each DNF term splits
into an input box ``lo <= x <= hi`` and a conjunction of output rows ``A y <= b``.  Terms with the same
box are grouped, giving

.. math::

    \\text{unsafe} = \\bigvee_{k} \\Big( x \\in [lo_k, hi_k] \\;\\wedge\\;
                     \\bigvee_{a} A_{k,a}\\, y \\le b_{k,a} \\Big),

stored as :attr:`VnnlibSpec.cases` ``= ((lo_k, hi_k, dnf_k), …)``.  A normal file has one case; the
VNN-COMP form ``(assert (or (and <X bounds> <Y constraints>) …))`` yields several.

Numerics (soundness)
--------------------
* Every numeric literal means its nearest float64 (the convention of every VNN-COMP tool).
* All arithmetic on literals (moving constants across, ``(* 2 X_0)``, ``(/ Y_0 3)``, summing like terms)
  is done in exact rational arithmetic; the final bound is rounded **outward**: an input upper bound
  ``hi`` and an output right-hand side ``b`` are rounded up, an input lower bound ``lo`` down.  The
  stored unsafe region therefore contains the one written in the file, so an ``unsat`` (VERIFIED)
  answer for the stored region is also one for the file.  Output *coefficients* are rounded to
  nearest; they are exact for every literal and for every integer or dyadic combination (always so in
  VNN-COMP files).
* Strict inequalities ``<``, ``>`` are read as their closures ``<=``, ``>=`` (a superset of the
  unsafe region, hence sound for VERIFIED; VNN-COMP treats them the same way).  ``(not (= a b))`` is
  read as ``a <= b ∨ a >= b``, i.e. true.

Errors
------
Every problem raises :class:`~encoders.errors.SpecError` with a one-line message
``"<file>:<line>: <problem>"``: unbalanced parentheses, unknown identifiers or commands, undeclared or
re-declared variables, non-numeric or non-finite constants, non-linear terms, constraints mixing
inputs and outputs, non-box input constraints, unbounded inputs, empty boxes (``lo > hi``), files
that are not UTF-8 text, and DNFs larger than ``max_disjuncts``.  No other exception escapes
:func:`parse_vnnlib` (this is fuzz-tested).
"""

from __future__ import annotations

import bisect
import contextlib
import math
import os
import re
import tempfile
from collections.abc import Callable, Iterable, Sequence
from dataclasses import dataclass
from fractions import Fraction
from pathlib import Path
from typing import NamedTuple

import numpy as np

from .errors import SpecError
from .relaxations import linf_box

__all__ = [
    "InputBox",
    "OutputDNF",
    "VnnlibCase",
    "VnnlibSpec",
    "parse_vnnlib",
    "parse_vnnlib_text",
    "robustness_dnf",
    "vnnlib_text",
    "write_vnnlib",
    "local_robustness_vnnlib",
    "MAX_DISJUNCTS",
    "MAX_NESTING",
]

#: Largest number of DNF terms a file may expand to before the parser gives up.
MAX_DISJUNCTS = 100_000
#: Deepest parenthesis nesting accepted (real files nest at most 4 deep).
MAX_NESTING = 100


# ==================================================================================================
# data model
# ==================================================================================================
def _frozen(a: np.ndarray) -> np.ndarray:
    a = np.array(a, dtype=np.float64, copy=True)
    a.setflags(write=False)
    return a


@dataclass(frozen=True, eq=False)
class InputBox:
    """An axis-aligned input box ``lo <= x <= hi`` (float64, read-only arrays, ``lo <= hi``)."""

    lo: np.ndarray
    hi: np.ndarray

    def __post_init__(self) -> None:
        object.__setattr__(self, "lo", _frozen(self.lo))
        object.__setattr__(self, "hi", _frozen(self.hi))

    @property
    def n(self) -> int:
        return int(self.lo.shape[0])

    @property
    def center(self) -> np.ndarray:
        return (self.lo + self.hi) / 2.0

    @property
    def radius(self) -> np.ndarray:
        return (self.hi - self.lo) / 2.0

    def contains(self, x: np.ndarray, tol: float = 0.0) -> bool | np.ndarray:
        """Whether ``lo - tol <= x <= hi + tol`` (``x`` of shape ``(n,)`` or ``(batch, n)``)."""
        x = np.asarray(x, dtype=np.float64)
        ok = np.all((x >= self.lo - tol) & (x <= self.hi + tol), axis=-1)
        return bool(ok) if ok.ndim == 0 else ok


@dataclass(frozen=True, eq=False)
class OutputDNF:
    """A disjunction of conjunctions of linear output inequalities (the unsafe output region).

    ``alternatives[a] = (A, b)`` with ``A`` of shape ``(k_a, n_outputs)`` and ``b`` of shape
    ``(k_a,)`` stands for ``A y <= b`` (row-wise); the region is the union over ``a``.  An alternative
    with ``k_a = 0`` rows is the whole output space; an empty tuple of alternatives is the empty set.
    """

    alternatives: tuple[tuple[np.ndarray, np.ndarray], ...]
    n_outputs: int

    def __post_init__(self) -> None:
        alts = []
        for A, b in self.alternatives:
            A = _frozen(np.asarray(A, dtype=np.float64).reshape(-1, self.n_outputs))
            b = _frozen(np.asarray(b, dtype=np.float64).reshape(-1))
            if A.shape[0] != b.shape[0]:
                raise ValueError(f"OutputDNF: A has {A.shape[0]} rows but b has {b.shape[0]}")
            alts.append((A, b))
        object.__setattr__(self, "alternatives", tuple(alts))

    def __len__(self) -> int:
        return len(self.alternatives)

    def slack(self, y: np.ndarray) -> float | np.ndarray:
        """``max_a min_r (b_a - A_a y)_r``: ``>= 0`` iff ``y`` lies in the unsafe region.

        ``y`` has shape ``(n_outputs,)`` or ``(batch, n_outputs)``.  An alternative with no rows
        contributes ``+inf``; an empty DNF gives ``-inf``.
        """
        y = np.asarray(y, dtype=np.float64)
        batch = y.reshape(-1, self.n_outputs)
        best = np.full(batch.shape[0], -np.inf)
        for A, b in self.alternatives:
            if A.shape[0] == 0:
                s = np.full(batch.shape[0], np.inf)
            else:
                s = np.min(b[None, :] - batch @ A.T, axis=1)
            best = np.maximum(best, s)
        return float(best[0]) if y.ndim == 1 else best

    def simplified(self) -> OutputDNF:
        """The same region without constant rows: a row ``0·y <= b`` is dropped when ``b >= 0``
        (always true) and removes its whole alternative when ``b < 0`` (never true); if an
        alternative is left with no rows (the whole space), it alone is kept."""
        alts = []
        for A, b in self.alternatives:
            const = ~np.any(A != 0, axis=1)
            if np.any(const & (b < 0)):
                continue
            if np.all(const):
                return OutputDNF(((A[:0], b[:0]),), self.n_outputs)
            alts.append((A[~const], b[~const]))
        return OutputDNF(tuple(alts), self.n_outputs)

    def contains(self, y: np.ndarray, tol: float = 0.0) -> bool | np.ndarray:
        """Whether ``y`` satisfies some alternative up to ``tol`` (``A y <= b + tol``)."""
        s = self.slack(y)
        return bool(s >= -tol) if np.ndim(s) == 0 else s >= -tol


class VnnlibCase(NamedTuple):
    """One ``(input box, output DNF)`` pair; unpacks as ``lo, hi, dnf``."""

    lo: np.ndarray
    hi: np.ndarray
    dnf: OutputDNF

    @property
    def box(self) -> InputBox:
        return InputBox(self.lo, self.hi)


@dataclass(frozen=True, eq=False)
class VnnlibSpec:
    """A parsed VNN-LIB property: the unsafe region is ``⋁_k (x ∈ box_k ∧ f(x) ∈ dnf_k)``.

    Attributes
    ----------
    n_inputs, n_outputs
        Numbers of declared ``X_i`` and ``Y_j``.
    cases
        ``((lo, hi, OutputDNF), …)``; one case for an ordinary file.
    path
        The file it was read from (``None`` when built in memory).
    """

    n_inputs: int
    n_outputs: int
    cases: tuple[VnnlibCase, ...]
    path: str | None = None

    @property
    def boxes(self) -> tuple[InputBox, ...]:
        """The distinct input boxes, in order of first appearance."""
        seen: dict[bytes, InputBox] = {}
        for c in self.cases:
            key = c.lo.tobytes() + c.hi.tobytes()
            if key not in seen:
                seen[key] = InputBox(c.lo, c.hi)
        return tuple(seen.values())

    @property
    def name(self) -> str:
        return self.path or "<vnnlib>"

    def single_case(self) -> VnnlibCase:
        """The only case; :class:`SpecError` if the file has several boxes."""
        if len(self.cases) != 1:
            raise SpecError(f"{self.name}: has {len(self.cases)} input boxes; this command needs exactly one")
        return self.cases[0]

    def check_dims(self, n_inputs: int, n_outputs: int, model: str = "the network") -> None:
        """Raise :class:`SpecError` unless the declarations match a network's input/output sizes."""
        if n_inputs != self.n_inputs or n_outputs != self.n_outputs:
            raise SpecError(
                f"{self.name}: declares {self.n_inputs} inputs and {self.n_outputs} outputs but {model} "
                f"has {n_inputs} inputs and {n_outputs} outputs"
            )

    def is_violated_by(self, x: np.ndarray, y: np.ndarray, tol: float = 0.0) -> bool:
        """Whether the pair ``(x, y = f(x))`` lies in the unsafe region (a real counterexample)."""
        return any(InputBox(lo, hi).contains(x, tol) and dnf.contains(y, tol) for lo, hi, dnf in self.cases)


# ==================================================================================================
# tokenizer and s-expression reader
# ==================================================================================================
_TOKEN_RE = re.compile(
    r"""(?P<ws>\s+)|(?P<comment>;[^\n]*)|(?P<open>\()|(?P<close>\))"""
    r"""|(?P<string>"(?:[^"]|"")*")|(?P<quoted>\|[^|]*\|)|(?P<atom>[^\s();"|]+)|(?P<bad>.)""",
    re.DOTALL,
)
_FAST_TOKEN_RE = re.compile(r"[()]|[^\s()]+")
_SIMPLE_ASSERT_RE = re.compile(r"\s*\(\s*assert\s+\(\s*(<=|>=)\s+([^\s()]+)\s+([^\s()]+)\s*\)\s*\)\s*")
_NUMBER_RE = re.compile(r"[+-]?(?:\d+\.?\d*|\.\d+)(?:[eE][+-]?\d+)?\Z")
_VAR_RE = re.compile(r"([XY])_(0|[1-9]\d*)\Z")


class _Atom(NamedTuple):
    text: str
    line: int


class _List(NamedTuple):
    items: list
    line: int


class _Simple(NamedTuple):
    """A one-line ``(assert (op a b))`` with two atoms, recognised by the reader without tokenising."""

    op: str
    a: _Atom
    b: _Atom
    line: int


class _Reader:
    """Turns text into a list of top-level s-expressions, tracking line numbers."""

    def __init__(self, text: str, name: str):
        self.text = text
        self.name = name
        self._newlines: list[int] | None = None

    def line_of(self, pos: int) -> int:
        if self._newlines is None:
            self._newlines = [m.start() for m in re.finditer("\n", self.text)]
        return bisect.bisect_right(self._newlines, pos - 1) + 1

    def err(self, line: int, msg: str) -> SpecError:
        return SpecError(f"{self.name}:{line}: {msg}")

    def read(self) -> list[_List]:
        if '"' in self.text or "|" in self.text:
            return self._read_general()
        return self._read_fast()

    def _read_fast(self) -> list[_List]:
        """Line-by-line reader for text without strings or quoted symbols (every real VNN-LIB file)."""
        stack: list[_List] = []
        top: list = []
        find = _FAST_TOKEN_RE.findall
        simple = _SIMPLE_ASSERT_RE.fullmatch
        for line, raw in enumerate(self.text.split("\n"), start=1):
            code = raw.split(";", 1)[0]
            if not stack:
                m = simple(code)
                if m is not None:  # '(assert (<= X_3 0.5))': skip building the s-expression
                    top.append(_Simple(m.group(1), _Atom(m.group(2), line), _Atom(m.group(3), line), line))
                    continue
            for tok in find(code):
                if tok == "(":
                    if len(stack) >= MAX_NESTING:
                        raise self.err(line, f"parentheses nested deeper than {MAX_NESTING}")
                    stack.append(_List([], line))
                elif tok == ")":
                    if not stack:
                        raise self.err(line, "unbalanced parentheses: ')' without a matching '('")
                    done = stack.pop()
                    (stack[-1].items if stack else top).append(done)
                elif stack:
                    stack[-1].items.append(_Atom(tok, line))
                else:
                    raise self.err(line, f"expected '(' to start a command, found {_short(tok)!r}")
        if stack:
            raise self.err(stack[0].line, "unbalanced parentheses: '(' opened here is never closed")
        return top

    def _read_general(self) -> list[_List]:
        stack: list[_List] = []
        top: list = []
        line_of = self.line_of
        for m in _TOKEN_RE.finditer(self.text):
            kind = m.lastgroup
            if kind == "ws" or kind == "comment":
                continue
            pos = m.start()
            if kind == "open":
                if len(stack) >= MAX_NESTING:
                    raise self.err(line_of(pos), f"parentheses nested deeper than {MAX_NESTING}")
                stack.append(_List([], line_of(pos)))
            elif kind == "close":
                if not stack:
                    raise self.err(line_of(pos), "unbalanced parentheses: ')' without a matching '('")
                done = stack.pop()
                (stack[-1].items if stack else top).append(done)
            elif kind == "bad":
                ch = m.group()
                what = ("unterminated string or quoted symbol" if ch in "\"|"
                        else f"unexpected character {ch!r}")
                raise self.err(line_of(pos), what)
            else:
                tok = _Atom(m.group(), line_of(pos))
                if not stack:
                    raise self.err(tok.line, f"expected '(' to start a command, found {_short(tok.text)!r}")
                stack[-1].items.append(tok)
        if stack:
            raise self.err(stack[0].line, "unbalanced parentheses: '(' opened here is never closed")
        return top


def _short(s: str, n: int = 40) -> str:
    return s if len(s) <= n else s[: n - 3] + "..."


# ==================================================================================================
# linear expressions, atoms, DNF
# ==================================================================================================
# A linear expression: (coefficients {("X"|"Y", index): int | Fraction}, constant float | Fraction).
# A float constant is a literal taken as is; any arithmetic on constants is done in Fraction.
_Lin = tuple[dict, Fraction]
# An atom: Σ coef·var <= rhs  (only X or only Y variables; see _Parser._atom).
# A DNF: list of terms; a term: list of atom ids.  [] is FALSE, [[]] is TRUE.
_DNF = list


class _XAtom(NamedTuple):
    index: int
    upper: bool  # True: X_i <= bound; False: X_i >= bound
    bound: float  # rounded outward
    line: int


class _YAtom(NamedTuple):
    coefs: dict  # index -> Fraction
    rhs: float  # rounded up
    line: int


def _round_up(q: Fraction | float) -> float:
    if isinstance(q, float):
        return q + 0.0  # (+ 0.0 turns -0.0 into 0.0)
    f = float(q) + 0.0
    if Fraction(f) < q:
        f = math.nextafter(f, math.inf)
    return f


def _round_down(q: Fraction | float) -> float:
    if isinstance(q, float):
        return q + 0.0
    f = float(q) + 0.0
    if Fraction(f) > q:
        f = math.nextafter(f, -math.inf)
    return f


_IGNORED_COMMANDS = frozenset({"set-logic", "set-info", "set-option", "check-sat", "get-model", "exit",
                               "get-value", "get-info", "push", "pop"})
_UNSUPPORTED_OPS = frozenset({"ite", "=>", "xor", "distinct", "let", "forall", "exists", "abs", "div",
                              "mod", "to_real", "to_int"})


class _Parser:
    def __init__(self, text: str, name: str, max_disjuncts: int):
        self.reader = _Reader(text, name)
        self.name = name
        self.max_disjuncts = max_disjuncts
        self.decl: dict[str, dict[int, int]] = {"X": {}, "Y": {}}  # kind -> index -> declaration line
        self.atoms: list[_XAtom | _YAtom] = []
        self.asserts: list[tuple[_DNF, int]] = []
        self._bool_ops: dict[str, Callable[[list, int, bool], _DNF]] = {
            "and": self._and, "or": self._or, "not": self._not,
            "<=": self._cmp, ">=": self._cmp, "<": self._cmp, ">": self._cmp, "=": self._cmp,
        }
        self._commands: dict[str, Callable[[_List], None]] = {
            "declare-const": self._declare_const, "declare-fun": self._declare_fun, "assert": self._assert,
        }

    def err(self, line: int, msg: str) -> SpecError:
        return self.reader.err(line, msg)

    # ---------------------------------------------------------------- commands
    def run(self) -> VnnlibSpec:
        for cmd in self.reader.read():
            if type(cmd) is _Simple:
                a, b = self._term(cmd.a), self._term(cmd.b)
                dnf = self._le(a, b, cmd.line) if cmd.op == "<=" else self._le(b, a, cmd.line)
                self.asserts.append((dnf, cmd.line))
                continue
            if not cmd.items or not isinstance(cmd.items[0], _Atom):
                raise self.err(cmd.line, "expected a command name after '('")
            head = cmd.items[0].text
            handler = self._commands.get(head)
            if handler is not None:
                handler(cmd)
            elif head not in _IGNORED_COMMANDS:
                raise self.err(cmd.line, f"unknown command {_short(head)!r}")
        return self._finish()

    def _declare(self, name_tok, sort_tok, line: int) -> None:
        if not isinstance(name_tok, _Atom):
            raise self.err(line, "declaration: expected a variable name")
        if not (isinstance(sort_tok, _Atom) and sort_tok.text == "Real"):
            raise self.err(line, f"declaration of {_short(name_tok.text)!r}: only sort Real is supported")
        m = _VAR_RE.match(name_tok.text)
        if m is None:
            raise self.err(line, f"unsupported variable name {_short(name_tok.text)!r} "
                                 "(VNN-LIB uses X_i for inputs and Y_j for outputs)")
        kind, idx = m.group(1), int(m.group(2))
        if idx in self.decl[kind]:
            raise self.err(line, f"{name_tok.text} declared twice (first on line {self.decl[kind][idx]})")
        self.decl[kind][idx] = line

    def _declare_const(self, cmd: _List) -> None:
        if len(cmd.items) != 3:
            raise self.err(cmd.line, "declare-const expects a name and a sort")
        self._declare(cmd.items[1], cmd.items[2], cmd.line)

    def _declare_fun(self, cmd: _List) -> None:
        if len(cmd.items) != 4 or not isinstance(cmd.items[2], _List) or cmd.items[2].items:
            raise self.err(cmd.line, "declare-fun: only nullary functions '(declare-fun X_0 () Real)' "
                                     "are supported")
        self._declare(cmd.items[1], cmd.items[3], cmd.line)

    def _assert(self, cmd: _List) -> None:
        if len(cmd.items) != 2:
            raise self.err(cmd.line, "assert expects exactly one formula")
        self.asserts.append((self._formula(cmd.items[1], False), cmd.line))

    # ---------------------------------------------------------------- boolean layer → DNF
    def _formula(self, e, neg: bool) -> _DNF:
        if isinstance(e, _Atom):
            if e.text == "true":
                return [] if neg else [[]]
            if e.text == "false":
                return [[]] if neg else []
            raise self.err(e.line, f"expected a formula, found {_short(e.text)!r}")
        if not e.items or not isinstance(e.items[0], _Atom):
            raise self.err(e.line, "expected an operator after '('")
        op = e.items[0].text
        fn = self._bool_ops.get(op)
        if fn is None:
            if op in _UNSUPPORTED_OPS:
                raise self.err(e.line, f"unsupported operator {op!r}")
            raise self.err(e.line, f"unknown operator {_short(op)!r} in a formula")
        return fn(e.items, e.line, neg)

    def _product(self, parts: Iterable[_DNF], line: int) -> _DNF:
        """DNF of a conjunction of DNFs (cartesian product of their terms)."""
        base: list[int] = []
        multi: list[_DNF] = []
        for d in parts:
            if not d:
                return []
            if len(d) == 1:
                base.extend(d[0])
            else:
                multi.append(d)
        terms: _DNF = [base]
        for d in multi:
            if len(terms) * len(d) > self.max_disjuncts:
                raise self.err(line, f"the formula expands to more than {self.max_disjuncts} disjuncts")
            terms = [t + u for t in terms for u in d]
        return terms

    def _union(self, parts: Iterable[_DNF], line: int) -> _DNF:
        out: _DNF = []
        for d in parts:
            out.extend(d)
            if len(out) > self.max_disjuncts:
                raise self.err(line, f"the formula expands to more than {self.max_disjuncts} disjuncts")
        return out

    def _and(self, items: list, line: int, neg: bool) -> _DNF:
        kids = [self._formula(x, neg) for x in items[1:]]
        return self._union(kids, line) if neg else self._product(kids, line)

    def _or(self, items: list, line: int, neg: bool) -> _DNF:
        kids = [self._formula(x, neg) for x in items[1:]]
        return self._product(kids, line) if neg else self._union(kids, line)

    def _not(self, items: list, line: int, neg: bool) -> _DNF:
        if len(items) != 2:
            raise self.err(line, "'not' expects exactly one argument")
        return self._formula(items[1], not neg)

    def _cmp(self, items: list, line: int, neg: bool) -> _DNF:
        op = items[0].text
        if len(items) < 3:
            raise self.err(line, f"{op!r} expects at least two arguments")
        terms = [self._term(x) for x in items[1:]]
        # chained comparisons: (op a b c) = (op a b) ∧ (op b c); under negation a disjunction.
        pairs: list[_DNF] = []
        for a, b in zip(terms[:-1], terms[1:]):
            if op == "=":
                le, ge = self._le(a, b, line), self._le(b, a, line)
                pairs.append(self._union([le, ge], line) if neg else self._product([le, ge], line))
            else:
                # closure: strict and non-strict are read alike; not(a <= b) is a >= b.
                upper = (op in ("<=", "<")) != neg  # True: a <= b
                pairs.append(self._le(a, b, line) if upper else self._le(b, a, line))
        return self._union(pairs, line) if neg else self._product(pairs, line)

    def _le(self, a: _Lin, b: _Lin, line: int) -> _DNF:
        """DNF of the atom ``a <= b``."""
        ca, cb = a[0], b[0]
        if len(ca) + len(cb) == 1 and type(a[1]) is float and type(b[1]) is float:
            # fast path: one variable with coefficient 1 against a literal (every VNN-COMP bound)
            ((kind, idx), c), = (ca or cb).items()
            if c == 1:
                if kind == "X":
                    atom: _XAtom | _YAtom = (_XAtom(idx, True, b[1] - a[1] + 0.0, line) if ca
                                             else _XAtom(idx, False, a[1] - b[1] + 0.0, line))
                else:
                    atom = (_YAtom({idx: 1}, b[1] - a[1] + 0.0, line) if ca
                            else _YAtom({idx: -1}, b[1] - a[1] + 0.0, line))
                self.atoms.append(atom)
                return [[len(self.atoms) - 1]]
        coefs = dict(a[0])
        for k, v in b[0].items():
            coefs[k] = coefs.get(k, 0) - v
        coefs = {k: v for k, v in coefs.items() if v != 0}
        ka, kb = a[1], b[1]
        # Constants stay floats while no rounding can occur; otherwise exact rationals.
        rhs = kb if ka == 0 else (-ka if kb == 0 else Fraction(kb) - Fraction(ka))
        if not coefs:
            return [[]] if rhs >= 0 else []
        kinds = {k[0] for k in coefs}
        if len(kinds) == 2:
            raise self.err(line, "a constraint mixing inputs X and outputs Y is not supported")
        if "X" in kinds:
            if len(coefs) != 1:
                names = ", ".join(f"X_{i}" for _, i in sorted(coefs))
                raise self.err(line, f"input constraint over {_short(names, 60)} is not a box bound "
                                     "(only single-variable bounds on X are supported)")
            ((_, idx), c), = coefs.items()
            q = rhs if c == 1 else (-rhs if c == -1 else Fraction(rhs) / Fraction(c))
            atom: _XAtom | _YAtom = (_XAtom(idx, True, _round_up(q), line) if c > 0
                                     else _XAtom(idx, False, _round_down(q), line))
        else:
            atom = _YAtom({i: v for (_, i), v in coefs.items()}, _round_up(rhs), line)
        self.atoms.append(atom)
        return [[len(self.atoms) - 1]]

    # ---------------------------------------------------------------- arithmetic layer
    def _term(self, e) -> _Lin:
        if isinstance(e, _Atom):
            t = e.text
            if _NUMBER_RE.match(t):
                v = float(t)
                if not math.isfinite(v):
                    raise self.err(e.line, f"numeric constant {_short(t)!r} overflows float64")
                return {}, v
            m = _VAR_RE.match(t)
            if m is not None:
                kind, idx = m.group(1), int(m.group(2))
                if idx not in self.decl[kind]:
                    raise self.err(e.line, f"undeclared variable {t}")
                return {(kind, idx): 1}, 0.0
            if t[:1].isdigit() or t[:1] in "+-." and t[1:2].isdigit():
                raise self.err(e.line, f"malformed numeric constant {_short(t)!r}")
            if t.lower() in ("inf", "+inf", "-inf", "nan", "infinity", "-infinity"):
                raise self.err(e.line, f"non-numeric constant {t!r}")
            raise self.err(e.line, f"unknown identifier {_short(t)!r}")
        if not e.items or not isinstance(e.items[0], _Atom):
            raise self.err(e.line, "expected an arithmetic operator after '('")
        op = e.items[0].text
        args = [self._term(x) for x in e.items[1:]]
        fn = _ARITH.get(op)
        if fn is None:
            if op in self._bool_ops:
                raise self.err(e.line, f"formula {op!r} used where a number was expected")
            raise self.err(e.line, f"unknown or unsupported arithmetic operator {_short(op)!r}")
        if not args:
            raise self.err(e.line, f"{op!r} expects arguments")
        try:
            return fn(args)
        except _LinError as ex:
            raise self.err(e.line, str(ex)) from None

    # ---------------------------------------------------------------- assembling the spec
    def _finish(self) -> VnnlibSpec:
        n_in = self._count("X")
        n_out = self._count("Y")
        terms = self._product((d for d, _ in self.asserts), self.asserts[-1][1] if self.asserts else 1)
        if not terms:
            raise self.err(self.asserts[-1][1] if self.asserts else 1,
                           "the asserted constraints are unsatisfiable as written (no unsafe case)")
        # Atoms shared by every term are applied once.
        common = set(terms[0]).intersection(*terms[1:]) if len(terms) > 1 else set(terms[0])
        lo0, hi0, lo_line0, hi_line0 = self._empty_box(n_in)
        self._apply_x([i for i in terms[0] if i in common], lo0, hi0, lo_line0, hi_line0)
        groups: dict[bytes, tuple[np.ndarray, np.ndarray, list]] = {}
        for term in terms:
            own = [i for i in term if i not in common]
            lo, hi, lo_line, hi_line = lo0.copy(), hi0.copy(), list(lo_line0), list(hi_line0)
            self._apply_x(own, lo, hi, lo_line, hi_line)
            self._check_box(lo, hi, lo_line, hi_line)
            rows = [self.atoms[i] for i in term if isinstance(self.atoms[i], _YAtom)]
            A = np.zeros((len(rows), n_out))
            b = np.empty(len(rows))
            for r, atom in enumerate(rows):
                for j, v in atom.coefs.items():
                    A[r, j] = float(v)
                b[r] = atom.rhs
            key = lo.tobytes() + hi.tobytes()
            if key not in groups:
                groups[key] = (lo, hi, [])
            groups[key][2].append((A, b))
        cases = tuple(VnnlibCase(_frozen(lo), _frozen(hi), OutputDNF(tuple(alts), n_out))
                      for lo, hi, alts in groups.values())
        return VnnlibSpec(n_inputs=n_in, n_outputs=n_out, cases=cases, path=self.name)

    def _count(self, kind: str) -> int:
        d = self.decl[kind]
        what = "inputs X_i" if kind == "X" else "outputs Y_j"
        if not d:
            raise self.err(1, f"declares no {what}")
        n = max(d) + 1
        if len(d) != n:
            missing = next(i for i in range(len(d) + 1) if i not in d)
            raise self.err(d[max(d)], f"{kind}_{max(d)} declared but {kind}_{missing} is not "
                                      f"(indices must run 0..{n - 1})")
        return n

    @staticmethod
    def _empty_box(n: int):
        return np.full(n, -np.inf), np.full(n, np.inf), [0] * n, [0] * n

    def _apply_x(self, ids: Sequence[int], lo, hi, lo_line, hi_line) -> None:
        atoms = self.atoms
        for i in ids:
            a = atoms[i]
            if type(a) is _XAtom:
                if a.upper:
                    if a.bound <= hi[a.index]:
                        hi[a.index] = a.bound
                        hi_line[a.index] = a.line
                elif a.bound >= lo[a.index]:
                    lo[a.index] = a.bound
                    lo_line[a.index] = a.line

    def _check_box(self, lo, hi, lo_line, hi_line) -> None:
        unb_lo = np.flatnonzero(np.isneginf(lo))
        unb_hi = np.flatnonzero(np.isposinf(hi))
        if unb_lo.size or unb_hi.size:
            i = int(min(unb_lo.min(initial=lo.size), unb_hi.min(initial=hi.size)))
            side = "lower" if i in unb_lo else "upper"
            raise self.err(self.decl["X"][i], f"input X_{i} has no {side} bound "
                                              "(every input must be bounded)")
        bad = np.flatnonzero(lo > hi)
        if bad.size:
            i = int(bad[0])
            raise self.err(max(lo_line[i], hi_line[i]),
                           f"empty input box: X_{i} >= {float(lo[i])!r} (line {lo_line[i]}) and "
                           f"X_{i} <= {float(hi[i])!r} (line {hi_line[i]})")


class _LinError(Exception):
    pass


def _add(args: list[_Lin]) -> _Lin:
    coefs: dict = {}
    const = Fraction(0)
    for c, k in args:
        for v, a in c.items():
            coefs[v] = coefs.get(v, 0) + Fraction(a)
        const += Fraction(k)
    return coefs, const


def _neg(x: _Lin) -> _Lin:
    return {v: -a for v, a in x[0].items()}, -x[1]


def _sub(args: list[_Lin]) -> _Lin:
    if len(args) == 1:
        return _neg(args[0])
    return _add([args[0]] + [_neg(a) for a in args[1:]])


def _scale(x: _Lin, s: Fraction) -> _Lin:
    return {v: Fraction(a) * s for v, a in x[0].items()}, Fraction(x[1]) * s


def _mul(args: list[_Lin]) -> _Lin:
    lin = [a for a in args if a[0]]
    if len(lin) > 1:
        raise _LinError("non-linear term: a product of two variables")
    s = Fraction(1)
    for a in args:
        if not a[0]:
            s *= Fraction(a[1])
    return _scale(lin[0], s) if lin else ({}, s)


def _div(args: list[_Lin]) -> _Lin:
    out = args[0]
    if len(args) < 2:
        raise _LinError("'/' expects at least two arguments")
    for d in args[1:]:
        if d[0]:
            raise _LinError("non-linear term: division by a variable")
        if d[1] == 0:
            raise _LinError("division by zero")
        out = _scale(out, 1 / Fraction(d[1]))
    return out


_ARITH: dict[str, Callable[[list[_Lin]], _Lin]] = {"+": _add, "-": _sub, "*": _mul, "/": _div}


# ==================================================================================================
# public parser entry points
# ==================================================================================================
def parse_vnnlib_text(text: str, name: str = "<vnnlib>", max_disjuncts: int = MAX_DISJUNCTS) -> VnnlibSpec:
    """Parse VNN-LIB source text; ``name`` is used in error messages and as ``spec.path``.

    See the module docstring for the semantics and the normal form.  Raises :class:`SpecError` only.
    """
    return _Parser(text, name, max_disjuncts).run()


def parse_vnnlib(path: str | os.PathLike, max_disjuncts: int = MAX_DISJUNCTS) -> VnnlibSpec:
    """Read and parse a VNN-LIB file.

    Parameters
    ----------
    path
        The ``.vnnlib`` file (UTF-8 or ASCII text).
    max_disjuncts
        Refuse files whose DNF expands to more terms than this.

    Returns
    -------
    VnnlibSpec
        ``n_inputs``, ``n_outputs`` and the ``cases`` ``((lo, hi, OutputDNF), …)`` of the unsafe region.

    Raises
    ------
    SpecError
        For a missing/unreadable file or any syntax or semantic problem; the message is
        ``"<path>:<line>: <problem>"``.
    """
    return parse_vnnlib_text(read_vnnlib_text(path), str(path), max_disjuncts)


def read_vnnlib_text(path: str | os.PathLike) -> str:
    """The text of a VNN-LIB file (either dialect); :class:`SpecError` naming the file when it is missing,
    a directory, unreadable or not UTF-8."""
    name = str(path)
    try:
        data = Path(path).read_bytes()
    except FileNotFoundError:
        raise SpecError(f"{name}: no such VNN-LIB file") from None
    except IsADirectoryError:
        raise SpecError(f"{name}: is a directory, not a VNN-LIB file") from None
    except OSError as ex:
        raise SpecError(f"{name}: cannot read VNN-LIB file ({ex.strerror or ex})") from None
    try:
        return data.decode("utf-8")
    except UnicodeDecodeError as ex:
        line = data.count(b"\n", 0, ex.start) + 1
        raise SpecError(
            f"{name}:{line}: not UTF-8 text (byte {data[ex.start]:#04x} at offset {ex.start})"
        ) from None


# ==================================================================================================
# writer
# ==================================================================================================
def _num(v: float) -> str:
    """Shortest decimal that reads back as exactly ``v`` (``repr`` of a float64)."""
    return repr(float(v))


def _row_text(a: np.ndarray, b: float) -> str:
    nz = np.flatnonzero(a)
    if nz.size == 0:
        return f"(<= 0.0 {_num(b)})"
    if nz.size == 1 and a[nz[0]] == 1.0:
        return f"(<= Y_{nz[0]} {_num(b)})"
    if nz.size == 1 and a[nz[0]] == -1.0:
        return f"(>= Y_{nz[0]} {_num(-b)})"
    if nz.size == 2 and b == 0.0 and sorted(a[nz].tolist()) == [-1.0, 1.0]:
        i, j = (nz[0], nz[1]) if a[nz[0]] == 1.0 else (nz[1], nz[0])
        return f"(<= Y_{i} Y_{j})"
    terms = " ".join(f"Y_{j}" if a[j] == 1.0 else f"(* {_num(a[j])} Y_{j})" for j in nz)
    return f"(<= (+ {terms}) {_num(b)})"


def _as_dnf(dnf: OutputDNF | Sequence[tuple[np.ndarray, np.ndarray]], n_outputs: int | None) -> OutputDNF:
    if isinstance(dnf, OutputDNF):
        return dnf
    alts = [(np.atleast_2d(np.asarray(A, dtype=np.float64)), np.asarray(b, dtype=np.float64)) for A, b in dnf]
    if n_outputs is None:
        if not alts:
            raise ValueError("n_outputs is needed for an empty list of alternatives")
        n_outputs = alts[0][0].shape[1]
    return OutputDNF(tuple(alts), int(n_outputs))


def vnnlib_text(lo: np.ndarray, hi: np.ndarray, dnf: OutputDNF | Sequence[tuple[np.ndarray, np.ndarray]],
                comment: str = "", n_outputs: int | None = None, name: str = "<vnnlib>") -> str:
    """VNN-LIB source for the unsafe region ``x ∈ [lo, hi] ∧ ⋁_a A_a y <= b_a``.

    One alternative is written as plain asserts, several as ``(assert (or (and …) …))``.  Every number
    is written as the shortest decimal that reads back as the same float64, so
    ``parse_vnnlib_text(vnnlib_text(lo, hi, dnf))`` reproduces ``lo``, ``hi`` and the ``A``, ``b`` of
    ``dnf.simplified()`` (constant rows removed) exactly.

    Raises
    ------
    SpecError
        Non-finite bounds, ``lo > hi``, mismatched shapes, non-finite rows, or an empty DNF (an empty
        unsafe region cannot be stated by a non-trivial VNN-LIB file).
    """
    lo = np.asarray(lo, dtype=np.float64).reshape(-1)
    hi = np.asarray(hi, dtype=np.float64).reshape(-1)
    if lo.shape != hi.shape or lo.size == 0:
        raise SpecError(f"{name}: input bounds lo and hi must be non-empty vectors of one length")
    if not (np.all(np.isfinite(lo)) and np.all(np.isfinite(hi))):
        raise SpecError(f"{name}: input bounds must be finite")
    if np.any(lo > hi):
        i = int(np.flatnonzero(lo > hi)[0])
        raise SpecError(f"{name}: empty input box: lo[{i}] = {float(lo[i])!r} > hi[{i}] = {float(hi[i])!r}")
    d = _as_dnf(dnf, n_outputs)
    for A, b in d.alternatives:
        if not (np.all(np.isfinite(A)) and np.all(np.isfinite(b))):
            raise SpecError(f"{name}: output constraints must be finite")
    d = d.simplified()
    if len(d) == 0:
        raise SpecError(f"{name}: the output DNF is empty (no unsafe region to write)")
    out: list[str] = []
    for line in comment.splitlines():
        out.append(f"; {line}".rstrip())
    if out:
        out.append("")
    out += [f"(declare-const X_{i} Real)" for i in range(lo.size)]
    out.append("")
    out += [f"(declare-const Y_{j} Real)" for j in range(d.n_outputs)]
    out += ["", "; Input constraints:"]
    for i in range(lo.size):
        out.append(f"(assert (<= X_{i} {_num(hi[i])}))")
        out.append(f"(assert (>= X_{i} {_num(lo[i])}))")
    out += ["", "; Output constraints (unsafe region):"]
    if any(A.shape[0] == 0 for A, _ in d.alternatives):
        out.append("; (none: every output is unsafe)")
    elif len(d) == 1:
        A, b = d.alternatives[0]
        out += [f"(assert {_row_text(A[r], b[r])})" for r in range(A.shape[0])]
    else:
        out.append("(assert (or")
        for A, b in d.alternatives:
            out.append("    (and " + " ".join(_row_text(A[r], b[r]) for r in range(A.shape[0])) + ")")
        out.append("))")
    return "\n".join(out) + "\n"


def _atomic_write(path: Path, text: str) -> None:
    path.parent.mkdir(parents=True, exist_ok=True)
    fd, tmp = tempfile.mkstemp(prefix=f".{path.name}.", suffix=".tmp", dir=path.parent)
    try:
        with os.fdopen(fd, "w", encoding="utf-8") as f:
            f.write(text)
            f.flush()
            os.fsync(f.fileno())
        os.replace(tmp, path)
    except BaseException:
        with contextlib.suppress(OSError):
            os.unlink(tmp)
        raise


def write_vnnlib(path: str | os.PathLike, lo: np.ndarray, hi: np.ndarray,
                 dnf: OutputDNF | Sequence[tuple[np.ndarray, np.ndarray]], comment: str = "",
                 n_outputs: int | None = None) -> Path:
    """Write :func:`vnnlib_text` to ``path`` atomically (temporary file in the same folder + ``os.replace``).

    Returns the path.  Nothing is created when the arguments are invalid (:class:`SpecError`).
    """
    p = Path(path)
    text = vnnlib_text(lo, hi, dnf, comment=comment, n_outputs=n_outputs, name=str(p))
    _atomic_write(p, text)
    return p


def robustness_dnf(label: int, n_outputs: int) -> OutputDNF:
    """Unsafe outputs of local robustness for class ``label``: ``⋁_{j≠label} Y_j >= Y_label``.

    Alternative ``j`` is the single row ``Y_label - Y_j <= 0`` (ties count as violations).
    """
    if not (n_outputs >= 2 and 0 <= label < n_outputs):
        raise SpecError(f"label {label} is not a class of a {n_outputs}-output network")
    alts = []
    for j in range(n_outputs):
        if j != label:
            a = np.zeros((1, n_outputs))
            a[0, label], a[0, j] = 1.0, -1.0
            alts.append((a, np.zeros(1)))
    return OutputDNF(tuple(alts), n_outputs)


def local_robustness_vnnlib(x0: np.ndarray, eps: float, label: int, n_outputs: int,
                            domain: tuple[float | np.ndarray, float | np.ndarray] = (0.0, 1.0),
                            path: str | os.PathLike | None = None, comment: str | None = None) -> VnnlibSpec:
    """L∞ local-robustness property at ``x0`` as a :class:`VnnlibSpec` (and a file when ``path`` is given).

    Input box: ``B_∞(x0, eps) ∩ D`` with ``D = [domain[0], domain[1]]`` (scalars or vectors):
    ``lo = max(x0 - eps, D_lo)``, ``hi = min(x0 + eps, D_hi)``, where ``x0 ± eps`` is rounded outward
    (the float box contains the real ball).  Unsafe outputs: :func:`robustness_dnf` —
    ``⋁_{j≠label} Y_j >= Y_label``.

    Raises
    ------
    SpecError
        ``eps <= 0`` or non-finite, non-finite ``x0``, a bad label, or a ball that misses the domain.
    """
    name = str(path) if path is not None else "<local robustness>"
    x0 = np.asarray(x0, dtype=np.float64).reshape(-1)
    if x0.size == 0 or not np.all(np.isfinite(x0)):
        raise SpecError(f"{name}: the centre x0 must be a non-empty finite vector")
    try:
        eps_f = float(eps)
    except (TypeError, ValueError):
        eps_f = math.nan
    if not (math.isfinite(eps_f) and eps_f > 0):
        raise SpecError(f"{name}: radius eps must be a finite number > 0, got {eps!r}")
    dlo = np.broadcast_to(np.asarray(domain[0], dtype=np.float64), x0.shape)
    dhi = np.broadcast_to(np.asarray(domain[1], dtype=np.float64), x0.shape)
    lo, hi = linf_box(x0, eps_f)
    lo = np.maximum(lo, dlo)
    hi = np.minimum(hi, dhi)
    if np.any(lo > hi):
        i = int(np.flatnonzero(lo > hi)[0])
        raise SpecError(f"{name}: the eps-ball around x0 misses the input domain at feature {i}")
    dnf = robustness_dnf(int(label), int(n_outputs))
    if path is not None:
        text = comment if comment is not None else f"Local robustness (L-inf, eps={eps!r}) of label {label}."
        write_vnnlib(path, lo, hi, dnf, comment=text)
    case = VnnlibCase(_frozen(lo), _frozen(hi), dnf)
    return VnnlibSpec(n_inputs=x0.size, n_outputs=int(n_outputs), cases=(case,),
                      path=name if path is not None else None)
