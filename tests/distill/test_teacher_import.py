"""Teacher import (:func:`distill.teacher.load_teacher`): torch-exported CNNs, softmax outputs,
TorchScript, parity refusal, unsupported graphs."""

from __future__ import annotations

import numpy as np
import onnx
import pytest
import torch
from onnx import TensorProto, helper, numpy_helper
from torch import nn
from torchkit import ResTanhCNN

import distill.onnx_torch as OT
from distill.teacher import PARITY_POINTS, load_teacher
from encoders.errors import ConfigError, ModelFormatError, UnsupportedModelError


def _cnn(softmax: bool = False) -> nn.Module:
    torch.manual_seed(0)
    m = ResTanhCNN(softmax)
    with torch.no_grad():  # non-trivial BatchNorm statistics
        m.bn.running_mean.uniform_(-0.2, 0.2)
        m.bn.running_var.uniform_(0.5, 1.5)
    return m.eval()


def _ops(path) -> list[str]:
    return [n.op_type for n in onnx.load(str(path)).graph.node]


@pytest.fixture(scope="module")
def cnn_teacher(tmp_path_factory):
    d = tmp_path_factory.mktemp("cnn")
    return _cnn(), load_teacher(_cnn(), input_shape=(1, 8, 8), export_path=d / "cnn.onnx")


def test_torch_cnn_imports_with_parity_and_gradients(cnn_teacher) -> None:
    net, T = cnn_teacher
    ops = _ops(T.onnx_path)
    for op in ("Conv", "BatchNormalization", "Add", "MaxPool", "Tanh"):
        assert op in ops
    assert T.input_shape == (1, 8, 8) and T.n_inputs == 64 and T.n_classes == 10
    assert T.output_kind == "logits" and not T.outputs_probabilities
    assert T.converter == "onnx-interpreter" and T.source_kind == "module"
    assert T.parity_points >= PARITY_POINTS and T.parity <= 1e-4
    assert not T.encodable and "MaxPool" in T.encode_error and T.network() is None
    # the logits and their input gradients are the original network's
    x = torch.rand(7, 64, requires_grad=True)
    (g1,) = torch.autograd.grad(T.module(x).pow(2).sum(), x)
    x2 = x.detach().clone().requires_grad_(True)
    (g2,) = torch.autograd.grad(net(x2.reshape(7, 1, 8, 8)).pow(2).sum(), x2)
    torch.testing.assert_close(g1, g2, rtol=1e-4, atol=1e-5)
    ref = net(x.detach().reshape(7, 1, 8, 8)).detach().numpy()
    np.testing.assert_allclose(T.logits(x.detach().numpy()), ref, atol=1e-5)
    assert all(not p.requires_grad for p in T.module.parameters())


def test_onnx_file_of_the_cnn_reimports_identically(cnn_teacher) -> None:
    _, T = cnn_teacher
    T2 = load_teacher(T.onnx_path)
    assert T2.source_kind == "onnx" and T2.sha256 == T.sha256 and T2.input_shape == (1, 8, 8)
    X = np.random.default_rng(1).random((20, 64))
    np.testing.assert_allclose(T2.logits(X), T.logits(X), atol=1e-6)


def test_softmax_output_is_detected_and_stripped(tmp_path) -> None:
    net = _cnn(softmax=True)
    T = load_teacher(net, input_shape=(1, 8, 8), export_path=tmp_path / "s.onnx")
    assert _ops(T.onnx_path)[-1] == "Softmax"
    assert T.outputs_probabilities and T.output_kind == "softmax-stripped"
    assert not T.encodable
    x = torch.rand(9, 64)
    logits = T.module(x)
    probs = net(x.reshape(9, 1, 8, 8))
    torch.testing.assert_close(torch.softmax(logits, 1), probs, rtol=1e-5, atol=1e-6)
    # they are the pre-softmax logits of the original, not probabilities treated as logits
    ref = _cnn(softmax=False)(x.reshape(9, 1, 8, 8))
    torch.testing.assert_close(logits, ref, rtol=1e-5, atol=1e-5)
    assert (logits < 0).any()
    np.testing.assert_allclose(T.module.raw(x).detach().numpy(), probs.detach().numpy(), atol=1e-6)


def _graph(nodes, inits, in_dims, out_dims, out_name="y"):
    g = helper.make_graph(
        nodes,
        "g",
        [helper.make_tensor_value_info("x", TensorProto.FLOAT, in_dims)],
        [helper.make_tensor_value_info(out_name, TensorProto.FLOAT, out_dims)],
        initializer=[numpy_helper.from_array(v, k) for k, v in inits.items()],
    )
    m = helper.make_model(g, opset_imports=[helper.make_opsetid("", 17)])
    m.ir_version = 8
    return m


def _save(m, path):
    onnx.save(m, str(path))
    return path


def test_probabilities_without_a_softmax_node_become_log_probabilities(tmp_path) -> None:
    """A hand-built normalisation ``exp(z) / Σ exp(z)``: detected on the probes, logits = log p."""
    W = np.random.default_rng(0).standard_normal((6, 4)).astype(np.float32)
    nodes = [
        helper.make_node("MatMul", ["x", "W"], ["z"]),
        helper.make_node("Exp", ["z"], ["e"]),
        helper.make_node("ReduceSum", ["e", "ax"], ["s"], keepdims=1),
        helper.make_node("Div", ["e", "s"], ["y"]),
    ]
    m = _graph(nodes, {"W": W, "ax": np.array([1], np.int64)}, ["N", 6], ["N", 4])
    T = load_teacher(_save(m, tmp_path / "p.onnx"))
    assert T.outputs_probabilities and T.output_kind == "log-probabilities"
    X = np.random.default_rng(2).random((11, 6)).astype(np.float32)
    z = X.astype(np.float64) @ W
    p = np.exp(z) / np.exp(z).sum(1, keepdims=True)
    np.testing.assert_allclose(T.probabilities(X), p, atol=1e-5)
    np.testing.assert_allclose(T.logits(X), np.log(p), atol=1e-4)


def test_softmax_over_the_wrong_axis_is_refused(tmp_path) -> None:
    nodes = [
        helper.make_node("Reshape", ["x", "s"], ["r"]),
        helper.make_node("Softmax", ["r"], ["y"], axis=1, name="sm"),
    ]
    m = _graph(nodes, {"s": np.array([-1, 2, 3], np.int64)}, ["N", 6], ["N", 2, 3])
    with pytest.raises(UnsupportedModelError, match="Softmax node 'sm'"):
        load_teacher(_save(m, tmp_path / "w.onnx"))


def test_logsoftmax_output_counts_as_logits(tmp_path) -> None:
    W = np.random.default_rng(0).standard_normal((6, 3)).astype(np.float32)
    m = _graph([helper.make_node("MatMul", ["x", "W"], ["z"]), helper.make_node("LogSoftmax", ["z"], ["y"])],
               {"W": W}, ["N", 6], ["N", 3])  # fmt: skip
    T = load_teacher(_save(m, tmp_path / "l.onnx"))
    assert T.output_kind == "logits" and not T.outputs_probabilities


def test_parity_above_tolerance_is_refused(tmp_path, monkeypatch, cnn_teacher) -> None:
    _, T = cnn_teacher
    monkeypatch.setitem(OT.OPS, "Tanh", lambda node: lambda x: torch.tanh(x) * 1.001)
    with pytest.raises(ModelFormatError) as exc:
        load_teacher(T.onnx_path)
    msg = str(exc.value)
    assert "\n" not in msg and "differs from onnxruntime" in msg and "refusing" in msg


def test_unsupported_graph_names_every_node_in_one_line(tmp_path) -> None:
    nodes = [
        helper.make_node("Einsum", ["x", "x"], ["a"], equation="ij,ij->ij", name="e1"),
        helper.make_node("Hardmax", ["a"], ["b"], name="hm"),
        helper.make_node("TopK", ["b", "k"], ["y", "i"], name="top"),
    ]
    m = _graph(nodes, {"k": np.array([2], np.int64)}, ["N", 4], ["N", 2])
    with pytest.raises(UnsupportedModelError) as exc:
        load_teacher(_save(m, tmp_path / "u.onnx"))
    msg = str(exc.value)
    assert "\n" not in msg and str(tmp_path / "u.onnx") in msg
    for needle in ("Einsum", "'e1'", "Hardmax", "'hm'", "TopK", "'top'"):
        assert needle in msg


def test_torchscript_file_and_fixed_batch_export(tmp_path) -> None:
    net = _cnn()
    ts = torch.jit.trace(net, torch.zeros(1, 1, 8, 8))
    ts.save(str(tmp_path / "t.pt"))
    T = load_teacher(tmp_path / "t.pt", input_shape=(1, 8, 8), export_path=tmp_path / "t.onnx")
    assert T.source_kind == "torchscript" and T.parity <= 1e-4
    # an export with a fixed batch of 1 (no dynamic axes) runs per sample
    torch.onnx.export(net, (torch.zeros(1, 1, 8, 8),), str(tmp_path / "fixed.onnx"), input_names=["x"],
                      output_names=["y"], opset_version=17, dynamo=False)  # fmt: skip
    T1 = load_teacher(tmp_path / "fixed.onnx")
    X = np.random.default_rng(3).random((5, 64))
    np.testing.assert_allclose(T1.logits(X), T.logits(X), atol=1e-5)
    # gradients flow through the per-sample (vmap) path too
    x = torch.from_numpy(X.astype(np.float32)).requires_grad_(True)
    (g1,) = torch.autograd.grad(T1.module(x).sum(), x)
    x2 = x.detach().clone().requires_grad_(True)
    (g2,) = torch.autograd.grad(net(x2.reshape(5, 1, 8, 8)).sum(), x2)
    torch.testing.assert_close(g1, g2, rtol=1e-4, atol=1e-5)


def test_mlp_teacher_is_encodable(tmp_path) -> None:
    torch.manual_seed(0)
    mlp = nn.Sequential(nn.Linear(64, 16), nn.ReLU(), nn.Linear(16, 10))
    T = load_teacher(mlp, export_path=tmp_path / "m.onnx")
    assert T.input_shape == (64,) and T.encodable and T.ir_parity <= 1e-4
    assert T.network().n_inputs == 64


def test_bad_inputs(tmp_path) -> None:
    (tmp_path / "junk.onnx").write_bytes(b"not onnx")
    with pytest.raises(ModelFormatError, match="junk.onnx"):
        load_teacher(tmp_path / "junk.onnx")
    with pytest.raises(ModelFormatError, match="no such"):
        load_teacher(tmp_path / "missing.onnx")
    (tmp_path / "junk.pt").write_bytes(b"nope")
    with pytest.raises(ModelFormatError, match="neither ONNX"):
        load_teacher(tmp_path / "junk.pt")
    with pytest.raises(ConfigError, match="input shape"):
        load_teacher(nn.Conv2d(1, 2, 3))
    with pytest.raises(ConfigError, match="at least 1000"):
        load_teacher(_cnn(), input_shape=(1, 8, 8), points=10)


def test_affine_teachers_are_exported_as_encodable_gemm_graphs(tmp_path) -> None:
    """An MLP checkpoint or the sigmoid teacher becomes a Gemm/Relu graph the network IR encodes."""
    from distill.export import save_checkpoint
    from distill.models import SigmoidTeacher

    dom = (np.full(2, -3.0), np.full(2, 3.0))
    T = load_teacher(SigmoidTeacher(2.0), domain=dom, export_path=tmp_path / "s.onnx")
    assert T.encodable and _ops(T.onnx_path) == ["Gemm"] and T.meta["input_domain"]["lo"] == [-3.0, -3.0]
    save_checkpoint(SigmoidTeacher(2.0), tmp_path / "s.pt", {"input_domain": {"lo": [-3, -3], "hi": [3, 3]}})
    T2 = load_teacher(tmp_path / "s.pt", export_path=tmp_path / "s2.onnx")
    assert T2.source_kind == "checkpoint" and T2.encodable and T2.parity == 0.0
    X = np.array([[1.0, -0.5], [-2.0, 0.3]])
    np.testing.assert_allclose(T2.logits(X), [[1.0, 0.0], [-3.4, 0.0]], atol=1e-6)


def test_check_data(cnn_teacher) -> None:
    from distill.data import load_dataset

    _, T = cnn_teacher
    T.check_data(load_dataset("digits"))
    with pytest.raises(ConfigError, match="64 inputs"):
        T.check_data(load_dataset("gaussians2d"))
