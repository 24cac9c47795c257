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
3. **pair by pair** (L∞), easiest pairs first, each finished before the next:

   a. *LP tightening* — optimisation-based bound tightening of the difference bounds
      ``z(x) − z(x')`` (and, in the last step, of each copy's own bounds) on the LP relaxation of the
      violating pairs *through j* (:func:`encoders.bounds.pair_lp.tighten_pair`: copy a confident,
      copy b's ``z_j ≥ z_c``, twin rows; every bound certified by weak duality), step by step
      (``obbt_plan``); the twin bound ``max Δ_j`` recomputed from the tightened bounds proves the
      pair when it drops below ``m``;
   b. after each step, a short *pair MILP* (:func:`_pair_milp`: ``min z_c(x') − z_j(x')`` over the
      two-copy encoding with the tightened bounds, on Gurobi through the one solve path; closed when
      the proven bound is ≥ 1e-3 or the model is infeasible) — a MILP with good bounds often closes
      in a second what further LP steps would take tens of seconds for;
   c. the LP optimum of ``max z_j(x') − z_c(x')`` seeds a local pair search;
4. **second pass** — the pair MILP of every pair still open, the time left shared among them (the
   dispatcher's feasibility MILP, :func:`verifier.dispatch.verify`, when the model is not a Gurobi
   model, e.g. over the size-limited licence).

Soundness: every bound used in 3–4 holds for every violating pair through ``j``, so a pair is closed
only when no violating pair through ``j`` exists (modulo the MILP solver's tolerances, as for every
MILP verdict; see :func:`_pair_milp`); FALSIFIED only with a replayed pair.

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
from collections.abc import Mapping, Sequence
from dataclasses import dataclass, field, replace
from typing import Any

import numpy as np

from encoders.bounds.pair_lp import PairLP, initial_pair_bounds, tighten_pair
from encoders.bounds.twin import pair_margin_upper
from encoders.network import Network
from encoders.program import Program
from encoders.properties import EncodeOptions, GlobalRobustness

from ..backends.solve import choose_backend, solve
from ..dispatch import DispatchConfig, verify
from ..replay import polish, replay, search_pairs
from ..results import Counterexample, Result, SolveStatus, Verdict

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
    milp_after, milp_probe
        After tightening step ``milp_after`` (0 = the first) and every later one, the pair's MILP
        (:func:`_pair_milp`) gets ``milp_probe`` seconds; pairs still open after every step get a
        second MILP with the time left shared among them.
    tol
        The proven minimum of ``z_c(x') − z_j(x')`` that closes a pair (:func:`_pair_milp`).
    gurobi_params
        Extra Gurobi parameters of the pair MILPs, as ``(name, value)`` pairs.
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
    milp_probe: float = 2.0
    tol: float = 1e-3
    gurobi_params: tuple[tuple[str, Any], ...] = ()
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
    tol: float = PAIR_TOL,
    gurobi_params: Mapping[str, Any] | None = None,
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

    Refutation: an incumbent with objective ``< 0`` is a candidate pair; it counts only when it replays
    on onnxruntime (:func:`verifier.replay.replay`, then :func:`~verifier.replay.polish`).  A candidate
    whose copy a is not really κ-confident adds the tangent cut at its logits
    (:meth:`GlobalRobustness.refine`) and the MILP is solved again.

    The solve goes through :func:`verifier.backends.solve.solve` (a child process with the hard time
    limit).  Gurobi stops as soon as the bound reaches ``tol`` (``BestBdStop``) or an incumbent is
    below ``−tol`` (``BestObjStop``).  When the program is over Gurobi's licence (or Gurobi is not
    the configured backend) the result is ``fallback``: the caller uses the dispatcher's feasibility
    path instead.
    """
    t0 = time.perf_counter()
    nets = {"a": net, "b": net}
    prog = pair_program(prop, net, j, config.bounds)
    st = prog.stats()
    stats: dict[str, Any] = {"variables": st["milp_variables"], "binaries": st["binaries"]}
    if choose_backend(config.backend, prog, milp_only=True) != "gurobi":
        return PairMilp("fallback", None, time.perf_counter() - t0, message="not a Gurobi model", stats=stats)
    params = {"params": {**dict(gurobi_params or {}), "BestBdStop": tol, "BestObjStop": -tol}}
    bound: float | None = None
    msg = ""
    for round_no in range(config.max_refinements + 1):
        left = timeout - (time.perf_counter() - t0)
        if left <= 0.05:
            break
        out = solve("gurobi", prog, left, config.threads, params=params, in_process=config.in_process)
        stats.update(rounds=round_no + 1, nodes=out.stats.get("nodes"), status=out.status.value)
        if out.stats.get("licence_limit"):
            return PairMilp("fallback", None, time.perf_counter() - t0, message=out.message, stats=stats)
        if out.status is SolveStatus.UNSAT:
            return PairMilp("closed", math.inf, time.perf_counter() - t0, message="infeasible", stats=stats)
        if out.bound is not None:
            bound = out.bound if bound is None else max(bound, out.bound)
            if out.bound >= tol:
                return PairMilp("closed", out.bound, time.perf_counter() - t0, message="bound", stats=stats)
        if out.assignment is None or out.objective is None or out.objective >= 0.0:
            msg = out.message or out.status.value
            break
        xs = {ns: np.asarray(out.assignment)[prog.blocks[ns]["input"]] for ns in ("a", "b")}
        rep = replay(prop, nets, xs)
        if not rep.ok:
            pol = polish(prop, nets, xs)
            rep = pol if pol.ok else rep
        if rep.ok:
            dt = time.perf_counter() - t0
            return PairMilp("falsified", bound, dt, rep.counterexample, rep.reason, stats)
        cuts = prop.refine(prog, out.assignment)
        if not cuts:
            msg = f"candidate rejected: {rep.reason}"
            break
        prog.rows.extend(cuts)
    return PairMilp("open", bound, time.perf_counter() - t0, message=msg, stats=stats)


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
        return Result(verdict, backend, elapsed(), message=msg, counterexample=cex, stats=stats)

    # 1. bounds: one set of twin bounds over D for every class
    tb = props[todo[0]].twin(net) if todo else None
    open_pairs: list[tuple[int, int]] = []
    excess: dict[tuple[int, int], float] = {}

    def close(c: int, j: int, how: str) -> None:
        """Record how pair ``(c, j)`` ended (closed by ``how``, falsified, or left open)."""
        statuses.append(PairStatus(c, j, how, excess[(c, j)], elapsed()))

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
                rep, best = search_pairs(
                    props[c], nets, "no pair", batch=batch, steps=steps, seed=config.seed, near=found
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
    #      LP tightening step by step, a short MILP after each step from split.milp_after on, then the
    #      LP-seeded search; pairs still open get a second pass with the time left shared among them
    open_pairs.sort(key=lambda cj: excess[cj] if split.obbt_plan else -excess[cj])
    tightened: dict[tuple[int, int], Any] = {}
    L = len(net.affines) - 1
    pair_how: dict[tuple[int, int], str] = {}

    def run_milp(c: int, j: int, budget: float) -> Result | None:
        """The pair's MILP (:func:`_pair_milp`, or the dispatcher's feasibility path when the program is
        not a Gurobi model); returns a FALSIFIED result, and records ``how`` in ``pair_how``."""
        prop = props[c]
        if (c, j) in tightened:
            prop = replace(prop, pair_bounds=tightened[(c, j)])
        t = time.perf_counter()
        pm = _pair_milp(prop, net, j, budget, config, split.tol, dict(split.gurobi_params))
        if pm.how == "fallback":
            r = verify(
                prop,
                nets,
                replace(config, timeout=max(budget - pm.time_s, 0.5), quick_check=False, samples=0),
                EncodeOptions(config.bounds, target=j),
            )
            pm = PairMilp(
                {Verdict.VERIFIED: "closed", Verdict.FALSIFIED: "falsified"}.get(r.verdict, "open"),
                None,
                time.perf_counter() - t,
                r.counterexample,
                r.message,
            )
        pair_how[(c, j)] = pm.how
        if pm.how == "falsified":
            close(c, j, "falsified")
            return finish(
                Verdict.FALSIFIED,
                "milp",
                f"class {c}, competitor {j}: MILP pair replayed on onnxruntime ({pm.message})",
                pm.cex,
            )
        return None

    second: list[tuple[int, int]] = []
    for c, j in open_pairs:
        if norm != "inf" or time.perf_counter() > deadline:
            second.append((c, j))
            continue
        m_c = props[c].margin
        pb = _initial(net, lo, hi, delta)
        closed = False
        for step_no, (plan, per_copy) in enumerate(split.obbt_plan if split.lp else ()):
            if time.perf_counter() > deadline:
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
                goal=lambda b, c=c, j=j, m_c=m_c: bool(pair_margin_upper(net, b.twin, c)[j] < m_c),
            )
            tightened[(c, j)] = pb
            excess[(c, j)] = float(pair_margin_upper(net, pb.twin, c)[j] - m_c)
            if excess[(c, j)] < 0.0:
                close(c, j, "lp")
                closed = True
                break
            left = deadline - time.perf_counter()
            if split.milp and step_no >= split.milp_after and left > 0.5:
                res = run_milp(c, j, min(split.milp_probe, left))
                if res is not None:
                    return res
                if pair_how[(c, j)] == "closed":
                    close(c, j, "milp")
                    closed = True
                    break
        if closed:
            continue
        if split.lp and split.lp_search and config.samples > 0 and time.perf_counter() < deadline:
            start = _lp_start(net, tightened.get((c, j), pb), lo, hi, delta, c, j, kappa)
            if start is not None:
                rep, _ = search_pairs(
                    props[c], nets, "no pair", batch=32, steps=150, step=0.005, seed=config.seed, start=start
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
    for n_left, (c, j) in zip(range(len(second), 0, -1), second):
        left = deadline - time.perf_counter()
        if not split.milp or left <= 0.5:
            close(c, j, "open")
            continue
        res = run_milp(c, j, max(left / n_left, 0.5))
        if res is not None:
            return res
        if pair_how[(c, j)] == "closed":
            close(c, j, "milp")
        else:
            close(c, j, "open")
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
