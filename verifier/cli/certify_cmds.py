"""CLI: ``distillcert certify``, ``distillcert check`` and ``distillcert run`` (see :mod:`verifier.certify`,
:mod:`verifier.certify.check`, :mod:`verifier.certify.run`)."""

from __future__ import annotations

import argparse
import sys
from pathlib import Path
from typing import Any

from encoders.errors import CertificateError, ConfigError

from ..certify.config import GUARANTEE_KINDS, LIFTS, SAMPLINGS

__all__ = ["register_certify"]

#: CLI flag (dest) -> CertifyConfig field, for the flags both ``certify`` and ``run`` accept.
_OVERRIDES: dict[str, str] = {
    "data": "data",
    "delta": "delta",
    "kappa": "kappa",
    "epsilon": "epsilon",
    "eta": "eta",
    "norm": "norm",
    "guarantee": "guarantee",
    "tv_shift": "tv_shift",
    "method": "method",
    "student_arch": "student_arch",
    "epochs": "epochs",
    "seed": "seed",
    "backend": "backend",
    "global_timeout": "global_timeout",
    "local_timeout": "local_timeout",
    "local_budget": "local_budget",
    "jobs": "jobs",
    "lift": "lift",
    "sampling": "sampling",
    "samples": "samples",
    "lift_tolerance": "lift_tolerance",
    "eq13_hinge": "eq13_hinge",
    "eq13_rounds": "eq13_rounds",
    "audit_budget": "audit_budget",
}


def _add_overrides(p: argparse.ArgumentParser) -> None:
    p.add_argument("--config", help="TOML file with CertifyConfig keys (flags below override it)")
    p.add_argument("--out", help="output folder")
    p.add_argument("--data", help="data set (digits, mnist5k, gaussians2d, idx:PATH, csv:PATH, npz:PATH)")
    p.add_argument("--delta", type=float, help="robustness radius delta > 0")
    p.add_argument("--kappa", type=float, help="confidence threshold in (0, 1)")
    p.add_argument("--epsilon", type=float, help="PAC epsilon in (0, 1/2]")
    p.add_argument("--eta", type=float, help="PAC failure probability in (0, 1/2]")
    p.add_argument("--norm", help="inf or 2")
    p.add_argument("--guarantee", help=f"one of {', '.join(GUARANTEE_KINDS)}")
    p.add_argument("--tv-shift", type=float, dest="tv_shift", help="total-variation shift Lambda (Obs. 4.5)")
    p.add_argument("--method", help="distillation method (default kdiga)")
    p.add_argument("--student-arch", dest="student_arch", help="student widths, e.g. 64-32-32-10")
    p.add_argument("--epochs", type=int, help="distillation epochs")
    p.add_argument("--seed", type=int, help="sample / distillation / attack seed")
    p.add_argument("--backend", help="solver backend (auto, gurobi, highs, marabou, z3, portfolio)")
    p.add_argument("--global-timeout", type=float, dest="global_timeout", help="seconds for the global query")
    p.add_argument("--local-timeout", type=float, dest="local_timeout", help="seconds per local solver query")
    p.add_argument(
        "--local-budget", type=float, dest="local_budget", help="seconds for all local solver queries"
    )
    p.add_argument("--jobs", type=int, help="parallel solver processes")
    p.add_argument("--lift", help=f"one of {', '.join(LIFTS)}")
    p.add_argument("--sampling", help=f"one of {', '.join(SAMPLINGS)}")
    p.add_argument("--samples", type=int, help="sample size (at least the guarantee's minimum)")
    p.add_argument(
        "--lift-tolerance",
        type=float,
        dest="lift_tolerance",
        help="refuse where the lift exceeds the margin-corrected prop43m lift by more than this factor - 1",
    )
    p.add_argument("--eq13-hinge", type=float, dest="eq13_hinge", help="weight of the Eq. 13 hinge (0: off)")
    p.add_argument("--eq13-rounds", type=int, dest="eq13_rounds", help="Eq. 13 distillation rounds")
    p.add_argument(
        "--audit-budget", type=float, dest="audit_budget", help="seconds for the lift audit on the teacher"
    )
    p.add_argument("--quiet", action="store_true", help="no progress output on stderr")


def _single_thread_torch() -> None:
    """One intra-op thread for torch in this process: the networks here are small MLPs, for which a second
    thread only adds synchronisation (measured ~10x slower PGD-AT epochs on a loaded 2-core machine);
    solver processes and ``--jobs`` provide the parallelism."""
    import torch

    torch.set_num_threads(1)


def _overrides(args: argparse.Namespace) -> dict[str, Any]:
    return {
        field: getattr(args, dest)
        for dest, field in _OVERRIDES.items()
        if getattr(args, dest, None) is not None
    }


def _cmd_run(args: argparse.Namespace) -> dict[str, Any]:
    from ..certify.run import load_run_config, run, summary_text

    over = _overrides(args)
    if getattr(args, "teacher", None):
        over["teacher"] = args.teacher
    config = load_run_config(args.config, over)
    out = Path(args.out or "distillcert-run")
    _single_thread_torch()
    cert = run(config, out, progress=not args.quiet)
    return _result(cert, out, summary_text)


def _cmd_certify(args: argparse.Namespace) -> dict[str, Any]:
    from ..certify.pipeline import certify
    from ..certify.run import load_run_config, summary_text

    over = _overrides(args)
    over["teacher"] = args.teacher
    config = load_run_config(args.config, over)
    out = Path(args.out or "distillcert-certificate")
    _single_thread_torch()
    cert = certify(Path(args.teacher), config, out, progress=not args.quiet)
    return _result(cert, out, summary_text)


def _result(cert: dict[str, Any], out: Path, summary: Any) -> dict[str, Any]:
    return {
        "verdict": cert["verdict"],
        "reasons": cert["reasons"],
        "guarantee": cert["guarantee"],
        "certificate": str(out / "certificate.json"),
        "report": str(out / "report.md"),
        "durations_s": cert.get("durations_s", {}),
        "text": summary(cert, out),
    }


def _cmd_check(args: argparse.Namespace) -> dict[str, Any]:
    from ..certify.check import check_certificate

    if args.recheck < 0:
        raise ConfigError(f"--recheck must be >= 0, got {args.recheck}")
    res = check_certificate(
        args.certificate, recheck=args.recheck, seed=args.seed, timeout=args.timeout, backend=args.backend
    )
    if not res["ok"]:
        sys.stderr.write(res["text"] + "\n")
        raise CertificateError(
            f"{res['certificate']}: {len(res['failures'])} check(s) failed: " + "; ".join(res["failures"])
        )
    return res


def register_certify(sub: Any) -> None:
    """Add the ``run``, ``certify`` and ``check`` subcommands to ``sub``."""
    pr = sub.add_parser(
        "run",
        help="the main job: teacher, student, verification, certificate and report",
        description="Run the whole pipeline (defaults: digits, PGD-AT teacher, KDIGA student, "
        "delta=0.02 L-inf, kappa=0.9, epsilon=eta=0.01, the guarantee kind with the "
        "smallest sample size). Everything lands in --out; a rerun resumes.",
    )
    _add_overrides(pr)
    pr.add_argument("--teacher", help="use this teacher (ONNX or .pt) instead of training one")
    pr.set_defaults(func=_cmd_run)

    pc = sub.add_parser(
        "certify",
        help="certify a given teacher (Algorithm 1): certificate and report",
        description="Sample, distil, verify the student, lift to the teacher, cross-check with "
        "PGD, and write certificate.json and report.md into --out.",
    )
    pc.add_argument(
        "--teacher",
        required=True,
        help="teacher model: any ONNX graph onnxruntime runs, a TorchScript file or a distillcert .pt",
    )
    _add_overrides(pc)
    pc.set_defaults(func=_cmd_certify)

    pk = sub.add_parser(
        "check",
        help="re-check a certificate (hashes, sample, counterexamples, queries)",
        description="Re-hash the models, recompute the sample size and the sample, replay every "
        "counterexample on onnxruntime and re-run a sample of the local queries. "
        "Exit status 1 on any mismatch.",
    )
    pk.add_argument("certificate", help="certificate.json (or its folder)")
    pk.add_argument("--recheck", type=int, default=20, help="local queries to re-run (default 20)")
    pk.add_argument("--seed", type=int, default=0, help="seed choosing the re-run queries")
    pk.add_argument("--timeout", type=float, help="seconds per re-run solver query")
    pk.add_argument("--backend", help="backend for the re-run (default: the certificate's)")
    pk.set_defaults(func=_cmd_check)
