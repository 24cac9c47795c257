"""The backend protocol and the lazy registry of backends.

A backend answers one question about an :class:`encoders.program.Program`: is it feasible (or, with
an objective, what is its optimum)?  Translation to the solver's own format is private to the
backend.  Backends are imported lazily: naming one whose package is missing raises
:class:`encoders.errors.BackendUnavailableError` with a clear message, and the dispatcher can fall
back to another.
"""

from __future__ import annotations

import importlib
from typing import Protocol, runtime_checkable

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


def get_backend(name: str) -> Backend:
    """Instantiate the backend called ``name``.

    Raises
    ------
    ConfigError
        Unknown backend name.
    BackendUnavailableError
        Its solver package is not installed.
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
    backend = getattr(mod, cls)()
    backend.version()  # raises BackendUnavailableError when the package is missing
    return backend
