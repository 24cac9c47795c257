r"""Teacher import, separate from the verifiable-network IR: :func:`load_teacher` → :class:`Teacher`.

A teacher is *evaluated, differentiated and attacked*, never encoded, so any graph onnxruntime runs is
accepted (within the op set of :mod:`distill.onnx_torch`), as are TorchScript files, distillcert
checkpoints and torch ``nn.Module`` objects (Python API).  Whether the verifiable IR
(:func:`encoders.network.load_onnx`) can *also* be built is recorded (``encodable``) for the lift audit,
never required.

What a :class:`Teacher` guarantees
----------------------------------
* ``module`` maps the **flat** float input ``(N, m)``, ``m = prod(input_shape)``, row-major, to
  **logits** ``(N, K)``: it reshapes to ``(N, *input_shape)`` and runs the graph (differentiable).
* ``onnx_path`` is the file to hash and to replay counterexamples on (the given ONNX file, or the
  ONNX export of a TorchScript/``nn.Module`` teacher).
* ``parity``: the largest ``|torch − onnxruntime|`` of the graph's raw output over ``parity_points``
  (≥ 1000) points — ``points`` uniform draws from the input domain plus up to 1000 given data points.
  The teacher is **refused** unless every output satisfies
  ``|torch − ort| ≤ PARITY_TOLERANCE · max(1, |ort|)`` (``PARITY_TOLERANCE = 1e-4``).

Probabilities (a graph that already ends in a softmax)
------------------------------------------------------
The raw outputs at the parity points are *probabilities* when every row is nonnegative, at most 1 and
sums to 1 within ``PROBABILITY_TOLERANCE = 1e-4``.  Such a teacher is never treated as if its outputs
were logits; ``outputs_probabilities`` is ``True`` and ``output_kind`` says how logits are recovered:

* ``"softmax-stripped"`` — the output is a ``Softmax`` node (possibly followed by shape-only nodes:
  Identity, Dropout, Reshape, Flatten, Squeeze, Unsqueeze).  ``module`` returns that node's *input*
  ``z``: ``softmax(z)`` is exactly the graph's output, so the class, the probabilities and all logit
  margins ``z_c − z_j = log(p_c / p_j)`` are the teacher's own; gradients are exact.
* ``"log-probabilities"`` — no such node (e.g. a hand-built normalisation): ``module`` returns
  ``log(max(p, tiny))`` (``tiny`` = the smallest normal float of the dtype).  Because the rows sum to 1,
  ``softmax(log p) = p``; margins are log-ratios as above.  Only classes whose probability underflows
  to 0 are affected (their logit is clamped at ``log(tiny)``).
* A graph ending in ``LogSoftmax`` gives ``"logits"`` (log-probabilities *are* logits) with
  ``outputs_probabilities = False``.

A terminal ``Softmax`` whose outputs are not per-sample distributions (wrong axis) is refused.
Certifiers must remember that onnxruntime on ``onnx_path`` returns probabilities when
``outputs_probabilities`` is true (the predicted class is the same argmax either way).

Errors
------
Bad files and unsupported graphs raise :class:`~encoders.errors.InputError` subclasses with one line
naming the file and every offending node (CLI exit status 2).
"""

from __future__ import annotations

import copy
import io
import json
import tempfile
import warnings
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import numpy as np
import torch
from torch import nn

from encoders.errors import ConfigError, InputError, ModelFormatError, UnsupportedModelError
from encoders.network import file_sha256

from .onnx_torch import PASSTHROUGH_OPS, OnnxModule, graph_input

__all__ = [
    "Teacher",
    "TeacherLogits",
    "load_teacher",
    "load_teacher_model",
    "PARITY_POINTS",
    "PARITY_TOLERANCE",
    "PROBABILITY_TOLERANCE",
    "OUTPUT_KINDS",
]

PARITY_POINTS = 1000
PARITY_TOLERANCE = 1e-4
PROBABILITY_TOLERANCE = 1e-4
OUTPUT_KINDS = ("logits", "softmax-stripped", "log-probabilities")
_EXPORT_OPSET = 17
_ONNX_FLOAT64 = 11


class TeacherLogits(nn.Module):
    """Flat inputs ``(N, m)`` → logits ``(N, K)`` around a graph module taking ``(N, *input_shape)``.

    ``raw(x)`` is the graph's own output (flattened per sample): probabilities for a softmax teacher.
    """

    def __init__(
        self, graph: nn.Module, input_shape: tuple[int, ...], output_kind: str, skip: str | None = None
    ):
        super().__init__()
        if output_kind not in OUTPUT_KINDS:
            raise ValueError(f"output_kind {output_kind!r}")
        self.graph = graph
        self.input_shape = tuple(int(d) for d in input_shape)
        self.output_kind = output_kind
        self.skip = skip
        self.n_inputs = int(np.prod(self.input_shape))
        self.n_classes = 0  # set by load_teacher
        self.meta: dict[str, Any] = {}

    def _graph(self, x: torch.Tensor, skip: str | None) -> torch.Tensor:
        n = x.shape[0]
        xin = x.reshape(n, *self.input_shape)
        out = self.graph(xin, skip=skip) if isinstance(self.graph, OnnxModule) else self.graph(xin)
        return out.reshape(n, -1)

    def raw(self, x: torch.Tensor) -> torch.Tensor:
        return self._graph(x, None)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        if self.output_kind == "softmax-stripped":
            return self._graph(x, self.skip)
        z = self._graph(x, None)
        if self.output_kind == "log-probabilities":
            return torch.log(z.clamp_min(torch.finfo(z.dtype).tiny))
        return z


@dataclass(frozen=True, eq=False)
class Teacher:
    """An imported teacher (module docstring).

    Attributes
    ----------
    module
        :class:`TeacherLogits`: flat ``(N, m)`` float32 → logits ``(N, K)``; eval mode, parameters frozen
        (``requires_grad = False``); ``module.meta`` holds the ONNX sidecar (``{}`` if none).
    input_shape
        Per-sample input shape from the graph (e.g. ``(1, 8, 8)``); the flat vector is its row-major view.
    n_classes, outputs_probabilities, output_kind
        Output size; whether the graph outputs probabilities and how logits are recovered.
    parity, parity_scaled, parity_points, parity_tolerance
        ``max |torch − ort|``, ``max |torch − ort| / max(1, |ort|)`` (the refused quantity), the number of
        points and the tolerance.
    onnx_path, sha256
        The ONNX file to hash and replay on, and its SHA-256.
    encodable, encode_error, ir_parity
        Whether :func:`encoders.network.load_onnx` builds the verifiable IR; its one-line refusal
        otherwise; ``max |IR − ort| / max(1, |ort|)`` when encodable and the output is logits.
    source, source_kind, converter
        What was given (path or module class), ``"onnx"``, ``"torchscript"``, ``"checkpoint"`` or
        ``"module"``, and ``"onnx-interpreter"`` or ``"torch-module"`` (what runs in ``module``).
    """

    module: TeacherLogits
    input_shape: tuple[int, ...]
    n_classes: int
    outputs_probabilities: bool
    output_kind: str
    parity: float
    parity_scaled: float
    parity_points: int
    parity_tolerance: float
    onnx_path: Path
    sha256: str
    encodable: bool
    encode_error: str | None
    ir_parity: float | None
    source: str
    source_kind: str
    converter: str
    meta: dict[str, Any] = field(default_factory=dict)

    @property
    def n_inputs(self) -> int:
        return int(np.prod(self.input_shape))

    def logits(self, X: np.ndarray, batch_size: int = 1024, float64: bool = False) -> np.ndarray:
        """Logits for flat inputs ``X`` ``(n, m)`` as a float64 array: the float32 forward, or with
        ``float64=True`` the forward of a float64 copy of the module (no gradient)."""
        if float64:
            return _run(copy.deepcopy(self.module).double(), X, batch_size, dtype=np.float64)
        return _run(self.module, X, batch_size)

    def probabilities(self, X: np.ndarray, float64: bool = False) -> np.ndarray:
        """``softmax`` of :meth:`logits` (float64 arithmetic)."""
        z = self.logits(X, float64=float64)
        z = z - z.max(axis=1, keepdims=True)
        e = np.exp(z)
        return e / e.sum(axis=1, keepdims=True)

    def check_data(self, data: Any, what: str = "--teacher") -> None:
        """Raise :class:`ConfigError` unless the teacher takes ``data.n_features`` inputs and has
        ``data.n_classes`` outputs (and, when the data carries one, the same image shape)."""
        shape = getattr(data, "image_shape", None)
        if self.n_inputs != int(data.n_features) or self.n_classes != int(data.n_classes):
            raise ConfigError(
                f"{what} {self.source}: takes {self.n_inputs} inputs and gives {self.n_classes} outputs, but "
                f"{data.name} has {data.n_features} features and {data.n_classes} classes"
            )
        if shape and len(self.input_shape) > 1 and tuple(shape) != tuple(self.input_shape):
            raise ConfigError(
                f"{what} {self.source}: expects inputs of shape {tuple(self.input_shape)}, but {data.name}'s "
                f"images are {tuple(shape)}"
            )

    def network(self) -> Any:
        """The verifiable IR (:class:`encoders.network.Network`), or ``None`` when not encodable."""
        if not self.encodable:
            return None
        from encoders.network import load_onnx

        return load_onnx(self.onnx_path)

    def summary(self) -> dict[str, Any]:
        """A JSON-able description (for certificates and reports)."""
        return {
            "source": self.source,
            "source_kind": self.source_kind,
            "onnx_file": str(self.onnx_path),
            "sha256": self.sha256,
            "input_shape": list(self.input_shape),
            "n_inputs": self.n_inputs,
            "n_classes": self.n_classes,
            "outputs_probabilities": self.outputs_probabilities,
            "output_kind": self.output_kind,
            "converter": self.converter,
            "parity": {
                "points": self.parity_points,
                "max_abs_diff_vs_onnxruntime": self.parity,
                "max_scaled_diff_vs_onnxruntime": self.parity_scaled,
                "tolerance": self.parity_tolerance,
                "rule": "|torch - onnxruntime| <= tolerance * max(1, |onnxruntime|) at every output",
            },
            "encodable": self.encodable,
            "encode_error": self.encode_error,
            "ir_parity": self.ir_parity,
        }


def _run(
    module: nn.Module, X: np.ndarray, batch_size: int = 1024, raw: bool = False, dtype: Any = np.float32
) -> np.ndarray:
    X = np.asarray(X, dtype=dtype)
    X = X.reshape(len(X), -1)
    outs = []
    with torch.no_grad():
        for i in range(0, len(X), batch_size):
            xb = torch.from_numpy(X[i : i + batch_size])
            y = module.raw(xb) if raw else module(xb)  # type: ignore[operator]
            outs.append(y.double().numpy())
    return np.concatenate(outs) if outs else np.zeros((0, 0))


# --------------------------------------------------------------------------------------------------
# reading sources
# --------------------------------------------------------------------------------------------------
def _read_onnx(path: Path) -> Any:
    import onnx

    if not path.is_file():
        raise ModelFormatError(f"{path}: no such file")
    data = path.read_bytes()
    if not data:
        raise ModelFormatError(f"{path}: empty file, expected an ONNX model")
    try:
        model = onnx.load_from_string(data)
    except Exception as exc:  # protobuf raises DecodeError and friends
        first = (str(exc).splitlines() or [type(exc).__name__])[0][:160]
        raise ModelFormatError(f"{path}: not a valid ONNX file (could not parse protobuf: {first})") from None
    if not model.graph.node:
        raise ModelFormatError(f"{path}: not a valid ONNX model (the graph has no nodes)")
    try:
        onnx.checker.check_model(model)
    except Exception as exc:
        first = (str(exc).splitlines() or [type(exc).__name__])[0][:200]
        raise ModelFormatError(f"{path}: invalid ONNX model ({first})") from None
    return model


def _dims(vi: Any) -> list[int | str]:
    out: list[int | str] = []
    for d in vi.type.tensor_type.shape.dim:
        out.append(int(d.dim_value) if d.HasField("dim_value") and d.dim_value > 0 else (d.dim_param or "?"))
    return out


def _input_layout(
    model: Any, path: Path, input_shape: tuple[int, ...] | None
) -> tuple[tuple[int, ...], bool, tuple[int, ...]]:
    """``(input_shape, per_sample, sample_shape)`` from the graph input (the first dimension of a rank ≥ 2
    input is the batch: dynamic → batched; 1 → per sample under vmap; a rank-1 input has no batch)."""
    try:
        inp = graph_input(model)
    except UnsupportedModelError as exc:
        raise UnsupportedModelError(f"{path}: {exc}") from None
    dims = _dims(inp)
    if not dims:
        raise ModelFormatError(f"{path}: input {inp.name!r} has no shape information")
    if len(dims) == 1:
        feat, per_sample = dims, True
    else:
        feat = dims[1:]
        b = dims[0]
        if isinstance(b, int) and b != 1:
            raise UnsupportedModelError(f"{path}: input batch dimension must be 1 or dynamic, found {b}")
        per_sample = isinstance(b, int)
    if any(not isinstance(d, int) for d in feat):
        if input_shape is None:
            raise ModelFormatError(
                f"{path}: input {inp.name!r} has dynamic non-batch dimensions {dims}; pass input_shape"
            )
        if len(input_shape) != len(feat):
            raise ConfigError(
                f"input_shape {tuple(input_shape)} does not match the rank of {path}'s input {dims}"
            )
        feat = list(input_shape)
    shape = tuple(int(d) for d in feat)
    if input_shape is not None and int(np.prod(input_shape)) != int(np.prod(shape)):
        raise ConfigError(f"input_shape {tuple(input_shape)} does not match {path}'s input {dims}")
    sample = (1, *shape) if len(dims) > 1 else shape
    return shape, per_sample, sample


def _terminal_softmax(model: Any) -> tuple[str | None, str | None]:
    """``(op_type, node name)`` of the node that really produces the output (walking back through
    shape-only nodes), if it is ``Softmax`` or ``LogSoftmax``."""
    producer = {o: (i, n) for i, n in enumerate(model.graph.node) for o in n.output}
    name = model.graph.output[0].name
    while name in producer:
        i, n = producer[name]
        if n.op_type in ("Softmax", "LogSoftmax"):
            return n.op_type, n.name or f"{n.op_type}#{i}"
        if n.op_type not in PASSTHROUGH_OPS:
            return None, None
        name = n.input[0]
    return None, None


def _sidecar(path: Path) -> dict[str, Any]:
    side = Path(str(path) + ".json")
    if not side.is_file():
        return {}
    try:
        meta = json.loads(side.read_text())
    except (OSError, ValueError):
        return {}
    if meta.get("sha256") and meta["sha256"] != file_sha256(path):
        raise ModelFormatError(f"{side}: SHA-256 does not match {path.name} (stale or tampered model)")
    return meta if isinstance(meta, dict) else {}


def _module_input_shape(module: nn.Module, given: tuple[int, ...] | None) -> tuple[int, ...]:
    if given is not None:
        return tuple(int(d) for d in given)
    for attr in ("image_shape", "input_shape"):
        v = getattr(module, attr, None)
        if isinstance(v, tuple | list) and v and all(isinstance(d, int) for d in v):
            return tuple(int(d) for d in v)
    try:
        from .models import model_widths

        return (int(model_widths(module)[0]),)
    except (InputError, ValueError):
        pass
    raise ConfigError(
        f"teacher {type(module).__name__}: cannot tell its input shape; pass input_shape, e.g. (1, 8, 8)"
    )


def _native(module: nn.Module) -> nn.Module:
    """The module that takes the native (image-shaped) input: a zoo model's ``native`` body, else itself."""
    body = getattr(module, "native", None)
    return body if isinstance(body, nn.Module) else module


def export_module_onnx(module: nn.Module, path: Path, input_shape: tuple[int, ...]) -> Path:
    """Export ``module`` (taking ``(N, *input_shape)``) to ONNX at ``path`` (input ``"input"``, output
    ``"output"``, dynamic batch, opset 17, TorchScript exporter), atomically."""
    from .export import atomic_write_bytes

    buf = io.BytesIO()
    was = [(m, m.training) for m in module.modules()]
    module.eval()
    try:
        with warnings.catch_warnings():
            warnings.simplefilter("ignore")
            torch.onnx.export(
                module,
                (torch.zeros(2, *input_shape),),
                buf,
                input_names=["input"],
                output_names=["output"],
                dynamic_axes={"input": {0: "batch"}, "output": {0: "batch"}},
                opset_version=_EXPORT_OPSET,
                dynamo=False,
                training=torch.onnx.TrainingMode.PRESERVE,  # eval mode, BatchNorm kept as a node
            )
    except Exception as exc:  # the exporter raises many kinds
        first = (str(exc).splitlines() or [type(exc).__name__])[0][:200]
        raise UnsupportedModelError(
            f"teacher {type(module).__name__}: ONNX export failed ({first})"
        ) from None
    finally:
        for m, t in was:
            m.training = t
    atomic_write_bytes(path, buf.getvalue())
    return path


def _export(module: nn.Module, path: Path, shape: tuple[int, ...], meta: dict[str, Any], domain: Any) -> Path:
    """A Linear/ReLU MLP (anything :func:`distill.models.affine_layers` reads, e.g. an MLP checkpoint or
    the sigmoid teacher) goes through :func:`distill.export.export_onnx` — a plain Gemm/Relu graph the
    network IR encodes, with its sidecar; any other module through the TorchScript exporter."""
    from .export import export_onnx
    from .models import affine_layers

    try:
        affine_layers(module)
    except InputError:
        return export_module_onnx(_native(module), path, shape)
    m = dict(meta)
    if domain is not None and "input_domain" not in m:
        n = int(np.prod(shape))
        lo = np.broadcast_to(np.asarray(domain[0], np.float64).reshape(-1), (n,))
        hi = np.broadcast_to(np.asarray(domain[1], np.float64).reshape(-1), (n,))
        m["input_domain"] = {"lo": lo.tolist(), "hi": hi.tolist()}
    export_onnx(module, path, int(np.prod(shape)), m)
    return path


# --------------------------------------------------------------------------------------------------
# onnxruntime
# --------------------------------------------------------------------------------------------------
def _ort_raw(
    path: Path, X: np.ndarray, sample_shape: tuple[int, ...], per_sample: bool, f64: bool
) -> np.ndarray:
    import onnxruntime as ort

    opts = ort.SessionOptions()
    opts.intra_op_num_threads = 1
    opts.inter_op_num_threads = 1
    opts.log_severity_level = 3
    try:
        sess = ort.InferenceSession(str(path), sess_options=opts, providers=["CPUExecutionProvider"])
    except Exception as exc:
        first = (str(exc).splitlines() or [type(exc).__name__])[0][:200]
        raise ModelFormatError(f"{path}: onnxruntime cannot load it ({first})") from None
    inputs = sess.get_inputs()
    if len(inputs) != 1:
        raise UnsupportedModelError(f"{path}: onnxruntime sees {len(inputs)} inputs, expected one")
    name = inputs[0].name
    Xd = np.asarray(X, dtype=np.float64 if f64 else np.float32)
    outs = []
    try:
        if per_sample:
            for row in Xd:
                outs.append(np.asarray(sess.run(None, {name: row.reshape(sample_shape)})[0]).reshape(1, -1))
        else:
            for i in range(0, len(Xd), 256):
                xb = Xd[i : i + 256]
                y = np.asarray(sess.run(None, {name: xb.reshape(len(xb), *sample_shape[1:])})[0])
                outs.append(y.reshape(len(xb), -1))
    except Exception as exc:
        first = (str(exc).splitlines() or [type(exc).__name__])[0][:200]
        raise ModelFormatError(f"{path}: onnxruntime failed to run it ({first})") from None
    return np.concatenate(outs).astype(np.float64)


def _parity_points(m: int, domain: Any, X: np.ndarray | None, points: int, seed: int) -> np.ndarray:
    if domain is None:
        lo, hi = np.zeros(m), np.ones(m)
    else:
        lo = np.broadcast_to(np.asarray(domain[0], np.float64).reshape(-1), (m,))
        hi = np.broadcast_to(np.asarray(domain[1], np.float64).reshape(-1), (m,))
    rng = np.random.default_rng(int(seed))
    P = lo + (hi - lo) * rng.random((int(points), m))
    if X is not None and len(X):
        Xf = np.asarray(X, np.float64).reshape(len(X), -1)
        if Xf.shape[1] != m:
            raise ConfigError(f"parity data has {Xf.shape[1]} features, the teacher takes {m}")
        P = np.concatenate([P, Xf[: min(len(Xf), 1000)]])
    return P.astype(np.float32)


def _is_distribution(Y: np.ndarray) -> bool:
    return bool(
        Y.shape[1] >= 2
        and np.all(np.isfinite(Y))
        and np.all(Y >= -PROBABILITY_TOLERANCE)
        and np.all(Y <= 1 + PROBABILITY_TOLERANCE)
        and np.all(np.abs(Y.sum(axis=1) - 1.0) <= PROBABILITY_TOLERANCE)
    )


# --------------------------------------------------------------------------------------------------
# load_teacher
# --------------------------------------------------------------------------------------------------
def load_teacher(
    source: str | Path | nn.Module,
    *,
    input_shape: tuple[int, ...] | None = None,
    domain: tuple[Any, Any] | None = None,
    X: np.ndarray | None = None,
    export_path: str | Path | None = None,
    points: int = PARITY_POINTS,
    tolerance: float = PARITY_TOLERANCE,
    seed: int = 0,
    check_encodable: bool = True,
) -> Teacher:
    """Import a teacher from an ONNX file, a TorchScript file, a distillcert ``.pt`` checkpoint or an
    ``nn.Module`` (module docstring).

    Parameters
    ----------
    input_shape
        Per-sample input shape; read from the ONNX graph when it is static (must then agree), required
        for a module/TorchScript teacher without an ``image_shape``/``input_shape`` attribute.
    domain
        ``(lo, hi)`` input box of the parity points (default: the ONNX sidecar's ``input_domain``, else
        ``[0, 1]^m``).
    X
        Optional data points added to the parity points (up to 1000).
    export_path
        Where a TorchScript/module/checkpoint teacher is exported to ONNX (default: a new temporary
        folder).  Ignored for ONNX sources (their own file is used).
    points, tolerance
        Number of uniform parity points (at least 1000) and the scaled tolerance.

    Raises
    ------
    ModelFormatError, UnsupportedModelError, ConfigError
        One line naming the file and the problem (every offending node for unsupported graphs), parity
        above tolerance, fewer than two outputs.
    """
    if int(points) < PARITY_POINTS:
        raise ConfigError(f"parity points {points}: at least {PARITY_POINTS} are required")
    if not (tolerance > 0 and np.isfinite(tolerance)):
        raise ConfigError(f"parity tolerance {tolerance}: must be positive")
    module: nn.Module | None = None
    meta: dict[str, Any] = {}
    if isinstance(source, nn.Module):
        module, source_kind = (
            source,
            ("torchscript" if isinstance(source, torch.jit.ScriptModule) else "module"),
        )
        label = type(source).__name__
    else:
        path = Path(source)
        label = str(path)
        if not path.is_file():
            raise ModelFormatError(f"{path}: no such teacher file")
        if path.suffix.lower() == ".onnx":
            source_kind = "onnx"
        else:
            module, meta, source_kind = _load_torch_file(path)
    if module is not None:
        shape = _module_input_shape(module, input_shape)
        if export_path is None:
            export_path = Path(tempfile.mkdtemp(prefix="distillcert-teacher-")) / "teacher.onnx"
        if not meta:
            meta = dict(getattr(module, "meta", {}) or {})
        onnx_path = _export(module, Path(export_path), shape, meta, domain)
        meta = _sidecar(onnx_path) or meta  # an MLP export writes a sidecar (domain, classes, checks)
        input_shape = shape
    else:
        onnx_path = Path(source)  # type: ignore[arg-type]
        meta = _sidecar(onnx_path)
    if domain is None and isinstance(meta.get("input_domain"), dict):
        dom = meta["input_domain"]
        if "lo" in dom and "hi" in dom:
            domain = (np.asarray(dom["lo"], np.float64), np.asarray(dom["hi"], np.float64))

    model = _read_onnx(onnx_path)
    shape, per_sample, sample_shape = _input_layout(model, onnx_path, input_shape)
    f64 = graph_input(model).type.tensor_type.elem_type == _ONNX_FLOAT64
    converter = "onnx-interpreter"
    try:
        graph: nn.Module = OnnxModule(model, str(onnx_path), per_sample=per_sample, sample_shape=sample_shape)
    except UnsupportedModelError:
        if module is None:
            raise
        graph, converter = _native(module), "torch-module"  # the exporter used ops we do not interpret
    op, node = _terminal_softmax(model)
    m = int(np.prod(shape))
    P = _parity_points(m, domain, X, points, seed)
    Y_ort = _ort_raw(onnx_path, P, sample_shape, per_sample, f64)
    probs = _is_distribution(Y_ort)
    if op == "Softmax" and not probs:
        raise UnsupportedModelError(
            f"{onnx_path}: ends in Softmax node {node!r} but its outputs are not per-sample probability "
            "distributions (softmax over an axis other than the classes?)",
            [("Softmax", node or "")],
        )
    if not probs:
        kind = "logits"
    elif op == "Softmax" and converter == "onnx-interpreter":
        kind = "softmax-stripped"
    else:
        kind = "log-probabilities"
    wrapper = TeacherLogits(graph, shape, kind, skip=node if kind == "softmax-stripped" else None)
    wrapper.eval()
    for p in wrapper.parameters():
        p.requires_grad_(False)
    Y_t = _run(wrapper, P, raw=True)
    if Y_t.shape != Y_ort.shape:
        raise ModelFormatError(
            f"{onnx_path}: torch gives outputs of shape {Y_t.shape}, onnxruntime {Y_ort.shape}"
        )
    diff = np.abs(Y_t - Y_ort)
    parity = float(diff.max()) if diff.size else 0.0
    scaled = float((diff / np.maximum(1.0, np.abs(Y_ort))).max()) if diff.size else 0.0
    if not (np.isfinite(scaled) and scaled <= tolerance):
        raise ModelFormatError(
            f"{onnx_path}: the torch conversion differs from onnxruntime by {parity:.3g} "
            f"(scaled {scaled:.3g} > tolerance {tolerance:g}) on {len(P)} points; refusing this teacher"
        )
    n_classes = int(Y_ort.shape[1])
    if n_classes < 2:
        raise UnsupportedModelError(
            f"{onnx_path}: the teacher has {n_classes} output(s); need at least 2 classes"
        )
    wrapper.n_classes = n_classes
    wrapper.meta = dict(meta)
    encodable, why, ir_par = False, "not checked", None
    if check_encodable:
        encodable, why, ir_par = _encodable(onnx_path, P, Y_ort, kind)
    return Teacher(
        module=wrapper,
        input_shape=shape,
        n_classes=n_classes,
        outputs_probabilities=probs,
        output_kind=kind,
        parity=parity,
        parity_scaled=scaled,
        parity_points=int(len(P)),
        parity_tolerance=float(tolerance),
        onnx_path=onnx_path,
        sha256=file_sha256(onnx_path),
        encodable=encodable,
        encode_error=why,
        ir_parity=ir_par,
        source=label,
        source_kind=source_kind,
        converter=converter,
        meta=dict(meta),
    )


def _encodable(
    path: Path, P: np.ndarray, Y_ort: np.ndarray, kind: str
) -> tuple[bool, str | None, float | None]:
    """Try the verifiable IR; an IR that disagrees with onnxruntime counts as not encodable."""
    from encoders.network import load_onnx

    if kind != "logits":
        return False, "the graph outputs probabilities (Softmax is not encodable)", None
    try:
        net = load_onnx(path)
    except InputError as exc:
        return False, str(exc).splitlines()[0][:300], None
    except Exception as exc:  # noqa: BLE001 - any failure of the IR means "not encodable", never a crash
        return False, f"{type(exc).__name__}: {exc}"[:300], None
    ir = net.evaluate(P.astype(np.float64))
    if ir.shape != Y_ort.shape:
        return False, f"IR output shape {ir.shape} differs from onnxruntime's {Y_ort.shape}", None
    d = float((np.abs(ir - Y_ort) / np.maximum(1.0, np.abs(Y_ort))).max())
    if not (np.isfinite(d) and d <= PARITY_TOLERANCE):
        return False, f"IR differs from onnxruntime by {d:.3g} (scaled)", d
    return True, None, d


def _load_torch_file(path: Path) -> tuple[nn.Module, dict[str, Any], str]:
    """A distillcert checkpoint (``.pt`` dict) or a TorchScript archive."""
    try:
        with warnings.catch_warnings():
            warnings.simplefilter("ignore")  # torch warns when the file is a TorchScript archive
            obj = torch.load(path, map_location="cpu", weights_only=True)
    except Exception:  # noqa: BLE001 - not a plain checkpoint: try TorchScript below
        obj = None
    if isinstance(obj, dict) and "format" in obj:
        from .export import load_model

        model = load_model(path)
        return model, dict(getattr(model, "meta", {}) or {}), "checkpoint"
    try:
        with warnings.catch_warnings():
            warnings.simplefilter("ignore")  # torch.jit.load is deprecated in favour of torch.export
            ts = torch.jit.load(str(path), map_location="cpu")
    except Exception as exc:  # noqa: BLE001
        first = (str(exc).splitlines() or [type(exc).__name__])[0][:160]
        raise ModelFormatError(
            f"{path}: neither ONNX, a distillcert checkpoint nor a TorchScript file ({first})"
        ) from None
    ts.eval()
    return ts, {}, "torchscript"


def load_teacher_model(path: str | Path) -> nn.Module:
    """A model file as a torch module mapping flat inputs to logits, whatever its architecture.

    :func:`distill.export.load_model` first (checkpoints; ONNX graphs the network IR collapses to an
    MLP, rebuilt as ``nn.Sequential``); an ONNX graph the IR refuses is imported with
    :func:`load_teacher` (its parity-checked logits module, ``module.meta`` = sidecar), and so is a torch
    file that is not a distillcert checkpoint (a TorchScript archive).
    """
    from .export import load_model

    path = Path(path)
    try:
        return load_model(path)
    except UnsupportedModelError:
        if path.suffix.lower() != ".onnx":
            raise
        return load_teacher(path).module
    except ModelFormatError:
        if not path.is_file() or path.suffix.lower() == ".onnx":
            raise
        return load_teacher(path).module  # not a distillcert checkpoint: a TorchScript archive, say
