"""One solve path (issue 12, item 2): every solver call goes through
:func:`verifier.backends.solve.solve` (a child process with a hard time limit), one backend chooser,
solver parameters through ``get_backend(name, **params)``, and no solver banner on stdout.
"""

from __future__ import annotations

import json
import os
import subprocess
import sys
import time
from pathlib import Path

import numpy as np
import pytest

from encoders.errors import ConfigError
from encoders.network import load_onnx, network_from_layers, save_onnx
from encoders.program import Kind, Program, Sense, Tag
from encoders.properties import LocalRobustness
from verifier import dispatch
from verifier.backends import base
from verifier.backends.base import get_backend, solves_milp
from verifier.backends.solve import DEFAULT_GRACE, choose_backend, solve
from verifier.dispatch import DispatchConfig
from verifier.results import Outcome, SolveStatus, Verdict
from verifier.search.relu_split import MarginConfig, solve_output_property

ROOT = Path(__file__).resolve().parents[2]
PIDS: dict[str, str] = {}


class HangingMilp:
    """A MILP backend that never returns (ignores its time limit); records its pid."""

    name = "fake_hang_milp"
    milp = True
    capabilities = frozenset({Kind.LINEAR, Kind.RELU, Kind.DISJUNCTION, Kind.OBJECTIVE})

    def version(self) -> str:
        return "0.0-test"

    def unsupported(self, program: Program) -> list[str]:
        return []

    def solve(self, program: Program, timeout: float, threads: int = 1) -> Outcome:
        Path(PIDS["file"]).write_text(str(os.getpid()))
        while True:
            time.sleep(1000)


class Recording(HangingMilp):
    """Answers UNSAT and prints to stdout (as a solver banner would); its parameters are recorded."""

    name = "fake_params"

    def __init__(self, **params) -> None:
        self.params = params

    def solve(self, program: Program, timeout: float, threads: int = 1) -> Outcome:
        print("BANNER from a solver", flush=True)
        os.write(1, b"BANNER written to fd 1\n")
        return Outcome(SolveStatus.UNSAT, self.name, 0.0, stats={"params": dict(self.params)})


@pytest.fixture
def fakes(monkeypatch: pytest.MonkeyPatch, tmp_path: Path):
    for cls in (HangingMilp, Recording):
        monkeypatch.setitem(base.BACKENDS, cls.name, f"{__name__}:{cls.__name__}")
    monkeypatch.setattr(
        dispatch, "BACKEND_CHOICES", (*dispatch.BACKEND_CHOICES, "fake_hang_milp", "fake_params")
    )
    PIDS["file"] = str(tmp_path / "pid")
    yield
    PIDS.clear()


def _dead(pid: int, wait: float = 5.0) -> bool:
    end = time.monotonic() + wait
    while time.monotonic() < end:
        try:
            os.kill(pid, 0)
        except ProcessLookupError:
            return True
        try:  # a zombie child of ours counts as dead
            with open(f"/proc/{pid}/stat") as f:
                if f.read().split()[2] == "Z":
                    return True
        except OSError:
            return True
        time.sleep(0.05)
    return False


def _tiny() -> Program:
    p = Program()
    x = p.add_vars("x", np.zeros(1), np.ones(1))
    p.add_row(x, [1.0], Sense.GE, 2.0, Tag.PROPERTY, "x>=2")
    return p


@pytest.fixture(scope="module")
def edge_net(tmp_path_factory: pytest.TempPathFactory):
    """The float32 edge network of tests/test_replay_exact.py (CROWN cannot decide it)."""
    W1 = np.array([[1.0, 0.0], [0.0, 1.0], [0.0, 1.0]])
    b1 = np.array([0.0, -0.09, -0.09])
    W2 = np.array([[0.0, 0.0, 0.0], [1.0, 2.0, -2.0]])
    b2 = np.array([0.0, -float(np.float32(0.15))])
    d = tmp_path_factory.mktemp("edge")
    path = save_onnx(network_from_layers([(W1, b1), (W2, b2)]), d / "edge.onnx")
    np.save(d / "x0.npy", np.array([0.1, 0.1]))
    return load_onnx(path), d


# --------------------------------------------------------------------------------------------------
# the hard time limit, in the output-property (ReLU-split) path
# --------------------------------------------------------------------------------------------------
def test_hanging_solver_in_relu_split_path_times_out(fakes, edge_net) -> None:
    net, _ = edge_net
    prop = LocalRobustness(np.array([0.1, 0.1]), 0.05, 0)
    limit = 2.0
    cfg = DispatchConfig(backend="fake_hang_milp", timeout=limit, samples=0)
    margin = MarginConfig(tighten=False, use_bab=False)
    t0 = time.perf_counter()
    res = solve_output_property(prop, net, cfg, t0 + limit, margin)
    elapsed = time.perf_counter() - t0
    assert res is not None and res.verdict is Verdict.TIMEOUT, res
    assert elapsed <= limit + 2.0, elapsed
    pid = int(Path(PIDS["file"]).read_text())
    assert _dead(pid), f"solver child {pid} still running"


def test_solve_kills_a_hanging_child_within_grace(fakes) -> None:
    t0 = time.perf_counter()
    out = solve("fake_hang_milp", _tiny(), 0.5)
    assert out.status is SolveStatus.TIMEOUT
    assert time.perf_counter() - t0 <= 0.5 + DEFAULT_GRACE + 1.0
    assert _dead(int(Path(PIDS["file"]).read_text()))


def test_no_solver_is_called_outside_the_backends_package() -> None:
    """Structural: outside ``verifier/backends/`` no module of ``verifier`` imports a solver package or
    instantiates a backend class; they all go through :func:`verifier.backends.solve.solve`."""
    bad = []
    for f in (ROOT / "verifier").rglob("*.py"):
        if "backends" in f.parts:
            continue
        src = f.read_text()
        for needle in (
            "import gurobipy",
            "import highspy",
            "import maraboupy",
            "import z3",
            "GurobiBackend",
            "HighsBackend",
            "MarabouBackend",
            "Z3Backend",
            "get_backend(",
        ):
            if needle in src and not (needle == "get_backend(" and f.name == "dispatch.py"):
                bad.append(f"{f.relative_to(ROOT)}: {needle}")
    assert not bad, bad


# --------------------------------------------------------------------------------------------------
# parameters and the chooser
# --------------------------------------------------------------------------------------------------
def test_get_backend_passes_parameters(fakes) -> None:
    out = solve("fake_params", _tiny(), 5.0, params={"alpha": 1, "beta": "x"})
    assert out.status is SolveStatus.UNSAT and out.stats["params"] == {"alpha": 1, "beta": "x"}
    g = get_backend("gurobi", mip_gap=0.5, params={"MIPFocus": 1})
    assert g.mip_gap == 0.5 and g.params == {"MIPFocus": 1}
    h = get_backend("highs", options={"mip_rel_gap": 0.5})
    assert h.options == {"mip_rel_gap": 0.5}
    with pytest.raises(ConfigError):
        get_backend("highs", no_such_parameter=1)


def test_gurobi_parameters_reach_the_solver() -> None:
    # an infeasible LP with the feasibility tolerance loosened enough makes it feasible
    p = Program()
    x = p.add_vars("x", np.zeros(1), np.ones(1))
    p.add_row(x, [1.0], Sense.GE, 1.0 + 5e-6, Tag.PROPERTY, "x>=1+5e-6")
    assert solve("gurobi", p, 10.0).status is SolveStatus.UNSAT
    loose = solve("gurobi", p, 10.0, params={"params": {"FeasibilityTol": 1e-5}})
    assert loose.status is SolveStatus.SAT


def test_one_chooser() -> None:
    p = _tiny()
    assert choose_backend("auto", p) == "gurobi"
    assert choose_backend("portfolio", p) == "gurobi"
    assert choose_backend("z3", p) == "z3"
    assert choose_backend("z3", p, milp_only=True) is None
    assert choose_backend("highs", p, milp_only=True) == "highs"
    assert solves_milp("gurobi") and solves_milp("highs") and not solves_milp("marabou")
    assert dispatch.choose_backend is choose_backend


# --------------------------------------------------------------------------------------------------
# no solver banner on stdout
# --------------------------------------------------------------------------------------------------
def test_in_process_solve_keeps_stdout_clean(fakes, capfd: pytest.CaptureFixture[str]) -> None:
    out = solve("fake_params", _tiny(), 5.0, in_process=True)
    assert out.status is SolveStatus.UNSAT
    cap = capfd.readouterr()
    assert "BANNER" not in cap.out and "BANNER" in cap.err
    solve("highs", _tiny(), 5.0, in_process=True)
    assert capfd.readouterr().out == ""


@pytest.mark.parametrize("backend", ["gurobi", "highs", "marabou", "z3", "auto", "portfolio"])
def test_json_stdout_is_one_object(edge_net, backend: str) -> None:
    _, d = edge_net
    cmd = [
        sys.executable,
        "-m",
        "verifier",
        "verify",
        "local",
        "--onnx",
        str(d / "edge.onnx"),
        "--point",
        str(d / "x0.npy"),
        "--eps",
        "0.05",
        "--backend",
        backend,
        "--json",
    ]
    out = subprocess.run(cmd, cwd=ROOT, capture_output=True, text=True, timeout=180)
    assert out.returncode == 0, out.stderr
    obj = json.loads(out.stdout)  # the whole of stdout is one JSON document ...
    assert isinstance(obj, dict) and out.stdout.strip().startswith("{")  # ... and it is an object
    assert obj["verdict"] == "verified"
