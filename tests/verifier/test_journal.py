"""Journal of finished queries (crash tolerance, resume) and atomic file writes."""

from __future__ import annotations

import json
import os
import signal
import stat
import subprocess
import sys
import textwrap
import threading
import time
from pathlib import Path

import numpy as np
import pytest

from encoders.errors import DataError
from verifier import atomic
from verifier.atomic import atomic_write_bytes, atomic_write_json, atomic_write_text
from verifier.journal import Journal, query_key

REPO = Path(__file__).resolve().parents[2]


def _env() -> dict[str, str]:
    env = dict(os.environ)
    env["PYTHONPATH"] = str(REPO) + os.pathsep + env.get("PYTHONPATH", "")
    return env


# ------------------------------------------------------------------------------------------- journal


def test_record_and_reload(tmp_path):
    path = tmp_path / "run" / "journal.jsonl"  # parent directory created on first record
    j = Journal(path)
    assert len(j) == 0 and j.get("a") is None and not path.exists()  # opening does not create the file
    assert j.record("a", {"verdict": "verified", "time": 0.25, "bounds": (1.0, 2.5)}) == {
        "verdict": "verified", "time": 0.25, "bounds": [1.0, 2.5]}
    j.record("b", {"verdict": "falsified", "x": [0.1, -0.2], "nan": float("nan"), "inf": float("-inf")})
    j.record("c", {})
    j.close()
    j2 = Journal(path)
    assert len(j2) == 3 and list(j2) == ["a", "b", "c"] and list(j2.keys()) == ["a", "b", "c"]
    assert j2.get("a") == {"verdict": "verified", "time": 0.25, "bounds": [1.0, 2.5]}  # tuple -> list
    assert j2["b"]["x"] == [0.1, -0.2] and np.isnan(j2["b"]["nan"]) and j2["b"]["inf"] == -np.inf
    assert "c" in j2 and "d" not in j2 and j2.get("d") is None and j2.get("d", {"x": 1}) == {"x": 1}
    with pytest.raises(KeyError):
        j2["d"]
    assert dict(j2.items())["c"] == {}
    # results handed out are copies: mutating them does not change the journal
    j2.get("a")["verdict"] = "tampered"
    assert j2.get("a")["verdict"] == "verified"
    # every committed line is a full JSON record
    lines = path.read_text().splitlines()
    assert [json.loads(ln)["key"] for ln in lines] == ["a", "b", "c"]


def test_later_record_wins_and_len_counts_keys(tmp_path):
    path = tmp_path / "j.jsonl"
    with Journal(path) as j:
        j.record("q", {"verdict": "error"})
        j.record("q", {"verdict": "verified"})
        assert len(j) == 1 and j["q"] == {"verdict": "verified"}
    assert Journal(path)["q"] == {"verdict": "verified"}
    assert len(path.read_text().splitlines()) == 2


def test_bad_record_leaves_journal_unchanged(tmp_path):
    path = tmp_path / "j.jsonl"
    j = Journal(path)
    j.record("ok", {"v": 1})
    before = path.read_bytes()
    with pytest.raises(TypeError):
        j.record("bad", {"v": object()})
    with pytest.raises(TypeError):
        j.record(3, {"v": 1})  # type: ignore[arg-type]
    with pytest.raises(TypeError):
        j.record("x", [1, 2])  # type: ignore[arg-type]
    assert path.read_bytes() == before and len(j) == 1 and "bad" not in j


@pytest.mark.parametrize("torn", [b'{"key":"c","res', b'{"key":"c","result":{"v":3}}', b"\x00\x00\x00", b"{"])
def test_torn_last_line_is_ignored_then_truncated(tmp_path, torn):
    path = tmp_path / "j.jsonl"
    with Journal(path) as j:
        j.record("a", {"v": 1})
        j.record("b", {"v": 2})
    good = path.read_bytes()
    with open(path, "ab") as fh:  # what a crash in the middle of the third append leaves
        fh.write(torn)
    j = Journal(path)
    assert list(j) == ["a", "b"]  # a line without its newline is not committed, even if it parses
    assert path.read_bytes() == good + torn  # opening is read-only
    j.record("d", {"v": 4})
    j.close()
    assert path.read_bytes() == good + b'{"key":"d","result":{"v":4}}\n'  # torn tail cut before appending
    assert list(Journal(path)) == ["a", "b", "d"]


def test_damaged_middle_line_is_a_data_error(tmp_path):
    path = tmp_path / "j.jsonl"
    path.write_text('{"key":"a","result":{}}\nnot json\n{"key":"b","result":{}}\n')
    with pytest.raises(DataError, match=r"j\.jsonl: line 2"):
        Journal(path)
    path.write_text('{"key":"a","result":{}}\n{"key":1,"result":{}}\n')
    with pytest.raises(DataError, match="line 2"):
        Journal(path)
    path.write_text('{"key":"a","result":[]}\n')
    with pytest.raises(DataError, match="line 1"):
        Journal(path)
    with pytest.raises(DataError, match="directory"):
        Journal(tmp_path)


def test_two_writers_see_each_other(tmp_path):
    path = tmp_path / "j.jsonl"
    j1, j2 = Journal(path), Journal(path)
    j1.record("a", {"v": 1})
    j2.record("b", {"v": 2})  # catches up with j1's record before appending
    assert list(j2) == ["a", "b"]
    assert "b" not in j1
    j1.refresh()
    assert list(j1) == ["a", "b"]
    j1.record("c", {"v": 3})
    j1.close()
    j2.close()
    assert [json.loads(ln)["key"] for ln in path.read_text().splitlines()] == ["a", "b", "c"]


_WRITER = textwrap.dedent(
    """
    import sys
    from verifier.journal import Journal
    j = Journal(sys.argv[1])
    pad = "x" * int(sys.argv[2])
    i = len(j)
    while True:
        j.record(str(i), {"i": i, "pad": pad})
        i += 1
    """
)


def default_sigint() -> None:
    """In the child before exec: SIGINT back to its default action.  A test run started in the
    background of a non-interactive shell inherits SIGINT *ignored*, and Python then keeps ignoring it
    (no KeyboardInterrupt), so the signal this test sends would do nothing."""
    signal.signal(signal.SIGINT, signal.SIG_DFL)


@pytest.mark.parametrize("sig,pad", [(signal.SIGKILL, 10), (signal.SIGKILL, 300_000), (signal.SIGINT, 1000)])
def test_killed_writer_leaves_readable_journal(tmp_path, sig, pad):
    """A writer killed mid-run leaves every finished record readable; a rerun resumes after them."""
    path = tmp_path / "j.jsonl"
    for round_ in range(2):
        proc = subprocess.Popen([sys.executable, "-c", _WRITER, str(path), str(pad)], env=_env(),
                                stderr=subprocess.DEVNULL, preexec_fn=default_sigint)
        deadline = time.monotonic() + 60
        target = 20 * (round_ + 1)
        while time.monotonic() < deadline:
            if path.exists() and path.read_bytes().count(b"\n") >= target:
                break
            time.sleep(0.005)
        proc.send_signal(sig)
        proc.wait(timeout=30)
        j = Journal(path)
        n = len(j)
        assert n >= target
        assert list(j) == [str(i) for i in range(n)]  # the finished ones, in order, none lost in between
        assert all(j[str(i)] == {"i": i, "pad": "x" * pad} for i in range(n))
        j.close()


# ----------------------------------------------------------------------------------------- query_key


def test_query_key():
    k = query_key("ab12", "cd34", "highs", {"delta": 0.1, "kappa": 0.9})
    assert len(k) == 64 and all(c in "0123456789abcdef" for c in k)
    assert k == query_key("ab12", "cd34", "highs", {"kappa": 0.9, "delta": 0.1})  # dict order irrelevant
    assert k != query_key("cd34", "ab12", "highs", {"delta": 0.1, "kappa": 0.9})  # part order matters
    assert k != query_key("ab12", "cd34", "highs", {"delta": 0.1000000001, "kappa": 0.9})
    distinct = {query_key(v) for v in (1, 1.0, "1", True, None, b"1", [1], (1, 2), [1, 2, 3])}
    assert len(distinct) == 9
    assert query_key((1, 2)) == query_key([1, 2])
    assert query_key("a", "b") != query_key("ab") != query_key(["a", "b"])
    a = np.arange(6, dtype=np.float64)
    assert query_key(a) == query_key(a.copy()) != query_key(a.reshape(2, 3))
    assert query_key(a) != query_key(a.astype(np.float32))
    assert query_key(np.float64(0.5)) == query_key(0.5) and query_key(np.int64(3)) == query_key(3)
    assert query_key(a[::2]) == query_key(np.array([0.0, 2.0, 4.0]))  # non-contiguous views
    with pytest.raises(TypeError):
        query_key(object())


# ------------------------------------------------------------------------------------------ atomic


def test_atomic_writes_roundtrip_and_modes(tmp_path):
    p = tmp_path / "cert.json"
    atomic_write_json(p, {"b": 1, "a": [1.5, "é"]})
    assert json.loads(p.read_text(encoding="utf-8")) == {"b": 1, "a": [1.5, "é"]}
    assert p.read_text(encoding="utf-8").endswith("\n")
    assert stat.S_IMODE(p.stat().st_mode) == 0o666 & ~atomic._umask()
    os.chmod(p, 0o640)
    atomic_write_text(p, "line1\nline2\n")
    assert p.read_bytes() == b"line1\nline2\n"
    assert stat.S_IMODE(p.stat().st_mode) == 0o640  # permissions of the replaced file kept
    atomic_write_bytes(p, b"\x00\x01")
    assert p.read_bytes() == b"\x00\x01"
    assert sorted(x.name for x in tmp_path.iterdir()) == ["cert.json"]


def test_atomic_write_failures_leave_target_and_no_temp(tmp_path, monkeypatch):
    p = tmp_path / "out.json"
    atomic_write_text(p, "old\n")
    with pytest.raises(ValueError):  # NaN is not JSON: refused before any file is touched
        atomic_write_json(p, {"x": float("nan")})
    with pytest.raises(TypeError):
        atomic_write_json(p, {"x": object()})

    def boom(*a, **k):
        raise KeyboardInterrupt

    monkeypatch.setattr(atomic.os, "replace", boom)
    with pytest.raises(KeyboardInterrupt):
        atomic_write_text(p, "new\n")
    monkeypatch.undo()
    assert p.read_text() == "old\n"
    assert sorted(x.name for x in tmp_path.iterdir()) == ["out.json"]
    with pytest.raises(FileNotFoundError):
        atomic_write_text(tmp_path / "missing" / "f.txt", "x")
    assert sorted(x.name for x in tmp_path.iterdir()) == ["out.json"]


def test_atomic_reader_never_sees_partial_file(tmp_path):
    p = tmp_path / "big.bin"
    size = 1 << 20
    contents = [b"a" * size, b"b" * size]
    atomic_write_bytes(p, contents[0])
    stop = threading.Event()

    def writer():
        i = 0
        while not stop.is_set():
            atomic_write_bytes(p, contents[i % 2])
            i += 1

    t = threading.Thread(target=writer)
    t.start()
    try:
        for _ in range(300):
            assert p.read_bytes() in contents
    finally:
        stop.set()
        t.join()


_ATOMIC_WRITER = textwrap.dedent(
    """
    import sys
    from verifier.atomic import atomic_write_bytes
    i = 0
    while True:
        atomic_write_bytes(sys.argv[1], bytes([65 + i % 2]) * (4 << 20))
        i += 1
    """
)


def test_atomic_write_survives_sigkill(tmp_path):
    p = tmp_path / "cert.json"
    for delay in (0.05, 0.2, 0.4):
        proc = subprocess.Popen([sys.executable, "-c", _ATOMIC_WRITER, str(p)], env=_env())
        deadline = time.monotonic() + 60
        while not p.exists() and time.monotonic() < deadline:
            time.sleep(0.005)
        time.sleep(delay)
        proc.kill()
        proc.wait(timeout=30)
        data = p.read_bytes()
        assert data in (b"A" * (4 << 20), b"B" * (4 << 20))
