"""In-house projected gradient ascent (PGD) with pluggable objectives, and EMPLB.

PGD (Madry et al.) maximises a per-sample objective ``L(x')`` over the feasible set

    S(x) = { x' : ‖x' − x‖_p ≤ ε }  ∩  [lo, hi]          (p ∈ {∞, 2}, [lo, hi] the input domain)

by iterating ``x' ← Π_S(x' + η · s(∇L(x')))`` with ``s(g) = sign(g)`` for L∞ and ``s(g) = g/‖g‖₂`` for
L2, from a uniform random start in the ball (restart 0 may start at ``x`` when
``random_start=False``).  Projection: for L∞ the clip to ``[max(lo, x−ε), min(hi, x+ε)]`` is exact;
for L2 the radial projection onto the ball followed by clipping into the domain box stays in the ball
because clipping moves every coordinate towards ``x ∈ [lo, hi]``.  The clean point and every iterate
of every restart are candidates: per sample, the candidate with the largest objective is returned.
So the returned point is always feasible, and its objective is a valid *lower bound* on the true
maximum (what EMPLB relies on).

Objectives (``loss=``, registry ``ATTACK_LOSSES``; ``f`` is the attacked model, ``t`` the teacher,
``p = softmax``; KL(a, b) below is ``Σ_k p(b)_k (log p(b)_k − log p(a)_k)``, torch's
``kl_div(log_softmax(a), softmax(b))``):

* ``"ce"``             ``CE(f(x'), y)`` (``y`` defaults to ``argmax f(x)``: untargeted misclassification)
* ``"kl_teacher"``     ``KL(f(x'), t(x'))``  — teacher at the perturbed point (FD, seed 001 Eq. 12)
* ``"kl_teacher_clean"`` ``KL(f(x'), t(x))`` — teacher's clean soft labels (RSLAD)
* ``"conf_diff"``      ``‖p(t(x')) − p(f(x'))‖∞`` (EMPLB, seed 001 §4.1)
* ``"disagree"``       ``CE(f(x'), argmax t(x'))`` — the teacher's hard label at the current iterate
                       (seed 001 §6; "oracle-adversarial", seed 004 Eq. 3)

A callable ``loss(model, x_adv, ctx) -> (batch,)`` may be given instead (``ctx`` is an
:class:`AttackContext`).  The model and teacher are put in eval mode for the attack and their previous
modes restored; gradients are taken with respect to the input only (no parameter ``.grad`` is touched).
"""

from __future__ import annotations

import copy
from collections.abc import Callable
from dataclasses import dataclass
from typing import Any

import numpy as np
import torch
import torch.nn.functional as F
from torch import nn

from encoders.errors import ConfigError

from .models import eval_mode

__all__ = [
    "AttackContext",
    "ATTACK_LOSSES",
    "pgd",
    "pgd_with_loss",
    "emplb",
    "robust_accuracy",
    "empirical_agreement",
    "as_domain",
    "as_float64",
]

ModelFn = Callable[[torch.Tensor], torch.Tensor]


@dataclass(frozen=True, eq=False)
class AttackContext:
    """What an objective may use besides the model and the perturbed input."""

    x0: torch.Tensor  # the clean points of this chunk
    y: torch.Tensor | None  # labels (int64) or None
    teacher: ModelFn | None


def kl_div(
    student_logits: torch.Tensor, teacher_logits: torch.Tensor, reduction: str = "none"
) -> torch.Tensor:
    """``KL(p_t ‖ p_s) = Σ_k p_t,k (log p_t,k − log p_s,k)`` per row (``reduction="none"``) or batch mean."""
    logq = F.log_softmax(student_logits, dim=1)
    logp = F.log_softmax(teacher_logits, dim=1)
    per = (logp.exp() * (logp - logq)).sum(dim=1)
    return per if reduction == "none" else per.mean()


def _need_teacher(ctx: AttackContext, name: str) -> ModelFn:
    if ctx.teacher is None:
        raise ConfigError(f"PGD loss {name!r} needs a teacher")
    return ctx.teacher


def _loss_ce(model: ModelFn, xa: torch.Tensor, ctx: AttackContext) -> torch.Tensor:
    assert ctx.y is not None
    return F.cross_entropy(model(xa), ctx.y, reduction="none")


def _loss_kl_teacher(model: ModelFn, xa: torch.Tensor, ctx: AttackContext) -> torch.Tensor:
    t = _need_teacher(ctx, "kl_teacher")
    return kl_div(model(xa), t(xa))


def _loss_kl_teacher_clean(model: ModelFn, xa: torch.Tensor, ctx: AttackContext) -> torch.Tensor:
    t = _need_teacher(ctx, "kl_teacher_clean")
    with torch.no_grad():
        tl = t(ctx.x0)
    return kl_div(model(xa), tl)


def _loss_conf_diff(model: ModelFn, xa: torch.Tensor, ctx: AttackContext) -> torch.Tensor:
    t = _need_teacher(ctx, "conf_diff")
    return (F.softmax(t(xa), dim=1) - F.softmax(model(xa), dim=1)).abs().amax(dim=1)


def _loss_disagree(model: ModelFn, xa: torch.Tensor, ctx: AttackContext) -> torch.Tensor:
    t = _need_teacher(ctx, "disagree")
    with torch.no_grad():
        yt = t(xa).argmax(dim=1)
    return F.cross_entropy(model(xa), yt, reduction="none")


LossFn = Callable[[ModelFn, torch.Tensor, AttackContext], torch.Tensor]
ATTACK_LOSSES: dict[str, LossFn] = {
    "ce": _loss_ce,
    "kl_teacher": _loss_kl_teacher,
    "kl_teacher_clean": _loss_kl_teacher_clean,
    "conf_diff": _loss_conf_diff,
    "disagree": _loss_disagree,
}
_NORMS = ("inf", "2")


def as_domain(
    domain: tuple[Any, Any] | None, n_features: int, dtype: torch.dtype = torch.float32
) -> tuple[torch.Tensor, torch.Tensor] | None:
    """``(lo, hi)`` (scalars or per-feature arrays) as two ``(1, n_features)`` tensors, or ``None``."""
    if domain is None:
        return None
    lo, hi = domain
    lo_t = torch.as_tensor(np.broadcast_to(np.asarray(lo, np.float64), (n_features,)).copy(), dtype=dtype)
    hi_t = torch.as_tensor(np.broadcast_to(np.asarray(hi, np.float64), (n_features,)).copy(), dtype=dtype)
    if torch.any(lo_t > hi_t):
        raise ConfigError("input domain: some lower bound exceeds its upper bound")
    return lo_t.reshape(1, -1), hi_t.reshape(1, -1)


def _project(
    x0: torch.Tensor, xa: torch.Tensor, eps: float, norm: str, dom: tuple[torch.Tensor, torch.Tensor] | None
) -> torch.Tensor:
    if norm == "inf":
        lo, hi = x0 - eps, x0 + eps
        if dom is not None:
            lo, hi = torch.maximum(lo, dom[0]), torch.minimum(hi, dom[1])
        return torch.minimum(torch.maximum(xa, lo), hi)
    d = xa - x0
    n = d.flatten(1).norm(dim=1).clamp_min(1e-30)
    d = d * torch.clamp(eps / n, max=1.0).reshape(-1, *([1] * (d.dim() - 1)))
    xa = x0 + d
    if dom is not None:
        xa = torch.minimum(torch.maximum(xa, dom[0]), dom[1])
    return xa


def _random_start(x0: torch.Tensor, eps: float, norm: str, gen: torch.Generator) -> torch.Tensor:
    if norm == "inf":
        u = torch.rand(x0.shape, generator=gen, dtype=x0.dtype)
        return x0 + (2 * u - 1) * eps
    g = torch.randn(x0.shape, generator=gen, dtype=x0.dtype)
    g = g / g.flatten(1).norm(dim=1).clamp_min(1e-30).reshape(-1, *([1] * (g.dim() - 1)))
    d = x0[0].numel()
    r = torch.rand((x0.shape[0],), generator=gen, dtype=x0.dtype) ** (1.0 / d) * eps
    return x0 + g * r.reshape(-1, *([1] * (g.dim() - 1)))


def _resolve_loss(loss: str | LossFn) -> LossFn:
    if callable(loss):
        return loss
    fn = ATTACK_LOSSES.get(str(loss))
    if fn is None:
        raise ConfigError(f"PGD loss {loss!r}: unknown; choose one of {', '.join(ATTACK_LOSSES)}")
    return fn


def pgd_with_loss(
    model_or_fn: ModelFn,
    x: torch.Tensor | np.ndarray,
    eps: float,
    norm: str = "inf",
    steps: int = 10,
    step_size: float | None = None,
    restarts: int = 1,
    loss: str | LossFn = "ce",
    domain: tuple[Any, Any] | None = None,
    y: torch.Tensor | np.ndarray | None = None,
    teacher: ModelFn | None = None,
    seed: int = 0,
    random_start: bool = True,
    batch_size: int = 2048,
) -> tuple[torch.Tensor, torch.Tensor]:
    """Like :func:`pgd` but always returns ``(x_adv, best_objective)`` as tensors."""
    norm = str(norm).lower().replace("l", "")
    if norm not in _NORMS:
        raise ConfigError(f"--norm {norm!r}: choose 'inf' or '2'")
    eps = float(eps)
    if not np.isfinite(eps) or eps < 0:
        raise ConfigError(f"--eps {eps}: must be a finite number >= 0")
    if int(steps) < 0 or int(restarts) < 1:
        raise ConfigError(f"PGD: steps must be >= 0 and restarts >= 1 (got {steps}, {restarts})")
    step = float(step_size) if step_size is not None else (2.5 * eps / max(int(steps), 1))
    fn = _resolve_loss(loss)
    xt = torch.from_numpy(np.array(x, dtype=np.float32)) if not isinstance(x, torch.Tensor) else x.detach()
    dtype = xt.dtype
    yt = (
        None
        if y is None
        else (y.detach() if isinstance(y, torch.Tensor) else torch.from_numpy(np.array(y))).long()
    )
    dom = as_domain(domain, xt[0].numel(), dtype) if domain is not None else None
    if dom is not None:
        flat = xt.reshape(xt.shape[0], -1)
        tol = 1e-6 * (1.0 + (dom[1] - dom[0]).abs())
        if torch.any(flat < dom[0] - tol) or torch.any(flat > dom[1] + tol):
            raise ConfigError("PGD: some clean points lie outside the input domain")
        dom = (dom[0].reshape(1, *xt.shape[1:]), dom[1].reshape(1, *xt.shape[1:]))
    gen = torch.Generator().manual_seed(int(seed))
    out_x, out_l = [], []
    with eval_mode(model_or_fn, teacher):
        for i in range(0, xt.shape[0], batch_size):
            x0 = xt[i : i + batch_size]
            if dom is not None:
                x0 = torch.minimum(torch.maximum(x0, dom[0]), dom[1])
            yb = yt[i : i + batch_size] if yt is not None else None
            if yb is None and fn is _loss_ce:
                with torch.no_grad():
                    yb = model_or_fn(x0).argmax(dim=1)
            ctx = AttackContext(x0=x0, y=yb, teacher=teacher)
            with torch.no_grad():
                best_l = fn(model_or_fn, x0, ctx).detach().clone()
            best_x = x0.clone()
            if eps > 0:
                for r in range(int(restarts)):
                    xa = _random_start(x0, eps, norm, gen) if (random_start or r > 0) else x0.clone()
                    xa = _project(x0, xa, eps, norm, dom)
                    for it in range(int(steps) + 1):
                        xa = xa.detach().requires_grad_(True)
                        with torch.enable_grad():
                            lv = fn(model_or_fn, xa, ctx)
                            better = lv.detach() > best_l
                            if torch.any(better):
                                best_l = torch.where(better, lv.detach(), best_l)
                                best_x[better] = xa.detach()[better]
                            if it == int(steps):
                                break
                            (g,) = torch.autograd.grad(lv.sum(), xa)
                        if norm == "inf":
                            d = g.sign()
                        else:
                            gn = g.flatten(1).norm(dim=1).clamp_min(1e-30)
                            d = g / gn.reshape(-1, *([1] * (g.dim() - 1)))
                        xa = _project(x0, xa.detach() + step * d, eps, norm, dom)
            out_x.append(best_x.detach())
            out_l.append(best_l.detach())
    if not out_x:
        return xt.clone(), torch.zeros(0)
    return torch.cat(out_x), torch.cat(out_l)


def pgd(
    model_or_fn: ModelFn,
    x: torch.Tensor | np.ndarray,
    eps: float,
    norm: str = "inf",
    steps: int = 10,
    step_size: float | None = None,
    restarts: int = 1,
    loss: str | LossFn = "ce",
    domain: tuple[Any, Any] | None = None,
    y: torch.Tensor | np.ndarray | None = None,
    teacher: ModelFn | None = None,
    seed: int = 0,
    random_start: bool = True,
    batch_size: int = 2048,
) -> torch.Tensor | np.ndarray:
    """Adversarial points maximising ``loss`` in the ``norm``-ball of radius ``eps`` ∩ ``domain``.

    Parameters
    ----------
    model_or_fn
        Attacked model (logits).  An ``nn.Module`` is put in eval mode during the attack.
    x
        Clean points ``(batch, ...)``; they must lie in ``domain``.
    eps, norm
        Radius and ``"inf"`` or ``"2"``.
    steps, step_size, restarts
        Iterations per restart, step ``η`` (default ``2.5 ε / steps``), number of restarts.
    loss
        A name in :data:`ATTACK_LOSSES` or a callable ``(model, x_adv, ctx) -> (batch,)``.
    domain
        ``(lo, hi)``, scalars or per-feature arrays; ``None`` for no clamping.
    y, teacher
        Labels for ``"ce"``; the teacher for the teacher-based objectives.
    seed
        Seeds the random starts.

    Returns
    -------
    The per-sample best points found (same type as ``x``: tensor in, tensor out; array in, array out).
    """
    xa, _ = pgd_with_loss(
        model_or_fn,
        x,
        eps,
        norm,
        steps,
        step_size,
        restarts,
        loss,
        domain,
        y,
        teacher,
        seed,
        random_start,
        batch_size,
    )
    return xa if isinstance(x, torch.Tensor) else xa.numpy()


def as_float64(m: ModelFn) -> ModelFn:
    """A float64 deep copy of an ``nn.Module`` (other callables are returned as they are)."""
    if isinstance(m, nn.Module):
        return copy.deepcopy(m).double()
    return m


def _loss_signed_gap(model: ModelFn, xa: torch.Tensor, ctx: AttackContext) -> torch.Tensor:
    """``±(softmax_i t(x) − softmax_i s(x))`` with ``ctx.y = i`` (sign +) or ``n + i`` (sign −)."""
    t = _need_teacher(ctx, "signed_gap")
    assert ctx.y is not None
    diff = F.softmax(t(xa), dim=1) - F.softmax(model(xa), dim=1)
    n = diff.shape[1]
    sign = 1.0 - 2.0 * (ctx.y >= n).to(diff.dtype)
    return sign * diff.gather(1, (ctx.y % n).reshape(-1, 1))[:, 0]


def emplb(
    teacher: ModelFn,
    student: ModelFn,
    x: torch.Tensor | np.ndarray,
    eps: float,
    norm: str = "inf",
    steps: int = 50,
    restarts: int = 5,
    step_size: float | None = None,
    domain: tuple[Any, Any] | None = None,
    seed: int = 0,
    targeted_restarts: int = 1,
) -> np.ndarray:
    """EMPLB (seed 001 §4.1): per point, the largest ``‖softmax t(x') − softmax s(x')‖∞`` PGD finds.

    PGD on the ``"conf_diff"`` objective ``max_i |σ_t,i − σ_s,i|`` with ``steps`` steps of
    ``2.5 ε / steps`` and ``restarts`` random restarts (defaults 50 and 5 as in the seed).  Its
    gradient only follows the class and sign that currently attain the maximum, so in addition
    (``targeted_restarts > 0``) PGD runs on each of the ``2n`` smooth objectives
    ``±(σ_t,i − σ_s,i)`` (every class ``i``, both signs) with ``targeted_restarts`` restarts each, and
    the largest value per point is kept.  Every returned value is attained at a feasible point, so it is
    an *empirical lower bound* on ``max_{x' ∈ B_ε(x) ∩ D} ‖softmax t(x') − softmax s(x')‖∞`` (the
    quantity FAITHUB bounds from above).  The values are re-evaluated in float64 on float64 copies of the
    networks, so they are directly comparable with float64 bounds computed on the network IR.
    """
    if int(targeted_restarts) < 0:
        raise ConfigError(f"EMPLB: targeted_restarts must be >= 0, got {targeted_restarts}")
    common: dict[str, Any] = dict(
        norm=norm,
        steps=steps,
        step_size=step_size if step_size is not None else 2.5 * float(eps) / max(steps, 1),
        domain=domain,
        teacher=teacher,
    )
    xa, _ = pgd_with_loss(student, x, eps, restarts=restarts, loss="conf_diff", seed=seed, **common)
    t64, s64 = as_float64(teacher), as_float64(student)

    def gap(points: torch.Tensor) -> torch.Tensor:
        with eval_mode(t64, s64), torch.no_grad():
            xd = points.double()
            return (F.softmax(t64(xd), dim=1) - F.softmax(s64(xd), dim=1)).abs().amax(dim=1)

    vals = gap(xa)
    npts = int(vals.shape[0])
    if int(targeted_restarts) > 0 and npts > 0 and float(eps) > 0:
        xt = x.detach() if isinstance(x, torch.Tensor) else torch.from_numpy(np.array(x, dtype=np.float32))
        with eval_mode(teacher), torch.no_grad():
            n = int(teacher(xt[:1]).shape[1])
        code = np.tile(np.arange(2 * n), npts)
        xr = xt.repeat_interleave(2 * n, dim=0)
        xb, _ = pgd_with_loss(
            student, xr, eps, restarts=int(targeted_restarts), loss=_loss_signed_gap, y=code,
            seed=seed + 1, **common,
        )
        vals = torch.maximum(vals, gap(xb).reshape(npts, 2 * n).amax(dim=1))
    return vals.numpy().astype(np.float64)


def _loss_ce_success(model: ModelFn, xa: torch.Tensor, ctx: AttackContext) -> torch.Tensor:
    """CE plus a constant bonus of 1e3 where ``x'`` is misclassified: same gradient as CE, but the
    best-candidate selection then prefers any misclassified iterate over a merely high-CE one."""
    assert ctx.y is not None
    z = model(xa)
    return F.cross_entropy(z, ctx.y, reduction="none") + 1e3 * (z.detach().argmax(dim=1) != ctx.y).to(z.dtype)


def _loss_disagree_success(model: ModelFn, xa: torch.Tensor, ctx: AttackContext) -> torch.Tensor:
    """``"disagree"`` plus a bonus of 1e3 where student and teacher already disagree at ``x'``."""
    t = _need_teacher(ctx, "disagree")
    with torch.no_grad():
        yt = t(xa).argmax(dim=1)
    z = model(xa)
    return F.cross_entropy(z, yt, reduction="none") + 1e3 * (z.detach().argmax(dim=1) != yt).to(z.dtype)


def empirical_agreement(
    teacher: ModelFn,
    student: ModelFn,
    X: np.ndarray | torch.Tensor,
    eps: float,
    norm: str = "inf",
    steps: int = 50,
    restarts: int = 1,
    domain: tuple[Any, Any] | None = None,
    seed: int = 0,
) -> np.ndarray:
    """Per point: ``True`` iff PGD finds no ``x' ∈ B_ε(x) ∩ D`` with ``argmax s(x') ≠ argmax t(x')``.

    Empirical distillation agreement (seed 001 Def. 3) is the mean of this array.  The attack maximises
    ``CE(s(x'), argmax t(x'))`` (the ``"disagree"`` objective); every iterate is checked for
    disagreement, so a point counts as agreeing only if none of the visited points (clean point
    included) disagrees.  This is an *upper* bound on the true robust agreement.
    """
    xa, _ = pgd_with_loss(
        student,
        X,
        eps,
        norm=norm,
        steps=steps,
        restarts=restarts,
        loss=_loss_disagree_success,
        domain=domain,
        teacher=teacher,
        seed=seed,
    )
    with eval_mode(student, teacher), torch.no_grad():
        return (student(xa).argmax(dim=1) == teacher(xa).argmax(dim=1)).numpy()


def robust_accuracy(
    model: ModelFn,
    X: np.ndarray,
    y: np.ndarray,
    eps: float,
    norm: str = "inf",
    steps: int = 50,
    restarts: int = 1,
    domain: tuple[Any, Any] | None = None,
    seed: int = 0,
) -> float:
    """Fraction of points still classified correctly after a PGD-CE attack (step ``2.5 ε / steps``).

    Any visited iterate that is misclassified counts (the selection prefers misclassified candidates),
    so this is an upper bound on the true robust accuracy, as every attack-based estimate is.
    """
    if len(y) == 0:
        return float("nan")
    xa = pgd(
        model,
        np.asarray(X, np.float32),
        eps,
        norm=norm,
        steps=steps,
        restarts=restarts,
        loss=_loss_ce_success,
        domain=domain,
        y=np.asarray(y),
        seed=seed,
    )
    with eval_mode(model), torch.no_grad():
        pred = model(torch.as_tensor(xa)).argmax(dim=1).numpy()
    return float(np.mean(pred == np.asarray(y)))
