"""``distillcert check``: re-check a certificate (schema: :mod:`verifier.certify.schema`).

``check`` (:func:`check_certificate`)
------------------------------------
Re-hashes both ONNX files; recomputes the sample size from the parameters with :mod:`verifier.certify.pac`;
re-draws the sample from the data set and the seed and compares indices and hash; recomputes the
teacher's labels and confident set; replays **every** counterexample on onnxruntime against the
recorded model file (and checks it lies in its ball / pair constraint exactly); re-runs a seeded random
subset of the recorded local queries (CROWN, then a solver) and recomputes their ρ; recomputes the
verdict from the records.  Any mismatch makes ``ok`` false and names the check.
"""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

import numpy as np

from encoders.network import file_sha256, load_onnx, ort_evaluate
from encoders.properties import GlobalRobustness, LocalRobustness

from .schema import CERT_NAME, SCHEMA, load_certificate
from .teacher import OnnxFile, ir_or_none, teacher_logits

__all__ = ["check_certificate"]

_RHO_RTOL = 1e-6


# ==================================================================================================
# check
# ==================================================================================================
class _Checks:
    def __init__(self) -> None:
        self.items: list[dict[str, Any]] = []
        self.warnings: list[str] = []

    def add(self, name: str, ok: bool, detail: str = "") -> bool:
        self.items.append({"check": name, "ok": bool(ok), "detail": detail})
        return bool(ok)

    @property
    def failures(self) -> list[dict[str, Any]]:
        return [c for c in self.items if not c["ok"]]


def _same(a: Any, b: Any) -> bool:
    return json.dumps(a, sort_keys=True) == json.dumps(b, sort_keys=True)


def check_certificate(
    path: str | Path,
    recheck: int = 20,
    seed: int = 0,
    timeout: float | None = None,
    backend: str | None = None,
) -> dict[str, Any]:
    """Re-check a certificate (module docstring).  Returns ``{"ok", "checks", "failures", "warnings",
    "text"}``; never raises on a mismatch (the CLI handler turns ``ok = False`` into exit status 1).

    Parameters
    ----------
    recheck
        Number of recorded local queries re-run (a seeded random subset; ``0`` skips this step).
    timeout, backend
        Per-query solver limit and backend for the re-run (default: the certificate's).
    """
    from distill.data import load_dataset
    from distill.export import load_model

    from ..dispatch import DispatchConfig, verify
    from ..results import Verdict
    from .config import RADIUS_FACTOR, CertifyConfig
    from .context import Balls
    from .decide import decide
    from .lift import margin_gradient_ratio
    from .sample import choose_kind, draw_sample, sample_hash, sample_pool, softmax
    from .verify import crown_local

    cpath = Path(path)
    if cpath.is_dir():
        cpath = cpath / CERT_NAME
    cert = load_certificate(cpath)
    base = cpath.parent
    ck = _Checks()
    ck.add("schema", True, SCHEMA)

    # ---------------------------------------------------------------- models
    nets = {}
    for role in ("teacher", "student"):
        rec = cert["models"][role]
        f = base / rec["file"]
        if not f.is_file():
            ck.add(f"{role} model", False, f"{f} is missing")
            continue
        got = file_sha256(f)
        if ck.add(
            f"{role} sha256",
            got == rec["sha256"],
            "matches"
            if got == rec["sha256"]
            else f"{rec['file']} has sha256 {got[:16]}…, certificate "
            f"records {rec['sha256'][:16]}… (model changed)",
        ):
            if role == "student":
                nets[role] = load_onnx(f)
            else:  # the teacher as the certifier evaluated it: its IR when encodable, else onnxruntime
                tnet = ir_or_none(f) if cert["models"]["teacher"].get("encodable", True) else None
                nets[role] = tnet if tnet is not None else OnnxFile(str(f))
    art = (cert.get("artifacts") or {}).get("samples")
    if art:
        f = base / art["file"]
        ok = f.is_file() and file_sha256(f) == art["sha256"]
        ck.add("samples.npz sha256", ok, "matches" if ok else f"{art['file']} missing or changed")

    # ---------------------------------------------------------------- sample size
    try:
        config = CertifyConfig.from_mapping(cert["config"], "certificate config")
    except Exception as exc:  # noqa: BLE001 - reported as a failed check
        ck.add("config", False, f"recorded config is invalid: {exc}")
        return _finish(cpath, ck)
    p = cert["parameters"]
    choice = choose_kind(config, int(p["m"]))
    ok_s = (
        choice["kind"] == p["guarantee_kind"]
        and choice["s_required"] == p["s_required"]
        and choice["s"] == cert["data"]["sample_size"]
        and choice["d"] == p["d"]
    )
    ck.add(
        "sample size",
        ok_s,
        f"{choice['kind']}: s = {choice['s']} (minimum {choice['s_required']}, d = "
        f"{choice['d']})"
        + (
            ""
            if ok_s
            else f"; certificate records {p['guarantee_kind']}: s = "
            f"{cert['data']['sample_size']} (minimum {p['s_required']}, d = {p['d']})"
        ),
    )
    kind_ok = all(
        _same(p[k], getattr(config, k))
        for k in ("delta", "kappa", "epsilon", "eta", "tv_shift", "lift", "lift_tolerance")
    )
    ck.add(
        "parameters",
        kind_ok
        and p["norm"] == config.norm
        and p["base_radius"] == RADIUS_FACTOR[p["guarantee_kind"]] * config.delta,
        "parameters agree with the recorded config"
        if kind_ok
        else "parameters differ from the recorded config",
    )

    # ---------------------------------------------------------------- sample
    data = load_dataset(config.data, config.data_seed)
    pool, _ = sample_pool(data, config.sampling)
    idx = draw_sample(len(pool), choice["s"], config.seed, config.sampling)
    X = pool[idx]
    ok_idx = idx.tolist() == cert["data"]["indices"]
    ok_hash = sample_hash(X, idx) == cert["data"]["sample_sha256"]
    ck.add(
        "sample",
        ok_idx and ok_hash,
        "indices and hash reproduced from the data set and seed"
        if ok_idx and ok_hash
        else ("indices differ" if not ok_idx else "sample hash differs"),
    )
    domain = (np.asarray(data.domain_lo, np.float64), np.asarray(data.domain_hi, np.float64))
    norm = config.norm

    queries = cert["local_queries"]
    by_i = {int(q["i"]): q for q in queries}
    if "teacher" in nets:
        tnet = nets["teacher"]
        zt = teacher_logits(
            base / cert["models"]["teacher"]["file"],
            None if isinstance(tnet, OnnxFile) else tnet,
            bool(cert["models"]["teacher"].get("outputs_probabilities", False)),
            X,
        )
        ct = np.argmax(zt, axis=1)
        conf = softmax(zt)[np.arange(len(X)), ct]
        K = set(np.flatnonzero(conf >= config.kappa).tolist())
        ok_k = set(by_i) == K and all(int(q["label"]) == int(ct[q["i"]]) for q in queries)
        ck.add(
            "confident set",
            ok_k,
            f"{len(K)} teacher-confident samples with the recorded labels"
            if ok_k
            else f"recomputed {len(K)} confident samples / labels differ from the {len(by_i)} recorded",
        )
    else:
        ct = None

    # ---------------------------------------------------------------- counterexamples
    n_bad = 0
    for n, ce in enumerate(cert["counterexamples"]):
        why = _replay_counterexample(ce, nets, base, cert, X, ct, by_i, domain, norm)
        if why:
            n_bad += 1
            ck.add(f"counterexample #{n} ({ce.get('kind')})", False, why)
    ck.add(
        "counterexamples replay",
        n_bad == 0,
        f"all {len(cert['counterexamples'])} replayed on onnxruntime"
        if n_bad == 0
        else f"{n_bad} of {len(cert['counterexamples'])} do not replay",
    )
    falsified_wo = [
        q["i"]
        for q in queries
        if q["verdict"] == "falsified"
        and not any(c["kind"] == "student_local" and c.get("i") == q["i"] for c in cert["counterexamples"])
    ]
    ck.add(
        "falsified queries have counterexamples",
        not falsified_wo,
        "yes" if not falsified_wo else f"samples {falsified_wo[:5]} are recorded falsified without one",
    )

    # ---------------------------------------------------------------- re-run local queries
    if recheck > 0 and "student" in nets and "teacher" in nets and queries:
        rng = np.random.default_rng(int(seed))
        pick = [
            queries[k]
            for k in sorted(rng.choice(len(queries), size=min(recheck, len(queries)), replace=False).tolist())
        ]
        tfile = base / cert["models"]["teacher"]["file"]
        if isinstance(nets["teacher"], OnnxFile):
            from distill.teacher import load_teacher

            tmodel = load_teacher(tfile, domain=domain).module
        else:
            tmodel = load_model(tfile)
        smodel = load_model(base / cert["models"]["student"]["file"])
        ii = np.array([q["i"] for q in pick])
        rho = margin_gradient_ratio(tmodel, smodel, X[ii], np.array([q["label"] for q in pick]), norm)
        bad_rho = []
        for q, r in zip(pick, rho):
            rec = q["rho"]
            same = (rec is None and not np.isfinite(r)) or (
                rec is not None and np.isfinite(r) and abs(r - rec) <= _RHO_RTOL * max(1.0, abs(rec))
            )
            if not same:
                bad_rho.append(f"sample {q['i']}: rho {r:.6g} vs recorded {rec}")
        ck.add(
            "rho recomputed",
            not bad_rho,
            f"{len(pick)} samples agree" if not bad_rho else "; ".join(bad_rho[:3]),
        )
        cfg = DispatchConfig(
            backend=backend or config.backend,
            timeout=float(timeout or config.local_timeout),
            seed=config.seed,
        )
        contradictions, unconfirmed, confirmed = [], 0, 0
        for q in pick:
            if q["verdict"] != "verified" or q["radius"] is None:
                continue
            x0 = X[q["i"]]
            ball = Balls(x0[None, :], np.array([q["label"]]), np.array([q["radius"]]), norm, domain)
            if crown_local(nets["student"], ball)[0]:
                confirmed += 1
                continue
            prop = LocalRobustness(x0, float(q["radius"]), int(q["label"]), norm, domain[0], domain[1])
            res = verify(prop, {"net": nets["student"]}, cfg)
            if res.verdict is Verdict.VERIFIED:
                confirmed += 1
            elif res.verdict is Verdict.FALSIFIED:
                contradictions.append(
                    f"sample {q['i']} recorded verified ({q['by']}) but falsified on re-run"
                )
            else:
                unconfirmed += 1
        if unconfirmed:
            ck.warnings.append(f"{unconfirmed} re-run local queries were undecided within the time limit")
        ck.add(
            "local queries re-run",
            not contradictions,
            f"{confirmed} of {len(pick)} re-run and confirmed"
            if not contradictions
            else "; ".join(contradictions[:3]),
        )
        _recheck_audit(ck, pick, X, nets, norm, domain, cfg)

    # ---------------------------------------------------------------- lift audit records
    _check_audit_records(ck, cert)

    # ---------------------------------------------------------------- verdict follows from the records
    try:
        dec = decide(cert)
        counts: dict[str, int] = {}
        for q in queries:
            counts[q["verdict"]] = counts.get(q["verdict"], 0) + 1
        n_adv = sum(1 for c in cert["counterexamples"] if c["kind"] == "teacher_pgd")
        ok_v = (
            dec["verdict"] == cert["verdict"]
            and _same(dec["reasons"], cert["reasons"])
            and _same(dec["teacher_radius"], cert["guarantee"]["teacher_radius"])
            and _same(counts, cert["steps"]["local"]["counts"])
            and n_adv == cert["steps"]["crosscheck"]["adversarial"]
        )
        ck.add(
            "verdict",
            ok_v,
            f"{cert['verdict']} follows from the records"
            if ok_v
            else f"records imply {dec['verdict']} (teacher radius {dec['teacher_radius']:.4g}) but the "
            f"certificate "
            f"says {cert['verdict']} (teacher radius {cert['guarantee']['teacher_radius']})",
        )
    except (KeyError, TypeError, ValueError) as exc:
        ck.add("verdict", False, f"records incomplete: {exc}")
    return _finish(cpath, ck)


def _check_audit_records(ck: _Checks, cert: dict[str, Any]) -> None:
    """The lift audit's counts agree with the per-query outcomes, and every refuted claim has a replayable
    ``teacher_direct`` counterexample (replayed with the others)."""
    audit = cert["steps"].get("lift_audit")
    if audit is None:
        ck.add("lift audit", False, "the certificate has no lift_audit record")
        return
    queries = cert["local_queries"]
    counts = {
        k: sum(1 for q in queries if q.get("audit") == k) for k in ("confirmed", "undecided", "refuted")
    }
    ok = all(int(audit.get(k, 0)) == v for k, v in counts.items())
    direct = {c["i"] for c in cert["counterexamples"] if c["kind"] == "teacher_direct"}
    missing = [q["i"] for q in queries if q.get("audit") == "refuted" and q["i"] not in direct]
    claims = int(audit.get("claims", 0))
    frac = audit.get("fraction_confirmed")
    ok_frac = frac is None or (claims > 0 and abs(float(frac) - counts["confirmed"] / claims) <= 1e-12)
    detail = (
        f"{counts['confirmed']} confirmed, {counts['undecided']} undecided, {counts['refuted']} refuted of "
        f"{claims} lifted claims"
        if audit.get("checkable", True)
        else "teacher not directly checkable (PGD only)"
    )
    if not ok or not ok_frac:
        detail = f"recorded counts/fraction disagree with the per-query outcomes ({detail})"
    if missing:
        detail = f"refuted claims without a counterexample at samples {missing[:5]}"
    ck.add("lift audit", ok and ok_frac and not missing, detail)


def _recheck_audit(
    ck: _Checks,
    pick: list[dict[str, Any]],
    X: np.ndarray,
    nets: dict[str, Any],
    norm: str,
    domain: tuple[np.ndarray, np.ndarray],
    cfg: Any,
) -> None:
    """Re-run the picked ``confirmed`` lift-audit claims on the teacher (CROWN, then a solver): a falsified
    claim contradicts the certificate."""
    from ..dispatch import verify
    from ..results import Verdict
    from .context import Balls
    from .verify import crown_local

    tnet = nets.get("teacher")
    todo = [q for q in pick if q.get("audit") == "confirmed" and q.get("lifted_radius")]
    if not todo or tnet is None or isinstance(tnet, OnnxFile):
        return
    bad, confirmed = [], 0
    for q in todo:
        x0, r, c = X[q["i"]], float(q["lifted_radius"]), int(q["label"])
        if crown_local(tnet, Balls(x0[None, :], np.array([c]), np.array([r]), norm, domain))[0]:
            confirmed += 1
            continue
        res = verify(LocalRobustness(x0, r, c, norm, domain[0], domain[1]), {"net": tnet}, cfg)
        if res.verdict is Verdict.FALSIFIED:
            bad.append(f"sample {q['i']}: recorded confirmed but falsified on the teacher")
        elif res.verdict is Verdict.VERIFIED:
            confirmed += 1
    ck.add(
        "lift audit re-run",
        not bad,
        f"{confirmed} of {len(todo)} confirmed claims re-confirmed" if not bad else "; ".join(bad[:3]),
    )


def _replay_counterexample(
    ce: dict[str, Any],
    nets: dict[str, Any],
    base: Path,
    cert: dict[str, Any],
    X: np.ndarray,
    ct: np.ndarray | None,
    by_i: dict[int, dict[str, Any]],
    domain: tuple[np.ndarray, np.ndarray],
    norm: str,
) -> str:
    """Empty string when the counterexample replays, else why not."""
    role = ce.get("network")
    if role not in nets:
        return f"the {role} model is missing or changed"
    path = base / cert["models"][role]["file"]
    try:
        x = np.asarray(ce["x"], dtype=np.float64)
        kind = ce["kind"]
        if kind in ("student_local", "teacher_pgd", "teacher_direct"):
            i = int(ce["i"])
            if not 0 <= i < len(X):
                return f"sample position {i} out of range"
            if not np.array_equal(np.asarray(ce["x0"], np.float64), X[i]):
                return f"x0 is not sample {i}"
            q = by_i.get(i)
            if q is None:
                return f"sample {i} is not a recorded confident sample"
            if ct is not None and int(ce["label"]) != int(ct[i]):
                return f"label {ce['label']} is not the teacher's class {int(ct[i])} at sample {i}"
            want_r = q["radius"] if kind == "student_local" else q["lifted_radius"]
            if want_r is None or float(ce["radius"]) != float(want_r):
                return f"radius {ce['radius']} differs from the recorded query radius {want_r}"
            prop = LocalRobustness(X[i], float(ce["radius"]), int(ce["label"]), norm, domain[0], domain[1])
            if not prop.in_region(x):
                return "x lies outside the ball around x0 intersected with the domain"
            y = np.asarray(ort_evaluate(path, x), dtype=np.float64).reshape(-1)
            if not prop.violated({"net": x}, {"net": y}):
                return "onnxruntime outputs do not violate robustness at x (argmax unchanged)"
            return ""
        if kind == "student_global":
            x2 = np.asarray(ce["x2"], dtype=np.float64)
            prop = GlobalRobustness(
                float(ce["radius"]), float(ce["kappa"]), domain[0], domain[1], norm, int(ce["label"])
            )
            ya = np.asarray(ort_evaluate(path, x), dtype=np.float64).reshape(-1)
            yb = np.asarray(ort_evaluate(path, x2), dtype=np.float64).reshape(-1)
            if not prop.violated({"a": x, "b": x2}, {"a": ya, "b": yb}):
                return "the pair does not violate global kappa-confidence robustness on onnxruntime"
            return ""
        return f"unknown counterexample kind {kind!r}"
    except (KeyError, TypeError, ValueError) as exc:
        return f"malformed counterexample ({exc})"


def _finish(cpath: Path, ck: _Checks) -> dict[str, Any]:
    fails = ck.failures
    lines = [f"check {cpath}: {'OK' if not fails else f'{len(fails)} MISMATCH(ES)'}"]
    for c in ck.items:
        lines.append(f"  [{'ok' if c['ok'] else 'FAIL'}] {c['check']}: {c['detail']}")
    for w in ck.warnings:
        lines.append(f"  [warn] {w}")
    return {
        "ok": not fails,
        "certificate": str(cpath),
        "checks": ck.items,
        "failures": [f"{c['check']}: {c['detail']}" for c in fails],
        "warnings": ck.warnings,
        "text": "\n".join(lines),
    }
