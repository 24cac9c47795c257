"""``train-teacher``, ``distill``, ``export`` and ``diagnose`` through :func:`verifier.cli.main`."""

from __future__ import annotations

import json
from pathlib import Path

import pytest
from clikit import bad, run

from encoders.network import file_sha256, load_onnx


@pytest.fixture(scope="module")
def pipeline(tmp_path_factory) -> dict[str, Path]:
    """A tiny real run of the pipeline: teacher → student → export (module-scoped, reused)."""
    from verifier.cli.main import main

    d = tmp_path_factory.mktemp("cli")
    assert (
        main(
            [
                "train-teacher",
                "--data",
                "digits",
                "--arch",
                "64-16-10",
                "--adv-eps",
                "0.1",
                "--epochs",
                "2",
                "--attack-steps",
                "2",
                "--eval-steps",
                "3",
                "--out",
                str(d / "t"),
                "--no-progress",
                "--json",
            ]
        )
        == 0
    )
    assert (
        main(
            [
                "distill",
                "--teacher",
                str(d / "t" / "teacher.onnx"),
                "--method",
                "kdiga",
                "--arch",
                "64-8-10",
                "--epochs",
                "2",
                "--eval-steps",
                "3",
                "--out",
                str(d / "s"),
                "--no-progress",
                "--json",
            ]
        )
        == 0
    )
    return {
        "dir": d,
        "t_pt": d / "t" / "teacher.pt",
        "t_onnx": d / "t" / "teacher.onnx",
        "s_pt": d / "s" / "student.pt",
        "s_onnx": d / "s" / "student.onnx",
    }


def test_pipeline_outputs(pipeline, capsys) -> None:
    for k in ("t_pt", "t_onnx", "s_pt", "s_onnx"):
        assert pipeline[k].is_file(), k
    for k in ("t_onnx", "s_onnx"):
        side = json.loads(Path(str(pipeline[k]) + ".json").read_text())
        assert side["sha256"] == file_sha256(pipeline[k]) and side["dataset"] == "digits"
    assert load_onnx(pipeline["s_onnx"]).hidden_sizes == [8]
    side = json.loads(Path(str(pipeline["s_onnx"]) + ".json").read_text())
    assert side["training"]["method"] == "kdiga" and side["training"]["eps"] == 0.1  # teacher's adv-eps


def test_train_teacher_json(tmp_path, capsys) -> None:
    code, out, err = run(
        [
            "train-teacher",
            "--data",
            "gaussians2d",
            "--arch",
            "2-4-2",
            "--epochs",
            "1",
            "--out",
            tmp_path,
            "--no-progress",
            "--json",
            "--seed",
            "3",
        ],
        capsys,
    )
    assert code == 0, err
    res = json.loads(out)
    assert res["config"]["seed"] == 3 and res["pgd"] is None and 0 <= res["test_accuracy"] <= 1
    assert res["dataset"]["name"] == "gaussians2d"


def test_export_and_diagnose(pipeline, capsys, tmp_path) -> None:
    code, out, err = run(
        ["export", "--model", pipeline["s_pt"], "--out", tmp_path / "s.onnx", "--json"], capsys
    )
    assert code == 0, err
    res = json.loads(out)
    assert res["sha256"] == file_sha256(tmp_path / "s.onnx")
    assert res["export_check"]["max_abs_diff_onnxruntime_vs_torch"] <= 1e-5
    png = tmp_path / "bnc.png"
    code, out, err = run(
        [
            "diagnose",
            "--teacher",
            pipeline["t_pt"],
            "--student",
            pipeline["s_onnx"],
            "--max-points",
            "25",
            "--steps",
            "3",
            "--plot",
            png,
            "--no-progress",
            "--json",
        ],
        capsys,
    )
    assert code == 0, err
    res = json.loads(out)
    assert res["n_points"] == 25 and res["dataset"] == "digits" and res["pgd"]["eps"] == 0.1
    assert "text" not in res and png.is_file()
    assert set(res) >= {
        "teacher_accuracy",
        "student_accuracy",
        "agreement",
        "confidence_dominance",
        "gradient_ratio",
        "gradient_cosine",
        "llm",
        "pgd",
        "bnc",
    }
    code, out, err = run(
        [
            "diagnose",
            "--teacher",
            pipeline["t_pt"],
            "--student",
            pipeline["s_onnx"],
            "--max-points",
            "5",
            "--steps",
            "2",
            "--no-progress",
        ],
        capsys,
    )
    assert code == 0 and "gradient ratio" in out


def test_bad_inputs_exit_2_with_one_line(pipeline, capsys, tmp_path) -> None:
    out = tmp_path / "o"
    t = pipeline["t_onnx"]
    bad(["train-teacher", "--data", "cifar10", "--out", out], capsys, "--data", "cifar10")
    bad(["train-teacher", "--data", f"csv:{tmp_path / 'gone.csv'}", "--out", out], capsys, "gone.csv")
    bad(["train-teacher", "--arch", "64-32-9", "--out", out], capsys, "--arch", "64-32-9")
    bad(["train-teacher", "--arch", "64-x-10", "--out", out], capsys, "--arch")
    bad(["train-teacher", "--adv-eps", "-0.1", "--out", out], capsys, "--adv-eps")
    bad(["train-teacher", "--epochs", "0", "--out", out], capsys, "--epochs")
    assert not out.exists()  # nothing written on bad input
    bad(["distill", "--teacher", tmp_path / "missing.onnx", "--out", out], capsys, "missing.onnx")
    bad(["distill", "--teacher", t, "--method", "bogus", "--out", out], capsys, "--method", "bogus")
    bad(["distill", "--teacher", t, "--arch", "60-8-10", "--out", out], capsys, "--arch", "60-8-10")
    bad(["distill", "--teacher", t, "--eps", "-1", "--out", out], capsys, "--eps")
    bad(["distill", "--teacher", t, "--data", "mnist", "--out", out], capsys, "mnist")
    bad(["distill", "--teacher", t, "--data", "gaussians2d", "--out", out], capsys, "--teacher")
    assert not out.exists()
    bad(["diagnose", "--teacher", t, "--student", tmp_path / "nope.pt"], capsys, "nope.pt")
    bad(["diagnose", "--teacher", t, "--student", pipeline["s_pt"], "--eps", "-0.5"], capsys, "--eps")
    junk = tmp_path / "junk.pt"
    junk.write_bytes(b"junk")
    bad(["export", "--model", junk, "--out", tmp_path / "x.onnx"], capsys, "junk.pt")
    bad(["export", "--model", pipeline["s_pt"], "--out", tmp_path / "x.txt"], capsys, "--out")
