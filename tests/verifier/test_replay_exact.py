"""Exact replay: a counterexample is the float32 point onnxruntime evaluated, inside the region by an
exact check (issue 12, item 1).

The float32 edge case: a 2-input network whose least real margin on the L∞ ball is
``f32(0.15) − (0.1 + 0.05) ≈ 5.96e-9 > 0`` (the property holds), but whose ball corner ``x1 = 0.1 + 0.05``
rounds to the float32 ``f32(0.15)``, *outside* the ball, where onnxruntime computes a tie (a violation).
Replay used to check the region on the float64 candidate and the violation on the rounded one, so MILP
backends answered FALSIFIED.  Now every backend must give the same, non-falsified answer.
"""

from __future__ import annotations

import json
import subprocess
import sys
from fractions import Fraction
from pathlib import Path

import numpy as np
import pytest

from encoders.bounds.rounding import f32, f32_toward, within_box, within_l2, within_linf
from encoders.network import load_onnx, network_from_layers, ort_evaluate, save_onnx
from encoders.properties import Disagreement, GlobalRobustness, LocalRobustness, OutputDNFProperty
from verifier.dispatch import DispatchConfig
from verifier.queries import verify_local
from verifier.replay import replay
from verifier.results import Verdict

ROOT = Path(__file__).resolve().parents[2]
X0 = np.array([0.1, 0.1])
EPS = 0.05
B15 = float(np.float32(0.15))  # 0.15000000596046448, the float32 nearest 0.15


def _edge_layers() -> list[tuple[np.ndarray, np.ndarray]]:
    """``y0 = 0``, ``y1 = relu(x1) + 2 relu(x2 − 0.09) − 2 relu(x2 − 0.09) − f32(0.15)``.

    On the ball ``x ∈ [0.05, 0.15]²`` the first ReLU is stably active and the other two cancel, so
    the margin ``y0 − y1 = f32(0.15) − x1`` is smallest at the corner ``x1 = 0.1 + 0.05``: about
    5.96e-9 > 0.  The two cancelling unstable ReLUs make CROWN too loose to prove it (so a solver is
    asked), and onnxruntime evaluates them exactly (both terms are identical).
    """
    W1 = np.array([[1.0, 0.0], [0.0, 1.0], [0.0, 1.0]])
    b1 = np.array([0.0, -0.09, -0.09])
    W2 = np.array([[0.0, 0.0, 0.0], [1.0, 2.0, -2.0]])
    b2 = np.array([0.0, -B15])
    return [(W1, b1), (W2, b2)]


@pytest.fixture(scope="module")
def edge(tmp_path_factory: pytest.TempPathFactory):
    d = tmp_path_factory.mktemp("edge")
    path = save_onnx(network_from_layers(_edge_layers()), d / "edge.onnx")
    np.save(d / "x0.npy", X0)
    return load_onnx(path), d


def test_edge_case_holds_in_real_arithmetic(edge) -> None:
    net, _ = edge
    # exact least margin on the ball: f32(0.15) − (0.1 + 0.05) with the float64 values of 0.1, 0.05
    least = Fraction(B15) - (Fraction(0.1) + Fraction(0.05))
    assert 5e-9 < least < 7e-9
    # the weights survived the ONNX round trip exactly (the margin argument uses them)
    assert float(net.affines[1].b[1]) == -B15
    prop = LocalRobustness(X0, EPS, 0)
    assert not prop.quick_check({"net": net})  # CROWN cannot prove it: a solver is needed


def test_rounded_corner_is_outside_the_ball_and_is_not_a_counterexample(edge) -> None:
    net, _ = edge
    prop = LocalRobustness(X0, EPS, 0)
    # the float64 corner fl(0.1 + 0.05) lies 1e-17 outside the real ball: the exact check knows it
    assert not prop.in_region(np.array([0.1 + 0.05, 0.05]))
    corner = np.array([np.nextafter(0.1 + 0.05, 0.0), 0.05])  # the ball's float64 corner
    assert prop.in_region(corner)
    rounded = f32(corner)
    assert rounded[0] == B15 and not prop.in_region(rounded)  # float32 rounding leaves the ball ...
    y = ort_evaluate(net.path, rounded.astype(np.float32))
    assert y[1] >= y[0]  # ... to a point where onnxruntime sees a violation (the old false FALSIFIED)
    rep = replay(prop, {"net": net}, {"net": corner})
    assert not rep.ok, rep
    assert "does not violate" in rep.reason


@pytest.mark.parametrize("backend", ["gurobi", "highs", "marabou", "z3", "auto", "portfolio"])
def test_edge_case_every_backend_agrees(edge, backend: str) -> None:
    net, _ = edge
    res = verify_local(net, X0, EPS, DispatchConfig(backend=backend, timeout=60.0))
    assert res.verdict is Verdict.VERIFIED, res


def test_edge_case_cli_gurobi_json(edge) -> None:
    _, d = edge
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
        str(EPS),
        "--backend",
        "gurobi",
        "--json",
    ]
    out = subprocess.run(cmd, cwd=ROOT, capture_output=True, text=True, timeout=120)
    assert out.returncode == 0, out.stderr
    assert json.loads(out.stdout)["verdict"] == "verified"


# --------------------------------------------------------------------------------------------------
# the counterexample is what onnxruntime evaluated
# --------------------------------------------------------------------------------------------------
def test_counterexample_is_the_evaluated_float32_point(tmp_path: Path) -> None:
    """A real violation near the ball's corner: the reported x is float32, inside the ball (exactly),
    and y is onnxruntime's output at exactly that x."""
    W1, b1 = np.eye(2), np.zeros(2)
    W2, b2 = np.array([[0.0, 0.0], [1.0, 0.0]]), np.array([0.0, -0.14])  # y1 ≥ y0 iff x1 ≥ 0.14
    net = load_onnx(save_onnx([(W1, b1), (W2, b2)], tmp_path / "n.onnx"))
    prop = LocalRobustness(X0, EPS, 0)
    rep = replay(prop, {"net": net}, {"net": np.array([0.1 + 0.05, 0.1])})
    assert rep.ok, rep
    x, y = rep.counterexample.x, rep.counterexample.y
    np.testing.assert_array_equal(x, f32(x))
    assert prop.in_region(x)
    assert all(abs(Fraction(float(a)) - Fraction(float(c))) <= Fraction(EPS) for a, c in zip(x, X0))
    np.testing.assert_array_equal(y, ort_evaluate(net.path, x.astype(np.float32)))
    assert rep.counterexample.to_json()["input_dtype"] == "float32"


def test_l2_candidate_on_the_sphere_is_moved_inside(tmp_path: Path) -> None:
    rng = np.random.default_rng(0)
    n = 20
    x0 = rng.uniform(0.2, 0.8, n)
    eps = 0.1
    prop = LocalRobustness(x0, eps, 0, "2")
    moved = 0
    for _ in range(200):
        d = rng.normal(size=n)
        x = x0 + d / np.linalg.norm(d) * eps  # on the sphere (up to float64 rounding)
        pt = prop.evaluated_point(prop.project({"net": x}))
        assert pt is not None
        y = pt["net"]
        np.testing.assert_array_equal(y, f32(y))
        exact = sum((Fraction(float(a)) - Fraction(float(c))) ** 2 for a, c in zip(y, x0))
        assert exact <= Fraction(eps) ** 2
        moved += not within_l2(f32(prop.project({"net": x})["net"]), x0, eps)
    assert moved > 0  # plain rounding leaves the ball for some of them (so the test can fail)


@pytest.mark.parametrize("norm", ["inf", "2"])
def test_pairs_coupled_after_rounding(norm: str) -> None:
    """Two-copy pairs at distance δ: the evaluated float32 pair is coupled exactly and in D."""
    rng = np.random.default_rng(1)
    n, delta = 6, 0.03
    lo, hi = np.zeros(n), np.ones(n)
    prop = GlobalRobustness(delta, 0.9, lo, hi, norm, 0)
    broke = 0
    for _ in range(300):
        a = rng.uniform(0.1, 0.9, n)
        d = rng.choice([-1.0, 1.0], n) * delta if norm == "inf" else rng.normal(size=n)
        if norm == "2":
            d = d / np.linalg.norm(d) * delta
        xs = prop.project({"a": a, "b": a + d})
        pts = prop.evaluated_point(xs)
        assert pts is not None
        for v in pts.values():
            np.testing.assert_array_equal(v, f32(v))
            assert np.all(within_box(v, lo, hi))
        diffs = [Fraction(float(p)) - Fraction(float(q)) for p, q in zip(pts["a"], pts["b"])]
        if norm == "inf":
            assert max(abs(t) for t in diffs) <= Fraction(delta)
        else:
            assert sum(t * t for t in diffs) <= Fraction(delta) ** 2
        broke += not prop.coupled(f32(xs["a"]), f32(xs["b"]))
    assert broke > 0  # plain rounding breaks the coupling for some pairs


def test_teacher_student_pair_shares_one_float32_input() -> None:
    x0 = np.array([0.1, 0.3, 0.7])
    prop = Disagreement(x0, 0.05, np.zeros(3), np.ones(3))
    pts = prop.evaluated_point(prop.project({"teacher": x0 + 0.05}))
    assert pts is not None
    np.testing.assert_array_equal(pts["teacher"], pts["student"])
    np.testing.assert_array_equal(pts["teacher"], f32(pts["teacher"]))
    assert prop.contains(pts)
    assert not prop.contains({"teacher": pts["teacher"], "student": pts["teacher"] + 1e-9})


def test_box_property_rounding_stays_in_box() -> None:
    lo, hi = np.array([0.1, 0.2]), np.array([0.3, 0.30000001])
    prop = OutputDNFProperty(lo, hi, ((np.eye(2), np.ones(2)),))
    pts = prop.evaluated_point({"net": hi.copy()})
    assert pts is not None and np.all(pts["net"] <= hi) and np.all(pts["net"] >= lo)
    assert not np.all(f32(hi) <= hi)  # plain rounding leaves the box here


# --------------------------------------------------------------------------------------------------
# the exact checks themselves
# --------------------------------------------------------------------------------------------------
def test_within_linf_and_l2_agree_with_fractions() -> None:
    rng = np.random.default_rng(2)
    for _ in range(300):
        n = int(rng.integers(1, 6))
        c = rng.uniform(-1, 1, n)
        r = float(rng.uniform(1e-3, 0.5))
        d = rng.normal(size=n)
        x = c + d / np.max(np.abs(d)) * r  # on the L∞ sphere up to rounding
        x = x + rng.integers(-2, 3, n) * np.spacing(x)  # a few ulps either way
        exact = [abs(Fraction(float(a)) - Fraction(float(b))) <= Fraction(r) for a, b in zip(x, c)]
        assert list(within_linf(x, c, r)) == exact
        y = c + d / np.linalg.norm(d) * r
        y = y + rng.integers(-2, 3, n) * np.spacing(y)
        ex2 = sum((Fraction(float(a)) - Fraction(float(b))) ** 2 for a, b in zip(y, c)) <= Fraction(r) ** 2
        assert within_l2(y, c, r) == ex2


def test_f32_toward_moves_one_float32_step() -> None:
    x = f32(np.array([0.15, 0.5, 0.7]))
    t = np.array([0.0, 0.5, 1.0])
    y = f32_toward(x, t)
    assert y[0] == np.nextafter(np.float32(x[0]), np.float32(0)) and y[1] == x[1]
    assert y[2] == np.nextafter(np.float32(x[2]), np.float32(1))
    np.testing.assert_array_equal(f32_toward(x, t, np.array([False, False, False])), x)
