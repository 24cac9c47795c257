"""Teacher training: standard or PGD adversarial training (Madry et al.), and the shared SGD loop.

Optimisation follows seed 001 appendix A.1: SGD with momentum (0.9) and weight decay, learning rate
annealed by a cosine schedule ``η_k = η_0 · ½ (1 + cos(π k / K))`` over all ``K`` mini-batch steps.

PGD adversarial training (Madry) minimises ``E_(x,y) max_{x' ∈ B_ε(x) ∩ D} CE(f(x'), y)``: each
mini-batch is replaced by its PGD-CE adversarial points (``attack_steps`` steps of
``2.5 ε / attack_steps``, one random start), found with the model in eval mode, and the model is then
trained on them in train mode.  ε is ramped linearly from 0 to its final value over the first
``eps_warmup`` fraction of the epochs (a common stabiliser for small MLPs; set 0 to disable).
"""

from __future__ import annotations

import math
import time
from collections.abc import Callable
from dataclasses import asdict, dataclass
from typing import Any

import numpy as np
import torch
import torch.nn.functional as F
from torch import nn

from encoders.errors import ConfigError
from encoders.progress import Progress

from .attacks import pgd
from .data import Dataset
from .models import (
    check_arch_matches,
    format_arch,
    is_zoo_arch,
    mlp_from_spec,
    parse_arch,
    predict,
    zoo_model,
)

__all__ = ["TrainConfig", "TrainResult", "train_teacher", "fit", "StepLoss"]

#: ``step_loss(model, xb, yb, epoch_fraction) -> scalar`` — the loss of one mini-batch.
StepLoss = Callable[[nn.Module, torch.Tensor, torch.Tensor, float], torch.Tensor]


@dataclass(frozen=True)
class TrainConfig:
    """Everything that determines a teacher run (stored in checkpoints and ONNX sidecars)."""

    arch: str
    adv_eps: float = 0.0
    epochs: int = 30
    lr: float = 0.05
    batch_size: int = 64
    momentum: float = 0.9
    weight_decay: float = 5e-4
    attack_steps: int = 10
    norm: str = "inf"
    eps_warmup: float = 0.2
    seed: int = 0

    def validate(self) -> None:
        if not is_zoo_arch(self.arch):
            parse_arch(self.arch)
        if not math.isfinite(self.adv_eps) or self.adv_eps < 0:
            raise ConfigError(f"--adv-eps {self.adv_eps}: must be a finite number >= 0")
        if self.epochs < 1:
            raise ConfigError(f"--epochs {self.epochs}: must be at least 1")
        if not (self.lr > 0 and math.isfinite(self.lr)):
            raise ConfigError(f"--lr {self.lr}: must be positive")
        if self.batch_size < 1:
            raise ConfigError(f"--batch-size {self.batch_size}: must be at least 1")
        if self.attack_steps < 1:
            raise ConfigError(f"--attack-steps {self.attack_steps}: must be at least 1")
        if self.norm not in ("inf", "2"):
            raise ConfigError(f"--norm {self.norm!r}: choose 'inf' or '2'")
        if not (0.0 <= self.eps_warmup < 1.0):
            raise ConfigError(f"eps_warmup {self.eps_warmup}: must lie in [0, 1)")


@dataclass(frozen=True, eq=False)
class TrainResult:
    """A trained model with its configuration and per-epoch history."""

    model: nn.Module
    config: dict[str, Any]
    history: tuple[dict[str, float], ...]
    train_accuracy: float
    test_accuracy: float
    seconds: float


def fit(
    model: nn.Module,
    X: np.ndarray,
    y: np.ndarray,
    step_loss: StepLoss,
    epochs: int,
    lr: float,
    batch_size: int,
    seed: int,
    momentum: float = 0.9,
    weight_decay: float = 5e-4,
    progress: bool = True,
    desc: str = "train",
    clip_grad_norm: float | None = None,
) -> list[dict[str, float]]:
    """Mini-batch SGD (momentum, weight decay, per-step cosine schedule) on ``step_loss``.

    Shuffling uses a generator seeded with ``seed``; the model is in train mode during updates.
    ``clip_grad_norm`` rescales each step's parameter gradient to at most that global L2 norm
    (double-backprop losses such as KDIGA have rare huge gradients that would kill ReLUs).
    Returns one ``{"epoch", "loss", "lr"}`` record per epoch.
    """
    Xt = torch.from_numpy(np.array(X, dtype=np.float32))
    yt = torch.from_numpy(np.array(y, dtype=np.int64))
    n = Xt.shape[0]
    if n == 0:
        raise ConfigError(f"{desc}: no training points")
    steps_per_epoch = max(1, math.ceil(n / batch_size))
    total = epochs * steps_per_epoch
    opt = torch.optim.SGD(model.parameters(), lr=lr, momentum=momentum, weight_decay=weight_decay)
    sched = torch.optim.lr_scheduler.LambdaLR(
        opt, lambda k: 0.5 * (1.0 + math.cos(math.pi * min(k, total) / total))
    )
    gen = torch.Generator().manual_seed(int(seed))
    history: list[dict[str, float]] = []
    bar = Progress(range(epochs), desc=desc, unit="epoch", enabled=progress)
    for ep in bar:
        perm = torch.randperm(n, generator=gen)
        tot, cnt = 0.0, 0
        for b in range(steps_per_epoch):
            idx = perm[b * batch_size : (b + 1) * batch_size]
            frac = (ep + b / steps_per_epoch) / epochs
            model.train()
            loss = step_loss(model, Xt[idx], yt[idx], frac)
            if not torch.isfinite(loss):
                raise ConfigError(
                    f"--lr {lr}: {desc} diverged (loss {loss.item()} at epoch {ep + 1}); lower it"
                )
            opt.zero_grad(set_to_none=True)
            loss.backward()
            if clip_grad_norm is not None:
                torch.nn.utils.clip_grad_norm_(model.parameters(), clip_grad_norm)
            opt.step()
            sched.step()
            tot += float(loss.detach()) * len(idx)
            cnt += len(idx)
        rec = {"epoch": ep + 1, "loss": tot / cnt, "lr": float(sched.get_last_lr()[0])}
        history.append(rec)
        bar.set_postfix(loss=f"{rec['loss']:.4f}")
    bar.close()
    model.eval()
    return history


def train_teacher(
    data: Dataset,
    arch: str | None = None,
    adv_eps: float = 0.0,
    epochs: int = 30,
    lr: float = 0.05,
    seed: int = 0,
    batch_size: int = 64,
    momentum: float = 0.9,
    weight_decay: float = 5e-4,
    attack_steps: int = 10,
    norm: str = "inf",
    eps_warmup: float = 0.2,
    progress: bool = True,
    checkpoint: str | None = None,
) -> TrainResult:
    """Train a teacher on ``data`` — standard (``adv_eps = 0``) or PGD-AT at radius ``adv_eps``.

    ``arch`` is either MLP widths (default ``f"{n_features}-128-128-{n_classes}"``, must match the
    data) or a zoo preset (:data:`distill.models.ZOO`: ``cnn-small``, ``cnn-large``, ``resnet-mini``,
    ``cnn-tanh-bn``) for image data (``data.image_shape``).  Every model takes the flat features.
    Attacks are clamped to the data's input domain.  With ``checkpoint`` the model is saved there
    (atomically, see :func:`distill.export.save_checkpoint`).
    """
    arch = arch or f"{data.n_features}-128-128-{data.n_classes}"
    zoo = is_zoo_arch(arch)
    widths = None if zoo else parse_arch(arch)
    cfg = TrainConfig(
        arch=str(arch).strip().lower() if zoo else format_arch(widths),  # type: ignore[arg-type]
        adv_eps=float(adv_eps),
        epochs=int(epochs),
        lr=float(lr),
        batch_size=int(batch_size),
        momentum=float(momentum),
        weight_decay=float(weight_decay),
        attack_steps=int(attack_steps),
        norm=str(norm),
        eps_warmup=float(eps_warmup),
        seed=int(seed),
    )
    cfg.validate()
    torch.manual_seed(cfg.seed)
    if zoo:
        model: nn.Module = zoo_model(cfg.arch, data.image_shape, data.n_classes)
    else:
        check_arch_matches(widths, data.n_features, data.n_classes)  # type: ignore[arg-type]
        model = mlp_from_spec(widths)  # type: ignore[arg-type]
    domain = (data.domain_lo, data.domain_hi)
    attack_seed = [cfg.seed * 1_000_003]

    def step_loss(m: nn.Module, xb: torch.Tensor, yb: torch.Tensor, frac: float) -> torch.Tensor:
        if cfg.adv_eps > 0:
            ramp = 1.0 if cfg.eps_warmup == 0 else min(1.0, frac / cfg.eps_warmup)
            eps = cfg.adv_eps * ramp
            attack_seed[0] += 1
            xb = pgd(
                m,
                xb,
                eps,
                norm=cfg.norm,
                steps=cfg.attack_steps,
                restarts=1,
                loss="ce",
                domain=domain,
                y=yb,
                seed=attack_seed[0],
            )
        return F.cross_entropy(m(xb), yb)

    t0 = time.perf_counter()
    history = fit(
        model,
        data.X_train,
        data.y_train,
        step_loss,
        cfg.epochs,
        cfg.lr,
        cfg.batch_size,
        cfg.seed,
        cfg.momentum,
        cfg.weight_decay,
        progress,
        desc="PGD-AT teacher" if cfg.adv_eps > 0 else "teacher",
    )
    secs = time.perf_counter() - t0
    train_acc = float(np.mean(predict(model, data.X_train) == data.y_train))
    test_acc = (
        float(np.mean(predict(model, data.X_test) == data.y_test)) if len(data.y_test) else float("nan")
    )
    config = {"kind": "teacher", "dataset": data.name, **asdict(cfg)}
    result = TrainResult(model, config, tuple(history), train_acc, test_acc, secs)
    if checkpoint:
        from .export import save_checkpoint

        save_checkpoint(model, checkpoint, meta=model_meta(data, config))
    return result


def model_meta(data: Dataset, config: dict[str, Any]) -> dict[str, Any]:
    """The metadata stored with a model: data set, input domain, normalisation, classes, config."""
    return {
        "dataset": data.name,
        "image_shape": list(data.image_shape) if data.image_shape else None,
        "input_domain": {"lo": data.domain_lo.tolist(), "hi": data.domain_hi.tolist()},
        "normalisation": {
            "preprocessing": data.preprocessing,
            "model_input": "the data set's features as loaded (no further normalisation inside the model)",
        },
        "class_names": list(data.class_names),
        "n_features": data.n_features,
        "n_classes": data.n_classes,
        "training": dict(config),
    }
