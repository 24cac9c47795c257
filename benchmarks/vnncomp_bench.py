"""``distillcert bench vnncomp`` — our VNN-COMP runner beside maraboupy's own ONNX + VNN-LIB path.

Both tools see the same instances (``../shared/benchmarks/vnncomp2021/{acasxu,mnistfc}``, read in
place), the same per-instance time limit and the same harness:

* every (tool, instance) pair runs in a *forked child process* in its own process group, started from
  a parent that has already imported both tools (so neither pays import time per instance); the
  parent waits ``timeout + grace`` seconds and then kills the whole group — a hang can never stall the
  run;
* wall time is measured in the parent from fork to answer; CPU time is the child's (and its reaped
  descendants') user + system time from ``getrusage(RUSAGE_CHILDREN)``, which is what stays
  meaningful when the machine is shared;
* an answer that arrives after the instance's time limit counts as ``timeout`` (VNN-COMP rule).

``ours``
    :func:`verifier.queries.verify_vnnlib` with the dispatcher's default configuration (``backend="auto"``:
    CROWN quick check, sampling/PGD, then Gurobi or HiGHS in a killable child, replay of every
    counterexample) — exactly what ``distillcert vnncomp`` runs per instance.
``maraboupy``
    ``Marabou.read_onnx(onnx)`` then ``network.solve(propertyFilename=vnnlib, options=
    Marabou.createOptions(timeoutInSeconds=⌈timeout⌉, verbosity=0))`` — Marabou 2.0 parses the VNN-LIB
    file itself (its ``VnnLibParser``).  A ``sat`` answer's input is additionally replayed through
    onnxruntime against our parse of the property (column ``witness_ok``), for information only: its
    verdict is scored as Marabou reported it.

Scores per tool: solved (sat + unsat), wrong (a decided answer contradicting ``expected.csv``),
total and median time over all instances (undecided instances count their full time), and the time
ratio ``ours / peer`` per instance and in total.  Outputs: ``records.jsonl`` (one line per finished
pair; a rerun with the same ``--out`` resumes), ``results.csv``, ``summary.json``, ``summary.md``,
``cactus.png`` and ``scatter.png``.
"""

from __future__ import annotations

import contextlib
import json
import math
import multiprocessing as mp
import os
import platform
import resource
import signal
import statistics
import sys
import time
from collections.abc import Callable, Iterable, Sequence
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import Any

from encoders.errors import DataError
from encoders.progress import Progress

from . import common
from .common import md_table, write_csv, write_json

__all__ = [
    "Instance",
    "RunRecord",
    "SOLVERS",
    "default_root",
    "read_family",
    "quick_instances",
    "machine_info",
    "run_forked",
    "side_by_side",
    "score",
    "run",
]

#: harness grace period past an instance's time limit before the child group is killed
GRACE_S = 5.0


# ==================================================================================================
# machine / plot helpers (shared by benchmarks.solvers and benchmarks.perf)
# ==================================================================================================
def machine_info() -> dict[str, Any]:
    """:func:`benchmarks.common.machine_info` plus the solver versions (Gurobi, HiGHS, Marabou, Z3)."""
    info = common.machine_info()
    info["platform"] = platform.platform()
    versions: dict[str, str] = {}
    with contextlib.suppress(Exception):
        import gurobipy

        versions["gurobi"] = ".".join(str(v) for v in gurobipy.gurobi.version())
    with contextlib.suppress(Exception):
        import highspy

        h = highspy.Highs()
        versions["highs"] = f"{h.versionMajor()}.{h.versionMinor()}.{h.versionPatch()}"
    with contextlib.suppress(Exception):
        from importlib.metadata import version

        versions["maraboupy"] = version("maraboupy")
    with contextlib.suppress(Exception):
        import z3

        versions["z3"] = z3.get_version_string()
    with contextlib.suppress(Exception):
        import onnxruntime

        versions["onnxruntime"] = onnxruntime.__version__
    info["versions"] = versions
    return info


def machine_line(info: dict[str, Any]) -> str:
    """:func:`benchmarks.common.machine_line` plus the solver versions."""
    vers = ", ".join(f"{k} {v}" for k, v in info.get("versions", {}).items())
    return common.machine_line(info) + (f"; Python {info.get('python', '?')}; {vers}" if vers else "")


def cactus_plot(path: Path, times: dict[str, list[float]], title: str, limit: float | None = None) -> Path:
    """Solved instances (y) against the time needed for the k-th fastest solve (x), per solver."""
    fig = common.new_figure(6, 4)
    ax = fig.add_subplot(1, 1, 1)
    for name, ts in times.items():
        ts = sorted(max(t, 1e-3) for t in ts)
        if ts:
            ax.step(ts, range(1, len(ts) + 1), where="post", label=f"{name} ({len(ts)})")
        else:
            ax.plot([], [], label=f"{name} (0)")
    ax.set_xscale("log")
    ax.set_xlabel("time per instance (s, log scale)")
    ax.set_ylabel("instances solved")
    if limit:
        ax.axvline(limit, color="grey", ls=":", lw=1)
    ax.set_title(title, fontsize=9)
    ax.legend(loc="lower right", fontsize=8)
    ax.grid(alpha=0.3)
    return common.save_fig(fig, path)


# ==================================================================================================
# instances
# ==================================================================================================
@dataclass(frozen=True)
class Instance:
    """One VNN-COMP instance (paths point into the shared folder; nothing is copied)."""

    family: str
    onnx: Path
    vnnlib: Path
    timeout: float
    expected: str = ""  # "sat" | "unsat" | "" (unknown)

    @property
    def key(self) -> str:
        return f"{self.family}/{self.onnx.name}/{self.vnnlib.name}"


def default_root() -> Path:
    """``../shared/benchmarks/vnncomp2021`` beside the repository (``DISTILLCERT_SHARED`` overrides)."""
    env = os.environ.get("DISTILLCERT_SHARED", "")
    for c in (env, str(Path(__file__).resolve().parents[2] / "shared" / "benchmarks" / "vnncomp2021")):
        if c and (Path(c) / "acasxu").is_dir():
            return Path(c).resolve()
    raise DataError("vnncomp benchmark: ../shared/benchmarks/vnncomp2021 not found (set DISTILLCERT_SHARED)")


def deep_root() -> Path:
    """Where the ``deepmlp`` family is built (:mod:`benchmarks.deep_mlps`) on first use:
    ``$DISTILLCERT_DEEPMLP`` or ``~/.cache/distillcert/deep_mlps``."""
    env = os.environ.get("DISTILLCERT_DEEPMLP", "")
    return Path(env) if env else Path.home() / ".cache" / "distillcert" / "deep_mlps"


def _family_files(root: Path, family: str) -> tuple[Path, str, str]:
    """``(folder, instances file, expected file)`` of a family (:data:`FAMILIES`)."""
    if family == "deepmlp":
        from .deep_mlps import ensure

        return ensure(deep_root()), "instances.csv", "expected.csv"
    if family == "mnistfc256x4":
        return root / "mnistfc", "instances_256x4.csv", "expected_256x4.csv"
    return root / family, "instances.csv", "expected.csv"


#: benchmark families: the two VNN-COMP 2021 sets, mnistfc's 256x4 network (its own CSVs), and our deep
#: MLPs (:mod:`benchmarks.deep_mlps`, built on first use)
FAMILIES = ("acasxu", "mnistfc", "mnistfc256x4", "deepmlp")


def read_family(root: Path, family: str) -> list[Instance]:
    """The family's ``instances.csv`` (``onnx,vnnlib,timeout``, no header) joined with its
    ``expected.csv`` (:func:`_family_files`)."""
    from verifier.vnncomp import read_expected, read_instances

    folder, inst_name, exp_name = _family_files(root, family)
    rows = read_instances(folder / inst_name)
    exp = read_expected(folder / exp_name) if (folder / exp_name).exists() else {}
    out = []
    for onnx, vnn, t in rows:
        op, vp = folder / onnx, folder / vnn
        for p in (op, vp):
            if not p.exists():
                raise DataError(f"{folder / inst_name}: instance file {p} does not exist")
        out.append(Instance(family, op, vp, float(t), exp.get((op.name, vp.name), "")))
    return out


#: quick-mode instances: an easy unsat (prop 1), a falsifiable one (prop 2), prop 4 and prop 3
QUICK_ACAS: tuple[tuple[str, str], ...] = (
    ("ACASXU_run2a_1_1_batch_2000.onnx", "prop_1.vnnlib"),
    ("ACASXU_run2a_2_1_batch_2000.onnx", "prop_2.vnnlib"),
    ("ACASXU_run2a_1_1_batch_2000.onnx", "prop_4.vnnlib"),
    ("ACASXU_run2a_1_1_batch_2000.onnx", "prop_3.vnnlib"),
)


#: quick-mode instances of the other families: the first ``n`` of each network, at most this many seconds
QUICK_PER_NETWORK = 2
QUICK_TIMEOUT_DEEP = 30.0


def quick_instances(root: Path, n: int = 3, family: str = "acasxu") -> list[Instance]:
    """ACAS Xu: the first ``n`` of :data:`QUICK_ACAS` (one property each).  Other families: the first
    :data:`QUICK_PER_NETWORK` instances of each network, time limit capped at :data:`QUICK_TIMEOUT_DEEP`."""
    if family != "acasxu":
        seen: dict[str, int] = {}
        out = []
        for i in read_family(root, family):
            seen[i.onnx.name] = seen.get(i.onnx.name, 0) + 1
            if seen[i.onnx.name] <= QUICK_PER_NETWORK:
                out.append(
                    Instance(i.family, i.onnx, i.vnnlib, min(i.timeout, QUICK_TIMEOUT_DEEP), i.expected)
                )
        return out
    insts = {(i.onnx.name, i.vnnlib.name): i for i in read_family(root, "acasxu")}
    return [insts[k] for k in QUICK_ACAS[:n] if k in insts]


# ==================================================================================================
# the two tools
# ==================================================================================================
def _ours(inst: Instance, timeout: float) -> dict[str, Any]:
    from verifier.dispatch import DispatchConfig
    from verifier.queries import verify_vnnlib

    r = verify_vnnlib(inst.onnx, inst.vnnlib, DispatchConfig(timeout=timeout))
    return {"result": r.verdict.vnncomp, "detail": f"{r.backend}: {r.message}"[:300], "witness_ok": ""}


def _marabou(inst: Instance, timeout: float) -> dict[str, Any]:
    import numpy as np
    from maraboupy import Marabou

    net = Marabou.read_onnx(str(inst.onnx))
    opts = Marabou.createOptions(timeoutInSeconds=int(math.ceil(timeout)), verbosity=0)
    code, vals, stats = net.solve(propertyFilename=str(inst.vnnlib), options=opts, verbose=False)
    code = str(code).strip().lower()
    result = {"sat": "sat", "unsat": "unsat", "timeout": "timeout"}.get(code, "unknown" if code else "error")
    if stats is not None and hasattr(stats, "hasTimedOut") and stats.hasTimedOut():
        result = "timeout"
    witness = ""
    if result == "sat" and vals:
        x = np.array([vals[v] for v in np.asarray(net.inputVars[0]).reshape(-1)], dtype=np.float64)
        witness = "yes" if _witness_replays(inst, x) else "no"
    return {"result": result, "detail": f"marabou exit code {code!r}", "witness_ok": witness}


def _witness_replays(inst: Instance, x: Any) -> bool:
    """Does ``x`` (Marabou's input assignment) violate the property on onnxruntime's outputs?"""
    from encoders.network import load_onnx
    from verifier.queries import vnnlib_properties
    from verifier.replay import replay

    net = load_onnx(inst.onnx)
    for prop in vnnlib_properties(inst.vnnlib, net):
        tol = 1e-6
        inside = bool((x >= prop.lo - tol).all() and (x <= prop.hi + tol).all())
        if inside and replay(prop, {"net": net}, {"net": x}).ok:
            return True
    return False


def vibecheck_command() -> str | None:
    """The ``vibecheck`` CLI (``vibecheck-nn`` 1.1.0): ``$DISTILLCERT_VIBECHECK`` or on ``PATH``.

    It pins onnx/onnxruntime versions and depends on torch, so it is not a dependency of this project:
    install it into a venv that sees the system packages, without its dependencies (keeps torch)::

        python -m venv --system-site-packages /opt/vcenv
        /opt/vcenv/bin/pip install --no-deps vibecheck-nn==1.1.0 onnx2torch onnxsim
        export DISTILLCERT_VIBECHECK=/opt/vcenv/bin/vibecheck
    """
    import shutil

    env = os.environ.get("DISTILLCERT_VIBECHECK", "")
    return env if env and Path(env).exists() else shutil.which("vibecheck")


def _vibecheck(inst: Instance, timeout: float) -> dict[str, Any]:
    """``vibecheck --net ONNX --spec VNNLIB --timeout T --device cpu --results-file F`` (one thread).

    Its start-up (python + torch + onnx2torch conversion) is part of its time, as for a user.  The
    verdict is the results file's first word; a ``sat`` witness is not re-checked here."""
    import subprocess
    import tempfile

    cmd = vibecheck_command()
    if cmd is None:
        raise RuntimeError("vibecheck not found (set DISTILLCERT_VIBECHECK; see vibecheck_command)")
    with tempfile.TemporaryDirectory() as tmp:
        res = Path(tmp) / "result.txt"
        env = dict(os.environ, OMP_NUM_THREADS="1", MKL_NUM_THREADS="1")
        proc = subprocess.run(
            [
                cmd,
                "--net",
                str(inst.onnx),
                "--spec",
                str(inst.vnnlib),
                "--timeout",
                f"{timeout:g}",
                "--device",
                "cpu",
                "--results-file",
                str(res),
            ],
            capture_output=True,
            text=True,
            env=env,
            timeout=timeout + GRACE_S,
            check=False,
        )
        word = res.read_text().split()[0].strip().lower() if res.exists() and res.read_text().strip() else ""
    result = {"sat": "sat", "unsat": "unsat", "timeout": "timeout", "timed-out": "timeout"}.get(
        word, "unknown" if word else "error"
    )
    tail = (proc.stdout or proc.stderr or "").strip().splitlines()[-1:] or [""]
    return {"result": result, "detail": f"vibecheck {word!r}: {tail[0][:200]}", "witness_ok": ""}


#: tool name -> function(instance, timeout) -> {"result", "detail", "witness_ok"}; run in a child
SOLVERS: dict[str, Callable[[Instance, float], dict[str, Any]]] = {
    "ours": _ours,
    "maraboupy": _marabou,
    "vibecheck": _vibecheck,
}


def _preimport(tools: Iterable[str]) -> None:
    """Import each tool once in the parent, so forked children start warm (fair to both)."""
    import verifier.queries  # noqa: F401
    import verifier.replay  # noqa: F401

    if "maraboupy" in tools:
        import warnings

        with warnings.catch_warnings():
            warnings.simplefilter("ignore")
            from maraboupy import Marabou  # noqa: F401


# ==================================================================================================
# forked, killable, timed execution
# ==================================================================================================
@dataclass(frozen=True)
class RunRecord:
    """One (tool, query) run as the harness saw it."""

    solver: str
    key: str
    result: str  # sat | unsat | timeout | unknown | error
    wall_s: float
    cpu_s: float
    timeout: float
    expected: str = ""
    detail: str = ""
    witness_ok: str = ""
    extra: dict[str, Any] = field(default_factory=dict)

    @property
    def decided(self) -> bool:
        return self.result in ("sat", "unsat")

    @property
    def wrong(self) -> bool:
        return self.decided and self.expected in ("sat", "unsat") and self.result != self.expected

    def to_json(self) -> dict[str, Any]:
        return asdict(self)


def _child_main(conn: Any, fn: Callable[[], Any], quiet: bool) -> None:
    with contextlib.suppress(OSError):
        os.setpgid(0, 0)  # own process group: the parent can kill us and our solver children at once
    if quiet:
        with contextlib.suppress(OSError):
            devnull = os.open(os.devnull, os.O_WRONLY)
            os.dup2(devnull, 1)
            os.dup2(devnull, 2)
    try:
        payload: Any = ("ok", fn())
    except BaseException as exc:  # report, never hang the parent
        payload = ("error", f"{type(exc).__name__}: {exc}"[:500])
    with contextlib.suppress(Exception):
        conn.send(payload)
    conn.close()
    os._exit(0)


def run_forked(
    fn: Callable[[], Any], hard_timeout: float, quiet: bool = True
) -> tuple[str, Any, float, float]:
    """Run ``fn()`` in a forked child; kill its process group after ``hard_timeout`` seconds.

    Returns
    -------
    (status, value, wall_s, cpu_s)
        ``status`` is ``"ok"`` (``value`` = the return value), ``"error"`` (``value`` = message),
        ``"killed"`` (hard timeout) or ``"died"`` (the child exited without answering).
    """
    ctx = mp.get_context("fork")
    recv, send = ctx.Pipe(duplex=False)
    ru0 = resource.getrusage(resource.RUSAGE_CHILDREN)
    t0 = time.perf_counter()
    proc = ctx.Process(target=_child_main, args=(send, fn, quiet), daemon=False)
    proc.start()
    send.close()
    status: str
    value: Any = None
    try:
        if recv.poll(hard_timeout):
            try:
                status, value = recv.recv()
            except (EOFError, OSError):
                status, value = "died", "child exited without an answer"
        else:
            status, value = "killed", f"hard time limit {hard_timeout:.0f}s"
    finally:
        wall = time.perf_counter() - t0
        if status == "killed" or proc.is_alive():
            with contextlib.suppress(ProcessLookupError, PermissionError):
                os.killpg(proc.pid, signal.SIGKILL)
            with contextlib.suppress(ProcessLookupError, PermissionError):
                os.kill(proc.pid, signal.SIGKILL)  # in case it had not yet left our process group
        proc.join(10.0)
        recv.close()
    ru1 = resource.getrusage(resource.RUSAGE_CHILDREN)
    cpu = (ru1.ru_utime - ru0.ru_utime) + (ru1.ru_stime - ru0.ru_stime)
    return status, value, wall, cpu


def run_instance(solver: str, inst: Instance, timeout: float | None = None) -> RunRecord:
    """One (tool, instance) pair under the harness rules (module docstring)."""
    t = float(timeout if timeout is not None else inst.timeout)
    fn = SOLVERS[solver]
    status, value, wall, cpu = run_forked(lambda: fn(inst, t), t + GRACE_S)
    if status == "ok":
        result, detail, wit = value["result"], value["detail"], value.get("witness_ok", "")
    elif status == "killed":
        result, detail, wit = "timeout", str(value), ""
    else:
        result, detail, wit = "error", str(value), ""
    if result in ("sat", "unsat") and wall > t:
        result, detail = "timeout", f"answered {result} after {wall:.1f}s > limit {t:.0f}s ({detail})"
    return RunRecord(solver, inst.key, result, wall, cpu, t, inst.expected, detail, wit)


# ==================================================================================================
# running and scoring
# ==================================================================================================
def load_records(path: Path) -> dict[tuple[str, str, float], RunRecord]:
    done: dict[tuple[str, str, float], RunRecord] = {}
    if path.exists():
        for line in path.read_text().splitlines():
            with contextlib.suppress(ValueError, TypeError, KeyError):
                rec = RunRecord(**json.loads(line))
                done[(rec.solver, rec.key, rec.timeout)] = rec
    return done


def side_by_side(
    instances: Sequence[Instance],
    solvers: Sequence[str],
    out: Path,
    timeout: float | None = None,
    progress: bool = True,
) -> list[RunRecord]:
    """Run every solver on every instance, interleaved per instance (same machine state for both).

    Finished pairs are appended to ``out/records.jsonl`` (fsync'ed) and skipped on a rerun.
    """
    _preimport(solvers)
    jpath = out / "records.jsonl"
    done = load_records(jpath)
    records: list[RunRecord] = []
    bar = Progress(
        total=len(instances) * len(solvers), desc="vnncomp side by side", unit="run", enabled=progress
    )
    with open(jpath, "a") as jf:
        for inst in instances:
            for s in solvers:
                t = float(timeout if timeout is not None else inst.timeout)
                rec = done.get((s, inst.key, t))
                if rec is None:
                    rec = run_instance(s, inst, t)
                    jf.write(json.dumps(rec.to_json()) + "\n")
                    jf.flush()
                    os.fsync(jf.fileno())
                records.append(rec)
                bar.update(1)
                bar.set_postfix(last=f"{inst.onnx.stem[6:16]} {inst.vnnlib.stem} {s}={rec.result}")
    bar.close()
    return records


def score(records: Sequence[RunRecord]) -> dict[str, dict[str, Any]]:
    """Per solver: instances, solved, sat, unsat, wrong, total/median wall and CPU time."""
    out: dict[str, dict[str, Any]] = {}
    for s in dict.fromkeys(r.solver for r in records):
        rs = [r for r in records if r.solver == s]
        out[s] = {
            "instances": len(rs),
            "solved": sum(r.decided for r in rs),
            "sat": sum(r.result == "sat" for r in rs),
            "unsat": sum(r.result == "unsat" for r in rs),
            "timeout": sum(r.result == "timeout" for r in rs),
            "other": sum(r.result in ("unknown", "error") for r in rs),
            "wrong": sum(r.wrong for r in rs),
            "wrong_keys": [r.key for r in rs if r.wrong],
            "total_wall_s": round(sum(r.wall_s for r in rs), 2),
            "total_cpu_s": round(sum(r.cpu_s for r in rs), 2),
            "solved_wall_s": round(sum(r.wall_s for r in rs if r.decided), 2),
            "median_wall_s": round(statistics.median([r.wall_s for r in rs]), 3) if rs else float("nan"),
            "par2_s": round(sum(r.wall_s if r.decided else 2 * r.timeout for r in rs), 2),
        }
    return out


def ratios(records: Sequence[RunRecord], ours: str = "ours", peer: str = "maraboupy") -> list[dict[str, Any]]:
    """Per instance: both results and the wall/CPU time ratio ours/peer."""
    by: dict[str, dict[str, RunRecord]] = {}
    for r in records:
        by.setdefault(r.key, {})[r.solver] = r
    rows = []
    for key, d in by.items():
        a, b = d.get(ours), d.get(peer)
        row: dict[str, Any] = {"instance": key, "expected": (a or b).expected if (a or b) else ""}
        if a:
            row.update({f"{ours}_result": a.result, f"{ours}_wall_s": a.wall_s, f"{ours}_cpu_s": a.cpu_s})
        if b:
            row.update(
                {
                    f"{peer}_result": b.result,
                    f"{peer}_wall_s": b.wall_s,
                    f"{peer}_cpu_s": b.cpu_s,
                    f"{peer}_witness_ok": b.witness_ok,
                }
            )
        if a and b:
            row["ratio_wall"] = a.wall_s / b.wall_s if b.wall_s > 0 else float("nan")
            row["ratio_cpu"] = a.cpu_s / b.cpu_s if b.cpu_s > 0 else float("nan")
        rows.append(row)
    return rows


def _scatter(path: Path, rows: list[dict[str, Any]], ours: str, peer: str, limit: float) -> Path:
    fig = common.new_figure(5, 5)
    ax = fig.add_subplot(1, 1, 1)
    pts = [
        (r[f"{peer}_wall_s"], r[f"{ours}_wall_s"], r.get(f"{ours}_result"), r.get(f"{peer}_result"))
        for r in rows
        if f"{ours}_wall_s" in r and f"{peer}_wall_s" in r
    ]
    lo = max(1e-2, min([min(p[0], p[1]) for p in pts], default=0.1) * 0.8)
    hi = max([max(p[0], p[1]) for p in pts], default=limit) * 1.2
    for x, y, ra, rb in pts:
        both = ra in ("sat", "unsat") and rb in ("sat", "unsat")
        ax.scatter(x, y, s=14, c="tab:blue" if both else "tab:red", marker="o" if ra == "unsat" else "x")
    ax.plot([lo, hi], [lo, hi], color="grey", lw=1)
    ax.plot([lo, hi], [lo / 3, hi / 3], color="grey", lw=1, ls="--", label="3× faster")
    ax.set_xscale("log")
    ax.set_yscale("log")
    ax.set_xlim(lo, hi)
    ax.set_ylim(lo, hi)
    ax.set_xlabel(f"{peer} wall time (s)")
    ax.set_ylabel(f"{ours} wall time (s)")
    ax.set_title("per instance (o: ours unsat, x: other; red: not decided by both)", fontsize=8)
    ax.legend(fontsize=8)
    ax.grid(alpha=0.3)
    return common.save_fig(fig, path)


def report(
    records: Sequence[RunRecord],
    out: Path,
    machine: dict[str, Any],
    title: str,
    ours: str = "ours",
    peer: str = "maraboupy",
) -> dict[str, Any]:
    """Write results.csv, ratios.csv, summary.json/.md, cactus.png, scatter.png; return the summary."""
    sc = score(records)
    cols = ["solver", "key", "expected", "result", "wall_s", "cpu_s", "timeout", "witness_ok", "detail"]
    write_csv(out / "results.csv", [r.to_json() for r in records], cols)
    rrows = ratios(records, ours, peer)
    write_csv(
        out / "ratios.csv", rrows, sorted({k for r in rrows for k in r}, key=lambda k: (k != "instance", k))
    )
    limit = max((r.timeout for r in records), default=None)
    cactus_plot(
        out / "cactus.png",
        {s: [r.wall_s for r in records if r.solver == s and r.decided] for s in sc},
        title,
        limit,
    )
    plots = ["cactus.png"]
    if ours in sc and peer in sc:
        _scatter(out / "scatter.png", rrows, ours, peer, limit or 100.0)
        plots.append("scatter.png")
    summary: dict[str, Any] = {"benchmark": title, "machine": machine, "scores": sc, "plots": plots}
    if ours in sc and peer in sc:
        both = [r for r in rrows if "ratio_wall" in r]
        tw_a = sum(r[f"{ours}_wall_s"] for r in both)
        tw_b = sum(r[f"{peer}_wall_s"] for r in both)
        tc_a = sum(r[f"{ours}_cpu_s"] for r in both)
        tc_b = sum(r[f"{peer}_cpu_s"] for r in both)
        summary["total_ratio_wall"] = round(tw_a / tw_b, 4) if tw_b else float("nan")
        summary["total_ratio_cpu"] = round(tc_a / tc_b, 4) if tc_b else float("nan")
        summary["speedup_wall"] = round(tw_b / tw_a, 3) if tw_a else float("nan")
        per = [r["ratio_wall"] for r in both if math.isfinite(r["ratio_wall"]) and r["ratio_wall"] > 0]
        summary["median_ratio_wall"] = round(statistics.median(per), 4) if per else float("nan")
        summary["geomean_ratio_wall"] = (
            round(math.exp(statistics.fmean(math.log(x) for x in per)), 4) if per else float("nan")
        )
    summary["text"] = _render(summary, ours, peer)
    common.write_text(out / "summary.md", summary["text"] + "\n")
    write_json(out / "summary.json", {k: v for k, v in summary.items() if k != "text"})
    return summary


def _render(s: dict[str, Any], ours: str, peer: str) -> str:
    lines = [f"# {s['benchmark']}", "", f"Machine: {machine_line(s['machine'])}", ""]
    hdr = [
        "tool",
        "instances",
        "solved",
        "sat",
        "unsat",
        "timeout",
        "unknown/error",
        "wrong",
        "total wall s",
        "total CPU s",
        "median s",
        "PAR-2 s",
    ]
    lines.append(
        md_table(
            hdr,
            [
                [
                    n,
                    v["instances"],
                    v["solved"],
                    v["sat"],
                    v["unsat"],
                    v["timeout"],
                    v["other"],
                    v["wrong"],
                    v["total_wall_s"],
                    v["total_cpu_s"],
                    v["median_wall_s"],
                    v["par2_s"],
                ]
                for n, v in s["scores"].items()
            ],
        )
    )
    if "total_ratio_wall" in s:
        lines += [
            "",
            f"Time ratio {ours}/{peer}: total wall {s['total_ratio_wall']:.3f} "
            f"(speed-up {s['speedup_wall']:.2f}×), total CPU {s['total_ratio_cpu']:.3f}, "
            f"per-instance median {s['median_ratio_wall']:.3f}, "
            f"geometric mean {s['geomean_ratio_wall']:.3f}.",
        ]
    for n, v in s["scores"].items():
        if v["wrong"]:
            lines.append(f"\n**WRONG ({n})**: " + ", ".join(v["wrong_keys"]))
    lines += ["", "Plots: " + ", ".join(s["plots"])]
    return "\n".join(lines)


# ==================================================================================================
# entry point
# ==================================================================================================
def run(
    quick: bool,
    out: Path,
    seed: int = 0,
    families: Sequence[str] | None = None,
    solvers: Sequence[str] = ("ours", "maraboupy"),
    timeout: float | None = None,
    root: Path | None = None,
    progress: bool = True,
    stride: int = 1,
) -> dict[str, Any]:
    """Quick: 3 ACAS Xu instances (:data:`QUICK_ACAS`) at 10 s, or with ``families`` given, each
    family's quick subset (:func:`quick_instances`).  Full: every instance of ``families`` (default
    ``acasxu``, ``mnistfc``) at its own time limit (with ``stride`` k > 1: every k-th instance of each
    family's ``instances.csv``, a deterministic subset).  ``seed`` is unused (the tools are
    deterministic)."""
    out = Path(out)
    out.mkdir(parents=True, exist_ok=True)
    root = root or default_root()
    machine = machine_info()
    if quick and not families:
        insts = quick_instances(root, 3)
        timeout = timeout or 10.0
    elif quick:
        insts = [i for f in families for i in quick_instances(root, 3, f)]
    else:
        fams = families or ("acasxu", "mnistfc")
        insts = [i for f in fams for i in read_family(root, f)[:: max(1, int(stride))]]
    records = side_by_side(insts, solvers, out, timeout, progress)
    machine["loadavg_end"] = [round(x, 2) for x in os.getloadavg()]
    title = "vnncomp: " + " vs ".join(solvers) + (" (quick)" if quick else "")
    peer = next((t for t in solvers if t != "ours"), "maraboupy")
    summary = report(records, out, machine, title, peer=peer)
    fams = sorted({r.key.split("/")[0] for r in records})
    if len(fams) > 1:  # per-family tables too
        per = {}
        for f in fams:
            sub = out / f
            sub.mkdir(exist_ok=True)
            per[f] = report(
                [r for r in records if r.key.startswith(f + "/")], sub, machine, f"{title}: {f}", peer=peer
            )
            per[f].pop("text", None)
        summary["families"] = per
        write_json(out / "summary.json", {k: v for k, v in summary.items() if k != "text"})
    return summary


def main(argv: Sequence[str] | None = None) -> int:
    """``python -m benchmarks.vnncomp_bench [--families F ...] [--stride K] [--timeout S] --out DIR``."""
    import argparse

    ap = argparse.ArgumentParser(
        prog="python -m benchmarks.vnncomp_bench", description=__doc__.split("\n")[0]
    )
    ap.add_argument("--out", required=True, help="output folder (records.jsonl there is resumed)")
    ap.add_argument(
        "--families", nargs="+", default=None, choices=list(FAMILIES), help="default: acasxu mnistfc"
    )
    ap.add_argument("--solvers", nargs="+", default=["ours", "maraboupy"], choices=list(SOLVERS))
    ap.add_argument(
        "--stride", type=int, default=1, help="every k-th instance of each family (default 1: all)"
    )
    ap.add_argument("--timeout", type=float, default=None, help="override every instance's time limit")
    ap.add_argument("--quick", action="store_true")
    a = ap.parse_args(argv)
    s = run(a.quick, Path(a.out), families=a.families, solvers=a.solvers, timeout=a.timeout, stride=a.stride)
    print(s.get("text", ""))
    return 0


if __name__ == "__main__":
    sys.exit(main())
