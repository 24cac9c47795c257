"""ONNX → network IR.

The IR has two views of one network:

* ``Network.graph`` — a :class:`networkx.DiGraph` with one node per ONNX node, each carrying a typed
  layer descriptor (``kind`` ∈ {``affine``, ``relu``, ``shape``, ``const``}, ``op_type``, ``name``)
  and edges along the tensors that connect them.
* ``Network.layers`` — the graph collapsed to a sequence ``Affine, Relu, Affine, Relu, …, Affine``
  on flattened (row-major) vectors, float64.  Every linear op between two ReLUs (MatMul, Gemm, Add,
  Sub, Mul, Div by constants, BatchNormalization, Conv, Flatten, Reshape, …) is composed into one
  ``Affine(W, b)`` with ``y = W x + b``.  Input normalisation (``(x - mean) / std``) therefore lands
  inside the first affine layer and the verifier works in the ONNX input space.

Collapse algorithm.  Every non-constant tensor ``t`` is kept as an affine function of the current
*basis* — the network input, or the output of the most recent ReLU — ``flat(t) = M·basis + c``.
An op handler (looked up by op type in ``_HANDLERS``) composes its own linear map into ``(M, c)``.
A ``Relu`` emits ``Affine(M, c)`` followed by ``Relu`` and makes its output the new basis.  A tensor
that depends on an older basis than the current one (a skip connection) is rejected explicitly.
"""

from __future__ import annotations

import hashlib
from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path
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
    """

    layers: tuple[Layer, ...]
    input_name: str = "input"
    input_shape: tuple[int, ...] = ()
    output_name: str = "output"
    output_shape: tuple[int, ...] = ()
    sha256: str = ""
    path: str | None = None
    graph: nx.DiGraph = field(default_factory=nx.DiGraph)

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
        fn = {"Add": np.add, "Sub": np.subtract, "Mul": np.multiply, "Div": np.divide}[op]
        ctx.values[node.output[0]] = fn(a, b)
        return
    if isinstance(a, _Sym) and isinstance(b, _Sym):
        if op not in ("Add", "Sub"):
            raise _Unsupported(f"{op} of two non-constant tensors")
        a, b = ctx.sym(node.input[0]), ctx.sym(node.input[1])
        if a.shape != b.shape:
            raise _Unsupported(f"{op} of non-constant tensors with shapes {a.shape} and {b.shape}")
        sign = 1.0 if op == "Add" else -1.0
        ctx.values[node.output[0]] = _Sym(a.M + sign * b.M, a.c + sign * b.c, a.shape, a.basis)
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
    s = ctx.sym(node.input[0])
    ctx.layers.append(Affine(s.M.copy(), s.c.copy()))
    n = s.M.shape[0]
    ctx.layers.append(Relu(n))
    ctx.basis_id += 1
    ctx.basis_size = n
    ctx.values[node.output[0]] = _Sym(np.eye(n), np.zeros(n), s.shape, ctx.basis_id)


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


def _conv_matrix(in_shape: tuple[int, ...], Wc: np.ndarray, at: dict[str, Any]) -> tuple[np.ndarray, tuple]:
    """Dense matrix of a 2-D (or 1-D) convolution without bias on a single (C, H[, W]) image."""
    nsp = Wc.ndim - 2
    if at.get("group", 1) != 1:
        raise _Unsupported("grouped Conv")
    if at.get("auto_pad", b"NOTSET") not in (b"NOTSET", "NOTSET"):
        raise _Unsupported("Conv with auto_pad")
    strides = list(at.get("strides", [1] * nsp))
    dil = list(at.get("dilations", [1] * nsp))
    pads = list(at.get("pads", [0] * (2 * nsp)))
    C, spatial = in_shape[0], list(in_shape[1:])
    if nsp not in (1, 2) or len(spatial) != nsp:
        raise _Unsupported(f"Conv with {nsp} spatial dims on input {in_shape}")
    if nsp == 1:
        Wc, spatial, strides, dil = Wc[..., None], [*spatial, 1], [*strides, 1], [*dil, 1]
        pads = [pads[0], 0, pads[1], 0]
    O, _, kh, kw = Wc.shape
    H, Wd = spatial
    Hp, Wp = H + pads[0] + pads[2], Wd + pads[1] + pads[3]
    Ho = (Hp - dil[0] * (kh - 1) - 1) // strides[0] + 1
    Wo = (Wp - dil[1] * (kw - 1) - 1) // strides[1] + 1
    idx = np.full((C, Hp, Wp), -1, dtype=np.int64)
    idx[:, pads[0] : pads[0] + H, pads[1] : pads[1] + Wd] = np.arange(C * H * Wd).reshape(C, H, Wd)
    mat = np.zeros((O * Ho * Wo, C * H * Wd))
    for o in range(O):
        for i in range(Ho):
            for j in range(Wo):
                row = (o * Ho + i) * Wo + j
                for di in range(kh):
                    for dj in range(kw):
                        cols = idx[:, i * strides[0] + di * dil[0], j * strides[1] + dj * dil[1]]
                        ok = cols >= 0
                        mat[row, cols[ok]] += Wc[o, ok, di, dj]
    out_shape = (O, Ho) if nsp == 1 else (O, Ho, Wo)
    return mat, out_shape


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


# ---- constant-only helpers (torch exports compute reshape targets with these) ------------------
def _h_shape(node: Any, ctx: _Ctx) -> None:
    ctx.values[node.output[0]] = np.array(_shape_of(ctx.values[node.input[0]]), dtype=np.int64)


def _h_gather(node: Any, ctx: _Ctx) -> None:
    data = ctx.const(node.input[0], node)
    ind = ctx.const(node.input[1], node)
    ctx.values[node.output[0]] = np.take(data, ind.astype(np.int64), axis=int(_attrs(node).get("axis", 0)))


def _h_concat(node: Any, ctx: _Ctx) -> None:
    parts = [ctx.const(n, node) for n in node.input]
    ctx.values[node.output[0]] = np.concatenate(parts, axis=int(_attrs(node)["axis"]))


def _h_cast(node: Any, ctx: _Ctx) -> None:
    v = ctx.values[node.input[0]]
    if isinstance(v, _Sym):
        ctx.values[node.output[0]] = v  # float casts of a real-valued tensor: value unchanged
    else:
        import onnx

        dt = onnx.helper.tensor_dtype_to_np_dtype(int(_attrs(node)["to"]))
        ctx.values[node.output[0]] = v.astype(dt)


_Handler = Callable[[Any, _Ctx], None]
_HANDLERS: dict[str, tuple[str, _Handler]] = {
    "Gemm": ("affine", _h_gemm),
    "MatMul": ("affine", _h_matmul),
    "Add": ("affine", _h_elementwise),
    "Sub": ("affine", _h_elementwise),
    "Mul": ("affine", _h_elementwise),
    "Div": ("affine", _h_elementwise),
    "BatchNormalization": ("affine", _h_batchnorm),
    "Conv": ("affine", _h_conv),
    "Relu": ("relu", _h_relu),
    "Flatten": ("shape", _h_flatten),
    "Reshape": ("shape", _h_reshape),
    "Squeeze": ("shape", _h_squeeze),
    "Unsqueeze": ("shape", _h_unsqueeze),
    "Identity": ("shape", _h_identity),
    "Transpose": ("shape", _h_transpose),
    "Cast": ("shape", _h_cast),
    "Constant": ("const", _h_constant),
    "Shape": ("const", _h_shape),
    "Gather": ("const", _h_gather),
    "Concat": ("const", _h_concat),
}
#: ONNX op types the importer understands (README documents this table).
SUPPORTED_OPS: tuple[str, ...] = tuple(sorted(_HANDLERS))


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
    if len(real_inputs) != 1:
        names = [i.name for i in real_inputs]
        raise UnsupportedModelError(
            f"{path}: expected exactly one network input, found {len(names)}: {names}"
        )
    if len(g.output) != 1:
        raise UnsupportedModelError(f"{path}: expected exactly one network output, found {len(g.output)}")
    inp = real_inputs[0]
    dims = _dims(inp)
    if not dims:
        raise ModelFormatError(f"{path}: input {inp.name!r} has no shape information")
    # The first dimension is the batch when the rank is above 1 (a rank-1 input has none).
    batch_dims, feat_dims = (dims[:1], dims[1:]) if len(dims) > 1 else ([1], dims)
    dynamic = [i for i, d in enumerate(feat_dims) if not isinstance(d, int)]
    if len(dynamic) > 1:
        raise ModelFormatError(
            f"{path}: input {inp.name!r} has {len(dynamic)} dynamic non-batch dimensions {dims}; "
            "at most one can be inferred"
        )
    if dynamic:
        feat_dims = list(feat_dims)
        feat_dims[dynamic[0]] = _infer_dim(g, inits, inp.name, feat_dims, dynamic[0], path)
    feat = tuple(int(d) for d in feat_dims)
    n_in = int(np.prod(feat))
    input_shape = (1 if not isinstance(batch_dims[0], int) else int(batch_dims[0]), *feat)
    if input_shape[0] != 1:
        raise UnsupportedModelError(f"{path}: input batch dimension must be 1 or dynamic, found {dims[0]}")

    ctx = _Ctx(str(path))
    ctx.values.update(inits)
    ctx.values[inp.name] = _Sym(np.eye(n_in), np.zeros(n_in), input_shape if len(dims) > 1 else feat, 0)
    ctx.basis_size = n_in

    graph = nx.DiGraph()
    producer: dict[str, str] = {}
    problems: list[tuple[str, str, str]] = []
    unknown = [(n.op_type, n.name or f"#{i}") for i, n in enumerate(g.node) if n.op_type not in _HANDLERS]
    if unknown:
        listing = ", ".join(f"{op} (node {name!r})" for op, name in unknown)
        raise UnsupportedModelError(
            f"{path}: {len(unknown)} unsupported node(s): {listing}; "
            f"supported ops: {', '.join(SUPPORTED_OPS)}",
            unknown,
        )
    for i, node in enumerate(g.node):
        key = node.name or f"{node.op_type}#{i}"
        kind, handler = _HANDLERS[node.op_type]
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

    out_name = g.output[0].name
    out = ctx.values.get(out_name)
    if not isinstance(out, _Sym):
        raise UnsupportedModelError(f"{path}: output {out_name!r} does not depend on the input")
    if out.basis != ctx.basis_id:
        raise UnsupportedModelError(
            f"{path}: output depends on a tensor before the last ReLU (skip connection)"
        )
    layers = list(ctx.layers)
    layers.append(Affine(out.M.copy(), out.c.copy()))
    for lay in layers:
        if isinstance(lay, Affine) and not (np.all(np.isfinite(lay.W)) and np.all(np.isfinite(lay.b))):
            raise ModelFormatError(f"{path}: folding the graph produced non-finite weights")
    return Network(
        layers=tuple(layers),
        input_name=inp.name,
        input_shape=input_shape if len(dims) > 1 else feat,
        output_name=out_name,
        output_shape=tuple(out.shape),
        sha256=digest,
        path=str(path),
        graph=graph,
    )


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
    are fed one at a time when the model's batch dimension is fixed to 1.
    """
    import onnxruntime as ort

    opts = ort.SessionOptions()
    opts.intra_op_num_threads = 1
    opts.inter_op_num_threads = 1
    opts.log_severity_level = 3
    sess = ort.InferenceSession(str(path), sess_options=opts, providers=["CPUExecutionProvider"])
    inits = {i.name for i in sess.get_inputs()}
    inp = sess.get_inputs()[0]
    if len(inits) > 1:
        raise ModelFormatError(f"{path}: onnxruntime sees {len(inits)} inputs, expected one")
    x = np.asarray(x, dtype=np.float32)
    single = x.ndim == 1
    xb = np.atleast_2d(x).reshape(x.shape[0] if not single else 1, -1)
    shape = list(input_shape) if input_shape else [d if isinstance(d, int) else -1 for d in inp.shape]
    tail = [int(d) if isinstance(d, int) and d > 0 else -1 for d in shape[1:]] if len(shape) > 1 else [-1]
    fixed_batch = len(shape) > 1 and isinstance(shape[0], int) and shape[0] == 1
    if len(shape) <= 1:
        outs = [sess.run(None, {inp.name: row.reshape(-1)})[0] for row in xb]
    elif fixed_batch or xb.shape[0] == 1:
        outs = [sess.run(None, {inp.name: row.reshape(1, *tail)})[0] for row in xb]
    else:
        outs = [sess.run(None, {inp.name: xb.reshape(xb.shape[0], *tail)})[0]]
    y = np.concatenate([o.reshape(o.shape[0] if o.ndim > 1 else 1, -1) for o in outs]).astype(np.float64)
    return y[0] if single else y


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
