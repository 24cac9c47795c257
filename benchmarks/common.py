"""Small shared helpers for the benchmark modules: seeds, torch threads, progress bars, timing, output files.

Every benchmark writes into one output folder: CSV/JSON tables (:func:`write_csv`, :func:`write_json`),
PNG plots (:func:`save_fig`) and a Markdown summary ``summary.md`` (:func:`write_summary`).  Files are
written atomically (temporary file + ``os.replace``) so an interrupted run never leaves half a table.

Plots are made with :func:`new_figure`, which builds a :class:`matplotlib.figure.Figure` directly (the
Agg canvas, no ``pyplot`` state machine, no global backend switch) — safe in worker processes and
tests.

This module is imported by every benchmark; keep its API small and stable.
"""

from __future__ import annotations

import contextlib
import csv
import datetime as _dt
import io
import json
import math
import os
import platform
import random
import sys
import tempfile
import time
from collections.abc import Callable, Iterable, Iterator, Mapping, Sequence
from pathlib import Path
from typing import Any

import numpy as np

__all__ = [
    "seed_everything",
    "torch_threads",
    "progress",
    "Timer",
    "write_csv",
    "write_json",
    "write_text",
    "write_summary",
    "save_fig",
    "new_figure",
    "md_table",
    "fmt",
    "mean_std",
    "machine_info",
    "machine_line",
    "cached_model",
]


# --------------------------------------------------------------------------------------------------
# determinism and threads
# --------------------------------------------------------------------------------------------------
def seed_everything(seed: int) -> None:
    """Seed Python's, NumPy's legacy and torch's global generators with ``seed``.

    Benchmarks pass explicit seeds to every library call that takes one; this only pins whatever
    still draws from a global generator (e.g. torch's default initialisers).
    """
    random.seed(int(seed))
    np.random.seed(int(seed) % 2**32)
    with contextlib.suppress(ImportError):
        import torch

        torch.manual_seed(int(seed))


@contextlib.contextmanager
def torch_threads(n: int = 1) -> Iterator[None]:
    """Run the block with ``torch.set_num_threads(n)`` and restore the previous count afterwards.

    The networks of these benchmarks are small MLPs, for which intra-op parallelism costs more than
    it gains; on a loaded 2-core machine two OpenMP threads were measured 8× slower than one.
    """
    try:
        import torch
    except ImportError:  # pragma: no cover - torch is a dependency
        yield
        return
    old = torch.get_num_threads()
    torch.set_num_threads(max(1, int(n)))
    try:
        yield
    finally:
        torch.set_num_threads(old)


def progress(
    iterable: Iterable[Any], desc: str, total: int | None = None, enabled: bool = True
) -> Iterable[Any]:
    """A progress bar on a terminal, one line per stage in a log (:class:`encoders.progress.Progress`)."""
    from encoders.progress import Progress

    return Progress(iterable, desc=desc, total=total, enabled=enabled)


class Timer:
    """``with Timer() as t: ...`` then ``t.seconds`` (wall clock) and ``t.cpu_seconds`` (CPU time of this
    process plus its waited-for children, e.g. solver processes) — on a shared machine the CPU time is
    the number that does not depend on the load."""

    def __init__(self) -> None:
        self.start = 0.0
        self.seconds = 0.0
        self.cpu_seconds = 0.0
        self._cpu0 = 0.0

    @staticmethod
    def _cpu() -> float:
        t = time.process_time()
        with contextlib.suppress(ImportError, OSError):
            import resource

            ru = resource.getrusage(resource.RUSAGE_CHILDREN)
            t += ru.ru_utime + ru.ru_stime
        return t

    def __enter__(self) -> Timer:
        self.start = time.perf_counter()
        self._cpu0 = self._cpu()
        return self

    def __exit__(self, *exc: object) -> None:
        self.seconds = time.perf_counter() - self.start
        self.cpu_seconds = self._cpu() - self._cpu0


# --------------------------------------------------------------------------------------------------
# files
# --------------------------------------------------------------------------------------------------
def _atomic_bytes(path: Path, data: bytes) -> Path:
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    fd, tmp = tempfile.mkstemp(prefix=f".{path.name}.", suffix=".tmp", dir=path.parent)
    try:
        with os.fdopen(fd, "wb") as fh:
            fh.write(data)
        mask = os.umask(0)
        os.umask(mask)
        os.chmod(tmp, 0o666 & ~mask)  # mkstemp creates 0600; give outputs the usual permissions
        os.replace(tmp, path)
    except BaseException:
        with contextlib.suppress(OSError):
            os.unlink(tmp)
        raise
    return path


def write_text(path: Path, text: str) -> Path:
    """Write ``text`` (UTF-8) atomically."""
    return _atomic_bytes(Path(path), text.encode("utf-8"))


def _cell(v: Any) -> Any:
    if isinstance(v, bool | np.bool_):
        return str(bool(v)).lower()
    if isinstance(v, float | np.floating):
        v = float(v)
        return repr(v) if math.isfinite(v) else str(v)
    if isinstance(v, np.integer):
        return int(v)
    return v


def write_csv(path: Path, rows: Sequence[Mapping[str, Any]], columns: Sequence[str] | None = None) -> Path:
    """Write ``rows`` (dicts) as CSV, atomically.

    Columns are ``columns`` or the union of the rows' keys in first-seen order; missing cells are
    empty.  Floats are written at full precision (``repr``), booleans as ``true``/``false``.
    """
    cols: list[str] = list(columns) if columns is not None else []
    if columns is None:
        for r in rows:
            cols.extend(k for k in r if k not in cols)
    buf = io.StringIO()
    w = csv.DictWriter(buf, fieldnames=cols, extrasaction="ignore", lineterminator="\n")
    w.writeheader()
    for r in rows:
        w.writerow({k: _cell(r.get(k, "")) for k in cols})
    return write_text(Path(path), buf.getvalue())


def _jsonable(obj: Any) -> Any:
    if isinstance(obj, Mapping):
        return {str(k): _jsonable(v) for k, v in obj.items()}
    if isinstance(obj, list | tuple):
        return [_jsonable(v) for v in obj]
    if isinstance(obj, np.ndarray):
        return _jsonable(obj.tolist())
    if isinstance(obj, bool | np.bool_):
        return bool(obj)
    if isinstance(obj, np.integer):
        return int(obj)
    if isinstance(obj, float | np.floating):
        v = float(obj)
        return v if math.isfinite(v) else None
    if isinstance(obj, Path):
        return str(obj)
    return obj


def write_json(path: Path, obj: Any) -> Path:
    """Write ``obj`` as indented JSON, atomically (NumPy scalars/arrays converted, NaN/inf → null)."""
    return write_text(Path(path), json.dumps(_jsonable(obj), indent=2, allow_nan=False) + "\n")


def write_summary(out: Path, title: str, sections: Sequence[tuple[str, str]] | Mapping[str, str]) -> Path:
    """Write ``out/summary.md``: ``# title``, a line with the date and machine, then one ``## heading``
    per section with its Markdown body.  Returns the path."""
    items = list(sections.items()) if isinstance(sections, Mapping) else list(sections)
    parts = [f"# {title}", "", f"_{machine_line(machine_info())}_", ""]
    for head, body in items:
        parts += [f"## {head}", "", body.rstrip(), ""]
    return write_text(Path(out) / "summary.md", "\n".join(parts))


def new_figure(width: float = 6.0, height: float = 4.0) -> Any:
    """A fresh :class:`matplotlib.figure.Figure` (Agg canvas; nothing global is touched)."""
    from matplotlib.figure import Figure

    return Figure(figsize=(width, height))


def save_fig(fig: Any, path: Path, dpi: int = 110) -> Path:
    """Save ``fig`` as PNG atomically; closes it when it is a pyplot figure.  Returns the path."""
    buf = io.BytesIO()
    fig.savefig(buf, format="png", dpi=dpi, bbox_inches="tight")
    if "matplotlib.pyplot" in sys.modules:
        import matplotlib.pyplot as plt

        with contextlib.suppress(Exception):
            plt.close(fig)
    return _atomic_bytes(Path(path), buf.getvalue())


# --------------------------------------------------------------------------------------------------
# formatting
# --------------------------------------------------------------------------------------------------
def fmt(v: Any, digits: int = 3) -> str:
    """Compact cell text: floats to ``digits`` significant decimals, None/NaN as ``–``."""
    if v is None:
        return "–"
    if isinstance(v, bool | np.bool_):
        return "yes" if v else "no"
    if isinstance(v, float | np.floating):
        v = float(v)
        if not math.isfinite(v):
            return "–" if math.isnan(v) else str(v)
        return f"{v:.{digits}f}"
    return str(v)


def md_table(header: Sequence[str], rows: Iterable[Sequence[Any]]) -> str:
    """A Markdown table; cells go through :func:`fmt` unless they are already strings."""
    lines = ["| " + " | ".join(header) + " |", "|" + "---|" * len(header)]
    for r in rows:
        lines.append("| " + " | ".join(c if isinstance(c, str) else fmt(c) for c in r) + " |")
    return "\n".join(lines)


def mean_std(values: Iterable[float]) -> tuple[float, float]:
    """Mean and population standard deviation (``nan, nan`` for no values)."""
    v = np.asarray(list(values), dtype=np.float64)
    if v.size == 0:
        return math.nan, math.nan
    return float(v.mean()), float(v.std())


# --------------------------------------------------------------------------------------------------
# machine
# --------------------------------------------------------------------------------------------------
def machine_info() -> dict[str, Any]:
    """Date, core count, CPU model, load average, Python/NumPy/torch versions."""
    model = "unknown"
    with contextlib.suppress(OSError):
        for line in Path("/proc/cpuinfo").read_text().splitlines():
            if line.startswith("model name"):
                model = line.split(":", 1)[1].strip()
                break
    info: dict[str, Any] = {
        "date": _dt.datetime.now().astimezone().isoformat(timespec="seconds"),
        "nproc": os.cpu_count(),
        "cpu_model": model,
        "python": platform.python_version(),
        "numpy": np.__version__,
    }
    with contextlib.suppress(ImportError):
        import torch

        info["torch"] = torch.__version__
    with contextlib.suppress(OSError):
        info["loadavg"] = [round(x, 2) for x in os.getloadavg()]
    return info


def machine_line(info: Mapping[str, Any]) -> str:
    """One line for a summary: date, cores, CPU, load average."""
    load = info.get("loadavg")
    load_s = f", load average {load[0]:g}" if load else ""
    return f"{info.get('date', '?')} on {info.get('nproc', '?')} cores ({info.get('cpu_model', '?')}){load_s}"


# --------------------------------------------------------------------------------------------------
# models reused across reruns
# --------------------------------------------------------------------------------------------------
def cached_model(
    path: Path, key: Mapping[str, Any], build: Callable[[], tuple[Any, dict[str, Any]]]
) -> tuple[Any, dict[str, Any], bool]:
    """Load the model at ``path`` if it was built with the same ``key``, else ``build()`` and save it.

    ``build`` returns ``(torch module, info)``; the checkpoint (:func:`distill.export.save_checkpoint`)
    stores ``{"bench_key": key, "info": info}`` as its metadata.  Returns ``(model, info, reused)``.
    A rerun of a benchmark into the same folder therefore skips training that is already done.
    """
    from distill.export import load_model, save_checkpoint

    key = json.loads(json.dumps(_jsonable(key)))
    path = Path(path)
    if path.is_file():
        with contextlib.suppress(Exception):
            model = load_model(path)
            meta = getattr(model, "meta", {}) or {}
            if meta.get("bench_key") == key:
                return model, dict(meta.get("info") or {}), True
    model, info = build()
    save_checkpoint(model, path, meta={"bench_key": key, "info": _jsonable(info)})
    return model, info, False


def load_training_data(name: str, seed: int, train_limit: int | None, stream: int) -> Any:
    """``distill.data.load_dataset(name, seed)`` with the training set cut to ``train_limit`` examples.

    The subset is a sorted random choice drawn from ``default_rng([seed, stream])`` (each benchmark
    uses its own ``stream`` so their subsets are independent but reproducible).
    """
    import dataclasses

    import numpy as np

    from distill.data import load_dataset

    data = load_dataset(name, seed)
    if train_limit is not None and train_limit < len(data.y_train):
        idx = np.sort(np.random.default_rng([seed, stream]).permutation(len(data.y_train))[:train_limit])
        data = dataclasses.replace(data, X_train=data.X_train[idx].copy(), y_train=data.y_train[idx].copy())
    return data


def cached_teacher(
    path: Path,
    data: Any,
    data_name: str,
    arch: Sequence[int],
    adv_eps: float,
    epochs: int,
    train_limit: int | None,
    seed: int,
    progress: bool,
) -> tuple[Any, dict[str, Any], dict[str, Any]]:
    """A teacher trained by :func:`distill.train.train_teacher` (PGD-AT when ``adv_eps > 0``), cached at
    ``path`` under its settings (:func:`cached_model`).  Returns ``(model, info, key)``; ``info``
    has ``seconds``, ``test_accuracy`` and ``reused``; ``key`` identifies the teacher (students' cache
    keys extend it)."""
    from distill.train import train_teacher

    key = {
        "role": "teacher",
        "data": data_name,
        "seed": seed,
        "arch": arch,
        "adv_eps": adv_eps,
        "epochs": epochs,
        "train_limit": train_limit,
    }

    def build() -> tuple[Any, dict[str, Any]]:
        r = train_teacher(data, arch=arch, adv_eps=adv_eps, epochs=epochs, seed=seed, progress=progress)
        return r.model, {"seconds": r.seconds, "test_accuracy": r.test_accuracy}

    model, info, reused = cached_model(path, key, build)
    return model, {**info, "reused": reused}, key
