"""In-house PGD: feasibility (ball ∩ domain), optimality on problems with known maxima, modes,
objectives, and EMPLB against an analytic maximum."""

from __future__ import annotations

import numpy as np
import pytest
import torch
from torch import nn

from distill.attacks import ATTACK_LOSSES, empirical_agreement, emplb, pgd, pgd_with_loss, robust_accuracy
from distill.models import SigmoidTeacher
from encoders.errors import ConfigError


@pytest.fixture(autouse=True)
def _one_thread():
    n = torch.get_num_threads()
    torch.set_num_threads(1)
    yield
    torch.set_num_threads(n)


def _mlp(seed: int, widths=(6, 16, 16, 4)) -> nn.Sequential:
    torch.manual_seed(seed)
    mods: list[nn.Module] = []
    for i, (a, b) in enumerate(zip(widths[:-1], widths[1:])):
        mods.append(nn.Linear(a, b))
        if i < len(widths) - 2:
            mods.append(nn.ReLU())
    return nn.Sequential(*mods)


@pytest.mark.parametrize("norm", ["inf", "2"])
@pytest.mark.parametrize("loss", ["ce", "kl_teacher", "kl_teacher_clean", "conf_diff", "disagree"])
@pytest.mark.parametrize("seed", [0, 1])
def test_pgd_stays_in_ball_and_domain(norm: str, loss: str, seed: int) -> None:
    rng = np.random.default_rng(seed)
    lo = rng.uniform(-1.0, 0.0, size=6)
    hi = lo + rng.uniform(0.2, 1.5, size=6)
    x = (lo + (hi - lo) * rng.random((50, 6))).astype(np.float32)
    x[:5] = lo.astype(np.float32)  # points on the domain boundary
    y = rng.integers(0, 4, size=50)
    eps = 0.3
    xa = pgd(
        _mlp(seed),
        x,
        eps,
        norm=norm,
        steps=15,
        restarts=2,
        loss=loss,
        domain=(lo, hi),
        y=y,
        teacher=_mlp(seed + 10),
        seed=seed,
    )
    assert isinstance(xa, np.ndarray) and xa.shape == x.shape
    d = (xa - x).astype(np.float64)
    size = np.abs(d).max(axis=1) if norm == "inf" else np.linalg.norm(d, axis=1)
    assert size.max() <= eps * (1 + 1e-5) + 1e-6
    assert np.all(xa >= lo.astype(np.float32) - 1e-6) and np.all(xa <= hi.astype(np.float32) + 1e-6)
    assert np.abs(d).max() > 0  # it moved


def test_pgd_finds_the_linf_optimum_of_a_linear_margin() -> None:
    """For z = W x (2 classes) and label 0, CE is increasing in the margin z1 − z0 = (w1 − w0)·x, whose
    maximum over the L∞ ball ∩ box is attained at the vertex x + ε sign(w1 − w0), clipped."""
    W = torch.tensor([[1.0, -2.0, 0.5], [-1.0, 1.0, 2.0]])
    model = nn.Linear(3, 2, bias=False)
    with torch.no_grad():
        model.weight.copy_(W)
    x = np.array([[0.5, 0.5, 0.95], [0.1, 0.9, 0.5]], dtype=np.float32)
    eps = 0.2
    xa = pgd(model, x, eps, steps=20, loss="ce", domain=(0.0, 1.0), y=np.array([0, 0]), seed=0)
    s = np.sign((W[1] - W[0]).numpy())
    want = np.clip(x + eps * s, 0.0, 1.0)
    np.testing.assert_allclose(xa, want, atol=1e-6)


def test_pgd_l2_reaches_the_sphere_in_the_gradient_direction() -> None:
    w = np.array([3.0, -4.0])
    model = nn.Linear(2, 2, bias=False)
    with torch.no_grad():
        model.weight.copy_(torch.tensor([[0.0, 0.0], list(w)]))
    x = np.zeros((1, 2), np.float32)
    xa = pgd(model, x, 0.5, norm="2", steps=30, loss="ce", y=np.array([0]), random_start=False)
    np.testing.assert_allclose(xa[0], 0.5 * w / np.linalg.norm(w), atol=1e-6)
    # from random starts the margin w·x' gets within 1 % of its maximum ε‖w‖ = 2.5
    xr = pgd(
        model,
        np.zeros((20, 2), np.float32),
        0.5,
        norm="2",
        steps=30,
        restarts=2,
        loss="ce",
        y=np.zeros(20, dtype=np.int64),
        seed=3,
    )
    assert np.all(xr @ w >= 0.99 * 2.5) and np.all(np.linalg.norm(xr, axis=1) <= 0.5 + 1e-6)


def test_pgd_objective_never_below_clean_and_returned_loss_is_attained() -> None:
    from distill.attacks import AttackContext

    model, teacher = _mlp(3), _mlp(4)
    x = torch.rand(30, 6)
    y = torch.randint(0, 4, (30,))
    ctx = AttackContext(x0=x, y=y, teacher=teacher)
    for name, fn in ATTACK_LOSSES.items():
        xa, best = pgd_with_loss(
            model, x, 0.1, steps=5, loss=name, domain=(0.0, 1.0), y=y, teacher=teacher, seed=0
        )
        with torch.no_grad():
            clean = fn(model, x, ctx)
            at = fn(model, xa, ctx)
        assert torch.all(best >= clean - 1e-6), name
        assert torch.any(best > clean + 1e-4), name
        torch.testing.assert_close(at, best, atol=1e-5, rtol=1e-5)


class _ModeSpy(nn.Module):
    def __init__(self) -> None:
        super().__init__()
        self.lin = nn.Linear(4, 3)
        self.drop = nn.Dropout(0.5)
        self.modes: list[bool] = []

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        self.modes.append(self.training)
        return self.drop(self.lin(x))


def test_pgd_runs_in_eval_mode_restores_modes_and_touches_no_parameter_grads() -> None:
    m, t = _ModeSpy(), _ModeSpy()
    m.train()
    t.eval()
    pgd(m, torch.rand(8, 4), 0.1, steps=3, loss="kl_teacher", teacher=t, domain=(0.0, 1.0))
    assert m.modes and not any(m.modes) and not any(t.modes)
    assert m.training and m.drop.training and not t.training
    assert all(p.grad is None for p in [*m.parameters(), *t.parameters()])


def test_pgd_input_validation() -> None:
    m = _mlp(0)
    x = torch.rand(2, 6)
    with pytest.raises(ConfigError, match="--eps"):
        pgd(m, x, -0.1)
    with pytest.raises(ConfigError, match="norm"):
        pgd(m, x, 0.1, norm="1")
    with pytest.raises(ConfigError, match="unknown"):
        pgd(m, x, 0.1, loss="hinge")
    with pytest.raises(ConfigError, match="teacher"):
        pgd(m, x, 0.1, loss="conf_diff")
    with pytest.raises(ConfigError, match="outside"):
        pgd(m, x + 2.0, 0.1, domain=(0.0, 1.0))


def test_pgd_is_deterministic_given_the_seed_and_eps_zero_is_identity() -> None:
    m = _mlp(0)
    x = torch.rand(10, 6)
    a = pgd(m, x, 0.2, steps=5, seed=7)
    b = pgd(m, x, 0.2, steps=5, seed=7)
    assert torch.equal(a, b)
    assert torch.equal(pgd(m, x, 0.0, steps=5), x)


def _analytic_gap(a1: float, a2: float, x: np.ndarray, eps: float, box: float) -> np.ndarray:
    """max over s ∈ [s_lo, s_hi] of |σ(a1 s) − σ(a2 s)| for s = x·1 over the L∞ ball ∩ box (dense grid
    plus the interior stationary points of the difference, found numerically on a fine grid)."""
    out = []
    for xi in x:
        s_lo = np.maximum(xi - eps, -box).sum()
        s_hi = np.minimum(xi + eps, box).sum()
        s = np.linspace(s_lo, s_hi, 200001)
        out.append(np.max(np.abs(1 / (1 + np.exp(-a1 * s)) - 1 / (1 + np.exp(-a2 * s)))))
    return np.asarray(out)


def test_emplb_is_a_lower_bound_that_gets_close_to_the_true_maximum() -> None:
    """Two sigmoid teachers f(x; a) differ only through s = x·1, so the exact max over the ball is a
    1-D maximisation: EMPLB must not exceed it and should come within 1e-3 of it."""
    rng = np.random.default_rng(0)
    x = rng.uniform(-1.5, 1.5, size=(20, 2)).astype(np.float32)
    t, s = SigmoidTeacher(4.0, 2), SigmoidTeacher(1.5, 2)
    eps = 0.25
    lower = emplb(t, s, x, eps, domain=(-3.0, 3.0), seed=0)
    truth = _analytic_gap(4.0, 1.5, x.astype(np.float64), eps, 3.0)
    assert lower.dtype == np.float64 and lower.shape == (20,)
    assert np.all(lower <= truth + 1e-9)
    assert np.all(lower >= truth - 1e-3)


def test_robust_accuracy_and_empirical_agreement() -> None:
    """A teacher against itself always agrees; robust accuracy of the sigmoid teacher drops exactly
    for the points within ε (L∞, so |Δs| ≤ 2ε) of the boundary s = 0."""
    t = SigmoidTeacher(2.0, 2)
    rng = np.random.default_rng(1)
    x = rng.uniform(-1, 1, size=(200, 2)).astype(np.float32)
    y = np.where(x.sum(1) > 0, 0, 1)
    assert np.all(empirical_agreement(t, t, x, 0.2, steps=10))
    acc = robust_accuracy(t, x, y, 0.2, steps=20, domain=(-3.0, 3.0))
    assert acc == pytest.approx(np.mean(np.abs(x.sum(1)) > 0.4 + 1e-5), abs=0.011)
    flipped = SigmoidTeacher(-2.0, 2)
    assert not np.any(empirical_agreement(t, flipped, x, 0.01, steps=2))
