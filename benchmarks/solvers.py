r"""``distillcert bench solvers`` — one query set answered by Gurobi, HiGHS, Marabou, Z3 and the portfolio.

Query set (every query is asked of every backend through the same dispatcher entry point)
    * ``gauss-*`` (*tiny*): a 2-8-8-2 ReLU student distilled from a 2-16-16-2 teacher on the two
      truncated Gaussians of seed 000 §5 — local L∞ robustness at test points for several ε, global
      two-copy κ-confidence δ-robustness over the data box :math:`[-3, 3]^2`, and teacher/student
      disagreement at test points;
    * ``digits-tiny-local`` (*tiny*): a 64-10-10 student on digits, local L∞ robustness;
    * ``digits-local``: the 64-32-32-10 digits student at test points and ε ∈ {0.01, 0.03, 0.05};
    * ``digits-global``: global two-copy κ-robustness of a 64-16-10 digits student over
      :math:`[0, 1]^{64}` (one sub-query per class, all under one time limit);
    * ``digits-disagree``: a 64-64-64-10 teacher against the 64-32-32-10 student;
    * ``acasxu`` / ``mnistfc``: VNN-COMP 2021 instances read in place from
      ``../shared/benchmarks/vnncomp2021`` (a fixed, mixed sat/unsat subset).

The comparison is of the *solvers*: the dispatcher's CROWN quick check, its sampling/PGD
falsification and its input-splitting branch and bound are switched off
(``DispatchConfig(quick_check=False, samples=0, bab=False)``), so every query reaches the backend;
the encoding (CROWN-tightened big-M bounds), the replay of every counterexample on onnxruntime and
the hard per-query time limit are the same for all backends.  ``portfolio`` races
Gurobi, HiGHS and Marabou in parallel processes (so it uses up to three cores against one for the
others).  Z3 is only practical for tiny programs: it is given only the queries marked *tiny*, with
a shorter limit; every table says on which subset a number was computed.

Each (backend, query) pair runs in a forked child under :func:`benchmarks.vnncomp_bench.run_forked`
(process group killed at ``limit + 5 s``), which also measures its CPU time.  Finished pairs are
journaled to ``OUT/records.jsonl``; a rerun with the same ``--out`` skips them (trained models are
cached under ``OUT/models`` too), so an interrupted study resumes where it stopped.

Run: ``distillcert bench solvers [--quick] [--out DIR]``, or ``python -m benchmarks.solvers --out DIR
[--timeout S] [--z3-timeout S] [--backends B ...] [--bounds crown alpha]`` to change the limits, the
backends or the big-M bounds of the encodings (``--bounds crown alpha`` runs every backend twice: with
CROWN bounds, named ``gurobi``, and with α-CROWN intermediate bounds, named ``gurobi+alpha``).

Scores
    * verdict agreement matrix: for each pair of backends, ``agree / both decided``; any
      disagreement between two *decided* verdicts is a soundness bug and is listed in the summary;
      VNN-COMP instances are also checked against ``expected.csv`` (``wrong``);
    * solved = VERIFIED + FALSIFIED;
    * PAR-2 = :math:`\sum_q t_q` over solved queries :math:`+ \sum_q 2 T_q` over unsolved ones
      (:math:`T_q` the query's limit);
    * cactus plot (solved queries against per-query time) and median time per backend.
"""

from __future__ import annotations

import contextlib
import json
import os
import statistics
import sys
from collections.abc import Callable, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np

from encoders.progress import Progress
from encoders.properties import LAYER_BOUNDS

from .common import md_table, torch_threads, write_csv, write_json, write_text
from .vnncomp_bench import (
    GRACE_S,
    RunRecord,
    cactus_plot,
    default_root,
    load_records,
    machine_info,
    machine_line,
    read_family,
    run_forked,
)

__all__ = ["BACKENDS", "Query", "build_models", "build_queries", "run_queries", "agreement", "run"]

#: backends compared, in table order
BACKENDS: tuple[str, ...] = ("gurobi", "highs", "marabou", "z3", "portfolio")
#: backends that get every query (Z3 only gets the tiny ones)
_FULL_ONLY = frozenset({"z3"})


@dataclass(frozen=True)
class Query:
    """One verification question, answered by ``ask(config) -> Result`` in a child process."""

    key: str
    family: str
    tiny: bool
    ask: Callable[[Any], Any]
    expected: str = ""  # "verified" | "falsified" | "" (VNN-COMP instances only)


# ==================================================================================================
# models
# ==================================================================================================
@dataclass(frozen=True)
class _ModelSpec:
    name: str
    dataset: str
    arch: str
    teacher: str | None  # name of the teacher to distil from; None = trained on the labels
    epochs: int


def _specs(quick: bool) -> list[_ModelSpec]:
    e = 3 if quick else 15
    specs = [
        _ModelSpec("gauss_teacher", "gaussians2d", "2-16-16-2", None, e),
        _ModelSpec("gauss_student", "gaussians2d", "2-8-8-2", "gauss_teacher", e),
        _ModelSpec("digits_teacher_small", "digits", "64-32-10", None, e),
        _ModelSpec("digits_tiny", "digits", "64-10-10", "digits_teacher_small", e),
    ]
    if not quick:
        specs += [
            _ModelSpec("digits_teacher", "digits", "64-64-64-10", None, e),
            _ModelSpec("digits_student", "digits", "64-32-32-10", "digits_teacher", e),
            _ModelSpec("digits_global", "digits", "64-16-10", "digits_teacher", e),
        ]
    return specs


def build_models(
    folder: Path, quick: bool, seed: int = 0, only: Sequence[str] | None = None
) -> dict[str, Any]:
    """Train (or reuse from ``folder``) the teachers and students of the query set; export ONNX.

    Students are distilled with standard distillation (``sd``) on the teacher; training uses one torch
    thread (restored afterwards).  ``only`` restricts to the named models (and their teachers).
    Returns ``{name: Network, "data:<dataset>": Dataset}``.
    """
    from distill.data import load_dataset
    from distill.export import export_onnx
    from distill.losses import distill_student
    from distill.train import model_meta, train_teacher
    from encoders.network import load_onnx

    folder.mkdir(parents=True, exist_ok=True)
    out: dict[str, Any] = {}
    models: dict[str, Any] = {}
    specs = _specs(quick)
    if only is not None:
        need = set(only)
        for sp in reversed(specs):
            if sp.name in need and sp.teacher:
                need.add(sp.teacher)
        specs = [sp for sp in specs if sp.name in need]
    with torch_threads(1):
        for sp in specs:
            data = out.get(f"data:{sp.dataset}")
            if data is None:
                data = out[f"data:{sp.dataset}"] = load_dataset(sp.dataset, seed=seed)
            path = folder / f"{sp.name}_{sp.arch}_e{sp.epochs}_s{seed}.onnx"
            if not path.exists():
                if sp.teacher is None:
                    res = train_teacher(data, arch=sp.arch, epochs=sp.epochs, seed=seed, progress=False)
                else:
                    if sp.teacher not in models:
                        from distill.export import load_model

                        models[sp.teacher] = load_model(out[sp.teacher].path)
                    res = distill_student(
                        models[sp.teacher],
                        data,
                        method="sd",
                        arch=sp.arch,
                        epochs=sp.epochs,
                        seed=seed,
                        progress=False,
                    )
                models[sp.name] = res.model
                export_onnx(res.model, path, data.n_features, meta=model_meta(data, res.config), seed=seed)
            out[sp.name] = load_onnx(path)
    return out


# ==================================================================================================
# queries
# ==================================================================================================
def _points(data: Any, net: Any, n: int, seed: int) -> list[np.ndarray]:
    """``n`` test points the network classifies correctly (deterministic given ``seed``)."""
    rng = np.random.default_rng(seed)
    order = rng.permutation(len(data.y_test))
    X = np.asarray(data.X_test, dtype=np.float64)
    pred = net.evaluate(X[order]).argmax(axis=1)
    keep = [order[i] for i in range(len(order)) if pred[i] == data.y_test[order[i]]]
    return [X[i] for i in keep[:n]]


def _near_boundary(data: Any, net: Any) -> np.ndarray:
    """The correctly classified test point with the smallest logit margin (a falsifiable query)."""
    X = np.asarray(data.X_test, dtype=np.float64)
    y = net.evaluate(X)
    top = np.sort(y, axis=1)
    margin = np.where(y.argmax(axis=1) == data.y_test, top[:, -1] - top[:, -2], np.inf)
    return X[int(np.argmin(margin))]


def build_queries(
    models: dict[str, Any], quick: bool, seed: int = 0, root: Path | None = None
) -> list[Query]:
    """The query set (module docstring); quick mode keeps a handful of tiny queries."""
    from verifier.dispatch import verify
    from verifier.queries import verify_global, verify_local, verify_vnnlib

    qs: list[Query] = []
    g_data = models["data:gaussians2d"]
    gs, gt = models["gauss_student"], models["gauss_teacher"]
    g_dom = (np.asarray(g_data.domain_lo, np.float64), np.asarray(g_data.domain_hi, np.float64))
    d_data = models["data:digits"]
    d_dom = (np.asarray(d_data.domain_lo, np.float64), np.asarray(d_data.domain_hi, np.float64))

    def local(net: Any, x: np.ndarray, eps: float, dom: tuple) -> Callable[[Any], Any]:
        return lambda cfg: verify_local(net, x, eps, cfg, "inf", dom)

    def glob(net: Any, delta: float, kappa: float, dom: tuple) -> Callable[[Any], Any]:
        return lambda cfg: verify_global(net, delta, kappa, dom, cfg)

    def disagree(t: Any, s: Any, x: np.ndarray, eps: float, dom: tuple) -> Callable[[Any], Any]:
        from encoders.properties import Disagreement

        prop = Disagreement(x, eps, dom[0], dom[1])
        return lambda cfg: verify(prop, {"teacher": t, "student": s}, cfg)

    g_pts = _points(g_data, gs, 1 if quick else 4, seed)
    for i, x in enumerate(g_pts):
        for eps in (0.3,) if quick else (0.1, 0.3, 0.6, 1.5):
            qs.append(Query(f"gauss-local/p{i}/eps{eps}", "gauss-local", True, local(gs, x, eps, g_dom)))
    xb = _near_boundary(g_data, gs)  # falsifiable: the ball crosses the student's decision boundary
    qs.append(Query("gauss-local/boundary/eps0.5", "gauss-local", True, local(gs, xb, 0.5, g_dom)))
    for delta, kappa in ((0.1, 0.9),) if quick else ((0.1, 0.9), (0.3, 0.9), (0.3, 0.99)):
        qs.append(
            Query(f"gauss-global/d{delta}/k{kappa}", "gauss-global", True, glob(gs, delta, kappa, g_dom))
        )
    for i, x in enumerate(g_pts[: 1 if quick else 4]):
        qs.append(
            Query(f"gauss-disagree/p{i}/eps0.3", "gauss-disagree", True, disagree(gt, gs, x, 0.3, g_dom))
        )
    dt = models["digits_tiny"]
    for i, x in enumerate(_points(d_data, dt, 1 if quick else 4, seed)):
        for eps in (0.03,) if quick else (0.02, 0.05):
            qs.append(
                Query(f"digits-tiny-local/p{i}/eps{eps}", "digits-tiny-local", True, local(dt, x, eps, d_dom))
            )
    if quick:
        return qs

    ds, dtch, dg = models["digits_student"], models["digits_teacher"], models["digits_global"]
    for i, x in enumerate(_points(d_data, ds, 4, seed)):
        for eps in (0.01, 0.03, 0.05):
            qs.append(Query(f"digits-local/p{i}/eps{eps}", "digits-local", False, local(ds, x, eps, d_dom)))
    for delta, kappa in ((0.05, 0.99), (0.1, 0.9)):
        qs.append(
            Query(f"digits-global/d{delta}/k{kappa}", "digits-global", False, glob(dg, delta, kappa, d_dom))
        )
    for i, x in enumerate(_points(d_data, ds, 4, seed + 1)):
        for eps in (0.02, 0.05):
            qs.append(
                Query(
                    f"digits-disagree/p{i}/eps{eps}",
                    "digits-disagree",
                    False,
                    disagree(dtch, ds, x, eps, d_dom),
                )
            )
    root = root or _maybe_root()
    if root is not None:
        for fam, picks in _VNNCOMP_PICKS.items():
            insts = {(i.onnx.name, i.vnnlib.name): i for i in read_family(root, fam)}
            for k in picks:
                inst = insts.get(k)
                if inst is None:
                    continue
                exp = {"sat": "falsified", "unsat": "verified"}.get(inst.expected, "")
                qs.append(
                    Query(
                        f"{fam}/{inst.onnx.stem}/{inst.vnnlib.stem}",
                        fam,
                        False,
                        (lambda o, v: lambda cfg: verify_vnnlib(o, v, cfg))(inst.onnx, inst.vnnlib),
                        exp,
                    )
                )
    return qs


#: VNN-COMP instances in the full query set (mixed sat/unsat, all four ACAS properties)
_VNNCOMP_PICKS: dict[str, tuple[tuple[str, str], ...]] = {
    "acasxu": (
        ("ACASXU_run2a_1_1_batch_2000.onnx", "prop_1.vnnlib"),
        ("ACASXU_run2a_2_1_batch_2000.onnx", "prop_2.vnnlib"),
        ("ACASXU_run2a_3_3_batch_2000.onnx", "prop_2.vnnlib"),
        ("ACASXU_run2a_1_1_batch_2000.onnx", "prop_3.vnnlib"),
        ("ACASXU_run2a_1_1_batch_2000.onnx", "prop_4.vnnlib"),
        ("ACASXU_run2a_4_2_batch_2000.onnx", "prop_4.vnnlib"),
    ),
    "mnistfc": (
        ("mnist-net_256x2.onnx", "prop_0_0.03.vnnlib"),
        ("mnist-net_256x2.onnx", "prop_0_0.05.vnnlib"),
        ("mnist-net_256x2.onnx", "prop_1_0.03.vnnlib"),
    ),
}


def _maybe_root() -> Path | None:
    try:
        return default_root()
    except Exception:
        return None


# ==================================================================================================
# running
# ==================================================================================================
def solver_label(backend: str, bounds: str = "crown") -> str:
    """The name of a (backend, big-M bounds) combination in the tables: ``gurobi`` (CROWN bounds, the
    default), ``gurobi+alpha`` (α-CROWN bounds), ``highs+ibp``, …"""
    return backend if bounds == "crown" else f"{backend}+{bounds}"


def parse_label(label: str) -> tuple[str, str]:
    """``(backend, bounds)`` of a :func:`solver_label`."""
    backend, _, bounds = label.partition("+")
    return backend, bounds or "crown"


def _config(label: str, timeout: float, seed: int) -> Any:
    from verifier.dispatch import DispatchConfig

    backend, bounds = parse_label(label)
    # the solver itself must answer: no CROWN quick check, no sampling/PGD, no input-splitting BaB
    return DispatchConfig(
        backend=backend, timeout=timeout, quick_check=False, samples=0, seed=seed, bab=False, bounds=bounds
    )


def _answer(q: Query, cfg: Any) -> dict[str, Any]:
    r = q.ask(cfg)
    return {"verdict": r.verdict.value, "backend": r.backend, "message": r.message[:200]}


def run_queries(
    queries: Sequence[Query],
    backends: Sequence[str],
    timeout: float,
    z3_timeout: float,
    seed: int = 0,
    progress: bool = True,
    journal: Path | None = None,
) -> list[RunRecord]:
    """Every backend on every query it is given (Z3: tiny ones only), each in a killable child.

    With ``journal``, every finished (backend, query) pair is appended to that JSON-lines file
    (fsync'ed) and a rerun with the same file skips the pairs already there (same key and limit).
    """
    import verifier.dispatch  # noqa: F401
    import verifier.queries  # noqa: F401  (warm imports before forking)

    pairs = [(q, b) for q in queries for b in backends if q.tiny or parse_label(b)[0] not in _FULL_ONLY]
    recs: list[RunRecord] = []
    done = load_records(journal) if journal is not None else {}
    jf = open(journal, "a") if journal is not None else None  # noqa: SIM115 (closed below)
    try:
        bar = Progress(pairs, desc="solvers", unit="query", enabled=progress)
        for q, b in bar:
            t = z3_timeout if parse_label(b)[0] == "z3" else timeout
            rec = done.get((b, q.key, float(t)))
            if rec is None:
                rec = _run_pair(q, b, t, seed)
                if jf is not None:
                    jf.write(json.dumps(rec.to_json()) + "\n")
                    jf.flush()
                    os.fsync(jf.fileno())
            recs.append(rec)
            bar.set_postfix(last=f"{q.key[:28]} {b}={rec.result}")
    finally:
        if jf is not None:
            jf.close()
    return recs


def _run_pair(q: Query, b: str, t: float, seed: int) -> RunRecord:
    """One backend on one query in a forked child with a hard limit of ``t + GRACE_S``."""
    cfg = _config(b, t, seed)
    status, value, wall, cpu = run_forked(lambda: _answer(q, cfg), t + GRACE_S)
    if status == "ok":
        verdict, detail = value["verdict"], f"{value['backend']}: {value['message']}"
    elif status == "killed":
        verdict, detail = "timeout", str(value)
    else:
        verdict, detail = "error", str(value)
    if verdict in ("verified", "falsified") and wall > t + 1.0:
        verdict, detail = "timeout", f"answered {verdict} after {wall:.1f}s > {t:.0f}s"
    return RunRecord(
        b, q.key, verdict, wall, cpu, t, q.expected, detail[:300], extra={"family": q.family, "tiny": q.tiny}
    )


_DECIDED = ("verified", "falsified")


def agreement(recs: Sequence[RunRecord], backends: Sequence[str]) -> tuple[dict, list[str]]:
    """``{a: {b: (agree, both_decided)}}`` and the list of disagreements (soundness bugs)."""
    by: dict[str, dict[str, str]] = {}
    for r in recs:
        by.setdefault(r.key, {})[r.solver] = r.result
    mat: dict[str, dict[str, tuple[int, int]]] = {}
    bad: list[str] = []
    for a in backends:
        mat[a] = {}
        for b in backends:
            both = agree = 0
            for key, d in by.items():
                va, vb = d.get(a), d.get(b)
                if va in _DECIDED and vb in _DECIDED:
                    both += 1
                    agree += va == vb
                    if va != vb and a < b:
                        bad.append(f"{key}: {a}={va}, {b}={vb}")
            mat[a][b] = (agree, both)
    return mat, bad


def _scores(recs: Sequence[RunRecord], backends: Sequence[str], subset: Callable[[RunRecord], bool]) -> dict:
    out = {}
    for b in backends:
        rs = [r for r in recs if r.solver == b and subset(r)]
        if not rs:
            continue
        solved = [r for r in rs if r.result in _DECIDED]
        out[b] = {
            "queries": len(rs),
            "solved": len(solved),
            "verified": sum(r.result == "verified" for r in rs),
            "falsified": sum(r.result == "falsified" for r in rs),
            "timeout": sum(r.result == "timeout" for r in rs),
            "unknown_error": sum(r.result in ("unknown", "error") for r in rs),
            "wrong": sum(
                r.expected in _DECIDED and r.result in _DECIDED and r.result != r.expected for r in rs
            ),
            "par2_s": round(sum(r.wall_s if r.result in _DECIDED else 2 * r.timeout for r in rs), 2),
            "median_s": round(statistics.median(r.wall_s for r in rs), 3),
            "median_solved_s": round(statistics.median(r.wall_s for r in solved), 3)
            if solved
            else float("nan"),
            "total_cpu_s": round(sum(r.cpu_s for r in rs), 2),
        }
    return out


def run(
    quick: bool,
    out: Path,
    seed: int = 0,
    backends: Sequence[str] = BACKENDS,
    timeout: float | None = None,
    z3_timeout: float | None = None,
    progress: bool = True,
    bounds: Sequence[str] = ("crown",),
) -> dict[str, Any]:
    """Build the models and queries, run every backend, write the tables and plots (module docstring).

    Limits: quick 8 s (Z3 5 s); full 60 s (Z3 20 s).  ``bounds``: the big-M bound methods of the
    encodings (:data:`encoders.properties.LAYER_BOUNDS`); every backend runs with each of them, as
    :func:`solver_label` ``backend`` (CROWN) or ``backend+method``.
    """
    out = Path(out)
    out.mkdir(parents=True, exist_ok=True)
    machine = machine_info()
    timeout = timeout or (8.0 if quick else 60.0)
    z3_timeout = z3_timeout or (5.0 if quick else 20.0)
    models = build_models(out / "models", quick, seed)
    queries = build_queries(models, quick, seed)
    backends = [solver_label(b, m) for m in bounds for b in backends]
    recs = run_queries(queries, backends, timeout, z3_timeout, seed, progress, journal=out / "records.jsonl")
    with contextlib.suppress(OSError):
        machine["loadavg_end"] = [round(x, 2) for x in os.getloadavg()]

    rows = [{**r.to_json(), "family": r.extra.get("family"), "tiny": r.extra.get("tiny")} for r in recs]
    write_csv(
        out / "results.csv",
        rows,
        ["solver", "key", "family", "tiny", "expected", "result", "wall_s", "cpu_s", "timeout", "detail"],
    )
    present = [b for b in backends if any(r.solver == b for r in recs)]
    mat, bad = agreement(recs, present)
    all_scores = _scores(recs, present, lambda r: True)
    tiny_scores = _scores(recs, present, lambda r: bool(r.extra.get("tiny")))
    fam_scores = {
        f: _scores(recs, present, lambda r, f=f: r.extra.get("family") == f)
        for f in dict.fromkeys(q.family for q in queries)
    }
    cactus_plot(
        out / "cactus.png",
        {b: [r.wall_s for r in recs if r.solver == b and r.result in _DECIDED] for b in present},
        "solvers: cactus (all queries given; Z3 tiny only)",
        timeout,
    )
    write_csv(
        out / "agreement.csv",
        [{"backend": a, **{b: f"{mat[a][b][0]}/{mat[a][b][1]}" for b in present}} for a in present],
        ["backend", *present],
    )
    summary: dict[str, Any] = {
        "benchmark": "solvers" + (" (quick)" if quick else ""),
        "machine": machine,
        "queries": len(queries),
        "tiny_queries": sum(q.tiny for q in queries),
        "timeout_s": timeout,
        "z3_timeout_s": z3_timeout,
        "bounds": list(bounds),
        "scores_all": all_scores,
        "scores_tiny": tiny_scores,
        "scores_by_family": fam_scores,
        "agreement": {a: {b: list(v) for b, v in row.items()} for a, row in mat.items()},
        "disagreements": bad,
        "plots": ["cactus.png"],
    }
    summary["text"] = _render(summary, present)
    write_text(out / "summary.md", summary["text"] + "\n")
    write_json(out / "summary.json", {k: v for k, v in summary.items() if k != "text"})
    return summary


def _score_table(sc: dict[str, dict]) -> str:
    hdr = [
        "backend",
        "queries",
        "solved",
        "verified",
        "falsified",
        "timeout",
        "unknown/error",
        "wrong",
        "PAR-2 s",
        "median s",
        "median solved s",
        "CPU s",
    ]
    return md_table(
        hdr,
        [
            [
                b,
                v["queries"],
                v["solved"],
                v["verified"],
                v["falsified"],
                v["timeout"],
                v["unknown_error"],
                v["wrong"],
                v["par2_s"],
                v["median_s"],
                v["median_solved_s"],
                v["total_cpu_s"],
            ]
            for b, v in sc.items()
        ],
    )


def _render(s: dict[str, Any], present: Sequence[str]) -> str:
    lines = [
        f"# {s['benchmark']}",
        "",
        f"Machine: {machine_line(s['machine'])}",
        "",
        f"{s['queries']} queries ({s['tiny_queries']} tiny); limit {s['timeout_s']:.0f} s per query "
        f"(Z3 {s['z3_timeout_s']:.0f} s, tiny queries only); CROWN quick check and sampling off, "
        "so every query reaches the solver.  Big-M bounds of the encodings: "
        + ", ".join(s.get("bounds", ["crown"]))
        + " (a backend named `b+m` uses method m; plain `b` uses CROWN).",
        "",
        "## All queries each backend was given",
        "",
        _score_table(s["scores_all"]),
        "",
        "## Tiny queries (all five backends)",
        "",
        _score_table(s["scores_tiny"]),
        "",
        "## Verdict agreement (agree / both decided)",
        "",
        md_table(
            ["", *present],
            [
                [a, *(f"{s['agreement'][a][b][0]}/{s['agreement'][a][b][1]}" for b in present)]
                for a in present
            ],
        ),
    ]
    if s["disagreements"]:
        lines += ["", "**DISAGREEMENTS (soundness bug):**", *(f"- {d}" for d in s["disagreements"])]
    else:
        lines += ["", "No two decided verdicts disagree."]
    lines += ["", "## Solved per family", ""]
    fams = s["scores_by_family"]
    lines.append(
        md_table(
            ["family", *present],
            [
                [f, *(f"{sc[b]['solved']}/{sc[b]['queries']}" if b in sc else "–" for b in present)]
                for f, sc in fams.items()
            ],
        )
    )
    lines += ["", "Plots: " + ", ".join(s["plots"])]
    return "\n".join(lines)


def main(argv: Sequence[str] | None = None) -> int:
    """Command-line entry point (see the module docstring for the options)."""
    import argparse

    ap = argparse.ArgumentParser(prog="python -m benchmarks.solvers", description=__doc__.split("\n")[0])
    ap.add_argument("--out", required=True, help="output folder (records.jsonl there is resumed)")
    ap.add_argument("--quick", action="store_true")
    ap.add_argument("--timeout", type=float, default=None, help="per-query limit (default 60 s, quick 8 s)")
    ap.add_argument("--z3-timeout", type=float, default=None, help="Z3's limit (default 20 s, quick 5 s)")
    ap.add_argument("--backends", nargs="+", default=list(BACKENDS), choices=list(BACKENDS))
    ap.add_argument(
        "--bounds",
        nargs="+",
        default=["crown"],
        choices=list(LAYER_BOUNDS),
        help="big-M bounds of the encodings; every backend runs with each (default crown)",
    )
    ap.add_argument("--seed", type=int, default=0)
    a = ap.parse_args(argv)
    s = run(a.quick, Path(a.out), a.seed, a.backends, a.timeout, a.z3_timeout, bounds=a.bounds)
    print(s.get("text", ""))
    return 0


if __name__ == "__main__":
    sys.exit(main())
