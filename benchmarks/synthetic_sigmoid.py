r"""``distillcert bench synthetic-sigmoid`` — seed 000 §5 and Fig. 1: the pipeline against an analytic truth.

Setting
-------
Data: ``gaussians2d`` (two truncated Gaussians in R² on either side of the hyperplane ``x·1 = 0``, input
box ``Dom = [-3, 3]²``).  Teacher: seed 000's analytic ``f_T(x; a) = (σ(a·x·1), 1 − σ(a·x·1))``
(:class:`distill.models.SigmoidTeacher`, logits ``(a s, 0)`` with ``s = x·1``), for a grid of slopes ``a``
and confidence thresholds ``κ`` (and the L∞ and/or L2 norm).  For each setting the certifier
(:func:`verifier.certify.certify`, seed 000 Algorithm 1 completed) samples ``s`` points, distils a ReLU
student on them (default KDIGA), verifies the student (global two-copy query, then local queries at the
κ-confident samples), lifts the radius to the teacher, cross-checks the teacher with PGD and returns
``certified`` or ``refused``.  Separately, the student's global two-copy κ-confidence δ-robustness query
is answered at exactly ``δ`` (the Fig. 1 comparison).

Analytic truth
--------------
With ``t = logit(κ) = ln(κ/(1−κ))`` and ``‖·‖_q`` the dual of the attack norm (``q = 1`` for L∞,
``q = 2`` for L2):

* confidence: ``conf_T(x) = σ(a |s|) ≥ κ  ⟺  |s| ≥ t/a``;
* distance to the decision boundary: ``dist(x) = |x·1| / ‖1‖_q`` (Hölder; the closest boundary point
  ``x − (s/2)·1`` (L∞) or ``x − (s/2)·1`` (L2) has coordinates ``(x_1 − x_2)/2`` etc., inside ``Dom``,
  so intersecting the ball with ``Dom`` does not change it);
* the teacher is r-robust at x iff ``dist(x) > r`` (ties count as violations, as in the verifier);
* global κ-confident δ-robustness on ``Dom`` fails iff some ``s ∈ [0, 6]`` (the range of ``|x·1|`` on
  ``Dom``) has ``s ≥ t/a`` and ``s ≤ δ‖1‖_q``, i.e. iff ``t/a ≤ min(δ‖1‖_q, 6)``; so the teacher is
  globally robust exactly above the curve ``κ*(a) = σ(a · min(δ‖1‖_q, 6))``.

What is compared
----------------
* **Fig. 1** (``fig1.png``): per ``(a, κ)``, marker = whether the *student's* global verdict at ``δ``
  agrees with the teacher's analytic global robustness (○ agree, ✕ disagree, □ undecided), colour =
  seed 000 Eq. 13 distillation success on the sample (the certifier's check: the student at least as
  confident as the teacher in the teacher's class at every confident sample, and no disagreement).
* **Pipeline soundness** (``pipeline.png``, the headline): the certifier's claim is a PAC statement
  (binomial kind: ``Pr_D[conf_T ≥ κ ∧ teacher not r_T-robust] ≤ ε_achieved``; quality-space kind: ``< ε``),
  with ``D`` the empirical distribution of the training inputs (``sampling = "empirical"``), so its truth
  is an exact finite average computed analytically.  A setting is **unsound** when the teacher is
  certified and either that claim is false, or some sampled point the certificate declares robust (a
  verified confident sample, at its lifted radius) is analytically not robust.  The benchmark reports
  the number of unsound settings (must be 0) and, separately, certified settings whose teacher is not
  *globally* robust (allowed by a PAC claim when the violating region has mass below ε — listed with
  that mass).

Outputs: ``settings.csv`` (one row per setting), ``results.json``, ``fig1.png``, ``pipeline.png``,
``summary.md``; ``certs/a<slope>/`` holds the certifier's folders (student, journal, report) and one
``cert_k<κ>_<norm>.json`` per setting.
"""

from __future__ import annotations

import dataclasses
import math
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np

from encoders.errors import ConfigError

from .common import (
    Timer,
    machine_info,
    md_table,
    new_figure,
    save_fig,
    seed_everything,
    torch_threads,
    write_csv,
    write_json,
    write_summary,
)
from .common import progress as _bar

__all__ = [
    "SigmoidBenchConfig",
    "QUICK",
    "FULL",
    "ones_dual_norm",
    "teacher_confidence",
    "boundary_distance",
    "teacher_globally_robust",
    "robustness_threshold",
    "violation_mass",
    "run",
]

BOX = 3.0  # gaussians2d input box [-3, 3]^2 (distill.data.GAUSSIANS2D_BOX)
_CLAIM_KINDS = ("binomial", "quality")


@dataclass(frozen=True)
class SigmoidBenchConfig:
    """The grid and the certifier settings (every setting uses the same ones).

    ``epsilon``/``eta``/``guarantee`` are the PAC parameters of :class:`verifier.certify.CertifyConfig`;
    only the binomial and quality-space kinds are allowed, because their claims can be checked exactly
    against the analytic truth.  ``backend`` answers the L∞ queries and ``l2_backend`` the L2 ones: the
    L2 two-copy query carries a quadratic constraint, which ``auto`` sends to Gurobi, whose size-limited
    pip licence refuses quadratic models above 200 variables (a 2-16-16-2 student needs 202), so the
    default races Gurobi, HiGHS and Marabou (``portfolio``).
    """

    slopes: tuple[float, ...]
    kappas: tuple[float, ...]
    norms: tuple[str, ...] = ("inf",)
    delta: float = 0.25
    epsilon: float = 0.05
    eta: float = 0.01
    guarantee: str = "binomial"
    method: str = "kdiga"
    student_arch: str = "2-16-16-2"
    epochs: int = 200
    backend: str = "auto"
    l2_backend: str = "portfolio"
    global_timeout: float = 30.0
    local_timeout: float = 10.0
    local_budget: float = 60.0
    pgd_steps: int = 50
    pgd_restarts: int = 5

    def validate(self) -> None:
        if not self.slopes or any(not (a > 0 and math.isfinite(a)) for a in self.slopes):
            raise ConfigError("synthetic-sigmoid: slopes must be positive finite numbers")
        if any(float(np.float32(a)) != a for a in self.slopes):
            raise ConfigError("synthetic-sigmoid: slopes must be exact float32 numbers (as stored in ONNX)")
        if not self.kappas or any(not (0.5 < k < 1.0) for k in self.kappas):
            raise ConfigError("synthetic-sigmoid: every kappa must lie in (0.5, 1)")
        if any(n not in ("inf", "2") for n in self.norms):
            raise ConfigError("synthetic-sigmoid: norms must be 'inf' or '2'")
        if not (0 < self.delta < BOX):
            raise ConfigError(f"synthetic-sigmoid: delta must lie in (0, {BOX})")
        if self.guarantee not in _CLAIM_KINDS:
            raise ConfigError(
                f"synthetic-sigmoid: guarantee must be one of {', '.join(_CLAIM_KINDS)} "
                "(their claims are checkable against the analytic truth)"
            )


QUICK = SigmoidBenchConfig(
    slopes=(0.5, 2.0, 8.0),
    kappas=(0.6, 0.9),
    norms=("inf",),
    epsilon=0.05,
    eta=0.05,
    epochs=100,
    global_timeout=15.0,
    local_timeout=5.0,
    local_budget=20.0,
    pgd_steps=20,
    pgd_restarts=2,
)
FULL = SigmoidBenchConfig(
    slopes=(0.25, 0.5, 1.0, 2.0, 4.0, 8.0, 16.0),
    kappas=(0.55, 0.6, 0.7, 0.8, 0.9, 0.95, 0.99),
    norms=("inf", "2"),
    epsilon=0.02,
    eta=0.01,
    epochs=300,
)


# ==================================================================================================
# analytic truth
# ==================================================================================================
def ones_dual_norm(norm: str, m: int = 2) -> float:
    """``‖1‖_q`` in R^m for the dual ``q`` of ``norm``: ``m`` (L1, dual of L∞) or ``√m`` (L2)."""
    return float(m) if norm == "inf" else math.sqrt(m)


def teacher_confidence(a: float, X: np.ndarray) -> np.ndarray:
    """``σ(a |x·1|)`` per row of ``X`` (the max softmax of the sigmoid teacher), float64."""
    s = np.abs(np.asarray(X, dtype=np.float64).sum(axis=1))
    return 1.0 / (1.0 + np.exp(-float(a) * s))


def boundary_distance(X: np.ndarray, norm: str) -> np.ndarray:
    """``|x·1| / ‖1‖_q``: the ``norm``-distance from each row to the hyperplane ``x·1 = 0``."""
    X = np.asarray(X, dtype=np.float64)
    return np.abs(X.sum(axis=1)) / ones_dual_norm(norm, X.shape[1])


def robustness_threshold(a: float, delta: float, norm: str) -> float:
    """``κ*(a) = σ(a · min(δ‖1‖_q, 2·BOX))``: the teacher is globally κ-confident δ-robust on the box
    iff ``κ > κ*(a)`` (see the module docstring)."""
    return 1.0 / (1.0 + math.exp(-float(a) * min(delta * ones_dual_norm(norm), 2 * BOX)))


def teacher_globally_robust(a: float, kappa: float, delta: float, norm: str) -> bool:
    """Analytic global κ-confident δ-robustness of the sigmoid teacher on ``[-3, 3]²``:
    no ``x`` with ``conf_T(x) ≥ κ`` has a point of the other class within distance ``δ``.

    Fails iff ``logit(κ)/a ≤ min(δ‖1‖_q, 6)`` (ties count as violations)."""
    t = math.log(kappa / (1.0 - kappa)) / float(a)
    return not (t <= min(delta * ones_dual_norm(norm), 2 * BOX))


def violation_mass(a: float, kappa: float, r: float, norm: str, X_pool: np.ndarray) -> float:
    """Exact ``Pr_{x ~ uniform(X_pool)}[conf_T(x) ≥ κ and the teacher is not r-robust at x]``."""
    conf = teacher_confidence(a, X_pool)
    return float(np.mean((conf >= kappa) & (boundary_distance(X_pool, norm) <= r)))


# ==================================================================================================
# one setting
# ==================================================================================================
def _teacher_file(a: float, folder: Path, data: Any) -> Path:
    from distill.export import export_onnx
    from distill.models import SigmoidTeacher

    path = folder / "teacher.onnx"
    if not path.is_file():
        export_onnx(
            SigmoidTeacher(a, 2),
            path,
            2,
            {
                "dataset": data.name,
                "input_domain": {"lo": data.domain_lo.tolist(), "hi": data.domain_hi.tolist()},
                "training": {"kind": "sigmoid teacher (seed 000 §5)", "a": a},
            },
        )
    return path


def _backend(cfg: SigmoidBenchConfig, norm: str) -> str:
    return cfg.l2_backend if norm == "2" else cfg.backend


def _student_global(
    student_path: Path, cfg: SigmoidBenchConfig, kappa: float, norm: str, data: Any, seed: int
) -> dict[str, Any]:
    from encoders.network import load_onnx
    from verifier.dispatch import DispatchConfig
    from verifier.queries import verify_global

    net = load_onnx(student_path)
    dcfg = DispatchConfig(backend=_backend(cfg, norm), timeout=cfg.global_timeout, seed=seed)
    res = verify_global(net, cfg.delta, kappa, (data.domain_lo, data.domain_hi), dcfg, norm)
    return {"verdict": res.verdict.value, "time_s": float(res.time_s), "backend": res.backend}


def _setting(
    a: float, kappa: float, norm: str, cfg: SigmoidBenchConfig, folder: Path, data: Any, seed: int
) -> dict[str, Any]:
    from verifier.certify import CertifyConfig, certify

    teacher = _teacher_file(a, folder, data)
    ccfg = CertifyConfig(
        data="gaussians2d",
        data_seed=seed,
        delta=cfg.delta,
        kappa=kappa,
        norm=norm,
        epsilon=cfg.epsilon,
        eta=cfg.eta,
        guarantee=cfg.guarantee,
        method=cfg.method,
        student_arch=cfg.student_arch,
        epochs=cfg.epochs,
        seed=seed,
        backend=_backend(cfg, norm),
        global_timeout=cfg.global_timeout,
        local_timeout=cfg.local_timeout,
        local_budget=cfg.local_budget,
        pgd_steps=cfg.pgd_steps,
        pgd_restarts=cfg.pgd_restarts,
    )
    with Timer() as tm:
        cert = certify(teacher, ccfg, folder, progress=False, data=data)
    write_json(folder / f"cert_k{kappa:g}_{norm}.json", cert)
    sg = _student_global(folder / "student.onnx", cfg, kappa, norm, data, seed)

    pool = np.asarray(data.X_train, dtype=np.float64)
    X = pool[np.asarray(cert["data"]["indices"], dtype=np.int64)]
    dist = boundary_distance(X, norm)
    g_truth = teacher_globally_robust(a, kappa, cfg.delta, norm)
    s_verdict = sg["verdict"]
    if s_verdict in ("verified", "falsified"):
        agreement = "agree" if (s_verdict == "verified") == g_truth else "disagree"
    else:
        agreement = "undecided"

    certified = cert["verdict"] == "certified"
    r_t = float(cert["guarantee"]["teacher_radius"])
    witnesses = [c for c in cert["counterexamples"] if c["kind"] == "teacher_pgd"]
    attacked = {int(w["i"]) for w in witnesses}
    # points the certificate declares robust: verified confident samples not attacked, at their lifted radius
    over = [
        q
        for q in cert["local_queries"]
        if q["verdict"] == "verified"
        and int(q["i"]) not in attacked
        and q["lifted_radius"] is not None
        and dist[int(q["i"])] <= float(q["lifted_radius"])
    ]
    # every PGD witness must be a real analytic violation (a sanity check of the cross-check itself)
    fake_witness = 0
    for w in witnesses:
        x0, x = np.asarray(w["x0"]), np.asarray(w["x"])
        gap = np.max(np.abs(x - x0)) if norm == "inf" else float(np.linalg.norm(x - x0))
        side0, side = np.sign(x0.sum()), np.sign(x.sum())
        if gap > float(w["radius"]) * (1 + 1e-9) + 1e-12 or (side == side0 and side != 0):
            fake_witness += 1
    mass = violation_mass(a, kappa, r_t, norm, pool)
    if cfg.guarantee == "binomial":
        bound = float(cert["guarantee"]["epsilon_achieved"])
        claim_holds = mass <= bound
    else:
        bound = float(cfg.epsilon)
        claim_holds = mass < bound
    global_at_rt = teacher_globally_robust(a, kappa, r_t, norm) if r_t > 0 else True
    counts = cert["steps"]["local"]["counts"]
    eq = cert["steps"]["eq13"]
    return {
        "a": a,
        "kappa": kappa,
        "norm": norm,
        "delta": cfg.delta,
        "kappa_star": robustness_threshold(a, cfg.delta, norm),
        "teacher_globally_robust": g_truth,
        "student_global": s_verdict,
        "student_global_s": round(sg["time_s"], 3),
        "agreement": agreement,
        "samples": int(cert["data"]["sample_size"]),
        "confident": int(cert["data"]["n_confident"]),
        "local_verified": int(counts.get("verified", 0)),
        "local_falsified": int(counts.get("falsified", 0)),
        "local_undecided": int(sum(v for k, v in counts.items() if k not in ("verified", "falsified"))),
        "cert_global": cert["steps"]["global"].get("verdict"),
        "eq13": bool(eq["holds"]),
        "eq13_violations": int(eq["violations"]),
        "disagreements": int(eq["disagreements"]),
        "verdict": cert["verdict"],
        "reasons": ";".join(r["code"] for r in cert["reasons"]),
        "teacher_radius": r_t,
        "teacher_witnesses": len(witnesses),
        "fake_witnesses": fake_witness,
        "claim_mass": mass,
        "claim_bound": bound,
        "claim_holds": claim_holds,
        "overclaimed_points": len(over),
        "unsound": bool(certified and (not claim_holds or len(over) > 0 or fake_witness > 0)),
        "certified_not_globally_robust": bool(certified and not global_at_rt),
        "seconds": round(tm.seconds, 3),
        "cpu_s": round(tm.cpu_seconds, 3),
    }


# ==================================================================================================
# plots and summary
# ==================================================================================================
_MARK = {"agree": "o", "disagree": "X", "undecided": "s"}


def _grid_axes(fig: Any, cfg: SigmoidBenchConfig) -> list[Any]:
    axes = fig.subplots(1, len(cfg.norms), squeeze=False)[0]
    for ax, norm in zip(axes, cfg.norms):
        ax.set_xscale("log", base=2)
        ax.set_xlabel("teacher slope a")
        ax.set_ylabel("confidence threshold κ")
        aa = np.geomspace(min(cfg.slopes) / 1.5, max(cfg.slopes) * 1.5, 200)
        ax.plot(
            aa,
            [robustness_threshold(a, cfg.delta, norm) for a in aa],
            "k--",
            lw=1,
            label="κ*(a): teacher globally robust above",
        )
        ax.set_title(f"{'L∞' if norm == 'inf' else 'L2'}, δ = {cfg.delta:g}")
        ax.set_ylim(min(0.5, min(cfg.kappas) - 0.03), 1.0)
    return list(axes)


def _fig1(rows: list[dict[str, Any]], cfg: SigmoidBenchConfig, path: Path) -> Path:
    from matplotlib.lines import Line2D

    fig = new_figure(5.0 * len(cfg.norms) + 2.4, 4.2)
    for ax, norm in zip(_grid_axes(fig, cfg), cfg.norms):
        for r in (r for r in rows if r["norm"] == norm):
            col = "tab:green" if r["eq13"] else "tab:red"
            ax.scatter(
                [r["a"]],
                [r["kappa"]],
                marker=_MARK[r["agreement"]],
                s=70,
                c=col,
                edgecolors="k",
                linewidths=0.5,
            )
        handles = [Line2D([], [], ls="--", c="k", label="κ*(a)")]
        handles += [
            Line2D([], [], ls="", marker=_MARK[k], c="gray", label=lab)
            for k, lab in (
                ("agree", "student verdict = teacher truth"),
                ("disagree", "student verdict ≠ teacher truth"),
                ("undecided", "student undecided"),
            )
        ]
        handles += [
            Line2D([], [], ls="", marker="o", c=c, label=lab)
            for c, lab in (("tab:green", "Eq. 13 success"), ("tab:red", "Eq. 13 failure"))
        ]
    ax.legend(handles=handles, fontsize=7, loc="upper left", bbox_to_anchor=(1.02, 1.0))
    fig.suptitle("Student global verdict vs teacher's analytic robustness (seed 000 Fig. 1)", fontsize=10)
    return save_fig(fig, path)


def _fig_pipeline(rows: list[dict[str, Any]], cfg: SigmoidBenchConfig, path: Path) -> Path:
    from matplotlib.lines import Line2D

    fig = new_figure(5.0 * len(cfg.norms) + 2.4, 4.2)
    for ax, norm in zip(_grid_axes(fig, cfg), cfg.norms):
        for r in (r for r in rows if r["norm"] == norm):
            col = "tab:blue" if r["teacher_globally_robust"] else "tab:orange"
            cert = r["verdict"] == "certified"
            ax.scatter(
                [r["a"]],
                [r["kappa"]],
                marker="o" if cert else "v",
                s=70,
                c=col if cert else "none",
                edgecolors=col,
                linewidths=1.5,
            )
            if r["unsound"]:
                ax.scatter([r["a"]], [r["kappa"]], marker="x", s=160, c="red")
        handles = [
            Line2D([], [], ls="", marker="o", c="tab:gray", label="certified"),
            Line2D([], [], ls="", marker="v", mfc="none", c="tab:gray", label="refused"),
            Line2D([], [], ls="", marker="s", c="tab:blue", label="teacher globally robust"),
            Line2D([], [], ls="", marker="s", c="tab:orange", label="teacher not globally robust"),
            Line2D([], [], ls="", marker="x", c="red", label="UNSOUND"),
        ]
    ax.legend(handles=handles, fontsize=7, loc="upper left", bbox_to_anchor=(1.02, 1.0))
    fig.suptitle("Certifier verdict on the teacher vs analytic truth", fontsize=10)
    return save_fig(fig, path)


def _summary_text(res: dict[str, Any]) -> str:
    s = res["headline"]
    return (
        f"synthetic-sigmoid: {s['settings']} settings, {s['certified']} certified, "
        f"{s['refused']} refused; "
        f"UNSOUND (certified but the analytic truth contradicts the claim): {s['unsound']}; "
        f"student/teacher global agreement {s['agree']}/{s['decided']} decided; "
        f"{res['seconds']:.0f} s -> {res['out']}"
    )


def _headline_md(h: dict[str, Any], seconds: float, cpu: float) -> str:
    return "\n".join(
        [
            f"- **Unsound settings: {h['unsound']}** of {h['settings']} (certified, yet the analytic truth "
            "contradicts the certificate's claim or one of its verified sample points); "
            f"{h['overclaimed_points_in_certified']} over-claimed points in certified settings; "
            f"{h['fake_witnesses']} PGD witnesses that are not real violations.",
            f"- Certified {h['certified']}, refused {h['refused']}; the teacher is globally robust in "
            f"{h['teacher_robust_settings']} settings, of which {h['certified_of_teacher_robust']} "
            "certified.",
            "- Certified although the teacher is not *globally* robust at the certified radius: "
            f"{h['certified_not_globally_robust']} (allowed by the PAC claim: the violating region's mass "
            "is the `claim mass` column, below its bound).",
            "- Student global verdict agrees with the teacher's analytic global robustness in "
            f"{h['agree']} of {h['decided']} decided settings; with Eq. 13 success {h['agree_given_eq13']}, "
            f"without {h['agree_given_no_eq13']}.  Disagreements in the unsafe direction (student "
            f"globally verified, teacher not robust): {h['student_verified_teacher_not']}; the others are "
            "conservative (a student at least as confident as the teacher is κ-confident closer to the "
            "boundary).",
            f"- Wall time {seconds:.1f} s ({cpu:.1f} s CPU, solver processes included).",
        ]
    )


def _setup_md(cfg: SigmoidBenchConfig, seed: int) -> str:
    return (
        f"Teacher σ(a·x·1) on gaussians2d (seed {seed}); δ = {cfg.delta:g}; guarantee {cfg.guarantee}, "
        f"ε = {cfg.epsilon:g}, η = {cfg.eta:g}, sampling from the empirical training distribution; "
        f"student {cfg.student_arch} by {cfg.method}, {cfg.epochs} epochs on the sample (Algorithm 1); "
        f"backends {cfg.backend} (L∞) / {cfg.l2_backend} (L2).  Analytic truth: conf = σ(a|x·1|), "
        "distance |x·1|/‖1‖_q, teacher globally robust iff κ > κ*(a) = σ(a·min(δ‖1‖_q, 6))."
    )


def run(
    quick: bool, out: Path, seed: int, progress: bool = True, config: SigmoidBenchConfig | None = None
) -> dict[str, Any]:
    """Run the grid (``QUICK`` or ``FULL`` unless ``config`` is given); write the outputs into ``out``.

    Returns a dict with ``headline`` (counts; ``unsound`` must be 0), ``rows`` (one per setting),
    ``files`` and ``text``.
    """
    from distill.data import load_dataset

    cfg = config or (QUICK if quick else FULL)
    cfg.validate()
    out = Path(out)
    out.mkdir(parents=True, exist_ok=True)
    seed_everything(seed)
    data = load_dataset("gaussians2d", seed)
    grid = [(a, k, n) for a in cfg.slopes for n in cfg.norms for k in cfg.kappas]
    rows: list[dict[str, Any]] = []
    with Timer() as total, torch_threads(1):
        for a, k, n in _bar(grid, "synthetic-sigmoid", total=len(grid), enabled=progress):
            folder = out / "certs" / f"a{a:g}"
            folder.mkdir(parents=True, exist_ok=True)
            rows.append(_setting(a, k, n, cfg, folder, data, seed))
    files = {
        "settings": str(write_csv(out / "settings.csv", rows)),
        "fig1": str(_fig1(rows, cfg, out / "fig1.png")),
        "pipeline": str(_fig_pipeline(rows, cfg, out / "pipeline.png")),
    }
    decided = [r for r in rows if r["agreement"] != "undecided"]
    eq_ok = [r for r in decided if r["eq13"]]
    headline = {
        "settings": len(rows),
        "certified": sum(r["verdict"] == "certified" for r in rows),
        "refused": sum(r["verdict"] != "certified" for r in rows),
        "unsound": sum(r["unsound"] for r in rows),
        "overclaimed_points_in_certified": sum(
            r["overclaimed_points"] for r in rows if r["verdict"] == "certified"
        ),
        "fake_witnesses": sum(r["fake_witnesses"] for r in rows),
        "certified_not_globally_robust": sum(r["certified_not_globally_robust"] for r in rows),
        "teacher_robust_settings": sum(r["teacher_globally_robust"] for r in rows),
        "certified_of_teacher_robust": sum(
            r["verdict"] == "certified" and r["teacher_globally_robust"] for r in rows
        ),
        "decided": len(decided),
        "agree": sum(r["agreement"] == "agree" for r in decided),
        "student_verified_teacher_not": sum(
            r["student_global"] == "verified" and not r["teacher_globally_robust"] for r in rows
        ),
        "eq13_success": sum(r["eq13"] for r in rows),
        "agree_given_eq13": f"{sum(r['agreement'] == 'agree' for r in eq_ok)}/{len(eq_ok)}",
        "agree_given_no_eq13": (
            f"{sum(r['agreement'] == 'agree' for r in decided if not r['eq13'])}/"
            f"{sum(not r['eq13'] for r in decided)}"
        ),
    }
    res: dict[str, Any] = {
        "benchmark": "synthetic-sigmoid",
        "quick": quick,
        "seed": seed,
        "config": dataclasses.asdict(cfg),
        "machine": machine_info(),
        "seconds": total.seconds,
        "cpu_seconds": total.cpu_seconds,
        "headline": headline,
        "rows": rows,
        "files": files,
        "out": str(out),
    }
    files["results"] = str(write_json(out / "results.json", res))
    cols = (
        "a",
        "κ",
        "norm",
        "κ*",
        "teacher robust",
        "student global",
        "agree",
        "Eq.13",
        "verdict",
        "r_T",
        "claim mass",
        "bound",
        "unsound",
    )
    table = md_table(
        cols,
        [
            (
                r["a"],
                r["kappa"],
                r["norm"],
                r["kappa_star"],
                r["teacher_globally_robust"],
                r["student_global"],
                r["agreement"],
                r["eq13"],
                r["verdict"] + (f" ({r['reasons']})" if r["reasons"] else ""),
                r["teacher_radius"],
                r["claim_mass"],
                r["claim_bound"],
                "**YES**" if r["unsound"] else "no",
            )
            for r in rows
        ],
    )
    sections = [
        ("Headline", _headline_md(headline, total.seconds, total.cpu_seconds)),
        ("Setup", _setup_md(cfg, seed)),
        ("Settings", table),
        ("Plots", "![Fig. 1](fig1.png)\n\n![pipeline](pipeline.png)"),
    ]
    files["summary"] = str(write_summary(out, "synthetic-sigmoid (seed 000 §5, Fig. 1)", sections))
    res["text"] = _summary_text(res)
    return res
