r"""Stage 5, **audit** the lift on the teacher, at every confident sample where a lifted claim is made (the
student verified there): "the teacher is ``δ_T(x_i)``-robust at ``x_i``".

1. The PGD falsification cross-check (:func:`teacher_crosscheck`): any replayed adversarial example at a
   lifted radius refuses the certificate (a teacher is never reported robust when an attack shows it is
   not).
2. Direct verification of the lifted claims (:func:`lift_audit`), when the teacher's verifiable IR can be
   built: batched CROWN margins over every ``B_{δ_T(x_i)}(x_i) ∩ Dom`` (:func:`.verify.crown_local`), then
   α-CROWN per remaining claim (L∞; :func:`encoders.bounds.alpha.alpha_crown_lower`, optimised slopes,
   sound at every iteration), then a complete solver within ``audit_budget`` seconds (the backend
   registry, child-process hard timeouts; journaled).  Each claim ends **confirmed** (a sound bound or
   the solver proves it), **refuted** (a counterexample replayed on onnxruntime: the certificate is
   refused) or **undecided**.  The audit's confirmed fraction is reported; it is evidence for the lift's
   assumption (local linearity, margins) at the samples, not part of the PAC argument — which rests on
   the student's verified radii and the stated lift assumption.  A teacher that cannot be encoded (e.g. a
   MaxPool or Tanh CNN, or one ending in Softmax) is "not directly checkable": only PGD audits it.
"""

from __future__ import annotations

import time
from dataclasses import dataclass
from typing import Any

import numpy as np

from encoders.properties import LocalRobustness

from ..journal import Journal
from ..replay import replay
from .config import CertifyConfig
from .context import Balls, RunContext
from .verify import crown_local

__all__ = ["Attack", "lift_audit", "teacher_crosscheck"]


@dataclass(frozen=True)
class Attack:
    """PGD settings of the cross-check: ``steps`` of size ``2.5 r/steps``, ``restarts`` random starts,
    ``seed``."""

    steps: int = 50
    restarts: int = 5
    seed: int = 0

    @classmethod
    def of(cls, config: CertifyConfig) -> Attack:
        return cls(config.pgd_steps, config.pgd_restarts, config.seed)


def teacher_crosscheck(
    teacher_model: Any, teacher_net: Any, balls: Balls, attack: Attack = Attack()
) -> list[dict[str, Any]]:
    r"""PGD on the teacher in every ball ``B_{r_i}(x_i) ∩ Dom``; the witnesses that replay.

    One batched PGD run in the normalised coordinates ``x' = Π_Dom(x_i + r_i u)``, ``‖u‖ ≤ 1``
    (:func:`distill.attacks.pgd`, CE loss on the label ``c_i``, ``attack.steps`` steps of ``2.5/steps``,
    ``attack.restarts`` random starts).  Clipping into the box ``Dom ∋ x_i`` moves every coordinate towards
    ``x_i``, so ``x'`` stays in ``B_{r_i}(x_i) ∩ Dom``.  A candidate counts only if, after projection into
    the exact region, the teacher's **onnxruntime** outputs on its ONNX file have some
    ``f_j(x') ≥ f_{c_i}(x')`` (:func:`verifier.replay.replay`).

    Returns a list of ``{"i", "x0", "x", "label", "radius", "norm", "y"}`` for the replayed witnesses.
    """
    import torch

    from distill.attacks import pgd

    n = len(balls)
    if n == 0:
        return []
    X, radii, labels, norm = balls.X, balls.radii, balls.labels, balls.norm
    lo_d, hi_d = balls.domain
    x0t = torch.tensor(X, dtype=torch.float32)
    rt = torch.tensor(np.asarray(radii, dtype=np.float64), dtype=torch.float32).reshape(-1, 1)
    lot, hit = torch.tensor(lo_d, dtype=torch.float32), torch.tensor(hi_d, dtype=torch.float32)

    class _Scaled(torch.nn.Module):
        def __init__(self) -> None:
            super().__init__()
            self.inner = teacher_model

        def forward(self, u: torch.Tensor) -> torch.Tensor:
            x = torch.minimum(torch.maximum(x0t + rt * u, lot), hit)
            return self.inner(x)

    u = pgd(
        _Scaled(),
        np.zeros_like(X, dtype=np.float32),
        1.0,
        norm=norm,
        steps=int(attack.steps),
        restarts=int(attack.restarts),
        loss="ce",
        y=np.asarray(labels, dtype=np.int64),
        seed=int(attack.seed),
        batch_size=max(n, 1),
    )
    u = np.asarray(u, dtype=np.float64)
    xa = np.clip(X + np.asarray(radii, dtype=np.float64)[:, None] * u, lo_d, hi_d)
    ya = teacher_net.evaluate(xa)
    c = np.asarray(labels, dtype=np.int64)
    yc = ya[np.arange(n), c]
    others = ya.copy()
    others[np.arange(n), c] = -np.inf
    cand = np.flatnonzero(others.max(axis=1) >= yc - 1e-6 * np.maximum(1.0, np.abs(yc)))
    out = []
    for i in cand:
        if not radii[i] > 0:
            continue
        prop = LocalRobustness(X[i], float(radii[i]), int(c[i]), norm, lo_d, hi_d)
        rep = replay(prop, {"net": teacher_net}, {"net": xa[i]})
        if rep.ok and rep.counterexample is not None:
            out.append(
                {
                    "i": int(i),
                    "x0": X[i].tolist(),
                    "x": rep.counterexample.x.tolist(),
                    "label": int(c[i]),
                    "radius": float(radii[i]),
                    "norm": norm,
                    "y": rep.counterexample.y.tolist(),
                }
            )
    return out


# ==================================================================================================
# verdict


#: Per-claim audit outcomes (``"not claimed"``: no lifted claim at that sample — student not verified).
AUDIT_OUTCOMES = ("confirmed", "undecided", "refuted", "not claimed", "not checkable")


def _crown_confirm(net: Any, balls: Balls, deadline: float, chunk: int = 32) -> np.ndarray:
    """Batched CROWN (:func:`crown_local`) in chunks of ``chunk`` balls, stopping at ``deadline``: on a
    large teacher (a residual CNN unrolled to wide layers) one batched call over every claim could take
    many times the audit budget.  Balls not reached stay unconfirmed (the later stages or "undecided")."""
    ok = np.zeros(len(balls), dtype=bool)
    for a in range(0, len(balls), chunk):
        if a and time.perf_counter() > deadline:
            break
        sel = np.arange(a, min(a + chunk, len(balls)))
        ok[sel] = crown_local(net, balls.subset(sel))
    return ok


def _alpha_confirm(net: Any, balls: Balls, iterations: int, deadline: float) -> np.ndarray:
    """α-CROWN on each L∞ ball: ``True`` where every margin ``f_c − f_j`` (``j ≠ c``) has a positive sound
    lower bound (CROWN's intermediate bounds, then optimised output slopes)."""
    from encoders.bounds import crown_bounds, margin_spec
    from encoders.bounds.alpha import AlphaConfig, alpha_crown_lower

    ok = np.zeros(len(balls), dtype=bool)
    if balls.norm != "inf" or iterations <= 0 or len(net.affines) < 2:
        return ok
    lo, hi = balls.box()
    acfg = AlphaConfig(iterations=int(iterations))
    n_out = int(net.n_outputs)
    for j in range(len(balls)):
        if time.perf_counter() > deadline:
            break
        c = int(balls.labels[j])
        A = np.delete(margin_spec(n_out, c), c, axis=0)
        base = crown_bounds(net, lo[j], hi[j])
        res = alpha_crown_lower(
            net, lo[j], hi[j], base.lower, base.upper, len(net.affines) - 1, A, acfg, deadline
        )
        ok[j] = bool(np.all(res.lb > 0.0))
    return ok


def lift_audit(
    config: CertifyConfig, ctx: RunContext, teacher: Any, lifted: Balls, claimed: np.ndarray
) -> tuple[dict[str, Any], np.ndarray, list[dict[str, Any]]]:
    """Direct verification of the lifted claims (module docstring, step 2).

    ``lifted`` are the teacher's balls at the confident samples (lifted radii), ``claimed[j]`` whether a
    claim is made at sample ``j``.  ``teacher`` has ``net`` (IR or ``None``) and ``sha256``.  Returns the
    step record, the outcome per confident sample (:data:`AUDIT_OUTCOMES`) and the refuting
    counterexamples (replayed on onnxruntime by the solver path), ``{"j", "x", "y"}`` each.
    """
    from .verify import LocalQueries, StudentVerification

    n = len(lifted)
    outcome = np.array(["not claimed"] * n, dtype=object)
    claims = np.flatnonzero(np.asarray(claimed, bool) & np.isfinite(lifted.radii) & (lifted.radii > 0))
    rec: dict[str, Any] = {
        "run": bool(config.audit),
        "claims": int(len(claims)),
        "checkable": teacher.net is not None,
        "methods": "batched CROWN, then alpha-CROWN (L-inf), then a complete solver within audit_budget",
    }
    if not config.audit or not len(claims):
        outcome[claims] = "undecided"
        rec.update(confirmed=0, undecided=int(len(claims)), refuted=0, fraction_confirmed=None, by={})
        return rec, outcome, []
    if teacher.net is None:
        outcome[claims] = "not checkable"
        rec.update(
            confirmed=0,
            undecided=0,
            refuted=0,
            fraction_confirmed=None,
            by={},
            text="not directly checkable (the teacher's verifiable IR cannot be built); the lift is audited "
            "by the PGD cross-check only",
        )
        return rec, outcome, []
    t0 = time.perf_counter()
    by: dict[str, int] = {}
    ok = _crown_confirm(teacher.net, lifted.subset(claims), t0 + 0.5 * config.audit_budget)
    outcome[claims[ok]] = "confirmed"
    by["crown"] = int(ok.sum())
    rest = claims[~ok]
    if len(rest):
        deadline = time.perf_counter() + 0.5 * config.audit_budget
        ok_a = _alpha_confirm(teacher.net, lifted.subset(rest), config.audit_alpha, deadline)
        outcome[rest[ok_a]] = "confirmed"
        by["alpha-crown"] = int(ok_a.sum())
        rest = rest[~ok_a]
    ctx.durations["audit_bounds_s"] = time.perf_counter() - t0
    cex: list[dict[str, Any]] = []
    if len(rest):
        sv = StudentVerification.empty(n)
        journal = Journal(ctx.out / "journal.jsonl")
        left = max(1.0, config.audit_budget - (time.perf_counter() - t0))
        LocalQueries(config, ctx, teacher, lifted, sv, journal, tag="audit", budget=left).run(rest)
        journal.close()
        for j in rest:
            v = str(sv.status[j])
            outcome[j] = {"verified": "confirmed", "falsified": "refuted"}.get(v, "undecided")
            if v in ("verified", "falsified"):
                by[str(sv.by[j])] = by.get(str(sv.by[j]), 0) + 1
        for j, ce in sorted(sv.cex.items()):
            cex.append({"j": int(j), "x": ce.x.tolist(), "y": ce.y.tolist()})
    ctx.durations["audit_s"] = time.perf_counter() - t0
    counts = {k: int(np.sum(outcome[claims] == k)) for k in ("confirmed", "undecided", "refuted")}
    rec.update(
        counts,
        fraction_confirmed=counts["confirmed"] / len(claims),
        by=by,
        budget_s=config.audit_budget,
    )
    ctx.log(
        f"lift audit on the teacher: {counts['confirmed']} confirmed, {counts['undecided']} undecided, "
        f"{counts['refuted']} refuted of {len(claims)} lifted claims"
    )
    return rec, outcome, cex
