"""Checked ONNX export, JSON sidecars, and model checkpoints.

ONNX graph
----------
A Linear/ReLU MLP (anything :func:`distill.models.affine_layers` reads) is written directly with
``onnx.helper`` as ``Gemm(transB=1) → Relu → … → Gemm`` with float32 initialisers, input ``"input"``
of shape ``[batch, n_features]`` and output ``"logits"`` of shape ``[batch, n_classes]`` (``batch`` a
dynamic dimension), opset 17, IR version 8 — a graph every ONNX consumer of the verifier stack
understands.  Any other module falls back to ``torch.onnx.export`` (TorchScript exporter, same names
and dynamic batch).

Checks (before the file is moved into place)
--------------------------------------------
1. onnxruntime vs the float32 torch model on 1000 points drawn uniformly from the input domain:
   ``max |ort − torch| ≤ 1e-5`` (absolute), otherwise :class:`DistillCertError`.
2. ``encoders.network.load_onnx`` imports the file, and its float64 ``evaluate`` agrees with a float64
   copy of the torch model to ``1e-8 · max(1, |y|)`` (or with onnxruntime to ``1e-4 · max(1, |y|)`` for
   a model that cannot be copied to float64).

All files are written atomically (temporary file in the same folder + ``os.replace``).
The sidecar ``<path>.json`` records the architecture, input domain, normalisation, class names, data
set, training configuration, the check results and the SHA-256 of the ONNX bytes.

Checkpoints
-----------
``.pt`` files hold a plain dict (loadable with ``torch.load(weights_only=True)``):
``{"format": "distillcert-model/1", "kind": "mlp", "layers": [[W, b], ...], "meta": {...}}`` or
``{"format": ..., "kind": "sigmoid", "a": float, "dim": int, "meta": {...}}`` or, for a zoo teacher
(:class:`distill.models.ImageClassifier`),
``{"format": ..., "kind": "zoo", "arch": str, "image_shape": [C, H, W], "n_classes": int,
"state_dict": {...}, "meta": {...}}``.

Convolutional (zoo) models
--------------------------
An :class:`~distill.models.ImageClassifier` is exported through its image-shaped ``native`` body
(input ``[batch, C, H, W]``, BatchNorm kept as nodes), checked against onnxruntime at
``|ort − torch| ≤ TORCH_EXPORT_TOLERANCE · max(1, |torch|)`` (float32 convolutions sum in different
orders), and, when the network IR cannot represent it (MaxPool, Tanh, residual Add, …), recorded as
``"encodable": false`` with the IR's reason instead of failing: a teacher is never encoded.
"""

from __future__ import annotations

import copy
import json
import os
import secrets
import warnings
from pathlib import Path
from typing import Any

import numpy as np
import torch
from torch import nn

from encoders.errors import DistillCertError, ModelFormatError, UnsupportedModelError
from encoders.network import file_sha256, load_onnx

from .models import (
    ImageClassifier,
    SigmoidTeacher,
    affine_layers,
    eval_mode,
    format_arch,
    n_parameters,
    param_dtype,
    sequential_from_affines,
)

__all__ = [
    "export_onnx",
    "load_model",
    "read_meta",
    "save_checkpoint",
    "sidecar_path",
    "atomic_write_bytes",
    "EXPORT_TOLERANCE",
    "TORCH_EXPORT_TOLERANCE",
    "CHECK_POINTS",
    "OPSET",
]

EXPORT_TOLERANCE = 1e-5
TORCH_EXPORT_TOLERANCE = 1e-5
CHECK_POINTS = 1000
OPSET = 17
_CKPT_FORMAT = "distillcert-model/1"
_SIDECAR_FORMAT = "distillcert-onnx-sidecar/1"


def sidecar_path(path: str | Path) -> Path:
    """``model.onnx`` → ``model.onnx.json``."""
    return Path(str(path) + ".json")


def _temp_path(path: Path) -> Path:
    return path.with_name(f".{path.name}.{os.getpid()}.{secrets.token_hex(4)}.tmp")


def atomic_write_bytes(path: str | Path, data: bytes) -> None:
    """Write ``data`` to ``path`` via a temporary file in the same folder and ``os.replace``.

    The temporary file is created with ``open(..., "xb")`` so it gets the usual permissions (umask).
    """
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    tmp = _temp_path(path)
    try:
        with open(tmp, "xb") as fh:
            fh.write(data)
            fh.flush()
            os.fsync(fh.fileno())
        os.replace(tmp, path)
    except BaseException:
        if tmp.exists():
            tmp.unlink()
        raise


def _json_bytes(obj: Any) -> bytes:
    return (json.dumps(obj, indent=2, sort_keys=False, allow_nan=False) + "\n").encode()


# --------------------------------------------------------------------------------------------------
# checkpoints
# --------------------------------------------------------------------------------------------------
def save_checkpoint(model: nn.Module, path: str | Path, meta: dict[str, Any] | None = None) -> None:
    """Save an MLP or :class:`SigmoidTeacher` (plus JSON-able ``meta``) as a ``.pt`` dict, atomically."""
    meta = json.loads(json.dumps(meta or {}))  # JSON round trip: plain types only
    if isinstance(model, ImageClassifier):
        obj: dict[str, Any] = {
            "format": _CKPT_FORMAT,
            "kind": "zoo",
            "arch": model.arch,
            "image_shape": list(model.image_shape),
            "n_classes": model.n_classes,
            "state_dict": {k: v.detach().cpu().clone() for k, v in model.state_dict().items()},
            "meta": meta,
        }
    elif isinstance(model, SigmoidTeacher):
        obj = {
            "format": _CKPT_FORMAT,
            "kind": "sigmoid",
            "a": model.a,
            "dim": model.dim,
            "meta": meta,
        }
    else:
        layers = [
            [torch.from_numpy(W.astype(np.float32)), torch.from_numpy(b.astype(np.float32))]
            for W, b in affine_layers(model)
        ]
        obj = {"format": _CKPT_FORMAT, "kind": "mlp", "layers": layers, "meta": meta}
    import io

    buf = io.BytesIO()
    torch.save(obj, buf)
    atomic_write_bytes(path, buf.getvalue())


def _load_checkpoint(path: Path) -> tuple[nn.Module, dict[str, Any]]:
    try:
        obj = torch.load(path, map_location="cpu", weights_only=True)
    except Exception as exc:  # pickle/zip errors of every kind
        first = (str(exc).splitlines() or [type(exc).__name__])[0][:160]
        raise ModelFormatError(f"{path}: not a distillcert checkpoint ({first})") from None
    if not isinstance(obj, dict) or obj.get("format") != _CKPT_FORMAT:
        raise ModelFormatError(f"{path}: not a distillcert checkpoint (missing format tag {_CKPT_FORMAT!r})")
    meta = obj.get("meta") or {}
    kind = obj.get("kind")
    if kind == "sigmoid":
        return SigmoidTeacher(float(obj["a"]), int(obj["dim"])), meta
    if kind == "zoo":
        from .models import zoo_model

        try:
            zm = zoo_model(str(obj["arch"]), [int(d) for d in obj["image_shape"]], int(obj["n_classes"]))
            zm.load_state_dict(obj["state_dict"])
        except (KeyError, TypeError, ValueError, RuntimeError) as exc:
            first = (str(exc).splitlines() or [type(exc).__name__])[0][:160]
            raise ModelFormatError(f"{path}: malformed zoo checkpoint ({first})") from None
        return zm, meta
    if kind == "mlp":
        layers = obj.get("layers")
        try:
            aff = [(W.double().numpy(), b.double().numpy()) for W, b in layers]  # type: ignore[union-attr]
            for i in range(1, len(aff)):
                if aff[i][0].shape[1] != aff[i - 1][0].shape[0]:
                    raise ValueError("layer sizes do not chain")
            model = sequential_from_affines(aff)
        except (TypeError, ValueError, AttributeError) as exc:
            raise ModelFormatError(f"{path}: malformed layer list in checkpoint ({exc})") from None
        return model, meta
    raise ModelFormatError(f"{path}: unknown model kind {kind!r} in checkpoint")


def read_meta(path: str | Path) -> dict[str, Any]:
    """Metadata of a model file: the checkpoint's ``meta`` or the ONNX sidecar (``{}`` if none).

    Raises :class:`ModelFormatError` when an ONNX sidecar's SHA-256 does not match the file.
    """
    path = Path(path)
    if path.suffix.lower() == ".onnx":
        side = sidecar_path(path)
        if not side.is_file():
            return {}
        try:
            meta = json.loads(side.read_text())
        except (OSError, json.JSONDecodeError) as exc:
            raise ModelFormatError(f"{side}: unreadable sidecar ({exc})") from None
        if meta.get("sha256") and path.is_file() and meta["sha256"] != file_sha256(path):
            raise ModelFormatError(f"{side}: SHA-256 does not match {path.name} (stale or tampered model)")
        return meta
    return load_model(path).meta  # type: ignore[return-value]


def load_model(path: str | Path) -> nn.Module:
    """Load a ``.pt`` checkpoint or an ``.onnx`` file as a float32 torch module (eval mode).

    An ONNX file goes through :func:`encoders.network.load_onnx` (so every supported graph — Gemm,
    MatMul+Add, Conv, BatchNorm, Flatten, ... — collapses to affine layers) and is rebuilt as an
    ``nn.Sequential`` of ``Linear``/``ReLU`` that can be attacked and distilled from (a graph the IR
    cannot represent: :func:`distill.teacher.load_teacher_model`).  The returned
    module carries the metadata as ``module.meta`` (checkpoint ``meta`` or ONNX sidecar, else ``{}``).

    Raises
    ------
    ModelFormatError
        Missing file, unknown extension, unreadable or malformed content.
    UnsupportedModelError
        ONNX graphs the network IR cannot represent.
    """
    path = Path(path)
    if not path.is_file():
        raise ModelFormatError(f"{path}: no such model file")
    suffix = path.suffix.lower()
    if suffix in (".pt", ".pth"):
        model, meta = _load_checkpoint(path)
    elif suffix == ".onnx":
        net = load_onnx(path)
        model = sequential_from_affines([(a.W, a.b) for a in net.affines])
        meta = read_meta(path)
    else:
        raise ModelFormatError(f"{path}: unknown model file type {suffix or '(none)'}; expected .pt or .onnx")
    model.eval()
    model.meta = meta  # type: ignore[assignment]
    return model


# --------------------------------------------------------------------------------------------------
# ONNX export
# --------------------------------------------------------------------------------------------------
def _mlp_onnx_bytes(aff: list[tuple[np.ndarray, np.ndarray]], n_features: int) -> bytes:
    import onnx
    from onnx import TensorProto, helper, numpy_helper

    nodes, inits = [], []
    h = "input"
    for i, (W, b) in enumerate(aff):
        wn, bn = f"layer{i}.weight", f"layer{i}.bias"
        inits.append(numpy_helper.from_array(np.asarray(W, np.float32), wn))
        inits.append(numpy_helper.from_array(np.asarray(b, np.float32).reshape(-1), bn))
        last = i == len(aff) - 1
        z = "logits" if last else f"z{i}"
        nodes.append(helper.make_node("Gemm", [h, wn, bn], [z], name=f"gemm{i}", transB=1))
        if not last:
            h = f"h{i}"
            nodes.append(helper.make_node("Relu", [z], [h], name=f"relu{i}"))
    n_out = int(aff[-1][0].shape[0])
    graph = helper.make_graph(
        nodes,
        "distillcert_mlp",
        [helper.make_tensor_value_info("input", TensorProto.FLOAT, ["batch", int(n_features)])],
        [helper.make_tensor_value_info("logits", TensorProto.FLOAT, ["batch", n_out])],
        initializer=inits,
    )
    model = helper.make_model(
        graph, opset_imports=[helper.make_opsetid("", OPSET)], producer_name="distillcert"
    )
    model.ir_version = 8
    onnx.checker.check_model(model)
    return model.SerializeToString()


def _torch_onnx_bytes(model: nn.Module, sample_shape: tuple[int, ...]) -> bytes:
    """TorchScript-exporter ONNX of ``model`` on inputs ``(batch, *sample_shape)`` (eval mode, BatchNorm
    kept as nodes, dynamic batch)."""
    import io

    buf = io.BytesIO()
    with warnings.catch_warnings(), eval_mode(model):
        warnings.simplefilter("ignore")
        torch.onnx.export(
            model,
            (torch.zeros(2, *sample_shape),),
            buf,
            input_names=["input"],
            output_names=["logits"],
            dynamic_axes={"input": {0: "batch"}, "logits": {0: "batch"}},
            opset_version=OPSET,
            dynamo=False,
            training=torch.onnx.TrainingMode.PRESERVE,
        )
    return buf.getvalue()


def _domain_of(meta: dict[str, Any], n_features: int) -> tuple[np.ndarray, np.ndarray, str]:
    dom = meta.get("input_domain") or {}
    if "lo" in dom and "hi" in dom:
        lo = np.broadcast_to(np.asarray(dom["lo"], np.float64), (n_features,))
        hi = np.broadcast_to(np.asarray(dom["hi"], np.float64), (n_features,))
        if np.all(np.isfinite(lo)) and np.all(np.isfinite(hi)) and np.all(lo <= hi):
            return lo, hi, "input_domain"
    return np.zeros(n_features), np.ones(n_features), "default [0, 1] (no finite input_domain in meta)"


def export_onnx(
    model: nn.Module, path: str | Path, n_features: int, meta: dict[str, Any] | None = None, seed: int = 0
) -> dict[str, Any]:
    """Write ``model`` to ``path`` as checked ONNX plus the sidecar ``<path>.json``; return the sidecar.

    ``meta`` may carry ``dataset``, ``input_domain`` (``{"lo": [...], "hi": [...]}``),
    ``normalisation``, ``class_names``, ``training`` (any JSON-able extras are kept).  The 1000 check
    points are drawn uniformly from the input domain (``[0, 1]^n`` when none is given) with ``seed``.

    Raises
    ------
    DistillCertError
        onnxruntime disagrees with torch by more than ``EXPORT_TOLERANCE``, or the network IR
        disagrees (the file is then not written).
    """
    path = Path(path)
    meta = json.loads(json.dumps(meta or {}))
    n_features = int(n_features)
    try:
        aff = affine_layers(model)
    except UnsupportedModelError:
        aff = None
    sample_shape: tuple[int, ...] = (n_features,)
    if aff is not None:
        if aff[0][0].shape[1] != n_features:
            raise DistillCertError(
                f"{path}: model expects {aff[0][0].shape[1]} inputs, export asked for {n_features}"
            )
        data = _mlp_onnx_bytes(aff, n_features)
        widths = [n_features] + [int(W.shape[0]) for W, _ in aff]
        arch: dict[str, Any] = {
            "type": "mlp",
            "activation": "relu",
            "widths": widths,
            "spec": format_arch(widths),
        }
        if isinstance(model, SigmoidTeacher):
            arch.update({"type": "sigmoid_teacher", "a": model.a})
    elif isinstance(model, ImageClassifier):
        if model.n_inputs != n_features:
            raise DistillCertError(
                f"{path}: model expects {model.n_inputs} inputs, export asked for {n_features}"
            )
        data = _torch_onnx_bytes(model.native, model.image_shape)
        sample_shape = model.image_shape
        arch = {
            "type": "zoo",
            "preset": model.arch,
            "image_shape": list(model.image_shape),
            "n_parameters": n_parameters(model),
            "repr": repr(model)[:2000],
        }
    else:
        data = _torch_onnx_bytes(model, (n_features,))
        arch = {"type": "torch", "module": type(model).__name__, "repr": repr(model)[:2000]}

    lo, hi, dom_src = _domain_of(meta, n_features)
    rng = np.random.default_rng(int(seed))
    X = (lo + (hi - lo) * rng.random((CHECK_POINTS, n_features))).astype(np.float32)
    with eval_mode(model), torch.no_grad():
        ref32 = model(torch.from_numpy(X).to(param_dtype(model))).double().numpy()
    check: dict[str, Any] = {"points": CHECK_POINTS, "domain": dom_src, "seed": int(seed)}
    path.parent.mkdir(parents=True, exist_ok=True)
    tmp = _temp_path(path)
    try:
        with open(tmp, "xb") as fh:
            fh.write(data)
        check.update(_check_ort(path, tmp, X, ref32, sample_shape, exact=aff is not None))
        check.update(_check_ir(path, tmp, model, X, ref32, required=aff is not None))
        digest = file_sha256(tmp)
        os.replace(tmp, path)
    except BaseException:
        if tmp.exists():
            tmp.unlink()
        raise
    side = {
        "format": _SIDECAR_FORMAT,
        "onnx_file": path.name,
        "sha256": digest,
        "opset": OPSET,
        "input_name": "input",
        "output_name": "logits",
        "n_features": n_features,
        "input_shape": [int(d) for d in sample_shape],
        "n_classes": int(ref32.shape[1]),
        "architecture": arch,
        "dataset": meta.pop("dataset", None),
        "input_domain": meta.pop("input_domain", {"lo": lo.tolist(), "hi": hi.tolist()}),
        "normalisation": meta.pop("normalisation", {"model_input": "features as given (none)"}),
        "class_names": meta.pop("class_names", [str(i) for i in range(int(ref32.shape[1]))]),
        "training": meta.pop("training", None),
        "export_check": check,
        "created_by": "distillcert",
    }
    for k, v in meta.items():  # extras (n_features/n_classes already present are not overridden)
        side.setdefault(k, v)
    atomic_write_bytes(sidecar_path(path), _json_bytes(side))
    return side


def _check_ort(
    path: Path, tmp: Path, X: np.ndarray, ref32: np.ndarray, sample_shape: tuple[int, ...], exact: bool
) -> dict[str, Any]:
    """onnxruntime vs float32 torch: ``max |ort − torch| ≤ EXPORT_TOLERANCE`` for an MLP (the exact same
    arithmetic), ``≤ TORCH_EXPORT_TOLERANCE · max(1, |torch|)`` per output for exporter graphs (float32
    convolutions sum in another order)."""
    ort_out = _ort_run(str(tmp), X, sample_shape)
    diff = np.abs(ort_out - ref32)
    d_ort = float(diff.max()) if diff.size else 0.0
    if exact:
        d, tol, rule = d_ort, EXPORT_TOLERANCE, "absolute"
    else:
        d = float((diff / np.maximum(1.0, np.abs(ref32))).max()) if diff.size else 0.0
        tol, rule = TORCH_EXPORT_TOLERANCE, "scaled by max(1, |logit|)"
    if not (np.isfinite(d) and d <= tol):
        raise DistillCertError(
            f"{path}: ONNX export check failed: onnxruntime differs from torch by {d_ort:.3g} "
            f"({rule} {d:.3g} > {tol:g}) on {CHECK_POINTS} random domain points"
        )
    return {"max_abs_diff_onnxruntime_vs_torch": d_ort, "tolerance": tol, "tolerance_rule": rule}


def _check_ir(
    path: Path, tmp: Path, model: nn.Module, X: np.ndarray, ort_or_ref: np.ndarray, required: bool
) -> dict[str, Any]:
    """The network IR imports the file and its float64 ``evaluate`` agrees with a float64 torch copy to
    ``1e-8 · max(1, |y|)`` (or with the float32 outputs to ``1e-4 · max(1, |y|)`` when the model cannot
    be cast).  A model that need not be verifiable (``required`` false: a teacher) may be refused by
    the IR; that is recorded as ``encodable: false`` with the reason."""
    try:
        net = load_onnx(tmp)
    except UnsupportedModelError as exc:
        if required:
            raise
        return {"encodable": False, "encode_error": str(exc).splitlines()[0][:300], "network_ir": None}
    ir = net.evaluate(X.astype(np.float64))
    try:
        m64 = copy.deepcopy(model).double()
        with eval_mode(m64), torch.no_grad():
            ref64 = m64(torch.from_numpy(X.astype(np.float64))).numpy()
        tol, what = 1e-8, "float64 torch"
    except Exception:  # a module that cannot be copied/cast: compare with the float32 outputs instead
        ref64, tol, what = ort_or_ref, 1e-4, "float32 torch"
    d_ir = float(np.max(np.abs(ir - ref64) / np.maximum(1.0, np.abs(ref64))))
    if not np.isfinite(d_ir) or d_ir > tol:
        raise DistillCertError(
            f"{path}: ONNX export check failed: encoders.network IR differs from {what} by {d_ir:.3g} "
            f"(relative) > {tol:g}"
        )
    return {
        "max_rel_diff_network_ir_vs_" + what.replace(" ", "_"): d_ir,
        "encodable": True,
        "encode_error": None,
        "network_ir": {
            "n_inputs": net.n_inputs,
            "n_outputs": net.n_outputs,
            "hidden_sizes": net.hidden_sizes,
        },
    }


def _ort_run(path: str, X: np.ndarray, sample_shape: tuple[int, ...] | None = None) -> np.ndarray:
    import onnxruntime as ort

    opts = ort.SessionOptions()
    opts.intra_op_num_threads = 1
    opts.inter_op_num_threads = 1
    opts.log_severity_level = 3
    sess = ort.InferenceSession(path, sess_options=opts, providers=["CPUExecutionProvider"])
    Xs = X.astype(np.float32)
    if sample_shape is not None:
        Xs = Xs.reshape(len(Xs), *sample_shape)
    out = sess.run(["logits"], {"input": Xs})[0]
    return np.asarray(out, dtype=np.float64)
