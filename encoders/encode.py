"""Encode a :class:`~encoders.network.Network` into a :class:`~encoders.program.Program`.

Compact formulation
-------------------
Given pre-activation bounds ``l^(k) <= z^(k) <= u^(k)`` of every layer (interval or CROWN, from
:mod:`encoders.bounds`, valid over the input region the program allows), the network
``z^(1) = W1 x + b1, h^(k) = ReLU(z^(k)), z^(k+1) = W_{k+1} h^(k) + b_{k+1}`` is encoded as follows.
Every neuron's value is kept as an affine expression over a *basis* of program variables (initially
the input variables):

* stable active (``l >= 0``):   ``h_i = z_i`` — substituted, no variable, no constraint;
* stable inactive (``u <= 0``): ``h_i = 0`` — substituted, no variable, no constraint;
* unstable (``l < 0 < u``):     new variables ``z_i ∈ [l_i, u_i]`` with the row
  ``z_i = (W h + b)_i`` and ``h_i ∈ [0, u_i]`` with ``ReLU(h_i, z_i)`` — the only place a MILP
  backend spends a binary.

The outputs get variables ``y ∈ [l^(L), u^(L)]`` with rows ``y = W_L h + b_L``.  The encoding is exact
(not a relaxation): its feasible set projected on ``(x, y)`` is the graph of the network over the
input region, *provided* the bounds are sound over that region — which is what ``bounds`` promises.
"""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np

from .network import Affine, Network, Relu
from .program import Program, Sense, Tag

__all__ = ["encode_network", "NetworkEncoding", "widen_bounds"]

# Bounds are widened by this much before they become variable bounds and big-M constants, so that
# float rounding in the bound computation can never cut off a reachable point.
BOUND_SLACK = 1e-7


@dataclass(frozen=True, eq=False)
class NetworkEncoding:
    """Variable indices of one encoded network."""

    ns: str
    inputs: np.ndarray
    outputs: np.ndarray
    unstable: tuple[int, ...]  # unstable neurons per hidden layer
    stable_active: tuple[int, ...]
    stable_inactive: tuple[int, ...]


def widen_bounds(lo: np.ndarray, hi: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    """The bounds :func:`encode_network` really uses: ``[lo, hi]`` widened by ``BOUND_SLACK·(1 + |·|)``.

    A neuron gets variables (``z``, ``h``, a binary) exactly when these widened bounds leave it unstable,
    so code that adds rows on those variables (e.g. the twin-network cuts) must use the same widening.
    """
    return lo - BOUND_SLACK * (1.0 + np.abs(lo)), hi + BOUND_SLACK * (1.0 + np.abs(hi))


def encode_network(
    prog: Program,
    net: Network,
    inputs: np.ndarray,
    lower: list[np.ndarray] | tuple[np.ndarray, ...],
    upper: list[np.ndarray] | tuple[np.ndarray, ...],
    ns: str = "net",
) -> NetworkEncoding:
    """Add ``net`` to ``prog`` with input variables ``inputs``; return its encoding.

    Parameters
    ----------
    lower, upper
        Pre-activation bounds of every affine layer of ``net`` (last = outputs), valid over every
        input the program admits (e.g. ``LayerBounds.lower``/``.upper`` for one box).
    ns
        Name space for the variables (``"{ns}.z1[3]"`` …); ``prog.blocks[ns]`` records the inputs
        (``"input"``), the outputs (``"output"``) and, per hidden layer ``k`` (1-based), the output
        variables of its unstable ReLUs (``"h{k}"``).
    """
    affines = net.affines
    if len(lower) != len(affines) or len(upper) != len(affines):
        raise ValueError(f"{ns}: need bounds for {len(affines)} affine layers, got {len(lower)}")
    inputs = np.asarray(inputs, dtype=np.int64)
    basis = inputs  # variable indices
    E = np.eye(inputs.size)  # neuron values = E @ x[basis] + e0
    e0 = np.zeros(inputs.size)
    counts_u, counts_a, counts_i = [], [], []
    hidden: dict[str, np.ndarray] = {}  # "h{k}": the outputs of layer k's unstable ReLUs
    layer_no = 0
    for lay in net.layers:
        if isinstance(lay, Affine):
            P = lay.W @ E
            p0 = lay.W @ e0 + lay.b
            layer_no += 1
            continue
        assert isinstance(lay, Relu)
        lo, hi = widen_bounds(
            np.asarray(lower[layer_no - 1], float).reshape(-1),
            np.asarray(upper[layer_no - 1], float).reshape(-1),
        )
        active = lo >= 0.0
        inactive = hi <= 0.0
        unstable = ~(active | inactive)
        uidx = np.flatnonzero(unstable)
        z = prog.add_vars(f"{ns}.z{layer_no}", lo[uidx], hi[uidx])
        h = prog.add_vars(f"{ns}.h{layer_no}", np.zeros(uidx.size), np.maximum(hi[uidx], 0.0))
        for k, i in enumerate(uidx):
            nz = np.flatnonzero(P[i])
            prog.add_row(
                np.concatenate([basis[nz], [z[k]]]),
                np.concatenate([P[i, nz], [-1.0]]),
                Sense.EQ,
                -p0[i],
                Tag.NETWORK,
                f"{ns}.def_z{layer_no}[{i}]",
            )
            prog.add_relu(h[k], z[k], Tag.NETWORK)
        hidden[f"h{layer_no}"] = h
        # new basis: old basis (for substituted active neurons) + new h vars
        keep = np.flatnonzero(np.any(P[active] != 0.0, axis=0)) if active.any() else np.array([], int)
        new_basis = np.concatenate([basis[keep], h])
        E_new = np.zeros((lay.size, new_basis.size))
        e_new = np.zeros(lay.size)
        E_new[np.ix_(np.flatnonzero(active), np.arange(keep.size))] = P[np.ix_(np.flatnonzero(active), keep)]
        e_new[active] = p0[active]
        E_new[uidx, keep.size + np.arange(uidx.size)] = 1.0
        basis, E, e0 = new_basis, E_new, e_new
        counts_u.append(int(unstable.sum()))
        counts_a.append(int(active.sum()))
        counts_i.append(int(inactive.sum()))
    lo, hi = widen_bounds(np.asarray(lower[-1], float).reshape(-1), np.asarray(upper[-1], float).reshape(-1))
    y = prog.add_vars(f"{ns}.y", lo, hi)
    for i in range(y.size):
        nz = np.flatnonzero(P[i])
        prog.add_row(
            np.concatenate([basis[nz], [y[i]]]),
            np.concatenate([P[i, nz], [-1.0]]),
            Sense.EQ,
            -p0[i],
            Tag.NETWORK,
            f"{ns}.def_y[{i}]",
        )
    prog.blocks[ns] = {"input": inputs, "output": y, **hidden}
    return NetworkEncoding(ns, inputs, y, tuple(counts_u), tuple(counts_a), tuple(counts_i))
