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

import copy
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
    "teacher_input_gradient",
    "sd",
    "kdiga",
    "kdiga_ard_c",
    "kdiga_ard_a",
    "ard",
    "rslad",
    "fd",
    "distill_student",
    "EQ13_SCOPES",
    "Eq13Config",
    "Eq13Report",
    "distill_for_eq13",
    "eq13_check",
    "eq13_hinge",
    "log_error_mass",
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


def teacher_input_gradient(teacher: ModelFn, x: torch.Tensor, y: torch.Tensor) -> torch.Tensor:
    """Per-sample ``∇_x CE(f_t(x), y)`` (a constant: no graph is kept)."""
    xt = x.detach().clone().requires_grad_(True)
    with torch.enable_grad():
        (gt,) = torch.autograd.grad(F.cross_entropy(teacher(xt), y, reduction="sum"), xt)
    return gt.detach()


def input_gradient_alignment(
    student: ModelFn, teacher: ModelFn, x: torch.Tensor, y: torch.Tensor, gt: torch.Tensor | None = None
) -> torch.Tensor:
    """Per-sample ``‖∇_x CE(f_s(x), y) − ∇_x CE(f_t(x), y)‖₂`` (shape ``(batch,)``), differentiable
    in the student's parameters (double backprop, ``create_graph=True``).

    The per-sample gradients come from the gradient of the *summed* CE, since sample ``i``'s loss
    depends on ``x_i`` only.  ``gt`` may carry the teacher's gradient precomputed by
    :func:`teacher_input_gradient` at the same ``(x, y)`` (it is a constant of the frozen teacher).
    """
    xs = x.detach().clone().requires_grad_(True)
    with torch.enable_grad():
        (gs,) = torch.autograd.grad(F.cross_entropy(student(xs), y, reduction="sum"), xs, create_graph=True)
    if gt is None:
        gt = teacher_input_gradient(teacher, x, y)
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
    ft: torch.Tensor | None = None,
) -> torch.Tensor:
    """Standard distillation (Hinton; seed 001 Eq. 1).

    ``L = α T² KL(f_s(x;T), f_t(x;T)) + (1 − α) CE(f_s(x;1), y)``.  ``ft``: the teacher's logits at
    ``x`` when precomputed (the frozen teacher at fixed points).
    """
    fs = student(x)
    ft = _teacher_logits(teacher, x) if ft is None else ft
    T = cfg.temperature
    return cfg.alpha * T * T * _kl_T(fs, ft, T) + (1 - cfg.alpha) * F.cross_entropy(fs, y)


def kdiga(
    student: nn.Module,
    teacher: ModelFn,
    x: torch.Tensor,
    y: torch.Tensor,
    cfg: DistillConfig,
    x_adv: torch.Tensor | None = None,
    ft: torch.Tensor | None = None,
    gt: torch.Tensor | None = None,
) -> torch.Tensor:
    """KD with input-gradient alignment (seed 002 Eq. 5, seed 000 Eq. 6).

    ``L = λ_CE CE(f_s(x), y) + λ_KL τ² KL(f_s(x;τ), f_t(x;τ))
          + λ_G · mean_i ‖∇_x CE(f_s(x_i), y_i) − ∇_x CE(f_t(x_i), y_i)‖₂``

    (norm convention: per-sample L2 of the flattened input gradient difference, then the batch mean;
    the student's gradient is differentiated through — double backprop).  ``ft``/``gt``: the teacher's
    logits and input gradients at ``(x, y)`` when precomputed.
    """
    fs = student(x)
    ft = _teacher_logits(teacher, x) if ft is None else ft
    tau = cfg.temperature
    iga = input_gradient_alignment(student, teacher, x, y, gt).mean()
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


# --------------------------------------------------------------------------------------------------
# distillation aimed at Eq. 13
# --------------------------------------------------------------------------------------------------
#: Eq. 13 scopes, as in the certifier: which samples must be dominated and at which target.
EQ13_SCOPES: tuple[str, ...] = ("confident", "all", "kappa")


def log_error_mass(z: torch.Tensor, c: torch.Tensor) -> torch.Tensor:
    """``q(z, c) = log(1 − softmax(z)_c) = logsumexp_{j≠c} z_j − logsumexp_j z_j`` per row.

    Computed in log space, so it stays exact where ``p_c`` rounds to 1 (``1 − p_c`` below 1e-16): the
    confidence ``p_c ≥ p'_c`` is ``q ≤ q'``, and ``q`` resolves it where ``p`` cannot.
    """
    others = z.masked_fill(F.one_hot(c, z.shape[1]).bool(), float("-inf"))
    return torch.logsumexp(others, dim=1) - torch.logsumexp(z, dim=1)


def eq13_hinge(
    fs: torch.Tensor,
    ft: torch.Tensor,
    kappa: float,
    scope: str = "confident",
    margin: float = 0.05,
    agree_margin: float = 0.05,
    slack: float = 1e-3,
) -> torch.Tensor:
    r"""Per-sample hinge whose zero set implies Eq. 13 at that sample (shape ``(batch,)``).

    With ``c = argmax f_T(x)``, ``q_S = log(1 − p_S,c)``, ``q_T = log(1 − p_T,c)`` (:func:`log_error_mass`)
    and the teacher-confident indicator ``k = [p_T,c ≥ κ − slack]``:

    .. math::
        h(x) = w(x)\,[q_S − τ(x) + μ]_+ \;+\; k\,[\max_{j≠c} f_{S,j} − f_{S,c} + μ_a]_+

    where ``τ = q_T`` and ``w = k`` for scope ``confident``; ``τ = q_T`` and ``w = 1`` for ``all``;
    ``τ = log(1 − κ)`` and ``w = k`` for ``kappa``.  ``h = 0`` gives ``1 − p_S,c ≤ e^{−μ}(1 − p_T,c)``,
    i.e. ``p_S,c ≥ p_T,c + (1 − e^{−μ})(1 − p_T,c) ≥ p_T,c`` (Eq. 13, with room ``μ`` for the float32
    vs float64 gap between training and certification), and ``f_{S,c}`` above every other logit by
    ``μ_a`` (agreement).  The margins only *strengthen* Eq. 13; the ``slack`` only widens the set of
    samples treated as confident.  The teacher side is a constant (no gradient).
    """
    if scope not in EQ13_SCOPES:
        raise ConfigError(f"eq13 scope {scope!r}: choose one of {', '.join(EQ13_SCOPES)}")
    ft = ft.detach()
    c = ft.argmax(dim=1)
    q_t = log_error_mass(ft, c)
    conf = torch.softmax(ft, dim=1).gather(1, c[:, None])[:, 0]
    k = (conf >= kappa - slack).to(fs.dtype)
    q_s = log_error_mass(fs, c)
    if scope == "kappa":
        target = torch.full_like(q_s, math.log1p(-kappa))
    else:
        target = q_t.to(fs.dtype)
    w = torch.ones_like(k) if scope == "all" else k
    dom = w * F.relu(q_s - target + margin)
    others = fs.masked_fill(F.one_hot(c, fs.shape[1]).bool(), float("-inf")).amax(dim=1)
    agree = k * F.relu(others - fs.gather(1, c[:, None])[:, 0] + agree_margin)
    return dom + agree


def eq13_check(z_t: np.ndarray, z_s: np.ndarray, kappa: float, scope: str = "confident") -> dict[str, Any]:
    """The exact Eq. 13 test of the certifier on logits (float64 softmax, no margins).

    ``K = {i : p_T(x_i)_{c_i} ≥ κ}``, ``c_i = argmax z_T``; the checked set is ``K`` (``confident``,
    ``kappa``) or every sample (``all``); target ``p_T,c`` (``confident``, ``all``) or ``κ``
    (``kappa``).  Violations are ``p_S,c < target``; disagreements are ``argmax z_S ≠ c`` on ``K``.
    """
    if scope not in EQ13_SCOPES:
        raise ConfigError(f"eq13 scope {scope!r}: choose one of {', '.join(EQ13_SCOPES)}")
    z_t, z_s = np.asarray(z_t, np.float64), np.asarray(z_s, np.float64)

    def sm(z: np.ndarray) -> np.ndarray:
        e = np.exp(z - z.max(axis=1, keepdims=True))
        return e / e.sum(axis=1, keepdims=True)

    p_t, p_s = sm(z_t), sm(z_s)
    n = len(z_t)
    c = z_t.argmax(axis=1)
    conf = p_t[np.arange(n), c]
    K = np.flatnonzero(conf >= kappa)
    scope_idx = np.arange(n) if scope == "all" else K
    target = np.full(len(scope_idx), kappa) if scope == "kappa" else p_t[scope_idx, c[scope_idx]]
    gap = p_s[scope_idx, c[scope_idx]] - target
    disagree = int(np.sum(z_s[K].argmax(axis=1) != c[K]))
    return {
        "scope": scope,
        "n_checked": int(len(scope_idx)),
        "n_confident": int(len(K)),
        "violations": int(np.sum(gap < 0)),
        "worst_gap": float(gap.min()) if len(gap) else 0.0,
        "disagreements": disagree,
        "holds": bool(np.all(gap >= 0) and disagree == 0),
    }


@dataclass(frozen=True)
class Eq13Config:
    """Distillation that targets Eq. 13 (:func:`distill_for_eq13`).

    ``kappa``, ``scope``: the certifier's κ and Eq. 13 scope.  ``method``, ``distill``, ``arch``, ``epochs``,
    ``lr``, ``weight_decay``, ``batch_size``, ``seed``, ``clip_grad_norm``: the base distillation (round 1),
    as :func:`distill_student`.  ``hinge_weight`` ``λ_1``: weight of the mean :func:`eq13_hinge` added to
    the base loss in round 1; ``margin``/``agree_margin``/``slack``: the hinge's ``μ``, ``μ_a``, slack.
    Retries: while Eq. 13 fails on the distillation points and fewer than ``max_rounds`` rounds ran, the
    same student is fine-tuned for ``round_epochs`` epochs at ``round_lr`` with ``λ_{r+1} = growth · λ_r``
    (no warm-up).  ``hinge_weight = 0`` and ``max_rounds = 1`` is plain :func:`distill_student`.
    """

    kappa: float = 0.9
    scope: str = "confident"
    method: str = "kdiga"
    distill: DistillConfig = field(default_factory=lambda: DistillConfig(lambda_ce=4.0))
    arch: str | None = None
    epochs: int = 100
    lr: float = 0.05
    weight_decay: float = 5e-4
    batch_size: int = 64
    seed: int = 0
    clip_grad_norm: float | None = 2.0
    hinge_weight: float = 1.0
    margin: float = 0.05
    agree_margin: float = 0.05
    slack: float = 1e-3
    max_rounds: int = 4
    growth: float = 4.0
    round_epochs: int = 30
    round_lr: float = 0.01

    def validate(self) -> None:
        if not (0.0 < self.kappa < 1.0):
            raise ConfigError(f"kappa {self.kappa}: must lie in (0, 1)")
        if self.scope not in EQ13_SCOPES:
            raise ConfigError(f"eq13 scope {self.scope!r}: choose one of {', '.join(EQ13_SCOPES)}")
        resolve_method(self.method)
        self.distill.validate()
        for name in ("hinge_weight", "margin", "agree_margin", "slack"):
            v = getattr(self, name)
            if not (v >= 0 and math.isfinite(v)):
                raise ConfigError(f"eq13 {name} {v}: must be a finite number >= 0")
        if self.growth < 1 or not math.isfinite(self.growth):
            raise ConfigError(f"eq13 growth {self.growth}: must be a finite number >= 1")
        for name in ("epochs", "max_rounds", "round_epochs", "batch_size"):
            if int(getattr(self, name)) < 1:
                raise ConfigError(f"eq13 {name} {getattr(self, name)}: must be at least 1")
        for name in ("lr", "round_lr"):
            v = getattr(self, name)
            if not (v > 0 and math.isfinite(v)):
                raise ConfigError(f"eq13 {name} {v}: must be positive")

    def public(self) -> dict[str, Any]:
        d = {f.name: getattr(self, f.name) for f in dataclasses.fields(self) if f.name != "distill"}
        d["distill"] = self.distill.public()
        return d


@dataclass(frozen=True)
class Eq13Report:
    """How :func:`distill_for_eq13` got there: one entry per round in the tuples; ``final`` is
    :func:`eq13_check` of the returned student (exact Eq. 13, float64, no margins)."""

    holds: bool
    rounds: int
    hinge_weights: tuple[float, ...]
    violations: tuple[int, ...]
    disagreements: tuple[int, ...]
    worst_gaps: tuple[float, ...]
    final: dict[str, Any]
    train_agreement: float
    seconds: float
    config: dict[str, Any]
    history: tuple[dict[str, float], ...] = ()

    def to_dict(self) -> dict[str, Any]:
        d = dataclasses.asdict(self)
        d["history"] = list(self.history)
        for k in ("hinge_weights", "violations", "disagreements", "worst_gaps"):
            d[k] = list(d[k])
        return d


def _float64_logits(model: nn.Module, X: np.ndarray) -> np.ndarray:
    """Logits in float64 when the model can be copied and cast, else the model's own dtype."""
    try:
        m64 = copy.deepcopy(model).double()
        with eval_mode(m64), torch.no_grad():
            out = m64(torch.from_numpy(np.asarray(X, np.float64)))
        return out.numpy().astype(np.float64)
    except Exception:  # noqa: BLE001 - a module that cannot be cast: its own precision
        return logits_of(model, X)


def _teacher_gradients(teacher: nn.Module, X: np.ndarray, y: np.ndarray, batch: int = 256) -> torch.Tensor:
    """:func:`teacher_input_gradient` at every row of ``X`` (float32, in batches)."""
    out = []
    Xt, yt = torch.from_numpy(np.asarray(X, np.float32)), torch.from_numpy(np.asarray(y, np.int64))
    for i in range(0, len(Xt), batch):
        out.append(teacher_input_gradient(teacher, Xt[i : i + batch], yt[i : i + batch]))
    return torch.cat(out)


def distill_for_eq13(
    teacher: Any,
    data: Dataset | np.ndarray,
    config: Eq13Config | None = None,
    domain: tuple[Any, Any] | None = None,
    progress: bool = False,
    teacher_logits: np.ndarray | None = None,
) -> tuple[nn.Module, Eq13Report]:
    """Distil a fresh MLP student on ``data`` with the base method plus :func:`eq13_hinge`, and retry
    with a stronger hinge until Eq. 13 holds on the distillation points (:class:`Eq13Config`).

    Parameters
    ----------
    teacher
        A :class:`distill.teacher.Teacher` (its ``module`` is used) or any module mapping flat inputs to
        logits.  Frozen for the run.
    data
        A :class:`Dataset` (training inputs and domain) or an array of flat inputs (the certifier's
        sample).  Labels are always the teacher's argmax (seed 000 Algorithm 1, line 4).
    domain
        ``(lo, hi)`` clamp of the adversarial methods (default: the data set's).
    teacher_logits
        The teacher's logits at the points as the certifier computes them (e.g. onnxruntime or the
        network IR); they define the labels, the confident set and the Eq. 13 targets of the report.
        Default: the teacher module's float32 forward.  The student is checked in float64.

    Returns
    -------
    (student, report)
        The float32 ``nn.Sequential`` student (eval mode) and an :class:`Eq13Report`.  Eq. 13 is never
        weakened: ``report.holds`` is the exact check; a run that does not reach it says so.
    """
    cfg = config or Eq13Config()
    cfg.validate()
    tmod: nn.Module = getattr(teacher, "module", teacher)
    if isinstance(data, Dataset):
        X = np.asarray(data.X_train, np.float32)
        domain = domain if domain is not None else (data.domain_lo, data.domain_hi)
    else:
        X = np.asarray(data, np.float32).reshape(len(data), -1)
    if len(X) == 0:
        raise ConfigError("distill_for_eq13: no distillation points")
    if len(X) >= 2**24:
        raise ConfigError(f"distill_for_eq13: {len(X)} points; at most 2^24 are supported")
    method = resolve_method(cfg.method)
    loss_fn = LOSSES[method]
    if teacher_logits is None:
        z_t = logits_of(tmod, X)
    else:
        z_t = np.asarray(teacher_logits, np.float64)
        if z_t.ndim != 2 or len(z_t) != len(X):
            raise ConfigError(f"teacher_logits: expected shape ({len(X)}, K), got {z_t.shape}")
    y = z_t.argmax(axis=1).astype(np.int64)
    n_features, n_classes = int(X.shape[1]), int(z_t.shape[1])
    widths = parse_arch(cfg.arch or f"{n_features}-32-32-{n_classes}")
    check_arch_matches(widths, n_features, n_classes)
    base = dataclasses.replace(cfg.distill, domain=domain)
    base.validate()

    # The teacher's logits at the distillation points are computed once (float32, as in training);
    # each batch carries its row indices in an extra last column so the hinge can look them up.
    zt32 = torch.from_numpy(z_t).float()
    X_aug = np.concatenate([X, np.arange(len(X), dtype=np.float32)[:, None]], axis=1)  # exact below 2^24
    # For the clean-point methods the teacher's terms are constants of the sample: computed once
    # (a large CNN teacher would otherwise dominate every step).  Same formulas, same values.
    with eval_mode(tmod):
        gt32 = _teacher_gradients(tmod, X, y) if method == "kdiga" else None

    def make_step(cfg_loss: DistillConfig, lam: float) -> Callable[..., torch.Tensor]:
        def step_loss(m: nn.Module, xb_aug: torch.Tensor, yb: torch.Tensor, frac: float) -> torch.Tensor:
            xb, rows = xb_aug[:, :-1], xb_aug[:, -1].long()
            c = cfg_loss
            if c.warmup > 0 and frac < c.warmup:
                r = frac / c.warmup
                c = dataclasses.replace(c, lambda_g=c.lambda_g * r, eps=c.eps * r)
            if method == "kdiga":
                loss = kdiga(m, tmod, xb, yb, c, ft=zt32[rows], gt=gt32[rows])  # type: ignore[index]
            elif method == "sd":
                loss = sd(m, tmod, xb, yb, c, ft=zt32[rows])
            else:
                loss = loss_fn(m, tmod, xb, yb, c)
            if lam > 0:
                h = eq13_hinge(
                    m(xb), zt32[rows], cfg.kappa, cfg.scope, cfg.margin, cfg.agree_margin, cfg.slack
                )
                loss = loss + lam * h.mean()
            return loss

        return step_loss

    torch.manual_seed(int(cfg.seed))
    student = mlp_from_spec(widths)
    flags = [(p, p.requires_grad) for p in tmod.parameters()]
    weights: list[float] = []
    checks: list[dict[str, Any]] = []
    history: list[dict[str, float]] = []
    t0 = time.perf_counter()
    try:
        for p, _ in flags:
            p.requires_grad_(False)
        with eval_mode(tmod):
            lam = float(cfg.hinge_weight)
            for r in range(int(cfg.max_rounds)):
                first = r == 0
                hist = fit(
                    student,
                    X_aug,
                    y,
                    make_step(base if first else dataclasses.replace(base, warmup=0.0), lam),
                    int(cfg.epochs if first else cfg.round_epochs),
                    float(cfg.lr if first else cfg.round_lr),
                    int(cfg.batch_size),
                    int(cfg.seed) + r,
                    0.9,
                    float(cfg.weight_decay),
                    progress,
                    desc=f"distill {method} eq13 round {r + 1}",
                    clip_grad_norm=cfg.clip_grad_norm,
                )
                history += [{**h, "round": r + 1} for h in hist]
                weights.append(lam)
                checks.append(eq13_check(z_t, _float64_logits(student, X), cfg.kappa, cfg.scope))
                if checks[-1]["holds"]:
                    break
                lam = lam * cfg.growth if lam > 0 else float(cfg.growth)
    finally:
        for p, flag in flags:
            p.requires_grad_(flag)
    student.eval()
    secs = time.perf_counter() - t0
    agree = float(np.mean(predict(student, X) == y))
    config_d = {
        "kind": "student",
        "method": method,
        "arch": format_arch(widths),
        "points": int(len(X)),
        "labels": "teacher argmax",
        "eq13": cfg.public(),
    }
    report = Eq13Report(
        holds=bool(checks[-1]["holds"]),
        rounds=len(checks),
        hinge_weights=tuple(weights),
        violations=tuple(int(c["violations"]) for c in checks),
        disagreements=tuple(int(c["disagreements"]) for c in checks),
        worst_gaps=tuple(float(c["worst_gap"]) for c in checks),
        final=checks[-1],
        train_agreement=agree,
        seconds=secs,
        config=config_d,
        history=tuple(history),
    )
    return student, report
