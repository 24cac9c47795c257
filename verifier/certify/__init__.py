r"""The certifier: seed 000's Algorithm 1, completed — a PAC robustness guarantee on a *teacher* obtained by
distilling it into a small student, verifying the student, and lifting the verdicts back.

Notation: teacher ``f_T``, student ``f_S`` (logits), ``p = softmax``, ``c_T(x) = argmax f_T(x)``,
``conf_T(x) = max_k p(f_T(x))_k``.  ``D`` is the sampling distribution (see *Sampling*), ``m`` the input
dimension, ``‖·‖`` the chosen norm (L∞ or L2) and ``‖·‖_*`` its dual (L1 resp. L2).  A model is
*r-robust at x* iff ``argmax f(x') = argmax f(x)`` for every ``x' ∈ B_r(x) ∩ Dom`` (``Dom`` = the data
set's input box; ties count as violations).

Steps (:func:`certify`)
-----------------------
1. **Sample.**  ``s`` is the smallest sample size of the chosen guarantee kind (:mod:`verifier.certify.pac`;
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

4. **Lift** (measured): with the *margin-gradient ratios* and *margin ratios*

   .. math:: \rho_j(x) = \frac{\|\nabla_x (f_{S,c} - f_{S,j})(x)\|_*}{\|\nabla_x (f_{T,c} - f_{T,j})(x)\|_*},
             \qquad \mu_j(x) = \frac{f_{T,c} - f_{T,j}}{f_{S,c} - f_{S,j}}(x),\qquad c = c_T(x),

   the teacher's radius at a verified sample is ``δ_T(x_i) = λ(x_i) · R_i`` with the default
   ``λ = min(1, min_j μ_j ρ_j)`` (``prop43m``).  Why: if the margins are locally linear on the ball, the
   teacher's distance to the ``j``-boundary is ``m_{T,j}/‖∇m_{T,j}‖_* = μ_j ρ_j · m_{S,j}/‖∇m_{S,j}‖_*``
   and the student's linear distance is at least its verified radius.  Scaling the student's logits
   leaves ``λ`` unchanged.  ``prop43`` (``min(1, min_j ρ_j)``, seed 000 Prop. 4.3: margins also *equal*)
   and ``prop42`` (``λ = 1``) are refused where they exceed ``prop43m`` by more than ``lift_tolerance``
   (:func:`verifier.certify.lift.inflated`).
   *Distillation success* (seed 000 Eq. 13): the student at least as confident as the teacher in the
   teacher's class, ``p(f_S(x_i))_{c_T} ≥ p(f_T(x_i))_{c_T}``, at every sample of the scope (default: the
   confident samples, where the lift is used; ``eq13_scope = "all"`` for every sample).  The distillation
   aims at it (a hinge on the gap, :func:`distill.losses.distill_for_eq13`); the check is exact.
5. **Audit** (:mod:`verifier.certify.audit`): PGD (in-house, :mod:`distill.attacks`) on the teacher at
   every ``i ∈ K`` at its lifted radius ``δ_T(x_i)``; a point it finds is replayed on onnxruntime against
   the teacher's ONNX file and refuses the certificate.  And direct verification of every lifted claim on
   the teacher when its IR can be built (CROWN, α-CROWN, a solver within a budget): confirmed / undecided
   / refuted; a refuted claim refuses the certificate.
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

Modules (one per stage; imports run one way, config/context → sample → distil/lift → verify/audit →
decide → schema → pipeline → run; the checker :mod:`~verifier.certify.check` only reads)
------------------------------------------------------------------------------------------------------
``config`` (:class:`CertifyConfig`), ``context`` (log, run context, :class:`~.context.Balls`),
``pac`` (sample sizes), ``teacher`` (import of any ONNX/TorchScript teacher, its evaluation), ``sample``,
``distil``, ``lift`` (ρ, λ, Eq. 13), ``verify`` (global query,
batched CROWN, solvers), ``audit`` (the teacher cross-check), ``decide`` (verdict, guarantee text,
assumptions), ``schema`` (certificate schema, writer, loader), ``report`` (report.md and plots),
``pipeline`` (:func:`certify`), ``run`` (``distillcert run``: the main job) and ``check``
(``distillcert check``).
"""

from .audit import Attack, teacher_crosscheck
from .check import check_certificate
from .config import CERTIFY_KEYS, GUARANTEE_KINDS, LIFTS, RADIUS_FACTOR, SAMPLINGS, CertifyConfig
from .context import Balls
from .decide import decide, guarantee_text
from .lift import lift_factor, margin_gradient_ratio, margin_gradient_ratios
from .pipeline import certify
from .sample import choose_kind, draw_sample, radius_rule, sample_hash, sample_pool, softmax
from .schema import SCHEMA, load_certificate, write_certificate
from .verify import crown_local

__all__ = [
    "Attack",
    "Balls",
    "CERTIFY_KEYS",
    "CertifyConfig",
    "GUARANTEE_KINDS",
    "LIFTS",
    "RADIUS_FACTOR",
    "SAMPLINGS",
    "SCHEMA",
    "certify",
    "check_certificate",
    "choose_kind",
    "crown_local",
    "decide",
    "draw_sample",
    "guarantee_text",
    "lift_factor",
    "load_certificate",
    "margin_gradient_ratio",
    "margin_gradient_ratios",
    "radius_rule",
    "sample_hash",
    "sample_pool",
    "softmax",
    "teacher_crosscheck",
    "write_certificate",
]
