"""The VNN-COMP style runner: ``distillcert vnncomp INSTANCES.csv --out RESULTS.csv``.

Properties may be written in the 2021 dialect (``declare-const X_i Real``) or in VNN-LIB 2.0 (one
``declare-network``, whose file is the instance's ONNX file); the dialect is read off each file.

Every finished instance is journaled (``RESULTS.csv.journal.jsonl``, one fsync'ed line per instance)
before the next starts, so Ctrl-C or a crash loses at most the instances in flight; a rerun with the
same ``--out`` skips what the journal holds.  The results CSV is rewritten atomically after each
instance, in instances-file order.
"""

from __future__ import annotations

import csv
import multiprocessing as mp
import time
from concurrent.futures import ProcessPoolExecutor, as_completed
from dataclasses import dataclass, replace
from pathlib import Path
from typing import Any

from encoders.errors import DataError
from encoders.network import file_sha256
from encoders.progress import Progress

from .atomic import atomic_write_text
from .dispatch import DispatchConfig
from .journal import Journal, query_key
from .results import Result, Verdict


@dataclass(frozen=True)
class Instance:
    onnx: str
    vnnlib: str
    timeout: float
    onnx_path: Path
    vnnlib_path: Path


def read_instances(path: Path) -> list[tuple[str, str, float]]:
    """``onnx,vnnlib,timeout`` rows (no header, as in VNN-COMP)."""
    if not path.exists():
        raise DataError(f"{path}: no such file")
    rows = []
    with open(path, newline="") as fh:
        for i, row in enumerate(csv.reader(fh), 1):
            if not row or row[0].startswith("#"):
                continue
            if len(row) < 2 or (row[0] == "onnx" and i == 1):
                if row[0] == "onnx":
                    continue
                raise DataError(f"{path}:{i}: expected onnx,vnnlib,timeout")
            try:
                timeout = float(row[2]) if len(row) > 2 and row[2].strip() else 300.0
            except ValueError:
                raise DataError(f"{path}:{i}: timeout {row[2]!r} is not a number") from None
            rows.append((row[0].strip(), row[1].strip(), timeout))
    return rows


def read_expected(path: Path) -> dict[tuple[str, str], str]:
    if not path.exists():
        raise DataError(f"--expected {path}: no such file")
    out = {}
    with open(path, newline="") as fh:
        for row in csv.reader(fh):
            if len(row) >= 3 and row[0] != "onnx":
                out[(Path(row[0]).name, Path(row[1]).name)] = row[2].strip()
    return out


def _solve_instance(inst: Instance, config: DispatchConfig) -> Result:
    """One instance; a VNN-LIB 2.0 property (``vnnlib-version`` / ``declare-network``) is answered by
    :func:`verifier.vnnlib2_query.verify_instance`, a 2021 one by :func:`verifier.queries.verify_vnnlib`."""
    from encoders.vnnlib2 import is_vnnlib2_file

    from .queries import verify_vnnlib

    try:
        if is_vnnlib2_file(inst.vnnlib_path):
            from .vnnlib2_query import verify_instance

            return verify_instance(inst.onnx_path, inst.vnnlib_path, replace(config, timeout=inst.timeout))
        return verify_vnnlib(inst.onnx_path, inst.vnnlib_path, replace(config, timeout=inst.timeout))
    except Exception as exc:  # one bad instance must not sink the run
        return Result(Verdict.ERROR, config.backend, 0.0, message=f"{type(exc).__name__}: {exc}")


def _task(args: tuple[Instance, DispatchConfig]) -> tuple[Instance, Result]:
    inst, config = args
    return inst, _solve_instance(inst, config)


def _task_pair(inst: Instance, config: DispatchConfig) -> tuple[Instance, Result]:
    return inst, _solve_instance(inst, config)


def run_vnncomp(
    instances: Path,
    root: Path | None,
    out: Path,
    backend: str,
    jobs: int = 1,
    expected: Path | None = None,
    timeout: float | None = None,
    cluster: str | None = None,
) -> dict[str, Any]:

    rows = read_instances(instances)
    root = root or instances.parent
    insts = []
    for onnx, vnn, t in rows:
        op, vp = root / onnx, root / vnn
        for p in (op, vp):
            if not p.exists():
                raise DataError(f"{instances}: instance file {p} does not exist (check --root)")
        insts.append(Instance(onnx, vnn, float(timeout) if timeout else t, op, vp))
    exp = read_expected(expected) if expected else {}
    config = DispatchConfig(backend=backend)
    journal = Journal(out.with_name(out.name + ".journal.jsonl"))
    hashes: dict[Path, str] = {}

    def key(inst: Instance) -> str:
        for p in (inst.onnx_path, inst.vnnlib_path):
            if p not in hashes:
                hashes[p] = file_sha256(p)
        return query_key("vnncomp", hashes[inst.onnx_path], hashes[inst.vnnlib_path], backend, inst.timeout)

    done: dict[int, dict[str, Any]] = {}
    todo = []
    for i, inst in enumerate(insts):
        rec = journal.get(key(inst))
        if rec is not None:
            done[i] = rec
        else:
            todo.append(i)
    resumed = len(done)

    def write_csv() -> None:
        lines = ["onnx,vnnlib,result,time_s"]
        for i, inst in enumerate(insts):
            if i in done:
                lines.append(f"{inst.onnx},{inst.vnnlib},{done[i]['result']},{done[i]['time_s']:.3f}")
        atomic_write_text(out, "\n".join(lines) + "\n")

    bar = Progress(total=len(insts), initial=resumed, desc="vnncomp", unit="inst")

    def finish(i: int, res: Result) -> None:
        inst = insts[i]
        rec = {
            "onnx": inst.onnx,
            "vnnlib": inst.vnnlib,
            "result": res.verdict.vnncomp,
            "time_s": float(res.time_s),
            "backend": res.backend,
            "message": res.message[:300],
        }
        journal.record(key(inst), rec)
        done[i] = rec
        write_csv()
        bar.update(1)
        bar.set_postfix(last=f"{inst.onnx[:24]} {rec['result']}")

    t0 = time.perf_counter()
    try:
        if cluster:
            from .cluster import run_on_dask

            where = {(insts[i].onnx, insts[i].vnnlib): i for i in todo}
            for inst, res in run_on_dask([insts[i] for i in todo], config, cluster, _task_pair):
                finish(where[(inst.onnx, inst.vnnlib)], res)
        elif jobs > 1:
            with ProcessPoolExecutor(jobs, mp_context=mp.get_context("fork")) as ex:
                futs = {ex.submit(_task, (insts[i], config)): i for i in todo}
                for f in as_completed(futs):
                    finish(futs[f], f.result()[1])
        else:
            for i in todo:
                finish(i, _solve_instance(insts[i], config))
    finally:
        bar.close()
        journal.close()
    write_csv()
    counts: dict[str, int] = {}
    wrong = []
    for i, inst in enumerate(insts):
        r = done[i]["result"]
        counts[r] = counts.get(r, 0) + 1
        e = exp.get((Path(inst.onnx).name, Path(inst.vnnlib).name))
        if e in ("sat", "unsat") and r in ("sat", "unsat") and r != e:
            wrong.append(f"{inst.onnx},{inst.vnnlib}: got {r}, expected {e}")
    solved = counts.get("sat", 0) + counts.get("unsat", 0)
    total_time = sum(done[i]["time_s"] for i in done)
    summary = {
        "instances": len(insts),
        "solved": solved,
        "counts": counts,
        "wrong": len(wrong),
        "wrong_instances": wrong,
        "total_time_s": round(total_time, 3),
        "wall_time_s": round(time.perf_counter() - t0, 3),
        "resumed": resumed,
        "out": str(out),
        "backend": backend,
    }
    summary["text"] = (
        f"{solved}/{len(insts)} solved ({counts}); {len(wrong)} wrong"
        + (f" vs {expected}" if expected else "")
        + f"; total solver time {total_time:.1f}s; "
        f"results in {out}"
        + (f" ({resumed} resumed from the journal)" if resumed else "")
        + "".join(f"\n  WRONG {w}" for w in wrong)
    )
    return summary
