r"""Branch and bound for the joint FAITHUB bound (the teacher–student *pair split* search).

The per-box bound is :func:`encoders.bounds.pair.faithub_box_bound` (its module docstring, part 1, gives the
slab formulation and the floating-point margins); this module searches over leaves of the input box.

2. Branch and bound on ReLU phases and input coordinates
--------------------------------------------------------
The per-box bound is computed on the leaves of a partition of ``X``.  A leaf is a sub-box ``X'`` together
with sign constraints on some hidden neurons of either network, i.e. the set
``D = {x ∈ X' : z_k(x) ≥ 0 for k ∈ S⁺, z_k(x) ≤ 0 for k ∈ S⁻}``.  Every ``x ∈ X`` lies in some leaf
(a ReLU split of ``D`` gives ``D ∩ {z_k ≤ 0}`` and ``D ∩ {z_k ≥ 0}``; an input split halves ``X'``), so the
maximum over the leaves of sound per-leaf bounds is a sound bound on ``max_{x∈X}``.

Per-leaf bounds.  Each leaf stores its networks' hidden-layer bounds ``l ≤ z ≤ u`` (valid on ``D``).  A
child is bounded by :func:`encoders.bounds.crown_bounds` on its box with the parent's bounds as
``prior`` (intersected in first), after setting ``l_k ← max(l_k, 0)`` (child ``z_k ≥ 0``) or
``u_k ← min(u_k, 0)`` (child ``z_k ≤ 0``) for the split neuron.  These priors hold on the child's
domain ``D_c`` (a subset of the parent's), and every later step of CROWN (interval steps, the
relaxations built from the intersected bounds, the backward passes) is valid for every ``x`` at which
the priors hold, so all of the child's bounds — and its linear functions ``a·x + c`` of part 1 — hold
for every ``x ∈ D_c``.  A split neuron becomes stable (``h = z`` or ``h = 0`` exactly on ``D_c``).
The slab bound of part 1 minimises the linear functions over the slab ``∩ X'``, a superset of
``slab ∩ D_c``, so it stays sound (this is CROWN-style splitting without β multipliers: looser than
β-CROWN, but with no optimisation).  If some ``l_k > u_k`` the domain ``D_c`` is empty and the leaf's
value is 0.  A child's value is also capped at its parent's (the parent's bound holds on ``D_c``), so
the maximum over the leaves never increases.

Branching.  Each round splits the ``split_per_round`` leaves with the largest values.  The ReLU
candidate of a leaf is the unstable neuron (teacher or student, any hidden layer) with the largest
BaBSR-like score ``Σ_r p_r max(−A_{r,k}, 0) t_k`` — the cost of its chord intercept ``t_k = −s_k l_k``
in the backward passes of the rows ``r`` bounding the attaining term (lower bounds of ``d_{i·}`` of the
network whose ``σ_i`` is bounded above, upper bounds for the other), weighted by ``p_r``, the softmax
weight of row ``r`` in ``φ`` at the box centre.  The input candidate is the coordinate maximising
``(hi_k − lo_k)(|w^t_k| + |w^s_k|)``, the width times the influence of ``x_k`` on the linearised
``log(1 + Σ_j e^{d_ij})`` of both networks.  The ReLU split is taken when ``relu_weight`` times its
score is at least the input score (both in logit units).  On the digits models ReLU splitting is far
more effective than input splitting (64 input dimensions, ~80 unstable teacher ReLUs).  The search
stops at a time limit or a box budget; the bound is sound at every point of the search.

Measured (digits, ε = 0.05, teacher 64-128-128-10, five 64-32-32-10 students): see the report in
``benchmarks/faithfulness.py``'s summary (``joint`` entry of the headline).
"""

from __future__ import annotations

import time
from dataclasses import dataclass

import numpy as np

from encoders.bounds import LayerBounds
from encoders.bounds.pair import (
    PairLinear,
    _pair_rows,
    faithub_box_bound,
    pair_linear_bounds,
)
from encoders.errors import ConfigError, SpecError
from encoders.network import Network

__all__ = ["FaithubConfig", "FaithubBound", "faithub_joint"]


@dataclass(frozen=True)
class FaithubConfig:
    """Settings of :func:`faithub_joint`.

    Attributes
    ----------
    time_limit
        Seconds for the branch and bound (the root bound is always computed; 0: root only).  A
        round is started only if the previous round's duration still fits before the limit.
    max_boxes
        Largest number of leaves.
    split_per_round
        Leaves split per round (their children are bounded in one batched CROWN call).
    slabs
        Slabs per direction in the per-box joint bound (0: decoupled Eq. 11 per box).
    refine
        Per box, the number of ``(class, sign)`` terms (largest decoupled values first) that get the
        slab bound; the others keep their decoupled value (sound either way).
    grid
        Cells per direction of an additional two-direction (teacher × student) grid bound (0: off).
    relu_weight
        Split a leaf on its best unstable ReLU when ``relu_weight ×`` its score is at least its best input
        coordinate's score (0: input splits only; module docstring, part 2).
    relu_weighted
        Weight the ReLU scores' rows by their softmax weights at the box centre (else uniformly).
    tolerance
        Stop when the bound is within this absolute distance of the largest gap attained at a leaf
        centre (a lower bound on the true maximum): more search cannot gain more than that.
    """

    time_limit: float = 0.9
    max_boxes: int = 4096
    split_per_round: int = 8
    slabs: int = 16
    refine: int = 4
    grid: int = 0
    tolerance: float = 1e-3
    relu_weight: float = 10.0
    relu_weighted: bool = True

    def __post_init__(self) -> None:
        if not (self.time_limit >= 0):
            raise ConfigError(f"faithub time_limit: must be >= 0, got {self.time_limit}")
        if self.max_boxes < 1 or self.split_per_round < 1:
            raise ConfigError("faithub max_boxes and split_per_round must be >= 1")
        if not (self.tolerance >= 0):
            raise ConfigError(f"faithub tolerance: must be >= 0, got {self.tolerance}")
        if not (self.relu_weight >= 0):
            raise ConfigError(f"faithub relu_weight: must be >= 0, got {self.relu_weight}")
        if self.slabs < 0 or self.refine < 0 or self.grid < 0:
            raise ConfigError("faithub slabs and refine must be >= 0")


@dataclass(frozen=True)
class FaithubBound:
    """A sound upper bound on ``max_{x ∈ box} ‖softmax g_t(x) − softmax g_s(x)‖∞`` and its provenance.

    ``root_decoupled`` is seed 001's Eq. 11 with CROWN on the whole box (what
    :func:`encoders.properties.faithub_crown` returns, up to the interval intersection there),
    ``root`` the joint bound on the whole box, ``faithub`` the final (branch-and-bound) value;
    ``attained`` is the largest gap evaluated at a leaf centre (a lower bound on the true maximum).
    """

    faithub: float
    root: float
    root_decoupled: float
    boxes: int
    rounds: int
    seconds: float
    attained: float = 0.0
    method: str = "joint-bab"


# --------------------------------------------------------------------------------------------------
# branch and bound
# --------------------------------------------------------------------------------------------------
@dataclass(eq=False)
class _Leaves:
    """The open leaves: boxes, per-network hidden-layer bounds valid on each leaf (its own CROWN bounds,
    which carry the ReLU splits made so far), values and branching data."""

    lo: np.ndarray
    hi: np.ndarray
    t_bounds: tuple[list[np.ndarray], list[np.ndarray]]
    s_bounds: tuple[list[np.ndarray], list[np.ndarray]]
    value: np.ndarray
    in_score: np.ndarray  # (N, m): (hi − lo)·(|w^t| + |w^s|) per coordinate
    relu: np.ndarray  # (N, 4): best ReLU split (network 0/1, layer, neuron, score)

    def take(self, idx: np.ndarray) -> _Leaves:
        sub = lambda bb: ([a[idx] for a in bb[0]], [a[idx] for a in bb[1]])  # noqa: E731
        return _Leaves(self.lo[idx], self.hi[idx], sub(self.t_bounds), sub(self.s_bounds), self.value[idx],
                       self.in_score[idx], self.relu[idx])

    @staticmethod
    def cat(a: _Leaves, b: _Leaves) -> _Leaves:
        cb = lambda x, y: ([np.vstack([p, q]) for p, q in zip(x[0], y[0])],  # noqa: E731
                           [np.vstack([p, q]) for p, q in zip(x[1], y[1])])
        return _Leaves(np.vstack([a.lo, b.lo]), np.vstack([a.hi, b.hi]), cb(a.t_bounds, b.t_bounds),
                       cb(a.s_bounds, b.s_bounds), np.concatenate([a.value, b.value]),
                       np.vstack([a.in_score, b.in_score]), np.vstack([a.relu, b.relu]))


def _hidden(P: PairLinear) -> tuple[list[np.ndarray], list[np.ndarray]]:
    assert P.bounds is not None
    return ([np.atleast_2d(a) for a in P.bounds.lower[:-1]], [np.atleast_2d(a) for a in P.bounds.upper[:-1]])


def _prior(bb: tuple[list[np.ndarray], list[np.ndarray]] | None) -> LayerBounds | None:
    if bb is None:
        return None
    return LayerBounds(tuple(bb[0]) + (np.zeros((bb[0][0].shape[0], 1)),),
                       tuple(bb[1]) + (np.zeros((bb[0][0].shape[0], 1)),), "crown")


def _swap(n: int) -> np.ndarray:
    """Index of row ``(j, i)`` for each row ``(i, j)`` of :func:`_pair_rows`."""
    _, ii, jj = _pair_rows(n)
    pos = {(a, b): r for r, (a, b) in enumerate(zip(ii, jj))}
    return np.array([pos[(b, a)] for a, b in zip(ii, jj)])


def _relu_choice(t: PairLinear, s: PairLinear, term: np.ndarray, lo: np.ndarray, hi: np.ndarray,
                 weighted: bool = True) -> np.ndarray:
    """Best ReLU to split per box: ``(B, 4)`` rows ``(network, layer, neuron, score)``.

    The score of an unstable neuron is what its chord's intercept costs the linear bounds of the
    attaining term (BaBSR-like): ``Σ_r max(−A_r, 0) t`` over the rows ``r`` that bound the first
    network's ``d_i·`` from below and the second's from above (``A_r`` the backward-pass coefficient of
    the neuron in row ``r``, ``t = −s l`` the chord's intercept).  Both sides are in logit units.  With
    ``weighted`` the rows are weighted by their softmax weights in ``φ`` at the box centre.  Only the
    choice of the split depends on this score, never the soundness of a bound.
    """
    B = term.shape[0]
    n = t.dl.shape[-1]
    _, ii, jj = _pair_rows(n)
    i, sg = term // 2, term % 2
    sel_lo = (ii[None, :] == i[:, None]).astype(np.float64)  # rows (i, j): lower bounds of d_i·
    sel_up = (jj[None, :] == i[:, None]).astype(np.float64)  # rows (j, i): upper bounds of d_i· = −d_·i
    best = np.zeros((B, 4))
    best[:, 3] = -1.0
    centre = 0.5 * (lo + hi)
    for k, (net, first) in enumerate(((t, sg == 0), (s, sg == 1))):
        sel = np.where(first[:, None], sel_lo, sel_up)
        if weighted:
            # weight row (i, j) by the softmax weight of d_ij in φ at the box centre (∂ log φ / ∂ d_ij)
            Al, cl = net.A_lo[:, ii, jj], net.c_lo[:, ii, jj]
            v = np.einsum("bqm,bm->bq", Al, centre) + cl
            v = np.where(first[:, None], v, -v[:, _swap(n)])
            v = np.where(sel_lo > 0, v, -np.inf)  # both sides now indexed by the rows (i, j)
            top = np.maximum(v.max(axis=1, keepdims=True), 0.0)
            e = np.exp(v - top)
            w = e / (e.sum(axis=1, keepdims=True) + np.exp(-top))
            sel = np.where(first[:, None], w, w[:, _swap(n)]) * (sel > 0)
        for j, ch in enumerate(net.chord):
            if ch.size == 0:
                continue
            sc = np.einsum("bq,bqn->bn", sel, ch)
            arg = sc.argmax(axis=1)
            v = sc[np.arange(B), arg]
            better = v > best[:, 3]
            best[better] = np.stack([np.full(B, k), np.full(B, j), arg, v], axis=1)[better]
    return best


def _bound_leaves(teacher: Network, student: Network, lo: np.ndarray, hi: np.ndarray,
                  t_prior: tuple | None, s_prior: tuple | None,
                  config: FaithubConfig) -> tuple[_Leaves, np.ndarray, np.ndarray]:
    """Bound ``B`` leaves; returns them (values not yet capped by the parents') and the decoupled
    values."""
    t = pair_linear_bounds(teacher, lo, hi, _prior(t_prior))
    s = pair_linear_bounds(student, lo, hi, _prior(s_prior))
    val, dec, score, term = faithub_box_bound(t, s, lo, hi, config.slabs, config.refine, config.grid,
                                              return_term=True)
    empty = t.empty | s.empty
    val = np.where(empty, 0.0, val)  # an empty leaf holds no input: any value bounds its (empty) maximum
    if config.relu_weight > 0:
        relu = _relu_choice(t, s, term, lo, hi, config.relu_weighted)
    else:
        relu = np.tile([0.0, 0.0, 0.0, -1.0], (len(val), 1))
    leaves = _Leaves(lo, hi, _hidden(t), _hidden(s), val, (hi - lo) * score, relu)
    return leaves, val, dec


def _gap_at(teacher: Network, student: Network, X: np.ndarray) -> np.ndarray:
    """``‖softmax g_t(x) − softmax g_s(x)‖∞`` at the rows of ``X`` (float64)."""

    def soft(z: np.ndarray) -> np.ndarray:
        e = np.exp(z - z.max(axis=1, keepdims=True))
        return e / e.sum(axis=1, keepdims=True)

    return np.abs(soft(teacher.evaluate(X)) - soft(student.evaluate(X))).max(axis=1)


def _split(P: _Leaves, relu_weight: float) -> tuple[np.ndarray, np.ndarray, tuple, tuple, np.ndarray]:
    """Children of the leaves ``P``: each is split on its best ReLU if that scores at least
    ``1/relu_weight`` times its best input coordinate, else at the midpoint of that coordinate.
    Returns ``(lo, hi, teacher prior, student prior, parent index)`` of the ``2k`` children."""
    k = len(P.value)
    ar = np.arange(k)
    dim = np.argmax(P.in_score, axis=1)
    use_relu = relu_weight * P.relu[:, 3] >= P.in_score[ar, dim]
    use_relu &= P.relu[:, 3] > 0
    mid = 0.5 * (P.lo[ar, dim] + P.hi[ar, dim])
    h1, l2 = P.hi.copy(), P.lo.copy()
    h1[ar, dim] = np.where(use_relu, P.hi[ar, dim], mid)
    l2[ar, dim] = np.where(use_relu, P.lo[ar, dim], mid)
    cl, ch = np.vstack([P.lo, l2]), np.vstack([h1, P.hi])
    priors = []
    for k_net, bb in enumerate((P.t_bounds, P.s_bounds)):
        low = [np.vstack([a, a]) for a in bb[0]]
        up = [np.vstack([a, a]) for a in bb[1]]
        sel = np.nonzero(use_relu & (P.relu[:, 0] == k_net))[0]
        for r in sel:
            j, u = int(P.relu[r, 1]), int(P.relu[r, 2])
            up[j][r, u] = min(up[j][r, u], 0.0)  # first child: z_u ≤ 0 (inactive)
            low[j][k + r, u] = max(low[j][k + r, u], 0.0)  # second child: z_u ≥ 0 (active)
        priors.append((low, up))
    return cl, ch, priors[0], priors[1], np.concatenate([ar, ar])


def faithub_joint(teacher: Network, student: Network, lo: np.ndarray, hi: np.ndarray,
                  config: FaithubConfig = FaithubConfig()) -> FaithubBound:
    """Sound upper bound on ``max_{lo ≤ x ≤ hi} ‖softmax g_t(x) − softmax g_s(x)‖∞`` (module docstring).

    Parameters
    ----------
    teacher, student
        Networks with the same numbers of inputs and outputs.
    lo, hi
        The input box (e.g. ``B_ε(x0) ∩ D`` for L∞).
    """
    t0 = time.perf_counter()
    lo = np.asarray(lo, dtype=np.float64).reshape(1, -1)
    hi = np.asarray(hi, dtype=np.float64).reshape(1, -1)
    if teacher.n_inputs != student.n_inputs or teacher.n_outputs != student.n_outputs:
        raise SpecError(
            f"teacher ({teacher.n_inputs} → {teacher.n_outputs}) and student ({student.n_inputs} → "
            f"{student.n_outputs}) differ in their numbers of inputs or outputs"
        )
    leaves, val, dec = _bound_leaves(teacher, student, lo, hi, None, None, config)
    root, root_dec = float(val[0]), float(dec[0])
    attained = float(_gap_at(teacher, student, 0.5 * (lo + hi)).max())
    rounds = 0
    deadline = t0 + config.time_limit
    last = 0.0  # duration of the last round: a round is only started if it should end by the deadline
    while (time.perf_counter() + last < deadline and len(leaves.value) < config.max_boxes
           and leaves.value.max() > attained + config.tolerance):
        t_round = time.perf_counter()
        rounds += 1
        V = leaves.value
        k = min(config.split_per_round, len(V), config.max_boxes - len(V))
        if k < 1:
            break
        pick = np.argsort(-V)[:k]
        keep = np.setdiff1d(np.arange(len(V)), pick)
        parents = leaves.take(pick)
        cl, ch, tp, sp, par = _split(parents, config.relu_weight)
        kids, cv, _ = _bound_leaves(teacher, student, cl, ch, tp, sp, config)
        kids.value = np.minimum(cv, parents.value[par])  # the parent's bound holds on its children
        attained = max(attained, float(_gap_at(teacher, student, 0.5 * (cl + ch)).max()))
        leaves = _Leaves.cat(leaves.take(keep), kids)
        last = time.perf_counter() - t_round
    return FaithubBound(
        faithub=float(min(leaves.value.max(), root)),
        root=root,
        root_decoupled=root_dec,
        boxes=len(leaves.value),
        rounds=rounds,
        seconds=time.perf_counter() - t0,
        attained=attained,
    )
