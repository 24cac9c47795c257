"""Run the ``distillcert`` CLI in-process from tests: ``run`` returns ``(exit code, stdout, stderr)``;
``bad`` asserts the bad-input contract (exit 2, one line on stderr naming the problem, nothing on stdout)."""

from __future__ import annotations


def run(argv: list, capsys) -> tuple[int, str, str]:
    from verifier.cli.main import main

    try:
        code = main([str(a) for a in argv])
    except SystemExit as exc:
        code = exc.code if isinstance(exc.code, int) else 1
    out, err = capsys.readouterr()
    return code, out, err


def bad(argv: list, capsys, *needles: str) -> str:
    code, out, err = run(argv, capsys)
    lines = [ln for ln in err.splitlines() if ln.strip()]
    assert code == 2, (code, err)
    assert len(lines) == 1 and "Traceback" not in err, err
    assert out == ""
    for n in needles:
        assert n.lower() in lines[0].lower(), lines[0]
    return lines[0]
