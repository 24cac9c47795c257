r"""Stage 6, **decide**: the verdict, its reasons and the guarantee's numbers from a certificate's records
(:func:`decide`, re-run by ``distillcert check``), the guarantee in words, and the assumptions it rests on.

Radius rules: ``"min"`` (seed and quality-space kinds, both *uniform*): ``r_T = min_{i∈K} δ_T(x_i)``
(divided by 3 for the seed kind); ``"fixed"`` (binomial; allowed for all): ``r_T = δ``.

Guarantees (probability ``≥ 1 − η`` over the sample; ``ε`` becomes ``ε + Λ`` for a deployment distribution
within total variation ``Λ`` of ``D``, seed 000 Obs. 4.5):

* seed: the teacher is ``r_T``-robust at every point covered by a ball ``B_{r_T}(y)`` with
  ``Pr_D(B_{r_T}(y) ∩ C_κ) ≥ ε``, ``C_κ = {conf_T ≥ κ}`` (seed 000 Thm. 3.8 on the range space
  ``{B ∩ C_κ}``; every such range holds a confident sample ``x_i``, where the teacher is ``3 r_T``-robust,
  and ``B_{r_T}(x) ⊆ B_{3 r_T}(x_i)``);
* quality space: ``Pr_D[conf_T ≥ κ ∧ teacher not r_T-robust] < ε``;
* binomial: with ``k`` confident samples not established robust (student not verified, or teacher
  attacked), ``Pr_D[conf_T ≥ κ ∧ teacher not δ-robust] ≤ CP(k, s, η)`` (one-sided Clopper–Pearson);
  certified when this is ``≤ ε``.
"""

from __future__ import annotations

from collections.abc import Mapping
from typing import Any

from . import pac
from .config import RADIUS_FACTOR, CertifyConfig
from .lift import inflated

__all__ = ["assumptions", "decide", "guarantee_text"]

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
    refuted = [q for q in queries if q.get("audit") == "refuted"]
    if refuted:
        reasons.append(
            {
                "code": "lift_refuted",
                "text": (
                    f"lifted claim refuted: direct verification of the teacher found a counterexample at "
                    f"{len(refuted)} lifted claim(s) (first at sample {refuted[0]['i']}, radius "
                    f"{refuted[0]['lifted_radius']:.4g}), replayed on onnxruntime"
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
    tol = float(p["lift_tolerance"])
    infl = [
        q
        for q in queries
        if q["verdict"] in _ESTABLISHED and inflated(q["lift_factor"], q["lift_factor_m"], tol)
    ]
    if infl:
        worst = max(float(q["lift_factor"]) / max(float(q["lift_factor_m"]), 1e-300) for q in infl)
        reasons.append(
            {
                "code": "lift_inflated",
                "text": (
                    f"the {p['lift']} lift exceeds the margin-corrected prop43m lift by more than the "
                    f"tolerance {tol:g} at {len(infl)} of {len(queries)} confident samples (up to "
                    f"{worst:.3g}x): teacher and student margins disagree, so the lift's equal-margin "
                    "assumption is refuted; use lift = prop43m"
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


_LIFT_ASSUMPTION = {
    "prop43": (
        "Prop. 4.3 lift (measured): around each confident sample the logit margins of teacher and student "
        "are locally linear and equal (perfect student), so the teacher's radius is the student's times "
        "min(1, rho(x)), rho = the measured margin-gradient ratio (dual norm). This is an assumption, not "
        "a proof; it is refused where it exceeds the margin-corrected prop43m lift beyond lift_tolerance."
    ),
    "prop43m": (
        "Margin-corrected Prop. 4.3 lift (measured): around each confident sample the logit margins of "
        "teacher and student are locally linear on the ball, so the teacher's radius is at least the "
        "student's times min_j (m_T,j / m_S,j) * rho_j. An assumption, not a proof, wherever the lift "
        "audit did not confirm a claim by verifying the teacher directly."
    ),
    "prop42": (
        "Prop. 4.2 lift: the student is perfect (teacher and student agree with equal margins) and locally "
        "linear near the samples, so the teacher inherits the student's radius. Not measured."
    ),
}


def assumptions(config: CertifyConfig, kind: str, rule: str) -> list[str]:
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
    a.append(
        "Lift audit: PGD at every lifted radius (an adversarial example refuses), and, when the teacher's "
        "verifiable IR can be built, direct verification of each lifted claim on the teacher (CROWN, "
        "alpha-CROWN, a solver within audit_budget); confirmed claims are proved for the teacher, undecided "
        "ones rest on the lift assumption, a refuted one refuses the certificate."
    )
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
