"""The backend protocol and the lazy registry of backends.

A backend answers one question about an :class:`encoders.program.Program`: is it feasible (or, with
an objective, what is its optimum)?  Translation to the solver's own format is private to the
backend.  Backends are imported lazily: naming one whose package is missing raises
:class:`encoders.errors.BackendUnavailableError` with a clear message, and the dispatcher can fall
back to another.
"""

from __future__ import annotations

import importlib
from typing import Any, Protocol, runtime_checkable

from encoders.errors import BackendUnavailableError, ConfigError
from encoders.program import Kind, Program

from ..results import Outcome


@runtime_checkable
class Backend(Protocol):
    """What every solver backend provides."""

    name: str
    capabilities: frozenset[Kind]

    def version(self) -> str:
        """The solver's version string (raises BackendUnavailableError if not installed)."""

    def unsupported(self, program: Program) -> list[str]:
        """Constraint kinds (and other features) of ``program`` this backend cannot encode."""

    def solve(self, program: Program, timeout: float, threads: int = 1) -> Outcome:
        """Solve ``program`` within ``timeout`` seconds (wall clock) using ``threads`` threads."""


def missing_kinds(backend: Backend, program: Program) -> list[str]:
    """Default ``unsupported``: the program's constraint kinds the backend lacks."""
    return sorted(k.value for k in program.kinds() - backend.capabilities)


#: backend name -> "module:Class" (imported only when asked for)
BACKENDS: dict[str, str] = {
    "gurobi": "verifier.backends.gurobi:GurobiBackend",
    "highs": "verifier.backends.highs:HighsBackend",
    "marabou": "verifier.backends.marabou:MarabouBackend",
    "z3": "verifier.backends.z3:Z3Backend",
}


def backend_class(name: str) -> type:
    """The class registered as ``name`` (imported on first use).

    Raises
    ------
    ConfigError
        Unknown backend name.
    BackendUnavailableError
        Its module cannot be imported (the solver package is missing).
    """
    if name not in BACKENDS:
        raise ConfigError(f"--backend: unknown backend {name!r} (choose from {', '.join(sorted(BACKENDS))})")
    modname, cls = BACKENDS[name].split(":")
    try:
        mod = importlib.import_module(modname)
    except ImportError as exc:
        raise BackendUnavailableError(
            f"--backend {name}: its solver package is not installed ({exc})"
        ) from None
    return getattr(mod, cls)


def get_backend(name: str, **params: Any) -> Backend:
    """Instantiate the backend called ``name`` with solver parameters ``params``.

    ``params`` are the backend class's keyword arguments (e.g. ``mip_gap`` or ``params`` — raw
    solver parameters — for Gurobi, ``mip_rel_gap`` or ``options`` for HiGHS).

    Raises
    ------
    ConfigError
        Unknown backend name, or a parameter the backend does not take.
    BackendUnavailableError
        Its solver package is not installed.
    """
    cls = backend_class(name)
    try:
        backend = cls(**params)
    except TypeError as exc:
        raise ConfigError(f"backend {name}: bad parameters {sorted(params)} ({exc})") from None
    backend.version()  # raises BackendUnavailableError when the package is missing
    return backend


def is_available(name: str) -> bool:
    """Whether backend ``name`` is registered and its solver package works here."""
    try:
        get_backend(name)
    except (BackendUnavailableError, ConfigError):
        return False
    return True


def solves_milp(name: str) -> bool:
    """Whether backend ``name`` is a MILP solver (class attribute ``milp``), as the ReLU-split
    search's margin programs need (linear rows, ReLUs and an optional objective)."""
    try:
        return bool(getattr(backend_class(name), "milp", False))
    except (BackendUnavailableError, ConfigError):
        return False
