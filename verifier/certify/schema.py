"""The certificate: the ``distillcert.certificate/2`` schema, atomic writing and loading (the checker is
:mod:`verifier.certify.check`).

Schema ``distillcert.certificate/2`` (a JSON object; every path is relative to the certificate's folder)
------------------------------------------------------------------------------------------------------
``schema``           ``"distillcert.certificate/2"``
``verdict``          ``"certified"`` or ``"refused"``; ``reasons``: ``[{"code", "text"}]`` when refused
``guarantee``        ``kind``, ``teacher_radius``, ``kappa``, ``epsilon``, ``epsilon_shifted`` (ε + Λ),
                     ``eta``, ``epsilon_achieved`` (binomial), ``violations``, ``text`` (plain words)
``models``           ``teacher``/``student``: ``file``, ``sha256``, sizes
``data``             data set ``name``, ``split_seed``, ``pool`` (train/test), ``sampling``,
                     ``distribution`` (in words), ``sample_seed``, ``sample_size``, ``sample_sha256``,
                     ``indices`` (into the pool), ``n_confident``, the input domain
``parameters``       δ, κ, ε, η, norm, m, d, guarantee kind (requested and used), Λ, ``s_required``,
                     lift, radius rule, base radius ``R`` and its factor, the sample sizes of all kinds
``steps``            ``sample``, ``distill``, ``global`` (verdict, radius, time, backend), ``local``
                     (counts by verdict and by prover, CROWN throughput), ``lift`` (ρ statistics),
                     ``eq13``, ``crosscheck`` (PGD settings, number of adversarial examples)
``local_queries``    one record per teacher-confident sample: ``i`` (position in the sample), ``index``
                     (in the pool), ``label`` (teacher class), ``radius`` (student), ``rho``,
                     ``lifted_radius`` (teacher), ``verdict``, ``by`` (global / crown / a backend)
``counterexamples``  ``student_local`` (``x0``, ``x``, ``label``, ``radius``), ``student_global``
                     (``x``, ``x2``, ``radius``, ``kappa``, ``label``) and ``teacher_pgd`` witnesses,
                     each with the onnxruntime outputs ``y`` at replay time
``solvers``          backends used and their versions; ``software``: package versions
``assumptions``      the list of assumptions the guarantee rests on
``config``           the full :class:`verifier.certify.CertifyConfig`
``artifacts``        ``samples.npz`` (per-sample arrays for the report) and its SHA-256
``timestamps``, ``durations_s``   wall-clock information (the only non-reproducible fields)
"""

from __future__ import annotations

import io
import json
import platform
from importlib import metadata
from pathlib import Path
from typing import Any

import numpy as np

from encoders.errors import CertificateError, DataError
from encoders.network import file_sha256

from ..atomic import atomic_write_bytes, atomic_write_json

__all__ = [
    "CERT_NAME",
    "SAMPLES_NAME",
    "SCHEMA",
    "load_certificate",
    "software_versions",
    "write_certificate",
]

SCHEMA = "distillcert.certificate/2"
CERT_NAME = "certificate.json"
SAMPLES_NAME = "samples.npz"


def software_versions() -> dict[str, str]:
    """Versions of Python and of the packages a certificate depends on."""
    out = {"python": platform.python_version()}
    for pkg in (
        "distillcert",
        "numpy",
        "torch",
        "onnx",
        "onnxruntime",
        "scipy",
        "highspy",
        "gurobipy",
        "maraboupy",
        "z3-solver",
    ):
        try:
            out[pkg] = metadata.version(pkg)
        except metadata.PackageNotFoundError:
            continue
    return out


def write_certificate(
    cert: dict[str, Any],
    out_dir: str | Path,
    arrays: dict[str, np.ndarray] | None = None,
    report: bool = True,
) -> Path:
    """Write ``samples.npz`` (if ``arrays``), then ``certificate.json`` atomically, then the report.

    The SHA-256 of ``samples.npz`` goes into ``cert["artifacts"]`` before the certificate is written.
    """
    out = Path(out_dir)
    out.mkdir(parents=True, exist_ok=True)
    if arrays is not None:
        buf = io.BytesIO()
        np.savez_compressed(buf, **{k: np.asarray(v) for k, v in arrays.items()})
        path = atomic_write_bytes(out / SAMPLES_NAME, buf.getvalue())
        cert["artifacts"] = {"samples": {"file": SAMPLES_NAME, "sha256": file_sha256(path)}}
    target = atomic_write_json(out / CERT_NAME, cert)
    if report:
        from .report import write_report

        write_report(cert, out, arrays)
    return target


def load_certificate(path: str | Path) -> dict[str, Any]:
    """Read a certificate; ``DataError`` (exit 2) when the file is missing or not JSON,
    ``CertificateError`` when its schema is not ``distillcert.certificate/2``."""
    p = Path(path)
    if p.is_dir():
        p = p / CERT_NAME
    try:
        cert = json.loads(p.read_text())
    except FileNotFoundError:
        raise DataError(f"{p}: no such certificate file") from None
    except (OSError, UnicodeDecodeError, json.JSONDecodeError) as exc:
        raise DataError(f"{p}: not a JSON certificate ({exc})") from None
    if not isinstance(cert, dict) or cert.get("schema") != SCHEMA:
        got = cert.get("schema") if isinstance(cert, dict) else type(cert).__name__
        raise CertificateError(f"{p}: schema is {got!r}, expected {SCHEMA!r}")
    return cert
