"""``distillcert bench certify-teachers`` — the certifier on real teachers × guarantee kinds.

Teachers (trained here, cached in ``--out`` under their settings): the digits MLP of ``distillcert run``
(PGD-AT), an mnist5k CNN with more than 100k parameters and MaxPool (zoo ``cnn-large``), a residual CNN
(``resnet-mini``) and a Tanh/BatchNorm CNN (``cnn-tanh-bn``).  Kinds: the fixed-property ``binomial``
kind and the uniform ``quality`` kind (Blohm et al.: ``s = 15 033`` at ε = η = 0.01, any ``m``).  Every
cell is one :func:`verifier.certify.certify` run at δ = 0.02 (L∞), κ = 0.9 whose certificate is then
re-checked by :func:`verifier.certify.check_certificate`.

Columns: verdict (and the refusal codes), ``s``, the teacher's radius ``r_T``, the student's verified
radius (median over the confident samples; with the binomial kind's fixed rule each sample has its own
``R/λ``), the lift audit (confirmed / undecided / refuted, or "not checkable" when the teacher's IR
cannot be built), PGD hits at the lifted radii, whether Eq. 13 held, the check's outcome, wall and CPU time
(this process and its finished solver child processes).

Settings that differ from ``CertifyConfig()`` are recorded per row (``settings``) and in the certificates:
the quality kind distils on the sample's pool (the training inputs the 15 033 draws come from, so every
sampled point is a distillation point) for fewer epochs, and the cross-check PGD is lighter on the CNN
teachers (each PGD step is a CNN forward and backward on every confident sample).
"""

from __future__ import annotations

import time
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import numpy as np

from .common import Timer, cached_model, md_table, torch_threads, write_csv, write_json, write_summary
from .common import progress as _bar

__all__ = ["BenchConfig", "FULL", "QUICK", "TeacherSpec", "run"]


@dataclass(frozen=True)
class TeacherSpec:
    """A teacher to train: ``name``, data set, ``arch`` (MLP widths or a zoo preset), PGD-AT radius
    (0: standard training), epochs, and the certifier settings it gets (``pgd_steps``, ``pgd_restarts``, the
    distillation ``method``: ``sd`` for the CNNs, whose input-gradient terms would need a double backward
    pass through the CNN at every step)."""

    name: str
    data: str
    arch: str
    adv_eps: float
    epochs: int
    pgd_steps: int = 50
    pgd_restarts: int = 5
    method: str = "kdiga"
    eq13_rounds: int = 4


@dataclass(frozen=True)
class BenchConfig:
    """Teachers × kinds and the certification settings (``epsilon``/``eta`` per kind)."""

    teachers: tuple[TeacherSpec, ...]
    kinds: tuple[tuple[str, float, float], ...]  # (kind, epsilon, eta)
    delta: float = 0.02
    kappa: float = 0.9
    binomial_epochs: int = 100
    quality_epochs: int = 30
    local_budget: float = 60.0
    audit_budget: float = 60.0
    recheck: int = 5
    extra: dict[str, Any] = field(default_factory=dict)


FULL = BenchConfig(
    teachers=(
        TeacherSpec("digits-mlp", "digits", "64-128-128-10", 0.1, 40),
        TeacherSpec("digits-cnn-tanh-bn", "digits", "cnn-tanh-bn", 0.0, 10, 20, 1, "sd"),
        TeacherSpec("digits-resnet-mini", "digits", "resnet-mini", 0.0, 10, 20, 1, "sd"),
        TeacherSpec("mnist5k-cnn-tanh-bn", "mnist5k", "cnn-tanh-bn", 0.0, 3, 10, 1, "sd", 2),
    ),
    kinds=(("binomial", 0.01, 0.01), ("quality", 0.01, 0.01)),
    quality_epochs=20,
)

QUICK = BenchConfig(
    teachers=(
        TeacherSpec("digits-mlp", "digits", "64-32-10", 0.0, 10, eq13_rounds=2),
        TeacherSpec("digits-cnn-tanh-bn", "digits", "cnn-tanh-bn", 0.0, 2, 10, 1, "sd", 2),
    ),
    kinds=(("binomial", 0.1, 0.1), ("quality", 0.3, 0.3)),
    binomial_epochs=10,
    quality_epochs=3,
    local_budget=10.0,
    audit_budget=10.0,
    recheck=2,
    extra={"global_timeout": 5.0},
)


def _teacher(spec: TeacherSpec, out: Path, seed: int, progress: bool) -> tuple[Path, dict[str, Any]]:
    """Train (or reuse) the teacher; its checkpoint path and ``{"params", "test_accuracy", ...}``."""
    from distill.data import load_dataset
    from distill.models import n_parameters
    from distill.train import train_teacher

    data = load_dataset(spec.data, seed)
    key = {"role": "certify-teachers", "spec": spec.__dict__, "seed": seed}

    def build() -> tuple[Any, dict[str, Any]]:
        r = train_teacher(
            data, arch=spec.arch, adv_eps=spec.adv_eps, epochs=spec.epochs, seed=seed, progress=progress
        )
        return r.model, {
            "seconds": r.seconds,
            "test_accuracy": r.test_accuracy,
            "params": n_parameters(r.model),
        }

    path = out / "teachers" / f"{spec.name}.pt"
    path.parent.mkdir(parents=True, exist_ok=True)
    _, info, reused = cached_model(path, key, build)
    return path, {**info, "reused": reused}


def _cell(
    spec: TeacherSpec,
    tpath: Path,
    kind: tuple[str, float, float],
    cfg: BenchConfig,
    out: Path,
    seed: int,
) -> dict[str, Any]:
    from verifier.certify import CertifyConfig, certify, check_certificate

    name, eps, eta = kind
    quality = name == "quality"
    settings = {
        "data": spec.data,
        "delta": cfg.delta,
        "kappa": cfg.kappa,
        "guarantee": name,
        "epsilon": eps,
        "eta": eta,
        "epochs": cfg.quality_epochs if quality else cfg.binomial_epochs,
        "distill_on": "pool" if quality else "samples",
        "method": spec.method,
        "eq13_rounds": spec.eq13_rounds,
        "pgd_steps": spec.pgd_steps,
        "pgd_restarts": spec.pgd_restarts,
        "local_budget": cfg.local_budget,
        "audit_budget": cfg.audit_budget,
        "global_timeout": 30.0,
        "seed": seed,
        **cfg.extra,
    }
    config = CertifyConfig(**settings)
    folder = out / "certs" / f"{spec.name}-{name}"
    with Timer() as tm:
        cert = certify(tpath, config, folder, progress=False)
    wall, cpu = tm.seconds, tm.cpu_seconds
    chk = check_certificate(folder / "certificate.json", recheck=cfg.recheck, timeout=10.0)
    q = cert["local_queries"]
    verified = [x for x in q if x["verdict"] == "verified" and x["radius"] is not None]
    audit = cert["steps"]["lift_audit"]
    checkable = bool(audit.get("checkable"))
    return {
        "teacher": spec.name,
        "data": spec.data,
        "kind": name,
        "verdict": cert["verdict"],
        "reasons": " ".join(r["code"] for r in cert["reasons"]),
        "s": cert["data"]["sample_size"],
        "confident": cert["data"]["n_confident"],
        "r_T": cert["guarantee"]["teacher_radius"],
        "student_radius_median": float(np.median([x["radius"] for x in verified])) if verified else None,
        "student_radius_max": float(np.max([x["radius"] for x in verified])) if verified else None,
        "student_verified": len(verified),
        "audit": (
            f"{audit['confirmed']}/{audit['undecided']}/{audit['refuted']}" if checkable else "not checkable"
        ),
        "audit_confirmed_fraction": audit.get("fraction_confirmed"),
        "audit_refuted": int(audit.get("refuted", 0) or 0),
        "pgd_hits": cert["steps"]["crosscheck"]["adversarial"],
        "pgd_hits_on_claims": cert["steps"]["crosscheck"].get("at_established_claims", 0),
        "eq13": cert["steps"]["eq13"]["holds"],
        "eq13_violations": cert["steps"]["eq13"]["violations"],
        "epsilon_achieved": cert["guarantee"].get("epsilon_achieved"),
        "check": "ok" if chk["ok"] else "FAIL: " + "; ".join(chk["failures"])[:200],
        "wall_s": round(wall, 1),
        "cpu_s": round(cpu, 1),
        "durations": cert["durations_s"],
        "settings": settings,
    }


def _fmt(v: Any) -> str:
    if v is None:
        return "—"
    if isinstance(v, float):
        return f"{v:.4g}"
    return str(v)


def run(
    quick: bool, out: Path, seed: int, progress: bool = True, config: BenchConfig | None = None
) -> dict[str, Any]:
    """Train the teachers, run every teacher × kind cell, write ``results.csv``/``results.json`` and
    ``summary.md`` into ``out``.  Returns ``{"rows", "headline", "files", "text"}``."""
    cfg = config or (QUICK if quick else FULL)
    out = Path(out)
    out.mkdir(parents=True, exist_ok=True)
    rows: list[dict[str, Any]] = []
    teachers: dict[str, dict[str, Any]] = {}
    t0 = time.perf_counter()
    with torch_threads(1):
        for spec in _bar(cfg.teachers, "teachers", enabled=progress):
            tpath, tinfo = _teacher(spec, out, seed, progress)
            teachers[spec.name] = {"arch": spec.arch, "data": spec.data, **tinfo}
            for kind in cfg.kinds:
                row = _cell(spec, tpath, kind, cfg, out, seed)
                row["params"] = tinfo.get("params")
                rows.append(row)
                write_json(out / "results.json", {"rows": rows, "teachers": teachers, "partial": True})
    header = [
        "teacher",
        "params",
        "kind",
        "verdict",
        "s",
        "confident",
        "r_T",
        "student radius (median)",
        "audit c/u/r",
        "PGD hits",
        "Eq. 13",
        "check",
        "wall s",
        "CPU s",
    ]
    table = md_table(
        header,
        [
            [
                r["teacher"],
                r["params"],
                r["kind"],
                r["verdict"] + (f" ({r['reasons']})" if r["reasons"] else ""),
                r["s"],
                r["confident"],
                _fmt(r["r_T"]),
                _fmt(r["student_radius_median"]),
                r["audit"],
                f"{r['pgd_hits']} ({r['pgd_hits_on_claims']} on claims)",
                "holds" if r["eq13"] else f"fails at {r['eq13_violations']}",
                r["check"],
                r["wall_s"],
                r["cpu_s"],
            ]
            for r in rows
        ],
    )
    headline = {
        "cells": len(rows),
        "certified": sum(r["verdict"] == "certified" for r in rows),
        "refuted_by_direct_verification": sum(r["audit_refuted"] for r in rows),
        "pgd_hits": sum(int(r["pgd_hits"]) for r in rows),
        "pgd_hits_on_claims": sum(int(r["pgd_hits_on_claims"]) for r in rows),
        "checks_ok": sum(r["check"] == "ok" for r in rows),
        "total_s": round(time.perf_counter() - t0, 1),
    }
    flat = [{k: v for k, v in r.items() if k not in ("durations", "settings")} for r in rows]
    files = {
        "results_csv": str(write_csv(out / "results.csv", flat)),
        "results_json": str(write_json(out / "results.json", {"rows": rows, "teachers": teachers})),
    }
    teach = md_table(
        ["teacher", "data", "arch", "params", "test accuracy", "train s"],
        [
            [k, v["data"], v["arch"], v.get("params"), _fmt(v.get("test_accuracy")), _fmt(v.get("seconds"))]
            for k, v in teachers.items()
        ],
    )
    text = (
        f"{headline['certified']} of {headline['cells']} cells certified; lifted claims refuted by direct "
        f"verification: {headline['refuted_by_direct_verification']}; PGD hits: {headline['pgd_hits']} "
        f"({headline['pgd_hits_on_claims']} at samples with an established claim); "
        f"checks passed: {headline['checks_ok']} of {headline['cells']} ({headline['total_s']} s)"
    )
    files["summary"] = str(
        write_summary(
            out,
            "certify-teachers",
            [
                ("Headline", text),
                ("Teachers", teach),
                (f"Teachers × guarantee kinds (δ = {cfg.delta:g} L∞, κ = {cfg.kappa:g})", table),
                (
                    "Columns",
                    "audit c/u/r = lifted claims confirmed / undecided / refuted by direct verification of "
                    "the teacher (batched CROWN, α-CROWN, a solver within the audit budget); 'not "
                    "checkable' = the teacher's verifiable IR cannot be built (MaxPool, Tanh, BatchNorm "
                    "after a non-linearity...), so PGD alone audits the lift. CPU s: this process and "
                    "its solver child processes.",
                ),
            ],
        )
    )
    return {"rows": rows, "headline": headline, "files": files, "text": text}
