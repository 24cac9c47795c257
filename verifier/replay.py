"""Counterexample replay on onnxruntime.

No FALSIFIED verdict leaves this package without passing :func:`replay`: the solver's candidate is
projected into the exact input region, every network involved runs it through onnxruntime on its
*original ONNX file*, and the property's exact definition (``prop.violated``) is re-checked on those
outputs (real softmax for confidence).  A candidate that fails any step is not a counterexample.
"""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass

import numpy as np

from encoders.network import Network, ort_evaluate

from .results import Counterexample


@dataclass(frozen=True)
class ReplayResult:
    ok: bool
    counterexample: Counterexample | None
    reason: str


def inputs_from_assignment(prog_blocks: Mapping[str, Mapping[str, np.ndarray]], assignment: np.ndarray,
                           names: list[str]) -> dict[str, np.ndarray]:
    """Input vectors of each name space in ``names`` read off a full assignment."""
    a = np.asarray(assignment, dtype=np.float64)
    return {ns: a[prog_blocks[ns]["input"]].copy() for ns in names}


def replay(prop, nets: Mapping[str, Network], xs: Mapping[str, np.ndarray]) -> ReplayResult:
    """Project ``xs`` into the property's region, run onnxruntime, re-check the property."""
    try:
        xs = prop.project(xs)
    except Exception as exc:  # projection must never crash a run
        return ReplayResult(False, None, f"projection failed: {exc}")
    ys: dict[str, np.ndarray] = {}
    for ns, x in xs.items():
        net = nets[ns]
        if not net.path:
            return ReplayResult(False, None, f"network {ns!r} has no ONNX file to replay on")
        if not np.all(np.isfinite(x)):
            return ReplayResult(False, None, "candidate input is not finite")
        try:
            ys[ns] = np.asarray(ort_evaluate(net.path, x), dtype=np.float64).reshape(-1)
        except Exception as exc:
            return ReplayResult(False, None, f"onnxruntime failed on the candidate: {exc}")
    if not prop.violated(xs, ys):
        return ReplayResult(False, None, "candidate does not violate the property on onnxruntime's outputs")
    names = list(xs)
    if set(names) == {"teacher", "student"}:
        cex = Counterexample(xs["teacher"], ys["teacher"], None, ys["student"], {"y_student": ys["student"].tolist()})
    elif len(names) == 2:
        a, b = names
        cex = Counterexample(xs[a], ys[a], xs[b], ys[b])
    else:
        cex = Counterexample(xs[names[0]], ys[names[0]])
    return ReplayResult(True, cex, "replayed on onnxruntime")
