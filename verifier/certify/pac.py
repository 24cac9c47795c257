r"""Sample complexity of the PAC guarantees distillcert can lift to a teacher (``distillcert pac``).

Three kinds of guarantee are offered.  All assume the ``s`` points are drawn **i.i.d. from the data
distribution** :math:`D_X` the guarantee talks about; none says anything about points off the support of
:math:`D_X`.

Seed kind (seed 000, Thm. 3.8 / Thm. 4.4; an ε-net bound)
    With :math:`d` the VC dimension of the range space of norm balls in :math:`\mathbb{R}^m`, and
    :math:`0 < \varepsilon, \eta \le 1/2`, a sample of size

    .. math::
        s \;\ge\; \frac{8d}{\varepsilon}\ln\frac{16d}{\varepsilon} + \frac{4}{\varepsilon}\ln\frac{2}{\eta}

    is, with probability :math:`\ge 1-\eta`, an ε-net for the balls: every ball of probability mass
    :math:`\ge\varepsilon` contains a sample point.  Hence, if :math:`f` is locally :math:`3\delta`-robust at
    every sampled point, :math:`f` is :math:`\delta`-robust at every point covered by a ball of
    :math:`\mathcal{B}_{\delta,\varepsilon} = \{B_\delta(x) : \Pr_D(B_\delta(x)) \ge \varepsilon\}`.

    VC dimension (:func:`vc_dimension`): :math:`d = m+1` for L2 balls (Dudley: balls in :math:`\mathbb{R}^m`
    have VC dimension :math:`m+1`); :math:`d = 2m` for L∞ balls, because L∞ balls are axis-parallel
    cubes, a subfamily of axis-parallel boxes, whose VC dimension is exactly :math:`2m` — a bound on that of
    cubes.  :math:`m+1` is **never** used for L∞.

Quality-space kind (Blohm, Indri, Gärtner, Malhotra, ICML 2025, "Probably Approximately Global Robustness
Certification")
    The ranges :math:`\{x : \mathrm{conf}(x) \ge \kappa,\ x \text{ not } \rho\text{-robust}\}` are
    pull-backs of quadrants of the 2-D (radius, confidence) space, VC dimension 2, so the same formula with
    :math:`d = 2` — independent of the input dimension — gives, with probability :math:`\ge 1-\eta`,
    simultaneously for every :math:`(\rho, \kappa)`: if every sampled point with
    :math:`\mathrm{conf}\ge\kappa` is :math:`\rho`-robust, then
    :math:`\Pr_{x\sim D}[\mathrm{conf}(x)\ge\kappa \wedge x \text{ not } \rho\text{-robust}] < \varepsilon`.

Fixed-property kind (binomial test)
    For one :math:`(\delta,\kappa)` fixed before sampling, the indicator of a violation is a Bernoulli
    variable with unknown mean :math:`p`.  With :math:`k` violations among :math:`s` samples the one-sided
    Clopper–Pearson upper bound at level :math:`1-\eta` is

    .. math::
        p_u(k, s, \eta) = \mathrm{Beta}^{-1}(1-\eta;\ k+1,\ s-k) \quad (k < s),
        \qquad p_u(s, s, \eta) = 1,

    i.e. the :math:`p` with :math:`\Pr[\mathrm{Bin}(s, p) \le k] = \eta`; :math:`\Pr[p \le p_u] \ge 1-\eta`.
    For :math:`k = 0`, :math:`p_u = 1-\eta^{1/s}`, and :math:`p_u \le \varepsilon` as soon as
    :math:`s \ge \ln(1/\eta)/\varepsilon` (because :math:`1-e^{-\varepsilon} \le \varepsilon`).

Distribution shift (seed 000, Obs. 4.5)
    An ε-net for :math:`D` is an :math:`(\varepsilon+\Lambda)`-net for any :math:`D'` with
    :math:`\mathrm{TV}(D, D') \le \Lambda`, since :math:`|\Pr_D(A) - \Pr_{D'}(A)| \le \Lambda` for every event
    :math:`A`.  The same argument moves each of the three statements above from :math:`D` to :math:`D'`
    with :math:`\varepsilon` replaced by :math:`\varepsilon+\Lambda` (:func:`shifted_epsilon`).
"""

from __future__ import annotations

import argparse
import math
import numbers
from collections.abc import Callable
from typing import Any

from encoders.errors import ConfigError

__all__ = [
    "NORMS",
    "binomial_epsilon",
    "binomial_eta",
    "binomial_sample_size",
    "clopper_pearson_upper",
    "pac_summary",
    "quality_space_sample_size",
    "register_pac",
    "seed_bound",
    "seed_epsilon",
    "seed_eta",
    "seed_sample_size",
    "shifted_epsilon",
    "vc_dimension",
]

#: VC dimension of the balls of each norm in R^m (see the module docstring).
_VC_DIM: dict[str, Callable[[int], int]] = {
    "2": lambda m: m + 1,  # Euclidean balls (Dudley)
    "inf": lambda m: 2 * m,  # cubes ⊂ axis-parallel boxes, VC dimension 2m
}
#: accepted spellings of a norm -> canonical name
_NORM_ALIASES: dict[str, str] = {"2": "2", "l2": "2", "inf": "inf", "linf": "inf", "l_inf": "inf"}
NORMS: tuple[str, ...] = tuple(_VC_DIM)

#: VC dimension of quadrants of the (radius, confidence) plane (Blohm et al., ICML 2025)
QUALITY_SPACE_VC = 2

_HALF = 0.5
_LN2 = math.log(2.0)  # ln(2/eta) and ln(1/eta) are computed as differences of logs: no overflow
_REL_TOL = 1e-12  # relative width at which the bisection of the inverses stops (well inside 1e-9)


# ----------------------------------------------------------------------------------------------- checks
def _check_unit(value: float, option: str, hi: float = _HALF) -> float:
    """``value`` as a float in ``(0, hi]``, else ConfigError naming ``option``."""
    try:
        v = float(value)
    except (TypeError, ValueError):
        raise ConfigError(f"{option}: expected a number, got {value!r}") from None
    if not (0.0 < v <= hi):  # also rejects NaN
        bound = "1/2" if hi == _HALF else f"{hi:g}"
        raise ConfigError(f"{option} must be in (0, {bound}], got {value!r}")
    return v


def _check_eps(eps: float) -> float:
    return _check_unit(eps, "--epsilon")


def _check_eta(eta: float) -> float:
    return _check_unit(eta, "--eta")


def _check_count(value: int, name: str, minimum: int = 1) -> int:
    if (
        isinstance(value, bool)
        or not isinstance(value, numbers.Real)
        or not math.isfinite(value)
        or value != int(value)
    ):
        raise ConfigError(f"{name} must be an integer, got {value!r}")
    v = int(value)
    if v < minimum:
        raise ConfigError(f"{name} must be >= {minimum}, got {value!r}")
    return v


def _norm_name(norm: str | float | int) -> str:
    if isinstance(norm, int | float) and not isinstance(norm, bool):
        key = "inf" if norm == math.inf else ("2" if norm == 2 else str(norm))
    else:
        key = str(norm).strip().lower()
    try:
        return _NORM_ALIASES[key]
    except KeyError:
        raise ConfigError(f"--norm must be one of {', '.join(NORMS)}, got {norm!r}") from None


# -------------------------------------------------------------------------------------------- seed kind
def vc_dimension(m: int, norm: str | float | int) -> int:
    r"""VC dimension ``d`` of the balls of ``norm`` in :math:`\mathbb{R}^m`.

    * ``"2"``: :math:`d = m + 1` (Dudley; seed 000).
    * ``"inf"``: :math:`d = 2m`.  L∞ balls are axis-parallel cubes; the axis-parallel boxes of
      :math:`\mathbb{R}^m` have VC dimension :math:`2m` and contain the cubes, so :math:`2m` bounds the VC
      dimension of L∞ balls.  (Using :math:`m+1` for L∞ would be unjustified.)

    Raises
    ------
    ConfigError
        ``m <= 0`` or an unknown norm.
    """
    m = _check_count(m, "--m")
    return _VC_DIM[_norm_name(norm)](m)


def seed_bound(eps: float, eta: float, d: int) -> float:
    r"""The real-valued right-hand side of seed 000 Thm. 3.8 / 4.4.

    .. math:: b(\varepsilon, \eta, d) = \frac{8d}{\varepsilon}\ln\frac{16d}{\varepsilon}
              + \frac{4}{\varepsilon}\ln\frac{2}{\eta}

    valid for :math:`0 < \varepsilon, \eta \le 1/2`.  It is strictly decreasing in ε and in η on that
    domain: :math:`\partial_\varepsilon[\tfrac{8d}{\varepsilon}\ln\tfrac{16d}{\varepsilon}]
    = -\tfrac{8d}{\varepsilon^2}(\ln\tfrac{16d}{\varepsilon} + 1) < 0`.
    """
    eps, eta = _check_eps(eps), _check_eta(eta)
    d = _check_count(d, "d (VC dimension)")
    return _seed_bound(eps, eta, d)


def _seed_bound(eps: float, eta: float, d: int) -> float:
    return (8.0 * d / eps) * math.log(16.0 * d / eps) + (4.0 / eps) * (_LN2 - math.log(eta))


def seed_sample_size(eps: float, eta: float, d: int) -> int:
    r"""Smallest integer ``s`` with :math:`s \ge \frac{8d}{\varepsilon}\ln\frac{16d}{\varepsilon}
    + \frac{4}{\varepsilon}\ln\frac{2}{\eta}` (seed 000, Thm. 3.8 / 4.4).

    With probability :math:`\ge 1-\eta` over ``s`` i.i.d. samples from :math:`D`, the sample is an ε-net
    for a range space of VC dimension ``d``.  Requires :math:`0 < \varepsilon, \eta \le 1/2`.
    """
    return math.ceil(seed_bound(eps, eta, d))


def quality_space_sample_size(eps: float, eta: float) -> int:
    r"""Sample size of the quality-space kind (Blohm et al., ICML 2025): :func:`seed_sample_size` with
    :math:`d = 2`, the VC dimension of quadrants of the (radius, confidence) plane — independent of the
    input dimension."""
    return seed_sample_size(eps, eta, QUALITY_SPACE_VC)


def _bisect_smallest(pred: Callable[[float], bool], lo: float, hi: float) -> float:
    """Smallest x in (lo, hi] with pred(x), for pred monotone (False … False True … True), pred(hi) True.

    Returns the upper end of the final bracket, so ``pred(result)`` always holds (the safe side), and
    the result is within relative ``_REL_TOL`` of the true threshold.
    """
    for _ in range(2000):
        if hi - lo <= _REL_TOL * hi:
            break
        mid = 0.5 * (lo + hi)
        if mid <= lo or mid >= hi:
            break
        if pred(mid):
            hi = mid
        else:
            lo = mid
    return hi


def seed_epsilon(s: int, eta: float, d: int) -> float:
    r"""The smallest ε that ``s`` samples achieve in the seed kind at confidence :math:`1-\eta`.

    Solves :math:`\frac{8d}{\varepsilon}\ln\frac{16d}{\varepsilon} + \frac{4}{\varepsilon}\ln\frac{2}{\eta}
    = s` for ε by bisection on the strictly decreasing left-hand side (see :func:`seed_bound`).  The
    returned ε is on the safe side of the root (never smaller, within :math:`10^{-12}` relative), so that
    ``seed_sample_size(seed_epsilon(s, eta, d), eta, d) <= s`` always holds.

    Raises
    ------
    ConfigError
        If even ε = 1/2 needs more than ``s`` samples (the theorem says nothing for ε > 1/2).
    """
    s = _check_count(s, "s (sample size)")
    eta = _check_eta(eta)
    d = _check_count(d, "d (VC dimension)")
    need = math.ceil(_seed_bound(_HALF, eta, d))
    if need > s:
        raise ConfigError(
            f"s={s} samples are too few for the seed guarantee with d={d}, eta={eta:g}: "
            f"even epsilon=1/2 needs {need}"
        )
    return _bisect_smallest(lambda e: _seed_bound(e, eta, d) <= s, 0.0, _HALF)


def seed_eta(s: int, eps: float, d: int) -> float:
    r"""The smallest η that ``s`` samples achieve in the seed kind for a given ε.

    Closed form: :math:`\eta = 2\exp\!\big(-\tfrac{\varepsilon}{4}\,(s - \tfrac{8d}{\varepsilon}
    \ln\tfrac{16d}{\varepsilon})\big)`, then nudged up by ulps until
    ``seed_sample_size(eps, eta, d) <= s`` holds in floating point.  Clamped below at the smallest
    positive float (a larger η is a weaker, still true, statement).

    Raises
    ------
    ConfigError
        If the η needed exceeds 1/2 (``s`` too small for this ε).
    """
    s = _check_count(s, "s (sample size)")
    eps = _check_eps(eps)
    d = _check_count(d, "d (VC dimension)")
    need = math.ceil(_seed_bound(eps, _HALF, d))
    if need > s:
        raise ConfigError(
            f"s={s} samples are too few for the seed guarantee with d={d}, epsilon={eps:g}: "
            f"even eta=1/2 needs {need}"
        )
    a = (8.0 * d / eps) * math.log(16.0 * d / eps)
    eta = max(2.0 * math.exp(-(eps / 4.0) * (s - a)), math.ulp(0.0))
    return _nudge_up(eta, lambda h: _seed_bound(eps, h, d) <= s)


def _nudge_up(x: float, ok: Callable[[float], bool]) -> float:
    """Move ``x`` up by ulps (at most 64 steps; the closed forms are off by a few ulps at most) until ok."""
    for _ in range(64):
        if ok(x):
            return min(x, _HALF)
        x = math.nextafter(x, math.inf)
    return min(_bisect_smallest(ok, x, _HALF), _HALF)


# -------------------------------------------------------------------------------- fixed-property kind
def clopper_pearson_upper(k: int, s: int, eta: float) -> float:
    r"""One-sided Clopper–Pearson upper confidence bound on a Bernoulli mean at level :math:`1-\eta`.

    .. math::
        p_u = \mathrm{Beta}^{-1}(1-\eta;\ k+1,\ s-k) \text{ for } k < s,
        \qquad p_u = 1 \text{ for } k = s,

    the :math:`p` solving :math:`\Pr[\mathrm{Bin}(s, p) \le k] = \eta`.  For :math:`k = 0` it is
    evaluated in closed form, :math:`p_u = 1-\eta^{1/s} = -\mathrm{expm1}(\ln\eta / s)`.  Valid for any
    :math:`0 < \eta < 1`.

    Parameters
    ----------
    k : number of violations observed, ``0 <= k <= s``.
    s : number of i.i.d. samples, ``s >= 1``.
    eta : failure probability.
    """
    s = _check_count(s, "s (sample size)")
    k = _check_count(k, "k (violations)", minimum=0)
    if k > s:
        raise ConfigError(f"k (violations) must be <= s={s}, got {k}")
    eta = _check_unit(eta, "--eta", hi=1.0)
    if eta >= 1.0:
        raise ConfigError(f"--eta must be in (0, 1) for a Clopper-Pearson bound, got {eta!r}")
    if k == s:
        return 1.0
    if k == 0:
        return -math.expm1(math.log(eta) / s)
    from scipy.stats import beta  # deferred: scipy.stats is slow to import

    return float(beta.ppf(1.0 - eta, k + 1, s - k))


def binomial_sample_size(eps: float, eta: float) -> int:
    r"""Smallest integer ``s`` with :math:`s \ge \ln(1/\eta)/\varepsilon`: with zero violations among
    ``s`` samples, the Clopper–Pearson bound :math:`1-\eta^{1/s} \le \varepsilon` at level :math:`1-\eta`."""
    eps, eta = _check_eps(eps), _check_eta(eta)
    return math.ceil((-math.log(eta)) / eps)


def binomial_epsilon(s: int, eta: float) -> float:
    r"""The ε of the zero-violation binomial bound for ``s`` samples: :math:`\varepsilon = \ln(1/\eta)/s`
    (nudged up by ulps so ``binomial_sample_size(binomial_epsilon(s, eta), eta) <= s``).

    The exact Clopper–Pearson value :func:`clopper_pearson_upper` ``(0, s, eta)`` is slightly smaller.

    Raises
    ------
    ConfigError
        If the ε reached exceeds 1/2.
    """
    s = _check_count(s, "s (sample size)")
    eta = _check_eta(eta)
    eps = (-math.log(eta)) / s
    if eps > _HALF:
        raise ConfigError(
            f"s={s} samples are too few for the binomial guarantee at eta={eta:g}: "
            f"epsilon would be {eps:.3g} > 1/2"
        )
    return _nudge_up(eps, lambda e: math.ceil((-math.log(eta)) / e) <= s)


def binomial_eta(s: int, eps: float) -> float:
    r"""The η of the zero-violation binomial bound for ``s`` samples and ε: :math:`\eta = e^{-\varepsilon s}`
    (nudged up by ulps so ``binomial_sample_size(eps, binomial_eta(s, eps)) <= s``; clamped below at the
    smallest positive float).

    Raises
    ------
    ConfigError
        If the η needed exceeds 1/2.
    """
    s = _check_count(s, "s (sample size)")
    eps = _check_eps(eps)
    eta = max(math.exp(-eps * s), math.ulp(0.0))
    if eta > _HALF:
        raise ConfigError(
            f"s={s} samples are too few for the binomial guarantee at epsilon={eps:g}: "
            f"eta would be {eta:.3g} > 1/2"
        )
    return _nudge_up(eta, lambda h: math.ceil((-math.log(h)) / eps) <= s)


# ---------------------------------------------------------------------------------------------- shift
def shifted_epsilon(eps: float, tv_shift: float) -> float:
    r"""ε of a guarantee moved to a distribution :math:`D'` with :math:`\mathrm{TV}(D, D') \le \Lambda`
    (seed 000, Obs. 4.5): :math:`\varepsilon + \Lambda`.

    Holds for all three kinds, because :math:`|\Pr_D(A) - \Pr_{D'}(A)| \le \Lambda` for every event
    :math:`A`.  A value :math:`\ge 1` means the shifted guarantee is vacuous.

    Raises
    ------
    ConfigError
        ``--tv-shift`` negative, NaN or above 1 (a total-variation distance lies in [0, 1]).
    """
    eps = _check_eps(eps)
    try:
        lam = float(tv_shift)
    except (TypeError, ValueError):
        raise ConfigError(f"--tv-shift: expected a number, got {tv_shift!r}") from None
    if not (0.0 <= lam <= 1.0):
        raise ConfigError(f"--tv-shift must be a total-variation distance in [0, 1], got {tv_shift!r}")
    return eps + lam


# -------------------------------------------------------------------------------------------- summary
def pac_summary(
    m: int, norm: str | float | int, eps: float, eta: float, tv_shift: float = 0.0
) -> dict[str, Any]:
    """Sample sizes of the three guarantee kinds for inputs in R^m, with each guarantee in plain words.

    Returns
    -------
    dict
        ``seed_vc``, ``quality_space``, ``binomial`` (sample sizes), ``d`` (VC dimension of the norm
        balls), ``m``, ``norm`` (``"inf"`` or ``"2"``), ``epsilon``, ``eta``, ``tv_shift``,
        ``epsilon_shifted`` (ε + Λ, Obs. 4.5), ``smallest`` (the kind with the fewest samples — the
        kinds promise different things, see ``guarantees``) and ``guarantees`` (kind -> sentence).
    """
    eps, eta = _check_eps(eps), _check_eta(eta)
    norm_c = _norm_name(norm)
    d = vc_dimension(m, norm_c)
    m = int(m)
    eps_d = shifted_epsilon(eps, tv_shift)
    lam = float(tv_shift)
    s_seed = seed_sample_size(eps, eta, d)
    s_qs = quality_space_sample_size(eps, eta)
    s_bin = binomial_sample_size(eps, eta)
    sizes = {"seed_vc": s_seed, "quality_space": s_qs, "binomial": s_bin}

    norm_txt = "L2" if norm_c == "2" else "L-inf"
    vc_why = (
        f"d = m+1 = {d}, the VC dimension of L2 balls in R^{m} (Dudley)"
        if norm_c == "2"
        else f"d = 2m = {d}, the VC dimension of axis-parallel boxes in R^{m}, "
        "which bounds that of L-inf balls"
    )
    dist = "D" if lam == 0.0 else f"any D' with TV(D, D') <= {lam:g}"
    e_txt = f"{eps_d:g}" if lam == 0.0 else f"{eps_d:g} (= epsilon {eps:g} + shift {lam:g}, Obs. 4.5)"
    iid = "the samples are drawn i.i.d. from the data distribution D"
    guarantees = {
        "seed_vc": (
            f"With probability >= {1 - eta:g} over {s_seed} samples: if the model is locally 3*delta-robust "
            f"({norm_txt}) at every sample, it is delta-robust at every point covered by a ball B_delta(x) "
            f"of probability >= {e_txt} under {dist}. Assumes {iid} and 0 < epsilon, eta <= 1/2; "
            f"{vc_why} (seed 000 Thm. 3.8/4.4)."
        ),
        "quality_space": (
            f"With probability >= {1 - eta:g} over {s_qs} samples, simultaneously for every radius rho and "
            f"confidence kappa: if every sample with confidence >= kappa is rho-robust ({norm_txt}), then "
            f"Pr[confidence >= kappa and not rho-robust] < {e_txt} under {dist}. Assumes {iid}; d = 2 "
            f"(quadrants of the radius-confidence plane), independent of m (Blohm et al., ICML 2025)."
        ),
        "binomial": (
            f"For one (delta, kappa) fixed before sampling: if none of {s_bin} samples violates it, then "
            f"with confidence >= {1 - eta:g}, Pr[violation] <= {e_txt} under {dist} (one-sided "
            f"Clopper-Pearson, s >= ln(1/eta)/epsilon). Assumes {iid}; k > 0 violations give the "
            f"Clopper-Pearson bound instead."
        ),
    }
    smallest = min(sizes, key=lambda k: (sizes[k], k))
    out: dict[str, Any] = {
        **sizes,
        "d": d,
        "m": m,
        "norm": norm_c,
        "epsilon": eps,
        "eta": eta,
        "tv_shift": lam,
        "epsilon_shifted": eps_d,
        "smallest": smallest,
        "guarantees": guarantees,
    }
    out["text"] = _render(out)
    return out


def _render(r: dict[str, Any]) -> str:
    lines = [
        f"PAC sample sizes for m={r['m']}, norm={r['norm']}, epsilon={r['epsilon']:g}, eta={r['eta']:g}"
        + (f", TV shift={r['tv_shift']:g}" if r["tv_shift"] != 0.0 else ""),
        f"  {'seed (VC, d=' + str(r['d']) + ')':<26} s = {r['seed_vc']}",
        f"  {'quality space (d=2)':<26} s = {r['quality_space']}",
        f"  {'fixed property (binomial)':<26} s = {r['binomial']}",
        "",
    ]
    for kind, sentence in r["guarantees"].items():
        lines.append(f"[{kind}] {sentence}")
    return "\n".join(lines)


# ------------------------------------------------------------------------------------------------ CLI
def _pac_handler(args: argparse.Namespace) -> dict[str, Any]:
    return pac_summary(args.m, args.norm, args.epsilon, args.eta, args.tv_shift)


def register_pac(subparsers: Any) -> argparse.ArgumentParser:
    """Add ``distillcert pac --m M --norm inf|2 --epsilon E --eta H [--tv-shift L]`` to ``subparsers``.

    The CLI framework adds ``--json``; the handler returns :func:`pac_summary`'s dict.
    """
    p = subparsers.add_parser(
        "pac",
        help="sample sizes of the PAC guarantee kinds",
        description="Sample sizes (seed VC kind, quality-space kind, fixed-property binomial kind) for a PAC "
        "robustness guarantee over inputs in R^m, each with its guarantee in plain words.",
    )
    p.add_argument("--m", type=int, required=True, help="input dimension")
    p.add_argument("--norm", choices=NORMS, required=True, help="norm of the robustness balls")
    p.add_argument("--epsilon", type=float, required=True, help="probability-mass parameter, in (0, 1/2]")
    p.add_argument("--eta", type=float, required=True, help="failure probability, in (0, 1/2]")
    p.add_argument(
        "--tv-shift",
        type=float,
        default=0.0,
        dest="tv_shift",
        help="total-variation distance to the deployment distribution (Obs. 4.5), default 0",
    )
    p.set_defaults(func=_pac_handler)
    return p
