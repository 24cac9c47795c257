"""Atomic file writes: a reader sees either the old file or the complete new one, never a part.

Protocol (POSIX): write into a fresh temporary file in the *same directory* (so the final rename does
not cross file systems), ``flush`` + ``fsync`` it, ``os.replace`` it onto the target (an atomic rename),
then ``fsync`` the directory so the rename itself survives a power cut.  On any exception — including
``KeyboardInterrupt`` — the temporary file is removed and the target is left untouched.

The new file gets the permissions of the file it replaces, or ``0o666 & ~umask`` for a new file (as
``open(path, "w")`` would), not the ``0o600`` of :func:`tempfile.mkstemp`.
"""

from __future__ import annotations

import contextlib
import functools
import json
import os
import stat
import tempfile
from pathlib import Path
from typing import Any

__all__ = ["atomic_write_bytes", "atomic_write_json", "atomic_write_text", "fsync_dir"]


@functools.cache
def _umask() -> int:
    # os.umask can only be read by setting it; done once per process.
    mask = os.umask(0o022)
    os.umask(mask)
    return mask


def fsync_dir(directory: Path) -> None:
    """Make a rename in ``directory`` durable (best effort: not every platform can open a directory)."""
    try:
        fd = os.open(directory, os.O_RDONLY)
    except OSError:
        return
    try:
        with contextlib.suppress(OSError):
            os.fsync(fd)
    finally:
        os.close(fd)


def atomic_write_bytes(path: str | os.PathLike[str], data: bytes) -> Path:
    """Write ``data`` to ``path`` atomically (temp file in the same directory, fsync, ``os.replace``).

    Returns the target path.  Raises whatever the file system raises (e.g. ``FileNotFoundError`` when
    the directory does not exist); in that case no file, partial or temporary, is left behind.
    """
    target = Path(path)
    directory = target.parent if str(target.parent) else Path(".")
    try:
        mode = stat.S_IMODE(os.stat(target).st_mode)
    except FileNotFoundError:
        mode = 0o666 & ~_umask()
    fd, tmp_name = tempfile.mkstemp(dir=directory, prefix=f".{target.name}.", suffix=".tmp")
    tmp = Path(tmp_name)
    try:
        with os.fdopen(fd, "wb") as fh:
            fh.write(data)
            fh.flush()
            os.fsync(fh.fileno())
        os.chmod(tmp, mode)
        os.replace(tmp, target)
    except BaseException:
        with contextlib.suppress(OSError):
            tmp.unlink()
        raise
    fsync_dir(directory)
    return target


def atomic_write_text(path: str | os.PathLike[str], text: str, encoding: str = "utf-8") -> Path:
    """Write ``text`` to ``path`` atomically (see :func:`atomic_write_bytes`).  Newlines are written as
    given (no platform translation)."""
    return atomic_write_bytes(path, text.encode(encoding))


def atomic_write_json(
    path: str | os.PathLike[str],
    obj: Any,
    *,
    indent: int | None = 2,
    sort_keys: bool = False,
    allow_nan: bool = False,
) -> Path:
    """Serialise ``obj`` as JSON (UTF-8, trailing newline) and write it to ``path`` atomically.

    The object is serialised *before* any file is touched, so a serialisation error (``TypeError`` for
    a non-JSON type, ``ValueError`` for NaN/inf when ``allow_nan`` is false — the default, since
    ``NaN`` is not valid JSON and certificates must be readable by any JSON parser) leaves the
    target as it was.
    """
    text = json.dumps(obj, indent=indent, sort_keys=sort_keys, allow_nan=allow_nan, ensure_ascii=False)
    return atomic_write_text(path, text + "\n")
