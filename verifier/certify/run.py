"""``distillcert run`` — the main job: data → (PGD-AT teacher) → KDIGA student → verification → lift →
certificate and report, everything in one output folder.

Defaults (``CertifyConfig()``): the bundled ``digits`` data (64 features, 10 classes); a PGD-AT teacher
``64-128-128-10`` trained here at ε = 0.1 when no ``teacher`` is given; a KDIGA student ``64-32-32-10``;
δ = 0.02 (L∞; a third of one of the 17 grey levels), κ = 0.9; ε = η = 0.01 and the guarantee kind with the
smallest sample size (the fixed-property binomial kind: s = ⌈ln(1/η)/ε⌉ = 461).

The folder ``--out`` holds ``teacher.pt`` / ``teacher.onnx``, ``student.onnx`` (with JSON sidecars), the
journal ``journal.jsonl`` of finished solver queries, ``certificate.json``, ``samples.npz``,
``report.md`` and the plots.  Rerunning with the same folder reuses the teacher and student when their
settings are unchanged (keys stored in their metadata) and every journaled query.

Config file: TOML, flat ``key = value`` pairs with the field names of
:class:`verifier.certify.config.CertifyConfig` (``-`` or ``_``); optionally inside a ``[certify]`` table.
An unknown key is a :class:`~encoders.errors.ConfigError` naming it.
"""

from __future__ import annotations

import sys
import time
from pathlib import Path
from typing import Any

from encoders.errors import ConfigError

from ..journal import query_key
from .config import CertifyConfig
from .pipeline import certify
from .sample import choose_kind

__all__ = ["load_toml", "load_run_config", "run", "train_or_reuse_teacher", "summary_text"]


def load_toml(path: str | Path) -> dict[str, Any]:
    """Parse a TOML file (``tomllib``; on Python 3.10 ``tomli`` if installed, else ConfigError)."""
    p = Path(path)
    try:
        import tomllib  # type: ignore[import-not-found]
    except ModuleNotFoundError:  # pragma: no cover - python 3.10
        try:
            import tomli as tomllib  # type: ignore[no-redef]
        except ModuleNotFoundError:
            raise ConfigError(
                f"--config {p}: reading TOML needs Python >= 3.11 or the 'tomli' package"
            ) from None
    try:
        with open(p, "rb") as fh:
            return tomllib.load(fh)
    except FileNotFoundError:
        raise ConfigError(f"--config {p}: no such file") from None
    except (OSError, tomllib.TOMLDecodeError) as exc:
        raise ConfigError(f"--config {p}: not valid TOML ({' '.join(str(exc).split())})") from None


def load_run_config(path: str | Path | None, overrides: dict[str, Any] | None = None) -> CertifyConfig:
    """The run's configuration: the TOML file (flat keys or a ``[certify]`` table), then ``overrides``."""
    values: dict[str, Any] = {}
    source = "config"
    if path is not None:
        source = str(path)
        raw = load_toml(path)
        if set(raw) == {"certify"} and isinstance(raw["certify"], dict):
            raw = raw["certify"]
        values.update(raw)
    for k, v in (overrides or {}).items():
        if v is not None:
            values[k] = v
    return CertifyConfig.from_mapping(values, source)


def train_or_reuse_teacher(config: CertifyConfig, data: Any, out: Path, progress: bool = True) -> Path:
    """``out/teacher.pt``: reused when its stored key matches the teacher settings, else trained
    (PGD-AT at ``teacher_adv_eps``, :func:`distill.train.train_teacher`) and checkpointed atomically."""
    from distill.export import load_model, save_checkpoint
    from distill.train import model_meta, train_teacher

    arch = config.teacher_arch or f"{data.n_features}-128-128-{data.n_classes}"
    key = query_key(
        "teacher",
        data.name,
        config.data_seed,
        arch,
        config.teacher_adv_eps,
        config.teacher_epochs,
        config.seed,
    )
    path = out / "teacher.pt"
    if path.is_file():
        try:
            meta = getattr(load_model(path), "meta", {}) or {}
        except Exception:  # noqa: BLE001 - an unreadable cache is retrained
            meta = {}
        if meta.get("run_key") == key:
            if progress:
                sys.stderr.write("[distillcert] teacher: reusing teacher.pt from the output folder\n")
            return path
    if progress:
        sys.stderr.write(
            f"[distillcert] training the teacher {arch} on {data.name} "
            f"(PGD-AT eps {config.teacher_adv_eps:g}, {config.teacher_epochs} epochs)\n"
        )
    res = train_teacher(
        data,
        arch=arch,
        adv_eps=config.teacher_adv_eps,
        epochs=config.teacher_epochs,
        seed=config.seed,
        progress=progress,
    )
    meta = model_meta(data, res.config)
    meta["run_key"] = key
    meta["accuracy"] = {"train": res.train_accuracy, "test": res.test_accuracy}
    save_checkpoint(res.model, path, meta=meta)
    return path


def run(config: CertifyConfig, out_dir: str | Path, progress: bool = True) -> dict[str, Any]:
    """The main job (module docstring).  Returns the certificate."""
    from distill.data import load_dataset

    out = Path(out_dir)
    out.mkdir(parents=True, exist_ok=True)
    t0 = time.perf_counter()
    data = load_dataset(config.data, config.data_seed)
    choice = choose_kind(config, data.n_features)
    if progress:
        sys.stderr.write(
            f"[distillcert] run: data {data.name} ({data.n_features} features, {data.n_classes} classes); "
            f"delta = {config.delta:g} ({'L-inf' if config.norm == 'inf' else 'L2'}), kappa = "
            f"{config.kappa:g}, "
            f"epsilon = {config.epsilon:g}, eta = {config.eta:g}; guarantee {choice['kind']} with s = "
            f"{choice['s']} "
            f"(seed kind would need {choice['pac']['seed_vc']}, quality-space "
            f"{choice['pac']['quality_space']}, "
            f"binomial {choice['pac']['binomial']}); output {out}\n"
        )
    teacher = Path(config.teacher) if config.teacher else train_or_reuse_teacher(config, data, out, progress)
    cert = certify(teacher, config, out, progress=progress, data=data)
    cert.setdefault("durations_s", {})["run_total_s"] = round(time.perf_counter() - t0, 3)
    return cert


def summary_text(cert: dict[str, Any], out_dir: str | Path) -> str:
    """A short human rendering of a certificate (for the CLI)."""
    g, p = cert["guarantee"], cert["parameters"]
    lines = [f"verdict: {cert['verdict'].upper()}"]
    for r in cert["reasons"]:
        lines.append(f"  reason: {r['text']}")
    lines.append(f"guarantee: {g['text']}")
    lines.append(
        f"parameters: delta={p['delta']:g} norm={p['norm']} kappa={p['kappa']:g} epsilon={p['epsilon']:g} "
        f"eta={p['eta']:g} kind={p['guarantee_kind']} s={cert['data']['sample_size']} "
        f"teacher_radius={g['teacher_radius']:.4g}"
    )
    st = cert["steps"]
    eq, audit, glob = st["eq13"], st.get("lift_audit") or {}, st["global"]
    n_conf = cert["data"]["n_confident"]
    dist = st.get("distill") or {}
    rounds = f" after {dist['eq13_rounds']} distillation round(s)" if dist.get("eq13_rounds") else ""
    lines.append(
        f"Eq. 13: {'holds' if eq['holds'] else 'fails'} at the {eq['n_checked']} {eq['scope']} "
        f"samples{rounds} ({eq['violations']} violations, worst gap {eq['worst_gap']:.3g})"
    )
    cov = sum(1 for q in cert["local_queries"] if q.get("by") == "global")
    lines.append(
        f"student: {st['local']['counts']} at {n_conf} confident samples (global query "
        f"{glob.get('verdict') or 'not run'}, covering {cov} of {n_conf} = {cov / max(n_conf, 1):.0%}; "
        f"by prover {st['local']['by']})"
    )
    if audit.get("checkable", True) and audit.get("claims"):
        lines.append(
            f"lift audit: {audit['confirmed']} of {audit['claims']} lifted claims confirmed by direct "
            f"verification of the teacher, {audit['undecided']} undecided, {audit['refuted']} refuted "
            f"({audit.get('by')})"
        )
    elif not audit.get("checkable", True):
        lines.append("lift audit: teacher not directly checkable (no verifiable IR); PGD only")
    lines.append(
        f"teacher cross-check: PGD found {st['crosscheck']['adversarial']} adversarial example(s) at the "
        f"lifted radii of {st['crosscheck']['n_points']} confident samples"
    )
    dur = cert.get("durations_s", {})
    total = dur.get("run_total_s", dur.get("total_s"))
    lines.append(
        f"files: {Path(out_dir) / 'certificate.json'}, {Path(out_dir) / 'report.md'}"
        + (f" ({total:.1f} s)" if total is not None else "")
    )
    return "\n".join(lines)
