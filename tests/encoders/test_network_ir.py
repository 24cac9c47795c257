"""Network IR: ONNX import agrees with onnxruntime; unsupported ops and bad files are reported."""

from __future__ import annotations

import warnings
from pathlib import Path

import numpy as np
import onnx
import pytest
from onnx import TensorProto, helper, numpy_helper

from encoders.errors import ModelFormatError, UnsupportedModelError
from encoders.network import load_onnx, network_from_layers, ort_evaluate, save_onnx


def _close(a: np.ndarray, b: np.ndarray, tol: float = 1e-5) -> float:
    return float(np.max(np.abs(a - b) / np.maximum(1.0, np.abs(b))))


def _shared_networks(root: Path) -> list[Path]:
    return sorted(root.glob("*/*.onnx"))


@pytest.mark.shared
def test_all_shared_networks_match_onnxruntime(vnncomp_root: Path) -> None:
    nets = _shared_networks(vnncomp_root)
    assert len(nets) == 47  # 45 ACAS Xu + mnist-net_256x2 + mnist-net_256x4
    rng = np.random.default_rng(0)
    for f in nets:
        net = load_onnx(f)
        lo, hi = (-0.5, 0.5) if "ACAS" in f.name else (0.0, 1.0)
        x = rng.uniform(lo, hi, size=(16, net.n_inputs))
        assert _close(net.evaluate(x), ort_evaluate(f, x)) <= 1e-5, f.name
        if "ACAS" in f.name:
            assert net.n_inputs == 5 and net.hidden_sizes == [50] * 6 and net.n_outputs == 5
        else:
            depth = int(f.stem.split("x")[-1])
            assert net.n_inputs == 784 and net.hidden_sizes == [256] * depth and net.n_outputs == 10


def _export(model, path: Path, n_in: int, shape=None) -> Path:
    import torch

    model.eval()
    dummy = torch.zeros(shape or (1, n_in))
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        torch.onnx.export(
            model,
            dummy,
            str(path),
            dynamo=False,
            input_names=["input"],
            output_names=["logits"],
            dynamic_axes={"input": {0: "batch"}},
            opset_version=13,
        )
    return path


def _check_torch(model, path: Path, shape: tuple[int, ...]) -> None:
    import torch

    net = load_onnx(path)
    rng = np.random.default_rng(1)
    x = rng.uniform(0, 1, size=(32, int(np.prod(shape))))
    with torch.no_grad():
        ref = model(torch.tensor(x.reshape(32, *shape), dtype=torch.float32)).numpy().reshape(32, -1)
    assert _close(net.evaluate(x), ort_evaluate(path, x)) <= 1e-5
    assert _close(net.evaluate(x), ref.astype(np.float64)) <= 1e-5


class _Norm:
    """(x - mean) / std in front of an MLP: exports as Sub and Div."""


def test_torch_mlp_with_normalisation(tmp_path: Path) -> None:
    import torch

    torch.manual_seed(0)

    class Net(torch.nn.Module):
        def __init__(self) -> None:
            super().__init__()
            self.mean = torch.nn.Parameter(torch.rand(6), requires_grad=False)
            self.std = torch.nn.Parameter(torch.rand(6) + 0.5, requires_grad=False)
            self.body = torch.nn.Sequential(torch.nn.Linear(6, 8), torch.nn.ReLU(), torch.nn.Linear(8, 3))

        def forward(self, x):
            return self.body((x - self.mean) / self.std)

    m = Net()
    p = _export(m, tmp_path / "norm.onnx", 6)
    ops = {n.op_type for n in onnx.load(p).graph.node}
    assert {"Sub", "Div"} <= ops
    _check_torch(m, p, (6,))
    assert load_onnx(p).hidden_sizes == [8]  # normalisation folded into the first affine layer


def test_torch_mlp_with_batchnorm(tmp_path: Path) -> None:
    import torch

    torch.manual_seed(0)
    m = torch.nn.Sequential(
        torch.nn.Linear(5, 7), torch.nn.BatchNorm1d(7), torch.nn.ReLU(), torch.nn.Linear(7, 2)
    )
    with torch.no_grad():  # non-trivial running statistics
        m[1].running_mean.uniform_(-1, 1)
        m[1].running_var.uniform_(0.5, 2)
        m[1].weight.uniform_(0.5, 1.5)
    m.eval()
    p = tmp_path / "bn.onnx"
    import torch.onnx

    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        torch.onnx.export(
            m,
            torch.zeros(1, 5),
            str(p),
            dynamo=False,
            input_names=["input"],
            opset_version=13,
            training=torch.onnx.TrainingMode.PRESERVE,
            do_constant_folding=False,
        )
    assert "BatchNormalization" in {n.op_type for n in onnx.load(p).graph.node}
    _check_torch(m, p, (5,))


def test_torch_small_conv(tmp_path: Path) -> None:
    import torch

    torch.manual_seed(0)
    m = torch.nn.Sequential(
        torch.nn.Conv2d(1, 3, 3, stride=2, padding=1),
        torch.nn.ReLU(),
        torch.nn.Flatten(),
        torch.nn.Linear(3 * 4 * 4, 4),
    )
    p = _export(m, tmp_path / "conv.onnx", 64, shape=(1, 1, 8, 8))
    assert "Conv" in {n.op_type for n in onnx.load(p).graph.node}
    _check_torch(m, p, (1, 8, 8))
    assert load_onnx(p).hidden_sizes == [48]


def test_hand_built_roundtrip(tmp_path: Path) -> None:
    net = network_from_layers(
        [
            (np.array([[1.0, -1.0], [2.0, 1.0]]), np.array([0.5, -1.0])),
            (np.array([[1.0, 1.0]]), np.array([0.0])),
        ]
    )
    p = save_onnx(net, tmp_path / "h.onnx")
    back = load_onnx(p)
    # hand check: x = (1, 0): z = (1.5, 1.0) -> relu -> 2.5
    assert back.evaluate(np.array([1.0, 0.0]))[0] == pytest.approx(2.5)
    assert ort_evaluate(p, np.array([1.0, 0.0]))[0] == pytest.approx(2.5, abs=1e-6)
    assert back.summary()["n_relus"] == 2 and len(back.sha256) == 64


def _model(nodes, inits, in_shape, out_shape=("N", 2)) -> onnx.ModelProto:
    g = helper.make_graph(
        nodes,
        "g",
        [helper.make_tensor_value_info("x", TensorProto.FLOAT, list(in_shape))],
        [helper.make_tensor_value_info("y", TensorProto.FLOAT, list(out_shape))],
        inits,
    )
    m = helper.make_model(g, opset_imports=[helper.make_opsetid("", 13)])
    m.ir_version = 8
    return m


def test_unsupported_ops_all_listed(tmp_path: Path) -> None:
    W = numpy_helper.from_array(np.ones((3, 2), np.float32), "W")
    nodes = [
        helper.make_node("MatMul", ["x", "W"], ["a"], name="mm"),
        helper.make_node("Sigmoid", ["a"], ["b"], name="sig1"),
        helper.make_node("Tanh", ["b"], ["c"], name="tanh1"),
        helper.make_node("Relu", ["c"], ["y"], name="r"),
    ]
    p = tmp_path / "bad_ops.onnx"
    onnx.save(_model(nodes, [W], ("N", 3)), p)
    with pytest.raises(UnsupportedModelError) as ei:
        load_onnx(p)
    msg = str(ei.value)
    assert "Sigmoid" in msg and "sig1" in msg and "Tanh" in msg and "tanh1" in msg
    assert ei.value.nodes == [("Sigmoid", "sig1"), ("Tanh", "tanh1")]


def test_skip_connection_carried(tmp_path: Path) -> None:
    """``y = relu(x W) + x``: the input is carried through the ReLU layer as relu(x) − relu(−x)."""
    W = numpy_helper.from_array(np.array([[1.0, -1.0], [2.0, 0.5]], dtype=np.float32), "W")
    nodes = [
        helper.make_node("MatMul", ["x", "W"], ["a"], name="mm"),
        helper.make_node("Relu", ["a"], ["b"], name="r"),
        helper.make_node("Add", ["b", "x"], ["y"], name="skip"),
    ]
    p = tmp_path / "skip.onnx"
    onnx.save(_model(nodes, [W], ("N", 2)), p)
    net = load_onnx(p)
    assert net.hidden_sizes == [2 + 2 * 2]
    # hand check: x = (1, -1): x W = (1 - 2, -1 - 0.5) = (-1, -1.5) -> relu 0 -> y = x
    assert net.evaluate(np.array([1.0, -1.0])) == pytest.approx([1.0, -1.0])
    x = np.random.default_rng(0).uniform(-2, 2, size=(20, 2))
    assert _close(net.evaluate(x), ort_evaluate(p, x)) <= 1e-6


def test_nan_weights(tmp_path: Path) -> None:
    Wv = np.ones((2, 2), np.float32)
    Wv[0, 1] = np.nan
    nodes = [helper.make_node("MatMul", ["x", "W"], ["y"], name="mm")]
    p = tmp_path / "nan.onnx"
    onnx.save(_model(nodes, [numpy_helper.from_array(Wv, "W")], ("N", 2)), p)
    with pytest.raises(ModelFormatError, match="NaN"):
        load_onnx(p)


def test_dynamic_dims(tmp_path: Path) -> None:
    W = numpy_helper.from_array(np.ones((6, 2), np.float32), "W")
    nodes = [helper.make_node("Flatten", ["x"], ["f"], axis=1), helper.make_node("MatMul", ["f", "W"], ["y"])]
    p = tmp_path / "dyn2.onnx"
    onnx.save(_model(nodes, [W], ("N", "a", "b")), p)
    with pytest.raises(ModelFormatError, match="dynamic"):
        load_onnx(p)
    p1 = tmp_path / "dyn1.onnx"  # exactly one dynamic non-batch dim is inferred from the weights
    onnx.save(_model(nodes, [W], ("N", 2, "b")), p1)
    assert load_onnx(p1).n_inputs == 6


def test_bad_files(tmp_path: Path) -> None:
    junk = tmp_path / "junk.onnx"
    junk.write_bytes(b"this is not a protobuf at all \xff\xfe" * 10)
    with pytest.raises(ModelFormatError, match="junk.onnx"):
        load_onnx(junk)
    with pytest.raises(ModelFormatError, match="no such file"):
        load_onnx(tmp_path / "missing.onnx")
    net = network_from_layers([(np.ones((4, 3)), np.zeros(4)), (np.ones((2, 4)), np.zeros(2))])
    good = save_onnx(net, tmp_path / "good.onnx")
    data = good.read_bytes()
    trunc = tmp_path / "trunc.onnx"
    trunc.write_bytes(data[: len(data) // 2])
    with pytest.raises(ModelFormatError, match="trunc.onnx"):
        load_onnx(trunc)


def test_torch_residual_cnn_with_maxpool(tmp_path: Path) -> None:
    """A torch residual block (conv, ReLU, conv, + identity, ReLU) and max pooling: exact import."""
    import torch

    torch.manual_seed(0)

    class Net(torch.nn.Module):
        def __init__(self) -> None:
            super().__init__()
            self.c1 = torch.nn.Conv2d(1, 2, 3, padding=1)
            self.c2 = torch.nn.Conv2d(2, 2, 3, padding=1)
            self.c3 = torch.nn.Conv2d(2, 2, 3, padding=1)
            self.pool = torch.nn.MaxPool2d(2)
            self.fc = torch.nn.Linear(2 * 3 * 3, 3)

        def forward(self, x):
            r = torch.relu(self.c1(x))
            h = torch.relu(self.c3(torch.relu(self.c2(r))) + r)
            return self.fc(torch.flatten(self.pool(h), 1))

    m = Net()
    p = _export(m, tmp_path / "res.onnx", 36, shape=(1, 1, 6, 6))
    assert {"MaxPool", "Add", "Conv"} <= {n.op_type for n in onnx.load(p).graph.node}
    _check_torch(m, p, (1, 6, 6))
