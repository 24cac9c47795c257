"""Bad input through the CLI: exit status 2, one line on stderr naming the file or option and the
problem, no traceback, nothing on stdout and no partial output file.

Most cases call :func:`verifier.cli.main` in-process (``capsys``); one runs the real ``distillcert``
console script in a subprocess.  Commands that other packages have not registered yet are marked
``xfail`` ("command not yet registered").  ``distill.commands`` is stubbed when it does not exist yet,
so that the verifier's own commands can be tested meanwhile (the stub registers nothing).
"""

from __future__ import annotations

import importlib
import shutil
import subprocess
import sys
import types
from pathlib import Path

import numpy as np
import oracle as O
import pytest

from encoders.network import save_onnx

# ------------------------------------------------------------------------------------------------
# harness
# ------------------------------------------------------------------------------------------------


@pytest.fixture(autouse=True)
def _cli_buildable(monkeypatch: pytest.MonkeyPatch) -> None:
    try:
        importlib.import_module("distill.commands")
    except ModuleNotFoundError as exc:
        if exc.name != "distill.commands":
            raise
        stub = types.ModuleType("distill.commands")
        stub.register = lambda sub: None  # type: ignore[attr-defined]
        monkeypatch.setitem(sys.modules, "distill.commands", stub)


def _commands() -> set[str]:
    from verifier.cli.main import build_parser

    parser = build_parser()
    sub = next(a for a in parser._actions if a.__class__.__name__ == "_SubParsersAction")
    return set(sub.choices)


def _need(command: str) -> None:
    if command not in _commands():
        pytest.xfail("command not yet registered")


def run_cli(argv: list[str], capsys: pytest.CaptureFixture[str]) -> tuple[int, str, str]:
    from verifier.cli.main import main

    try:
        code = main([str(a) for a in argv])
    except SystemExit as exc:  # argparse usage errors
        code = exc.code if isinstance(exc.code, int) else 1
    out, err = capsys.readouterr()
    return code, out, err


def assert_bad_input(argv: list[str], capsys: pytest.CaptureFixture[str], *names: str,
                     absent: tuple[Path, ...] = ()) -> str:
    """Exit 2, one stderr line containing every string in ``names``, no traceback, empty stdout, and
    none of the ``absent`` paths created (a folder may exist only if empty)."""
    code, out, err = run_cli(argv, capsys)
    lines = [ln for ln in err.splitlines() if ln.strip()]
    assert code == 2, f"exit {code}; stderr: {err!r}; stdout: {out[:300]!r}"
    assert "Traceback" not in err
    assert len(lines) == 1, f"expected one line on stderr, got {lines}"
    for n in names:
        assert n.lower() in lines[0].lower(), f"{n!r} not named in: {lines[0]}"
    assert "unrecognized arguments" not in lines[0]  # a typo in the test would pass for the wrong reason
    assert out == "", f"stdout not empty: {out[:300]!r}"
    for p in absent:
        if p.is_dir():
            assert not any(p.iterdir()), f"partial output left in {p}: {list(p.iterdir())}"
        else:
            assert not p.exists(), f"partial output file {p}"
    return lines[0]


# ------------------------------------------------------------------------------------------------
# files
# ------------------------------------------------------------------------------------------------
GOOD_SPEC = """\
(declare-const X_0 Real)
(declare-const X_1 Real)
(declare-const X_2 Real)
(declare-const Y_0 Real)
(declare-const Y_1 Real)
(assert (>= X_0 0.0))
(assert (<= X_0 0.5))
(assert (>= X_1 0.0))
(assert (<= X_1 0.5))
(assert (>= X_2 0.0))
(assert (<= X_2 0.5))
(assert (>= Y_0 1000.0))
"""


@pytest.fixture(scope="module")
def files(tmp_path_factory: pytest.TempPathFactory) -> dict[str, Path]:
    d = tmp_path_factory.mktemp("cli")
    rng = np.random.default_rng(0)
    w = O.random_weights(rng, [3, 4, 2])
    f: dict[str, Path] = {}
    f["net"] = save_onnx(w, d / "net.onnx")
    f["spec"] = d / "good.vnnlib"
    f["spec"].write_text(GOOD_SPEC)
    f["junk"] = d / "junk.onnx"
    f["junk"].write_text("this is not an ONNX model\n")
    data = f["net"].read_bytes()
    f["trunc"] = d / "truncated.onnx"
    f["trunc"].write_bytes(data[: len(data) // 2])
    bad = [(W.copy(), b.copy()) for W, b in w]
    bad[0][0][1, 2] = np.nan
    f["nan"] = save_onnx(bad, d / "nan_weights.onnx")
    bad[0][0][1, 2] = np.inf
    f["inf"] = save_onnx(bad, d / "inf_weights.onnx")
    f["ops"] = _unsupported_ops_model(d / "sigmoid_softmax.onnx")
    f["spec2in"] = d / "two_inputs.vnnlib"
    f["spec2in"].write_text(GOOD_SPEC.replace("(declare-const X_2 Real)\n", "")
                            .replace("(assert (>= X_2 0.0))\n(assert (<= X_2 0.5))\n", ""))
    f["syntax"] = d / "syntax.vnnlib"
    f["syntax"].write_text(GOOD_SPEC.replace("(assert (<= X_1 0.5))", "(assert (<= X_1 0.5)"))  # line 9
    f["empty"] = d / "empty_box.vnnlib"
    f["empty"].write_text(GOOD_SPEC.replace("(assert (<= X_1 0.5))", "(assert (<= X_1 -0.5))"))
    f["point"] = d / "point.npy"
    np.save(f["point"], np.full(3, 0.25))
    return f


def _unsupported_ops_model(path: Path) -> Path:
    import onnx
    from onnx import TensorProto, helper, numpy_helper

    W1 = numpy_helper.from_array(np.ones((4, 3), np.float32), "W1")
    W2 = numpy_helper.from_array(np.ones((2, 4), np.float32), "W2")
    nodes = [helper.make_node("Gemm", ["input", "W1"], ["z1"], name="fc1", transB=1),
             helper.make_node("Sigmoid", ["z1"], ["h1"], name="act1"),
             helper.make_node("Tanh", ["h1"], ["h2"], name="act2"),
             helper.make_node("Gemm", ["h2", "W2"], ["z2"], name="fc2", transB=1),
             helper.make_node("Softmax", ["z2"], ["output"], name="probs", axis=1)]
    g = helper.make_graph(nodes, "g", [helper.make_tensor_value_info("input", TensorProto.FLOAT, [1, 3])],
                          [helper.make_tensor_value_info("output", TensorProto.FLOAT, [1, 2])], [W1, W2])
    m = helper.make_model(g, opset_imports=[helper.make_opsetid("", 13)])
    m.ir_version = 8
    onnx.save(m, str(path))
    return path


def _vnnlib(files: dict[str, Path], onnx: str = "net", spec: str = "spec") -> list:
    return ["verify", "vnnlib", "--onnx", files[onnx], "--vnnlib", files[spec]]


# ------------------------------------------------------------------------------------------------
# models
# ------------------------------------------------------------------------------------------------
def test_not_an_onnx_file(files, capsys) -> None:
    assert_bad_input(["info", files["junk"]], capsys, "junk.onnx", "onnx")
    assert_bad_input(_vnnlib(files, onnx="junk"), capsys, "junk.onnx")


def test_missing_onnx_file(files, capsys, tmp_path: Path) -> None:
    assert_bad_input(["info", tmp_path / "nope.onnx"], capsys, "nope.onnx", "no such file")


def test_truncated_onnx(files, capsys) -> None:
    assert_bad_input(["info", files["trunc"]], capsys, "truncated.onnx")
    assert_bad_input(_vnnlib(files, onnx="trunc"), capsys, "truncated.onnx")


def test_unsupported_ops_are_all_listed(files, capsys) -> None:
    line = assert_bad_input(["info", files["ops"]], capsys, "sigmoid_softmax.onnx", "Sigmoid", "Tanh",
                            "Softmax")
    assert "unsupported" in line.lower()


@pytest.mark.parametrize("which", ["nan", "inf"])
def test_non_finite_weights(files, capsys, which: str) -> None:
    assert_bad_input(["info", files[which]], capsys, files[which].name, "NaN")


# ------------------------------------------------------------------------------------------------
# VNN-LIB
# ------------------------------------------------------------------------------------------------
def test_vnnlib_input_size_mismatch(files, capsys) -> None:
    assert_bad_input(_vnnlib(files, spec="spec2in"), capsys, "two_inputs.vnnlib", "2 inputs", "3 inputs")


def test_vnnlib_syntax_error_has_line_number(files, capsys) -> None:
    line = assert_bad_input(_vnnlib(files, spec="syntax"), capsys, "syntax.vnnlib")
    assert "syntax.vnnlib:9" in line or "line 9" in line or ":13" in line, line  # the open paren's line


def test_vnnlib_empty_input_box(files, capsys) -> None:
    assert_bad_input(_vnnlib(files, spec="empty"), capsys, "empty_box.vnnlib", "empty")


def test_vnnlib_missing_file(files, capsys, tmp_path: Path) -> None:
    assert_bad_input(["verify", "vnnlib", "--onnx", files["net"], "--vnnlib", tmp_path / "gone.vnnlib"],
                     capsys,
                     "gone.vnnlib")


# ------------------------------------------------------------------------------------------------
# option values
# ------------------------------------------------------------------------------------------------
def _global(files: dict[str, Path], *extra: str) -> list:
    return ["verify", "global", "--onnx", files["net"], "--timeout", "60", *extra]


@pytest.mark.parametrize("delta", ["0", "-0.1", "nan"])
def test_delta_not_positive(files, capsys, delta: str) -> None:
    argv = _global(files, "--delta", delta, "--kappa", "0.9", "--domain", "0", "1")
    assert_bad_input(argv, capsys, "--delta")


def test_unknown_bounds_method(files, capsys) -> None:
    argv = ["verify", "vnnlib", "--onnx", files["net"], "--vnnlib", files["spec"], "--bounds", "lp"]
    assert_bad_input(argv, capsys, "--bounds", "'lp'", "alpha")


def test_empty_domain(files, capsys) -> None:
    argv = _global(files, "--delta", "0.1", "--kappa", "0.9", "--domain", "1", "0")
    assert_bad_input(argv, capsys, "--domain",
                     "empty")


@pytest.mark.parametrize("kappa", ["0", "1", "1.5", "-0.2", "nan"])
def test_kappa_outside_unit_interval(files, capsys, kappa: str) -> None:
    argv = _global(files, "--delta", "0.1", "--kappa", kappa, "--domain", "0", "1")
    assert_bad_input(argv, capsys, "--kappa")


def test_kappa_at_most_one_over_n_warns(files, capsys) -> None:
    argv = _global(files, "--delta", "0.05", "--kappa", "0.5", "--domain", "0", "1")
    code, out, err = run_cli(argv, capsys)
    assert code == 0, err
    warn = [ln for ln in err.splitlines() if "warning" in ln.lower()]
    assert len(warn) == 1 and "--kappa" in warn[0] and "vacuous" in warn[0], err
    assert "Traceback" not in err


@pytest.mark.parametrize(("option", "value"), [("--epsilon", "0.6"), ("--epsilon", "0"),
                                               ("--epsilon", "-0.1"),
                                               ("--eta", "0.51"), ("--eta", "0"), ("--eta", "nan")])
def test_pac_epsilon_eta_outside_half_interval(capsys, option: str, value: str) -> None:
    args = {"--epsilon": "0.1", "--eta": "0.1"}
    args[option] = value
    argv = ["pac", "--m", "4", "--norm", "inf", "--epsilon", args["--epsilon"], "--eta", args["--eta"]]
    assert_bad_input(argv, capsys, option)


@pytest.mark.parametrize("cmd", ["certify", "run"])
@pytest.mark.parametrize(("option", "value"), [("--kappa", "1.5"), ("--delta", "-1"), ("--epsilon", "0.7"),
                                               ("--eta", "0")])
def test_certify_and_run_reject_bad_parameters(files, capsys, tmp_path: Path, cmd: str, option: str,
                                               value: str) -> None:
    _need(cmd)
    out = tmp_path / "out"
    argv = [cmd, "--out", out, option, value, "--quiet"]
    if cmd == "certify":
        argv += ["--teacher", files["net"]]
    assert_bad_input(argv, capsys, option, absent=(out,))


def test_missing_dataset_file(files, capsys, tmp_path: Path) -> None:
    gone = tmp_path / "gone.csv"
    argv = _global(files, "--delta", "0.1", "--kappa", "0.9", "--domain-from", f"csv:{gone}")
    assert_bad_input(argv, capsys,
                     "gone.csv")
    npz = f"npz:{tmp_path / 'x.npz'}"
    assert_bad_input(["verify", "local", "--onnx", files["net"], "--index", "0", "--data", npz,
                      "--eps", "0.1"], capsys, "x.npz")


@pytest.mark.parametrize("cmd", ["certify", "run", "train-teacher"])
def test_missing_dataset_file_in_pipeline_commands(files, capsys, tmp_path: Path, cmd: str) -> None:
    _need(cmd)
    gone = tmp_path / "gone.csv"
    out = tmp_path / "out"
    argv = [cmd, "--data", f"csv:{gone}", "--out", out]
    if cmd == "certify":
        argv += ["--teacher", files["net"]]
    if cmd in ("certify", "run"):
        argv.append("--quiet")
    assert_bad_input(argv, capsys, "gone.csv", absent=(out,))


def test_unknown_backend(files, capsys, tmp_path: Path) -> None:
    assert_bad_input([*_vnnlib(files), "--backend", "cplex"], capsys, "--backend", "cplex")
    inst = tmp_path / "inst.csv"
    inst.write_text(f"{files['net']},{files['spec']},10\n")
    out = tmp_path / "res.csv"
    assert_bad_input(["vnncomp", inst, "--out", out, "--backend", "cplex"], capsys, "--backend", "cplex",
                     absent=(out,))


def test_vnncomp_missing_instance_file_leaves_no_output(files, capsys, tmp_path: Path) -> None:
    inst = tmp_path / "inst.csv"
    inst.write_text(f"{files['net']},{tmp_path / 'missing.vnnlib'},10\n")
    out = tmp_path / "res.csv"
    assert_bad_input(["vnncomp", inst, "--out", out], capsys, "missing.vnnlib",
                     absent=(out, tmp_path / "res.csv.journal.jsonl"))
    assert_bad_input(["vnncomp", tmp_path / "no_instances.csv", "--out", out], capsys, "no_instances.csv",
                     absent=(out,))


# ------------------------------------------------------------------------------------------------
# backends
# ------------------------------------------------------------------------------------------------
@pytest.fixture(scope="module")
def needs_solver(tmp_path_factory: pytest.TempPathFactory) -> tuple[Path, Path]:
    """A VNN-LIB query that CROWN cannot prove and sampling cannot falsify: the backend must run."""
    from encoders.network import load_onnx
    from encoders.properties import OutputDNFProperty

    d = tmp_path_factory.mktemp("solver")
    for seed in range(100, 200):
        case = O.gen_dnf(seed, want=False, max_total=8, max_inputs=3)
        p = save_onnx(list(case.weights), d / f"n{seed}.onnx")
        prop = OutputDNFProperty(case.lo, case.hi, case.alternatives)
        if not prop.quick_check({"net": load_onnx(p)}):
            spec = d / f"s{seed}.vnnlib"
            n_out = case.weights[-1][0].shape[0]
            spec.write_text(O.vnnlib_source(case.lo, case.hi, case.alternatives, n_out))
            return p, spec
    raise AssertionError("no suitable instance")


@pytest.mark.parametrize(("backend", "module"), [("highs", "highspy"), ("gurobi", "gurobipy"), ("z3", "z3"),
                                                 ("marabou", "maraboupy.MarabouCore")])
def test_backend_package_not_installed(needs_solver, capsys, monkeypatch: pytest.MonkeyPatch, backend: str,
                                       module: str) -> None:
    onnx_path, spec = needs_solver
    monkeypatch.setitem(sys.modules, module, None)  # `import module` now raises ImportError
    line = assert_bad_input(["verify", "vnnlib", "--onnx", onnx_path, "--vnnlib", spec, "--backend", backend],
                            capsys, backend)
    assert "not installed" in line


@pytest.fixture(scope="module")
def big_model(tmp_path_factory: pytest.TempPathFactory) -> tuple[Path, Path]:
    """A network whose MILP exceeds the pip Gurobi licence (> 2000 variables) with a property that no
    attack can falsify and CROWN cannot prove, so a solver is needed.

    The hidden layer holds two identical copies of 400 random ReLUs and ``y0``, ``y1`` read one copy
    each with the same weights, so ``y0 − y1 ≡ 0``; the unsafe region ``y0 − y1 >= 0.5`` is empty, but
    CROWN relaxes the two copies independently and cannot see it.
    """
    d = tmp_path_factory.mktemp("big")
    rng = np.random.default_rng(7)
    A = rng.normal(0.0, 1.0, (400, 4)).astype(np.float32).astype(np.float64)
    c = rng.normal(0.0, 0.1, 400).astype(np.float32).astype(np.float64)
    v = rng.normal(0.0, 1.0, 400).astype(np.float32).astype(np.float64)
    W1, b1 = np.vstack([A, A]), np.concatenate([c, c])
    W2 = np.zeros((2, 800))
    W2[0, :400], W2[1, 400:] = v, v
    p = save_onnx([(W1, b1), (W2, np.zeros(2))], d / "big.onnx")
    spec = d / "big.vnnlib"
    unsafe = [(np.array([[-1.0, 1.0]]), np.array([-0.5]))]  # y0 - y1 >= 0.5
    spec.write_text(O.vnnlib_source(-np.ones(4), np.ones(4), unsafe, 2))
    return p, spec


def test_gurobi_licence_too_small_suggests_highs(big_model, capsys) -> None:
    pytest.importorskip("gurobipy")
    from verifier.backends.gurobi import licence_is_size_limited

    if not licence_is_size_limited():
        pytest.skip("this Gurobi licence is not size-limited")
    onnx_path, spec = big_model
    assert_bad_input(["verify", "vnnlib", "--onnx", onnx_path, "--vnnlib", spec, "--backend", "gurobi",
                      "--timeout", "120"], capsys, "gurobi", "highs")


def test_gurobi_licence_too_small_is_never_a_verdict(big_model, capsys) -> None:
    """Whatever the exit path, a licence refusal must not come out as verified/falsified."""
    pytest.importorskip("gurobipy")
    from verifier.backends.gurobi import licence_is_size_limited

    if not licence_is_size_limited():
        pytest.skip("this Gurobi licence is not size-limited")
    onnx_path, spec = big_model
    code, out, err = run_cli(["verify", "vnnlib", "--onnx", onnx_path, "--vnnlib", spec, "--backend",
                              "gurobi", "--timeout", "120", "--json"], capsys)
    assert "Traceback" not in err
    if code == 0:
        import json

        res = json.loads(out)
        assert res["verdict"] in ("error", "unknown", "timeout"), res
        assert "highs" in res["message"].lower(), res["message"]
    else:
        assert code == 2 and "highs" in err.lower(), err


def test_json_flag_after_nested_subcommand(files, capsys) -> None:
    """The issue-4 contract puts ``--json`` after the nested subcommand's options."""
    code, out, err = run_cli([*_vnnlib(files), "--json"], capsys)
    assert code == 0, err
    import json

    assert json.loads(out)["verdict"] in ("verified", "falsified", "unknown", "timeout", "error")


# ------------------------------------------------------------------------------------------------
# the real console script
# ------------------------------------------------------------------------------------------------
def test_console_script_bad_input(files) -> None:
    exe = shutil.which("distillcert")
    if exe is None:
        pytest.skip("distillcert is not installed (pip install -e .)")
    res = subprocess.run([exe, "info", str(files["junk"])], capture_output=True, text=True, timeout=120)
    if "No module named 'distill.commands'" in res.stderr:
        pytest.xfail("command not yet registered (distill.commands is missing)")
    assert res.returncode == 2, res.stderr
    assert "Traceback" not in res.stderr
    assert len(res.stderr.strip().splitlines()) == 1 and "junk.onnx" in res.stderr
    assert res.stdout == ""
