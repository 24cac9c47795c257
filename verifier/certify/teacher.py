r"""The certifier's view of a teacher: any ONNX graph onnxruntime runs, a TorchScript file, a distillcert
checkpoint (imported by :func:`distill.teacher.load_teacher`), staged as ``teacher.onnx`` in the output
folder.

* **Evaluated** (labels, confidence, the margins of the lift) by :func:`teacher_logits`: the verifiable IR
  in float64 when it can be built (:func:`encoders.network.load_onnx`), else onnxruntime on the ONNX file.
  A graph whose output is already a softmax gives probabilities ``p``; its logits are then taken as
  ``log max(p, tiny)`` — ``softmax(log p) = p`` because the rows sum to one, so the class, the confidence
  and every margin ``log(p_c/p_j)`` are the teacher's own (only classes whose probability underflows to 0
  are clamped, which *lowers* their margin's estimate only where ``p_j`` is below ``1e-308``).  The
  checker (:mod:`.check`) evaluates the teacher with the same function.
* **Differentiated and attacked** through ``model`` (torch; exact gradients of the graph, softmax
  stripped), whose parity with onnxruntime :func:`~distill.teacher.load_teacher` checks on ≥ 1000 points.
* **Encoded** only for the lift audit (:mod:`.audit`), when ``net`` is not ``None``; a teacher that cannot
  be encoded is "not directly checkable" and relies on PGD.
* Counterexamples are replayed on onnxruntime on ``file`` (:class:`OnnxFile` stands in for the IR there).
"""

from __future__ import annotations

import shutil
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np

from encoders.errors import InputError, ModelFormatError
from encoders.network import file_sha256, load_onnx, ort_evaluate

from .context import RunContext

__all__ = ["CertTeacher", "OnnxFile", "ir_or_none", "load_cert_teacher", "teacher_logits"]

_TINY = np.finfo(np.float64).tiny


@dataclass(frozen=True)
class OnnxFile:
    """An ONNX file evaluated by onnxruntime (float64 outputs): what :func:`verifier.replay.replay` and the
    PGD screen need of a network (``path``, ``evaluate``)."""

    path: str

    def evaluate(self, X: np.ndarray) -> np.ndarray:
        return np.atleast_2d(np.asarray(ort_evaluate(self.path, np.asarray(X, np.float64)), np.float64))


def ir_or_none(path: Path) -> Any:
    """The verifiable IR of an ONNX file, or ``None`` when it cannot be built."""
    try:
        return load_onnx(path)
    except InputError:
        return None
    except Exception:  # noqa: BLE001 - any failure of the IR means "not encodable", never a crash
        return None


def teacher_logits(path: Path, net: Any, probabilities: bool, X: np.ndarray) -> np.ndarray:
    """The teacher's logits on ``X`` (module docstring): ``net.evaluate`` (float64 IR) when ``net`` is given,
    else onnxruntime on ``path``, with ``log max(p, tiny)`` when the graph outputs probabilities."""
    if net is not None:
        return np.asarray(net.evaluate(np.asarray(X, np.float64)), np.float64)
    y = OnnxFile(str(path)).evaluate(X)
    return np.log(np.maximum(y, _TINY)) if probabilities else y


@dataclass(frozen=True)
class CertTeacher:
    """A staged teacher: ``file`` (ONNX in the output folder), the user's ``source``, ``sha256``, torch
    ``model`` (flat inputs → logits), the IR ``net`` (``None``: not directly checkable), whether the graph
    outputs ``probabilities``, and :meth:`distill.teacher.Teacher.summary` as ``info``."""

    file: Path
    source: str
    sha256: str
    model: Any
    net: Any
    probabilities: bool
    info: dict[str, Any]

    @property
    def replay_net(self) -> Any:
        """What replay runs: the IR (it carries the ONNX path) or the bare file."""
        return self.net if self.net is not None else OnnxFile(str(self.file))

    def logits(self, X: np.ndarray) -> np.ndarray:
        return teacher_logits(self.file, self.net, self.probabilities, X)


def _stage(src: Path, ctx: RunContext) -> Path:
    """``out/teacher.onnx``: the ONNX file copied, or a checkpoint / TorchScript teacher exported once (kept
    while the source's SHA-256, recorded in the sidecar, is unchanged)."""
    import json

    dst = ctx.out / "teacher.onnx"
    side = dst.with_name(dst.name + ".json")
    if src.suffix.lower() == ".onnx":
        stale = not dst.exists() or file_sha256(dst) != file_sha256(src)
        if stale and dst.resolve() != src.resolve():
            shutil.copyfile(src, dst)
            src_side = src.with_name(src.name + ".json")
            if src_side.is_file():
                shutil.copyfile(src_side, side)
            elif side.exists():
                side.unlink()
        return dst
    sha = file_sha256(src)
    if dst.exists() and side.is_file():
        try:
            if json.loads(side.read_text()).get("source_sha256") == sha:
                return dst
        except (OSError, ValueError):
            pass
    data = ctx.data
    meta = {
        "dataset": data.name,
        "input_domain": {"lo": data.domain_lo.tolist(), "hi": data.domain_hi.tolist()},
        "source_sha256": sha,
    }
    try:  # a distillcert MLP checkpoint: the checked exporter of distill.export
        from distill.export import export_onnx, load_model

        model = load_model(src)
        meta = {**dict(getattr(model, "meta", {}) or {}), **meta}
        export_onnx(model, dst, data.n_features, meta)
        return dst
    except Exception:  # noqa: BLE001 - any other torch teacher goes through distill.teacher below
        pass
    from distill.teacher import load_teacher

    load_teacher(src, export_path=dst, domain=ctx.domain, input_shape=getattr(data, "image_shape", None))
    side.write_text(json.dumps(meta))
    return dst


def load_cert_teacher(teacher_path: Path, ctx: RunContext) -> CertTeacher:
    """Stage and import the teacher (module docstring); :class:`~encoders.errors.ModelFormatError` when its
    input or output size does not fit the data set (one line naming the file)."""
    from distill.teacher import load_teacher

    if not teacher_path.is_file():
        raise ModelFormatError(f"--teacher {teacher_path}: no such file")
    data = ctx.data
    dst = _stage(teacher_path, ctx)
    t = load_teacher(dst, domain=ctx.domain, X=np.asarray(data.X_train[:1000], np.float64))
    m = int(data.n_features)
    if t.n_inputs != m or t.n_classes != data.n_classes:
        raise ModelFormatError(
            f"--teacher {teacher_path}: takes {t.n_inputs} inputs and gives {t.n_classes} outputs, but "
            f"{data.name} has {m} features and {data.n_classes} classes"
        )
    net = ir_or_none(dst) if t.encodable else None
    model: Any = t.module
    if net is not None:  # an encodable graph: the affine/ReLU rebuild (fast, casts to float64 for rho)
        from distill.export import load_model

        model = load_model(dst)
    info = t.summary()
    info["onnx_file"] = dst.name
    return CertTeacher(
        dst, str(teacher_path), file_sha256(dst), model, net, bool(t.outputs_probabilities), info
    )
