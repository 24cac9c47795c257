r"""Stage 4, **lift** the student's verified radii to the teacher, and check distillation success.

With margins ``m_j = f_c − f_j`` (``c = c_T(x)``) and the *margin-gradient ratio*

.. math:: \rho_j(x) = \frac{\|\nabla_x m_{S,j}(x)\|_*}{\|\nabla_x m_{T,j}(x)\|_*},

the teacher's radius at a sample where the student is verified ``R_i``-robust is ``δ_T(x) = λ(x) · R_i``
with the factor ``λ`` of :func:`lift_factor`.  *Distillation success* (seed 000 Eq. 13): the student at
least as confident as the teacher in the teacher's class, ``p(f_S(x_i))_{c_T} ≥ p(f_T(x_i))_{c_T}``, and
agreeing with it, at every sample of the scope (:func:`eq13`).
"""

from __future__ import annotations

import copy
from dataclasses import dataclass
from typing import Any

import numpy as np

from .config import CertifyConfig
from .sample import Sample

__all__ = [
    "EQ13_DEFS",
    "Lift",
    "eq13",
    "inflated",
    "lift",
    "lift_factor",
    "margin_gradient_ratio",
    "margin_gradient_ratios",
]

#: Eq. 13 variants: the samples checked and the confidence the student must reach there (``p_T`` = the
#: teacher's probability of its own class, ``p_S`` the student's probability of that class).
EQ13_DEFS = {
    "confident": "p_S(x)[c_T(x)] >= p_T(x)[c_T(x)] at every teacher-confident sample, and argmax f_S = c_T "
    "there",
    "all": "p_S(x)[c_T(x)] >= p_T(x)[c_T(x)] at every sample, and argmax f_S = c_T at the confident ones",
    "kappa": "p_S(x)[c_T(x)] >= kappa at every teacher-confident sample (the weak reading of Eq. 13: teacher "
    "kappa-confident implies student kappa-confident), and argmax f_S = c_T there",
}


def _jacobian(model: Any, X: np.ndarray, chunk: int = 4096) -> np.ndarray:
    """``J[b, k, :] = ∇_x f_k(x_b)`` in float64 (a float64 copy of the module)."""
    import torch

    m64 = copy.deepcopy(model).double().eval()
    out = []
    for i in range(0, len(X), chunk):
        x = torch.tensor(np.asarray(X[i : i + chunk], dtype=np.float64), requires_grad=True)
        with torch.enable_grad():
            y = m64(x)
            rows = []
            for k in range(y.shape[1]):
                (g,) = torch.autograd.grad(y[:, k].sum(), x, retain_graph=k + 1 < y.shape[1])
                rows.append(g.detach().numpy())
        out.append(np.stack(rows, axis=1))
    return np.concatenate(out, axis=0) if out else np.zeros((0, 0, X.shape[1] if X.ndim == 2 else 0))


def margin_gradient_ratios(
    teacher: Any, student: Any, X: np.ndarray, labels: np.ndarray, norm: str
) -> np.ndarray:
    r"""``ρ_j(x) = ‖∇(f_{S,c} − f_{S,j})(x)‖_* / ‖∇(f_{T,c} − f_{T,j})(x)‖_*`` for every class ``j``
    (``(B, n_out)``, ``+inf`` at ``j = c``; ``c`` = ``labels``; dual norm: L1 for ``norm="inf"``, L2 for
    ``norm="2"``).

    Exact gradients of the piecewise-linear networks (autograd in float64).  A zero teacher margin
    gradient gives ``ρ_j = +inf`` (the linearised teacher margin never reaches 0 in that direction).
    """
    X = np.asarray(X, dtype=np.float64)
    c = np.asarray(labels, dtype=np.int64)
    if len(X) == 0:
        return np.zeros((0, 0))
    q = 1 if norm == "inf" else 2
    jt, js = _jacobian(teacher, X), _jacobian(student, X)
    b = np.arange(len(X))
    gt = jt[b, c][:, None, :] - jt  # (B, n_out, m): ∇(f_c − f_j)
    gs = js[b, c][:, None, :] - js
    nt = np.linalg.norm(gt, ord=q, axis=2)
    ns = np.linalg.norm(gs, ord=q, axis=2)
    with np.errstate(divide="ignore", invalid="ignore"):
        r = np.where(nt > 0, ns / np.where(nt > 0, nt, 1.0), np.inf)
    r[b, c] = np.inf
    return r


def margin_gradient_ratio(
    teacher: Any, student: Any, X: np.ndarray, labels: np.ndarray, norm: str
) -> np.ndarray:
    r"""``ρ(x) = min_{j≠c} ρ_j(x)`` (see :func:`margin_gradient_ratios`), the worst competing class."""
    r = margin_gradient_ratios(teacher, student, X, labels, norm)
    return r.min(axis=1) if r.size else np.zeros(len(X))


def inflated(factor: float | None, factor_m: float | None, tolerance: float) -> bool:
    r"""True when a lift factor exceeds the margin-corrected factor beyond the tolerance:
    ``λ > (1 + tol) · λ_m`` (``λ_m`` of ``prop43m``).

    Why this is the right test: under local linearity alone the teacher's distance to the ``j``-boundary
    is ``μ_j ρ_j`` times the student's (:func:`lift_factor`), so ``λ_m R_i`` is what the measurements
    support; ``prop43`` (``λ = min(1, min_j ρ_j)``) and ``prop42`` (``λ = 1``) claim more exactly by the
    margin ratios ``1/μ_j``, i.e. when the student's margins exceed the teacher's — which a merely more
    confident (e.g. logit-scaled) student does without being any more robust.  ``None`` (no factor
    recorded) counts as not inflated only when both are ``None``.
    """
    if factor is None and factor_m is None:
        return False
    if factor is None or factor_m is None:
        return True
    return float(factor) > (1.0 + float(tolerance)) * float(factor_m)


def lift_factor(
    lift: str, rho_j: np.ndarray, z_t: np.ndarray, z_s: np.ndarray, labels: np.ndarray
) -> np.ndarray:
    r"""The factor ``λ(x)`` with teacher radius ``δ_T(x) = λ(x) · R_i`` at a sample where the student is
    verified ``R_i``-robust (with label ``c = c_T(x)``).

    * ``prop42`` (seed 000 Prop. 4.2, assumed): ``λ = 1``.
    * ``prop43`` (seed 000 Prop. 4.3, measured): ``λ = min(1, min_j ρ_j)``.  Assumes both margins
      ``m_j = f_c − f_j`` are linear on the ball **and equal** for teacher and student; then the
      teacher's distance to the ``j``-boundary, ``m_j/‖∇m_{T,j}‖_*``, is the student's times ``ρ_j``.
    * ``prop43m`` (measured, drops the equal-margin assumption): ``λ = min(1, min_j μ_j ρ_j)`` with
      ``μ_j = m_{T,j}(x)/m_{S,j}(x)``.  Under linearity alone the teacher's ``j``-distance is
      ``m_{T,j}/‖∇m_{T,j}‖_* = μ_j ρ_j · m_{S,j}/‖∇m_{S,j}‖_* ≥ μ_j ρ_j R_i``, because the student's
      linear distance is at least its verified radius.  ``λ = 0`` where the student does not put ``c``
      strictly first.  A more confident student (Eq. 13) has ``μ_j ≤ 1``: this lift is never fooled by
      scaling the student's logits, which inflates ``ρ`` alone.
    """
    n = len(labels)
    if n == 0:
        return np.zeros(0)
    if lift == "prop42":
        return np.ones(n)
    rho = np.min(rho_j, axis=1) if rho_j.size else np.full(n, np.inf)
    if lift == "prop43":
        return np.minimum(1.0, rho)
    b = np.arange(n)
    c = np.asarray(labels, dtype=np.int64)
    mt = z_t[b, c][:, None] - z_t
    ms = z_s[b, c][:, None] - z_s
    with np.errstate(divide="ignore", invalid="ignore"):
        prod = np.where(ms > 0, (mt / np.where(ms > 0, ms, 1.0)) * rho_j, 0.0)
    prod[b, c] = np.inf
    return np.clip(np.min(prod, axis=1), 0.0, 1.0)


def eq13(config: CertifyConfig, smp: Sample, p_s: np.ndarray, c_s: np.ndarray) -> dict[str, Any]:
    """Seed 000 Eq. 13 on the scope ``config.eq13_scope`` (:data:`EQ13_DEFS`) with the student's
    probabilities ``p_s`` and classes ``c_s`` on the sample: violations, the worst gap and disagreements."""
    s, K, c_t, p_t = smp.s, smp.K, smp.c_t, smp.p_t
    scope = np.arange(s) if config.eq13_scope == "all" else K
    target = np.full(len(scope), config.kappa) if config.eq13_scope == "kappa" else p_t[scope, c_t[scope]]
    gap = p_s[scope, c_t[scope]] - target
    disagree = int(np.sum(c_s[K] != c_t[K]))
    return {
        "scope": config.eq13_scope,
        "n_checked": int(len(scope)),
        "violations": int(np.sum(gap < 0)),
        "worst_gap": float(gap.min()) if len(gap) else 0.0,
        "disagreements": disagree,
        "holds": bool(np.all(gap >= 0) and disagree == 0),
        "fraction_dominant_all": float(np.mean(p_s[np.arange(s), c_t] >= p_t[np.arange(s), c_t])),
        "definition": EQ13_DEFS[config.eq13_scope],
    }


@dataclass(frozen=True)
class Lift:
    """Per confident sample (aligned with ``Sample.K``): ``rho_j`` ``(|K|, classes)``, ``rho`` (its row
    minimum), the factor ``λ`` of the configured lift, the margin-corrected factor ``factor_m`` (``prop43m``,
    the reference every lift is held to), the student radius ``radii`` to verify and the teacher's
    ``lifted`` radius ``λ · radii``."""

    rho_j: np.ndarray
    rho: np.ndarray
    factor: np.ndarray
    factor_m: np.ndarray
    radii: np.ndarray
    lifted: np.ndarray


def lift(config: CertifyConfig, smp: Sample, teacher: Any, student: Any, z_s: np.ndarray) -> Lift:
    """ρ and λ at the confident samples (torch modules ``teacher``/``student``; student logits ``z_s`` on
    the sample), and the student radii of the radius rule: ``R`` (``"min"``), or ``R/λ`` (``"fixed"``: the
    lifted radius is then exactly ``R``; ``+inf`` where ``λ = 0``, and the lifted radius is 0 there: no
    claim)."""
    K = smp.K
    rho_j = margin_gradient_ratios(teacher, student, smp.X[K], smp.c_t[K], config.norm)
    rho = rho_j.min(axis=1) if rho_j.size else np.zeros(len(K))
    factor = lift_factor(config.lift, rho_j, smp.z_t[K], z_s[K], smp.c_t[K])
    factor_m = lift_factor("prop43m", rho_j, smp.z_t[K], z_s[K], smp.c_t[K])
    if smp.rule == "fixed":
        with np.errstate(divide="ignore"):
            radii = np.where(factor > 0, smp.R / np.where(factor > 0, factor, 1.0), np.inf)
    else:
        radii = np.full(len(K), smp.R)
    lifted = np.where(factor > 0, factor * np.where(np.isfinite(radii), radii, 0.0), 0.0)
    return Lift(rho_j, rho, factor, factor_m, radii, lifted)
