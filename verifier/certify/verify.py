r"""Stage 3, **verify the student** at the base radius ``R`` (or the per-sample radii of the ``fixed`` rule).

a. The global two-copy κ-confidence query over ``Dom`` (:func:`verifier.queries.verify_global`, with a
   time budget).  If VERIFIED, the student is ``r``-robust at every point where it is κ-confident, so it
   covers every ``i ∈ K`` with ``argmax f_S(x_i) = c_T(x_i)``, ``p(f_S(x_i))_{c_T} ≥ κ`` and radius ``≤ r``.
b. For the confident samples (a) does not cover: local robustness of ``f_S`` with label ``c_T(x_i)`` at
   radius ``R_i`` — batched CROWN margins first (:func:`crown_local`), then a complete solver for the rest
   (:func:`verifier.dispatch.verify_many`, child-process hard timeouts); every solver query is journaled
   and a rerun with the same output folder reuses finished queries.  Queries not started within
   ``local_budget`` are reported ``unknown`` — never dropped, never journaled.
"""

from __future__ import annotations

import dataclasses
import time
from collections.abc import Mapping
from dataclasses import dataclass, field
from typing import Any

import numpy as np

from encoders.bounds import margin_bounds, margin_bounds_l2
from encoders.network import Network
from encoders.progress import Progress
from encoders.properties import LocalRobustness

from ..dispatch import DispatchConfig, Task, verify_many
from ..journal import Journal, query_key
from ..results import Counterexample, Result, Verdict
from .config import CertifyConfig
from .context import Balls, RunContext

__all__ = ["LocalQueries", "StudentVerification", "crown_local", "result_from_record", "verify_student"]


def crown_local(net: Network, balls: Balls) -> np.ndarray:
    """Batched CROWN: ``True`` where every margin ``f_c − f_j`` has a positive lower bound over
    ``B_{r_i}(x_i) ∩ Dom`` (the local-robustness query is then VERIFIED without a solver)."""
    if len(balls) == 0:
        return np.zeros(0, dtype=bool)
    lo_d, hi_d = balls.domain
    X = balls.X
    if balls.norm == "inf":
        lo, hi = balls.box()
        mb = margin_bounds(net, lo, hi, balls.labels)
    else:
        mb = margin_bounds_l2(
            net, X, balls.radii, balls.labels, np.broadcast_to(lo_d, X.shape), np.broadcast_to(hi_d, X.shape)
        )
    return np.all(np.asarray(mb) > 0.0, axis=1)


def result_record(res: Result) -> dict[str, Any]:
    return res.to_json()


def result_from_record(rec: Mapping[str, Any]) -> Result:
    """The :class:`~verifier.results.Result` of a journaled record."""
    cex = rec.get("counterexample")
    ce = None
    if cex:
        ce = Counterexample(
            np.asarray(cex["x"], np.float64),
            np.asarray(cex["y"], np.float64),
            np.asarray(cex["x2"], np.float64) if cex.get("x2") is not None else None,
            np.asarray(cex["y2"], np.float64) if cex.get("y2") is not None else None,
        )
    return Result(
        Verdict(rec["verdict"]),
        rec.get("backend", ""),
        float(rec.get("time_s", 0.0)),
        ce,
        rec.get("message", ""),
        rec.get("solver_version", ""),
        dict(rec.get("stats") or {}),
    )


@dataclass
class StudentVerification:
    """Outcome per confident sample (aligned with ``Sample.K``): ``status`` (a verdict value or
    ``"pending"``), ``by`` (``global`` / ``crown`` / a backend / why not run), solver time ``qtime``;
    student counterexamples ``cex`` by position; the global query's record and counterexample; solver
    ``versions``."""

    status: np.ndarray
    by: np.ndarray
    qtime: np.ndarray
    cex: dict[int, Counterexample] = field(default_factory=dict)
    global_rec: dict[str, Any] = field(
        default_factory=lambda: {"run": False, "verdict": None, "radius": None}
    )
    global_cex: Counterexample | None = None
    versions: dict[str, str] = field(default_factory=dict)

    @classmethod
    def empty(cls, n: int) -> StudentVerification:
        return cls(np.array(["pending"] * n, dtype=object), np.array([""] * n, dtype=object), np.zeros(n))

    def apply(self, j: int, res: Result) -> None:
        self.status[j] = res.verdict.value
        self.by[j] = res.backend
        self.qtime[j] = res.time_s
        if res.solver_version:
            self.versions[res.backend] = res.solver_version
        if res.verdict is Verdict.FALSIFIED and res.counterexample is not None:
            self.cex[j] = res.counterexample


def _global(
    config: CertifyConfig,
    ctx: RunContext,
    student: Any,
    sv: StudentVerification,
    radii: np.ndarray,
    agree_conf: np.ndarray,
    journal: Journal,
) -> np.ndarray:
    """Run (or reuse) the global query at the largest finite radius; the samples it covers."""
    covered = np.zeros(len(radii), dtype=bool)
    finite = radii[np.isfinite(radii)]
    if not (config.global_query and len(radii) and len(finite)):
        return covered
    r_glob = float(finite.max())
    dom = ctx.domain
    gkey = query_key(
        "global",
        student.sha256,
        r_glob,
        config.kappa,
        config.norm,
        dom[0],
        dom[1],
        config.backend,
        config.global_timeout,
    )
    rec = journal.get(gkey)
    if rec is None:
        from ..queries import verify_global

        ctx.log(
            f"global two-copy query on the student: radius {r_glob:.4g}, kappa {config.kappa:g}, "
            f"budget {config.global_timeout:g}s"
        )
        dcfg = DispatchConfig(backend=config.backend, timeout=config.global_timeout, seed=config.seed)
        res = verify_global(student.net, r_glob, config.kappa, dom, dcfg, config.norm)
        rec = journal.record(gkey, result_record(res))
    else:
        ctx.log("global query: reusing the journaled result")
    gres = result_from_record(rec)
    sv.global_rec = {
        "run": True,
        "radius": r_glob,
        "verdict": gres.verdict.value,
        "backend": gres.backend,
        "message": gres.message,
        "solver_version": gres.solver_version,
        "time_s": round(gres.time_s, 3),
    }
    if gres.solver_version:
        sv.versions[gres.backend] = gres.solver_version
    if gres.verdict is Verdict.VERIFIED:
        covered = agree_conf & (radii <= r_glob)
    sv.global_cex = gres.counterexample
    return covered


def verify_student(
    config: CertifyConfig, ctx: RunContext, student: Any, balls: Balls, agree_conf: np.ndarray
) -> StudentVerification:
    """Stage 3 (module docstring) on the confident samples' ``balls`` (student radii).  ``student`` has
    ``net`` (IR) and ``sha256``; ``agree_conf[j]``: the student agrees with the teacher at sample ``j`` and
    is κ-confident there (what the global query needs to cover it)."""
    n = len(balls)
    sv = StudentVerification.empty(n)
    journal = Journal(ctx.out / "journal.jsonl")
    t0 = time.perf_counter()
    covered = _global(config, ctx, student, sv, balls.radii, agree_conf, journal)
    ctx.durations["global_s"] = time.perf_counter() - t0
    ctx.log(f"global query: {sv.global_rec['verdict']}; covers {int(covered.sum())} of {n} confident samples")

    t0 = time.perf_counter()
    sv.status[covered] = "verified"
    sv.by[covered] = "global"
    bad_r = ~np.isfinite(balls.radii)
    sv.status[bad_r & ~covered] = "unknown"
    sv.by[bad_r & ~covered] = "infinite radius (rho = 0)"
    todo = np.flatnonzero(sv.status == "pending")
    if config.local_crown and len(todo):
        tc = time.perf_counter()
        ok = crown_local(student.net, balls.subset(todo))
        sv.status[todo[ok]] = "verified"
        sv.by[todo[ok]] = "crown"
        ctx.durations["crown_s"] = time.perf_counter() - tc
        ctx.durations["crown_points_per_s"] = len(todo) / max(ctx.durations["crown_s"], 1e-9)
        ctx.log(
            f"batched CROWN: {int(ok.sum())} of {len(todo)} local queries verified "
            f"({ctx.durations['crown_points_per_s']:.0f} points/s)"
        )
    todo = np.flatnonzero(sv.status == "pending")
    if len(todo):
        LocalQueries(config, ctx, student, balls, sv, journal).run(todo)
    ctx.durations["local_s"] = time.perf_counter() - t0
    journal.close()
    return sv


@dataclass
class LocalQueries:
    """The solver stage of (b) — and of the lift audit on the teacher (``tag = "audit"``): one task per
    distinct (point, label, radius) key on ``network`` (anything with ``net`` and ``sha256``), journaled as
    it ends, within ``budget`` seconds (default ``config.local_budget``)."""

    config: CertifyConfig
    ctx: RunContext
    student: Any
    balls: Balls
    sv: StudentVerification
    journal: Journal
    tag: str = "local"
    budget: float | None = None
    keys: dict[str, list[int]] = field(default_factory=dict)

    def run(self, todo: np.ndarray) -> None:
        config, dom, b = self.config, self.ctx.domain, self.balls
        tasks = []
        for j in todo:
            k = query_key(
                self.tag,
                self.student.sha256,
                b.X[j],
                int(b.labels[j]),
                float(b.radii[j]),
                config.norm,
                dom[0],
                dom[1],
                config.backend,
                config.local_timeout,
            )
            if k in self.keys:  # the same point drawn twice (sampling with replacement): one query
                self.keys[k].append(int(j))
                continue
            self.keys[k] = [int(j)]
            if self.journal.get(k) is None:
                prop = LocalRobustness(
                    b.X[j], float(b.radii[j]), int(b.labels[j]), config.norm, dom[0], dom[1]
                )
                tasks.append(Task(k, prop, {"net": self.student.net}))
        for k, js in self.keys.items():
            rec = self.journal.get(k)
            if rec is not None:
                for j in js:
                    self.sv.apply(j, result_from_record(rec))
        self.ctx.log(
            f"{self.tag} solver queries: {len(tasks)} to run, {len(self.keys) - len(tasks)} reused from the "
            f"journal ({len(todo)} samples)"
        )
        self._solve(tasks)

    def _solve(self, tasks: list[Task]) -> None:
        """Solve within ``config.local_budget`` seconds, in chunks of ``jobs``; once the budget is spent the
        rest are marked ``unknown`` ("budget"): reported undecided, never dropped, never journaled (a rerun
        with a larger budget solves them)."""
        if not tasks:
            return
        config = self.config
        budget = config.local_budget if self.budget is None else self.budget
        lcfg = DispatchConfig(backend=config.backend, timeout=config.local_timeout, seed=config.seed)
        t0 = time.perf_counter()
        bar = Progress(
            total=len(tasks), desc=f"{self.tag} queries", unit="query", enabled=self.ctx.log.progress
        )

        def on_result(key: str, res: Result) -> None:
            self.journal.record(key, result_record(res))
            for j in self.keys[key]:
                self.sv.apply(j, res)
            bar.update(1)

        step = max(1, config.jobs)
        done = 0
        for a in range(0, len(tasks), step):
            left = budget - (time.perf_counter() - t0)
            if left <= 0:
                break
            chunk = tasks[a : a + step]
            cfg = dataclasses.replace(lcfg, timeout=max(0.5, min(lcfg.timeout, left)))
            verify_many(chunk, cfg, jobs=config.jobs, on_result=on_result)
            done = a + len(chunk)
        bar.close()
        for t in tasks[done:]:
            for j in self.keys[t.key]:
                self.sv.status[j] = "unknown"
                self.sv.by[j] = f"not run: {self.tag} budget exhausted"
        if done < len(tasks):
            self.ctx.log(
                f"{self.tag} solver budget of {budget:g}s exhausted: {len(tasks) - done} queries "
                "not run (reported undecided)"
            )
