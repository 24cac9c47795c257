"""The teacher zoo: presets, training (standard and PGD-AT), checked export, checkpoints, the CLI."""

from __future__ import annotations

import json

import numpy as np
import onnx
import pytest
import torch
from clikit import bad, run

from distill.data import load_dataset, write_idx
from distill.export import export_onnx, load_model, save_checkpoint
from distill.models import ZOO_NAMES, ImageClassifier, n_parameters, zoo_model
from distill.teacher import load_teacher
from distill.train import model_meta, train_teacher
from encoders.errors import ConfigError

#: ops each preset's ONNX must contain (the point of the preset)
PRESET_OPS = {
    "cnn-small": {"Conv", "MaxPool", "Relu", "Gemm"},
    "cnn-large": {"Conv", "MaxPool", "Relu", "Gemm"},
    "resnet-mini": {"Conv", "BatchNormalization", "Add", "MaxPool", "GlobalAveragePool"},
    "cnn-tanh-bn": {"Conv", "Tanh", "BatchNormalization", "MaxPool", "AveragePool"},
}


@pytest.fixture(scope="module")
def digits():
    return load_dataset("digits")


@pytest.mark.parametrize("arch", ZOO_NAMES)
def test_preset_trains_exports_and_imports(arch: str, digits, tmp_path) -> None:
    res = train_teacher(digits, arch=arch, epochs=3, lr=0.05, progress=False)
    assert isinstance(res.model, ImageClassifier) and res.config["arch"] == arch
    assert res.test_accuracy > 0.5  # three epochs on digits learn something for every preset
    meta = model_meta(digits, res.config)
    side = export_onnx(res.model, tmp_path / "t.onnx", 64, meta)
    ops = {n.op_type for n in onnx.load(str(tmp_path / "t.onnx")).graph.node}
    assert PRESET_OPS[arch] <= ops, ops
    assert side["input_shape"] == [1, 8, 8] and side["architecture"]["preset"] == arch
    # the verifiable IR encodes Conv, MaxPool (as ReLU layers), BatchNorm and residual Adds exactly, but
    # not Tanh: only the Tanh preset is a teacher that cannot be verified directly
    if arch == "cnn-tanh-bn":
        assert side["export_check"]["encodable"] is False and "Tanh" in side["export_check"]["encode_error"]
    else:
        assert side["export_check"]["encodable"] is True, side["export_check"]
    T = load_teacher(tmp_path / "t.onnx", X=digits.X_test)
    assert T.input_shape == (1, 8, 8) and T.parity_scaled <= 1e-4 and T.output_kind == "logits"
    X = digits.X_test[:50]
    with torch.no_grad():
        ref = res.model(torch.from_numpy(X)).numpy()
    np.testing.assert_allclose(T.logits(X), ref, rtol=1e-4, atol=1e-4)
    # checkpoint round trip
    save_checkpoint(res.model, tmp_path / "t.pt", meta)
    back = load_model(tmp_path / "t.pt")
    assert isinstance(back, ImageClassifier) and back.meta["dataset"] == "digits"
    with torch.no_grad():
        np.testing.assert_array_equal(back(torch.from_numpy(X)).numpy(), ref)


def test_pgd_adversarial_training_of_a_cnn(digits) -> None:
    res = train_teacher(digits, arch="cnn-small", adv_eps=0.05, epochs=1, attack_steps=2, progress=False)
    assert res.config["adv_eps"] == 0.05 and np.isfinite(res.history[-1]["loss"])


def test_cnn_large_on_mnist_shape_has_over_100k_parameters_and_maxpool(tmp_path) -> None:
    torch.manual_seed(0)
    m = zoo_model("cnn-large", (1, 28, 28), 10)
    assert n_parameters(m) >= 100_000
    export_onnx(m, tmp_path / "l.onnx", 784)
    ops = [n.op_type for n in onnx.load(str(tmp_path / "l.onnx")).graph.node]
    assert ops.count("MaxPool") == 2
    T = load_teacher(tmp_path / "l.onnx")
    assert T.input_shape == (1, 28, 28)
    # its second convolution would unroll to a 25088×25088 dense matrix: refused, not built
    assert T.encodable is False and "too large for the verifiable IR" in T.encode_error


def test_zoo_needs_image_data() -> None:
    with pytest.raises(ConfigError, match="image"):
        zoo_model("cnn-small", None, 3)
    with pytest.raises(ConfigError, match="too small"):
        zoo_model("cnn-small", (1, 3, 3), 3)
    with pytest.raises(ConfigError, match="preset"):
        zoo_model("cnn-huge", (1, 8, 8), 3)


# --------------------------------------------------------------------------------------------------
# CLI
# --------------------------------------------------------------------------------------------------
def test_cli_train_teacher_preset_on_idx_data_then_distill(tmp_path, capsys) -> None:
    rng = np.random.default_rng(0)
    imgs = rng.integers(0, 256, size=(90, 12, 12), dtype=np.uint8)
    labs = (np.arange(90) % 3).astype(np.uint8)
    imgs[labs == 1, :6] = 255  # learnable classes
    imgs[labs == 2, :, :6] = 0
    write_idx(tmp_path / "train-images-idx3-ubyte", imgs)
    write_idx(tmp_path / "train-labels-idx1-ubyte", labs)
    out = tmp_path / "t"
    code, stdout, err = run(
        ["train-teacher", "--data", f"idx:{tmp_path}", "--arch", "resnet-mini", "--epochs", "2",
         "--out", out, "--no-progress", "--json"],
        capsys,
    )  # fmt: skip
    assert code == 0, err
    res = json.loads(stdout)
    assert res["config"]["arch"] == "resnet-mini" and res["n_parameters"] > 1000
    imp = res["teacher_import"]
    assert imp["input_shape"] == [1, 12, 12] and imp["parity"]["max_scaled_diff_vs_onnxruntime"] <= 1e-4
    assert imp["encodable"] is True  # residual Adds, BatchNorm and MaxPool are encoded exactly by the IR
    code, stdout, err = run(
        ["distill", "--teacher", out / "teacher.onnx", "--epochs", "2", "--eval-steps", "0", "--out",
         tmp_path / "s", "--no-progress", "--json"],
        capsys,
    )  # fmt: skip
    assert code == 0, err
    assert json.loads(stdout)["config"]["arch"] == "144-32-32-3"


def test_cli_refusals(tmp_path, capsys) -> None:
    bad(["train-teacher", "--arch", "cnn-huge", "--out", tmp_path / "x"], capsys, "cnn-small")
    np.savetxt(tmp_path / "d.csv", np.c_[np.random.default_rng(0).random((20, 4)), np.arange(20) % 2],
               delimiter=",")  # fmt: skip
    csv = f"csv:{tmp_path / 'd.csv'}"
    bad(["train-teacher", "--data", csv, "--arch", "cnn-small", "--out", tmp_path / "y"], capsys, "image")
    from onnx import TensorProto, helper

    g = helper.make_graph(
        [helper.make_node("Einsum", ["x", "x"], ["a"], equation="ij,ij->ij", name="e1"),
         helper.make_node("Hardmax", ["a"], ["y"], name="hm")],
        "g",
        [helper.make_tensor_value_info("x", TensorProto.FLOAT, ["N", 64])],
        [helper.make_tensor_value_info("y", TensorProto.FLOAT, ["N", 64])],
    )  # fmt: skip
    m = helper.make_model(g, opset_imports=[helper.make_opsetid("", 17)])
    m.ir_version = 8
    onnx.save(m, str(tmp_path / "u.onnx"))
    bad(
        ["distill", "--teacher", tmp_path / "u.onnx", "--data", "digits", "--out", tmp_path / "z"],
        capsys,
        "Einsum",
        "'e1'",
        "Hardmax",
        "'hm'",
    )


@pytest.mark.slow
def test_cnn_large_trains_on_mnist5k_and_imports(tmp_path) -> None:
    """The benchmark's mnist5k teacher: ≥ 100k parameters, MaxPool, learns in two epochs, imports."""
    d = load_dataset("mnist5k")
    res = train_teacher(d, arch="cnn-large", epochs=2, progress=False)
    assert n_parameters(res.model) >= 100_000 and res.test_accuracy > 0.9
    export_onnx(res.model, tmp_path / "t.onnx", 784, model_meta(d, res.config))
    T = load_teacher(tmp_path / "t.onnx", X=d.X_test)
    assert T.input_shape == (1, 28, 28) and T.parity_scaled <= 1e-4 and not T.encodable
    agree = np.mean(T.logits(d.X_test).argmax(1) == res.model(torch.from_numpy(d.X_test)).argmax(1).numpy())
    assert agree == 1.0
