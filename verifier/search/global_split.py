r"""Deciding global two-copy κ-confidence robustness pair by pair, and the certified global radius.

The property (:class:`encoders.properties.GlobalRobustness`) is violated for class ``c`` exactly when
some competitor ``j`` has a *violating pair through j*: ``x, x' ∈ D``, ``‖x − x'‖_∞ ≤ δ``, ``x``
κ-confident for ``c`` and ``z_j(x') ≥ z_c(x')``.  So the property holds iff every ``(c, j)`` has no
such pair, and one replayed pair refutes it.  :func:`decide_global` works on the ``(c, j)`` queries:

1. **bounds** — CROWN over ``D`` (class ``c`` never κ-confident, or ``j`` never ahead of ``c``) and the
   twin-network difference bound ``max Δ_j < m`` (:meth:`GlobalRobustness.open_targets`) close most
   pairs at once;
2. **search** — the projected-gradient pair search (:func:`verifier.replay.search_pairs`), one round
   over every class, then a larger one; every pair is replayed on onnxruntime.  The closest near
   misses then get a *local MILP* (:func:`_local_pair_milp`): the exact pair MILP on a small box
   around the near miss, where its bounds are tight and Gurobi finds a violating pair in seconds
   when there is one (refutation only; replayed against the full domain);
3. **pair by pair** (L∞), easiest pairs first, the LP work of each finished before the next, with
   the pair MILPs running beside it in solver children (:class:`_PairMilps`):

   a. *LP tightening* — optimisation-based bound tightening of the difference bounds
      ``z(x) − z(x')`` (and, in the last step, of each copy's own bounds) on the LP relaxation of the
      violating pairs *through j* (:func:`encoders.bounds.pair_lp.tighten_pair`: copy a confident,
      copy b's ``z_j ≥ z_c``, twin rows; every bound certified by weak duality), step by step
      (``obbt_plan``) in this process; the twin bound ``max Δ_j`` recomputed from the tightened bounds
      proves the pair when it drops below ``m``.  When ``(j, c)`` is open too, one *couple* LP serves
      both (``couples``; rows (R) of :mod:`encoders.bounds.pair_lp`, valid on the violating pairs of
      both, those of ``(j, c)`` with the copies exchanged), and each step's bounds go to both pairs;
   b. after each step (from ``milp_after`` on), the *pair MILP* (:func:`_pair_milp`: ``min z_c(x') −
      z_j(x')`` over the two-copy encoding with that step's bounds, on Gurobi through the one solve
      path; closed when the proven bound is ≥ 1e-3 or the model is infeasible; first a *partial round*
      with binaries on the last hidden layer only, a relaxation that often closes the pair 3–6× sooner)
      is started in the *background* (a :class:`~verifier.backends.solve.SolveGroup` child, at most
      ``milp_background`` seconds) and the next LP step goes on at once — a MILP with good bounds often
      closes in a second what further LP steps would take tens of seconds for, and while Gurobi works on
      one core the LP works on the other. ``milp_jobs`` children at a time: a pair whose MILP cannot
      start yet waits in a queue with its newest bounds; newer bounds replace the pair's own running
      MILP once it has had ``milp_probe`` seconds (or ended open). Finished MILPs are read between
      steps, between pairs and every few neurons inside a step (the ``goal`` of :func:`tighten_pair`): a
      pair its MILP closed stops its LP work at once, a replayed pair ends the query (FALSIFIED), a pair
      whose model is not a Gurobi model goes to stage 4's fallback;
   c. the LP optimum of ``max z_j(x') − z_c(x')`` seeds a local pair search;
4. **second pass** — the pair MILP of every pair still open (its stage-3 MILP, if still running,
   counts as one), ``milp_jobs + 1`` at a time (this process only waits now), the time left shared
   among them; a rerun on the same bounds with no more time than a MILP that already ended open is
   skipped (it would retrace the same search).  The dispatcher's feasibility MILP
   (:func:`verifier.dispatch.verify`) in this process when the model is not a Gurobi model (e.g.
   over the size-limited licence).  ``milp_jobs = 0`` restores the sequential schedule: a blocking
   ``milp_probe``-second MILP after each step, one MILP at a time in the second pass.

Soundness: every bound used in 3–4 holds for every violating pair through ``j`` — the bounds of every
LP step do, so a MILP built from an earlier step's bounds that answers after a later step proves as
much as one built from the latest — so a pair is closed only when no violating pair through ``j``
exists (modulo the MILP solver's tolerances, as for every MILP verdict; see :func:`_pair_milp`);
FALSIFIED only with a replayed pair.  The order in which background MILPs answer changes which stage
closes a pair and how long the query takes, never a verdict's correctness.

The certified global radius (:func:`certified_global_radius`)
-------------------------------------------------------------
Verdicts are monotone in δ: the pairs allowed at ``δ₁ < δ₂`` are a subset of those at ``δ₂``, so a proof
at ``δ₂`` holds at every smaller δ and a violating pair at ``δ₁`` violates at every larger δ.  For one κ
the radius search keeps the largest δ proved, ``lower``, and the smallest δ falsified, ``upper`` (with
its replayed pair), per class (class ``c``'s query alone) and overall (``min`` over classes of both:
the property is the conjunction of the class queries).  Proofs are expensive and refutations cheap,
so the search is asymmetric:

1. start from the largest δ the twin bounds prove (a bisection on the cheap bound check);
2. grow δ by half with the pair search alone (plus searches seeded by each open pair's LP optimum)
   until a pair replays, then bisect with the same searches between the last δ where they found
   nothing and the smallest refuted δ (a third of the budget);
3. full :func:`decide_global` probes upward from the proved radius, each at most ``2·gap`` above it
   (and below any δ where a full probe ended undecided), until ``upper − lower ≤ gap · upper`` or
   the budget is spent — anytime: the interval so far is returned.  A full probe that timed out
   with at most 12 pairs open, fewer than its last attempt at that δ, is run again at once (without
   the search): the closed-pair cache below makes the retry work only on the pairs left.

Every probe, decided or not, reports the pairs it closed; a pair closed at ``δ'`` is closed at every
``δ ≤ δ'`` (its violating pairs at δ are among those at ``δ'``), so later probes at or below ``δ'``
skip it (``known_closed`` of :func:`decide_global`).
"""

from __future__ import annotations

import math
import time
from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass, field, replace
from typing import Any

import numpy as np

from encoders.bounds.pair_lp import PairLP, initial_pair_bounds, swap_copies, tighten_pair
from encoders.bounds.twin import pair_margin_upper
from encoders.network import Network
from encoders.program import Program
from encoders.properties import EncodeOptions, GlobalRobustness

from ..backends.solve import SolveGroup, SolveJob, choose_backend, solve
from ..dispatch import DispatchConfig, verify
from ..replay import polish, replay, search_pairs
from ..results import Counterexample, Outcome, Result, SolveStatus, Verdict

__all__ = [
    "GlobalSplitConfig",
    "PairStatus",
    "decide_global",
    "GlobalRadius",
    "ClassRadius",
    "certified_global_radius",
]


@dataclass(frozen=True)
class GlobalSplitConfig:
    """Stages of :func:`decide_global` (module docstring).

    Attributes
    ----------
    search_fraction
        Share of the time limit the pair search (stage 2) may use.
    lp
        Stage 3 (L∞ only).
    obbt_plan
        ``(layers, per_copy)`` steps tightened in turn per pair (``-1`` = the last hidden layer, ``()``
        = every layer; ``per_copy`` also tightens each copy's own bounds): by default the differences
        of the last hidden layer, then of every layer, then every bound.  Each step stops as soon as
        the pair is proved.
    lp_search
        Seed a local pair search from the LP optimum of each pair still open after stage 3.
    milp
        Stage 4.
    milp_after, milp_background, milp_jobs
        From tightening step ``milp_after`` (0 = the first) on, the pair's MILP (:func:`_pair_milp`,
        with that step's bounds) runs in the background in a solver child, at most
        ``milp_background`` seconds, while the LP tightening goes on in this process; ``milp_jobs``
        such children at a time (1 suits 2 cores: the LP on one, Gurobi on the other).  A pair whose
        MILP cannot start yet waits in a queue with its newest bounds (:class:`_PairMilps`).  Pairs
        still open after every step get a second MILP in the second pass, ``milp_jobs + 1`` at a
        time, the time left shared among them.
    milp_probe
        The time a pair's background MILP keeps running before a later step's bounds may replace it
        (a MILP that ends open sooner is replaced at once).  With ``milp_jobs = 0`` there are no
        background MILPs: after each step from ``milp_after`` on the pair's MILP *blocks* for
        ``milp_probe`` seconds, and the second pass runs one MILP at a time (the sequential schedule,
        kept for comparisons).
    couples
        When both ``(c, j)`` and ``(j, c)`` are open, one LP tightening serves the two (the couple LP of
        :mod:`encoders.bounds.pair_lp`, rows (R), which holds on the violating pairs of both, those
        of ``(j, c)`` with the copies exchanged): each step's bounds go to both pairs' twin bounds and
        MILPs (:func:`~encoders.bounds.pair_lp.swap_copies` for ``(j, c)``).
    tol
        The proven minimum of ``z_c(x') − z_j(x')`` that closes a pair (:func:`_pair_milp`).
    gurobi_params
        Extra Gurobi parameters of the stage 3–4 pair MILPs, as ``(name, value)`` pairs (the local
        refutation MILPs keep Gurobi's defaults).  Default ``Presolve = 2`` (aggressive presolve): on the
        digits student's hard pairs it closed the MILPs 25–35 % sooner, and with a 300 s limit it
        verifies (δ, κ) = (0.01, 0.9), which ends UNKNOWN with the default presolve; the measurements,
        and the parameters that were no better, are in docs/benchmarks-global.md.
    partial_layers, partial_share
        The *partial round* of every stage 3–4 pair MILP (:class:`_PairMilpRun`): first, for at most
        ``partial_share`` of the MILP's time, the same program with binaries only on the ReLUs of these
        hidden layers (``-1`` = the last) in both copies and every other ReLU relaxed to its triangle
        (:meth:`encoders.program.Program.relaxed`).  It is a relaxation, so a proven bound ``≥ tol``
        (or infeasibility) closes the pair; any other end hands over to the exact program with the
        time left.  ``()`` turns it off.  On the digits student's six hard pairs at (0.02, 0.99) it
        closed each in 1.3–3.8 s, where the exact MILP took 3.0–18.5 s (docs/benchmarks-global.md).
    local_milp, local_radii, local_time, local_fraction
        Refutation: the ``local_milp`` open pairs whose search came closest get an exact MILP on the
        box of half-width ``r`` around the search's best pair (:func:`_local_pair_milp`), for each
        ``r`` in ``local_radii`` in turn (all pairs at the smallest box first), at most ``local_time``
        seconds each, within ``local_fraction`` of the time left.
    """

    search_fraction: float = 0.15
    lp: bool = True
    obbt_plan: tuple[tuple[tuple[int, ...], bool], ...] = (((-1,), False), ((), False), ((), True))
    lp_search: bool = True
    milp: bool = True
    milp_after: int = 0
    milp_background: float = 20.0
    milp_jobs: int = 1
    milp_probe: float = 2.0
    couples: bool = True
    tol: float = 1e-3
    gurobi_params: tuple[tuple[str, Any], ...] = (("Presolve", 2),)
    partial_layers: tuple[int, ...] = (-1,)
    partial_share: float = 0.5
    local_milp: int = 3
    local_radii: tuple[float, ...] = (0.3,)
    local_time: float = 8.0
    local_fraction: float = 0.1


@dataclass(frozen=True)
class PairStatus:
    """How one ``(c, j)`` query ended: ``how`` ∈ {bounds, lp, milp, open, falsified}; ``excess`` is the
    last twin bound ``max Δ_j − m`` (≤ 0 ⇒ proved by bounds)."""

    c: int
    j: int
    how: str
    excess: float
    time_s: float


def _lp_start(
    net: Network, pb: Any, lo: np.ndarray, hi: np.ndarray, delta: float, c: int, j: int, kappa: float
) -> tuple[np.ndarray, np.ndarray] | None:
    """The LP optimum of ``max z_j(x') − z_c(x')`` over the pairs with copy a confident: a search start."""
    lp = PairLP(net, pb, (lo, hi), (lo, hi), delta, c, kappa, None)
    lp.lower({int(lp.y["b"][c]): 1.0, int(lp.y["b"][j]): -1.0})
    v = lp.last_primal
    if v is None:
        return None
    return v[lp.xa].copy(), v[lp.xb].copy()


#: a pair is closed by its MILP when the proven minimum of ``z_c(x') − z_j(x')`` is at least this
PAIR_TOL = 1e-3


@dataclass(frozen=True)
class PairMilp:
    """How :func:`_pair_milp` ended: ``how`` ∈ {closed, falsified, open, fallback}; ``bound`` is the
    proven lower bound of ``min z_c(x') − z_j(x')`` (``inf`` when the model is infeasible, ``None``
    when nothing was proved); ``cex`` the replayed pair when falsified."""

    how: str
    bound: float | None
    time_s: float
    cex: Counterexample | None = None
    message: str = ""
    stats: dict[str, Any] = field(default_factory=dict)


def pair_program(prop: GlobalRobustness, net: Network, j: int, bounds: str = "crown") -> Program:
    r"""The two-copy program of the pair ``(c, j)`` with the objective ``min z_c(x') − z_j(x')``.

    :meth:`GlobalRobustness.encode` with ``target=j`` (copy a κ-confident for ``c``: the margin rows and
    the softmax tangent cuts; ``|x − x'| ≤ δ``; each copy's big-M constants from ``prop.pair_bounds``
    when given, stable neurons folded away; the ``twin.*`` difference rows), with the flip row
    ``z_j(x') − z_c(x') ≥ 0`` removed and turned into the objective.
    """
    prog = prop.encode({"a": net, "b": net}, EncodeOptions(bounds, target=j))
    c = prop.label
    flip = f"b.y{j}>=y{c}"
    prog.rows = [r for r in prog.rows if r.name != flip]
    zb = prog.blocks["b"]["output"]
    prog.set_objective([int(zb[c]), int(zb[j])], [1.0, -1.0])
    prog.meta["pair_objective"] = (c, j)
    return prog


def _pair_milp(
    prop: GlobalRobustness,
    net: Network,
    j: int,
    timeout: float,
    config: DispatchConfig,
    split: GlobalSplitConfig | None = None,
) -> PairMilp:
    r"""Close, refute or leave open the pair ``(c, j)`` by one optimisation MILP (Gurobi).

    Formulation
    -----------
    :func:`pair_program`: ``μ = min z_c(x') − z_j(x')`` over the two-copy encoding ``M`` (copy a
    κ-confident for ``c`` by the outer approximation of the confident set, ``‖x − x'‖_∞ ≤ δ``, both copies
    exact ReLU networks through big-M rows whose constants are the bounds ``prop.pair_bounds``, and the
    difference rows).  The flip row is the objective, not a constraint.

    Soundness
    ---------
    Every bound in ``prop.pair_bounds`` holds on every violating pair through ``j`` (they are tightened
    with the flip row among the constraints, :func:`encoders.bounds.pair_lp.tighten_pair`), and every
    other row of ``M`` holds on every coupled pair with copy a confident.  So a violating pair
    ``(x, x')`` — ``z_j(x') ≥ z_c(x')`` — is a feasible point of ``M`` with objective ``≤ 0``, and
    ``μ ≤ 0``.  Contrapositively the pair is *closed* when the solver proves ``μ > 0``: its proven
    bound (Gurobi's ``ObjBound``, ``Outcome.bound``) is at least ``tol = 1e-3``, or the model is
    infeasible.  Why ``1e-3`` and not ``> 0``: the proven bound holds for the model up to Gurobi's
    tolerances — rows met to 1e-6 (``FeasibilityTol``), binaries integral to 1e-5 (``IntFeasTol``),
    which lets a big-M ReLU with constants of order ten move its output by about 1e-4 — and a
    violating pair may sit exactly at objective 0, so the threshold must lie above what these
    tolerances can shift the objective by; 1e-3 is ten times that estimate and a thousand times the
    feasibility tolerance.  Infeasibility is taken as a proof as everywhere else in the project (an
    infeasible violation encoding is VERIFIED, :func:`verifier.dispatch.stage_solve`: the same
    reliance on the MILP solver).

    Partial round (``split.partial_layers``, off when ``split`` is ``None``): the program with the
    ReLUs outside those layers relaxed to triangles is solved first; its feasible set contains the
    exact program's (every exact point satisfies the triangle rows), so its minimum is at most ``μ``
    and a proven bound ``≥ tol`` (or infeasibility) closes the pair as above.  Its points prove nothing
    about violations: whatever else it ends with, the exact program runs next with the time left.

    Refutation: an incumbent with objective ``< 0`` is a candidate pair; it counts only when it replays
    on onnxruntime (:func:`verifier.replay.replay`, then :func:`~verifier.replay.polish`).  A candidate
    whose copy a is not really κ-confident adds the tangent cut at its logits
    (:meth:`GlobalRobustness.refine`) and the MILP is solved again.

    The solve goes through :func:`verifier.backends.solve.solve` (a child process with the hard time
    limit).  Gurobi stops as soon as the bound reaches ``tol`` (``BestBdStop``) or an incumbent is
    below ``−tol`` (``BestObjStop``).  When the program is over Gurobi's licence (or Gurobi is not
    the configured backend) the result is ``fallback``: the caller uses the dispatcher's feasibility
    path instead.

    This is the synchronous form of :class:`_PairMilpRun` (which holds the logic: one solver round
    after the other in this call, ``config.in_process`` honoured); :func:`decide_global` runs the same
    rounds in the background in a :class:`~verifier.backends.solve.SolveGroup`.
    """
    run = _PairMilpRun(prop, net, j, timeout, config, split)
    while (limit := run.next_limit()) is not None:
        prog, threads = run.program, config.threads
        run.feed(solve("gurobi", prog, limit, threads, params=run.params, in_process=config.in_process))
    assert run.result is not None
    return run.result


class _PairMilpRun:
    r"""One pair MILP of :func:`_pair_milp` as a sequence of solver rounds driven by the caller.

    Formulation, closing rule, refutation and their soundness are those of :func:`_pair_milp`, whose
    whole logic lives here: the program is built (and the backend chosen) at construction —
    ``result`` is ``fallback`` at once when it is not a Gurobi model — then each round is

    * :meth:`next_limit` — the time limit of the next solver round, or ``None`` when the run is over
      (``result`` set: the time is spent, or ``config.max_refinements`` rounds of cuts were made);
    * :meth:`feed` — one round's :class:`~verifier.results.Outcome`: a licence refusal → ``fallback``;
      infeasible → ``closed``; proven bound ``≥ tol`` → ``closed``; an incumbent ``< 0`` that replays on
      onnxruntime (after :func:`~verifier.replay.polish`) → ``falsified`` with the pair; one that does
      not → the tangent cuts of :meth:`GlobalRobustness.refine` are added and another round is due
      (none → ``open``); no incumbent below 0 → ``open``.  With a partial round (``split``), the first
      round solves :attr:`program` = the partial program for at most ``partial_share·timeout``
      seconds, and :meth:`_feed_partial` either closes the pair or makes the exact program the next.

    :meth:`start` / :meth:`collect` are the same two steps through a
    :class:`~verifier.backends.solve.SolveGroup`: ``start`` forks the round's solver child (tagged
    ``tag``) and returns its job; ``collect`` feeds a finished job's outcome and starts the next round
    when one is due (returning ``None``), else returns ``result``.  The program is copied into each
    child at its fork, so cuts added later never reach a running round.

    ``rerun_above`` (set when the run ends ``open``): a new run of the *same* program can only end
    differently with a budget above this — Gurobi is deterministic, so a rerun retraces the same
    search: ``timeout`` when the time ran out, ``inf`` when the run ended for any reason more time
    cannot change (optimal with a bound below ``tol``; a candidate without cuts; the round limit), and
    0 after a solver error.  ``prop.pair_bounds`` (the :class:`~encoders.bounds.pair_lp.PairBounds` the
    program is built from) is the identity of the program for that rule.
    """

    def __init__(
        self,
        prop: GlobalRobustness,
        net: Network,
        j: int,
        timeout: float,
        config: DispatchConfig,
        split: GlobalSplitConfig | None = None,
    ) -> None:
        self.t0 = time.perf_counter()
        tol = PAIR_TOL if split is None else split.tol
        self.prop, self.net, self.j, self.timeout, self.config, self.tol = prop, net, j, timeout, config, tol
        self.prog = pair_program(prop, net, j, config.bounds)
        st = self.prog.stats()
        self.stats: dict[str, Any] = {"variables": st["milp_variables"], "binaries": st["binaries"]}
        gurobi_params = {} if split is None else dict(split.gurobi_params)
        self.params = {"params": {**gurobi_params, "BestBdStop": tol, "BestObjStop": -tol}}
        # the partial round (proofs only): binaries on ``split.partial_layers`` alone
        self.partial: Program | None = None
        self.partial_limit = 0.0
        if split is not None and split.partial_layers and split.partial_share > 0.0:
            n_hidden = len(net.affines) - 1
            layers = {k % n_hidden + 1 for k in split.partial_layers} if n_hidden else set()
            exact = [
                int(i) for ns in ("a", "b") for k in layers for i in self.prog.blocks[ns].get(f"h{k}", ())
            ]
            if len(exact) < len(self.prog.relus):
                self.partial = self.prog.relaxed(exact)
                self.partial_limit = split.partial_share * timeout
                self.stats["partial_binaries"] = len(exact)
        self.bound: float | None = None  # the best proven lower bound of the objective so far
        self.rounds = 0
        self.rerun_above = 0.0
        self.result: PairMilp | None = None
        self.job: SolveJob | None = None
        if choose_backend(config.backend, self.prog, milp_only=True) != "gurobi":
            self._end("fallback", None, "not a Gurobi model")

    def _end(self, how: str, bound: float | None, message: str, cex: Counterexample | None = None) -> None:
        self.result = PairMilp(how, bound, time.perf_counter() - self.t0, cex, message, self.stats)

    def _open(self, message: str, rerun_above: float) -> None:
        self.rerun_above = rerun_above
        self._end("open", self.bound, message)

    @property
    def program(self) -> Program:
        """The program of the next round: the partial one while it is due, then the exact one."""
        return self.partial if self.partial is not None else self.prog

    def next_limit(self) -> float | None:
        """The time limit of the next round; ``None`` (and ``result`` set) when the run is over."""
        if self.result is not None:
            return None
        if self.partial is not None:
            left = self.timeout - (time.perf_counter() - self.t0)
            if left > 0.05:
                return min(self.partial_limit, left)
            self.partial = None
        if self.rounds > self.config.max_refinements:
            self._open("", math.inf)
            return None
        left = self.timeout - (time.perf_counter() - self.t0)
        if left <= 0.05:
            self._open("", self.timeout)
            return None
        return left

    def feed(self, out: Outcome) -> bool:
        """Apply one round's outcome (class docstring); True when the run is over (``result`` set)."""
        if self.partial is not None:
            return self._feed_partial(out)
        self.rounds += 1
        self.stats.update(rounds=self.rounds, nodes=out.stats.get("nodes"), status=out.status.value)
        if self._settle(out):
            return True
        if out.assignment is None or out.objective is None or out.objective >= 0.0:
            more = {SolveStatus.TIMEOUT: self.timeout, SolveStatus.OPTIMAL: math.inf}.get(out.status, 0.0)
            self._open(out.message or out.status.value, more)
            return True
        prop, prog = self.prop, self.prog
        nets = {"a": self.net, "b": self.net}
        xs = {ns: np.asarray(out.assignment)[prog.blocks[ns]["input"]] for ns in ("a", "b")}
        rep = replay(prop, nets, xs)
        if not rep.ok:
            pol = polish(prop, nets, xs)
            rep = pol if pol.ok else rep
        if rep.ok:
            self._end("falsified", self.bound, rep.reason, rep.counterexample)
            return True
        cuts = prop.refine(prog, out.assignment)
        if not cuts:
            self._open(f"candidate rejected: {rep.reason}", math.inf)
            return True
        prog.rows.extend(cuts)
        return False

    def _feed_partial(self, out: Outcome) -> bool:
        """The partial round's outcome: it closes the pair (infeasible, or proven bound ``≥ tol``: the
        partial program is a relaxation of the exact one, so its bound holds for it), or it leaves
        the exact program for the next round with the time left (any other outcome, an incumbent
        below 0 included: a point of the relaxation is not a pair)."""
        self.partial = None
        self.stats.update(partial_status=out.status.value, partial_nodes=out.stats.get("nodes"),
                          partial_s=round(out.time_s, 3))
        return self._settle(out, " (partial)")  # a licence refusal: the exact program is larger still

    def _settle(self, out: Outcome, how: str = "") -> bool:
        """The endings any round's outcome decides: a licence refusal → ``fallback``; infeasible or a
        proven bound ``≥ tol`` → ``closed`` (``how`` tags the message).  Keeps the best proven bound;
        True when the run is over."""
        if out.stats.get("licence_limit"):
            self._end("fallback", None, out.message)
            return True
        if out.status is SolveStatus.UNSAT:
            self._end("closed", math.inf, "infeasible" + how)
            return True
        if out.bound is not None:
            self.bound = out.bound if self.bound is None else max(self.bound, out.bound)
            if out.bound >= self.tol:
                self._end("closed", out.bound, "bound" + how)
                return True
        return False

    def start(self, group: SolveGroup, tag: Any = None) -> SolveJob | None:
        """Fork the next round's solver child in ``group``; ``None`` (and ``result`` set) when the run
        is over."""
        limit = self.next_limit()
        if limit is None:
            return None
        prog = self.program
        self.job = group.start("gurobi", prog, limit, self.config.threads, params=self.params, tag=tag)
        return self.job

    def collect(self, group: SolveGroup, job: SolveJob) -> PairMilp | None:
        """Feed the finished ``job``; start the next round (``None``) or return ``result``."""
        assert job.outcome is not None
        self.job = None
        if not self.feed(job.outcome) and self.start(group, job.tag) is not None:
            return None
        return self.result


def _local_pair_milp(
    prop: GlobalRobustness,
    net: Network,
    j: int,
    xa: np.ndarray,
    xb: np.ndarray,
    radius: float,
    timeout: float,
    config: DispatchConfig,
) -> PairMilp:
    r"""Refutation only: the pair MILP of ``(c, j)`` on a small box around a near-miss pair ``(xa, xb)``.

    Both copies range over ``B = [min(xa, xb) − r, max(xa, xb) + r] ∩ D`` (``r = radius``), so their
    big-M bounds (CROWN over ``B``) and the twin bounds are much tighter than over ``D`` and the MILP is
    exact on ``B × B``: it finds the most violating pair there when one exists.  ``B ⊆ D``, so a pair
    of ``B`` is a pair of ``D``: a falsified result is replayed on onnxruntime against ``prop`` itself
    (the full domain) before it is returned.  Any other outcome proves nothing about ``D`` and is
    returned as ``open``.
    """
    lo_d, hi_d = prop.domain_lo, prop.domain_hi
    blo = np.maximum(lo_d, np.minimum(xa, xb) - radius)
    bhi = np.minimum(hi_d, np.maximum(xa, xb) + radius)
    local = GlobalRobustness(prop.delta, prop.kappa, blo, bhi, prop.norm, prop.label)
    pm = _pair_milp(local, net, j, timeout, config)
    if pm.how == "falsified" and pm.cex is not None and pm.cex.x2 is not None:
        rep = replay(prop, {"a": net, "b": net}, {"a": pm.cex.x, "b": pm.cex.x2})
        if rep.ok:
            return replace(pm, cex=rep.counterexample, message=f"local MILP: {rep.reason}")
    return replace(pm, how="open" if pm.how != "fallback" else "fallback", cex=None)


Pair = tuple[int, int]


class _PairMilps:
    r"""The pair MILPs of stages 3–4 of :func:`decide_global`, in solver children of one
    :class:`~verifier.backends.solve.SolveGroup` beside the LP tightening in this process.

    Stage 3 (:meth:`submit`, :meth:`poll`)
        After an LP step the pair's MILP is *submitted* with that step's bounds: they go into
        ``queue`` — one entry per pair, newer bounds replacing older ones and keeping the entry's
        place — and :meth:`poll` starts the entries while fewer than ``split.milp_jobs`` children
        run, the pair that has waited longest first (usually one whose LP is over: its bounds are
        final).  Each gets ``split.milp_background`` seconds (capped by the deadline).  Newer bounds
        of a pair whose own MILP is running wait too, and *replace* that MILP (cancel, restart in the
        slot it holds) once it has run ``split.milp_probe`` seconds — the time the sequential schedule
        gave each step's MILP — or start as soon as it ends open: a MILP is not killed just before it
        would answer (on small networks a MILP takes about as long as an LP step), and one that does
        not answer quickly is moved to the tighter model (a later step's bounds are never looser,
        :func:`tighten_pair` intersects).  :meth:`poll` (non-blocking; the caller calls it between
        steps, between pairs and from the ``goal`` of :func:`tighten_pair`) applies the finished jobs
        — closed → ``close(c, j, "milp")``; falsified → ``falsified`` is set (the caller returns
        FALSIFIED); fallback → no more stage-3 MILPs for the pair, the dispatcher's path in stage 4;
        open → noted for stage 4 — then does the due replacements and fills the free slots.
        ``split.milp_jobs = 0``: the MILP blocks for ``split.milp_probe`` seconds instead (the
        sequential schedule).
    Stage 4 (:meth:`second_pass`)
        The pairs still open after every LP step, ``milp_jobs + 1`` MILPs at a time (this process only
        waits now), each started with ``min(left, left · slots / n)`` seconds (``n``: pairs waiting or
        running): the time left shared among them.  A stage-3 MILP still running counts as its pair's
        (if its bounds are not the final ones it is replaced by a second-pass MILP on them once
        ``milp_probe`` seconds old, as in stage 3); if it ends open the pair waits for a second-pass
        MILP like the others.  A second-pass MILP is skipped when the pair's last MILP on the same
        (final) bounds ended open with at least that budget (:attr:`_PairMilpRun.rerun_above`: a
        deterministic rerun with no more time retraces the same search).  Fallback pairs are decided
        by the dispatcher's feasibility path (:func:`verifier.dispatch.verify`) in this process, with
        ``left / n`` seconds.

    Soundness is that of :func:`_pair_milp`: every MILP is built with bounds that hold on every
    violating pair through ``j`` (any step's bounds do, older or newer), so whichever run closes a
    pair proves it; FALSIFIED only with a replayed pair.  ``close`` is the caller's (it records the
    pair's end in ``ended``, which is shared): a pair is closed exactly once, and its job and queue
    entry are dropped when something else closed it (:meth:`cancel`).
    """

    def __init__(
        self,
        group: SolveGroup,
        net: Network,
        props: Mapping[int, GlobalRobustness],
        config: DispatchConfig,
        split: GlobalSplitConfig,
        deadline: float,
        close: Callable[[int, int, str], None],
        ended: set[Pair],
        tightened: Mapping[Pair, Any],
    ) -> None:
        self.group, self.net, self.props, self.config, self.split = group, net, props, config, split
        self.deadline, self.close, self.ended, self.tightened = deadline, close, ended, tightened
        self.runs: dict[Pair, _PairMilpRun] = {}  # a child running (one per pair)
        self.second_runs: set[Pair] = set()  # … of them, those started by the second pass
        self.queue: dict[Pair, Any] = {}  # pair → its newest bounds without a MILP yet
        self.fallback: set[Pair] = set()  # not a Gurobi model: the dispatcher's path in stage 4
        self.last_open: dict[Pair, tuple[Any, float]] = {}  # (bounds, rerun_above) of its last open run
        self.falsified: tuple[Pair, PairMilp] | None = None
        self.waiting: list[Pair] | None = None  # stage 4: pairs waiting for their second-pass MILP
        self.counts = {"background": 0, "replaced": 0, "second": 0, "reruns_skipped": 0}

    # ---- runs ----------------------------------------------------------------------------------
    def _begin(self, pair: Pair, bounds: Any, budget: float, second: bool = False) -> bool:
        """Start ``pair``'s MILP with ``bounds`` (``None``: the prop's own); False when none started
        (fallback, or no time: the run's end is applied at once)."""
        c, j = pair
        prop = self.props[c] if bounds is None else replace(self.props[c], pair_bounds=bounds)
        run = _PairMilpRun(prop, self.net, j, budget, self.config, self.split)
        if run.result is None and run.start(self.group, tag=pair) is not None:
            self.runs[pair] = run
            if second:
                self.second_runs.add(pair)
            self.counts["second" if second else "background"] += 1
            return True
        self._ended(pair, run, second)
        return False

    def _stop(self, pair: Pair) -> None:
        run = self.runs.pop(pair, None)
        self.second_runs.discard(pair)
        if run is not None and run.job is not None:
            self.group.cancel(run.job)

    def cancel(self, pair: Pair) -> None:
        """Drop ``pair``'s running MILP and queue entry (it was closed otherwise)."""
        self.queue.pop(pair, None)
        self._stop(pair)

    def _answer(self, job: SolveJob) -> None:
        pair = job.tag
        run = self.runs.get(pair)
        if run is None or run.job is not job:  # a cancelled run's (cannot happen: cancel forgets it)
            return
        if run.collect(self.group, job) is None:
            return  # cuts added: the next round runs
        del self.runs[pair]
        second = pair in self.second_runs
        self.second_runs.discard(pair)
        self._ended(pair, run, second)

    def _ended(self, pair: Pair, run: _PairMilpRun, second: bool) -> None:
        """Apply the end of ``pair``'s run (``second``: a second-pass run; class docstring)."""
        pm = run.result
        assert pm is not None
        if pair in self.ended:
            return
        if pm.how == "closed":
            self.queue.pop(pair, None)
            self.close(*pair, "milp")
        elif pm.how == "falsified":
            if self.falsified is None:
                self.falsified = (pair, pm)
        elif pm.how == "fallback":
            self.queue.pop(pair, None)
            self.fallback.add(pair)
            if self.waiting is not None and pair not in self.waiting:
                self.waiting.insert(0, pair)  # the dispatcher's path, next
        else:
            self.last_open[pair] = (run.prop.pair_bounds, run.rerun_above)
            if self.waiting is not None:
                self.queue.pop(pair, None)
                if second:
                    self.close(*pair, "open")
                elif pair not in self.waiting:
                    self.waiting.append(pair)  # a stage-3 MILP ended open: its second-pass MILP

    def _replace_due(self) -> list[Pair]:
        """The pairs whose running MILP newer bounds may replace now (it has run ``milp_probe`` s)."""
        now = time.perf_counter()
        return [p for p in self.queue if p in self.runs and now - self.runs[p].t0 >= self.split.milp_probe]

    def _next_due(self) -> float:
        """When the next replacement falls due (``inf``: none pending)."""
        t0s = [self.runs[p].t0 for p in self.queue if p in self.runs]
        return min(t0s) + self.split.milp_probe if t0s else math.inf

    # ---- stage 3 -------------------------------------------------------------------------------
    def poll(self) -> None:
        """Apply the finished jobs (non-blocking), replace the MILPs that are due, fill free slots."""
        for job in self.group.wait(until=time.perf_counter()):
            self._answer(job)
        if self.falsified is not None or not self.queue:
            return
        left = self.deadline - time.perf_counter()
        if left <= 0.5:
            self.queue.clear()
            return
        budget = min(self.split.milp_background, left)
        for pair in self._replace_due():
            self._stop(pair)
            self.counts["replaced"] += 1
            self._begin(pair, self.queue.pop(pair), budget)
        while len(self.runs) < self.split.milp_jobs:
            pair = next((p for p in self.queue if p not in self.runs), None)
            if pair is None:
                break
            self._begin(pair, self.queue.pop(pair), budget)

    def submit(self, pair: Pair, bounds: Any) -> None:
        """``pair``'s LP step produced ``bounds``: run its MILP with them (class docstring)."""
        self.poll()  # a running MILP of this pair may have just answered
        if pair in self.fallback or pair in self.ended or self.falsified is not None:
            return
        left = self.deadline - time.perf_counter()
        if left <= 0.5:
            return
        if self.split.milp_jobs <= 0:  # blocking: the sequential schedule
            if self._begin(pair, bounds, min(self.split.milp_probe, left)):
                while pair in self.runs:
                    for job in self.group.wait():
                        self._answer(job)
            return
        self.queue[pair] = bounds
        self.poll()

    # ---- stage 4 -------------------------------------------------------------------------------
    def _verify(self, pair: Pair, budget: float) -> None:
        """The dispatcher's feasibility path for a pair that is not a Gurobi model, in this process."""
        c, j = pair
        prop = self.props[c]
        if pair in self.tightened:
            prop = replace(prop, pair_bounds=self.tightened[pair])
        t = time.perf_counter()
        r = verify(
            prop,
            {"a": self.net, "b": self.net},
            replace(self.config, timeout=budget, quick_check=False, samples=0),
            EncodeOptions(self.config.bounds, target=j),
        )
        how = {Verdict.VERIFIED: "closed", Verdict.FALSIFIED: "falsified"}.get(r.verdict, "open")
        if how == "closed":
            self.close(c, j, "milp")
        elif how == "falsified":
            pm = PairMilp(how, None, time.perf_counter() - t, r.counterexample, r.message)
            self.falsified = self.falsified or (pair, pm)
        else:
            self.close(c, j, "open")

    def _share(self) -> tuple[float, int]:
        """The time left and the number of pairs it is shared among: those waiting or running, and the
        one about to start."""
        assert self.waiting is not None
        return self.deadline - time.perf_counter(), len(self.waiting) + len(self.runs) + 1

    def second_pass(self, pairs: Sequence[Pair]) -> tuple[Pair, PairMilp] | None:
        """Stage 4 (class docstring); every pair of ``pairs`` is closed (or left open) on return,
        unless a pair was falsified: then that ``(pair, PairMilp)`` is returned."""
        slots = max(self.split.milp_jobs, 0) + 1
        # what is still queued is final bounds: pairs without a MILP wait below; a pair whose stage-3
        # MILP runs on older bounds keeps its entry (replaced when due)
        self.queue = {p: b for p, b in self.queue.items() if p in self.runs}
        self.waiting = waiting = [p for p in pairs if p not in self.ended and p not in self.runs]
        while self.falsified is None:
            for pair in self._replace_due():
                del self.queue[pair]
                self._stop(pair)
                self.counts["replaced"] += 1
                left, n = self._share()
                self._begin(pair, self.tightened.get(pair), min(left, max(left * slots / n, 0.5)), True)
            while waiting and len(self.runs) < slots and self.falsified is None:
                pair = waiting.pop(0)
                left, n = self._share()
                if not self.split.milp or left <= 0.5:
                    self.close(*pair, "open")
                    continue
                if pair in self.fallback:
                    self._verify(pair, max(left / n, 0.5))
                    continue
                share = min(left, max(left * slots / n, 0.5))
                bounds = self.tightened.get(pair)
                last = self.last_open.get(pair)
                if last is not None and last[0] is bounds and share <= last[1]:
                    self.counts["reruns_skipped"] += 1
                    self.close(*pair, "open")
                    continue
                self._begin(pair, bounds, share, second=True)
            if not self.runs or time.perf_counter() >= self.deadline:
                break
            for job in self.group.wait(until=min(self.deadline, self._next_due())):
                self._answer(job)
        if self.falsified is not None:
            return self.falsified
        for pair in pairs:
            if pair not in self.ended:
                self.cancel(pair)
                self.close(*pair, "open")
        return None


def decide_global(
    net: Network,
    delta: float,
    kappa: float,
    domain: tuple[np.ndarray, np.ndarray],
    config: DispatchConfig,
    norm: str = "inf",
    classes: Sequence[int] | None = None,
    split: GlobalSplitConfig = GlobalSplitConfig(),
    known_closed: Mapping[tuple[int, int], float] | None = None,
) -> Result:
    """Global two-copy κ-confidence δ-robustness by ``(class, competitor)`` pairs (module docstring).

    Returns a :class:`Result`: VERIFIED when every pair is closed, FALSIFIED with a replayed pair,
    else TIMEOUT (time limit) or UNKNOWN.  ``stats`` has ``pairs`` (per-pair :class:`PairStatus` as
    dicts), counts per stage, ``open`` (pairs left) and ``closed`` (``[c, j]`` of every pair closed).

    ``known_closed`` maps ``(c, j)`` to a δ' at which that pair was closed for the same network, κ,
    domain and norm: the pair is closed at every ``δ ≤ δ'`` too (its violating pairs at δ are a subset
    of those at δ'), so it is not redone (``how = "cache"``).
    """
    t0 = time.perf_counter()
    deadline = t0 + config.timeout
    lo, hi = (np.asarray(d, dtype=np.float64).reshape(-1) for d in domain)
    if lo.size == 1 and net.n_inputs > 1:
        lo, hi = np.full(net.n_inputs, lo[0]), np.full(net.n_inputs, hi[0])
    nets = {"a": net, "b": net}
    todo = list(classes) if classes is not None else list(range(net.n_outputs))
    props = {c: GlobalRobustness(delta, kappa, lo, hi, norm, c) for c in todo}
    statuses: list[PairStatus] = []
    ended: set[tuple[int, int]] = set()  # the pairs in statuses
    milp_runs: dict[str, int] = {}  # how many pair MILPs stages 3–4 started (_PairMilps.counts)
    n_couples = 0  # LP runs that served a couple (c, j) / (j, c)

    def elapsed() -> float:
        return time.perf_counter() - t0

    def finish(verdict: Verdict, backend: str, msg: str, cex: Counterexample | None = None) -> Result:
        counts: dict[str, int] = {}
        for s in statuses:
            counts[s.how] = counts.get(s.how, 0) + 1
        stats = {
            "pairs": [s.__dict__ for s in statuses],
            "closed_by": counts,
            "open": [(s.c, s.j) for s in statuses if s.how == "open"],
            "closed": [[s.c, s.j] for s in statuses if s.how in ("bounds", "lp", "milp", "cache")],
        }
        if milp_runs:
            stats["milp_runs"] = dict(milp_runs)
        if n_couples:
            stats["lp_couples"] = n_couples
        return Result(verdict, backend, elapsed(), message=msg, counterexample=cex, stats=stats)

    # 1. bounds: one set of twin bounds over D for every class
    tb = props[todo[0]].twin(net) if todo else None
    open_pairs: list[tuple[int, int]] = []
    excess: dict[tuple[int, int], float] = {}

    def close(c: int, j: int, how: str) -> None:
        """Record how pair ``(c, j)`` ended (closed by ``how``, falsified, or left open)."""
        statuses.append(PairStatus(c, j, how, excess[(c, j)], elapsed()))
        ended.add((c, j))

    for c in todo:
        p = props[c]
        targets = p.open_targets(net, tb)
        pm = p.pair_margins(net, tb)
        for j in range(net.n_outputs):
            if j == c:
                continue
            excess[(c, j)] = float(pm[j] - p.margin)
            if j in targets:
                open_pairs.append((c, j))
            else:
                close(c, j, "bounds")
    if known_closed:
        cached = [cj for cj in open_pairs if known_closed.get(cj, -math.inf) >= delta]
        for c, j in cached:
            close(c, j, "cache")
        done = set(cached)
        open_pairs = [cj for cj in open_pairs if cj not in done]
    if not open_pairs:
        return finish(
            Verdict.VERIFIED,
            "twin",
            "every (class, competitor) pair closed by CROWN / twin bounds"
            + (" or closed at a larger δ" if known_closed else ""),
        )
    # 2. search: a cheap round over every class with open pairs, then a larger one, closest first
    closeness: dict[int, float] = {}
    open_set = set(open_pairs)
    near: list[tuple[float, int, int, np.ndarray, np.ndarray]] = []  # (score, c, j, x, x')
    if config.samples > 0:
        cls = sorted({c for c, _ in open_pairs})
        search_deadline = t0 + split.search_fraction * config.timeout
        for batch, steps, first in ((72, 150, True), (256, 400, False)):
            order = cls if first else sorted(cls, key=lambda c: -closeness.get(c, -np.inf))
            for c in order:
                if not first and time.perf_counter() > search_deadline:
                    break
                found: list[tuple[float, int, np.ndarray, np.ndarray]] = []
                targets = [j for cc, j in open_pairs if cc == c]  # rows only for the open pairs
                rep, best = search_pairs(
                    props[c],
                    nets,
                    "no pair",
                    batch=batch,
                    steps=steps,
                    seed=config.seed,
                    near=found,
                    targets=targets,
                )
                near.extend((sc, c, j, xa_, xb_) for sc, j, xa_, xb_ in found if (c, j) in open_set)
                closeness[c] = max(best, closeness.get(c, -np.inf))
                if rep.ok:
                    return finish(
                        Verdict.FALSIFIED,
                        "attack",
                        f"class {c}: violating pair found by gradient search; replayed",
                        rep.counterexample,
                    )
    # 2b. refutation: exact MILPs on small boxes around the closest near misses of the search
    if split.local_milp > 0 and norm == "inf" and near:
        best_of: dict[tuple[int, int], tuple[float, int, int, np.ndarray, np.ndarray]] = {}
        for item in near:
            key = (item[1], item[2])
            if key not in best_of or item[0] > best_of[key][0]:
                best_of[key] = item
        ranked = sorted(best_of.values(), key=lambda it: -it[0])[: split.local_milp]
        t_local = time.perf_counter() + split.local_fraction * (deadline - time.perf_counter())
        n_runs = len(ranked) * len(split.local_radii)
        runs = [(r, it) for r in split.local_radii for it in ranked]
        for n_left, (radius, (_, c, j, xa_, xb_)) in zip(range(n_runs, 0, -1), runs):
            left = t_local - time.perf_counter()
            if left <= 0.2:
                break
            budget = min(split.local_time, left / n_left * len(split.local_radii))
            pm = _local_pair_milp(props[c], net, j, xa_, xb_, radius, budget, config)
            if pm.how == "falsified":
                close(c, j, "falsified")
                return finish(
                    Verdict.FALSIFIED,
                    "local-milp",
                    f"class {c}, competitor {j}: {pm.message}",
                    pm.cex,
                )
            if pm.how == "fallback":
                break
    # 3–4. pair by pair (easiest first when proving, likeliest violation first when only refuting):
    #      LP tightening step by step with the pair MILPs in solver children beside it (from step
    #      split.milp_after on), then the LP-seeded search; pairs still open get a second pass with the
    #      time left shared among them (_PairMilps)
    open_pairs.sort(key=lambda cj: excess[cj] if split.obbt_plan else -excess[cj])
    tightened: dict[tuple[int, int], Any] = {}
    L = len(net.affines) - 1
    with SolveGroup() as group:
        milps = _PairMilps(group, net, props, config, split, deadline, close, ended, tightened)
        milp_runs = milps.counts

        def refuted() -> Result | None:
            """FALSIFIED when a pair MILP replayed a pair (the group's block kills the other children)."""
            if milps.falsified is None:
                return None
            (c, j), pm = milps.falsified
            close(c, j, "falsified")
            return finish(
                Verdict.FALSIFIED,
                "milp",
                f"class {c}, competitor {j}: MILP pair replayed on onnxruntime ({pm.message})",
                pm.cex,
            )

        def lp_steps(c: int, j: int) -> Result | None:
            """The LP tightening steps of pair ``(c, j)`` — and of ``(j, c)`` with it when that pair is
            open too (the couple LP, rows (R) of :mod:`encoders.bounds.pair_lp`; ``(j, c)`` reads the
            bounds with the copies exchanged) — each step's bounds closing a pair by its twin bound or
            going to its MILP.  FALSIFIED when a MILP replayed a pair."""
            nonlocal n_couples
            members = [(c, j)]
            if split.couples and (j, c) in open_set and (j, c) not in ended and (j, c) not in lp_done:
                members.append((j, c))
                n_couples += 1
            lp_done.update(members)
            m = props[c].margin  # ln(κ/(1−κ)), the same for every class

            seen: list[Any] = [None, {}]  # the bounds last measured, and their measures per pair

            def measure(b: Any, pair: tuple[int, int]) -> tuple[Any, float]:
                """``pair``'s bounds from the run's bounds ``b`` (``(j, c)``: copies exchanged) and its
                twin-bound excess ``max Δ − m`` (< 0 proves it), each computed once per ``b`` (the
                step's last trial is both the goal's and the step's result)."""
                if seen[0] is not b:
                    seen[:] = [b, {}]
                if pair not in seen[1]:
                    v = b if pair == (c, j) else swap_copies(net, b, lo, hi, delta)
                    seen[1][pair] = (v, float(pair_margin_upper(net, v.twin, pair[0])[pair[1]] - m))
                return seen[1][pair]

            def goal(b: Any) -> bool:
                """Stop the LP step: every member is proved by its twin bound or closed by its MILP
                (or a MILP refuted a pair)."""
                if all(pair in ended or measure(b, pair)[1] < 0.0 for pair in members):
                    return True
                milps.poll()
                return all(pair in ended for pair in members) or milps.falsified is not None

            pb = _initial(net, lo, hi, delta)
            for step_no, (plan, per_copy) in enumerate(split.obbt_plan if split.lp else ()):
                if time.perf_counter() > deadline or all(pair in ended for pair in members):
                    break
                layers = [k % L for k in plan] if plan else None
                pb = tighten_pair(
                    net,
                    pb,
                    lo,
                    hi,
                    delta,
                    c,
                    kappa,
                    j,
                    deadline,
                    layers=layers,
                    per_copy=per_copy,
                    goal=goal,
                    couple=len(members) == 2,
                )
                if (res := refuted()) is not None:
                    return res
                for pair in members:
                    if pair in ended:  # closed by its MILP meanwhile
                        continue
                    b, ex = measure(pb, pair)
                    tightened[pair] = b
                    excess[pair] = ex
                    if ex < 0.0:
                        milps.cancel(pair)
                        close(*pair, "lp")
                    elif split.milp and step_no >= split.milp_after:
                        milps.submit(pair, b)
                        if (res := refuted()) is not None:
                            return res
            return None

        second: list[tuple[int, int]] = []
        lp_done: set[tuple[int, int]] = set()  # pairs whose LP steps have run (alone or as a couple)
        for c, j in open_pairs:
            milps.poll()
            if (res := refuted()) is not None:
                return res
            if (c, j) in ended:
                continue
            if norm != "inf" or time.perf_counter() > deadline:
                second.append((c, j))
                continue
            if (c, j) not in lp_done and (res := lp_steps(c, j)) is not None:
                return res
            if (c, j) in ended:
                continue
            if split.lp and split.lp_search and config.samples > 0 and time.perf_counter() < deadline:
                pb = tightened.get((c, j)) or _initial(net, lo, hi, delta)
                start = _lp_start(net, pb, lo, hi, delta, c, j, kappa)
                if start is not None:
                    rep, _ = search_pairs(
                        props[c],
                        nets,
                        "no pair",
                        batch=32,
                        steps=150,
                        step=0.005,
                        seed=config.seed,
                        start=start,
                        targets=[j],
                    )
                    if rep.ok:
                        close(c, j, "falsified")
                        return finish(
                            Verdict.FALSIFIED,
                            "attack",
                            f"class {c}, competitor {j}: violating pair found from the LP relaxation's "
                            "optimum; replayed",
                            rep.counterexample,
                        )
            second.append((c, j))
        # second pass: the MILP of every pair still open, the time left shared among them
        milps.poll()
        if (res := refuted()) is not None:
            return res
        milps.second_pass(second)
        if (res := refuted()) is not None:
            return res
    n_open = sum(s.how == "open" for s in statuses)
    if n_open == 0:
        return finish(
            Verdict.VERIFIED, "twin+lp+milp", f"all {len(statuses)} (class, competitor) pairs closed"
        )
    verdict = Verdict.TIMEOUT if time.perf_counter() >= deadline - 0.5 else Verdict.UNKNOWN
    return finish(
        verdict, config.backend, f"{n_open} of {len(statuses)} (class, competitor) pairs still open"
    )


_INITIAL_CACHE: dict[tuple[int, float, bytes, bytes], Any] = {}


def _initial(net: Network, lo: np.ndarray, hi: np.ndarray, delta: float) -> Any:
    """:func:`initial_pair_bounds`, memoised per (network, δ, domain) within one process (a pure function)."""
    key = (id(net), float(delta), lo.tobytes(), hi.tobytes())
    if key not in _INITIAL_CACHE:
        if len(_INITIAL_CACHE) > 16:
            _INITIAL_CACHE.clear()
        _INITIAL_CACHE[key] = initial_pair_bounds(net, lo, hi, delta)
    return _INITIAL_CACHE[key]


# ==================================================================================================
# the certified global radius
# ==================================================================================================
@dataclass(frozen=True)
class ClassRadius:
    """For one class (or overall): ``lower`` = largest δ proved (0: none), ``upper`` = smallest δ
    falsified (``inf``: none) with its replayed ``pair``; ``probes`` lists ``(δ, verdict, seconds)``."""

    lower: float
    upper: float
    pair: Counterexample | None = None
    probes: tuple[tuple[float, str, float], ...] = ()

    @property
    def gap(self) -> float:
        """``(upper − lower)/upper`` (``inf`` when nothing was falsified)."""
        return (self.upper - self.lower) / self.upper if math.isfinite(self.upper) else math.inf

    def to_json(self) -> dict[str, Any]:
        return {
            "lower": self.lower,
            "upper": self.upper if math.isfinite(self.upper) else None,
            "gap": self.gap if math.isfinite(self.gap) else None,
            "pair": self.pair.to_json() if self.pair is not None else None,
            "probes": [list(p) for p in self.probes],
        }


@dataclass(frozen=True)
class GlobalRadius:
    """The certified global radius for one κ: overall and (when asked) per class."""

    kappa: float
    norm: str
    overall: ClassRadius
    per_class: dict[int, ClassRadius] = field(default_factory=dict)
    time_s: float = 0.0
    complete: bool = False  # the gap target was reached before the budget ran out

    def to_json(self) -> dict[str, Any]:
        return {
            "kappa": self.kappa,
            "norm": self.norm,
            "overall": self.overall.to_json(),
            "per_class": {str(c): r.to_json() for c, r in self.per_class.items()},
            "time_s": self.time_s,
            "complete": self.complete,
        }


def _twin_radius(net: Network, kappa: float, lo: np.ndarray, hi: np.ndarray, norm: str, c: int) -> float:
    """The largest δ (bisection, 30 steps) at which the bound stage alone proves class ``c``."""

    def proved(d: float) -> bool:
        return not GlobalRobustness(d, kappa, lo, hi, norm, c).open_targets(net)

    a, b = 0.0, 1e-3
    while proved(b) and b < float(np.max(hi - lo)):
        a, b = b, 2 * b
    if a == 0.0 and not proved(b):
        b0 = b
        for _ in range(30):
            b0 /= 2
            if proved(b0):
                a, b = b0, 2 * b0
                break
        else:
            return 0.0
    for _ in range(20):
        mid = 0.5 * (a + b)
        a, b = (mid, b) if proved(mid) else (a, mid)
    return a


def _class_radius(
    net: Network,
    kappa: float,
    lo: np.ndarray,
    hi: np.ndarray,
    config: DispatchConfig,
    norm: str,
    classes: Sequence[int] | None,
    deadline: float,
    gap: float,
    split: GlobalSplitConfig,
    start: float,
) -> tuple[ClassRadius, bool]:
    """Radius search over the classes in ``classes`` (all when None) as one query (module docstring)."""
    probes: list[tuple[float, str, float]] = []
    lower, upper, pair = start, math.inf, None

    # pairs closed at some δ' (by any probe, decided or not), with the largest such δ': closed at every
    # δ ≤ δ' too (monotone), so later probes below δ' skip them
    closed_at: dict[tuple[int, int], float] = {}

    def probe(d: float, cfg: DispatchConfig, sp: GlobalSplitConfig) -> Result:
        r = decide_global(net, d, kappa, (lo, hi), cfg, norm, classes, sp, known_closed=closed_at)
        probes.append((d, r.verdict.value, round(r.time_s, 3)))
        for c, j in r.stats.get("closed", []):
            closed_at[(c, j)] = max(closed_at.get((c, j), -math.inf), d)
        return r

    # 1. falsification: grow δ by half from the proved radius until a pair replays (search only) …
    # refuting probes: the pair search, one LP per open pair to seed it, and local MILPs around the closest
    # near misses (no tightening, no full MILP)
    search_only = replace(
        split, obbt_plan=(), milp=False, local_milp=max(split.local_milp, 12), local_fraction=0.35
    )
    att_lo = lower  # largest δ at which the search found nothing
    d = max(lower, 1e-3) * 1.5
    width = float(np.max(hi - lo))
    while time.perf_counter() < deadline and d <= width:
        left = deadline - time.perf_counter()
        r = probe(d, replace(config, timeout=max(min(left, config.timeout), 0.5)), search_only)
        if r.verdict is Verdict.FALSIFIED:
            upper, pair = d, r.counterexample
            break
        att_lo = d
        if r.verdict is Verdict.VERIFIED:  # the bounds proved a larger δ on the way
            lower = d
        d *= 1.5
    # … then bisect between the last failed search and the smallest refuted δ (search only; cheap), within
    # a third of the remaining budget
    att_deadline = time.perf_counter() + (deadline - time.perf_counter()) / 3
    while math.isfinite(upper) and time.perf_counter() < att_deadline and upper - att_lo > 0.25 * gap * upper:
        mid = 0.5 * (att_lo + upper)
        left = deadline - time.perf_counter()
        r = probe(mid, replace(config, timeout=max(min(left, config.timeout), 0.5)), search_only)
        if r.verdict is Verdict.FALSIFIED:
            upper, pair = mid, r.counterexample
        else:
            att_lo = mid
            if r.verdict is Verdict.VERIFIED:
                lower = mid
    # 2. proofs: full probes upward from the proved radius, at most 2·gap above it each time; an
    #    undecided probe lowers the ceiling for the next ones
    ceiling = upper
    open_at: dict[float, int] = {}  # pairs left open by the last undecided full probe at this δ
    retry: float | None = None
    while time.perf_counter() < deadline:
        if math.isfinite(upper) and (upper - lower) <= gap * upper:
            break
        left = deadline - time.perf_counter()
        cfg = replace(config, timeout=max(min(left, config.timeout), 0.5))
        if retry is not None:
            # the same δ again: the pairs it closed are skipped (cache), the open ones get the time;
            # no search this time (it ran at this δ already)
            mid, sp, cfg = retry, replace(split, local_milp=0), replace(cfg, samples=0)
        else:
            top = min(upper, ceiling)
            if not math.isfinite(top):
                top = att_lo if att_lo > lower else 2 * max(lower, 1e-3)
            mid = min(0.5 * (lower + top), max(lower, 1e-4) * (1 + 2 * gap))
            if mid - lower <= 1e-3 * max(mid, 1e-12):
                break
            sp = split
        retry = None
        r = probe(mid, cfg, sp)
        if r.verdict is Verdict.VERIFIED:
            lower = mid
            if ceiling <= lower:  # a retried ceiling is proved now: the way up is open again
                ceiling = upper
        elif r.verdict is Verdict.FALSIFIED:
            upper, pair = mid, r.counterexample
        else:
            n_open = len(r.stats.get("open", []))
            if r.verdict is Verdict.TIMEOUT and 0 < n_open < open_at.get(mid, 10**9) and n_open <= 12:
                retry = mid  # it closed pairs and few are left: finish it before bisecting lower
            open_at[mid] = n_open
            ceiling = min(ceiling, mid)
    if lower >= upper:  # monotonicity: a proof above a replayed violation would be a soundness bug
        raise RuntimeError(f"global radius: proved δ={lower} but falsified δ={upper} (soundness bug)")
    done = math.isfinite(upper) and (upper - lower) <= gap * upper
    return ClassRadius(lower, upper, pair, tuple(probes)), done


def certified_global_radius(
    net: Network,
    kappa: float,
    domain: tuple[np.ndarray, np.ndarray],
    config: DispatchConfig | None = None,
    norm: str = "inf",
    budget: float = 600.0,
    gap: float = 0.1,
    per_class: bool = False,
    split: GlobalSplitConfig = GlobalSplitConfig(),
) -> GlobalRadius:
    """For one κ: the largest δ proved and the smallest δ falsified (module docstring).

    Parameters
    ----------
    config
        Dispatcher settings; ``config.timeout`` caps each δ probe.
    budget
        Seconds for the whole search (anytime: the interval reached when it runs out is returned).
    gap
        Stop when ``upper − lower ≤ gap · upper``.
    per_class
        Also search each class's radius separately (the budget is shared; the overall interval is then
        ``[min lower_c, min upper_c]``, which may be tighter than the joint search).

    The certifier can call this with its global budget and use ``result.overall.lower`` as the radius
    of the global query: every sample whose required radius is at most it is covered.
    """
    t0 = time.perf_counter()
    deadline = t0 + budget
    config = config if config is not None else DispatchConfig(timeout=60.0)
    lo, hi = (np.asarray(d, dtype=np.float64).reshape(-1) for d in domain)
    if lo.size == 1 and net.n_inputs > 1:
        lo, hi = np.full(net.n_inputs, lo[0]), np.full(net.n_inputs, hi[0])
    classes = list(range(net.n_outputs))
    twin = {c: _twin_radius(net, kappa, lo, hi, norm, c) for c in classes}
    results: dict[int, ClassRadius] = {}
    if per_class:
        for n_left, c in zip(range(len(classes), 0, -1), classes):
            dl = time.perf_counter() + (deadline - time.perf_counter()) / n_left
            results[c], _ = _class_radius(net, kappa, lo, hi, config, norm, [c], dl, gap, split, twin[c])
        lower = min(r.lower for r in results.values())
        worst = min(results, key=lambda c: results[c].upper)
        overall = ClassRadius(lower, results[worst].upper, results[worst].pair, ())
        done = math.isfinite(overall.upper) and overall.upper - overall.lower <= gap * overall.upper
    else:
        overall, done = _class_radius(
            net, kappa, lo, hi, config, norm, None, deadline, gap, split, min(twin.values())
        )
    return GlobalRadius(kappa, norm, overall, results, time.perf_counter() - t0, done)
