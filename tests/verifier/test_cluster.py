"""Queries sent to a Dask distributed scheduler (a LocalCluster with real worker processes)."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pytest

from encoders.network import load_onnx, network_from_layers, save_onnx
from encoders.properties import LocalRobustness
from verifier.dispatch import DispatchConfig, Task, verify_many
from verifier.results import Verdict


def _net(tmp_path: Path):
    # f(x) = (x0 - x1, x1 - x0) through one ReLU layer of width 4 (hand-checkable)
    W1 = np.array([[1.0, -1.0], [-1.0, 1.0], [1.0, 0.0], [0.0, 1.0]])
    W2 = np.array([[1.0, -1.0, 0.0, 0.0], [-1.0, 1.0, 0.0, 0.0]])
    return load_onnx(
        save_onnx(network_from_layers([(W1, np.zeros(4)), (W2, np.zeros(2))]), tmp_path / "n.onnx")
    )


def test_verify_many_on_a_local_dask_cluster(tmp_path: Path) -> None:
    distributed = pytest.importorskip("dask.distributed")
    net = _net(tmp_path)
    # f0 - f1 = 2 (x0 - x1). At x0 = (0.8, 0.2): on the eps = 0.2 box the worst case is 2 (0.6 - 0.4) > 0
    # (robust); on the eps = 0.4 box, x = (0.4, 0.6) gives f1 > f0 (falsified)
    x0 = np.array([0.8, 0.2])
    tasks = [
        Task("robust", LocalRobustness(x0, 0.2, 0, "inf", np.zeros(2), np.ones(2)), {"net": net}),
        Task("falsified", LocalRobustness(x0, 0.4, 0, "inf", np.zeros(2), np.ones(2)), {"net": net}),
    ]
    config = DispatchConfig(backend="highs", timeout=60.0, quick_check=False, samples=0)
    with distributed.LocalCluster(
        n_workers=1, threads_per_worker=1, processes=True, dashboard_address=None
    ) as cl:
        results = verify_many(tasks, config, cluster=cl.scheduler_address)
    assert results["robust"].verdict is Verdict.VERIFIED and results["robust"].backend == "highs"
    fals = results["falsified"]
    assert fals.verdict is Verdict.FALSIFIED
    x = fals.counterexample.x
    assert np.max(np.abs(x - x0)) <= 0.4 + 1e-12 and x[1] >= x[0]  # a real violation: f_1 >= f_0


def test_bad_cluster_address_is_a_config_error() -> None:
    from encoders.errors import ConfigError

    with pytest.raises(ConfigError, match="--cluster"):
        list(verify_many([], DispatchConfig(), cluster="not-an-address"))
