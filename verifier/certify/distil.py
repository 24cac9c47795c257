r"""Stage 2, **distil**: stage the teacher's file in the output folder, and distil the student on the sample
(default KDIGA; seed 000 Algorithm 1 line 4: on ``(x_i, c_T(x_i))``), or reuse a student of the same key.
The student is exported to ONNX and everything downstream uses the exported weights.
"""

from __future__ import annotations

import shutil
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np

from encoders.errors import ModelFormatError
from encoders.network import Network, file_sha256, load_onnx

from ..journal import query_key
from .config import CertifyConfig
from .context import RunContext
from .sample import Sample, softmax

__all__ = ["Student", "distil", "stage_teacher"]


def stage_teacher(teacher_path: Path, out_dir: Path, data: Any) -> Path:
    """The teacher's ONNX file inside ``out_dir`` (copied, or exported from a ``.pt`` checkpoint)."""
    from distill.export import export_onnx, load_model

    dst = out_dir / "teacher.onnx"
    if not teacher_path.is_file():
        raise ModelFormatError(f"--teacher {teacher_path}: no such file")
    suffix = teacher_path.suffix.lower()
    if suffix == ".onnx":
        stale = not dst.exists() or file_sha256(dst) != file_sha256(teacher_path)
        if stale and dst.resolve() != teacher_path.resolve():
            shutil.copyfile(teacher_path, dst)
            side = teacher_path.with_name(teacher_path.name + ".json")
            if side.is_file():
                shutil.copyfile(side, dst.with_name(dst.name + ".json"))
        return dst
    if suffix in (".pt", ".pth"):
        model = load_model(teacher_path)
        meta = dict(getattr(model, "meta", {}) or {})
        src = file_sha256(teacher_path)
        side = dst.with_name(dst.name + ".json")
        if dst.exists() and side.is_file():
            import json

            try:
                if json.loads(side.read_text()).get("source_sha256") == src:
                    return dst
            except (OSError, ValueError):
                pass
        meta.setdefault("dataset", data.name)
        meta.setdefault("input_domain", {"lo": data.domain_lo.tolist(), "hi": data.domain_hi.tolist()})
        meta["source_sha256"] = src
        export_onnx(model, dst, data.n_features, meta)
        return dst
    raise ModelFormatError(f"--teacher {teacher_path}: expected an .onnx or .pt file")


@dataclass(frozen=True)
class Student:
    """The exported student: ``file``, its IR ``net``, torch ``model``, ``sha256``, the distillation
    ``summary``, and its logits ``z``, probabilities ``p`` and classes ``c`` on the sample."""

    file: Path
    net: Network
    model: Any
    sha256: str
    summary: dict[str, Any]
    z: np.ndarray
    p: np.ndarray
    c: np.ndarray


def distil(
    config: CertifyConfig, ctx: RunContext, teacher_model: Any, teacher_sha: str, smp: Sample
) -> Student:
    """Distil (or reuse) the student on the sample (``distill_on = "samples"``) or on its whole pool, export
    it, and evaluate it on the sample."""
    from distill.export import load_model

    from .sample import sample_pool

    data = ctx.data
    X_distill = smp.X if config.distill_on == "samples" else sample_pool(data, config.sampling)[0]
    key = query_key(
        "student",
        teacher_sha,
        smp.sha256,
        config.distill_on,
        config.method,
        config.distill_params,
        config.student_arch,
        config.epochs,
        config.distill_lr,
        config.distill_weight_decay,
        config.seed,
        data.name,
        config.data_seed,
    )
    path, summary = _student(config, ctx, teacher_model, X_distill.astype(np.float32), key)
    net = load_onnx(path)
    z = net.evaluate(smp.X)
    return Student(
        path, net, load_model(path), file_sha256(path), summary, z, softmax(z), np.argmax(z, axis=1)
    )


def _student(
    config: CertifyConfig, ctx: RunContext, teacher_model: Any, X_distill: np.ndarray, key: str
) -> tuple[Path, dict[str, Any]]:
    """Distil (or reuse a student of the same key from ``out_dir``) and export it to ONNX."""
    import json

    from distill.export import export_onnx
    from distill.losses import DistillConfig, distill_student

    out_dir, data, log = ctx.out, ctx.data, ctx.log
    path = out_dir / "student.onnx"
    side = path.with_name(path.name + ".json")
    if path.is_file() and side.is_file():
        try:
            meta = json.loads(side.read_text())
        except (OSError, ValueError):
            meta = {}
        if meta.get("certify_key") == key and meta.get("sha256") == file_sha256(path):
            log("student: reusing student.onnx from the output folder (same teacher, sample and settings)")
            return path, dict(meta.get("distill_summary") or {})
    log(f"distilling the student ({config.method}, {len(X_distill)} points, {config.epochs} epochs)")
    res = distill_student(
        teacher_model,
        X_distill,
        method=config.method,
        arch=config.student_arch,
        epochs=config.epochs,
        seed=config.seed,
        labels="teacher",
        lr=config.distill_lr,
        cfg=DistillConfig(**config.distill_params),
        weight_decay=config.distill_weight_decay,
        domain=(data.domain_lo, data.domain_hi),
        progress=log.progress,
    )
    summary = {
        "method": res.config["method"],
        "arch": res.config["arch"],
        "epochs": res.config["epochs"],
        "points": int(len(X_distill)),
        "train_agreement": float(res.train_agreement),
        "seconds_s": round(float(res.seconds), 3),
    }
    meta = {
        "dataset": data.name,
        "input_domain": {"lo": data.domain_lo.tolist(), "hi": data.domain_hi.tolist()},
        "class_names": list(data.class_names),
        "training": res.config,
        "certify_key": key,
        "distill_summary": summary,
    }
    export_onnx(res.model, path, data.n_features, meta, seed=config.seed)
    return path, summary
