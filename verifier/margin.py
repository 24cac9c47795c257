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
from dataclasses import dataclass, field, replace
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
from .tighten import AlphaConfig, alpha_crown_lower, beta_crown_lower, tighten_bounds

__all__ = [
    "MarginConfig",
    "Alternative",
    "alternatives_of",
    "encode_alternative",
    "solve_output_property",
]

Alternative = tuple[np.ndarray, np.ndarray]  # (A (k, n_out), b (k,)) meaning A y <= b
_NO_OPT = AlphaConfig(iterations=0)


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
        Per possible alternative: random starts (besides the box centre and the α-CROWN corners) and
        sign-gradient steps per start.
    monotone
        Relax last-layer neurons that only lower the margin (module docstring); no binary for them.
    objective
        Gurobi: also maximise the margin, stopping at the first incumbent (``BestObjStop = 0``); the
        default pure feasibility search was faster on mnistfc.
    gurobi_params
        Extra Gurobi parameters for the MILPs (e.g. ``{"MIPFocus": 1}``).
    """

    tighten: bool = True
    alpha: AlphaConfig = AlphaConfig(iterations=20)
    output_alpha: AlphaConfig = AlphaConfig(iterations=40)
    attack_restarts: int = 2
    attack_steps: int = 60
    monotone: bool = True
    objective: bool = False
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


def _alternative_bounds(net: Network, lo: np.ndarray, hi: np.ndarray, bounds: LayerBounds, A: np.ndarray,
                        alpha: AlphaConfig | None, deadline: float) -> tuple[np.ndarray, np.ndarray | None]:
    """Sound lower bounds of ``A f(x)`` (rows) over the box — CROWN, improved by α-CROWN if asked —
    and, with α-CROWN, the box corners where each row's linear lower bound is smallest."""
    lb, _ = crown_linear(net, lo, hi, A, bounds=bounds)
    lb = np.asarray(lb, dtype=np.float64)
    corners = None
    if alpha is not None and alpha.iterations > 0 and len(net.affines) > 1:
        res = alpha_crown_lower(net, lo, hi, bounds.lower, bounds.upper, len(net.affines) - 1, A, alpha,
                                deadline)
        lb = np.maximum(lb, res.lb)
        corners = np.where(res.coef >= 0, lo, hi)
    return lb, corners


def _pgd(prop: Any, net: Network, alt: Alternative, starts: Sequence[np.ndarray], lo: np.ndarray,
         hi: np.ndarray, steps: int, deadline: float) -> tuple[ReplayResult | None, float]:
    """Sign-gradient ascent on one alternative's margin from each start; a violation must replay."""
    sub = OutputDNFProperty(lo, hi, (alt,))
    best = -np.inf
    for x0 in starts:
        if time.perf_counter() > deadline:
            break
        xa, sc = _ascend(sub, net, np.asarray(x0, dtype=np.float64), steps, 0.25)
        best = max(best, sc)
        if sc >= 0:
            rep = replay(prop, {"net": net}, {"net": xa})
            if rep.ok:
                return rep, best
    return None, best


@dataclass(frozen=True)
class BabConfig:
    """β-CROWN branch and bound over ReLU splits (:func:`bab_alternative`).

    Attributes
    ----------
    batch
        Sub-domains split per round (their ``2·batch`` children are bounded in one batched call).
    root_alpha, alpha
        Optimisation of (α, β) at the root and for children (warm-started from the parent).
    max_domains
        Open sub-domains kept at most; beyond it the search gives up (``None``: undecided).
    candidates
        Filtered smart branching: the top candidates (by score) whose split is tried; 1 = the
        top-scored neuron.
    """

    batch: int = 64
    root_alpha: AlphaConfig = AlphaConfig(iterations=60, lr=0.25)
    alpha: AlphaConfig = AlphaConfig(iterations=12, lr=0.1, decay=0.9, patience=4)
    max_domains: int = 40_000
    candidates: int = 4
    trace: bool = False


@dataclass
class BabOutcome:
    """What :func:`bab_alternative` concluded: ``verdict`` is VERIFIED, FALSIFIED or None (undecided)."""

    verdict: Verdict | None
    replay: ReplayResult | None
    stats: dict[str, Any]


def bab_alternative(prop: Any, net: Network, lo: np.ndarray, hi: np.ndarray, bounds: LayerBounds,
                    alt: Alternative, deadline: float, cfg: BabConfig = BabConfig()) -> BabOutcome:
    r"""Decide one single-row alternative ``a·y ≤ b`` by branch and bound over ReLU phases.

    Sub-domain = the box with some root-unstable neurons fixed active (``z ≥ 0``) or inactive
    (``z ≤ 0``).  Bound: :func:`verifier.tighten.beta_crown_lower` gives a sound ``lb ≤ min a·f(x)``
    over the sub-domain; ``lb > b`` closes it (no violation there: the margin ``b − a·f(x) < 0``).
    Branch: the open sub-domains with the smallest ``lb`` first, each split on its neuron with the
    largest score (coefficient × triangle height).  The two children cover the parent (a point with
    ``z = 0`` lies in both), so VERIFIED when no open sub-domain is left is sound.  Attack: at every
    bounding, the box corner minimising each child's linear bound is evaluated; a violating point
    must replay on onnxruntime (:func:`verifier.replay.replay`) to make FALSIFIED.  A sub-domain with
    nothing left to split, too many open sub-domains or the deadline end the search undecided.
    """
    A, b = alt
    if A.shape[0] != 1:
        return BabOutcome(None, None, {"bab": "multi-row alternative"})
    L = len(net.affines) - 1
    U = [np.flatnonzero((bounds.lower[j] < 0) & (bounds.upper[j] > 0)) for j in range(L)]
    sizes = [bounds.lower[j].size for j in range(L)]
    thr = float(b[0])
    st: dict[str, Any] = {"bab_domains": 0, "bab_rounds": 0}

    def full(comp: list[np.ndarray], fill_dtype=np.float64) -> list[np.ndarray]:
        out = []
        for j in range(L):
            a = np.zeros((comp[j].shape[0], sizes[j]), dtype=fill_dtype)
            a[:, U[j]] = comp[j]
            out.append(a)
        return out

    def bound(S: list[np.ndarray], al: list[np.ndarray] | None, be: list[np.ndarray] | None,
              conf: AlphaConfig):
        m = S[0].shape[0]
        res = beta_crown_lower(net, lo, hi, bounds.lower, bounds.upper, L, np.repeat(A, m, axis=0), full(S),
                               conf, deadline, None if al is None else full(al), None if be is None else full(be))
        st["bab_domains"] += m
        comp_a = [res.alpha[j][:, U[j]] for j in range(L)]
        comp_b = [res.beta[j][:, U[j]] for j in range(L)]
        sc = np.concatenate([res.scores[j][:, U[j]] for j in range(L)], axis=1)  # flat over (layer, neuron)
        choice = np.where(sc.max(axis=1) > 0, sc.argmax(axis=1), -1)
        if cfg.candidates > 1:
            choice = fsb(S, comp_a, comp_b, sc, choice, res.lb <= thr)
        return res.lb, comp_a, comp_b, choice, np.where(res.coef >= 0, lo, hi)

    def fsb(S: list[np.ndarray], al: list[np.ndarray], be: list[np.ndarray], sc: np.ndarray,
            choice: np.ndarray, open_: np.ndarray) -> np.ndarray:
        """Filtered smart branching: among each open row's top candidates (by score), the split whose
        worse child has the best bound (one pass at the inherited multipliers, no optimisation)."""
        rows = np.flatnonzero(open_ & (choice >= 0))
        if rows.size == 0:
            return choice
        K = min(cfg.candidates, sc.shape[1])
        cand = np.argsort(-sc[rows], axis=1)[:, :K]  # (r, K)
        valid = np.take_along_axis(sc[rows], cand, axis=1) > 0
        rep = np.repeat(rows, 2 * K)
        flat = np.repeat(cand.reshape(-1), 2)
        sign = np.tile(np.array([1, -1], dtype=np.int8), rows.size * K)
        lay = np.searchsorted(offsets, flat, side="right") - 1
        gS, ga, gb = [], [], []
        for j in range(L):
            Sj = S[j][rep].copy()
            sel = np.flatnonzero(lay == j)
            Sj[sel, flat[sel] - offsets[j]] = sign[sel]
            gS.append(Sj)
            ga.append(al[j][rep])
            gb.append(be[j][rep])
        m = rep.size
        res = beta_crown_lower(net, lo, hi, bounds.lower, bounds.upper, L, np.repeat(A, m, axis=0), full(gS),
                               _NO_OPT, None, full(ga), full(gb))
        worse = np.minimum(res.lb[0::2], res.lb[1::2]).reshape(rows.size, K)
        worse = np.where(valid, worse, -np.inf)
        out = choice.copy()
        out[rows] = cand[np.arange(rows.size), np.argmax(worse, axis=1)]
        return out

    def attack(xs: np.ndarray) -> ReplayResult | None:
        y = net.evaluate(xs)
        marg = thr - y @ A[0]
        for q in np.argsort(-marg)[:3]:
            if marg[q] >= 0:
                rep = replay(prop, {"net": net}, {"net": xs[q]})
                if rep.ok:
                    return rep
        return None

    offsets = np.cumsum([0] + [u.size for u in U])
    S0 = [np.zeros((1, u.size), dtype=np.int8) for u in U]
    lb, al, be, choice, xs = bound(S0, None, None, cfg.root_alpha)
    rep = attack(xs)
    if rep is not None:
        return BabOutcome(Verdict.FALSIFIED, rep, st)
    pool = {"S": S0, "a": al, "b": be, "lb": lb, "choice": choice}
    while True:
        keep = pool["lb"] <= thr
        if not keep.any():
            st["bab_open"] = 0
            return BabOutcome(Verdict.VERIFIED, None, st)
        pool = {key: ([v[keep] for v in val] if isinstance(val, list) else val[keep]) for key, val in pool.items()}
        n_open = int(keep.sum())
        st["bab_open"] = n_open
        if n_open > cfg.max_domains or time.perf_counter() > deadline:
            st["bab_stop"] = "domain limit" if n_open > cfg.max_domains else "deadline"
            return BabOutcome(None, None, st)
        take = np.argsort(pool["lb"])[: cfg.batch]
        if np.any(pool["choice"][take] < 0):
            st["bab_stop"] = "a sub-domain with nothing left to split"
            return BabOutcome(None, None, st)
        st["bab_rounds"] += 1
        if cfg.trace and st["bab_rounds"] % 20 == 1:
            depth = sum((pool["S"][j] != 0).sum(axis=1) for j in range(L))
            print(f"round {st['bab_rounds']} open {n_open} worst lb-b {pool['lb'].min() - thr:.4f} "
                  f"median {np.median(pool['lb']) - thr:.4f} depth mean {depth.mean():.1f} max {depth.max()}",
                  flush=True)
        rest = np.setdiff1d(np.arange(n_open), take)
        ch = pool["choice"][take]
        layer = np.searchsorted(offsets, ch, side="right") - 1
        col = ch - offsets[layer]
        kids_S, kids_a, kids_b = [], [], []
        for j in range(L):
            Sj = np.repeat(pool["S"][j][take], 2, axis=0)
            rows = np.flatnonzero(np.repeat(layer == j, 2))
            Sj[rows, np.repeat(col, 2)[rows]] = np.tile(np.array([1, -1], dtype=np.int8), take.size)[rows]
            kids_S.append(Sj)
            kids_a.append(np.repeat(pool["a"][j][take], 2, axis=0))
            kids_b.append(np.repeat(pool["b"][j][take], 2, axis=0))
        lb, al, be, choice, xs = bound(kids_S, kids_a, kids_b, cfg.alpha)
        rep = attack(xs)
        if rep is not None:
            return BabOutcome(Verdict.FALSIFIED, rep, st)
        pool = {"S": [np.concatenate([pool["S"][j][rest], kids_S[j]]) for j in range(L)],
                "a": [np.concatenate([pool["a"][j][rest], al[j]]) for j in range(L)],
                "b": [np.concatenate([pool["b"][j][rest], be[j]]) for j in range(L)],
                "lb": np.concatenate([pool["lb"][rest], lb]),
                "choice": np.concatenate([pool["choice"][rest], choice])}


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
        are read; ``samples = 0`` disables the attacks).  Backends other than ``auto``, ``gurobi``,
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
    attack = getattr(config, "samples", 1) > 0
    rng = np.random.default_rng(getattr(config, "seed", 0))

    def falsified(rep: ReplayResult, how: str) -> Result:
        return run.result(Verdict.FALSIFIED, "attack", f"counterexample found by {how}; replayed on onnxruntime",
                          rep.counterexample)

    # 1. CROWN: rule out alternatives
    t = time.perf_counter()
    base = crown_bounds(net, lo, hi)
    possible = [k for k, (A, b) in enumerate(alts)
                if A.shape[0] == 0 or not np.any(_alternative_bounds(net, lo, hi, base, A, None, deadline)[0] > b)]
    st.update(crown_s=time.perf_counter() - t, unstable_crown=base.unstable_counts(),
              alternatives=len(alts), possible_crown=len(possible))
    if not possible:
        return run.result(Verdict.VERIFIED, "crown", "every alternative ruled out by CROWN bounds")
    # 2. cheap attack from the box centre
    if attack:
        t = time.perf_counter()
        for k in possible:
            rep, _ = _pgd(prop, net, alts[k], [0.5 * (lo + hi)], lo, hi, cfg.attack_steps, deadline)
            if rep is not None:
                st["attack_s"] = time.perf_counter() - t
                return falsified(rep, "PGD on the alternative's margin")
        st["attack_s"] = time.perf_counter() - t
    # 3. α-CROWN: tighter intermediate bounds, then per-alternative bounds and attack corners
    bounds = base
    ub_margin: dict[int, float] = {}
    corners: dict[int, np.ndarray] = {}
    if cfg.tighten and len(net.affines) > 1:
        t = time.perf_counter()
        bounds = tighten_bounds(net, lo, hi, base, cfg.alpha, deadline)
        keep = []
        for k in possible:
            A, b = alts[k]
            if A.shape[0] == 0:
                keep.append(k)
                continue
            lb, cor = _alternative_bounds(net, lo, hi, bounds, A, cfg.output_alpha, deadline)
            if np.any(lb > b):
                continue
            keep.append(k)
            ub_margin[k] = float(np.min(b - lb))  # t_k = min_r (b − A y)_r ≤ min_r (b_r − lb_r)
            if cor is not None:
                corners[k] = cor
        possible = keep
        st.update(tighten_s=time.perf_counter() - t, unstable_alpha=bounds.unstable_counts(),
                  possible_alpha=len(possible))
        if not possible:
            return run.result(Verdict.VERIFIED, "alpha-crown", "every alternative ruled out by α-CROWN bounds")
    # likeliest violation first: the largest upper bound of the margin
    possible.sort(key=lambda k: -ub_margin.get(k, np.inf))
    st["order"] = [(k, round(ub_margin.get(k, np.inf), 4)) for k in possible]
    # 4. attack from the corners where the relaxation is tightest, then from random points
    if attack:
        t = time.perf_counter()
        for k in possible:
            starts = list(corners.get(k, []))
            starts += [rng.uniform(lo, hi) for _ in range(cfg.attack_restarts)]
            rep, _ = _pgd(prop, net, alts[k], starts, lo, hi, cfg.attack_steps, deadline)
            if rep is not None:
                st["attack2_s"] = time.perf_counter() - t
                return falsified(rep, "PGD from α-CROWN corners")
        st["attack2_s"] = time.perf_counter() - t
    # 5. one MILP per alternative
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
                                        cfg.objective, "net")
        backend = _choose(config, prog)
        if backend is None:
            return None
        out = _solve(backend, prog, left, getattr(config, "threads", 1), cfg)
        backends_used.add(backend)
        run.version = out.solver_version or run.version
        rec = {"alt": k, "backend": backend, "status": out.status.value, "time_s": round(time.perf_counter() - t, 3),
               "binaries": info.binaries_hidden + info.exact_last, "relaxed_last": info.relaxed_last,
               "nodes": out.stats.get("nodes"), "variables": out.stats.get("variables"),
               "constraints": out.stats.get("constraints")}
        per_alt.append(rec)
        if out.status is SolveStatus.UNSAT:
            continue
        if out.assignment is not None and out.status in (SolveStatus.SAT, SolveStatus.OPTIMAL,
                                                         SolveStatus.UNKNOWN, SolveStatus.TIMEOUT):
            xs = {"net": np.asarray(out.assignment)[prog.blocks["net"]["input"]]}
            rep = replay(prop, {"net": net}, xs)
            if not rep.ok:
                pol = polish(prop, {"net": net}, xs)
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
        return replace(undecided, time_s=time.perf_counter() - run.t0)
    return run.result(Verdict.VERIFIED, "+".join(sorted(backends_used)),
                      f"all {len(alts)} alternatives infeasible ({len(alts) - len(possible)} by bounds, "
                      f"{len(possible)} by MILP)")


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
