"""The one solve path: every solver call of distillcert goes through :func:`solve`.

:func:`solve` takes a backend name (or several, for a portfolio race), the program, the wall-clock
limit and the backend's parameters (passed to :func:`~verifier.backends.base.get_backend`), and runs
the solver in a forked *child process*:

* the child builds the backend, solves, and sends the :class:`~verifier.results.Outcome` back through
  a pipe; a licence refusal or any exception becomes an ERROR outcome (the licence case is marked
  ``stats["licence_limit"] = True`` so that callers can fall back to another backend);
* the parent waits at most ``timeout + grace`` seconds; a child still running then is killed
  (SIGKILL) and the outcome is TIMEOUT.  A solver that ignores its own time limit, hangs in native
  code or crashes therefore costs at most ``timeout + grace`` seconds and never the run;
* a portfolio starts one child per backend; the first SAT/UNSAT/OPTIMAL answer wins and the other
  children are killed;
* :class:`SolveGroup` is the asynchronous form (children started in the background, polled or waited
  for, each with the same hard limit, all killed when the group's ``with`` block ends); the blocking
  :func:`solve_isolated` and the portfolio are built on it.

The child's stdout is redirected to its stderr (file descriptor 1 → 2) before the backend is built,
so that no solver banner or log line (HiGHS prints one when it is first used) can reach the
parent's stdout, which the CLI's ``--json`` reserves for exactly one JSON object.

``in_process=True`` solves in the calling process instead (no hard kill; stdout is redirected the
same way for the duration of the call).  It exists for callers that cannot fork; the dispatcher uses
it only when asked to (``DispatchConfig.in_process``).
"""

from __future__ import annotations

import contextlib
import multiprocessing as mp
import os
import signal
import sys
import time
from collections.abc import Iterator, Mapping, Sequence
from dataclasses import replace
from multiprocessing.connection import wait as mp_wait
from typing import Any

from encoders.errors import BackendUnavailableError, LicenseLimitError
from encoders.program import Program

from ..results import Outcome, SolveStatus
from .base import get_backend, is_available, solves_milp

__all__ = [
    "solve",
    "solve_isolated",
    "solve_portfolio",
    "SolveGroup",
    "SolveJob",
    "choose_backend",
    "fits_gurobi_licence",
    "DEFAULT_GRACE",
]

#: seconds a child may overrun its time limit before it is killed
DEFAULT_GRACE = 1.0

_DEFINITE = (SolveStatus.SAT, SolveStatus.UNSAT, SolveStatus.OPTIMAL)


@contextlib.contextmanager
def stdout_to_stderr() -> Iterator[None]:
    """Redirect file descriptor 1 (and ``sys.stdout``) to stderr for the duration of the block.

    Native solver libraries write to the file descriptor directly, so redirecting ``sys.stdout``
    alone would not silence them.
    """
    with contextlib.suppress(Exception):
        sys.stdout.flush()
    saved = os.dup(1)
    try:
        os.dup2(2, 1)
        with contextlib.redirect_stdout(sys.stderr):
            yield
    finally:
        with contextlib.suppress(Exception):
            sys.stdout.flush()
        os.dup2(saved, 1)
        os.close(saved)


def _run_backend(
    backend_name: str, program: Program, timeout: float, threads: int, params: Mapping[str, Any]
) -> Outcome:
    """Build the backend and solve; typed failures become ERROR outcomes."""
    started = time.perf_counter()
    try:
        return get_backend(backend_name, **params).solve(program, timeout, threads)
    except LicenseLimitError as exc:
        return Outcome(
            SolveStatus.ERROR,
            backend_name,
            time.perf_counter() - started,
            message=f"licence: {exc}",
            stats={"licence_limit": True},
        )


def _child(
    conn: Any, backend_name: str, program: Program, timeout: float, threads: int, params: Mapping[str, Any]
) -> None:
    signal.pthread_sigmask(signal.SIG_UNBLOCK, _DEFERRED)  # blocked by the parent around the fork
    os.environ.setdefault("OMP_NUM_THREADS", str(threads))
    with contextlib.suppress(Exception):
        os.dup2(2, 1)  # this process's stdout is the parent's: solver banners go to stderr instead
    try:
        out = _run_backend(backend_name, program, timeout, threads, params)
    except BaseException as exc:  # report, never hang the parent
        out = Outcome(SolveStatus.ERROR, backend_name, 0.0, message=f"{type(exc).__name__}: {exc}")
    with contextlib.suppress(Exception):
        conn.send(out)
    conn.close()


@contextlib.contextmanager
def _allow_children() -> Iterator[None]:
    """Let a daemonic process (a Dask or pool worker) start solver children.

    ``multiprocessing`` refuses children of daemonic processes because they could be orphaned when
    the daemon is terminated; our children are always joined or killed by the parent before it
    returns, so lifting the flag for the duration of a start is safe.
    """
    cfg = mp.current_process()._config  # type: ignore[attr-defined]
    was = cfg.get("daemon", False)
    cfg["daemon"] = False
    try:
        yield
    finally:
        cfg["daemon"] = was


#: signals held back while a child is started (:func:`_signals_deferred`)
_DEFERRED = frozenset({signal.SIGINT, signal.SIGTERM})


@contextlib.contextmanager
def _signals_deferred() -> Iterator[None]:
    """Hold SIGINT and SIGTERM back (in this thread) for the duration of the block.

    A Ctrl-C that arrives between the fork of a solver child and the caller's ``try``/``finally``
    that kills it would otherwise orphan the child (it keeps running, and keeps the parent's stdout
    and stderr open).  Blocked, the signal stays pending and is delivered as soon as the block ends —
    by then the child is in the caller's hands and its ``finally`` kills it.  The child unblocks them
    first thing (:func:`_child`).
    """
    old = signal.pthread_sigmask(signal.SIG_BLOCK, _DEFERRED)
    try:
        yield
    finally:
        signal.pthread_sigmask(signal.SIG_SETMASK, old)


def _start(
    backend_name: str, program: Program, timeout: float, threads: int, params: Mapping[str, Any]
) -> tuple[Any, Any]:
    """Fork a solver child; call under :func:`_signals_deferred` with the result stored before the
    block ends."""
    ctx = mp.get_context("fork")
    recv, send = ctx.Pipe(duplex=False)
    with _allow_children():
        proc = ctx.Process(
            target=_child, args=(send, backend_name, program, timeout, threads, dict(params)), daemon=True
        )
        proc.start()
    send.close()
    return proc, recv


def _finish(proc: Any, recv: Any, backend_name: str, started: float) -> Outcome:
    try:
        out = recv.recv()
    except (EOFError, OSError):
        proc.join(1.0)
        code = proc.exitcode
        why = f"killed by signal {-code}" if code is not None and code < 0 else f"exit code {code}"
        return Outcome(
            SolveStatus.ERROR,
            backend_name,
            time.perf_counter() - started,
            message=f"solver process died ({why})",
        )
    proc.join(5.0)
    return replace(out, time_s=time.perf_counter() - started)


def _kill(proc: Any) -> None:
    if proc.is_alive():
        with contextlib.suppress(Exception):
            os.kill(proc.pid, signal.SIGKILL)
    proc.join(2.0)


class SolveJob:
    """One solver child started by :meth:`SolveGroup.start` (read ``outcome`` once it is done).

    Attributes
    ----------
    backend, timeout
        What it solves with, and the limit it was given.
    tag
        The caller's label (e.g. the alternative or pair it decides).
    started, hard_deadline
        ``time.perf_counter()`` at the start, and when the child is killed (``timeout + grace`` later).
    outcome
        ``None`` while the child runs; then its :class:`~verifier.results.Outcome` (TIMEOUT when it
        was killed at the hard limit, ERROR when it died).
    """

    def __init__(
        self, backend: str, timeout: float, tag: Any, grace: float, proc: Any, recv: Any, started: float
    ) -> None:
        self.backend, self.timeout, self.tag = backend, timeout, tag
        self.started = started
        self.hard_deadline = started + max(0.0, timeout) + grace
        self.outcome: Outcome | None = None
        self._proc, self._recv = proc, recv

    def _collect(self) -> None:
        """Record the child's answer if it has one, or kill it at the hard limit."""
        if self.outcome is not None:
            return
        if self._recv.poll(0):
            self.outcome = _finish(self._proc, self._recv, self.backend, self.started)
            _kill(self._proc)
        elif time.perf_counter() >= self.hard_deadline:
            self.kill()
            self.outcome = Outcome(
                SolveStatus.TIMEOUT,
                self.backend,
                time.perf_counter() - self.started,
                message=f"hard time limit of {self.timeout:.1f}s reached",
            )

    def kill(self) -> None:
        """Stop the child now (its outcome stays ``None`` unless it had already answered)."""
        _kill(self._proc)


class SolveGroup:
    """Solver children running in the background, all killed when the group's block ends.

    The asynchronous form of :func:`solve`, for callers that keep working while a solver runs (the
    ReLU-split search bounds sub-domains in this process while Gurobi proves another alternative in
    a child)::

        with SolveGroup() as group:
            job = group.start("gurobi", program, timeout=30.0)
            ...                        # other work
            for job in group.wait(until=time.perf_counter() + 1.0):
                use(job.outcome)

    Every child has the same hard limit as :func:`solve_isolated` (killed ``grace`` seconds after
    its own ``timeout``), and none outlives the ``with`` block: a child is registered in the group
    while SIGINT/SIGTERM are held back (:func:`_signals_deferred`), so an interrupt cannot land
    between its fork and its registration.
    """

    def __init__(self, grace: float = DEFAULT_GRACE) -> None:
        self.grace = grace
        self.jobs: list[SolveJob] = []

    def __enter__(self) -> SolveGroup:
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()

    def close(self) -> None:
        """Kill every child still running."""
        for job in self.jobs:
            if job.outcome is None:
                job.kill()

    def start(
        self,
        backend: str,
        program: Program,
        timeout: float,
        threads: int = 1,
        *,
        params: Mapping[str, Any] | None = None,
        tag: Any = None,
    ) -> SolveJob:
        """Fork a child that solves ``program`` with ``backend`` (parameters as in :func:`solve`)."""
        started = time.perf_counter()
        with _signals_deferred():
            proc, recv = _start(backend, program, timeout, threads, params or {})
            job = SolveJob(backend, timeout, tag, self.grace, proc, recv, started)
            self.jobs.append(job)
        return job

    @property
    def running(self) -> list[SolveJob]:
        """The jobs without an outcome yet (checked now: answered or overdue children are collected)."""
        for job in self.jobs:
            job._collect()
        return [job for job in self.jobs if job.outcome is None]

    def cancel(self, job: SolveJob) -> None:
        """Kill ``job``'s child (if still running) and forget it."""
        if job.outcome is None:
            job.kill()
        with contextlib.suppress(ValueError):
            self.jobs.remove(job)

    def wait(self, until: float | None = None) -> list[SolveJob]:
        """Block until some job has an outcome or ``until`` (``time.perf_counter()``) passes; return
        the finished jobs and forget them (each is returned once)."""
        while True:
            live = self.running
            done = [job for job in self.jobs if job.outcome is not None]
            if done or not live:
                self.jobs = live
                return done
            now = time.perf_counter()
            stop = min(job.hard_deadline for job in live)
            if until is not None:
                stop = min(stop, until)
            if until is not None and now >= until:
                return []
            mp_wait([job._recv for job in live], timeout=max(0.0, stop - now))


def solve_isolated(
    backend_name: str,
    program: Program,
    timeout: float,
    threads: int = 1,
    grace: float = DEFAULT_GRACE,
    params: Mapping[str, Any] | None = None,
) -> Outcome:
    """Solve in a child process; a child still running at ``timeout + grace`` is killed → TIMEOUT."""
    with SolveGroup(grace) as group:
        job = group.start(backend_name, program, timeout, threads, params=params)
        while job.outcome is None:
            group.wait()
    return job.outcome


def solve_portfolio(
    backends: Sequence[str],
    program: Program,
    timeout: float,
    threads: int = 1,
    grace: float = DEFAULT_GRACE,
    params: Mapping[str, Mapping[str, Any]] | None = None,
) -> Outcome:
    """Race ``backends`` (``params``: per backend name); the first SAT/UNSAT/OPTIMAL answer wins and
    the others are killed."""
    started = time.perf_counter()
    outs: list[Outcome] = []  # the answers that were not definite
    with SolveGroup(grace) as group:
        for b in backends:
            group.start(b, program, timeout, threads, params=(params or {}).get(b, {}))
        while group.jobs:
            for job in group.wait():
                out = job.outcome
                assert out is not None
                if out.status in _DEFINITE:
                    return replace(
                        out,
                        time_s=time.perf_counter() - started,
                        message=(out.message + f" (portfolio winner of {', '.join(backends)})").strip(),
                    )
                outs.append(out)
    if outs and all(out.status is SolveStatus.ERROR for out in outs):
        return outs[-1]
    return Outcome(
        SolveStatus.TIMEOUT,
        "portfolio",
        time.perf_counter() - started,
        message=outs[-1].message if outs else "no backend answered in time",
    )


def solve(
    backend: str | Sequence[str],
    program: Program,
    timeout: float,
    threads: int = 1,
    *,
    params: Mapping[str, Any] | None = None,
    in_process: bool = False,
    grace: float = DEFAULT_GRACE,
) -> Outcome:
    """Solve ``program`` with ``backend`` (a name, or a sequence of names to race) within ``timeout``
    seconds of wall clock, hard-enforced (module docstring).

    Parameters
    ----------
    backend
        A registered backend name, or several for a portfolio race.
    params
        Keyword parameters of the backend (:func:`~verifier.backends.base.get_backend`); for a
        portfolio, a mapping from backend name to its parameters.
    in_process
        Solve in this process (no hard kill); only for callers that cannot fork.
    grace
        Seconds a child may overrun ``timeout`` before it is killed.
    """
    if not isinstance(backend, str):
        return solve_portfolio(list(backend), program, timeout, threads, grace, params)
    if in_process:
        with stdout_to_stderr():
            return _run_backend(backend, program, timeout, threads, params or {})
    return solve_isolated(backend, program, timeout, threads, grace, params)


# --------------------------------------------------------------------------------------------------
# the one backend chooser
# --------------------------------------------------------------------------------------------------
def fits_gurobi_licence(program: Program) -> bool:
    """Whether Gurobi's licence on this machine accepts the compiled model (exact count)."""
    from .gurobi import fits_licence

    return fits_licence(program)


def choose_backend(want: str, program: Program, milp_only: bool = False) -> str | None:
    """The backend that solves ``program`` for the configured choice ``want`` (``--backend``).

    ``auto`` (and ``portfolio`` where one backend must be picked, as in the ReLU-split search's
    margin MILPs): Gurobi when it is installed and the model fits its licence, else HiGHS.  A named
    backend is itself, except that with ``milp_only`` (the margin MILPs of
    :mod:`verifier.search.relu_split`) a backend that is not a MILP solver
    (:func:`~verifier.backends.base.solves_milp`), and Gurobi with a model over its licence, give
    ``None``: the caller then takes its general path.
    """
    if want in ("auto", "portfolio"):
        try:
            if is_available("gurobi") and fits_gurobi_licence(program):
                return "gurobi"
        except BackendUnavailableError:
            pass
        return "highs"
    if milp_only:
        if not solves_milp(want):
            return None
        if want == "gurobi" and not fits_gurobi_licence(program):
            return None
    return want
