"""Certificates (verifier.certify.schema, .check): schema, atomic writing, ``distillcert check`` catching
tampering."""

from __future__ import annotations

import json
import shutil
from pathlib import Path

import pytest

from encoders.errors import CertificateError, DataError


@pytest.fixture(autouse=True, scope="module")
def _one_torch_thread():
    """Small MLPs: one torch thread avoids synchronisation overhead on a shared 2-core machine."""
    import torch

    n = torch.get_num_threads()
    torch.set_num_threads(1)
    yield
    torch.set_num_threads(n)

def cli(argv: list[str], monkeypatch: pytest.MonkeyPatch) -> int:
    """``distillcert`` with only :mod:`verifier`'s subcommands registered (exit codes as in the CLI)."""
    import verifier.cli.main as vcli

    monkeypatch.setattr(vcli, "_REGISTRARS", ("verifier.cli.verify_cmds",))
    return vcli.main(argv)


@pytest.fixture(scope="module")
def refused_cert(tmp_path_factory):
    """A refused certificate with student and teacher counterexamples (steep sigmoid teacher, large delta)."""
    from distill.data import load_dataset
    from distill.export import export_onnx
    from distill.models import SigmoidTeacher
    from verifier.certify import CertifyConfig, certify

    d = tmp_path_factory.mktemp("check")
    data = load_dataset("gaussians2d", 0)
    t = d / "sig.onnx"
    export_onnx(
        SigmoidTeacher(20.0, 2),
        t,
        2,
        {"input_domain": {"lo": data.domain_lo.tolist(), "hi": data.domain_hi.tolist()}},
    )
    cfg = CertifyConfig(
        data="gaussians2d",
        delta=0.5,
        kappa=0.9,
        guarantee="binomial",
        epsilon=0.1,
        eta=0.1,
        epochs=20,
        student_arch="2-8-8-2",
        eq13_hinge=0.0,  # plain KDIGA: the steep teacher's logits (up to 120) with an Eq. 13 hinge give a
        eq13_rounds=1,  # student whose float32 export differs by > the absolute 1e-5 of distill.export
        global_timeout=10.0,
        local_timeout=10.0,
        pgd_steps=20,
        pgd_restarts=2,
    )
    cert = certify(t, cfg, d / "out", progress=False)
    return d / "out", cert


def _copy(src: Path, dst: Path) -> Path:
    shutil.copytree(src, dst)
    return dst / "certificate.json"


def test_schema_and_contents(refused_cert):
    out, cert = refused_cert
    disk = json.loads((out / "certificate.json").read_text())
    assert disk["schema"] == "distillcert.certificate/2"
    for key in (
        "verdict",
        "reasons",
        "guarantee",
        "models",
        "data",
        "parameters",
        "steps",
        "local_queries",
        "counterexamples",
        "solvers",
        "assumptions",
        "config",
        "software",
        "timestamps",
        "artifacts",
    ):
        assert key in disk, key
    p = disk["parameters"]
    for key in ("delta", "kappa", "epsilon", "eta", "norm", "m", "d", "guarantee_kind", "tv_shift"):
        assert key in p, key
    assert len(disk["models"]["teacher"]["sha256"]) == 64 and len(disk["data"]["sample_sha256"]) == 64
    assert disk["verdict"] == "refused" and disk["counterexamples"]
    assert {c["kind"] for c in disk["counterexamples"]} & {"student_local", "teacher_pgd"}
    assert not list(out.glob(".*.tmp"))  # atomic writes leave no temporaries


def test_check_passes_on_untouched_certificate(refused_cert, monkeypatch, capsys):
    from verifier.certify import check_certificate

    out, _ = refused_cert
    res = check_certificate(out / "certificate.json", recheck=5)
    assert res["ok"], res["text"]
    names = {c["check"] for c in res["checks"]}
    assert {
        "teacher sha256",
        "student sha256",
        "sample size",
        "sample",
        "counterexamples replay",
        "local queries re-run",
        "verdict",
    } <= names
    assert cli(["check", str(out / "certificate.json"), "--recheck", "3"], monkeypatch) == 0


def test_check_catches_tampered_model(refused_cert, tmp_path, monkeypatch, capsys):
    import onnx
    from onnx import numpy_helper

    from verifier.certify import check_certificate

    cpath = _copy(refused_cert[0], tmp_path / "c")
    f = cpath.parent / "student.onnx"
    m = onnx.load(f)
    init = m.graph.initializer[0]
    w = numpy_helper.to_array(init).copy()
    w.flat[0] += 0.25  # one weight changed
    init.CopyFrom(numpy_helper.from_array(w, init.name))
    onnx.save(m, f)
    res = check_certificate(cpath, recheck=0)
    assert not res["ok"]
    assert any(x.startswith("student sha256") for x in res["failures"])
    capsys.readouterr()
    assert cli(["check", str(cpath), "--recheck", "0"], monkeypatch) == 1
    err = capsys.readouterr().err
    assert "student sha256" in err and "model changed" in err


def test_check_catches_tampered_counterexample(refused_cert, tmp_path, monkeypatch, capsys):
    from verifier.certify import check_certificate

    cpath = _copy(refused_cert[0], tmp_path / "c")
    cert = json.loads(cpath.read_text())
    ce = cert["counterexamples"][0]
    ce["x"] = list(ce["x0"])  # the clean point is not an adversarial example
    cpath.write_text(json.dumps(cert))
    res = check_certificate(cpath, recheck=0)
    assert not res["ok"]
    assert any(x.startswith("counterexample #0") for x in res["failures"])
    capsys.readouterr()
    assert cli(["check", str(cpath), "--recheck", "0"], monkeypatch) == 1
    assert "counterexample #0" in capsys.readouterr().err


def test_check_catches_tampered_verdict_and_sample(refused_cert, tmp_path):
    from verifier.certify import check_certificate

    cpath = _copy(refused_cert[0], tmp_path / "c")
    cert = json.loads(cpath.read_text())
    cert["verdict"] = "certified"
    cert["reasons"] = []
    cert["data"]["indices"][0] = (cert["data"]["indices"][0] + 1) % cert["data"]["pool_size"]
    cpath.write_text(json.dumps(cert))
    res = check_certificate(cpath, recheck=0)
    failed = {x.split(":")[0] for x in res["failures"]}
    assert {"verdict", "sample"} <= failed


def test_check_catches_wrong_sample_size(refused_cert, tmp_path):
    from verifier.certify import check_certificate

    cpath = _copy(refused_cert[0], tmp_path / "c")
    cert = json.loads(cpath.read_text())
    cert["parameters"]["s_required"] -= 1
    cpath.write_text(json.dumps(cert))
    res = check_certificate(cpath, recheck=0)
    assert any(x.startswith("sample size") for x in res["failures"])


def test_check_rerun_catches_a_false_verified_claim(refused_cert, tmp_path):
    """A falsified local query relabelled 'verified' (counterexample removed) is caught by the re-run."""
    from verifier.certify import check_certificate

    cpath = _copy(refused_cert[0], tmp_path / "c")
    cert = json.loads(cpath.read_text())
    fal = [q for q in cert["local_queries"] if q["verdict"] == "falsified"]
    if not fal:
        pytest.skip("this run has no falsified student query")
    for q in fal:
        q["verdict"], q["by"] = "verified", "crown"
    cert["counterexamples"] = [c for c in cert["counterexamples"] if c["kind"] != "student_local"]
    cpath.write_text(json.dumps(cert))
    res = check_certificate(cpath, recheck=len(cert["local_queries"]))
    assert any(x.startswith("local queries re-run") for x in res["failures"]), res["text"]


def test_load_errors(tmp_path, monkeypatch, capsys):
    from verifier.certify import load_certificate

    with pytest.raises(DataError, match="no such certificate"):
        load_certificate(tmp_path / "missing.json")
    bad = tmp_path / "bad.json"
    bad.write_text(json.dumps({"schema": "other/9"}))
    with pytest.raises(CertificateError, match="schema"):
        load_certificate(bad)
    assert cli(["check", str(tmp_path / "missing.json")], monkeypatch) == 2
    err = capsys.readouterr().err.strip().splitlines()
    assert len(err) == 1 and "no such certificate" in err[0]


def test_write_is_atomic_on_serialisation_error(tmp_path):
    from verifier.certify import write_certificate

    (tmp_path / "certificate.json").write_text('{"old": true}')
    with pytest.raises(ValueError):
        write_certificate({"x": float("nan")}, tmp_path, None, report=False)
    assert json.loads((tmp_path / "certificate.json").read_text()) == {"old": True}
