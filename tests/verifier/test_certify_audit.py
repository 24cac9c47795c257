"""The lift cannot be inflated, and it is audited (verifier.certify.lift, .audit, .decide).

* A logit-scaled student (``a · f_S``, a > 1: more confident, not more robust) leaves the default
  ``prop43m`` factor unchanged — ``μ_j`` shrinks by ``1/a`` exactly as ``ρ_j`` grows by ``a`` — while the
  ``prop43`` factor grows; the inflation test (:func:`verifier.certify.lift.inflated`) catches the latter
  and :func:`verifier.certify.decide.decide` refuses it.
* The lift audit verifies the teacher directly at its lifted radius: on seed 000's analytic teacher
  (logits ``(20 s, 0)``, ``s = x1 + x2``), the ball ``B_r(x)`` (L∞) is robust iff ``2r < |s|``, so the
  claims below are true or false by hand.
* A non-robust configuration (standard-trained digits teacher, δ = 0.3) ends REFUSED with PGD witnesses
  that ``distillcert check`` replays.
"""

from __future__ import annotations

from types import SimpleNamespace

import numpy as np
import pytest

from encoders.network import load_onnx


@pytest.fixture(autouse=True, scope="module")
def _one_torch_thread():
    import torch

    n = torch.get_num_threads()
    torch.set_num_threads(1)
    yield
    torch.set_num_threads(n)


def _mlp(seed: int, widths: list[int]):
    import torch

    from distill.models import sequential_from_affines

    rng = np.random.default_rng(seed)
    aff = [
        (rng.normal(size=(b, a)) / np.sqrt(a), rng.normal(size=b) * 0.1) for a, b in zip(widths, widths[1:])
    ]
    m = sequential_from_affines(aff)
    torch.manual_seed(seed)
    return m, aff


def _logits(model, X):
    import torch

    with torch.no_grad():
        return model.double()(torch.tensor(X)).numpy()


# --------------------------------------------------------------------------------------------------
# the lift cannot be inflated by scaling the student's logits
# --------------------------------------------------------------------------------------------------
def test_logit_scaled_student_does_not_raise_the_default_lift():
    from distill.models import sequential_from_affines
    from verifier.certify.lift import inflated, lift_factor, margin_gradient_ratios

    teacher, _ = _mlp(0, [4, 16, 3])
    student, aff = _mlp(1, [4, 12, 3])
    W, b = aff[-1]
    scaled = sequential_from_affines(aff[:-1] + [(3.0 * W, 3.0 * b)])  # logits x3: more confident
    X = np.random.default_rng(2).uniform(-1, 1, size=(64, 4))
    zt, zs, zs3 = _logits(teacher, X), _logits(student, X), _logits(scaled, X)
    c = zt.argmax(axis=1)
    agree = zs.argmax(axis=1) == c  # where the student puts the teacher's class first
    assert agree.sum() >= 8
    rho = margin_gradient_ratios(teacher, student, X, c, "inf")
    rho3 = margin_gradient_ratios(teacher, scaled, X, c, "inf")
    finite = np.isfinite(rho)
    np.testing.assert_allclose(rho3[finite], 3.0 * rho[finite], rtol=1e-5)  # float32 weights

    m = lift_factor("prop43m", rho, zt, zs, c)
    m3 = lift_factor("prop43m", rho3, zt, zs3, c)
    np.testing.assert_allclose(m3, m, rtol=1e-5, atol=1e-12)  # the default lift: unchanged
    assert np.all(m[~agree] == 0.0)  # no claim where the student does not agree

    p = lift_factor("prop43", rho, zt, zs, c)
    p3 = lift_factor("prop43", rho3, zt, zs3, c)
    assert np.all(p3 >= p) and np.any(p3[agree] > 1.2 * p[agree])  # prop43 is inflated by the scaling
    # ... and the inflation test catches it wherever the claim grew beyond the margin-corrected factor
    flagged = [inflated(a, b, 0.05) for a, b in zip(p3[agree], m3[agree])]
    assert any(flagged)
    assert not any(inflated(a, a, 0.05) for a in m3)  # prop43m is never flagged against itself


def _cert(queries, lift="prop43m", tol=0.05):
    """The smallest record set :func:`decide` reads (binomial kind, fixed radius rule)."""
    return {
        "parameters": {
            "guarantee_kind": "binomial",
            "radius_rule": "fixed",
            "base_radius": 0.1,
            "delta": 0.1,
            "eta": 0.1,
            "epsilon": 0.1,
            "tv_shift": 0.0,
            "lift": lift,
            "lift_tolerance": tol,
        },
        "steps": {"eq13": {"holds": True}},
        "local_queries": queries,
        "counterexamples": [],
        "data": {"sample_size": 100},
    }


def _q(i, factor, factor_m, audit="confirmed"):
    return {
        "i": i,
        "verdict": "verified",
        "radius": 0.1 / factor,
        "lifted_radius": 0.1,
        "lift_factor": factor,
        "lift_factor_m": factor_m,
        "audit": audit,
    }


def test_decide_refuses_an_inflated_lift_and_a_refuted_claim():
    from verifier.certify import decide

    ok = decide(_cert([_q(0, 0.5, 0.5), _q(1, 0.8, 0.78)]))
    assert ok["verdict"] == "certified", ok["reasons"]  # 0.8 <= 1.05 * 0.78
    bad = decide(_cert([_q(0, 0.5, 0.5), _q(1, 0.9, 0.6)], lift="prop43"))
    assert bad["verdict"] == "refused" and [r["code"] for r in bad["reasons"]] == ["lift_inflated"]
    assert "1.5x" in bad["reasons"][0]["text"]
    ref = decide(_cert([_q(0, 0.5, 0.5), _q(1, 0.5, 0.5, audit="refuted")]))
    assert ref["verdict"] == "refused" and [r["code"] for r in ref["reasons"]] == ["lift_refuted"]


# --------------------------------------------------------------------------------------------------
# the lift audit on an analytic teacher
# --------------------------------------------------------------------------------------------------
def _audit_setup(tmp_path, a: float = 20.0):
    from distill.data import load_dataset
    from distill.export import export_onnx
    from distill.models import SigmoidTeacher
    from verifier.certify import CertifyConfig
    from verifier.certify.context import RunContext

    d = load_dataset("gaussians2d", 0)
    p = tmp_path / "sig.onnx"
    export_onnx(
        SigmoidTeacher(a, 2), p, 2, {"input_domain": {"lo": d.domain_lo.tolist(), "hi": d.domain_hi.tolist()}}
    )
    cfg = CertifyConfig(data="gaussians2d", local_timeout=10.0, audit_budget=30.0)
    ctx = RunContext.create(tmp_path, d, progress=False)
    return cfg, ctx, SimpleNamespace(net=load_onnx(p), sha256="sig20"), ctx.domain


def test_lift_audit_confirms_true_claims_and_refutes_false_ones(tmp_path):
    from verifier.certify import Balls
    from verifier.certify.audit import lift_audit

    cfg, ctx, teacher, dom = _audit_setup(tmp_path)
    X = np.array([[0.1, 0.05], [0.1, 0.05], [1.0, 1.0], [0.3, 0.3]])  # s = 0.15, 0.15, 2, 0.6
    radii = np.array([0.1, 0.07, 0.5, 0.5])  # 2r = 0.2 > 0.15 (false), 0.14 (true), 1 < 2 (true), 1 > 0.6
    claimed = np.array([True, True, True, False])  # no claim at the last sample
    rec, outcome, cex = lift_audit(
        cfg, ctx, teacher, Balls(X, np.zeros(4, np.int64), radii, "inf", dom), claimed
    )
    assert outcome.tolist() == ["refuted", "confirmed", "confirmed", "not claimed"]
    assert (rec["claims"], rec["confirmed"], rec["refuted"], rec["undecided"]) == (3, 2, 1, 0)
    assert rec["fraction_confirmed"] == pytest.approx(2 / 3)
    assert [c["j"] for c in cex] == [0]
    x = np.asarray(cex[0]["x"])
    assert np.max(np.abs(x - X[0])) <= 0.1 + 1e-12 and x.sum() <= 0.0  # a real crossing inside the ball


def test_lift_audit_says_not_checkable_without_an_ir(tmp_path):
    from verifier.certify import Balls
    from verifier.certify.audit import lift_audit

    cfg, ctx, _, dom = _audit_setup(tmp_path)
    teacher = SimpleNamespace(net=None, sha256="cnn")
    X = np.array([[0.1, 0.05], [1.0, 1.0]])
    rec, outcome, cex = lift_audit(
        cfg, ctx, teacher, Balls(X, np.zeros(2, np.int64), np.full(2, 0.1), "inf", dom), np.ones(2, bool)
    )
    assert rec["checkable"] is False and "not directly checkable" in rec["text"]
    assert outcome.tolist() == ["not checkable"] * 2 and cex == [] and rec["fraction_confirmed"] is None


# --------------------------------------------------------------------------------------------------
# a non-robust configuration still ends REFUSED, with witnesses that replay
# --------------------------------------------------------------------------------------------------
def test_standard_teacher_at_large_delta_is_refused_with_replayed_witnesses(tmp_path):
    from verifier.certify import CertifyConfig, check_certificate
    from verifier.certify.run import run

    cfg = CertifyConfig(
        teacher_adv_eps=0.0,  # standard training
        teacher_epochs=10,
        delta=0.3,  # five grey levels of the 8x8 digits in every pixel at once
        epochs=10,
        eq13_hinge=0.0,
        eq13_rounds=1,
        global_query=False,
        local_budget=5.0,
        local_timeout=2.0,
        audit_budget=5.0,
        pgd_steps=20,
        pgd_restarts=2,
    )
    cert = run(cfg, tmp_path, progress=False)
    assert cert["verdict"] == "refused"
    codes = {r["code"] for r in cert["reasons"]}
    assert "teacher_falsified" in codes
    wit = [c for c in cert["counterexamples"] if c["kind"] == "teacher_pgd"]
    assert wit and cert["steps"]["crosscheck"]["adversarial"] == len(wit)
    res = check_certificate(tmp_path / "certificate.json", recheck=2, timeout=2.0)
    assert res["ok"], res["text"]
    assert any(c["check"] == "counterexamples replay" and c["ok"] for c in res["checks"])
