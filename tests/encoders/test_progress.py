"""Progress reporting: a bar on a terminal, exactly one line per stage in a log."""

from __future__ import annotations

import io

from encoders.progress import Progress, progress


class _Tty(io.StringIO):
    def isatty(self) -> bool:
        return True


def test_log_gets_one_line_per_stage():
    log = io.StringIO()
    bar = Progress(desc="local queries", total=300, unit="query", stream=log)
    for _ in range(300):
        bar.update()
    bar.set_postfix(verified=299)
    bar.close()
    bar.close()  # idempotent
    lines = log.getvalue().splitlines()
    assert len(lines) == 1
    assert lines[0].startswith("local queries: 300/300 query in ") and lines[0].endswith("[verified=299]")


def test_iteration_counts_and_closes():
    log = io.StringIO()
    assert list(progress(range(7), desc="stage", stream=log)) == list(range(7))
    assert log.getvalue().startswith("stage: 7/7 it in ")
    assert log.getvalue().count("\n") == 1


def test_disabled_is_silent():
    log = io.StringIO()
    with Progress(desc="quiet", total=3, enabled=False, stream=log) as bar:
        bar.update(3)
    assert log.getvalue() == ""


def test_terminal_draws_a_bar():
    tty = _Tty()
    with Progress(desc="bar", total=50, stream=tty, mininterval=0) as bar:
        for _ in range(50):
            bar.update()
    out = tty.getvalue()
    assert "%|" in out and "50/50" in out  # tqdm's rendering ("bar: 100%|███| 50/50 …")
    assert "50/50 it in " not in out  # not the log summary line
