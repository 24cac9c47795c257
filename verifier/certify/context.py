"""What the stages of :func:`verifier.certify.certify` share: the log, the run context (output folder, data
set, input domain, stage durations) and :class:`Balls`, the regions every local question is asked on.
Leaf module of :mod:`verifier.certify`."""

from __future__ import annotations

import sys
from dataclasses import dataclass, field
from datetime import datetime, timezone
from pathlib import Path
from typing import Any

import numpy as np

__all__ = ["Balls", "Log", "RunContext", "now"]


@dataclass
class Log:
    """Progress lines: kept in ``lines`` and, when ``progress``, written to stderr."""

    progress: bool = True
    lines: list[str] = field(default_factory=list)

    def __call__(self, msg: str) -> None:
        self.lines.append(msg)
        if self.progress:
            sys.stderr.write(f"[distillcert] {msg}\n")
            sys.stderr.flush()


def now() -> str:
    """UTC time stamp (seconds) for certificates."""
    return datetime.now(timezone.utc).isoformat(timespec="seconds")


@dataclass
class RunContext:
    """One certification run's surroundings: ``out`` folder, loaded ``data`` set, its input box
    ``domain = (lo, hi)`` (float64), the ``log`` and the stage ``durations`` (seconds, filled as the stages
    run)."""

    out: Path
    data: Any
    domain: tuple[np.ndarray, np.ndarray]
    log: Log
    durations: dict[str, float] = field(default_factory=dict)

    @classmethod
    def create(cls, out: Path, data: Any, progress: bool) -> RunContext:
        dom = (np.asarray(data.domain_lo, np.float64), np.asarray(data.domain_hi, np.float64))
        return cls(out, data, dom, Log(progress))


@dataclass(frozen=True)
class Balls:
    r"""Local-robustness regions ``B_{r_i}(x_i) ∩ Dom`` with the class ``c_i`` that must stay the argmax.

    Attributes
    ----------
    X, labels, radii
        Centres ``(n, m)`` (float64), classes ``(n,)`` and radii ``(n,)``.
    norm
        ``"inf"`` or ``"2"``.
    domain
        The input box ``Dom = [lo, hi]``.
    """

    X: np.ndarray
    labels: np.ndarray
    radii: np.ndarray
    norm: str
    domain: tuple[np.ndarray, np.ndarray]

    def __post_init__(self) -> None:
        object.__setattr__(self, "X", np.asarray(self.X, dtype=np.float64))
        object.__setattr__(self, "labels", np.asarray(self.labels, dtype=np.int64))
        object.__setattr__(self, "radii", np.asarray(self.radii, dtype=np.float64).reshape(-1))
        lo, hi = (np.asarray(d, dtype=np.float64) for d in self.domain)
        object.__setattr__(self, "domain", (lo, hi))

    def __len__(self) -> int:
        return len(self.X)

    def subset(self, sel: np.ndarray) -> Balls:
        """The balls at the positions (or mask) ``sel``."""
        return Balls(self.X[sel], self.labels[sel], self.radii[sel], self.norm, self.domain)

    def box(self) -> tuple[np.ndarray, np.ndarray]:
        """``(lo, hi)`` of the L∞ balls clipped to the domain (``(n, m)`` each)."""
        lo_d, hi_d = self.domain
        return (
            np.maximum(self.X - self.radii[:, None], lo_d),
            np.minimum(self.X + self.radii[:, None], hi_d),
        )
