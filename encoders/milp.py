"""Compile a :class:`~encoders.program.Program` into a mixed-integer linear model (arrays).

The result, :class:`MilpModel`, is what every MILP backend (HiGHS, Gurobi) passes to its solver:
objective ``c``, variable bounds, 0/1 integrality, a sparse row matrix ``A`` with two-sided row bounds
``row_lo <= A x <= row_hi`` (``±inf`` for one-sided rows).  Columns ``0 .. n_original-1`` are the
program's own variables, in order, so a solver assignment restricted to ``x[:n_original]`` is an
assignment of the program; the columns after them are binaries introduced here.

Formulation
-----------
Linear rows
    ``a·x <= b`` → ``(-inf, b]``; ``a·x >= b`` → ``[b, +inf)``; ``a·x == b`` → ``[b, b]``.

ReLU ``y = max(0, z)`` with ``z ∈ [l, u]`` (the program's bounds of ``z``)
    * ``l >= 0`` (stable active):   the row ``y − z = 0``;
    * ``u <= 0`` (stable inactive): ``y = 0`` by fixing the bounds of ``y`` to ``[0, 0]``;
    * ``l < 0 < u`` (unstable): a binary ``a`` and ::

          y >= z,   y >= 0,   y <= z − l·(1 − a),   y <= u·a.

      ``a = 1`` gives ``y = z`` and ``z >= 0``; ``a = 0`` gives ``y = 0`` and ``l <= z <= 0``.  Since
      ``z`` is bounded by ``[l, u]`` as a variable, the formulation is *exact* on the box: its feasible
      set projected on ``(z, y)`` is the graph of ReLU over ``[l, u]`` — no relaxation, no M to widen.
    (``y >= 0`` and ``y = 0`` are bounds when compatible with the bounds of ``y``, else rows, so that an
    impossible program stays infeasible instead of becoming ill-formed.)

Disjunction ``OR_k AND_{r ∈ alt_k} (a_r·x <= b_r)`` (``>=`` rows negated, ``==`` rows split in two)
    binaries ``s_k`` with ``Σ_k s_k >= 1`` and, for each row of alternative ``k``, ::

        a_r·x <= b_r + M_r (1 − s_k),     M_r = max_{x ∈ box} a_r·x − b_r   (interval arithmetic),

    widened by ``δ_r = 1e-7·(1 + Σ|a_r|·max(|lb|, |ub|) + |b_r|)`` against rounding in the interval
    sum.  With ``s_k = 1`` the row is enforced exactly; with ``s_k = 0`` it is implied by the box, so
    the encoding is exact.  Rows with ``M_r <= 0`` hold on the whole box and are dropped; an
    alternative with a row that no point of the box satisfies (``min a_r·x − b_r > δ_r``) gets
    ``s_k`` fixed to 0; a disjunction with an alternative whose rows all hold on the box is true
    everywhere and is dropped.  The box is the variables' bounds after the ReLU fixings above.

Quadratic ``NormBall`` constraints are not linearised here: they are carried in
:attr:`MilpModel.balls` for backends with quadratic constraints (Gurobi); linear-only backends must
refuse programs that have them (the property layer supplies a polyhedral outer approximation).

Every big-M row is also recorded as an *indicator* (``binary == value ⇒ row without the binary``)
so that a backend may use native indicator constraints instead.
"""

from __future__ import annotations

import re
from dataclasses import dataclass, field, replace
from pathlib import Path

import numpy as np
import scipy.sparse as sp

from .errors import UnsupportedQueryError
from .program import NormBall, Program, Sense

__all__ = ["MilpModel", "compile_milp", "write_mps", "write_lp", "write_model", "highs_from_milp"]

#: relative margin added to disjunction big-M constants (see the module docstring)
BIGM_MARGIN = 1e-7


@dataclass(frozen=True, eq=False)
class MilpModel:
    """A mixed-integer linear model as arrays: ``opt c·x + offset`` s.t. ``row_lo <= A x <= row_hi``,
    ``lb <= x <= ub``, ``x_j ∈ Z`` where ``integrality[j] == 1``.

    ``indicator_rows[i]`` is a big-M row that, when column ``indicator_cols[i]`` equals
    ``indicator_vals[i]``, is equivalent to the same row without that column and with its upper bound
    reduced by ``A[row, col] · val`` (and is implied by the box otherwise).
    """

    c: np.ndarray
    offset: float
    maximize: bool
    has_objective: bool
    lb: np.ndarray
    ub: np.ndarray
    integrality: np.ndarray  # int8, 1 = integer (all integers here are binaries)
    A: sp.csr_matrix
    row_lo: np.ndarray
    row_hi: np.ndarray
    names: tuple[str, ...]
    row_names: tuple[str, ...]
    n_original: int
    balls: tuple[NormBall, ...] = ()
    indicator_rows: np.ndarray = field(default_factory=lambda: np.zeros(0, dtype=np.int64))
    indicator_cols: np.ndarray = field(default_factory=lambda: np.zeros(0, dtype=np.int64))
    indicator_vals: np.ndarray = field(default_factory=lambda: np.zeros(0, dtype=np.int8))
    n_relu_binaries: int = 0
    n_disjunction_binaries: int = 0

    @property
    def n_vars(self) -> int:
        return int(self.lb.size)

    @property
    def n_rows(self) -> int:
        return int(self.row_lo.size)

    @property
    def n_binaries(self) -> int:
        return int(self.integrality.sum())

    def stats(self) -> dict[str, int]:
        return {
            "variables": self.n_vars,
            "constraints": self.n_rows + len(self.balls),
            "binaries": self.n_binaries,
            "nonzeros": int(self.A.nnz),
            "quadratic": len(self.balls),
        }

    def residual(self, x: np.ndarray) -> dict[str, float]:
        """Largest violation by ``x`` (full column vector) of the rows, bounds, integrality, balls."""
        x = np.asarray(x, dtype=np.float64)
        ax = self.A @ x if self.n_rows else np.zeros(0)
        return {
            "rows": float(max(np.max(self.row_lo - ax, initial=0.0), np.max(ax - self.row_hi, initial=0.0))),
            "bounds": float(max(np.max(self.lb - x, initial=0.0), np.max(x - self.ub, initial=0.0))),
            "integrality": float(np.max(np.abs(x - np.round(x))[self.integrality == 1], initial=0.0)),
            "quadratic": max((b.violation(x) for b in self.balls), default=0.0),
        }


def _cat(xs: list[np.ndarray], dtype: type) -> np.ndarray:
    return np.concatenate(xs).astype(dtype) if xs else np.zeros(0, dtype)


class _Rows:
    """Accumulates rows in COO form."""

    def __init__(self) -> None:
        self.r: list[np.ndarray] = []
        self.c: list[np.ndarray] = []
        self.v: list[np.ndarray] = []
        self.lo: list[np.ndarray] = []
        self.hi: list[np.ndarray] = []
        self.names: list[str] = []
        self.n = 0

    def add_block(self, cols: np.ndarray, vals: np.ndarray, lo: np.ndarray, hi: np.ndarray,
                  names: list[str]) -> np.ndarray:
        """Add ``k`` rows with the same number of terms: ``cols``, ``vals`` of shape ``(k, t)``."""
        k = lo.size
        if k == 0:
            return np.zeros(0, dtype=np.int64)
        rows = np.arange(self.n, self.n + k, dtype=np.int64)
        self.r.append(np.repeat(rows, cols.shape[1]))
        self.c.append(cols.reshape(-1).astype(np.int64))
        self.v.append(vals.reshape(-1).astype(np.float64))
        self.lo.append(np.asarray(lo, dtype=np.float64))
        self.hi.append(np.asarray(hi, dtype=np.float64))
        self.names.extend(names)
        self.n += k
        return rows

    def add(self, cols: np.ndarray, vals: np.ndarray, lo: float, hi: float, name: str) -> int:
        self.r.append(np.full(len(cols), self.n, dtype=np.int64))
        self.c.append(np.asarray(cols, dtype=np.int64))
        self.v.append(np.asarray(vals, dtype=np.float64))
        self.lo.append(np.array([lo], dtype=np.float64))
        self.hi.append(np.array([hi], dtype=np.float64))
        self.names.append(name)
        self.n += 1
        return self.n - 1

    def matrix(self, n_cols: int) -> tuple[sp.csr_matrix, np.ndarray, np.ndarray]:
        A = sp.coo_matrix((_cat(self.v, np.float64), (_cat(self.r, np.int64), _cat(self.c, np.int64))),
                          shape=(self.n, n_cols)).tocsr()
        A.sum_duplicates()
        A.eliminate_zeros()
        return A, _cat(self.lo, np.float64), _cat(self.hi, np.float64)


def _check_indices(program: Program) -> None:
    n = program.n_vars
    bad = [f"relu ({r.out}, {r.inp})" for r in program.relus if not (0 <= r.out < n and 0 <= r.inp < n)]
    for d in program.disjunctions:
        for alt in d.alternatives:
            bad += [f"disjunction row {r.name!r}" for r in alt
                    if r.idx.size and (r.idx.min() < 0 or r.idx.max() >= n)]
    bad += ["norm ball" for b in program.balls if b.idx.size and (b.idx.min() < 0 or b.idx.max() >= n)]
    o = program.objective
    if o is not None and o.idx.size and (o.idx.min() < 0 or o.idx.max() >= n):
        bad.append("objective")
    if bad:
        raise ValueError(f"constraints refer to missing variables: {bad[:5]}")


def compile_milp(program: Program) -> MilpModel:
    """Compile ``program`` into a :class:`MilpModel` (formulation in the module docstring).

    Raises
    ------
    ValueError
        A variable without finite bounds, or a constraint referring to a missing variable.
    """
    program.validate()
    _check_indices(program)
    n = program.n_vars
    lb, ub = program.bounds()
    lb, ub = lb.copy(), ub.copy()
    names: list[str] = list(program.names)
    extra_lb: list[float] = []
    extra_ub: list[float] = []
    rows = _Rows()
    ind_rows: list[np.ndarray] = []
    ind_cols: list[np.ndarray] = []
    ind_vals: list[np.ndarray] = []

    # ---- linear rows (vectorised over rows) ------------------------------------------------
    if program.rows:
        lens = np.fromiter((r.idx.size for r in program.rows), dtype=np.int64, count=len(program.rows))
        rid = np.repeat(np.arange(len(program.rows), dtype=np.int64), lens)
        rows.r.append(rid)
        rows.c.append(np.concatenate([r.idx for r in program.rows]).astype(np.int64))
        rows.v.append(np.concatenate([r.coef for r in program.rows]).astype(np.float64))
        rhs = np.fromiter((r.rhs for r in program.rows), dtype=np.float64, count=len(program.rows))
        sense = [r.sense for r in program.rows]
        rows.lo.append(np.where([s is Sense.LE for s in sense], -np.inf, rhs))
        rows.hi.append(np.where([s is Sense.GE for s in sense], np.inf, rhs))
        rows.names.extend(r.name or f"row{i}" for i, r in enumerate(program.rows))
        rows.n = len(program.rows)

    n_cols = n

    def new_binaries(count: int, prefix: str) -> np.ndarray:
        nonlocal n_cols
        cols = np.arange(n_cols, n_cols + count, dtype=np.int64)
        extra_lb.extend([0.0] * count)
        extra_ub.extend([1.0] * count)
        names.extend(f"{prefix}[{i}]" for i in range(count))
        n_cols += count
        return cols

    def impose(j: int, lo: float, hi: float, what: str) -> None:
        """Intersect the bounds of column ``j`` with ``[lo, hi]``; a row if the result is empty."""
        new_lo, new_hi = max(lb[j], lo), min(ub[j], hi)
        if new_lo <= new_hi:
            lb[j], ub[j] = new_lo, new_hi
        else:  # infeasible program: keep it well formed and let the solver prove infeasibility
            rows.add(np.array([j]), np.array([1.0]), lo, hi, what)

    # ---- ReLUs -----------------------------------------------------------------------------
    n_relu_bins = 0
    if program.relus:
        out = np.fromiter((r.out for r in program.relus), dtype=np.int64, count=len(program.relus))
        inp = np.fromiter((r.inp for r in program.relus), dtype=np.int64, count=len(program.relus))
        lo_z, hi_z = program.bounds()
        l, u = lo_z[inp], hi_z[inp]
        active = l >= 0.0
        inactive = ~active & (u <= 0.0)
        unstable = ~active & ~inactive
        ia = np.flatnonzero(active)
        rows.add_block(np.stack([out[ia], inp[ia]], 1), np.tile([1.0, -1.0], (ia.size, 1)),
                       np.zeros(ia.size), np.zeros(ia.size), [f"relu{k}_eq" for k in ia])
        for k in np.flatnonzero(inactive):
            impose(int(out[k]), 0.0, 0.0, f"relu{k}_zero")
        iu = np.flatnonzero(unstable)
        n_relu_bins = iu.size
        if iu.size:
            a = new_binaries(iu.size, "relu_a")
            y, z, lu, uu = out[iu], inp[iu], l[iu], u[iu]
            for k, j in zip(iu, y):
                impose(int(j), 0.0, np.inf, f"relu{k}_nonneg")
            ones = np.ones(iu.size)
            rows.add_block(np.stack([y, z], 1), np.tile([1.0, -1.0], (iu.size, 1)), np.zeros(iu.size),
                           np.full(iu.size, np.inf), [f"relu{k}_ge" for k in iu])
            # y − z − l·a <= −l        (y <= z − l(1 − a))
            r1 = rows.add_block(np.stack([y, z, a], 1), np.stack([ones, -ones, -lu], 1),
                                np.full(iu.size, -np.inf), -lu, [f"relu{k}_act" for k in iu])
            # y − u·a <= 0
            r2 = rows.add_block(np.stack([y, a], 1), np.stack([ones, -uu], 1), np.full(iu.size, -np.inf),
                                np.zeros(iu.size), [f"relu{k}_inact" for k in iu])
            ind_rows += [r1, r2]
            ind_cols += [a, a]
            ind_vals += [np.ones(iu.size, np.int8), np.zeros(iu.size, np.int8)]

    # ---- disjunctions ----------------------------------------------------------------------
    n_disj_bins = 0
    for d_no, d in enumerate(program.disjunctions):
        plan: list[list[tuple[np.ndarray, np.ndarray, float, float]] | None] = []  # None = impossible
        always_true = False
        for alt in d.alternatives:
            kept: list[tuple[np.ndarray, np.ndarray, float, float]] | None = []
            for r in alt:
                for idx, coef, rhs in r.as_le():
                    lo_b, hi_b = lb[idx], ub[idx]
                    pos, neg = np.maximum(coef, 0.0), np.minimum(coef, 0.0)
                    act_lo = float(pos @ lo_b + neg @ hi_b)
                    act_hi = float(pos @ hi_b + neg @ lo_b)
                    margin = BIGM_MARGIN * (1.0 + float(np.abs(coef) @ np.maximum(np.abs(lo_b), np.abs(hi_b)))
                                            + abs(rhs))
                    if act_lo - rhs > margin:
                        kept = None
                        break
                    big_m = act_hi - rhs
                    if big_m <= 0.0:
                        continue
                    kept.append((idx, coef, rhs, big_m + margin))
                if kept is None:
                    break
            if kept is not None and not kept:
                always_true = True
                break
            plan.append(kept)
        if always_true:
            continue
        s = new_binaries(len(plan), f"disj{d_no}_s")
        n_disj_bins += s.size
        rows.add(s, np.ones(s.size), 1.0, np.inf, f"disj{d_no}_choice")
        for k, kept in enumerate(plan):
            if kept is None:
                extra_ub[s[k] - n] = 0.0
                continue
            for t, (idx, coef, rhs, big_m) in enumerate(kept):
                # a·x + M s <= b + M
                ri = rows.add(np.concatenate([idx, [s[k]]]), np.concatenate([coef, [big_m]]), -np.inf,
                              rhs + big_m, f"disj{d_no}_alt{k}_r{t}")
                ind_rows.append(np.array([ri]))
                ind_cols.append(np.array([s[k]]))
                ind_vals.append(np.ones(1, np.int8))

    # ---- assemble --------------------------------------------------------------------------
    A, row_lo, row_hi = rows.matrix(n_cols)
    lb_all = np.concatenate([lb, np.asarray(extra_lb, dtype=np.float64)])
    ub_all = np.concatenate([ub, np.asarray(extra_ub, dtype=np.float64)])
    integrality = np.zeros(n_cols, dtype=np.int8)
    integrality[n:] = 1
    c = np.zeros(n_cols)
    offset, maximize, has_obj = 0.0, False, program.objective is not None
    if program.objective is not None:
        np.add.at(c, program.objective.idx, program.objective.coef)
        offset, maximize = program.objective.constant, program.objective.maximize
    cat = _cat
    return MilpModel(
        c=c, offset=float(offset), maximize=bool(maximize), has_objective=has_obj,
        lb=lb_all, ub=ub_all, integrality=integrality, A=A, row_lo=row_lo, row_hi=row_hi,
        names=tuple(names), row_names=tuple(rows.names), n_original=n, balls=tuple(program.balls),
        indicator_rows=cat(ind_rows, np.int64), indicator_cols=cat(ind_cols, np.int64),
        indicator_vals=cat(ind_vals, np.int8), n_relu_binaries=int(n_relu_bins),
        n_disjunction_binaries=int(n_disj_bins),
    )


# --------------------------------------------------------------------------------------------------
# HiGHS model and file export
# --------------------------------------------------------------------------------------------------
def highs_from_milp(model: MilpModel, names: bool = False):  # -> highspy.Highs
    """A silent ``highspy.Highs`` holding ``model`` (passed as arrays, CSR row-wise).

    Raises :class:`~encoders.errors.UnsupportedQueryError` if the model has quadratic constraints.
    """
    import highspy

    if model.balls:
        raise UnsupportedQueryError("HiGHS cannot take quadratic (norm-ball) constraints; use the "
                                    "polyhedral outer approximation of the ball or a quadratic backend")
    h = highspy.Highs()
    h.setOptionValue("output_flag", False)
    h.setOptionValue("log_to_console", False)
    A = model.A
    inf = highspy.kHighsInf
    status = h.passModel(
        int(model.n_vars), int(model.n_rows), int(A.nnz), int(highspy.MatrixFormat.kRowwise),
        int(highspy.ObjSense.kMaximize if model.maximize else highspy.ObjSense.kMinimize),
        float(model.offset),
        np.ascontiguousarray(model.c, dtype=np.float64),
        np.ascontiguousarray(model.lb, dtype=np.float64), np.ascontiguousarray(model.ub, dtype=np.float64),
        np.ascontiguousarray(np.maximum(model.row_lo, -inf), dtype=np.float64),
        np.ascontiguousarray(np.minimum(model.row_hi, inf), dtype=np.float64),
        np.ascontiguousarray(A.indptr[:-1] if model.n_rows else np.zeros(0), dtype=np.int32),
        np.ascontiguousarray(A.indices, dtype=np.int32), np.ascontiguousarray(A.data, dtype=np.float64),
        np.ascontiguousarray(model.integrality, dtype=np.int32),
    )
    if status == highspy.HighsStatus.kError:
        raise ValueError("HiGHS refused the model (passModel returned an error)")
    if names:
        for j, nm in enumerate(_unique_names(model.names, "x")):
            h.passColName(j, nm)
        for i, nm in enumerate(_unique_names(model.row_names, "r")):
            h.passRowName(i, nm)
    return h


_BAD_CHARS = re.compile(r"[^A-Za-z0-9_.]")


def _unique_names(names: tuple[str, ...], prefix: str) -> list[str]:
    """Names safe for LP/MPS files (letters, digits, ``_``, ``.``; never starting with a digit, ``.`` or
    ``e``), made unique by a numeric suffix."""
    out, seen = [], set()
    for i, nm in enumerate(names):
        s = _BAD_CHARS.sub("_", nm).strip("_") or f"{prefix}{i}"
        if s[0].isdigit() or s[0] in ".eE":
            s = f"{prefix}_{s}"
        base, k = s, 1
        while s in seen:
            s, k = f"{base}_{k}", k + 1
        seen.add(s)
        out.append(s)
    return out


def write_model(program: Program | MilpModel, path: str | Path) -> Path:
    """Write the compiled encoding of ``program`` as an MPS (``.mps``) or LP (``.lp``) file via HiGHS.

    Columns keep the program's variable order (binaries after them) and readable, sanitised names.
    In an LP file a non-zero objective constant becomes a last column ``objective_offset`` fixed to 1
    (readers disagree on objective constants in LP files).  HiGHS writes coefficients with 15
    significant digits, so a re-read model may differ from ours by relative rounding of ~1e-15.
    """
    path = Path(path)
    if path.suffix.lower() not in (".mps", ".lp"):
        raise ValueError(f"{path}: the file name must end in .mps or .lp")
    model = program if isinstance(program, MilpModel) else compile_milp(program)
    if path.suffix.lower() == ".lp" and model.offset != 0.0:
        model = _offset_as_column(model)
    h = highs_from_milp(model, names=True)
    path.parent.mkdir(parents=True, exist_ok=True)
    import highspy

    if h.writeModel(str(path)) == highspy.HighsStatus.kError:
        raise OSError(f"{path}: HiGHS could not write the model")
    return path


def _offset_as_column(model: MilpModel) -> MilpModel:
    """The same model with its objective constant carried by a last column fixed to 1.

    Readers disagree on constants in an LP-file objective (Gurobi reads ``+ 0.125`` as a variable
    named ``0.125``), so LP files get this portable form; MPS files keep the offset (objective RHS).
    """
    A = sp.hstack([model.A, sp.csr_matrix((model.n_rows, 1))], format="csr")
    return replace(
        model, c=np.append(model.c, model.offset), offset=0.0, lb=np.append(model.lb, 1.0),
        ub=np.append(model.ub, 1.0), integrality=np.append(model.integrality, np.int8(0)), A=A,
        names=(*model.names, "objective_offset"),
    )


def write_mps(program: Program | MilpModel, path: str | Path) -> Path:
    """Write the MILP encoding of ``program`` as a (free-format) MPS file; see :func:`write_model`."""
    if Path(path).suffix.lower() != ".mps":
        raise ValueError(f"{path}: an MPS file name must end in .mps")
    return write_model(program, path)


def write_lp(program: Program | MilpModel, path: str | Path) -> Path:
    """Write the MILP encoding of ``program`` as a CPLEX-LP file; see :func:`write_model`."""
    if Path(path).suffix.lower() != ".lp":
        raise ValueError(f"{path}: an LP file name must end in .lp")
    return write_model(program, path)
