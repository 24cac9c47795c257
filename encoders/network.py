"""ONNX → network IR.

The IR has two views of one network:

* ``Network.graph`` — a :class:`networkx.DiGraph` with one node per ONNX node, each carrying a typed
  layer descriptor (``kind`` ∈ {``affine``, ``relu``, ``shape``, ``const``}, ``op_type``, ``name``)
  and edges along the tensors that connect them.
* ``Network.layers`` — the graph collapsed to a sequence ``Affine, Relu, Affine, Relu, …, Affine``
  on flattened (row-major) vectors, float64.  Every linear op between two ReLUs (MatMul, Gemm, Add,
  Sub, Mul, Div by constants, BatchNormalization, Conv, AveragePool, ReduceSum, Slice, Gather, …) is
  composed into one ``Affine(W, b)`` with ``y = W x + b``.  Input normalisation (``(x - mean) / std``)
  therefore lands inside the first affine layer and the verifier works in the ONNX input space.

Collapse algorithm.  Every non-constant tensor ``t`` is kept as an affine function of the current
*basis* — the network input, or the output of the most recent ReLU layer — ``flat(t) = M·basis + c``.
An op handler (looked up by op type in the one table :data:`SUPPORTED_OPS`) composes its own linear
map into ``(M, c)``; re-indexing ops (Slice, Split, Gather, Concat, Transpose, Expand, Pad, …) select
rows.  A ``Relu`` emits ``Affine(M, c)`` followed by ``Relu`` and makes its output the new basis.

Exact piecewise-linear ops are rewritten into ReLU layers by identities that hold for every real input,
so bounds, encodings and every backend treat them as ordinary ReLUs (no new constraint kind):
``max(a, b) = max(0, a − b) + max(0, b) − max(0, −b)`` (MaxPool, GlobalMaxPool, Max; Min by negation),
``|x| = max(0, x) + max(0, −x)``, ``LeakyRelu_α(x) = max(0, x) − α max(0, −x)`` and
``clip(x, l, u) = l + max(0, x − l) − max(0, x − u)``.

Skip connections (a tensor read after a later ReLU layer: residual Add, Concat across layers, a graph
output taken early) are carried through every intervening ReLU layer exactly, as extra neurons
``max(0, v) − max(0, −v) = v`` (one neuron ``max(0, v) = v`` when ``v`` is non-negative by
construction); liveness decides which tensors are carried (:meth:`_Ctx.emit_relu`).  Nonlinear uses are
rejected (product or quotient of two activations, a Cast that rounds, a Where whose condition depends on
the input).  An output that does not depend on the input is the constant
network ``y = 0·x + c``.  An input whose first dimension is a fixed size above 1 (or of rank 1) has no
batch dimension: one sample is the whole tensor.
"""

from __future__ import annotations

import hashlib
from collections.abc import Callable, Mapping
from dataclasses import dataclass, field
from pathlib import Path
from types import MappingProxyType
from typing import Any

import networkx as nx
import numpy as np

from .errors import ModelFormatError, UnsupportedModelError

__all__ = [
    "Affine",
    "Relu",
    "Network",
    "load_onnx",
    "network_from_layers",
    "ort_evaluate",
    "save_onnx",
    "file_sha256",
    "SUPPORTED_OPS",
    "OpSupport",
    "OP_ELEMENT_TYPES",
]


# --------------------------------------------------------------------------------------------------
# layer types
# --------------------------------------------------------------------------------------------------
@dataclass(frozen=True, eq=False)
class Affine:
    """``y = W @ x + b`` on flat vectors; ``W`` has shape ``(out, in)``, float64."""

    W: np.ndarray
    b: np.ndarray

    @property
    def in_size(self) -> int:
        return int(self.W.shape[1])

    @property
    def out_size(self) -> int:
        return int(self.W.shape[0])


@dataclass(frozen=True, eq=False)
class Relu:
    """Element-wise ``max(0, x)`` on a vector of ``size`` entries."""

    size: int


Layer = Affine | Relu


@dataclass(frozen=True, eq=False)
class Network:
    """A feed-forward ReLU network, collapsed to ``Affine (Relu Affine)*``.

    Attributes
    ----------
    layers
        Alternating ``Affine``/``Relu`` layers starting and ending with ``Affine``.
    input_name, input_shape
        ONNX input name and its shape with the batch dimension (dynamic dims as ``-1``).
    output_name, output_shape
        Likewise for the output.
    sha256
        SHA-256 of the ONNX file's bytes (``""`` for in-memory networks).
    path
        The ONNX file, if any (replay needs it).
    graph
        The typed-layer DAG read from the ONNX file.
    input_names, input_shapes, output_names, output_shapes
        Every ONNX input and output in graph order (``load_onnx`` fills them; empty for hand-built
        networks).  With several inputs the flat input vector is their row-major entries concatenated
        in this order, and likewise for the outputs; ``input_name``/``input_shape`` (and the output
        pair) are the first ones.
    """

    layers: tuple[Layer, ...]
    input_name: str = "input"
    input_shape: tuple[int, ...] = ()
    output_name: str = "output"
    output_shape: tuple[int, ...] = ()
    sha256: str = ""
    path: str | None = None
    graph: nx.DiGraph = field(default_factory=nx.DiGraph)
    input_names: tuple[str, ...] = ()
    input_shapes: tuple[tuple[int, ...], ...] = ()
    output_names: tuple[str, ...] = ()
    output_shapes: tuple[tuple[int, ...], ...] = ()

    # ---- sizes ------------------------------------------------------------------------------
    @property
    def affines(self) -> list[Affine]:
        return [lay for lay in self.layers if isinstance(lay, Affine)]

    @property
    def n_inputs(self) -> int:
        return self.affines[0].in_size

    @property
    def n_outputs(self) -> int:
        return self.affines[-1].out_size

    @property
    def hidden_sizes(self) -> list[int]:
        return [lay.size for lay in self.layers if isinstance(lay, Relu)]

    @property
    def n_relus(self) -> int:
        return sum(self.hidden_sizes)

    @property
    def n_params(self) -> int:
        return sum(a.W.size + a.b.size for a in self.affines)

    # ---- evaluation -------------------------------------------------------------------------
    def evaluate(self, x: np.ndarray) -> np.ndarray:
        """Outputs for flat inputs ``x`` of shape ``(n_inputs,)`` or ``(batch, n_inputs)``, float64."""
        x = np.asarray(x, dtype=np.float64)
        single = x.ndim == 1
        h = x.reshape(1, -1) if single else x.reshape(x.shape[0], -1)
        if h.shape[1] != self.n_inputs:
            raise ValueError(f"expected {self.n_inputs} input values, got {h.shape[1]}")
        for lay in self.layers:
            h = h @ lay.W.T + lay.b if isinstance(lay, Affine) else np.maximum(h, 0.0)
        return h[0] if single else h

    def input_gradient(self, x: np.ndarray, g_out: np.ndarray) -> np.ndarray:
        """``g_out · J(x)``: the input gradient of ``g_out · f`` in ``x``'s linear region (one backward pass;
        at a ReLU input of exactly 0 the inactive side is taken)."""
        masks = []
        h = np.asarray(x, dtype=np.float64)
        for lay in self.layers:
            if isinstance(lay, Affine):
                h = lay.W @ h + lay.b
            else:
                masks.append(h > 0)
                h = np.maximum(h, 0.0)
        g = np.asarray(g_out, dtype=np.float64)
        for lay in reversed(self.layers):
            g = g @ lay.W if isinstance(lay, Affine) else g * masks.pop()
        return g

    def pre_activations(self, x: np.ndarray) -> list[np.ndarray]:
        """Inputs of every ReLU layer (and the final output last) for a batch of flat inputs."""
        h = np.atleast_2d(np.asarray(x, dtype=np.float64))
        out = []
        for lay in self.layers:
            if isinstance(lay, Affine):
                h = h @ lay.W.T + lay.b
                out.append(h)
            else:
                h = np.maximum(h, 0.0)
        return out

    def onnx_input(self, x: np.ndarray) -> np.ndarray:
        """Reshape flat inputs ``(batch, n)`` to the ONNX input shape, float32."""
        x = np.atleast_2d(np.asarray(x, dtype=np.float32))
        if self.input_shape and int(np.prod(self.input_shape)) == self.n_inputs and self.input_shape[0] != 1:
            return x.reshape((x.shape[0], *self.input_shape))  # unbatched input: one tensor per row
        tail = [d for d in self.input_shape[1:]] if self.input_shape else [self.n_inputs]
        return x.reshape((x.shape[0], *tail))

    def summary(self) -> dict[str, Any]:
        """Layer list with shapes, ReLU count, I/O names and shapes, parameters, file hash."""
        layers = []
        for lay in self.layers:
            if isinstance(lay, Affine):
                layers.append({"type": "Affine", "in": lay.in_size, "out": lay.out_size})
            else:
                layers.append({"type": "Relu", "size": lay.size})
        return {
            "path": self.path,
            "sha256": self.sha256,
            "input": {"name": self.input_name, "shape": list(self.input_shape), "size": self.n_inputs},
            "output": {"name": self.output_name, "shape": list(self.output_shape), "size": self.n_outputs},
            "layers": layers,
            "hidden_sizes": self.hidden_sizes,
            "n_relus": self.n_relus,
            "n_params": self.n_params,
            "onnx_nodes": self.graph.number_of_nodes(),
        }


def network_from_layers(weights: list[tuple[np.ndarray, np.ndarray]], **kwargs: Any) -> Network:
    """Build a network from ``[(W1, b1), …, (Wk, bk)]`` with a ReLU between consecutive pairs.

    Handy for hand-built test networks; ``W`` has shape ``(out, in)``.
    """
    layers: list[Layer] = []
    for i, (W, b) in enumerate(weights):
        W = np.atleast_2d(np.asarray(W, dtype=np.float64))
        b = np.asarray(b, dtype=np.float64).reshape(-1)
        if W.shape[0] != b.shape[0]:
            raise ValueError(f"layer {i}: W has {W.shape[0]} rows but b has {b.shape[0]} entries")
        if layers and W.shape[1] != layers[-1].size:  # type: ignore[union-attr]
            raise ValueError(
                f"layer {i}: expects {W.shape[1]} inputs, previous layer gives {layers[-1].size}"
            )
        layers.append(Affine(W, b))
        if i < len(weights) - 1:
            layers.append(Relu(W.shape[0]))
    n_in = layers[0].in_size  # type: ignore[union-attr]
    kwargs.setdefault("input_shape", (1, n_in))
    kwargs.setdefault("output_shape", (1, layers[-1].out_size))  # type: ignore[union-attr]
    return Network(layers=tuple(layers), **kwargs)


# --------------------------------------------------------------------------------------------------
# ONNX import
# --------------------------------------------------------------------------------------------------
@dataclass
class _Sym:
    """A tensor that is an affine function of the current basis: ``flat = M @ basis + c``."""

    M: np.ndarray
    c: np.ndarray
    shape: tuple[int, ...]
    basis: int  # id of the basis this is a function of


class _Ctx:
    """Import state shared by the op handlers."""

    def __init__(self, path: str):
        self.path = path
        self.values: dict[str, np.ndarray | _Sym] = {}
        self.layers: list[Layer] = []
        self.basis_id = 0
        self.basis_size = 0
        self.node_index = 0  # the node being translated
        self.last_use: dict[str, int] = {}  # tensor -> index of the last node reading its values

    def const(self, name: str, node: Any) -> np.ndarray:
        v = self.values.get(name)
        if not isinstance(v, np.ndarray):
            raise _Unsupported(f"input {name!r} must be a constant")
        return v

    def sym(self, name: str) -> _Sym:
        v = self.values[name]
        assert isinstance(v, _Sym)
        if v.basis != self.basis_id:
            raise _Unsupported("non-sequential graph (a tensor is used after a later ReLU: skip connection)")
        return v

    def operand(self, name: str) -> np.ndarray | _Sym:
        """The value of input ``name``: a constant, or a symbolic tensor on the current basis."""
        if name not in self.values:
            raise _Unsupported(f"input {name!r} is not produced by any earlier node")
        v = self.values[name]
        return self.sym(name) if isinstance(v, _Sym) else v

    def as_sym(self, v: np.ndarray | _Sym) -> _Sym:
        """A constant as a symbolic tensor on the current basis (zero coefficients): exact."""
        if isinstance(v, _Sym):
            return v
        a = np.asarray(v, dtype=np.float64)
        return _Sym(np.zeros((a.size, self.basis_size)), a.reshape(-1).copy(), tuple(a.shape), self.basis_id)

    def emit_relu(self, pre: _Sym) -> _Sym:
        """Close the affine block at ``pre`` and apply ReLU: ``h = max(0, pre)`` becomes the new basis.

        Appends ``Affine`` and ``Relu`` layers; returns ``h`` on the new basis.  Every other symbolic
        tensor that a later node still reads (a skip connection, a residual branch, a graph output) is
        carried through the same layer exactly: its entries ``v`` are extra pre-activations ``v`` and
        ``−v``, read back as ``max(0, v) − max(0, −v) = v``, or only ``v`` when ``v`` is non-negative by
        construction (a non-negative combination of the previous ReLU layer's outputs plus a
        non-negative constant, e.g. a residual taken after a ReLU), read back as ``max(0, v) = v``.
        Carried entries are ordinary ReLUs to every bound method and encoder (stable whenever the
        bounds fix their sign: free in the MILP, exact in CROWN).
        """
        live: dict[tuple[int, int], tuple[_Sym, list[str]]] = {}
        for name, v in self.values.items():
            if (
                isinstance(v, _Sym)
                and v.basis == self.basis_id
                and self.last_use.get(name, -1) > self.node_index
            ):
                live.setdefault((id(v.M), id(v.c)), (v, []))[1].append(name)
        blocks_M, blocks_c = [pre.M], [pre.c]
        n = pre.M.shape[0]
        reads: list[tuple[_Sym, list[str], np.ndarray, np.ndarray]] = []
        for v, names in live.values():
            nonneg = (v.basis > 0) & np.all(v.M >= 0.0, axis=1) & (v.c >= 0.0)
            neg = np.flatnonzero(~nonneg)
            pos_rows = n + np.arange(v.M.shape[0])
            neg_rows = n + v.M.shape[0] + np.arange(neg.size)
            blocks_M += [v.M, -v.M[neg]]
            blocks_c += [v.c, -v.c[neg]]
            n += v.M.shape[0] + neg.size
            reads.append((v, names, pos_rows, np.stack([neg, neg_rows])))
        M, c = np.vstack(blocks_M), np.concatenate(blocks_c)
        self.layers.append(Affine(M, c))
        self.layers.append(Relu(n))
        self.basis_id += 1
        self.basis_size = n
        eye = np.eye(n)
        for _v, names, pos_rows, (neg, neg_rows) in reads:
            U = eye[pos_rows].copy()
            U[neg, neg_rows] -= 1.0
            zero = np.zeros(U.shape[0])
            for name in names:
                old = self.values[name]
                self.values[name] = _Sym(U, zero, old.shape, self.basis_id)  # type: ignore[union-attr]
        k = pre.M.shape[0]
        return _Sym(eye[:k], np.zeros(k), pre.shape, self.basis_id)


class _Unsupported(Exception):
    """Raised by a handler for a node it cannot translate (collected, then reported together)."""


def _attrs(node: Any) -> dict[str, Any]:
    import onnx

    return {a.name: onnx.helper.get_attribute_value(a) for a in node.attribute}


def _broadcast_index(shape: tuple[int, ...], out_shape: tuple[int, ...]) -> np.ndarray:
    n = int(np.prod(shape)) if shape else 1
    return np.broadcast_to(np.arange(n).reshape(shape), out_shape).reshape(-1)


def _sym_affine_elementwise(s: _Sym, k: np.ndarray, op: str, sym_first: bool) -> _Sym:
    """``s (op) k`` or ``k (op) s`` for a constant ``k`` with numpy broadcasting."""
    out_shape = tuple(np.broadcast_shapes(s.shape, k.shape))
    idx = _broadcast_index(s.shape, out_shape)
    M, c = s.M[idx], s.c[idx]
    kf = np.broadcast_to(k.astype(np.float64), out_shape).reshape(-1)
    if op == "Add":
        return _Sym(M, c + kf, out_shape, s.basis)
    if op == "Sub":
        if sym_first:
            return _Sym(M, c - kf, out_shape, s.basis)
        return _Sym(-M, kf - c, out_shape, s.basis)
    if op == "Mul":
        return _Sym(M * kf[:, None], c * kf, out_shape, s.basis)
    if op == "Div":
        if not sym_first:
            raise _Unsupported("division by a non-constant tensor")
        if np.any(kf == 0):
            raise _Unsupported("division by zero constant")
        return _Sym(M / kf[:, None], c / kf, out_shape, s.basis)
    raise _Unsupported(op)


def _h_elementwise(node: Any, ctx: _Ctx) -> None:
    a, b = (ctx.values.get(n) for n in node.input[:2])
    op = node.op_type
    if isinstance(a, np.ndarray) and isinstance(b, np.ndarray):
        if op == "Div" and a.dtype.kind in "iu" and b.dtype.kind in "iu":  # ONNX integer Div truncates
            ctx.values[node.output[0]] = np.trunc(a / b).astype(np.result_type(a, b))
            return
        fn = {"Add": np.add, "Sub": np.subtract, "Mul": np.multiply, "Div": np.divide}[op]
        ctx.values[node.output[0]] = fn(a, b)
        return
    if a is None or b is None:
        raise _Unsupported("an input is not produced by any earlier node")
    if isinstance(a, _Sym) and isinstance(b, _Sym):
        if op not in ("Add", "Sub"):
            raise _Unsupported(f"{op} of two non-constant tensors (not linear)")
        a, b = ctx.sym(node.input[0]), ctx.sym(node.input[1])
        try:
            out_shape = tuple(np.broadcast_shapes(a.shape, b.shape))
        except ValueError:
            raise _Unsupported(f"{op} of tensors with shapes {a.shape} and {b.shape}") from None
        ia, ib = _broadcast_index(a.shape, out_shape), _broadcast_index(b.shape, out_shape)
        sign = 1.0 if op == "Add" else -1.0
        ctx.values[node.output[0]] = _Sym(
            a.M[ia] + sign * b.M[ib], a.c[ia] + sign * b.c[ib], out_shape, a.basis
        )
        return
    if isinstance(a, _Sym):
        ctx.values[node.output[0]] = _sym_affine_elementwise(ctx.sym(node.input[0]), b, op, True)
    else:
        ctx.values[node.output[0]] = _sym_affine_elementwise(ctx.sym(node.input[1]), a, op, False)


def _matmul_sym_const(s: _Sym, B: np.ndarray) -> _Sym:
    """``s @ B`` for a symbolic ``s`` of shape ``(..., k)`` and constant ``B`` of shape ``(k, n)``."""
    if B.ndim != 2 or s.shape[-1] != B.shape[0]:
        raise _Unsupported(f"MatMul shapes {s.shape} @ {B.shape}")
    lead = int(np.prod(s.shape[:-1])) if len(s.shape) > 1 else 1
    k, n = B.shape
    M = s.M.reshape(lead, k, -1)
    c = s.c.reshape(lead, k)
    Mo = np.einsum("lkb,kn->lnb", M, B).reshape(lead * n, -1)
    co = (c @ B).reshape(-1)
    return _Sym(Mo, co, (*s.shape[:-1], n), s.basis)


def _matmul_const_sym(A: np.ndarray, s: _Sym) -> _Sym:
    """``A @ s`` for a constant ``A`` of shape ``(r, k)`` and symbolic ``s`` of shape ``(k, n)``."""
    if A.ndim != 2 or len(s.shape) != 2 or A.shape[1] != s.shape[0]:
        raise _Unsupported(f"MatMul shapes {A.shape} @ {s.shape}")
    k, n = s.shape
    M = s.M.reshape(k, n, -1)
    Mo = np.einsum("rk,knb->rnb", A, M).reshape(A.shape[0] * n, -1)
    co = (A @ s.c.reshape(k, n)).reshape(-1)
    return _Sym(Mo, co, (A.shape[0], n), s.basis)


def _h_matmul(node: Any, ctx: _Ctx) -> None:
    a, b = (ctx.values.get(n) for n in node.input[:2])
    if isinstance(a, np.ndarray) and isinstance(b, np.ndarray):
        ctx.values[node.output[0]] = a @ b
    elif isinstance(a, _Sym) and isinstance(b, np.ndarray):
        ctx.values[node.output[0]] = _matmul_sym_const(ctx.sym(node.input[0]), b.astype(np.float64))
    elif isinstance(b, _Sym) and isinstance(a, np.ndarray):
        ctx.values[node.output[0]] = _matmul_const_sym(a.astype(np.float64), ctx.sym(node.input[1]))
    else:
        raise _Unsupported("MatMul of two non-constant tensors")


def _h_gemm(node: Any, ctx: _Ctx) -> None:
    at = _attrs(node)
    alpha, beta = float(at.get("alpha", 1.0)), float(at.get("beta", 1.0))
    a = ctx.values.get(node.input[0])
    B = ctx.const(node.input[1], node).astype(np.float64)
    if at.get("transB", 0):
        B = B.T
    if not isinstance(a, _Sym):
        raise _Unsupported("Gemm whose first input is constant")
    s = ctx.sym(node.input[0])
    if at.get("transA", 0):
        if len(s.shape) != 2:
            raise _Unsupported("Gemm transA on a non-2-D tensor")
        perm = np.arange(int(np.prod(s.shape))).reshape(s.shape).T.reshape(-1)
        s = _Sym(s.M[perm], s.c[perm], (s.shape[1], s.shape[0]), s.basis)
    out = _matmul_sym_const(s, alpha * B)
    if len(node.input) > 2 and node.input[2]:
        C = ctx.const(node.input[2], node).astype(np.float64)
        out = _sym_affine_elementwise(out, beta * C, "Add", True)
    ctx.values[node.output[0]] = out


def _h_relu(node: Any, ctx: _Ctx) -> None:
    v = ctx.values.get(node.input[0])
    if isinstance(v, np.ndarray):
        ctx.values[node.output[0]] = np.maximum(v, 0)
        return
    ctx.values[node.output[0]] = ctx.emit_relu(ctx.sym(node.input[0]))


def _reshaped(ctx: _Ctx, node: Any, shape: tuple[int, ...]) -> None:
    v = ctx.values.get(node.input[0])
    if isinstance(v, np.ndarray):
        ctx.values[node.output[0]] = v.reshape(shape)
        return
    s = ctx.sym(node.input[0])
    if int(np.prod(shape)) != s.M.shape[0]:
        raise _Unsupported(f"cannot reshape {s.shape} to {shape}")
    ctx.values[node.output[0]] = _Sym(s.M, s.c, tuple(int(d) for d in shape), s.basis)


def _shape_of(v: np.ndarray | _Sym) -> tuple[int, ...]:
    return tuple(v.shape)


def _h_flatten(node: Any, ctx: _Ctx) -> None:
    axis = int(_attrs(node).get("axis", 1))
    shp = _shape_of(ctx.values[node.input[0]])
    if axis < 0:
        axis += len(shp)
    lead = int(np.prod(shp[:axis])) if axis > 0 else 1
    _reshaped(ctx, node, (lead, int(np.prod(shp[axis:]))))


def _h_reshape(node: Any, ctx: _Ctx) -> None:
    target = [int(d) for d in ctx.const(node.input[1], node).reshape(-1)]
    shp = _shape_of(ctx.values[node.input[0]])
    allowzero = int(_attrs(node).get("allowzero", 0))
    out = [shp[i] if (d == 0 and not allowzero) else d for i, d in enumerate(target)]
    if -1 in out:
        known = int(np.prod([d for d in out if d != -1]))
        out[out.index(-1)] = int(np.prod(shp)) // max(known, 1)
    _reshaped(ctx, node, tuple(out))


def _axes(node: Any, ctx: _Ctx) -> list[int] | None:
    at = _attrs(node)
    if "axes" in at:
        return [int(a) for a in at["axes"]]
    if len(node.input) > 1 and node.input[1]:
        return [int(a) for a in ctx.const(node.input[1], node).reshape(-1)]
    return None


def _h_squeeze(node: Any, ctx: _Ctx) -> None:
    shp = list(_shape_of(ctx.values[node.input[0]]))
    axes = _axes(node, ctx)
    if axes is None:
        axes = [i for i, d in enumerate(shp) if d == 1]
    axes = [a + len(shp) if a < 0 else a for a in axes]
    if any(shp[a] != 1 for a in axes):
        raise _Unsupported("Squeeze of a dimension whose size is not 1")
    _reshaped(ctx, node, tuple(d for i, d in enumerate(shp) if i not in axes))


def _h_unsqueeze(node: Any, ctx: _Ctx) -> None:
    shp = list(_shape_of(ctx.values[node.input[0]]))
    axes = _axes(node, ctx) or []
    rank = len(shp) + len(axes)
    for a in sorted(a + rank if a < 0 else a for a in axes):
        shp.insert(a, 1)
    _reshaped(ctx, node, tuple(shp))


def _h_identity(node: Any, ctx: _Ctx) -> None:
    ctx.values[node.output[0]] = ctx.values[node.input[0]]


def _h_constant(node: Any, ctx: _Ctx) -> None:
    import onnx.numpy_helper as nh

    at = _attrs(node)
    if "value" in at:
        ctx.values[node.output[0]] = nh.to_array(at["value"])
    elif "value_float" in at:
        ctx.values[node.output[0]] = np.array(at["value_float"], dtype=np.float32)
    elif "value_floats" in at:
        ctx.values[node.output[0]] = np.array(at["value_floats"], dtype=np.float32)
    elif "value_int" in at:
        ctx.values[node.output[0]] = np.array(at["value_int"], dtype=np.int64)
    elif "value_ints" in at:
        ctx.values[node.output[0]] = np.array(at["value_ints"], dtype=np.int64)
    else:
        raise _Unsupported("Constant without a supported value attribute")


def _h_batchnorm(node: Any, ctx: _Ctx) -> None:
    at = _attrs(node)
    eps = float(at.get("epsilon", 1e-5))
    scale, bias, mean, var = (ctx.const(n, node).astype(np.float64) for n in node.input[1:5])
    s = ctx.sym(node.input[0])
    if len(s.shape) < 2:
        raise _Unsupported("BatchNormalization on a tensor without a channel axis")
    k = scale / np.sqrt(var + eps)
    shape = [1] * len(s.shape)
    shape[1] = -1
    mul = k.reshape(shape)
    add = (bias - mean * k).reshape(shape)
    out = _sym_affine_elementwise(s, mul, "Mul", True)
    ctx.values[node.output[0]] = _sym_affine_elementwise(out, add, "Add", True)


def _auto_pad(at: dict[str, Any]) -> str:
    v = at.get("auto_pad", "NOTSET")
    return v.decode() if isinstance(v, bytes) else str(v)


def _window_geometry(
    in_sp: list[int], kernel: list[int], at: dict[str, Any], ceil_ok: bool = False
) -> tuple[list[int], list[int]]:
    """Output sizes and leading pads of a sliding window (Conv, MaxPool, AveragePool) per ONNX.

    ``NOTSET``: ``out = floor((in + p_begin + p_end - (d (k-1) + 1)) / s) + 1`` (``ceil`` with
    ``ceil_mode=1``, dropping a last window that would start inside the trailing pad, as onnxruntime
    does); ``SAME_UPPER``/``SAME_LOWER``: ``out = ceil(in / s)`` with ``max(0, (out-1) s + d (k-1) + 1 -
    in)`` pads split evenly, the odd one at the end (UPPER) or the start (LOWER); ``VALID``: no pads.
    """
    nsp = len(in_sp)
    strides = [int(v) for v in at.get("strides", [1] * nsp)]
    dil = [int(v) for v in at.get("dilations", [1] * nsp)]
    pads = [int(v) for v in at.get("pads", [0] * (2 * nsp))]
    mode = _auto_pad(at)
    ceil_mode = int(at.get("ceil_mode", 0))
    if ceil_mode and not ceil_ok:
        raise _Unsupported("ceil_mode")
    outs, begins = [], []
    for a in range(nsp):
        n, k, st, d = in_sp[a], kernel[a], strides[a], dil[a]
        span = d * (k - 1) + 1
        if mode in ("SAME_UPPER", "SAME_LOWER"):
            if d != 1:  # onnxruntime pads for the undilated kernel here, unlike the ONNX spec
                raise _Unsupported(f"auto_pad {mode} with dilations (ambiguous)")
            out = -(-n // st)
            total = max(0, (out - 1) * st + span - n)
            pb = total // 2 if mode == "SAME_UPPER" else total - total // 2
        elif mode == "VALID":
            out, pb = (n - span) // st + 1, 0
        elif mode == "NOTSET":
            pb, pe = pads[a], pads[a + nsp]
            num = n + pb + pe - span
            out = (-(-num // st) if ceil_mode else num // st) + 1
            if ceil_mode and (out - 1) * st >= n + pb:
                out -= 1
        else:
            raise _Unsupported(f"auto_pad {mode!r}")
        if out < 1:
            raise _Unsupported(f"window of {span} does not fit an input of size {n}")
        outs.append(out)
        begins.append(pb)
    return outs, begins


def _window_taps(
    in_sp: list[int], kernel: list[int], at: dict[str, Any], ceil_ok: bool = False
) -> tuple[list[int], np.ndarray]:
    """For every output position and kernel tap: the flat spatial input index it reads, ``-1`` if padding.

    Returns the output spatial sizes and an int array of shape ``(prod(out), prod(kernel))``.
    """
    outs, begins = _window_geometry(in_sp, kernel, at, ceil_ok)
    nsp = len(in_sp)
    strides = [int(v) for v in at.get("strides", [1] * nsp)]
    dil = [int(v) for v in at.get("dilations", [1] * nsp)]
    o_grid = np.stack(np.meshgrid(*[np.arange(o) for o in outs], indexing="ij"), -1).reshape(-1, nsp)
    k_grid = np.stack(np.meshgrid(*[np.arange(k) for k in kernel], indexing="ij"), -1).reshape(-1, nsp)
    pos = (
        o_grid[:, None, :] * np.array(strides) - np.array(begins) + k_grid[None, :, :] * np.array(dil)
    )  # (n_out, n_taps, nsp)
    ok = np.all((pos >= 0) & (pos < np.array(in_sp)), axis=-1)
    flat = np.ravel_multi_index(tuple(np.clip(pos, 0, np.array(in_sp) - 1).transpose(2, 0, 1)), in_sp)
    return outs, np.where(ok, flat, -1)


#: Largest dense matrix a convolution may unroll to (entries; 2^25 float64 = 256 MiB).  The IR is dense, so
#: a larger convolution (e.g. 32 → 32 channels at 28×28: 25088² entries, 4.7 GiB) is refused as
#: unsupported rather than exhausting memory; such a network is still a valid *teacher* (run, attacked,
#: distilled), just not directly verifiable.
MAX_DENSE_ENTRIES = 2**25


def _conv_matrix(in_shape: tuple[int, ...], Wc: np.ndarray, at: dict[str, Any]) -> tuple[np.ndarray, tuple]:
    """Dense matrix of an N-D convolution without bias on a single ``(C, *spatial)`` image.

    ``out[o, p] = Σ_{c in group(o), t} W[o, c - c0(o), t] · in[c, tap(p, t)]`` with taps from
    :func:`_window_taps` (padding reads zero); ``group`` splits the channels into equal blocks.
    """
    nsp = Wc.ndim - 2
    C, spatial = in_shape[0], list(in_shape[1:])
    if nsp < 1 or len(spatial) != nsp:
        raise _Unsupported(f"Conv with {nsp} spatial dims on input {in_shape}")
    group = int(at.get("group", 1))
    O, cg = Wc.shape[0], Wc.shape[1]
    if group < 1 or cg * group != C or O % group:
        raise _Unsupported(f"Conv with group={group}, {C} input channels and weights {Wc.shape}")
    kernel = [int(k) for k in Wc.shape[2:]]
    if "kernel_shape" in at and [int(k) for k in at["kernel_shape"]] != kernel:
        raise _Unsupported("Conv kernel_shape differs from the weight shape")
    outs, taps = _window_taps(spatial, kernel, at)
    n_sp, n_out_sp = int(np.prod(spatial)), int(np.prod(outs))
    if O * n_out_sp * C * n_sp > MAX_DENSE_ENTRIES:
        raise _Unsupported(
            f"Conv unrolled to a dense {O * n_out_sp}×{C * n_sp} matrix ({O * n_out_sp * C * n_sp:,} entries "
            f"> {MAX_DENSE_ENTRIES:,}): too large for the verifiable IR"
        )
    mat = np.zeros((O * n_out_sp, C * n_sp))
    Wf = Wc.reshape(O, cg, -1)  # (O, C/g, taps)
    rows = np.arange(n_out_sp)
    per_group = O // group
    for o in range(O):
        c0 = (o // per_group) * cg
        for ci in range(cg):
            for t in range(taps.shape[1]):
                ok = taps[:, t] >= 0
                np.add.at(mat, ((o * n_out_sp + rows[ok]), (c0 + ci) * n_sp + taps[ok, t]), Wf[o, ci, t])
    return mat, (O, *outs)


def _h_conv(node: Any, ctx: _Ctx) -> None:
    s = ctx.sym(node.input[0])
    Wc = ctx.const(node.input[1], node).astype(np.float64)
    if s.shape[0] != 1:
        raise _Unsupported("Conv on a batch larger than 1")
    mat, oshape = _conv_matrix(tuple(s.shape[1:]), Wc, _attrs(node))
    M, c = mat @ s.M, mat @ s.c
    if len(node.input) > 2 and node.input[2]:
        bias = ctx.const(node.input[2], node).astype(np.float64)
        per = int(np.prod(oshape[1:]))
        c = c + np.repeat(bias, per)
    ctx.values[node.output[0]] = _Sym(M, c, (1, *oshape), s.basis)


def _h_transpose(node: Any, ctx: _Ctx) -> None:
    v = ctx.values[node.input[0]]
    perm = _attrs(node).get("perm")
    if isinstance(v, np.ndarray):
        ctx.values[node.output[0]] = np.transpose(v, perm)
        return
    s = ctx.sym(node.input[0])
    idx = np.transpose(np.arange(s.M.shape[0]).reshape(s.shape), perm)
    ctx.values[node.output[0]] = _Sym(s.M[idx.reshape(-1)], s.c[idx.reshape(-1)], idx.shape, s.basis)


# ---- index ops: every output entry is one input entry (exact row selection) -------------------
def _rows(s: _Sym, idx: np.ndarray) -> _Sym:
    """The entries ``idx`` (an int array with the output's shape) of ``s``."""
    idx = np.asarray(idx, dtype=np.int64)
    flat = idx.reshape(-1)
    return _Sym(s.M[flat], s.c[flat], tuple(idx.shape), s.basis)


def _index_map(ctx: _Ctx, name: str, fn: Callable[[np.ndarray], np.ndarray]) -> np.ndarray | _Sym:
    """Apply an indexing function ``fn`` (take, slice, transpose, broadcast, …) to input ``name``.

    On a constant it is applied to the values; on a symbolic tensor to the array of its entry
    numbers, whose image selects the rows of ``(M, c)``: exact for any pure re-indexing.
    """
    v = ctx.operand(name)
    if isinstance(v, np.ndarray):
        return np.asarray(fn(v))
    return _rows(v, np.asarray(fn(np.arange(v.M.shape[0]).reshape(v.shape))))


def _h_shape(node: Any, ctx: _Ctx) -> None:
    at = _attrs(node)
    shp = _shape_of(ctx.values[node.input[0]])
    start, end = int(at.get("start", 0)), at.get("end")
    sel = shp[start:] if end is None else shp[start : int(end)]
    ctx.values[node.output[0]] = np.array(sel, dtype=np.int64)


def _h_gather(node: Any, ctx: _Ctx) -> None:
    ind = ctx.const(node.input[1], node).astype(np.int64)
    axis = int(_attrs(node).get("axis", 0))
    ctx.values[node.output[0]] = _index_map(ctx, node.input[0], lambda a: np.take(a, ind, axis=axis))


def _h_concat(node: Any, ctx: _Ctx) -> None:
    axis = int(_attrs(node)["axis"])
    parts = [ctx.operand(n) for n in node.input]
    if all(isinstance(p, np.ndarray) for p in parts):
        ctx.values[node.output[0]] = np.concatenate(parts, axis=axis)  # type: ignore[arg-type]
        return
    syms = [ctx.as_sym(p) for p in parts]
    offs = np.cumsum([0] + [s.M.shape[0] for s in syms])
    idx = np.concatenate(
        [np.arange(o, o + s.M.shape[0]).reshape(s.shape) for o, s in zip(offs, syms)], axis=axis
    )
    stacked = _Sym(np.vstack([s.M for s in syms]), np.concatenate([s.c for s in syms]), (), ctx.basis_id)
    ctx.values[node.output[0]] = _rows(stacked, idx)


#: ONNX tensor types a real-valued tensor can be cast to without changing its value.
_EXACT_FLOAT_CASTS = {1: "FLOAT", 11: "DOUBLE"}


def _h_cast(node: Any, ctx: _Ctx) -> None:
    import onnx

    to = int(_attrs(node)["to"])
    v = ctx.values[node.input[0]]
    if isinstance(v, _Sym):
        if to not in _EXACT_FLOAT_CASTS:
            name = onnx.TensorProto.DataType.Name(to)
            raise _Unsupported(f"Cast of a non-constant tensor to {name} (rounds or truncates: not linear)")
        ctx.values[node.output[0]] = ctx.sym(node.input[0])
    else:
        ctx.values[node.output[0]] = v.astype(onnx.helper.tensor_dtype_to_np_dtype(to))


def _h_neg(node: Any, ctx: _Ctx) -> None:
    v = ctx.operand(node.input[0])
    ctx.values[node.output[0]] = -v if isinstance(v, np.ndarray) else _Sym(-v.M, -v.c, v.shape, v.basis)


def _const_ints(ctx: _Ctx, node: Any, pos: int, attr: str) -> list[int] | None:
    """An int list given as input ``pos`` (newer opsets) or attribute ``attr`` (older); None if absent."""
    if len(node.input) > pos and node.input[pos]:
        return [int(v) for v in ctx.const(node.input[pos], node).reshape(-1)]
    at = _attrs(node)
    return [int(v) for v in at[attr]] if attr in at else None


def _h_slice(node: Any, ctx: _Ctx) -> None:
    """ONNX Slice: negative starts/ends count from the end, then clamp to ``[0, d]`` (step > 0) or
    ``[-1, d-1]`` (step < 0); the kept indices are ``range(start, end, step)`` on each listed axis."""
    shp = _shape_of(ctx.values[node.input[0]])
    starts = _const_ints(ctx, node, 1, "starts")
    ends = _const_ints(ctx, node, 2, "ends")
    if starts is None or ends is None:
        raise _Unsupported("Slice without starts/ends")
    axes = _const_ints(ctx, node, 3, "axes") or list(range(len(starts)))
    steps = _const_ints(ctx, node, 4, "steps") or [1] * len(starts)
    picks: list[tuple[int, np.ndarray]] = []
    for st, en, ax, sp in zip(starts, ends, axes, steps):
        ax = ax + len(shp) if ax < 0 else ax
        d = shp[ax]
        if sp == 0:
            raise _Unsupported("Slice with step 0")
        st, en = (st + d if st < 0 else st), (en + d if en < 0 else en)
        if sp > 0:
            st, en = min(max(st, 0), d), min(max(en, 0), d)
        else:
            st, en = min(max(st, 0), d - 1), min(max(en, -1), d - 1)
        picks.append((ax, np.arange(st, en, sp, dtype=np.int64)))

    def fn(a: np.ndarray) -> np.ndarray:
        for ax, ix in picks:
            a = np.take(a, ix, axis=ax)
        return a

    ctx.values[node.output[0]] = _index_map(ctx, node.input[0], fn)


def _h_split(node: Any, ctx: _Ctx) -> None:
    """ONNX Split: sizes from the ``split`` input/attribute, else ``num_outputs`` parts of
    ``ceil(d / n)`` (the last one smaller), else equal parts."""
    at = _attrs(node)
    shp = _shape_of(ctx.values[node.input[0]])
    axis = int(at.get("axis", 0))
    axis = axis + len(shp) if axis < 0 else axis
    d, n = shp[axis], len(node.output)
    sizes = _const_ints(ctx, node, 1, "split")
    if sizes is None:
        if "num_outputs" in at:
            part = -(-d // int(at["num_outputs"]))
            sizes = [min(part, d - k * part) for k in range(n)]
        else:
            if d % n:
                raise _Unsupported(f"Split of size {d} into {n} equal parts")
            sizes = [d // n] * n
    if len(sizes) != n or sum(sizes) != d or min(sizes) < 0:
        raise _Unsupported(f"Split sizes {sizes} do not cover axis {axis} of size {d} with {n} outputs")
    off = 0
    for out, size in zip(node.output, sizes):
        ix = np.arange(off, off + size, dtype=np.int64)
        off += size
        if out:
            ctx.values[out] = _index_map(ctx, node.input[0], lambda a, ix=ix: np.take(a, ix, axis=axis))


def _h_expand(node: Any, ctx: _Ctx) -> None:
    target = tuple(int(d) for d in ctx.const(node.input[1], node).reshape(-1))
    shp = _shape_of(ctx.values[node.input[0]])
    out = tuple(np.broadcast_shapes(shp, target))
    ctx.values[node.output[0]] = _index_map(ctx, node.input[0], lambda a: np.broadcast_to(a, out))


def _h_tile(node: Any, ctx: _Ctx) -> None:
    reps = [int(r) for r in ctx.const(node.input[1], node).reshape(-1)]
    ctx.values[node.output[0]] = _index_map(ctx, node.input[0], lambda a: np.tile(a, reps))


def _h_pad(node: Any, ctx: _Ctx) -> None:
    """ONNX Pad (``constant``, ``reflect``, ``edge``; negative pads crop): padded entries of a symbolic
    tensor are constants, the others are re-indexed rows."""
    at = _attrs(node)
    mode = at.get("mode", "constant")
    mode = mode.decode() if isinstance(mode, bytes) else str(mode)
    if mode not in ("constant", "reflect", "edge"):
        raise _Unsupported(f"Pad mode {mode!r}")
    shp = _shape_of(ctx.values[node.input[0]])
    pads = _const_ints(ctx, node, 1, "pads")
    if pads is None:
        raise _Unsupported("Pad without pads")
    value = 0.0
    if len(node.input) > 2 and node.input[2]:
        value = float(ctx.const(node.input[2], node).reshape(-1)[0])
    elif "value" in at:
        value = float(at["value"])
    axes = _const_ints(ctx, node, 3, "axes") or list(range(len(shp)))
    axes = [a + len(shp) if a < 0 else a for a in axes]
    before, after = [0] * len(shp), [0] * len(shp)
    for k, a in enumerate(axes):
        before[a], after[a] = pads[k], pads[k + len(axes)]
    v = ctx.operand(node.input[0])
    ids = np.arange(int(np.prod(shp))).reshape(shp)
    grow = [(max(b, 0), max(e, 0)) for b, e in zip(before, after)]
    if mode == "constant":
        ids = np.pad(ids, grow, mode="constant", constant_values=-1)
    else:
        ids = np.pad(ids, grow, mode="reflect" if mode == "reflect" else "edge")
    crop = tuple(
        slice(-min(b, 0), ids.shape[i] - (-min(e, 0))) for i, (b, e) in enumerate(zip(before, after))
    )
    ids = ids[crop]
    s = ctx.as_sym(v)
    Mx = np.vstack([s.M, np.zeros((1, s.M.shape[1]))])
    cx = np.concatenate([s.c, [value]])
    out = _rows(_Sym(Mx, cx, (), s.basis), np.where(ids < 0, s.M.shape[0], ids))
    ctx.values[node.output[0]] = out.c.reshape(out.shape) if isinstance(v, np.ndarray) else out


def _h_dropout(node: Any, ctx: _Ctx) -> None:
    if len(node.output) > 1 and node.output[1]:
        raise _Unsupported("Dropout with a mask output")
    if len(node.input) > 2 and node.input[2] and bool(ctx.const(node.input[2], node).reshape(-1)[0]):
        raise _Unsupported("Dropout in training mode")
    ctx.values[node.output[0]] = ctx.operand(node.input[0])


def _h_constant_of_shape(node: Any, ctx: _Ctx) -> None:
    import onnx.numpy_helper as nh

    shape = tuple(int(d) for d in ctx.const(node.input[0], node).reshape(-1))
    at = _attrs(node)
    val = nh.to_array(at["value"]).reshape(-1) if "value" in at else np.zeros(1, dtype=np.float32)
    ctx.values[node.output[0]] = np.full(shape, val[0], dtype=val.dtype)


# ---- linear reductions ---------------------------------------------------------------------------
def _reduction(
    ctx: _Ctx, node: Any, shp: tuple[int, ...]
) -> tuple[list[int], int, tuple[int, ...], tuple[int, ...]] | None:
    """The reduced ``axes`` (from the input in newer opsets, else the attribute; none → all), ``keepdims``,
    the shape with the axes kept as 1 and the output shape; ``None`` for the identity (no axes and
    ``noop_with_empty_axes``)."""
    at = _attrs(node)
    axes = _const_ints(ctx, node, 1, "axes")
    keep = int(at.get("keepdims", 1))
    if not axes:
        if int(at.get("noop_with_empty_axes", 0)):
            return None
        axes = list(range(len(shp)))
    axes = sorted({a + len(shp) if a < 0 else a for a in axes})
    keep_shape = tuple(1 if i in axes else d for i, d in enumerate(shp))
    out_shape = keep_shape if keep else tuple(d for i, d in enumerate(shp) if i not in axes)
    return axes, keep, keep_shape, out_shape


def _reduce(ctx: _Ctx, node: Any, mean: bool) -> None:
    """``y = Σ_{axes} x`` (or the mean): each output row is the sum of its input rows (divided by the
    count).  Axes come from the input (newer opsets) or the attribute; none → all, unless
    ``noop_with_empty_axes`` (then identity)."""
    v = ctx.operand(node.input[0])
    shp = _shape_of(v)
    red = _reduction(ctx, node, shp)
    if red is None:
        ctx.values[node.output[0]] = v
        return
    axes, keep, keep_shape, out_shape = red
    count = int(np.prod([shp[a] for a in axes]))
    if isinstance(v, np.ndarray):
        r = np.sum(v.astype(np.float64), axis=tuple(axes), keepdims=bool(keep))
        ctx.values[node.output[0]] = (r / count if mean else r).astype(v.dtype)
        return
    n_out = int(np.prod(keep_shape))
    owner = np.broadcast_to(np.arange(n_out).reshape(keep_shape), shp).reshape(-1)
    M = np.zeros((n_out, v.M.shape[1]))
    c = np.zeros(n_out)
    np.add.at(M, owner, v.M)
    np.add.at(c, owner, v.c)
    if mean:
        M, c = M / count, c / count
    ctx.values[node.output[0]] = _Sym(M, c, out_shape, v.basis)


def _h_reduce_max_min(node: Any, ctx: _Ctx) -> None:
    """``ReduceMax``/``ReduceMin`` over axes via :func:`_max_groups` (``min = −max(−·)``); axes as in
    :func:`_reduce`."""
    v = ctx.operand(node.input[0])
    shp = _shape_of(v)
    red = _reduction(ctx, node, shp)
    if red is None:
        ctx.values[node.output[0]] = v
        return
    axes, keep, keep_shape, out_shape = red
    if any(shp[a] == 0 for a in axes):
        raise _Unsupported(f"{node.op_type} over an empty axis")
    is_min = node.op_type == "ReduceMin"
    if isinstance(v, np.ndarray):
        fn = np.min if is_min else np.max
        ctx.values[node.output[0]] = fn(v, axis=tuple(axes), keepdims=bool(keep)).reshape(out_shape)
        return
    n_out = int(np.prod(keep_shape))
    owner = np.broadcast_to(np.arange(n_out).reshape(keep_shape), shp).reshape(-1)
    order = np.argsort(owner, kind="stable")
    groups = np.split(order, np.cumsum(np.bincount(owner, minlength=n_out))[:-1])
    sign = -1.0 if is_min else 1.0
    out = _max_groups(ctx, _Sym(sign * v.M, sign * v.c, v.shape, v.basis), groups, out_shape)
    ctx.values[node.output[0]] = _Sym(sign * out.M, sign * out.c, out.shape, out.basis)


def _h_reduce_sum(node: Any, ctx: _Ctx) -> None:
    _reduce(ctx, node, mean=False)


def _h_reduce_mean(node: Any, ctx: _Ctx) -> None:
    _reduce(ctx, node, mean=True)


def _h_sum(node: Any, ctx: _Ctx) -> None:
    parts = [ctx.operand(n) for n in node.input]
    if all(isinstance(p, np.ndarray) for p in parts):
        ctx.values[node.output[0]] = np.sum(np.broadcast_arrays(*parts), axis=0)  # type: ignore[arg-type]
        return
    syms = [ctx.as_sym(p) for p in parts]
    out_shape = tuple(np.broadcast_shapes(*[s.shape for s in syms]))
    M = sum(s.M[_broadcast_index(s.shape, out_shape)] for s in syms)
    c = sum(s.c[_broadcast_index(s.shape, out_shape)] for s in syms)
    ctx.values[node.output[0]] = _Sym(M, c, out_shape, ctx.basis_id)  # type: ignore[arg-type]


def _h_where(node: Any, ctx: _Ctx) -> None:
    """``y = cond ? a : b`` with a constant ``cond``: each output row is a row of ``a`` or of ``b``."""
    v = ctx.values.get(node.input[0])
    if not isinstance(v, np.ndarray):
        raise _Unsupported("Where with a non-constant condition (not continuous)")
    cond = v.astype(bool)
    a, b = ctx.operand(node.input[1]), ctx.operand(node.input[2])
    if isinstance(a, np.ndarray) and isinstance(b, np.ndarray):
        ctx.values[node.output[0]] = np.where(cond, a, b)
        return
    sa, sb = ctx.as_sym(a), ctx.as_sym(b)
    out_shape = tuple(np.broadcast_shapes(cond.shape, sa.shape, sb.shape))
    ia, ib = _broadcast_index(sa.shape, out_shape), _broadcast_index(sb.shape, out_shape)
    pick = np.broadcast_to(cond, out_shape).reshape(-1)
    M = np.where(pick[:, None], sa.M[ia], sb.M[ib])
    c = np.where(pick, sa.c[ia], sb.c[ib])
    ctx.values[node.output[0]] = _Sym(M, c, out_shape, ctx.basis_id)


# ---- pooling -------------------------------------------------------------------------------------
def _pool_input(ctx: _Ctx, node: Any) -> tuple[np.ndarray | _Sym, int, list[int]]:
    v = ctx.operand(node.input[0])
    shp = _shape_of(v)
    if len(shp) < 3 or shp[0] != 1:
        raise _Unsupported(f"{node.op_type} on a tensor of shape {shp} (expected (1, C, spatial…))")
    return v, int(shp[1]), [int(d) for d in shp[2:]]


def _pool_groups(ctx: _Ctx, node: Any, global_pool: bool) -> tuple[np.ndarray | _Sym, np.ndarray, tuple]:
    """Flat input indices of every pooling window (``-1`` = padding), one row per output entry."""
    v, C, sp = _pool_input(ctx, node)
    at = _attrs(node)
    if global_pool:
        outs, taps = [1] * len(sp), np.arange(int(np.prod(sp)))[None, :]
    else:
        if len(node.output) > 1 and node.output[1]:
            raise _Unsupported(f"{node.op_type} with an Indices output")
        kernel = [int(k) for k in at["kernel_shape"]]
        outs, taps = _window_taps(sp, kernel, at, ceil_ok=node.op_type == "MaxPool")
    n_sp = int(np.prod(sp))
    groups = np.concatenate([np.where(taps >= 0, taps + ch * n_sp, -1) for ch in range(C)])
    return v, groups, (1, C, *outs)


def _max_groups(ctx: _Ctx, s: _Sym, groups: list[np.ndarray], out_shape: tuple[int, ...]) -> _Sym:
    """``y_j = max_{i ∈ groups[j]} s_i`` exactly, as a tree of pairwise maxima through ReLU layers.

    Formulation: ``max(a, b) = max(0, a − b) + max(0, b) − max(0, −b)`` (an identity for all reals,
    since ``b = max(0, b) − max(0, −b)``).  Each tree level is one ReLU layer whose pre-activations
    are ``a − b`` and the carry of ``b`` for every pair, and the carry of an unpaired entry ``v``; the
    carry of ``v`` is ``max(0, v) − max(0, −v)``, or just ``max(0, v) = v`` when ``v`` is non-negative
    by construction (a non-negative combination of the previous ReLU layer's outputs plus a
    non-negative constant — e.g. max pooling after a ReLU).  The next level reads the sums.  A window of
    ``k`` entries takes ``ceil(log2 k)`` layers and ``k − 1`` genuine max-ReLUs.  Because the result is
    an ordinary ``Affine (Relu Affine)*`` network, every bound method, encoder and backend handles it
    exactly as any ReLU: each MILP backend spends one binary per unstable ReLU, with big-M constants
    from the sound pre-activation bounds (``a − b ∈ [l_a − u_b, u_a − l_b]`` at worst), and a carry of
    fixed sign is a stable ReLU (no binary).
    """
    cur = s
    gs = [np.asarray(g, dtype=np.int64) for g in groups]
    while any(g.size > 1 for g in gs):
        nonneg = (cur.basis > 0) & np.all(cur.M >= 0.0, axis=1) & (cur.c >= 0.0)
        plus: list[int] = []  # pre-activation rows: +row of cur
        minus: list[int] = []  # −row of cur
        pairs: list[tuple[int, int]] = []  # a − b
        # each next-level entry: list of (pre-activation row, coefficient); rows numbered below
        terms: list[list[tuple[str, int, float]]] = []
        new_groups: list[list[int]] = []

        for g in gs:
            ng = []
            for t in range(0, g.size - 1 + g.size % 2, 2):
                acc: list[tuple[str, int, float]] = []
                if t + 1 < g.size:  # a pair (g[t], g[t+1]): max(0, a − b) + carry(b)
                    pairs.append((int(g[t]), int(g[t + 1])))
                    acc.append(("d", len(pairs) - 1, 1.0))
                v = int(g[min(t + 1, g.size - 1)])  # the entry carried: b, or the unpaired last one
                plus.append(v)
                acc.append(("p", len(plus) - 1, 1.0))
                if not nonneg[v]:
                    minus.append(v)
                    acc.append(("m", len(minus) - 1, -1.0))
                ng.append(len(terms))
                terms.append(acc)
            new_groups.append(ng)
        A = np.array([a for a, _ in pairs], dtype=np.int64)
        B = np.array([b for _, b in pairs], dtype=np.int64)
        P, Q = np.array(plus, dtype=np.int64), np.array(minus, dtype=np.int64)
        preM = np.vstack([cur.M[A] - cur.M[B], cur.M[P], -cur.M[Q]])
        prec = np.concatenate([cur.c[A] - cur.c[B], cur.c[P], -cur.c[Q]])
        h = ctx.emit_relu(_Sym(preM, prec, (preM.shape[0],), cur.basis))
        off = {"d": 0, "p": len(pairs), "m": len(pairs) + len(plus)}
        U = np.zeros((len(terms), h.M.shape[0]))
        for r, acc in enumerate(terms):
            for kind, k, w in acc:
                U[r, off[kind] + k] += w
        cur = _Sym(U, np.zeros(len(terms)), (len(terms),), h.basis)
        gs = [np.array(g, dtype=np.int64) for g in new_groups]
    return _rows(cur, np.array([int(g[0]) for g in gs], dtype=np.int64).reshape(out_shape))


def _h_maxpool(node: Any, ctx: _Ctx) -> None:
    v, groups, out_shape = _pool_groups(ctx, node, node.op_type == "GlobalMaxPool")
    if np.any(np.all(groups < 0, axis=1)):
        raise _Unsupported("a pooling window lies entirely in the padding")
    if isinstance(v, np.ndarray):
        flat = np.concatenate([v.reshape(-1).astype(np.float64), [-np.inf]])
        ctx.values[node.output[0]] = np.max(flat[groups], axis=1).reshape(out_shape).astype(v.dtype)
        return
    ctx.values[node.output[0]] = _max_groups(ctx, v, [g[g >= 0] for g in groups], out_shape)


def _h_avgpool(node: Any, ctx: _Ctx) -> None:
    """Average over each window: ``count_include_pad=1`` divides by the kernel size, else by the number
    of taps inside the input (``ceil_mode`` is rejected)."""
    v, groups, out_shape = _pool_groups(ctx, node, node.op_type == "GlobalAveragePool")
    include_pad = int(_attrs(node).get("count_include_pad", 0))
    valid = groups >= 0
    denom = np.full(groups.shape[0], groups.shape[1], float) if include_pad else valid.sum(axis=1)
    if np.any(denom == 0):
        raise _Unsupported("a pooling window lies entirely in the padding")
    s = ctx.as_sym(v)
    n = s.M.shape[0]
    R = np.zeros((groups.shape[0], n))
    rows = np.repeat(np.arange(groups.shape[0]), groups.shape[1]).reshape(groups.shape)
    np.add.at(R, (rows[valid], groups[valid]), 1.0)
    R /= denom[:, None]
    out = _Sym(R @ s.M, R @ s.c, out_shape, s.basis)
    ctx.values[node.output[0]] = out.c.reshape(out_shape) if isinstance(v, np.ndarray) else out


# ---- other exact piecewise-linear ops (through one ReLU layer) ----------------------------------
def _h_max_min(node: Any, ctx: _Ctx) -> None:
    """Element-wise ``Max``/``Min`` of several tensors (broadcasting) via :func:`_max_groups`;
    ``min(a, b) = −max(−a, −b)``."""
    parts = [ctx.operand(n) for n in node.input]
    is_min = node.op_type == "Min"
    if all(isinstance(p, np.ndarray) for p in parts):
        fn = np.minimum if is_min else np.maximum
        ctx.values[node.output[0]] = fn.reduce(np.broadcast_arrays(*parts))  # type: ignore[arg-type]
        return
    syms = [ctx.as_sym(p) for p in parts]
    out_shape = tuple(np.broadcast_shapes(*[s.shape for s in syms]))
    n = int(np.prod(out_shape))
    sign = -1.0 if is_min else 1.0
    M = np.vstack([sign * s.M[_broadcast_index(s.shape, out_shape)] for s in syms])
    c = np.concatenate([sign * s.c[_broadcast_index(s.shape, out_shape)] for s in syms])
    groups = [np.arange(j, len(syms) * n, n) for j in range(n)]
    out = _max_groups(ctx, _Sym(M, c, (), ctx.basis_id), groups, out_shape)
    ctx.values[node.output[0]] = _Sym(sign * out.M, sign * out.c, out.shape, out.basis)


def _relu_combo(ctx: _Ctx, s: _Sym, pre: list[tuple[float, float]], post: list[float], const: float) -> _Sym:
    """``y = const + Σ_k post_k · max(0, a_k · s + b_k)`` element-wise, for ``pre = [(a_k, b_k)]``."""
    n = s.M.shape[0]
    h = ctx.emit_relu(
        _Sym(
            np.vstack([a * s.M for a, _ in pre]),
            np.concatenate([a * s.c + b for a, b in pre]),
            (len(pre) * n,),
            s.basis,
        )
    )
    M = sum(w * h.M[k * n : (k + 1) * n] for k, w in enumerate(post))
    return _Sym(M, np.full(n, const), s.shape, h.basis)  # type: ignore[arg-type]


def _h_abs(node: Any, ctx: _Ctx) -> None:
    """``|x| = max(0, x) + max(0, −x)``."""
    v = ctx.operand(node.input[0])
    if isinstance(v, np.ndarray):
        ctx.values[node.output[0]] = np.abs(v)
        return
    ctx.values[node.output[0]] = _relu_combo(ctx, v, [(1.0, 0.0), (-1.0, 0.0)], [1.0, 1.0], 0.0)


def _h_leaky_relu(node: Any, ctx: _Ctx) -> None:
    """``LeakyRelu_α(x) = max(0, x) − α · max(0, −x)``."""
    alpha = float(_attrs(node).get("alpha", 0.01))
    v = ctx.operand(node.input[0])
    if isinstance(v, np.ndarray):
        ctx.values[node.output[0]] = np.where(v >= 0, v, alpha * v).astype(v.dtype)
        return
    ctx.values[node.output[0]] = _relu_combo(ctx, v, [(1.0, 0.0), (-1.0, 0.0)], [1.0, -alpha], 0.0)


def _h_clip(node: Any, ctx: _Ctx) -> None:
    """``clip(x, lo, hi) = lo + max(0, x − lo) − max(0, x − hi)`` for ``lo <= hi`` (one ReLU each when
    only one bound is given: ``lo + max(0, x − lo)`` or ``hi − max(0, hi − x)``)."""
    at = _attrs(node)

    def bound(pos: int, attr: str) -> float | None:
        if len(node.input) > pos and node.input[pos]:
            return float(ctx.const(node.input[pos], node).reshape(-1)[0])
        return float(at[attr]) if attr in at else None

    lo, hi = bound(1, "min"), bound(2, "max")
    v = ctx.operand(node.input[0])
    if isinstance(v, np.ndarray):
        ctx.values[node.output[0]] = np.minimum(
            np.maximum(v, -np.inf if lo is None else lo), np.inf if hi is None else hi
        ).astype(v.dtype)
        return
    if lo is not None and hi is not None and lo > hi:
        raise _Unsupported(f"Clip with min {lo} > max {hi}")
    if lo is None and hi is None:
        ctx.values[node.output[0]] = v
    elif hi is None:
        ctx.values[node.output[0]] = _relu_combo(ctx, v, [(1.0, -lo)], [1.0], lo)  # type: ignore[operator]
    elif lo is None:
        ctx.values[node.output[0]] = _relu_combo(ctx, v, [(-1.0, hi)], [-1.0], hi)
    else:
        ctx.values[node.output[0]] = _relu_combo(ctx, v, [(1.0, -lo), (1.0, -hi)], [1.0, -1.0], lo)


# ---- the operator table --------------------------------------------------------------------------
_Handler = Callable[[Any, _Ctx], None]


@dataclass(frozen=True)
class OpSupport:
    """How the importer translates one ONNX op type.

    Attributes
    ----------
    kind
        ``affine`` (composed into the current affine map), ``relu`` (emits ReLU layers: Relu and the
        exact piecewise-linear ops built from it), ``shape`` (re-indexing only) or ``const``
        (constant folding: every input must be constant).
    handler
        The translation function.
    complete
        True when every use is translated as long as the operands that are parameters (the weight of
        MatMul/Gemm/Conv, BatchNormalization statistics) or shapes, axes, pads or indices are constants,
        as in a trained feed-forward network.  False when some use on activations alone is rejected:
        ``Mul``/``Div`` of two activations, a ``Cast`` that rounds, a ``Where`` whose condition depends on
        the input.  A solver front end that must not claim partial support lists only complete ops.
    limits
        What is rejected, in words (shown by ``distillcert info``).
    """

    kind: str
    handler: _Handler
    complete: bool = True
    limits: str = ""


_ALL: dict[str, OpSupport] = {
    "Abs": OpSupport("relu", _h_abs),
    "Add": OpSupport("affine", _h_elementwise),
    "AveragePool": OpSupport(
        "affine", _h_avgpool, limits="batch 1; no ceil_mode; no SAME padding with dilations"
    ),
    "BatchNormalization": OpSupport("affine", _h_batchnorm, limits="inference mode, constant statistics"),
    "Cast": OpSupport("shape", _h_cast, complete=False, limits="activations only to float32/float64"),
    "Clip": OpSupport("relu", _h_clip, limits="min <= max"),
    "Concat": OpSupport("shape", _h_concat),
    "Constant": OpSupport("const", _h_constant),
    "ConstantOfShape": OpSupport("const", _h_constant_of_shape),
    "Conv": OpSupport(
        "affine", _h_conv, limits="constant weights and bias; batch 1; no SAME padding with dilations"
    ),
    "Div": OpSupport("affine", _h_elementwise, complete=False, limits="divisor constant, non-zero"),
    "Dropout": OpSupport("shape", _h_dropout, limits="inference mode, no mask output"),
    "Expand": OpSupport("shape", _h_expand),
    "Flatten": OpSupport("shape", _h_flatten),
    "Gather": OpSupport("shape", _h_gather),
    "Gemm": OpSupport("affine", _h_gemm, limits="A an activation, B and C constant"),
    "GlobalAveragePool": OpSupport("affine", _h_avgpool, limits="batch 1"),
    "GlobalMaxPool": OpSupport("relu", _h_maxpool, limits="batch 1"),
    "Identity": OpSupport("shape", _h_identity),
    "LeakyRelu": OpSupport("relu", _h_leaky_relu),
    "MatMul": OpSupport("affine", _h_matmul, limits="one operand constant (a weight)"),
    "Max": OpSupport("relu", _h_max_min),
    "MaxPool": OpSupport(
        "relu", _h_maxpool, limits="batch 1; no Indices output; no SAME padding with dilations"
    ),
    "Min": OpSupport("relu", _h_max_min),
    "Mul": OpSupport("affine", _h_elementwise, complete=False, limits="one operand constant (not x·x)"),
    "Neg": OpSupport("affine", _h_neg),
    "Pad": OpSupport("shape", _h_pad, limits="modes constant, reflect, edge"),
    "ReduceMax": OpSupport("relu", _h_reduce_max_min),
    "ReduceMean": OpSupport("affine", _h_reduce_mean),
    "ReduceMin": OpSupport("relu", _h_reduce_max_min),
    "ReduceSum": OpSupport("affine", _h_reduce_sum),
    "Relu": OpSupport("relu", _h_relu),
    "Reshape": OpSupport("shape", _h_reshape),
    "Shape": OpSupport("const", _h_shape),
    "Slice": OpSupport("shape", _h_slice),
    "Split": OpSupport("shape", _h_split),
    "Squeeze": OpSupport("shape", _h_squeeze),
    "Sub": OpSupport("affine", _h_elementwise),
    "Sum": OpSupport("affine", _h_sum),
    "Tile": OpSupport("shape", _h_tile),
    "Transpose": OpSupport("shape", _h_transpose),
    "Unsqueeze": OpSupport("shape", _h_unsqueeze),
    "Where": OpSupport("shape", _h_where, complete=False, limits="condition constant (not input-dependent)"),
}
#: THE table of ONNX op types the importer understands (op type → :class:`OpSupport`), sorted by
#: name.  ``distillcert info`` and ``distillcert-vnnlib supports --onnx-operators`` read it; README
#: documents it.
SUPPORTED_OPS: Mapping[str, OpSupport] = MappingProxyType(dict(sorted(_ALL.items())))
#: Element types an op is limited to on non-constant tensors (others: any real-valued type): a Cast of
#: an activation is exact only to float32 or float64 (float16/bfloat16 round, integer/bool truncate).
OP_ELEMENT_TYPES: Mapping[str, tuple[str, ...]] = MappingProxyType({"Cast": ("float32", "float64")})


def _dims(value_info: Any) -> list[int | str]:
    dims: list[int | str] = []
    for d in value_info.type.tensor_type.shape.dim:
        if d.HasField("dim_value") and d.dim_value > 0:
            dims.append(int(d.dim_value))
        else:
            dims.append(d.dim_param or "?")
    return dims


def _read_model(path: Path) -> Any:
    import onnx

    if not path.exists():
        raise ModelFormatError(f"{path}: no such file")
    if path.is_dir():
        raise ModelFormatError(f"{path}: is a directory, expected an ONNX file")
    data = path.read_bytes()
    if not data:
        raise ModelFormatError(f"{path}: empty file, expected an ONNX model")
    try:
        model = onnx.load_from_string(data)
    except Exception as exc:  # protobuf raises DecodeError and friends
        first = str(exc).splitlines()[0] if str(exc) else type(exc).__name__
        raise ModelFormatError(f"{path}: not a valid ONNX file (could not parse protobuf: {first})") from None
    if not model.graph.node:
        raise ModelFormatError(f"{path}: not a valid ONNX model (the graph has no nodes)")
    try:
        onnx.checker.check_model(model)
    except Exception as exc:
        first = str(exc).splitlines()[0][:200] if str(exc) else type(exc).__name__
        raise ModelFormatError(f"{path}: invalid ONNX model ({first})") from None
    return model


def load_onnx(path: str | Path) -> Network:
    """Read an ONNX file into a :class:`Network`.

    Raises
    ------
    ModelFormatError
        Missing, empty, unparsable or truncated file; NaN/inf weights; bad input shape.
    UnsupportedModelError
        Operators we cannot translate (every offending node is listed) or a non-sequential graph.
    """
    import onnx.numpy_helper as nh

    path = Path(path)
    model = _read_model(path)
    g = model.graph
    digest = hashlib.sha256(path.read_bytes()).hexdigest()

    inits = {t.name: nh.to_array(t) for t in g.initializer}
    bad = [n for n, a in inits.items() if a.dtype.kind == "f" and not np.all(np.isfinite(a))]
    if bad:
        raise ModelFormatError(f"{path}: non-finite (NaN or inf) weights in initializer(s) {', '.join(bad)}")

    real_inputs = [i for i in g.input if i.name not in inits]
    if not real_inputs:
        raise UnsupportedModelError(f"{path}: the model has no (non-initializer) input")
    ctx = _Ctx(str(path))
    ctx.values.update(inits)
    in_shapes = [_input_shape(g, inits, inp, path, len(real_inputs) == 1) for inp in real_inputs]
    sizes = [int(np.prod(sh)) for sh in in_shapes]
    n_in = sum(sizes)
    eye = np.eye(n_in)
    # several inputs are one flat input vector: their row-major entries concatenated in graph order
    for inp, sh, off, size in zip(real_inputs, in_shapes, np.cumsum([0, *sizes]), sizes):
        ctx.values[inp.name] = _Sym(eye[off : off + size], np.zeros(size), sh, 0)
    ctx.basis_size = n_in

    graph = nx.DiGraph()
    producer: dict[str, str] = {}
    problems: list[tuple[str, str, str]] = []
    unknown = [(n.op_type, n.name or f"#{i}") for i, n in enumerate(g.node) if n.op_type not in SUPPORTED_OPS]
    if unknown:
        listing = ", ".join(f"{op} (node {name!r})" for op, name in unknown)
        raise UnsupportedModelError(
            f"{path}: {len(unknown)} unsupported node(s): {listing}; "
            f"supported ops: {', '.join(SUPPORTED_OPS)}",
            unknown,
        )
    # liveness: a tensor is read by its last consumer (a graph output: by the end); Shape reads only
    # the shape, which survives, so it does not keep a tensor alive through later ReLU layers
    for i, node in enumerate(g.node):
        if node.op_type != "Shape":
            for t in node.input:
                ctx.last_use[t] = i
    for o in g.output:
        ctx.last_use[o.name] = len(g.node)
    for i, node in enumerate(g.node):
        ctx.node_index = i
        key = node.name or f"{node.op_type}#{i}"
        op = SUPPORTED_OPS[node.op_type]
        kind, handler = op.kind, op.handler
        graph.add_node(key, op_type=node.op_type, kind=kind, name=node.name)
        for t in node.input:
            if t in producer:
                graph.add_edge(producer[t], key, tensor=t)
        for t in node.output:
            producer[t] = key
        if node.domain not in ("", "ai.onnx"):
            problems.append((node.op_type, key, f"custom domain {node.domain!r}"))
            continue
        try:
            handler(node, ctx)
        except _Unsupported as exc:
            problems.append((node.op_type, key, str(exc)))
        except (KeyError, ValueError, IndexError) as exc:
            problems.append((node.op_type, key, f"{type(exc).__name__}: {exc}"))
        if problems:
            break  # later nodes would fail for want of this one's output
    if problems:
        listing = "; ".join(f"{op} (node {name!r}): {why}" for op, name, why in problems)
        raise UnsupportedModelError(f"{path}: cannot translate {listing}", [(p[0], p[1]) for p in problems])

    outs: list[_Sym] = []
    for o in g.output:
        out = ctx.values.get(o.name)
        if out is None:
            raise UnsupportedModelError(f"{path}: output {o.name!r} is not produced by any node")
        if isinstance(out, np.ndarray):  # a constant output: y = 0 · x + value (exact)
            if out.dtype.kind not in "biuf":
                raise UnsupportedModelError(f"{path}: output {o.name!r} is a constant of type {out.dtype}")
            out = ctx.as_sym(out)
        if out.basis != ctx.basis_id:
            raise UnsupportedModelError(
                f"{path}: output {o.name!r} depends on a tensor before the last ReLU (skip connection)"
            )
        outs.append(out)
    # several outputs are one flat output vector: their row-major entries concatenated in graph order
    W_out = np.vstack([o.M for o in outs])
    b_out = np.concatenate([o.c for o in outs])
    layers = list(ctx.layers)
    layers.append(Affine(W_out, b_out))
    for lay in layers:
        if isinstance(lay, Affine) and not (np.all(np.isfinite(lay.W)) and np.all(np.isfinite(lay.b))):
            raise ModelFormatError(f"{path}: folding the graph produced non-finite weights")
    return Network(
        layers=tuple(layers),
        input_name=real_inputs[0].name,
        input_shape=in_shapes[0],
        output_name=g.output[0].name,
        output_shape=tuple(outs[0].shape),
        sha256=digest,
        path=str(path),
        graph=graph,
        input_names=tuple(i.name for i in real_inputs),
        input_shapes=tuple(in_shapes),
        output_names=tuple(o.name for o in g.output),
        output_shapes=tuple(tuple(o.shape) for o in outs),
    )


def _input_shape(g: Any, inits: dict, inp: Any, path: Path, infer: bool) -> tuple[int, ...]:
    """The shape of one sample of input ``inp`` (with a leading batch dimension 1 when it has one).

    The first dimension is the batch when the rank is above 1 and it is 1 or dynamic; a rank-1 input,
    or one whose first dimension is a fixed size above 1, has none (one sample is the whole tensor).
    One dynamic non-batch dimension is inferred from the first weight matrix when ``infer``.
    """
    dims = _dims(inp)
    if not dims:
        raise ModelFormatError(f"{path}: input {inp.name!r} has no shape information")
    batched = len(dims) > 1 and not (isinstance(dims[0], int) and dims[0] > 1)
    feat_dims = list(dims[1:] if batched else dims)
    dynamic = [i for i, d in enumerate(feat_dims) if not isinstance(d, int)]
    if len(dynamic) > 1 or (dynamic and not infer):
        raise ModelFormatError(
            f"{path}: input {inp.name!r} has {len(dynamic)} dynamic non-batch dimension(s) {dims}; "
            + ("at most one can be inferred" if infer else "none can be inferred with several inputs")
        )
    if dynamic:
        feat_dims[dynamic[0]] = _infer_dim(g, inits, inp.name, feat_dims, dynamic[0], path)
    feat = tuple(int(d) for d in feat_dims)
    return (1, *feat) if batched else feat


def _infer_dim(g: Any, inits: dict, name: str, feat: list, pos: int, path: Path) -> int:
    """Infer one dynamic non-batch input dimension from the first weight matrix that consumes it."""
    known = int(np.prod([d for i, d in enumerate(feat) if i != pos])) or 1
    for node in g.node:
        if node.op_type in ("MatMul", "Gemm") and len(node.input) > 1 and node.input[1] in inits:
            W = inits[node.input[1]]
            at = _attrs(node)
            k = W.shape[1] if at.get("transB", 0) else W.shape[0]
            if k % known == 0:
                return k // known
    raise ModelFormatError(f"{path}: cannot infer the size of dynamic input dimension {pos + 1} of {name!r}")


# --------------------------------------------------------------------------------------------------
# onnxruntime
# --------------------------------------------------------------------------------------------------
def ort_evaluate(path: str | Path, x: np.ndarray, input_shape: tuple[int, ...] | None = None) -> np.ndarray:
    """Run the ONNX file on flat inputs ``x`` (``(n,)`` or ``(batch, n)``) with onnxruntime.

    Returns float64 outputs of shape ``(batch, n_out)`` (or ``(n_out,)`` for a single input).  Inputs
    are fed one at a time when the model's batch dimension is fixed to 1.  A model with several inputs
    takes each flat sample as their row-major entries concatenated in graph order; the outputs of every
    model are all its outputs, flattened and concatenated in graph order (the layout of
    :func:`load_onnx`).
    """
    import onnxruntime as ort

    opts = ort.SessionOptions()
    opts.intra_op_num_threads = 1
    opts.inter_op_num_threads = 1
    opts.log_severity_level = 3
    sess = ort.InferenceSession(str(path), sess_options=opts, providers=["CPUExecutionProvider"])
    ins = sess.get_inputs()
    x = np.asarray(x, dtype=np.float64)
    single = x.ndim == 1
    xb = np.atleast_2d(x).reshape(x.shape[0] if not single else 1, -1)

    def flat(res: list) -> np.ndarray:  # every output of one run, flattened and concatenated
        return np.concatenate([np.asarray(o).reshape(1, -1) for o in res], axis=1)

    if len(ins) > 1:
        y = np.concatenate([flat(sess.run(None, _split_inputs(path, ins, row))) for row in xb])
        y = y.astype(np.float64)
        return y[0] if single else y
    inp = ins[0]
    dtype = np.float64 if inp.type == "tensor(double)" else np.float32
    xb = xb.astype(dtype)
    shape = list(input_shape) if input_shape else [d if isinstance(d, int) else -1 for d in inp.shape]
    static = bool(shape) and all(isinstance(d, int) and d > 0 for d in shape)
    if static and int(np.prod(shape)) == xb.shape[1]:  # one sample is the whole input tensor
        outs = [flat(sess.run(None, {inp.name: row.reshape(shape)})) for row in xb]
    elif len(shape) <= 1:
        outs = [flat(sess.run(None, {inp.name: row.reshape(-1)})) for row in xb]
    else:
        tail = [int(d) if isinstance(d, int) and d > 0 else -1 for d in shape[1:]]
        if xb.shape[0] == 1 or (isinstance(shape[0], int) and shape[0] == 1):
            outs = [flat(sess.run(None, {inp.name: row.reshape(1, *tail)})) for row in xb]
        else:
            res = sess.run(None, {inp.name: xb.reshape(xb.shape[0], *tail)})
            outs = [np.concatenate([o.reshape(xb.shape[0], -1) for o in res], axis=1)]
    y = np.concatenate(outs).astype(np.float64)
    return y[0] if single else y


def _split_inputs(path: str | Path, ins: list, row: np.ndarray) -> dict[str, np.ndarray]:
    """One flat sample cut into the model's inputs (row-major, graph order; a dynamic first dim is 1)."""
    feed, off = {}, 0
    for inp in ins:
        dims = list(inp.shape)
        if dims and not isinstance(dims[0], int):
            dims[0] = 1
        if not all(isinstance(d, int) and d >= 0 for d in dims):
            raise ModelFormatError(f"{path}: input {inp.name!r} has dynamic dimensions {inp.shape}")
        size = int(np.prod(dims))
        dtype = np.float64 if inp.type == "tensor(double)" else np.float32
        feed[inp.name] = row[off : off + size].astype(dtype).reshape(dims)
        off += size
    if off != row.size:
        raise ModelFormatError(f"{path}: the inputs take {off} values, got {row.size}")
    return feed


def file_sha256(path: str | Path) -> str:
    """SHA-256 of a file's bytes."""
    h = hashlib.sha256()
    with open(path, "rb") as fh:
        for chunk in iter(lambda: fh.read(1 << 20), b""):
            h.update(chunk)
    return h.hexdigest()


def save_onnx(net: Network | list[tuple[np.ndarray, np.ndarray]], path: str | Path, opset: int = 13) -> Path:
    """Write a sequential ReLU network as an ONNX file (Gemm/Relu, dynamic batch, float32).

    Used for hand-built test networks; the file is written atomically.
    """
    import os
    import tempfile

    import onnx
    from onnx import TensorProto, helper, numpy_helper

    if not isinstance(net, Network):
        net = network_from_layers(net)
    nodes, inits = [], []
    cur = "input"
    n_aff = len(net.affines)
    k = 0
    for lay in net.layers:
        if isinstance(lay, Affine):
            k += 1
            inits.append(numpy_helper.from_array(lay.W.astype(np.float32), f"W{k}"))
            inits.append(numpy_helper.from_array(lay.b.astype(np.float32), f"b{k}"))
            out = "output" if k == n_aff else f"z{k}"
            nodes.append(helper.make_node("Gemm", [cur, f"W{k}", f"b{k}"], [out], name=f"gemm{k}", transB=1))
            cur = out
        else:
            nodes.append(helper.make_node("Relu", [cur], [f"h{k}"], name=f"relu{k}"))
            cur = f"h{k}"
    graph = helper.make_graph(
        nodes,
        "distillcert_net",
        [helper.make_tensor_value_info("input", TensorProto.FLOAT, ["batch", net.n_inputs])],
        [helper.make_tensor_value_info("output", TensorProto.FLOAT, ["batch", net.n_outputs])],
        inits,
    )
    model = helper.make_model(
        graph, opset_imports=[helper.make_opsetid("", opset)], producer_name="distillcert"
    )
    model.ir_version = 8
    onnx.checker.check_model(model)
    path = Path(path)
    fd, tmp = tempfile.mkstemp(dir=str(path.parent), prefix=f".{path.name}.", suffix=".tmp")
    with os.fdopen(fd, "wb") as fh:
        fh.write(model.SerializeToString())
    os.replace(tmp, path)
    return path
