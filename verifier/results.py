"""Result types shared by the backends, the dispatcher, the certifier and the CLI."""

from __future__ import annotations

import enum
from dataclasses import dataclass, field
from typing import Any

import numpy as np


class Verdict(str, enum.Enum):
    """What a verification query concluded.

    ``VERIFIED``   the property holds (the violation encoding is infeasible; VNN-COMP "unsat").
    ``FALSIFIED``  a counterexample replayed on onnxruntime (VNN-COMP "sat"): a float32 input that lies
                   in the property's region (checked exactly, in real arithmetic) and whose onnxruntime
                   outputs violate the property; see :mod:`verifier.replay` for the precise meaning.
    ``UNKNOWN``    undecided: a relaxation was too coarse, a candidate failed replay, or a limit hit.
    ``TIMEOUT``    the time limit expired.
    ``ERROR``      the solver failed (crash, licence, bad answer); the query is undecided.
    """

    VERIFIED = "verified"
    FALSIFIED = "falsified"
    UNKNOWN = "unknown"
    TIMEOUT = "timeout"
    ERROR = "error"

    @property
    def decided(self) -> bool:
        return self in (Verdict.VERIFIED, Verdict.FALSIFIED)

    @property
    def vnncomp(self) -> str:
        return {Verdict.VERIFIED: "unsat", Verdict.FALSIFIED: "sat"}.get(self, self.value)


class SolveStatus(str, enum.Enum):
    """What a backend's solver said about a program (before replay)."""

    SAT = "sat"  # feasible: assignment holds a candidate counterexample
    UNSAT = "unsat"  # infeasible
    OPTIMAL = "optimal"  # objective optimised: ``objective`` and ``bound`` set
    TIMEOUT = "timeout"
    UNKNOWN = "unknown"
    ERROR = "error"


@dataclass(frozen=True)
class Outcome:
    """A backend's raw answer to one :class:`encoders.program.Program`.

    ``assignment`` is the full variable vector (float64) when ``status`` is SAT or OPTIMAL.
    For optimisation, ``objective`` is the incumbent's value and ``bound`` the solver's proven bound
    (a sound bound in the direction of optimisation, up to solver tolerances), which is what a sound
    caller must use.
    """

    status: SolveStatus
    backend: str
    time_s: float
    assignment: np.ndarray | None = None
    objective: float | None = None
    bound: float | None = None
    solver_version: str = ""
    stats: dict[str, Any] = field(default_factory=dict)
    message: str = ""


@dataclass(frozen=True)
class Counterexample:
    """A replayed witness: the inputs exactly as fed to onnxruntime (float32 values, held as float64)
    and the outputs onnxruntime computed from them (``x2``/``y2``: the second copy of a pair, or the
    student's outputs for a teacher–student query)."""

    x: np.ndarray
    y: np.ndarray
    x2: np.ndarray | None = None
    y2: np.ndarray | None = None
    extra: dict[str, Any] = field(default_factory=dict)

    def to_json(self) -> dict[str, Any]:
        d: dict[str, Any] = {"x": self.x.tolist(), "y": self.y.tolist()}
        if self.x2 is not None:
            d["x2"] = self.x2.tolist()
        if self.y2 is not None:
            d["y2"] = self.y2.tolist()
        d.update(self.extra)
        return d


@dataclass(frozen=True)
class Result:
    """The verdict of one verification query, after replay."""

    verdict: Verdict
    backend: str
    time_s: float
    counterexample: Counterexample | None = None
    message: str = ""
    solver_version: str = ""
    stats: dict[str, Any] = field(default_factory=dict)

    def to_json(self) -> dict[str, Any]:
        return {
            "verdict": self.verdict.value,
            "backend": self.backend,
            "time_s": round(float(self.time_s), 6),
            "counterexample": self.counterexample.to_json() if self.counterexample else None,
            "message": self.message,
            "solver_version": self.solver_version,
            "stats": self.stats,
        }
