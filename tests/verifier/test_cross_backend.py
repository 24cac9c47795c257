"""Cross-backend agreement: every backend answers the same program the same way.

Fifty-odd generated tiny instances (local L∞ robustness, VNN-LIB box + DNF, two-copy global
κ-robustness; big-M bounds by CROWN, α-CROWN or interval arithmetic, in turn) are encoded once and the *same*
:class:`~encoders.program.Program` is solved by Gurobi, HiGHS, Marabou and Z3.  For each instance:

* every backend that does not time out gives the same status (SAT / UNSAT);
* that status is the oracle's truth (:mod:`oracle`): the three encodings are exact, so the program is
  feasible iff the property is violated — this checks the encoder and the bounds too, with no replay
  tolerance in between (the cases are robust by ``oracle.MARGIN``);
* a SAT assignment satisfies every constraint of the program within 1e-5, and its output variables are
  the network's float64 outputs at its input variables (the encoding is the network).

Plus one pinned-input program solved by all backends, compared with onnxruntime within 1e-6.
"""

from __future__ import annotations

from pathlib import Path

import numpy as np
import oracle as O
import pytest

from encoders.bounds import interval_bounds
from encoders.encode import encode_network
from encoders.errors import BackendUnavailableError
from encoders.network import load_onnx, ort_evaluate, save_onnx
from encoders.program import Program
from encoders.properties import EncodeOptions, GlobalRobustness, LocalRobustness, OutputDNFProperty
from verifier.backends.base import get_backend
from verifier.results import SolveStatus

ALL = ("gurobi", "highs", "marabou", "z3")
TIMEOUT = 60.0
FEAS_TOL = 1e-5


def _backends() -> dict[str, object]:
    out = {}
    for name in ALL:
        try:
            out[name] = get_backend(name)
        except BackendUnavailableError:
            continue
    return out


BACKENDS = _backends()


def _plan() -> list[tuple[str, int, bool, str]]:
    """(kind, seed, want, bounds) — 22 local, 18 VNN-LIB, 12 global = 52 instances."""
    plan = []
    for kind, n, base in (("local", 22, 5000), ("dnf", 18, 6000), ("global", 12, 7000)):
        plan += [(kind, base + i, bool(i % 2), ("crown", "alpha", "ibp")[i % 3]) for i in range(n)]
    return plan


PLAN = _plan()


def _instance(kind: str, seed: int, want: bool, bounds: str, tmp: Path):
    """(program, truth, {ns: weights}) for one generated case."""
    opts = EncodeOptions(bounds=bounds)
    if kind == "local":
        c = O.gen_local(seed, "inf", want, max_total=8, max_inputs=4)
        net = load_onnx(save_onnx(list(c.weights), tmp / "n.onnx"))
        prop = LocalRobustness(c.x0, c.eps, c.label, "inf", c.dom_lo, c.dom_hi)
        return prop.encode({"net": net}, opts), c.truth, {"net": c.weights}
    if kind == "dnf":
        c = O.gen_dnf(seed, want, max_total=8, max_inputs=4)
        net = load_onnx(save_onnx(list(c.weights), tmp / "n.onnx"))
        prop = OutputDNFProperty(c.lo, c.hi, tuple((np.asarray(A), np.asarray(b)) for A, b in c.alternatives))
        return prop.encode({"net": net}, opts), c.truth, {"net": c.weights}
    c = O.gen_global(seed, want, max_total=4)
    net = load_onnx(save_onnx(list(c.weights), tmp / "n.onnx"))
    prop = GlobalRobustness(c.delta, c.kappa, c.dom_lo, c.dom_hi, "inf", c.label)
    return prop.encode({"a": net, "b": net}, opts), c.truth, {"a": c.weights, "b": c.weights}


def _check_assignment(prog: Program, a: np.ndarray, weights: dict) -> list[str]:
    problems = []
    scale = 1.0 + float(np.max(np.abs(a))) if a.size else 1.0
    for kind, v in prog.violation(a).items():
        if v > FEAS_TOL * scale:
            problems.append(f"{kind} violated by {v:.3g}")
    for ns, w in weights.items():
        blk = prog.blocks[ns]
        x, y = a[blk["input"]], a[blk["output"]]
        ref = O.evaluate(w, x)
        if not np.allclose(y, ref, atol=FEAS_TOL * scale, rtol=0):
            problems.append(f"{ns}: output variables {y} differ from the network's {ref}")
    return problems


@pytest.mark.parametrize(("kind", "seed", "want", "bounds"), PLAN,
                         ids=[f"{k}-{s}-{b}" for k, s, _, b in PLAN])
def test_all_backends_agree_and_match_the_oracle(kind: str, seed: int, want: bool, bounds: str,
                                                 tmp_path: Path) -> None:
    if len(BACKENDS) < 2:
        pytest.skip("fewer than two backends installed")
    prog, truth, weights = _instance(kind, seed, want, bounds, tmp_path)
    expected = SolveStatus.SAT if truth.violated else SolveStatus.UNSAT
    answers, bad = {}, []
    for name, backend in BACKENDS.items():
        if backend.unsupported(prog):
            continue
        out = backend.solve(prog.copy(), TIMEOUT, 1)
        answers[name] = out.status
        if out.status is SolveStatus.TIMEOUT:
            continue
        if out.status is not expected:
            bad.append(f"{name}: {out.status.value} ({out.message}), oracle value {truth.value:.4g}")
        elif out.status is SolveStatus.SAT:
            problems = _check_assignment(prog, np.asarray(out.assignment, dtype=np.float64), weights)
            if problems:
                bad.append(f"{name}: SAT assignment is wrong: {'; '.join(problems)}")
    decided = {s for s in answers.values() if s is not SolveStatus.TIMEOUT}
    assert len(decided) <= 1, f"backends disagree: {answers}"
    assert not bad, f"{kind} seed {seed} ({bounds} bounds), expected {expected.value}:\n  " + "\n  ".join(bad)
    assert decided, f"every backend timed out: {answers}"


def test_plan_size() -> None:
    assert len(PLAN) >= 50
    assert {w for *_, w in [(k, s, w) for k, s, w, _ in PLAN]} == {True, False}


# ------------------------------------------------------------------------------------------------
# pinned input: the same program in every backend reproduces onnxruntime
# ------------------------------------------------------------------------------------------------
@pytest.mark.parametrize("seed", [0, 1, 2])
def test_pinned_input_every_backend_matches_onnxruntime(tmp_path: Path, seed: int) -> None:
    rng = np.random.default_rng(seed)
    w = O.random_weights(rng, [4, 6, 5, 3])
    path = save_onnx(w, tmp_path / "net.onnx")
    net = load_onnx(path)
    x0 = rng.uniform(-1, 1, 4)
    lo, hi = x0 - 1.0, x0 + 1.0  # wide box: many unstable ReLUs whose phase the solver must decide
    lb = interval_bounds(net, lo, hi)
    prog = Program()
    x = prog.add_vars("x", lo, hi)
    enc = encode_network(prog, net, x, list(lb.lower), list(lb.upper), "net")
    for i in range(4):
        prog.add_row([x[i]], [1.0], "==", float(x0[i]))
    y_ort = ort_evaluate(path, x0)
    ys = {}
    for name, backend in BACKENDS.items():
        out = backend.solve(prog.copy(), TIMEOUT, 1)
        assert out.status is SolveStatus.SAT, (name, out)
        y = np.asarray(out.assignment)[enc.outputs]
        assert np.all(np.abs(y - y_ort) <= 1e-6 * np.maximum(1.0, np.abs(y_ort))), (name, y, y_ort)
        ys[name] = y
    names = list(ys)
    for a, b in zip(names, names[1:], strict=False):
        np.testing.assert_allclose(ys[a], ys[b], atol=1e-7)
