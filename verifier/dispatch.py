"""The dispatcher: one query goes through a list of *stages*; many queries run in parallel.

One query (:func:`verify`)
--------------------------
:func:`verify` runs :data:`STAGES` in order; each stage answers the query (a :class:`Result`) or
passes it on (``None``):

1. :func:`stage_quick_check` — ``prop.quick_check`` (CROWN): proven ⇒ VERIFIED, no solver called.
2. :func:`stage_attack` — random points of the region through the float64 IR, then PGD (or the pair
   search): a violating point that replays on onnxruntime ⇒ FALSIFIED without a solver.
3. :func:`stage_input_split` — the ``"input_split"`` search (:data:`verifier.search.SEARCHES`):
   input-splitting branch and bound (few inputs; automatic strategy only, settings
   ``DispatchConfig.input_split``); the few leaf boxes it may leave open are solved by
   :data:`LEAF_STAGES`.
4. :func:`stage_relu_split` — the ``"relu_split"`` search: α/β-CROWN branch and bound and
   per-alternative margin MILPs for single-network output properties (automatic strategy only,
   settings ``DispatchConfig.relu_split``).
5. :func:`stage_solve` — the property is encoded (quadratic constraints only for backends that
   take them) and solved through :func:`verifier.backends.solve.solve`, in a *child process* with a
   hard wall-clock limit: a solver crash or hang becomes ERROR or TIMEOUT for this query and the run
   goes on.  Infeasible ⇒ VERIFIED.  Feasible ⇒ the candidate is replayed (:mod:`verifier.replay`);
   if it replays ⇒ FALSIFIED; if not, ``prop.refine`` may return cuts that separate it (L2 tangent
   cuts, confidence tangent cuts) and the query is re-solved; a candidate with no cut to separate
   it leads to one re-solve that asks for a violation by a margin (never VERIFIED from then on) and,
   when that is infeasible too, to a proof by input-splitting bounds for few inputs
   (:func:`_close_by_bounds`); otherwise UNKNOWN with the reason.

Backends: ``auto`` takes Gurobi when it is installed and the model fits its licence, else HiGHS
(:func:`verifier.backends.solve.choose_backend`, shared with the ReLU-split search); ``portfolio``
races several backends in parallel processes and takes the first definitive answer.
"""

from __future__ import annotations

import multiprocessing as mp
import time
from collections.abc import Callable, Iterable, Mapping, Sequence
from concurrent.futures import ProcessPoolExecutor
from dataclasses import dataclass, replace
from typing import Any

import numpy as np

from encoders.errors import ConfigError, LicenseLimitError
from encoders.network import Network
from encoders.program import Disjunction, Kind, LinearRow, Program, Sense, Tag
from encoders.properties import LAYER_BOUNDS, EncodeOptions, Property

from .backends.base import BACKENDS, get_backend, is_available
from .backends.solve import choose_backend, fits_gurobi_licence, solve, solve_isolated, solve_portfolio
from .replay import attack, polish, replay
from .results import Result, SolveStatus, Verdict
from .search import get_search
from .search.input_split import BabConfig as InputSplitConfig
from .search.input_split import BabLeafQueries, BabStatus, bab_supported, bab_verify, search_config
from .search.relu_split import MarginConfig

__all__ = [
    "BACKEND_CHOICES",
    "DispatchConfig",
    "Task",
    "choose_backend",
    "fits_gurobi_licence",
    "solve",
    "solve_isolated",
    "solve_portfolio",
    "tighten_property_rows",
    "verify",
    "verify_many",
]

BACKEND_CHOICES = (*sorted(BACKENDS), "auto", "portfolio")


@dataclass(frozen=True)
class DispatchConfig:
    """How to answer queries.

    Attributes
    ----------
    backend
        ``gurobi``, ``highs``, ``marabou``, ``z3``, ``auto`` or ``portfolio``.
    timeout
        Wall-clock seconds per query (all refinements included).
    portfolio
        Backends raced by ``portfolio``.
    samples
        Random points tried for cheap falsification before any solver call (0 disables).
    max_refinements
        Re-solves allowed after spurious candidates (lazy cuts).
    bab, bab_max_inputs, bab_fraction, bab_max_leaves
        When the dispatcher runs the input-split search (see the comments below).
    input_split
        Settings of the input-split search (:class:`verifier.search.input_split.BabConfig`: split rule,
        batch size, attack, node cap, …); its ``seed`` is replaced by ``seed`` (one seed per query).
    bounds
        How the big-M bounds of the encodings are computed: ``crown`` (default), ``ibp`` or ``alpha``
        (α-CROWN intermediate bounds; tighter, costs a few optimisation passes per query;
        :data:`encoders.properties.LAYER_BOUNDS`).
    relu_split
        Settings of the ReLU-split search (:class:`verifier.search.relu_split.MarginConfig`, with its
        β-CROWN :class:`~verifier.search.relu_split.BabConfig`).
    """

    backend: str = "auto"
    timeout: float = 60.0
    threads: int = 1
    portfolio: tuple[str, ...] = ("gurobi", "highs", "marabou")
    quick_check: bool = True
    samples: int = 512
    max_refinements: int = 40
    bounds: str = "crown"
    seed: int = 0
    in_process: bool = False  # solve in this process (no hard kill); for daemonic workers
    # --- branch and bound over input splitting (verifier.search.input_split) ---
    # BaB before any solver when the network has few inputs: None = only with backend "auto" (a named
    # backend or a portfolio then answers the query itself, as solver comparisons need); True/False force
    bab: bool | None = None
    bab_max_inputs: int = 10  # ... at most this many
    bab_fraction: float = 0.85  # share of the time left that BaB may use
    bab_max_leaves: int = 64  # undecided BaB with at most this many open boxes: solve each box exactly
    input_split: InputSplitConfig = InputSplitConfig()
    # --- end branch and bound ---
    relu_split: MarginConfig = MarginConfig()

    def __post_init__(self) -> None:
        if not 0.0 < self.bab_fraction <= 1.0:
            raise ConfigError(f"bab_fraction: must lie in (0, 1], got {self.bab_fraction}")
        if self.backend not in BACKEND_CHOICES:
            raise ConfigError(
                f"--backend: unknown backend {self.backend!r} (choose from {', '.join(BACKEND_CHOICES)})"
            )
        if not self.timeout > 0:
            raise ConfigError(f"--timeout: must be positive, got {self.timeout}")
        for b in self.portfolio:
            if b not in BACKENDS:
                raise ConfigError(f"portfolio: unknown backend {b!r}")
        if self.bounds not in LAYER_BOUNDS:
            known = ", ".join(LAYER_BOUNDS)
            raise ConfigError(f"--bounds: unknown method {self.bounds!r} (choose from {known})")


# --------------------------------------------------------------------------------------------------
# backend choice: :func:`verifier.backends.solve.choose_backend` (shared with the ReLU-split search)
# --------------------------------------------------------------------------------------------------
def _available(name: str) -> bool:
    return is_available(name)


def _capabilities(name: str) -> frozenset[Kind]:
    return get_backend(name).capabilities


# --------------------------------------------------------------------------------------------------
# one query
# --------------------------------------------------------------------------------------------------
def _sample_region(
    prop: Property, nets: Mapping[str, Network], n: int, rng: np.random.Generator
) -> dict[str, np.ndarray] | None:
    """Random points of the property's region, evaluated in float64; the first violation, if any."""
    if n <= 0 or set(nets) != {"net"}:
        return None  # two-input properties: left to the solver (and the certifier's PGD)
    lo, hi = prop.region()
    pts = rng.uniform(lo, hi, size=(n, lo.size))
    pts[0] = 0.5 * (lo + hi)
    ys = nets["net"].evaluate(pts)
    for i in range(n):
        xs = prop.project({"net": pts[i]})
        if prop.violated(xs, {"net": ys[i]}):
            return xs
    return None


@dataclass(frozen=True)
class Query:
    """One query on its way through the stages of :func:`verify`; ``t0`` is its start time."""

    prop: Property
    nets: Mapping[str, Network]
    config: DispatchConfig
    options: EncodeOptions | None
    t0: float

    def done(self, verdict: Verdict, backend: str, msg: str, **kw: Any) -> Result:
        return Result(verdict, backend, time.perf_counter() - self.t0, message=msg, **kw)

    @property
    def use_bab(self) -> bool:
        """Branch and bound is part of the automatic strategy; a named backend (or portfolio) answers
        the query itself (solver comparison studies depend on that), unless ``config.bab`` says so."""
        bab = self.config.bab if self.config.bab is not None else self.config.backend == "auto"
        return bab and (self.options is None or self.options.target is None)


#: a stage answers the query (a Result) or passes it on (None)
Stage = Callable[[Query], "Result | None"]


def stage_quick_check(q: Query) -> Result | None:
    """CROWN bounds (``prop.quick_check``) prove the property: VERIFIED, no solver called."""
    if q.config.quick_check and q.prop.quick_check(q.nets):
        return q.done(Verdict.VERIFIED, "crown", "proved by CROWN bounds; no solver called")
    return None


def stage_attack(q: Query) -> Result | None:
    """Random points of the region (float64 IR), then PGD / the pair search; FALSIFIED if one replays."""
    if q.config.samples <= 0:
        return None
    cand = _sample_region(q.prop, q.nets, q.config.samples, np.random.default_rng(q.config.seed))
    rep = replay(q.prop, q.nets, cand) if cand is not None else attack(q.prop, q.nets, seed=q.config.seed)
    if rep.ok:
        return q.done(
            Verdict.FALSIFIED,
            "attack",
            "counterexample found by sampling/PGD; replayed on onnxruntime",
            counterexample=rep.counterexample,
        )
    return None


def stage_input_split(q: Query) -> Result | None:
    """Input-splitting branch and bound (:mod:`verifier.search.input_split`) for few inputs; the few
    leaf boxes it may leave open are solved exactly by :data:`LEAF_STAGES`."""
    return _run_search(q, "input_split") if q.use_bab else None


def stage_relu_split(q: Query) -> Result | None:
    """α/β-CROWN branch and bound and per-alternative margin MILPs for single-network output
    properties (:mod:`verifier.search.relu_split`); passes on what it does not handle."""
    return _run_search(q, "relu_split") if q.use_bab else None


def _run_search(q: Query, name: str) -> Result | None:
    """The search registered as ``name`` (:data:`verifier.search.SEARCHES`) on ``q``; leaf queries it
    hands back are solved by :func:`_solve_leaves`."""
    staged = get_search(name)(q.prop, q.nets, q.config, q.t0)
    return _solve_leaves(q, staged) if isinstance(staged, BabLeafQueries) else staged


def _solve_leaves(q: Query, leaves: BabLeafQueries) -> Result:
    """Solve each open BaB leaf exactly (:data:`LEAF_STAGES`): all infeasible ⇒ VERIFIED; a leaf
    counterexample is replayed once more against the whole property; the first undecided leaf ends
    the query undecided."""
    stats = dict(leaves.stats)

    def result(verdict: Verdict, backend: str, msg: str, **kw: Any) -> Result:
        return Result(verdict, backend, time.perf_counter() - q.t0, message=msg, stats=stats, **kw)

    ns = q.prop.namespaces[0]
    last = None
    for sub in leaves.props:
        remaining = q.config.timeout - (time.perf_counter() - q.t0)
        if remaining <= 0:
            return result(
                Verdict.TIMEOUT, q.config.backend, "time limit reached while solving the BaB leaves"
            )
        leaf_cfg = replace(q.config, bab=False, quick_check=False, samples=0, timeout=remaining)
        res = run_stages(Query(sub, q.nets, leaf_cfg, None, time.perf_counter()), LEAF_STAGES)
        last = res
        if res.verdict is Verdict.FALSIFIED and res.counterexample is not None:
            rep = replay(q.prop, q.nets, {ns: res.counterexample.x})
            if rep.ok:
                return result(
                    Verdict.FALSIFIED,
                    res.backend,
                    "counterexample in a BaB leaf; replayed",
                    counterexample=rep.counterexample,
                    solver_version=res.solver_version,
                )
            return result(Verdict.UNKNOWN, res.backend, f"leaf counterexample rejected: {rep.reason}")
        if res.verdict is not Verdict.VERIFIED:
            return Result(
                res.verdict,
                res.backend,
                time.perf_counter() - q.t0,
                message=f"branch-and-bound leaf undecided: {res.message}",
                solver_version=res.solver_version,
                stats={**stats, **res.stats},
            )
    backend = last.backend if last is not None else "bab"
    return result(
        Verdict.VERIFIED,
        f"bab+{backend}",
        f"branch and bound left {len(leaves.props)} boxes; the solver proved each infeasible",
        solver_version=last.solver_version if last is not None else "",
    )


def stage_solve(q: Query) -> Result:
    """Encode, solve in a child process with the hard limit (:func:`~verifier.backends.solve.solve`),
    replay candidates, refine (lazy cuts) or tighten; always answers."""
    prop, nets, config, options, t0 = q.prop, q.nets, q.config, q.options, q.t0
    done = q.done
    opts = options or EncodeOptions(bounds=config.bounds)
    names = list(config.portfolio) if config.backend == "portfolio" else None
    probe = prop.encode(nets, replace(opts, quadratic=False))
    backend = choose_backend(config.backend, probe) or config.backend
    quadratic = names is None and Kind.QUADRATIC in _capabilities(backend)
    program = prop.encode(nets, replace(opts, quadratic=True)) if quadratic else probe
    if config.backend == "auto" and program.balls and not fits_gurobi_licence(program):
        # the quadratic model is over Gurobi's licence (200 variables with a quadratic constraint):
        # fall back to the linear outer approximation with lazy tangent cuts on HiGHS
        backend, program = "highs", probe
    if names is not None:
        names = [
            b for b in names if _available(b) and not (b == "gurobi" and not fits_gurobi_licence(program))
        ]
        names = [b for b in names if not (program.kinds() - _capabilities(b))]
        if not names:
            return done(Verdict.ERROR, "portfolio", "no portfolio backend can take this query")
    else:
        if config.backend == "gurobi" and not fits_gurobi_licence(program):
            st = program.stats()
            raise LicenseLimitError(
                "--backend gurobi: the installed Gurobi licence is size-limited (2000 variables/constraints, "
                f"200 variables with quadratic constraints) and this query needs {st['milp_variables']} "
                f"variables and {st['milp_constraints']} constraints; use --backend highs (or auto)"
            )
        missing = program.kinds() - _capabilities(backend)
        if missing:
            return done(
                Verdict.ERROR,
                backend,
                f"backend {backend} cannot encode {', '.join(sorted(k.value for k in missing))}",
            )
    label = "portfolio" if names else backend
    stats = dict(program.stats())
    version = ""
    last_reason = ""
    strict = False  # True once the program is the tightened under-approximation (see tighten_property_rows)
    for round_no in range(config.max_refinements + 1):
        remaining = config.timeout - (time.perf_counter() - t0)
        if remaining <= 0:
            return done(Verdict.TIMEOUT, label, "time limit reached during refinement", stats=stats)
        out = solve(
            names if names else backend, program, remaining, config.threads, in_process=config.in_process
        )
        version = out.solver_version or version
        stats.update(out.stats)
        stats["refinements"] = round_no
        used = out.backend if names else backend
        if out.status is SolveStatus.UNSAT:
            if strict:  # only the tightened (under-approximate) query is infeasible: undecided
                why = (
                    f"solver candidate rejected ({last_reason}) and no violation "
                    f"with margin {STRICT_MARGIN:g} exists"
                )
                closed = _close_by_bounds(prop, nets, config, t0, options)
                if closed is not None and closed.verdict.decided:
                    return done(
                        closed.verdict,
                        f"{used}+bab",
                        f"{why}; {closed.message}",
                        counterexample=closed.counterexample,
                        solver_version=version,
                        stats={**stats, **closed.stats},
                    )
                return done(Verdict.UNKNOWN, used, why, solver_version=version, stats=stats)
            return done(
                Verdict.VERIFIED, used, "violation encoding infeasible", solver_version=version, stats=stats
            )
        if out.status is SolveStatus.TIMEOUT:
            return done(
                Verdict.TIMEOUT, used, out.message or "solver time limit", solver_version=version, stats=stats
            )
        if out.status is SolveStatus.ERROR:
            return done(Verdict.ERROR, used, out.message, solver_version=version, stats=stats)
        if out.status not in (SolveStatus.SAT, SolveStatus.OPTIMAL) or out.assignment is None:
            return done(
                Verdict.UNKNOWN,
                used,
                out.message or f"solver said {out.status.value}",
                solver_version=version,
                stats=stats,
            )
        assignment = np.asarray(out.assignment, dtype=np.float64)
        if assignment.shape != (program.n_vars,):
            return done(
                Verdict.ERROR,
                used,
                f"backend returned a malformed assignment (shape {assignment.shape}, "
                f"expected ({program.n_vars},))",
                solver_version=version,
                stats=stats,
            )
        xs = {ns: assignment[program.blocks[ns]["input"]] for ns in _input_names(program, nets)}
        rep = replay(prop, nets, xs)
        if not rep.ok:
            polished = polish(prop, nets, xs)
            rep = polished if polished.ok else rep
        if rep.ok:
            return done(
                Verdict.FALSIFIED,
                used,
                "counterexample replayed on onnxruntime",
                counterexample=rep.counterexample,
                solver_version=version,
                stats=stats,
            )
        cuts = prop.refine(program, out.assignment)
        if not cuts and not strict:
            # a candidate on the boundary of the violation region that float32 onnxruntime puts on the
            # safe side: ask once more for a violation by a margin (an under-approximation of the
            # violation set, so an UNSAT answer from now on is never reported as VERIFIED)
            strict = True
            program = tighten_property_rows(program, STRICT_MARGIN)
            last_reason = rep.reason
            continue
        if not cuts:
            return done(
                Verdict.UNKNOWN,
                used,
                f"solver candidate rejected: {rep.reason}",
                solver_version=version,
                stats=stats,
            )
        program.rows.extend(cuts)
        last_reason = rep.reason
    return done(
        Verdict.UNKNOWN,
        label,
        f"refinement limit reached ({last_reason})",
        solver_version=version,
        stats=stats,
    )


#: the stages of one query, in order (each answers or passes on; :func:`stage_solve` always answers)
STAGES: tuple[Stage, ...] = (
    stage_quick_check,
    stage_attack,
    stage_input_split,
    stage_relu_split,
    stage_solve,
)
#: the stages for a BaB leaf: straight to the solver
LEAF_STAGES: tuple[Stage, ...] = (stage_solve,)


def run_stages(q: Query, stages: Sequence[Stage]) -> Result:
    """The first answer of ``stages`` for ``q``."""
    for stage in stages:
        res = stage(q)
        if res is not None:
            return res
    return q.done(Verdict.UNKNOWN, q.config.backend, "no stage answered the query")


def verify(
    prop: Property,
    nets: Mapping[str, Network],
    config: DispatchConfig = DispatchConfig(),
    options: EncodeOptions | None = None,
) -> Result:
    """Answer one property query: :data:`STAGES` in order (module docstring)."""
    return run_stages(Query(prop, nets, config, options, time.perf_counter()), STAGES)


STRICT_MARGIN = 1e-5


def _close_by_bounds(
    prop: Property,
    nets: Mapping[str, Network],
    config: DispatchConfig,
    t0: float,
    options: EncodeOptions | None,
) -> Result | None:
    """Decide a query whose solver candidates all failed replay by sound bounds alone.

    A MILP/SMT solver accepts points that violate the property only within its tolerances (~1e-6);
    when the real margin is positive but smaller, its candidates fail replay and the tightened
    re-solve (violation by :data:`STRICT_MARGIN`) is infeasible, which proves nothing.  Input-splitting
    branch and bound (:func:`verifier.search.input_split.bab_verify`, CROWN bounds widened for
    rounding) can still prove such a query.  Used only for small input dimensions
    (``config.bab_max_inputs``) and unless ``config.bab`` is ``False``; ``None`` when not applicable.
    """
    ns = prop.namespaces[0]
    net = nets.get(ns)
    if config.bab is False or net is None or set(nets) != {ns} or not bab_supported(prop):
        return None
    if net.n_inputs > config.bab_max_inputs:
        return None
    left = config.timeout - (time.perf_counter() - t0)
    if left <= 0:
        return None
    out = bab_verify(prop, net, config.bab_fraction * left, search_config(config))
    stats = {f"bab_{k}": v for k, v in out.stats.items()}
    if out.status is BabStatus.VERIFIED:
        return Result(
            Verdict.VERIFIED, "bab", 0.0, message="proved by input-splitting branch and bound", stats=stats
        )
    if out.status is BabStatus.FALSIFIED:
        return Result(
            Verdict.FALSIFIED,
            "bab",
            0.0,
            counterexample=out.counterexample,
            message="counterexample found by branch and bound; replayed on onnxruntime",
            stats=stats,
        )
    return None


def tighten_property_rows(program: Program, margin: float) -> Program:
    """A copy of ``program`` whose property inequalities hold with a margin.

    ``a·x <= b`` becomes ``a·x <= b − τ`` and ``a·x >= b`` becomes ``a·x >= b + τ`` with
    ``τ = margin · (1 + max |a·x|)`` over the variable box (equalities and network rows are kept).  Every
    feasible point of the copy is feasible for ``program``: the copy under-approximates the violation
    set, so it may only ever produce candidates for replay, never a VERIFIED answer.
    """
    lb, ub = program.bounds()

    def tight(r: LinearRow) -> LinearRow:
        if r.tag is not Tag.PROPERTY or r.sense is Sense.EQ:
            return r
        lo, hi = r.activity_range(lb, ub)
        tau = margin * (1.0 + max(abs(lo), abs(hi)))
        return replace(r, rhs=r.rhs - tau if r.sense is Sense.LE else r.rhs + tau)

    p = program.copy()
    p.rows = [tight(r) for r in p.rows]
    p.disjunctions = [
        Disjunction(tuple(tuple(tight(r) for r in alt) for alt in d.alternatives), d.tag)
        for d in p.disjunctions
    ]
    return p


def _input_names(program: Program, nets: Mapping[str, Network]) -> list[str]:
    return [ns for ns in nets if ns in program.blocks]


# --------------------------------------------------------------------------------------------------
# many queries
# --------------------------------------------------------------------------------------------------
@dataclass(frozen=True)
class Task:
    """One query for :func:`verify_many`; ``key`` identifies it in journals and results."""

    key: str
    prop: Property
    nets: Mapping[str, Network]
    options: EncodeOptions | None = None


def _run_task(task: Task, config: DispatchConfig) -> tuple[str, Result]:
    try:
        return task.key, verify(task.prop, task.nets, config, task.options)
    except Exception as exc:  # a broken query must not sink the batch
        return task.key, Result(Verdict.ERROR, config.backend, 0.0, message=f"{type(exc).__name__}: {exc}")


def verify_many(
    tasks: Iterable[Task],
    config: DispatchConfig,
    jobs: int = 1,
    cluster: str | None = None,
    on_result: Callable[[str, Result], None] | None = None,
) -> dict[str, Result]:
    """Run many queries: sequentially, on a local process pool (``jobs``), or on a Dask cluster.

    ``on_result`` is called in the parent as each query finishes (journaling, progress bars).
    """
    tasks = list(tasks)
    results: dict[str, Result] = {}

    def emit(key: str, res: Result) -> None:
        results[key] = res
        if on_result:
            on_result(key, res)

    if cluster:
        from .cluster import run_on_dask

        for key, res in run_on_dask(tasks, config, cluster, _run_task):
            emit(key, res)
    elif jobs <= 1:
        for t in tasks:
            emit(*_run_task(t, config))
    else:
        with ProcessPoolExecutor(jobs, mp_context=mp.get_context("fork")) as ex:
            futs = [ex.submit(_run_task, t, config) for t in tasks]
            from concurrent.futures import as_completed

            for f in as_completed(futs):
                emit(*f.result())
    return results
