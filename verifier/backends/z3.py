"""Z3 backend: exact rational arithmetic on every constraint kind of the IR.

Translation
-----------
The program is written as an SMT-LIB script (``x{i}`` is variable ``i``) and read by Z3's parser into a
fresh ``z3.Context`` per call, so concurrent calls never share state; building the same terms through
z3py costs about half a millisecond per term, the text route is linear and fast.  Every float64 number
``v`` of the program (coefficients, right-hand sides, bounds, centres, radii) is written as the rational
``Fraction(v)`` — ``(/ n.0 d.0)``, the *exact* value of the double, no decimal rounding — so Z3 reasons
about exactly the program it was given.

* variables ``x_i ∈ ℝ`` with ``l_i <= x_i <= u_i`` for every finite bound (``x_i == l_i`` if equal);
* ``LinearRow``       ``Σ_k a_k x_{i_k} (<= | >= | ==) b``;
* ``ReluConstraint``  ``x_out = ite(x_in >= 0, x_in, 0)`` (``relu_encoding="ite"``, default) or the
  disjunction ``(x_in >= 0 ∧ x_out == x_in) ∨ (x_in <= 0 ∧ x_out == 0)`` (``"disjunctive"``); both are
  exactly ``x_out = max(0, x_in)``;
* ``Disjunction``     ``(or (and rows of alt_1) … (and rows of alt_m))``;
* ``NormBall``        ``Σ_i (x_{k_i} − c_i)² <= r²`` — nonlinear real arithmetic (decidable, nlsat;
  fine for tiny programs, slow beyond);
* ``Objective``       ``objective = Σ a_k x_{i_k} + c``, minimised/maximised with ``z3.Optimize``.

Answers
-------
``sat`` → SAT (OPTIMAL with an objective), ``unsat`` → UNSAT, ``unknown`` → TIMEOUT when Z3's reason is
``timeout``/``canceled`` or the check ran for the whole limit (``z3.Optimize`` only says "unknown"),
else UNKNOWN.  Model values are rationals (converted to the nearest double)
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


def _relu_ite(y: str, x: str) -> str:
    return f"(= {y} (ite (>= {x} 0.0) {x} 0.0))"


def _relu_disjunctive(y: str, x: str) -> str:
    return f"(or (and (>= {x} 0.0) (= {y} {x})) (and (<= {x} 0.0) (= {y} 0.0)))"


#: name → ``(x_out, x_in) -> SMT-LIB term`` for ``x_out = max(0, x_in)``.
RELU_ENCODINGS: dict[str, Callable[[str, str], str]] = {
    "ite": _relu_ite,
    "disjunctive": _relu_disjunctive,
}

#: IR sense → SMT-LIB relation.
_RELATIONS: dict[Sense, str] = {Sense.LE: "<=", Sense.GE: ">=", Sense.EQ: "="}

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


def _smt_number(q: Fraction) -> str:
    """An exact SMT-LIB real literal: ``n.0``, ``(/ n.0 d.0)``, negated with ``(- …)``."""
    n, d = abs(q.numerator), q.denominator
    lit = f"{n}.0" if d == 1 else f"(/ {n}.0 {d}.0)"
    return f"(- {lit})" if q < 0 else lit


def _and(terms: list[str]) -> str:
    return "true" if not terms else terms[0] if len(terms) == 1 else f"(and {' '.join(terms)})"


class _Translator:
    """Write a :class:`Program` as an SMT-LIB script and load it into a fresh Z3 context.

    The script (rather than z3py expression building, ~0.5 ms per term) keeps translation linear and
    fast: Z3's own parser reads it.  Variable ``i`` is the constant ``x{i}``; the objective, if any, is
    the constant ``objective`` defined by an equation.
    """

    OBJECTIVE = "objective"

    def __init__(self, z3: Any, program: Program, relu_encoding: str):
        self.z3 = z3
        self.ctx = z3.Context()
        self.program = program
        self.relu = RELU_ENCODINGS[relu_encoding]
        self._numbers: dict[float, str] = {}

    # ---- SMT-LIB text --------------------------------------------------------------------------
    def number(self, v: float) -> str:
        """The exact rational value of the double ``v`` as an SMT-LIB literal (cached per value)."""
        lit = self._numbers.get(v)
        if lit is None:
            n, d = abs(v).as_integer_ratio()  # exact; raises on NaN/inf
            lit = f"{n}.0" if d == 1 else f"(/ {n}.0 {d}.0)"
            lit = f"(- {lit})" if v < 0 else lit
            self._numbers[v] = lit
        return lit

    def linear(self, idx: np.ndarray, coef: np.ndarray, constant: float = 0.0) -> str:
        terms = []
        for i, a in zip(idx.tolist(), coef.tolist()):
            if a == 1.0:
                terms.append(f"x{i}")
            elif a == -1.0:
                terms.append(f"(- x{i})")
            elif a != 0.0:
                terms.append(f"(* {self.number(a)} x{i})")
        if constant != 0.0 or not terms:
            terms.append(self.number(constant))
        return terms[0] if len(terms) == 1 else f"(+ {' '.join(terms)})"

    def row(self, r: LinearRow) -> str:
        return f"({_RELATIONS[r.sense]} {self.linear(r.idx, r.coef)} {self.number(r.rhs)})"

    def ball(self, idx: np.ndarray, center: np.ndarray, radius: float) -> str:
        """``Σ_i (x_i − c_i)² <= r²`` (false for ``r < 0``, matching ``NormBall.violation``)."""
        if radius < 0.0:
            return "false"
        sq = []
        for i, c in zip(idx.tolist(), center.tolist()):
            d = f"(- x{i} {self.number(c)})" if c != 0.0 else f"x{i}"
            sq.append(f"(* {d} {d})")
        if not sq:
            return "true"
        lhs = sq[0] if len(sq) == 1 else f"(+ {' '.join(sq)})"
        return f"(<= {lhs} {_smt_number(_exact(radius) ** 2)})"

    def script(self) -> str:
        prog = self.program
        lb, ub = prog.bounds()
        if np.isnan(lb).any() or np.isnan(ub).any():
            raise ValueError("variable bounds contain NaN")
        out = [f"(declare-const x{i} Real)" for i in range(prog.n_vars)]
        for i, (lo, hi) in enumerate(zip(lb.tolist(), ub.tolist())):
            if lo == hi:
                out.append(f"(assert (= x{i} {self.number(lo)}))")
                continue
            if math.isfinite(lo):
                out.append(f"(assert (>= x{i} {self.number(lo)}))")
            if math.isfinite(hi):
                out.append(f"(assert (<= x{i} {self.number(hi)}))")
        out.extend(f"(assert {self.row(r)})" for r in prog.rows)
        out.extend(f"(assert {self.relu(f'x{c.out}', f'x{c.inp}')})" for c in prog.relus)
        for d in prog.disjunctions:
            alts = [_and([self.row(r) for r in alt]) for alt in d.alternatives]
            out.append(f"(assert (or {' '.join(alts)}))" if len(alts) > 1 else f"(assert {_and(alts)})")
        out.extend(f"(assert {self.ball(b.idx, b.center, b.radius)})" for b in prog.balls)
        obj = prog.objective
        if obj is not None:
            out.append(f"(declare-const {self.OBJECTIVE} Real)")
            out.append(f"(assert (= {self.OBJECTIVE} {self.linear(obj.idx, obj.coef, obj.constant)}))")
        return "\n".join(out)

    # ---- Z3 side -------------------------------------------------------------------------------
    def var(self, name: str) -> Any:
        return self.z3.Real(name, self.ctx)

    def value(self, model: Any, expr: Any) -> Fraction:
        """Exact (rational) or 20-digit (algebraic) value of ``expr`` in ``model``."""
        v = model.eval(expr, model_completion=True)
        q = _numeral(self.z3, v)
        if q is not None:
            return q
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
        keys = list(st.keys())
        for key in keys:
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
        ``"ite"`` (``y = ite(x >= 0, x, 0)``) or ``"disjunctive"`` — see :data:`RELU_ENCODINGS`.
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
                                 "balls": len(program.balls), "relu_encoding": self.relu_encoding,
                                 "constraints": len(program.rows) + len(program.relus)
                                 + len(program.disjunctions) + len(program.balls)}

        def outcome(status: SolveStatus, **kw: Any) -> Outcome:
            return Outcome(status, self.name, time.perf_counter() - t0, solver_version=version,
                           stats=stats, **kw)

        tr = _Translator(z3, program, self.relu_encoding)
        script = tr.script()
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
        try:
            solver.from_string(script)
        except z3.Z3Exception as exc:
            return outcome(SolveStatus.ERROR, message=f"z3 could not read the translated program: {exc}")
        goal = None
        if obj is not None:
            target = tr.var(tr.OBJECTIVE)
            goal = solver.maximize(target) if obj.maximize else solver.minimize(target)
        t_check = time.perf_counter()
        try:
            res = solver.check()
        except z3.Z3Exception as exc:
            return outcome(SolveStatus.ERROR, message=f"z3 raised: {exc}")
        stats.update(_z3_stats(solver))
        if res == z3.unsat:
            return outcome(SolveStatus.UNSAT, message="unsat")
        if res != z3.sat:
            reason = str(solver.reason_unknown())
            # z3.Optimize says just "unknown" when its timeout fires: the elapsed time tells.
            timed_out = (any(k in reason.lower() for k in _TIMEOUT_REASONS)
                         or (ms > 0 and (time.perf_counter() - t_check) * 1000.0 >= ms))
            return outcome(SolveStatus.TIMEOUT if timed_out else SolveStatus.UNKNOWN,
                           message=f"z3 unknown: {reason}")
        model = solver.model()
        try:
            x = np.array([float(tr.value(model, tr.var(f"x{i}"))) for i in range(program.n_vars)],
                         dtype=np.float64)
        except (ValueError, OverflowError) as exc:
            return outcome(SolveStatus.ERROR, message=f"z3 model unreadable: {exc}")
        if obj is None:
            return outcome(SolveStatus.SAT, assignment=x, message="sat")
        value = tr.value(model, tr.var(tr.OBJECTIVE))
        exact = _optimum(z3, solver.upper_values(goal) if obj.maximize else solver.lower_values(goal))
        if exact is None:
            bound = math.inf if obj.maximize else -math.inf
            msg = "optimum is not a finite rational (unbounded?); bound set to infinity"
        else:
            bound = _round_up(exact) if obj.maximize else _round_down(exact)
            msg = f"optimal {exact}"
        return outcome(SolveStatus.OPTIMAL, assignment=x, objective=float(value), bound=bound, message=msg)
