"""HiGHS backend: the open MILP path (highspy; the model is passed as arrays).

The program is compiled by :func:`encoders.milp.compile_milp` (big-M ReLUs and disjunctions, exact on
the variable box; the formulation is written there) and handed to HiGHS with one ``passModel`` call
on CSR arrays — no per-element Python loop.  HiGHS has no quadratic constraints, so programs with a
:class:`~encoders.program.NormBall` are refused (:meth:`HighsBackend.unsupported`); the property layer
replaces the ball by its polyhedral outer approximation for this backend.

Status mapping (HiGHS model status → :class:`~verifier.results.SolveStatus`)
-------------------------------------------------------------------------
``Optimal``                → ``SAT`` (feasibility) or ``OPTIMAL`` (objective);
``Infeasible``             → ``UNSAT``;
``UnboundedOrInfeasible``  → ``UNSAT`` (every variable has finite bounds, so the model cannot be
                             unbounded);
``TimeLimit``              → ``TIMEOUT`` (``SAT`` if a feasible point of a feasibility problem exists);
limits / interrupts        → ``UNKNOWN``; load, presolve, solve and memory errors → ``ERROR``.

``Outcome.assignment`` is the program's variables (``x[:n_original]``), clipped into their bounds
(which the solver meets only up to its feasibility tolerance, ~1e-7).  For objectives,
``Outcome.objective`` is the incumbent's value and ``Outcome.bound`` the proven dual
bound (``mip_dual_bound`` for a MIP, the LP optimum for a pure LP) — also on a timeout when HiGHS has
one.
"""

from __future__ import annotations

import math
import time
from collections.abc import Mapping
from typing import Any

import numpy as np

from encoders.errors import BackendUnavailableError, UnsupportedQueryError
from encoders.milp import MilpModel, compile_milp, highs_from_milp
from encoders.program import Kind, Program

from ..results import Outcome, SolveStatus
from .base import missing_kinds
from .solve import stdout_to_stderr

__all__ = ["HighsBackend"]


def _highspy() -> Any:
    try:
        import highspy
    except ImportError as exc:
        raise BackendUnavailableError(f"--backend highs: highspy is not installed ({exc})") from None
    return highspy


def _version(hs: Any) -> str:
    """HiGHS' version from the module's constants (constructing ``Highs()`` prints a banner)."""
    return f"{hs.HIGHS_VERSION_MAJOR}.{hs.HIGHS_VERSION_MINOR}.{hs.HIGHS_VERSION_PATCH}"


def _status_table(hs: Any) -> dict[Any, SolveStatus]:
    M = hs.HighsModelStatus
    return {
        M.kInfeasible: SolveStatus.UNSAT,
        M.kUnboundedOrInfeasible: SolveStatus.UNSAT,
        M.kTimeLimit: SolveStatus.TIMEOUT,
        M.kIterationLimit: SolveStatus.UNKNOWN,
        M.kSolutionLimit: SolveStatus.UNKNOWN,
        M.kObjectiveBound: SolveStatus.UNKNOWN,
        M.kObjectiveTarget: SolveStatus.UNKNOWN,
        M.kInterrupt: SolveStatus.UNKNOWN,
        M.kHighsInterrupt: SolveStatus.UNKNOWN,
        M.kUnknown: SolveStatus.UNKNOWN,
        M.kNotset: SolveStatus.ERROR,
        M.kUnbounded: SolveStatus.ERROR,  # impossible with finite bounds
        M.kLoadError: SolveStatus.ERROR,
        M.kModelError: SolveStatus.ERROR,
        M.kPresolveError: SolveStatus.ERROR,
        M.kSolveError: SolveStatus.ERROR,
        M.kPostsolveError: SolveStatus.ERROR,
        M.kMemoryLimit: SolveStatus.ERROR,
    }


class HighsBackend:
    """Solve programs with HiGHS' MILP solver.

    Parameters
    ----------
    mip_rel_gap
        Relative MIP gap at which HiGHS stops optimising (``None``: HiGHS' default, 1e-4).  Only
        affects objectives; ``Outcome.bound`` is a proven bound whatever the gap.
    presolve
        Use HiGHS' presolve.
    options
        Further HiGHS options by name (``setOptionValue``); ``threads`` and ``time_limit`` are always
        the solve call's.
    """

    name = "highs"
    capabilities = frozenset({Kind.LINEAR, Kind.RELU, Kind.DISJUNCTION, Kind.OBJECTIVE})
    milp = True

    def __init__(
        self,
        mip_rel_gap: float | None = None,
        presolve: bool = True,
        options: Mapping[str, Any] | None = None,
    ) -> None:
        self.mip_rel_gap = mip_rel_gap
        self.presolve = presolve
        self.options = dict(options or {})

    def version(self) -> str:
        return _version(_highspy())

    def unsupported(self, program: Program) -> list[str]:
        return missing_kinds(self, program)

    def solve(self, program: Program, timeout: float, threads: int = 1) -> Outcome:
        """Feasibility (or optimisation) of ``program`` within ``timeout`` seconds (wall clock).

        Raises
        ------
        UnsupportedQueryError
            The program has constraint kinds HiGHS cannot take (quadratic).
        """
        hs = _highspy()
        t0 = time.perf_counter()
        bad = self.unsupported(program)
        if bad:
            raise UnsupportedQueryError(f"highs: cannot encode {', '.join(bad)} constraints")
        model = compile_milp(program)
        version = _version(hs)
        stats: dict[str, Any] = {**model.stats(), "nodes": 0}
        if model.n_vars == 0:  # HiGHS reports an empty model as "empty": decide it here
            ok = model.residual(np.zeros(0))["rows"] == 0.0
            feasible = SolveStatus.OPTIMAL if model.has_objective else SolveStatus.SAT
            st = feasible if ok else SolveStatus.UNSAT
            return Outcome(st, self.name, time.perf_counter() - t0, np.zeros(0) if ok else None,
                           model.offset if ok and model.has_objective else None,
                           model.offset if ok and model.has_objective else None, version, stats)
        with stdout_to_stderr():  # constructing ``Highs()`` prints a banner on file descriptor 1
            h = highs_from_milp(model)
        h.resetGlobalScheduler(True)  # HiGHS' thread pool is process-global; let ``threads`` apply
        h.setOptionValue("threads", int(max(1, threads)))
        h.setOptionValue("presolve", "on" if self.presolve else "off")
        if self.mip_rel_gap is not None:
            h.setOptionValue("mip_rel_gap", float(self.mip_rel_gap))
        for k, v in self.options.items():
            h.setOptionValue(k, v)
        stats["build_s"] = time.perf_counter() - t0
        remaining = float(timeout) - (time.perf_counter() - t0)
        if remaining <= 0.0:
            return Outcome(SolveStatus.TIMEOUT, self.name, time.perf_counter() - t0, solver_version=version,
                           stats=stats, message="time limit reached while building the model")
        h.setOptionValue("time_limit", remaining)
        run_status = h.run()
        return self._outcome(hs, h, model, run_status, t0, version, stats)

    def _outcome(self, hs: Any, h: Any, model: MilpModel, run_status: Any, t0: float, version: str,
                 stats: dict[str, Any]) -> Outcome:
        ms = h.getModelStatus()
        info = h.getInfo()
        is_mip = model.n_binaries > 0
        stats["nodes"] = max(0, int(info.mip_node_count)) if is_mip else 0
        stats["simplex_iterations"] = max(0, int(info.simplex_iteration_count))
        stats["solve_s"] = float(h.getRunTime())
        has_primal = int(info.primal_solution_status) == int(hs.SolutionStatus.kSolutionStatusFeasible)
        x = None
        if has_primal:
            x = np.asarray(h.getSolution().col_value, dtype=np.float64)[: model.n_original]
            # bounds hold up to the solver's tolerance: clip so that e.g. inputs lie in their box exactly
            x = np.clip(x, model.lb[: model.n_original], model.ub[: model.n_original])
        message = h.modelStatusToString(ms)
        if ms == hs.HighsModelStatus.kOptimal:
            status = SolveStatus.OPTIMAL if model.has_objective else SolveStatus.SAT
        elif ms == hs.HighsModelStatus.kModelEmpty:  # no columns after all — handled above; be safe
            status = SolveStatus.UNKNOWN
        else:
            status = _status_table(hs).get(ms, SolveStatus.ERROR)
            if status is SolveStatus.TIMEOUT and x is not None and not model.has_objective:
                status = SolveStatus.SAT  # any feasible point answers a feasibility question
        if run_status == hs.HighsStatus.kError and status not in (SolveStatus.UNSAT, SolveStatus.SAT,
                                                                  SolveStatus.OPTIMAL):
            status = SolveStatus.ERROR
        objective = bound = None
        if model.has_objective:
            if x is not None:
                objective = float(info.objective_function_value)
            if is_mip:
                b = float(info.mip_dual_bound)
                bound = b if math.isfinite(b) else None
            elif status is SolveStatus.OPTIMAL:
                bound = float(info.objective_function_value)
            if status is SolveStatus.OPTIMAL and bound is None:
                bound = objective
        if status not in (SolveStatus.SAT, SolveStatus.OPTIMAL, SolveStatus.TIMEOUT, SolveStatus.UNKNOWN):
            x = None
        return Outcome(status, self.name, time.perf_counter() - t0, x, objective, bound, version, stats,
                       message)
