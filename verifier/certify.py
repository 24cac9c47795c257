r"""The certifier: seed 000's Algorithm 1, completed — a PAC robustness guarantee on a *teacher* obtained by
distilling it into a small student, verifying the student, and lifting the verdicts back.

Notation: teacher ``f_T``, student ``f_S`` (logits), ``p = softmax``, ``c_T(x) = argmax f_T(x)``,
``conf_T(x) = max_k p(f_T(x))_k``.  ``D`` is the sampling distribution (see *Sampling*), ``m`` the input
dimension, ``‖·‖`` the chosen norm (L∞ or L2) and ``‖·‖_*`` its dual (L1 resp. L2).  A model is
*r-robust at x* iff ``argmax f(x') = argmax f(x)`` for every ``x' ∈ B_r(x) ∩ Dom`` (``Dom`` = the data
set's input box; ties count as violations).

Steps (:func:`certify`)
-----------------------
1. **Sample.**  ``s`` is the smallest sample size of the chosen guarantee kind (:mod:`verifier.pac`;
   ``auto`` takes the kind with the smallest ``s``).  The points are drawn i.i.d. from ``D`` with a
   seeded generator and labelled by the teacher, ``c_T(x_i)``.  The *confident set* is
   ``K = {i : conf_T(x_i) ≥ κ}`` — confidence is always the **teacher's**, a fixed function, so every
   range the PAC arguments below use is fixed before sampling (the student is trained on the sample).
2. **Distil** the student on the sample (default KDIGA; seed 000 Algorithm 1 line 4: on
   ``(x_i, c_T(x_i))``); it is exported to ONNX and everything downstream uses the exported weights.
3. **Verify the student** at the base radius ``R = 3δ`` (seed kind) or ``R = δ`` (other kinds):

   a. the global two-copy κ-confidence query over ``Dom`` (:func:`verifier.queries.verify_global`, with a
      time budget).  If VERIFIED, the student is ``R``-robust at every point where it is κ-confident, so
      it covers every ``i ∈ K`` with ``argmax f_S(x_i) = c_T(x_i)`` and ``p(f_S(x_i))_{c_T} ≥ κ``;
   b. otherwise (and for the samples (a) does not cover) local robustness of ``f_S`` with label
      ``c_T(x_i)`` at radius ``R_i`` at every ``i ∈ K``: batched CROWN margins first
      (:func:`encoders.bounds.margin_bounds`), then a complete solver for the rest
      (:func:`verifier.dispatch.verify_many`); every solver query is journaled and a rerun with the
      same output folder reuses finished queries.

4. **Lift** (seed 000 Prop. 4.3, measured): with the *margin-gradient ratio*

   .. math:: \rho(x) = \min_{j \ne c}\ \frac{\|\nabla_x (f_{S,c} - f_{S,j})(x)\|_*}
                                           {\|\nabla_x (f_{T,c} - f_{T,j})(x)\|_*},\qquad c = c_T(x),

   the teacher's radius at a verified sample is ``δ_T(x_i) = min(1, ρ(x_i)) · R_i``.  Why: if both
   margins are locally linear and equal at ``x`` (the perfect-student assumption), the distance to the
   ``j``-boundary is ``m_j/‖∇m_j‖_*`` for each network, so the teacher's distance is the student's times
   ``ρ_j(x)``; the minimum over ``j`` is the worst boundary.  (``lift = "prop42"`` takes ``ρ ≡ 1``:
   Prop. 4.2's perfect-student and local-linearity assumptions, not measured.)
   *Distillation success* (seed 000 Eq. 13): the student at least as confident as the teacher in the
   teacher's class, ``p(f_S(x_i))_{c_T} ≥ p(f_T(x_i))_{c_T}``, at every sample of the scope (default: the
   confident samples, where the lift is used; ``eq13_scope = "all"`` for every sample).
5. **Teacher falsification cross-check**: PGD (in-house, :mod:`distill.attacks`) on the teacher at every
   ``i ∈ K`` at its lifted radius ``δ_T(x_i)``; a point it finds is replayed on onnxruntime against the
   teacher's ONNX file.  Any replayed adversarial example refuses the certificate.
6. **Verdict.**  Radius rules (``teacher_radius``):

   * ``"min"`` (seed and quality-space kinds; the issue's rule): ``R_i = R`` and the teacher radius is
     ``r_T = min_{i∈K} δ_T(x_i)`` (divided by 3 for the seed kind).  Both kinds are *uniform* — the
     ε-net holds for all balls at once, the quality-space bound for all ``(radius, κ)`` at once — so a
     radius read off the sample is allowed.
   * ``"fixed"`` (required by the binomial kind, whose property must be fixed before sampling; allowed
     for all): the teacher radius is ``δ`` and each sample's student radius is ``R_i = R/min(1, ρ(x_i))``
     so that its lifted radius is exactly ``R``.

   Guarantees (with probability ``≥ 1 − η`` over the sample; ``ε`` is replaced by ``ε + Λ`` for a
   deployment distribution within total variation ``Λ`` of ``D``, seed 000 Obs. 4.5):

   * seed: the teacher is ``r_T``-robust at every point covered by a ball ``B_{r_T}(y)`` with
     ``Pr_D(B_{r_T}(y) ∩ C_κ) ≥ ε``, ``C_κ = {conf_T ≥ κ}``.  (The ε-net argument of seed 000 Thm. 3.8
     applied to the range space ``{B ∩ C_κ}``, whose VC dimension is at most that of the balls because
     ``C_κ`` is a fixed set; every such range contains a *confident* sample ``x_i``, at which the teacher
     is ``3 r_T``-robust, and ``B_{r_T}(x) ⊆ B_{3 r_T}(x_i)`` for ``x, x_i ∈ B_{r_T}(y)``.)
   * quality space: ``Pr_D[conf_T ≥ κ ∧ teacher not r_T-robust] < ε``.
   * binomial: with ``k`` confident samples not established robust (student not verified, or teacher
     attacked), ``Pr_D[conf_T ≥ κ ∧ teacher not δ-robust] ≤ CP(k, s, η)`` (one-sided Clopper–Pearson);
     certified when this is ``≤ ε``.

   Refusal reasons: teacher falsified (PGD), distillation unsuccessful (Eq. 13 or disagreement at a
   confident sample), student not robust / undecided at a confident sample, lifted radius zero.

Sampling
--------
``sampling = "empirical"`` (default): i.i.d. **with replacement** from the training inputs of the data
set, i.e. from their empirical distribution; the guarantee is then about that empirical distribution
(a uniformly random training input), which is exact and needs no assumption, but it is *not* a statement
about unseen data.  ``sampling = "heldout"``: the first ``s`` points of a seeded permutation of the test
split (without replacement); under the assumption that the test split is an i.i.d. sample from the data
distribution that the teacher never saw, these are i.i.d. draws from it and the guarantee is about the
data distribution itself.  It needs ``s ≤`` the size of the test split.  Nothing is ever silently cut:
a sample size the pool cannot supply is a :class:`~encoders.errors.ConfigError`.
"""

from __future__ import annotations

import copy
import dataclasses
import hashlib
import math
import shutil
import sys
import time
from collections.abc import Callable, Mapping
from dataclasses import dataclass, field
from datetime import datetime, timezone
from pathlib import Path
from typing import Any

import numpy as np

from encoders import relaxations as rx
from encoders.bounds import margin_bounds, margin_bounds_l2
from encoders.errors import ConfigError, ModelFormatError
from encoders.network import Network, file_sha256, load_onnx
from encoders.properties import LocalRobustness

from . import pac
from .dispatch import BACKEND_CHOICES, DispatchConfig, Task, verify_many
from .journal import Journal, query_key
from .replay import replay
from .results import Counterexample, Result, Verdict

__all__ = [
    "CERTIFY_KEYS",
    "CertifyConfig",
    "GUARANTEE_KINDS",
    "certify",
    "choose_kind",
    "draw_sample",
    "lift_factor",
    "margin_gradient_ratio",
    "margin_gradient_ratios",
    "sample_hash",
    "softmax",
    "teacher_crosscheck",
    "decide",
]

GUARANTEE_KINDS = ("seed", "quality", "binomial", "auto")
_KIND_PAC_NAME = {"seed": "seed_vc", "quality": "quality_space", "binomial": "binomial"}
LIFTS = ("prop43", "prop43m", "prop42")
RADIUS_RULES = ("auto", "min", "fixed")
SAMPLINGS = ("empirical", "heldout")
DISTILL_ON = ("samples", "pool")
EQ13_SCOPES = ("confident", "all", "kappa")
#: Eq. 13 variants: the samples checked and the confidence the student must reach there (``p_T`` = the
#: teacher's probability of its own class, ``p_S`` the student's probability of that class).
_EQ13_DEFS = {
    "confident": "p_S(x)[c_T(x)] >= p_T(x)[c_T(x)] at every teacher-confident sample, and argmax f_S = c_T "
    "there",
    "all": "p_S(x)[c_T(x)] >= p_T(x)[c_T(x)] at every sample, and argmax f_S = c_T at the confident ones",
    "kappa": "p_S(x)[c_T(x)] >= kappa at every teacher-confident sample (the weak reading of Eq. 13: teacher "
    "kappa-confident implies student kappa-confident), and argmax f_S = c_T there",
}
#: ``R = factor · δ``: the seed kind verifies at 3δ to conclude δ (seed 000 Thm. 3.8); the others at δ.
RADIUS_FACTOR = {"seed": 3.0, "quality": 1.0, "binomial": 1.0}


# ==================================================================================================
# configuration
# ==================================================================================================
@dataclass(frozen=True)
class CertifyConfig:
    """Every parameter of a certification run (also the keys of a ``run.toml``).

    Attributes
    ----------
    data, data_seed
        Data set name (see :func:`distill.data.load_dataset`) and the seed of its train/test split.
    delta, kappa, norm
        Robustness radius δ > 0, confidence threshold κ ∈ (0, 1), norm ``"inf"`` or ``"2"``.
    epsilon, eta, tv_shift
        PAC parameters ε, η ∈ (0, 1/2] and the total-variation shift Λ ∈ [0, 1] (Obs. 4.5).
    guarantee
        ``"seed"``, ``"quality"``, ``"binomial"`` or ``"auto"`` (the kind with the smallest ``s``).
    samples
        Optional sample size; must be at least the kind's minimum (more samples only tighten things).
    sampling, distill_on
        ``"empirical"`` / ``"heldout"`` (module docstring); distil on the ``"samples"`` (Algorithm 1)
        or on the whole ``"pool"`` the samples come from.
    lift, teacher_radius, eq13_scope
        ``"prop43"`` (measured ρ), ``"prop43m"`` (measured ρ and margin ratio, see :func:`lift_factor`) or
        ``"prop42"`` (ρ ≡ 1, assumed); radius rule ``"auto"`` (``"fixed"``
        for binomial, ``"min"`` otherwise), ``"min"`` or ``"fixed"``; Eq. 13 (strict) on the
        ``"confident"`` samples or on ``"all"``, or its weak reading ``"kappa"`` (see ``_EQ13_DEFS``).
    method, distill_params, student_arch, epochs, distill_lr
        (and ``distill_weight_decay``) Distillation method, overrides of
        :class:`distill.losses.DistillConfig` (a TOML table; default
        ``lambda_ce = 4``: with the CE term on the teacher's hard labels weighted up, the per-sample optimum
        of the KDIGA loss lies above the teacher's confidence, which is what Eq. 13 asks), student widths
        (default ``m-32-32-n``), epochs and learning rate.
    teacher, teacher_arch, teacher_adv_eps, teacher_epochs
        ``distillcert run`` only: a teacher file (ONNX or ``.pt``) or, when empty, a teacher trained here
        (PGD-AT at ``teacher_adv_eps``; arch default ``m-128-128-n``).
    seed
        Seeds the sample, the distillation and the attacks.
    backend, global_query, global_timeout, local_crown, local_timeout, local_budget, jobs
        Solver choice; the global query on/off and its budget (s); batched CROWN before solvers; seconds
        per local solver query; total seconds for all local solver queries (queries not started within
        it are reported undecided — never dropped); parallel solver processes.
    pgd_steps, pgd_restarts
        Teacher cross-check attack strength (step ``2.5 r/steps``).
    """

    data: str = "digits"
    data_seed: int = 0
    delta: float = 0.02
    kappa: float = 0.9
    norm: str = "inf"
    epsilon: float = 0.01
    eta: float = 0.01
    tv_shift: float = 0.0
    guarantee: str = "auto"
    samples: int | None = None
    sampling: str = "empirical"
    distill_on: str = "samples"
    lift: str = "prop43"
    teacher_radius: str = "auto"
    eq13_scope: str = "confident"
    method: str = "kdiga"
    distill_params: dict[str, float] = field(default_factory=lambda: {"lambda_ce": 4.0})
    student_arch: str | None = None
    epochs: int = 100
    distill_lr: float = 0.05
    distill_weight_decay: float = 5e-4
    teacher: str | None = None
    teacher_arch: str | None = None
    teacher_adv_eps: float = 0.1
    teacher_epochs: int = 40
    seed: int = 0
    backend: str = "auto"
    global_query: bool = True
    global_timeout: float = 60.0
    local_crown: bool = True
    local_timeout: float = 20.0
    local_budget: float = 300.0
    jobs: int = 1
    pgd_steps: int = 50
    pgd_restarts: int = 5

    def __post_init__(self) -> None:
        for name, typ in _FIELD_TYPES.items():
            object.__setattr__(self, name, _coerce(name, getattr(self, name), typ))
        _check_pos(self.delta, "delta")
        if not (0.0 < self.kappa < 1.0):
            raise ConfigError(f"--kappa must be in (0, 1), got {self.kappa!r}")
        _check_half(self.epsilon, "epsilon")
        _check_half(self.eta, "eta")
        if not (0.0 <= self.tv_shift <= 1.0):
            raise ConfigError(
                f"--tv-shift must be a total-variation distance in [0, 1], got {self.tv_shift!r}"
            )
        choices = {
            "norm": pac.NORMS,
            "guarantee": GUARANTEE_KINDS,
            "sampling": SAMPLINGS,
            "distill_on": DISTILL_ON,
            "lift": LIFTS,
            "teacher_radius": RADIUS_RULES,
            "eq13_scope": EQ13_SCOPES,
            "backend": BACKEND_CHOICES,
        }
        for name, allowed in choices.items():
            if getattr(self, name) not in allowed:
                raise ConfigError(
                    f"--{_opt(name)} must be one of {', '.join(allowed)}, got {getattr(self, name)!r}"
                )
        for name in ("global_timeout", "local_timeout", "local_budget", "distill_lr"):
            _check_pos(getattr(self, name), name)
        if not (self.distill_weight_decay >= 0 and math.isfinite(self.distill_weight_decay)):
            raise ConfigError(
                f"--distill-weight-decay must be a finite number >= 0, got {self.distill_weight_decay!r}"
            )
        if self.teacher_adv_eps < 0 or not math.isfinite(self.teacher_adv_eps):
            raise ConfigError(f"--teacher-adv-eps must be a finite number >= 0, got {self.teacher_adv_eps!r}")
        for name, lo in (
            ("epochs", 1),
            ("teacher_epochs", 1),
            ("jobs", 1),
            ("pgd_steps", 1),
            ("pgd_restarts", 1),
            ("samples", 1),
        ):
            v = getattr(self, name)
            if v is not None and v < lo:
                raise ConfigError(f"--{_opt(name)} must be >= {lo}, got {v!r}")
        if self.guarantee == "binomial" and self.teacher_radius == "min":
            raise ConfigError(
                "--teacher-radius min cannot be used with the binomial guarantee: its property (radius) must "
                "be fixed before sampling; use 'fixed' (or 'auto')"
            )

    # ---------------------------------------------------------------------------------------- I/O
    @classmethod
    def from_mapping(cls, values: Mapping[str, Any], source: str = "config") -> CertifyConfig:
        """Build from a mapping (e.g. a parsed TOML file); ``-`` in keys is read as ``_``.

        Raises
        ------
        ConfigError
            An unknown key (named, with the file), or an invalid value.
        """
        kw: dict[str, Any] = {}
        for key, value in values.items():
            name = str(key).replace("-", "_")
            if name not in _FIELD_TYPES:
                raise ConfigError(f"{source}: unknown key {key!r} (known keys: {', '.join(CERTIFY_KEYS)})")
            if isinstance(value, dict) and name != "distill_params":
                raise ConfigError(f"{source}: key {key!r} must be a value, not a table")
            kw[name] = value
        return cls(**kw)

    def public(self) -> dict[str, Any]:
        return dataclasses.asdict(self)

    def replace(self, **changes: Any) -> CertifyConfig:
        return dataclasses.replace(self, **changes)


_FIELD_TYPES: dict[str, str] = {f.name: str(f.type) for f in dataclasses.fields(CertifyConfig)}
CERTIFY_KEYS: tuple[str, ...] = tuple(_FIELD_TYPES)


def _opt(name: str) -> str:
    return name.replace("_", "-")


def _coerce(name: str, value: Any, typ: str) -> Any:
    """Check/convert a field value to its declared type; ConfigError naming the option otherwise."""
    optional = "None" in typ
    if value is None:
        if optional:
            return None
        raise ConfigError(f"--{_opt(name)}: a value is required")
    base = typ.replace(" | None", "")
    if base.startswith("dict"):
        return _distill_params(value)
    if base == "bool":
        if isinstance(value, bool):
            return value
        raise ConfigError(f"--{_opt(name)}: expected true or false, got {value!r}")
    if base == "int":
        if isinstance(value, bool) or not isinstance(value, int | float) or value != int(value):
            raise ConfigError(f"--{_opt(name)}: expected an integer, got {value!r}")
        return int(value)
    if base == "float":
        if isinstance(value, bool) or not isinstance(value, int | float | str):
            raise ConfigError(f"--{_opt(name)}: expected a number, got {value!r}")
        try:
            v = float(value)
        except ValueError:
            raise ConfigError(f"--{_opt(name)}: expected a number, got {value!r}") from None
        if math.isnan(v):
            raise ConfigError(f"--{_opt(name)}: expected a number, got NaN")
        return v
    if not isinstance(value, str | int | float) or isinstance(value, bool):
        raise ConfigError(f"--{_opt(name)}: expected a string, got {value!r}")
    v = str(value).strip()
    if name == "norm":
        v = {"l2": "2", "linf": "inf", "l_inf": "inf", "2.0": "2"}.get(v.lower(), v.lower())
    if optional and v == "":
        return None
    return v


def _distill_params(value: Any) -> dict[str, float]:
    """Validate ``distill_params`` against :class:`distill.losses.DistillConfig`'s numeric fields."""
    from distill.losses import DistillConfig

    if not isinstance(value, Mapping):
        raise ConfigError(f"--distill-params: expected a table of DistillConfig values, got {value!r}")
    known = {f.name: f for f in dataclasses.fields(DistillConfig) if f.name != "domain"}
    out: dict[str, Any] = {}
    for k, v in value.items():
        if k not in known:
            raise ConfigError(f"distill_params: unknown key {k!r} (known: {', '.join(known)})")
        out[str(k)] = v
    try:
        DistillConfig(**out).validate()
    except TypeError as exc:
        raise ConfigError(f"distill_params: {exc}") from None
    return dict(sorted(out.items()))


def _check_pos(v: float, name: str) -> None:
    if not (v > 0 and math.isfinite(v)):
        raise ConfigError(f"--{_opt(name)} must be a positive finite number, got {v!r}")


def _check_half(v: float, name: str) -> None:
    if not (0.0 < v <= 0.5):
        raise ConfigError(f"--{name} must be in (0, 1/2], got {v!r}")


# ==================================================================================================
# PAC sample size and sampling
# ==================================================================================================
def choose_kind(config: CertifyConfig, m: int) -> dict[str, Any]:
    """The guarantee kind, its minimum sample size, the sample size used and the VC dimension.

    ``auto`` picks the kind with the smallest minimum ``s`` (ties broken by the order seed, quality,
    binomial).  Returns ``{"kind", "s_required", "s", "d", "pac"}`` with ``pac`` =
    :func:`verifier.pac.pac_summary` (text dropped).
    """
    summ = pac.pac_summary(m, config.norm, config.epsilon, config.eta, config.tv_shift)
    summ.pop("text", None)
    sizes = {k: int(summ[v]) for k, v in _KIND_PAC_NAME.items()}
    kind = config.guarantee if config.guarantee != "auto" else min(sizes, key=lambda k: sizes[k])
    need = sizes[kind]
    s = need if config.samples is None else int(config.samples)
    if s < need:
        raise ConfigError(
            f"--samples {s} is below the {need} samples the {kind} guarantee needs at "
            f"epsilon={config.epsilon:g}, eta={config.eta:g}"
        )
    d = {"seed": int(summ["d"]), "quality": pac.QUALITY_SPACE_VC, "binomial": None}[kind]  # no VC argument
    return {"kind": kind, "s_required": need, "s": s, "d": d, "pac": summ}


def radius_rule(config: CertifyConfig, kind: str) -> str:
    """``"fixed"`` for the binomial kind (its property is fixed before sampling), else the configured rule
    (``auto`` → ``"min"``)."""
    if kind == "binomial":
        return "fixed"
    return "min" if config.teacher_radius == "auto" else config.teacher_radius


def draw_sample(n_pool: int, s: int, seed: int, sampling: str) -> np.ndarray:
    """Indices of the ``s`` sampled points in a pool of ``n_pool`` (see the module docstring).

    ``empirical``: ``s`` i.i.d. uniform indices (with replacement) from ``numpy.random.default_rng(seed)``;
    ``heldout``: the first ``s`` entries of a seeded permutation (without replacement).
    """
    if n_pool <= 0:
        raise ConfigError("sampling: the pool of points is empty")
    rng = np.random.default_rng([int(seed), 6000])
    if sampling == "empirical":
        return rng.integers(0, n_pool, size=int(s), dtype=np.int64)
    if s > n_pool:
        raise ConfigError(
            f"--sampling heldout: {s} samples are needed but the held-out split has only {n_pool} points; "
            "raise epsilon/eta, or use --sampling empirical (the guarantee is then about the empirical "
            "distribution of the training inputs)"
        )
    return rng.permutation(n_pool)[: int(s)].astype(np.int64)


def sample_hash(X: np.ndarray, idx: np.ndarray) -> str:
    """SHA-256 of the sampled points (float64, C order) and their indices (int64)."""
    h = hashlib.sha256()
    h.update(np.ascontiguousarray(np.asarray(X, dtype=np.float64)).tobytes())
    h.update(np.ascontiguousarray(np.asarray(idx, dtype=np.int64)).tobytes())
    return h.hexdigest()


def sample_pool(data: Any, sampling: str) -> tuple[np.ndarray, str]:
    """The points sampled from: the training inputs (``empirical``) or the test split (``heldout``)."""
    if sampling == "heldout":
        return np.asarray(data.X_test, dtype=np.float64), "test"
    return np.asarray(data.X_train, dtype=np.float64), "train"


# ==================================================================================================
# numerics
# ==================================================================================================
softmax = rx.softmax  # row-wise float64 softmax, defined once in encoders.relaxations


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


def crown_local(
    net: Network,
    X: np.ndarray,
    labels: np.ndarray,
    radii: np.ndarray,
    norm: str,
    domain: tuple[np.ndarray, np.ndarray],
) -> np.ndarray:
    """Batched CROWN: ``True`` where every margin ``f_c − f_j`` has a positive lower bound over
    ``B_{r_i}(x_i) ∩ Dom`` (the local-robustness query is then VERIFIED without a solver)."""
    if len(X) == 0:
        return np.zeros(0, dtype=bool)
    lo_d, hi_d = domain
    r = np.asarray(radii, dtype=np.float64)
    c = np.asarray(labels, dtype=np.int64)
    if norm == "inf":
        lo = np.maximum(X - r[:, None], lo_d)
        hi = np.minimum(X + r[:, None], hi_d)
        mb = margin_bounds(net, lo, hi, c)
    else:
        mb = margin_bounds_l2(net, X, r, c, np.broadcast_to(lo_d, X.shape), np.broadcast_to(hi_d, X.shape))
    return np.all(np.asarray(mb) > 0.0, axis=1)


# ==================================================================================================
# teacher cross-check
# ==================================================================================================
def teacher_crosscheck(
    teacher_model: Any,
    teacher_net: Network,
    X: np.ndarray,
    labels: np.ndarray,
    radii: np.ndarray,
    norm: str,
    domain: tuple[np.ndarray, np.ndarray],
    steps: int = 50,
    restarts: int = 5,
    seed: int = 0,
) -> list[dict[str, Any]]:
    r"""PGD on the teacher at every point ``x_i`` with its own radius ``r_i``; the witnesses that replay.

    One batched PGD run in the normalised coordinates ``x' = Π_Dom(x_i + r_i u)``, ``‖u‖ ≤ 1``
    (:func:`distill.attacks.pgd`, CE loss on the label ``c_i``, ``steps`` steps of ``2.5/steps``,
    ``restarts`` random starts).  Clipping into the box ``Dom ∋ x_i`` moves every coordinate towards
    ``x_i``, so ``x'`` stays in ``B_{r_i}(x_i) ∩ Dom``.  A candidate counts only if, after projection into
    the exact region, the teacher's **onnxruntime** outputs on its ONNX file have some
    ``f_j(x') ≥ f_{c_i}(x')`` (:func:`verifier.replay.replay`).

    Returns a list of ``{"i", "x0", "x", "label", "radius", "norm", "y"}`` for the replayed witnesses.
    """
    import torch

    from distill.attacks import pgd

    n = len(X)
    if n == 0:
        return []
    X = np.asarray(X, dtype=np.float64)
    lo_d, hi_d = (np.asarray(d, dtype=np.float64) for d in domain)
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
        steps=int(steps),
        restarts=int(restarts),
        loss="ce",
        y=np.asarray(labels, dtype=np.int64),
        seed=int(seed),
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
# ==================================================================================================
_ESTABLISHED = ("verified",)


def decide(cert: Mapping[str, Any]) -> dict[str, Any]:
    """Verdict, reasons and the guarantee's numbers from a certificate's recorded steps and parameters.

    Used by :func:`certify` and re-run by ``distillcert check`` (so a certificate whose verdict does not
    follow from its own records is caught).  Returns ``{"verdict", "reasons", "teacher_radius",
    "epsilon_achieved", "violations"}``.
    """
    p = cert["parameters"]
    steps = cert["steps"]
    kind, rule, R = p["guarantee_kind"], p["radius_rule"], float(p["base_radius"])
    queries = cert["local_queries"]
    s = int(cert["data"]["sample_size"])
    eta, eps, lam = float(p["eta"]), float(p["epsilon"]), float(p["tv_shift"])
    reasons: list[dict[str, str]] = []

    witnesses = [c for c in cert["counterexamples"] if c["kind"] == "teacher_pgd"]
    if witnesses:
        reasons.append(
            {
                "code": "teacher_falsified",
                "text": (
                    f"teacher not robust: PGD found {len(witnesses)} adversarial example(s) at the "
                    f"lifted radius "
                    f"(first at sample {witnesses[0]['i']}, radius {witnesses[0]['radius']:.4g}), "
                    f"replayed on onnxruntime"
                ),
            }
        )
    eq = steps["eq13"]
    if not eq["holds"]:
        reasons.append(
            {
                "code": "distillation_unsuccessful",
                "text": (
                    f"distillation unsuccessful: seed 000 Eq. 13 fails at {eq['violations']} of "
                    f"{eq['n_checked']} "
                    f"{eq['scope']} samples (worst gap {eq['worst_gap']:.3g}); student/teacher disagree at "
                    f"{eq['disagreements']} confident samples"
                ),
            }
        )
    bad = [q for q in queries if q["verdict"] not in _ESTABLISHED]
    falsified = [q for q in bad if q["verdict"] == "falsified"]
    undecided = [q for q in bad if q["verdict"] != "falsified"]
    lifted = [float(q["lifted_radius"]) for q in queries if q["verdict"] in _ESTABLISHED]
    if rule == "fixed":
        teacher_r = float(p["delta"])
    else:
        teacher_r = (min(lifted) if lifted else R) / RADIUS_FACTOR[kind]
    violations = len(bad) + len({w["i"] for w in witnesses} - {q["i"] for q in bad})
    eps_ach = None
    if kind == "binomial":
        eps_ach = pac.clopper_pearson_upper(violations, s, eta)
        if eps_ach > eps:
            reasons.append(
                {
                    "code": "student_not_robust" if falsified else "student_undecided",
                    "text": (
                        f"{violations} of {s} samples are confident and not established robust "
                        f"({len(falsified)} student counterexamples, {len(undecided)} undecided, "
                        f"{len(witnesses)} teacher "
                        f"attacks): the Clopper-Pearson bound {eps_ach:.4g} exceeds epsilon {eps:g}"
                    ),
                }
            )
    else:
        if falsified:
            reasons.append(
                {
                    "code": "student_not_robust",
                    "text": (
                        f"student not robust: falsified at {len(falsified)} of {len(queries)} confident "
                        f"samples "
                        f"(radius {R:.4g})"
                    ),
                }
            )
        if undecided:
            reasons.append(
                {
                    "code": "student_undecided",
                    "text": (
                        f"student robustness undecided at {len(undecided)} of {len(queries)} confident "
                        f"samples "
                        "(timeout, budget or unknown)"
                    ),
                }
            )
    if lifted and teacher_r <= 0.0 and rule != "fixed":
        reasons.append(
            {"code": "lifted_radius_zero", "text": "the lifted teacher radius is zero (rho = 0 somewhere)"}
        )
    return {
        "verdict": "refused" if reasons else "certified",
        "reasons": reasons,
        "teacher_radius": teacher_r,
        "epsilon_achieved": eps_ach if eps_ach is None else eps_ach + lam,
        "violations": violations,
    }


_LIFT_WORDS = {
    "prop43": (
        "the student's verified radius times min(1, rho), rho the measured margin-gradient ratio (seed 000 "
        "Prop. 4.3; assumes the margins are locally linear and equal for teacher and student)"
    ),
    "prop43m": (
        "the student's verified radius times min(1, min_j mu_j rho_j), the measured margin and "
        "margin-gradient ratios (Prop. 4.3 without the equal-margin assumption; assumes the margins are "
        "locally linear)"
    ),
    "prop42": (
        "the student's verified radius taken as the teacher's (seed 000 Prop. 4.2; assumes a perfect, "
        "locally linear student)"
    ),
}


def guarantee_text(cert: Mapping[str, Any], dec: Mapping[str, Any]) -> str:
    """The guarantee in plain words with its numbers (or what was refused)."""
    p, dat = cert["parameters"], cert["data"]
    kind = p["guarantee_kind"]
    eta, lam = float(p["eta"]), float(p["tv_shift"])
    eps_s = float(p["epsilon"]) + lam
    norm = "L-inf" if p["norm"] == "inf" else "L2"
    r = dec["teacher_radius"]
    dist = dat["distribution"]
    if lam > 0:
        shift = f"Obs. 4.5; epsilon becomes {eps_s:g}"
        dist += f", or any distribution within total variation {lam:g} of it ({shift})"
    lift = _LIFT_WORDS[p["lift"]]
    conf = f"teacher confidence >= {p['kappa']:g}"
    if kind == "seed":
        core = (
            f"with probability >= {1 - eta:g} over the {dat['sample_size']} samples, the teacher is "
            f"{r:.4g}-robust ({norm}) at every point x covered by a ball B_{r:.4g}(y) whose points with "
            f"{conf} carry probability >= {eps_s:g}"
        )
    elif kind == "quality":
        core = (
            f"with probability >= {1 - eta:g} over the {dat['sample_size']} samples, "
            f"Pr[{conf} at x and the teacher not {r:.4g}-robust ({norm}) at x] < {eps_s:g}"
        )
    else:
        core = (
            f"with confidence >= {1 - eta:g}, Pr[{conf} at x and the teacher not {r:.4g}-robust "
            f"({norm}) at x] "
            f"<= {dec['epsilon_achieved']:.4g} (one-sided Clopper-Pearson, {dec['violations']} violations "
            f"among {dat['sample_size']} samples; target epsilon {eps_s:g})"
        )
    head = (
        "CERTIFIED: "
        if dec["verdict"] == "certified"
        else "REFUSED (the following would have been claimed): "
    )
    return f"{head}for x drawn from {dist}, {core}. The teacher's radius is {lift}."


# ==================================================================================================
# the engine
# ==================================================================================================
@dataclass
class _Log:
    progress: bool = True
    lines: list[str] = field(default_factory=list)

    def __call__(self, msg: str) -> None:
        self.lines.append(msg)
        if self.progress:
            sys.stderr.write(f"[distillcert] {msg}\n")
            sys.stderr.flush()


def _now() -> str:
    return datetime.now(timezone.utc).isoformat(timespec="seconds")


def _result_record(res: Result) -> dict[str, Any]:
    return res.to_json()


def _result_from_record(rec: Mapping[str, Any]) -> Result:
    cex = rec.get("counterexample")
    ce = None
    if cex:
        ce = Counterexample(
            np.asarray(cex["x"], np.float64),
            np.asarray(cex["y"], np.float64),
            np.asarray(cex["x2"], np.float64) if cex.get("x2") is not None else None,
            np.asarray(cex["y2"], np.float64) if cex.get("y2") is not None else None,
        )
    return Result(
        Verdict(rec["verdict"]),
        rec.get("backend", ""),
        float(rec.get("time_s", 0.0)),
        ce,
        rec.get("message", ""),
        rec.get("solver_version", ""),
        dict(rec.get("stats") or {}),
    )


def _stage_teacher(teacher_path: Path, out_dir: Path, data: Any) -> Path:
    """The teacher's ONNX file inside ``out_dir`` (copied, or exported from a ``.pt`` checkpoint)."""
    from distill.export import export_onnx, load_model

    dst = out_dir / "teacher.onnx"
    if not teacher_path.is_file():
        raise ModelFormatError(f"--teacher {teacher_path}: no such file")
    suffix = teacher_path.suffix.lower()
    if suffix == ".onnx":
        stale = not dst.exists() or file_sha256(dst) != file_sha256(teacher_path)
        if stale and dst.resolve() != teacher_path.resolve():
            shutil.copyfile(teacher_path, dst)
            side = teacher_path.with_name(teacher_path.name + ".json")
            if side.is_file():
                shutil.copyfile(side, dst.with_name(dst.name + ".json"))
        return dst
    if suffix in (".pt", ".pth"):
        model = load_model(teacher_path)
        meta = dict(getattr(model, "meta", {}) or {})
        src = file_sha256(teacher_path)
        side = dst.with_name(dst.name + ".json")
        if dst.exists() and side.is_file():
            import json

            try:
                if json.loads(side.read_text()).get("source_sha256") == src:
                    return dst
            except (OSError, ValueError):
                pass
        meta.setdefault("dataset", data.name)
        meta.setdefault("input_domain", {"lo": data.domain_lo.tolist(), "hi": data.domain_hi.tolist()})
        meta["source_sha256"] = src
        export_onnx(model, dst, data.n_features, meta)
        return dst
    raise ModelFormatError(f"--teacher {teacher_path}: expected an .onnx or .pt file")


def _student(
    teacher_model: Any,
    X_distill: np.ndarray,
    config: CertifyConfig,
    out_dir: Path,
    data: Any,
    key: str,
    log: _Log,
) -> tuple[Path, dict[str, Any]]:
    """Distil (or reuse a student of the same key from ``out_dir``) and export it to ONNX."""
    import json

    from distill.export import export_onnx
    from distill.losses import DistillConfig, distill_student

    path = out_dir / "student.onnx"
    side = path.with_name(path.name + ".json")
    if path.is_file() and side.is_file():
        try:
            meta = json.loads(side.read_text())
        except (OSError, ValueError):
            meta = {}
        if meta.get("certify_key") == key and meta.get("sha256") == file_sha256(path):
            log("student: reusing student.onnx from the output folder (same teacher, sample and settings)")
            return path, dict(meta.get("distill_summary") or {})
    log(f"distilling the student ({config.method}, {len(X_distill)} points, {config.epochs} epochs)")
    res = distill_student(
        teacher_model,
        X_distill,
        method=config.method,
        arch=config.student_arch,
        epochs=config.epochs,
        seed=config.seed,
        labels="teacher",
        lr=config.distill_lr,
        cfg=DistillConfig(**config.distill_params),
        weight_decay=config.distill_weight_decay,
        domain=(data.domain_lo, data.domain_hi),
        progress=log.progress,
    )
    summary = {
        "method": res.config["method"],
        "arch": res.config["arch"],
        "epochs": res.config["epochs"],
        "points": int(len(X_distill)),
        "train_agreement": float(res.train_agreement),
        "seconds_s": round(float(res.seconds), 3),
    }
    meta = {
        "dataset": data.name,
        "input_domain": {"lo": data.domain_lo.tolist(), "hi": data.domain_hi.tolist()},
        "class_names": list(data.class_names),
        "training": res.config,
        "certify_key": key,
        "distill_summary": summary,
    }
    export_onnx(res.model, path, data.n_features, meta, seed=config.seed)
    return path, summary


def certify(
    teacher_path: str | Path,
    config: CertifyConfig,
    out_dir: str | Path,
    progress: bool = True,
    data: Any = None,
) -> dict[str, Any]:
    """Run Algorithm 1 (module docstring) and write ``certificate.json``, ``samples.npz``, ``report.md``
    and the plots into ``out_dir``.  Returns the certificate (a dict).

    ``data`` may be passed pre-loaded (it must be ``load_dataset(config.data, config.data_seed)``, which
    ``distillcert check`` reloads).  Reruns with the same ``out_dir`` reuse the student (same key) and
    the journaled solver queries.
    """
    from distill.data import load_dataset
    from distill.export import load_model

    from .certificate import SCHEMA, software_versions, write_certificate

    if not Path(teacher_path).is_file():
        raise ModelFormatError(f"--teacher {teacher_path}: no such file")
    t_start, started = time.perf_counter(), _now()
    log = _Log(progress)
    durations: dict[str, float] = {}
    out = Path(out_dir)
    out.mkdir(parents=True, exist_ok=True)
    data = data if data is not None else load_dataset(config.data, config.data_seed)
    domain = (np.asarray(data.domain_lo, np.float64), np.asarray(data.domain_hi, np.float64))
    m = int(data.n_features)

    # ---------------------------------------------------------------- teacher
    t0 = time.perf_counter()
    teacher_file = _stage_teacher(Path(teacher_path), out, data)
    teacher_net = load_onnx(teacher_file)
    if teacher_net.n_inputs != m or teacher_net.n_outputs != data.n_classes:
        raise ModelFormatError(
            f"--teacher {teacher_path}: takes {teacher_net.n_inputs} inputs and gives "
            f"{teacher_net.n_outputs} outputs, but {data.name} has {m} features and "
            f"{data.n_classes} classes"
        )
    teacher_model = load_model(teacher_file)
    t_sha = file_sha256(teacher_file)

    # ---------------------------------------------------------------- 1. sample
    choice = choose_kind(config, m)
    kind, s = choice["kind"], choice["s"]
    rule = radius_rule(config, kind)
    R = RADIUS_FACTOR[kind] * config.delta
    pool, pool_name = sample_pool(data, config.sampling)
    idx = draw_sample(len(pool), s, config.seed, config.sampling)
    X = pool[idx]
    s_hash = sample_hash(X, idx)
    z_t = teacher_net.evaluate(X)
    p_t = softmax(z_t)
    c_t = np.argmax(z_t, axis=1)
    conf_t = p_t[np.arange(s), c_t]
    K = np.flatnonzero(conf_t >= config.kappa)
    if config.sampling == "empirical":
        dist = (
            f"the empirical distribution of the {len(pool)} training inputs of {data.name} (uniform over "
            "them, sampled with replacement); not a statement about unseen data"
        )
    else:
        dist = (
            f"the data distribution of {data.name}, assuming its {len(pool)}-point test split is an i.i.d. "
            "sample from it that the teacher never saw (sampled without replacement)"
        )
    log(
        f"guarantee kind {kind}: s = {s} samples (minimum {choice['s_required']}; "
        f"d = {choice['d'] or 'n/a'}); "
        f"delta = {config.delta:g} ({config.norm}), kappa = {config.kappa:g}, epsilon = {config.epsilon:g}, "
        f"eta = {config.eta:g}; {len(K)} samples teacher-confident"
    )
    durations["sample_s"] = time.perf_counter() - t0

    # ---------------------------------------------------------------- 2. distil
    t0 = time.perf_counter()
    X_distill = X if config.distill_on == "samples" else pool
    skey = query_key(
        "student",
        t_sha,
        s_hash,
        config.distill_on,
        config.method,
        config.distill_params,
        config.student_arch,
        config.epochs,
        config.distill_lr,
        config.distill_weight_decay,
        config.seed,
        data.name,
        config.data_seed,
    )
    student_file, distill_summary = _student(
        teacher_model, X_distill.astype(np.float32), config, out, data, skey, log
    )
    student_net = load_onnx(student_file)
    student_model = load_model(student_file)
    st_sha = file_sha256(student_file)
    z_s = student_net.evaluate(X)
    p_s = softmax(z_s)
    c_s = np.argmax(z_s, axis=1)
    durations["distill_s"] = time.perf_counter() - t0

    # ---------------------------------------------------------------- Eq. 13 and rho
    t0 = time.perf_counter()
    scope = np.arange(s) if config.eq13_scope == "all" else K
    target = np.full(len(scope), config.kappa) if config.eq13_scope == "kappa" else p_t[scope, c_t[scope]]
    gap = p_s[scope, c_t[scope]] - target
    disagree = int(np.sum(c_s[K] != c_t[K]))
    eq13 = {
        "scope": config.eq13_scope,
        "n_checked": int(len(scope)),
        "violations": int(np.sum(gap < 0)),
        "worst_gap": float(gap.min()) if len(gap) else 0.0,
        "disagreements": disagree,
        "holds": bool(np.all(gap >= 0) and disagree == 0),
        "fraction_dominant_all": float(np.mean(p_s[np.arange(s), c_t] >= p_t[np.arange(s), c_t])),
        "definition": _EQ13_DEFS[config.eq13_scope],
    }
    rho_j = margin_gradient_ratios(teacher_model, student_model, X[K], c_t[K], config.norm)
    rho = rho_j.min(axis=1) if rho_j.size else np.zeros(len(K))
    factor = lift_factor(config.lift, rho_j, z_t[K], z_s[K], c_t[K])
    if rule == "fixed":
        with np.errstate(divide="ignore"):
            radii = np.where(factor > 0, R / np.where(factor > 0, factor, 1.0), np.inf)
    else:
        radii = np.full(len(K), R)
    lifted = factor * radii
    durations["lift_s"] = time.perf_counter() - t0

    journal = Journal(out / "journal.jsonl")
    versions: dict[str, str] = {}
    dcfg = DispatchConfig(backend=config.backend, timeout=config.global_timeout, seed=config.seed)
    # ---------------------------------------------------------------- 3a. global query
    t0 = time.perf_counter()
    finite = radii[np.isfinite(radii)]
    global_rec: dict[str, Any] = {"run": False, "verdict": None, "radius": None}
    covered = np.zeros(len(K), dtype=bool)
    if config.global_query and len(K) and len(finite):
        r_glob = float(finite.max())
        gkey = query_key(
            "global",
            st_sha,
            r_glob,
            config.kappa,
            config.norm,
            domain[0],
            domain[1],
            config.backend,
            config.global_timeout,
        )
        rec = journal.get(gkey)
        if rec is None:
            from .queries import verify_global

            log(
                f"global two-copy query on the student: radius {r_glob:.4g}, kappa {config.kappa:g}, "
                f"budget {config.global_timeout:g}s"
            )
            res = verify_global(student_net, r_glob, config.kappa, domain, dcfg, config.norm)
            rec = journal.record(gkey, _result_record(res))
        else:
            log("global query: reusing the journaled result")
        gres = _result_from_record(rec)
        global_rec = {
            "run": True,
            "radius": r_glob,
            "verdict": gres.verdict.value,
            "backend": gres.backend,
            "message": gres.message,
            "solver_version": gres.solver_version,
            "time_s": round(gres.time_s, 3),
        }
        if gres.solver_version:
            versions[gres.backend] = gres.solver_version
        if gres.verdict is Verdict.VERIFIED:
            covered = (c_s[K] == c_t[K]) & (p_s[K, c_t[K]] >= config.kappa) & (radii <= r_glob)
        counter_global = gres.counterexample
    else:
        counter_global = None
    durations["global_s"] = time.perf_counter() - t0
    log(f"global query: {global_rec['verdict']}; covers {int(covered.sum())} of {len(K)} confident samples")

    # ---------------------------------------------------------------- 3b. local queries
    t0 = time.perf_counter()
    status = np.array(["pending"] * len(K), dtype=object)
    by = np.array([""] * len(K), dtype=object)
    qtime = np.zeros(len(K))
    status[covered] = "verified"
    by[covered] = "global"
    bad_r = ~np.isfinite(radii)
    status[bad_r & ~covered] = "unknown"
    by[bad_r & ~covered] = "infinite radius (rho = 0)"
    todo = np.flatnonzero(status == "pending")
    if config.local_crown and len(todo):
        tc = time.perf_counter()
        ok = crown_local(student_net, X[K[todo]], c_t[K[todo]], radii[todo], config.norm, domain)
        status[todo[ok]] = "verified"
        by[todo[ok]] = "crown"
        durations["crown_s"] = time.perf_counter() - tc
        durations["crown_points_per_s"] = len(todo) / max(durations["crown_s"], 1e-9)
        log(
            f"batched CROWN: {int(ok.sum())} of {len(todo)} local queries verified "
            f"({durations['crown_points_per_s']:.0f} points/s)"
        )
    todo = np.flatnonzero(status == "pending")
    cex_local: dict[int, Counterexample] = {}
    if len(todo):
        lcfg = DispatchConfig(backend=config.backend, timeout=config.local_timeout, seed=config.seed)
        keys: dict[str, list[int]] = {}
        tasks = []
        for j in todo:
            i = int(K[j])
            k = query_key(
                "local",
                st_sha,
                X[i],
                int(c_t[i]),
                float(radii[j]),
                config.norm,
                domain[0],
                domain[1],
                config.backend,
                config.local_timeout,
            )
            if k in keys:  # the same point drawn twice (sampling with replacement): one query
                keys[k].append(int(j))
                continue
            keys[k] = [int(j)]
            rec = journal.get(k)
            if rec is None:
                prop = LocalRobustness(X[i], float(radii[j]), int(c_t[i]), config.norm, domain[0], domain[1])
                tasks.append(Task(k, prop, {"net": student_net}))
        for k, js in keys.items():
            rec = journal.get(k)
            if rec is not None:
                for j in js:
                    _apply(j, _result_from_record(rec), status, by, qtime, cex_local, versions)
        log(
            f"local solver queries: {len(tasks)} to run, {len(keys) - len(tasks)} reused from the journal "
            f"({len(todo)} samples)"
        )
        _run_local(tasks, lcfg, config, journal, keys, status, by, qtime, cex_local, versions, log)
    durations["local_s"] = time.perf_counter() - t0
    journal.close()

    # ---------------------------------------------------------------- 5. teacher cross-check
    t0 = time.perf_counter()
    log(
        f"teacher cross-check: PGD ({config.pgd_steps} steps, {config.pgd_restarts} restarts) at {len(K)} "
        "confident samples"
    )
    witnesses = teacher_crosscheck(
        teacher_model,
        teacher_net,
        X[K],
        c_t[K],
        np.where(np.isfinite(lifted), lifted, 0.0),
        config.norm,
        domain,
        config.pgd_steps,
        config.pgd_restarts,
        config.seed,
    )
    for w in witnesses:
        w["i"] = int(K[w["i"]])
    durations["crosscheck_s"] = time.perf_counter() - t0

    # ---------------------------------------------------------------- certificate
    local_queries = []
    for j, i in enumerate(K):
        local_queries.append(
            {
                "i": int(i),
                "index": int(idx[i]),
                "label": int(c_t[i]),
                "radius": float(radii[j]),
                "rho": float(rho[j]) if np.isfinite(rho[j]) else None,
                "lifted_radius": float(lifted[j]) if np.isfinite(lifted[j]) else None,
                "verdict": str(status[j]),
                "by": str(by[j]),
                "time_s": round(float(qtime[j]), 4),
            }
        )
    counterexamples: list[dict[str, Any]] = []
    for j, ce in sorted(cex_local.items()):
        i = int(K[j])
        counterexamples.append(
            {
                "kind": "student_local",
                "network": "student",
                "i": i,
                "x0": X[i].tolist(),
                "x": ce.x.tolist(),
                "label": int(c_t[i]),
                "radius": float(radii[j]),
                "norm": config.norm,
                "y": ce.y.tolist(),
            }
        )
    if counter_global is not None and counter_global.x2 is not None:
        counterexamples.append(
            {
                "kind": "student_global",
                "network": "student",
                "x": counter_global.x.tolist(),
                "x2": counter_global.x2.tolist(),
                "radius": global_rec["radius"],
                "kappa": config.kappa,
                "norm": config.norm,
                "y": counter_global.y.tolist(),
                "label": int(np.argmax(counter_global.y)),
            }
        )
    for w in witnesses:
        counterexamples.append({"kind": "teacher_pgd", "network": "teacher", **w})

    finite_rho = rho[np.isfinite(rho)]
    counts: dict[str, int] = {}
    for v in status:
        counts[str(v)] = counts.get(str(v), 0) + 1
    by_counts: dict[str, int] = {}
    for b in by:
        by_counts[str(b)] = by_counts.get(str(b), 0) + 1
    used = {
        str(b)
        for b in by
        if str(b) and str(b) not in ("crown", "global") and not str(b).startswith(("not run", "infinite"))
    }
    if global_rec.get("backend"):
        used.add(str(global_rec["backend"]))
    cert: dict[str, Any] = {
        "schema": SCHEMA,
        "verdict": None,
        "reasons": [],
        "guarantee": {},
        "models": {
            "teacher": {
                "file": teacher_file.name,
                "sha256": t_sha,
                "source": str(teacher_path),
                "n_inputs": teacher_net.n_inputs,
                "n_outputs": teacher_net.n_outputs,
                "hidden_sizes": list(teacher_net.hidden_sizes),
            },
            "student": {
                "file": student_file.name,
                "sha256": st_sha,
                "n_inputs": student_net.n_inputs,
                "n_outputs": student_net.n_outputs,
                "hidden_sizes": list(student_net.hidden_sizes),
            },
        },
        "data": {
            "name": data.name,
            "split_seed": config.data_seed,
            "pool": pool_name,
            "pool_size": int(len(pool)),
            "sampling": config.sampling,
            "distribution": dist,
            "sample_seed": config.seed,
            "sample_size": int(s),
            "sample_sha256": s_hash,
            "indices": idx.tolist(),
            "n_confident": int(len(K)),
            "domain_lo": domain[0].tolist(),
            "domain_hi": domain[1].tolist(),
        },
        "parameters": {
            "delta": config.delta,
            "kappa": config.kappa,
            "epsilon": config.epsilon,
            "eta": config.eta,
            "norm": config.norm,
            "m": m,
            "d": choice["d"],
            "guarantee_kind": kind,
            "guarantee_requested": config.guarantee,
            "tv_shift": config.tv_shift,
            "s_required": choice["s_required"],
            "lift": config.lift,
            "radius_rule": rule,
            "base_radius": R,
            "radius_factor": RADIUS_FACTOR[kind],
            "sample_sizes": {k: choice["pac"][v] for k, v in _KIND_PAC_NAME.items()},
        },
        "steps": {
            "sample": {
                "s": int(s),
                "confident": int(len(K)),
                "teacher_confidence_mean": float(conf_t.mean()),
            },
            "distill": distill_summary,
            "global": global_rec,
            "local": {
                "n_queries": int(len(K)),
                "counts": counts,
                "by": by_counts,
                "crown_points_per_s": durations.get("crown_points_per_s"),
            },
            "lift": {
                "rule": config.lift,
                "radius_rule": rule,
                "rho_definition": "min_j ||grad(f_c - f_j)_S||_* / ||grad(f_c - f_j)_T||_* at x "
                "(c = teacher class)",
                "rho_min": float(finite_rho.min()) if len(finite_rho) else None,
                "rho_median": float(np.median(finite_rho)) if len(finite_rho) else None,
                "rho_max": float(finite_rho.max()) if len(finite_rho) else None,
                "rho_below_1": int(np.sum(rho < 1.0)),
            },
            "eq13": eq13,
            "crosscheck": {
                "attack": "pgd-ce",
                "steps": config.pgd_steps,
                "restarts": config.pgd_restarts,
                "radius": "per-sample lifted radius",
                "n_points": int(len(K)),
                "adversarial": len(witnesses),
            },
        },
        "local_queries": local_queries,
        "counterexamples": counterexamples,
        "solvers": {
            "used": sorted(used),
            "versions": dict(sorted(versions.items())),
            "bounds": "CROWN (encoders.bounds, float64, widened for rounding)",
        },
        "assumptions": _assumptions(config, kind, rule),
        "config": config.public(),
        "software": software_versions(),
        "timestamps": {"started": started, "finished": None},
        "durations_s": {},
    }
    dec = decide(cert)
    cert["verdict"] = dec["verdict"]
    cert["reasons"] = dec["reasons"]
    cert["guarantee"] = {
        "kind": kind,
        "teacher_radius": dec["teacher_radius"],
        "kappa": config.kappa,
        "epsilon": config.epsilon,
        "epsilon_shifted": config.epsilon + config.tv_shift,
        "eta": config.eta,
        "epsilon_achieved": dec["epsilon_achieved"],
        "violations": dec["violations"],
        "text": guarantee_text(cert, dec),
    }
    durations["total_s"] = time.perf_counter() - t_start
    cert["durations_s"] = {k: round(float(v), 3) for k, v in durations.items()}
    cert["timestamps"]["finished"] = _now()
    arrays = {
        "indices": idx,
        "teacher_conf": conf_t,
        "student_conf_teacher_class": p_s[np.arange(s), c_t],
        "student_conf": p_s.max(axis=1),
        "teacher_label": c_t,
        "student_label": c_s,
        "confident": K,
        "rho": rho,
        "radius": radii,
        "lifted_radius": lifted,
        "status": np.array([str(v) for v in status], dtype="U16"),
        "X": X,
    }
    write_certificate(cert, out, arrays)
    log(
        f"verdict: {cert['verdict'].upper()}"
        + (f" ({'; '.join(r['text'] for r in cert['reasons'])})" if cert["reasons"] else "")
    )
    return cert


def _apply(
    j: int,
    res: Result,
    status: np.ndarray,
    by: np.ndarray,
    qtime: np.ndarray,
    cex: dict[int, Counterexample],
    versions: dict[str, str],
) -> None:
    status[j] = res.verdict.value
    by[j] = res.backend
    qtime[j] = res.time_s
    if res.solver_version:
        versions[res.backend] = res.solver_version
    if res.verdict is Verdict.FALSIFIED and res.counterexample is not None:
        cex[j] = res.counterexample


def _run_local(
    tasks: list[Task],
    lcfg: DispatchConfig,
    config: CertifyConfig,
    journal: Journal,
    keys: Mapping[str, list[int]],
    status: np.ndarray,
    by: np.ndarray,
    qtime: np.ndarray,
    cex: dict[int, Counterexample],
    versions: dict[str, str],
    log: Callable[[str], None],
) -> None:
    """Solve the local queries (journaling each as it finishes) within ``config.local_budget`` seconds.

    Queries are started in chunks of ``jobs``; once the budget is spent the rest are marked
    ``unknown`` ("budget") — reported as undecided, never dropped and never journaled (a rerun with a
    larger budget solves them).
    """
    if not tasks:
        return
    from tqdm import tqdm

    t0 = time.perf_counter()
    bar = tqdm(
        total=len(tasks),
        desc="local queries",
        file=sys.stderr,
        disable=not getattr(log, "progress", True),
        leave=False,
        dynamic_ncols=True,
    )

    def on_result(key: str, res: Result) -> None:
        journal.record(key, _result_record(res))
        for j in keys[key]:
            _apply(j, res, status, by, qtime, cex, versions)
        bar.update(1)

    step = max(1, config.jobs)
    done = 0
    for a in range(0, len(tasks), step):
        left = config.local_budget - (time.perf_counter() - t0)
        if left <= 0:
            break
        chunk = tasks[a : a + step]
        cfg = dataclasses.replace(lcfg, timeout=max(0.5, min(lcfg.timeout, left)))
        verify_many(chunk, cfg, jobs=config.jobs, on_result=on_result)
        done = a + len(chunk)
    bar.close()
    for t in tasks[done:]:
        for j in keys[t.key]:
            status[j] = "unknown"
            by[j] = "not run: local_budget exhausted"
    if done < len(tasks):
        log(
            f"local solver budget of {config.local_budget:g}s exhausted: {len(tasks) - done} queries not run "
            "(reported undecided)"
        )


_LIFT_ASSUMPTION = {
    "prop43": (
        "Prop. 4.3 lift (measured): around each confident sample the logit margins of teacher and student "
        "are locally linear and equal (perfect student), so the teacher's radius is the student's times "
        "min(1, rho(x)), rho = the measured margin-gradient ratio (dual norm). This is an assumption, not "
        "a proof; the PGD cross-check can refute it but not confirm it."
    ),
    "prop43m": (
        "Margin-corrected Prop. 4.3 lift (measured): around each confident sample the logit margins of "
        "teacher and student are locally linear on the ball, so the teacher's radius is at least the "
        "student's times min_j (m_T,j / m_S,j) * rho_j. An assumption, not a proof; the PGD cross-check "
        "can refute it but not confirm it."
    ),
    "prop42": (
        "Prop. 4.2 lift: the student is perfect (teacher and student agree with equal margins) and locally "
        "linear near the samples, so the teacher inherits the student's radius. Not measured."
    ),
}


def _assumptions(config: CertifyConfig, kind: str, rule: str) -> list[str]:
    a = [
        "The sampled points are i.i.d. draws from the stated distribution D: exact for sampling='empirical' "
        "(a seeded pseudo-random generator over the training inputs); for sampling='heldout' it assumes the "
        "test split is an i.i.d. sample from the data distribution, unseen by the teacher.",
        "Robustness is argmax stability on the ball intersected with the data set's input box; ties count as "
        "violations.",
        "Verification of the student is sound up to the floating-point margins documented in encoders.bounds "
        "and the solvers' feasibility tolerances; every counterexample was replayed on onnxruntime.",
    ]
    a.append(_LIFT_ASSUMPTION[config.lift])
    a.append("Distillation success (seed 000 Eq. 13) was checked on the samples only.")
    if kind == "seed":
        a.append(
            "Seed kind (seed 000 Thm. 3.8 / 4.4): 0 < epsilon, eta <= 1/2; VC dimension d = m+1 (L2) or "
            "2m (L-inf boxes bound cubes); the ranges are balls intersected with the fixed teacher-confident "
            "set, whose VC dimension is at most d."
        )
    elif kind == "quality":
        a.append(
            "Quality-space kind (Blohm et al., ICML 2025): VC dimension 2 of quadrants in the "
            "(radius, confidence) plane; holds simultaneously for every radius and kappa."
        )
    else:
        a.append(
            "Binomial kind: the property (delta, kappa) was fixed before sampling (radius rule 'fixed'); "
            "one-sided Clopper-Pearson bound."
        )
    if config.tv_shift > 0:
        a.append(
            f"Deployment distribution within total variation {config.tv_shift:g} of D (Obs. 4.5), as "
            "stated by the user (not checked). Note an empirical distribution is at TV distance 1 from "
            "any continuous one."
        )
    if rule == "min" and config.lift != "prop42":
        a.append(
            "Radius rule 'min': the teacher radius is read off the sample, which the uniform "
            "(all-balls / all-radii) statements of the seed and quality-space kinds allow."
        )
    return a
