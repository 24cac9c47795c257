r"""Stage 2, **distil** the student on the sample
(default KDIGA; seed 000 Algorithm 1 line 4: on ``(x_i, c_T(x_i))``), or reuse a student of the same key.
The student is exported to ONNX and everything downstream uses the exported weights.
"""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np

from encoders.network import Network, file_sha256, load_onnx

from ..journal import query_key
from .config import CertifyConfig
from .context import RunContext
from .sample import Sample, softmax

__all__ = ["Student", "distil"]


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


def distil(config: CertifyConfig, ctx: RunContext, teacher: Any, smp: Sample) -> Student:
    """Distil (or reuse) the student on the sample (``distill_on = "samples"``) or on its whole pool, export
    it, and evaluate it on the sample.  ``teacher`` has ``model`` (torch), ``sha256`` and ``logits(X)`` (the
    certifier's evaluation of the teacher, which defines the labels and the Eq. 13 targets the hinge aims
    at)."""
    from distill.export import load_model

    from .sample import sample_pool

    data = ctx.data
    X_distill = smp.X if config.distill_on == "samples" else sample_pool(data, config.sampling)[0]
    key = query_key(
        "student",
        teacher.sha256,
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
        *(
            ("eq13", config.eq13_hinge, config.eq13_rounds, config.eq13_scope, config.kappa)
            if config.eq13_hinge > 0 or config.eq13_rounds > 1
            else ()
        ),
        config.data_seed,
    )
    path, summary = _student(config, ctx, teacher, X_distill, key)
    net = load_onnx(path)
    z = net.evaluate(smp.X)
    return Student(
        path, net, load_model(path), file_sha256(path), summary, z, softmax(z), np.argmax(z, axis=1)
    )


def _student(
    config: CertifyConfig, ctx: RunContext, teacher: Any, X_distill: np.ndarray, key: str
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
    domain = (data.domain_lo, data.domain_hi)
    if config.eq13_hinge > 0 or config.eq13_rounds > 1:
        model, training, summary = _distil_eq13(config, ctx, teacher, X_distill, domain)
    else:
        log(f"distilling the student ({config.method}, {len(X_distill)} points, {config.epochs} epochs)")
        res = distill_student(
            teacher.model,
            X_distill.astype(np.float32),
            method=config.method,
            arch=config.student_arch,
            epochs=config.epochs,
            seed=config.seed,
            labels="teacher",
            lr=config.distill_lr,
            cfg=DistillConfig(**config.distill_params),
            weight_decay=config.distill_weight_decay,
            domain=domain,
            progress=log.progress,
        )
        model, training = res.model, res.config
        summary = {
            "method": res.config["method"],
            "arch": res.config["arch"],
            "epochs": res.config["epochs"],
            "points": int(len(X_distill)),
            "train_agreement": float(res.train_agreement),
            "seconds_s": round(float(res.seconds), 3),
            "objective": "distillation loss only",
        }
    meta = {
        "dataset": data.name,
        "input_domain": {"lo": data.domain_lo.tolist(), "hi": data.domain_hi.tolist()},
        "class_names": list(data.class_names),
        "training": training,
        "certify_key": key,
        "distill_summary": summary,
    }
    export_onnx(model, path, data.n_features, meta, seed=config.seed)
    return path, summary


def _distil_eq13(
    config: CertifyConfig, ctx: RunContext, teacher: Any, X_distill: np.ndarray, domain: Any
) -> tuple[Any, dict[str, Any], dict[str, Any]]:
    r"""Distillation aimed at Eq. 13 (:func:`distill.losses.distill_for_eq13`): the base loss plus
    ``eq13_hinge`` times a hinge on the confidence gap at the distillation points (zero only where the
    student is at least as confident as the teacher with room to spare, and agrees with it), retried with
    a hinge ``growth`` times stronger up to ``eq13_rounds`` rounds while Eq. 13 fails.  Eq. 13 itself is
    never weakened: the certifier re-checks it exactly on the exported student (:func:`~.lift.eq13`)."""
    from distill.losses import DistillConfig, Eq13Config, distill_for_eq13

    cfg = Eq13Config(
        kappa=config.kappa,
        scope=config.eq13_scope,
        method=config.method,
        distill=DistillConfig(**config.distill_params),
        arch=config.student_arch,
        epochs=config.epochs,
        lr=config.distill_lr,
        weight_decay=config.distill_weight_decay,
        seed=config.seed,
        hinge_weight=config.eq13_hinge,
        max_rounds=config.eq13_rounds,
    )
    ctx.log(
        f"distilling the student ({config.method} + Eq. 13 hinge {config.eq13_hinge:g}, up to "
        f"{config.eq13_rounds} rounds; {len(X_distill)} points, {config.epochs} epochs)"
    )
    model, rep = distill_for_eq13(
        teacher.model,
        X_distill.astype(np.float32),
        cfg,
        domain=domain,
        progress=ctx.log.progress,
        teacher_logits=teacher.logits(X_distill),  # the certifier's labels, confident set and targets
    )
    ctx.log(
        f"Eq. 13 distillation: {rep.rounds} round(s), violations per round {list(rep.violations)} on the "
        f"distillation points ({'holds' if rep.holds else 'still fails'} in training precision)"
    )
    summary = {
        "method": rep.config["method"],
        "arch": rep.config["arch"],
        "epochs": config.epochs,
        "points": int(len(X_distill)),
        "train_agreement": float(rep.train_agreement),
        "seconds_s": round(float(rep.seconds), 3),
        "objective": "distillation loss + Eq. 13 hinge (distill.losses.eq13_hinge), retried while it fails",
        "eq13_rounds": int(rep.rounds),
        "eq13_hinge_weights": [float(w) for w in rep.hinge_weights],
        "eq13_violations_per_round": [int(v) for v in rep.violations],
        "eq13_worst_gap_per_round": [float(g) for g in rep.worst_gaps],
    }
    return model, rep.config, summary
