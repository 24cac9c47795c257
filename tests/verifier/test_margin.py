"""Per-alternative margin MILPs (``verifier.search.relu_split``) against dense grids and VNN-COMP instances.

* 2-input networks: the verdict must agree with a dense grid whose answer is *certain* — a grid point
  with margin ≥ 0 is a violation; when the best grid margin plus a Lipschitz bound times the grid's
  covering radius is still < 0 there is none; cases in between are skipped.  Every path is exercised:
  CROWN pruning, the attacks, β-CROWN branch and bound (attacks off; with and without α-CROWN
  tightening), the MILP (branch and bound off) on Gurobi and on HiGHS, with and without the
  monotone relaxation; each test asserts that the step under test itself decided both verified
  and falsified cases (and that branch and bound had to split), so it cannot pass vacuously.
* The monotone relaxation is exact: the MILP optimum (largest margin) is the same with and without
  it, with fewer binaries.
* Replay is the gate: a FALSIFIED counterexample violates the property on onnxruntime's outputs.
* :class:`BabSearch` paused and resumed after every round reaches the same verdicts.
* Four real mnistfc 256x2 instances (2 sat, 2 unsat) decided correctly against ``expected.csv``.
"""

from __future__ import annotations

import csv
import itertools
import time
from pathlib import Path

import numpy as np
import pytest

from encoders.bounds import crown_bounds
from encoders.bounds.alpha import tighten_bounds
from encoders.errors import ConfigError
from encoders.network import Network, load_onnx, network_from_layers, ort_evaluate, save_onnx
from encoders.properties import LocalRobustness, OutputDNFProperty
from verifier.dispatch import DispatchConfig
from verifier.queries import vnnlib_properties
from verifier.results import Verdict
from verifier.search.relu_split import (
    BabConfig,
    BabSearch,
    MarginConfig,
    alternatives_of,
    encode_alternative,
    solve_output_property,
)

GRID = 241


def _net(tmp: Path, rng: np.random.Generator, sizes: list[int], name: str) -> Network:
    layers = [(rng.normal(size=(b, a)).astype(np.float32).astype(np.float64),
               rng.normal(size=b).astype(np.float32).astype(np.float64))
              for a, b in itertools.pairwise(sizes)]
    return load_onnx(save_onnx(layers, tmp / f"{name}.onnx"))


def _lipschitz_linf(net: Network, A: np.ndarray) -> np.ndarray:
    """Per row r: |Δ(A_r f)| ≤ Lip_r · ‖Δx‖∞ (product of absolute weight matrices)."""
    M = np.abs(A)
    for a in reversed(net.affines):
        M = M @ np.abs(a.W)
    return M.sum(axis=1)


def _grid_truth(net: Network, lo: np.ndarray, hi: np.ndarray, alts) -> bool | None:
    """True: violated (a grid point is); False: certainly safe; None: too close to call."""
    axes = np.meshgrid(np.linspace(lo[0], hi[0], GRID), np.linspace(lo[1], hi[1], GRID))
    g = np.stack(axes, -1).reshape(-1, 2)
    y = net.evaluate(g)
    radius = float(np.max(hi - lo)) / (GRID - 1) / 2  # every box point is this close (L∞) to a grid point
    best = -np.inf
    slack = 0.0
    for A, b in alts:
        m = np.min(b[None, :] - y @ A.T, axis=1)  # margin of the alternative at each grid point
        best = max(best, float(m.max()))
        slack = max(slack, float(_lipschitz_linf(net, A).max()) * radius)
    if best >= 0:
        return True
    if best + slack < -1e-6:
        return False
    return None


def _cases(tmp: Path, n: int, seed: int):
    """``n`` cases with a certain grid answer, about half violated; of the safe ones all but two are
    beyond CROWN (its quick check fails), so that the later steps have work to do."""
    rng = np.random.default_rng(seed)
    out = []
    easy_safe = 0
    tries = 0
    while len(out) < n:
        tries += 1
        i = len(out)
        wide = int(rng.integers(8, 17))
        sizes = [2, wide, int(rng.integers(6, 13)), 3] if i % 3 else [2, 2 * wide, 3]
        layers = [(rng.normal(size=(b, a)).astype(np.float32).astype(np.float64),
                   rng.normal(size=b).astype(np.float32).astype(np.float64))
              for a, b in itertools.pairwise(sizes)]
        net = network_from_layers(layers)
        x0 = rng.uniform(-1, 1, 2)
        eps = float(rng.uniform(0.05, 0.6))
        if i % 2:
            prop = LocalRobustness(x0, eps, int(np.argmax(net.evaluate(x0))))
        else:  # a two-row alternative and a one-row one
            A1 = rng.normal(size=(2, 3))
            b1 = A1 @ net.evaluate(x0) + rng.uniform(-1.0, 0.5, 2)
            A2 = rng.normal(size=(1, 3))
            b2 = A2 @ net.evaluate(x0) + rng.uniform(-1.5, 0.0, 1)
            prop = OutputDNFProperty(x0 - eps, x0 + eps, ((A1, b1), (A2, b2)))
        easy = prop.quick_check({"net": net})
        if easy and easy_safe >= 2:
            continue
        alts = alternatives_of(prop, 3)
        lo, hi = prop.box() if hasattr(prop, "box") else (prop.lo, prop.hi)
        y = net.evaluate(rng.uniform(lo, hi, (400, 2)))
        sampled = any(np.any(np.all(y @ A.T <= b, axis=1)) for A, b in alts)  # a violating sample: certain
        if sampled and sum(t for *_, t in out) >= (n + 1) // 2:
            continue
        truth = True if sampled else _grid_truth(net, lo, hi, alts)
        if truth is None or (truth is True and sum(t for *_, t in out) >= (n + 1) // 2):
            continue
        easy_safe += easy
        out.append((load_onnx(save_onnx(layers, tmp / f"n{seed}_{tries}.onnx")), prop, truth))
    return out


@pytest.fixture(scope="module")
def grid_cases(tmp_path_factory: pytest.TempPathFactory):
    return _cases(tmp_path_factory.mktemp("grid"), 24, seed=7)


CONFIGS = {  # name: (dispatch config, margin config, the step that must decide some cases of each kind)
    "default": (DispatchConfig(), MarginConfig(), None),
    "bab": (DispatchConfig(samples=0), MarginConfig(milp_first=0, bab_budget=None), "bab"),
    "bab-fsb": (DispatchConfig(samples=0), MarginConfig(milp_first=0, bab_budget=None,
                                                        bab=BabConfig(candidates=4, refine=False)), "bab"),
    "bab-untightened": (DispatchConfig(samples=0),
                        MarginConfig(tighten=False, milp_first=0, bab_budget=None), "bab"),
    # every alternative still open after one slice of branch and bound gets a MILP child that races it
    "race": (DispatchConfig(samples=0), MarginConfig(milp_first=0, bab_budget=0.0, bab_slice=1e-3), None),
    "race-2": (DispatchConfig(samples=0),
               MarginConfig(milp_first=0, bab_budget=0.0, bab_slice=1e-3, milp_jobs=2), None),
    "milp-gurobi": (DispatchConfig(samples=0, backend="gurobi"), MarginConfig(use_bab=False), "gurobi"),
    "milp-highs": (DispatchConfig(samples=0, backend="highs"), MarginConfig(use_bab=False), "highs"),
    "milp-plain": (DispatchConfig(samples=0, backend="highs"),
                   MarginConfig(use_bab=False, tighten=False, monotone=False), "highs"),
}


@pytest.mark.parametrize("name", list(CONFIGS))
def test_agrees_with_dense_grid(grid_cases, name: str) -> None:
    dcfg, mcfg, decider = CONFIGS[name]
    if dcfg.backend == "gurobi":
        pytest.importorskip("gurobipy")
    decided = {Verdict.VERIFIED: 0, Verdict.FALSIFIED: 0}
    split = handoffs = 0
    for net, prop, violated in grid_cases:
        res = solve_output_property(prop, net, dcfg, time.perf_counter() + 60.0, mcfg)
        assert res is not None
        assert res.verdict in (Verdict.VERIFIED, Verdict.FALSIFIED), res.message
        assert (res.verdict is Verdict.FALSIFIED) == violated, (name, res.message)
        if res.verdict is Verdict.FALSIFIED:
            x = res.counterexample.x
            y = np.asarray(ort_evaluate(net.path, x)).reshape(-1)
            assert prop.violated({"net": x}, {"net": y})
        if decider is not None and decider in res.backend.split("+"):
            decided[res.verdict] += 1
            split += any(r.get("bab_rounds", 0) > 0 for r in res.stats.get("per_alt", {}).values())
        handoffs += any(r.get("handoff") for r in res.stats.get("per_alt", {}).values())
    if name.startswith("race"):
        assert handoffs > 0, "no alternative was handed to a MILP: the race was not exercised"
    if decider is not None:
        assert decided[Verdict.VERIFIED] > 0 and decided[Verdict.FALSIFIED] > 0, decided
    if decider == "bab":
        assert split > 0, "branch and bound never had to split: the test did not exercise it"


def test_bab_resumed_in_tiny_slices_reaches_the_same_verdicts(grid_cases) -> None:
    """:class:`BabSearch` paused after every round (deadline already passed) and resumed."""
    seen = set()
    for net, prop, violated in grid_cases:
        lo, hi = prop.box() if hasattr(prop, "box") else (prop.lo, prop.hi)
        bounds = tighten_bounds(net, lo, hi)
        for alt in alternatives_of(prop, 3):
            if alt[0].shape[0] != 1:
                continue
            search = BabSearch(prop, net, lo, hi, bounds, alt, BabConfig(batch=2))
            for _ in range(10_000):
                out = search.advance(time.perf_counter() - 1.0)
                if search.finished is not None:
                    break
            assert search.finished is not None
            if out.verdict is Verdict.VERIFIED:
                seen.add("verified")
                A, b = alt
                g = np.stack(np.meshgrid(np.linspace(lo[0], hi[0], 101), np.linspace(lo[1], hi[1], 101)), -1)
                assert np.all(net.evaluate(g.reshape(-1, 2)) @ A[0] > b[0] - 1e-9)
            elif out.verdict is Verdict.FALSIFIED:
                seen.add("falsified")
                assert violated
    assert seen == {"verified", "falsified"}


@pytest.mark.parametrize("sizes", [[2, 8, 8, 3], [2, 6, 5, 6, 3]])
def test_monotone_relaxation_is_exact(tmp_path: Path, sizes: list[int]) -> None:
    """Largest margin with the relaxation = without it = the dense grid's (Gurobi to optimality), with
    fewer binaries; two and three hidden layers (the first layer is encoded with explicit variables)."""
    gp = pytest.importorskip("gurobipy")
    from verifier.backends.gurobi import GurobiBackend

    del gp
    rng = np.random.default_rng(11)
    fewer = 0
    for i in range(10):
        net = _net(tmp_path, rng, sizes, f"m{len(sizes)}_{i}")
        lo, hi = -np.ones(2), np.ones(2)
        b = crown_bounds(net, lo, hi)
        A = np.zeros((1, 3))
        A[0, 0], A[0, 1 + i % 2] = 1.0, -1.0  # alternative: y0 − yj ≤ b  (margin = b − y0 + yj)
        y = net.evaluate(rng.uniform(lo, hi, (2000, 2)))
        alt = (A, np.array([float(np.quantile(y @ A[0], 0.2))]))  # feasible: some samples violate it
        values = []
        for mono in (False, True):
            prog, info = encode_alternative(net, lo, hi, b.lower, b.upper, alt, monotone=mono, objective=True)
            out = GurobiBackend().solve(prog, 60.0)
            assert out.objective is not None
            values.append(out.objective)
            if mono:
                fewer += info.relaxed_last > 0
        assert values[1] == pytest.approx(values[0], abs=1e-6 * (1 + abs(values[0])))
        g = np.stack(np.meshgrid(np.linspace(-1, 1, 401), np.linspace(-1, 1, 401)), -1).reshape(-1, 2)
        grid_max = float(np.max(alt[1][0] - net.evaluate(g) @ A[0]))
        slack = float(_lipschitz_linf(net, A)[0]) * (2 / 400) / 2
        assert grid_max - 1e-6 <= values[0] <= grid_max + slack + 1e-6
    assert fewer > 0, "no case had a relaxable neuron: the test did not exercise the relaxation"


def test_bad_config() -> None:
    with pytest.raises(ConfigError):
        BabConfig(batch=0)
    with pytest.raises(ConfigError):
        MarginConfig(bab_slice=0.0)


def test_unhandled_queries_return_none(tmp_path: Path) -> None:
    rng = np.random.default_rng(0)
    net = _net(tmp_path, rng, [2, 4, 3], "u")
    l2 = LocalRobustness(np.zeros(2), 0.1, 0, norm="2")
    assert solve_output_property(l2, net, DispatchConfig(), time.perf_counter() + 10) is None
    linf = LocalRobustness(np.zeros(2), 0.1, 0)
    assert solve_output_property(linf, net, DispatchConfig(backend="z3"), time.perf_counter() + 10) is None


def test_deadline_in_the_past_times_out_or_decides_cheaply(tmp_path: Path) -> None:
    rng = np.random.default_rng(5)
    for i in range(6):
        net = _net(tmp_path, rng, [2, 12, 12, 3], f"d{i}")
        prop = LocalRobustness(np.zeros(2), 1.0, int(np.argmax(net.evaluate(np.zeros(2)))))
        res = solve_output_property(prop, net, DispatchConfig(samples=0), time.perf_counter() - 1.0)
        assert res is not None
        assert res.verdict in (Verdict.TIMEOUT, Verdict.VERIFIED), res.message
        if res.verdict is Verdict.VERIFIED:
            assert res.backend in ("crown", "alpha-crown")


# --------------------------------------------------------------------------------------------------
# real instances
# --------------------------------------------------------------------------------------------------
MNIST = ["prop_7_0.03", "prop_0_0.05", "prop_0_0.03", "prop_13_0.03"]  # 2 sat, 2 unsat (branch and bound)


@pytest.mark.parametrize("inst", MNIST)
def test_mnistfc_instances(vnncomp_root: Path, inst: str) -> None:
    pytest.importorskip("gurobipy")
    folder = vnncomp_root / "mnistfc"
    with open(folder / "expected.csv") as fh:
        expected = {r[1]: r[2] for r in csv.reader(fh) if len(r) >= 3}
    net = load_onnx(folder / "mnist-net_256x2.onnx")
    (prop,) = vnnlib_properties(folder / f"{inst}.vnnlib", net)
    res = solve_output_property(prop, net, DispatchConfig(), time.perf_counter() + 120.0, MarginConfig())
    assert res is not None
    assert res.verdict.vnncomp == expected[f"{inst}.vnnlib"], res.message
    if res.verdict is Verdict.VERIFIED:  # these two need a search (branch and bound or the MILP):
        assert set(res.backend.split("+")) & {"bab", "gurobi", "highs"}, res.backend  # not CROWN alone
