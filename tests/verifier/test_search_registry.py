"""The named searches (``verifier.search.SEARCHES``) and the settings that reach them from the dispatcher.

* The registry names both searches; an unknown name is a ConfigError.
* ``DispatchConfig.input_split`` (every field of the input-split ``BabConfig``) reaches
  :func:`~verifier.search.input_split.bab_verify` from :func:`verifier.dispatch.verify`, seeded by
  ``DispatchConfig.seed`` (issue 12: the settings used to be dropped on the way into ``bab_stage``);
  the same holds for the rejected-candidate fallback (``_close_by_bounds``).
* ``DispatchConfig.relu_split`` reaches the ReLU-split search through the dispatcher: with its α-CROWN
  tightening off, a query α-CROWN decides goes on to β-CROWN branch and bound.
"""

from __future__ import annotations

import dataclasses
import time

import numpy as np
import pytest

from encoders.errors import ConfigError
from encoders.network import network_from_layers
from encoders.properties import LocalRobustness, OutputDNFProperty
from verifier import dispatch
from verifier.dispatch import DispatchConfig, verify
from verifier.results import Verdict
from verifier.search import SEARCHES, get_search
from verifier.search import input_split as isp
from verifier.search.relu_split import MarginConfig, relu_split_stage


def test_registry_names_both_searches() -> None:
    assert set(SEARCHES) == {"input_split", "relu_split"}
    assert get_search("input_split") is isp.bab_stage
    assert get_search("relu_split") is relu_split_stage
    with pytest.raises(ConfigError, match="unknown search"):
        get_search("beam")


CUSTOM = isp.BabConfig(
    batch_size=7,
    split="widest",
    attack_samples=11,
    attack_starts=3,
    attack_steps=5,
    attack_eta=0.2,
    attack_boxes=4,
    attack_box_steps=2,
    max_open=999,
    combine=False,
    min_width=1e-7,
    seed=123,
)


def test_custom_settings_differ_from_the_defaults_in_every_field() -> None:
    default = isp.BabConfig()
    same = [
        f.name
        for f in dataclasses.fields(isp.BabConfig)
        if getattr(CUSTOM, f.name) == getattr(default, f.name)
    ]
    assert same == []


def _capture(monkeypatch: pytest.MonkeyPatch) -> list[isp.BabConfig]:
    seen: list[isp.BabConfig] = []

    def fake(prop, net, budget_s, config):
        seen.append(config)
        return isp.BabOutcome(isp.BabStatus.VERIFIED, 0.0)

    monkeypatch.setattr(isp, "bab_verify", fake)
    monkeypatch.setattr(dispatch, "bab_verify", fake)
    return seen


def test_input_split_settings_reach_the_search(monkeypatch: pytest.MonkeyPatch) -> None:
    seen = _capture(monkeypatch)
    net = network_from_layers([(np.eye(2), np.zeros(2)), (np.array([[1.0, -1.0]]), np.zeros(1))])
    prop = OutputDNFProperty(np.zeros(2), np.ones(2), ((np.ones((1, 1)), np.array([-5.0])),))
    cfg = DispatchConfig(input_split=CUSTOM, seed=5, quick_check=False, samples=0)
    res = verify(prop, {"net": net}, cfg)
    assert res.verdict is Verdict.VERIFIED and res.backend == "bab"
    assert seen == [dataclasses.replace(CUSTOM, seed=5)]
    # the default still goes through unchanged (seed from the dispatcher)
    seen.clear()
    verify(prop, {"net": net}, DispatchConfig(quick_check=False, samples=0, seed=2))
    assert seen == [isp.BabConfig(seed=2)]


def test_input_split_settings_reach_the_bounds_fallback(monkeypatch: pytest.MonkeyPatch) -> None:
    seen = _capture(monkeypatch)
    net = network_from_layers([(np.eye(2), np.zeros(2)), (np.array([[1.0, -1.0]]), np.zeros(1))])
    prop = OutputDNFProperty(np.zeros(2), np.ones(2), ((np.ones((1, 1)), np.array([-5.0])),))
    cfg = DispatchConfig(input_split=CUSTOM, seed=9)
    res = dispatch._close_by_bounds(prop, {"net": net}, cfg, time.perf_counter(), None)
    assert res is not None and res.verdict is Verdict.VERIFIED
    assert seen == [dataclasses.replace(CUSTOM, seed=9)]


def test_relu_split_settings_reach_the_search() -> None:
    """A 2-input network CROWN cannot decide; input splitting off (``bab_max_inputs=1``), attacks off:
    the ReLU-split search answers, with its α-CROWN step only when ``relu_split.tighten``."""
    rng = np.random.default_rng(4)
    layers = [
        (rng.normal(size=(16, 2)), rng.normal(size=16)),
        (rng.normal(size=(8, 16)), rng.normal(size=8)),
        (rng.normal(size=(3, 8)), rng.normal(size=3)),
    ]
    net = network_from_layers(layers)
    x0 = np.array([0.3, -0.2])
    prop = LocalRobustness(x0, 0.1, int(np.argmax(net.evaluate(x0))))
    assert not prop.quick_check({"net": net})
    base = DispatchConfig(quick_check=False, samples=0, bab_max_inputs=1, timeout=60.0)
    on = verify(prop, {"net": net}, base)
    off = verify(prop, {"net": net}, dataclasses.replace(base, relu_split=MarginConfig(tighten=False)))
    assert on.verdict is Verdict.VERIFIED and off.verdict is Verdict.VERIFIED
    assert on.backend == "alpha-crown" and "tighten_s" in on.stats  # α-CROWN decided it
    assert off.backend == "bab" and "tighten_s" not in off.stats  # no α-CROWN step: β-CROWN did
