"""Append-only journal of finished queries, so an interrupted run resumes without redoing them.

Format
------
JSON lines, one record per line: ``{"key": <str>, "result": <object>}``.  A record is *committed* once
its terminating newline is on disk; each :meth:`Journal.record` writes the whole line with one
``write`` on an ``O_APPEND`` descriptor and ``fsync``\\ s it before returning, so a Ctrl-C, a SIGKILL or a
power cut loses at most the record being written.

Crash tolerance
---------------
A crash mid-write can leave a *torn* last line (no terminating newline).  Opening a journal ignores it,
and the first append truncates it away before writing, so later records never follow garbage.  A
malformed line that *is* newline-terminated cannot come from a torn append; it means the file was
damaged some other way and opening raises :class:`~encoders.errors.DataError` naming the file and line.

Several processes may append to one journal: appends take an exclusive ``flock`` (where available) and
first read whatever other writers committed since (:meth:`Journal.refresh`).  When a key is recorded
twice the later result wins.
"""

from __future__ import annotations

import contextlib
import copy
import hashlib
import json
import os
from collections.abc import Iterator, Mapping
from pathlib import Path
from typing import Any

from encoders.errors import DataError
from verifier.atomic import fsync_dir

try:  # POSIX advisory locking; without it the journal assumes a single writer
    import fcntl
except ImportError:  # pragma: no cover - Windows
    fcntl = None  # type: ignore[assignment]

__all__ = ["Journal", "query_key"]


def _canonical(obj: Any) -> Any:
    """A JSON-able, type-tagged canonical form of ``obj`` for hashing."""
    if obj is None or isinstance(obj, bool | int | str):
        return obj
    if isinstance(obj, float):
        return {"__float__": obj.hex()}  # exact, and distinct from ints and strings
    if isinstance(obj, bytes | bytearray | memoryview):
        return {"__bytes__": bytes(obj).hex()}
    if isinstance(obj, os.PathLike):
        return {"__path__": os.fspath(obj)}
    if isinstance(obj, Mapping):
        items = [(_canonical(k), _canonical(v)) for k, v in obj.items()]
        return {"__map__": sorted(items, key=lambda kv: json.dumps(kv[0], sort_keys=True))}
    if isinstance(obj, list | tuple):
        return [_canonical(v) for v in obj]
    # numpy arrays / scalars without importing numpy here
    if hasattr(obj, "dtype") and hasattr(obj, "tobytes") and hasattr(obj, "shape"):
        if getattr(obj, "shape", None) == () and hasattr(obj, "item"):
            return _canonical(obj.item())
        c = obj.copy(order="C") if hasattr(obj, "copy") else obj
        return {"__array__": [str(obj.dtype), list(obj.shape), hashlib.sha256(c.tobytes()).hexdigest()]}
    if hasattr(obj, "value") and hasattr(obj, "name") and not isinstance(obj, type):  # enums
        return {"__enum__": [type(obj).__name__, _canonical(obj.value)]}
    raise TypeError(f"query_key: cannot hash a {type(obj).__name__}")


def query_key(*parts: Any) -> str:
    """SHA-256 hex digest identifying a query by its parts (e.g. ONNX hash, spec hash, backend, params).

    Parts may be ``None``, bools, ints, floats (hashed exactly, by their hex form), strings, bytes, paths,
    lists/tuples, mappings (order-insensitive), enums and NumPy arrays (dtype, shape and contents).
    ``1``, ``1.0``, ``"1"`` and ``True`` give different keys; lists and tuples with equal items give the same.
    """
    blob = json.dumps(_canonical(list(parts)), sort_keys=True, separators=(",", ":"), allow_nan=False)
    return hashlib.sha256(blob.encode("utf-8")).hexdigest()


class Journal(Mapping[str, dict[str, Any]]):
    """Append-only JSON-lines journal of finished queries, keyed by a string (see :func:`query_key`).

    A read-only :class:`~collections.abc.Mapping` ``key -> result`` plus :meth:`record`.  Opening a
    journal never modifies the file (a missing file is created lazily by the first :meth:`record`).

    Examples
    --------
    >>> with Journal(out_dir / "journal.jsonl") as j:          # doctest: +SKIP
    ...     for q in queries:
    ...         k = query_key(onnx_sha, spec_sha, backend, params)
    ...         res = j.get(k) or j.record(k, solve(q))
    """

    def __init__(self, path: str | os.PathLike[str]):
        self.path = Path(path)
        self._data: dict[str, dict[str, Any]] = {}
        self._end = 0  # byte offset just past the last committed record read
        self._lines = 0  # committed lines read (for error messages)
        self._fd: int | None = None
        if self.path.is_dir():
            raise DataError(f"{self.path}: is a directory, not a journal file")
        self.refresh()

    # ------------------------------------------------------------------------------------ reading
    def refresh(self) -> None:
        """Read records committed to the file since the last read (e.g. by another process)."""
        try:
            with open(self.path, "rb") as fh:
                fh.seek(self._end)
                tail = fh.read()
        except FileNotFoundError:
            return
        self._consume(tail)

    def _consume(self, tail: bytes) -> None:
        """Parse the committed (newline-terminated) lines of ``tail``; leave a torn last line unread."""
        cut = tail.rfind(b"\n")
        if cut < 0:
            return
        for raw in tail[: cut + 1].split(b"\n")[:-1]:
            self._lines += 1
            key, result = self._parse(raw)
            self._data[key] = result
        self._end += cut + 1

    def _parse(self, raw: bytes) -> tuple[str, dict[str, Any]]:
        try:
            rec = json.loads(raw.decode("utf-8"))
        except (UnicodeDecodeError, json.JSONDecodeError):
            rec = None
        ok = isinstance(rec, dict) and isinstance(rec.get("key"), str) and isinstance(rec.get("result"), dict)
        if not ok:
            raise DataError(
                f"{self.path}: line {self._lines} is not a journal record (the file is damaged; "
                "delete it to start over)"
            )
        return rec["key"], rec["result"]

    # ----------------------------------------------------------------------------------- Mapping
    def __getitem__(self, key: str) -> dict[str, Any]:
        return copy.deepcopy(self._data[key])

    def __iter__(self) -> Iterator[str]:
        return iter(list(self._data))

    def __len__(self) -> int:
        return len(self._data)

    def __contains__(self, key: object) -> bool:
        return key in self._data

    def get(self, key: str, default: Any = None) -> dict[str, Any] | None:  # type: ignore[override]
        """The recorded result of ``key`` (a copy), or ``default`` if it has not been recorded."""
        return self[key] if key in self._data else default

    # ----------------------------------------------------------------------------------- writing
    def record(self, key: str, result: dict[str, Any]) -> dict[str, Any]:
        """Append ``key -> result`` durably (one write, then fsync) and return the result as stored.

        The result is serialised before the file is touched (a ``TypeError`` for non-JSON content
        leaves the journal unchanged).  The returned / stored value is the JSON round-trip of
        ``result`` (tuples become lists, ...), i.e. exactly what a resumed run will read back.
        """
        if not isinstance(key, str):
            raise TypeError(f"journal key must be a str, got {type(key).__name__}")
        if not isinstance(result, dict):
            raise TypeError(f"journal result must be a dict, got {type(result).__name__}")
        line = json.dumps({"key": key, "result": result}, separators=(",", ":"), ensure_ascii=False)
        data = (line + "\n").encode("utf-8")
        stored = json.loads(line)["result"]
        fd = self._open()
        with self._locked(fd):
            self._catch_up(fd)
            self._write_all(fd, data)
            os.fsync(fd)
            self._end += len(data)
            self._lines += 1
        self._data[key] = stored
        return copy.deepcopy(stored)

    def _open(self) -> int:
        if self._fd is None:
            self.path.parent.mkdir(parents=True, exist_ok=True)
            existed = self.path.exists()
            self._fd = os.open(self.path, os.O_RDWR | os.O_APPEND | os.O_CREAT, 0o666)
            if not existed:  # make the new directory entry itself durable
                fsync_dir(self.path.parent)
        return self._fd

    @contextlib.contextmanager
    def _locked(self, fd: int) -> Iterator[None]:
        if fcntl is None:  # pragma: no cover
            yield
            return
        fcntl.flock(fd, fcntl.LOCK_EX)
        try:
            yield
        finally:
            fcntl.flock(fd, fcntl.LOCK_UN)

    def _catch_up(self, fd: int) -> None:
        """Under the lock: read what others committed, then cut any torn tail before appending."""
        size = os.fstat(fd).st_size
        if size > self._end:
            os.lseek(fd, self._end, os.SEEK_SET)
            tail = b""
            while len(tail) < size - self._end:
                chunk = os.read(fd, size - self._end - len(tail))
                if not chunk:
                    break
                tail += chunk
            self._consume(tail)
        if size > self._end:  # a torn last line left by a crashed writer
            os.ftruncate(fd, self._end)
            os.fsync(fd)
        elif size < self._end:  # the file was truncated or replaced behind our back
            raise DataError(f"{self.path}: the journal shrank while in use (another program changed it)")

    @staticmethod
    def _write_all(fd: int, data: bytes) -> None:
        view = memoryview(data)
        while view:
            n = os.write(fd, view)
            view = view[n:]

    # --------------------------------------------------------------------------------- lifecycle
    def close(self) -> None:
        """Close the append descriptor (records are already durable; reading still works)."""
        if self._fd is not None:
            os.close(self._fd)
            self._fd = None

    def __enter__(self) -> Journal:
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()

    def __del__(self) -> None:  # pragma: no cover - best effort
        with contextlib.suppress(Exception):
            self.close()

    def __repr__(self) -> str:
        return f"Journal({str(self.path)!r}, {len(self)} records)"
