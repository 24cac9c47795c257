r"""Stage 5, **audit** the lift on the teacher: the PGD falsification cross-check (any replayed adversarial
example at a lifted radius refuses the certificate; a teacher is never reported robust when an attack
shows it is not).
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any

import numpy as np

from encoders.properties import LocalRobustness

from ..replay import replay
from .config import CertifyConfig
from .context import Balls

__all__ = ["Attack", "teacher_crosscheck"]


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
