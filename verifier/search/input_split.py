r"""Branch and bound over input splitting, for networks with few inputs (ACAS Xu has 5).

Query
    ∃ x ∈ X:  OR_k AND_{r∈k} (c_r·f(x) ≤ d_r)          (X a box, or an L2 ball's bounding box)

An :class:`~encoders.properties.OutputDNFProperty` is this query as is; a
:class:`~encoders.properties.LocalRobustness` query is the DNF ``OR_{j≠c} ((e_c − e_j)·y ≤ 0)``
over its box (ties count as violations, exactly as in the property; for L2, boxes that miss the
ball are dropped and candidates must lie in the ball).  All rows of all alternatives are stacked
into one specification matrix ``C`` (rows ``c_r``, right-hand sides ``d_r``).

Node = an input sub-box ``[l, u] ⊆ X``.  Per batch of nodes:

* **bound** — :func:`encoders.bounds.crown_bounds` (intermediate bounds) and
  :func:`encoders.bounds.crown_linear` give ``lb_r ≤ min_{x∈[l,u]} c_r·f(x)`` for every row, for
  the whole batch in one call (rounding-widened, hence sound in floating point);
* **prune** — alternative ``k`` is impossible on the box when some row has ``lb_r > d_r``; failing
  that, when a nonnegative combination of its rows is bounded above ``Σ λ_r d_r`` (the
  *combination test*, :meth:`_Search.combination_test`: it closes boxes that straddle the surface
  where the deciding row changes, which no single row can).  A node is closed when every
  alternative is impossible.  Its score is ``s = min_{k possible} max_{r∈k} (lb_r − d_r) ≤ 0``;
* **attack** — every open child's centre is evaluated (float64) and the worst children get a few
  steps of projected sign-gradient descent on the point value
  ``v(x) = min_k max_{r∈k} (c_r·f(x) − d_r)`` (``v ≤ 0`` ⇔ x violates).  ``f`` is piecewise linear,
  so on the linear piece of x the gradient of ``c_r·f`` is ``c_r J(x)`` with
  ``J(x) = W_L D_{L−1} W_{L−1} ⋯ D_0 W_0`` (``D_j`` the 0/1 activation pattern at x).  A point with
  ``v ≤ 0`` is only a *candidate*: it is projected into the exact input region, re-checked with
  ``prop.violated`` and replayed on onnxruntime (:func:`verifier.replay.replay`); only a replayed
  point makes FALSIFIED;
* **branch** — the box is bisected at the midpoint of one input dimension chosen by the split rule.

Soundness.  The boxes of the open and the closed nodes always cover the root box (bisection at the
midpoint, both halves closed intervals).  A node is closed only by a sound bound, so VERIFIED (no
open node left) implies that no x in X violates.  UNDECIDED returns the open nodes (*leaves*) with
their still-possible alternatives; a violation exists iff one exists in some leaf for one of that
leaf's possible alternatives, so the caller may settle each leaf with an exact solver.

Search order.  The open nodes live in a :class:`~verifier.search.frontier.Frontier` (nodes with no
splittable dimension left in a second one).  Each batch takes half of its ``batch_size`` nodes by
lowest score (the loosest lower bounds) and half by lowest ``vmin`` (the best point value seen in the
box), which steers the search towards narrow violation regions without changing the work needed to
verify; children are appended after the nodes left open.

Split rules (``BabConfig.split``), with ``w_i = u_i − l_i``:

* ``"relu"`` (default) — argmax_i of the instability preference
  ``p_i = Σ_{j unstable} γ_j |J_ji| w_i / Σ_i' |J_ji'| w_i'`` (``γ_j = −l_j u_j/(u_j − l_j)²`` the
  relative gap of neuron j's triangle relaxation, ``J`` the Jacobian of its pre-activation at the
  box centre): split where the loose ReLUs get their width from;
* ``"smear"`` — argmax_i |g_i| w_i with ``g`` the gradient of the node's deciding row at the centre
  (ReluVal's smear with a point gradient);
* ``"widest"`` — argmax_i w_i / W_i (``W`` the root widths);
* ``"hybrid"`` — bound the children for both the ``relu`` and the ``smear`` choice and keep the
  dimension whose worse child has the higher score (twice the bounding work per node).

Measured on the 180 VNN-COMP 2021 ACAS Xu instances (see the report in ``tests/test_bab.py``'s
slow test): ``relu`` needed the fewest nodes; ``smear`` fails on property 1 (the output is nearly
flat, the loose ReLUs are not) and ``widest`` on properties 3–4.
"""

from __future__ import annotations

import enum
import time
from collections.abc import Callable, Mapping
from dataclasses import dataclass, field, replace
from typing import Any, Protocol

import numpy as np

from encoders.bounds import LayerBounds, crown_bounds, crown_linear
from encoders.bounds.rounding import U as _U  # unit roundoff of float64
from encoders.errors import ConfigError, UnsupportedQueryError
from encoders.network import Affine, Network
from encoders.properties import LocalRobustness, OutputDNFProperty, OutputProperty, Property

from ..replay import replay
from ..results import Counterexample, Result, Verdict
from .frontier import Batch, Frontier, lowest

__all__ = [
    "BabStatus",
    "BabConfig",
    "BabLeaves",
    "BabOutcome",
    "bab_verify",
    "bab_supported",
    "SPLIT_RULES",
    "BabLeafQueries",
    "InputSplitSettings",
    "bab_stage",
    "search_config",
]


class BabStatus(str, enum.Enum):
    """What branch and bound concluded (only VERIFIED and FALSIFIED are verdicts)."""

    VERIFIED = "verified"  # every node closed by sound bounds
    FALSIFIED = "falsified"  # a candidate replayed on onnxruntime
    UNDECIDED = "undecided"  # budget exhausted: the open nodes are returned as leaves


@dataclass(frozen=True)
class BabConfig:
    """Branch-and-bound settings.

    Attributes
    ----------
    batch_size
        Nodes popped per iteration (each is bisected, so ``2·batch_size`` boxes per bounding call).
    split
        Split rule, a key of :data:`SPLIT_RULES`.
    attack_samples, attack_starts, attack_steps, attack_eta
        Initial attack on the root box: ``attack_samples`` uniform points are evaluated, the best
        ``attack_starts`` of them start ``attack_steps`` PGD steps of initial size ``attack_eta`` (relative to
        the box width, decaying linearly).
    attack_boxes, attack_box_steps
        Per iteration, the worst ``attack_boxes`` new nodes get ``attack_box_steps`` PGD steps (initial size
        a quarter of the node's width).
    max_open
        Cap on open nodes (memory); reaching it ends the search as UNDECIDED.
    min_width
        Dimensions narrower than this (absolute) are never split; a node with no splittable
        dimension stays open.
    combine
        Try to rule out multi-row alternatives by a nonnegative combination of their rows
        (see :meth:`_Search.combination_test`).
    seed
        Random seed of the attack.
    """

    batch_size: int = 512
    split: str = "relu"
    attack_samples: int = 4096
    attack_starts: int = 128
    attack_steps: int = 100
    attack_eta: float = 0.05
    attack_boxes: int = 32
    attack_box_steps: int = 15
    max_open: int = 500_000
    combine: bool = True
    min_width: float = 1e-9
    seed: int = 0

    def __post_init__(self) -> None:
        if self.split not in SPLIT_RULES:
            raise ConfigError(
                f"bab split: unknown rule {self.split!r} (choose from {', '.join(SPLIT_RULES)})"
            )
        if self.batch_size < 1:
            raise ConfigError(f"bab batch_size: must be at least 1, got {self.batch_size}")
        if self.max_open < 1 or self.min_width < 0:
            raise ConfigError(
                f"bab: max_open must be ≥ 1 and min_width ≥ 0 (got {self.max_open}, {self.min_width})"
            )
        counts = (
            self.attack_samples,
            self.attack_starts,
            self.attack_steps,
            self.attack_boxes,
            self.attack_box_steps,
        )
        if min(counts) < 0 or not self.attack_eta > 0:
            raise ConfigError("bab attack settings: counts must be ≥ 0 and attack_eta > 0")


@dataclass(frozen=True, eq=False)
class BabLeaves:
    """Open nodes: boxes ``lo[i] ≤ x ≤ hi[i]`` and the alternatives still possible on each."""

    lo: np.ndarray  # (N, n)
    hi: np.ndarray  # (N, n)
    possible: np.ndarray  # (N, K) bool
    score: np.ndarray  # (N,) best lower-bound slack (≤ 0), most promising alternative

    def __len__(self) -> int:
        return int(self.lo.shape[0])


@dataclass(frozen=True, eq=False)
class BabOutcome:
    """Result of :func:`bab_verify`."""

    status: BabStatus
    time_s: float
    counterexample: Counterexample | None = None
    leaves: BabLeaves | None = None
    stats: dict[str, Any] = field(default_factory=dict)

    @property
    def x(self) -> np.ndarray | None:
        return None if self.counterexample is None else self.counterexample.x


# --------------------------------------------------------------------------------------------------
# the query as a DNF over one box
# --------------------------------------------------------------------------------------------------
@dataclass(frozen=True, eq=False)
class _Spec:
    """``OR_k AND_{r∈k} c_r·y ≤ d_r`` over ``[lo, hi]``; rows of alternative k are ``starts[k]…``."""

    lo: np.ndarray
    hi: np.ndarray
    C: np.ndarray  # (R, n_out)
    d: np.ndarray  # (R,)
    starts: np.ndarray  # (K,) first row of each alternative
    ns: str
    ball: tuple[np.ndarray, float] | None = None  # L2 region: (x0, eps)

    @property
    def n_alts(self) -> int:
        return int(self.starts.size)

    @property
    def sizes(self) -> np.ndarray:
        """Number of rows of each alternative."""
        return np.diff(np.append(self.starts, self.d.size))

    def alt_slack(self, rows: np.ndarray) -> np.ndarray:
        """``max_{r∈k} (rows_r − d_r)`` per alternative: ``(B, R) → (B, K)``."""
        return np.maximum.reduceat(rows - self.d, self.starts, axis=1)

    def value(self, y: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
        """Point values ``v = min_k max_{r∈k}(c_r·y − d_r)`` and deciding rows for outputs ``(P, n_out)``."""
        s = y @ self.C.T - self.d  # (P, R)
        alt = np.maximum.reduceat(s, self.starts, axis=1)  # (P, K)
        k = np.argmin(alt, axis=1)
        v = alt[np.arange(y.shape[0]), k]
        # deciding row: argmax within alternative k
        ends = np.append(self.starts[1:], s.shape[1])
        masked = np.where(
            (np.arange(s.shape[1])[None, :] >= self.starts[k][:, None])
            & (np.arange(s.shape[1])[None, :] < ends[k][:, None]),
            s,
            -np.inf,
        )
        return v, np.argmax(masked, axis=1)

    def meets_region(self, lo: np.ndarray, hi: np.ndarray) -> np.ndarray:
        """Boxes that may meet the input region (always true for a box region).

        For an L2 ball, a box is dropped only when its distance to ``x0`` (computed in floating point)
        exceeds ``ε`` by more than a slack ``10⁻¹²(ε + max|x0| + 1)`` that covers the rounding of the
        differences and of the norm, so a box that truly meets the ball is always kept.
        """
        if self.ball is None:
            return np.ones(lo.shape[0], dtype=bool)
        x0, eps = self.ball
        gap = np.maximum(np.maximum(lo - x0, x0 - hi), 0.0)
        slack = 1e-12 * (eps + float(np.max(np.abs(x0), initial=0.0)) + 1.0)
        return np.sqrt(np.einsum("ij,ij->i", gap, gap)) <= eps + slack


def _stack(
    alts: list[tuple[np.ndarray, np.ndarray]], n_out: int
) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    Cs, ds, starts, r = [], [], [], 0
    for A, b in alts:
        A = np.atleast_2d(np.asarray(A, dtype=np.float64))
        b = np.asarray(b, dtype=np.float64).reshape(-1)
        if A.shape[1] != n_out or A.shape[0] != b.size or A.shape[0] == 0:
            raise UnsupportedQueryError(
                f"alternative with matrix {A.shape} and {b.size} bounds for {n_out} outputs"
            )
        Cs.append(A)
        ds.append(b)
        starts.append(r)
        r += A.shape[0]
    if not Cs:
        return np.zeros((0, n_out)), np.zeros(0), np.zeros(0, dtype=np.intp)
    return np.vstack(Cs), np.concatenate(ds), np.asarray(starts, dtype=np.intp)


def _spec_output(prop: OutputProperty, net: Network) -> _Spec:
    """The query's DNF (:meth:`~encoders.properties.OutputProperty.output_dnf`) over its box, and the
    L2 ball that cuts the region, if any."""
    C, d, starts = _stack(prop.output_dnf(net.n_outputs), net.n_outputs)
    lo, hi = prop.region()
    return _Spec(lo, hi, C, d, starts, prop.ns, prop.ball())


_SPEC_BUILDERS: dict[type, Callable[[OutputProperty, Network], _Spec]] = {
    OutputDNFProperty: _spec_output,
    LocalRobustness: _spec_output,
}


def bab_supported(prop: Property) -> bool:
    """Whether :func:`bab_verify` takes this property type."""
    return type(prop) in _SPEC_BUILDERS


# --------------------------------------------------------------------------------------------------
# concrete evaluation: values and gradients
# --------------------------------------------------------------------------------------------------
def _forward(net: Network, x: np.ndarray) -> tuple[np.ndarray, list[np.ndarray]]:
    """Outputs and activation patterns (``z > 0``) of every ReLU layer for points ``(P, n)``."""
    h = x
    masks = []
    for lay in net.layers:
        if isinstance(lay, Affine):
            h = h @ lay.W.T + lay.b
        else:
            m = h > 0
            masks.append(m)
            h = h * m
    return h, masks


def _jacobian_rows(net: Network, masks: list[np.ndarray], Cm: np.ndarray) -> np.ndarray:
    """``C J(x_p)`` for a shared row block ``C (m, n_out)``: ``(P, m, n_in)``."""
    affines = net.affines
    P = masks[0].shape[0] if masks else 1
    g = np.broadcast_to(Cm @ affines[-1].W, (P, *((Cm @ affines[-1].W).shape)))
    for j in range(len(affines) - 2, -1, -1):
        g = (g * masks[j][:, None, :]) @ affines[j].W
    return np.asarray(g)


def _dual_weights(G: np.ndarray, e: np.ndarray, r: np.ndarray, iters: int = 40) -> np.ndarray:
    r"""Approximate ``argmax_{λ ∈ Δ} min_{|x−x_c| ≤ r} Σ_r λ_r (G_r·(x − x_c) + e_r)`` per box.

    The inner minimum is ``Σ λ e − |Σ λ G|·r`` (concave, piecewise linear in λ); exponentiated
    supergradient ascent on the simplex, keeping the best iterate.  ``G (B, m, n)``, ``e (B, m)``,
    ``r (B, n)`` → ``λ (B, m)``.
    """
    B, m, _ = G.shape
    lam = np.full((B, m), 1.0 / m)
    best = lam.copy()
    best_val = np.full(B, -np.inf)
    for _ in range(iters):
        a = np.einsum("bm,bmn->bn", lam, G)
        val = np.einsum("bm,bm->b", lam, e) - np.einsum("bn,bn->b", np.abs(a), r)
        better = val > best_val
        best[better], best_val[better] = lam[better], val[better]
        sup = e - np.einsum("bmn,bn->bm", G, np.sign(a) * r)  # g_r at the minimising vertex
        scale = np.maximum(np.abs(sup).max(axis=1, keepdims=True), 1e-300)
        lam = lam * np.exp(2.0 * sup / scale)
        lam /= lam.sum(axis=1, keepdims=True)
    return best


def _row_gradient(net: Network, masks: list[np.ndarray], c: np.ndarray) -> np.ndarray:
    """``c_p J(x_p)`` for rows ``c (P, n_out)``: backpropagation through the fixed activation pattern."""
    affines = net.affines
    g = c @ affines[-1].W
    for j in range(len(affines) - 2, -1, -1):
        g = (g * masks[j]) @ affines[j].W
    return g


def _relu_jacobians(net: Network, x: np.ndarray) -> list[np.ndarray]:
    r"""Transposed Jacobians ``(∂z_k/∂x)ᵀ`` of every ReLU layer's pre-activation at points ``x (P, n)``.

    Forward mode through the activation pattern of ``x``: ``J_0 = W_0``, ``J_k = W_k D_{k−1} J_{k−1}``,
    kept as ``(P, n, n_k)`` so that each step is one matrix product.
    """
    affines = net.affines
    P = x.shape[0]
    h = x
    Jt = np.broadcast_to(affines[0].W.T, (P, *affines[0].W.T.shape))
    out = []
    for k in range(len(affines) - 1):
        z = h @ affines[k].W.T + affines[k].b
        if k > 0:
            Jt = Jt @ affines[k].W.T
        out.append(Jt)
        m = z > 0
        h = z * m
        Jt = Jt * m[:, None, :]
    return out


# --------------------------------------------------------------------------------------------------
# the search state
# --------------------------------------------------------------------------------------------------
_NODE_FIELDS = ("lo", "hi", "possible", "score", "pref", "vmin", "bl", "bu", "lbc")


def _field(name: str, doc: str) -> Any:
    return property(lambda self: self[name], doc=doc)


class _Nodes(Batch):
    """A set of nodes as a :class:`~verifier.search.frontier.Batch` (parallel arrays).

    ``score`` is ``min_{k possible} max_{r∈k}(lb_r − d_r)`` (``+inf`` when closed); ``pref`` is the
    per-dimension split preference computed while bounding (see :func:`_instability_preference`);
    ``vmin`` is the lowest point value ``v`` seen in the box (an upper bound on its minimum, used to
    steer half of every batch towards likely violations).  ``bl``/``bu`` are the box's hidden-layer
    bounds (all layers concatenated) and ``lbc`` its lower bounds of the rows ``C f(x)``, kept so that
    the children's bounds can be intersected with them (a child box lies inside its parent, so the
    parent's bounds hold on it).  They are stored in float32 rounded *outwards* (one float32 ulp
    beyond round-to-nearest, so ``bl ≤`` the float64 bound ``≤ bu``), halving the memory per node.
    """

    __slots__ = ()

    def __init__(
        self,
        lo: np.ndarray,
        hi: np.ndarray,
        possible: np.ndarray,
        score: np.ndarray,
        pref: np.ndarray,
        vmin: np.ndarray,
        bl: np.ndarray,
        bu: np.ndarray,
        lbc: np.ndarray,
    ) -> None:
        super().__init__(dict(zip(_NODE_FIELDS, (lo, hi, possible, score, pref, vmin, bl, bu, lbc))))

    lo = _field("lo", "(N, n) lower corners")
    hi = _field("hi", "(N, n) upper corners")
    possible = _field("possible", "(N, K) bool, alternatives still possible")
    score = _field("score", "(N,) best lower-bound slack (+inf: closed)")
    pref = _field("pref", "(N, n) split preference")
    vmin = _field("vmin", "(N,) best point value found in the box so far (+inf: none evaluated)")
    bl = _field("bl", "(N, H) float32, hidden-layer lower bounds rounded down")
    bu = _field("bu", "(N, H) float32, hidden-layer upper bounds rounded up")
    lbc = _field("lbc", "(N, R) float32, lower bounds of C f(x) rounded down")

    @staticmethod
    def empty(n: int, K: int, H: int, R: int) -> _Nodes:
        f32 = np.float32
        return _Nodes(
            np.zeros((0, n)),
            np.zeros((0, n)),
            np.zeros((0, K), dtype=bool),
            np.zeros(0),
            np.zeros((0, n)),
            np.zeros(0),
            np.zeros((0, H), f32),
            np.zeros((0, H), f32),
            np.zeros((0, R), f32),
        )


def _down32(a: np.ndarray) -> np.ndarray:
    """float32 values ``≤ a`` (round to nearest, then one ulp down; ``±inf`` stay)."""
    return np.nextafter(np.asarray(a, dtype=np.float32), np.float32(-np.inf))


def _up32(a: np.ndarray) -> np.ndarray:
    """float32 values ``≥ a`` (round to nearest, then one ulp up; ``±inf`` stay)."""
    return np.nextafter(np.asarray(a, dtype=np.float32), np.float32(np.inf))


def _prior(net: Network, bl: np.ndarray, bu: np.ndarray) -> LayerBounds:
    """Stored hidden-layer bounds ``(N, H)`` as :class:`LayerBounds` (the output entry is unused)."""
    cuts = np.cumsum(net.hidden_sizes, dtype=np.intp)[:-1]
    hidden = bool(net.hidden_sizes)
    lows = np.split(bl.astype(np.float64), cuts, axis=1) if hidden else []
    ups = np.split(bu.astype(np.float64), cuts, axis=1) if hidden else []
    out = np.zeros((bl.shape[0], net.n_outputs))
    return LayerBounds((*lows, out), (*ups, out), "crown")


def _take_bounds(layers: LayerBounds, idx: np.ndarray) -> LayerBounds:
    """The layer bounds of the boxes ``idx`` of a batched result."""
    return LayerBounds(
        tuple(a[idx] for a in layers.lower), tuple(a[idx] for a in layers.upper), layers.method
    )


def _instability_preference(net: Network, lo: np.ndarray, hi: np.ndarray, layers: LayerBounds) -> np.ndarray:
    r"""How much bisecting each input dimension should tighten the ReLU relaxations of a box.

    For an unstable neuron ``j`` (``l_j < 0 < u_j``) the triangle relaxation's worst gap is
    ``−l_j u_j/(u_j − l_j)``; relative to the neuron's range this is ``γ_j = −l_j u_j/(u_j − l_j)² ∈ (0, ¼]``.
    With ``J`` the Jacobian of ``z_j`` at the box centre, dimension ``i`` accounts for the share
    ``|J_ji| w_i / Σ_i' |J_ji'| w_i'`` of the neuron's range, and halving ``w_i`` shrinks that share.
    The preference is ``p_i = Σ_{j unstable} γ_j · |J_ji| w_i / Σ_i' |J_ji'| w_i'`` (a heuristic only;
    it never affects soundness).
    """
    x = 0.5 * (lo + hi)
    w = hi - lo
    pref = np.zeros_like(lo)
    for Jt, zl, zu in zip(_relu_jacobians(net, x), layers.lower[:-1], layers.upper[:-1]):
        unstable = (zl < 0) & (zu > 0)
        if not unstable.any():
            continue
        gamma = np.where(unstable, -zl * zu / np.where(unstable, (zu - zl) ** 2, 1.0), 0.0)  # (P, n_k)
        contrib = np.abs(Jt) * w[:, :, None]  # (P, n, n_k)
        share = contrib / np.maximum(contrib.sum(axis=1, keepdims=True), 1e-300)
        pref += np.matmul(share, gamma[:, :, None])[:, :, 0]
    return pref


class _Search:
    """Open nodes, bounding, the attack, and the replay of candidates."""

    def __init__(self, prop: OutputProperty, net: Network, spec: _Spec, config: BabConfig, deadline: float):
        self.prop, self.net, self.spec, self.cfg, self.deadline = prop, net, spec, config, deadline
        self.rng = np.random.default_rng(config.seed)
        self.root_w = np.maximum(spec.hi - spec.lo, 0.0)
        empty = _Nodes.empty(spec.lo.size, spec.n_alts, int(sum(net.hidden_sizes)), spec.d.size)
        self.open: Frontier[_Nodes] = Frontier(empty)  # the nodes still to split
        self.stuck: Frontier[_Nodes] = Frontier(empty)  # open nodes with no splittable dimension left
        self.cex: Counterexample | None = None
        self.stats: dict[str, Any] = {
            "nodes_bounded": 0,
            "batches": 0,
            "closed": 0,
            "closed_by_combination": 0,
            "replays": 0,
            "failed_replays": 0,
            "time_bounds_s": 0.0,
            "time_attack_s": 0.0,
            "max_open": 0,
        }
        self._tried: set[bytes] = set()

    # ---- bounds ------------------------------------------------------------------------------
    def bound(
        self, lo: np.ndarray, hi: np.ndarray, possible: np.ndarray, parent: _Nodes | None = None
    ) -> _Nodes:
        """Bound boxes ``(B, n)``: prune alternatives soundly, score the boxes, compute split preferences.

        ``parent`` (one entry per box, e.g. the parents tiled for their two children) holds bounds valid
        on a superset of each box; they are intersected with the new ones (see :func:`crown_bounds`'s
        ``prior``).
        """
        t = time.perf_counter()
        spec = self.spec
        prior = None if parent is None else _prior(self.net, parent.bl, parent.bu)
        layers = crown_bounds(self.net, lo, hi, C=spec.C, prior=prior)  # last entry: C f(x)
        lb = np.asarray(layers.lower[-1]).reshape(lo.shape[0], -1)
        if parent is not None:
            lb = np.maximum(lb, parent.lbc)
        slack = spec.alt_slack(lb)  # (B, K)
        possible = possible & (slack <= 0.0) & spec.meets_region(lo, hi)[:, None]
        if self.cfg.combine:
            for k in np.flatnonzero(spec.sizes >= 2):
                idx = np.flatnonzero(possible[:, k])
                if idx.size:
                    closed = self.combination_test(lo[idx], hi[idx], layers, idx, k, lb[idx])
                    possible[idx[closed], k] = False
                    self.stats["closed_by_combination"] += int(closed.sum())
        score = np.where(possible, slack, np.inf).min(axis=1)
        pref = np.zeros_like(lo)
        live = np.isfinite(score)
        if live.any():
            pref[live] = _instability_preference(self.net, lo[live], hi[live], _take_bounds(layers, live))
        self.stats["time_bounds_s"] += time.perf_counter() - t
        self.stats["nodes_bounded"] += lo.shape[0]
        B = lo.shape[0]
        hidden_l = np.concatenate([np.zeros((B, 0)), *(np.atleast_2d(a) for a in layers.lower[:-1])], axis=1)
        hidden_u = np.concatenate([np.zeros((B, 0)), *(np.atleast_2d(a) for a in layers.upper[:-1])], axis=1)
        return _Nodes(
            lo,
            hi,
            possible,
            score,
            pref,
            np.full(lo.shape[0], np.inf),
            _down32(hidden_l),
            _up32(hidden_u),
            _down32(lb),
        )

    def bound_children(self, nodes: _Nodes, dims: np.ndarray) -> _Nodes:
        """Bisect every node at the midpoint of ``dims`` and bound the children ``[left; right]``."""
        twice = nodes.take(np.concatenate([np.arange(len(nodes))] * 2))
        return self.bound(*_children(nodes.lo, nodes.hi, dims), twice.possible, twice)

    def combination_test(
        self, lo: np.ndarray, hi: np.ndarray, layers: LayerBounds, idx: np.ndarray, k: int, lb: np.ndarray
    ) -> np.ndarray:
        r"""Rule out alternative ``k`` on boxes where no single row does, by a nonnegative row combination.

        If every x of the box satisfied all rows ``c_r·f(x) ≤ d_r`` of alternative ``k``, then for any
        ``λ ≥ 0``: ``(Σ λ_r c_r)·f(x) ≤ Σ λ_r d_r``.  CROWN bounds the combined row directly (its
        relaxation is chosen for the combination, so it is at least as tight as combining the rows'
        own linear bounds); a lower bound above ``Σ λ_r d_r`` proves the alternative impossible.

        Rounding: with ``c' = fl(Σ λ_r c_r)``, ``d' = fl(Σ λ_r d_r)`` and ``m`` rows,
        ``|c' − Σ λ_r c_r| ≤ γ_m Σ_r λ_r |c_r|`` element-wise and ``|d' − Σλ_r d_r| ≤ γ_m Σ λ_r |d_r|``, so a
        violating x would give ``c'·f(x) ≤ d' + τ`` with
        ``τ = γ_m (Σ_i (Σ_r λ_r |c_ri|) F_i + Σ_r λ_r |d_r|)`` and
        ``F = |W_L| max(u_{L−1}, 0) + |b_L| ≥ |f(x)|`` from the last hidden layer's bounds (``F`` only
        enters multiplied by ``8mu``, so the rounding of its own computation is immaterial).  The test
        is therefore ``lb(c'·f) > d' + 8 m u (…)`` (``8mu ≥ γ_m``).

        The weights ``λ`` solve (approximately) the Lagrangian dual of the box LP for a surrogate of
        the rows' CROWN linear bounds: ``g_r(x) = ∇_r·(x − x_c) + e_r`` with ``∇_r`` the gradient of
        ``c_r·f`` at the box centre and ``e_r`` chosen so that ``min_box g_r = lb_r − d_r``.  Any
        ``λ ≥ 0`` is sound; the surrogate only makes a good choice likely.
        """
        spec = self.spec
        rows = np.arange(spec.starts[k], spec.starts[k] + spec.sizes[k])
        Ck, dk = spec.C[rows], spec.d[rows]
        c = 0.5 * (lo + hi)
        _, masks = _forward(self.net, c)
        G = _jacobian_rows(self.net, masks, Ck)  # (B, m, n)
        r = 0.5 * (hi - lo)
        e = lb[:, rows] - dk + np.einsum("bmn,bn->bm", np.abs(G), r)  # min_box g_r = lb_r − d_r
        lam = _dual_weights(G, e, r)
        Cc = lam @ Ck  # (B, n_out)
        dc = lam @ dk
        sub = _take_bounds(layers, idx)
        lbc, _ = crown_linear(self.net, lo, hi, Cc[:, None, :], bounds=sub)
        last = self.net.affines[-1]
        if len(sub.upper) >= 2:  # |relu(z_{L−1})| ≤ max(u_{L−1}, 0)
            hmax = np.maximum(sub.upper[-2], 0.0)
        else:  # no hidden layer: the input itself
            hmax = np.maximum(np.abs(lo), np.abs(hi))
        F = hmax @ np.abs(last.W).T + np.abs(last.b)  # ≥ |f(x)| on the box
        m = rows.size
        tau = 8.0 * m * _U * (np.einsum("bi,bi->b", lam @ np.abs(Ck), F) + lam @ np.abs(dk))
        return np.asarray(lbc)[:, 0] > dc + tau

    # ---- attack ------------------------------------------------------------------------------
    def check_points(self, x: np.ndarray) -> tuple[bool, np.ndarray]:
        """Evaluate points ``(P, n)``; replay float64 violations.  Returns (replayed?, point values)."""
        y = self.net.evaluate(x)
        v, _ = self.spec.value(y)
        return any(self.try_candidate(x[i]) for i in np.flatnonzero(v <= 0.0)[:8]), v

    def try_candidate(self, x: np.ndarray) -> bool:
        """Project into the exact region, re-check in float64, replay on onnxruntime."""
        key = np.asarray(x, dtype=np.float64).tobytes()
        if key in self._tried:
            return False
        self._tried.add(key)
        xs = self.prop.project({self.spec.ns: x})
        y = self.net.evaluate(xs[self.spec.ns])
        if not self.prop.violated(xs, {self.spec.ns: y}):
            return False
        self.stats["replays"] += 1
        rep = replay(self.prop, {self.spec.ns: self.net}, xs)
        if rep.ok:
            self.cex = rep.counterexample
            return True
        self.stats["failed_replays"] += 1
        return False

    def pgd(
        self, x: np.ndarray, lo: np.ndarray, hi: np.ndarray, steps: int, eta0: float = 0.25
    ) -> tuple[bool, np.ndarray]:
        """Projected sign-gradient descent on ``v`` from points ``x`` in boxes ``[lo, hi]`` (all ``(P, n)``).

        Returns (a counterexample replayed?, the lowest value reached from each start).
        """
        t = time.perf_counter()
        best = np.full(x.shape[0], np.inf)
        try:
            w = hi - lo
            for s in range(steps + 1):
                y, masks = _forward(self.net, x)
                v, r = self.spec.value(y)
                best = np.minimum(best, v)
                if any(self.try_candidate(x[i].copy()) for i in np.flatnonzero(v <= 0.0)[:8]):
                    return True, best
                if s == steps or time.perf_counter() > self.deadline:
                    return False, best
                g = _row_gradient(self.net, masks, self.spec.C[r])
                eta = eta0 * (1.0 - s / steps) + 0.002
                x = np.clip(x - eta * w * np.sign(g), lo, hi)
            return False, best
        finally:
            self.stats["time_attack_s"] += time.perf_counter() - t

    def root_attack(self) -> bool:
        """Uniform samples of the root box, then PGD from the best of them."""
        lo, hi = self.spec.lo, self.spec.hi
        P = max(1, self.cfg.attack_samples)
        x = self.rng.uniform(lo, hi, size=(P, lo.size))
        x[0] = 0.5 * (lo + hi)
        t = time.perf_counter()
        found, v = self.check_points(x)
        self.stats["time_attack_s"] += time.perf_counter() - t
        if found or self.cfg.attack_steps <= 0 or self.cfg.attack_starts <= 0:
            return found
        x = x[np.argsort(v)[: self.cfg.attack_starts]]
        return self.pgd(
            x,
            np.broadcast_to(lo, x.shape),
            np.broadcast_to(hi, x.shape),
            self.cfg.attack_steps,
            self.cfg.attack_eta,
        )[0]

    def attack_children(self, kids: _Nodes) -> bool:
        """Centres of all open children, then PGD in the worst few (by score and by ``vmin``).

        Records the values found in ``kids.vmin``.
        """
        live = np.flatnonzero(np.isfinite(kids.score))
        if not live.size:
            return False
        t = time.perf_counter()
        found, v = self.check_points(0.5 * (kids.lo[live] + kids.hi[live]))
        kids.vmin[live] = np.minimum(kids.vmin[live], v)
        self.stats["time_attack_s"] += time.perf_counter() - t
        m = self.cfg.attack_boxes // 2
        if found or m <= 0 or self.cfg.attack_box_steps <= 0:
            return found
        pick = np.unique(
            np.concatenate([live[np.argsort(kids.score[live])[:m]], live[np.argsort(kids.vmin[live])[:m]]])
        )
        lo, hi = kids.lo[pick], kids.hi[pick]
        found, best = self.pgd(self.rng.uniform(lo, hi), lo, hi, self.cfg.attack_box_steps)
        kids.vmin[pick] = np.minimum(kids.vmin[pick], best)
        return found

    # ---- frontier ----------------------------------------------------------------------------
    def push(self, kids: _Nodes) -> None:
        """Open children to the frontier (closed ones counted, unsplittable ones kept apart)."""
        keep = np.isfinite(kids.score)
        self.stats["closed"] += int((~keep).sum())
        kids = kids.take(np.flatnonzero(keep))
        splittable = ((kids.hi - kids.lo) > self.cfg.min_width).any(axis=1)
        if not splittable.all():
            self.stuck.push(kids.take(np.flatnonzero(~splittable)))
            kids = kids.take(np.flatnonzero(splittable))
        self.open.push(kids)
        self.stats["max_open"] = max(self.stats["max_open"], self.n_open)

    @property
    def n_open(self) -> int:
        return len(self.open) + len(self.stuck)

    def pop(self, m: int) -> _Nodes:
        """Up to ``m`` open nodes: half with the lowest score, half with the lowest ``vmin``."""
        nodes = self.open.rows
        N = len(nodes)
        if m >= N:
            return self.open.pop_at(np.arange(N))
        half = m // 2
        by_score = lowest(nodes.score, half, ordered=False)
        rest = np.ones(N, dtype=bool)
        rest[by_score] = False
        cand = np.flatnonzero(rest)
        by_v = cand[lowest(nodes.vmin[cand], m - half, ordered=False)]
        return self.open.pop_at(np.concatenate([by_score, by_v]))

    def leaves(self) -> BabLeaves:
        allp = _Nodes.cat([self.open.rows, self.stuck.rows])
        return BabLeaves(allp.lo, allp.hi, allp.possible, allp.score)

    def splittable(self, nodes: _Nodes, s: np.ndarray) -> np.ndarray:
        """Split scores with unsplittable (too narrow) dimensions masked out."""
        return np.where((nodes.hi - nodes.lo) > self.cfg.min_width, s, -np.inf)

    def split(self, nodes: _Nodes) -> _Nodes:
        """Bisect every node along the dimension the split rule picks; bounded children ``[left; right]``."""
        dims, kids = SPLIT_RULES[self.cfg.split](self, nodes)
        if kids is None:
            kids = self.bound_children(nodes, dims)
        return kids


# --------------------------------------------------------------------------------------------------
# split rules
# --------------------------------------------------------------------------------------------------
def _children(lo: np.ndarray, hi: np.ndarray, dims: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    """Bisect box ``b`` at the midpoint of dimension ``dims[b]``; children stacked ``[left; right]``."""
    rows = np.arange(lo.shape[0])
    mid = 0.5 * (lo[rows, dims] + hi[rows, dims])
    lhi = hi.copy()
    lhi[rows, dims] = mid
    rlo = lo.copy()
    rlo[rows, dims] = mid
    return np.concatenate([lo, rlo]), np.concatenate([lhi, hi])


def _dims_widest(search: _Search, nodes: _Nodes) -> np.ndarray:
    rel = (nodes.hi - nodes.lo) / np.where(search.root_w > 0, search.root_w, 1.0)
    return np.argmax(search.splittable(nodes, rel), axis=1)


def _dims_relu(search: _Search, nodes: _Nodes) -> np.ndarray:
    rel = (nodes.hi - nodes.lo) / np.where(search.root_w > 0, search.root_w, 1.0)
    p = np.where(nodes.pref.max(axis=1, keepdims=True) > 0, nodes.pref, rel)
    return np.argmax(search.splittable(nodes, p), axis=1)


def _dims_smear(search: _Search, nodes: _Nodes) -> np.ndarray:
    spec = search.spec
    x = 0.5 * (nodes.lo + nodes.hi)
    y, masks = _forward(search.net, x)
    s = y @ spec.C.T - spec.d
    alt = np.where(nodes.possible, np.maximum.reduceat(s, spec.starts, axis=1), np.inf)
    k = np.argmin(alt, axis=1)
    ends = np.append(spec.starts[1:], s.shape[1])
    cols = np.arange(s.shape[1])[None, :]
    inside = (cols >= spec.starts[k][:, None]) & (cols < ends[k][:, None])
    r = np.argmax(np.where(inside, s, -np.inf), axis=1)
    g = _row_gradient(search.net, masks, spec.C[r])
    w = nodes.hi - nodes.lo
    sm = np.abs(g) * w
    rel = w / np.where(search.root_w > 0, search.root_w, 1.0)
    sm = np.where(sm.max(axis=1, keepdims=True) > 0, sm, rel)  # zero gradient: no information
    return np.argmax(search.splittable(nodes, sm), axis=1)


def _pick_best(search: _Search, nodes: _Nodes, candidates: list[np.ndarray]) -> tuple[np.ndarray, _Nodes]:
    """Bound the children of every candidate dimension (skipping repeats and settled nodes); keep the best.

    A bisection is judged by its worse child's score (``+inf`` when both children are closed).
    """
    B = len(nodes)
    dims = candidates[0].copy()
    kids = search.bound_children(nodes, dims)
    best = np.minimum(kids.score[:B], kids.score[B:])
    for cand in candidates[1:]:
        todo = np.flatnonzero((cand != dims) & np.isfinite(best))
        if not todo.size:
            continue
        sub = nodes.take(todo)
        trial = search.bound_children(sub, cand[todo])
        nt = todo.size
        val = np.minimum(trial.score[:nt], trial.score[nt:])
        win = np.flatnonzero(val > best[todo])
        if not win.size:
            continue
        w = todo[win]
        dims[w] = cand[w]
        best[w] = val[win]
        pos = np.concatenate([w, B + w])
        src = np.concatenate([win, nt + win])
        for f in _NODE_FIELDS:
            kids[f][pos] = trial[f][src]
    return dims, kids


def _split_widest(search: _Search, nodes: _Nodes) -> tuple[np.ndarray, None]:
    return _dims_widest(search, nodes), None


def _split_smear(search: _Search, nodes: _Nodes) -> tuple[np.ndarray, None]:
    return _dims_smear(search, nodes), None


def _split_relu(search: _Search, nodes: _Nodes) -> tuple[np.ndarray, None]:
    return _dims_relu(search, nodes), None


def _split_hybrid(search: _Search, nodes: _Nodes) -> tuple[np.ndarray, _Nodes]:
    return _pick_best(search, nodes, [_dims_relu(search, nodes), _dims_smear(search, nodes)])


#: Split rules: ``rule(search, nodes) -> (dims (B,), bounded children or None)``.
SPLIT_RULES: dict[str, Callable[[_Search, _Nodes], tuple[np.ndarray, _Nodes | None]]] = {
    "widest": _split_widest,
    "smear": _split_smear,
    "relu": _split_relu,
    "hybrid": _split_hybrid,
}


# --------------------------------------------------------------------------------------------------
# driver
# --------------------------------------------------------------------------------------------------
def bab_verify(
    prop: Property, net: Network, budget_s: float, config: BabConfig = BabConfig()
) -> BabOutcome:
    """Decide ``prop`` on ``net`` by input-splitting branch and bound within ``budget_s`` seconds.

    Parameters
    ----------
    prop
        An :class:`~encoders.properties.OutputDNFProperty` or a
        :class:`~encoders.properties.LocalRobustness` (L2: the ball's bounding box is searched, boxes
        that miss the ball are dropped, and candidates are checked in the ball).
    net
        The network (its ONNX file is needed to replay a counterexample).
    budget_s
        Wall-clock budget; on expiry the open nodes are returned as leaves (UNDECIDED).
    config
        Search settings.

    Returns
    -------
    BabOutcome
        VERIFIED (all nodes closed by sound CROWN bounds), FALSIFIED (a counterexample replayed on
        onnxruntime) or UNDECIDED (with the leaves).
    """
    t0 = time.perf_counter()
    builder = _SPEC_BUILDERS.get(type(prop))
    if builder is None or not isinstance(prop, OutputProperty):
        raise UnsupportedQueryError(f"branch and bound does not take {type(prop).__name__} queries")
    spec = builder(prop, net)
    if spec.lo.size != net.n_inputs:
        raise UnsupportedQueryError(
            f"the query has {spec.lo.size} inputs but the network takes {net.n_inputs}"
        )
    search = _Search(prop, net, spec, config, t0 + max(0.0, budget_s))

    def out(status: BabStatus) -> BabOutcome:
        search.stats["open"] = search.n_open
        search.stats["time_s"] = time.perf_counter() - t0
        leaves = search.leaves() if status is BabStatus.UNDECIDED else None
        return BabOutcome(status, time.perf_counter() - t0, search.cex, leaves, dict(search.stats))

    if spec.n_alts == 0:
        return out(BabStatus.VERIFIED)
    root = search.bound(spec.lo[None, :], spec.hi[None, :], np.ones((1, spec.n_alts), dtype=bool))
    if not np.isfinite(root.score[0]):
        return out(BabStatus.VERIFIED)
    if search.root_attack():
        return out(BabStatus.FALSIFIED)
    search.push(root)
    while len(search.open):
        if time.perf_counter() >= search.deadline or search.n_open >= config.max_open:
            return out(BabStatus.UNDECIDED)
        kids = search.split(search.pop(config.batch_size))
        search.stats["batches"] += 1
        if search.attack_children(kids):
            return out(BabStatus.FALSIFIED)
        search.push(kids)
    return out(BabStatus.UNDECIDED if len(search.stuck) else BabStatus.VERIFIED)


# --------------------------------------------------------------------------------------------------
# the dispatcher's stage
# --------------------------------------------------------------------------------------------------
def _leaf_property(
    prop: OutputProperty, spec: _Spec, lo: np.ndarray, hi: np.ndarray, possible: np.ndarray
) -> OutputDNFProperty | None:
    """The query restricted to one leaf box and its still-possible alternatives, or ``None`` if the
    restriction cannot be stated exactly as a box query (an L2 ball is not a box)."""
    if spec.ball is not None:
        return None
    ends = np.append(spec.starts[1:], spec.d.size)
    alts = tuple(
        (spec.C[spec.starts[k] : ends[k]].copy(), spec.d[spec.starts[k] : ends[k]].copy())
        for k in np.flatnonzero(possible)
    )
    source = getattr(prop, "source", "") + " [bab leaf]"
    return OutputDNFProperty(lo.copy(), hi.copy(), alts, ns=spec.ns, source=source)


@dataclass(frozen=True)
class BabLeafQueries:
    """What :func:`bab_stage` hands back when branch and bound leaves a few boxes open: the query
    restricted to each leaf box (worst score first), for the dispatcher to solve exactly, and the
    search's statistics (``bab_*``)."""

    props: list[OutputDNFProperty]
    stats: dict[str, Any]


class InputSplitSettings(Protocol):
    """What :func:`bab_stage` reads from the dispatcher's configuration
    (:class:`verifier.dispatch.DispatchConfig` has these attributes; the search does not import the
    dispatcher, which imports it)."""

    @property
    def timeout(self) -> float: ...

    @property
    def seed(self) -> int: ...

    @property
    def bab_max_inputs(self) -> int: ...

    @property
    def bab_fraction(self) -> float: ...

    @property
    def bab_max_leaves(self) -> int: ...

    @property
    def input_split(self) -> BabConfig: ...


def search_config(config: InputSplitSettings) -> BabConfig:
    """The search settings of a dispatched query: ``config.input_split`` with the query's seed
    (``config.seed`` seeds every randomised stage of one query)."""
    return replace(config.input_split, seed=config.seed)


def bab_stage(
    prop: Property, nets: Mapping[str, Network], config: InputSplitSettings, t0: float
) -> Result | BabLeafQueries | None:
    """Branch and bound as a stage of :func:`verifier.dispatch.verify` (the ``"input_split"`` search).

    The caller decides whether BaB is wanted (``config.bab``); this stage applies when the property
    type is supported and the network has at most ``config.bab_max_inputs`` inputs, and runs
    :func:`bab_verify` with ``config.bab_fraction`` of the time left and the settings
    :func:`search_config` (``config.input_split``, seeded by ``config.seed``).  VERIFIED / FALSIFIED
    become the query's :class:`~verifier.results.Result`.  UNDECIDED with at most
    ``config.bab_max_leaves`` leaves: a :class:`BabLeafQueries` with the query on each leaf box and its
    possible alternatives (the dispatcher solves each exactly; all infeasible ⇒ VERIFIED, since the
    leaves cover every undecided point).  Returns ``None`` (the caller goes on with the whole box) when
    BaB does not apply or left too many leaves.
    """
    if not bab_supported(prop) or not isinstance(prop, OutputProperty):
        return None
    net = nets.get(prop.ns)
    if net is None or net.n_inputs > config.bab_max_inputs:
        return None
    left = config.timeout - (time.perf_counter() - t0)
    if left <= 0:
        return None
    outcome = bab_verify(prop, net, config.bab_fraction * left, search_config(config))
    stats = {f"bab_{k}": v for k, v in outcome.stats.items()}

    def result(verdict: Verdict, backend: str, msg: str, **kw: Any) -> Result:
        return Result(verdict, backend, time.perf_counter() - t0, message=msg, stats=stats, **kw)

    if outcome.status is BabStatus.VERIFIED:
        n = outcome.stats.get("nodes_bounded", 0)
        return result(Verdict.VERIFIED, "bab", f"branch and bound: {n} input boxes bounded, all closed")
    if outcome.status is BabStatus.FALSIFIED:
        return result(
            Verdict.FALSIFIED,
            "bab",
            "counterexample found by branch and bound; replayed on onnxruntime",
            counterexample=outcome.counterexample,
        )
    leaves = outcome.leaves
    spec = _SPEC_BUILDERS[type(prop)](prop, net)
    if leaves is None or len(leaves) > config.bab_max_leaves:
        return None
    sub_props = [
        _leaf_property(prop, spec, leaves.lo[i], leaves.hi[i], leaves.possible[i])
        for i in np.argsort(leaves.score)
    ]
    if any(p is None for p in sub_props):
        return None
    stats["bab_leaves_to_solver"] = len(sub_props)
    return BabLeafQueries([p for p in sub_props if p is not None], stats)
