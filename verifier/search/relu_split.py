r"""Output properties of one network, decided alternative by alternative: bounds, attacks, β-CROWN
branch and bound, and margin MILPs.

Query.  An input box ``lo ≤ x ≤ hi`` and an unsafe output region given as a DNF

    ∃ x ∈ [lo, hi]:   OR_k  AND_r  (A_k f(x) ≤ b_k)_r,

which covers :class:`~encoders.properties.OutputDNFProperty` as is and L∞
:class:`~encoders.properties.LocalRobustness` as ``OR_{j≠c} ((e_c − e_j)·y ≤ 0)`` (ties count as
violations, exactly as in the property).  Alternative ``k`` is violated at ``x`` iff its *margin*

    t_k(x) = min_r (b_k − A_k f(x))_r   ≥ 0,

and the property holds iff no alternative is violated anywhere in the box.

Pipeline of :func:`solve_output_property`
-----------------------------------------
1. CROWN bounds of every layer over the box; alternative ``k`` is impossible when some row has a
   CROWN lower bound ``min_x (A_k f(x))_r > b_{k,r}``.  No possible alternative ⇒ VERIFIED.
2. Falsification, cheap: projected sign-gradient ascent (:func:`verifier.replay.ascend`) on each
   possible alternative's own margin from the box centre.
3. Tighter intermediate bounds by α-CROWN (:func:`encoders.bounds.alpha.tighten_bounds`), then α-CROWN on
   each alternative's rows: prunes more alternatives, gives an upper bound ``t̄_k`` of each margin
   and the box corner where the optimised linear bound is tightest.
4. Falsification from those corners (and a few random starts), alternatives in decreasing ``t̄_k``.
5. β-CROWN branch and bound (:class:`BabSearch`) on each single-row alternative, likeliest violation
   (largest ``t̄_k``) first, round robin with doubling time slices so that one hard alternative
   cannot starve a violated one.  Every child's intermediate bounds are recomputed under its splits
   (:meth:`~encoders.bounds.alpha.SplitContext.refine`).  An alternative whose MILP fits Gurobi's
   licence skips this step when it has at most ``milp_first`` binaries.
6. One margin MILP (:func:`encode_alternative`) for each alternative branch and bound cannot decide
   (multi-row alternatives, a sub-domain with nothing left to split, the domain limit) and for each
   that fits Gurobi's licence and is still open after ``bab_budget`` CPU seconds of branch and bound.
   The MILPs run in solver children (:class:`~verifier.backends.solve.SolveGroup`, ``milp_jobs`` at
   a time) *beside* branch and bound, which keeps searching a handed-off alternative: whichever
   answers first decides it (:class:`_Race`), and the other is stopped.
7. Every alternative ruled out ⇒ VERIFIED; otherwise the first undecided outcome.

Every FALSIFIED passes :func:`verifier.replay.replay` (onnxruntime on the ONNX file, exact check).

The margin MILP
---------------
Exact network encoding up to the last hidden layer (:func:`encoders.encode.encode_network`), then::

    t ≤ b_{k,r} − A_{k,r} (W_L h_{L−1} + b_L)   for every row r,      t ≥ 0      (maximise t optionally)

(a single row needs no ``t``: the row itself is ``≥ 0``).  Feasible ⇔ the alternative is violated
somewhere in the box.  *Monotone relaxation of the last hidden layer*: let ``g_{r,i}`` be the
coefficient of ``h_{L−1,i}`` in row ``r``'s margin, ``g_r = −(A_{k,r} W_L)``.  For an unstable neuron
with ``g_{r,i} ≤ 0`` in every row, replacing ``h = relu(z)`` by its triangle relaxation
``h ≥ 0, h ≥ z, h ≤ s(z − l)`` (no binary) keeps the answer exact: any relaxed feasible point has
``h_i ≥ relu(z_i)``, and lowering ``h_i`` to ``relu(z_i)`` only raises every margin (coefficients
``≤ 0``), so ``(x, relu)`` is feasible too, with the same ``x``.  Hence infeasible ⇔ no violation, and
the ``x`` of any feasible point is a real violation in exact arithmetic (replay still has the last
word).  This removes the binaries of about half of the last layer's unstable neurons.  Solved by
Gurobi when the model fits its licence, else HiGHS; a solution's ``x`` is replayed (and polished by
:func:`verifier.replay.polish` if the float margin came out a hair negative).

Soundness rests on: the bounds (CROWN / α-CROWN / β-CROWN, each valid for any multipliers in their
ranges and rounding-widened; the MILP encoder widens them again by ``BOUND_SLACK``), the coverage of
branch and bound (two children per split cover the parent), the exactness of the MILP encoding on
those bounds (big-M ReLUs and the monotone relaxation argument above), the MILP solver's
infeasibility claims (as everywhere in this package; solver tolerances ~1e-6 make it *accept* slightly
violated points, i.e. err towards "feasible"), and replay for FALSIFIED.
"""

from __future__ import annotations

import time
from collections.abc import Mapping, Sequence
from dataclasses import dataclass, field, replace
from typing import Any, Protocol

import numpy as np

from encoders.bounds import LayerBounds, crown_bounds, crown_linear
from encoders.bounds.alpha import (
    AlphaConfig,
    SplitBoundResult,
    SplitContext,
    alpha_crown_lower,
    tighten_bounds,
)
from encoders.encode import BOUND_SLACK, encode_network
from encoders.errors import ConfigError
from encoders.network import Network, network_from_layers
from encoders.program import Program, Sense, Tag
from encoders.properties import Alternative, OutputDNFProperty, OutputProperty, Property

from ..backends.base import solves_milp
from ..backends.solve import SolveGroup, SolveJob, choose_backend
from ..replay import ReplayResult, ascend, polish, replay
from ..results import Outcome, Result, SolveStatus, Verdict
from .frontier import Batch, Frontier, lowest

__all__ = [
    "MarginConfig",
    "BabConfig",
    "BabSearch",
    "BabOutcome",
    "Alternative",
    "EncodingInfo",
    "alternatives_of",
    "bab_alternative",
    "encode_alternative",
    "solve_output_property",
    "relu_split_stage",
    "ReluSplitSettings",
]



@dataclass(frozen=True)
class BabConfig:
    """β-CROWN branch and bound over ReLU splits (:class:`BabSearch`).

    Attributes
    ----------
    batch
        Sub-domains split per round (their ``2·batch`` children are bounded in one batched call).
    root_alpha, alpha
        Optimisation of (α, β) at the root and for children (warm-started from the parent).
    max_domains
        Open sub-domains kept at most; beyond it the search gives up (``None``: undecided).
    candidates
        Filtered smart branching: how many neurons with the largest estimated gain are tried with
        one pass each; 1 = the neuron with the largest estimate.
    memory_mb
        Memory for the open sub-domains (the bytes of the frontier's arrays: split signs, α, β,
        intermediate bounds, ``33·n_live`` bytes, plus 16 for the bound and the branching choice); the
        search gives up when the frontier holds more than ``max_domains`` sub-domains or more than
        ``memory_mb`` megabytes (:attr:`~verifier.search.frontier.Frontier.over_cap`).
        :func:`solve_output_property` divides it among the alternatives it searches (the frontier can
        briefly double while it is rebuilt, so the peak stays below ``2·memory_mb``).
    refine
        Recompute every child's intermediate bounds under its splits
        (:meth:`~encoders.bounds.alpha.SplitContext.refine`) instead of keeping the root's.
    trace
        Print progress every 20 rounds (diagnostics).
    """

    batch: int = 64
    root_alpha: AlphaConfig = AlphaConfig(iterations=60, lr=0.25)
    alpha: AlphaConfig = AlphaConfig(iterations=6, lr=0.1, decay=0.9, patience=4)
    max_domains: int = 40_000
    candidates: int = 1
    refine: bool = True
    refine_depth: int | None = None
    memory_mb: int = 3000
    trace: bool = False

    def __post_init__(self) -> None:
        for name in ("batch", "max_domains", "candidates", "memory_mb"):
            if getattr(self, name) < 1:
                raise ConfigError(f"branch and bound {name}: must be >= 1, got {getattr(self, name)}")


@dataclass(frozen=True)
class MarginConfig:
    """Knobs of :func:`solve_output_property` (defaults tuned on mnistfc 256x2).

    The MILP settings (``monotone``, ``objective``, ``gurobi_params``) only matter for step 6.

    Attributes
    ----------
    tighten
        α-CROWN intermediate bounds and alternative bounds (step 3).
    bab_budget
        Branch-and-bound CPU time (seconds of this process, so that a loaded machine does not
        shorten it) per alternative after which an undecided alternative
        whose MILP fits Gurobi's licence is handed to the MILP (step 6) instead (``None``: never).
        On mnistfc 256x4 Gurobi decides in seconds alternatives that branch and bound has not
        closed after a minute.
    milp_first, milp_first_depth
        On networks with at least ``milp_first_depth`` hidden layers, alternatives whose MILP fits
        Gurobi's licence with at most ``milp_first`` binaries skip branch and bound (0: never).
        9×200 MNIST MLP: 36–40 binaries, Gurobi answers in 0.3 s with no branching where branch and
        bound still had 384 open sub-domains after 6 s; mnistfc 256x2 (2 hidden layers): 41–48
        binaries but up to 170 Gurobi nodes, and branch and bound is faster.
    bab, use_bab, bab_slice
        β-CROWN branch and bound (step 5): its settings, whether to use it (else every possible
        alternative goes to the MILP), and the first time slice per alternative (doubled per round).
    alpha, output_alpha
        α-CROWN settings for the intermediate layers and for the alternatives' rows.
    attack_restarts, attack_steps
        Per possible alternative: random starts (besides the box centre and the α-CROWN corners) and
        sign-gradient steps per start.
    monotone
        Relax last-layer neurons that only lower the margin (module docstring); no binary for them.
    objective, objective_stop
        Also maximise the margin (Gurobi stops at the first incumbent with margin ≥ ``objective_stop``,
        ``BestObjStop``; a stopping rule only, the constraint stays ``margin ≥ 0``).  Default: pure
        feasibility, faster on mnistfc; a feasible point whose replay fails (it sits on the margin's
        boundary, where float32 onnxruntime can disagree by ~1e-7) triggers one re-solve that
        maximises the margin.
    gurobi_params
        Extra Gurobi parameters for the MILPs as ``(name, value)`` pairs, e.g. ``(("MIPFocus", 1),)``.
    milp_jobs
        Margin MILPs solved at once, each in its own solver child, beside branch and bound in this
        process (one more once every alternative has been handed to the MILP, :class:`_Race`).  1 suits
        2 cores: branch and bound on one, the MILP on the other.
    """

    tighten: bool = True
    bab: BabConfig = BabConfig()
    alpha: AlphaConfig = AlphaConfig(iterations=20)
    output_alpha: AlphaConfig = AlphaConfig(iterations=40)
    attack_restarts: int = 2
    attack_steps: int = 60
    monotone: bool = True
    objective: bool = False
    gurobi_params: tuple[tuple[str, Any], ...] = ()
    objective_stop: float = 1e-3
    use_bab: bool = True
    bab_slice: float = 2.0
    bab_budget: float | None = 6.0
    milp_first: int = 48
    milp_first_depth: int = 3
    milp_jobs: int = 1

    def __post_init__(self) -> None:
        if not self.bab_slice > 0:
            raise ConfigError(f"bab_slice: must be positive, got {self.bab_slice}")
        if self.milp_jobs < 1:
            raise ConfigError(f"milp_jobs: must be >= 1, got {self.milp_jobs}")
        if self.attack_restarts < 0 or self.attack_steps < 0:
            raise ConfigError("attack_restarts / attack_steps: must be >= 0")


# --------------------------------------------------------------------------------------------------
# the query as a list of alternatives
# --------------------------------------------------------------------------------------------------
def alternatives_of(prop: Property, n_out: int) -> list[Alternative] | None:
    """The unsafe region of ``prop`` as ``[(A_k, b_k)]`` (``A_k y ≤ b_k``), or ``None`` if not handled:
    :meth:`~encoders.properties.OutputProperty.output_dnf` of a single-network output property whose
    region is a box (no L2 ball)."""
    if not isinstance(prop, OutputProperty) or prop.ball() is not None:
        return None
    return prop.output_dnf(n_out)


def _box(prop: Property) -> tuple[np.ndarray, np.ndarray]:
    lo, hi = prop.region()
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


def encode_alternative(
    net: Network,
    lo: np.ndarray,
    hi: np.ndarray,
    lower: Sequence[np.ndarray],
    upper: Sequence[np.ndarray],
    alt: Alternative,
    monotone: bool = True,
    objective: bool = True,
    ns: str = "net",
) -> tuple[Program, EncodingInfo]:
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
        z, n_bin = _encode_hidden(prog, net, x, lower, upper, keep, ns)  # z_{L−1}[keep], bounds like zl/zu
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
                prog.add_row(
                    [h[pos], z[i]], [1.0, -1.0], Sense.GE, 0.0, Tag.NETWORK, f"{ns}.tri_lo[{keep[i]}]"
                )
                prog.add_row(
                    [h[pos], z[i]], [1.0, -s], Sense.LE, -s * lk[i], Tag.NETWORK, f"{ns}.tri_up[{keep[i]}]"
                )
        terms = [(h_cols, Gk)]
        info = EncodingInfo(n_bin, int(relaxable.sum()), int(exact.sum()), int(active.sum()))
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
            prog.add_row(
                np.concatenate([cols[nz], [t]]),
                np.concatenate([coef[r][nz], [-1.0]]),
                Sense.GE,
                -float(g0[r]),
                Tag.PROPERTY,
                f"t<=margin{r}",
            )
        if objective:
            prog.set_objective([t], [1.0], maximize=True)
    prog.meta.update(property="margin", rows=int(A.shape[0]))
    return prog, info


def _encode_hidden(
    prog: Program,
    net: Network,
    x: np.ndarray,
    lower: Sequence[np.ndarray],
    upper: Sequence[np.ndarray],
    keep: np.ndarray,
    ns: str,
) -> tuple[np.ndarray, int]:
    """Exact encoding of the pre-activations ``z_{L−1}[keep]`` of the last hidden layer; returns their
    variables and the number of ReLU binaries.

    The first layer gets explicit variables ``z_0 = W_0 x + b_0`` for its live neurons (not stably
    inactive) instead of being substituted into the next layer: with even one stably active first-
    layer neuron, substitution makes every later row dense in the (many) inputs, while explicit
    variables keep the dense part to one row per live first-layer neuron (3–5× fewer nonzeros on
    mnistfc).  The remaining layers are encoded by :func:`encoders.encode.encode_network` on the
    live neurons' post-activations.
    """
    aff = net.affines
    L = len(aff) - 1
    last = [(aff[L - 1].W[keep], aff[L - 1].b[keep])]
    l0w, u0w = _widen(np.asarray(lower[0], float), np.asarray(upper[0], float))
    live0 = np.flatnonzero(u0w > 0.0)
    if L == 1 or live0.size == 0:
        trunc = network_from_layers([(a.W, a.b) for a in aff[: L - 1]] + last)
        enc = encode_network(
            prog, trunc, x, [*lower[: L - 1], lower[L - 1][keep]], [*upper[: L - 1], upper[L - 1][keep]], ns
        )
        return enc.outputs, int(sum(enc.unstable))
    first = network_from_layers([(aff[0].W[live0], aff[0].b[live0])])
    z0 = encode_network(
        prog, first, x, [np.asarray(lower[0])[live0]], [np.asarray(upper[0])[live0]], f"{ns}.l0"
    ).outputs
    del prog.blocks[f"{ns}.l0"]
    act0 = l0w[live0] >= 0.0
    h0 = z0.copy()
    un0 = np.flatnonzero(~act0)
    h0[un0] = prog.add_vars(f"{ns}.h1", np.zeros(un0.size), np.maximum(u0w[live0][un0], 0.0))
    for i in un0:
        prog.add_relu(h0[i], z0[i], Tag.NETWORK)
    mid = [(aff[1].W[:, live0], aff[1].b)] + [(a.W, a.b) for a in aff[2 : L - 1]]
    if L == 2:
        rest = network_from_layers([(aff[1].W[np.ix_(keep, live0)], aff[1].b[keep])])
    else:
        rest = network_from_layers(mid + last)
    enc = encode_network(
        prog, rest, h0, [*lower[1 : L - 1], lower[L - 1][keep]], [*upper[1 : L - 1], upper[L - 1][keep]], ns
    )
    prog.blocks[ns]["input"] = x
    return enc.outputs, int(un0.size + sum(enc.unstable))


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
@dataclass
class _Run:
    """Book-keeping of one call."""

    t0: float
    stats: dict[str, Any] = field(default_factory=dict)
    version: str = ""

    def result(self, verdict: Verdict, backend: str, msg: str, cex: Any = None) -> Result:
        return Result(
            verdict,
            backend,
            time.perf_counter() - self.t0,
            counterexample=cex,
            message=msg,
            solver_version=self.version,
            stats=self.stats,
        )


def _alternative_bounds(
    net: Network,
    lo: np.ndarray,
    hi: np.ndarray,
    bounds: LayerBounds,
    A: np.ndarray,
    alpha: AlphaConfig | None,
    deadline: float,
) -> tuple[np.ndarray, np.ndarray | None]:
    """Sound lower bounds of ``A f(x)`` (rows) over the box — CROWN, improved by α-CROWN if asked —
    and, with α-CROWN, the box corners where each row's linear lower bound is smallest."""
    lb, _ = crown_linear(net, lo, hi, A, bounds=bounds)
    lb = np.asarray(lb, dtype=np.float64)
    corners = None
    if alpha is not None and alpha.iterations > 0 and len(net.affines) > 1:
        res = alpha_crown_lower(
            net, lo, hi, bounds.lower, bounds.upper, len(net.affines) - 1, A, alpha, deadline
        )
        lb = np.maximum(lb, res.lb)
        corners = np.where(res.coef >= 0, lo, hi)
    return lb, corners


def _pgd(
    prop: OutputProperty,
    net: Network,
    alt: Alternative,
    starts: Sequence[np.ndarray],
    lo: np.ndarray,
    hi: np.ndarray,
    steps: int,
    deadline: float,
) -> tuple[ReplayResult | None, float]:
    """Sign-gradient ascent on one alternative's margin from each start; a violation must replay."""
    sub = OutputDNFProperty(lo, hi, (alt,))
    best = -np.inf
    for x0 in starts:
        if time.perf_counter() > deadline:
            break
        xa, sc = ascend(sub, net, np.asarray(x0, dtype=np.float64), steps, 0.25)
        best = max(best, sc)
        if sc >= 0:
            rep = replay(prop, {"net": net}, {"net": xa})
            if rep.ok:
                return rep, best
    return None, best


@dataclass
class BabOutcome:
    """What :func:`bab_alternative` concluded: ``verdict`` is VERIFIED, FALSIFIED or None (undecided)."""

    verdict: Verdict | None
    replay: ReplayResult | None
    stats: dict[str, Any]


_LAYER_FIELDS = ("S", "a", "b", "lw", "uw")


class _Domains(Batch):
    """Sub-domains of :class:`BabSearch` as a :class:`~verifier.search.frontier.Batch`.

    Per hidden layer ``j`` (fields ``S{j}``, ``a{j}``, ``b{j}``, ``lw{j}``, ``uw{j}``, each ``(N,
    n_live_j)``): the split signs (int8: +1 active, −1 inactive, 0 free), the multipliers α and β, and
    the intermediate bounds under the splits; ``lb`` (N,) the sub-domain's lower bound of ``a·f(x)``
    and ``choice`` (N,) its branching neuron (flat index, −1: nothing left to split).
    """

    __slots__ = ()

    @staticmethod
    def build(
        S: Sequence[np.ndarray],
        a: Sequence[np.ndarray],
        b: Sequence[np.ndarray],
        lw: Sequence[np.ndarray],
        uw: Sequence[np.ndarray],
        lb: np.ndarray,
        choice: np.ndarray,
    ) -> _Domains:
        fields: dict[str, np.ndarray] = {}
        for name, arrays in zip(_LAYER_FIELDS, (S, a, b, lw, uw)):
            fields.update({f"{name}{j}": arr for j, arr in enumerate(arrays)})
        fields.update(lb=np.asarray(lb), choice=np.asarray(choice))
        return _Domains(fields)

    def layers(self, name: str) -> list[np.ndarray]:
        """The per-layer arrays of ``name`` (one of ``S``, ``a``, ``b``, ``lw``, ``uw``)."""
        out = []
        while f"{name}{len(out)}" in self.names:
            out.append(self[f"{name}{len(out)}"])
        return out

    @property
    def lb(self) -> np.ndarray:
        return self["lb"]

    @property
    def choice(self) -> np.ndarray:
        return self["choice"]


class BabSearch:
    r"""Branch and bound over ReLU phases for one single-row alternative ``a·y ≤ b``; resumable.

    Sub-domain = the box with some root-unstable neurons fixed active (``z ≥ 0``) or inactive
    (``z ≤ 0``).  Bound: :class:`encoders.bounds.alpha.SplitContext` (β-CROWN) gives a sound
    ``lb ≤ min a·f(x)`` over the sub-domain; ``lb > b`` closes it (no violation there: the margin
    ``b − a·f(x) < 0``).  Branch: the open sub-domains (a :class:`~verifier.search.frontier.Frontier`
    of :class:`_Domains`) with the smallest ``lb`` first, ``batch`` per round; each is split on a
    neuron chosen by filtered smart branching — the ``candidates`` neurons with the largest estimated
    gain (:class:`~encoders.bounds.alpha.SplitContext`), each tried
    with one pass at the inherited multipliers, keeping the split whose worse child bounds best.
    The two children cover the parent (a point with ``z = 0`` lies in both), so VERIFIED when no open
    sub-domain is left is sound.  Children inherit the parent's ``α``, ``β`` (the new split's
    ``β = 0``) and are re-optimised for a few steps.  Attack: at every bounding, the box corner
    minimising each child's linear bound is evaluated; a violating point must replay on onnxruntime
    (:func:`verifier.replay.replay`) to make FALSIFIED.

    :meth:`advance` runs until a verdict or a deadline (then it can be called again and continues
    where it stopped); a sub-domain with nothing left to split or too many open sub-domains end the
    search undecided for good (``finished``).
    """

    def __init__(
        self,
        prop: OutputProperty,
        net: Network,
        lo: np.ndarray,
        hi: np.ndarray,
        bounds: LayerBounds,
        alt: Alternative,
        cfg: BabConfig = BabConfig(),
        slopes: dict | None = None,
    ) -> None:
        A, b = alt
        if A.shape[0] != 1:
            raise ValueError("BabSearch: single-row alternatives only")
        self.prop, self.net, self.lo, self.hi, self.cfg = prop, net, lo, hi, cfg
        self.A, self.thr = A, float(b[0])
        self.L = len(net.affines) - 1
        self.ctx = SplitContext(net, lo, hi, bounds.lower, bounds.upper, self.L, A[0], slopes)
        self.offsets = np.cumsum([0] + [lv.size for lv in self.ctx.live])
        self.stats: dict[str, Any] = {"bab_domains": 0, "bab_rounds": 0}
        # the open sub-domains; capped at max_domains rows and memory_mb of stored arrays (S int8 and
        # α, β, lw, uw float64 per live neuron: 33 bytes each, plus lb and choice: 16 bytes per domain)
        self.frontier: Frontier[_Domains] | None = None
        self.finished: BabOutcome | None = None

    def release(self) -> None:
        """Free the open sub-domains (memory); the search cannot be continued afterwards."""
        if self.frontier is not None:
            self.frontier.clear()

    # ---- helpers -----------------------------------------------------------------------------
    def _split_rows(
        self, S: list[np.ndarray], rows: np.ndarray, flat: np.ndarray, sign: np.ndarray
    ) -> list[np.ndarray]:
        """Copies of ``S[rows]`` with flat neuron index ``flat`` set to ``sign`` (row-wise)."""
        lay = np.searchsorted(self.offsets, flat, side="right") - 1
        out = []
        for j in range(self.L):
            Sj = S[j][rows].copy()
            sel = np.flatnonzero(lay == j)
            Sj[sel, flat[sel] - self.offsets[j]] = sign[sel]
            out.append(Sj)
        return out

    def _choose(self, S: list[np.ndarray], res: SplitBoundResult, bounds: Any = None) -> np.ndarray:
        """Branching neuron (flat index) per row; −1 when nothing is left to split."""
        m = res.lb.shape[0]
        choice = np.full(m, -1)
        if self.L == 0:
            return choice
        gain = np.concatenate(res.gain, axis=1)
        rows = np.flatnonzero((res.lb <= self.thr) & np.isfinite(gain).any(axis=1))
        if rows.size == 0:
            return choice
        K = max(1, min(self.cfg.candidates, gain.shape[1]))
        cand = np.argsort(-gain[rows], axis=1)[:, :K]
        valid = np.isfinite(np.take_along_axis(gain[rows], cand, axis=1))
        if K == 1:
            choice[rows] = cand[:, 0]
            return choice
        rep = np.repeat(rows, 2 * K)
        flat = np.repeat(cand.reshape(-1), 2)
        sign = np.tile(np.array([1, -1], dtype=np.int8), rows.size * K)
        kS = self._split_rows(S, rep, flat, sign)
        kb = None if bounds is None else ([a[rep] for a in bounds[0]], [a[rep] for a in bounds[1]])
        if kb is not None:
            self.ctx.apply_splits(kS, kb[0], kb[1])
        val, *_ = self.ctx.run(
            kS, [a[rep] for a in res.alpha], [bb[rep] for bb in res.beta], grad=False, bounds=kb
        )
        worse = np.where(valid, np.minimum(val[0::2], val[1::2]).reshape(rows.size, K), -np.inf)
        choice[rows] = cand[np.arange(rows.size), np.argmax(worse, axis=1)]
        return choice

    def _attack(self, res: SplitBoundResult) -> ReplayResult | None:
        xs = np.where(res.coef >= 0, self.lo, self.hi)
        marg = self.thr - self.net.evaluate(xs) @ self.A[0]
        for q in np.argsort(-marg)[:3]:
            if marg[q] >= 0:
                rep = replay(self.prop, {"net": self.net}, {"net": xs[q]})
                if rep.ok:
                    return rep
        return None

    def _done(self, verdict: Verdict | None, rep: ReplayResult | None = None, why: str = "") -> BabOutcome:
        if why:
            self.stats["bab_stop"] = why
        self.finished = BabOutcome(verdict, rep, self.stats)
        return self.finished

    # ---- the search --------------------------------------------------------------------------
    def advance(self, deadline: float) -> BabOutcome:
        """Search until a verdict, an undecidable state, or ``deadline`` (then ``verdict`` is None and
        ``finished`` stays None: call again to continue)."""
        if self.finished is not None:
            return self.finished
        ctx, cfg, L, st = self.ctx, self.cfg, self.L, self.stats
        st.pop("bab_stop", None)
        if self.frontier is None:
            S, al, be = ctx.initial(1)
            lw, uw = ctx.root_bounds(1)
            res = ctx.optimise(S, al, be, cfg.root_alpha, deadline, bounds=(lw, uw))
            st["bab_domains"] += 1
            rep = self._attack(res)
            if rep is not None:
                return self._done(Verdict.FALSIFIED, rep)
            root = _Domains.build(S, res.alpha, res.beta, lw, uw, res.lb, self._choose(S, res, (lw, uw)))
            self.frontier = Frontier(root, max_rows=cfg.max_domains, max_bytes=cfg.memory_mb * 1e6)
            self._push(root)
        front = self.frontier
        rounds_here = 0
        while True:
            if not len(front):
                st["bab_open"] = 0
                return self._done(Verdict.VERIFIED)
            n_open = len(front)
            st["bab_open"] = n_open
            if front.over_cap:
                return self._done(None, why="domain limit")
            if rounds_here and time.perf_counter() > deadline:  # at least one round per call
                st["bab_stop"] = "deadline"
                return BabOutcome(None, None, st)
            rounds_here += 1
            pool = front.rows
            take = lowest(pool.lb, cfg.batch)  # the worst lower bounds first
            if np.any(pool.choice[take] < 0):
                return self._done(None, why="a sub-domain with nothing left to split")
            st["bab_rounds"] += 1
            if cfg.trace and st["bab_rounds"] % 20 == 1:
                depth = sum((pool[f"S{j}"] != 0).sum(axis=1) for j in range(L))
                print(
                    f"round {st['bab_rounds']} open {n_open} worst lb-b {pool.lb.min() - self.thr:.4f} "
                    f"depth mean {depth.mean():.1f} max {depth.max()}",
                    flush=True,
                )
            parents = front.pop_at(take)
            rep2 = np.repeat(np.arange(len(parents)), 2)
            signs = np.tile(np.array([1, -1], dtype=np.int8), len(parents))
            flat = parents.choice[rep2]
            kS = self._split_rows(parents.layers("S"), rep2, flat, signs)
            lw = [a[rep2] for a in parents.layers("lw")]
            uw = [a[rep2] for a in parents.layers("uw")]
            if cfg.refine:
                start = np.searchsorted(self.offsets, flat, side="right")  # layer of the split + 1
                lw, uw, empty = ctx.refine(kS, lw, uw, start, depth=cfg.refine_depth)
            else:
                ctx.apply_splits(kS, lw, uw)
                empty = np.zeros(rep2.size, dtype=bool)
            res = ctx.optimise(
                kS,
                [a[rep2] for a in parents.layers("a")],
                [bb[rep2] for bb in parents.layers("b")],
                cfg.alpha,
                deadline,
                bounds=(lw, uw),
            )
            lb = np.where(empty, np.inf, res.lb)  # an empty sub-domain has no violation
            st["bab_domains"] += rep2.size
            rep = self._attack(res)
            if rep is not None:
                return self._done(Verdict.FALSIFIED, rep)
            choice = self._choose(kS, res, (lw, uw))
            self._push(_Domains.build(kS, res.alpha, res.beta, lw, uw, lb, choice))

    def _push(self, kids: _Domains) -> None:
        """Open sub-domains to the frontier: those with ``lb ≤ b`` (the others hold no violation)."""
        assert self.frontier is not None
        self.frontier.push(kids.take(np.flatnonzero(kids.lb <= self.thr)))


def bab_alternative(
    prop: OutputProperty,
    net: Network,
    lo: np.ndarray,
    hi: np.ndarray,
    bounds: LayerBounds,
    alt: Alternative,
    deadline: float,
    cfg: BabConfig = BabConfig(),
) -> BabOutcome:
    """:class:`BabSearch` on one alternative until ``deadline`` (multi-row alternatives: undecided)."""
    if alt[0].shape[0] != 1:
        return BabOutcome(None, None, {"bab": "multi-row alternative"})
    return BabSearch(prop, net, lo, hi, bounds, alt, cfg).advance(deadline)


class ReluSplitSettings(Protocol):
    """What :func:`solve_output_property` reads from the dispatcher's configuration
    (:class:`verifier.dispatch.DispatchConfig` has these attributes; the search does not import the
    dispatcher, which imports it)."""

    @property
    def backend(self) -> str: ...

    @property
    def timeout(self) -> float: ...

    @property
    def threads(self) -> int: ...

    @property
    def seed(self) -> int: ...

    @property
    def samples(self) -> int: ...

    @property
    def in_process(self) -> bool: ...

    @property
    def relu_split(self) -> MarginConfig: ...


def relu_split_stage(
    prop: Property, nets: Mapping[str, Network], config: ReluSplitSettings, t0: float
) -> Result | None:
    """The ``"relu_split"`` search as a stage of :func:`verifier.dispatch.verify`: a single-network
    query (namespace ``"net"``) by :func:`solve_output_property` with ``config.relu_split``, answered
    by ``t0 + config.timeout``; ``None`` (passed on) for anything it does not handle."""
    if set(nets) != {"net"}:
        return None
    res = solve_output_property(prop, nets["net"], config, t0 + config.timeout)
    return None if res is None else replace(res, time_s=time.perf_counter() - t0)


def solve_output_property(
    prop: Property,
    net: Network,
    config: ReluSplitSettings,
    deadline: float,
    margin: MarginConfig | None = None,
) -> Result | None:
    """Decide a single-network output property alternative by alternative (module docstring).

    Parameters
    ----------
    prop
        :class:`~encoders.properties.OutputDNFProperty` or L∞
        :class:`~encoders.properties.LocalRobustness`; anything else returns ``None``.
    config
        A :class:`~verifier.dispatch.DispatchConfig` (:class:`ReluSplitSettings`: ``backend``,
        ``threads``, ``seed``, ``samples``, ``in_process`` and ``relu_split`` are read; ``samples = 0``
        disables the attacks).  Backends other than ``auto``, ``gurobi``, ``highs`` and ``portfolio``
        return ``None``.
    deadline
        ``time.perf_counter()`` value by which to answer (TIMEOUT after it).
    margin
        The search's settings; default ``config.relu_split``.

    Returns
    -------
    Result or None
        ``None``: not handled here, the caller falls back to its general path.
    """
    cfg = margin if margin is not None else config.relu_split
    want = config.backend
    if want not in ("auto", "portfolio") and not solves_milp(want):
        return None
    alts = alternatives_of(prop, net.n_outputs)
    if alts is None or not alts or not isinstance(prop, OutputProperty) or prop.ns != "net":
        return None
    lo, hi = _box(prop)
    if lo.size != net.n_inputs or any(A.shape[1] != net.n_outputs for A, _ in alts):
        return None
    run = _Run(time.perf_counter())
    st = run.stats
    attack = config.samples > 0
    rng = np.random.default_rng(config.seed)

    def falsified(rep: ReplayResult, how: str) -> Result:
        return run.result(
            Verdict.FALSIFIED,
            "attack",
            f"counterexample found by {how}; replayed on onnxruntime",
            rep.counterexample,
        )

    if any(A.shape[0] == 0 for A, _ in alts):  # an empty conjunction: every point of the box violates
        rep = replay(prop, {"net": net}, {"net": 0.5 * (lo + hi)})
        return falsified(rep, "the box centre (an alternative without constraints)") if rep.ok else None
    # 1. CROWN: rule out alternatives
    t = time.perf_counter()
    base = crown_bounds(net, lo, hi)
    possible = [
        k
        for k, (A, b) in enumerate(alts)
        if not np.any(_alternative_bounds(net, lo, hi, base, A, None, deadline)[0] > b)
    ]
    st.update(
        crown_s=time.perf_counter() - t,
        unstable_crown=base.unstable_counts(),
        alternatives=len(alts),
        possible_crown=len(possible),
    )
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
    slopes: dict = {}  # the optimised intermediate slopes (warm starts of BaB's refinement)
    ub_margin: dict[int, float] = {}
    corners: dict[int, np.ndarray] = {}
    if cfg.tighten and len(net.affines) > 1:
        t = time.perf_counter()
        bounds = tighten_bounds(net, lo, hi, base, cfg.alpha, deadline, slopes=slopes)
        keep = []
        for k in possible:
            A, b = alts[k]
            lb, cor = _alternative_bounds(net, lo, hi, bounds, A, cfg.output_alpha, deadline)
            if np.any(lb > b):
                continue
            keep.append(k)
            ub_margin[k] = float(np.min(b - lb))  # t_k = min_r (b − A y)_r ≤ min_r (b_r − lb_r)
            if cor is not None:
                corners[k] = cor
        possible = keep
        st.update(
            tighten_s=time.perf_counter() - t,
            unstable_alpha=bounds.unstable_counts(),
            possible_alpha=len(possible),
        )
        if not possible:
            return run.result(
                Verdict.VERIFIED, "alpha-crown", "every alternative ruled out by α-CROWN bounds"
            )
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
    # 5–6. β-CROWN branch and bound in this process, margin MILPs in solver children beside it
    with SolveGroup() as group:
        race = _Race(prop, net, (lo, hi), bounds, alts, slopes, config, cfg, run, deadline, group)
        return race.decide(possible)


class _Race:
    """Steps 5 and 6 of :func:`solve_output_property`: every possible alternative is decided by
    branch and bound in this process or by its margin MILP in a solver child, whichever answers
    first.

    Branch and bound runs round robin over the alternatives it is still searching, with time slices
    that double per round (capped at ``4·bab_slice`` while MILPs run, so that their answers are read
    promptly).  An alternative goes to the MILP queue when branch and bound cannot decide it
    (multi-row, nothing left to split, the domain limit), when it fits Gurobi's licence with at most
    ``milp_first`` binaries (deep networks), or after ``bab_budget`` CPU seconds of branch and bound
    when its MILP fits Gurobi's licence.

    Scheduling (2 cores: this process and one solver child).  While some alternative has not been
    handed to the MILP (*fresh*), this process runs branch and bound on the fresh ones only, and
    ``MarginConfig.milp_jobs`` MILP children run beside it.  Once every alternative has been handed
    off, ``milp_jobs + 1`` children may run and this process waits for them; only when no queued MILP
    is waiting for a slot does it go back to branch and bound on the handed-off alternatives, racing
    their MILPs (whichever closes an alternative first stops the other).  On mnistfc 256x4
    prop_3_0.03 branch and bound prunes almost nothing after its budget while Gurobi proves an
    alternative in 25–160 s, so the second core is worth more to a second MILP than to branch and
    bound.  Each child has the hard time limit of the instance's deadline; the caller's ``with
    SolveGroup()`` block kills any child still running when the answer is known.
    """

    def __init__(
        self,
        prop: OutputProperty,
        net: Network,
        box: tuple[np.ndarray, np.ndarray],
        bounds: LayerBounds,
        alts: Sequence[Alternative],
        slopes: dict,
        config: ReluSplitSettings,
        cfg: MarginConfig,
        run: _Run,
        deadline: float,
        group: SolveGroup,
    ) -> None:
        self.prop, self.net, self.bounds, self.alts, self.slopes = prop, net, bounds, alts, slopes
        self.group = group  # the solver children (the caller's ``with`` block kills them)
        self.lo, self.hi = box
        self.config, self.cfg, self.run, self.deadline = config, cfg, run, deadline
        self.per_alt: dict[int, dict[str, Any]] = {}
        run.stats["per_alt"] = self.per_alt
        self.searches: dict[int, BabSearch] = {}  # branch and bound still searching
        self.queue: list[int] = []  # waiting for a MILP child
        self.jobs: dict[int, SolveJob] = {}
        self.undecided: dict[int, Result] = {}  # MILP answered without deciding, search over
        self.open: set[int] = set()
        self.closed_by: dict[int, str] = {}  # alternative → what closed it ("bab" or the MILP backend)
        self._fits: dict[int, tuple[bool, int]] = {}
        self._programs: dict[tuple[int, bool], tuple[Program, EncodingInfo]] = {}
        self.handed: set[int] = set()  # alternatives given to the MILP (queued, running or answered)

    # ---- the MILPs -----------------------------------------------------------------------------
    def _encode(self, k: int, objective: bool) -> tuple[Program, EncodingInfo]:
        """Alternative ``k``'s margin MILP, built once (the size check and the solve share it; nothing
        mutates it: a child gets a copy at its fork)."""
        key = (k, objective)
        if key not in self._programs:
            lw, uw = self.bounds.lower, self.bounds.upper
            self._programs[key] = encode_alternative(
                self.net, self.lo, self.hi, lw, uw, self.alts[k], self.cfg.monotone, objective, "net"
            )
        return self._programs[key]

    def milp_size(self, k: int) -> tuple[bool, int]:
        """Would alternative ``k``'s MILP go to Gurobi (fits its licence, the backend allows it), and
        its number of binaries."""
        if k not in self._fits:
            prog, info = self._encode(k, self.cfg.objective)
            gurobi = choose_backend(self.config.backend, prog, milp_only=True) == "gurobi"
            self._fits[k] = (gurobi, info.binaries_hidden + info.exact_last)
        return self._fits[k]

    def _to_milp(self, k: int) -> None:
        if k in self.open and k not in self.handed:
            self.handed.add(k)
            self.queue.append(k)

    def _start(self, k: int, maximise: bool = False, backend: str | None = None) -> bool:
        """Start alternative ``k``'s MILP (``maximise``: keep the margin objective); False when no
        MILP backend takes it (the caller's general path then decides the whole query)."""
        prog, info = self._encode(k, self.cfg.objective or maximise)
        backend = backend or choose_backend(self.config.backend, prog, milp_only=True)
        if backend is None:
            return False
        params: dict[str, Any] = {}
        if backend == "gurobi":
            gp = dict(self.cfg.gurobi_params)
            if prog.objective is not None:
                gp.setdefault("BestObjStop", self.cfg.objective_stop)
            params = {"params": gp}
        elif not maximise:
            prog = _without_objective(prog)
        left = max(0.0, self.deadline - time.perf_counter())
        tag = (k, prog, maximise)
        job = self.group.start(backend, prog, left, self.config.threads, params=params, tag=tag)
        self.jobs[k] = job
        rec = self.per_alt.setdefault(k, {"alt": k})
        rec.update(binaries=info.binaries_hidden + info.exact_last, relaxed_last=info.relaxed_last)
        rec.setdefault("milp_started_s", round(time.perf_counter() - self.run.t0, 3))
        return True

    def _fresh(self) -> list[int]:
        """Alternatives branch and bound searches that have no MILP yet (they come first)."""
        return [k for k in self.searches if k not in self.handed]

    def _slots(self) -> int:
        """MILP children allowed now: ``milp_jobs``, one more when no alternative is fresh."""
        return self.cfg.milp_jobs + (0 if self._fresh() else 1)

    def _fill(self) -> bool:
        """Start queued MILPs while slots are free; False if some alternative has no MILP backend."""
        while self.queue and len(self.jobs) < self._slots():
            k = self.queue.pop(0)
            if k in self.open and not self._start(k):
                return False
        return True

    def _milp_answer(self, job: SolveJob) -> Result | None:
        """Read a finished MILP: close its alternative, return FALSIFIED, or record it as undecided."""
        k, prog, maximise = job.tag
        self.jobs.pop(k, None)
        out = job.outcome
        assert out is not None
        if k not in self.open:
            return None
        self.run.version = out.solver_version or self.run.version
        rec = self.per_alt.setdefault(k, {"alt": k})
        rec.update(
            milp_backend=job.backend,
            milp_status=out.status.value,
            milp_time_s=round(out.time_s, 3),
            nodes=out.stats.get("nodes"),
            variables=out.stats.get("variables"),
            constraints=out.stats.get("constraints"),
        )
        if out.stats.get("licence_limit") and job.backend == "gurobi":  # the open fallback
            self._start(k, maximise, backend="highs")
            return None
        if out.status is SolveStatus.UNSAT:
            self._close(k, job.backend)
            return None
        rep = _replay_candidate(self.prop, self.net, prog, out)
        if rep is not None:
            rec["replay"] = rep.reason
            if rep.ok:
                return self.run.result(
                    Verdict.FALSIFIED,
                    job.backend,
                    f"alternative {k}: MILP counterexample replayed on onnxruntime",
                    rep.counterexample,
                )
            if not maximise and prog.objective is None and time.perf_counter() < self.deadline:
                # a feasibility search stops at the first point, typically on the margin's boundary,
                # where float32 replay can land a hair on the safe side: look for the largest margin
                self._start(k, maximise=True, backend=job.backend)
                return None
            why = f"solver candidate rejected: {rep.reason}"
            self.undecided[k] = self.run.result(Verdict.UNKNOWN, job.backend, f"alternative {k}: {why}")
        else:
            verdict = {SolveStatus.TIMEOUT: Verdict.TIMEOUT, SolveStatus.ERROR: Verdict.ERROR}.get(
                out.status, Verdict.UNKNOWN
            )
            msg = f"alternative {k}: {out.message or out.status.value}"
            self.undecided[k] = self.run.result(verdict, job.backend, msg)
        return None

    def _deciders(self) -> str:
        """What closed alternatives so far, e.g. ``"bab+gurobi"`` (empty when nothing did)."""
        return "+".join(sorted(set(self.closed_by.values())))

    def _close(self, k: int, how: str) -> None:
        """Alternative ``k`` is ruled out (by ``how``): stop whatever else still works on it."""
        self.open.discard(k)
        if k in self.jobs:
            self.group.cancel(self.jobs.pop(k))
        self.closed_by[k] = how
        if k in self.searches:
            self.searches.pop(k).release()  # free its sub-domains (memory)
        if k in self.queue:
            self.queue.remove(k)

    # ---- branch and bound ----------------------------------------------------------------------
    def _slice(self, k: int, until: float) -> Result | None:
        """One time slice of branch and bound on alternative ``k``."""
        cfg = self.cfg
        t, c = time.perf_counter(), time.process_time()
        search = self.searches[k]
        bo = search.advance(min(self.deadline, until))
        rec = self.per_alt.setdefault(k, {"alt": k})
        rec.setdefault("backend", "bab")
        rec["time_s"] = round(rec.get("time_s", 0.0) + time.perf_counter() - t, 3)
        rec["cpu_s"] = round(rec.get("cpu_s", 0.0) + time.process_time() - c, 3)
        rec.update(bo.stats)
        if bo.verdict is Verdict.VERIFIED:
            self._close(k, "bab")
        elif bo.verdict is Verdict.FALSIFIED and bo.replay is not None:
            return self.run.result(
                Verdict.FALSIFIED,
                "bab",
                f"alternative {k}: counterexample found during branch and bound; replayed on onnxruntime",
                bo.replay.counterexample,
            )
        elif search.finished is not None:  # undecidable by branch and bound: the MILP only
            self.searches.pop(k).release()
            self._to_milp(k)
        elif (
            cfg.bab_budget is not None
            and rec["cpu_s"] >= cfg.bab_budget
            and k not in self.handed
            and self.milp_size(k)[0]
        ):
            self._to_milp(k)  # over its budget: Gurobi's MILP races branch and bound from now on
            rec["handoff"] = "milp"
        return None

    # ---- the whole race ------------------------------------------------------------------------
    def decide(self, possible: Sequence[int]) -> Result | None:
        cfg, alts = self.cfg, self.alts
        group = self.group
        self.open = set(possible)
        bab = [k for k in possible if cfg.use_bab and alts[k][0].shape[0] == 1]
        self.queue = [k for k in possible if k not in bab]
        if cfg.milp_first and len(self.net.affines) - 1 >= cfg.milp_first_depth:  # small MILPs first
            small = [k for k in bab if self.milp_size(k)[0] and self.milp_size(k)[1] <= cfg.milp_first]
            bab = [k for k in bab if k not in small]
            self.queue += small
        self.handed = set(self.queue)
        share = replace(cfg.bab, memory_mb=max(1, cfg.bab.memory_mb // max(1, len(bab))))
        for k in bab:
            self.searches[k] = BabSearch(
                self.prop, self.net, self.lo, self.hi, self.bounds, alts[k], share, self.slopes
            )
        slice_s = cfg.bab_slice
        while self.open:
            if time.perf_counter() > self.deadline:
                where = "branch and bound" if self.searches else "the MILPs"
                return self.run.result(
                    Verdict.TIMEOUT,
                    self._deciders() or "bab",
                    f"time limit reached in {where} with {len(self.open)} alternatives open",
                )
            if not self._fill():
                return None
            for job in group.wait(until=time.perf_counter()):
                if (res := self._milp_answer(job)) is not None:
                    return res
            # this process's core: branch and bound on the fresh alternatives (until their budget),
            # else racing the MILPs when no queued MILP is waiting for a free slot
            fresh = self._fresh()
            if fresh or (self.searches and not self.queue and len(self.jobs) < self._slots()):
                turn = fresh or list(self.searches)
                for k in [k for k in possible if k in turn]:  # one round of the round robin
                    span = min(slice_s, 4 * cfg.bab_slice) if (self.jobs or self.queue) else slice_s
                    if k not in self.handed and cfg.bab_budget is not None and self.milp_size(k)[0]:
                        used = self.per_alt.get(k, {}).get("cpu_s", 0.0)  # stop at the hand-off
                        span = min(span, max(0.05, cfg.bab_budget - used))
                    if (res := self._slice(k, time.perf_counter() + span)) is not None:
                        return res
                    for job in group.wait(until=time.perf_counter()):
                        if (res := self._milp_answer(job)) is not None:
                            return res
                    if not self.open or time.perf_counter() > self.deadline:
                        break
                    if not self._fill():
                        return None
                slice_s *= 2.0
            elif self.jobs:
                for job in group.wait(until=self.deadline):
                    if (res := self._milp_answer(job)) is not None:
                        return res
            elif not self.queue:
                break  # nothing left that could decide the open alternatives
        if self.open:
            k = min(self.open)
            undecided = self.undecided.get(k)
            if undecided is not None:
                return replace(undecided, time_s=time.perf_counter() - self.run.t0)
            return self.run.result(Verdict.UNKNOWN, "bab", f"alternative {k}: undecided")
        by = list(self.closed_by.values())
        n_alts, n_poss = len(alts), len(possible)
        return self.run.result(
            Verdict.VERIFIED,
            self._deciders() or "bounds",
            f"all {n_alts} alternatives ruled out: {n_alts - n_poss} by bounds, "
            f"{by.count('bab')} by branch and bound, {n_poss - by.count('bab')} by MILP",
        )


def _replay_candidate(
    prop: OutputProperty, net: Network, prog: Program, out: Outcome
) -> ReplayResult | None:
    """Replay (then polish) the input part of a solver's assignment; None when there is none."""
    if out.assignment is None or out.status not in (
        SolveStatus.SAT,
        SolveStatus.OPTIMAL,
        SolveStatus.UNKNOWN,
        SolveStatus.TIMEOUT,
    ):
        return None
    xs = {"net": np.asarray(out.assignment)[prog.blocks["net"]["input"]]}
    rep = replay(prop, {"net": net}, xs)
    if not rep.ok:
        pol = polish(prop, {"net": net}, xs)
        rep = pol if pol.ok else rep
    return rep


def _without_objective(prog: Program) -> Program:
    if prog.objective is None:
        return prog
    p = prog.copy()
    p.objective = None
    return p
