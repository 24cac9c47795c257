r"""``distillcert bench kdiga-transfer`` — seed 002 Table 1 at small scale: does input-gradient alignment
transfer a teacher's adversarial robustness to a student that never sees an adversarial example?

One PGD-AT teacher (Madry, :func:`distill.train.train_teacher`) on ``digits``; from it, smaller students
distilled by

* **KD** — standard distillation (seed 001 Eq. 1, :func:`distill.losses.sd`): no robustness signal;
* **KDIGA** — KD plus input-gradient alignment ``λ_G‖∇_x CE(f_s(x), y) − ∇_x CE(f_t(x), y)‖₂`` (seed 002
  Eq. 5): clean inputs only, the robustness comes from the teacher's gradients;
* **KDIGA-ARD_C / KDIGA-ARD_A** — ARD plus the alignment at the clean / adversarial points (seed 002
  Eq. 6 / 7);
* **ARD** (reference) — adversarially robust distillation without alignment (seed 001 Eq. 4),

each with ``student_seeds`` seeds (mean ± std).  Evaluation on the test split: clean accuracy and PGD
accuracy at a grid of L∞ radii (PGD-50, step ``2.5ε/50``, CE loss, clamped to ``[0, 1]``), plus two
diagnostics on a test subset that explain the numbers: the alignment term itself,
``IGA = mean ‖∇_x CE(f_s) − ∇_x CE(f_t)‖₂`` (:func:`distill.losses.input_gradient_alignment`), and the
cosine between the teacher's and the student's logit gradients of the teacher's predicted class
(:func:`distill.diagnostics.logit_gradients`).

Outputs: ``runs.csv`` (one row per model and seed), ``table.csv`` (mean ± std per method),
``robust.png`` (accuracy against radius, error bars over seeds), ``results.json``, ``summary.md``.
Models are cached in ``models/`` keyed by their configuration.
"""

from __future__ import annotations

import dataclasses
import math
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np

from encoders.errors import ConfigError

from .common import (
    Timer,
    cached_model,
    cached_teacher,
    fmt,
    load_training_data,
    machine_info,
    md_table,
    mean_std,
    new_figure,
    save_fig,
    seed_everything,
    torch_threads,
    write_csv,
    write_json,
    write_summary,
)
from .common import progress as _bar

__all__ = ["TransferConfig", "QUICK", "FULL", "gradient_diagnostics", "run"]

LABELS = {
    "sd": "KD",
    "kdiga": "KDIGA",
    "kdiga_ard_c": "KDIGA-ARD_C",
    "kdiga_ard_a": "KDIGA-ARD_A",
    "ard": "ARD",
}


@dataclass(frozen=True)
class TransferConfig:
    """Everything that determines a run besides the seed (student seeds are ``seed, seed+1, ...``)."""

    data: str = "digits"
    teacher_arch: str = "64-128-128-10"
    student_arch: str = "64-64-64-10"
    adv_eps: float = 0.1
    teacher_epochs: int = 40
    student_epochs: int = 40
    methods: tuple[str, ...] = ("sd", "kdiga", "kdiga_ard_c", "kdiga_ard_a", "ard")
    radii: tuple[float, ...] = (0.02, 0.05, 0.1, 0.15, 0.2)
    student_seeds: int = 3
    train_limit: int | None = None
    n_eval: int | None = None
    n_diag: int = 200
    pgd_steps: int = 50
    pgd_restarts: int = 1
    lambda_g: float = 10.0

    def validate(self) -> None:
        from distill.losses import resolve_method

        for m in self.methods:
            resolve_method(m)
        if self.student_seeds < 1:
            raise ConfigError("kdiga-transfer: student_seeds must be >= 1")
        if any(not (r > 0 and math.isfinite(r)) for r in self.radii):
            raise ConfigError("kdiga-transfer: every radius must be positive")


QUICK = TransferConfig(
    teacher_arch="64-64-64-10",
    student_arch="64-32-32-10",
    teacher_epochs=12,
    student_epochs=10,
    radii=(0.05, 0.1),
    student_seeds=1,
    train_limit=800,
    n_eval=150,
    n_diag=50,
    pgd_steps=20,
)
FULL = TransferConfig()


def gradient_diagnostics(teacher: Any, student: Any, X: np.ndarray, y: np.ndarray) -> dict[str, float]:
    """``iga``: mean ``‖∇_x CE(f_s(x), y) − ∇_x CE(f_t(x), y)‖₂`` (KDIGA's alignment term);
    ``grad_cos``: mean cosine of the teacher's and student's gradients of the logit of the teacher's
    predicted class (float64)."""
    import torch

    from distill.diagnostics import logit_gradients
    from distill.losses import input_gradient_alignment
    from distill.models import eval_mode, predict

    xt = torch.from_numpy(np.array(X, dtype=np.float32))
    yt = torch.from_numpy(np.array(y, dtype=np.int64))
    with eval_mode(teacher, student):
        iga = input_gradient_alignment(student, teacher, xt, yt).detach().numpy()
    cls = predict(teacher, X)
    gs, gt = logit_gradients(student, X, cls), logit_gradients(teacher, X, cls)
    ns, nt = np.linalg.norm(gs, axis=1), np.linalg.norm(gt, axis=1)
    ok = (ns > 0) & (nt > 0)
    cos = (gs[ok] * gt[ok]).sum(axis=1) / (ns[ok] * nt[ok])
    return {"iga": float(iga.mean()), "grad_cos": float(cos.mean()) if len(cos) else math.nan}


def _data(cfg: TransferConfig, seed: int) -> Any:
    return load_training_data(cfg.data, seed, cfg.train_limit, stream=7002)


def _models(cfg: TransferConfig, data: Any, out: Path, seed: int, progress: bool) -> tuple[Any, list[dict]]:
    from distill.losses import DistillConfig, distill_student

    teacher, t_info, tkey = cached_teacher(
        out / "models" / "teacher.pt",
        data,
        cfg.data,
        cfg.teacher_arch,
        cfg.adv_eps,
        cfg.teacher_epochs,
        cfg.train_limit,
        seed,
        progress,
    )
    students = []
    jobs = [(m, seed + k) for m in cfg.methods for k in range(cfg.student_seeds)]
    dcfg = DistillConfig(eps=cfg.adv_eps, lambda_g=cfg.lambda_g)
    for m, s in _bar(jobs, "kdiga-transfer: students", enabled=progress):
        key = {
            **tkey,
            "role": "student",
            "method": m,
            "student_seed": s,
            "arch": cfg.student_arch,
            "epochs": cfg.student_epochs,
            "teacher": tkey,
            "distill": dcfg.public(),
        }

        def build(m: str = m, s: int = s) -> tuple[Any, dict[str, Any]]:
            r = distill_student(
                teacher,
                data,
                method=m,
                arch=cfg.student_arch,
                epochs=cfg.student_epochs,
                seed=s,
                cfg=dcfg,
                progress=progress,
            )
            return r.model, {"seconds": r.seconds}

        model, info, reused = cached_model(out / "models" / f"{m}_s{s}.pt", key, build)
        students.append(
            {"method": m, "seed": s, "model": model, "seconds": info.get("seconds"), "reused": reused}
        )
    return (teacher, t_info), students


def _evaluate(
    model: Any, teacher: Any, data: Any, cfg: TransferConfig, Xe: np.ndarray, ye: np.ndarray, seed: int
) -> dict[str, Any]:
    from distill.attacks import robust_accuracy
    from distill.models import predict

    dom = (data.domain_lo, data.domain_hi)
    row: dict[str, Any] = {"clean": float(np.mean(predict(model, data.X_test) == data.y_test))}
    for r in cfg.radii:
        row[f"pgd@{r:g}"] = robust_accuracy(
            model, Xe, ye, r, steps=cfg.pgd_steps, restarts=cfg.pgd_restarts, domain=dom, seed=seed
        )
    if model is not teacher:
        nd = min(cfg.n_diag, len(data.y_test))
        row.update(gradient_diagnostics(teacher, model, data.X_test[:nd], data.y_test[:nd]))
    return row


def _plot(means: list[dict[str, Any]], cfg: TransferConfig, path: Path) -> Path:
    fig = new_figure(6.0, 4.0)
    ax = fig.subplots()
    xs = [0.0, *cfg.radii]
    for r in means:
        ys = [r["clean_mean"], *[r[f"pgd@{e:g}_mean"] for e in cfg.radii]]
        es = [r["clean_std"], *[r[f"pgd@{e:g}_std"] for e in cfg.radii]]
        ax.errorbar(
            xs,
            ys,
            yerr=es,
            marker="o",
            capsize=3,
            label=r["model"],
            lw=2.5 if r["model"] == "teacher (PGD-AT)" else 1.2,
        )
    ax.axvline(cfg.adv_eps, color="k", ls=":", lw=1)
    ax.set_xlabel("PGD radius ε (L∞); 0 = clean")
    ax.set_ylabel("accuracy")
    ax.set_ylim(0, 1)
    ax.legend(fontsize=7)
    ax.set_title(
        f"{cfg.data}: robustness transfer from a PGD-AT teacher (ε_train = {cfg.adv_eps:g})", fontsize=10
    )
    return save_fig(fig, path)


def run(
    quick: bool, out: Path, seed: int, progress: bool = True, config: TransferConfig | None = None
) -> dict[str, Any]:
    """Train (or reuse) the teacher and students, evaluate, and write the outputs into ``out``."""
    cfg = config or (QUICK if quick else FULL)
    cfg.validate()
    out = Path(out)
    out.mkdir(parents=True, exist_ok=True)
    seed_everything(seed)
    with Timer() as total, torch_threads(1):
        data = _data(cfg, seed)
        (teacher, t_info), students = _models(cfg, data, out, seed, progress)
        n = len(data.y_test) if cfg.n_eval is None else min(cfg.n_eval, len(data.y_test))
        Xe, ye = data.X_test[:n], data.y_test[:n]
        runs = [
            {
                "model": "teacher (PGD-AT)",
                "method": "pgd-at",
                "seed": seed,
                **_evaluate(teacher, teacher, data, cfg, Xe, ye, seed),
            }
        ]
        for s in _bar(students, "kdiga-transfer: evaluation", enabled=progress):
            runs.append(
                {
                    "model": LABELS.get(s["method"], s["method"]),
                    "method": s["method"],
                    "seed": s["seed"],
                    "train_s": s["seconds"],
                    **_evaluate(s["model"], teacher, data, cfg, Xe, ye, seed),
                }
            )
    metrics = ["clean", *[f"pgd@{r:g}" for r in cfg.radii], "iga", "grad_cos"]
    means = []
    for name in dict.fromkeys(r["model"] for r in runs):
        grp = [r for r in runs if r["model"] == name]
        row: dict[str, Any] = {"model": name, "seeds": len(grp)}
        for k in metrics:
            vals = [r[k] for r in grp if k in r]
            if vals:
                row[f"{k}_mean"], row[f"{k}_std"] = mean_std(vals)
        means.append(row)
    files = {
        "runs": str(write_csv(out / "runs.csv", runs)),
        "table": str(write_csv(out / "table.csv", means)),
        "plot": str(_plot(means, cfg, out / "robust.png")),
    }
    by = {r["model"]: r for r in means}
    key = f"pgd@{cfg.adv_eps:g}_mean"
    head: dict[str, Any] = {"radius": cfg.adv_eps}
    if "KD" in by and "KDIGA" in by and key in by["KD"]:
        head.update(
            kd=by["KD"][key],
            kdiga=by["KDIGA"][key],
            kdiga_minus_kd=by["KDIGA"][key] - by["KD"][key],
            teacher=by["teacher (PGD-AT)"].get(key),
        )
    result: dict[str, Any] = {
        "benchmark": "kdiga-transfer",
        "quick": quick,
        "seed": seed,
        "config": dataclasses.asdict(cfg),
        "machine": machine_info(),
        "seconds": total.seconds,
        "cpu_seconds": total.cpu_seconds,
        "teacher": t_info,
        "headline": head,
        "runs": runs,
        "table": means,
        "files": files,
        "out": str(out),
    }
    files["results"] = str(write_json(out / "results.json", result))

    def cell(r: dict[str, Any], k: str) -> str:
        if f"{k}_mean" not in r:
            return "–"
        return f"{fmt(r[f'{k}_mean'])} ± {fmt(r[f'{k}_std'])}" if r["seeds"] > 1 else fmt(r[f"{k}_mean"])

    table = md_table(
        ["model", "seeds", "clean", *[f"PGD ε={r:g}" for r in cfg.radii], "IGA", "grad cos"],
        [[r["model"], str(r["seeds"]), *[cell(r, k) for k in metrics]] for r in means],
    )
    if "kdiga_minus_kd" in head:
        verdict = (
            f"At ε = {cfg.adv_eps:g} (the teacher's training radius): teacher {fmt(head['teacher'])}, KD "
            f"{fmt(head['kd'])}, KDIGA {fmt(head['kdiga'])} — KDIGA − KD = "
            f"{100 * head['kdiga_minus_kd']:+.1f} points of PGD accuracy."
        )
    else:
        verdict = "KD and KDIGA were not both run."
    setup = (
        f"{cfg.data}, {len(data.y_train)} training points (seed {seed}); teacher {cfg.teacher_arch} PGD-AT "
        f"ε = {cfg.adv_eps:g}, {cfg.teacher_epochs} epochs; students {cfg.student_arch}, "
        f"{cfg.student_epochs} epochs, λ_G = {cfg.lambda_g:g}, {cfg.student_seeds} seed(s) each; "
        f"PGD-{cfg.pgd_steps} (step "
        f"2.5ε/{cfg.pgd_steps}, {cfg.pgd_restarts} restart) on {n} test points; clean accuracy on the whole "
        f"test split ({len(data.y_test)}); IGA and gradient cosine on {min(cfg.n_diag, len(data.y_test))} "
        "test points."
    )
    files["summary"] = str(
        write_summary(
            out,
            "kdiga-transfer (seed 002 Table 1, small scale)",
            [
                (
                    "Headline",
                    verdict + f"\n\nWall time {total.seconds:.0f} s ({total.cpu_seconds:.0f} s CPU).",
                ),
                ("Setup", setup),
                ("Results (mean ± std over student seeds)", table + "\n\n![robust accuracy](robust.png)"),
            ],
        )
    )
    result["text"] = f"kdiga-transfer: {verdict} ({total.seconds:.0f} s -> {out})"
    return result
