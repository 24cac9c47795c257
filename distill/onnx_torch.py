"""A small ONNX → torch interpreter: any supported ONNX graph as a differentiable ``nn.Module``.

Why not onnx2torch
------------------
onnx2torch (the maintained converter on PyPI) imports ``torchvision`` unconditionally (its NMS and
RoIAlign converters are imported by ``onnx2torch.node_converters``), and PyPI's torchvision does not
import beside this project's CPU torch build (installing it would replace torch).  A teacher is only
*evaluated, differentiated and attacked* — never encoded — so a plain interpreter is enough: the graph's
nodes run in order (ONNX graphs are topologically sorted by specification), each through the torch
function the lookup table :data:`OPS` gives for its ``op_type``.  Gradients flow through every floating
op (``torch.autograd``); integer tensors (shapes, indices) are plain ``int64`` tensors.

Semantics
---------
Each converter follows the ONNX operator specification (opsets 7–21) for the attributes it accepts and
refuses, at construction, the attribute values it does not implement (e.g. ``Conv`` with
``auto_pad=SAME_*`` is implemented, ``BatchNormalization`` with ``training_mode=1`` is refused).  Every
offending node is collected before anything is raised, so a refusal names them all in one line
(:class:`~encoders.errors.UnsupportedModelError`, CLI exit status 2).  Parity with onnxruntime is not
assumed: :func:`distill.teacher.load_teacher` measures it on ≥ 1000 points and refuses a teacher above
its tolerance.

Floating constants (initialisers and ``Constant`` nodes) are registered as buffers, so
``module.double()`` runs the whole graph in float64; ``Cast`` to a floating type keeps the tensor's
floating dtype (it only converts integers/booleans to floats), which is what makes that work.

Batch
-----
A graph with a dynamic (symbolic) batch dimension runs on the whole batch.  A graph whose batch
dimension is fixed to 1 (or a rank-1 input with no batch dimension) runs per sample under
``torch.func.vmap`` — constant ``Reshape`` targets such as ``[1, 64]`` then stay correct.
"""

from __future__ import annotations

import math
from collections.abc import Callable, Sequence
from dataclasses import dataclass
from typing import Any

import numpy as np
import torch
import torch.nn.functional as F
from torch import nn

from encoders.errors import ModelFormatError, UnsupportedModelError

__all__ = ["OnnxModule", "OPS", "SUPPORTED_OPS", "PASSTHROUGH_OPS", "graph_input", "unsupported_nodes"]


class _Unsupported(Exception):
    """A node whose attributes this interpreter does not implement (the message says which)."""


@dataclass(frozen=True)
class _Node:
    """What a converter sees: the ONNX node, its attributes as Python values, the default-domain opset."""

    proto: Any
    attrs: dict[str, Any]
    opset: int
    consumed: frozenset[str]

    @property
    def name(self) -> str:
        return self.proto.name

    def attr(self, key: str, default: Any = None) -> Any:
        return self.attrs.get(key, default)

    def output_used(self, i: int) -> bool:
        outs = self.proto.output
        return i < len(outs) and bool(outs[i]) and outs[i] in self.consumed


Fn = Callable[..., Any]


# --------------------------------------------------------------------------------------------------
# helpers
# --------------------------------------------------------------------------------------------------
def _ints(t: torch.Tensor | Sequence[int] | None) -> list[int] | None:
    if t is None:
        return None
    if isinstance(t, torch.Tensor):
        return [int(v) for v in t.reshape(-1).tolist()]
    return [int(v) for v in t]


def _axis(a: int, rank: int) -> int:
    return a + rank if a < 0 else a


def _is_float(t: torch.Tensor) -> bool:
    return t.is_floating_point()


def _spatial_pads(node: _Node, k: int) -> list[int] | None:
    """ONNX ``pads`` ``[x1_begin, …, xk_begin, x1_end, …, xk_end]`` (None for ``auto_pad=SAME_*``)."""
    auto = node.attr("auto_pad", "NOTSET")
    if auto in ("SAME_UPPER", "SAME_LOWER"):
        return None
    if auto not in ("NOTSET", "VALID"):
        raise _Unsupported(f"auto_pad={auto!r}")
    if auto == "VALID":
        return [0] * (2 * k)
    pads = node.attr("pads") or [0] * (2 * k)
    if len(pads) != 2 * k:
        raise _Unsupported(f"pads {pads} for a {k}-d kernel")
    return [int(p) for p in pads]


def _same_pads(
    in_sizes: Sequence[int], kernel: Sequence[int], strides: Sequence[int], dil: Sequence[int], upper: bool
) -> list[int]:
    """``auto_pad=SAME_*``: output ``ceil(in/stride)``, total padding split with the extra cell at the end
    (``SAME_UPPER``) or the beginning (``SAME_LOWER``)."""
    begins, ends = [], []
    for n, k, s, d in zip(in_sizes, kernel, strides, dil):
        out = -(-n // s)
        total = max((out - 1) * s + (k - 1) * d + 1 - n, 0)
        small, big = total // 2, total - total // 2
        begins.append(small if upper else big)
        ends.append(big if upper else small)
    return begins + ends


def _torch_pad(pads: Sequence[int]) -> list[int]:
    """ONNX ``[b1..bk, e1..ek]`` → ``F.pad``'s last-dimension-first ``[bk, ek, …, b1, e1]``."""
    k = len(pads) // 2
    out: list[int] = []
    for i in reversed(range(k)):
        out += [int(pads[i]), int(pads[i + k])]
    return out


_CONV = {1: F.conv1d, 2: F.conv2d, 3: F.conv3d}
_MAXPOOL = {1: F.max_pool1d, 2: F.max_pool2d, 3: F.max_pool3d}
_AVGPOOL = {1: F.avg_pool1d, 2: F.avg_pool2d, 3: F.avg_pool3d}


# --------------------------------------------------------------------------------------------------
# converters: node -> function of the node's input tensors (None for absent optional inputs)
# --------------------------------------------------------------------------------------------------
def _c_conv(node: _Node) -> Fn:
    """``Conv``: ``y = W ⋆ pad(x) + B`` with strides, dilations, groups; explicit or ``SAME_*`` padding."""
    group = int(node.attr("group", 1))
    auto = node.attr("auto_pad", "NOTSET")

    def fn(x: torch.Tensor, w: torch.Tensor, b: torch.Tensor | None = None) -> torch.Tensor:
        k = w.dim() - 2
        if k not in _CONV:
            raise _Unsupported(f"{k}-d convolution")
        kernel = node.attr("kernel_shape") or list(w.shape[2:])
        strides = node.attr("strides") or [1] * k
        dil = node.attr("dilations") or [1] * k
        pads = _spatial_pads(node, k)
        if pads is None:
            pads = _same_pads(x.shape[2:], kernel, strides, dil, auto == "SAME_UPPER")
        if pads[:k] == pads[k:]:
            return _CONV[k](x, w, b, stride=strides, padding=pads[:k], dilation=dil, groups=group)
        return _CONV[k](F.pad(x, _torch_pad(pads)), w, b, stride=strides, dilation=dil, groups=group)

    if node.attr("kernel_shape"):  # reject a bad auto_pad / pads length now (else at run time)
        _spatial_pads(node, len(node.attr("kernel_shape")))
    elif auto not in ("NOTSET", "VALID", "SAME_UPPER", "SAME_LOWER"):
        raise _Unsupported(f"auto_pad={auto!r}")
    return fn


def _c_maxpool(node: _Node) -> Fn:
    """``MaxPool``: the maximum over each window of ``x`` padded with ``−∞`` (``ceil_mode`` as torch)."""
    if node.output_used(1):
        raise _Unsupported("the Indices output is used")
    if int(node.attr("storage_order", 0)) != 0 and node.output_used(1):
        raise _Unsupported("storage_order=1")
    kernel = [int(v) for v in node.attr("kernel_shape")]
    k = len(kernel)
    if k not in _MAXPOOL:
        raise _Unsupported(f"{k}-d pooling")
    strides = node.attr("strides") or [1] * k
    dil = node.attr("dilations") or [1] * k
    ceil = bool(node.attr("ceil_mode", 0))
    pads0 = _spatial_pads(node, k)
    auto = node.attr("auto_pad", "NOTSET")

    def fn(x: torch.Tensor) -> torch.Tensor:
        pads = (
            pads0
            if pads0 is not None
            else _same_pads(x.shape[2:], kernel, strides, dil, auto == "SAME_UPPER")
        )
        if any(pads):
            x = F.pad(x, _torch_pad(pads), value=-math.inf)
        return _MAXPOOL[k](x, kernel, stride=strides, dilation=dil, ceil_mode=ceil)

    return fn


def _c_avgpool(node: _Node) -> Fn:
    """``AveragePool``: window sums of the zero-padded input divided by the window size
    (``count_include_pad=1``) or by the number of non-padding cells in the window (``=0``)."""
    kernel = [int(v) for v in node.attr("kernel_shape")]
    k = len(kernel)
    if k not in _AVGPOOL:
        raise _Unsupported(f"{k}-d pooling")
    if int(node.attr("ceil_mode", 0)):
        raise _Unsupported("ceil_mode=1")
    if any(int(d) != 1 for d in (node.attr("dilations") or [1])):
        raise _Unsupported("dilations other than 1")
    strides = node.attr("strides") or [1] * k
    include = bool(node.attr("count_include_pad", 0))
    pads0 = _spatial_pads(node, k)
    auto = node.attr("auto_pad", "NOTSET")

    def fn(x: torch.Tensor) -> torch.Tensor:
        pads = (
            pads0
            if pads0 is not None
            else _same_pads(x.shape[2:], kernel, strides, [1] * k, auto == "SAME_UPPER")
        )
        if not any(pads):
            return _AVGPOOL[k](x, kernel, stride=strides)
        xp = F.pad(x, _torch_pad(pads))
        s = _AVGPOOL[k](xp, kernel, stride=strides)
        if include:
            return s
        ones = F.pad(torch.ones_like(x[:1, :1]), _torch_pad(pads))
        return s / _AVGPOOL[k](ones, kernel, stride=strides)

    return fn


def _c_global_avg(node: _Node) -> Fn:
    return lambda x: x.mean(dim=tuple(range(2, x.dim())), keepdim=True)


def _c_global_max(node: _Node) -> Fn:
    return lambda x: x.amax(dim=tuple(range(2, x.dim())), keepdim=True)


def _c_batchnorm(node: _Node) -> Fn:
    """Inference ``BatchNormalization``: ``y = (x − mean) / sqrt(var + ε) · scale + B`` along axis 1."""
    if int(node.attr("training_mode", 0)):
        raise _Unsupported("training_mode=1")
    if any(node.output_used(i) for i in (1, 2, 3, 4)):
        raise _Unsupported("running-statistics outputs are used")
    eps = float(node.attr("epsilon", 1e-5))

    def fn(x, scale, b, mean, var):  # noqa: ANN001, ANN202
        shape = [1, -1] + [1] * (x.dim() - 2)
        inv = scale.reshape(shape) / torch.sqrt(var.reshape(shape) + eps)
        return (x - mean.reshape(shape)) * inv + b.reshape(shape)

    return fn


def _c_layernorm(node: _Node) -> Fn:
    """``LayerNormalization``: normalise over axes ``axis..`` then ``· scale + B``."""
    if any(node.output_used(i) for i in (1, 2)):
        raise _Unsupported("mean/inv-std outputs are used")
    axis, eps = int(node.attr("axis", -1)), float(node.attr("epsilon", 1e-5))

    def fn(x, scale, b=None):  # noqa: ANN001, ANN202
        a = _axis(axis, x.dim())
        return F.layer_norm(x, list(x.shape[a:]), scale, b, eps)

    return fn


def _binary(op: Callable[[torch.Tensor, torch.Tensor], torch.Tensor]) -> Callable[[_Node], Fn]:
    return lambda node: op


def _div(a: torch.Tensor, b: torch.Tensor) -> torch.Tensor:
    """ONNX ``Div``: true division for floats, truncation for integers."""
    if not _is_float(a) and not _is_float(b):
        return torch.div(a, b, rounding_mode="trunc")
    return a / b


def _c_unary(fn: Fn) -> Callable[[_Node], Fn]:
    return lambda node: fn


def _c_leaky(node: _Node) -> Fn:
    alpha = float(node.attr("alpha", 0.01))
    return lambda x: F.leaky_relu(x, alpha)


def _c_elu(node: _Node) -> Fn:
    alpha = float(node.attr("alpha", 1.0))
    return lambda x: F.elu(x, alpha)


def _c_hardsigmoid(node: _Node) -> Fn:
    a, b = float(node.attr("alpha", 0.2)), float(node.attr("beta", 0.5))
    return lambda x: torch.clamp(a * x + b, 0.0, 1.0)


def _c_gelu(node: _Node) -> Fn:
    approx = node.attr("approximate", "none")
    if approx not in ("none", "tanh"):
        raise _Unsupported(f"approximate={approx!r}")
    return lambda x: F.gelu(x, approximate=approx)


def _softmax_like(node: _Node, f: Callable[[torch.Tensor, int], torch.Tensor]) -> Fn:
    """``Softmax``/``LogSoftmax``: opset ≥ 13 along ``axis`` (default −1); before 13 the input is
    coerced to 2-D ``[prod(shape[:axis]), prod(shape[axis:])]`` (default axis 1) and normalised per row."""
    if node.opset >= 13:
        axis = int(node.attr("axis", -1))
        return lambda x: f(x, _axis(axis, x.dim()))
    axis = int(node.attr("axis", 1))

    def fn(x: torch.Tensor) -> torch.Tensor:
        a = _axis(axis, x.dim())
        lead = int(np.prod(x.shape[:a])) if a else 1
        return f(x.reshape(lead, -1), 1).reshape(x.shape)

    return fn


def _c_softmax(node: _Node) -> Fn:
    return _softmax_like(node, lambda x, a: torch.softmax(x, dim=a))


def _c_logsoftmax(node: _Node) -> Fn:
    return _softmax_like(node, lambda x, a: torch.log_softmax(x, dim=a))


def _c_dropout(node: _Node) -> Fn:
    """Inference ``Dropout`` is the identity (the ``mask`` output is refused when used)."""
    if node.output_used(1):
        raise _Unsupported("the mask output is used")
    return lambda x, *rest: x


def _c_identity(node: _Node) -> Fn:
    return lambda x: x


def _c_flatten(node: _Node) -> Fn:
    axis = int(node.attr("axis", 1))

    def fn(x: torch.Tensor) -> torch.Tensor:
        a = _axis(axis, x.dim())
        lead = int(np.prod(x.shape[:a])) if a else 1
        return x.reshape(lead, -1)

    return fn


def _c_reshape(node: _Node) -> Fn:
    """``Reshape``: ``0`` copies the input's dimension (unless ``allowzero=1``), ``−1`` is inferred."""
    allowzero = bool(node.attr("allowzero", 0))

    def fn(x: torch.Tensor, shape: torch.Tensor) -> torch.Tensor:
        target = _ints(shape) or []
        if not allowzero:
            target = [x.shape[i] if d == 0 else d for i, d in enumerate(target)]
        return x.reshape(target)

    return fn


def _c_gemm(node: _Node) -> Fn:
    """``Gemm``: ``α · A' B' + β · C`` with ``A' = Aᵀ`` if ``transA``, ``B' = Bᵀ`` if ``transB``."""
    alpha, beta = float(node.attr("alpha", 1.0)), float(node.attr("beta", 1.0))
    ta, tb = int(node.attr("transA", 0)), int(node.attr("transB", 0))

    def fn(a: torch.Tensor, b: torch.Tensor, c: torch.Tensor | None = None) -> torch.Tensor:
        a = a.t() if ta else a
        b = b.t() if tb else b
        y = a @ b
        if alpha != 1.0:
            y = alpha * y
        if c is not None:
            y = y + (c if beta == 1.0 else beta * c)
        return y

    return fn


def _c_transpose(node: _Node) -> Fn:
    perm = node.attr("perm")
    return lambda x: x.permute(*(perm if perm is not None else reversed(range(x.dim()))))


def _axes_arg(node: _Node, given: torch.Tensor | None) -> list[int] | None:
    return _ints(given) if given is not None else node.attr("axes")


def _c_squeeze(node: _Node) -> Fn:
    def fn(x: torch.Tensor, axes: torch.Tensor | None = None) -> torch.Tensor:
        ax = _axes_arg(node, axes)
        if ax is None:
            return x.squeeze()
        for a in sorted((_axis(a, x.dim()) for a in ax), reverse=True):
            x = x.squeeze(a)
        return x

    return fn


def _c_unsqueeze(node: _Node) -> Fn:
    def fn(x: torch.Tensor, axes: torch.Tensor | None = None) -> torch.Tensor:
        ax = _axes_arg(node, axes) or []
        rank = x.dim() + len(ax)
        for a in sorted(_axis(a, rank) for a in ax):
            x = x.unsqueeze(a)
        return x

    return fn


def _c_concat(node: _Node) -> Fn:
    axis = int(node.attr("axis"))

    def fn(*xs: torch.Tensor) -> torch.Tensor:
        xs = tuple(x for x in xs if x is not None)
        dt = torch.promote_types(*(x.dtype for x in xs)) if len(xs) > 1 else xs[0].dtype
        return torch.cat([x.to(dt) for x in xs], dim=_axis(axis, xs[0].dim()))

    return fn


def _c_shape(node: _Node) -> Fn:
    start, end = node.attr("start", 0), node.attr("end")

    def fn(x: torch.Tensor) -> torch.Tensor:
        return torch.tensor(list(x.shape)[start:end], dtype=torch.int64)

    return fn


def _c_size(node: _Node) -> Fn:
    return lambda x: torch.tensor(x.numel(), dtype=torch.int64)


def _c_gather(node: _Node) -> Fn:
    """``Gather``: ``out[i…, j…, k…] = data[i…, idx[j…], k…]`` along ``axis`` (negative indices wrap)."""
    axis = int(node.attr("axis", 0))

    def fn(data: torch.Tensor, idx: torch.Tensor) -> torch.Tensor:
        a = _axis(axis, data.dim())
        ii = idx.to(torch.int64)
        ii = torch.where(ii < 0, ii + data.shape[a], ii)
        out = data.index_select(a, ii.reshape(-1))
        return out.reshape((*data.shape[:a], *ii.shape, *data.shape[a + 1 :]))

    return fn


_ONNX_FLOAT_TYPES = {1, 10, 11, 16}  # FLOAT, FLOAT16, DOUBLE, BFLOAT16
_ONNX_INT_TYPES = {2, 3, 4, 5, 6, 7, 12, 13}


def _c_cast(node: _Node) -> Fn:
    """``Cast``: to a floating type keeps a float tensor's dtype (so a float64 copy stays float64) and
    converts integers/booleans to float32; to an integer type gives int64; to BOOL gives bool."""
    to = int(node.attr("to"))
    if to in _ONNX_FLOAT_TYPES:
        return lambda x: x if _is_float(x) else x.to(torch.float32)
    if to in _ONNX_INT_TYPES:
        return lambda x: x.to(torch.int64)
    if to == 9:
        return lambda x: x.to(torch.bool)
    raise _Unsupported(f"Cast to ONNX type {to}")


def _c_clip(node: _Node) -> Fn:
    lo_a, hi_a = node.attr("min"), node.attr("max")

    def fn(x: torch.Tensor, lo: torch.Tensor | None = None, hi: torch.Tensor | None = None) -> torch.Tensor:
        lo_v = lo if lo is not None else lo_a
        hi_v = hi if hi is not None else hi_a
        if lo_v is not None:
            x = torch.maximum(x, torch.as_tensor(lo_v, dtype=x.dtype))
        if hi_v is not None:
            x = torch.minimum(x, torch.as_tensor(hi_v, dtype=x.dtype))
        return x

    return fn


def _reduce(kind: str) -> Callable[[_Node], Fn]:
    """``ReduceMean/Sum/Max/Min``: over ``axes`` (attribute, or input from opset 18 / 13 for Sum);
    all axes when none are given (unless ``noop_with_empty_axes``)."""

    def conv(node: _Node) -> Fn:
        keep = bool(node.attr("keepdims", 1))
        noop = bool(node.attr("noop_with_empty_axes", 0))

        def fn(x: torch.Tensor, axes: torch.Tensor | None = None) -> torch.Tensor:
            ax = _axes_arg(node, axes)
            if not ax:
                if noop:
                    return x
                ax = list(range(x.dim()))
            dims = tuple(_axis(a, x.dim()) for a in ax)
            if kind == "mean":
                return x.mean(dim=dims, keepdim=keep)
            if kind == "sum":
                return x.sum(dim=dims, keepdim=keep)
            return x.amax(dim=dims, keepdim=keep) if kind == "max" else x.amin(dim=dims, keepdim=keep)

        return fn

    return conv


def _c_pad(node: _Node) -> Fn:
    mode = node.attr("mode", "constant")
    torch_mode = {"constant": "constant", "reflect": "reflect", "edge": "replicate"}.get(mode)
    if torch_mode is None:
        raise _Unsupported(f"mode={mode!r}")

    def fn(x, pads=None, value=None, axes=None):  # noqa: ANN001, ANN202
        p = _ints(pads) if pads is not None else node.attr("pads")
        if axes is not None:
            ax = [_axis(a, x.dim()) for a in _ints(axes) or []]
            full = [0] * (2 * x.dim())
            for i, a in enumerate(ax):
                full[a], full[a + x.dim()] = p[i], p[i + len(ax)]
            p = full
        v = (
            float(value.reshape(-1)[0])
            if value is not None and value.numel()
            else float(node.attr("value", 0.0))
        )
        # F.pad pads trailing dimensions first; leading zero pads are dropped where possible.
        tp = _torch_pad(p)
        while len(tp) > 2 and tp[-2:] == [0, 0]:
            tp = tp[:-2]
        if torch_mode == "constant":
            return F.pad(x, tp, value=v)
        return F.pad(x, tp, mode=torch_mode)

    return fn


def _c_slice(node: _Node) -> Fn:
    """``Slice`` with positive steps (negative steps are refused at run time)."""

    def fn(x, starts=None, ends=None, axes=None, steps=None):  # noqa: ANN001, ANN202
        st = _ints(starts) if starts is not None else node.attr("starts")
        en = _ints(ends) if ends is not None else node.attr("ends")
        ax = _ints(axes) if axes is not None else node.attr("axes", list(range(len(st))))
        sp = _ints(steps) if steps is not None else [1] * len(st)
        idx: list[slice] = [slice(None)] * x.dim()
        for s, e, a, k in zip(st, en, ax, sp):
            if k <= 0:
                raise _Unsupported(f"step {k}")
            a = _axis(a, x.dim())
            n = x.shape[a]
            s = max(0, min(n, s + n if s < 0 else s))
            e = max(0, min(n, e + n if e < 0 else e))
            idx[a] = slice(s, e, k)
        return x[tuple(idx)]

    return fn


def _c_constant_of_shape(node: _Node) -> Fn:
    val = node.attr("value")
    fill = torch.as_tensor(np.array(val)).reshape(-1) if val is not None else torch.zeros(1)

    def fn(shape: torch.Tensor) -> torch.Tensor:
        return fill.expand(_ints(shape) or []).clone() if (_ints(shape) or []) else fill.reshape(()).clone()

    return fn


def _c_expand(node: _Node) -> Fn:
    def fn(x: torch.Tensor, shape: torch.Tensor) -> torch.Tensor:
        target = _ints(shape) or []
        out = torch.broadcast_shapes(tuple(x.shape), tuple(target))
        return x.expand(out)

    return fn


def _c_where(node: _Node) -> Fn:
    return lambda c, a, b: torch.where(c.to(torch.bool), a, b)


def _c_range(node: _Node) -> Fn:
    return lambda s, e, d: torch.arange(s.item(), e.item(), d.item(), dtype=s.dtype)


def _c_variadic(op: Callable[[torch.Tensor, torch.Tensor], torch.Tensor]) -> Callable[[_Node], Fn]:
    def conv(node: _Node) -> Fn:
        def fn(*xs: torch.Tensor) -> torch.Tensor:
            out = xs[0]
            for x in xs[1:]:
                out = op(out, x)
            return out

        return fn

    return conv


def _pow(a: torch.Tensor, b: torch.Tensor) -> torch.Tensor:
    return torch.pow(a, b.to(a.dtype) if _is_float(a) else b)


#: ``op_type`` → converter ``(node) -> fn(*inputs)`` (``fn`` returns one tensor or a tuple).
OPS: dict[str, Callable[[_Node], Fn]] = {
    "Conv": _c_conv,
    "MaxPool": _c_maxpool,
    "AveragePool": _c_avgpool,
    "GlobalAveragePool": _c_global_avg,
    "GlobalMaxPool": _c_global_max,
    "BatchNormalization": _c_batchnorm,
    "LayerNormalization": _c_layernorm,
    "Add": _binary(torch.add),
    "Sub": _binary(torch.sub),
    "Mul": _binary(torch.mul),
    "Div": _binary(_div),
    "Pow": _binary(_pow),
    "Equal": _binary(torch.eq),
    "Less": _binary(torch.lt),
    "Greater": _binary(torch.gt),
    "Max": _c_variadic(torch.maximum),
    "Min": _c_variadic(torch.minimum),
    "Sum": _c_variadic(torch.add),
    "Concat": _c_concat,
    "Relu": _c_unary(torch.relu),
    "LeakyRelu": _c_leaky,
    "Elu": _c_elu,
    "Selu": _c_unary(F.selu),
    "Softplus": _c_unary(F.softplus),
    "Sigmoid": _c_unary(torch.sigmoid),
    "HardSigmoid": _c_hardsigmoid,
    "Tanh": _c_unary(torch.tanh),
    "Gelu": _c_gelu,
    "Erf": _c_unary(torch.erf),
    "Exp": _c_unary(torch.exp),
    "Log": _c_unary(torch.log),
    "Sqrt": _c_unary(torch.sqrt),
    "Neg": _c_unary(torch.neg),
    "Abs": _c_unary(torch.abs),
    "Reciprocal": _c_unary(torch.reciprocal),
    "Softmax": _c_softmax,
    "LogSoftmax": _c_logsoftmax,
    "Dropout": _c_dropout,
    "Identity": _c_identity,
    "Flatten": _c_flatten,
    "Reshape": _c_reshape,
    "Gemm": _c_gemm,
    "MatMul": _binary(torch.matmul),
    "Transpose": _c_transpose,
    "Squeeze": _c_squeeze,
    "Unsqueeze": _c_unsqueeze,
    "Shape": _c_shape,
    "Size": _c_size,
    "Gather": _c_gather,
    "Cast": _c_cast,
    "Clip": _c_clip,
    "ReduceMean": _reduce("mean"),
    "ReduceSum": _reduce("sum"),
    "ReduceMax": _reduce("max"),
    "ReduceMin": _reduce("min"),
    "Pad": _c_pad,
    "Slice": _c_slice,
    "ConstantOfShape": _c_constant_of_shape,
    "Expand": _c_expand,
    "Where": _c_where,
    "Range": _c_range,
}
SUPPORTED_OPS: tuple[str, ...] = ("Constant", *sorted(OPS))
#: ops through which a terminal ``Softmax`` stays terminal (shape-only or identity maps)
PASSTHROUGH_OPS = frozenset({"Identity", "Dropout", "Reshape", "Flatten", "Squeeze", "Unsqueeze"})


# --------------------------------------------------------------------------------------------------
# graph reading
# --------------------------------------------------------------------------------------------------
def _attr_value(a: Any) -> Any:
    import onnx
    from onnx import numpy_helper

    v = onnx.helper.get_attribute_value(a)
    if isinstance(v, bytes):
        return v.decode()
    if isinstance(v, onnx.TensorProto):
        return numpy_helper.to_array(v)
    if isinstance(v, list) and v and isinstance(v[0], bytes):
        return [s.decode() for s in v]
    return v


def _default_opset(model: Any) -> int:
    for o in model.opset_import:
        if o.domain in ("", "ai.onnx"):
            return int(o.version)
    return 1


def graph_input(model: Any) -> Any:
    """The graph's single real input (initialisers listed as inputs by old exporters are skipped).

    Raises :class:`UnsupportedModelError` unless there is exactly one.
    """
    inits = {t.name for t in model.graph.initializer}
    real = [i for i in model.graph.input if i.name not in inits]
    if len(real) != 1:
        raise UnsupportedModelError(
            f"expected exactly one graph input, found {len(real)}: {[i.name for i in real]}"
        )
    return real[0]


def unsupported_nodes(model: Any) -> list[tuple[str, str, str]]:
    """``(op_type, node name, reason)`` for every node this interpreter cannot run."""
    consumed = _consumed(model)
    opset = _default_opset(model)
    out = []
    for i, n in enumerate(model.graph.node):
        name = n.name or f"#{i}"
        if n.domain not in ("", "ai.onnx"):
            out.append((n.op_type, name, f"custom domain {n.domain!r}"))
        elif n.op_type == "Constant":
            continue
        elif n.op_type not in OPS:
            out.append((n.op_type, name, "operator not supported"))
        else:
            try:
                OPS[n.op_type](_Node(n, {a.name: _attr_value(a) for a in n.attribute}, opset, consumed))
            except _Unsupported as exc:
                out.append((n.op_type, name, str(exc)))
    return out


def _consumed(model: Any) -> frozenset[str]:
    used = {t for n in model.graph.node for t in n.input if t}
    used |= {o.name for o in model.graph.output}
    return frozenset(used)


def _constant_value(node: Any) -> np.ndarray:
    attrs = {a.name: _attr_value(a) for a in node.attribute}
    if "value" in attrs:
        return np.asarray(attrs["value"])
    for key, dt in (
        ("value_float", np.float32),
        ("value_floats", np.float32),
        ("value_int", np.int64),
        ("value_ints", np.int64),
    ):
        if key in attrs:
            return np.asarray(attrs[key], dtype=dt)
    raise _Unsupported(f"Constant with attribute(s) {sorted(attrs)}")


def _to_tensor(arr: np.ndarray) -> torch.Tensor:
    arr = np.asarray(arr)
    if arr.dtype.kind == "f":
        return torch.from_numpy(np.array(arr, dtype=np.float32))
    if arr.dtype.kind in "iu":
        return torch.from_numpy(np.array(arr, dtype=np.int64))
    if arr.dtype.kind == "b":
        return torch.from_numpy(np.array(arr, dtype=np.bool_))
    raise _Unsupported(f"constant of dtype {arr.dtype}")


# --------------------------------------------------------------------------------------------------
# the module
# --------------------------------------------------------------------------------------------------
class OnnxModule(nn.Module):
    """An ONNX graph run node by node with torch (see the module docstring).

    ``forward(x)`` takes the graph's input tensor *with* its batch dimension, e.g. ``(N, 1, 8, 8)``,
    and returns the graph's (first and only) output.  A node name given as ``skip`` makes that node the
    identity on its first input (``forward(x, skip=name)``) — :mod:`distill.teacher` uses it to read the
    logits under a terminal ``Softmax``.

    Parameters
    ----------
    model
        An ``onnx.ModelProto`` (already checked).
    label
        The file name used in error messages.
    per_sample
        Run each sample separately under ``torch.func.vmap`` (a graph with a fixed batch of 1); the
        input then has shape ``(N, *sample_shape)`` and each sample is fed as ``sample_shape``.

    Raises
    ------
    UnsupportedModelError
        Every node it cannot run, named in one message.
    """

    def __init__(self, model: Any, label: str, per_sample: bool = False, sample_shape: tuple[int, ...] = ()):
        super().__init__()
        from onnx import numpy_helper

        self.label = str(label)
        self.per_sample = bool(per_sample)
        self.sample_shape = tuple(int(d) for d in sample_shape)
        g = model.graph
        bad = unsupported_nodes(model)
        if bad:
            listing = ", ".join(f"{op} (node {name!r}: {why})" for op, name, why in bad)
            raise UnsupportedModelError(
                f"{label}: {len(bad)} node(s) the teacher importer cannot run: {listing}",
                [(op, name) for op, name, _ in bad],
            )
        if len(g.output) != 1:
            raise UnsupportedModelError(f"{label}: expected exactly one graph output, found {len(g.output)}")
        self.input_name = graph_input(model).name
        self.output_name = g.output[0].name
        self._const: dict[str, str] = {}  # onnx tensor name -> buffer name
        for t in g.initializer:
            self._add_const(t.name, _to_tensor(numpy_helper.to_array(t)))
        consumed = _consumed(model)
        opset = _default_opset(model)
        self._steps: list[tuple[str, str, list[str], list[str], Fn]] = []
        for i, n in enumerate(g.node):
            name = n.name or f"{n.op_type}#{i}"
            if n.op_type == "Constant":
                self._add_const(n.output[0], _to_tensor(_constant_value(n)))
                continue
            attrs = {a.name: _attr_value(a) for a in n.attribute}
            fn = OPS[n.op_type](_Node(n, attrs, opset, consumed))
            self._steps.append((name, n.op_type, list(n.input), list(n.output), fn))

    def _add_const(self, onnx_name: str, t: torch.Tensor) -> None:
        key = f"c{len(self._const)}"
        self.register_buffer(key, t, persistent=True)
        self._const[onnx_name] = key

    @property
    def node_names(self) -> list[str]:
        return [s[0] for s in self._steps]

    def _run(self, x: torch.Tensor, skip: str | None = None) -> torch.Tensor:
        values: dict[str, Any] = {k: getattr(self, b) for k, b in self._const.items()}
        values[self.input_name] = x
        for name, op, ins, outs, fn in self._steps:
            args = [values[t] if t else None for t in ins]
            while args and args[-1] is None:
                args.pop()
            try:
                res = args[0] if name == skip else fn(*args)
            except _Unsupported as exc:
                raise UnsupportedModelError(
                    f"{self.label}: node {name!r} ({op}): {exc}", [(op, name)]
                ) from None
            except (RuntimeError, ValueError, IndexError, TypeError, KeyError) as exc:
                first = (str(exc).splitlines() or [type(exc).__name__])[0][:200]
                raise ModelFormatError(
                    f"{self.label}: node {name!r} ({op}) failed at run time: {first}"
                ) from None
            if isinstance(res, tuple):
                for o, r in zip(outs, res):
                    if o:
                        values[o] = r
            else:
                values[outs[0]] = res
        return values[self.output_name]

    def forward(self, x: torch.Tensor, skip: str | None = None) -> torch.Tensor:
        """The graph output for ``x``; ``skip`` names a node to run as the identity on its first input."""
        if not self.per_sample:
            return self._run(x, skip)
        return torch.func.vmap(lambda t: self._run(t.reshape(self.sample_shape), skip))(x)
