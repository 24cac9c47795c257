"""Z3 backend: exact rational arithmetic on every constraint kind of the IR.

Translation (one fresh ``z3.Context`` per call, so concurrent calls never share state)
---------------------------------------------------------------------------------------
Every float64 number ``v`` of the program (coefficients, right-hand sides, bounds, centres, radii)
becomes the rational ``Fraction(v)`` — the *exact* value of the double, no decimal rounding — so Z3
reasons about exactly the program it was given.

* variables ``x_i ∈ ℝ`` with ``l_i <= x_i <= u_i`` for every finite bound (``x_i == l_i`` if equal);
* ``LinearRow``       ``Σ_k a_k x_{i_k} (<= | >= | ==) b``;
* ``ReluConstraint``  ``x_out == If(x_in >= 0, x_in, 0)`` (``relu_encoding="ite"``, default) or the
  disjunction ``(x_in >= 0 ∧ x_out == x_in) ∨ (x_in <= 0 ∧ x_out == 0)`` (``"disjunctive"``); both are
  exactly ``x_out = max(0, x_in)``;
* ``Disjunction``     ``Or(And(rows of alt_1), …, And(rows of alt_m))``;
* ``NormBall``        ``Σ_i (x_{k_i} − c_i)² <= r²`` — nonlinear real arithmetic (decidable, nlsat;
  fine for tiny programs, slow beyond);
* ``Objective``       ``minimise/maximise Σ a_k x_{i_k} + c`` with ``z3.Optimize``.

Answers
-------
``sat`` → SAT (OPTIMAL with an objective), ``unsat`` → UNSAT, ``unknown`` → TIMEOUT when Z3's reason is
``timeout``/``canceled``, else UNKNOWN.  Model values are rationals (converted to the nearest double)
or, with a ball, possibly algebraic numbers (approximated to 20 decimals first).  For an optimum the
exact optimal value ``v*`` is reported as ``bound`` rounded *towards safety* — down when minimising,
up when maximising — so ``bound <= v*`` (resp. ``>=``) holds for the double too; ``objective`` is the
model's value rounded to nearest.  Z3 is exact, so UNSAT and optimal bounds carry no tolerance caveat
(beyond the encoder's own bounds being sound).

``timeout`` is passed as Z3's ``timeout`` parameter in milliseconds; Z3 polls it, and nlsat can
overrun it, so the dispatcher's hard wall-clock limit in a child process remains the guarantee.
``threads > 1`` sets the solver's ``threads`` parameter (Z3's parallel cube-and-conquer mode) for
feasibility queries; ``z3.Optimize`` is single-threaded.
"""

from __future__ import annotations

import importlib
import math
import time
from collections.abc import Callable
from fractions import Fraction
from typing import Any

import numpy as np

from encoders.errors import BackendUnavailableError, ConfigError, UnsupportedQueryError
from encoders.program import Kind, LinearRow, Program, Sense

from ..results import Outcome, SolveStatus
from .base import missing_kinds

__all__ = ["Z3Backend", "RELU_ENCODINGS"]


def _z3() -> Any:
    try:
        return importlib.import_module("z3")
    except ImportError as exc:
        raise BackendUnavailableError(f"backend z3: z3-solver is not installed ({exc})") from None


def _relu_ite(z3: Any, y: Any, x: Any) -> Any:
    return y == z3.If(x >= 0, x, 0)


def _relu_disjunctive(z3: Any, y: Any, x: Any) -> Any:
    return z3.Or(z3.And(x >= 0, y == x), z3.And(x <= 0, y == 0))


#: name → ``(z3 module, x_out, x_in) -> constraint`` for ``x_out = max(0, x_in)``.
RELU_ENCODINGS: dict[str, Callable[[Any, Any, Any], Any]] = {
    "ite": _relu_ite,
    "disjunctive": _relu_disjunctive,
}

#: IR sense → z3 relation.
_RELATIONS: dict[Sense, Callable[[Any, Any], Any]] = {
    Sense.LE: lambda a, b: a <= b,
    Sense.GE: lambda a, b: a >= b,
    Sense.EQ: lambda a, b: a == b,
}

#: Z3 reasons for ``unknown`` that mean the time limit (or an interrupt) stopped it.
_TIMEOUT_REASONS = ("timeout", "canceled", "cancelled")


def _exact(v: float) -> Fraction:
    """The exact rational value of a double (raises ValueError on NaN/inf)."""
    return Fraction(float(v))


def _round_down(q: Fraction) -> float:
    f = float(q)
    return math.nextafter(f, -math.inf) if Fraction(f) > q else f


def _round_up(q: Fraction) -> float:
    f = float(q)
    return math.nextafter(f, math.inf) if Fraction(f) < q else f


class _Translator:
    """Build the Z3 assertions of a :class:`Program` in its own context (module docstring)."""

    def __init__(self, z3: Any, program: Program, relu_encoding: str):
        self.z3 = z3
        self.ctx = z3.Context()
        self.program = program
        self.relu = RELU_ENCODINGS[relu_encoding]
        self.x = [z3.Real(f"x{i}", self.ctx) for i in range(program.n_vars)]
        self._consts: dict[float, Any] = {}

    def const(self, v: float) -> Any:
        """The exact rational value of ``v`` as a Z3 constant (cached per value)."""
        c = self._consts.get(v)
        if c is None:
            q = _exact(v)
            c = self.z3.Q(q.numerator, q.denominator, self.ctx)
            self._consts[v] = c
        return c

    def linear(self, idx: np.ndarray, coef: np.ndarray, constant: float = 0.0) -> Any:
        terms = [self.const(a) * self.x[i] for i, a in zip(idx.tolist(), coef.tolist()) if a != 0.0]
        if constant != 0.0 or not terms:
            terms.append(self.const(constant))
        return terms[0] if len(terms) == 1 else self.z3.Sum(terms)

    def row(self, r: LinearRow) -> Any:
        return _RELATIONS[r.sense](self.linear(r.idx, r.coef), self.const(r.rhs))

    def assertions(self) -> list[Any]:
        z3, prog, x = self.z3, self.program, self.x
        out: list[Any] = []
        lb, ub = prog.bounds()
        if np.isnan(lb).any() or np.isnan(ub).any():
            raise ValueError("variable bounds contain NaN")
        for i in range(prog.n_vars):
            lo, hi = float(lb[i]), float(ub[i])
            if lo == hi:
                out.append(x[i] == self.const(lo))
                continue
            if math.isfinite(lo):
                out.append(x[i] >= self.const(lo))
            if math.isfinite(hi):
                out.append(x[i] <= self.const(hi))
        out.extend(self.row(r) for r in prog.rows)
        out.extend(self.relu(z3, x[c.out], x[c.inp]) for c in prog.relus)
        for d in prog.disjunctions:
            alts = [z3.And([self.row(r) for r in alt]) if alt else z3.BoolVal(True, self.ctx)
                    for alt in d.alternatives]
            out.append(z3.Or(alts))
        for b in prog.balls:
            out.append(self.ball(b.idx, b.center, b.radius))
        return out

    def ball(self, idx: np.ndarray, center: np.ndarray, radius: float) -> Any:
        """``Σ_i (x_i − c_i)² <= r²`` (false for ``r < 0``, matching ``NormBall.violation``)."""
        z3 = self.z3
        if radius < 0.0:
            return z3.BoolVal(False, self.ctx)
        diffs = [self.x[i] - self.const(c) for i, c in zip(idx.tolist(), center.tolist())]
        if not diffs:
            return z3.BoolVal(True, self.ctx)
        sq = [d * d for d in diffs]
        r2 = _exact(radius) ** 2
        return (z3.Sum(sq) if len(sq) > 1 else sq[0]) <= z3.Q(r2.numerator, r2.denominator, self.ctx)

    def value(self, model: Any, expr: Any) -> Fraction:
        """Exact (rational) or 20-digit (algebraic) value of ``expr`` in ``model``."""
        v = model.eval(expr, model_completion=True)
        if self.z3.is_rational_value(v):
            return Fraction(v.numerator_as_long(), v.denominator_as_long())
        if self.z3.is_algebraic_value(v):
            a = v.approx(20)
            return Fraction(a.numerator_as_long(), a.denominator_as_long())
        raise ValueError(f"z3 model value {v} is not a number")


def _numeral(z3: Any, v: Any) -> Fraction | None:
    """A Z3 integer or rational numeral as a Fraction (None for anything else)."""
    v = z3.simplify(v)
    if z3.is_int_value(v):
        return Fraction(v.as_long())
    if z3.is_rational_value(v):
        return Fraction(v.numerator_as_long(), v.denominator_as_long())
    return None


def _optimum(z3: Any, values: Any) -> Fraction | None:
    """The optimum from ``Optimize.lower_values/upper_values`` = ``(∞-coefficient, value, ε-coefficient)``.

    ``None`` when infinite.  An ε term (optimum not attained because of a strict inequality) is dropped:
    the value is then the infimum/supremum, still a valid bound.
    """
    inf_coef, value = _numeral(z3, values[0]), _numeral(z3, values[1])
    if inf_coef is None or inf_coef != 0 or value is None:
        return None
    return value


def _z3_stats(solver: Any) -> dict[str, Any]:
    out: dict[str, Any] = {}
    try:
        st = solver.statistics()
        for key in st.keys():
            if key in ("decisions", "conflicts", "arith-make-feasible", "max memory", "rlimit count"):
                out[key.replace(" ", "_").replace("-", "_")] = st.get_key_value(key)
    except Exception:  # statistics are best effort
        pass
    if "decisions" in out:
        out["nodes"] = out["decisions"]
    return out


class Z3Backend:
    """Z3 (exact rational LRA/NRA; optimisation with ``z3.Optimize``).

    Parameters
    ----------
    relu_encoding
        ``"ite"`` (``y == If(x >= 0, x, 0)``) or ``"disjunctive"`` — see :data:`RELU_ENCODINGS`.
    """

    name = "z3"
    capabilities = frozenset({Kind.LINEAR, Kind.RELU, Kind.DISJUNCTION, Kind.QUADRATIC, Kind.OBJECTIVE})

    def __init__(self, relu_encoding: str = "ite"):
        if relu_encoding not in RELU_ENCODINGS:
            raise ConfigError(f"z3 relu_encoding: unknown {relu_encoding!r} "
                              f"(choose from {', '.join(sorted(RELU_ENCODINGS))})")
        self.relu_encoding = relu_encoding

    def version(self) -> str:
        return str(_z3().get_version_string())

    def unsupported(self, program: Program) -> list[str]:
        return missing_kinds(self, program)

    def solve(self, program: Program, timeout: float, threads: int = 1) -> Outcome:
        """Decide feasibility of ``program`` (or optimise its objective) with Z3.

        Returns SAT/OPTIMAL with the full assignment, UNSAT, TIMEOUT, UNKNOWN or ERROR.
        """
        missing = self.unsupported(program)
        if missing:
            raise UnsupportedQueryError(f"backend z3 cannot encode: {', '.join(missing)}")
        z3 = _z3()
        version = str(z3.get_version_string())
        t0 = time.perf_counter()
        stats: dict[str, Any] = {"variables": program.n_vars, "linear_rows": len(program.rows),
                                 "relus": len(program.relus), "disjunctions": len(program.disjunctions),
                                 "balls": len(program.balls), "relu_encoding": self.relu_encoding}

        def outcome(status: SolveStatus, **kw: Any) -> Outcome:
            return Outcome(status, self.name, time.perf_counter() - t0, solver_version=version,
                           stats=stats, **kw)

        tr = _Translator(z3, program, self.relu_encoding)
        assertions = tr.assertions()
        ms = 0 if not math.isfinite(timeout) else max(1, math.ceil(timeout * 1000.0))
        obj = program.objective
        if obj is None:
            solver = z3.Solver(ctx=tr.ctx)
            if threads > 1:
                solver.set("threads", int(threads))
        else:
            solver = z3.Optimize(ctx=tr.ctx)
        if ms:
            solver.set("timeout", ms)
        solver.add(assertions)
        goal = None
        if obj is not None:
            expr = tr.linear(obj.idx, obj.coef, obj.constant)
            goal = solver.maximize(expr) if obj.maximize else solver.minimize(expr)
        try:
            res = solver.check()
        except z3.Z3Exception as exc:
            return outcome(SolveStatus.ERROR, message=f"z3 raised: {exc}")
        stats.update(_z3_stats(solver))
        if res == z3.unsat:
            return outcome(SolveStatus.UNSAT, message="unsat")
        if res != z3.sat:
            reason = str(solver.reason_unknown())
            timed_out = any(k in reason.lower() for k in _TIMEOUT_REASONS)
            return outcome(SolveStatus.TIMEOUT if timed_out else SolveStatus.UNKNOWN,
                           message=f"z3 unknown: {reason}")
        model = solver.model()
        try:
            x = np.array([float(tr.value(model, v)) for v in tr.x], dtype=np.float64)
        except (ValueError, OverflowError) as exc:
            return outcome(SolveStatus.ERROR, message=f"z3 model unreadable: {exc}")
        if obj is None:
            return outcome(SolveStatus.SAT, assignment=x, message="sat")
        value = tr.value(model, expr)
        exact = _optimum(z3, solver.upper_values(goal) if obj.maximize else solver.lower_values(goal))
        if exact is None:
            bound = math.inf if obj.maximize else -math.inf
            msg = "optimum is not a finite rational (unbounded?); bound set to infinity"
        else:
            bound = _round_up(exact) if obj.maximize else _round_down(exact)
            msg = f"optimal {exact}"
        return outcome(SolveStatus.OPTIMAL, assignment=x, objective=float(value), bound=bound, message=msg)
