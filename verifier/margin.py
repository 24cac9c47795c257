r"""Output properties of one network, decided alternative by alternative (MIPVerify-style margin MILPs).

Query.  An input box ``lo ≤ x ≤ hi`` and an unsafe output region given as a DNF

    ∃ x ∈ [lo, hi]:   OR_k  AND_r  (A_k f(x) ≤ b_k)_r,

which covers :class:`~encoders.properties.OutputDNFProperty` as is and L∞
:class:`~encoders.properties.LocalRobustness` as ``OR_{j≠c} ((e_c − e_j)·y ≤ 0)`` (ties count as
violations, exactly as in the property).  Alternative ``k`` is violated at ``x`` iff its *margin*

    t_k(x) = min_r (b_k − A_k f(x))_r   ≥ 0.

Pipeline of :func:`solve_output_property`
-----------------------------------------
1. CROWN bounds of every layer over the box; alternative ``k`` is impossible when some row has a
   CROWN lower bound ``min_x (A_k f(x))_r > b_{k,r}``.  No possible alternative ⇒ VERIFIED.
2. Falsification: projected sign-gradient ascent (:func:`verifier.replay._ascend`) on each possible
   alternative's own margin, from the box centre and random starts.  Any point with ``t_k ≥ 0`` goes
   through :func:`verifier.replay.replay` (onnxruntime on the ONNX file, exact check); only a
   replayed point makes FALSIFIED.
3. Tighter intermediate bounds by α-CROWN (:func:`verifier.tighten.tighten_bounds`), then α-CROWN on
   each alternative's rows (all relaxed layers optimised) prunes more alternatives.
4. One MILP per remaining alternative, ordered by the attack's best margin (likeliest violation
   first).  Program (exact network encoding up to the last hidden layer by
   :func:`encoders.encode.encode_network`, then)::

       t ≤ b_{k,r} − A_{k,r} (W_L h_{L−1} + b_L)   for every row r,      t ≥ 0,      maximise t

   (a single row needs no ``t``: its margin is the objective and the row itself is ``≥ 0``).
   Feasible ⇔ the alternative is violated somewhere in the box.  *Monotone relaxation of the last
   hidden layer*: let ``g_{r,i}`` be the coefficient of ``h_{L−1,i}`` in row ``r``'s margin,
   ``g_r = −(A_{k,r} W_L)``.  For an unstable neuron with ``g_{r,i} ≤ 0`` in every row, replacing
   ``h = relu(z)`` by its triangle relaxation ``h ≥ 0, h ≥ z, h ≤ s(z − l)`` (no binary) keeps the
   answer exact: any relaxed feasible point has ``h_i ≥ relu(z_i)``, and lowering ``h_i`` to
   ``relu(z_i)`` only raises every margin (coefficients ≤ 0), so ``(x, relu)`` is feasible too, with
   the same ``x``.  Hence infeasible ⇔ no violation, and the ``x`` of any feasible point is a real
   violation in exact arithmetic (replay still has the last word).  This removes the binaries of
   about half of the last layer's unstable neurons.
   Solved by Gurobi when the model fits its licence (``BestObjStop = 0``: stop at the first
   incumbent), else HiGHS (pure feasibility).  Infeasible ⇒ alternative k verified; a solution ⇒
   its ``x`` is replayed (and polished by :func:`verifier.replay.polish` if the float margin came out
   a hair negative) ⇒ FALSIFIED.
5. Every alternative infeasible (or pruned) ⇒ VERIFIED.  Otherwise the first undecided outcome
   (TIMEOUT / UNKNOWN / ERROR).

Soundness rests on: the bounds (CROWN / α-CROWN, rounding-widened; the encoder widens them again by
``BOUND_SLACK``), the exactness of the MILP encoding on those bounds (big-M ReLUs and the monotone
relaxation argument above), the MILP solver's infeasibility claims (as everywhere in this package;
solver tolerances ~1e-6 make it *accept* slightly violated points, i.e. err towards "feasible"), and
replay for FALSIFIED.
"""

from __future__ import annotations

import time
from collections.abc import Sequence
from dataclasses import dataclass, field
from typing import Any

import numpy as np

from encoders.bounds import LayerBounds, crown_bounds, crown_linear
from encoders.encode import BOUND_SLACK, encode_network
from encoders.errors import BackendUnavailableError, LicenseLimitError
from encoders.network import Network, network_from_layers
from encoders.program import Program, Sense, Tag
from encoders.properties import LocalRobustness, OutputDNFProperty

from .replay import ReplayResult, _ascend, polish, replay
from .results import Outcome, Result, SolveStatus, Verdict
from .tighten import AlphaConfig, alpha_crown_lower, tighten_bounds

__all__ = [
    "MarginConfig",
    "Alternative",
    "alternatives_of",
    "encode_alternative",
    "solve_output_property",
]

Alternative = tuple[np.ndarray, np.ndarray]  # (A (k, n_out), b (k,)) meaning A y <= b


@dataclass(frozen=True)
class MarginConfig:
    """Knobs of :func:`solve_output_property` (defaults tuned on mnistfc 256x2).

    Attributes
    ----------
    tighten
        α-CROWN intermediate bounds before the MILPs (step 3).
    alpha, output_alpha
        α-CROWN settings for the intermediate layers and for the alternatives' rows.
    attack_restarts, attack_steps
        Per possible alternative: starts (centre + random) and sign-gradient steps.
    monotone
        Relax last-layer neurons that only lower the margin (module docstring); no binary for them.
    objective
        Gurobi: maximise the margin (else: pure feasibility).
    gurobi_params
        Extra Gurobi parameters for the MILPs (e.g. ``{"MIPFocus": 1}``).
    """

    tighten: bool = True
    alpha: AlphaConfig = AlphaConfig(iterations=20)
    output_alpha: AlphaConfig = AlphaConfig(iterations=40)
    attack_restarts: int = 6
    attack_steps: int = 60
    monotone: bool = True
    objective: bool = True
    gurobi_params: tuple[tuple[str, Any], ...] = ()


# --------------------------------------------------------------------------------------------------
# the query as a list of alternatives
# --------------------------------------------------------------------------------------------------
def alternatives_of(prop: Any, n_out: int) -> list[Alternative] | None:
    """The unsafe region of ``prop`` as ``[(A_k, b_k)]`` (``A_k y ≤ b_k``), or ``None`` if not handled.

    L∞ local robustness (label ``c``): one alternative per ``j ≠ c``: ``(e_c − e_j)·y ≤ 0``.
    """
    if isinstance(prop, OutputDNFProperty):
        return [(np.asarray(A, dtype=np.float64), np.asarray(b, dtype=np.float64).reshape(-1))
                for A, b in prop.alternatives]
    if isinstance(prop, LocalRobustness) and prop.norm == "inf":
        alts = []
        for j in prop.targets(n_out):
            a = np.zeros((1, n_out))
            a[0, prop.label], a[0, j] = 1.0, -1.0
            alts.append((a, np.zeros(1)))
        return alts
    return None


def _box(prop: Any) -> tuple[np.ndarray, np.ndarray]:
    lo, hi = prop.box() if hasattr(prop, "box") else (prop.lo, prop.hi)
    return np.asarray(lo, dtype=np.float64), np.asarray(hi, dtype=np.float64)


# --------------------------------------------------------------------------------------------------
# encoding one alternative
# --------------------------------------------------------------------------------------------------
def _widen(lo: np.ndarray, hi: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    return lo - BOUND_SLACK * (1.0 + np.abs(lo)), hi + BOUND_SLACK * (1.0 + np.abs(hi))


@dataclass(frozen=True, eq=False)
class EncodingInfo:
    """Sizes of one alternative's MILP."""

    binaries_hidden: int
    relaxed_last: int
    exact_last: int
    active_last: int


def encode_alternative(net: Network, lo: np.ndarray, hi: np.ndarray, lower: Sequence[np.ndarray],
                       upper: Sequence[np.ndarray], alt: Alternative, monotone: bool = True,
                       objective: bool = True, ns: str = "net") -> tuple[Program, EncodingInfo]:
    """The MILP whose feasible points are the violations of ``alt`` in the box (module docstring).

    ``lower``/``upper``: sound pre-activation bounds of every affine layer over the box.
    ``prog.blocks[ns]["input"]`` holds the input variables.
    """
    aff = net.affines
    L = len(aff) - 1
    A, b = alt
    prog = Program()
    x = prog.add_vars(f"{ns}.x", lo, hi)
    G = -(A @ aff[L].W)  # margin_r = b_r − A_r b_L + G_r · h_{L−1}
    g0 = b - A @ aff[L].b
    if L == 0:
        terms = [(x, G)]
        info = EncodingInfo(0, 0, 0, 0)
    else:
        zl, zu = _widen(np.asarray(lower[L - 1], float), np.asarray(upper[L - 1], float))
        keep = np.flatnonzero(zu > 0.0)  # stably inactive neurons of the last hidden layer vanish
        trunc = network_from_layers([(a.W, a.b) for a in aff[:L - 1]] + [(aff[L - 1].W[keep], aff[L - 1].b[keep])])
        enc = encode_network(prog, trunc, x, [*lower[:L - 1], lower[L - 1][keep]],
                             [*upper[:L - 1], upper[L - 1][keep]], ns)
        z = enc.outputs  # variables z_{L−1}[keep], bounds widened like zl/zu
        lk, uk = zl[keep], zu[keep]
        active = lk >= 0.0
        Gk = G[:, keep]
        relaxable = (~active) & np.all(Gk <= 0.0, axis=0) if monotone else np.zeros(keep.size, bool)
        exact = ~active & ~relaxable
        h_cols = np.empty(keep.size, dtype=np.int64)
        h_cols[active] = z[active]
        ua = np.flatnonzero(~active)
        h = prog.add_vars(f"{ns}.h{L}", np.zeros(ua.size), np.maximum(uk[ua], 0.0))
        h_cols[ua] = h
        for pos, i in enumerate(ua):
            if exact[i]:
                prog.add_relu(h[pos], z[i], Tag.NETWORK)
            else:  # triangle relaxation: h ≥ z, h ≤ s (z − l)   (h ≥ 0 is its bound)
                s = uk[i] / (uk[i] - lk[i])
                prog.add_row([h[pos], z[i]], [1.0, -1.0], Sense.GE, 0.0, Tag.NETWORK, f"{ns}.tri_lo[{keep[i]}]")
                prog.add_row([h[pos], z[i]], [1.0, -s], Sense.LE, -s * lk[i], Tag.NETWORK,
                             f"{ns}.tri_up[{keep[i]}]")
        terms = [(h_cols, Gk)]
        info = EncodingInfo(int(sum(enc.unstable)), int(relaxable.sum()), int(exact.sum()), int(active.sum()))
    cols, coef = terms[0]
    if A.shape[0] == 1:
        nz = coef[0] != 0.0
        prog.add_row(cols[nz], coef[0][nz], Sense.GE, -float(g0[0]), Tag.PROPERTY, "margin>=0")
        if objective:
            prog.set_objective(cols[nz], coef[0][nz], maximize=True, constant=float(g0[0]))
    else:
        t = prog.add_var("t", 0.0, _margin_cap(cols, coef, g0, prog))
        for r in range(A.shape[0]):
            nz = coef[r] != 0.0
            # t ≤ g0_r + coef_r · h   ⇔   coef_r·h − t ≥ −g0_r
            prog.add_row(np.concatenate([cols[nz], [t]]), np.concatenate([coef[r][nz], [-1.0]]), Sense.GE,
                         -float(g0[r]), Tag.PROPERTY, f"t<=margin{r}")
        if objective:
            prog.set_objective([t], [1.0], maximize=True)
    prog.meta.update(property="margin", rows=int(A.shape[0]))
    return prog, info


def _margin_cap(cols: np.ndarray, coef: np.ndarray, g0: np.ndarray, prog: Program) -> float:
    """An upper bound of ``min_r margin_r`` over the variable box (``t``'s finite upper bound)."""
    lb, ub = prog.bounds()
    lo_c, hi_c = lb[cols], ub[cols]
    best = np.inf
    for r in range(coef.shape[0]):
        c = coef[r]
        best = min(best, float(g0[r] + np.maximum(c, 0) @ hi_c + np.minimum(c, 0) @ lo_c))
    return max(0.0, best) * (1 + 1e-6) + 1e-6


# --------------------------------------------------------------------------------------------------
# solving
# --------------------------------------------------------------------------------------------------
def _gurobi_class():
    from .backends.gurobi import GurobiBackend

    class _GurobiWithParams(GurobiBackend):
        """Gurobi with extra parameters, and ``CUTOFF``/``USER_OBJ_LIMIT`` read for what they mean."""

        def __init__(self, params: dict[str, Any]) -> None:
            super().__init__()
            self.params = params

        def _build(self, gp: Any, m: Any, model: Any) -> Any:
            x = super()._build(gp, m, model)
            for k, v in self.params.items():
                m.setParam(k, v)
            return x

    return _GurobiWithParams


def _solve_highs(program: Program, timeout: float, threads: int) -> Outcome:
    from .backends.highs import HighsBackend

    return HighsBackend().solve(program, timeout, threads)


def _choose(config: Any, program: Program) -> str | None:
    """``gurobi`` / ``highs`` for this program, or None when the configured backend is not a MILP one."""
    want = getattr(config, "backend", "auto")
    if want in ("highs",):
        return "highs"
    if want not in ("gurobi", "auto", "portfolio"):
        return None
    try:
        from .backends.gurobi import fits_licence

        if fits_licence(program):
            return "gurobi"
    except BackendUnavailableError:
        pass
    return None if want == "gurobi" else "highs"


@dataclass
class _Run:
    """Book-keeping of one call."""

    t0: float
    stats: dict[str, Any] = field(default_factory=dict)
    version: str = ""

    def result(self, verdict: Verdict, backend: str, msg: str, cex: Any = None) -> Result:
        return Result(verdict, backend, time.perf_counter() - self.t0, counterexample=cex, message=msg,
                      solver_version=self.version, stats=self.stats)


def _alternative_lower(net: Network, lo: np.ndarray, hi: np.ndarray, bounds: LayerBounds, A: np.ndarray,
                       alpha: AlphaConfig | None, deadline: float) -> np.ndarray:
    """Sound lower bounds of ``A f(x)`` (rows) over the box: CROWN, improved by α-CROWN if asked."""
    lb, _ = crown_linear(net, lo, hi, A, bounds=bounds)
    lb = np.asarray(lb, dtype=np.float64)
    if alpha is not None and alpha.iterations > 0 and len(net.affines) > 1:
        res = alpha_crown_lower(net, lo, hi, bounds.lower, bounds.upper, len(net.affines) - 1, A, alpha,
                                deadline)
        lb = np.maximum(lb, res.lb)
    return lb


def _attack(prop: Any, net: Network, alts: list[Alternative], order: list[int], lo: np.ndarray,
            hi: np.ndarray, cfg: MarginConfig, seed: int, deadline: float) -> tuple[ReplayResult | None, dict]:
    """Margin-targeted PGD on each alternative; returns a replayed violation (or None) and best scores."""
    rng = np.random.default_rng(seed)
    best: dict[int, float] = {}
    ns = getattr(prop, "ns", "net")
    for k in order:
        sub = OutputDNFProperty(lo, hi, (alts[k],))
        starts = [0.5 * (lo + hi)] + [rng.uniform(lo, hi) for _ in range(max(0, cfg.attack_restarts - 1))]
        for x0 in starts:
            if time.perf_counter() > deadline:
                return None, best
            xa, sc = _ascend(sub, net, x0, cfg.attack_steps, 0.25)
            best[k] = max(best.get(k, -np.inf), sc)
            if sc >= 0:
                rep = replay(prop, {ns: net}, {ns: xa})
                if rep.ok:
                    return rep, best
    return None, best


def solve_output_property(prop: Any, net: Network, config: Any, deadline: float,
                          margin: MarginConfig | None = None) -> Result | None:
    """Decide a single-network output property alternative by alternative (module docstring).

    Parameters
    ----------
    prop
        :class:`~encoders.properties.OutputDNFProperty` or L∞
        :class:`~encoders.properties.LocalRobustness`; anything else returns ``None``.
    config
        A :class:`~verifier.dispatch.DispatchConfig` (``backend``, ``threads``, ``seed``, ``samples``
        are read; ``samples = 0`` disables the attack).  Backends other than ``auto``, ``gurobi``,
        ``highs`` and ``portfolio`` return ``None``.
    deadline
        ``time.perf_counter()`` value by which to answer (TIMEOUT after it).

    Returns
    -------
    Result or None
        ``None``: not handled here, the caller falls back to its general path.
    """
    cfg = margin or MarginConfig()
    if getattr(config, "backend", "auto") not in ("auto", "gurobi", "highs", "portfolio"):
        return None
    alts = alternatives_of(prop, net.n_outputs)
    if alts is None or not alts or getattr(prop, "ns", "net") != "net":
        return None
    lo, hi = _box(prop)
    if lo.size != net.n_inputs or any(A.shape[1] != net.n_outputs for A, _ in alts):
        return None
    run = _Run(time.perf_counter())
    st = run.stats
    ns = "net"
    # 1. CROWN
    t = time.perf_counter()
    base = crown_bounds(net, lo, hi)
    possible = [k for k, (A, b) in enumerate(alts)
                if A.shape[0] == 0 or not np.any(_alternative_lower(net, lo, hi, base, A, None, deadline) > b)]
    st.update(crown_s=time.perf_counter() - t, unstable_crown=base.unstable_counts(),
              alternatives=len(alts), possible_crown=len(possible))
    if not possible:
        return run.result(Verdict.VERIFIED, "crown", "every alternative ruled out by CROWN bounds")
    # 2. attack
    scores: dict[int, float] = {}
    if getattr(config, "samples", 1) > 0:
        t = time.perf_counter()
        rep, scores = _attack(prop, net, alts, possible, lo, hi, cfg, getattr(config, "seed", 0), deadline)
        st["attack_s"] = time.perf_counter() - t
        if rep is not None:
            return run.result(Verdict.FALSIFIED, "attack", "counterexample found by margin-targeted PGD; "
                              "replayed on onnxruntime", rep.counterexample)
    # 3. α-CROWN
    bounds = base
    if cfg.tighten and len(net.affines) > 1:
        t = time.perf_counter()
        bounds = tighten_bounds(net, lo, hi, base, cfg.alpha, deadline)
        keep = []
        for k in possible:
            A, b = alts[k]
            if A.shape[0] and np.any(_alternative_lower(net, lo, hi, bounds, A, cfg.output_alpha, deadline) > b):
                continue
            keep.append(k)
        possible = keep
        st.update(tighten_s=time.perf_counter() - t, unstable_alpha=bounds.unstable_counts(),
                  possible_alpha=len(possible))
        if not possible:
            return run.result(Verdict.VERIFIED, "alpha-crown", "every alternative ruled out by α-CROWN bounds")
    # 4. MILPs, likeliest violation first
    possible.sort(key=lambda k: -scores.get(k, -np.inf))
    per_alt: list[dict[str, Any]] = []
    st["per_alt"] = per_alt
    undecided: Result | None = None
    backends_used: set[str] = set()
    for k in possible:
        left = deadline - time.perf_counter()
        if left <= 0:
            return run.result(Verdict.TIMEOUT, "+".join(sorted(backends_used)) or "milp",
                              f"time limit reached with {len(possible) - len(per_alt)} alternatives left")
        t = time.perf_counter()
        prog, info = encode_alternative(net, lo, hi, bounds.lower, bounds.upper, alts[k], cfg.monotone,
                                        cfg.objective, ns)
        backend = _choose(config, prog)
        if backend is None:
            return None
        out = _solve(backend, prog, left, getattr(config, "threads", 1), cfg)
        backends_used.add(backend)
        run.version = out.solver_version or run.version
        rec = {"alt": k, "backend": backend, "status": out.status.value, "time_s": time.perf_counter() - t,
               "binaries": info.binaries_hidden + info.exact_last, "relaxed_last": info.relaxed_last,
               "nodes": out.stats.get("nodes"), "variables": out.stats.get("variables"),
               "constraints": out.stats.get("constraints")}
        per_alt.append(rec)
        if out.status is SolveStatus.UNSAT:
            continue
        if out.assignment is not None and out.status in (SolveStatus.SAT, SolveStatus.OPTIMAL,
                                                         SolveStatus.UNKNOWN, SolveStatus.TIMEOUT):
            xs = {ns: np.asarray(out.assignment)[prog.blocks[ns]["input"]]}
            rep = replay(prop, {ns: net}, xs)
            if not rep.ok:
                pol = polish(prop, {ns: net}, xs)
                rep = pol if pol.ok else rep
            rec["replay"] = rep.reason
            if rep.ok:
                return run.result(Verdict.FALSIFIED, backend, f"alternative {k}: MILP counterexample replayed on "
                                  "onnxruntime", rep.counterexample)
            if undecided is None:
                undecided = run.result(Verdict.UNKNOWN, backend, f"alternative {k}: solver candidate rejected: "
                                       f"{rep.reason}")
            continue
        verdict = {SolveStatus.TIMEOUT: Verdict.TIMEOUT, SolveStatus.ERROR: Verdict.ERROR}.get(out.status,
                                                                                              Verdict.UNKNOWN)
        if verdict is Verdict.TIMEOUT:
            return run.result(verdict, backend, f"alternative {k}: {out.message or 'solver time limit'}")
        if undecided is None:
            undecided = run.result(verdict, backend, f"alternative {k}: {out.message or out.status.value}")
    if undecided is not None:
        return replace_time(undecided, run)
    return run.result(Verdict.VERIFIED, "+".join(sorted(backends_used)),
                      f"all {len(alts)} alternatives infeasible ({len(alts) - len(possible)} by bounds, "
                      f"{len(possible)} by MILP)")


def replace_time(res: Result, run: _Run) -> Result:
    from dataclasses import replace

    return replace(res, time_s=time.perf_counter() - run.t0)


def _solve(backend: str, prog: Program, timeout: float, threads: int, cfg: MarginConfig) -> Outcome:
    try:
        if backend == "gurobi":
            params: dict[str, Any] = dict(cfg.gurobi_params)
            if prog.objective is not None:
                params.setdefault("BestObjStop", 0.0)
            return _gurobi_class()(params).solve(prog, timeout, threads)
        return _solve_highs(_without_objective(prog), timeout, threads)
    except LicenseLimitError:
        return _solve_highs(_without_objective(prog), timeout, threads)


def _without_objective(prog: Program) -> Program:
    if prog.objective is None:
        return prog
    p = prog.copy()
    p.objective = None
    return p
