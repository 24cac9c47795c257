"""Distillation aimed at Eq. 13: the hinge, the exact check, and :func:`distill_for_eq13`."""

from __future__ import annotations

import numpy as np
import pytest
import torch

from distill.data import load_dataset
from distill.losses import (
    DistillConfig,
    Eq13Config,
    distill_for_eq13,
    eq13_check,
    eq13_hinge,
    log_error_mass,
)
from distill.train import train_teacher
from encoders.errors import ConfigError


def _softmax(z: np.ndarray) -> np.ndarray:
    e = np.exp(z - z.max(1, keepdims=True))
    return e / e.sum(1, keepdims=True)


def test_log_error_mass_is_log_one_minus_p() -> None:
    rng = np.random.default_rng(0)
    z = rng.standard_normal((50, 5)) * 3
    c = rng.integers(0, 5, 50)
    q = log_error_mass(torch.from_numpy(z), torch.from_numpy(c)).numpy()
    p = _softmax(z)[np.arange(50), c]
    np.testing.assert_allclose(q, np.log1p(-p), rtol=1e-10, atol=1e-12)
    # where 1 - p underflows in float64 the log-space value is still exact
    z = np.array([[60.0, 0.0, 0.0]])
    q = log_error_mass(torch.from_numpy(z), torch.tensor([0])).item()
    assert q == pytest.approx(-60.0 + np.log(2.0), abs=1e-9)


def test_hinge_zero_implies_eq13_and_agreement() -> None:
    rng = np.random.default_rng(1)
    ft = rng.standard_normal((4000, 4)) * 3
    fs = ft * rng.uniform(0.5, 3.0, (4000, 1)) + rng.standard_normal((4000, 4)) * 0.3
    for scope in ("confident", "all", "kappa"):
        h = eq13_hinge(torch.from_numpy(fs), torch.from_numpy(ft), 0.6, scope, margin=0.01, agree_margin=0.0)
        h = h.numpy()
        zero = h == 0
        assert 100 < zero.sum() < len(h)  # the test exercises both sides
        chk = eq13_check(ft[zero], fs[zero], 0.6, scope)
        assert chk["holds"], (scope, chk)


def test_hinge_scopes() -> None:
    ft = torch.tensor([[3.0, 0.0, 0.0], [0.2, 0.0, 0.0]])  # confident, not confident (kappa 0.8)
    fs = torch.tensor([[1.0, 0.0, 0.0], [0.1, 0.0, 0.0]])  # less confident at both
    conf = eq13_hinge(fs, ft, 0.8, "confident", margin=0.0, agree_margin=0.0)
    assert conf[0] > 0 and conf[1] == 0
    allh = eq13_hinge(fs, ft, 0.8, "all", margin=0.0, agree_margin=0.0)
    assert allh[0] > 0 and allh[1] > 0
    # kappa: the target is kappa itself; p_S = e/(e+2) = 0.576 < 0.8
    kap = eq13_hinge(fs, ft, 0.8, "kappa", margin=0.0, agree_margin=0.0)
    assert kap[0] == pytest.approx(np.log1p(-0.5761168847658291) - np.log1p(-0.8), rel=1e-6)
    # a disagreeing student is penalised by the agreement term even when confident enough elsewhere
    bad = torch.tensor([[0.0, 9.0, 0.0]])
    assert eq13_hinge(bad, ft[:1], 0.8, "kappa", margin=0.0, agree_margin=0.0) > 0
    with pytest.raises(ConfigError):
        eq13_hinge(fs, ft, 0.8, "nope")


def test_eq13_check_counts() -> None:
    zt = np.array([[4.0, 0, 0], [4.0, 0, 0], [0.1, 0, 0]])
    zs = np.array([[5.0, 0, 0], [3.0, 0, 0], [0, 2.0, 0]])
    r = eq13_check(zt, zs, 0.9, "confident")
    assert (r["n_confident"], r["n_checked"], r["violations"], r["disagreements"]) == (2, 2, 1, 0)
    assert not r["holds"] and r["worst_gap"] < 0
    r = eq13_check(zt, zs[[0, 0, 2]], 0.9, "confident")
    assert r["holds"]  # the unconfident third sample is out of scope
    assert not eq13_check(zt, zs[[0, 0, 2]], 0.9, "all")["holds"]


@pytest.fixture(scope="module")
def digits_setup():
    torch.manual_seed(0)
    d = load_dataset("digits")
    res = train_teacher(d, arch="64-48-10", epochs=6, progress=False)
    X = d.X_train[np.random.default_rng(0).integers(0, len(d.X_train), 400)]
    return d, res.model, X


def test_plain_distillation_fails_eq13_and_the_hinge_reaches_it(digits_setup, tmp_path) -> None:
    from distill.export import export_onnx
    from encoders.network import load_onnx

    d, teacher, X = digits_setup
    export_onnx(teacher, tmp_path / "t.onnx", 64)
    z_t = load_onnx(tmp_path / "t.onnx").evaluate(X.astype(np.float64))  # as the certifier sees the teacher
    base = dict(kappa=0.9, method="sd", epochs=30, distill=DistillConfig(), seed=0)
    _, plain = distill_for_eq13(
        teacher, X, Eq13Config(hinge_weight=0.0, max_rounds=1, **base), domain=d.domain
    )
    assert not plain.holds and plain.final["violations"] > 0 and plain.rounds == 1
    student, rep = distill_for_eq13(
        teacher, X, Eq13Config(hinge_weight=1.0, max_rounds=4, **base), domain=d.domain, teacher_logits=z_t
    )
    assert rep.holds and rep.final["violations"] == 0 and rep.final["disagreements"] == 0
    assert 1 <= rep.rounds <= 4 and len(rep.hinge_weights) == rep.rounds == len(rep.violations)
    assert all(b == a * 4.0 for a, b in zip(rep.hinge_weights, rep.hinge_weights[1:]))
    assert rep.to_dict()["final"]["holds"] is True
    # independent check on the exported student through the network IR, as the certifier does it
    export_onnx(student, tmp_path / "s.onnx", 64)
    z_s = load_onnx(tmp_path / "s.onnx").evaluate(X.astype(np.float64))
    chk = eq13_check(z_t, z_s, 0.9, "confident")
    assert chk["holds"] and chk["n_confident"] == rep.final["n_confident"]
    with pytest.raises(ConfigError, match="teacher_logits"):
        distill_for_eq13(teacher, X, Eq13Config(**base), teacher_logits=z_t[:5])


def test_distill_for_eq13_takes_an_imported_cnn_teacher(tmp_path) -> None:
    from distill.models import zoo_model
    from distill.teacher import load_teacher

    torch.manual_seed(0)
    d = load_dataset("digits")
    T = load_teacher(zoo_model("cnn-small", (1, 8, 8), 10), export_path=tmp_path / "c.onnx")
    X = d.X_train[:200]
    student, rep = distill_for_eq13(
        T, X, Eq13Config(kappa=0.15, method="sd", epochs=3, max_rounds=2), domain=d.domain
    )
    assert student(torch.zeros(1, 64)).shape == (1, 10)
    assert rep.rounds in (1, 2) and rep.final["n_checked"] == rep.final["n_confident"]
    assert rep.holds == (rep.final["violations"] == 0 and rep.final["disagreements"] == 0)


@pytest.mark.parametrize(
    "kw",
    [{"kappa": 1.0}, {"scope": "some"}, {"method": "nope"}, {"hinge_weight": -1.0}, {"growth": 0.5},
     {"max_rounds": 0}, {"round_lr": 0.0}],
)  # fmt: skip
def test_config_validation(kw) -> None:
    with pytest.raises(ConfigError):
        Eq13Config(**kw).validate()


def test_precomputed_teacher_terms_give_the_same_losses(digits_setup) -> None:
    """The cached teacher logits/gradients of :func:`distill_for_eq13` reproduce the live SD and KDIGA."""
    from distill.losses import kdiga, sd, teacher_input_gradient
    from distill.models import mlp_from_spec

    _, teacher, X = digits_setup
    torch.manual_seed(1)
    student = mlp_from_spec("64-16-10")
    x = torch.from_numpy(X[:32])
    with torch.no_grad():
        ft = teacher(x)
    y = ft.argmax(1)
    cfg = DistillConfig()
    gt = teacher_input_gradient(teacher, x, y)
    torch.testing.assert_close(
        kdiga(student, teacher, x, y, cfg), kdiga(student, teacher, x, y, cfg, ft=ft, gt=gt)
    )
    torch.testing.assert_close(sd(student, teacher, x, y, cfg), sd(student, teacher, x, y, cfg, ft=ft))


def test_cli_distill_eq13(digits_setup, tmp_path, capsys) -> None:
    import json

    from distill.export import save_checkpoint
    from distill.train import model_meta
    from verifier.cli.main import main

    d, teacher, _ = digits_setup
    save_checkpoint(teacher, tmp_path / "t.pt", model_meta(d, {"arch": "64-48-10", "seed": 0}))
    argv = ["distill", "--teacher", tmp_path / "t.pt", "--method", "sd", "--epochs", "20",
            "--eq13-kappa", "0.9", "--eval-steps", "0", "--out", tmp_path / "s", "--no-progress"]  # fmt: skip
    assert main([str(a) for a in argv]) == 0
    assert "Eq. 13 (confident, kappa 0.9) on the training points" in capsys.readouterr().out
    assert main([str(a) for a in argv] + ["--json"]) == 0
    res = json.loads(capsys.readouterr().out)
    assert res["eq13"]["final"]["scope"] == "confident" and res["eq13"]["rounds"] >= 1
    assert res["eq13"]["holds"] == (
        res["eq13"]["final"]["violations"] == 0 and res["eq13"]["final"]["disagreements"] == 0
    )
    assert (tmp_path / "s" / "student.onnx").is_file()
