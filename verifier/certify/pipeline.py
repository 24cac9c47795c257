"""The certification run, :func:`certify`: the stages of :mod:`verifier.certify` in order, and the
certificate assembled from their records (see the package docstring for the mathematics)."""

from __future__ import annotations

import time
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np

from encoders.errors import ModelFormatError

from .audit import Attack, lift_audit, teacher_crosscheck
from .config import RADIUS_FACTOR, CertifyConfig
from .context import Balls, RunContext, now
from .decide import assumptions, decide, guarantee_text
from .distil import Student, distil
from .lift import Lift, eq13, lift
from .sample import Sample, draw
from .schema import SCHEMA, software_versions, write_certificate
from .teacher import CertTeacher, load_cert_teacher
from .verify import StudentVerification, verify_student

__all__ = ["certify"]

_KIND_PAC_NAME = {"seed": "seed_vc", "quality": "quality_space", "binomial": "binomial"}


@dataclass(frozen=True)
class _Stages:
    """Every stage's output, from which the certificate is assembled."""

    started: str
    teacher: CertTeacher
    smp: Sample
    student: Student
    eq13: dict[str, Any]
    lift: Lift
    sv: StudentVerification
    witnesses: list[dict[str, Any]]
    audit: dict[str, Any]
    audit_outcome: np.ndarray
    audit_cex: list[dict[str, Any]]


def certify(
    teacher_path: str | Path,
    config: CertifyConfig,
    out_dir: str | Path,
    progress: bool = True,
    data: Any = None,
) -> dict[str, Any]:
    """Run Algorithm 1 (package docstring) and write ``certificate.json``, ``samples.npz``, ``report.md``
    and the plots into ``out_dir``.  Returns the certificate (a dict).

    ``data`` may be passed pre-loaded (it must be ``load_dataset(config.data, config.data_seed)``, which
    ``distillcert check`` reloads).  Reruns with the same ``out_dir`` reuse the student (same key) and
    the journaled solver queries.
    """
    from distill.data import load_dataset

    if not Path(teacher_path).is_file():
        raise ModelFormatError(f"--teacher {teacher_path}: no such file")
    t_start, started = time.perf_counter(), now()
    out = Path(out_dir)
    out.mkdir(parents=True, exist_ok=True)
    data = data if data is not None else load_dataset(config.data, config.data_seed)
    ctx = RunContext.create(out, data, progress)
    log, durations = ctx.log, ctx.durations

    # 1. sample
    t0 = time.perf_counter()
    teacher = load_cert_teacher(Path(teacher_path), ctx)
    smp = draw(config, data, teacher.logits)
    log(
        f"guarantee kind {smp.kind}: s = {smp.s} samples (minimum {smp.choice['s_required']}; "
        f"d = {smp.choice['d'] or 'n/a'}); "
        f"delta = {config.delta:g} ({config.norm}), kappa = {config.kappa:g}, epsilon = {config.epsilon:g}, "
        f"eta = {config.eta:g}; {len(smp.K)} samples teacher-confident"
    )
    durations["sample_s"] = time.perf_counter() - t0

    # 2. distil
    t0 = time.perf_counter()
    student = distil(config, ctx, teacher, smp)
    durations["distill_s"] = time.perf_counter() - t0

    # 4. Eq. 13 and the lift (before verification: the fixed rule's student radii depend on it)
    t0 = time.perf_counter()
    eq = eq13(config, smp, student.p, student.c)
    lf = lift(config, smp, teacher.model, student.model, student.z)
    durations["lift_s"] = time.perf_counter() - t0

    # 3. verify the student
    K, c_t = smp.K, smp.c_t
    agree_conf = (student.c[K] == c_t[K]) & (student.p[K, c_t[K]] >= config.kappa)
    balls = Balls(smp.X[K], c_t[K], lf.radii, config.norm, ctx.domain)
    sv = verify_student(config, ctx, student, balls, agree_conf)

    # 5. audit: PGD on the teacher at the lifted radii
    t0 = time.perf_counter()
    log(
        f"teacher cross-check: PGD ({config.pgd_steps} steps, {config.pgd_restarts} restarts) at {len(K)} "
        "confident samples"
    )
    lifted_balls = Balls(
        smp.X[K], c_t[K], np.where(np.isfinite(lf.lifted), lf.lifted, 0.0), config.norm, ctx.domain
    )
    witnesses = teacher_crosscheck(teacher.model, teacher.replay_net, lifted_balls, Attack.of(config))
    for w in witnesses:
        w["i"] = int(K[w["i"]])
    durations["crosscheck_s"] = time.perf_counter() - t0
    audit, outcome, audit_cex = lift_audit(config, ctx, teacher, lifted_balls, sv.status == "verified")

    # 6. decide and write
    st = _Stages(started, teacher, smp, student, eq, lf, sv, witnesses, audit, outcome, audit_cex)
    cert = _assemble(config, ctx, st)
    dec = decide(cert)
    cert["verdict"] = dec["verdict"]
    cert["reasons"] = dec["reasons"]
    cert["guarantee"] = {
        "kind": smp.kind,
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
    cert["timestamps"]["finished"] = now()
    write_certificate(cert, out, _arrays(st))
    log(
        f"verdict: {cert['verdict'].upper()}"
        + (f" ({'; '.join(r['text'] for r in cert['reasons'])})" if cert["reasons"] else "")
    )
    return cert


def _arrays(st: _Stages) -> dict[str, np.ndarray]:
    """Per-sample arrays for ``samples.npz`` (the report's plots)."""
    smp, p_s = st.smp, st.student.p
    return {
        "indices": smp.idx,
        "teacher_conf": smp.conf_t,
        "student_conf_teacher_class": p_s[np.arange(smp.s), smp.c_t],
        "student_conf": p_s.max(axis=1),
        "teacher_label": smp.c_t,
        "student_label": st.student.c,
        "confident": smp.K,
        "rho": st.lift.rho,
        "radius": st.lift.radii,
        "lifted_radius": st.lift.lifted,
        "status": np.array([str(v) for v in st.sv.status], dtype="U16"),
        "X": smp.X,
    }


def _assemble(config: CertifyConfig, ctx: RunContext, st: _Stages) -> dict[str, Any]:
    """The certificate (schema :mod:`verifier.certify.schema`) from the stages' records; verdict, reasons
    and guarantee are filled in by the caller from :func:`verifier.certify.decide.decide`."""
    smp, sv, data, teacher, student = st.smp, st.sv, ctx.data, st.teacher, st.student
    K, X, idx, c_t, s, kind, rule, R = smp.K, smp.X, smp.idx, smp.c_t, smp.s, smp.kind, smp.rule, smp.R
    radii, rho, lifted = st.lift.radii, st.lift.rho, st.lift.lifted
    status, by, qtime = sv.status, sv.by, sv.qtime
    witnesses, choice, domain = st.witnesses, smp.choice, ctx.domain
    local_queries = []
    for j, i in enumerate(K):
        local_queries.append(
            {
                "i": int(i),
                "index": int(idx[i]),
                "label": int(c_t[i]),
                "radius": float(radii[j]) if np.isfinite(radii[j]) else None,
                "rho": float(rho[j]) if np.isfinite(rho[j]) else None,
                "lifted_radius": float(lifted[j]) if np.isfinite(lifted[j]) else None,
                "lift_factor": float(st.lift.factor[j]),
                "lift_factor_m": float(st.lift.factor_m[j]),
                "verdict": str(status[j]),
                "by": str(by[j]),
                "audit": str(st.audit_outcome[j]),
                "time_s": round(float(qtime[j]), 4),
            }
        )
    counterexamples: list[dict[str, Any]] = []
    for j, ce in sorted(sv.cex.items()):
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
    counter_global = sv.global_cex
    if counter_global is not None and counter_global.x2 is not None:
        counterexamples.append(
            {
                "kind": "student_global",
                "network": "student",
                "x": counter_global.x.tolist(),
                "x2": counter_global.x2.tolist(),
                "radius": sv.global_rec["radius"],
                "kappa": config.kappa,
                "norm": config.norm,
                "y": counter_global.y.tolist(),
                "label": int(np.argmax(counter_global.y)),
            }
        )
    for ce in st.audit_cex:
        j = int(ce["j"])
        i = int(K[j])
        counterexamples.append(
            {
                "kind": "teacher_direct",
                "network": "teacher",
                "i": i,
                "x0": X[i].tolist(),
                "x": ce["x"],
                "label": int(c_t[i]),
                "radius": float(lifted[j]),
                "norm": config.norm,
                "y": ce["y"],
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
    if sv.global_rec.get("backend"):
        used.add(str(sv.global_rec["backend"]))
    cert: dict[str, Any] = {
        "schema": SCHEMA,
        "verdict": None,
        "reasons": [],
        "guarantee": {},
        "models": {
            "teacher": {
                "file": teacher.file.name,
                "sha256": teacher.sha256,
                "source": teacher.source,
                "n_inputs": int(ctx.data.n_features),
                "n_outputs": int(ctx.data.n_classes),
                "hidden_sizes": list(teacher.net.hidden_sizes) if teacher.net is not None else None,
                "encodable": teacher.net is not None,
                "outputs_probabilities": teacher.probabilities,
                "import": teacher.info,
            },
            "student": {
                "file": student.file.name,
                "sha256": student.sha256,
                "n_inputs": student.net.n_inputs,
                "n_outputs": student.net.n_outputs,
                "hidden_sizes": list(student.net.hidden_sizes),
            },
        },
        "data": {
            "name": data.name,
            "split_seed": config.data_seed,
            "pool": smp.pool_name,
            "pool_size": smp.pool_size,
            "sampling": config.sampling,
            "distribution": smp.distribution,
            "sample_seed": config.seed,
            "sample_size": int(s),
            "sample_sha256": smp.sha256,
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
            "m": int(data.n_features),
            "d": choice["d"],
            "guarantee_kind": kind,
            "guarantee_requested": config.guarantee,
            "tv_shift": config.tv_shift,
            "s_required": choice["s_required"],
            "lift": config.lift,
            "lift_tolerance": config.lift_tolerance,
            "radius_rule": rule,
            "base_radius": R,
            "radius_factor": RADIUS_FACTOR[kind],
            "sample_sizes": {k: choice["pac"][v] for k, v in _KIND_PAC_NAME.items()},
        },
        "steps": {
            "sample": {
                "s": int(s),
                "confident": int(len(K)),
                "teacher_confidence_mean": float(smp.conf_t.mean()),
            },
            "distill": student.summary,
            "global": sv.global_rec,
            "local": {
                "n_queries": int(len(K)),
                "counts": counts,
                "by": by_counts,
                "crown_points_per_s": ctx.durations.get("crown_points_per_s"),
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
            "eq13": st.eq13,
            "lift_audit": st.audit,
            "crosscheck": {
                "attack": "pgd-ce",
                "steps": config.pgd_steps,
                "restarts": config.pgd_restarts,
                "radius": "per-sample lifted radius",
                "n_points": int(len(K)),
                "adversarial": len(witnesses),
                # witnesses at samples whose lifted claim was established (student verified there): a
                # refuted claim; the others show the teacher is not robust where nothing was claimed
                "at_established_claims": int(
                    sum(1 for w in witnesses if st.sv.status[int(np.searchsorted(K, w["i"]))] == "verified")
                ),
            },
        },
        "local_queries": local_queries,
        "counterexamples": counterexamples,
        "solvers": {
            "used": sorted(used),
            "versions": dict(sorted(sv.versions.items())),
            "bounds": "CROWN (encoders.bounds, float64, widened for rounding)",
        },
        "assumptions": assumptions(config, kind, rule),
        "config": config.public(),
        "software": software_versions(),
        "timestamps": {"started": st.started, "finished": None},
        "durations_s": {},
    }
    return cert
