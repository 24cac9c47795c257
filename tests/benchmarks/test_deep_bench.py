"""benchmarks.deep_mlps (ONNX export with Sub/Div normalisation) and the new bench vnncomp families."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pytest

from benchmarks import deep_mlps
from benchmarks import vnncomp_bench as vb
from encoders.network import load_onnx


def test_deep_mlp_onnx_has_the_normalisation_and_matches_onnxruntime(tmp_path: Path) -> None:
    """A tiny 2-hidden-layer MLP exported by the benchmark's writer: our IR folds Sub/Div into the
    first layer and agrees with onnxruntime on random images."""
    import onnx
    import onnxruntime as ort

    rng = np.random.default_rng(0)
    aff = [
        (rng.normal(size=(5, 784)) * 0.05, rng.normal(size=5)),
        (rng.normal(size=(4, 5)), rng.normal(size=4)),
        (rng.normal(size=(10, 4)), rng.normal(size=10)),
    ]
    path = tmp_path / "m.onnx"
    path.write_bytes(deep_mlps._onnx_bytes(aff))
    ops = [n.op_type for n in onnx.load(str(path)).graph.node]
    assert ops[:2] == ["Sub", "Div"] and ops.count("Gemm") == 3
    net = load_onnx(path)
    assert net.hidden_sizes == [5, 4]
    sess = ort.InferenceSession(str(path))
    for _ in range(5):
        x = rng.uniform(0, 1, size=(1, 784)).astype(np.float32)
        ref = sess.run(None, {"input": x})[0][0]
        assert np.allclose(net.evaluate(x.astype(np.float64))[0], ref, atol=1e-4)


def test_choose_eps_takes_the_smallest_eps_below_half(monkeypatch) -> None:
    """ε rule: the smallest grid value where CROWN proves fewer than half of the points."""
    import encoders.bounds as eb

    calls = []

    def fake(net, lo, hi, c):
        eps = float(np.max(hi - lo)) / 2
        calls.append(eps)
        return np.array([1.0 if eps < 0.011 else -1.0])  # proves everything up to ε = 0.01

    monkeypatch.setattr(eb, "margin_bounds", fake)
    X = np.full((4, 784), 0.5)
    eps, count = deep_mlps._choose_eps(None, X, np.zeros(4, dtype=int))
    assert eps == 0.012 and count == 0


@pytest.mark.shared
def test_quick_subset_of_the_256x4_family(vnncomp_root: Path) -> None:
    insts = vb.quick_instances(vnncomp_root, 3, "mnistfc256x4")
    assert len(insts) == vb.QUICK_PER_NETWORK
    assert all(i.onnx.name == "mnist-net_256x4.onnx" and i.timeout == vb.QUICK_TIMEOUT_DEEP for i in insts)
    full = vb.read_family(vnncomp_root, "mnistfc256x4")
    exp = [i.expected for i in full]
    assert len(full) == 30 and (exp.count("sat"), exp.count("unsat"), exp.count("unknown")) == (6, 16, 8)


def test_vibecheck_missing_is_an_error_not_a_verdict(monkeypatch, tmp_path: Path) -> None:
    monkeypatch.setenv("DISTILLCERT_VIBECHECK", str(tmp_path / "nope"))
    monkeypatch.setenv("PATH", str(tmp_path))
    assert vb.vibecheck_command() is None
    inst = vb.Instance("f", tmp_path / "n.onnx", tmp_path / "p.vnnlib", 1.0)
    with pytest.raises(RuntimeError, match="vibecheck not found"):
        vb._vibecheck(inst, 1.0)
