"""Convert VNN-COMP 2021 instances (``declare-const X_i Real``) to VNN-LIB 2.0, and compare answers.

::

    python -m benchmarks.vnnlib2_convert convert INSTANCES.csv --out DIR
    python -m benchmarks.vnnlib2_convert compare INSTANCES.csv --out DIR [--timeout 30] [--limit N]

``convert`` reads each instance's 2021 property with :func:`encoders.vnnlib.parse_vnnlib` (the exact
normal form: input boxes and output DNFs, float64 bounds rounded outward) and writes the same region as
a 2.0 query: one network ``N`` whose input ``X`` and output ``Y`` have the ONNX file's shapes (dynamic
dimensions as 1), element ``X_k`` becoming the row-major element ``k`` of ``X``.  Every number is
written as the exact decimal of its float64 (:func:`encoders.vnnlib2.decimal`), so reading the 2.0 file
back gives the very same boxes and rows.  One case is written as box asserts and one ``(assert (or
(and …) …))``; several cases as ``(assert (or (and <box> (or …)) …))``.  ``DIR/instances.csv`` lists
``onnx,vnnlib,timeout`` with the ONNX paths absolute (the files are read in place, never copied).

``compare`` converts, then answers every instance twice — the 2021 file through
:func:`verifier.queries.verify_vnnlib` and the 2.0 file through
:func:`verifier.vnnlib2_query.solve_query` (what ``distillcert-vnnlib verify`` runs) — and writes
``DIR/compare.csv`` plus a summary line (agreements, and any sat/unsat contradiction).
"""

from __future__ import annotations

import argparse
import csv
import json
import sys
import time
from pathlib import Path

import numpy as np

from encoders.vnnlib import VnnlibSpec, parse_vnnlib
from encoders.vnnlib2 import _elems, _io_shape, decimal, linear_text, tensor_decl


def _onnx_shapes(path: Path) -> tuple[list[int], list[int]]:
    import onnx

    m = onnx.load(str(path), load_external_data=False)
    inits = {t.name for t in m.graph.initializer}
    inp = [i for i in m.graph.input if i.name not in inits][0]
    dims = lambda vi: [d.dim_value if d.dim_value > 0 else 1 for d in vi.type.tensor_type.shape.dim]  # noqa: E731
    return dims(inp), dims(m.graph.output[0])


def spec_to_vnnlib2(spec: VnnlibSpec, in_shape: list[int], out_shape: list[int], comment: str = "") -> str:
    """VNN-LIB 2.0 text with exactly the unsafe region of ``spec`` (see the module docstring)."""
    si, so = _io_shape(in_shape, spec.n_inputs), _io_shape(out_shape, spec.n_outputs)
    X, Y = _elems("X", si), _elems("Y", so)
    out = [f"; {ln}".rstrip() for ln in comment.splitlines()]
    out += [
        "",
        "(vnnlib-version <2.0>)",
        "",
        f"(declare-network N {tensor_decl('input', 'X', si)} {tensor_decl('output', 'Y', so)})",
        "",
    ]

    def box(lo: np.ndarray, hi: np.ndarray) -> list[str]:
        return [f"(>= {X[i]} {decimal(lo[i])}) (<= {X[i]} {decimal(hi[i])})" for i in range(lo.size)]

    def alt(A: np.ndarray, b: np.ndarray) -> str:
        rows = [
            linear_text([(float(A[r, j]), Y[j]) for j in np.flatnonzero(A[r])], float(b[r]))
            for r in range(A.shape[0])
        ]
        return "(and " + " ".join(rows) + ")" if len(rows) > 1 else (rows[0] if rows else "(<= 0.0 1.0)")

    def dnf(c) -> str:
        alts = [alt(A, b) for A, b in c.dnf.alternatives]
        return alts[0] if len(alts) == 1 else "(or\n    " + "\n    ".join(alts) + ")"

    if len(spec.cases) == 1:
        c = spec.cases[0]
        out += ["; input box"] + [f"(assert (and {b}))" for b in box(c.lo, c.hi)]
        out += ["", "; unsafe outputs", f"(assert {dnf(c)})"]
    else:
        out.append("(assert (or")
        for c in spec.cases:
            out.append(f"  (and {' '.join(box(c.lo, c.hi))}\n   {dnf(c)})")
        out.append("))")
    return "\n".join(out) + "\n"


def _read_rows(csv_path: Path) -> list[tuple[str, str, float]]:
    rows = []
    with open(csv_path, newline="") as fh:
        for row in csv.reader(fh):
            if row and not row[0].startswith("#") and row[0] != "onnx":
                rows.append((row[0].strip(), row[1].strip(), float(row[2]) if len(row) > 2 else 300.0))
    return rows


def convert(instances: Path, out: Path) -> list[tuple[Path, Path, Path, float]]:
    """Write the 2.0 queries and ``out/instances.csv``; returns ``(onnx, vnnlib2021, vnnlib2, timeout)``."""
    root = instances.parent
    out.mkdir(parents=True, exist_ok=True)
    done: dict[tuple[str, str], Path] = {}
    rows = []
    for onnx, vnn, t in _read_rows(instances):
        op, vp = (root / onnx).resolve(), (root / vnn).resolve()
        key = (str(vp), str(op))
        if key not in done:
            spec = parse_vnnlib(vp)
            ins, outs = _onnx_shapes(op)
            text = spec_to_vnnlib2(
                spec,
                ins,
                outs,
                f"{vp.name} for {op.name}, converted to VNN-LIB 2.0 by benchmarks/vnnlib2_convert.py",
            )
            dst = out / f"{Path(vnn).stem}__{Path(onnx).stem}.vnnlib"
            dst.write_text(text)
            done[key] = dst
        rows.append((op, vp, done[key], t))
    with open(out / "instances.csv", "w") as fh:
        for op, _, v2, t in rows:
            fh.write(f"{op},{v2},{t:g}\n")
    return rows


def _clock() -> tuple[float, float]:
    """Wall time and CPU time (this process and its finished solver children), seconds."""
    import resource

    own, kids = resource.getrusage(resource.RUSAGE_SELF), resource.getrusage(resource.RUSAGE_CHILDREN)
    return time.perf_counter(), own.ru_utime + own.ru_stime + kids.ru_utime + kids.ru_stime


def compare(instances: Path, out: Path, timeout: float, limit: int | None, backend: str = "auto") -> dict:
    from dataclasses import replace

    from verifier.dispatch import DispatchConfig
    from verifier.queries import verify_vnnlib
    from verifier.vnnlib2_query import VERDICT_WORDS, solve_query

    rows = convert(instances, out)
    if limit:
        step = max(1, len(rows) // limit)
        rows = rows[::step][:limit]
    cfg = DispatchConfig(backend=backend)
    lines = ["onnx,vnnlib,result_2021,result_2.0,wall_2021_s,cpu_2021_s,wall_2.0_s,cpu_2.0_s"]
    agree = contra = 0
    for op, vp, v2, _ in rows:
        w, c = _clock()
        r1 = VERDICT_WORDS[verify_vnnlib(op, vp, replace(cfg, timeout=timeout)).verdict]
        w1, c1 = _clock()
        r2 = solve_query(v2, {"N": str(op)}, timeout, cfg).status
        w2, c2 = _clock()
        agree += r1 == r2
        contra += {r1, r2} == {"sat", "unsat"}
        lines.append(f"{op.name},{vp.name},{r1},{r2},{w1 - w:.2f},{c1 - c:.2f},{w2 - w1:.2f},{c2 - c1:.2f}")
        print(lines[-1], file=sys.stderr, flush=True)
    (out / "compare.csv").write_text("\n".join(lines) + "\n")
    return {"instances": len(rows), "agree": agree, "contradictions": contra, "csv": str(out / "compare.csv")}


def main(argv: list[str] | None = None) -> int:
    p = argparse.ArgumentParser(
        prog="python -m benchmarks.vnnlib2_convert", description=__doc__.split("\n\n")[0]
    )
    p.add_argument("command", choices=["convert", "compare"])
    p.add_argument("instances", type=Path, help="a VNN-COMP 2021 instances.csv (onnx,vnnlib,timeout)")
    p.add_argument(
        "--out", type=Path, required=True, help="output folder (never inside the benchmark folder)"
    )
    p.add_argument("--timeout", type=float, default=30.0)
    p.add_argument("--limit", type=int, default=None, help="compare: at most this many, evenly spread")
    p.add_argument("--backend", default="auto")
    a = p.parse_args(argv)
    if a.out.resolve().is_relative_to(a.instances.resolve().parent):
        p.error("--out must not be inside the benchmark folder")
    if a.command == "convert":
        rows = convert(a.instances, a.out)
        print(json.dumps({"converted": len(rows), "instances_csv": str(a.out / "instances.csv")}))
    else:
        print(json.dumps(compare(a.instances, a.out, a.timeout, a.limit, a.backend)))
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
