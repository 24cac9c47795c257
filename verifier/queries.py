"""High-level queries used by the CLI, the certifier and the benchmarks.

Each function takes file paths or loaded networks plus a :class:`DispatchConfig`, and returns a
:class:`Result` (or a dict for faithfulness).  A query made of several sub-queries (a VNN-LIB file
with several boxes, global robustness with one query per class) combines them as follows: any
FALSIFIED sub-query ⇒ FALSIFIED (with its counterexample); all VERIFIED ⇒ VERIFIED; otherwise the
first undecided verdict (ERROR, TIMEOUT or UNKNOWN), so that nothing undecided is ever reported as
verified.
"""

from __future__ import annotations

import time
from collections.abc import Mapping, Sequence
from dataclasses import replace
from pathlib import Path
from typing import Any

import numpy as np

from encoders.errors import SpecError
from encoders.network import Network, load_onnx
from encoders.properties import (
    Disagreement,
    EncodeOptions,
    GlobalRobustness,
    LocalRobustness,
    OutputDNFProperty,
    faithub_crown,
    faithub_split,
)
from encoders.vnnlib import parse_vnnlib

from .dispatch import DispatchConfig, verify
from .results import Result, Verdict


def combine(results: Sequence[Result], backend: str, t0: float) -> Result:
    """Combine sub-query results (see the module docstring)."""
    elapsed = time.perf_counter() - t0
    for r in results:
        if r.verdict is Verdict.FALSIFIED:
            return replace(r, time_s=elapsed)
    undecided = [r for r in results if r.verdict is not Verdict.VERIFIED]
    if undecided:
        return replace(undecided[0], time_s=elapsed)
    backends = sorted({r.backend for r in results})
    msg = (
        f"all {len(results)} sub-queries verified"
        if len(results) > 1
        else (results[0].message if results else "")
    )
    stats: dict[str, Any] = {"subqueries": len(results)}
    return Result(
        Verdict.VERIFIED,
        "+".join(backends) or backend,
        elapsed,
        message=msg,
        solver_version=next((r.solver_version for r in results if r.solver_version), ""),
        stats=stats,
    )


def verify_property(
    network: str | Path | Network | Mapping[str, Network],
    prop: Any,
    config: DispatchConfig | None = None,
) -> Result:
    """Answer one property query on one network — the public entry point (``from verifier import verify``).

    Parameters
    ----------
    network
        An ONNX path, a loaded :class:`~encoders.network.Network`, or a mapping of the names the property
        uses to networks (``{"teacher": t, "student": s}`` for :class:`~encoders.properties.Disagreement`).
    prop
        A property of :mod:`encoders.properties` (local robustness, an output DNF over a box, global
        two-copy κ-robustness, teacher–student disagreement).
    config
        Solver choice, time limit and strategy (default: ``DispatchConfig()``, backend ``auto``).

    Returns
    -------
    Result
        ``VERIFIED`` (the encoding proves the property), ``FALSIFIED`` (with a counterexample replayed on
        onnxruntime), or an undecided verdict.
    """
    if isinstance(network, Mapping):
        nets = {str(k): (v if isinstance(v, Network) else load_onnx(v)) for k, v in network.items()}
    else:
        nets = {"net": network if isinstance(network, Network) else load_onnx(network)}
    return verify(prop, nets, config if config is not None else DispatchConfig())


def vnnlib_properties(spec_path: str | Path, net: Network) -> list[OutputDNFProperty]:
    spec = parse_vnnlib(spec_path)
    spec.check_dims(net.n_inputs, net.n_outputs, str(net.path or "the network"))
    return [OutputDNFProperty(c.lo, c.hi, c.dnf.alternatives, source=str(spec_path)) for c in spec.cases]


def verify_vnnlib(onnx_path: str | Path, spec_path: str | Path, config: DispatchConfig) -> Result:
    """``∃x in the VNN-LIB box with outputs in the unsafe region?`` → FALSIFIED ("sat") / VERIFIED."""
    t0 = time.perf_counter()
    net = load_onnx(onnx_path)
    props = vnnlib_properties(spec_path, net)
    results = []
    for p in props:
        left = config.timeout - (time.perf_counter() - t0)
        if left <= 0:
            results.append(Result(Verdict.TIMEOUT, config.backend, 0.0, message="time limit"))
            break
        r = verify(p, {"net": net}, replace(config, timeout=left))
        results.append(r)
        if r.verdict is Verdict.FALSIFIED:
            break
    return combine(results, config.backend, t0)


def local_property(
    net: Network,
    x0: np.ndarray,
    eps: float,
    norm: str = "inf",
    domain: tuple[np.ndarray, np.ndarray] | None = None,
    label: int | None = None,
) -> LocalRobustness:
    x0 = np.asarray(x0, dtype=np.float64).reshape(-1)
    if x0.size != net.n_inputs:
        raise SpecError(f"--point: has {x0.size} values but the network takes {net.n_inputs} inputs")
    c = int(np.argmax(net.evaluate(x0))) if label is None else int(label)
    lo, hi = domain if domain is not None else (None, None)
    return LocalRobustness(x0, eps, c, norm, lo, hi)


def verify_local(
    net: Network,
    x0: np.ndarray,
    eps: float,
    config: DispatchConfig,
    norm: str = "inf",
    domain: tuple[np.ndarray, np.ndarray] | None = None,
    per_target: bool = False,
) -> Result:
    """Local robustness at ``x0`` (label = the network's prediction at ``x0``).

    ``per_target`` asks one query per competing class, likeliest violation (smallest CROWN margin)
    first, instead of one disjunctive query.
    """
    prop = local_property(net, x0, eps, norm, domain)
    nets = {"net": net}
    if not per_target:
        return verify(prop, nets, config)
    t0 = time.perf_counter()
    if prop.quick_check(nets):
        return Result(Verdict.VERIFIED, "crown", time.perf_counter() - t0, message="proved by CROWN bounds")
    results = []
    for j in prop.ordered_targets(net):
        left = config.timeout - (time.perf_counter() - t0)
        if left <= 0:
            results.append(Result(Verdict.TIMEOUT, config.backend, 0.0, message="time limit"))
            break
        r = verify(
            prop,
            nets,
            replace(config, timeout=left, quick_check=False),
            EncodeOptions(config.bounds, target=j),
        )
        results.append(r)
        if r.verdict is not Verdict.VERIFIED:
            break
    return combine(results, config.backend, t0)


def verify_global(
    net: Network,
    delta: float,
    kappa: float,
    domain: tuple[np.ndarray, np.ndarray],
    config: DispatchConfig,
    norm: str = "inf",
    classes: Sequence[int] | None = None,
) -> Result:
    """Global two-copy κ-confidence δ-robustness over the domain box.

    Decided by ``(class, competitor)`` pairs in :func:`verifier.search.global_split.decide_global`:

    1. bounds (``config.quick_check``): CROWN over the domain and the twin-network difference bounds
       close most pairs without a solver;
    2. search (``config.samples > 0``): projected-gradient search for violating pairs, replayed on
       onnxruntime (FALSIFIED);
    3. per open pair (L∞): LP bound tightening of the difference bounds under the pair's own
       constraints (sound through LP duality), then the twin bound again; the LP optimum seeds a
       local pair search;
    4. per pair still open: the two-copy MILP restricted to that competitor, with the tightened bounds,
       through :func:`verifier.dispatch.verify` (child process, hard timeout, replay).

    ``config.quick_check=False`` skips nothing that is needed for soundness: it only turns the bound
    stage into "every pair open".
    """
    from .search.global_split import decide_global

    if not config.quick_check:  # historical switch: no bound stage (every pair goes to the solver stages)
        t0 = time.perf_counter()
        lo, hi = (np.asarray(d, dtype=np.float64).reshape(-1) for d in domain)
        if lo.size == 1 and net.n_inputs > 1:
            lo, hi = np.full(net.n_inputs, lo[0]), np.full(net.n_inputs, hi[0])
        todo = list(classes) if classes is not None else list(range(net.n_outputs))
        results = []
        for c in todo:
            left = config.timeout - (time.perf_counter() - t0)
            if left <= 0:
                results.append(Result(Verdict.TIMEOUT, config.backend, 0.0, message="time limit"))
                break
            prop = GlobalRobustness(delta, kappa, lo, hi, norm, c)
            r = verify(prop, {"a": net, "b": net}, replace(config, timeout=left))
            results.append(r)
            if r.verdict is Verdict.FALSIFIED:
                break
        return combine(results, config.backend, t0)
    return decide_global(net, delta, kappa, domain, config, norm, classes)


def faithfulness(
    teacher: Network,
    student: Network,
    x0: np.ndarray,
    eps: float,
    config: DispatchConfig,
    domain: tuple[np.ndarray, np.ndarray] | None = None,
    method: str = "crown",
    emplb_restarts: int = 5,
    seed: int = 0,
    joint_time_limit: float = 0.9,
) -> dict[str, Any]:
    """FAITHUB (sound upper bound), EMPLB (PGD lower bound) and the disagreement verdict at ``x0``.

    ``method``: ``"crown"`` (seed 001 Eq. 10–11 on CROWN bounds), ``"split"`` (the same on 16 sub-boxes)
    or ``"joint"`` (:func:`verifier.search.pair_split.faithub_joint`: teacher and student coupled through the
    shared input, with input branch and bound for ``joint_time_limit`` seconds).
    """
    from distill.attacks import emplb as pgd_emplb
    from distill.export import load_model

    t0 = time.perf_counter()
    dis = Disagreement(x0, eps, *(domain if domain is not None else (None, None)))
    lo, hi = dis.box()
    if method == "joint":  # coupled teacher–student bound + branch and bound (search.pair_split)
        from verifier.search.pair_split import FaithubConfig, faithub_joint

        fu = faithub_joint(teacher, student, lo, hi, FaithubConfig(time_limit=joint_time_limit)).faithub
    elif method == "split":
        fu = faithub_split(teacher, student, lo, hi)
    else:
        fu = faithub_crown(teacher, student, lo, hi)
    t_fu = time.perf_counter() - t0
    tm, sm = load_model(teacher.path), load_model(student.path)
    import torch

    dom = (
        torch.tensor(lo if domain is None else domain[0]),
        torch.tensor(hi if domain is None else domain[1]),
    )
    lower = pgd_emplb(
        tm,
        sm,
        torch.tensor(np.asarray(x0, np.float32)).reshape(1, -1),
        eps,
        restarts=emplb_restarts,
        domain=dom,
        seed=seed,
    )
    el = float(np.asarray(lower).reshape(-1)[0])
    res = verify(dis, {"teacher": teacher, "student": student}, config)
    return {
        "faithub": fu,
        "emplb": el,
        "faithub_method": method,
        "faithub_time_s": t_fu,
        "disagreement": res.verdict.value,
        "disagreement_result": res.to_json(),
        "time_s": time.perf_counter() - t0,
    }
