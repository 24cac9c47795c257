"""Sending queries to a Dask distributed scheduler (``--cluster tcp://HOST:PORT``).

Each query runs :func:`verifier.dispatch.verify` on a worker; the worker still isolates every solver
call in a child process with a hard time limit (see ``dispatch._allow_children`` for why a daemonic
Dask worker may start them).  Results stream back as they finish.
"""

from __future__ import annotations

from collections.abc import Callable, Iterator, Sequence
from typing import Any

from encoders.errors import BackendUnavailableError, ConfigError


def run_on_dask(
    tasks: Sequence[Any], config: Any, address: str, fn: Callable[[Any, Any], Any]
) -> Iterator[Any]:
    """Yield ``fn(task, config)`` for every task, computed on the Dask cluster at ``address``."""
    try:
        from dask.distributed import Client, as_completed
    except ImportError:
        raise BackendUnavailableError(
            "--cluster: dask[distributed] is not installed (pip install 'distillcert[cluster]')"
        ) from None
    if not address.startswith(("tcp://", "tls://", "inproc://", "ucx://")):
        raise ConfigError(f"--cluster: expected a scheduler address like tcp://HOST:PORT, got {address!r}")
    try:
        client = Client(address, timeout=10)
    except (OSError, TimeoutError) as exc:
        raise ConfigError(f"--cluster: cannot reach the Dask scheduler at {address} ({exc})") from None
    try:
        futures = [client.submit(fn, t, config, pure=False) for t in tasks]
        for fut in as_completed(futures):
            yield fut.result()
    finally:
        client.close()
