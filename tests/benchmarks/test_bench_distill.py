"""Benchmarks synthetic-sigmoid, faithfulness and kdiga-transfer (quick mode), and their helpers.

The quick runs are the real benchmark code paths on tiny data; the assertions check what the outputs
mean, against independent computations where one exists (the analytic truth of the sigmoid teacher by
the interval formula over the input box, FAITHUB against sampled points and the unbatched bound).
"""

from __future__ import annotations

import csv
import dataclasses
import json
import math
from pathlib import Path

import numpy as np
import pytest

BOX = 3.0


def _read_csv(path: Path) -> list[dict[str, str]]:
    with open(path, newline="") as fh:
        return list(csv.DictReader(fh))


def _png_ok(path: Path) -> bool:
    return path.is_file() and path.stat().st_size > 2000 and path.read_bytes()[:8] == b"\x89PNG\r\n\x1a\n"


# --------------------------------------------------------------------------------------------------
# common helpers
# --------------------------------------------------------------------------------------------------
def test_write_csv_json_summary_roundtrip(tmp_path):
    from benchmarks.common import md_table, write_csv, write_json, write_summary

    rows = [{"a": 0.1, "b": True, "c": "x"}, {"a": float("nan"), "d": np.int64(3)}]
    p = write_csv(tmp_path / "t.csv", rows)
    got = _read_csv(p)
    assert list(got[0]) == ["a", "b", "c", "d"]
    assert float(got[0]["a"]) == 0.1 and got[0]["b"] == "true" and got[1]["d"] == "3" and got[1]["c"] == ""
    j = write_json(tmp_path / "r.json", {"x": np.float32(0.5), "y": [np.inf], "z": np.arange(2)})
    assert json.loads(j.read_text()) == {"x": 0.5, "y": [None], "z": [0, 1]}
    s = write_summary(tmp_path, "T", [("H", md_table(["k", "v"], [["a", 1.23456]]))])
    text = s.read_text()
    assert text.startswith("# T\n") and "## H" in text and "| a | 1.235 |" in text and "cores" in text


def test_cached_model_reuses_only_same_key(tmp_path):
    import torch

    from benchmarks.common import cached_model
    from distill.models import mlp_from_spec

    calls = []

    def build():
        calls.append(1)
        torch.manual_seed(len(calls))
        return mlp_from_spec("3-4-2"), {"n": len(calls)}

    m1, info1, r1 = cached_model(tmp_path / "m.pt", {"k": 1}, build)
    m2, info2, r2 = cached_model(tmp_path / "m.pt", {"k": 1}, build)
    assert (r1, r2) == (False, True) and len(calls) == 1 and info2 == {"n": 1}
    x = torch.rand(5, 3)
    assert torch.allclose(m1(x), m2(x))
    _, info3, r3 = cached_model(tmp_path / "m.pt", {"k": 2}, build)
    assert not r3 and len(calls) == 2 and info3 == {"n": 2}


def test_cli_table_lists_these_benchmarks():
    import importlib

    from benchmarks.cli import BENCHMARKS

    for name in ("synthetic-sigmoid", "faithfulness", "kdiga-transfer"):
        assert callable(importlib.import_module(BENCHMARKS[name]).run)


# --------------------------------------------------------------------------------------------------
# synthetic-sigmoid: analytic truth
# --------------------------------------------------------------------------------------------------
def _interval_not_robust(X: np.ndarray, r: float) -> np.ndarray:
    """L∞, independent of the distance formula: x·1 ranges over [Σ max(x_i−r, −3), Σ min(x_i+r, 3)] on
    B_r(x) ∩ [-3, 3]²; the teacher is not r-robust iff that range reaches 0 (ties count)."""
    smin = np.maximum(X - r, -BOX).sum(axis=1)
    smax = np.minimum(X + r, BOX).sum(axis=1)
    s = X.sum(axis=1)
    return np.where(s > 0, smin <= 0, smax >= 0)


@pytest.mark.parametrize("r", [0.0, 0.05, 0.25, 1.0, 2.9])
def test_boundary_distance_matches_interval_formula_on_box(r):
    from benchmarks.synthetic_sigmoid import boundary_distance

    rng = np.random.default_rng(1)
    X = rng.uniform(-BOX, BOX, size=(20000, 2))
    X = X[np.abs(X.sum(axis=1)) > 1e-9]
    assert np.array_equal(boundary_distance(X, "inf") <= r, _interval_not_robust(X, r))


@pytest.mark.parametrize("norm", ["inf", "2"])
def test_global_robustness_formula_against_dense_grid(norm):
    """Brute force on a fine grid of the box: a violation is a grid point with conf >= κ whose ball
    reaches the hyperplane (L∞ via the interval formula, L2 via the projection (x1−x2)/2·(1,−1), which
    lies in the box)."""
    from benchmarks.synthetic_sigmoid import teacher_confidence, teacher_globally_robust

    g = np.linspace(-BOX, BOX, 241)
    X = np.stack(np.meshgrid(g, g), -1).reshape(-1, 2)
    s = X.sum(axis=1)
    for a in (0.5, 2.0, 8.0):
        for kappa in (0.55, 0.7, 0.9, 0.99):
            for delta in (0.1, 0.25, 0.6):
                conf = teacher_confidence(a, X) >= kappa
                if norm == "inf":
                    reach = _interval_not_robust(X, delta)
                else:
                    proj = np.stack([(X[:, 0] - X[:, 1]) / 2, (X[:, 1] - X[:, 0]) / 2], 1)
                    assert np.all(np.abs(proj) <= BOX)
                    reach = np.linalg.norm(X - proj, axis=1) <= delta
                brute_violation = bool(np.any(conf & reach))
                robust = teacher_globally_robust(a, kappa, delta, norm)
                # the grid can miss a thin violating band, never invent one
                if brute_violation:
                    assert not robust, (a, kappa, delta)
                t = math.log(kappa / (1 - kappa)) / a
                qn = 2.0 if norm == "inf" else math.sqrt(2)
                if not robust and delta * qn - t > 0.1:  # a band wide enough for the grid to hit
                    assert brute_violation, (a, kappa, delta)
                assert np.all(np.abs(s[conf]) >= t - 1e-9)


@pytest.fixture(scope="module")
def sigmoid_quick(tmp_path_factory):
    from benchmarks.synthetic_sigmoid import run

    out = tmp_path_factory.mktemp("syn")
    return run(quick=True, out=out, seed=0, progress=False), out


def test_synthetic_sigmoid_quick_is_sound(sigmoid_quick):
    from distill.data import load_dataset

    res, out = sigmoid_quick
    for f in ("settings.csv", "results.json", "summary.md"):
        assert (out / f).is_file()
    assert _png_ok(out / "fig1.png") and _png_ok(out / "pipeline.png")
    h = res["headline"]
    assert h["unsound"] == 0  # the headline requirement
    assert h["overclaimed_points_in_certified"] == 0 and h["fake_witnesses"] == 0
    rows = res["rows"]
    assert len(rows) == len(_read_csv(out / "settings.csv")) == 6
    verdicts = {r["verdict"] for r in rows}
    assert verdicts == {"certified", "refused"}  # the grid exercises both outcomes

    # independent check of every certified claim: exact mass over the training inputs, interval formula
    pool = load_dataset("gaussians2d", 0).X_train.astype(np.float64)
    for r in rows:
        conf = 1.0 / (1.0 + np.exp(-r["a"] * np.abs(pool.sum(axis=1))))
        mass = float(np.mean((conf >= r["kappa"]) & _interval_not_robust(pool, r["teacher_radius"])))
        assert mass == pytest.approx(r["claim_mass"], abs=1e-12)
        if r["verdict"] == "certified":
            assert mass <= r["claim_bound"], r
            assert r["local_falsified"] == 0 and r["teacher_witnesses"] == 0
    # a grossly non-robust teacher (steep, low κ) must be refused, with a real teacher counterexample
    steep = next(r for r in rows if r["a"] == 8.0 and r["kappa"] == 0.6)
    assert not steep["teacher_globally_robust"] and steep["verdict"] == "refused"
    assert "teacher_falsified" in steep["reasons"] and steep["teacher_witnesses"] > 0
    # the agreement marker is the comparison it claims to be
    for r in rows:
        if r["student_global"] in ("verified", "falsified"):
            same = (r["student_global"] == "verified") == r["teacher_globally_robust"]
            assert (r["agreement"] == "agree") == same
    assert "Unsound settings: 0" in (out / "summary.md").read_text()


def test_synthetic_sigmoid_rejects_uncheckable_guarantee(tmp_path):
    from benchmarks.synthetic_sigmoid import QUICK, run
    from encoders.errors import ConfigError

    bad = dataclasses.replace(QUICK, guarantee="seed")
    with pytest.raises(ConfigError, match="guarantee"):
        run(quick=True, out=tmp_path, seed=0, progress=False, config=bad)


# --------------------------------------------------------------------------------------------------
# faithfulness: bounds
# --------------------------------------------------------------------------------------------------
def _tiny_pair(seed: int = 0):
    import torch

    from distill.models import affine_layers, mlp_from_spec
    from encoders.network import network_from_layers

    torch.manual_seed(seed)
    t, s = mlp_from_spec("5-12-12-4"), mlp_from_spec("5-6-4")
    return t, s, network_from_layers(affine_layers(t)), network_from_layers(affine_layers(s))


def test_faithub_batch_equals_unbatched_and_bounds_samples():
    import torch

    from benchmarks.faithfulness import faithub_batch
    from encoders.properties import faithub_crown

    t, s, tn, sn = _tiny_pair()
    rng = np.random.default_rng(0)
    X = rng.uniform(0, 1, size=(6, 5))
    eps = 0.15
    lo, hi = np.maximum(X - eps, 0), np.minimum(X + eps, 1)
    fb = faithub_batch(tn, sn, lo, hi)
    for i in range(len(X)):
        assert fb[i] == pytest.approx(faithub_crown(tn, sn, lo[i], hi[i]), rel=1e-12, abs=1e-15)
        pts = rng.uniform(lo[i], hi[i], size=(4000, 5))
        with torch.no_grad():
            x = torch.from_numpy(pts).float()
            d = (torch.softmax(t(x).double(), 1) - torch.softmax(s(x).double(), 1)).abs().amax(1).numpy()
        assert d.max() <= fb[i] + 1e-6
        assert 0.0 <= fb[i] <= 1.0


def test_decoupling_floor_between_clean_gap_and_faithub():
    import torch

    from benchmarks.faithfulness import decoupling_floor, faithub_batch

    t, s, tn, sn = _tiny_pair(1)
    X = np.random.default_rng(2).uniform(0.2, 0.8, size=(5, 5)).astype(np.float32)
    eps = 0.1
    floor = decoupling_floor(t, s, X, eps, (0.0, 1.0), steps=20, restarts=1, seed=0)
    with torch.no_grad():
        x = torch.from_numpy(X).double()
        clean = (torch.softmax(t.double()(x), 1) - torch.softmax(s.double()(x), 1)).abs().amax(1).numpy()
    X64 = X.astype(np.float64)
    fb = faithub_batch(tn, sn, np.maximum(X64 - eps, 0), np.minimum(X64 + eps, 1))
    assert np.all(floor >= clean - 1e-6)  # the clean point is a candidate of every PGD run
    assert np.all(floor <= fb + 1e-6)  # FAITHUB encloses each network's softmax range


@pytest.fixture(scope="module")
def faith_quick(tmp_path_factory):
    from benchmarks.faithfulness import run

    out = tmp_path_factory.mktemp("faith")
    return run(quick=True, out=out, seed=0, progress=False), out


def test_faithfulness_quick_outputs(faith_quick):
    res, out = faith_quick
    for f in ("table1.csv", "table2.csv", "points.csv", "results.json", "summary.md"):
        assert (out / f).is_file()
    for f in ("fig2_digits.png", "ratio_digits.png", "robust_digits.png"):
        assert _png_ok(out / f)
    t1 = _read_csv(out / "table1.csv")
    assert [r["model"] for r in t1] == ["teacher", "SD", "ARD", "RSLAD", "FD", "KDIGA"]
    for r in t1:
        vals = [float(r[k]) for k in r if k == "clean" or k.startswith("pgd@")]
        assert all(0.0 <= v <= 1.0 for v in vals)
    assert float(t1[0]["clean"]) >= 0.8  # the PGD-AT teacher learned something even in quick mode
    t2 = _read_csv(out / "table2.csv")
    assert len(t2) == 5 * 2
    for r in t2:
        assert int(r["bound_violations"]) == 0
        assert 0.0 <= float(r["agreement"]) <= 1.0
        assert float(r["emplb_mean"]) <= float(r["faithub_mean"]) <= 1.0
    pts = _read_csv(out / "points.csv")
    tol = 1e-6  # PGD's float32 projection (see faithfulness.VIOLATION_TOL)
    assert pts and all(float(p["emplb"]) <= float(p["faithub"]) + tol for p in pts)
    for p in pts:
        if p["floor"]:
            assert float(p["emplb"]) <= float(p["floor"]) <= float(p["faithub"]) + tol
        if p["faithub_split"]:
            assert float(p["emplb"]) <= float(p["faithub_split"]) + tol
    h = res["headline"]
    assert h["available"] and h["ratio_pooled"] >= 1.0 and h["bound_violations"] == 0
    d = h["decomposition"]
    assert d["floor_over_emplb"] >= 1.0 and d["faithub_over_floor"] >= 1.0 - 1e-6
    assert "FAITHUB/EMPLB mean ratio" in (out / "summary.md").read_text()


# --------------------------------------------------------------------------------------------------
# kdiga-transfer
# --------------------------------------------------------------------------------------------------
def test_kdiga_transfer_quick_outputs(tmp_path):
    from benchmarks.kdiga_transfer import run

    res = run(quick=True, out=tmp_path, seed=0, progress=False)
    for f in ("runs.csv", "table.csv", "results.json", "summary.md"):
        assert (tmp_path / f).is_file()
    assert _png_ok(tmp_path / "robust.png")
    table = {r["model"]: r for r in res["table"]}
    assert set(table) == {"teacher (PGD-AT)", "KD", "KDIGA", "KDIGA-ARD_C", "KDIGA-ARD_A", "ARD"}
    for r in table.values():
        assert 0.0 <= r["clean_mean"] <= 1.0 and 0.0 <= r["pgd@0.1_mean"] <= 1.0
    assert table["teacher (PGD-AT)"]["clean_mean"] >= 0.8
    # KDIGA minimises the alignment term; KD does not: the measured term must show it
    assert table["KDIGA"]["iga_mean"] < table["KD"]["iga_mean"]
    assert -1.0 <= table["KDIGA"]["grad_cos_mean"] <= 1.0
    assert res["headline"]["kdiga_minus_kd"] == pytest.approx(
        table["KDIGA"]["pgd@0.1_mean"] - table["KD"]["pgd@0.1_mean"]
    )
    assert "KDIGA − KD" in (tmp_path / "summary.md").read_text()
