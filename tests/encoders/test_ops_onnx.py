"""ONNX operators of the network IR: replay against onnxruntime and a MILP verdict per operator.

Each case is a tiny ONNX model built with ``onnx.helper``.  For every case

* the IR (float64) and onnxruntime agree on a fixed input (with the hand-computed output where one is
  given) and on random inputs;
* a property ``∃ x ∈ box: y_j >= t`` goes through CROWN bounds, the MILP encoding and HiGHS, with the
  known answer: ``t = m + δ`` is UNSAT and ``t = m − δ`` is SAT with a counterexample that replays on
  onnxruntime, where ``m = max_box y_j`` is computed by onnxruntime alone over the box's corners.  That
  is the true maximum because every tested ``y_j`` is convex or monotone in each input (linear maps,
  re-indexing, max, |·|, LeakyRelu with α < 1, Clip, Min); the case table says which.
"""

from __future__ import annotations

import itertools
from collections.abc import Callable
from pathlib import Path

import numpy as np
import onnx
import pytest
from onnx import TensorProto, helper, numpy_helper

from encoders.errors import UnsupportedModelError
from encoders.network import OP_ELEMENT_TYPES, SUPPORTED_OPS, OpSupport, load_onnx, ort_evaluate
from encoders.properties import OutputDNFProperty
from verifier.backends.base import get_backend
from verifier.replay import replay
from verifier.results import SolveStatus

pytest.importorskip("onnxruntime")


def K(name: str, value, dtype=np.float32) -> onnx.TensorProto:
    return numpy_helper.from_array(np.asarray(value, dtype=dtype), name)


def I64(name: str, value) -> onnx.TensorProto:
    return K(name, value, np.int64)


def model(nodes, inits, in_shape, opset: int = 17, in_type=TensorProto.FLOAT) -> onnx.ModelProto:
    """A one-input one-output model; the output shape is what onnxruntime produces on zeros."""
    import onnxruntime as ort

    g = helper.make_graph(
        nodes, "g", [helper.make_tensor_value_info("x", in_type, list(in_shape))], [], inits
    )
    g.output.append(helper.make_tensor_value_info("y", TensorProto.FLOAT, None))
    m = helper.make_model(g, opset_imports=[helper.make_opsetid("", opset)])
    m.ir_version = 8
    m.graph.output[0].type.tensor_type.ClearField("shape")
    sess = ort.InferenceSession(m.SerializeToString(), providers=["CPUExecutionProvider"])
    dt = np.float64 if in_type == TensorProto.DOUBLE else np.float32
    o = sess.run(None, {"x": np.zeros(in_shape, dt)})[0]
    elem = onnx.helper.np_dtype_to_tensor_dtype(o.dtype)
    m.graph.output[0].CopyFrom(helper.make_tensor_value_info("y", elem, list(o.shape)))
    onnx.checker.check_model(m)
    return m


N = helper.make_node
AR16 = np.arange(16.0)

# name -> (builder, fixed input or None, expected output for it or None)
CASES: dict[str, tuple[Callable[[], onnx.ModelProto], np.ndarray | None, np.ndarray | None]] = {
    "neg": (
        lambda: model([N("Neg", ["x"], ["y"])], [], [3]),
        np.array([1.0, -2, 3]),
        np.array([-1.0, 2, -3]),
    ),
    "affine_broadcast": (  # ((x + k1) * k2 - k3) / k4
        lambda: model(
            [
                N("Add", ["x", "k1"], ["a"]),
                N("Mul", ["a", "k2"], ["b"]),
                N("Sub", ["k3", "b"], ["c"]),
                N("Div", ["c", "k4"], ["y"]),
            ],
            [K("k1", [1, 2, 3]), K("k2", [[2], [-1]]), K("k3", 1.0), K("k4", [4, 2, 1])],
            [2, 3],
        ),
        np.zeros(6),
        np.array([(1 - 2) / 4, (1 - 4) / 2, (1 - 6), (1 + 1) / 4, (1 + 2) / 2, (1 + 3)]),
    ),
    "sub_activations_broadcast": (  # x - mean over the row (Sub of two activations, broadcasting)
        lambda: model(
            [N("ReduceMean", ["x"], ["m"], axes=[1], keepdims=1), N("Sub", ["x", "m"], ["y"])], [], [2, 3], 13
        ),
        np.array([1.0, 2, 3, 0, 0, 6]),
        np.array([-1.0, 0, 1, -2, -2, 4]),
    ),
    "slice_negative_step": (
        lambda: model(
            [N("Slice", ["x", "s", "e", "a", "st"], ["y"])],
            [I64("s", [4]), I64("e", [0]), I64("a", [0]), I64("st", [-2])],
            [5],
        ),
        np.arange(5.0),
        np.array([4.0, 2.0]),
    ),
    "slice_2d_clamped": (
        lambda: model(
            [N("Slice", ["x", "s", "e", "a"], ["y"])],
            [I64("s", [-2, 1]), I64("e", [1000, 3]), I64("a", [0, -1])],
            [3, 4],
        ),
        np.arange(12.0),
        np.array([5.0, 6, 9, 10]),
    ),
    "split_sizes": (
        lambda: model(
            [N("Split", ["x", "sp"], ["a", "b"], axis=1), N("Sub", ["b", "a"], ["y"])],
            [I64("sp", [2, 2])],
            [2, 4],
            13,
        ),
        np.arange(8.0),
        np.full(4, 2.0),
    ),
    "split_num_outputs_concat_const": (
        lambda: model(
            [
                N("Split", ["x"], ["a", "b", "c"], axis=0, num_outputs=3),
                N("Concat", ["c", "a", "k"], ["y"], axis=0),
            ],
            [K("k", [1.5, 2.5])],
            [8],
            18,
        ),
        np.arange(8.0),
        np.array([6.0, 7, 0, 1, 2, 1.5, 2.5]),
    ),
    "gather_axis1": (
        lambda: model([N("Gather", ["x", "i"], ["y"], axis=1)], [I64("i", [[2, -1], [0, 0]])], [2, 3]),
        np.arange(6.0),
        np.array([2.0, 2, 0, 0, 5, 5, 3, 3]),
    ),
    "reducesum_axes_input": (
        lambda: model([N("ReduceSum", ["x", "ax"], ["y"], keepdims=0)], [I64("ax", [-1, 0])], [2, 3, 2]),
        np.arange(12.0),
        np.array([0 + 1 + 6 + 7, 2 + 3 + 8 + 9, 4 + 5 + 10 + 11.0]),
    ),
    "reducesum_all_default": (
        lambda: model([N("ReduceSum", ["x"], ["y"])], [], [2, 2]),
        np.arange(4.0),
        np.array([6.0]),
    ),
    "reducesum_noop": (
        lambda: model(
            [N("ReduceSum", ["x", "ax"], ["y"], noop_with_empty_axes=1)], [I64("ax", np.zeros(0))], [3]
        ),
        np.array([1.0, -2, 3]),
        np.array([1.0, -2, 3]),
    ),
    "reducemax_axis1": (
        lambda: model([N("ReduceMax", ["x"], ["y"], axes=[1], keepdims=0)], [], [2, 3], 13),
        np.array([1.0, -4, 3, -2, -1, -5]),
        np.array([3.0, -1]),
    ),
    "reducemin_all_keepdims": (
        lambda: model([N("ReduceMin", ["x"], ["y"])], [], [2, 2], 13),
        np.array([1.0, -4, 3, 2]),
        np.array([-4.0]),
    ),
    "where_constant_condition": (
        lambda: model(
            [N("Where", ["c", "x", "k"], ["y"])],
            [K("c", [True, False, True], bool), K("k", [7.0])],
            [2, 3],
        ),
        np.arange(6.0),
        np.array([0.0, 7, 2, 3, 7, 5]),
    ),
    "expand": (
        lambda: model([N("Expand", ["x", "s"], ["y"])], [I64("s", [2, 1, 3])], [2, 1]),
        np.array([1.0, 2]),
        np.array([1.0, 1, 1, 2, 2, 2] * 2),
    ),
    "tile": (
        lambda: model([N("Tile", ["x", "r"], ["y"])], [I64("r", [1, 2])], [2, 2]),
        np.arange(4.0),
        np.array([0.0, 1, 0, 1, 2, 3, 2, 3]),
    ),
    "pad_constant": (
        lambda: model([N("Pad", ["x", "p", "v"], ["y"])], [I64("p", [0, 1, 0, 1]), K("v", 3.0)], [2, 2]),
        np.arange(4.0),
        np.array([3.0, 0, 1, 3, 3, 2, 3, 3]),
    ),
    "pad_reflect": (
        lambda: model([N("Pad", ["x", "p"], ["y"], mode="reflect")], [I64("p", [1, 0, 0, 0])], [3, 1]),
        np.array([1.0, 2, 3]),
        np.array([2.0, 1, 2, 3]),
    ),
    "pad_edge_crop": (
        lambda: model([N("Pad", ["x", "p"], ["y"], mode="edge")], [I64("p", [-1, 2])], [3]),
        np.array([1.0, 2, 3]),
        np.array([2.0, 3, 3, 3]),
    ),
    "shape_constant_of_shape": (
        lambda: model(
            [
                N("Shape", ["x"], ["s"]),
                N(
                    "ConstantOfShape",
                    ["s"],
                    ["k"],
                    value=helper.make_tensor("v", TensorProto.FLOAT, [1], [5.0]),
                ),
                N("Add", ["x", "k"], ["y"]),
            ],
            [],
            [2, 3],
        ),
        np.zeros(6),
        np.full(6, 5.0),
    ),
    "constant_output_shape": (
        lambda: model([N("Shape", ["x"], ["s"]), N("Cast", ["s"], ["y"], to=TensorProto.FLOAT)], [], [2, 3]),
        np.zeros(6),
        np.array([2.0, 3.0]),
    ),
    "maxpool_2x2_stride2": (
        lambda: model([N("MaxPool", ["x"], ["y"], kernel_shape=[2, 2], strides=[2, 2])], [], [1, 1, 4, 4]),
        AR16,
        np.array([5.0, 7, 13, 15]),
    ),
    "conv_relu_maxpool": (  # max pooling of ReLU outputs: carries are single ReLUs (non-negative)
        lambda: model(
            [
                N("Conv", ["x", "W"], ["c"], pads=[1, 1, 1, 1]),
                N("Relu", ["c"], ["r"]),
                N("MaxPool", ["r"], ["y"], kernel_shape=[2, 2], strides=[2, 2]),
            ],
            [K("W", [[[[1.0, -1.0], [0.5, 0.25]]]])],
            [1, 1, 3, 3],
        ),
        None,
        None,
    ),
    # skip connections: every tensor read after a later ReLU layer is carried through it exactly.
    # Non-negative weights make every output non-decreasing in every input (max at a corner).
    "residual_block": (  # r = relu(W1 x + b1), h = relu(W2 r + b2), y = W3 (h + r) + b3: r is carried
        lambda: model(
            [
                N("Gemm", ["x", "W1", "b1"], ["z1"], transB=1),
                N("Relu", ["z1"], ["r"]),
                N("Gemm", ["r", "W2", "b2"], ["z2"], transB=1),
                N("Relu", ["z2"], ["h"]),
                N("Add", ["h", "r"], ["s"]),
                N("Gemm", ["s", "W3", "b3"], ["y"], transB=1),
            ],
            [
                K("W1", [[1.0, 0.5, 0], [0.2, 1, 0.3], [0, 0.4, 1]]),
                K("b1", [-0.5, 0.1, -1]),
                K("W2", [[0.5, 0, 1], [1, 0.5, 0], [0, 0, 0.5]]),
                K("b2", [-1.0, 0.5, -0.2]),
                K("W3", [[1.0, 1, 0], [0, 0.5, 2]]),
                K("b3", [0.0, 1]),
            ],
            [1, 3],
        ),
        np.array([1.0, 1, 1]),  # r = (1, 1.6, 0.4), h = relu(-0.1, 2.3, 0) = (0, 2.3, 0), s = (1, 3.9, 0.4)
        np.array([1 + 3.9, 0.5 * 3.9 + 2 * 0.4 + 1]),
    ),
    "skip_from_input_concat": (  # y = concat(x, relu(x A + b), relu(-x)) · 1: x carried by 2 ReLUs
        lambda: model(
            [
                N("MatMul", ["x", "A"], ["z"]),
                N("Add", ["z", "b"], ["zb"]),
                N("Relu", ["zb"], ["r"]),
                N("Concat", ["x", "r"], ["y"], axis=1),
            ],
            [K("A", [[1.0, 2], [0.5, 0]]), K("b", [-1.0, 0.5])],
            [1, 2],
        ),
        np.array([1.0, -2]),
        np.array([1.0, -2, 0, 2.5]),
    ),
    "maxpool_pads_ceil": (
        lambda: model(
            [N("MaxPool", ["x"], ["y"], kernel_shape=[2, 2], strides=[2, 2], pads=[0, 1, 0, 1], ceil_mode=1)],
            [],
            [1, 2, 3, 3],
        ),
        None,
        None,
    ),
    "maxpool_dilated_3x3": (
        lambda: model([N("MaxPool", ["x"], ["y"], kernel_shape=[2, 2], dilations=[2, 2])], [], [1, 1, 3, 3]),
        -np.arange(9.0),
        np.array([0.0]),
    ),
    "maxpool_same_upper_1d": (
        lambda: model(
            [N("MaxPool", ["x"], ["y"], kernel_shape=[3], strides=[2], auto_pad="SAME_UPPER")], [], [1, 2, 5]
        ),
        None,
        None,
    ),
    "global_max_pool": (
        lambda: model([N("GlobalMaxPool", ["x"], ["y"])], [], [1, 2, 3]),
        np.array([1.0, -5, 3, -1, -2, -3]),
        np.array([3.0, -1]),
    ),
    "average_pool_include_pad": (
        lambda: model(
            [N("AveragePool", ["x"], ["y"], kernel_shape=[2, 2], pads=[1, 1, 0, 0], count_include_pad=1)],
            [],
            [1, 1, 2, 2],
        ),
        np.array([4.0, 8, 12, 16]),
        np.array([1.0, 3, 4, 10]),
    ),
    "average_pool_exclude_pad": (
        lambda: model(
            [N("AveragePool", ["x"], ["y"], kernel_shape=[2, 2], pads=[1, 1, 0, 0])], [], [1, 1, 2, 2]
        ),
        np.array([4.0, 8, 12, 16]),
        np.array([4.0, 6, 8, 10]),
    ),
    "global_average_pool": (
        lambda: model([N("GlobalAveragePool", ["x"], ["y"])], [], [1, 2, 2]),
        np.array([1.0, 3, -2, 2]),
        np.array([2.0, 0]),
    ),
    "max_min_broadcast": (  # min(max(x, 0.3, -x), [[1], [0.5]])
        lambda: model(
            [N("Neg", ["x"], ["nx"]), N("Max", ["x", "k", "nx"], ["a"]), N("Min", ["a", "k2"], ["y"])],
            [K("k", [0.3]), K("k2", [[1.0], [0.5]])],
            [2, 3],
        ),
        np.array([0.1, -0.6, 2, 0.1, -0.4, 2]),
        np.array([0.3, 0.6, 1, 0.3, 0.4, 0.5]),
    ),
    "abs_leaky_relu": (  # LeakyRelu_0.3(LeakyRelu_0.2(|x|) - 1)
        lambda: model(
            [
                N("Abs", ["x"], ["a"]),
                N("LeakyRelu", ["a"], ["b"], alpha=0.2),
                N("Sub", ["b", "k"], ["c"]),
                N("LeakyRelu", ["c"], ["y"], alpha=0.3),
            ],
            [K("k", 1.0)],
            [3],
        ),
        np.array([-3.0, 0.5, 0.0]),
        np.array([2.0, -0.15, -0.3]),
    ),
    "clip_both": (
        lambda: model([N("Clip", ["x", "lo", "hi"], ["y"])], [K("lo", -0.5), K("hi", 1.0)], [3]),
        np.array([-2.0, 0.25, 4]),
        np.array([-0.5, 0.25, 1]),
    ),
    "clip_max_only": (
        lambda: model([N("Clip", ["x", "", "hi"], ["y"])], [K("hi", 1.0)], [2]),
        np.array([-2.0, 4]),
        np.array([-2.0, 1]),
    ),
    "conv_grouped_same_lower": (
        lambda: model(
            [N("Conv", ["x", "W", "B"], ["y"], auto_pad="SAME_LOWER", strides=[2, 2], group=2)],
            [K("W", np.random.default_rng(1).normal(size=(4, 1, 3, 2))), K("B", [0.5, -1, 0, 2])],
            [1, 2, 3, 3],
        ),
        None,
        None,
    ),
    "conv_1d_valid": (
        lambda: model(
            [N("Conv", ["x", "W"], ["y"], auto_pad="VALID")], [K("W", [[[1.0, 1.0, 1.0]]])], [1, 1, 5]
        ),
        np.arange(5.0),
        np.array([3.0, 6, 9]),
    ),
    "cast_float_batchnorm_gemm": (
        lambda: model(
            [
                N("Cast", ["x"], ["xd"], to=TensorProto.FLOAT),
                N("BatchNormalization", ["xd", "s", "b", "m", "v"], ["n"], epsilon=0.0),
                N("Gemm", ["n", "W", "C"], ["y"], alpha=2.0, beta=0.5, transB=1),
            ],
            [
                K("s", [4.0, 1]),
                K("b", [0.5, 0]),
                K("m", [1.0, 0]),
                K("v", [4.0, 1]),
                K("W", [[1.0, 2], [10, 20]]),
                K("C", [1.0]),
            ],
            [1, 2],
        ),
        np.array([1.0, 1.0]),
        np.array([2 * (0.5 + 2) + 0.5, 2 * (5 + 20) + 0.5]),
    ),
    "unbatched_input_matmul_transpose": (
        lambda: model(
            [N("Transpose", ["x"], ["t"], perm=[1, 0]), N("MatMul", ["t", "W"], ["y"])],
            [K("W", [[1.0], [-1.0]])],
            [2, 3],
        ),
        np.arange(6.0),
        np.array([-3.0, -3, -3]),
    ),
    "double_input_dropout_identity": (
        lambda: model(
            [
                N("Dropout", ["x"], ["d"]),
                N("Identity", ["d"], ["e"]),
                N("Cast", ["e"], ["y"], to=TensorProto.FLOAT),
            ],
            [],
            [3],
            in_type=TensorProto.DOUBLE,
        ),
        np.array([1.0, 2, 3]),
        np.array([1.0, 2, 3]),
    ),
}


def _save(tmp_path: Path, name: str) -> Path:
    p = tmp_path / f"{name}.onnx"
    onnx.save(CASES[name][0](), p)
    return p


def _close(a: np.ndarray, b: np.ndarray) -> float:
    return float(np.max(np.abs(a - b) / np.maximum(1.0, np.abs(b)), initial=0.0))


@pytest.mark.parametrize("name", sorted(CASES))
def test_replay_matches_onnxruntime(tmp_path: Path, name: str) -> None:
    p = _save(tmp_path, name)
    net = load_onnx(p)
    _, x0, y0 = CASES[name]
    if x0 is not None:
        y_ir, y_ort = net.evaluate(x0), ort_evaluate(p, x0)
        assert _close(y_ir, y_ort) <= 1e-6, (y_ir, y_ort)
        assert _close(y_ir, y0) <= 1e-6, (y_ir, y0)
    rng = np.random.default_rng(0)
    x = rng.uniform(-3, 3, size=(25, net.n_inputs))
    x[:5] = np.round(x[:5])  # ties (max pooling, Clip and Abs kinks) included
    assert _close(net.evaluate(x), ort_evaluate(p, x)) <= 1e-5


def _box(n: int) -> tuple[np.ndarray, np.ndarray]:
    i = np.arange(n)
    return -1.0 - 0.1 * i, 1.0 + 0.2 * ((i * 7) % 5)


def _corner_max(p: Path, lo: np.ndarray, hi: np.ndarray, j: int) -> float:
    corners = np.array(list(itertools.product(*zip(lo, hi))))
    return float(np.max(ort_evaluate(p, corners)[:, j]))


def _solve(net, p: Path, lo, hi, j: int, t: float):
    A = -np.eye(net.n_outputs)[j : j + 1]
    prop = OutputDNFProperty(lo, hi, ((A, np.array([-t])),), source=p.name)
    nets = {"net": net}
    out = get_backend("highs").solve(prop.encode(nets), timeout=60)
    return prop, nets, out


# (case, output index): all of these y_j are convex or monotone in each input over any box.
MILP_CASES = [
    ("neg", 1),
    ("affine_broadcast", 4),
    ("sub_activations_broadcast", 2),
    ("slice_negative_step", 0),
    ("slice_2d_clamped", 3),
    ("split_sizes", 1),
    ("split_num_outputs_concat_const", 1),
    ("gather_axis1", 1),
    ("reducesum_axes_input", 2),
    ("where_constant_condition", 4),
    ("reducemax_axis1", 1),  # max: convex
    ("reducemin_all_keepdims", 0),  # min: non-decreasing
    ("expand", 5),
    ("tile", 6),
    ("pad_constant", 2),
    ("pad_reflect", 0),
    ("maxpool_2x2_stride2", 2),
    ("maxpool_pads_ceil", 5),
    ("conv_relu_maxpool", 3),  # max of ReLU(affine): convex
    ("residual_block", 1),  # non-negative weights: non-decreasing
    ("skip_from_input_concat", 3),  # relu(x0 A01 + 0.5): non-decreasing (A01 = 2 > 0)
    ("maxpool_same_upper_1d", 4),
    ("global_max_pool", 1),
    ("average_pool_include_pad", 0),
    ("max_min_broadcast", 4),  # on a box with x_4 >= 0 (below): min(max(x_4, 0.3), 0.5), monotone
    ("abs_leaky_relu", 1),
    ("clip_both", 2),
    ("conv_grouped_same_lower", 3),
    ("conv_1d_valid", 1),
    ("cast_float_batchnorm_gemm", 1),
    ("unbatched_input_matmul_transpose", 2),
]


@pytest.mark.parametrize("name, j", MILP_CASES)
def test_milp_highs_known_maximum(tmp_path: Path, name: str, j: int) -> None:
    """``y_j >= m + δ`` is UNSAT and ``y_j >= m − δ`` SAT (replayed) for ``m`` the box maximum."""
    p = _save(tmp_path, name)
    net = load_onnx(p)
    lo, hi = _box(net.n_inputs)
    if name == "max_min_broadcast":
        # y_4 = min(max(|x_4|, 0.3), 0.5) is not convex; on x_4 >= 0 it is monotone, so use such a box
        lo = np.maximum(lo, 0.0)
    m = _corner_max(p, lo, hi, j)
    delta = 1e-3 * max(1.0, abs(m))
    _, _, out = _solve(net, p, lo, hi, j, m + delta)
    assert out.status is SolveStatus.UNSAT, (name, m, out.message)
    prop, nets, out = _solve(net, p, lo, hi, j, m - delta)
    assert out.status is SolveStatus.SAT, (name, m, out.message)
    x = out.assignment[prop.encode(nets).blocks["net"]["input"]]
    # the solver may stop on the boundary y_j = m − δ: replay against m − 2δ (float32 onnxruntime)
    looser = OutputDNFProperty(lo, hi, ((prop.alternatives[0][0], np.array([-(m - 2 * delta)])),))
    assert replay(looser, nets, {"net": x}).ok


def test_maxpool_suite_property(tmp_path: Path) -> None:
    """2x2 max pooling with one entry in [2, 3] and three in [0, 1]: y >= 4 UNSAT, y >= 2.99 SAT, and
    y <= 1.99 UNSAT (the max is at least the [2, 3] entry)."""
    p = tmp_path / "mp.onnx"
    onnx.save(model([N("MaxPool", ["x"], ["y"], kernel_shape=[2, 2])], [], [1, 1, 2, 2]), p)
    net = load_onnx(p)
    lo, hi = np.array([0.0, 0, 0, 2]), np.array([1.0, 1, 1, 3])
    assert _solve(net, p, lo, hi, 0, 4.0)[2].status is SolveStatus.UNSAT
    assert _solve(net, p, lo, hi, 0, 2.99)[2].status is SolveStatus.SAT
    prop = OutputDNFProperty(lo, hi, ((np.eye(1), np.array([1.99])),), source="mp")
    out = get_backend("highs").solve(prop.encode({"net": net}), timeout=60)
    assert out.status is SolveStatus.UNSAT


def test_maxpool_after_relu_carries_one_relu(tmp_path: Path) -> None:
    """16 ReLUs of the 4x4 conv, then 2x2 pools of non-negative entries: 8 pairs x (a − b, b), then
    4 pairs x 2; over unconstrained-sign inputs each carry would take two ReLUs."""
    assert load_onnx(_save(tmp_path, "conv_relu_maxpool")).hidden_sizes == [16, 16, 8]
    assert load_onnx(_save(tmp_path, "maxpool_2x2_stride2")).hidden_sizes == [24, 12]  # a − b, b, −b


def test_skip_connections_carried_through_relu_layers(tmp_path: Path) -> None:
    """The residual r (a ReLU output) is carried by one ReLU per entry; the raw input by two."""
    assert load_onnx(_save(tmp_path, "residual_block")).hidden_sizes == [3, 3 + 3]
    assert load_onnx(_save(tmp_path, "skip_from_input_concat")).hidden_sizes == [2 + 2 * 2]


@pytest.mark.parametrize("name", ["maxpool_pads_ceil", "residual_block", "skip_from_input_concat"])
def test_crown_bounds_contain_samples(tmp_path: Path, name: str) -> None:
    """CROWN bounds of the ReLU forms (max pooling, carried skip connections) contain every sampled
    pre-activation and output (soundness)."""
    from encoders.bounds.crown import crown_bounds

    p = _save(tmp_path, name)
    net = load_onnx(p)
    lo, hi = _box(net.n_inputs)
    lb = crown_bounds(net, lo, hi)
    rng = np.random.default_rng(3)
    x = rng.uniform(lo, hi, size=(400, net.n_inputs))
    pre = net.pre_activations(x)
    for k, z in enumerate(pre):
        assert np.all(z >= np.asarray(lb.lower[k]) - 1e-9) and np.all(z <= np.asarray(lb.upper[k]) + 1e-9)
    y_lo, y_hi = np.asarray(lb.lower[-1]), np.asarray(lb.upper[-1])
    y = ort_evaluate(p, x)
    assert np.all(y >= y_lo - 1e-5) and np.all(y <= y_hi + 1e-5)


# --------------------------------------------------------------------------------------------------
# what stays rejected, and the operator table
# --------------------------------------------------------------------------------------------------
REJECTED = {
    "cast_to_int": (
        lambda: model(
            [N("Cast", ["x"], ["c"], to=TensorProto.INT64), N("Cast", ["c"], ["y"], to=TensorProto.FLOAT)],
            [],
            [2],
        ),
        "truncates",
    ),
    "cast_to_bool": (
        lambda: model(
            [N("Cast", ["x"], ["c"], to=TensorProto.BOOL), N("Cast", ["c"], ["y"], to=TensorProto.FLOAT)],
            [],
            [2],
        ),
        "BOOL",
    ),
    "mul_two_activations": (lambda: model([N("Mul", ["x", "x"], ["y"])], [], [2]), "Mul of two non-constant"),
    "div_by_activation": (lambda: model([N("Div", ["k", "x"], ["y"])], [K("k", 1.0)], [2]), "division"),
    "where_condition_from_input": (
        lambda: model(
            [N("Greater", ["x", "k"], ["c"]), N("Where", ["c", "x", "k"], ["y"])], [K("k", 0.0)], [2]
        ),
        "Greater",
    ),
    "maxpool_indices": (
        lambda: model([N("MaxPool", ["x"], ["y", "i"], kernel_shape=[2])], [], [1, 1, 4]),
        "Indices",
    ),
    "pool_same_dilated": (
        lambda: model(
            [N("MaxPool", ["x"], ["y"], kernel_shape=[2], dilations=[2], auto_pad="SAME_UPPER")],
            [],
            [1, 1, 5],
        ),
        "dilations",
    ),
}


@pytest.mark.parametrize("name", sorted(REJECTED))
def test_rejected_with_a_clear_message(tmp_path: Path, name: str) -> None:
    build, why = REJECTED[name]
    m = build()
    p = tmp_path / f"{name}.onnx"
    onnx.save(m, p)
    with pytest.raises(UnsupportedModelError) as ei:
        load_onnx(p)
    assert why in str(ei.value) and p.name in str(ei.value)


def test_supported_ops_table() -> None:
    assert list(SUPPORTED_OPS) == sorted(SUPPORTED_OPS)
    assert all(isinstance(v, OpSupport) and callable(v.handler) for v in SUPPORTED_OPS.values())
    new = {
        "Neg",
        "Slice",
        "Split",
        "Concat",
        "Gather",
        "ReduceSum",
        "Where",
        "MaxPool",
        "Sub",
        "Add",
        "Mul",
        "Div",
    }
    assert new <= set(SUPPORTED_OPS)
    assert {op for op, v in SUPPORTED_OPS.items() if not v.complete} == {
        "Cast",
        "Div",
        "Mul",
        "Where",
    }
    assert set(OP_ELEMENT_TYPES) <= set(SUPPORTED_OPS) and OP_ELEMENT_TYPES["Cast"] == ("float32", "float64")
    with pytest.raises(TypeError):
        SUPPORTED_OPS["Sigmoid"] = SUPPORTED_OPS["Relu"]  # type: ignore[index]


# --------------------------------------------------------------------------------------------------
# several inputs and outputs: one flat vector each, concatenated in graph order
# --------------------------------------------------------------------------------------------------
def _multi_io_model() -> onnx.ModelProto:
    """``r = relu(x1 − x2)``, ``y1 = 2 r`` and ``y2 = r[0, 0] + 10`` for ``x1 ∈ R^2``, ``x2 ∈ R^(1×2)``."""
    g = helper.make_graph(
        [
            N("Sub", ["x1", "x2"], ["d"]),
            N("Relu", ["d"], ["r"]),
            N("Mul", ["r", "two"], ["y1"]),
            N("Gather", ["r", "i0"], ["g"], axis=1),
            N("Add", ["g", "ten"], ["y2"]),
        ],
        "multi",
        [
            helper.make_tensor_value_info("x1", TensorProto.FLOAT, [2]),
            helper.make_tensor_value_info("x2", TensorProto.FLOAT, [1, 2]),
        ],
        [
            helper.make_tensor_value_info("y1", TensorProto.FLOAT, [1, 2]),
            helper.make_tensor_value_info("y2", TensorProto.FLOAT, [1, 1]),
        ],
        [K("two", 2.0), K("ten", [10.0]), I64("i0", [0])],
    )
    m = helper.make_model(g, opset_imports=[helper.make_opsetid("", 17)])
    m.ir_version = 8
    onnx.checker.check_model(m)
    return m


def test_several_inputs_and_outputs(tmp_path: Path) -> None:
    p = tmp_path / "multi.onnx"
    onnx.save(_multi_io_model(), p)
    net = load_onnx(p)
    assert net.input_names == ("x1", "x2") and net.input_shapes == ((2,), (1, 2))
    assert net.output_names == ("y1", "y2") and net.output_shapes == ((1, 2), (1, 1))
    assert net.n_inputs == 4 and net.n_outputs == 3
    x = np.array([1.0, -1.0, 0.5, 0.5])  # x1 = (1, -1), x2 = (0.5, 0.5)
    assert _close(net.evaluate(x), np.array([1.0, 0.0, 10.5])) <= 1e-9
    assert _close(ort_evaluate(p, x), np.array([1.0, 0.0, 10.5])) <= 1e-6
    xs = np.random.default_rng(0).uniform(-2, 2, size=(20, 4))
    assert _close(net.evaluate(xs), ort_evaluate(p, xs)) <= 1e-5
    # y1[0] = 2 relu(x1[0] − x2[0]) <= 2 · (1 − 0.5) on the box: >= 1.01 UNSAT, >= 0.99 SAT
    lo, hi = np.array([0.0, 0, 0.5, 0]), np.array([1.0, 1, 1, 1])
    assert _solve(net, p, lo, hi, 0, 1.01)[2].status is SolveStatus.UNSAT
    prop, nets, out = _solve(net, p, lo, hi, 0, 0.99)
    assert out.status is SolveStatus.SAT
    looser = OutputDNFProperty(lo, hi, ((prop.alternatives[0][0], np.array([-0.98])),))
    assert replay(looser, nets, {"net": out.assignment[prop.encode(nets).blocks["net"]["input"]]}).ok
