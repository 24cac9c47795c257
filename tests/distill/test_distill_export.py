"""Models from specs, the sigmoid teacher, checkpoints, and the checked ONNX export round trip."""

from __future__ import annotations

import json

import numpy as np
import pytest
import torch
from torch import nn

import distill.export as E
from distill.export import export_onnx, load_model, read_meta, save_checkpoint, sidecar_path
from distill.models import (
    SigmoidTeacher,
    affine_layers,
    eval_mode,
    mlp_from_spec,
    model_widths,
    parse_arch,
    sequential_from_affines,
)
from encoders.errors import ConfigError, DistillCertError, ModelFormatError, UnsupportedModelError
from encoders.network import file_sha256, load_onnx


@pytest.fixture(autouse=True)
def _one_thread():
    n = torch.get_num_threads()
    torch.set_num_threads(1)
    yield
    torch.set_num_threads(n)


@pytest.mark.parametrize("spec", ["64-128-128-10", [3, 2], (5, 4, 3, 2)])
def test_parse_arch_and_mlp(spec) -> None:
    widths = parse_arch(spec)
    m = mlp_from_spec(spec)
    kinds = [type(x).__name__ for x in m]
    assert kinds == ["Linear", "ReLU"] * (len(widths) - 2) + ["Linear"]
    assert model_widths(m) == widths


@pytest.mark.parametrize("bad", ["", "64", "64-x-10", "64-0-10", "64--10", "-5-3", [3.5, 2]])
def test_parse_arch_rejects(bad) -> None:
    with pytest.raises(ConfigError, match="arch"):
        parse_arch(bad)


def test_sigmoid_teacher_is_seed_000s_analytic_teacher() -> None:
    t = SigmoidTeacher(2.5, dim=3)
    x = torch.tensor([[0.1, -0.4, 0.2], [1.0, 1.0, -0.5]])
    p = torch.softmax(t(x), dim=1)
    s = x.sum(1)
    torch.testing.assert_close(p[:, 0], torch.sigmoid(2.5 * s))
    torch.testing.assert_close(p[:, 1], 1 - torch.sigmoid(2.5 * s))
    ((W, b),) = affine_layers(t)
    np.testing.assert_allclose(W, [[2.5, 2.5, 2.5], [0, 0, 0]])
    np.testing.assert_allclose(b, [0, 0])


def test_affine_layers_round_trip_and_rejections() -> None:
    torch.manual_seed(0)
    m = mlp_from_spec("4-6-3")
    m2 = sequential_from_affines(affine_layers(m))
    x = torch.rand(5, 4)
    torch.testing.assert_close(m(x), m2(x))
    with pytest.raises(UnsupportedModelError):
        affine_layers(nn.Sequential(nn.Linear(2, 2), nn.Tanh(), nn.Linear(2, 2)))
    with pytest.raises(UnsupportedModelError):
        affine_layers(nn.Sequential(nn.Linear(2, 2), nn.ReLU()))


def test_eval_mode_restores_nested_modes() -> None:
    m = nn.Sequential(nn.Linear(2, 2), nn.Dropout(0.1))
    m.train()
    m[1].eval()
    with eval_mode(m):
        assert not m.training and not m[1].training
    assert m.training and not m[1].training


META = {
    "dataset": "digits",
    "input_domain": {"lo": [0.0] * 5, "hi": [1.0] * 5},
    "normalisation": {"preprocessing": "pixel/16"},
    "class_names": ["a", "b", "c"],
    "training": {"epochs": 3, "seed": 0},
}


def test_export_round_trip_into_network_ir(tmp_path) -> None:
    torch.manual_seed(1)
    m = mlp_from_spec("5-7-7-3")
    path = tmp_path / "m.onnx"
    side = export_onnx(m, path, 5, META)
    assert path.is_file() and sidecar_path(path).is_file()
    on_disk = json.loads(sidecar_path(path).read_text())
    assert on_disk == side
    assert side["sha256"] == file_sha256(path)
    assert side["architecture"]["widths"] == [5, 7, 7, 3] and side["opset"] >= 13
    assert side["dataset"] == "digits" and side["class_names"] == ["a", "b", "c"]
    assert side["input_domain"] == META["input_domain"] and side["training"] == META["training"]
    assert side["export_check"]["max_abs_diff_onnxruntime_vs_torch"] <= 1e-5
    net = load_onnx(path)
    assert net.input_name == "input" and net.output_name == "logits" and net.hidden_sizes == [7, 7]
    x = np.random.default_rng(0).random((50, 5))
    with torch.no_grad():
        ref = m.double()(torch.from_numpy(x)).numpy()
    np.testing.assert_allclose(net.evaluate(x), ref, rtol=1e-9, atol=1e-9)
    import onnx

    model = onnx.load(str(path))
    dims = model.graph.input[0].type.tensor_type.shape.dim
    assert dims[0].dim_param == "batch" and dims[1].dim_value == 5  # dynamic batch dimension
    from encoders.network import ort_evaluate

    np.testing.assert_allclose(ort_evaluate(path, x.astype(np.float32)), ref, atol=1e-5)
    assert not list(tmp_path.glob(".*tmp"))  # no temporary files left behind


def test_export_sigmoid_teacher(tmp_path) -> None:
    side = export_onnx(
        SigmoidTeacher(3.0, 2), tmp_path / "t.onnx", 2, {"input_domain": {"lo": [-3, -3], "hi": [3, 3]}}
    )
    assert side["architecture"]["type"] == "sigmoid_teacher"
    net = load_onnx(tmp_path / "t.onnx")
    np.testing.assert_allclose(net.evaluate(np.array([0.5, -0.1])), [1.2, 0.0], atol=1e-6)


def test_export_of_a_non_sequential_module_uses_torch_onnx(tmp_path) -> None:
    class Custom(nn.Module):
        def __init__(self) -> None:
            super().__init__()
            self.a, self.b = nn.Linear(3, 4), nn.Linear(4, 2)

        def forward(self, x: torch.Tensor) -> torch.Tensor:
            return self.b(torch.relu(self.a(x)))

    torch.manual_seed(0)
    m = Custom()
    side = export_onnx(m, tmp_path / "c.onnx", 3, {})
    assert side["architecture"]["type"] == "torch"
    assert side["export_check"]["domain"].startswith("default")
    net = load_onnx(tmp_path / "c.onnx")
    x = np.random.default_rng(0).random((10, 3)).astype(np.float32)
    with torch.no_grad():
        np.testing.assert_allclose(net.evaluate(x), m(torch.from_numpy(x)).numpy(), atol=1e-5)


def test_export_fails_loudly_and_writes_nothing_when_onnxruntime_disagrees(tmp_path, monkeypatch) -> None:
    real = E._ort_run
    monkeypatch.setattr(E, "_ort_run", lambda p, X, shape=None: real(p, X, shape) + 2e-5)
    path = tmp_path / "m.onnx"
    with pytest.raises(DistillCertError, match="onnxruntime differs"):
        export_onnx(mlp_from_spec("5-3"), path, 5, META)
    assert list(tmp_path.iterdir()) == []


def test_export_fails_when_the_network_ir_disagrees(tmp_path, monkeypatch) -> None:
    class Shifted:
        def __init__(self, net):
            self.net = net

        def evaluate(self, x):
            return self.net.evaluate(x) + 1e-6

        def __getattr__(self, k):
            return getattr(self.net, k)

    real = E.load_onnx
    monkeypatch.setattr(E, "load_onnx", lambda p: Shifted(real(p)))
    with pytest.raises(DistillCertError, match="network IR"):
        export_onnx(mlp_from_spec("5-3"), tmp_path / "m.onnx", 5, META)
    assert list(tmp_path.iterdir()) == []


def test_checkpoint_and_onnx_load_back_as_torch_models(tmp_path) -> None:
    torch.manual_seed(2)
    m = mlp_from_spec("5-8-3")
    save_checkpoint(m, tmp_path / "m.pt", META)
    export_onnx(m, tmp_path / "m.onnx", 5, META)
    x = torch.rand(20, 5)
    for p in ("m.pt", "m.onnx"):
        back = load_model(tmp_path / p)
        assert not back.training
        torch.testing.assert_close(back(x), m(x), atol=1e-6, rtol=1e-6)
        assert back.meta["dataset"] == "digits"
    t = SigmoidTeacher(1.5, 2)
    save_checkpoint(t, tmp_path / "t.pt", {})
    back = load_model(tmp_path / "t.pt")
    assert isinstance(back, SigmoidTeacher) and back.a == 1.5
    assert read_meta(tmp_path / "m.pt")["class_names"] == ["a", "b", "c"]


def test_load_model_errors(tmp_path) -> None:
    with pytest.raises(ModelFormatError, match="no such"):
        load_model(tmp_path / "gone.pt")
    (tmp_path / "junk.pt").write_bytes(b"not a checkpoint")
    with pytest.raises(ModelFormatError, match="junk.pt"):
        load_model(tmp_path / "junk.pt")
    torch.save({"x": 1}, tmp_path / "other.pt")
    with pytest.raises(ModelFormatError, match="format"):
        load_model(tmp_path / "other.pt")
    (tmp_path / "m.h5").write_bytes(b"")
    with pytest.raises(ModelFormatError, match="unknown model file type"):
        load_model(tmp_path / "m.h5")
    # a sidecar whose hash no longer matches the ONNX file (tampered model)
    export_onnx(mlp_from_spec("5-3"), tmp_path / "m.onnx", 5, META)
    side = json.loads(sidecar_path(tmp_path / "m.onnx").read_text())
    side["sha256"] = "0" * 64
    sidecar_path(tmp_path / "m.onnx").write_text(json.dumps(side))
    with pytest.raises(ModelFormatError, match="SHA-256"):
        load_model(tmp_path / "m.onnx")
