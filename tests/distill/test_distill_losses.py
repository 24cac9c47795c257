"""The seven distillation losses against values computed independently on a tiny batch, the KDIGA
double-backprop check, and the distillation driver's labelling."""

from __future__ import annotations

import math

import numpy as np
import pytest
import torch
from torch import nn

from distill import losses as L
from distill.losses import DistillConfig, distill_student, input_gradient_alignment, resolve_method
from encoders.errors import ConfigError


@pytest.fixture(autouse=True)
def _one_thread():
    n = torch.get_num_threads()
    torch.set_num_threads(1)
    yield
    torch.set_num_threads(n)


# ------------------------------------------------------------------------------------------------
# an independent numpy reference for linear models z = W x + b
# ------------------------------------------------------------------------------------------------
Wt = np.array([[1.0, -2.0], [0.5, 1.5], [-1.0, 0.25]])
bt = np.array([0.1, -0.2, 0.05])
Ws = np.array([[0.3, -0.7], [1.2, 0.4], [-0.6, -0.9]])
bs = np.array([0.0, 0.2, -0.1])
X = np.array([[0.2, 0.9], [0.7, 0.1]])
XA = X + np.array([[0.05, -0.05], [-0.05, 0.05]])  # a fixed "adversarial" batch
Y = np.array([1, 0])


def linear(W: np.ndarray, b: np.ndarray) -> nn.Linear:
    m = nn.Linear(W.shape[1], W.shape[0]).double()
    with torch.no_grad():
        m.weight.copy_(torch.from_numpy(W))
        m.bias.copy_(torch.from_numpy(b))
    return m


def softmax(z: np.ndarray) -> np.ndarray:
    e = np.exp(z - z.max(axis=1, keepdims=True))
    return e / e.sum(axis=1, keepdims=True)


def kl(zs: np.ndarray, zt: np.ndarray, T: float = 1.0) -> float:
    """mean_i Σ_k p_t (log p_t − log p_s), p = softmax(z / T)."""
    ps, pt = softmax(zs / T), softmax(zt / T)
    return float(np.mean(np.sum(pt * (np.log(pt) - np.log(ps)), axis=1)))


def ce(z: np.ndarray, y: np.ndarray) -> float:
    return float(np.mean(-np.log(softmax(z)[np.arange(len(y)), y])))


def iga(x: np.ndarray, y: np.ndarray) -> float:
    """mean_i ‖W_sᵀ(p_s − e_y) − W_tᵀ(p_t − e_y)‖₂ — the CE input gradients of linear models."""
    onehot = np.eye(3)[y]
    gs = (softmax(x @ Ws.T + bs) - onehot) @ Ws
    gt = (softmax(x @ Wt.T + bt) - onehot) @ Wt
    return float(np.mean(np.linalg.norm(gs - gt, axis=1)))


def zs(x):
    return x @ Ws.T + bs


def zt(x):
    return x @ Wt.T + bt


CFG = DistillConfig(alpha=0.7, temperature=3.0, lambda_ce=0.6, lambda_kl=0.8, lambda_g=1.7, eps=0.1)
a, T = CFG.alpha, CFG.temperature

EXPECTED = {
    "sd": a * T * T * kl(zs(X), zt(X), T) + (1 - a) * ce(zs(X), Y),
    "kdiga": CFG.lambda_ce * ce(zs(X), Y)
    + CFG.lambda_kl * T * T * kl(zs(X), zt(X), T)
    + CFG.lambda_g * iga(X, Y),
    "ard": a * T * T * kl(zs(XA), zt(X), T) + (1 - a) * ce(zs(X), Y),
    "kdiga_ard_c": a * T * T * kl(zs(XA), zt(X), T) + (1 - a) * ce(zs(X), Y) + CFG.lambda_g * iga(X, Y),
    "kdiga_ard_a": a * T * T * kl(zs(XA), zt(X), T) + (1 - a) * ce(zs(X), Y) + CFG.lambda_g * iga(XA, Y),
    "rslad": a * kl(zs(XA), zt(X)) + (1 - a) * kl(zs(X), zt(X)),
    "fd": a * T * T * kl(zs(XA), zt(XA), T) + (1 - a) * ce(zs(X), Y),
}


@pytest.mark.parametrize("name", sorted(EXPECTED))
def test_loss_matches_reference(name: str) -> None:
    fn = L.LOSSES[name]
    val = fn(
        linear(Ws, bs), linear(Wt, bt), torch.from_numpy(X), torch.from_numpy(Y), CFG, torch.from_numpy(XA)
    )
    assert val.dim() == 0
    assert float(val.detach()) == pytest.approx(EXPECTED[name], rel=1e-10, abs=1e-12)


def test_registry_has_the_seven_methods() -> None:
    assert set(L.LOSSES) == {"sd", "kdiga", "kdiga_ard_c", "kdiga_ard_a", "ard", "rslad", "fd"}
    assert resolve_method("KDIGA-ARD-C") == "kdiga_ard_c"
    with pytest.raises(ConfigError, match="--method"):
        resolve_method("kd")


def test_sd_closed_form_by_hand() -> None:
    """Student logits (0, 0), teacher logits (ln 3, 0), T = 1, α = ½, y = 0:
    p_t = (¾, ¼), p_s = (½, ½); KL = ¾ ln(3/2) + ¼ ln(1/2); CE = ln 2."""
    s = linear(np.zeros((2, 1)), np.zeros(2))
    t = linear(np.zeros((2, 1)), np.array([math.log(3.0), 0.0]))
    x, y = torch.zeros((1, 1), dtype=torch.float64), torch.tensor([0])
    val = L.sd(s, t, x, y, DistillConfig(alpha=0.5, temperature=1.0))
    want = 0.5 * (0.75 * math.log(1.5) + 0.25 * math.log(0.5)) + 0.5 * math.log(2.0)
    assert float(val.detach()) == pytest.approx(want, rel=1e-12)


def test_kdiga_alignment_closed_form_by_hand() -> None:
    """Student W = 0 (so ∇_x CE_s = 0); teacher z = (x, 0) at x = 0: p_t = (½, ½), y = 0,
    ∇_x CE_t = Wᵀ(p_t − e_0) = 1·(−½) + 0·(½) = −½, so the alignment is ½."""
    s = linear(np.zeros((2, 1)), np.zeros(2))
    t = linear(np.array([[1.0], [0.0]]), np.zeros(2))
    x, y = torch.zeros((1, 1), dtype=torch.float64), torch.tensor([0])
    assert float(input_gradient_alignment(s, t, x, y)[0].detach()) == pytest.approx(0.5, abs=1e-10)
    cfg = DistillConfig(lambda_ce=0.0, lambda_kl=0.0, lambda_g=2.0)
    assert float(L.kdiga(s, t, x, y, cfg).detach()) == pytest.approx(1.0, abs=1e-10)


def _param_grads(loss: torch.Tensor, model: nn.Module) -> list[torch.Tensor]:
    return list(torch.autograd.grad(loss, list(model.parameters()), allow_unused=True))


@pytest.mark.parametrize("name", ["kdiga", "kdiga_ard_c", "kdiga_ard_a"])
def test_alignment_term_reaches_student_parameters(name: str) -> None:
    """Fails if the alignment term is detached (the bug of the first public KDIGA code): the gradient
    of the loss with λ_G > 0 must differ from the one with λ_G = 0 by exactly λ_G times the
    finite-difference gradient of the alignment term."""
    torch.manual_seed(0)
    student = nn.Sequential(nn.Linear(2, 5), nn.ReLU(), nn.Linear(5, 3)).double()
    teacher = linear(Wt, bt)
    x, y, xa = torch.from_numpy(X), torch.from_numpy(Y), torch.from_numpy(XA)
    on = DistillConfig(alpha=0.7, temperature=3.0, lambda_g=2.5)
    off = DistillConfig(alpha=0.7, temperature=3.0, lambda_g=0.0)
    g_on = _param_grads(L.LOSSES[name](student, teacher, x, y, on, xa), student)
    g_off = _param_grads(L.LOSSES[name](student, teacher, x, y, off, xa), student)
    diff = [a - b for a, b in zip(g_on, g_off)]
    assert max(float(d.abs().max()) for d in diff) > 1e-4, "alignment term does not reach the parameters"

    at = xa if name == "kdiga_ard_a" else x

    def align() -> float:
        return float(input_gradient_alignment(student, teacher, at, y).mean().detach())

    h = 1e-6
    for p, d in zip(student.parameters(), diff):
        flat = p.data.view(-1)
        for i in range(0, flat.numel(), max(1, flat.numel() // 4)):
            old = float(flat[i])
            flat[i] = old + h
            up = align()
            flat[i] = old - h
            dn = align()
            flat[i] = old
            fd_grad = 2.5 * (up - dn) / (2 * h)
            assert float(d.view(-1)[i]) == pytest.approx(fd_grad, rel=1e-4, abs=1e-6)


def test_teacher_receives_no_gradient() -> None:
    student, teacher = linear(Ws, bs), linear(Wt, bt)
    loss = L.kdiga(student, teacher, torch.from_numpy(X), torch.from_numpy(Y), CFG)
    loss.backward()
    assert all(p.grad is None for p in teacher.parameters())
    assert all(p.grad is not None for p in student.parameters())


@pytest.mark.parametrize("name", ["ard", "kdiga_ard_c", "kdiga_ard_a", "rslad", "fd"])
def test_adversarial_methods_build_their_own_delta(name: str, monkeypatch: pytest.MonkeyPatch) -> None:
    """Without x_adv the loss runs PGD with the method's objective inside the ε-ball ∩ domain."""
    seen: dict[str, object] = {}
    real = L.pgd

    def spy(model, x, eps, **kw):
        seen["loss"], seen["eps"] = kw["loss"], eps
        out = real(model, x, eps, **kw)
        seen["x"], seen["out"] = x, out
        return out

    monkeypatch.setattr(L, "pgd", spy)
    cfg = DistillConfig(eps=0.05, domain=(0.0, 1.0))
    val = L.LOSSES[name](linear(Ws, bs), linear(Wt, bt), torch.from_numpy(X), torch.from_numpy(Y), cfg)
    assert torch.isfinite(val)
    want = {
        "ard": "ce",
        "kdiga_ard_c": "ce",
        "kdiga_ard_a": "ce",
        "rslad": "kl_teacher_clean",
        "fd": "kl_teacher",
    }
    assert seen["loss"] == want[name] and seen["eps"] == 0.05
    d = (seen["out"] - seen["x"]).abs()
    assert float(d.max()) <= 0.05 + 1e-7
    assert float(seen["out"].min()) >= 0.0 and float(seen["out"].max()) <= 1.0


def test_distill_labels_unlabelled_data_with_teacher_argmax(monkeypatch: pytest.MonkeyPatch) -> None:
    """Seed 000 Algorithm 1 line 4: unlabelled points are trained on argmax f_T(x)."""
    from distill.models import SigmoidTeacher

    teacher = SigmoidTeacher(3.0, 2)
    rng = np.random.default_rng(0)
    Xu = rng.uniform(-1, 1, size=(40, 2)).astype(np.float32)
    want = np.where(Xu.sum(axis=1) > 0, 0, 1)
    got: list[np.ndarray] = []

    def spy(student, teacher_, x, y, cfg, x_adv=None):
        got.append((x.numpy().copy(), y.numpy().copy()))
        return L.sd(student, teacher_, x, y, cfg)

    monkeypatch.setitem(L.LOSSES, "sd", spy)
    res = distill_student(
        teacher, Xu, method="sd", arch="2-4-2", epochs=1, seed=0, progress=False, batch_size=8
    )
    assert res.label_source == "teacher argmax"
    for xb, yb in got:
        assert np.array_equal(yb, np.where(xb.sum(axis=1) > 0, 0, 1))
    assert sum(len(yb) for _, yb in got) == len(want)


def test_distill_student_quick_real_training() -> None:
    """A real (short) distillation on gaussians2d from the analytic teacher reaches high agreement."""
    from distill.data import load_dataset
    from distill.models import SigmoidTeacher, predict

    data = load_dataset("gaussians2d", seed=0)
    teacher = SigmoidTeacher(4.0, 2)
    res = distill_student(teacher, data, method="kdiga", arch="2-8-2", epochs=4, seed=0, progress=False)
    agree = np.mean(predict(res.model, data.X_test) == predict(teacher, data.X_test))
    assert agree > 0.95
    assert res.config["method"] == "kdiga" and res.config["arch"] == "2-8-2"


def test_distill_restores_teacher_and_leaves_it_untouched() -> None:
    teacher = linear(Wt, bt).float()
    teacher.train()
    before = [p.detach().clone() for p in teacher.parameters()]
    Xu = np.random.default_rng(1).uniform(-1, 1, size=(32, 2)).astype(np.float32)
    distill_student(
        teacher,
        Xu,
        method="kdiga_ard_a",
        arch="2-4-3",
        epochs=1,
        seed=0,
        progress=False,
        cfg=DistillConfig(eps=0.05, attack_steps=2),
    )
    assert teacher.training  # mode restored
    assert all(p.requires_grad and p.grad is None for p in teacher.parameters())
    assert all(torch.equal(a, b) for a, b in zip(before, teacher.parameters()))


def test_distill_rejects_bad_configuration() -> None:
    from distill.models import SigmoidTeacher

    t = SigmoidTeacher(1.0, 2)
    Xu = np.zeros((8, 2), np.float32)
    with pytest.raises(ConfigError, match="--arch"):
        distill_student(t, Xu, arch="3-4-2", epochs=1, progress=False)
    with pytest.raises(ConfigError, match="--arch"):
        distill_student(t, Xu, arch="2-4-3", epochs=1, progress=False)
    with pytest.raises(ConfigError, match="--eps"):
        distill_student(t, Xu, arch="2-4-2", epochs=1, progress=False, cfg=DistillConfig(eps=-0.1))
    with pytest.raises(ConfigError, match="--labels"):
        distill_student(t, Xu, arch="2-4-2", epochs=1, progress=False, labels="data")
    with pytest.raises(ConfigError, match="--method"):
        distill_student(t, Xu, method="nope", arch="2-4-2", epochs=1, progress=False)
