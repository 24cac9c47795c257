"""Per-operator parity of the ONNX → torch interpreter (:mod:`distill.onnx_torch`) with onnxruntime.

Each case is a one- or few-node ONNX graph built with ``onnx.helper`` (random weights, a dynamic batch
of 5), run by onnxruntime and by :class:`distill.onnx_torch.OnnxModule` on the same random input.
"""

from __future__ import annotations

import numpy as np
import pytest
import torch
from onnx import TensorProto, helper, numpy_helper

from distill.onnx_torch import OnnxModule, unsupported_nodes
from encoders.errors import UnsupportedModelError

RNG = np.random.default_rng(0)


def _w(*shape: int, scale: float = 0.5) -> np.ndarray:
    return (RNG.standard_normal(shape) * scale).astype(np.float32)


def _model(nodes, inits: dict, in_shape: tuple, opset: int = 17):
    graph = helper.make_graph(
        nodes,
        "g",
        [helper.make_tensor_value_info("x", TensorProto.FLOAT, ["N", *in_shape])],
        [helper.make_tensor_value_info("y", TensorProto.FLOAT, None)],
        initializer=[numpy_helper.from_array(np.asarray(v), k) for k, v in inits.items()],
    )
    m = helper.make_model(graph, opset_imports=[helper.make_opsetid("", opset)])
    m.ir_version = 8
    return m


def _ort(m, x: np.ndarray) -> np.ndarray:
    import onnxruntime as ort

    opts = ort.SessionOptions()
    opts.intra_op_num_threads = 1
    opts.log_severity_level = 3
    s = ort.InferenceSession(m.SerializeToString(), sess_options=opts, providers=["CPUExecutionProvider"])
    return s.run(None, {"x": x})[0]


def check(nodes, inits, in_shape, opset: int = 17, positive: bool = False, tol: float = 1e-5) -> None:
    m = _model(nodes, inits, in_shape, opset)
    x = RNG.standard_normal((5, *in_shape)).astype(np.float32)
    if positive:
        x = np.abs(x) + 0.1
    ref = _ort(m, x)
    mod = OnnxModule(m, "test.onnx")
    got = mod(torch.from_numpy(x)).detach().numpy()
    assert got.shape == ref.shape
    np.testing.assert_allclose(got, ref, rtol=tol, atol=tol)
    # the float64 copy runs too and agrees
    got64 = mod.double()(torch.from_numpy(x.astype(np.float64))).detach().numpy()
    np.testing.assert_allclose(got64, ref, rtol=1e-4, atol=1e-4)


N = helper.make_node

CONV_CASES = {
    "plain": {},
    "pads": {"pads": [1, 1, 1, 1]},
    "asym_pads": {"pads": [0, 1, 2, 1]},
    "stride2": {"strides": [2, 2], "pads": [1, 1, 1, 1]},
    "dilation": {"dilations": [2, 2]},
    "same_upper": {"auto_pad": "SAME_UPPER", "strides": [2, 2]},
    "same_lower": {"auto_pad": "SAME_LOWER", "strides": [2, 2]},
    "valid": {"auto_pad": "VALID"},
}


@pytest.mark.parametrize("case", sorted(CONV_CASES))
def test_conv(case: str) -> None:
    at = CONV_CASES[case]
    check(
        [N("Conv", ["x", "W", "B"], ["y"], kernel_shape=[3, 3], **at)],
        {"W": _w(4, 2, 3, 3), "B": _w(4)},
        (2, 7, 7),
    )


def test_conv_groups_no_bias_and_1d() -> None:
    check([N("Conv", ["x", "W"], ["y"], group=2)], {"W": _w(4, 1, 3, 3)}, (2, 6, 6))
    check([N("Conv", ["x", "W", "B"], ["y"], pads=[1, 1])], {"W": _w(3, 2, 3), "B": _w(3)}, (2, 9))


MAXPOOL_CASES = {
    "k2s2": {"kernel_shape": [2, 2], "strides": [2, 2]},
    "k3s1p1": {"kernel_shape": [3, 3], "pads": [1, 1, 1, 1]},
    "ceil": {"kernel_shape": [3, 3], "strides": [2, 2], "ceil_mode": 1},
    "dilated": {"kernel_shape": [2, 2], "dilations": [2, 2]},
    "same_upper": {"kernel_shape": [2, 2], "strides": [2, 2], "auto_pad": "SAME_UPPER"},
    "asym": {"kernel_shape": [2, 2], "pads": [0, 1, 1, 0]},
}


@pytest.mark.parametrize("case", sorted(MAXPOOL_CASES))
def test_maxpool(case: str) -> None:
    check([N("MaxPool", ["x"], ["y"], **MAXPOOL_CASES[case])], {}, (2, 7, 7))


AVGPOOL_CASES = {
    "k2s2": {"kernel_shape": [2, 2], "strides": [2, 2]},
    "pad_exclude": {"kernel_shape": [3, 3], "pads": [1, 1, 1, 1], "count_include_pad": 0},
    "pad_include": {"kernel_shape": [3, 3], "pads": [1, 1, 1, 1], "count_include_pad": 1},
    "asym_exclude": {"kernel_shape": [2, 2], "pads": [1, 0, 0, 1]},
    "same_upper": {"kernel_shape": [3, 3], "strides": [2, 2], "auto_pad": "SAME_UPPER"},
}


@pytest.mark.parametrize("case", sorted(AVGPOOL_CASES))
def test_avgpool(case: str) -> None:
    check([N("AveragePool", ["x"], ["y"], **AVGPOOL_CASES[case])], {}, (2, 7, 7))


def test_global_pools_and_batchnorm() -> None:
    check([N("GlobalAveragePool", ["x"], ["y"])], {}, (3, 5, 4))
    check([N("GlobalMaxPool", ["x"], ["y"])], {}, (3, 5, 4))
    bn = {"s": _w(3), "b": _w(3), "m": _w(3), "v": np.abs(_w(3)) + 0.5}
    check([N("BatchNormalization", ["x", "s", "b", "m", "v"], ["y"], epsilon=1e-3)], bn, (3, 4, 4))


def test_residual_add_concat_and_arithmetic() -> None:
    inits = {"W": _w(2, 2, 3, 3), "c": _w(1, 2, 1, 1)}
    check(
        [
            N("Conv", ["x", "W"], ["h"], pads=[1, 1, 1, 1]),
            N("Relu", ["h"], ["r"]),
            N("Add", ["x", "r"], ["a"]),
            N("Sub", ["a", "c"], ["s"]),
            N("Mul", ["s", "c"], ["m"]),
            N("Div", ["m", "c"], ["d"]),
            N("Concat", ["d", "x"], ["y"], axis=1),
        ],
        inits,
        (2, 5, 5),
    )


@pytest.mark.parametrize(
    "op,attrs",
    [
        ("Relu", {}),
        ("LeakyRelu", {"alpha": 0.2}),
        ("LeakyRelu", {}),
        ("Sigmoid", {}),
        ("Tanh", {}),
        ("Erf", {}),
        ("Elu", {"alpha": 0.7}),
        ("Softplus", {}),
        ("HardSigmoid", {}),
        ("Exp", {}),
        ("Neg", {}),
        ("Abs", {}),
        ("Identity", {}),
        ("Softmax", {}),
        ("Softmax", {"axis": 1}),
        ("LogSoftmax", {}),
    ],
)
def test_activations(op: str, attrs: dict) -> None:
    check([N(op, ["x"], ["y"], **attrs)], {}, (3, 4))


@pytest.mark.parametrize("approx", ["none", "tanh"])
def test_gelu_opset20(approx: str) -> None:
    check([N("Gelu", ["x"], ["y"], approximate=approx)], {}, (6,), opset=20)


def test_softmax_opset11_coerces_to_2d() -> None:
    check([N("Softmax", ["x"], ["y"], axis=1)], {}, (3, 4), opset=11)
    check([N("LogSoftmax", ["x"], ["y"])], {}, (3, 4), opset=11)


def test_positive_unary_ops() -> None:
    for op in ("Log", "Sqrt", "Reciprocal"):
        check([N(op, ["x"], ["y"])], {}, (4,), positive=True)
    check([N("Pow", ["x", "p"], ["y"])], {"p": np.float32(1.5)}, (4,), positive=True)


def test_dropout_identity_and_flatten_reshape() -> None:
    check([N("Dropout", ["x", "r"], ["y"])], {"r": np.float32(0.5)}, (3, 4), opset=13)
    check([N("Flatten", ["x"], ["y"])], {}, (2, 3, 4))
    check([N("Flatten", ["x"], ["y"], axis=2)], {}, (2, 3, 4))
    check([N("Reshape", ["x", "s"], ["y"])], {"s": np.array([0, -1], np.int64)}, (2, 3, 4))
    check([N("Reshape", ["x", "s"], ["y"])], {"s": np.array([0, 3, 2, 4], np.int64)}, (2, 3, 4))


def test_gemm_and_matmul() -> None:
    check([N("Gemm", ["x", "W", "b"], ["y"], transB=1)], {"W": _w(5, 4), "b": _w(5)}, (4,))
    check([N("Gemm", ["x", "W", "b"], ["y"], alpha=0.5, beta=2.0)], {"W": _w(4, 5), "b": _w(1, 5)}, (4,))
    check([N("Gemm", ["x", "W"], ["y"])], {"W": _w(4, 3)}, (4,))
    check([N("MatMul", ["x", "W"], ["h"]), N("Add", ["h", "b"], ["y"])], {"W": _w(4, 3), "b": _w(3)}, (4,))
    check([N("MatMul", ["x", "W"], ["y"])], {"W": _w(4, 3)}, (2, 4))


def test_transpose_squeeze_unsqueeze() -> None:
    check([N("Transpose", ["x"], ["y"], perm=[0, 2, 1])], {}, (3, 4))
    ax = {"a": np.array([1], np.int64)}
    check([N("Unsqueeze", ["x", "a"], ["u"]), N("Squeeze", ["u", "a"], ["y"])], ax, (3, 4), opset=13)
    check(
        [N("Unsqueeze", ["x"], ["u"], axes=[1]), N("Squeeze", ["u"], ["y"], axes=[1])], {}, (3, 4), opset=11
    )


def test_dynamic_flatten_as_torch_exports_it() -> None:
    """``Shape → Gather → Unsqueeze → Concat → Reshape`` (the legacy exporter's ``x.view(x.size(0), -1)``)."""
    inits = {"zero": np.array(0, np.int64), "ax": np.array([0], np.int64), "m1": np.array([-1], np.int64)}
    check(
        [
            N("Shape", ["x"], ["s"]),
            N("Gather", ["s", "zero"], ["n"], axis=0),
            N("Unsqueeze", ["n", "ax"], ["n1"]),
            N("Concat", ["n1", "m1"], ["shape"], axis=0),
            N("Reshape", ["x", "shape"], ["y"]),
        ],
        inits,
        (2, 3, 3),
    )


def test_constant_cast_clip_reduce_pad_slice() -> None:
    const = N("Constant", [], ["k"], value=numpy_helper.from_array(np.float32(2.0)))
    check([const, N("Mul", ["x", "k"], ["y"])], {}, (4,))
    check([N("Constant", [], ["k"], value_float=3.0), N("Add", ["x", "k"], ["y"])], {}, (4,))
    check(
        [N("Cast", ["x"], ["i"], to=TensorProto.INT64), N("Cast", ["i"], ["y"], to=TensorProto.FLOAT)],
        {},
        (4,),
    )
    lo_hi = {"lo": np.float32(-0.3), "hi": np.float32(0.4)}
    check([N("Clip", ["x", "lo", "hi"], ["y"])], lo_hi, (5,))
    check([N("ReduceMean", ["x"], ["y"], axes=[2, 3], keepdims=1)], {}, (2, 3, 3), opset=13)
    check([N("ReduceMean", ["x", "a"], ["y"], keepdims=0)], {"a": np.array([1], np.int64)}, (2, 3), opset=18)
    check([N("ReduceSum", ["x", "a"], ["y"])], {"a": np.array([-1], np.int64)}, (2, 3), opset=13)
    check([N("ReduceMax", ["x"], ["y"], axes=[1])], {}, (2, 3), opset=13)
    pads = {"p": np.array([0, 0, 1, 2, 0, 0, 2, 1], np.int64), "v": np.float32(0.5)}
    check([N("Pad", ["x", "p", "v"], ["y"])], pads, (2, 3, 3), opset=13)
    sl = {"s": np.array([1, 0], np.int64), "e": np.array([3, -1], np.int64), "a": np.array([1, 2], np.int64)}
    check([N("Slice", ["x", "s", "e", "a"], ["y"])], sl, (4, 5), opset=13)


def test_layer_normalization() -> None:
    check(
        [N("LayerNormalization", ["x", "s", "b"], ["y"], axis=-1)], {"s": _w(6), "b": _w(6)}, (3, 6), opset=17
    )


def test_max_min_sum_where_expand() -> None:
    check([N("Max", ["x", "c"], ["y"])], {"c": _w(4)}, (4,))
    check([N("Min", ["x", "c", "d"], ["y"])], {"c": _w(4), "d": _w(4)}, (4,))
    check(
        [N("Expand", ["c", "s"], ["e"]), N("Add", ["x", "e"], ["y"])],
        {"c": _w(1), "s": np.array([4], np.int64)},
        (4,),
    )
    check([N("Greater", ["x", "c"], ["g"]), N("Where", ["g", "x", "c"], ["y"])], {"c": _w(4)}, (4,))


def test_gradients_flow_through_the_graph() -> None:
    """A Conv/MaxPool/Tanh graph: the interpreter's input gradient equals a hand-written torch twin's."""
    W, B = _w(3, 1, 3, 3), _w(3)
    m = _model(
        [
            N("Conv", ["x", "W", "B"], ["c"], pads=[1, 1, 1, 1]),
            N("MaxPool", ["c"], ["p"], kernel_shape=[2, 2], strides=[2, 2]),
            N("Tanh", ["p"], ["y"]),
        ],
        {"W": W, "B": B},
        (1, 6, 6),
    )
    x = torch.from_numpy(RNG.standard_normal((4, 1, 6, 6)).astype(np.float32)).requires_grad_(True)
    (g1,) = torch.autograd.grad(OnnxModule(m, "t")(x).sum(), x)
    twin = torch.tanh(
        torch.nn.functional.max_pool2d(
            torch.nn.functional.conv2d(x, torch.from_numpy(W), torch.from_numpy(B), padding=1), 2
        )
    )
    (g2,) = torch.autograd.grad(twin.sum(), x)
    torch.testing.assert_close(g1, g2)
    assert g1.abs().sum() > 0


def test_fixed_batch_graph_runs_per_sample_under_vmap() -> None:
    """A graph exported with batch 1 and a constant ``Reshape`` to ``[1, 12]`` still runs on a batch."""
    graph = helper.make_graph(
        [N("Reshape", ["x", "s"], ["r"]), N("Gemm", ["r", "W"], ["y"], transB=1)],
        "g",
        [helper.make_tensor_value_info("x", TensorProto.FLOAT, [1, 3, 4])],
        [helper.make_tensor_value_info("y", TensorProto.FLOAT, None)],
        initializer=[
            numpy_helper.from_array(np.array([1, 12], np.int64), "s"),
            numpy_helper.from_array(_w(2, 12), "W"),
        ],
    )
    m = helper.make_model(graph, opset_imports=[helper.make_opsetid("", 17)])
    mod = OnnxModule(m, "t", per_sample=True, sample_shape=(1, 3, 4))
    x = RNG.standard_normal((6, 3, 4)).astype(np.float32)
    got = mod(torch.from_numpy(x)).detach().numpy().reshape(6, -1)
    ref = np.concatenate([_ort(m, x[i : i + 1]) for i in range(6)])
    np.testing.assert_allclose(got, ref, rtol=1e-5, atol=1e-5)


def test_every_unsupported_node_is_named() -> None:
    m = _model(
        [
            N("Relu", ["x"], ["a"], name="ok"),
            N("Einsum", ["a", "a"], ["b"], equation="ij,ij->ij", name="e1"),
            N("BatchNormalization", ["b", "s", "s", "s", "s"], ["c"], training_mode=1, name="bn_train"),
            N("Hardmax", ["c"], ["y"], name="hm"),
        ],
        {"s": np.ones(4, np.float32)},
        (4,),
        opset=15,
    )
    bad = unsupported_nodes(m)
    assert [b[1] for b in bad] == ["e1", "bn_train", "hm"]
    with pytest.raises(UnsupportedModelError) as exc:
        OnnxModule(m, "net.onnx")
    msg = str(exc.value)
    assert "\n" not in msg and "net.onnx" in msg
    for needle in ("Einsum", "e1", "training_mode=1", "Hardmax", "hm"):
        assert needle in msg
    assert len(exc.value.nodes) == 3
