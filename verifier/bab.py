r"""Branch and bound over input splitting, for networks with few inputs (ACAS Xu has 5).

Query
    ∃ x ∈ X:  OR_k AND_r (A_k f(x) ≤ b_k)_r          (X a box, or an L2 ball's bounding box)

An :class:`~encoders.properties.OutputDNFProperty` is this query as is; a
:class:`~encoders.properties.LocalRobustness` query is the DNF ``OR_{j≠c} ((e_c − e_j)·y ≤ 0)``
over its box (ties count as violations, exactly as in the property).  All rows of all alternatives
are stacked into one specification matrix ``C`` (rows ``c_r``, right-hand sides ``d_r``; row ``r``
belongs to alternative ``k(r)``).

Node = an input sub-box ``[l, u] ⊆ X``.  Per node
    * bound: ``lb_r ≤ min_{x∈[l,u]} c_r·f(x)`` by CROWN (:func:`encoders.bounds.crown_linear`,
      rounding-widened, hence sound in floating point), for all rows at once and for a whole batch
      of boxes in one call;
    * prune: alternative ``k`` is impossible on the box when some row of it has ``lb_r > d_r``
      (then ``c_r·f(x) > d_r`` for every x in the box, so the conjunction fails); the node is closed
      when every alternative is impossible.  Its *score* is
      ``s = min_{k possible} max_{r∈k} (lb_r − d_r) ≤ 0`` (the most promising alternative);
    * attack: the box centre of every node is evaluated (float64), and the worst nodes get a few
      steps of projected sign-gradient descent on the point value
      ``v(x) = min_k max_{r∈k} (c_r·f(x) − d_r)`` (``v ≤ 0`` ⇔ x violates).  ``f`` is piecewise
      linear, so on the linear piece of x the gradient of ``c_r·f`` is ``c_r J(x)`` with
      ``J(x) = W_L D_{L−1} W_{L−1} ⋯ D_0 W_0`` (``D_j`` the 0/1 activation pattern at x).  A point
      with ``v ≤ 0`` is only a *candidate*: it is projected into the exact input region and
      replayed on onnxruntime (:func:`verifier.replay.replay`); only a replayed point makes
      FALSIFIED;
    * branch: the box is bisected along one input dimension chosen by the split rule.

Soundness.  The input boxes of the open nodes and the closed nodes always partition the root box
(bisection at the midpoint, both halves closed; a point on the cut belongs to both, which is
harmless).  A node is only closed by a sound bound, so VERIFIED (no open node left) implies no
violation in X.  UNDECIDED returns the open nodes (*leaves*) with their still-possible alternatives;
the caller may settle each leaf by an exact solver (a violation of the original query exists iff
one exists in some leaf, for one of that leaf's possible alternatives).

Search order: best-first on the score (the most violated lower bound first), ``batch_size`` nodes
per bounding call, which is what makes the numpy bound propagation fast (one GEMM chain per chunk
of boxes instead of per box).

Split rules (``BabConfig.split``), with ``w_i = u_i − l_i`` and ``g = ∇_x c_{r*}·f`` at the box
centre for the row ``r*`` deciding the node's score:
    * ``"widest"``   argmax_i w_i / W_i (``W`` the root box widths);
    * ``"smear"``    argmax_i |g_i| w_i (the first-order change of the deciding row across the box,
                     as in ReluVal's smear heuristic with the gradient at the centre);
    * ``"bestof"``   bound both halves for every candidate dimension and keep the dimension whose
                     worse half has the highest score (2n bounding calls' worth per node).
"""

from __future__ import annotations

import enum
import time
from collections.abc import Callable, Mapping
from dataclasses import dataclass, field
from typing import Any

import numpy as np

from encoders.bounds import crown_linear
from encoders.errors import ConfigError, UnsupportedQueryError
from encoders.network import Affine, Network
from encoders.properties import LocalRobustness, OutputDNFProperty

from .replay import replay
from .results import Counterexample

__all__ = [
    "BabStatus",
    "BabConfig",
    "BabLeaves",
    "BabOutcome",
    "bab_verify",
    "bab_supported",
    "SPLIT_RULES",
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
    attack_starts, attack_steps
        Random starts and PGD steps of the initial attack on the root box.
    attack_boxes, attack_box_steps
        Per iteration, the worst ``attack_boxes`` new nodes get ``attack_box_steps`` PGD steps.
    max_open
        Cap on open nodes (memory); reaching it ends the search as UNDECIDED.
    min_width
        Dimensions narrower than this (absolute) are never split; a node with no splittable
        dimension stays open.
    seed
        Random seed of the attack.
    """

    batch_size: int = 512
    split: str = "smear"
    attack_starts: int = 256
    attack_steps: int = 30
    attack_boxes: int = 32
    attack_box_steps: int = 8
    max_open: int = 2_000_000
    min_width: float = 1e-9
    seed: int = 0

    def __post_init__(self) -> None:
        if self.split not in SPLIT_RULES:
            raise ConfigError(f"bab split: unknown rule {self.split!r} (choose from {', '.join(SPLIT_RULES)})")
        if self.batch_size < 1:
            raise ConfigError(f"bab batch_size: must be at least 1, got {self.batch_size}")


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

    def alt_slack(self, rows: np.ndarray) -> np.ndarray:
        """``max_{r∈k} (rows_r − d_r)`` per alternative: ``(B, R) → (B, K)``."""
        return np.maximum.reduceat(rows - self.d, self.starts, axis=1)

    def value(self, y: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
        """Point value ``v = min_k max_{r∈k}(c_r·y − d_r)`` and the deciding row, for outputs ``(P, n_out)``."""
        s = y @ self.C.T - self.d  # (P, R)
        alt = np.maximum.reduceat(s, self.starts, axis=1)  # (P, K)
        k = np.argmin(alt, axis=1)
        v = alt[np.arange(y.shape[0]), k]
        # deciding row: argmax within alternative k
        ends = np.append(self.starts[1:], s.shape[1])
        masked = np.where((np.arange(s.shape[1])[None, :] >= self.starts[k][:, None])
                          & (np.arange(s.shape[1])[None, :] < ends[k][:, None]), s, -np.inf)
        return v, np.argmax(masked, axis=1)

    def meets_region(self, lo: np.ndarray, hi: np.ndarray) -> np.ndarray:
        """Boxes that meet the input region (always true for a box region)."""
        if self.ball is None:
            return np.ones(lo.shape[0], dtype=bool)
        x0, eps = self.ball
        gap = np.maximum(np.maximum(lo - x0, x0 - hi), 0.0)
        return np.sqrt(np.einsum("ij,ij->i", gap, gap)) <= eps * (1 + 1e-12)


def _stack(alts: list[tuple[np.ndarray, np.ndarray]], n_out: int) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    Cs, ds, starts, r = [], [], [], 0
    for A, b in alts:
        A = np.atleast_2d(np.asarray(A, dtype=np.float64))
        b = np.asarray(b, dtype=np.float64).reshape(-1)
        if A.shape[1] != n_out or A.shape[0] != b.size or A.shape[0] == 0:
            raise UnsupportedQueryError(f"alternative with matrix {A.shape} and {b.size} bounds for {n_out} outputs")
        Cs.append(A)
        ds.append(b)
        starts.append(r)
        r += A.shape[0]
    if not Cs:
        return np.zeros((0, n_out)), np.zeros(0), np.zeros(0, dtype=np.intp)
    return np.vstack(Cs), np.concatenate(ds), np.asarray(starts, dtype=np.intp)


def _spec_dnf(prop: OutputDNFProperty, net: Network) -> _Spec:
    C, d, starts = _stack(list(prop.alternatives), net.n_outputs)
    return _Spec(prop.lo, prop.hi, C, d, starts, prop.ns)


def _spec_local(prop: LocalRobustness, net: Network) -> _Spec:
    n, c = net.n_outputs, prop.label
    alts = []
    for j in prop.targets(n):  # y_j ≥ y_c  ⇔  (e_c − e_j)·y ≤ 0
        row = np.zeros((1, n))
        row[0, c], row[0, j] = 1.0, -1.0
        alts.append((row, np.zeros(1)))
    C, d, starts = _stack(alts, n)
    lo, hi = prop.box()
    ball = (prop.x0, float(prop.eps)) if prop.norm == "2" else None
    return _Spec(lo, hi, C, d, starts, prop.ns, ball)


_SPEC_BUILDERS: dict[type, Callable[[Any, Network], _Spec]] = {
    OutputDNFProperty: _spec_dnf,
    LocalRobustness: _spec_local,
}


def bab_supported(prop: Any) -> bool:
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


def _row_gradient(net: Network, masks: list[np.ndarray], c: np.ndarray) -> np.ndarray:
    """``c_p J(x_p)`` for rows ``c (P, n_out)``: backpropagation through the fixed activation pattern."""
    affines = net.affines
    g = c @ affines[-1].W
    for j in range(len(affines) - 2, -1, -1):
        g = (g * masks[j]) @ affines[j].W
    return g


# --------------------------------------------------------------------------------------------------
# the search state
# --------------------------------------------------------------------------------------------------
class _Search:
    """Open nodes as arrays, the attack, and the replay of candidates."""

    def __init__(self, prop: Any, net: Network, spec: _Spec, config: BabConfig, deadline: float):
        self.prop, self.net, self.spec, self.cfg, self.deadline = prop, net, spec, config, deadline
        self.rng = np.random.default_rng(config.seed)
        self.root_w = np.maximum(spec.hi - spec.lo, 0.0)
        n, K = spec.lo.size, spec.n_alts
        self.lo = np.zeros((0, n))
        self.hi = np.zeros((0, n))
        self.possible = np.zeros((0, K), dtype=bool)
        self.score = np.zeros(0)
        self.stuck: list[tuple[np.ndarray, np.ndarray, np.ndarray, np.ndarray]] = []
        self.cex: Counterexample | None = None
        self.stats: dict[str, Any] = {
            "nodes_bounded": 0, "batches": 0, "closed": 0, "replays": 0, "failed_replays": 0,
            "time_bounds_s": 0.0, "time_attack_s": 0.0, "time_split_s": 0.0, "max_open": 0,
        }
        self._tried: set[bytes] = set()

    # ---- bounds ------------------------------------------------------------------------------
    def bound(self, lo: np.ndarray, hi: np.ndarray, possible: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
        """Sound pruning of boxes ``(B, n)``: new possible mask and score (``+inf`` when closed)."""
        t = time.perf_counter()
        lb, _ = crown_linear(self.net, lo, hi, self.spec.C)
        slack = self.spec.alt_slack(np.asarray(lb).reshape(lo.shape[0], -1))  # (B, K)
        possible = possible & (slack <= 0.0)
        possible &= self.spec.meets_region(lo, hi)[:, None]
        score = np.where(possible, slack, np.inf).min(axis=1)
        self.stats["time_bounds_s"] += time.perf_counter() - t
        self.stats["nodes_bounded"] += lo.shape[0]
        return possible, score

    # ---- attack ------------------------------------------------------------------------------
    def check_points(self, x: np.ndarray) -> bool:
        """Evaluate points; replay any float64 violation.  True when a counterexample replayed."""
        y = self.net.evaluate(x)
        v, _ = self.spec.value(y)
        for i in np.flatnonzero(v <= 0.0)[:8]:
            if self.try_candidate(x[i]):
                return True
        return False

    def try_candidate(self, x: np.ndarray) -> bool:
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

    def pgd(self, x: np.ndarray, lo: np.ndarray, hi: np.ndarray, steps: int) -> bool:
        """Projected sign-gradient descent on ``v`` from points ``x`` in boxes ``[lo, hi]`` (all ``(P, n)``)."""
        t = time.perf_counter()
        try:
            w = hi - lo
            for s in range(steps + 1):
                y, masks = _forward(self.net, x)
                v, r = self.spec.value(y)
                if np.any(v <= 0.0):
                    for i in np.flatnonzero(v <= 0.0)[:8]:
                        if self.try_candidate(x[i].copy()):
                            return True
                if s == steps or time.perf_counter() > self.deadline:
                    return False
                g = _row_gradient(self.net, masks, self.spec.C[r])
                eta = 0.25 * (1.0 - s / steps) + 0.02
                x = np.clip(x - eta * w * np.sign(g), lo, hi)
            return False
        finally:
            self.stats["time_attack_s"] += time.perf_counter() - t

    def root_attack(self) -> bool:
        lo, hi = self.spec.lo, self.spec.hi
        P = max(1, self.cfg.attack_starts)
        x = self.rng.uniform(lo, hi, size=(P, lo.size))
        x[0] = 0.5 * (lo + hi)
        if self.check_points(x):
            return True
        if self.cfg.attack_steps <= 0:
            return False
        return self.pgd(x, np.broadcast_to(lo, x.shape), np.broadcast_to(hi, x.shape), self.cfg.attack_steps)

    # ---- frontier ----------------------------------------------------------------------------
    def push(self, lo: np.ndarray, hi: np.ndarray, possible: np.ndarray, score: np.ndarray) -> None:
        keep = np.isfinite(score)
        self.stats["closed"] += int((~keep).sum())
        if not keep.any():
            return
        lo, hi, possible, score = lo[keep], hi[keep], possible[keep], score[keep]
        splittable = ((hi - lo) > self.cfg.min_width).any(axis=1)
        if not splittable.all():
            st = ~splittable
            self.stuck.append((lo[st], hi[st], possible[st], score[st]))
            lo, hi, possible, score = lo[splittable], hi[splittable], possible[splittable], score[splittable]
        self.lo = np.concatenate([self.lo, lo])
        self.hi = np.concatenate([self.hi, hi])
        self.possible = np.concatenate([self.possible, possible])
        self.score = np.concatenate([self.score, score])
        self.stats["max_open"] = max(self.stats["max_open"], self.n_open)

    @property
    def n_open(self) -> int:
        return int(self.score.size) + sum(s[0].shape[0] for s in self.stuck)

    def pop(self, m: int) -> tuple[np.ndarray, np.ndarray, np.ndarray, np.ndarray]:
        N = self.score.size
        if m >= N:
            idx = np.arange(N)
        else:
            idx = np.argpartition(self.score, m)[:m]
        out = self.lo[idx], self.hi[idx], self.possible[idx], self.score[idx]
        keep = np.ones(N, dtype=bool)
        keep[idx] = False
        self.lo, self.hi, self.possible, self.score = self.lo[keep], self.hi[keep], self.possible[keep], self.score[keep]
        return out

    def leaves(self) -> BabLeaves:
        parts = [(self.lo, self.hi, self.possible, self.score), *self.stuck]
        return BabLeaves(*(np.concatenate([p[i] for p in parts]) for i in range(4)))

    # ---- branching ---------------------------------------------------------------------------
    def split(self, lo: np.ndarray, hi: np.ndarray, possible: np.ndarray) -> tuple[np.ndarray, ...]:
        """Bisect every box along the dimension the split rule picks; children stacked ``[left; right]``."""
        t = time.perf_counter()
        dims = SPLIT_RULES[self.cfg.split](self, lo, hi, possible)
        B = lo.shape[0]
        rows = np.arange(B)
        mid = 0.5 * (lo[rows, dims] + hi[rows, dims])
        lhi = hi.copy()
        lhi[rows, dims] = mid
        rlo = lo.copy()
        rlo[rows, dims] = mid
        self.stats["time_split_s"] += time.perf_counter() - t
        return np.concatenate([lo, rlo]), np.concatenate([lhi, hi]), np.concatenate([possible, possible])

    def splittable_scores(self, lo: np.ndarray, hi: np.ndarray, s: np.ndarray) -> np.ndarray:
        return np.where((hi - lo) > self.cfg.min_width, s, -np.inf)


# --------------------------------------------------------------------------------------------------
# split rules
# --------------------------------------------------------------------------------------------------
def _split_widest(search: _Search, lo: np.ndarray, hi: np.ndarray, possible: np.ndarray) -> np.ndarray:
    w = hi - lo
    rel = w / np.where(search.root_w > 0, search.root_w, 1.0)
    return np.argmax(search.splittable_scores(lo, hi, rel), axis=1)


def _split_smear(search: _Search, lo: np.ndarray, hi: np.ndarray, possible: np.ndarray) -> np.ndarray:
    spec = search.spec
    x = 0.5 * (lo + hi)
    y, masks = _forward(search.net, x)
    s = y @ spec.C.T - spec.d
    alt = np.maximum.reduceat(s, spec.starts, axis=1)
    alt = np.where(possible, alt, np.inf)
    k = np.argmin(alt, axis=1)
    ends = np.append(spec.starts[1:], s.shape[1])
    cols = np.arange(s.shape[1])[None, :]
    inside = (cols >= spec.starts[k][:, None]) & (cols < ends[k][:, None])
    r = np.argmax(np.where(inside, s, -np.inf), axis=1)
    g = _row_gradient(search.net, masks, spec.C[r])
    w = hi - lo
    sm = np.abs(g) * w
    # a zero gradient (dead region) carries no information: fall back to the relative width
    rel = w / np.where(search.root_w > 0, search.root_w, 1.0)
    sm = np.where(sm.max(axis=1, keepdims=True) > 0, sm, rel)
    return np.argmax(search.splittable_scores(lo, hi, sm), axis=1)


def _split_bestof(search: _Search, lo: np.ndarray, hi: np.ndarray, possible: np.ndarray) -> np.ndarray:
    B, n = lo.shape
    cand_lo, cand_hi, cand_p = [], [], []
    for i in range(n):
        mid = 0.5 * (lo[:, i] + hi[:, i])
        lh, rl = hi.copy(), lo.copy()
        lh[:, i], rl[:, i] = mid, mid
        cand_lo += [lo, rl]
        cand_hi += [lh, hi]
        cand_p += [possible, possible]
    _, score = search.bound(np.concatenate(cand_lo), np.concatenate(cand_hi), np.concatenate(cand_p))
    score = np.minimum(score, 1e300).reshape(n, 2, B).min(axis=1).T  # worse child per dim, (B, n)
    return np.argmax(search.splittable_scores(lo, hi, score), axis=1)


#: Split rules: ``rule(search, lo, hi, possible) -> dims (B,)``.
SPLIT_RULES: dict[str, Callable[[_Search, np.ndarray, np.ndarray, np.ndarray], np.ndarray]] = {
    "widest": _split_widest,
    "smear": _split_smear,
    "bestof": _split_bestof,
}


# --------------------------------------------------------------------------------------------------
# driver
# --------------------------------------------------------------------------------------------------
def bab_verify(prop: Any, net: Network, budget_s: float, config: BabConfig = BabConfig()) -> BabOutcome:
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

    Returns
    -------
    BabOutcome
        VERIFIED (all nodes closed by sound CROWN bounds), FALSIFIED (a counterexample replayed on
        onnxruntime) or UNDECIDED (with the leaves).
    """
    t0 = time.perf_counter()
    builder = _SPEC_BUILDERS.get(type(prop))
    if builder is None:
        raise UnsupportedQueryError(f"branch and bound does not take {type(prop).__name__} queries")
    spec = builder(prop, net)
    if spec.lo.size != net.n_inputs:
        raise UnsupportedQueryError(f"the query has {spec.lo.size} inputs but the network takes {net.n_inputs}")
    search = _Search(prop, net, spec, config, t0 + max(0.0, budget_s))

    def out(status: BabStatus) -> BabOutcome:
        search.stats["open"] = search.n_open
        search.stats["time_s"] = time.perf_counter() - t0
        leaves = search.leaves() if status is BabStatus.UNDECIDED else None
        return BabOutcome(status, time.perf_counter() - t0, search.cex, leaves, dict(search.stats))

    K = spec.n_alts
    if K == 0:
        return out(BabStatus.VERIFIED)
    lo0, hi0 = spec.lo[None, :], spec.hi[None, :]
    possible, score = search.bound(lo0, hi0, np.ones((1, K), dtype=bool))
    if not np.isfinite(score[0]):
        return out(BabStatus.VERIFIED)
    if search.root_attack():
        return out(BabStatus.FALSIFIED)
    search.push(lo0, hi0, possible, score)
    while search.score.size:
        if time.perf_counter() >= search.deadline or search.n_open >= config.max_open:
            return out(BabStatus.UNDECIDED)
        lo, hi, poss, _ = search.pop(config.batch_size)
        clo, chi, cposs = search.split(lo, hi, poss)
        cposs, cscore = search.bound(clo, chi, cposs)
        search.stats["batches"] += 1
        # attack: centres of all open children, PGD on the worst few
        t = time.perf_counter()
        open_ = np.isfinite(cscore)
        found = False
        if open_.any():
            found = search.check_points(0.5 * (clo[open_] + chi[open_]))
        search.stats["time_attack_s"] += time.perf_counter() - t
        if not found and config.attack_boxes > 0 and config.attack_box_steps > 0 and open_.any():
            idx = np.flatnonzero(open_)
            worst = idx[np.argsort(cscore[idx])[: config.attack_boxes]]
            start = search.rng.uniform(clo[worst], chi[worst])
            found = search.pgd(start, clo[worst], chi[worst], config.attack_box_steps)
        if found:
            return out(BabStatus.FALSIFIED)
        search.push(clo, chi, cposs, cscore)
    if search.stuck:
        return out(BabStatus.UNDECIDED)
    return out(BabStatus.VERIFIED)
