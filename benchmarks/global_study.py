"""Global two-copy κ-robustness study (issue 14): ``python -m benchmarks.global_study [--parts P,...]``.

Parts (each writes ``<part>.json`` into ``--out`` and the summary ``global_study.md`` is rebuilt from all
part files present, so parts may run separately):

``sweep``
    The 9 settings of the perf goal on the 64-32-32-10 digits student (the one ``python -m
    benchmarks.perf --goals global`` trains: distilled from a 64-64-64-10 teacher, 15 epochs, seed 0):
    δ ∈ {0.005, 0.01, 0.015, 0.02, 0.03} at κ = 0.99 and δ ∈ {0.01, 0.02, 0.03, 0.05} at κ = 0.9, each
    :func:`verifier.queries.verify_global` in a forked child with ``--limit`` seconds; wall and CPU time
    (the child's user+sys, solver children included).
``radius``
    :func:`verifier.search.global_split.certified_global_radius` on the same student for κ = 0.9 and
    κ = 0.99 (``--radius-budget`` seconds each, gap target 10 %, per-probe limit ``--limit``).
``mnist``
    A 784-100-10 student distilled (standard distillation, 10 epochs, seed 0) from a 784-256-256-10
    teacher on mnist5k (both trained here, cached in ``--out``); three settings (δ ∈ {0.002, 0.004, 0.05}
    at κ = 0.9 by default, ``--mnist-settings``) decided with a 300 s limit each and the radius at
    κ = 0.9 with a 600 s budget and a 25 % gap target.
"""

from __future__ import annotations

import argparse
import json
import os
import sys
from pathlib import Path
from typing import Any

import numpy as np

from . import vnncomp_bench as vb
from .common import machine_info, machine_line, md_table, write_json, write_text

__all__ = ["SWEEP", "main"]

SWEEP: tuple[tuple[float, float], ...] = (
    *((d, 0.99) for d in (0.005, 0.01, 0.015, 0.02, 0.03)),
    *((d, 0.9) for d in (0.01, 0.02, 0.03, 0.05)),
)


def _digits_student(out: Path) -> Any:
    from .solvers import build_models

    return build_models(out / "models", False, 0, only=["digits_student"])["digits_student"]


def _mnist_student(out: Path) -> Any:
    from distill.data import load_dataset
    from distill.export import export_onnx
    from distill.losses import distill_student
    from distill.train import model_meta, train_teacher
    from encoders.network import load_onnx

    from .common import torch_threads

    path = out / "models" / "mnist_student_784-100-10_s0.onnx"
    if not path.exists():
        path.parent.mkdir(parents=True, exist_ok=True)
        data = load_dataset("mnist5k", seed=0)
        with torch_threads(1):
            teacher = train_teacher(data, arch="784-256-256-10", epochs=10, seed=0, progress=False)
            res = distill_student(
                teacher.model, data, method="sd", arch="784-100-10", epochs=10, seed=0, progress=False
            )
        export_onnx(res.model, path, data.n_features, meta=model_meta(data, res.config), seed=0)
        acc = float(np.mean(load_onnx(path).evaluate(np.asarray(data.X_test)).argmax(1) == data.y_test))
        write_json(
            path.with_suffix(".info.json"), {"teacher_test_acc": teacher.test_accuracy, "test_acc": acc}
        )
    return load_onnx(path)


def _decide(net: Any, settings: Any, limit: float) -> list[dict[str, Any]]:
    from verifier.dispatch import DispatchConfig
    from verifier.queries import verify_global

    dom = (np.zeros(net.n_inputs), np.ones(net.n_inputs))
    rows = []
    for delta, kappa in settings:
        status, value, wall, cpu = vb.run_forked(
            lambda d=delta, k=kappa: verify_global(net, d, k, dom, DispatchConfig(timeout=limit)).to_json(),
            limit + vb.GRACE_S,
        )
        ok = status == "ok"
        verdict = value["verdict"] if ok else ("timeout" if status == "killed" else "error")
        stats = value.get("stats", {}) if ok else {}
        rows.append(
            {
                "delta": delta,
                "kappa": kappa,
                "verdict": verdict,
                "by": value.get("backend", "") if ok else "",
                "wall_s": round(wall, 2),
                "cpu_s": round(cpu, 2),
                "closed_by": stats.get("closed_by", {}),
                "open": len(stats.get("open", [])),
                "message": (value["message"] if ok else str(value))[:160],
            }
        )
        print(json.dumps(rows[-1]), file=sys.stderr, flush=True)
    return rows


def _radius(net: Any, kappa: float, budget: float, gap: float, limit: float) -> dict[str, Any]:
    from verifier.dispatch import DispatchConfig
    from verifier.search.global_split import certified_global_radius

    dom = (np.zeros(net.n_inputs), np.ones(net.n_inputs))
    status, value, wall, cpu = vb.run_forked(
        lambda: certified_global_radius(
            net, kappa, dom, DispatchConfig(timeout=limit), "inf", budget, gap
        ).to_json(),
        budget + 2 * limit + vb.GRACE_S,
    )
    if status != "ok":
        return {"kappa": kappa, "error": str(value), "wall_s": wall, "cpu_s": cpu}
    ov = value["overall"]
    out = {
        "kappa": kappa,
        "lower": ov["lower"],
        "upper": ov["upper"],
        "gap": ov["gap"],
        "complete": value["complete"],
        "probes": ov["probes"],
        "wall_s": round(wall, 2),
        "cpu_s": round(cpu, 2),
    }
    print(json.dumps(out), file=sys.stderr, flush=True)
    return out


def part_sweep(out: Path, limit: float) -> dict[str, Any]:
    net = _digits_student(out)
    return {"model": str(net.path), "limit_s": limit, "rows": _decide(net, SWEEP, limit)}


def part_radius(out: Path, limit: float, budget: float) -> dict[str, Any]:
    net = _digits_student(out)
    return {"model": str(net.path), "rows": [_radius(net, k, budget, 0.1, limit) for k in (0.9, 0.99)]}


def part_mnist(out: Path, limit: float, budget: float, settings: Any) -> dict[str, Any]:
    net = _mnist_student(out)
    info_path = Path(str(net.path)).with_suffix(".info.json")
    info = json.loads(info_path.read_text()) if info_path.exists() else {}
    rows = _decide(net, settings, limit)
    return {
        "model": str(net.path),
        "info": info,
        "rows": rows,
        "radius": _radius(net, 0.9, budget, 0.25, min(limit, 120.0)),
    }


def _fmt_rows(rows: list[dict[str, Any]]) -> str:
    return md_table(
        ["δ", "κ", "verdict", "by", "wall s", "CPU s", "pairs closed by", "open"],
        [
            [
                r["delta"],
                r["kappa"],
                r["verdict"],
                r["by"],
                f"{r['wall_s']:.1f}",
                f"{r['cpu_s']:.1f}",
                ", ".join(f"{k} {v}" for k, v in r["closed_by"].items()),
                r["open"],
            ]
            for r in rows
        ],
    )


def _fmt_radius(rows: list[dict[str, Any]]) -> str:
    def up(r: dict[str, Any]) -> str:
        return "none" if r.get("upper") is None else f"{r['upper']:.5g}"

    return md_table(
        ["κ", "largest δ proved", "smallest δ falsified", "gap", "complete", "wall s", "CPU s"],
        [
            [
                r["kappa"],
                f"{r.get('lower', float('nan')):.5g}",
                up(r),
                "–" if r.get("gap") is None else f"{100 * r['gap']:.1f} %",
                r.get("complete"),
                f"{r['wall_s']:.0f}",
                f"{r['cpu_s']:.0f}",
            ]
            for r in rows
        ],
    )


def summary(out: Path) -> str:
    parts = []
    info = machine_info()
    parts.append(f"Machine: {machine_line(info)}\n")
    if (out / "sweep.json").exists():
        s = json.loads((out / "sweep.json").read_text())
        parts.append(f"## Digits 64-32-32-10 student, 9 settings (limit {s['limit_s']:.0f} s)\n")
        parts.append(_fmt_rows(s["rows"]))
    if (out / "radius.json").exists():
        s = json.loads((out / "radius.json").read_text())
        parts.append("\n## Certified global radius, digits student\n")
        parts.append(_fmt_radius(s["rows"]))
    if (out / "mnist.json").exists():
        s = json.loads((out / "mnist.json").read_text())
        parts.append(f"\n## MNIST 784-100-10 student (mnist5k) {json.dumps(s.get('info', {}))}\n")
        parts.append(_fmt_rows(s["rows"]))
        parts.append("\n" + _fmt_radius([s["radius"]]))
    text = "\n".join(parts) + "\n"
    write_text(out / "global_study.md", text)
    return text


def main(argv: list[str] | None = None) -> int:
    ap = argparse.ArgumentParser(
        prog="python -m benchmarks.global_study", description=__doc__.splitlines()[0]
    )
    ap.add_argument("--out", default="bench_out/global_study")
    ap.add_argument("--parts", default="sweep,radius,mnist")
    ap.add_argument("--limit", type=float, default=60.0, help="seconds per digits setting / radius probe")
    ap.add_argument("--radius-budget", type=float, default=600.0)
    ap.add_argument("--mnist-limit", type=float, default=300.0)
    ap.add_argument("--mnist-budget", type=float, default=600.0)
    ap.add_argument(
        "--mnist-settings", default="0.002,0.9;0.004,0.9;0.05,0.9", help="δ,κ pairs separated by ';'"
    )
    args = ap.parse_args(argv)
    os.environ.setdefault("OMP_NUM_THREADS", "1")
    out = Path(args.out)
    out.mkdir(parents=True, exist_ok=True)
    for part in [p.strip() for p in args.parts.split(",") if p.strip()]:
        if part == "sweep":
            write_json(out / "sweep.json", part_sweep(out, args.limit))
        elif part == "radius":
            write_json(out / "radius.json", part_radius(out, args.limit, args.radius_budget))
        elif part == "mnist":
            settings = [tuple(float(v) for v in s.split(",")) for s in args.mnist_settings.split(";")]
            write_json(out / "mnist.json", part_mnist(out, args.mnist_limit, args.mnist_budget, settings))
        else:
            print(f"global_study: unknown part {part!r} (sweep, radius, mnist)", file=sys.stderr)
            return 2
    print(summary(out))
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
