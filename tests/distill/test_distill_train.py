"""Teacher training (standard and PGD-AT) and the digits targets of issue 5 (the latter marked slow)."""

from __future__ import annotations

import numpy as np
import pytest
import torch

from distill.attacks import robust_accuracy
from distill.data import load_dataset
from distill.export import load_model
from distill.losses import distill_student
from distill.models import predict
from distill.train import train_teacher
from encoders.errors import ConfigError


@pytest.fixture(autouse=True)
def _one_thread():
    n = torch.get_num_threads()
    torch.set_num_threads(1)
    yield
    torch.set_num_threads(n)


@pytest.fixture(scope="module")
def digits():
    return load_dataset("digits", seed=0)


def test_quick_standard_and_adversarial_training(digits, tmp_path) -> None:
    """Ten real epochs: both teachers learn digits; PGD-AT buys clearly more PGD accuracy."""
    std = train_teacher(digits, arch="64-32-10", epochs=10, attack_steps=5, progress=False, seed=0)
    adv = train_teacher(
        digits,
        arch="64-32-10",
        adv_eps=0.1,
        epochs=10,
        attack_steps=5,
        progress=False,
        seed=0,
        checkpoint=str(tmp_path / "adv.pt"),
    )
    assert std.test_accuracy > 0.9 and adv.test_accuracy > 0.9
    r_std = robust_accuracy(std.model, digits.X_test, digits.y_test, 0.1, steps=10, domain=digits.domain)
    r_adv = robust_accuracy(adv.model, digits.X_test, digits.y_test, 0.1, steps=10, domain=digits.domain)
    assert r_adv > r_std + 0.1
    assert len(adv.history) == 10 and adv.history[-1]["lr"] == pytest.approx(0.0, abs=1e-12)  # cosine to 0
    back = load_model(tmp_path / "adv.pt")
    np.testing.assert_array_equal(predict(back, digits.X_test), predict(adv.model, digits.X_test))
    assert back.meta["training"]["adv_eps"] == 0.1 and back.meta["dataset"] == "digits"


def test_training_is_deterministic_in_the_seed(digits) -> None:
    a, b, c = (
        train_teacher(digits, arch="64-8-10", adv_eps=0.05, epochs=1, attack_steps=2, progress=False, seed=s)
        for s in (1, 1, 2)
    )
    for p, q in zip(a.model.parameters(), b.model.parameters()):
        assert torch.equal(p, q)
    assert not all(torch.equal(p, q) for p, q in zip(a.model.parameters(), c.model.parameters()))


@pytest.mark.parametrize(
    ("kw", "needle"),
    [
        ({"adv_eps": -0.1}, "--adv-eps"),
        ({"arch": "64-32-9"}, "--arch"),
        ({"arch": "63-10"}, "--arch"),
        ({"epochs": 0}, "--epochs"),
        ({"arch": "64-a-10"}, "--arch"),
    ],
)
def test_train_teacher_rejects_bad_options(digits, kw, needle) -> None:
    with pytest.raises(ConfigError, match=needle):
        train_teacher(digits, progress=False, **kw)


@pytest.mark.slow
def test_digits_targets_of_issue_5() -> None:
    """PGD-AT teacher (ε = 0.1, 64-128-128-10, 30 epochs): ≥ 95 % clean and ≥ 80 % PGD-50 accuracy;
    a KDIGA student (64-32-32-10) keeps measurably more PGD-50 accuracy than an SD student."""
    data = load_dataset("digits", seed=0)
    teacher = train_teacher(data, arch="64-128-128-10", adv_eps=0.1, epochs=30, progress=False, seed=0)
    assert teacher.test_accuracy >= 0.95
    assert robust_accuracy(teacher.model, data.X_test, data.y_test, 0.1, steps=50, domain=data.domain) >= 0.80
    rob = {}
    for method in ("sd", "kdiga"):
        res = distill_student(teacher.model, data, method=method, arch="64-32-32-10", seed=0, progress=False)
        assert np.mean(predict(res.model, data.X_test) == data.y_test) >= 0.93
        rob[method] = robust_accuracy(res.model, data.X_test, data.y_test, 0.1, steps=50, domain=data.domain)
    assert rob["kdiga"] >= rob["sd"] + 0.03, rob
