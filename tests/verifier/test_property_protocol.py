"""The typed Property protocol (issue 12, item 4) and the dispatcher's list of stages."""

from __future__ import annotations

import inspect

import numpy as np
import pytest

from encoders.properties import (
    Disagreement,
    GlobalRobustness,
    LocalRobustness,
    OutputDNFProperty,
    OutputProperty,
    Property,
)
from verifier import dispatch
from verifier.dispatch import DispatchConfig, Query, run_stages
from verifier.results import Result, Verdict
from verifier.search import input_split
from verifier.search.relu_split import alternatives_of


def _props():
    x0 = np.array([0.2, 0.5, 0.7])
    lo, hi = np.zeros(3), np.ones(3)
    return {
        "local-inf": LocalRobustness(x0, 0.1, 1, "inf", lo, hi),
        "local-2": LocalRobustness(x0, 0.1, 1, "2", lo, hi),
        "dnf": OutputDNFProperty(lo, hi, ((np.array([[1.0, -1.0, 0.0]]), np.array([0.0])),)),
        "global": GlobalRobustness(0.05, 0.9, lo, hi, "inf", 0),
        "disagreement": Disagreement(x0, 0.1, lo, hi),
    }


def test_every_property_implements_the_protocol() -> None:
    for name, p in _props().items():
        assert isinstance(p, Property), name
        lo, hi = p.region()
        assert lo.shape == hi.shape and np.all(lo <= hi)
        assert set(p.namespaces) <= {"net", "a", "b", "teacher", "student"}
    outs = {k for k, p in _props().items() if isinstance(p, OutputProperty)}
    assert outs == {"local-inf", "local-2", "dnf"}


@pytest.mark.parametrize("norm", ["inf", "2"])
def test_local_output_dnf_is_the_violation(norm: str) -> None:
    rng = np.random.default_rng(0)
    p = LocalRobustness(np.array([0.3, 0.4]), 0.1, 2, norm)
    alts = p.output_dnf(4)
    assert len(alts) == 3
    x = {"net": p.x0}
    for _ in range(500):
        y = rng.normal(size=4)
        y[rng.integers(4)] = y[2]  # ties now and then
        in_dnf = any(bool(np.all(A @ y <= b)) for A, b in alts)
        assert in_dnf == p.violated(x, {"net": y}) == (p.score(y) >= 0)


def test_searches_read_the_unsafe_set_through_output_dnf() -> None:
    props = _props()
    for key in ("local-inf", "dnf"):
        p = props[key]
        got = alternatives_of(p, 3)
        want = p.output_dnf(3)
        assert len(got) == len(want)
        for (A, b), (A2, b2) in zip(got, want):
            np.testing.assert_array_equal(A, A2)
            np.testing.assert_array_equal(b, b2)
    assert alternatives_of(props["local-2"], 3) is None  # an L2 region is not a box
    assert alternatives_of(props["global"], 3) is None
    src = inspect.getsource(input_split) + inspect.getsource(alternatives_of)
    assert "targets(" not in src  # no second LocalRobustness → DNF translation


def test_dispatch_is_a_list_of_stages() -> None:
    names = [s.__name__ for s in dispatch.STAGES]
    assert names == [
        "stage_quick_check",
        "stage_attack",
        "stage_input_split",
        "stage_relu_split",
        "stage_solve",
    ]
    assert (dispatch.stage_solve,) == dispatch.LEAF_STAGES
    # branch and bound no longer receives the dispatcher as a callback
    assert list(inspect.signature(input_split.bab_stage).parameters) == ["prop", "nets", "config", "t0"]
    seen = []

    def first(q: Query) -> None:
        seen.append("first")
        return None

    def second(q: Query) -> Result:
        seen.append("second")
        return q.done(Verdict.UNKNOWN, "test", "answered by the second stage")

    def never(q: Query) -> Result:  # pragma: no cover - must not run
        raise AssertionError("a stage after the answer ran")

    q = Query(_props()["dnf"], {}, DispatchConfig(), None, 0.0)
    res = run_stages(q, (first, second, never))
    assert res.message == "answered by the second stage" and seen == ["first", "second"]
