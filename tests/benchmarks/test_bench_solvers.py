"""Benchmarks 4 (``solvers``) and 5 (``vnncomp``): quick modes end to end, plus the harness and scores.

The quick modes are exercised as the issue asks (each ≤ 2 minutes); the full runs and the speed
goals (:mod:`benchmarks.perf`) are not tests.
"""

from __future__ import annotations

import csv
import json
import os
import subprocess
import sys
import time
from pathlib import Path

import pytest

from benchmarks import perf
from benchmarks import solvers as sb
from benchmarks import vnncomp_bench as vb
from benchmarks.vnncomp_bench import RunRecord


def _read_csv(path: Path) -> list[dict[str, str]]:
    with open(path, newline="") as fh:
        return list(csv.DictReader(fh))


# --------------------------------------------------------------------------------------------------
# harness
# --------------------------------------------------------------------------------------------------
def test_run_forked_returns_value_and_cpu() -> None:
    def work() -> int:
        t = time.process_time()
        while time.process_time() - t < 0.3:
            pass
        return 42

    status, value, wall, cpu = vb.run_forked(work, 10.0)
    assert (status, value) == ("ok", 42)
    assert cpu >= 0.25  # the child's CPU time is accounted to the run
    assert wall >= cpu * 0.5


def test_run_forked_reports_exceptions() -> None:
    def boom() -> None:
        raise ValueError("bad instance")

    status, value, _, _ = vb.run_forked(boom, 10.0)
    assert status == "error" and "ValueError: bad instance" in value


def test_run_forked_kills_hang_and_grandchildren(tmp_path: Path) -> None:
    pidfile = tmp_path / "grandchild.pid"

    def hang() -> None:
        p = subprocess.Popen([sys.executable, "-c", "import time; time.sleep(120)"])
        pidfile.write_text(str(p.pid))
        time.sleep(120)

    t0 = time.perf_counter()
    status, _, wall, _ = vb.run_forked(hang, 1.5)
    assert status == "killed"
    assert time.perf_counter() - t0 < 20 and wall < 20
    gpid = int(pidfile.read_text())
    deadline = time.time() + 10
    alive = True
    while time.time() < deadline:
        try:
            os.kill(gpid, 0)
        except ProcessLookupError:
            alive = False
            break
        # a killed grandchild re-parented to init may linger as a zombie until reaped
        stat = Path(f"/proc/{gpid}/stat")
        if stat.exists() and stat.read_text().split()[2] == "Z":
            alive = False
            break
        time.sleep(0.1)
    assert not alive, "the solver's own child survived the hard timeout"


# --------------------------------------------------------------------------------------------------
# scores
# --------------------------------------------------------------------------------------------------
def _rec(
    solver: str, key: str, result: str, wall: float, timeout: float = 10.0, expected: str = ""
) -> RunRecord:
    return RunRecord(solver, key, result, wall, wall, timeout, expected)


def test_agreement_matrix_and_disagreements() -> None:
    recs = [
        _rec("a", "q1", "verified", 1.0),
        _rec("b", "q1", "verified", 2.0),
        _rec("a", "q2", "falsified", 1.0),
        _rec("b", "q2", "verified", 1.0),  # a soundness bug somewhere
        _rec("a", "q3", "timeout", 10.0),
        _rec("b", "q3", "falsified", 3.0),
    ]
    mat, bad = sb.agreement(recs, ["a", "b"])
    assert mat["a"]["b"] == (1, 2) and mat["b"]["a"] == (1, 2)
    assert mat["a"]["a"] == (2, 2) and mat["b"]["b"] == (3, 3)
    assert bad == ["q2: a=falsified, b=verified"]


def test_par2_and_wrong_counts() -> None:
    recs = [
        _rec("g", "q1", "verified", 1.5),
        _rec("g", "q2", "timeout", 10.2),
        _rec("g", "q3", "falsified", 0.5, expected="verified"),
        _rec("g", "q4", "unknown", 4.0, timeout=20.0),
    ]
    sc = sb._scores(recs, ["g"], lambda r: True)["g"]
    assert sc["solved"] == 2 and sc["timeout"] == 1 and sc["unknown_error"] == 1
    assert sc["par2_s"] == pytest.approx(1.5 + 2 * 10.0 + 0.5 + 2 * 20.0)
    assert sc["wrong"] == 1
    vsc = vb.score(
        [_rec("ours", "i1", "sat", 2.0, expected="unsat"), _rec("ours", "i2", "unsat", 3.0, expected="unsat")]
    )
    assert vsc["ours"]["wrong"] == 1 and vsc["ours"]["solved"] == 2
    assert vsc["ours"]["par2_s"] == pytest.approx(5.0)


def test_late_answer_counts_as_timeout(monkeypatch: pytest.MonkeyPatch) -> None:
    inst = vb.Instance("fam", Path("n.onnx"), Path("p.vnnlib"), 0.2, "unsat")

    def slow(_inst: vb.Instance, _t: float) -> dict:
        time.sleep(0.6)
        return {"result": "unsat", "detail": "", "witness_ok": ""}

    monkeypatch.setitem(vb.SOLVERS, "slowpoke", slow)
    rec = vb.run_instance("slowpoke", inst)
    assert rec.result == "timeout" and "after" in rec.detail


def test_perf_table_marks_missed_goals(tmp_path: Path) -> None:
    m = {"date": "2026-01-01T00:00:00", "nproc": 2, "cpu_model": "x", "python": "3.11", "loadavg": [1.0]}
    for goal, met in (("pac", True), ("global", False)):
        (tmp_path / f"goal_{goal}.json").write_text(
            json.dumps(
                {"goal": goal, "target": "t", "measured": f"m-{goal}", "peer": "p", "met": met, "machine": m}
            )
        )
    res = perf.perf_table(tmp_path)
    text = (tmp_path / "perf.md").read_text()
    assert res["met"] == {"global": False, "pac": True}
    assert "m-global" in text and "**no**" in text
    rows = _read_csv(tmp_path / "perf.csv")
    assert {r["goal"] for r in rows} == {"global", "pac"}


# --------------------------------------------------------------------------------------------------
# quick modes
# --------------------------------------------------------------------------------------------------
def test_solvers_quick(tmp_path: Path) -> None:
    t0 = time.perf_counter()
    s = sb.run(quick=True, out=tmp_path, seed=0, progress=False)
    assert time.perf_counter() - t0 < 240  # ≤ 2 min on an idle machine; generous under load
    for f in ("results.csv", "agreement.csv", "summary.json", "summary.md", "cactus.png"):
        assert (tmp_path / f).stat().st_size > 0, f
    assert s["disagreements"] == [], s["disagreements"]
    rows = _read_csv(tmp_path / "results.csv")
    backends = {r["solver"] for r in rows}
    assert backends == set(sb.BACKENDS)
    n = s["queries"]
    assert all(
        sum(r["solver"] == b for r in rows) == n for b in backends
    )  # every backend got every tiny query
    # PAR-2 recomputed from the CSV
    for b in backends:
        mine = [r for r in rows if r["solver"] == b]
        par2 = sum(
            float(r["wall_s"]) if r["result"] in ("verified", "falsified") else 2 * float(r["timeout"])
            for r in mine
        )
        assert s["scores_all"][b]["par2_s"] == pytest.approx(par2, abs=0.02)
    # the near-boundary query is falsifiable; whoever decides it must say so (and Gurobi decides it)
    bnd = [r for r in rows if r["key"] == "gauss-local/boundary/eps0.5"]
    assert {r["result"] for r in bnd} <= {"falsified", "timeout", "unknown", "error"}
    assert any(r["solver"] == "gurobi" and r["result"] == "falsified" for r in bnd)
    assert "Machine:" in s["text"] and "cores" in s["text"]


def test_vnncomp_quick(tmp_path: Path, vnncomp_root: Path) -> None:
    t0 = time.perf_counter()
    s = vb.run(quick=True, out=tmp_path, root=vnncomp_root, progress=False)
    assert time.perf_counter() - t0 < 240
    sc = s["scores"]
    assert set(sc) == {"ours", "maraboupy"}
    assert sc["ours"]["instances"] == sc["maraboupy"]["instances"] == 3
    assert sc["ours"]["wrong"] == 0 and sc["maraboupy"]["wrong"] == 0
    ratios = _read_csv(tmp_path / "ratios.csv")
    tot_a = sum(float(r["ours_wall_s"]) for r in ratios)
    tot_b = sum(float(r["maraboupy_wall_s"]) for r in ratios)
    # the summary rounds the ratio to 4 decimals (and ratios.csv its times to 3): compare to that precision
    assert s["total_ratio_wall"] == pytest.approx(tot_a / tot_b, rel=1e-3, abs=5e-4)
    for f in ("results.csv", "summary.md", "summary.json", "cactus.png", "scatter.png", "records.jsonl"):
        assert (tmp_path / f).stat().st_size > 0, f
    # a rerun with the same folder resumes from records.jsonl instead of solving again
    t1 = time.perf_counter()
    insts = vb.quick_instances(vnncomp_root, 3)
    again = vb.side_by_side(insts, ("ours", "maraboupy"), tmp_path, 10.0, progress=False)
    assert time.perf_counter() - t1 < 10
    assert [r.result for r in again] == [r["result"] for r in _read_csv(tmp_path / "results.csv")]


def test_solver_study_journal_resumes(tmp_path: Path) -> None:
    """Finished (backend, query) pairs are journaled; a rerun reuses them instead of solving again."""
    import numpy as np

    from encoders.network import load_onnx, network_from_layers, save_onnx
    from verifier.queries import verify_local

    layers = network_from_layers([(np.eye(2), np.zeros(2)), (np.eye(2), np.zeros(2))])
    net = load_onnx(save_onnx(layers, tmp_path / "id.onnx"))
    x0 = np.array([1.0, 0.0])  # y = relu(x): label 0 with margin 1; robust at ε = 0.2, not at ε = 0.6
    qs = [
        sb.Query(f"id/eps{e}", "id", True, lambda cfg, e=e: verify_local(net, x0, e, cfg, "inf"), exp)
        for e, exp in ((0.2, "verified"), (0.6, "falsified"))
    ]
    journal = tmp_path / "records.jsonl"
    first = sb.run_queries(qs, ["highs"], 20.0, 5.0, progress=False, journal=journal)
    assert [r.result for r in first] == ["verified", "falsified"]
    assert len(journal.read_text().splitlines()) == 2
    again = sb.run_queries(qs, ["highs"], 20.0, 5.0, progress=False, journal=journal)
    assert [(r.result, r.wall_s, r.cpu_s) for r in again] == [(r.result, r.wall_s, r.cpu_s) for r in first]
    assert len(journal.read_text().splitlines()) == 2  # nothing was solved twice
    # a different limit is a different measurement: solved again and appended
    sb.run_queries(qs[:1], ["highs"], 10.0, 5.0, progress=False, journal=journal)
    assert len(journal.read_text().splitlines()) == 3


def test_every_backend_runs_with_each_bounds_method(tmp_path: Path) -> None:
    """``--bounds crown alpha``: each backend twice, labelled ``b`` and ``b+alpha``, each query encoded with
    its own bounds (the answer is the same: both are exact encodings)."""
    import numpy as np

    from encoders.network import load_onnx, network_from_layers, save_onnx
    from verifier.queries import verify_local

    assert sb.parse_label(sb.solver_label("gurobi", "alpha")) == ("gurobi", "alpha")
    assert sb.solver_label("highs") == "highs" and sb.parse_label("highs") == ("highs", "crown")
    assert sb._config("highs+alpha", 5.0, 0).bounds == "alpha"

    def ask(cfg, e):
        assert cfg.bounds in ("crown", "alpha")
        return verify_local(net, x0, e, cfg, "inf")

    W = np.array([[1.0, -1.0], [-1.0, 1.0]])
    layers = network_from_layers([(W, np.zeros(2)), (np.eye(2), np.zeros(2))])
    net = load_onnx(save_onnx(layers, tmp_path / "n.onnx"))
    # y = relu(x0 − x1, x1 − x0); at x0 = (1, 0) label 0 with margin 1.  The worst point of the L∞ ball,
    # (1 − ε, ε), has y = (relu(1 − 2ε), relu(2ε − 1)): robust for ε < 0.5, a tie (a violation) at 0.5
    x0 = np.array([1.0, 0.0])
    qs = [
        sb.Query(f"n/eps{e}", "n", True, lambda cfg, e=e: ask(cfg, e), exp)
        for e, exp in ((0.2, "verified"), (0.6, "falsified"))
    ]
    labels = [sb.solver_label("highs", m) for m in ("crown", "alpha")]
    recs = sb.run_queries(qs, labels, 20.0, 5.0, progress=False)
    got = [(r.solver, r.result) for r in recs]
    assert got == [(lb, "verified") for lb in labels] + [(lb, "falsified") for lb in labels]
