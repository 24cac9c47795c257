"""The backend contract, once for every backend (and every backend variant): the protocol, hand-built
ReLU programs with answers worked out by hand, disjunctions against an LP oracle, fixed-input network
encodings against onnxruntime, infeasibility, the outcome's fields, and a clean stdout.

Backend-specific behaviour (Gurobi's licence and MIQCP, HiGHS' objectives and bounds, Marabou's
options, z3's exact arithmetic) stays in tests/test_backend_<name>.py.
"""

from __future__ import annotations

import json
import subprocess
import sys
from pathlib import Path
from typing import Any

import numpy as np
import pytest
from netkit import (
    HAND_RELU_CASES,
    close,
    encode_box,
    f32,
    hand_relu_program,
    lp_feasible,
    random_disjunctive,
    random_net,
    relu_of_difference,
)

from encoders.errors import BackendUnavailableError, UnsupportedQueryError
from encoders.network import ort_evaluate, save_onnx
from encoders.program import Kind, Program, Sense
from verifier.backends.base import Backend, get_backend
from verifier.results import Outcome, SolveStatus

ROOT = Path(__file__).resolve().parents[2]
TIMEOUT = 30.0

#: (id, backend name, parameters, feasibility tolerance of its assignments)
VARIANTS: list[tuple[str, str, dict[str, Any], float]] = [
    ("gurobi", "gurobi", {}, 1e-6),
    ("gurobi-indicators", "gurobi", {"indicators": True}, 1e-6),
    ("highs", "highs", {}, 1e-6),
    ("marabou", "marabou", {}, 1e-6),
    ("z3-ite", "z3", {"relu_encoding": "ite"}, 1e-9),
    ("z3-disjunctive", "z3", {"relu_encoding": "disjunctive"}, 1e-9),
]


def _make(name: str, params: dict[str, Any]) -> Backend:
    try:
        return get_backend(name, **params)
    except BackendUnavailableError as exc:
        pytest.skip(f"{name} is not installed: {exc}")


@pytest.fixture(params=VARIANTS, ids=[v[0] for v in VARIANTS])
def variant(request) -> tuple[Backend, float]:
    _, name, params, tol = request.param
    return _make(name, params), tol


def _check_outcome(out: Outcome, b: Backend, p: Program) -> None:
    assert isinstance(out, Outcome) and out.backend == b.name
    assert out.solver_version and out.time_s >= 0.0 and isinstance(out.stats, dict)
    if out.status in (SolveStatus.SAT, SolveStatus.OPTIMAL):
        assert out.assignment is not None and out.assignment.shape == (p.n_vars,)
        assert out.assignment.dtype == np.float64
    if out.status is SolveStatus.UNSAT:
        assert out.assignment is None


# --------------------------------------------------------------------------------------------------
# protocol
# --------------------------------------------------------------------------------------------------
def test_protocol(variant) -> None:
    b, _ = variant
    assert isinstance(b, Backend)
    assert b.version()
    assert {Kind.LINEAR, Kind.RELU, Kind.DISJUNCTION} <= b.capabilities
    p, v = relu_of_difference(0.5)
    assert b.unsupported(p) == []
    q = p.copy()
    q.add_ball(np.array([v["x0"], v["x1"]]), np.zeros(2), 0.5)
    q.set_objective([v["y"]], [1.0])
    missing = sorted(k.value for k in q.kinds() - b.capabilities)
    assert sorted(b.unsupported(q)) == missing
    if missing:
        with pytest.raises(UnsupportedQueryError):
            b.solve(q, TIMEOUT)


# --------------------------------------------------------------------------------------------------
# programs with known answers
# --------------------------------------------------------------------------------------------------
@pytest.mark.parametrize("extra, expected", HAND_RELU_CASES)
def test_hand_built_relu_programs(variant, extra, expected) -> None:
    b, tol = variant
    p, var = hand_relu_program(extra)
    out = b.solve(p, TIMEOUT)
    want = {"sat": SolveStatus.SAT, "unsat": SolveStatus.UNSAT}[expected]
    assert out.status is want, out.message
    _check_outcome(out, b, p)
    if want is SolveStatus.SAT:
        x = out.assignment
        assert abs(x[var["y"]] - max(0.0, x[var["z"]])) <= tol
        assert max(p.violation(x).values()) <= tol


@pytest.mark.parametrize("seed", range(12))
def test_disjunction_feasible_iff_one_alternative_is(variant, seed: int) -> None:
    b, tol = variant
    p, base, alts = random_disjunctive(seed)
    expected = any(lp_feasible(base + list(alt), 3) for alt in alts)
    out = b.solve(p, TIMEOUT)
    assert out.status is (SolveStatus.SAT if expected else SolveStatus.UNSAT), out.message
    _check_outcome(out, b, p)
    if expected:
        assert max(p.violation(out.assignment).values()) <= max(tol, 1e-6)


def test_infeasible_box(variant) -> None:
    b, _ = variant
    p = Program()
    x = p.add_vars("x", [0.0, 0.0], [1.0, 1.0])
    p.add_row(x, [1.0, 1.0], Sense.GE, 2.001)
    out = b.solve(p, TIMEOUT)
    assert out.status is SolveStatus.UNSAT, out.message
    _check_outcome(out, b, p)


@pytest.mark.parametrize("seed, sizes", [(0, [4, 10, 8, 3]), (1, [6, 16, 16, 5]), (3, [5, 12, 12, 12, 2])])
def test_fixed_input_matches_onnxruntime(variant, tmp_path: Path, seed: int, sizes: list[int]) -> None:
    """Pin the input (bounds of the whole box keep ReLUs unstable): the output variables equal
    onnxruntime's outputs."""
    b, _ = variant
    net = random_net(seed, sizes)
    path = save_onnx(net, tmp_path / "net.onnx")
    rng = np.random.default_rng(100 + seed)
    lo, hi = np.zeros(sizes[0]), np.ones(sizes[0])
    unstable = 0
    for _ in range(2):
        x0 = f32(rng.uniform(lo, hi))
        p, enc = encode_box(net, lo, hi, pin=x0)
        unstable += len(p.unstable_relus())
        out = b.solve(p, 60.0)
        assert out.status is SolveStatus.SAT, out.message
        _check_outcome(out, b, p)
        y = out.assignment[enc.outputs]
        assert close(y, ort_evaluate(path, x0), 1e-5), (y, ort_evaluate(path, x0))
    assert unstable > 0


# --------------------------------------------------------------------------------------------------
# stdout
# --------------------------------------------------------------------------------------------------
_CHILD = """
import json, sys
sys.path.insert(0, sys.argv[1])
from netkit import relu_of_difference
from verifier.backends.base import get_backend
p, _ = relu_of_difference(1.5)
b = get_backend(sys.argv[2], **json.loads(sys.argv[3]))
out = b.solve(p, 30.0)
sys.stderr.write(out.status.value + "\\n")
"""


@pytest.mark.parametrize(
    "vid, name, params", [(v[0], v[1], v[2]) for v in VARIANTS], ids=[v[0] for v in VARIANTS]
)
def test_nothing_reaches_stdout_in_a_fresh_process(vid: str, name: str, params: dict[str, Any]) -> None:
    _make(name, params)
    cmd = [sys.executable, "-c", _CHILD, str(ROOT / "tests"), name, json.dumps(params)]
    res = subprocess.run(cmd, cwd=ROOT, capture_output=True, text=True, timeout=120)
    assert res.returncode == 0, res.stderr
    assert res.stdout == "", res.stdout
    assert res.stderr.strip().splitlines()[-1] == "sat"
