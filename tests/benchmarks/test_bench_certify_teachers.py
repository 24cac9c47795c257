"""``distillcert bench certify-teachers`` (benchmarks.certify_teachers): the real code path on a tiny grid
(an MLP and a Tanh/BatchNorm CNN teacher × binomial and quality kinds), and ``--quick`` through the CLI."""

from __future__ import annotations

import json

import pytest

from encoders.errors import ConfigError


def _tiny():
    from benchmarks.certify_teachers import BenchConfig, TeacherSpec

    return BenchConfig(
        teachers=(
            TeacherSpec("mlp", "digits", "64-16-10", 0.0, 8, eq13_rounds=1),
            TeacherSpec("tanh-bn", "digits", "cnn-tanh-bn", 0.0, 2, 5, 1, "sd", 1),
        ),
        kinds=(("binomial", 0.2, 0.2), ("quality", 0.45, 0.45)),
        binomial_epochs=5,
        quality_epochs=2,
        local_budget=5.0,
        audit_budget=5.0,
        recheck=1,
        extra={"global_timeout": 3.0},
    )


@pytest.fixture(scope="module")
def tiny_bench(tmp_path_factory):
    from benchmarks.certify_teachers import run

    out = tmp_path_factory.mktemp("bench_ct")
    return out, run(quick=True, out=out, seed=0, progress=False, config=_tiny())


def test_rows_cover_teachers_times_kinds(tiny_bench):
    out, res = tiny_bench
    rows = res["rows"]
    assert [(r["teacher"], r["kind"]) for r in rows] == [
        ("mlp", "binomial"),
        ("mlp", "quality"),
        ("tanh-bn", "binomial"),
        ("tanh-bn", "quality"),
    ]
    for r in rows:
        cert = json.loads((out / "certs" / f"{r['teacher']}-{r['kind']}" / "certificate.json").read_text())
        assert r["verdict"] == cert["verdict"] and r["s"] == cert["data"]["sample_size"]
        assert r["r_T"] == cert["guarantee"]["teacher_radius"]
        assert r["pgd_hits"] == cert["steps"]["crosscheck"]["adversarial"]
        assert r["check"] == "ok", r["check"]
        assert r["wall_s"] > 0 and r["cpu_s"] > 0
    # the MLP teacher is encodable: its lifted claims are audited directly; the CNN's are not checkable
    assert all(r["audit"] != "not checkable" for r in rows if r["teacher"] == "mlp")
    assert all(r["audit"] == "not checkable" for r in rows if r["teacher"] == "tanh-bn")
    assert rows[1]["s"] > rows[0]["s"]  # the quality kind needs more samples at these settings


def test_outputs_and_headline(tiny_bench):
    out, res = tiny_bench
    for f in ("results.csv", "results.json", "summary.md"):
        assert (out / f).is_file()
    summary = (out / "summary.md").read_text()
    for col in ("verdict", "r_T", "student radius", "audit c/u/r", "PGD hits", "wall s"):
        assert col in summary
    h = res["headline"]
    assert h["cells"] == 4 and h["checks_ok"] == 4
    assert h["pgd_hits"] == sum(int(r["pgd_hits"]) for r in res["rows"])
    assert h["refuted_by_direct_verification"] == 0


def test_registered_in_the_bench_cli():
    from benchmarks.cli import BENCHMARKS

    assert BENCHMARKS["certify-teachers"] == "benchmarks.certify_teachers"


def test_unknown_bench_name_is_a_config_error():
    import argparse

    from benchmarks.cli import cmd_bench

    with pytest.raises(ConfigError, match="certify-teacher"):
        cmd_bench(argparse.Namespace(name="certify-teacher", quick=True, out=None, seed=0))


@pytest.mark.slow
def test_quick_mode_through_the_cli(tmp_path):
    import verifier.cli.main as vcli

    out = tmp_path / "q"
    assert vcli.main(["bench", "certify-teachers", "--quick", "--out", str(out), "--json"]) == 0
    res = json.loads((out / "results.json").read_text())
    assert len(res["rows"]) == 4 and not res.get("partial")
