"""The certifier (verifier.certify): configuration, sampling, the lift's ρ, batched CROWN, the teacher
cross-check, and end-to-end runs on gaussians2d with seed 000's analytic sigmoid teacher, where the truth is
known exactly.

Analytic truth.  The teacher's logits are ``(a·s, 0)`` with ``s = x1 + x2``; it predicts class 0 iff
``s > 0`` and its confidence is ``σ(a|s|)``.  Over the L∞ ball ``B_r(x) ∩ [-3, 3]²`` the sum ranges over
``[Σ max(x_i − r, −3), Σ min(x_i + r, 3)]``, so the teacher is r-robust at x iff that interval does not
reach 0 (ties count as violations).  The binomial guarantee is about the empirical distribution of the
training inputs, so its violation probability is an exact average over them.
"""

from __future__ import annotations

import json
import math
from pathlib import Path

import numpy as np
import pytest

from encoders.errors import ConfigError
from encoders.network import load_onnx, network_from_layers

BOX = 3.0



@pytest.fixture(autouse=True, scope="module")
def _one_torch_thread():
    """Small MLPs: one torch thread avoids synchronisation overhead on a shared 2-core machine."""
    import torch

    n = torch.get_num_threads()
    torch.set_num_threads(1)
    yield
    torch.set_num_threads(n)

# --------------------------------------------------------------------------------------------------
# helpers
# --------------------------------------------------------------------------------------------------
def _sigmoid_teacher_onnx(a: float, path: Path) -> Path:
    from distill.data import load_dataset
    from distill.export import export_onnx
    from distill.models import SigmoidTeacher

    d = load_dataset("gaussians2d", 0)
    export_onnx(
        SigmoidTeacher(a, 2),
        path,
        2,
        {"dataset": "gaussians2d", "input_domain": {"lo": d.domain_lo.tolist(), "hi": d.domain_hi.tolist()}},
    )
    return path


def _truth_violation_rate(a: float, kappa: float, r: float) -> float:
    """Pr over the training inputs of gaussians2d of [teacher conf >= kappa and teacher not r-robust (L∞)]."""
    from distill.data import load_dataset

    X = load_dataset("gaussians2d", 0).X_train.astype(np.float64)
    s = X.sum(axis=1)
    conf = 1.0 / (1.0 + np.exp(-a * np.abs(s)))
    smin = np.maximum(X - r, -BOX).sum(axis=1)
    smax = np.minimum(X + r, BOX).sum(axis=1)
    not_robust = (smin <= 0.0) & (smax >= 0.0)
    return float(np.mean((conf >= kappa) & not_robust))


def _small(**kw):
    from verifier.certify import CertifyConfig

    base = dict(
        data="gaussians2d",
        kappa=0.9,
        guarantee="binomial",
        epsilon=0.05,
        eta=0.05,
        epochs=10,
        distill_on="pool",
        student_arch="2-16-16-2",
        global_timeout=30.0,
        local_timeout=10.0,
        local_budget=60.0,
        pgd_steps=20,
        pgd_restarts=2,
    )
    base.update(kw)
    return CertifyConfig(**base)


_TIMING = ("time_s", "durations_s", "timestamps", "seconds_s", "crown_points_per_s", "source")


def _strip(obj):
    if isinstance(obj, dict):
        return {k: _strip(v) for k, v in obj.items() if k not in _TIMING}
    if isinstance(obj, list):
        return [_strip(v) for v in obj]
    return obj


# --------------------------------------------------------------------------------------------------
# configuration, sample size, sampling
# --------------------------------------------------------------------------------------------------
@pytest.mark.parametrize(
    "kw, word",
    [
        ({"epsilon": 0.0}, "--epsilon"),
        ({"epsilon": 0.6}, "--epsilon"),
        ({"eta": 0.51}, "--eta"),
        ({"kappa": 1.0}, "--kappa"),
        ({"kappa": 0.0}, "--kappa"),
        ({"delta": 0.0}, "--delta"),
        ({"delta": -1.0}, "--delta"),
        ({"norm": "1"}, "--norm"),
        ({"guarantee": "pac"}, "--guarantee"),
        ({"guarantee": "binomial", "teacher_radius": "min"}, "teacher-radius"),
        ({"epochs": 0}, "--epochs"),
        ({"tv_shift": 1.5}, "--tv-shift"),
        ({"global_query": "yes"}, "--global-query"),
    ],
)
def test_config_rejects_bad_values(kw, word):
    from verifier.certify import CertifyConfig

    with pytest.raises(ConfigError, match=word):
        CertifyConfig(**kw)


def test_config_from_mapping_names_unknown_key():
    from verifier.certify import CertifyConfig

    with pytest.raises(ConfigError, match="unknown key 'deltaa'"):
        CertifyConfig.from_mapping({"deltaa": 0.1}, "run.toml")
    c = CertifyConfig.from_mapping({"student-arch": "64-16-10", "delta": 1, "norm": "L2"})
    assert c.student_arch == "64-16-10" and c.delta == 1.0 and isinstance(c.delta, float) and c.norm == "2"


def test_choose_kind_auto_takes_smallest_and_matches_pac():
    from verifier.certify import CertifyConfig, choose_kind, pac

    c = CertifyConfig(epsilon=0.01, eta=0.01)
    ch = choose_kind(c, 64)
    assert ch["kind"] == "binomial" and ch["s"] == math.ceil(math.log(100) / 0.01) == 461
    seed = choose_kind(c.replace(guarantee="seed"), 64)
    assert seed["d"] == 128 and seed["s"] == pac.seed_sample_size(0.01, 0.01, 128)
    q = choose_kind(c.replace(guarantee="quality"), 64)
    assert q["d"] == 2 and q["s"] == pac.quality_space_sample_size(0.01, 0.01)
    assert ch["s"] < q["s"] < seed["s"]
    with pytest.raises(ConfigError, match="below"):
        choose_kind(c.replace(samples=100), 64)
    assert choose_kind(c.replace(samples=1000), 64)["s"] == 1000


def test_draw_sample_seeded_and_honest():
    from verifier.certify import draw_sample

    a = draw_sample(10, 50, 3, "empirical")
    assert len(a) == 50 and a.min() >= 0 and a.max() < 10  # with replacement: more samples than points
    assert np.array_equal(a, draw_sample(10, 50, 3, "empirical"))
    assert not np.array_equal(a, draw_sample(10, 50, 4, "empirical"))
    h = draw_sample(10, 7, 0, "heldout")
    assert len(set(h.tolist())) == 7
    with pytest.raises(ConfigError, match="only 10 points"):
        draw_sample(10, 11, 0, "heldout")


# --------------------------------------------------------------------------------------------------
# rho, CROWN, cross-check on hand-built networks
# --------------------------------------------------------------------------------------------------
def test_margin_gradient_ratio_by_hand():
    import torch

    from distill.models import SigmoidTeacher, sequential_from_affines
    from verifier.certify import margin_gradient_ratio

    t = SigmoidTeacher(3.0, 2)  # margin grad (3, 3): L1 norm 6, L2 norm 3√2
    W1 = np.array([[1.0, 0.0], [0.0, 1.0], [-1.0, 0.0], [0.0, -1.0]])
    W2 = np.array([[2.0, 2.0, -2.0, -2.0], [0.0, 0.0, 0.0, 0.0]])  # = 2·(x1 + x2): margin grad (2, 2)
    s = sequential_from_affines([(W1, np.zeros(4)), (W2, np.zeros(2))])
    X = np.array([[0.5, 0.2], [-1.0, 0.3]])
    labels = np.array([0, 1])
    rho = margin_gradient_ratio(t, s, X, labels, "inf")
    np.testing.assert_allclose(rho, [4.0 / 6.0, 4.0 / 6.0])
    np.testing.assert_allclose(
        margin_gradient_ratio(t, s, X, labels, "2"), [2 * math.sqrt(2) / (3 * math.sqrt(2))] * 2
    )
    assert torch.is_grad_enabled()


def test_crown_local_matches_analytic_on_linear_net():
    from verifier.certify import Balls, crown_local

    net = network_from_layers([(np.array([[1.0, 1.0], [0.0, 0.0]]), np.zeros(2))])  # margin = s
    X = np.array([[0.3, 0.3], [0.3, 0.3], [-0.5, 0.1]])
    labels = np.array([0, 0, 1])
    radii = np.array([0.29, 0.31, 0.19])
    dom = (np.full(2, -3.0), np.full(2, 3.0))
    # s = 0.6 is robust iff 2r < 0.6; s = -0.4 iff 2r < 0.4
    assert crown_local(net, Balls(X, labels, radii, "inf", dom)).tolist() == [True, False, True]


def test_teacher_crosscheck_finds_only_real_attacks(tmp_path):
    from distill.export import load_model
    from verifier.certify import Attack, Balls, teacher_crosscheck

    p = _sigmoid_teacher_onnx(20.0, tmp_path / "t.onnx")
    net, model = load_onnx(p), load_model(p)
    X = np.array([[0.1, 0.05], [0.1, 0.05], [1.0, 1.0]])  # s = 0.15, 0.15, 2.0
    radii = np.array([0.1, 0.07, 0.5])  # 2r = 0.2 (> 0.15: attackable), 0.14 (< 0.15: robust), 1.0 (< 2)
    dom = (np.full(2, -3.0), np.full(2, 3.0))
    w = teacher_crosscheck(
        model, net, Balls(X, np.zeros(3, dtype=np.int64), radii, "inf", dom), Attack(steps=20, restarts=2)
    )
    assert [x["i"] for x in w] == [0]
    x = np.asarray(w[0]["x"])
    assert np.max(np.abs(x - X[0])) <= 0.1 and x.sum() <= 0.0  # a real crossing, inside the ball


# --------------------------------------------------------------------------------------------------
# end to end: gaussians2d with the analytic teacher
# --------------------------------------------------------------------------------------------------
@pytest.fixture(scope="module")
def certified_run(tmp_path_factory):
    from verifier.certify import certify

    d = tmp_path_factory.mktemp("cert_ok")
    t = _sigmoid_teacher_onnx(1.0, d / "sig.onnx")
    cfg = _small(delta=0.1)
    return cfg, certify(t, cfg, d / "out", progress=False), d / "out"


@pytest.fixture(scope="module")
def refused_run(tmp_path_factory):
    from verifier.certify import certify

    d = tmp_path_factory.mktemp("cert_bad")
    t = _sigmoid_teacher_onnx(20.0, d / "sig.onnx")
    cfg = _small(delta=0.5, global_timeout=10.0)
    return cfg, certify(t, cfg, d / "out", progress=False), d / "out"


def test_certified_where_teacher_is_robust(certified_run):
    cfg, cert, out = certified_run
    truth = _truth_violation_rate(1.0, cfg.kappa, cert["guarantee"]["teacher_radius"])
    assert truth == 0.0  # logit(0.9)/1 = 2.197 > 2·0.1: every confident point is robust
    assert cert["verdict"] == "certified", cert["reasons"]
    assert cert["guarantee"]["kind"] == "binomial" and cert["guarantee"]["teacher_radius"] == cfg.delta
    assert cert["guarantee"]["epsilon_achieved"] <= cfg.epsilon
    assert cert["data"]["sample_size"] == math.ceil(math.log(1 / cfg.eta) / cfg.epsilon)
    assert all(q["verdict"] == "verified" for q in cert["local_queries"])
    assert "CERTIFIED" in cert["guarantee"]["text"] and "0.1-robust" in cert["guarantee"]["text"]
    on_disk = json.loads((out / "certificate.json").read_text())
    assert on_disk["schema"] == "distillcert.certificate/2" and on_disk["verdict"] == "certified"
    report = (out / "report.md").read_text()
    assert report.startswith("# distillcert certificate: **CERTIFIED**")
    for png in ("confidence.png", "rho.png", "samples.png"):
        assert (out / png).stat().st_size > 1000 and png in report


def test_refused_where_teacher_is_not_robust(refused_run):
    cfg, cert, out = refused_run
    truth = _truth_violation_rate(20.0, cfg.kappa, cfg.delta)
    assert truth > 3 * cfg.epsilon  # logit(0.9)/20 = 0.11 < 2·0.5: many confident points are not robust
    assert cert["verdict"] == "refused"
    codes = {r["code"] for r in cert["reasons"]}
    assert "teacher_falsified" in codes  # the analytic teacher is linear: PGD must find its real attacks
    wit = [c for c in cert["counterexamples"] if c["kind"] == "teacher_pgd"]
    assert wit
    for w in wit:  # each witness is a genuine analytic violation inside its ball
        x, x0 = np.asarray(w["x"]), np.asarray(w["x0"])
        assert np.max(np.abs(x - x0)) <= w["radius"] + 1e-12
        assert (x.sum() <= 0) == (w["label"] == 0) or x.sum() == 0
    assert "REFUSED" in cert["guarantee"]["text"]
    assert (out / "report.md").read_text().startswith("# distillcert certificate: **REFUSED**")


def test_quality_kind_certified_statement_is_true(tmp_path):
    """Quality-space kind (radius read off the sample, rule 'min'): when certified, the stated
    Pr[conf >= kappa and not r_T-robust] < epsilon holds on the empirical distribution."""
    from verifier.certify import certify

    t = _sigmoid_teacher_onnx(2.0, tmp_path / "sig.onnx")
    cfg = _small(delta=0.1, guarantee="quality", epsilon=0.5, eta=0.5, epochs=20)
    cert = certify(t, cfg, tmp_path / "out", progress=False)
    p = cert["parameters"]
    assert p["guarantee_kind"] == "quality" and p["radius_rule"] == "min" and p["d"] == 2
    r_t = cert["guarantee"]["teacher_radius"]
    lifted = [q["lifted_radius"] for q in cert["local_queries"]]
    assert r_t == pytest.approx(min(lifted)) and r_t <= cfg.delta
    assert cert["verdict"] == "certified", cert["reasons"]  # logit(0.9)/2 = 1.1 > 2·0.1
    assert _truth_violation_rate(2.0, cfg.kappa, r_t) < cfg.epsilon


def test_resume_does_not_redo_journaled_queries(tmp_path, monkeypatch):
    """Every confident sample goes to the solver path (no global query, no batched CROWN); a rerun in the same
    folder reuses the student and every journaled query; a fresh folder gives the same certificate."""
    import verifier.certify as vc
    import verifier.certify.verify as vverify

    t = _sigmoid_teacher_onnx(1.0, tmp_path / "sig.onnx")
    cfg = _small(delta=0.1, global_query=False, local_crown=False, epochs=10, epsilon=0.1, eta=0.1)
    calls: list[int] = []
    real = vverify.verify_many

    def counting(tasks, *a, **k):
        tasks = list(tasks)
        calls.append(len(tasks))
        return real(tasks, *a, **k)

    monkeypatch.setattr(vverify, "verify_many", counting)
    first = vc.certify(t, cfg, tmp_path / "out", progress=False)
    n_conf = first["data"]["n_confident"]
    unique = {(q["index"], q["radius"]) for q in first["local_queries"]}  # repeated draws share one query
    assert n_conf > 0 and sum(calls) == len(unique) <= n_conf
    assert all(q["verdict"] != "pending" and q["by"] for q in first["local_queries"])
    journal = (tmp_path / "out" / "journal.jsonl").read_text().splitlines()
    assert len(journal) == len(unique)

    import distill.losses

    def no_distill(*a, **k):
        raise AssertionError("the student must be reused, not distilled again")

    monkeypatch.setattr(distill.losses, "distill_student", no_distill)
    calls.clear()
    second = vc.certify(t, cfg, tmp_path / "out", progress=False)
    assert sum(calls) == 0
    assert len((tmp_path / "out" / "journal.jsonl").read_text().splitlines()) == len(unique)
    assert _strip(second) == _strip(first)
    monkeypatch.undo()

    fresh = vc.certify(t, cfg, tmp_path / "out2", progress=False)
    assert _strip(fresh) == _strip(first)  # same seed -> same certificate, timing aside
