"""Distillation diagnostics: did the student really learn the teacher, and where not?

:func:`diagnose` returns one JSON-able dict (also what ``distillcert diagnose`` prints):

* ``teacher_accuracy``, ``student_accuracy`` — clean accuracies (when labels are given);
  ``agreement`` — fraction of points with ``argmax f_S(x) = argmax f_T(x)``.
* ``confidence_dominance`` (seed 000 Eq. 13) — with ``c_N(x) = max_k softmax(f_N(x))_k``, the fraction
  of points where ``c_S(x) ≥ c_T(x)`` and the worst gap ``max_x (c_T(x) − c_S(x))`` (positive when
  the condition fails somewhere).
* ``gradient_ratio`` (seed 000 Prop. 4.3) — ``ρ(x) = ‖∇_x f_S,c(x)‖₂ / ‖∇_x f_T,c(x)‖₂``, where the
  gradient is that of the **logit** of class ``c = argmax f_T(x)`` (the teacher's predicted class,
  used for both networks so that both gradients refer to the same output), taken in float64:
  min / median / max and the fraction with ``ρ ≤ 1``.  See :func:`gradient_ratio`.
* ``gradient_cosine`` — ``cos(∇_x f_S,c(x), ∇_x f_T,c(x))`` for the same gradients.
* ``llm`` — the local linearity measure of seed 002 Def. 2 for each network,
  ``LLM(f, x, δ) = |ℓ(x+δ) − ℓ(x) − δᵀ ∇_x ℓ(x)|`` with ``ℓ = CE(f(·), y)`` (``y`` = the labels, or
  the teacher's prediction when none are given), maximised over ``δ ∈ B_ε ∩ (D − x)`` by PGD; the
  reported values are attained, hence lower bounds on ``γ(ε, x) = max_δ LLM(f, x, δ)``.
* ``pgd`` — PGD-CE robust accuracy of both networks, empirical distillation agreement under PGD
  (seed 001 Def. 3, :func:`distill.attacks.empirical_agreement`) and EMPLB (seed 001 §4.1).
* ``bnc`` — normalised-correlation specialisation (seed 004 §5.2): for hidden layers matched by
  relative depth, ``BNC`` of each teacher unit = its best normalised correlation with any student
  unit of the matched layer, ``MBNC`` = the mean over the layer (and the same from the student's
  side); the sorted teacher-side BNC curves are plotted to ``plot_path``.
"""

from __future__ import annotations

import io
from collections.abc import Callable
from pathlib import Path
from typing import Any

import numpy as np
import torch
import torch.nn.functional as F
from torch import nn

from encoders.errors import ConfigError, UnsupportedModelError

from .attacks import AttackContext, as_float64, empirical_agreement, emplb, pgd_with_loss, robust_accuracy
from .models import eval_mode, hidden_activations, logits_of

__all__ = [
    "diagnose",
    "gradient_ratio",
    "logit_gradients",
    "local_linearity",
    "normalized_correlation",
    "bnc_layers",
    "plot_sorted_bnc",
]

ModelFn = Callable[[torch.Tensor], torch.Tensor]


def logit_gradients(model: ModelFn, X: np.ndarray, cls: np.ndarray) -> np.ndarray:
    """``∇_x f_c(x)`` (float64, shape ``(n, d)``) of the logit of class ``cls[i]`` at each ``X[i]``."""
    m64 = as_float64(model)
    x = torch.from_numpy(np.array(X, dtype=np.float64).reshape(len(X), -1)).requires_grad_(True)
    idx = torch.from_numpy(np.asarray(cls, dtype=np.int64))
    with eval_mode(m64), torch.enable_grad():
        z = m64(x)
        sel = z.gather(1, idx.reshape(-1, 1)).sum()
        (g,) = torch.autograd.grad(sel, x)
    return g.numpy()


def gradient_ratio(
    teacher: ModelFn, student: ModelFn, X: np.ndarray, cls: np.ndarray | None = None
) -> np.ndarray:
    """``ρ(x) = ‖∇_x f_S,c(x)‖₂ / ‖∇_x f_T,c(x)‖₂`` per point (seed 000 Prop. 4.3), float64.

    ``c`` is ``cls`` if given, else the teacher's predicted class ``argmax f_T(x)``; the gradients
    are those of the class-``c`` **logit** (not of a loss), computed in float64.  A ReLU network's
    logit is piecewise affine, so the gradient is the local affine slope (at a kink, the one torch's
    ``ReLU'(0) = 0`` convention selects).  Conventions: ``ρ = +inf`` where the teacher's gradient is 0
    and the student's is not; ``ρ = nan`` where both are 0.
    """
    X = np.asarray(X, dtype=np.float64).reshape(len(X), -1)
    if cls is None:
        cls = logits_of(as_float64(teacher), X).argmax(axis=1)
    gs = np.linalg.norm(logit_gradients(student, X, cls), axis=1)
    gt = np.linalg.norm(logit_gradients(teacher, X, cls), axis=1)
    with np.errstate(divide="ignore", invalid="ignore"):
        return np.where(gt > 0, gs / np.where(gt > 0, gt, 1.0), np.where(gs > 0, np.inf, np.nan))


def _stats(v: np.ndarray) -> dict[str, float | None]:
    v = np.asarray(v, dtype=np.float64)
    fin = v[~np.isnan(v)]
    if fin.size == 0:
        return {"min": None, "median": None, "mean": None, "max": None}
    return {
        "min": float(fin.min()),
        "median": float(np.median(fin)),
        "mean": float(fin.mean()),
        "max": float(fin.max()),
    }


# --------------------------------------------------------------------------------------------------
# local linearity (seed 002 Def. 2)
# --------------------------------------------------------------------------------------------------
def _ce_and_grad(model: ModelFn, x: torch.Tensor, y: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
    xx = x.detach().clone().requires_grad_(True)
    with torch.enable_grad():
        loss = F.cross_entropy(model(xx), y, reduction="none")
        (g,) = torch.autograd.grad(loss.sum(), xx)
    return loss.detach(), g.detach()


def _llm_objective(model: ModelFn, xa: torch.Tensor, ctx: AttackContext) -> torch.Tensor:
    """``|ℓ(x') − ℓ(x) − (x' − x)ᵀ ∇ℓ(x)|`` per sample, ``ℓ = CE(model(·), y)``."""
    assert ctx.y is not None
    l0, g0 = _ce_and_grad(model, ctx.x0, ctx.y)
    la = F.cross_entropy(model(xa), ctx.y, reduction="none")
    lin = ((xa - ctx.x0).flatten(1) * g0.flatten(1)).sum(dim=1)
    return (la - l0 - lin).abs()


def local_linearity(
    model: ModelFn,
    X: np.ndarray,
    y: np.ndarray,
    eps: float,
    norm: str = "inf",
    steps: int = 20,
    restarts: int = 1,
    domain: tuple[Any, Any] | None = None,
    seed: int = 0,
) -> np.ndarray:
    """Per point, the largest ``LLM(f, x, δ)`` (seed 002 Def. 2) PGD finds over ``δ ∈ B_ε ∩ (D − x)``."""
    _, best = pgd_with_loss(
        model,
        X,
        eps,
        norm=norm,
        steps=steps,
        restarts=restarts,
        loss=_llm_objective,
        domain=domain,
        y=y,
        seed=seed,
    )
    return best.double().numpy()


# --------------------------------------------------------------------------------------------------
# BNC / MBNC (seed 004 §5.2)
# --------------------------------------------------------------------------------------------------
def normalized_correlation(A: np.ndarray, B: np.ndarray) -> np.ndarray:
    """Matrix ``ρ[k, j]`` of Pearson (normalised) correlations between columns ``A[:, k]`` and ``B[:, j]``.

    ``ρ(a, b) = Σ_i (a_i − ā)(b_i − b̄) / sqrt(Σ_i (a_i − ā)² · Σ_i (b_i − b̄)²)``; a constant column (a
    dead or always-on unit) has no defined correlation and gets ``ρ = 0``.
    """
    A = np.asarray(A, np.float64)
    B = np.asarray(B, np.float64)
    Ac, Bc = A - A.mean(axis=0), B - B.mean(axis=0)
    na, nb = np.linalg.norm(Ac, axis=0), np.linalg.norm(Bc, axis=0)
    num = Ac.T @ Bc
    den = np.outer(na, nb)
    with np.errstate(divide="ignore", invalid="ignore"):
        rho = np.where(den > 1e-12, num / np.where(den > 1e-12, den, 1.0), 0.0)
    return np.clip(rho, -1.0, 1.0)


def bnc_layers(teacher: nn.Module, student: nn.Module, X: np.ndarray) -> list[dict[str, Any]]:
    """Per student hidden layer ``l`` (0-based, of ``L_s``): the matched teacher hidden layer
    ``m(l) = round((l + 1) · L_t / L_s) − 1`` (the identity for equal depths), and

    * ``bnc_teacher`` — for each teacher unit ``k`` of layer ``m(l)``, ``max_j ρ[k, j]`` over the student
      units ``j`` of layer ``l`` (the specialisation measure: is teacher unit ``k`` reproduced?);
    * ``bnc_student`` — for each student unit, its best correlation with a teacher unit;
    * ``mbnc_teacher`` / ``mbnc_student`` — their means over the *live* units (a unit constant on ``X``,
      e.g. a dead ReLU, has no correlation; it is listed with BNC 0 and counted in ``dead_*_units``).

    Correlations are between post-ReLU activations over ``X``.  Returns ``[]`` when either network has
    no hidden layer.
    """
    at = hidden_activations(teacher, X)
    as_ = hidden_activations(student, X)
    if not at or not as_:
        return []
    Lt, Ls = len(at), len(as_)
    out = []
    for l in range(Ls):
        m = max(0, min(Lt - 1, int(round((l + 1) * Lt / Ls)) - 1))
        rho = normalized_correlation(at[m], as_[l])
        bt, bs = rho.max(axis=1), rho.max(axis=0)
        live_t, live_s = np.ptp(at[m], axis=0) > 0, np.ptp(as_[l], axis=0) > 0
        out.append(
            {
                "student_layer": l + 1,
                "teacher_layer": m + 1,
                "teacher_units": int(at[m].shape[1]),
                "student_units": int(as_[l].shape[1]),
                "dead_teacher_units": int(np.sum(~live_t)),
                "dead_student_units": int(np.sum(~live_s)),
                "mbnc_teacher": float(bt[live_t].mean()) if live_t.any() else 0.0,
                "mbnc_student": float(bs[live_s].mean()) if live_s.any() else 0.0,
                "bnc_teacher": np.sort(bt)[::-1].tolist(),
                "bnc_student": np.sort(bs)[::-1].tolist(),
            }
        )
    return out


def plot_sorted_bnc(layers: list[dict[str, Any]], path: str | Path) -> str:
    """Plot the sorted BNC curves (teacher side solid, student side dashed) to a PNG, atomically."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    from .export import atomic_write_bytes

    fig, ax = plt.subplots(figsize=(6, 4))
    for rec in layers:
        t = np.asarray(rec["bnc_teacher"])
        s = np.asarray(rec["bnc_student"])
        line = ax.plot(
            np.arange(1, len(t) + 1) / len(t),
            t,
            label=f"T{rec['teacher_layer']}↔S{rec['student_layer']} (MBNC {rec['mbnc_teacher']:.2f})",
        )[0]
        ax.plot(np.arange(1, len(s) + 1) / len(s), s, linestyle="--", color=line.get_color())
    ax.set_xlabel("unit rank / layer width (sorted by BNC)")
    ax.set_ylabel("best normalised correlation")
    ax.set_ylim(-0.05, 1.05)
    ax.set_title("Sorted BNC (solid: teacher units, dashed: student units)")
    ax.grid(alpha=0.3)
    if layers:
        ax.legend(fontsize=8)
    buf = io.BytesIO()
    fig.savefig(buf, format="png", dpi=110, bbox_inches="tight")
    plt.close(fig)
    atomic_write_bytes(path, buf.getvalue())
    return str(path)


# --------------------------------------------------------------------------------------------------
# the report
# --------------------------------------------------------------------------------------------------
def diagnose(
    teacher: nn.Module,
    student: nn.Module,
    X: np.ndarray,
    y: np.ndarray | None = None,
    eps: float = 0.1,
    norm: str = "inf",
    steps: int = 50,
    restarts: int = 1,
    emplb_restarts: int = 5,
    domain: tuple[Any, Any] | None = None,
    seed: int = 0,
    plot_path: str | Path | None = None,
    max_points: int | None = None,
) -> dict[str, Any]:
    """All diagnostics of the module docstring on the points ``X`` (labels ``y`` optional).

    ``max_points`` keeps the first ``max_points`` points (for speed); ``eps``/``norm``/``steps``
    parameterise every PGD-based entry (EMPLB uses ``emplb_restarts`` restarts).
    """
    X = np.asarray(X, dtype=np.float32).reshape(len(X), -1)
    if y is not None:
        y = np.asarray(y, dtype=np.int64).reshape(-1)
        if len(y) != len(X):
            raise ConfigError(f"diagnose: {len(y)} labels for {len(X)} points")
    if max_points is not None:
        if max_points < 1:
            raise ConfigError(f"--max-points {max_points}: must be at least 1")
        X = X[:max_points]
        y = y[:max_points] if y is not None else None
    if len(X) == 0:
        raise ConfigError("diagnose: no points")
    if not (np.isfinite(eps) and eps >= 0):
        raise ConfigError(f"--eps {eps}: must be a finite number >= 0")
    zt, zs = logits_of(teacher, X), logits_of(student, X)
    if zt.shape[1] != zs.shape[1]:
        raise ConfigError(f"teacher has {zt.shape[1]} outputs but student has {zs.shape[1]}")
    pt, ps = zt.argmax(1), zs.argmax(1)
    ct = torch.softmax(torch.from_numpy(zt), 1).numpy().max(1)
    cs = torch.softmax(torch.from_numpy(zs), 1).numpy().max(1)
    labels = y if y is not None else pt
    out: dict[str, Any] = {"n_points": int(len(X)), "labels": "data" if y is not None else "teacher argmax"}
    out["teacher_accuracy"] = float(np.mean(pt == y)) if y is not None else None
    out["student_accuracy"] = float(np.mean(ps == y)) if y is not None else None
    out["agreement"] = float(np.mean(pt == ps))
    gap = ct - cs
    out["confidence_dominance"] = {
        "fraction": float(np.mean(cs >= ct)),
        "worst_gap": float(gap.max()),
        "mean_gap": float(gap.mean()),
        "definition": "fraction of x with max softmax f_S(x) >= max softmax f_T(x); gap = c_T - c_S",
    }
    rho = gradient_ratio(teacher, student, X, pt)
    out["gradient_ratio"] = {
        "gradient": "grad_x of the logit of the teacher's predicted class, L2 norm (student / teacher)",
        **_stats(rho),
        "fraction_le_1": float(np.mean(rho <= 1.0)),
    }
    gs, gt = logit_gradients(student, X, pt), logit_gradients(teacher, X, pt)
    ns, nt = np.linalg.norm(gs, axis=1), np.linalg.norm(gt, axis=1)
    with np.errstate(divide="ignore", invalid="ignore"):
        cos = np.where((ns > 0) & (nt > 0), (gs * gt).sum(1) / (ns * nt), np.nan)
    out["gradient_cosine"] = _stats(cos)
    common = dict(norm=norm, domain=domain, seed=seed)
    llm_steps = max(1, min(steps, 20))
    out["llm"] = {
        "eps": float(eps),
        "steps": llm_steps,
        "teacher": _stats(local_linearity(teacher, X, labels, eps, steps=llm_steps, **common)),
        "student": _stats(local_linearity(student, X, labels, eps, steps=llm_steps, **common)),
    }
    agree = empirical_agreement(teacher, student, X, eps, steps=steps, restarts=restarts, **common)
    em = emplb(teacher, student, X, eps, steps=steps, restarts=emplb_restarts, **common)
    out["pgd"] = {
        "eps": float(eps),
        "norm": norm,
        "steps": int(steps),
        "restarts": int(restarts),
        "teacher_robust_accuracy": robust_accuracy(
            teacher, X, labels, eps, steps=steps, restarts=restarts, **common
        )
        if y is not None
        else None,
        "student_robust_accuracy": robust_accuracy(
            student, X, labels, eps, steps=steps, restarts=restarts, **common
        )
        if y is not None
        else None,
        "distillation_agreement": float(np.mean(agree)),
        "emplb": _stats(em),
    }
    try:
        layers = bnc_layers(teacher, student, X)
    except UnsupportedModelError as exc:
        layers = []
        out["bnc_note"] = f"BNC needs Linear/ReLU MLPs ({exc})"
    out["bnc"] = [{k: v for k, v in rec.items() if not k.startswith("bnc_")} for rec in layers]
    out["bnc_plot"] = plot_sorted_bnc(layers, plot_path) if plot_path is not None and layers else None
    out["text"] = _render(out)
    return out


def _fmt(v: Any) -> str:
    return "n/a" if v is None else (f"{v:.4f}" if isinstance(v, float) else str(v))


def _render(d: dict[str, Any]) -> str:
    p = d["pgd"]
    lines = [
        f"points: {d['n_points']} (labels: {d['labels']})",
        f"clean accuracy: teacher {_fmt(d['teacher_accuracy'])}, student {_fmt(d['student_accuracy'])}; "
        f"agreement {_fmt(d['agreement'])}",
        f"confidence dominance (Eq. 13): fraction {_fmt(d['confidence_dominance']['fraction'])}, "
        f"worst gap c_T - c_S {_fmt(d['confidence_dominance']['worst_gap'])}",
        f"gradient ratio rho (predicted-class logit): min {_fmt(d['gradient_ratio']['min'])}, "
        f"median {_fmt(d['gradient_ratio']['median'])}, max {_fmt(d['gradient_ratio']['max'])}",
        f"gradient cosine: mean {_fmt(d['gradient_cosine']['mean'])}, "
        f"min {_fmt(d['gradient_cosine']['min'])}",
        f"LLM (eps {p['eps']}): teacher mean {_fmt(d['llm']['teacher']['mean'])}, "
        f"student mean {_fmt(d['llm']['student']['mean'])}",
        f"PGD-{p['steps']} eps {p['eps']} ({p['norm']}): robust accuracy teacher "
        f"{_fmt(p['teacher_robust_accuracy'])}, student {_fmt(p['student_robust_accuracy'])}; "
        f"distillation agreement {_fmt(p['distillation_agreement'])}; EMPLB mean {_fmt(p['emplb']['mean'])}, "
        f"max {_fmt(p['emplb']['max'])}",
    ]
    for rec in d["bnc"]:
        lines.append(
            f"BNC teacher layer {rec['teacher_layer']} <-> student layer {rec['student_layer']}: "
            f"MBNC {rec['mbnc_teacher']:.4f} (teacher side), {rec['mbnc_student']:.4f} (student side)"
        )
    if d.get("bnc_plot"):
        lines.append(f"sorted-BNC plot: {d['bnc_plot']}")
    return "\n".join(lines)
