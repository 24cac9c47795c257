"""Faults: killed and hanging solver processes, portfolio races, Ctrl-C during ``vnncomp``, fuzzed files.

* A solver child SIGKILLed mid-query → ERROR for that query; a batch (:func:`verify_many`) still
  answers every other query.
* A solver that never returns → TIMEOUT at the hard limit, and the child is really gone.
* ``portfolio`` returns the first definitive answer and kills the other racers.
* ``distillcert vnncomp`` interrupted by SIGINT → the journal holds every finished instance, the
  results CSV is complete (never a torn row), and a rerun resumes without redoing them.
* Fuzzing: mutated bytes of a real ONNX file through :func:`encoders.network.load_onnx`, mutated
  VNN-LIB text through :func:`encoders.vnnlib.parse_vnnlib_text` — only the typed errors escape.

Fake backends are registered in ``verifier.backends.base.BACKENDS`` as ``"test_faults:Class"``; the
dispatcher forks its solver children, so they inherit the registration and :data:`STATE`.
"""

from __future__ import annotations

import contextlib
import csv
import json
import os
import signal
import subprocess
import sys
import tempfile
import textwrap
import time
from pathlib import Path
from typing import Any

import numpy as np
import oracle as O
import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from encoders.errors import InputError, SpecError
from encoders.network import load_onnx, save_onnx
from encoders.program import Kind, Program
from encoders.properties import LocalRobustness, OutputDNFProperty
from verifier import dispatch
from verifier.backends import base
from verifier.backends.solve import SolveGroup
from verifier.dispatch import DispatchConfig, Task, solve_isolated, solve_portfolio, verify, verify_many
from verifier.results import Outcome, SolveStatus, Verdict

STATE: dict[str, Any] = {}
KILL_EPS = 0.0123456  # a query with this radius kills its solver process


def _pid_file(name: str) -> Path:
    return Path(STATE["piddir"]) / f"{name}.pid"


class _Fake:
    name = "fake"
    capabilities = frozenset({Kind.LINEAR, Kind.RELU, Kind.DISJUNCTION, Kind.QUADRATIC, Kind.OBJECTIVE})

    def version(self) -> str:
        return "0.0-test"

    def unsupported(self, program: Program) -> list[str]:
        return []


class KillBackend(_Fake):
    name = "fake_kill"

    def solve(self, program: Program, timeout: float, threads: int = 1) -> Outcome:
        os.kill(os.getpid(), signal.SIGKILL)
        time.sleep(60)  # pragma: no cover
        raise AssertionError("not reached")


class HangBackend(_Fake):
    name = "fake_hang"

    def solve(self, program: Program, timeout: float, threads: int = 1) -> Outcome:
        tmp = _pid_file(self.name).with_suffix(".tmp")  # atomic: the test may kill us right after
        tmp.write_text(str(os.getpid()))
        os.replace(tmp, _pid_file(self.name))  # the file exists only with the whole pid in it
        while True:  # ignores its own time limit
            time.sleep(1000)


class HangBackend2(HangBackend):
    name = "fake_hang2"


class RaiseBackend(_Fake):
    name = "fake_raise"

    def solve(self, program: Program, timeout: float, threads: int = 1) -> Outcome:
        raise RuntimeError("segfault-like failure inside the solver wrapper")


class UnsatBackend(_Fake):
    name = "fake_unsat"

    def solve(self, program: Program, timeout: float, threads: int = 1) -> Outcome:
        time.sleep(0.2)
        return Outcome(SolveStatus.UNSAT, self.name, 0.2)


class SelectiveKillBackend(_Fake):
    """HiGHS, except that a query with radius ``KILL_EPS`` SIGKILLs its own process."""

    name = "fake_selective"
    capabilities = frozenset({Kind.LINEAR, Kind.RELU, Kind.DISJUNCTION, Kind.OBJECTIVE})

    def solve(self, program: Program, timeout: float, threads: int = 1) -> Outcome:
        if program.meta.get("eps") == KILL_EPS:
            os.kill(os.getpid(), signal.SIGKILL)
        from verifier.backends.highs import HighsBackend

        return HighsBackend().solve(program, timeout, threads)


FAKES = (KillBackend, HangBackend, HangBackend2, RaiseBackend, UnsatBackend, SelectiveKillBackend)


@pytest.fixture
def fakes(monkeypatch: pytest.MonkeyPatch, tmp_path: Path) -> None:
    for cls in FAKES:
        monkeypatch.setitem(base.BACKENDS, cls.name, f"{__name__}:{cls.__name__}")
    monkeypatch.setattr(dispatch, "BACKEND_CHOICES", (*dispatch.BACKEND_CHOICES, *(c.name for c in FAKES)))
    STATE.clear()
    STATE["piddir"] = str(tmp_path)
    yield
    STATE.clear()


def _dead(pid: int) -> bool:
    """True when the process is gone (or a zombie: it has exited but nobody reaped it yet)."""
    try:
        with open(f"/proc/{pid}/stat") as fh:
            state = fh.read().rsplit(")", 1)[1].split()[0]
    except FileNotFoundError:
        return True
    except OSError:
        try:
            os.kill(pid, 0)
        except ProcessLookupError:
            return True
        return False
    return state in ("Z", "X")


def _wait_dead(pid: int, seconds: float = 5.0) -> bool:
    end = time.monotonic() + seconds
    while time.monotonic() < end:
        if _dead(pid):
            return True
        time.sleep(0.05)
    return _dead(pid)


@pytest.fixture(scope="module")
def holding_case(tmp_path_factory: pytest.TempPathFactory):
    """A local-robustness query that holds (oracle) on a small network with an ONNX file."""
    case = O.gen_local(41, "inf", want=False, max_total=8)
    net = load_onnx(save_onnx(list(case.weights), tmp_path_factory.mktemp("faults") / "net.onnx"))
    return case, net


def _prop(case: O.LocalCase, eps: float | None = None) -> LocalRobustness:
    radius = case.eps if eps is None else eps
    return LocalRobustness(case.x0, radius, case.label, "inf", case.dom_lo, case.dom_hi)


def _cfg(backend: str, timeout: float = 60.0, **kw: Any) -> DispatchConfig:
    return DispatchConfig(backend=backend, quick_check=False, samples=0, timeout=timeout, **kw)


# ------------------------------------------------------------------------------------------------
# killed / hanging / raising solver processes
# ------------------------------------------------------------------------------------------------
def test_sigkilled_solver_is_an_error_for_that_query(fakes, holding_case) -> None:
    case, net = holding_case
    res = verify(_prop(case), {"net": net}, _cfg("fake_kill"))
    assert res.verdict is Verdict.ERROR, res
    assert "signal 9" in res.message or "SIGKILL" in res.message, res.message


def test_raising_solver_is_an_error(fakes, holding_case) -> None:
    case, net = holding_case
    res = verify(_prop(case), {"net": net}, _cfg("fake_raise"))
    assert res.verdict is Verdict.ERROR and "RuntimeError" in res.message, res


def test_hanging_solver_hits_the_hard_time_limit(fakes, holding_case) -> None:
    case, net = holding_case
    t0 = time.monotonic()
    res = verify(_prop(case), {"net": net}, _cfg("fake_hang", timeout=1.0))
    elapsed = time.monotonic() - t0
    assert res.verdict is Verdict.TIMEOUT, res
    assert elapsed < 30.0  # 1 s limit + the dispatcher's grace, far below
    pid = int(_pid_file("fake_hang").read_text())
    assert _wait_dead(pid), f"solver child {pid} still running after the hard timeout"


@pytest.mark.parametrize("jobs", [1, 2])
def test_batch_completes_around_a_killed_query(fakes, holding_case, jobs: int) -> None:
    case, net = holding_case
    small = case.eps / 2  # still holds: a sub-box of a robust box
    tasks = [Task("before", _prop(case), {"net": net}),
             Task("killed", _prop(case, KILL_EPS), {"net": net}),
             Task("after", _prop(case, small), {"net": net})]
    seen: list[str] = []
    out = verify_many(tasks, _cfg("fake_selective"), jobs=jobs, on_result=lambda k, r: seen.append(k))
    assert set(out) == {"before", "killed", "after"} and sorted(seen) == sorted(out)
    assert out["killed"].verdict is Verdict.ERROR, out["killed"]
    assert out["before"].verdict is Verdict.VERIFIED, out["before"]
    assert out["after"].verdict is Verdict.VERIFIED, out["after"]


# ------------------------------------------------------------------------------------------------
# portfolio
# ------------------------------------------------------------------------------------------------
def _tiny_program() -> Program:
    p = Program()
    x = p.add_vars("x", [0.0], [1.0])
    p.add_row(x, [1.0], ">=", 2.0)  # infeasible
    return p


def test_portfolio_first_definitive_answer_wins_and_the_rest_are_killed(fakes) -> None:
    t0 = time.monotonic()
    out = solve_portfolio(["fake_hang", "fake_unsat"], _tiny_program(), timeout=120.0)
    assert out.status is SolveStatus.UNSAT and out.backend == "fake_unsat", out
    assert time.monotonic() - t0 < 30.0  # did not wait for the hanging racer
    deadline = time.monotonic() + 10
    while not _pid_file("fake_hang").exists() and time.monotonic() < deadline:
        time.sleep(0.05)
    if _pid_file("fake_hang").exists():  # it may have been killed before it wrote its pid
        assert _wait_dead(int(_pid_file("fake_hang").read_text()))


def test_portfolio_survives_a_crashing_racer(fakes) -> None:
    out = solve_portfolio(["fake_kill", "fake_raise", "fake_unsat"], _tiny_program(), timeout=60.0)
    assert out.status is SolveStatus.UNSAT, out


def test_portfolio_all_hanging_is_a_timeout_and_kills_all(fakes) -> None:
    out = solve_portfolio(["fake_hang", "fake_hang2"], _tiny_program(), timeout=1.0)
    assert out.status is SolveStatus.TIMEOUT, out
    for name in ("fake_hang", "fake_hang2"):
        f = _pid_file(name)
        if f.exists():
            assert _wait_dead(int(f.read_text())), name


def test_portfolio_all_crashing_is_an_error(fakes) -> None:
    out = solve_portfolio(["fake_kill", "fake_raise"], _tiny_program(), timeout=30.0)
    assert out.status is SolveStatus.ERROR, out


def _wait_pid_file(name: str, seconds: float = 10.0) -> int:
    deadline = time.monotonic() + seconds
    while not _pid_file(name).exists() and time.monotonic() < deadline:
        time.sleep(0.05)
    return int(_pid_file(name).read_text())


def test_solve_group_returns_each_answer_while_a_hanging_child_runs_and_kills_it_on_exit(fakes) -> None:
    with SolveGroup() as group:
        hang = group.start("fake_hang", _tiny_program(), timeout=120.0, tag="h")
        fast = group.start("fake_unsat", _tiny_program(), timeout=120.0, tag="u")
        done = group.wait(until=time.perf_counter() + 30.0)
        assert [job.tag for job in done] == ["u"] and fast.outcome is not None
        assert fast.outcome.status is SolveStatus.UNSAT
        assert group.wait(until=time.perf_counter() + 0.2) == []  # returns at `until`, nothing done
        assert hang.outcome is None and group.running == [hang]
        pid = _wait_pid_file("fake_hang")
    assert _wait_dead(pid)  # the block's end killed the child that was still running


def test_solve_group_kills_a_child_at_its_hard_limit_and_cancel_kills_at_once(fakes) -> None:
    with SolveGroup(grace=0.2) as group:
        job = group.start("fake_hang", _tiny_program(), timeout=0.5)
        other = group.start("fake_hang2", _tiny_program(), timeout=120.0)
        t0 = time.monotonic()
        done = group.wait()
        assert done == [job] and time.monotonic() - t0 < 10.0
        assert job.outcome is not None and job.outcome.status is SolveStatus.TIMEOUT
        assert "hard time limit" in job.outcome.message
        pid = _wait_pid_file("fake_hang2")
        group.cancel(other)
        assert _wait_dead(pid) and group.jobs == []


def test_verify_portfolio_with_a_real_backend_and_a_hanging_one(fakes, holding_case) -> None:
    case, net = holding_case
    cfg = _cfg("portfolio", portfolio=("highs", "fake_hang"))
    res = verify(_prop(case), {"net": net}, cfg)
    assert res.verdict is Verdict.VERIFIED and res.backend == "highs", res
    f = _pid_file("fake_hang")
    if f.exists():
        assert _wait_dead(int(f.read_text()))


def test_solve_isolated_direct_kill_and_hang(fakes) -> None:
    out = solve_isolated("fake_kill", _tiny_program(), timeout=30.0)
    assert out.status is SolveStatus.ERROR and "died" in out.message, out
    out = solve_isolated("fake_hang", _tiny_program(), timeout=0.5, grace=0.5)
    assert out.status is SolveStatus.TIMEOUT, out
    assert _wait_dead(int(_pid_file("fake_hang").read_text()))


# ------------------------------------------------------------------------------------------------
# Ctrl-C during `distillcert vnncomp`, then resume
# ------------------------------------------------------------------------------------------------
_FAKE_MODULE = '''
"""HiGHS, except that instances whose VNN-LIB path contains SLOW sleep while FAKE_SLOW=1."""
import os
import time

from verifier.backends.highs import HighsBackend


class SlowOnMarked(HighsBackend):
    def solve(self, program, timeout, threads=1):
        if "SLOW" in str(program.meta.get("source", "")) and os.environ.get("FAKE_SLOW") == "1":
            tmp = os.environ["FAKE_PIDFILE"] + ".tmp"  # atomic: the test may kill us right after
            with open(tmp, "w") as fh:
                fh.write(str(os.getpid()))
            os.replace(tmp, os.environ["FAKE_PIDFILE"])
            time.sleep(3600)
        return super().solve(program, timeout, threads)
'''

# Runs `distillcert vnncomp ...` (the console script is verifier.cli:main) with the fake in place of
# HiGHS.  distill.commands is stubbed only if it does not exist yet (it is another package's command
# set and irrelevant here).
_DRIVER = '''
import sys, types
sys.path.insert(0, sys.argv[1])
try:
    import distill.commands  # noqa: F401
except ModuleNotFoundError:
    m = types.ModuleType("distill.commands")
    m.register = lambda sub: None
    sys.modules["distill.commands"] = m
import verifier.backends.base as base
base.BACKENDS["highs"] = "fake_vnncomp_backend:SlowOnMarked"
from verifier.cli.main import main
sys.exit(main(sys.argv[2:]))
'''


def _holding_not_crown_provable(seed0: int, tmp: Path, n: int) -> list[tuple[Path, Path]]:
    """``n`` VNN-LIB instances that hold (oracle) but CROWN alone cannot prove, so the solver runs."""
    out = []
    seed = seed0
    while len(out) < n:
        seed += 1
        d = O.gen_dnf(seed, want=False, max_total=8, max_inputs=3)
        onnx_path = save_onnx(list(d.weights), tmp / f"net{len(out)}.onnx")
        net = load_onnx(onnx_path)
        prop = OutputDNFProperty(d.lo, d.hi, tuple((np.asarray(A), np.asarray(b)) for A, b in d.alternatives))
        if prop.quick_check({"net": net}):
            continue
        tag = "SLOW" if len(out) == 2 else "ok"
        spec = tmp / f"prop{len(out)}_{tag}.vnnlib"
        spec.write_text(O.vnnlib_source(d.lo, d.hi, d.alternatives, d.weights[-1][0].shape[0]))
        out.append((onnx_path, spec))
        assert seed < seed0 + 400
    return out


def _read_results(path: Path) -> list[list[str]]:
    text = path.read_text()
    assert text.endswith("\n"), "results CSV ends mid-line"
    rows = list(csv.reader(text.splitlines()))
    assert rows[0] == ["onnx", "vnnlib", "result", "time_s"]
    for r in rows[1:]:
        assert len(r) == 4 and r[2] in ("sat", "unsat", "timeout", "unknown", "error"), r
        float(r[3])
    return rows[1:]


def default_sigint() -> None:
    """SIGINT back to its default action in the child (a run started in the background of a
    non-interactive shell inherits it ignored, and then the interrupt under test would do nothing)."""
    signal.signal(signal.SIGINT, signal.SIG_DFL)


def test_vnncomp_interrupted_then_resumed(tmp_path: Path) -> None:
    inst = _holding_not_crown_provable(3000, tmp_path, 4)
    (tmp_path / "fake_vnncomp_backend.py").write_text(_FAKE_MODULE)
    csv_path = tmp_path / "instances.csv"
    csv_path.write_text("".join(f"{o.name},{v.name},60\n" for o, v in inst))
    out = tmp_path / "results.csv"
    journal = tmp_path / "results.csv.journal.jsonl"
    pidfile = tmp_path / "slow.pid"
    cmd = [sys.executable, "-c", _DRIVER, str(tmp_path), "vnncomp", str(csv_path), "--out", str(out),
           "--backend", "highs", "--json"]
    env = {**os.environ, "FAKE_SLOW": "1", "FAKE_PIDFILE": str(pidfile), "PYTHONUNBUFFERED": "1"}
    # its own session: if the run ever left a child behind, the cleanup below kills the whole group
    # (an orphan holding the pipes open would otherwise hang communicate())
    proc = subprocess.Popen(cmd, env=env, stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True,
                            start_new_session=True, preexec_fn=default_sigint)
    try:
        deadline = time.monotonic() + 240
        while time.monotonic() < deadline and proc.poll() is None:
            if pidfile.exists() and journal.exists() and journal.read_text().count("\n") >= 2:
                break
            time.sleep(0.1)
        assert proc.poll() is None, f"vnncomp ended early: {proc.communicate()}"
        assert pidfile.exists(), "the slow instance never started"
        proc.send_signal(signal.SIGINT)
        stdout, stderr = proc.communicate(timeout=60)
    finally:
        if proc.poll() is None:
            proc.kill()
        with contextlib.suppress(ProcessLookupError, PermissionError):
            os.killpg(proc.pid, signal.SIGKILL)
        if proc.stdout is not None and not proc.stdout.closed:  # not yet drained (an exception above)
            proc.communicate()
    assert proc.returncode == 130, (proc.returncode, stderr)
    assert "Traceback" not in stderr, stderr
    assert "interrupted" in stderr
    slow_pid = int(pidfile.read_text())
    assert _wait_dead(slow_pid, 10), "the interrupted solver child outlived the run"
    # journal: exactly the two finished instances, complete lines
    lines = journal.read_text().splitlines(keepends=True)
    assert len(lines) == 2 and all(ln.endswith("\n") for ln in lines)
    done = [json.loads(ln)["result"] for ln in lines]
    assert [d["vnnlib"] for d in done] == [inst[0][1].name, inst[1][1].name]
    assert all(d["result"] == "unsat" for d in done), done
    rows = _read_results(out)
    assert [r[1] for r in rows] == [inst[0][1].name, inst[1][1].name]
    assert not list(tmp_path.glob(".results.csv.*")), "temporary results file left behind"

    # resume: nothing finished is redone
    env["FAKE_SLOW"] = "0"
    res = subprocess.run(cmd, env=env, capture_output=True, text=True, timeout=300)
    assert res.returncode == 0, res.stderr
    summary = json.loads(res.stdout.strip().splitlines()[-1])
    assert summary["resumed"] == 2 and summary["instances"] == 4, summary
    assert summary["counts"] == {"unsat": 4}, summary
    assert journal.read_text().count("\n") == 4  # two new records, the first two not redone
    rows = _read_results(out)
    assert [r[1] for r in rows] == [v.name for _, v in inst]
    assert [r[2] for r in rows] == ["unsat"] * 4


# ------------------------------------------------------------------------------------------------
# fuzzing the importers
# ------------------------------------------------------------------------------------------------
def _small_onnx_bytes() -> bytes:
    rng = np.random.default_rng(5)
    w = O.random_weights(rng, [3, 4, 3, 2])
    with tempfile.TemporaryDirectory() as d:
        p = save_onnx(w, Path(d) / "small.onnx")
        return p.read_bytes()


SMALL_ONNX = _small_onnx_bytes()

_mutation = st.one_of(
    st.tuples(st.just("flip"), st.integers(0, len(SMALL_ONNX) - 1), st.integers(0, 255)),
    st.tuples(st.just("truncate"), st.integers(0, len(SMALL_ONNX) - 1), st.just(0)),
    st.tuples(st.just("delete"), st.integers(0, len(SMALL_ONNX) - 1), st.integers(1, 16)),
    st.tuples(st.just("insert"), st.integers(0, len(SMALL_ONNX)), st.integers(0, 255)),
)


def _mutate(data: bytes, ops: list[tuple[str, int, int]]) -> bytes:
    b = bytearray(data)
    for op, pos, val in ops:
        pos = min(pos, max(len(b) - 1, 0))
        if op == "flip" and b:
            b[pos] = val
        elif op == "truncate":
            del b[pos:]
        elif op == "delete":
            del b[pos:pos + val]
        elif op == "insert":
            b[pos:pos] = bytes([val])
    return bytes(b)


@settings(max_examples=200, deadline=None, suppress_health_check=[HealthCheck.too_slow])
@given(st.lists(_mutation, min_size=1, max_size=4))
def test_fuzz_load_onnx_raises_only_typed_errors(ops: list[tuple[str, int, int]]) -> None:
    data = _mutate(SMALL_ONNX, ops)
    with tempfile.TemporaryDirectory() as d:
        p = Path(d) / "fuzz.onnx"
        p.write_bytes(data)
        try:
            net = load_onnx(p)
        except InputError as exc:  # ModelFormatError, UnsupportedModelError, …
            assert str(p) in str(exc), f"the message does not name the file: {exc}"
            return
        # it parsed: then it must be a usable, finite network
        y = net.evaluate(np.zeros(net.n_inputs))
        assert np.all(np.isfinite(y))


_VNNLIB_SEED = textwrap.dedent("""\
    ; a small property
    (declare-const X_0 Real)
    (declare-const X_1 Real)
    (declare-const Y_0 Real)
    (declare-const Y_1 Real)
    (assert (>= X_0 -0.5))
    (assert (<= X_0 0.5))
    (assert (>= X_1 0.0))
    (assert (<= X_1 1e-1))
    (assert (or (and (<= Y_0 Y_1) (>= (+ Y_0 (* 2 Y_1)) -3)) (and (<= (- Y_1 Y_0) 0.25))))
    """)


@settings(max_examples=200, deadline=None)
@given(st.lists(st.tuples(st.integers(0, len(_VNNLIB_SEED)), st.integers(0, 8),
                          st.sampled_from(list("()XY_0123456789.-+e<=>* \n;abc") + ["assert", "and", "or",
                                                                                 "declare-const", "Real",
                                                                                 "\x00", "\u00e9", "1e999"])),
                min_size=1, max_size=5))
def test_fuzz_vnnlib_parser_raises_only_spec_errors(ops: list[tuple[int, int, str]]) -> None:
    from encoders.vnnlib import parse_vnnlib_text

    text = _VNNLIB_SEED
    for pos, cut, ins in ops:
        text = text[:pos] + ins + text[pos + cut:]
    try:
        spec = parse_vnnlib_text(text, "fuzz.vnnlib")
    except SpecError as exc:
        assert str(exc).startswith("fuzz.vnnlib"), str(exc)
        return
    for c in spec.cases:
        assert np.all(c.lo <= c.hi)
