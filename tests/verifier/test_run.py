"""``distillcert run`` / ``certify`` (verifier.certify.run, verifier.cli.certify_cmds): TOML configuration,
bad inputs
(exit 2, one line), and smoke runs on digits."""

from __future__ import annotations

import json
from pathlib import Path

import pytest

from encoders.errors import ConfigError


def cli(argv: list[str], monkeypatch: pytest.MonkeyPatch) -> int:
    import verifier.cli.main as vcli

    monkeypatch.setattr(vcli, "_REGISTRARS", ("verifier.cli.verify_cmds",))
    return vcli.main(argv)


TINY = """
data = "digits"
delta = 0.02
kappa = 0.9
epsilon = 0.5
eta = 0.5
teacher_epochs = 1
teacher_adv_eps = 0.1
teacher_arch = "64-16-10"
epochs = 2
student_arch = "64-8-10"
global_timeout = 5.0
local_timeout = 5.0
local_budget = 30.0
pgd_steps = 5
pgd_restarts = 1
"""


def test_load_run_config_flat_table_and_overrides(tmp_path):
    from verifier.certify.run import load_run_config

    f = tmp_path / "run.toml"
    f.write_text('delta = 0.05\nstudent-arch = "64-16-10"\n[distill_params]\nlambda_ce = 2.0\n')
    c = load_run_config(f, {"kappa": 0.8, "delta": None})
    assert (c.delta, c.kappa, c.student_arch, c.distill_params) == (0.05, 0.8, "64-16-10", {"lambda_ce": 2.0})
    g = tmp_path / "t.toml"
    g.write_text('[certify]\ndelta = 0.01\nguarantee = "quality"\n')
    assert load_run_config(g).guarantee == "quality"
    with pytest.raises(ConfigError, match="unknown key 'lambda_x'"):
        f.write_text("[distill_params]\nlambda_x = 1.0\n")
        load_run_config(f)
    f.write_text("delta = [1")
    with pytest.raises(ConfigError, match="not valid TOML"):
        load_run_config(f)


@pytest.mark.parametrize(
    "toml_text, flags, word",
    [
        ("epsilon = 0.7\n", [], "--epsilon"),
        ("eta = 0.0\n", [], "--eta"),
        ("kappa = 1.2\n", [], "--kappa"),
        ("delta = -0.1\n", [], "--delta"),
        ("delta = 0.1\nspeed = 3\n", [], "unknown key 'speed'"),
        ("", ["--epsilon", "0.6"], "--epsilon"),
        ("", ["--kappa", "0"], "--kappa"),
        ("", ["--delta", "0"], "--delta"),
        ("", ["--eta", "1"], "--eta"),
    ],
)
def test_bad_inputs_exit_2_with_one_line(toml_text, flags, word, tmp_path, monkeypatch, capsys):
    f = tmp_path / "run.toml"
    f.write_text(toml_text)
    rc = cli(["run", "--config", str(f), "--out", str(tmp_path / "o"), *flags], monkeypatch)
    err = capsys.readouterr().err.strip().splitlines()
    assert rc == 2 and len(err) == 1 and word in err[0], err
    assert not (tmp_path / "o").exists()  # rejected before any work


def test_certify_bad_flags_exit_2(tmp_path, monkeypatch, capsys):
    rc = cli(
        ["certify", "--teacher", str(tmp_path / "none.onnx"), "--epsilon", "0", "--out", str(tmp_path)],
        monkeypatch,
    )
    err = capsys.readouterr().err.strip().splitlines()
    assert rc == 2 and len(err) == 1 and "--epsilon" in err[0]
    rc = cli(
        [
            "certify",
            "--teacher",
            str(tmp_path / "none.onnx"),
            "--out",
            str(tmp_path / "o"),
            "--data",
            "gaussians2d",
        ],
        monkeypatch,
    )
    err = capsys.readouterr().err.strip().splitlines()
    assert rc == 2 and len(err) == 1 and "none.onnx" in err[0]


def test_missing_config_file_exit_2(tmp_path, monkeypatch, capsys):
    rc = cli(["run", "--config", str(tmp_path / "nope.toml")], monkeypatch)
    err = capsys.readouterr().err.strip().splitlines()
    assert rc == 2 and len(err) == 1 and "nope.toml" in err[0]


def test_run_smoke_digits_tiny(tmp_path, monkeypatch, capsys):
    """The whole job on digits, tiny settings: every artefact lands in --out, check passes, rerun resumes."""
    f = tmp_path / "run.toml"
    f.write_text(TINY)
    out = tmp_path / "out"
    assert cli(["run", "--config", str(f), "--out", str(out), "--json", "--quiet"], monkeypatch) == 0
    res = json.loads(capsys.readouterr().out)
    assert res["verdict"] in ("certified", "refused")
    for name in (
        "teacher.pt",
        "teacher.onnx",
        "student.onnx",
        "certificate.json",
        "samples.npz",
        "report.md",
        "confidence.png",
        "rho.png",
        "samples.png",
    ):
        assert (out / name).is_file(), name
    cert = json.loads((out / "certificate.json").read_text())
    assert cert["parameters"]["guarantee_kind"] == "binomial" and cert["data"]["sample_size"] == 2
    assert cert["data"]["name"] == "digits" and cert["parameters"]["m"] == 64
    assert cli(["check", str(out / "certificate.json")], monkeypatch) == 0
    capsys.readouterr()
    # rerun: teacher and student reused, same certificate (timing aside)
    mtime = (out / "teacher.pt").stat().st_mtime_ns
    assert cli(["run", "--config", str(f), "--out", str(out), "--json", "--quiet"], monkeypatch) == 0
    assert (out / "teacher.pt").stat().st_mtime_ns == mtime
    again = json.loads((out / "certificate.json").read_text())
    assert again["models"] == cert["models"] and again["local_queries"] == [
        dict(q, time_s=again["local_queries"][i]["time_s"]) for i, q in enumerate(cert["local_queries"])
    ]


@pytest.mark.slow
def test_default_run_digits(tmp_path, monkeypatch, capsys):
    """The default ``distillcert run`` (digits, PGD-AT teacher, KDIGA student): finishes and re-checks."""
    import time

    t0 = time.perf_counter()
    out = tmp_path / "default"
    assert cli(["run", "--out", str(out), "--json", "--quiet"], monkeypatch) == 0
    res = json.loads(capsys.readouterr().out)
    took = time.perf_counter() - t0
    print(f"default run: {res['verdict']} in {took:.0f} s; {res['guarantee']['text']}")
    assert res["verdict"] in ("certified", "refused")
    assert cli(["check", str(out)], monkeypatch) == 0
    assert Path(out / "report.md").read_text().startswith("# distillcert certificate")
