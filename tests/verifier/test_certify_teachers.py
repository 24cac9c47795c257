"""``distillcert certify`` on teachers the verifiable IR cannot encode (issue 13, done-when): a torch-exported
digits CNN with Conv, BatchNorm, a residual Add, MaxPool and a Tanh head, and the same network ending in
Softmax.  Both run end to end through the CLI, the lift audit says "not directly checkable", and
``distillcert check`` accepts both certificates.  The two graphs compute the same classifier, so the
teacher's labels and confident set must coincide (the Softmax one is read as log-probabilities, never as
logits)."""

from __future__ import annotations

import json

import numpy as np
import onnx
import pytest
import torch
from torch import nn
from torchkit import ResTanhCNN


@pytest.fixture(scope="module")
def cnn_files(tmp_path_factory):
    """The CNN trained briefly on digits (5 epochs, a few seconds), exported twice."""
    from distill.data import load_dataset
    from distill.teacher import export_module_onnx

    n_threads = torch.get_num_threads()
    torch.set_num_threads(1)
    d = tmp_path_factory.mktemp("cnn")
    data = load_dataset("digits", 0)
    X = torch.tensor(data.X_train, dtype=torch.float32).reshape(-1, 1, 8, 8)
    y = torch.tensor(data.y_train)
    torch.manual_seed(0)
    m = ResTanhCNN(scale=6.0)
    opt = torch.optim.Adam(m.parameters(), 1e-2)
    for _ in range(5):
        perm = torch.randperm(len(X))
        for i in range(0, len(X), 64):
            b = perm[i : i + 64]
            loss = nn.functional.cross_entropy(m(X[b]), y[b])
            opt.zero_grad()
            loss.backward()
            opt.step()
    m.eval()
    sm = ResTanhCNN(softmax=True, scale=6.0)
    sm.load_state_dict(m.state_dict())
    sm.eval()
    files = {
        "logits": export_module_onnx(m, d / "cnn.onnx", (1, 8, 8)),
        "softmax": export_module_onnx(sm, d / "cnn_softmax.onnx", (1, 8, 8)),
    }
    yield files
    torch.set_num_threads(n_threads)


def _cli(argv, monkeypatch) -> int:
    import verifier.cli.main as vcli

    monkeypatch.setattr(vcli, "_REGISTRARS", ("verifier.cli.verify_cmds",))
    return vcli.main(argv)


@pytest.fixture(scope="module")
def certified_cnns(cnn_files, tmp_path_factory):
    """``distillcert certify`` on both graphs (binomial kind at ε = η = 0.05: s = 60 samples)."""
    mp = pytest.MonkeyPatch()
    outs = {}
    try:
        for kind, path in cnn_files.items():
            out = tmp_path_factory.mktemp(f"cert_{kind}")
            argv = [
                "certify",
                "--teacher",
                str(path),
                "--data",
                "digits",
                "--delta",
                "0.02",
                "--kappa",
                "0.9",
            ]
            argv += ["--epsilon", "0.05", "--eta", "0.05", "--epochs", "15", "--eq13-rounds", "2"]
            argv += ["--global-timeout", "10", "--local-budget", "20", "--local-timeout", "5"]
            argv += ["--out", str(out), "--quiet", "--json"]
            assert _cli(argv, mp) == 0
            outs[kind] = out
    finally:
        mp.undo()
    return outs


def test_the_graphs_hold_the_issue_ops(cnn_files):
    ops = [n.op_type for n in onnx.load(str(cnn_files["logits"])).graph.node]
    for op in ("Conv", "BatchNormalization", "Add", "MaxPool", "Tanh"):
        assert op in ops, ops
    assert [n.op_type for n in onnx.load(str(cnn_files["softmax"])).graph.node][-1] == "Softmax"


def test_certify_runs_end_to_end_on_both_cnns(certified_cnns):
    certs = {k: json.loads((v / "certificate.json").read_text()) for k, v in certified_cnns.items()}
    for kind, cert in certs.items():
        t = cert["models"]["teacher"]
        assert cert["verdict"] in ("certified", "refused")
        assert t["encodable"] is False and t["hidden_sizes"] is None
        assert t["outputs_probabilities"] is (kind == "softmax")
        assert t["import"]["output_kind"] == ("softmax-stripped" if kind == "softmax" else "logits")
        assert t["import"]["parity"]["points"] >= 1000
        audit = cert["steps"]["lift_audit"]
        assert audit["checkable"] is False and "not directly checkable" in audit["text"]
        assert all(q["audit"] in ("not checkable", "not claimed") for q in cert["local_queries"])
        assert cert["data"]["n_confident"] > 0 and cert["steps"]["eq13"]["n_checked"] > 0
        for r in cert["reasons"]:  # whatever refused it is named, never a crash or an import problem
            assert r["code"] in (
                "teacher_falsified",
                "distillation_unsuccessful",
                "student_not_robust",
                "student_undecided",
                "lifted_radius_zero",
            )
    # the same classifier: same labels and confident set (softmax outputs are probabilities, not logits)
    a, b = certs["logits"]["local_queries"], certs["softmax"]["local_queries"]
    assert [(q["i"], q["label"]) for q in a] == [(q["i"], q["label"]) for q in b]
    ra = np.array([q["rho"] for q in a], dtype=float)
    rb = np.array([q["rho"] for q in b], dtype=float)
    np.testing.assert_allclose(ra, rb, rtol=1e-4)  # softmax stripped: the same logit margins' gradients


@pytest.mark.parametrize("kind", ["logits", "softmax"])
def test_check_accepts_both_certificates(certified_cnns, kind, monkeypatch, capsys):
    cpath = certified_cnns[kind] / "certificate.json"
    assert _cli(["check", str(cpath), "--recheck", "3", "--timeout", "5"], monkeypatch) == 0
    out = capsys.readouterr().out
    assert "PGD only" in out and "[ok] rho recomputed" in out and "[ok] confident set" in out, out
