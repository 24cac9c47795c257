"""The certifier's configuration: :class:`CertifyConfig` (every parameter of a run, also the keys of a
``run.toml``), the named choices and their validation.  Leaf module of :mod:`verifier.certify`."""

from __future__ import annotations

import dataclasses
import math
from collections.abc import Mapping
from dataclasses import dataclass, field
from typing import Any

from encoders.errors import ConfigError

from ..dispatch import BACKEND_CHOICES
from . import pac

__all__ = [
    "CERTIFY_KEYS",
    "CertifyConfig",
    "DISTILL_ON",
    "EQ13_SCOPES",
    "GUARANTEE_KINDS",
    "LIFTS",
    "RADIUS_FACTOR",
    "RADIUS_RULES",
    "SAMPLINGS",
]

GUARANTEE_KINDS = ("seed", "quality", "binomial", "auto")
_KIND_PAC_NAME = {"seed": "seed_vc", "quality": "quality_space", "binomial": "binomial"}
LIFTS = ("prop43m", "prop43", "prop42")
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
    lift, lift_tolerance, teacher_radius, eq13_scope
        ``"prop43m"`` (default: measured ρ and margin ratio, see
        :func:`verifier.certify.lift.lift_factor`; a logit-scaled student cannot inflate it), ``"prop43"``
        (measured ρ alone) or ``"prop42"`` (ρ ≡ 1, assumed).  Whatever the lift, the certificate is refused
        where an established claim's factor exceeds the margin-corrected ``prop43m`` factor by more than the
        factor ``1 + lift_tolerance`` (default 0.05): teacher and student margins then disagree beyond the
        tolerance and the equal-margin assumption of ``prop43``/``prop42`` is refuted by the measurement.
        Radius rule ``"auto"`` (``"fixed"``
        for binomial, ``"min"`` otherwise), ``"min"`` or ``"fixed"``; Eq. 13 (strict) on the
        ``"confident"`` samples or on ``"all"``, or its weak reading ``"kappa"`` (see ``_EQ13_DEFS``).
    method, distill_params, student_arch, epochs, distill_lr
        (and ``distill_weight_decay``) Distillation method, overrides of
        :class:`distill.losses.DistillConfig` (a TOML table; default
        ``lambda_ce = 4``: with the CE term on the teacher's hard labels weighted up, the per-sample optimum
        of the KDIGA loss lies above the teacher's confidence, which is what Eq. 13 asks), student widths
        (default ``m-32-32-n``), epochs and learning rate.
    eq13_hinge, eq13_rounds
        Distillation aimed at Eq. 13 (:func:`distill.losses.distill_for_eq13`): weight of the hinge on the
        confidence gap added to the distillation loss, and the number of rounds (each a fine-tuning with a
        4x stronger hinge) tried while Eq. 13 fails on the distillation points.  ``eq13_hinge = 0`` and
        ``eq13_rounds = 1``: the plain distillation loss.  Eq. 13's check itself is never weakened.
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
    audit, audit_alpha, audit_budget
        The lift audit (:func:`verifier.certify.audit.lift_audit`): on/off, α-CROWN iterations per claim,
        and seconds for it (half of it at most for α-CROWN, the rest for solver queries at
        ``local_timeout`` each).
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
    lift: str = "prop43m"
    lift_tolerance: float = 0.05
    teacher_radius: str = "auto"
    eq13_scope: str = "confident"
    method: str = "kdiga"
    distill_params: dict[str, float] = field(default_factory=lambda: {"lambda_ce": 4.0})
    student_arch: str | None = None
    epochs: int = 100
    distill_lr: float = 0.05
    distill_weight_decay: float = 5e-4
    eq13_hinge: float = 1.0
    eq13_rounds: int = 4
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
    audit: bool = True
    audit_alpha: int = 20
    audit_budget: float = 60.0

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
        if not (self.lift_tolerance >= 0 and math.isfinite(self.lift_tolerance)):
            raise ConfigError(f"--lift-tolerance must be a finite number >= 0, got {self.lift_tolerance!r}")
        if not (self.eq13_hinge >= 0 and math.isfinite(self.eq13_hinge)):
            raise ConfigError(f"--eq13-hinge must be a finite number >= 0, got {self.eq13_hinge!r}")
        for name in ("global_timeout", "local_timeout", "local_budget", "distill_lr", "audit_budget"):
            _check_pos(getattr(self, name), name)
        if not (self.distill_weight_decay >= 0 and math.isfinite(self.distill_weight_decay)):
            raise ConfigError(
                f"--distill-weight-decay must be a finite number >= 0, got {self.distill_weight_decay!r}"
            )
        if self.teacher_adv_eps < 0 or not math.isfinite(self.teacher_adv_eps):
            raise ConfigError(f"--teacher-adv-eps must be a finite number >= 0, got {self.teacher_adv_eps!r}")
        for name, lo in (
            ("epochs", 1),
            ("eq13_rounds", 1),
            ("teacher_epochs", 1),
            ("jobs", 1),
            ("pgd_steps", 1),
            ("pgd_restarts", 1),
            ("audit_alpha", 0),
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
