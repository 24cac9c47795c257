"""Replay is the only gate to FALSIFIED: fake backends that lie must never produce it.

The fakes below are registered as backends (``verifier.backends.base.BACKENDS`` maps a name to
``"test_replay:Class"``; the dispatcher's children are forked, so they see the registration and the
planted data).  A *lying* backend answers SAT with an assignment that satisfies the program's output
rows on paper but is not a counterexample on the real network: the verdict must be UNKNOWN (with
the reason), never FALSIFIED.  An *honest* fake returns a real counterexample (the oracle's witness):
the verdict is FALSIFIED and the reported x / y are the replayed ones (y from onnxruntime).
"""

from __future__ import annotations

import math
from pathlib import Path
from typing import Any

import numpy as np
import oracle as O
import pytest

from encoders.network import load_onnx, ort_evaluate, save_onnx
from encoders.program import Kind, Program
from encoders.properties import GlobalRobustness, LocalRobustness, OutputDNFProperty
from verifier import dispatch
from verifier.backends import base
from verifier.dispatch import DispatchConfig, verify, verify_many
from verifier.replay import replay
from verifier.results import Outcome, SolveStatus, Verdict

#: What the fakes put into their assignment, set by each test before ``verify`` (children are forked).
PLANT: dict[str, Any] = {}


class _Fake:
    name = "fake"
    capabilities = frozenset({Kind.LINEAR, Kind.RELU, Kind.DISJUNCTION, Kind.QUADRATIC, Kind.OBJECTIVE})

    def version(self) -> str:
        return "0.0-test"

    def unsupported(self, program: Program) -> list[str]:
        return []


class LyingBackend(_Fake):
    """SAT with an assignment built by ``PLANT["mode"]`` (see :func:`_lie`)."""

    name = "fake_lying"

    def solve(self, program: Program, timeout: float, threads: int = 1) -> Outcome:
        return Outcome(SolveStatus.SAT, self.name, 0.0, assignment=_lie(program, PLANT["mode"]))


class HonestBackend(_Fake):
    """SAT with the planted real counterexample in the input variables (``PLANT["inputs"]``)."""

    name = "fake_honest"

    def solve(self, program: Program, timeout: float, threads: int = 1) -> Outcome:
        lb, ub = program.bounds()
        a = (lb + ub) / 2
        for ns, x in PLANT["inputs"].items():
            a[program.blocks[ns]["input"]] = x
        return Outcome(SolveStatus.SAT, self.name, 0.0, assignment=a)


def _lie(program: Program, mode: str) -> np.ndarray:
    """A fabricated 'counterexample'.

    ``outputs``   inputs at the centre of their bounds (a robust point), the output variables set to
                  make every violation row true (y_j = y_c + 1 for all j — the program's rows hold
                  for the outputs, only the network is ignored);
    ``outside``   inputs far outside the region, at a point where the network does violate
                  (planted), outputs consistent with it — projection must bring it back;
    ``nan``       NaN inputs;
    ``short``     an assignment shorter than the program (a buggy backend);
    ``inf``       +inf everywhere.
    """
    lb, ub = program.bounds()
    a = (lb + ub) / 2
    if mode == "outputs":
        for blk in program.blocks.values():
            if "output" in blk:
                out = blk["output"]
                a[out] = 0.0
                a[out[PLANT.get("label", 0)]] = -1.0  # every other class beats the label
        return a
    if mode == "outside":
        for ns, x in PLANT["inputs"].items():
            a[program.blocks[ns]["input"]] = x
        return a
    if mode == "nan":
        a[:] = np.nan
        return a
    if mode == "short":
        return a[:1]
    if mode == "inf":
        return np.full_like(a, np.inf)
    raise AssertionError(mode)


@pytest.fixture
def fakes(monkeypatch: pytest.MonkeyPatch) -> None:
    for cls in (LyingBackend, HonestBackend):
        monkeypatch.setitem(base.BACKENDS, cls.name, f"{__name__}:{cls.__name__}")
    monkeypatch.setattr(dispatch, "BACKEND_CHOICES", (*dispatch.BACKEND_CHOICES, "fake_lying", "fake_honest"))
    PLANT.clear()
    yield
    PLANT.clear()


def _solver_only(backend: str, **kw: Any) -> DispatchConfig:
    return DispatchConfig(backend=backend, quick_check=False, samples=0, timeout=60.0, **kw)


# ------------------------------------------------------------------------------------------------
# fixtures: a robust point (holds) and a violated one, with their ONNX files
# ------------------------------------------------------------------------------------------------
@pytest.fixture(scope="module")
def robust_case(tmp_path_factory: pytest.TempPathFactory):
    case = O.gen_local(11, "inf", want=False)
    path = save_onnx(list(case.weights), tmp_path_factory.mktemp("robust") / "net.onnx")
    return case, load_onnx(path)


@pytest.fixture(scope="module")
def violated_case(tmp_path_factory: pytest.TempPathFactory):
    case = O.gen_local(12, "inf", want=True)
    path = save_onnx(list(case.weights), tmp_path_factory.mktemp("violated") / "net.onnx")
    return case, load_onnx(path)


def _local_prop(case: O.LocalCase) -> LocalRobustness:
    return LocalRobustness(case.x0, case.eps, case.label, case.norm, case.dom_lo, case.dom_hi)


# ------------------------------------------------------------------------------------------------
# lying backends → UNKNOWN, never FALSIFIED
# ------------------------------------------------------------------------------------------------
@pytest.mark.parametrize("mode", ["outputs", "nan", "inf", "short"])
@pytest.mark.parametrize("in_process", [False, True])
def test_lying_backend_is_never_falsified(fakes, robust_case, mode: str, in_process: bool) -> None:
    case, net = robust_case
    PLANT.update(mode=mode, label=case.label)
    res = verify(_local_prop(case), {"net": net}, _solver_only("fake_lying", in_process=in_process))
    assert res.verdict is not Verdict.FALSIFIED
    assert res.counterexample is None
    if mode in ("outputs", "nan", "inf"):
        assert res.verdict is Verdict.UNKNOWN, res
        assert res.message  # the reason is reported
    else:  # a malformed assignment is a backend error or an UNKNOWN, never a crash of the run
        assert res.verdict in (Verdict.UNKNOWN, Verdict.ERROR), res


def test_lying_backend_outside_region_is_projected_not_trusted(fakes, violated_case) -> None:
    """Inputs planted far outside the ε-box where the network *does* misclassify: replay projects
    the candidate into the box first; if the projected point is not a violation the answer is
    UNKNOWN — a violation outside the region never counts."""
    case, net = violated_case
    # a robust (holding) box around the same network: shrink ε until the oracle says it holds
    eps = case.eps
    while True:
        eps /= 2
        truth = O.local_linf(case.weights, case.x0, eps, case.label, case.dom_lo, case.dom_hi)
        if truth.holds and truth.robust():
            break
        assert eps > 1e-6
    prop = LocalRobustness(case.x0, eps, case.label, "inf", case.dom_lo, case.dom_hi)
    PLANT.update(mode="outside", inputs={"net": case.truth.witness})  # violating, but outside the small box
    assert prop.violated({"net": case.truth.witness}, {"net": net.evaluate(case.truth.witness)}) is False
    res = verify(prop, {"net": net}, _solver_only("fake_lying"))
    assert res.verdict is Verdict.UNKNOWN, res


def test_lying_backend_vnnlib_and_global(fakes, tmp_path: Path) -> None:
    d = O.gen_dnf(21, want=False)
    path = save_onnx(list(d.weights), tmp_path / "dnf.onnx")
    net = load_onnx(path)
    prop = OutputDNFProperty(d.lo, d.hi, tuple((np.asarray(A), np.asarray(b)) for A, b in d.alternatives))
    PLANT.update(mode="outputs", label=0)
    res = verify(prop, {"net": net}, _solver_only("fake_lying"))
    assert res.verdict is Verdict.UNKNOWN, res

    g = O.gen_global(22, want=False)
    gnet = load_onnx(save_onnx(list(g.weights), tmp_path / "glob.onnx"))
    gprop = GlobalRobustness(g.delta, g.kappa, g.dom_lo, g.dom_hi, "inf", g.label)
    PLANT.update(mode="outputs", label=g.label)
    res = verify(gprop, {"a": gnet, "b": gnet}, _solver_only("fake_lying"))
    assert res.verdict is Verdict.UNKNOWN, res
    # copies planted too far apart (beyond δ) where the pair would violate: projection pulls x2 back
    # within δ of x; the pair is then checked afresh
    far = {"a": np.array([0.0, 0.0]), "b": np.array([1.0, 1.0])}
    PLANT.update(mode="outside", inputs=far)
    res = verify(gprop, {"a": gnet, "b": gnet}, _solver_only("fake_lying"))
    assert res.verdict is Verdict.UNKNOWN, res


def test_lying_backend_in_a_batch(fakes, robust_case) -> None:
    case, net = robust_case
    PLANT.update(mode="outputs", label=case.label)
    tasks = [dispatch.Task(f"q{i}", _local_prop(case), {"net": net}) for i in range(3)]
    out = verify_many(tasks, _solver_only("fake_lying"), jobs=1)
    assert {r.verdict for r in out.values()} == {Verdict.UNKNOWN}


# ------------------------------------------------------------------------------------------------
# an honest fake → FALSIFIED with the replayed x / y
# ------------------------------------------------------------------------------------------------
def test_honest_backend_gives_falsified_with_replayed_values(fakes, violated_case) -> None:
    case, net = violated_case
    w = case.truth.witness
    PLANT.update(inputs={"net": w})
    res = verify(_local_prop(case), {"net": net}, _solver_only("fake_honest"))
    assert res.verdict is Verdict.FALSIFIED, res
    cx = res.counterexample
    # x is the float32 point onnxruntime evaluated: the projected witness rounded (and kept in the region)
    projected = np.clip(w, case.x0 - case.eps, case.x0 + case.eps)
    np.testing.assert_array_equal(cx.x, cx.x.astype(np.float32).astype(np.float64))
    assert np.all(np.abs(cx.x - projected) <= 2 * np.spacing(projected.astype(np.float32)))
    assert _local_prop(case).in_region(cx.x)
    np.testing.assert_array_equal(cx.y, ort_evaluate(net.path, cx.x))  # outputs are onnxruntime's
    assert max(cx.y[j] - cx.y[case.label] for j in range(cx.y.size) if j != case.label) >= 0


def test_honest_backend_global_counterexample_has_both_inputs(fakes, tmp_path: Path) -> None:
    g = O.gen_global(23, want=True)
    net = load_onnx(save_onnx(list(g.weights), tmp_path / "g.onnx"))
    w = g.truth.witness
    PLANT.update(inputs={"a": w[:2], "b": w[2:]})
    prop = GlobalRobustness(g.delta, g.kappa, g.dom_lo, g.dom_hi, "inf", g.label)
    res = verify(prop, {"a": net, "b": net}, _solver_only("fake_honest"))
    assert res.verdict is Verdict.FALSIFIED, res
    cx = res.counterexample
    assert cx.x2 is not None and cx.y2 is not None
    np.testing.assert_array_equal(cx.y, ort_evaluate(net.path, cx.x))
    np.testing.assert_array_equal(cx.y2, ort_evaluate(net.path, cx.x2))
    assert float(np.max(np.abs(cx.x - cx.x2))) <= g.delta
    z = cx.y - np.max(cx.y)
    conf = np.exp(z) / np.exp(z).sum()
    assert conf[g.label] >= g.kappa and cx.y2[1 - g.label] >= cx.y2[g.label]


# ------------------------------------------------------------------------------------------------
# replay() directly
# ------------------------------------------------------------------------------------------------
def test_replay_needs_the_onnx_file(violated_case) -> None:
    case, net = violated_case
    from encoders.network import network_from_layers

    mem = network_from_layers(list(case.weights))  # same function, no file
    prop = _local_prop(case)
    assert not replay(prop, {"net": mem}, {"net": case.truth.witness}).ok
    ok = replay(prop, {"net": net}, {"net": case.truth.witness})
    assert ok.ok and ok.counterexample is not None


def test_replay_uses_onnxruntime_not_the_ir(violated_case, tmp_path: Path) -> None:
    """A network object whose IR says 'violated' but whose ONNX file computes something else: replay
    follows the file.  (Here the file is of a different network that is robust at the point.)"""
    case, net = violated_case
    robust_w = [(W.copy(), b.copy()) for W, b in case.weights]
    W_last, b_last = robust_w[-1]
    b_last = b_last.copy()
    b_last[case.label] += 1e3  # the label wins by a mile in the file's network
    robust_w[-1] = (W_last, b_last)
    other = save_onnx(robust_w, tmp_path / "other.onnx")
    import dataclasses

    liar = dataclasses.replace(net, path=str(other))
    r = replay(_local_prop(case), {"net": liar}, {"net": case.truth.witness})
    assert not r.ok and "does not violate" in r.reason


def test_replay_l2_projects_into_the_ball(tmp_path: Path) -> None:
    case = O.gen_local(31, "2", want=True)
    net = load_onnx(save_onnx(list(case.weights), tmp_path / "n.onnx"))
    prop = _local_prop(case)
    w = case.truth.witness
    r = replay(prop, {"net": net}, {"net": w})
    assert r.ok, r.reason
    assert float(np.linalg.norm(r.counterexample.x - case.x0)) <= case.eps
    # far outside the ball along the same ray: projected back onto the sphere, never trusted as is
    far = case.x0 + 3 * (w - case.x0)
    r2 = replay(prop, {"net": net}, {"net": far})
    if r2.ok:
        assert float(np.linalg.norm(r2.counterexample.x - case.x0)) <= case.eps
    assert math.isfinite(float(np.sum(r.counterexample.y)))
