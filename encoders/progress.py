"""Progress reporting that suits both a terminal and a log file.

On a terminal (stderr is a TTY) a stage shows a tqdm bar on stderr.  Anywhere else — a log file, a pipe,
CI — a bar would write one line per update (hundreds per run), so a stage writes exactly one line when it
ends: ``"<desc>: <n>[/<total>] <unit> in <t> s [<postfix>]"``.  stdout is never touched (``--json`` prints
exactly one JSON object there).

It lives in :mod:`encoders` (like :mod:`encoders.errors`) because that is the one package every other
package may import.
"""

from __future__ import annotations

import sys
import time
from collections.abc import Iterable, Iterator
from typing import Any, TextIO

__all__ = ["Progress", "progress"]


class Progress:
    """A progress bar on a terminal, one summary line per stage elsewhere.

    Supports the parts of tqdm's interface the project uses: iteration, ``update``, ``set_postfix``,
    ``set_description``, ``close`` and use as a context manager.

    Parameters
    ----------
    iterable
        Optional iterable to wrap.
    desc, total, unit, initial
        As in tqdm (``initial``: items already done, e.g. resumed from a journal).
    enabled
        ``False`` silences the stage entirely (no bar, no line).
    stream
        Where to write (default ``sys.stderr``); a bar is drawn only when it is a TTY.
    """

    def __init__(
        self,
        iterable: Iterable[Any] | None = None,
        *,
        desc: str = "",
        total: int | None = None,
        unit: str = "it",
        initial: int = 0,
        enabled: bool = True,
        stream: TextIO | None = None,
        **tqdm_kwargs: Any,
    ) -> None:
        self._iterable = iterable
        self.desc, self.unit, self.n = desc, unit, int(initial)
        if total is None and iterable is not None and hasattr(iterable, "__len__"):
            total = len(iterable)  # type: ignore[arg-type]
        self.total = total
        self._stream = stream if stream is not None else sys.stderr
        self._enabled = enabled
        self._postfix = ""
        self._t0 = time.perf_counter()
        self._closed = False
        self._bar = None
        if enabled and getattr(self._stream, "isatty", lambda: False)():
            from tqdm import tqdm

            kw = {"leave": False, "dynamic_ncols": True} | tqdm_kwargs
            self._bar = tqdm(
                iterable, desc=desc, total=total, unit=unit, initial=initial, file=self._stream, **kw
            )

    def __iter__(self) -> Iterator[Any]:
        if self._iterable is None:
            raise TypeError("Progress: nothing to iterate over")
        source = self._bar if self._bar is not None else self._iterable
        try:
            for item in source:
                if self._bar is None:
                    self.n += 1
                yield item
        finally:
            self.close()

    def update(self, n: int = 1) -> None:
        self.n += n
        if self._bar is not None:
            self._bar.update(n)

    def set_postfix(
        self, ordered_dict: dict[str, Any] | None = None, refresh: bool = True, **kw: Any
    ) -> None:
        items = dict(ordered_dict or {}) | kw
        self._postfix = ", ".join(f"{k}={v}" for k, v in items.items())
        if self._bar is not None:
            self._bar.set_postfix(items, refresh=refresh)

    def set_description(self, desc: str, refresh: bool = True) -> None:
        self.desc = desc
        if self._bar is not None:
            self._bar.set_description(desc, refresh=refresh)

    def close(self) -> None:
        if self._closed:
            return
        self._closed = True
        if self._bar is not None:
            self._bar.close()
        elif self._enabled:
            count = f"{self.n}/{self.total}" if self.total is not None else f"{self.n}"
            tail = f" [{self._postfix}]" if self._postfix else ""
            secs = time.perf_counter() - self._t0
            print(f"{self.desc}: {count} {self.unit} in {secs:.1f} s{tail}", file=self._stream, flush=True)

    def __enter__(self) -> Progress:
        return self

    def __exit__(self, *exc: Any) -> None:
        self.close()


def progress(iterable: Iterable[Any] | None = None, **kwargs: Any) -> Progress:
    """Shorthand for :class:`Progress` (``for x in progress(xs, desc="stage"): …``)."""
    return Progress(iterable, **kwargs)
