"""The solver-neutral encoding IR.

A :class:`Program` is a conjunction of constraints over real variables, each with finite bounds.
The question every backend answers is *feasibility*: is there an assignment satisfying all of them?
(With an :class:`Objective`, the backend optimises instead.)  A property encoder builds the program so
that a feasible assignment is a counterexample (a *violation*); infeasible ⇒ the property holds.

Constraint kinds (each tagged ``network`` or ``property``)
----------------------------------------------------------
``LinearRow``      ``Σ_k coef_k · x[idx_k]  (<= | >= | ==)  rhs``.
``ReluConstraint`` ``x[out] = max(0, x[inp])``, kept as what it means; the bounds of ``x[inp]`` are the
                   variable bounds (the encoder sets them from the tightest bounds available).
``Disjunction``    ``OR_k AND_{r in alt_k} row_r`` — a disjunction of linear conjunctions.
``NormBall``       ``Σ_i (x[idx_i] − c_i)² <= r²`` (quadratic; only for backends that support it — the
                   property layer replaces it by a sound polyhedral outer approximation for the others).
``Objective``      optional ``min/max Σ coef·x + constant``.

Networks are encoded under a name space (``Program.blocks[ns]`` maps ``"input"``, ``"output"``, …
to variable index arrays), so two copies of a network, or a teacher and a student sharing one input,
are just two encodings plus coupling rows.
"""

from __future__ import annotations

import enum
from collections.abc import Iterable, Sequence
from dataclasses import dataclass, field
from typing import Any

import numpy as np

__all__ = [
    "Sense",
    "Tag",
    "Kind",
    "LinearRow",
    "ReluConstraint",
    "Disjunction",
    "NormBall",
    "Objective",
    "Program",
]


class Sense(str, enum.Enum):
    LE = "<="
    GE = ">="
    EQ = "=="


class Tag(str, enum.Enum):
    NETWORK = "network"
    PROPERTY = "property"


class Kind(str, enum.Enum):
    """Constraint kinds, matched against a backend's capabilities."""

    LINEAR = "linear"
    RELU = "relu"
    DISJUNCTION = "disjunction"
    QUADRATIC = "quadratic"
    OBJECTIVE = "objective"


@dataclass(frozen=True, eq=False)
class LinearRow:
    """``coef · x[idx]  sense  rhs``."""

    idx: np.ndarray
    coef: np.ndarray
    sense: Sense
    rhs: float
    tag: Tag = Tag.PROPERTY
    name: str = ""

    def activity(self, x: np.ndarray) -> float:
        return float(np.dot(self.coef, np.asarray(x)[self.idx]))

    def activity_range(self, lb: np.ndarray, ub: np.ndarray) -> tuple[float, float]:
        """Interval of ``coef · x`` over the variable box (used for sound big-M constants)."""
        lo, hi = lb[self.idx], ub[self.idx]
        pos, neg = np.maximum(self.coef, 0.0), np.minimum(self.coef, 0.0)
        return float(pos @ lo + neg @ hi), float(pos @ hi + neg @ lo)

    def violation(self, x: np.ndarray) -> float:
        """How far ``x`` is from satisfying the row (0 when satisfied)."""
        a = self.activity(x)
        if self.sense is Sense.LE:
            return max(0.0, a - self.rhs)
        if self.sense is Sense.GE:
            return max(0.0, self.rhs - a)
        return abs(a - self.rhs)

    def as_le(self) -> list[tuple[np.ndarray, np.ndarray, float]]:
        """The row as one or two ``coef·x <= rhs`` inequalities."""
        if self.sense is Sense.LE:
            return [(self.idx, self.coef, self.rhs)]
        if self.sense is Sense.GE:
            return [(self.idx, -self.coef, -self.rhs)]
        return [(self.idx, self.coef, self.rhs), (self.idx, -self.coef, -self.rhs)]


@dataclass(frozen=True, eq=False)
class ReluConstraint:
    """``x[out] = max(0, x[inp])``."""

    out: int
    inp: int
    tag: Tag = Tag.NETWORK


@dataclass(frozen=True, eq=False)
class Disjunction:
    """``OR_k AND_{row in alternatives[k]} row``."""

    alternatives: tuple[tuple[LinearRow, ...], ...]
    tag: Tag = Tag.PROPERTY

    def violation(self, x: np.ndarray) -> float:
        return min(max((r.violation(x) for r in alt), default=0.0) for alt in self.alternatives)


@dataclass(frozen=True, eq=False)
class NormBall:
    """``Σ_i (x[idx_i] − center_i)² <= radius²``."""

    idx: np.ndarray
    center: np.ndarray
    radius: float
    tag: Tag = Tag.PROPERTY

    def violation(self, x: np.ndarray) -> float:
        return max(0.0, float(np.linalg.norm(np.asarray(x)[self.idx] - self.center)) - self.radius)


@dataclass(frozen=True, eq=False)
class Objective:
    """``minimise`` (or ``maximise``) ``coef · x[idx] + constant``."""

    idx: np.ndarray
    coef: np.ndarray
    constant: float = 0.0
    maximize: bool = False

    def value(self, x: np.ndarray) -> float:
        return float(np.dot(self.coef, np.asarray(x)[self.idx]) + self.constant)


@dataclass
class Program:
    """A mutable builder of constraints; see the module docstring.

    Variables must get finite bounds (every backend relies on them for big-M constants and for
    translating ReLUs); :meth:`validate` checks it.
    """

    lb: list[float] = field(default_factory=list)
    ub: list[float] = field(default_factory=list)
    names: list[str] = field(default_factory=list)
    rows: list[LinearRow] = field(default_factory=list)
    relus: list[ReluConstraint] = field(default_factory=list)
    disjunctions: list[Disjunction] = field(default_factory=list)
    balls: list[NormBall] = field(default_factory=list)
    objective: Objective | None = None
    blocks: dict[str, dict[str, np.ndarray]] = field(default_factory=dict)
    meta: dict[str, Any] = field(default_factory=dict)

    # ---- variables --------------------------------------------------------------------------
    @property
    def n_vars(self) -> int:
        return len(self.lb)

    def add_var(self, name: str, lb: float, ub: float) -> int:
        if lb > ub:
            raise ValueError(f"variable {name}: empty bounds [{lb}, {ub}]")
        self.lb.append(float(lb))
        self.ub.append(float(ub))
        self.names.append(name)
        return len(self.lb) - 1

    def add_vars(
        self, prefix: str, lb: Sequence[float] | np.ndarray, ub: Sequence[float] | np.ndarray
    ) -> np.ndarray:
        lb = np.asarray(lb, dtype=np.float64).reshape(-1)
        ub = np.asarray(ub, dtype=np.float64).reshape(-1)
        if lb.shape != ub.shape:
            raise ValueError(f"{prefix}: bounds of different lengths")
        if np.any(lb > ub):
            i = int(np.argmax(lb > ub))
            raise ValueError(f"{prefix}[{i}]: empty bounds [{lb[i]}, {ub[i]}]")
        start = self.n_vars
        self.lb.extend(lb.tolist())
        self.ub.extend(ub.tolist())
        self.names.extend(f"{prefix}[{i}]" for i in range(lb.size))
        return np.arange(start, start + lb.size, dtype=np.int64)

    def bounds(self) -> tuple[np.ndarray, np.ndarray]:
        return np.asarray(self.lb, dtype=np.float64), np.asarray(self.ub, dtype=np.float64)

    def tighten(self, idx: int, lb: float | None = None, ub: float | None = None) -> None:
        if lb is not None:
            self.lb[idx] = max(self.lb[idx], float(lb))
        if ub is not None:
            self.ub[idx] = min(self.ub[idx], float(ub))

    # ---- constraints ------------------------------------------------------------------------
    @staticmethod
    def row(
        idx: Iterable[int],
        coef: Iterable[float],
        sense: Sense | str,
        rhs: float,
        tag: Tag = Tag.PROPERTY,
        name: str = "",
    ) -> LinearRow:
        """Make a row (merging duplicate indices, dropping zero coefficients)."""
        idx_a = np.asarray(list(idx) if not isinstance(idx, np.ndarray) else idx, dtype=np.int64).reshape(-1)
        coef_a = np.asarray(
            list(coef) if not isinstance(coef, np.ndarray) else coef, dtype=np.float64
        ).reshape(-1)
        if idx_a.size != coef_a.size:
            raise ValueError("row: idx and coef differ in length")
        if idx_a.size and np.unique(idx_a).size != idx_a.size:
            uniq, inv = np.unique(idx_a, return_inverse=True)
            summed = np.zeros(uniq.size)
            np.add.at(summed, inv, coef_a)
            idx_a, coef_a = uniq, summed
        keep = coef_a != 0.0
        return LinearRow(idx_a[keep], coef_a[keep], Sense(sense), float(rhs), tag, name)

    def add_row(
        self,
        idx: Iterable[int],
        coef: Iterable[float],
        sense: Sense | str,
        rhs: float,
        tag: Tag = Tag.PROPERTY,
        name: str = "",
    ) -> LinearRow:
        r = self.row(idx, coef, sense, rhs, tag, name)
        self.rows.append(r)
        return r

    def add_relu(self, out: int, inp: int, tag: Tag = Tag.NETWORK) -> ReluConstraint:
        c = ReluConstraint(int(out), int(inp), tag)
        self.relus.append(c)
        return c

    def add_disjunction(self, alternatives: Sequence[Sequence[LinearRow]], tag: Tag = Tag.PROPERTY) -> None:
        alts = tuple(tuple(a) for a in alternatives)
        if not alts:
            raise ValueError("empty disjunction (always false)")
        if len(alts) == 1:
            self.rows.extend(alts[0])
        else:
            self.disjunctions.append(Disjunction(alts, tag))

    def add_ball(self, idx: np.ndarray, center: np.ndarray, radius: float, tag: Tag = Tag.PROPERTY) -> None:
        self.balls.append(
            NormBall(
                np.asarray(idx, dtype=np.int64), np.asarray(center, dtype=np.float64), float(radius), tag
            )
        )

    def set_objective(
        self, idx: Iterable[int], coef: Iterable[float], maximize: bool = False, constant: float = 0.0
    ) -> None:
        r = self.row(idx, coef, Sense.LE, 0.0)
        self.objective = Objective(r.idx, r.coef, float(constant), maximize)

    # ---- inspection -------------------------------------------------------------------------
    def kinds(self) -> set[Kind]:
        k = set()
        if self.rows:
            k.add(Kind.LINEAR)
        if self.relus:
            k.add(Kind.RELU)
        if self.disjunctions:
            k.add(Kind.DISJUNCTION)
        if self.balls:
            k.add(Kind.QUADRATIC)
        if self.objective is not None:
            k.add(Kind.OBJECTIVE)
        return k

    def unstable_relus(self) -> list[ReluConstraint]:
        """ReLUs whose input can take both signs under the current bounds (they need a binary)."""
        return [r for r in self.relus if self.lb[r.inp] < 0.0 < self.ub[r.inp]]

    def stats(self) -> dict[str, int]:
        """Sizes as an MILP backend sees them: binaries for unstable ReLUs and disjunct selectors."""
        n_unstable = len(self.unstable_relus())
        n_disj_bins = sum(len(d.alternatives) for d in self.disjunctions)
        n_rows = sum(len(r.as_le()) if r.sense is not Sense.EQ else 1 for r in self.rows)
        disj_rows = sum(sum(len(r.as_le()) for r in alt) for d in self.disjunctions for alt in d.alternatives)
        return {
            "variables": self.n_vars,
            "linear_rows": len(self.rows),
            "relus": len(self.relus),
            "unstable_relus": n_unstable,
            "disjunctions": len(self.disjunctions),
            "binaries": n_unstable + n_disj_bins,
            "milp_variables": self.n_vars + n_unstable + n_disj_bins,
            # big-M: 3 rows per unstable ReLU (y >= z, y <= z - l(1-a), y <= u a), 1 per stable-active
            "milp_constraints": n_rows
            + 3 * n_unstable
            + sum(1 for r in self.relus if self.lb[r.inp] >= 0)
            + disj_rows
            + len(self.disjunctions),
        }

    def violation(self, x: np.ndarray, include_bounds: bool = True) -> dict[str, float]:
        """Largest violation of each constraint kind by assignment ``x`` (0 = satisfied)."""
        x = np.asarray(x, dtype=np.float64)
        lb, ub = self.bounds()
        out = {
            "bounds": float(max(0.0, np.max(lb - x, initial=0.0), np.max(x - ub, initial=0.0)))
            if include_bounds
            else 0.0,
            "linear": max((r.violation(x) for r in self.rows), default=0.0),
            "relu": max((abs(x[r.out] - max(0.0, x[r.inp])) for r in self.relus), default=0.0),
            "disjunction": max((d.violation(x) for d in self.disjunctions), default=0.0),
            "quadratic": max((b.violation(x) for b in self.balls), default=0.0),
        }
        return out

    def validate(self) -> None:
        """Check the program is well formed: finite bounds and in-range indices."""
        lb, ub = self.bounds()
        if not (np.all(np.isfinite(lb)) and np.all(np.isfinite(ub))):
            bad = [self.names[i] for i in np.flatnonzero(~(np.isfinite(lb) & np.isfinite(ub)))[:5]]
            raise ValueError(f"variables without finite bounds: {bad}")
        n = self.n_vars
        for r in self.rows:
            if r.idx.size and (r.idx.min() < 0 or r.idx.max() >= n):
                raise ValueError(f"row {r.name!r} refers to a missing variable")

    def relaxed(self, exact: Iterable[int]) -> Program:
        r"""A copy in which every ReLU whose output variable is not in ``exact`` is replaced by its
        triangle relaxation on its input's bounds (no binary).

        Formulation.  For ``h = max(0, z)`` with ``z ∈ [l, u]`` (the variable bounds of ``z``; ``h ≥ 0``
        is already the bound of ``h``): ``l ≥ 0`` gives ``h = z``; ``u ≤ 0`` gives ``h = 0`` (``h ≤ 0``);
        otherwise ``h ≥ z`` and ``h ≤ s (z − l)`` with ``s = u / (u − l)``, the chord of the convex ReLU
        over ``[l, u]``, which lies above its graph there.  The chord's constant is raised by
        ``1e-9·(1 + |s·l|)``, far above the few ulps the float ``s`` and ``s·l`` can be off by, so the
        row holds for every point of the graph.

        Every assignment of this program's variables that satisfies ``x[out] = max(0, x[inp])`` for
        all its ReLUs satisfies the relaxed program, so the relaxed program's feasible set contains
        this one's: its minimum is a lower bound of this program's minimum (sound for proofs); its
        points need not satisfy the relaxed ReLUs (never a counterexample by themselves).
        """
        keep = {int(i) for i in exact}
        out = self.copy()
        out.relus = [r for r in self.relus if r.out in keep]
        for r in self.relus:
            if r.out in keep:
                continue
            lo, hi = self.lb[r.inp], self.ub[r.inp]
            name = self.names[r.out]
            if lo >= 0.0:
                out.add_row([r.out, r.inp], [1.0, -1.0], Sense.EQ, 0.0, r.tag, f"{name}=z")
            elif hi <= 0.0:
                out.add_row([r.out], [1.0], Sense.LE, 0.0, r.tag, f"{name}=0")
            else:
                s = hi / (hi - lo)
                out.add_row([r.out, r.inp], [1.0, -1.0], Sense.GE, 0.0, r.tag, f"{name}>=z")
                rhs = -s * lo + 1e-9 * (1.0 + abs(s * lo))
                out.add_row([r.out, r.inp], [1.0, -s], Sense.LE, rhs, r.tag, f"{name}<=chord")
        return out

    def copy(self) -> Program:
        """A copy whose lists can be extended without touching this one (rows are immutable)."""
        return Program(
            list(self.lb),
            list(self.ub),
            list(self.names),
            list(self.rows),
            list(self.relus),
            list(self.disjunctions),
            list(self.balls),
            self.objective,
            {k: dict(v) for k, v in self.blocks.items()},
            dict(self.meta),
        )
