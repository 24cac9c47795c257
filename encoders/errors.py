"""Typed exceptions for the whole of distillcert.

They live in :mod:`encoders` (the package every other one imports, and which imports none of
them) so that ``distill``, ``encoders``, ``verifier`` and ``benchmarks`` all raise from one module.

Every error that is the user's to fix derives from :class:`InputError`; the CLI turns it into one
line on stderr and exit status 2.  Messages must name the file or option at fault and say what is
wrong with it, e.g. ``"model.onnx: not an ONNX file (protobuf parse failed)"``.
"""

from __future__ import annotations


class DistillCertError(Exception):
    """Base class of every error raised on purpose by distillcert."""

    exit_code: int = 1


class InputError(DistillCertError):
    """Bad input or usage: the user can fix it.  CLI exit status 2."""

    exit_code = 2


class ModelFormatError(InputError):
    """An ONNX (or torch checkpoint) file that cannot be read or is malformed."""


class UnsupportedModelError(ModelFormatError):
    """A well-formed model that uses operators or a topology we do not support.

    ``nodes`` lists every offending ``(op_type, node_name)`` pair, not only the first.
    """

    def __init__(self, message: str, nodes: list[tuple[str, str]] | None = None):
        super().__init__(message)
        self.nodes = list(nodes or [])


class SpecError(InputError):
    """A property specification (VNN-LIB file, point file, radius, ...) that is invalid."""


class DataError(InputError):
    """A data set that is unknown, missing or malformed."""


class ConfigError(InputError):
    """An invalid option value or configuration file."""


class BackendUnavailableError(InputError):
    """A solver backend whose package is not installed or cannot run here."""


class LicenseLimitError(BackendUnavailableError):
    """A solver whose licence refuses the model (e.g. pip gurobipy over 2000 variables)."""


class UnsupportedQueryError(DistillCertError):
    """A backend was handed a program with constraint kinds it cannot encode."""


class SolverError(DistillCertError):
    """A solver failed (crashed, returned garbage) while solving a query."""


class CertificateError(DistillCertError):
    """A certificate failed a check (hash mismatch, replay failure, ...)."""
