"""Counterexample replay on onnxruntime.

No FALSIFIED verdict leaves this package without passing :func:`replay`.

What FALSIFIED means
--------------------
A FALSIFIED verdict comes with inputs ``x̂`` (one per network involved: ``x`` for one network, the
pair ``x``/``x2`` for the two-copy global property, one shared ``x`` for teacher and student) and
outputs ``ŷ`` such that

1. every ``x̂`` is a float32 vector (reported as the float64 numbers that represent it exactly): it
   is exactly the input array that onnxruntime was given;
2. ``x̂`` lies in the property's input region, checked *exactly* (real arithmetic on the float64
   numbers that define the region: the box, the L∞ or L2 ball around ``x0`` of radius ``ε``, the
   coupling ``‖x − x'‖ ≤ δ`` of a pair; see :mod:`encoders.bounds.rounding`);
3. ``ŷ`` are the outputs onnxruntime computed from ``x̂`` on the network's *original ONNX file* (its
   float32 arithmetic), converted exactly to float64;
4. ``ŷ`` violates the property by its exact definition (``prop.violated``; ties count as
   violations, confidence by a float64 softmax of ``ŷ``).

So FALSIFIED states a fact about the ONNX model as onnxruntime executes it, at a point of the region
that anyone can re-run.  It does not claim a violation in exact real arithmetic: when the real
margin of the network is smaller than its float32 rounding error (~1e-7 relative), onnxruntime and
real arithmetic can disagree, and a point whose outputs violate only in real arithmetic is not
reported at all.

How a candidate becomes a counterexample
----------------------------------------
The solver's candidate (float64, feasible only up to solver tolerances) is projected into the region
(``prop.project``), rounded to float32 and, when the rounding leaves the region, moved back inside
one float32 step at a time (``prop.evaluated_point``); the result must pass the exact region check
(``prop.contains``).  A candidate that fails any step is not a counterexample.
"""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass
from typing import Any

import numpy as np

from encoders.bounds.rounding import f32
from encoders.bounds.twin import pair_attack
from encoders.network import Network, ort_evaluate
from encoders.properties import GlobalRobustness, OutputProperty, Property

from .results import Counterexample


@dataclass(frozen=True)
class ReplayResult:
    ok: bool
    counterexample: Counterexample | None
    reason: str


def evaluated_inputs(prop: Property, xs: Mapping[str, np.ndarray]) -> dict[str, np.ndarray] | None:
    """The float32 inputs onnxruntime will evaluate for the projected candidate ``xs``, inside the
    region (``prop.evaluated_point``, then the exact check ``prop.contains`` once more), or ``None``
    when the rounding cannot be brought back inside."""
    pts = prop.evaluated_point(xs)
    if pts is None or not prop.contains(pts):
        return None
    for x in pts.values():  # what onnxruntime is fed must be exactly these numbers
        if not np.array_equal(x, f32(x)):
            return None
    return pts


def replay(prop: Property, nets: Mapping[str, Network], xs: Mapping[str, np.ndarray]) -> ReplayResult:
    """Project ``xs`` into the property's region, round to the float32 point onnxruntime evaluates
    (moved back into the region if rounding left it), run onnxruntime on it, re-check the property
    on exactly that point and its outputs (module docstring: what FALSIFIED means)."""
    try:
        xs = prop.project(xs)
    except Exception as exc:  # projection must never crash a run
        return ReplayResult(False, None, f"projection failed: {exc}")
    for ns, x in xs.items():
        if ns not in nets:
            return ReplayResult(False, None, f"no network for name space {ns!r}")
        if not nets[ns].path:
            return ReplayResult(False, None, f"network {ns!r} has no ONNX file to replay on")
        if not np.all(np.isfinite(x)):
            return ReplayResult(False, None, "candidate input is not finite")
    try:
        pts = evaluated_inputs(prop, xs)
    except Exception as exc:
        return ReplayResult(False, None, f"rounding to float32 failed: {exc}")
    if pts is None:
        return ReplayResult(
            False,
            None,
            "the candidate's float32 rounding lies outside the region and could not be moved inside",
        )
    ys: dict[str, np.ndarray] = {}
    for ns, x in pts.items():
        try:
            ys[ns] = np.asarray(ort_evaluate(nets[ns].path, x.astype(np.float32)), dtype=np.float64).reshape(
                -1
            )
        except Exception as exc:
            return ReplayResult(False, None, f"onnxruntime failed on the candidate: {exc}")
    if not prop.violated(pts, ys):
        return ReplayResult(
            False, None, "the float32 candidate does not violate the property on onnxruntime's outputs"
        )
    names = list(pts)
    extra: dict[str, Any] = {"input_dtype": "float32"}
    if set(names) == {"teacher", "student"}:
        cex = Counterexample(
            pts["teacher"], ys["teacher"], None, ys["student"], {**extra, "y_student": ys["student"].tolist()}
        )
    elif len(names) == 2:
        a, b = names
        cex = Counterexample(pts[a], ys[a], pts[b], ys[b], extra)
    else:
        cex = Counterexample(pts[names[0]], ys[names[0]], extra=extra)
    return ReplayResult(True, cex, "replayed on onnxruntime (float32 input, checked exactly)")


def ascend(
    prop: OutputProperty, net: Network, x: np.ndarray, steps: int, step: float
) -> tuple[np.ndarray, float]:
    """Projected sign-gradient ascent on ``prop.score`` from ``x``; adaptive step (grow on success)."""
    lo, hi = prop.region()
    width = np.maximum(hi - lo, 1e-12)
    x = prop.project({"net": x})["net"]
    best = prop.score(net.evaluate(x))
    for _ in range(steps):
        if best >= 0:
            break
        g = net.input_gradient(x, prop.score_grad(net.evaluate(x)))
        cand = prop.project({"net": x + step * width * np.sign(g)})["net"]
        sc = prop.score(net.evaluate(cand))
        if sc > best:
            x, best = cand, sc
            step = min(step * 1.5, 0.5)
        else:
            step *= 0.5
            if step < 1e-9:
                break
    return x, best


def attack(
    prop: Property, nets: Mapping[str, Network], restarts: int = 4, steps: int = 40, seed: int = 0
) -> ReplayResult:
    """Cheap falsification: projected gradient ascent on the violation score from the box centre and
    random starts (single-network properties); for the two-copy global property
    (:class:`~encoders.properties.GlobalRobustness`, networks ``a`` and ``b``) the pair search
    :func:`encoders.bounds.twin.pair_attack`.  A point counts only if it replays."""
    if set(nets) == {"a", "b"} and isinstance(prop, GlobalRobustness):
        return search_pairs(prop, nets, "pair search found no violating pair", seed=seed)[0]
    if set(nets) != {"net"} or not isinstance(prop, OutputProperty):
        return ReplayResult(False, None, "no attack for this property")
    net = nets["net"]
    lo, hi = prop.region()
    rng = np.random.default_rng(seed)
    starts = [0.5 * (lo + hi)] + [rng.uniform(lo, hi) for _ in range(max(0, restarts - 1))]
    last = ReplayResult(False, None, "attack found no violating point")
    for x0 in starts:
        x, sc = ascend(prop, net, x0, steps, 0.25)
        if sc >= 0:
            rep = replay(prop, nets, {"net": x})
            if rep.ok:
                return rep
            last = rep
    return last


def search_pairs(
    prop: GlobalRobustness, nets: Mapping[str, Network], none_found: str, **search: Any
) -> tuple[ReplayResult, float]:
    """:func:`encoders.bounds.twin.pair_attack` for the property's class and settings (``search`` passes
    ``batch``, ``steps``, ``step``, ``seed``, ``start``, ``near``, ``targets``),
    then replay of its pairs until one holds.

    Returns the first replayed pair (or the last failed replay, or ``none_found`` when the search found
    no candidate) and the search's best score (how close it came).
    """
    pairs, best = pair_attack(
        nets["a"], prop.domain_lo, prop.domain_hi, prop.delta, prop.kappa, prop.label, prop.norm, **search
    )
    last = ReplayResult(False, None, none_found)
    for xa, xb in pairs:
        rep = replay(prop, nets, {"a": xa, "b": xb})
        if rep.ok:
            return rep, best
        last = rep
    return last, best


def polish(
    prop: Property, nets: Mapping[str, Network], xs: Mapping[str, np.ndarray], steps: int = 60
) -> ReplayResult:
    """Try to turn a solver's near-miss candidate into a replayable counterexample.

    A solver's candidate satisfies the constraints only up to its tolerances, so on the exact network
    a violation margin of ~1e-7 can come out slightly on the safe side.  For single-network
    properties we run projected gradient ascent on the property's violation score (``prop.score``,
    ``>= 0`` iff violated) through the network's linear regions, from the candidate, with small
    steps, and replay the result; for the two-copy global property, the pair search
    :func:`encoders.bounds.twin.pair_attack` started from the candidate pair with small steps.  Only a point
    that replays counts (this cannot create a false FALSIFIED: :func:`replay` has the last word).
    """
    if set(xs) == {"a", "b"} and isinstance(prop, GlobalRobustness):
        return search_pairs(
            prop,
            nets,
            "polishing found no violating pair",
            batch=1,
            steps=steps,
            step=1e-3,
            start=(xs["a"], xs["b"]),
        )[0]
    if set(xs) != {"net"} or not isinstance(prop, OutputProperty):
        return ReplayResult(False, None, "no polishing for this property")
    x, sc = ascend(prop, nets["net"], np.asarray(xs["net"], dtype=np.float64), steps, 1e-3)
    if sc < 0:
        return ReplayResult(False, None, "polishing found no violating point")
    return replay(prop, nets, {"net": x})
