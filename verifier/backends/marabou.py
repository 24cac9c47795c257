"""Marabou backend: the program becomes a ``MarabouCore.InputQuery`` built directly from the IR.

Translation (no ONNX round trip)
--------------------------------
* variables ``x_0 … x_{n-1}``: ``setNumberOfVariables(n)``, ``setLowerBound``/``setUpperBound`` for
  every finite bound (Marabou allows unbounded variables, so infinite bounds are simply omitted);
* ``LinearRow``  ``Σ_k a_k x_{i_k} (<= | >= | ==) b``  →  ``Equation(LE | GE | EQ)`` with addends
  ``(a_k, i_k)`` and scalar ``b`` (zero coefficients dropped — Marabou rejects them in disjuncts);
* ``ReluConstraint``  ``x_out = max(0, x_in)``  →  ``addReluConstraint(ipq, in, out)``
  (a degenerate ``x = max(0, x)`` becomes the row ``x >= 0``);
* ``Disjunction``  ``OR_k AND_{r ∈ alt_k} r``  →  ``addDisjunctionConstraint(ipq, [[Equation…]…])``;
  Marabou turns single-variable equations of a disjunct into bound tightenings
  (``a·x <= b`` ↦ ``x <= b/a`` for ``a > 0``, …) and keeps the others as equations.

Rows without variables (``0 (<=|>=|==) b``) are decided here exactly: a false one in the conjunction
makes the program infeasible (reported as UNSAT without calling Marabou); inside a disjunct, a false one
removes that alternative and a true one is dropped.  A disjunction left with no alternative is false,
one with an empty alternative is true, one with a single alternative is added as plain equations.

Capabilities: linear, ReLU, disjunction.  No quadratic constraints and no objective.

Numerics
--------
Marabou works in double precision with its own tolerances (simplex feasibility, bound tightening
``preprocessorBoundTolerance`` = 1e-10, ReLU phase tolerance), so its answers are sound *up to those
tolerances*: an ``unsat`` can in principle be wrong by a tolerance-sized margin, and a ``sat``
assignment can violate constraints by a tolerance-sized amount.  The second case is caught by replay
(every counterexample is re-run on onnxruntime before FALSIFIED is reported); the first is the usual
caveat of floating-point verifiers and is why the network encoder widens every bound by a small slack.

Runtime
-------
``timeout`` is rounded *up* to whole seconds (Marabou's unit; 0 would mean "no limit"), and
preprocessing is not always interruptible — the dispatcher enforces the hard wall-clock limit in a
child process anyway.  With ``threads > 1`` and network input variables recorded in
``program.blocks[*]["input"]``, Marabou's split-and-conquer mode (``snc``) runs ``threads`` workers
that split the input box; otherwise one engine runs.  Marabou keeps its options in a process-wide
singleton, so two solves must not run concurrently in threads of one process (the dispatcher uses
processes).  Marabou prints from C++ to file descriptor 1
even at verbosity 0 in some paths, so fd 1 is pointed at ``/dev/null`` for the duration of the call
(and C stdio is flushed before restoring it), keeping ``--json`` output clean.
"""

from __future__ import annotations

import contextlib
import ctypes
import importlib
import importlib.metadata
import math
import os
import sys
import time
from collections.abc import Iterator
from typing import Any

import numpy as np

from encoders.errors import BackendUnavailableError, UnsupportedQueryError
from encoders.program import Kind, LinearRow, Program, Sense

from ..results import Outcome, SolveStatus
from .base import missing_kinds

__all__ = ["MarabouBackend", "silence_stdout", "make_options", "OPTION_DEFAULTS"]

#: Marabou's exit strings (engine: lower-case sat/unsat; split-and-conquer: upper-case) → status.
_EXIT_CODES: dict[str, SolveStatus] = {
    "sat": SolveStatus.SAT,
    "unsat": SolveStatus.UNSAT,
    "timeout": SolveStatus.TIMEOUT,
    "error": SolveStatus.ERROR,
    "unknown": SolveStatus.UNKNOWN,
    "quit_requested": SolveStatus.UNKNOWN,
    "not_done": SolveStatus.UNKNOWN,
}

#: IR sense → name of Marabou's ``Equation.EquationType`` member.
_SENSES: dict[Sense, str] = {Sense.LE: "LE", Sense.GE: "GE", Sense.EQ: "EQ"}

#: IR sense → exact truth of ``0 sense rhs`` (rows whose variables all cancelled).
_CONSTANT_ROW: dict[Sense, Any] = {
    Sense.LE: lambda rhs: rhs >= 0.0,
    Sense.GE: lambda rhs: rhs <= 0.0,
    Sense.EQ: lambda rhs: rhs == 0.0,
}


class _Infeasible(Exception):
    """The program is infeasible for a reason found while translating it (a false constant row)."""


def _marabou_core() -> Any:
    try:
        return importlib.import_module("maraboupy.MarabouCore")
    except ImportError as exc:
        raise BackendUnavailableError(f"backend marabou: maraboupy is not installed ({exc})") from None


#: ``maraboupy.Marabou.createOptions``'s defaults (maraboupy 2.0), as ``MarabouCore.Options`` fields.
#: Mirrored rather than called because importing ``maraboupy.Marabou`` pulls in its ONNX/TF parsers
#: (about 1 s per process — paid on every query, since each query runs in a fresh child process).
#: ``tests/test_backend_marabou.py`` checks the mirror against ``createOptions``.
OPTION_DEFAULTS: dict[str, Any] = {
    "_numWorkers": 1,
    "_initialTimeout": 5,
    "_initialDivides": 0,
    "_onlineDivides": 2,
    "_timeoutInSeconds": 0,
    "_timeoutFactor": 1.5,
    "_verbosity": 2,
    "_snc": False,
    "_splittingStrategy": "auto",
    "_sncSplittingStrategy": "auto",
    "_restoreTreeStates": False,
    "_splitThreshold": 20,
    "_solveWithMILP": False,
    "_preprocessorBoundTolerance": 1e-10,
    "_dumpBounds": False,
    "_tighteningStrategy": "deeppoly",
    "_milpTightening": "none",
    "_milpSolverTimeout": 0,
    "_numSimulations": 10,
    "_numBlasThreads": 1,
    "_performLpTighteningAfterSplit": False,
    "_lpSolver": "",
    "_produceProofs": False,
}


def make_options(core: Any, **fields: Any) -> Any:
    """A ``MarabouCore.Options`` equal to ``createOptions()`` with ``fields`` (e.g. ``_verbosity=0``)
    overridden."""
    unknown = set(fields) - set(OPTION_DEFAULTS)
    if unknown:
        raise ValueError(f"unknown Marabou option fields: {sorted(unknown)}")
    opts = core.Options()
    for key, value in {**OPTION_DEFAULTS, **fields}.items():
        setattr(opts, key, value)
    return opts


def _c_fflush() -> None:
    """Flush every C stdio stream (Marabou's ``printf``/``std::cout`` output may sit in a buffer)."""
    with contextlib.suppress(Exception):
        ctypes.CDLL(None).fflush(None)


@contextlib.contextmanager
def silence_stdout() -> Iterator[None]:
    """Point file descriptor 1 at ``/dev/null`` for the block, then restore it.

    Works on output written by C/C++ code, which ``contextlib.redirect_stdout`` cannot catch.  Both
    Python's and C's buffers are flushed on entry (so earlier output still reaches the terminal) and
    C's again on exit (so the solver's buffered output goes to ``/dev/null``, not to the terminal).
    Process-wide: another thread printing meanwhile loses its output.
    """
    with contextlib.suppress(Exception):
        sys.stdout.flush()
    _c_fflush()
    saved = os.dup(1)
    devnull = os.open(os.devnull, os.O_WRONLY)
    try:
        os.dup2(devnull, 1)
        yield
    finally:
        _c_fflush()
        os.dup2(saved, 1)
        os.close(saved)
        os.close(devnull)


def _check_indices(program: Program) -> None:
    """Marabou aborts the process on an out-of-range variable: check every index first."""
    n = program.n_vars
    rows = list(program.rows) + [r for d in program.disjunctions for alt in d.alternatives for r in alt]
    for r in rows:
        if r.idx.size and (int(r.idx.min()) < 0 or int(r.idx.max()) >= n):
            raise ValueError(f"row {r.name!r} refers to a variable outside 0..{n - 1}")
    for c in program.relus:
        if not (0 <= c.inp < n and 0 <= c.out < n):
            raise ValueError(f"ReLU ({c.out} = max(0, {c.inp})) refers to a variable outside 0..{n - 1}")


class _QueryBuilder:
    """Translate a :class:`Program` into a ``MarabouCore.InputQuery`` (see the module docstring)."""

    def __init__(self, core: Any, program: Program):
        self.core = core
        self.program = program
        self.ipq = core.InputQuery()
        self.n_equations = 0
        self.n_disjunctions = 0

    def equation(self, row: LinearRow) -> Any | None:
        """The row as a Marabou ``Equation``; ``None`` if it has no variables and holds.

        Raises ``_Infeasible`` if it has no variables and fails.
        """
        keep = row.coef != 0.0
        idx, coef = row.idx[keep], row.coef[keep]
        if idx.size == 0:
            if _CONSTANT_ROW[row.sense](row.rhs):
                return None
            raise _Infeasible(f"row {row.name!r} reads 0 {row.sense.value} {row.rhs}")
        eq = self.core.Equation(getattr(self.core.Equation, _SENSES[row.sense]))
        for i, a in zip(idx.tolist(), coef.tolist()):
            eq.addAddend(float(a), int(i))
        eq.setScalar(float(row.rhs))
        return eq

    def add_row(self, row: LinearRow) -> None:
        eq = self.equation(row)
        if eq is not None:
            self.ipq.addEquation(eq)
            self.n_equations += 1

    def add_disjunction(self, alternatives: tuple[tuple[LinearRow, ...], ...]) -> None:
        disjuncts: list[list[Any]] = []
        for alt in alternatives:
            try:
                eqs = [eq for eq in (self.equation(r) for r in alt) if eq is not None]
            except _Infeasible:
                continue  # this alternative is false
            if not eqs:
                return  # an alternative that always holds: the disjunction is true
            disjuncts.append(eqs)
        if not disjuncts:
            raise _Infeasible("every alternative of a disjunction contains a false constant row")
        if len(disjuncts) == 1:
            for eq in disjuncts[0]:
                self.ipq.addEquation(eq)
                self.n_equations += 1
            return
        self.core.addDisjunctionConstraint(self.ipq, disjuncts)
        self.n_disjunctions += 1

    def build(self) -> Any:
        prog, core, ipq = self.program, self.core, self.ipq
        lb, ub = prog.bounds()
        if np.isnan(lb).any() or np.isnan(ub).any():
            raise ValueError("variable bounds contain NaN")
        if np.any(lb > ub):
            raise _Infeasible("a variable has lower bound > upper bound")
        ipq.setNumberOfVariables(prog.n_vars)
        for i in np.flatnonzero(np.isfinite(lb)).tolist():
            ipq.setLowerBound(i, float(lb[i]))
        for i in np.flatnonzero(np.isfinite(ub)).tolist():
            ipq.setUpperBound(i, float(ub[i]))
        for row in prog.rows:
            self.add_row(row)
        for c in prog.relus:
            if c.out == c.inp:  # x = max(0, x)  ⇔  x >= 0
                self.add_row(Program.row([c.inp], [1.0], Sense.GE, 0.0))
            else:
                core.addReluConstraint(ipq, int(c.inp), int(c.out))
        for d in prog.disjunctions:
            self.add_disjunction(d.alternatives)
        return ipq

    def mark_inputs(self) -> int:
        """Mark the network inputs recorded in ``program.blocks`` (split-and-conquer splits them)."""
        inputs = sorted({int(i) for blk in self.program.blocks.values() for i in blk.get("input", ())})
        for k, var in enumerate(inputs):
            self.ipq.markInputVariable(var, k)
        return len(inputs)


class MarabouBackend:
    """Marabou (maraboupy 2.0) on linear + ReLU + disjunction programs.

    Parameters
    ----------
    verbosity
        Marabou's own verbosity (its output goes to ``/dev/null`` either way).
    """

    name = "marabou"
    capabilities = frozenset({Kind.LINEAR, Kind.RELU, Kind.DISJUNCTION})

    def __init__(self, verbosity: int = 0):
        self.verbosity = int(verbosity)

    def version(self) -> str:
        _marabou_core()
        try:
            return importlib.metadata.version("maraboupy")
        except importlib.metadata.PackageNotFoundError:
            return "unknown"

    def unsupported(self, program: Program) -> list[str]:
        return missing_kinds(self, program)

    def solve(self, program: Program, timeout: float, threads: int = 1) -> Outcome:
        """Decide feasibility of ``program`` with Marabou.

        Returns SAT with the full assignment, UNSAT, TIMEOUT, UNKNOWN or ERROR (with a message).

        Raises
        ------
        UnsupportedQueryError
            The program has a quadratic constraint or an objective.
        BackendUnavailableError
            maraboupy is not installed.
        """
        missing = self.unsupported(program)
        if missing:
            raise UnsupportedQueryError(f"backend marabou cannot encode: {', '.join(missing)}")
        core = _marabou_core()
        version = self.version()
        _check_indices(program)
        t0 = time.perf_counter()
        base_stats: dict[str, Any] = {"variables": program.n_vars, "relus": len(program.relus)}

        def outcome(status: SolveStatus, **kw: Any) -> Outcome:
            return Outcome(status, self.name, time.perf_counter() - t0, solver_version=version,
                           stats=base_stats, **kw)

        builder = _QueryBuilder(core, program)
        try:
            ipq = builder.build()
        except _Infeasible as exc:
            return outcome(SolveStatus.UNSAT, message=f"infeasible during translation: {exc}")
        base_stats.update(equations=builder.n_equations, disjunctions=builder.n_disjunctions,
                          constraints=builder.n_equations + len(program.relus) + builder.n_disjunctions)
        threads = max(1, int(threads))
        snc = threads > 1 and builder.mark_inputs() > 0
        limit = 0 if not math.isfinite(timeout) else max(1, math.ceil(timeout))
        options = make_options(core, _timeoutInSeconds=limit, _numWorkers=threads, _verbosity=self.verbosity,
                               _snc=snc)
        try:
            with silence_stdout():
                exit_code, vals, stats = core.solve(ipq, options, "")
        except Exception as exc:  # pybind11 turns uncaught C++ exceptions into RuntimeError
            return outcome(SolveStatus.ERROR, message=f"marabou raised {type(exc).__name__}: {exc}")
        status = _EXIT_CODES.get(str(exit_code).strip().lower(), SolveStatus.UNKNOWN)
        with contextlib.suppress(Exception):
            if status is SolveStatus.UNKNOWN and stats.hasTimedOut():
                status = SolveStatus.TIMEOUT
            base_stats["nodes"] = int(stats.getUnsignedAttribute(core.NUM_VISITED_TREE_STATES))
            base_stats["splits"] = int(stats.getUnsignedAttribute(core.NUM_SPLITS))
        base_stats["snc_workers"] = threads if snc else 0
        if status is not SolveStatus.SAT:
            return outcome(status, message=f"marabou exit code {exit_code!r}")
        missing_vals = [i for i in range(program.n_vars) if i not in vals]
        if missing_vals:
            return outcome(SolveStatus.ERROR,
                           message=f"marabou said sat but gave no value for {len(missing_vals)} variables")
        x = np.array([vals[i] for i in range(program.n_vars)], dtype=np.float64)
        return outcome(SolveStatus.SAT, assignment=x, message="sat")
