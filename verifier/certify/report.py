"""``report.md`` beside a certificate: the verdict first, the guarantee in plain words, a table of the
steps, and PNG plots (matplotlib, Agg backend):

* ``confidence.png`` — histograms of the teacher's and the student's confidence (in the teacher's class)
  over the sample, with κ marked;
* ``rho.png`` — the distribution of the margin-gradient ratio ρ over the confident samples (log scale),
  with ρ = 1 marked;
* ``samples.png`` — the sampled points (the inputs themselves for 2-D data, else their projection on the
  first two principal components), coloured by local-query outcome (verified / falsified / undecided /
  not confident), teacher PGD witnesses circled.
"""

from __future__ import annotations

from pathlib import Path
from typing import Any

import numpy as np

from ..atomic import atomic_write_text

__all__ = ["write_report", "render_markdown"]

_COLORS = {
    "verified": "tab:green",
    "falsified": "tab:red",
    "undecided": "tab:orange",
    "not confident": "lightgray",
}


def _plots(cert: dict[str, Any], out: Path, arrays: dict[str, np.ndarray]) -> list[tuple[str, str]]:
    import matplotlib

    matplotlib.use("Agg", force=True)
    import matplotlib.pyplot as plt

    made: list[tuple[str, str]] = []
    kappa = float(cert["parameters"]["kappa"])
    # confidence histograms
    fig, ax = plt.subplots(figsize=(6, 3.5))
    bins = np.linspace(0, 1, 41)
    ax.hist(arrays["teacher_conf"], bins=bins, alpha=0.6, label="teacher (max softmax)")
    ax.hist(arrays["student_conf_teacher_class"], bins=bins, alpha=0.6, label="student (teacher's class)")
    ax.axvline(kappa, color="k", ls="--", lw=1, label=f"kappa = {kappa:g}")
    ax.set_xlabel("confidence")
    ax.set_ylabel("samples")
    ax.set_yscale("log")
    ax.legend(fontsize=8)
    ax.set_title("Confidence over the sample")
    fig.tight_layout()
    fig.savefig(out / "confidence.png", dpi=110)
    plt.close(fig)
    made.append(("confidence.png", "Teacher vs student confidence over the sample"))

    rho = np.asarray(arrays["rho"], dtype=np.float64)
    rho = rho[np.isfinite(rho) & (rho > 0)]
    fig, ax = plt.subplots(figsize=(6, 3.5))
    if len(rho):
        lo, hi = np.log10(rho.min()), np.log10(rho.max())
        ax.hist(rho, bins=np.logspace(lo - 0.05, hi + 0.05, 41))
        ax.set_xscale("log")
    ax.axvline(1.0, color="k", ls="--", lw=1, label="rho = 1 (no shrinking)")
    ax.set_xlabel("rho(x) = ||grad margin_S||_* / ||grad margin_T||_*")
    ax.set_ylabel("confident samples")
    ax.legend(fontsize=8)
    ax.set_title("Margin-gradient ratio (Prop. 4.3 lift factor min(1, rho))")
    fig.tight_layout()
    fig.savefig(out / "rho.png", dpi=110)
    plt.close(fig)
    made.append(("rho.png", "Distribution of the margin-gradient ratio rho"))

    X = np.asarray(arrays["X"], dtype=np.float64)
    if X.shape[1] == 2:
        P, axes = X, ("x1", "x2")
    else:
        Xc = X - X.mean(axis=0)
        _, _, vt = np.linalg.svd(Xc, full_matrices=False)
        P, axes = Xc @ vt[:2].T, ("PC 1", "PC 2")
    cat = np.array(["not confident"] * len(X), dtype=object)
    K = np.asarray(arrays["confident"], dtype=np.int64)
    for j, i in enumerate(K):
        st = str(arrays["status"][j])
        cat[i] = st if st in ("verified", "falsified") else "undecided"
    fig, ax = plt.subplots(figsize=(5.5, 5))
    for name, col in _COLORS.items():
        sel = cat == name
        if np.any(sel):
            ax.scatter(P[sel, 0], P[sel, 1], s=10, c=col, label=f"{name} ({int(sel.sum())})", alpha=0.8)
    wit = [c["i"] for c in cert["counterexamples"] if c["kind"] == "teacher_pgd"]
    if wit:
        ax.scatter(
            P[wit, 0],
            P[wit, 1],
            s=80,
            facecolors="none",
            edgecolors="k",
            label=f"teacher PGD witness ({len(wit)})",
        )
    ax.set_xlabel(axes[0])
    ax.set_ylabel(axes[1])
    ax.legend(fontsize=8)
    ax.set_title("Samples by local-query outcome (student)")
    fig.tight_layout()
    fig.savefig(out / "samples.png", dpi=110)
    plt.close(fig)
    made.append(("samples.png", "Verified / falsified samples"))
    return made


def _audit_text(a: dict[str, Any]) -> str:
    if not a.get("run", False):
        return "not run"
    if not a.get("checkable", True):
        return "teacher not directly checkable (no verifiable IR): PGD only"
    if not a.get("claims"):
        return "no lifted claims"
    frac = a.get("fraction_confirmed")
    return (
        f"{a['confirmed']} confirmed, {a['undecided']} undecided, {a['refuted']} refuted of {a['claims']} "
        f"lifted claims ({100 * frac:.1f}% confirmed; by {a.get('by')})"
    )


def render_markdown(cert: dict[str, Any], plots: list[tuple[str, str]]) -> str:
    """The report text (Markdown)."""
    g, p, st, dat = cert["guarantee"], cert["parameters"], cert["steps"], cert["data"]
    verdict = cert["verdict"].upper()
    lines = [f"# distillcert certificate: **{verdict}**", ""]
    if cert["reasons"]:
        lines += ["Refused because:", ""] + [f"- {r['text']}" for r in cert["reasons"]] + [""]
    lines += ["## Guarantee", "", g["text"], ""]
    lines += (
        [
            f"- kind: **{g['kind']}** (requested: {p['guarantee_requested']}), s = {dat['sample_size']} "
            f"(minimum {p['s_required']}; sizes of all kinds: {p['sample_sizes']})",
            f"- delta = {p['delta']:g} ({'L-inf' if p['norm'] == 'inf' else 'L2'}), kappa = {p['kappa']:g}, "
            f"epsilon = {p['epsilon']:g}, eta = {p['eta']:g}, TV shift = {p['tv_shift']:g}, m = "
            f"{p['m']}, d = {p['d'] or 'n/a'}",
            f"- teacher radius: {g['teacher_radius']:.5g} (radius rule '{p['radius_rule']}', lift "
            f"{p['lift']}, "
            f"student base radius {p['base_radius']:.5g})",
            f"- data: {dat['distribution']}",
            "",
            "### Assumptions",
            "",
        ]
        + [f"- {a}" for a in cert["assumptions"]]
        + [""]
    )
    glob = st["global"]
    loc = st["local"]
    eq = st["eq13"]
    lift = st["lift"]
    cc = st["crosscheck"]
    dur = cert.get("durations_s", {})

    def fmt(v: Any) -> str:
        return "—" if v is None else (f"{v:.4g}" if isinstance(v, float) else str(v))

    rows = [
        (
            "1. sample",
            f"{dat['sample_size']} points ({dat['sampling']}, seed {dat['sample_seed']}), "
            f"{dat['n_confident']} teacher-confident",
            dur.get("sample_s"),
        ),
        (
            "2. distil",
            f"{st['distill'].get('method')} student {st['distill'].get('arch')}, train agreement "
            f"{fmt(st['distill'].get('train_agreement'))}",
            dur.get("distill_s"),
        ),
        (
            "3a. global query",
            f"{glob.get('verdict')} at radius {fmt(glob.get('radius'))} ({glob.get('backend', '—')})",
            dur.get("global_s"),
        ),
        ("3b. local queries", f"{loc['counts']} by {loc['by']}", dur.get("local_s")),
        (
            "4. lift",
            f"{lift['rule']}: rho min {fmt(lift['rho_min'])}, median {fmt(lift['rho_median'])}, "
            f"{lift['rho_below_1']} below 1",
            dur.get("lift_s"),
        ),
        (
            "4. Eq. 13",
            f"{'holds' if eq['holds'] else 'FAILS'} on {eq['n_checked']} {eq['scope']} samples "
            f"({eq['violations']} violations, worst gap {fmt(eq['worst_gap'])}, "
            f"{eq['disagreements']} disagreements)",
            None,
        ),
        (
            "5. teacher PGD",
            f"{cc['adversarial']} adversarial of {cc['n_points']} ({cc['steps']} steps, "
            f"{cc['restarts']} restarts, lifted radius)",
            dur.get("crosscheck_s"),
        ),
        ("5. lift audit", _audit_text(st.get("lift_audit") or {}), dur.get("audit_s")),
        ("6. verdict", verdict, dur.get("total_s")),
    ]
    lines += ["## Steps", "", "| step | result | seconds |", "| --- | --- | --- |"]
    lines += [f"| {a} | {b} | {fmt(c)} |" for a, b, c in rows] + [""]
    lines += ["## Models", ""]
    for role in ("teacher", "student"):
        mrec = cert["models"][role]
        lines.append(f"- {role}: `{mrec['file']}` sha256 `{mrec['sha256']}` (hidden {mrec['hidden_sizes']})")
    lines += ["", f"Solvers: {cert['solvers']}", ""]
    n_ce = len(cert["counterexamples"])
    if n_ce:
        kinds: dict[str, int] = {}
        for c in cert["counterexamples"]:
            kinds[c["kind"]] = kinds.get(c["kind"], 0) + 1
        lines += [
            f"Counterexamples recorded in the certificate: {kinds} (replayed by `distillcert check`).",
            "",
        ]
    if plots:
        lines += ["## Plots", ""]
        for f, cap in plots:
            lines += [f"![{cap}]({f})", ""]
    lines += ["Re-check with `distillcert check certificate.json`.", ""]
    return "\n".join(lines)


def write_report(
    cert: dict[str, Any], out_dir: str | Path, arrays: dict[str, np.ndarray] | None = None
) -> Path:
    """Write ``report.md`` and the PNG plots into ``out_dir``; arrays default to ``samples.npz`` there."""
    out = Path(out_dir)
    if arrays is None:
        f = out / "samples.npz"
        arrays = dict(np.load(f, allow_pickle=False)) if f.is_file() else None
    plots = _plots(cert, out, arrays) if arrays is not None else []
    return atomic_write_text(out / "report.md", render_markdown(cert, plots))
