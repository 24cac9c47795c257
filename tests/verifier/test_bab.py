"""Branch and bound over input splitting (``verifier.search.input_split``).

* Hand-built networks whose verdicts can be checked on paper: ``|x|`` on ``[−1, 2]`` (CROWN cannot
  close the root box, splitting can), a violation near ``x = 0``, and a conjunction that no single
  row rules out but a row combination does at the root.
* Hypothesis: on random 2-input networks and random DNF properties, BaB never says VERIFIED when a
  dense grid finds a violating point, and every FALSIFIED witness really violates the property.
* The dispatcher hook: BaB decides, or hands its leaves to an exact solver.
* Real ACAS Xu instances (VNN-COMP 2021) against the benchmark's ``expected.csv``: six fast ones in
  the default run, all 180 under ``@pytest.mark.slow``.
"""

from __future__ import annotations

import csv
import itertools
import tempfile
from pathlib import Path

import numpy as np
import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from encoders.errors import ConfigError, UnsupportedQueryError
from encoders.network import Network, load_onnx, network_from_layers, save_onnx
from encoders.properties import GlobalRobustness, LocalRobustness, OutputDNFProperty
from verifier.dispatch import DispatchConfig, verify
from verifier.queries import verify_vnnlib, vnnlib_properties
from verifier.results import Verdict
from verifier.search.input_split import SPLIT_RULES, BabConfig, BabStatus, bab_verify


def saved(net: Network, folder: Path, name: str = "net.onnx") -> Network:
    """The network written to ONNX and loaded back (replay needs the file)."""
    return load_onnx(save_onnx(net, folder / name))


def kink_net() -> Network:
    """``f(x) = relu(x) + relu(−x) − ½ relu(x) = ½ max(x, 0) + max(−x, 0)`` with the ReLU of ``x`` duplicated
    (one input, one output; ``f ≥ 0`` with equality only at 0)."""
    return network_from_layers([(np.array([[1.0], [-1.0], [1.0]]), np.zeros(3)),
                                (np.array([[1.0, 1.0, -0.5]]), np.zeros(1))])


def le(threshold: float) -> tuple[np.ndarray, np.ndarray]:
    """The single-row alternative ``y ≤ threshold``."""
    return np.array([[1.0]]), np.array([threshold])


# --------------------------------------------------------------------------------------------------
# hand-checkable verdicts
# --------------------------------------------------------------------------------------------------
@pytest.mark.parametrize("split", sorted(SPLIT_RULES))
def test_kink_verified_needs_splitting(tmp_path: Path, split: str) -> None:
    # f ≥ 0 > −0.25 on [−1, 2]: safe.  At the root, IBP gives f ≥ 0 + 0 − ½·2 = −1, and CROWN gives
    # relu(x) ≥ x (u = 2 ≥ −l = 1), relu(−x) ≥ 0 (u = 1 < −l = 2) and relu(x) ≤ ⅔(x + 1), so
    # f ≥ x − ⅓(x + 1) ≥ −1 at x = −1: the root box alone cannot be closed.
    net = saved(kink_net(), tmp_path)
    prop = OutputDNFProperty(np.array([-1.0]), np.array([2.0]), (le(-0.25),))
    out = bab_verify(prop, net, 30.0, BabConfig(split=split))
    assert out.status is BabStatus.VERIFIED
    assert out.counterexample is None and out.leaves is None
    assert out.stats["nodes_bounded"] > 1


def test_kink_falsified_near_zero(tmp_path: Path) -> None:
    # f ≤ 0.01 only for x ∈ [−0.01, 0.02]
    net = saved(kink_net(), tmp_path)
    prop = OutputDNFProperty(np.array([-1.0]), np.array([2.0]), (le(0.01),))
    out = bab_verify(prop, net, 30.0)
    assert out.status is BabStatus.FALSIFIED
    x = float(out.counterexample.x[0])
    assert -0.01 - 1e-12 <= x <= 0.02 + 1e-12
    assert float(out.counterexample.y[0]) <= 0.01


def conjunction_net() -> Network:
    """``h = relu(x + 5)`` (active on the box), ``y1 = h1 − h2``, ``y2 = h2 − h1 + 0.1``."""
    return network_from_layers([
        (np.eye(2), np.full(2, 5.0)),
        (np.array([[1.0, -1.0], [-1.0, 1.0]]), np.array([0.0, 0.1])),
    ])


def linear_conjunction_net() -> Network:
    """The same outputs without a hidden layer: ``y1 = x1 − x2``, ``y2 = x2 − x1 + 0.1``."""
    return network_from_layers([(np.array([[1.0, -1.0], [-1.0, 1.0]]), np.array([0.0, 0.1]))])


@pytest.mark.parametrize("combine", [True, False])
@pytest.mark.parametrize("make", [conjunction_net, linear_conjunction_net])
def test_conjunction_closed_by_row_combination(tmp_path: Path, combine: bool, make) -> None:
    # unsafe: y1 ≤ −0.05 ∧ y2 ≤ −0.05.  Each row alone is satisfiable on [−1, 1]², but y1 + y2 = 0.1,
    # so the conjunction never holds; λ = (½, ½) proves it at the root.
    net = saved(make(), tmp_path)
    alt = (np.eye(2), np.array([-0.05, -0.05]))
    prop = OutputDNFProperty(-np.ones(2), np.ones(2), (alt,))
    out = bab_verify(prop, net, 60.0, BabConfig(combine=combine))
    assert out.status is BabStatus.VERIFIED
    if combine:
        assert out.stats["nodes_bounded"] == 1 and out.stats["closed_by_combination"] == 1
    else:  # boxes straddling the lines x1 − x2 = −0.05 and 0.15 must be split
        assert out.stats["nodes_bounded"] > 10 and out.stats["closed_by_combination"] == 0


def test_local_robustness_l2_witness_in_ball(tmp_path: Path) -> None:
    # two classes, y0 − y1 = x1 + x2 − 0.3 (through active ReLUs); at x0 = (0.5, 0.5) the label is 0.
    net = saved(network_from_layers([(np.eye(2), np.full(2, 5.0)),
                                     (np.array([[1.0, 1.0], [0.0, 0.0]]), np.array([-10.3, 0.0]))]), tmp_path)
    x0 = np.array([0.5, 0.5])
    # the L2 distance from x0 to the boundary x1 + x2 = 0.3 is 0.7/√2 ≈ 0.495
    safe = LocalRobustness(x0, 0.45, 0, "2")
    assert bab_verify(safe, net, 30.0).status is BabStatus.VERIFIED
    unsafe = LocalRobustness(x0, 0.55, 0, "2")
    out = bab_verify(unsafe, net, 30.0)
    assert out.status is BabStatus.FALSIFIED
    x = out.counterexample.x
    assert np.linalg.norm(x - x0) <= 0.55 and x.sum() - 0.3 <= 0.0
    # the L∞ ball of the same radius (the L2 ball's bounding box) does hold violations, e.g. the corner
    # (0.05, 0.05): the L2 verdict above relies on dropping the boxes that miss the ball
    assert bab_verify(LocalRobustness(x0, 0.45, 0, "inf"), net, 30.0).status is BabStatus.FALSIFIED


def test_unsupported_and_bad_config() -> None:
    with pytest.raises(ConfigError):
        BabConfig(split="nope")
    with pytest.raises(ConfigError):
        BabConfig(batch_size=0)
    with pytest.raises(ConfigError):
        BabConfig(attack_eta=0.0)
    with pytest.raises(UnsupportedQueryError):
        bab_verify(GlobalRobustness(0.1, 0.9, np.zeros(1), np.ones(1)), kink_net(), 1.0)


def test_zero_width_dimension_never_split(tmp_path: Path) -> None:
    # x2 is pinned (lo = hi): only x1 may be split, and the verdict is still reached
    net = saved(conjunction_net(), tmp_path)
    alt = (np.array([[1.0, 0.0]]), np.array([-0.95]))  # y1 = x1 − x2 ≤ −0.95 with x2 = 0: x1 ≤ −0.95
    prop = OutputDNFProperty(np.array([-0.9, 0.0]), np.array([1.0, 0.0]), (alt,))
    out = bab_verify(prop, net, 30.0)
    assert out.status is BabStatus.VERIFIED


# --------------------------------------------------------------------------------------------------
# hypothesis: never VERIFIED when a grid point violates
# --------------------------------------------------------------------------------------------------
GRID = 41


@st.composite
def dnf_cases(draw: st.DrawFn) -> tuple[Network, OutputDNFProperty, bool]:
    rng = np.random.default_rng(draw(st.integers(0, 2**32 - 1)))
    hidden = draw(st.lists(st.integers(2, 8), min_size=1, max_size=2))
    n_out = draw(st.integers(1, 3))
    sizes = [2, *hidden, n_out]
    f32 = lambda a: a.astype(np.float32).astype(np.float64)  # noqa: E731  (ONNX stores float32: lossless round trip)
    layers = [(f32(rng.normal(size=(b, a)) / np.sqrt(a)), f32(rng.normal(size=b) * 0.5))
              for a, b in itertools.pairwise(sizes)]
    net = network_from_layers(layers)
    lo = rng.uniform(-1, 0.5, size=2)
    hi = lo + rng.uniform(0.05, 1.5, size=2)
    axes = np.meshgrid(np.linspace(lo[0], hi[0], GRID), np.linspace(lo[1], hi[1], GRID))
    g = np.stack(axes, -1).reshape(-1, 2)
    y = net.evaluate(g)
    shift = draw(st.floats(-0.05, 0.05))
    alts = []
    for _ in range(draw(st.integers(1, 2))):
        m = draw(st.integers(1, 3))
        A = rng.normal(size=(m, n_out))
        vals = y @ A.T  # (G, m)
        star = int(np.argmin(vals.sum(axis=1)))  # a grid point deep in the alternative's region
        scale = np.ptp(vals, axis=0) + 1e-3
        alts.append((A, vals[star] + shift * scale))
    prop = OutputDNFProperty(lo, hi, tuple(alts))
    grid_violation = any(bool(np.all(y @ A.T <= b, axis=1).any()) for A, b in alts)
    return net, prop, grid_violation


@settings(max_examples=40, deadline=None, suppress_health_check=[HealthCheck.too_slow])
@given(case=dnf_cases())
def test_never_verified_when_grid_violates(case: tuple[Network, OutputDNFProperty, bool]) -> None:
    net, prop, grid_violation = case
    with tempfile.TemporaryDirectory() as d:
        net2 = saved(net, Path(d))
        for a, b in zip(net.affines, net2.affines):
            assert np.array_equal(a.W, b.W) and np.array_equal(a.b, b.b)
        out = bab_verify(prop, net2, 3.0, BabConfig(batch_size=64))
    if grid_violation:
        assert out.status is not BabStatus.VERIFIED
    if out.status is BabStatus.FALSIFIED:
        x = out.counterexample.x
        assert np.all(x >= prop.lo) and np.all(x <= prop.hi)
        # FALSIFIED is a violation on onnxruntime's float32 outputs at the float32 point x
        assert prop.violated({"net": x}, {"net": out.counterexample.y})
        np.testing.assert_allclose(out.counterexample.y, net.evaluate(x), rtol=1e-5, atol=1e-6)
    if out.status is BabStatus.UNDECIDED:  # the leaves cover every grid violation
        lv = out.leaves
        assert len(lv) > 0 and lv.lo.shape == (len(lv), 2)


# --------------------------------------------------------------------------------------------------
# the dispatcher hook
# --------------------------------------------------------------------------------------------------
def test_dispatch_uses_bab_and_hands_leaves_to_solver(tmp_path: Path) -> None:
    net = saved(kink_net(), tmp_path)
    prop = OutputDNFProperty(np.array([-1.0]), np.array([2.0]), (le(-0.25),))
    res = verify(prop, {"net": net}, DispatchConfig(backend="highs", timeout=60.0, bab=True))
    assert res.verdict is Verdict.VERIFIED and res.backend == "bab"
    # a vanishing BaB budget leaves the root box open: HiGHS must settle it
    cfg = DispatchConfig(backend="highs", timeout=60.0, bab=True, bab_fraction=1e-9)
    res = verify(prop, {"net": net}, cfg)
    assert res.verdict is Verdict.VERIFIED and res.backend == "bab+highs"
    assert res.stats["bab_leaves_to_solver"] >= 1
    # BaB off (explicitly, and by default with a named backend): the solver alone
    for bab in (False, None):
        cfg = DispatchConfig(backend="highs", timeout=60.0, bab=bab)
        res = verify(prop, {"net": net}, cfg)
        assert res.verdict is Verdict.VERIFIED and not res.backend.startswith("bab")


def test_dispatch_bab_falsifies(tmp_path: Path) -> None:
    net = saved(kink_net(), tmp_path)
    prop = OutputDNFProperty(np.array([-1.0]), np.array([2.0]), (le(0.001),))
    res = verify(prop, {"net": net}, DispatchConfig(backend="highs", timeout=60.0, samples=0, bab=True))
    assert res.verdict is Verdict.FALSIFIED
    assert -0.001 - 1e-12 <= float(res.counterexample.x[0]) <= 0.002 + 1e-12


# --------------------------------------------------------------------------------------------------
# ACAS Xu (VNN-COMP 2021)
# --------------------------------------------------------------------------------------------------
def _expected(root: Path) -> dict[tuple[str, str], str]:
    with open(root / "acasxu" / "expected.csv") as fh:
        return {(r[0], r[1]): r[2] for r in csv.reader(fh) if len(r) >= 3}


def _bab_instance(root: Path, onnx: str, vnnlib: str, budget: float) -> str:
    net = load_onnx(root / "acasxu" / onnx)
    outs = []
    for prop in vnnlib_properties(root / "acasxu" / vnnlib, net):
        out = bab_verify(prop, net, budget)
        outs.append(out.status)
        if out.status is BabStatus.FALSIFIED:
            return "sat"
    return "unsat" if all(s is BabStatus.VERIFIED for s in outs) else "undecided"


FAST = [
    ("ACASXU_run2a_1_2_batch_2000.onnx", "prop_1.vnnlib"),
    ("ACASXU_run2a_2_1_batch_2000.onnx", "prop_2.vnnlib"),
    ("ACASXU_run2a_1_7_batch_2000.onnx", "prop_3.vnnlib"),
    ("ACASXU_run2a_1_2_batch_2000.onnx", "prop_3.vnnlib"),
    ("ACASXU_run2a_1_9_batch_2000.onnx", "prop_4.vnnlib"),
    ("ACASXU_run2a_3_4_batch_2000.onnx", "prop_4.vnnlib"),
]


@pytest.mark.parametrize("onnx,vnnlib", FAST)
def test_acasxu_fast_instances_agree_with_expected(vnncomp_root: Path, onnx: str, vnnlib: str) -> None:
    assert _bab_instance(vnncomp_root, onnx, vnnlib, 116.0) == _expected(vnncomp_root)[(onnx, vnnlib)]


def test_acasxu_through_verify_vnnlib(vnncomp_root: Path) -> None:
    onnx, vnnlib = "ACASXU_run2a_1_2_batch_2000.onnx", "prop_4.vnnlib"
    res = verify_vnnlib(vnncomp_root / "acasxu" / onnx, vnncomp_root / "acasxu" / vnnlib,
                        DispatchConfig(backend="highs", timeout=116.0, bab=True))
    assert res.verdict.vnncomp == _expected(vnncomp_root)[(onnx, vnnlib)]
    assert res.backend in ("bab", "crown")


#: The slowest instance for BaB: 4_2 prop_2 (true slack ≈ 0.0011) needs ≈ 150,000 boxes, ≈ 70 s on
#: this 2-core machine when quiet — close enough to the 116 s limit that a loaded machine may not finish
#: it, so it alone may stay undecided here.  (Before the children inherited their parent's bounds and
#: before the 1e-9 floor was dropped from ``encoders.bounds.rounding_tolerance``, 3_3 and 1_1 prop_2
#: were undecided too.)
HARD = {("ACASXU_run2a_4_2_batch_2000.onnx", "prop_2.vnnlib")}


@pytest.mark.slow
def test_acasxu_all_180(vnncomp_root: Path) -> None:
    """All 180 instances with their own timeouts: 0 wrong, and only known hard ones undecided."""
    expected = _expected(vnncomp_root)
    with open(vnncomp_root / "acasxu" / "instances.csv") as fh:
        rows = [r for r in csv.reader(fh) if len(r) >= 3]
    assert len(rows) == 180
    wrong, undecided = [], set()
    for onnx, vnnlib, timeout in rows:
        got = _bab_instance(vnncomp_root, onnx, vnnlib, float(timeout))
        if got == "undecided":
            undecided.add((onnx, vnnlib))
        elif got != expected[(onnx, vnnlib)]:
            wrong.append((onnx, vnnlib, got))
    assert not wrong, wrong
    assert undecided <= HARD, sorted(undecided - HARD)


@settings(max_examples=200, deadline=None)
@given(st.lists(st.floats(allow_nan=False, width=64), min_size=1, max_size=20))
def test_float32_node_storage_rounds_outwards(values: list[float]) -> None:
    """Parent bounds are stored in float32: lower bounds never rise, upper bounds never fall."""
    from verifier.search.input_split import _down32, _up32

    a = np.asarray(values)
    with np.errstate(over="ignore"):
        assert np.all(_down32(a).astype(np.float64) <= a)
        assert np.all(_up32(a).astype(np.float64) >= a)
