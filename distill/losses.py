"""Seven distillation losses with one signature, and :func:`distill_student`.

Every loss is ``fn(student, teacher, x, y, cfg, x_adv=None) -> scalar tensor`` (a batch mean), and
the registry :data:`LOSSES` maps its name to it.  ``x_adv`` is the adversarial batch ``x + δ0`` of the
adversarial methods; when it is ``None`` they compute it with the in-house PGD
(:func:`distill.attacks.pgd`, ``cfg.attack_steps`` steps of ``2.5 ε / steps``, one random start,
clamped to ``cfg.domain``).  Non-adversarial methods ignore it.

Notation (per sample, averaged over the batch):

* ``f_s``, ``f_t`` — student and teacher logits; ``p(z; T) = softmax(z / T)``.
* ``KL(f_s(x;T), f_t(x;T)) = Σ_k p(f_t;T)_k · [log p(f_t;T)_k − log p(f_s;T)_k]`` — the distillation
  KL with the teacher as the target distribution (Hinton et al.; torch's
  ``kl_div(log_softmax(f_s/T), softmax(f_t/T))``).
* ``CE(f, y) = −log p(f; 1)_y``.
* ``g_s(x) = ∇_x CE(f_s(x), y)``, ``g_t(x) = ∇_x CE(f_t(x), y)`` — **per-sample** input gradients.
  Input-gradient alignment ``IGA(x) = ‖g_s(x) − g_t(x)‖₂`` per sample (flattened L2 norm), then the
  batch mean.  ``g_s`` is built with ``create_graph=True`` (double backprop), so the alignment term
  has a gradient with respect to the student's parameters; ``g_t`` is a constant (the teacher is
  frozen).

The teacher is always in eval mode and receives no parameter gradients.
"""

from __future__ import annotations

import dataclasses
import math
import time
from collections.abc import Callable
from dataclasses import dataclass, field
from typing import Any

import numpy as np
import torch
import torch.nn.functional as F
from torch import nn

from encoders.errors import ConfigError

from .attacks import kl_div, pgd
from .data import Dataset
from .models import check_arch_matches, eval_mode, format_arch, logits_of, mlp_from_spec, parse_arch, predict
from .train import fit

__all__ = [
    "DistillConfig",
    "DistillResult",
    "LOSSES",
    "METHOD_NAMES",
    "ADVERSARIAL_METHODS",
    "resolve_method",
    "input_gradient_alignment",
    "sd",
    "kdiga",
    "kdiga_ard_c",
    "kdiga_ard_a",
    "ard",
    "rslad",
    "fd",
    "distill_student",
]

ModelFn = Callable[[torch.Tensor], torch.Tensor]


@dataclass(frozen=True)
class DistillConfig:
    """Hyper-parameters shared by the losses (each uses the ones in its formula).

    ``alpha`` and ``temperature`` (T, τ) weight the distillation terms of SD, ARD, RSLAD, FD and the
    KDIGA-ARD variants; ``lambda_ce``, ``lambda_kl``, ``lambda_g`` weight KDIGA's three terms and
    ``lambda_g`` the alignment term of KDIGA-ARD; ``eps``/``norm``/``attack_steps`` define δ0;
    ``domain`` = ``(lo, hi)`` clamps the adversarial points.

    ``warmup`` is a training schedule used by :func:`distill_student`, not part of any formula: over
    the first ``warmup`` fraction of training, ``lambda_g`` and ``eps`` ramp linearly from 0 to their
    values (a student that has to match the teacher's input gradients before it fits the labels tends
    to collapse to a dead, constant network).  The defaults were tuned on digits (64-32-32-10 student
    of a PGD-AT 64-128-128-10 teacher, 80 epochs).
    """

    alpha: float = 0.9
    temperature: float = 4.0
    lambda_ce: float = 1.0
    lambda_kl: float = 1.0
    lambda_g: float = 10.0
    eps: float = 0.1
    norm: str = "inf"
    attack_steps: int = 10
    warmup: float = 0.3
    domain: tuple[Any, Any] | None = field(default=None, compare=False, repr=False)

    def validate(self) -> None:
        if not (0.0 <= self.alpha <= 1.0):
            raise ConfigError(f"--alpha {self.alpha}: must lie in [0, 1]")
        if not (self.temperature > 0 and math.isfinite(self.temperature)):
            raise ConfigError(f"--temperature {self.temperature}: must be positive")
        for name in ("lambda_ce", "lambda_kl", "lambda_g"):
            v = getattr(self, name)
            if not (v >= 0 and math.isfinite(v)):
                raise ConfigError(f"--{name.replace('_', '-')} {v}: must be a finite number >= 0")
        if not (self.eps >= 0 and math.isfinite(self.eps)):
            raise ConfigError(f"--eps {self.eps}: must be a finite number >= 0")
        if self.norm not in ("inf", "2"):
            raise ConfigError(f"--norm {self.norm!r}: choose 'inf' or '2'")
        if self.attack_steps < 1:
            raise ConfigError(f"--attack-steps {self.attack_steps}: must be at least 1")
        if not (0.0 <= self.warmup < 1.0):
            raise ConfigError(f"--warmup {self.warmup}: must lie in [0, 1)")

    def public(self) -> dict[str, Any]:
        d = dataclasses.asdict(self)
        d.pop("domain", None)
        return d


def _kl_T(fs: torch.Tensor, ft: torch.Tensor, T: float) -> torch.Tensor:
    """Batch mean of ``KL(f_s(·;T), f_t(·;T))`` (teacher as target)."""
    return kl_div(fs / T, ft / T, reduction="mean")


def _teacher_logits(teacher: ModelFn, x: torch.Tensor) -> torch.Tensor:
    with torch.no_grad():
        return teacher(x).detach()


def input_gradient_alignment(
    student: ModelFn, teacher: ModelFn, x: torch.Tensor, y: torch.Tensor
) -> torch.Tensor:
    """Per-sample ``‖∇_x CE(f_s(x), y) − ∇_x CE(f_t(x), y)‖₂`` (shape ``(batch,)``), differentiable
    in the student's parameters (double backprop, ``create_graph=True``).

    The per-sample gradients come from the gradient of the *summed* CE, since sample ``i``'s loss
    depends on ``x_i`` only.
    """
    xs = x.detach().clone().requires_grad_(True)
    with torch.enable_grad():
        (gs,) = torch.autograd.grad(F.cross_entropy(student(xs), y, reduction="sum"), xs, create_graph=True)
        xt = x.detach().clone().requires_grad_(True)
        (gt,) = torch.autograd.grad(F.cross_entropy(teacher(xt), y, reduction="sum"), xt)
    diff = (gs - gt.detach()).flatten(1)
    # sqrt(Σ d² + tiny): differentiable at d = 0 (plain norm has a 0/0 gradient there); the offset
    # changes the value by at most 1e-12.
    return torch.sqrt((diff * diff).sum(dim=1) + 1e-24)


def _attack(
    student: nn.Module, teacher: ModelFn, x: torch.Tensor, y: torch.Tensor, cfg: DistillConfig, loss: str
) -> torch.Tensor:
    seed = int(torch.randint(0, 2**31 - 1, (1,)).item())  # from the (seeded) global torch RNG
    return pgd(
        student,
        x,
        cfg.eps,
        norm=cfg.norm,
        steps=cfg.attack_steps,
        restarts=1,
        loss=loss,
        domain=cfg.domain,
        y=y,
        teacher=teacher,
        seed=seed,
    ).detach()


# --------------------------------------------------------------------------------------------------
# the losses
# --------------------------------------------------------------------------------------------------
def sd(
    student: nn.Module,
    teacher: ModelFn,
    x: torch.Tensor,
    y: torch.Tensor,
    cfg: DistillConfig,
    x_adv: torch.Tensor | None = None,
) -> torch.Tensor:
    """Standard distillation (Hinton; seed 001 Eq. 1).

    ``L = α T² KL(f_s(x;T), f_t(x;T)) + (1 − α) CE(f_s(x;1), y)``.
    """
    fs = student(x)
    ft = _teacher_logits(teacher, x)
    T = cfg.temperature
    return cfg.alpha * T * T * _kl_T(fs, ft, T) + (1 - cfg.alpha) * F.cross_entropy(fs, y)


def kdiga(
    student: nn.Module,
    teacher: ModelFn,
    x: torch.Tensor,
    y: torch.Tensor,
    cfg: DistillConfig,
    x_adv: torch.Tensor | None = None,
) -> torch.Tensor:
    """KD with input-gradient alignment (seed 002 Eq. 5, seed 000 Eq. 6).

    ``L = λ_CE CE(f_s(x), y) + λ_KL τ² KL(f_s(x;τ), f_t(x;τ))
          + λ_G · mean_i ‖∇_x CE(f_s(x_i), y_i) − ∇_x CE(f_t(x_i), y_i)‖₂``

    (norm convention: per-sample L2 of the flattened input gradient difference, then the batch mean;
    the student's gradient is differentiated through — double backprop).
    """
    fs = student(x)
    ft = _teacher_logits(teacher, x)
    tau = cfg.temperature
    iga = input_gradient_alignment(student, teacher, x, y).mean()
    return (
        cfg.lambda_ce * F.cross_entropy(fs, y)
        + cfg.lambda_kl * tau * tau * _kl_T(fs, ft, tau)
        + cfg.lambda_g * iga
    )


def ard(
    student: nn.Module,
    teacher: ModelFn,
    x: torch.Tensor,
    y: torch.Tensor,
    cfg: DistillConfig,
    x_adv: torch.Tensor | None = None,
) -> torch.Tensor:
    """Adversarially robust distillation (Goldblum et al.; seed 001 Eq. 4).

    ``L = α T² KL(f_s(x+δ0;T), f_t(x;T)) + (1 − α) CE(f_s(x;1), y)``,
    ``δ0 = argmax_{‖δ‖ ≤ ε, x+δ ∈ D} CE(f_s(x+δ), y)`` (PGD on the student).
    """
    if x_adv is None:
        x_adv = _attack(student, teacher, x, y, cfg, "ce")
    T = cfg.temperature
    ft = _teacher_logits(teacher, x)
    return cfg.alpha * T * T * _kl_T(student(x_adv), ft, T) + (1 - cfg.alpha) * F.cross_entropy(student(x), y)


def kdiga_ard_c(
    student: nn.Module,
    teacher: ModelFn,
    x: torch.Tensor,
    y: torch.Tensor,
    cfg: DistillConfig,
    x_adv: torch.Tensor | None = None,
) -> torch.Tensor:
    """KDIGA-ARD_C (seed 002 Eq. 6): ARD plus input-gradient alignment at the **clean** points.

    ``L = α T² KL(f_s(x+δ0;T), f_t(x;T)) + (1 − α) CE(f_s(x), y)
          + λ_G · mean_i ‖∇_x CE(f_s(x_i), y_i) − ∇_x CE(f_t(x_i), y_i)‖₂``,
    ``δ0 = argmax CE(f_s(x+δ), y)`` as in ARD.
    """
    return _ard_plus_alignment(student, teacher, x, y, cfg, x_adv, at_adversarial=False)


def kdiga_ard_a(
    student: nn.Module,
    teacher: ModelFn,
    x: torch.Tensor,
    y: torch.Tensor,
    cfg: DistillConfig,
    x_adv: torch.Tensor | None = None,
) -> torch.Tensor:
    """KDIGA-ARD_A (seed 002 Eq. 7): ARD plus input-gradient alignment at the **adversarial** points.

    ``L = α T² KL(f_s(x+δ0;T), f_t(x;T)) + (1 − α) CE(f_s(x), y)
          + λ_G · mean_i ‖∇_x CE(f_s(x_i+δ0_i), y_i) − ∇_x CE(f_t(x_i+δ0_i), y_i)‖₂``,
    ``δ0 = argmax CE(f_s(x+δ), y)`` as in ARD.
    """
    return _ard_plus_alignment(student, teacher, x, y, cfg, x_adv, at_adversarial=True)


def _ard_plus_alignment(
    student: nn.Module,
    teacher: ModelFn,
    x: torch.Tensor,
    y: torch.Tensor,
    cfg: DistillConfig,
    x_adv: torch.Tensor | None,
    at_adversarial: bool,
) -> torch.Tensor:
    """ARD + ``λ_G`` · mean input-gradient alignment at the clean (ARD_C) or adversarial (ARD_A) points."""
    if x_adv is None:
        x_adv = _attack(student, teacher, x, y, cfg, "ce")
    at = x_adv if at_adversarial else x
    return (
        ard(student, teacher, x, y, cfg, x_adv)
        + cfg.lambda_g * input_gradient_alignment(student, teacher, at, y).mean()
    )


def rslad(
    student: nn.Module,
    teacher: ModelFn,
    x: torch.Tensor,
    y: torch.Tensor,
    cfg: DistillConfig,
    x_adv: torch.Tensor | None = None,
) -> torch.Tensor:
    """Robust soft-label adversarial distillation (Zi et al.; seed 001 Eq. 5).  No hard labels.

    ``L = α KL(f_s(x+δ0), f_t(x)) + (1 − α) KL(f_s(x), f_t(x))`` (temperature 1),
    ``δ0 = argmax_{‖δ‖ ≤ ε, x+δ ∈ D} KL(f_s(x+δ), f_t(x))`` — the teacher's clean soft labels.
    """
    if x_adv is None:
        x_adv = _attack(student, teacher, x, y, cfg, "kl_teacher_clean")
    ft = _teacher_logits(teacher, x)
    return cfg.alpha * _kl_T(student(x_adv), ft, 1.0) + (1 - cfg.alpha) * _kl_T(student(x), ft, 1.0)


def fd(
    student: nn.Module,
    teacher: ModelFn,
    x: torch.Tensor,
    y: torch.Tensor,
    cfg: DistillConfig,
    x_adv: torch.Tensor | None = None,
) -> torch.Tensor:
    """Faithful distillation (seed 001 Eq. 12).

    ``L = α T² KL(f_s(x+δ0;T), f_t(x+δ0;T)) + (1 − α) CE(f_s(x;1), y)``,
    ``δ0 = argmax_{‖δ‖∞ ≤ ε, x+δ ∈ D} KL(f_s(x+δ), f_t(x+δ))`` — teacher evaluated at the perturbed
    point.
    """
    if x_adv is None:
        x_adv = _attack(student, teacher, x, y, cfg, "kl_teacher")
    T = cfg.temperature
    ft_adv = _teacher_logits(teacher, x_adv)
    return cfg.alpha * T * T * _kl_T(student(x_adv), ft_adv, T) + (1 - cfg.alpha) * F.cross_entropy(
        student(x), y
    )


LossFn = Callable[..., torch.Tensor]
LOSSES: dict[str, LossFn] = {
    "sd": sd,
    "kdiga": kdiga,
    "kdiga_ard_c": kdiga_ard_c,
    "kdiga_ard_a": kdiga_ard_a,
    "ard": ard,
    "rslad": rslad,
    "fd": fd,
}
METHOD_NAMES: tuple[str, ...] = tuple(LOSSES)
#: methods that build adversarial points δ0 during training
ADVERSARIAL_METHODS: frozenset[str] = frozenset({"ard", "kdiga_ard_c", "kdiga_ard_a", "rslad", "fd"})


def resolve_method(name: str) -> str:
    """Canonical method name: case-insensitive, ``-`` and ``_`` interchangeable (``KDIGA-ARD-C``)."""
    key = str(name).strip().lower().replace("-", "_")
    if key not in LOSSES:
        raise ConfigError(f"--method {name!r}: unknown; choose one of {', '.join(METHOD_NAMES)}")
    return key


# --------------------------------------------------------------------------------------------------
# distillation driver
# --------------------------------------------------------------------------------------------------
@dataclass(frozen=True, eq=False)
class DistillResult:
    """A distilled student with its configuration and history."""

    model: nn.Module
    config: dict[str, Any]
    history: tuple[dict[str, float], ...]
    label_source: str
    train_agreement: float
    seconds: float


_LABEL_SOURCES = ("auto", "teacher", "data")


def _default_eps(teacher: ModelFn, domain: tuple[Any, Any] | None) -> float:
    meta = getattr(teacher, "meta", None) or {}
    tr = meta.get("training") or {}
    e = tr.get("adv_eps")
    if isinstance(e, int | float) and e > 0:
        return float(e)
    if domain is not None:
        return 0.1 * float(np.mean(np.asarray(domain[1], np.float64) - np.asarray(domain[0], np.float64)))
    return 0.1


def distill_student(
    teacher: nn.Module,
    data_or_X: Dataset | np.ndarray,
    method: str = "kdiga",
    arch: str | None = None,
    epochs: int = 80,
    seed: int = 0,
    cfg: DistillConfig | None = None,
    labels: str = "auto",
    y: np.ndarray | None = None,
    lr: float = 0.05,
    batch_size: int = 64,
    momentum: float = 0.9,
    weight_decay: float = 5e-4,
    domain: tuple[Any, Any] | None = None,
    progress: bool = True,
    clip_grad_norm: float | None = 2.0,
) -> DistillResult:
    """Distil ``teacher`` into a fresh MLP student with ``method`` (a key of :data:`LOSSES`).

    Parameters
    ----------
    data_or_X
        A :class:`Dataset` (its training split and domain are used) or an array of inputs.
    arch
        Student widths; defaults to ``f"{n_features}-32-32-{n_classes}"``; must match the data and the
        teacher's output size.
    cfg
        Loss hyper-parameters; ``cfg.eps`` defaults (when ``cfg`` is None) to the teacher's training
        ``adv_eps`` from its metadata, else ``0.1 ×`` the mean domain width.
    labels
        ``"teacher"`` — distil on ``(x, argmax f_T(x))`` (seed 000 Algorithm 1, line 4); ``"data"`` —
        the data's labels; ``"auto"`` — the data's labels when there are any, the teacher's otherwise.

    clip_grad_norm
        Global L2 clip of each step's parameter gradient (default 2.0; the double-backprop KDIGA loss
        has rare very large gradients that kill ReLUs; ``None`` disables).

    Training: the SGD/cosine loop of :func:`distill.train.fit`, seeded by ``seed``.
    """
    method = resolve_method(method)
    if labels not in _LABEL_SOURCES:
        raise ConfigError(f"--labels {labels!r}: choose one of {', '.join(_LABEL_SOURCES)}")
    if isinstance(data_or_X, Dataset):
        X = data_or_X.X_train
        y_data = data_or_X.y_train if y is None else y
        domain = domain if domain is not None else (data_or_X.domain_lo, data_or_X.domain_hi)
        data_name: str | None = data_or_X.name
    else:
        X = np.asarray(data_or_X, dtype=np.float32).reshape(len(data_or_X), -1)
        y_data = y
        data_name = None
    n_features = int(X.shape[1])
    with eval_mode(teacher):
        t_logits = logits_of(teacher, X)
    n_classes = int(t_logits.shape[1])
    if isinstance(data_or_X, Dataset) and data_or_X.n_classes != n_classes:
        raise ConfigError(
            f"--teacher: has {n_classes} outputs but data set {data_or_X.name} has "
            f"{data_or_X.n_classes} classes"
        )
    if labels == "data" and y_data is None:
        raise ConfigError("--labels data: the data has no labels")
    use_teacher = labels == "teacher" or (labels == "auto" and y_data is None)
    y_train = t_logits.argmax(axis=1).astype(np.int64) if use_teacher else np.asarray(y_data, np.int64)
    if len(y_train) != len(X):
        raise ConfigError(f"labels: {len(y_train)} labels for {len(X)} points")
    widths = parse_arch(arch or f"{n_features}-32-32-{n_classes}")
    check_arch_matches(widths, n_features, n_classes)
    if cfg is None:
        cfg = DistillConfig(eps=_default_eps(teacher, domain))
    cfg = dataclasses.replace(cfg, domain=domain)
    cfg.validate()
    if epochs < 1:
        raise ConfigError(f"--epochs {epochs}: must be at least 1")
    loss_fn = LOSSES[method]

    torch.manual_seed(int(seed))
    student = mlp_from_spec(widths)

    def step_loss(m: nn.Module, xb: torch.Tensor, yb: torch.Tensor, frac: float) -> torch.Tensor:
        c = cfg
        if cfg.warmup > 0 and frac < cfg.warmup:  # ramp the alignment weight and ε up from 0
            r = frac / cfg.warmup
            c = dataclasses.replace(cfg, lambda_g=cfg.lambda_g * r, eps=cfg.eps * r)
        return loss_fn(m, teacher, xb, yb, c)

    # freeze the teacher for the run (no parameter graph, no .grad), then restore its flags
    flags = [(p, p.requires_grad) for p in teacher.parameters()]
    t0 = time.perf_counter()
    try:
        for p, _ in flags:
            p.requires_grad_(False)
        with eval_mode(teacher):
            history = fit(
                student,
                X,
                y_train,
                step_loss,
                int(epochs),
                float(lr),
                int(batch_size),
                int(seed),
                momentum,
                weight_decay,
                progress,
                desc=f"distill {method}",
                clip_grad_norm=clip_grad_norm,
            )
    finally:
        for p, flag in flags:
            p.requires_grad_(flag)
    secs = time.perf_counter() - t0
    agree = float(np.mean(predict(student, X) == t_logits.argmax(axis=1)))
    config = {
        "kind": "student",
        "method": method,
        "arch": format_arch(widths),
        "epochs": int(epochs),
        "lr": float(lr),
        "batch_size": int(batch_size),
        "momentum": float(momentum),
        "weight_decay": float(weight_decay),
        "clip_grad_norm": clip_grad_norm,
        "seed": int(seed),
        "labels": "teacher argmax" if use_teacher else "data",
        "dataset": data_name,
        **cfg.public(),
    }
    return DistillResult(student, config, tuple(history), config["labels"], agree, secs)
