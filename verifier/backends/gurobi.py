"""Gurobi backend (gurobipy matrix API): MILP, and MIQCP for L2 norm balls.

The program is compiled by :func:`encoders.milp.compile_milp` (formulation written there: big-M ReLUs
and disjunctions, exact on the variable box), then passed as one ``addMVar`` and one ``addMConstr``
per row sense with the sparse matrix.  Options:

* ``indicators=True`` replaces every big-M row (``y <= z − l(1−a)``, ``y <= u·a``, disjunct rows) by
  Gurobi's native indicator constraint ``binary = v ⇒ row`` (``MilpModel.indicator_*``).
* Each :class:`~encoders.program.NormBall` becomes the convex quadratic constraint
  ``Σ_i (x_i − c_i)² <= r²`` (``(x−c)ᵀ(x−c) <= r²`` on the ``MVar``), making the model an MIQCP.

Licence
-------
The pip ``gurobipy`` licence refuses models with more than 2000 variables or 2000 constraints (linear,
quadratic and general constraints together), and more than 200 variables once a quadratic
constraint is present.  When a model exceeds these sizes, the backend first checks (once per process,
with a tiny 2001-variable probe) whether the installed licence is size-limited and, if so, raises
:class:`~encoders.errors.LicenseLimitError` *before* building the model; Gurobi's own error 10010
("Model too large for size-limited license") is turned into the same error.  The message suggests
``--backend highs``.

Status mapping (Gurobi status → :class:`~verifier.results.SolveStatus`)
---------------------------------------------------------------------
``OPTIMAL`` → ``SAT`` / ``OPTIMAL``; ``INFEASIBLE`` and ``INF_OR_UNBD`` → ``UNSAT`` (all bounds are
finite, so the model cannot be unbounded); ``TIME_LIMIT`` → ``TIMEOUT`` (``SAT`` when a feasibility
problem has a solution); other limits, ``SUBOPTIMAL``, ``INTERRUPTED`` → ``UNKNOWN``; ``NUMERIC``,
``UNBOUNDED`` and errors → ``ERROR``.  ``Outcome.bound`` is ``ObjBound`` for a MIP (the optimum for a
continuous model), also on timeouts.

``Outcome.assignment`` is the program's variables, clipped into their bounds (met by Gurobi only up
to its tolerances).  Output: the environment is created empty with ``OutputFlag = 0`` before it
starts, so neither the licence banner nor the log reaches stdout.
"""

from __future__ import annotations

import functools
import math
import time
from collections.abc import Mapping
from typing import Any

import numpy as np
import scipy.sparse as sp

from encoders.errors import BackendUnavailableError, LicenseLimitError, UnsupportedQueryError
from encoders.milp import MilpModel, compile_milp
from encoders.program import Kind, Program

from ..results import Outcome, SolveStatus
from .base import missing_kinds

__all__ = ["GurobiBackend", "fits_licence", "licence_is_size_limited", "PIP_VAR_LIMIT", "PIP_CONSTR_LIMIT",
           "PIP_QUAD_VAR_LIMIT"]

PIP_VAR_LIMIT = 2000
PIP_CONSTR_LIMIT = 2000
PIP_QUAD_VAR_LIMIT = 200
_SIZE_LIMITED_ERRNO = 10010


def _gurobipy() -> Any:
    try:
        import gurobipy
    except ImportError as exc:
        raise BackendUnavailableError(f"--backend gurobi: gurobipy is not installed ({exc})") from None
    return gurobipy


def _quiet_env(gp: Any) -> Any:
    """A started environment that prints nothing (no licence banner, no log)."""
    env = gp.Env(empty=True)
    env.setParam("OutputFlag", 0)
    env.setParam("LogToConsole", 0)
    env.start()
    return env


@functools.lru_cache(maxsize=1)
def licence_is_size_limited() -> bool:
    """Whether the installed Gurobi licence refuses models over 2000 variables (probe, cached)."""
    gp = _gurobipy()
    try:
        with _quiet_env(gp) as env, gp.Model(env=env) as m:
            m.addMVar(PIP_VAR_LIMIT + 1, lb=0.0, ub=0.0)
            m.optimize()
    except gp.GurobiError as exc:
        if exc.errno == _SIZE_LIMITED_ERRNO:
            return True
        raise BackendUnavailableError(f"--backend gurobi: Gurobi cannot run here ({exc})") from None
    return False


def _licence_message(n_vars: int, n_constrs: int, quadratic: bool) -> str:
    limits = (f"{PIP_VAR_LIMIT} variables and {PIP_CONSTR_LIMIT} constraints"
              + (f", {PIP_QUAD_VAR_LIMIT} variables with quadratic constraints" if quadratic else ""))
    return (f"--backend gurobi: the model has {n_vars} variables and {n_constrs} constraints, over the "
            f"size-limited Gurobi licence ({limits}); use --backend highs (or install a full Gurobi licence)")


def _over_pip_limits(model: MilpModel) -> bool:
    n_constrs = model.n_rows + len(model.balls)
    var_limit = PIP_QUAD_VAR_LIMIT if model.balls else PIP_VAR_LIMIT
    return model.n_vars > var_limit or n_constrs > PIP_CONSTR_LIMIT


def fits_licence(program: Program) -> bool:
    """Whether Gurobi can take ``program`` under the installed licence.

    Exact: a cheap upper bound on the compiled sizes (:meth:`Program.stats`) first, then — only if
    that is over the limits — the sizes of :func:`compile_milp` and, if they are over too, whether the
    licence is size-limited at all.  Accounts for the 200-variable limit with quadratic constraints.
    """
    st = program.stats()
    var_limit = PIP_QUAD_VAR_LIMIT if program.balls else PIP_VAR_LIMIT
    if st["milp_variables"] <= var_limit and st["milp_constraints"] + len(program.balls) <= PIP_CONSTR_LIMIT:
        return True
    return not _over_pip_limits(compile_milp(program)) or not licence_is_size_limited()


def _status_table(GRB: Any) -> dict[int, SolveStatus]:
    S = GRB.Status
    return {
        S.INFEASIBLE: SolveStatus.UNSAT,
        S.INF_OR_UNBD: SolveStatus.UNSAT,
        S.TIME_LIMIT: SolveStatus.TIMEOUT,
        S.NODE_LIMIT: SolveStatus.UNKNOWN,
        S.ITERATION_LIMIT: SolveStatus.UNKNOWN,
        S.SOLUTION_LIMIT: SolveStatus.UNKNOWN,
        S.CUTOFF: SolveStatus.UNKNOWN,
        S.INTERRUPTED: SolveStatus.UNKNOWN,
        S.SUBOPTIMAL: SolveStatus.UNKNOWN,
        S.USER_OBJ_LIMIT: SolveStatus.UNKNOWN,
        S.WORK_LIMIT: SolveStatus.UNKNOWN,
        S.MEM_LIMIT: SolveStatus.ERROR,
        S.NUMERIC: SolveStatus.ERROR,
        S.UNBOUNDED: SolveStatus.ERROR,  # impossible with finite bounds
        S.LOADED: SolveStatus.ERROR,
        S.INPROGRESS: SolveStatus.ERROR,
    }


class GurobiBackend:
    """Solve programs with Gurobi.

    Parameters
    ----------
    indicators
        Use indicator constraints instead of big-M rows for ReLUs and disjunctions.
    mip_gap
        Relative MIP gap for objectives (``None``: Gurobi's default 1e-4); ``Outcome.bound`` is a
        proven bound whatever the gap.
    params
        Further Gurobi parameters by name (e.g. ``{"MIPFocus": 1, "BestObjStop": 1e-3}``), set after
        the model is built; ``Threads`` and ``TimeLimit`` are always the solve call's.
    """

    name = "gurobi"
    capabilities = frozenset({Kind.LINEAR, Kind.RELU, Kind.DISJUNCTION, Kind.QUADRATIC, Kind.OBJECTIVE})
    milp = True

    def __init__(
        self, indicators: bool = False, mip_gap: float | None = None, params: Mapping[str, Any] | None = None
    ) -> None:
        self.indicators = indicators
        self.mip_gap = mip_gap
        self.params = dict(params or {})

    def version(self) -> str:
        return ".".join(str(v) for v in _gurobipy().gurobi.version())

    def unsupported(self, program: Program) -> list[str]:
        return missing_kinds(self, program)

    def solve(self, program: Program, timeout: float, threads: int = 1) -> Outcome:
        """Feasibility (or optimisation) of ``program`` within ``timeout`` seconds.

        Raises
        ------
        LicenseLimitError
            The model is too large for the installed (size-limited) licence.
        UnsupportedQueryError
            The program has constraint kinds this backend cannot encode.
        """
        gp = _gurobipy()
        t0 = time.perf_counter()
        bad = self.unsupported(program)
        if bad:
            raise UnsupportedQueryError(f"gurobi: cannot encode {', '.join(bad)} constraints")
        model = compile_milp(program)
        version = self.version()
        stats: dict[str, Any] = {**model.stats(), "nodes": 0}
        if _over_pip_limits(model) and licence_is_size_limited():
            raise LicenseLimitError(_licence_message(model.n_vars, model.n_rows + len(model.balls),
                                                     bool(model.balls)))
        try:
            with _quiet_env(gp) as env, gp.Model(env=env) as m:
                x = self._build(gp, m, model)
                for k, v in self.params.items():
                    m.setParam(k, v)
                m.Params.Threads = int(max(1, threads))
                if self.mip_gap is not None:
                    m.Params.MIPGap = float(self.mip_gap)
                stats["build_s"] = time.perf_counter() - t0
                remaining = float(timeout) - (time.perf_counter() - t0)
                if remaining <= 0.0:
                    return Outcome(SolveStatus.TIMEOUT, self.name, time.perf_counter() - t0,
                                   solver_version=version, stats=stats,
                                   message="time limit reached while building the model")
                m.Params.TimeLimit = remaining
                m.optimize()
                return self._outcome(gp, m, x, model, t0, version, stats)
        except gp.GurobiError as exc:
            if exc.errno == _SIZE_LIMITED_ERRNO:
                raise LicenseLimitError(_licence_message(model.n_vars, model.n_rows + len(model.balls),
                                                         bool(model.balls))) from None
            return Outcome(SolveStatus.ERROR, self.name, time.perf_counter() - t0, solver_version=version,
                           stats=stats, message=f"Gurobi error {exc.errno}: {exc}")

    # ---- translation ------------------------------------------------------------------------
    def _build(self, gp: Any, m: Any, model: MilpModel) -> Any:
        GRB = gp.GRB
        vtype = np.where(model.integrality == 1, GRB.BINARY, GRB.CONTINUOUS)
        x = m.addMVar(model.n_vars, lb=model.lb, ub=model.ub, vtype=vtype)
        A, lo, hi = model.A, model.row_lo, model.row_hi
        keep = np.ones(model.n_rows, dtype=bool)
        if self.indicators and model.indicator_rows.size:
            keep[model.indicator_rows] = False
            self._add_indicators(m, x, model)
        eq = keep & (lo == hi)
        le = keep & ~eq & np.isfinite(hi)
        ge = keep & ~eq & np.isfinite(lo)
        for mask, sense, rhs in ((eq, GRB.EQUAL, hi), (le, GRB.LESS_EQUAL, hi), (ge, GRB.GREATER_EQUAL, lo)):
            if mask.any():
                m.addMConstr(A[mask], x, sense, rhs[mask])
        for b in model.balls:
            d = x[b.idx] - b.center
            m.addConstr(d @ d <= float(b.radius) ** 2)
        if model.has_objective:
            m.setObjective(model.c @ x + model.offset, GRB.MAXIMIZE if model.maximize else GRB.MINIMIZE)
        return x

    @staticmethod
    def _add_indicators(m: Any, x: Any, model: MilpModel) -> None:
        """``binary == v ⇒ (row without the binary) <= row_hi − coef·v`` for each big-M row."""
        rows, cols, vals = model.indicator_rows, model.indicator_cols, model.indicator_vals.astype(np.float64)
        sub = model.A[rows].tocoo()
        coef = np.asarray(model.A[rows, cols]).reshape(-1)
        keep = sub.col != cols[sub.row]
        sub = sp.csr_matrix((sub.data[keep], (sub.row[keep], sub.col[keep])), shape=sub.shape)
        rhs = model.row_hi[rows] - coef * vals
        m.addGenConstrIndicator(x[cols], vals.astype(bool), sub @ x <= rhs)

    # ---- results ----------------------------------------------------------------------------
    def _outcome(self, gp: Any, m: Any, x: Any, model: MilpModel, t0: float, version: str,
                 stats: dict[str, Any]) -> Outcome:
        GRB = gp.GRB
        code = int(m.Status)
        is_mip = bool(m.IsMIP)
        stats.update(gurobi_variables=int(m.NumVars), gurobi_constraints=int(m.NumConstrs + m.NumQConstrs
                                                                              + m.NumGenConstrs),
                     nodes=int(m.NodeCount) if is_mip else 0, solve_s=float(m.Runtime))
        has_sol = int(m.SolCount) > 0
        assignment = None
        if has_sol:  # clipped into the bounds, which hold only up to the solver's tolerance
            n = model.n_original
            assignment = np.clip(np.asarray(x.X, dtype=np.float64)[:n], model.lb[:n], model.ub[:n])
        if code == GRB.OPTIMAL:
            status = SolveStatus.OPTIMAL if model.has_objective else SolveStatus.SAT
        else:
            status = _status_table(GRB).get(code, SolveStatus.ERROR)
            if has_sol and not model.has_objective and status in (SolveStatus.TIMEOUT, SolveStatus.UNKNOWN):
                status = SolveStatus.SAT  # any feasible point answers a feasibility question
        objective = bound = None
        if model.has_objective:
            if has_sol:
                objective = float(m.ObjVal)
            if is_mip:
                try:
                    b = float(m.ObjBound)
                    bound = b if math.isfinite(b) else None
                except (gp.GurobiError, AttributeError):
                    bound = None
            elif status is SolveStatus.OPTIMAL:
                bound = objective
        if status in (SolveStatus.UNSAT, SolveStatus.ERROR):
            assignment = None
        message = {getattr(GRB.Status, k): k for k in dir(GRB.Status) if k.isupper()}.get(code, str(code))
        return Outcome(status, self.name, time.perf_counter() - t0, assignment, objective, bound, version,
                       stats, message)
