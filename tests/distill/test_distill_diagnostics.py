"""Diagnostics against quantities known in closed form."""

from __future__ import annotations

import numpy as np
import pytest
import torch
from torch import nn

from distill.diagnostics import (
    bnc_layers,
    diagnose,
    gradient_ratio,
    local_linearity,
    normalized_correlation,
)
from distill.models import SigmoidTeacher, mlp_from_spec


@pytest.fixture(autouse=True)
def _one_thread():
    n = torch.get_num_threads()
    torch.set_num_threads(1)
    yield
    torch.set_num_threads(n)


def _scaled_copy(m: nn.Sequential, factor: float) -> nn.Sequential:
    """Same network with the last layer multiplied by ``factor`` (logits scaled by ``factor``)."""
    import copy

    c = copy.deepcopy(m)
    with torch.no_grad():
        c[-1].weight.mul_(factor)
        c[-1].bias.mul_(factor)
    return c


def test_gradient_ratio_of_a_scaled_network_is_the_scale() -> None:
    """f_S = ½ f_T ⇒ ∇ f_S,c = ½ ∇ f_T,c for every class c, so ρ ≡ ½."""
    torch.manual_seed(0)
    t = mlp_from_spec("4-16-3")
    s = _scaled_copy(t, 0.5)
    X = np.random.default_rng(0).random((40, 4))
    rho = gradient_ratio(t, s, X)
    np.testing.assert_allclose(rho, 0.5, rtol=1e-12)


def test_gradient_ratio_of_sigmoid_teachers_and_zero_gradient_conventions() -> None:
    """Logit 0 of SigmoidTeacher(a) is a·x·1 with gradient a·1: ρ = a_S / a_T where the teacher
    predicts class 0 (x·1 > 0); class 1's logit is constant 0 for both, so ρ = nan there."""
    t, s = SigmoidTeacher(2.0, 2), SigmoidTeacher(3.0, 2)
    X = np.array([[0.5, 0.2], [-0.4, -0.1]])
    rho = gradient_ratio(t, s, X)
    assert rho[0] == pytest.approx(1.5) and np.isnan(rho[1])
    rho = gradient_ratio(SigmoidTeacher(0.0, 2), s, X, cls=np.array([0, 0]))
    assert np.all(np.isinf(rho))


def test_normalized_correlation_matches_numpy() -> None:
    rng = np.random.default_rng(0)
    A, B = rng.random((30, 3)), rng.random((30, 4))
    B[:, 3] = 1.0  # a constant (dead) unit
    rho = normalized_correlation(A, B)
    for k in range(3):
        for j in range(3):
            assert rho[k, j] == pytest.approx(np.corrcoef(A[:, k], B[:, j])[0, 1], abs=1e-12)
    assert np.all(rho[:, 3] == 0)


def test_bnc_of_a_network_with_itself_is_one() -> None:
    torch.manual_seed(3)
    t = mlp_from_spec("5-12-12-3")
    X = np.random.default_rng(1).random((200, 5))
    layers = bnc_layers(t, t, X)
    assert [(r["teacher_layer"], r["student_layer"]) for r in layers] == [(1, 1), (2, 2)]
    for r in layers:
        live = r["teacher_units"] - r["dead_teacher_units"]
        assert np.allclose(r["bnc_teacher"][:live], 1.0)
        assert r["bnc_teacher"] == sorted(r["bnc_teacher"], reverse=True)


def test_bnc_layer_matching_by_relative_depth() -> None:
    torch.manual_seed(0)
    t, s = mlp_from_spec("4-8-8-8-8-2"), mlp_from_spec("4-5-5-2")
    layers = bnc_layers(t, s, np.random.default_rng(0).random((50, 4)))
    assert [(r["student_layer"], r["teacher_layer"]) for r in layers] == [(1, 2), (2, 4)]


def test_llm_is_zero_for_a_constant_network_and_attained_otherwise() -> None:
    const = nn.Sequential(nn.Linear(3, 2))
    with torch.no_grad():
        const[0].weight.zero_()
    X = np.random.default_rng(0).random((10, 3)).astype(np.float32)
    y = np.zeros(10, dtype=np.int64)
    assert np.all(local_linearity(const, X, y, 0.1, domain=(0.0, 1.0)) == 0)
    torch.manual_seed(0)
    m = mlp_from_spec("3-16-2")
    v = local_linearity(m, X, y, 0.2, domain=(0.0, 1.0), steps=10)
    assert np.all(v >= 0) and np.any(v > 0)


def test_diagnose_report(tmp_path) -> None:
    """Teacher vs. a 2×-sharpened copy of itself: full agreement, the student dominates the teacher's
    confidence everywhere, ρ ≡ 2, cosine ≡ 1, and the same PGD agreement."""
    torch.manual_seed(0)
    t = mlp_from_spec("6-10-10-3")
    s = _scaled_copy(t, 2.0)
    rng = np.random.default_rng(0)
    X = rng.random((40, 6)).astype(np.float32)
    y = rng.integers(0, 3, 40)
    png = tmp_path / "bnc.png"
    d = diagnose(t, s, X, y, eps=0.05, steps=5, domain=(0.0, 1.0), plot_path=png)
    assert d["agreement"] == 1.0 and d["teacher_accuracy"] == d["student_accuracy"]
    assert d["confidence_dominance"]["fraction"] == 1.0 and d["confidence_dominance"]["worst_gap"] <= 0
    assert d["gradient_ratio"]["min"] == pytest.approx(2.0) and d["gradient_ratio"]["max"] == pytest.approx(
        2.0
    )
    assert d["gradient_cosine"]["min"] == pytest.approx(1.0)
    assert d["pgd"]["distillation_agreement"] == 1.0  # same argmax everywhere
    assert 0 <= d["pgd"]["emplb"]["min"] <= d["pgd"]["emplb"]["max"] <= 1
    assert len(d["bnc"]) == 2 and d["bnc"][0]["mbnc_teacher"] == pytest.approx(1.0)
    assert png.read_bytes()[:8] == b"\x89PNG\r\n\x1a\n"
    assert "gradient ratio" in d["text"]
    import json

    json.dumps({k: v for k, v in d.items()})  # JSON-able
