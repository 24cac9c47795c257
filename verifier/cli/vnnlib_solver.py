"""``distillcert-vnnlib``: the VNN-LIB 2.0 solver command line (standard, chapter 5).

::

    distillcert-vnnlib --name | --version
    distillcert-vnnlib verify QUERY --network NAME=FILE [--network ...] [--timeout S] [--backend B]
    distillcert-vnnlib supports --onnx-operators | --vnnlib-versions | ...   (every chapter-5 capability)

``verify`` prints one result line on stdout — ``sat``, ``unsat``, ``unknown`` or ``timed-out`` — and,
for ``sat``, the §5.3.1 assignment block (every declared tensor, in declaration order: ``NAME TYPE
[dims]`` then its elements row-major, one per line), the assignment having been replayed on
onnxruntime first (:mod:`verifier.vnnlib2_query`).  Nothing else is written on stdout: solver banners
and logs go to stderr (file descriptor 1 is pointed at stderr while solving).  A query or network that
cannot be read or encoded gives one line on stderr and exit status 2.

``supports --onnx-operators`` lists :data:`encoders.network.SUPPORTED_OPS`, the table the ONNX
importer (and ``distillcert info``) dispatches on.
"""

from __future__ import annotations

import argparse
import contextlib
import os
import sys
import time
from collections.abc import Callable, Iterator, Sequence

from encoders.errors import DistillCertError, InputError

NAME = "distillcert"

#: Theories and flags (standard §5.4); see docs/vnnlib.md for what each answer means.
_CAPABILITIES: dict[str, Callable[[], list[str]]] = {}


def _version() -> str:
    from importlib import metadata

    try:
        return metadata.version("distillcert")
    except metadata.PackageNotFoundError:  # running from a source tree
        return "0.1.0"


def _ops() -> list[str]:
    """The ops of the importer's table (:data:`encoders.network.SUPPORTED_OPS`) that it accepts in *every*
    use (``OpSupport.complete``), one per line, each followed by the element types it is limited to (none
    listed: every type of ``--onnx-element-types``), as the standard's format has it.

    Mul, Div, Cast and Where are accepted by ``distillcert info`` only in their linear uses (a constant
    operand, a cast to float32/float64, a constant condition).  Claiming them would promise an answer on
    conformant queries that use them otherwise (``x * x``, a data-dependent condition), which the importer
    refuses; so they are not listed, and the table's ``limits`` say where ``info`` accepts them.
    """
    from encoders.network import OP_ELEMENT_TYPES, SUPPORTED_OPS

    complete = [op for op, sup in SUPPORTED_OPS.items() if sup.complete]
    return [" ".join((op, *OP_ELEMENT_TYPES.get(op, ()))) for op in complete]


_CAPABILITIES.update(
    {
        # ONNX
        "onnx-opset-versions": lambda: ["7", "21"],
        # The encoders reason over the reals; float witnesses are replayed in float32 on onnxruntime, but
        # an unsat answer is not a claim about float32 rounding: only "real" is claimed.
        "onnx-element-types": lambda: ["real"],
        "onnx-operators": _ops,
        "onnx-operators-unsat-proofs": lambda: [],
        # VNN-LIB queries
        "vnnlib-versions": lambda: ["2.0", "2.0"],
        "hidden-node-theories": lambda: ["H"],
        "multiple-input-output-theories": lambda: ["SIO"],
        "multiple-network-theories": lambda: ["SNET", "MNET", "MENET"],
        "multiple-node-comparison-theories": lambda: ["MNC"],
        "arithmetic-complexity-theories": lambda: ["BND", "OUTC", "LIN"],
        "optimised-disjunctive-reasoning": lambda: ["false"],
        # outputs
        "serialise-assignments": lambda: ["false"],
        "unsat-proofs": lambda: ["false"],
    }
)
# accepted spellings used by the older drafts of chapter 5
_ALIASES = {"multiple-inputs-output-theories": "multiple-input-output-theories"}


class _Parser(argparse.ArgumentParser):
    def error(self, message: str) -> None:  # type: ignore[override]
        sys.stderr.write(f"distillcert-vnnlib: error: {message}\n")
        raise SystemExit(2)


def build_parser() -> argparse.ArgumentParser:
    p = _Parser(prog="distillcert-vnnlib", description="VNN-LIB 2.0 solver interface of distillcert")
    p.add_argument("--name", action="store_true", help="print the solver's name")
    p.add_argument("--version", action="store_true", help="print the solver's version")
    sub = p.add_subparsers(dest="command", parser_class=_Parser)
    v = sub.add_parser("verify", help="answer a VNN-LIB query: sat / unsat / unknown / timed-out")
    v.add_argument("query", help="the .vnnlib query (VNN-LIB 2.0, or the 2021 dialect)")
    v.add_argument(
        "--network",
        action="append",
        default=[],
        metavar="NAME=FILE",
        help="ONNX file of a declared network (once per network not marked equal-to)",
    )
    v.add_argument("--timeout", type=float, default=300.0, help="seconds (default 300)")
    v.add_argument("--backend", default="auto", help="solver backend (default auto)")
    v.add_argument(
        "--serialise-assignments",
        metavar="DIR",
        default=None,
        help="not supported (capability false): refused",
    )
    v.add_argument("--unsat-proofs", metavar="FILE", default=None, help="not supported: refused")
    s = sub.add_parser("supports", help="report a capability (chapter 5.4)")
    g = s.add_mutually_exclusive_group(required=True)
    for cap in [*_CAPABILITIES, *_ALIASES]:
        g.add_argument(f"--{cap}", dest="capability", action="store_const", const=_ALIASES.get(cap, cap))
    return p


@contextlib.contextmanager
def _stdout_to_stderr() -> Iterator[None]:
    """Point file descriptor 1 at stderr (solver banners, child processes) and restore it after."""
    sys.stdout.flush()
    saved = os.dup(1)
    try:
        os.dup2(2, 1)
        yield
    finally:
        sys.stdout.flush()
        os.dup2(saved, 1)
        os.close(saved)


def _parse_networks(items: Sequence[str]) -> dict[str, str]:
    out: dict[str, str] = {}
    for it in items:
        name, sep, path = it.partition("=")
        if not sep or not name or not path:
            raise InputError(f"--network {it!r}: expected NAME=FILE")
        if name in out:
            raise InputError(f"--network {name}: given twice")
        out[name] = path
    return out


def cmd_verify(args: argparse.Namespace) -> list[str]:
    if args.serialise_assignments is not None:
        raise InputError("--serialise-assignments: not supported (supports --serialise-assignments is false)")
    if args.unsat_proofs is not None:
        raise InputError("--unsat-proofs: not supported (supports --unsat-proofs is false)")
    if not args.timeout > 0:
        raise InputError(f"--timeout: must be positive, got {args.timeout}")
    t0 = time.perf_counter()
    files = _parse_networks(args.network)
    from verifier.dispatch import DispatchConfig
    from verifier.vnnlib2_query import format_assignment, solve_query

    # budget: the caller's clock started before this process did; keep a margin for start-up and exit
    budget = max(0.5, 0.85 * args.timeout - (time.perf_counter() - t0) - 1.0)
    with _stdout_to_stderr():
        ans = solve_query(args.query, files, budget, DispatchConfig(backend=args.backend))
    sys.stderr.write(
        f"distillcert-vnnlib: {ans.status} via {ans.engine or '-'} in {ans.time_s:.2f}s"
        f"{': ' + ans.message if ans.message else ''}\n"
    )
    lines = [ans.status]
    if ans.status == "sat" and ans.assignment is not None and ans.query is not None:
        lines += format_assignment(ans.query, ans.assignment)
    return lines


def main(argv: Sequence[str] | None = None) -> int:
    os.environ.setdefault("OMP_NUM_THREADS", "1")
    args = build_parser().parse_args(argv)
    try:
        if args.name:
            print("distillcert (distill-and-certify neural network verifier)")
            return 0
        if args.version:
            print(_version())
            return 0
        if args.command == "supports":
            lines = _CAPABILITIES[args.capability]()
        elif args.command == "verify":
            lines = cmd_verify(args)
        else:
            build_parser().print_usage(sys.stderr)
            return 2
    except InputError as exc:
        sys.stderr.write(f"distillcert-vnnlib: {' '.join(str(exc).split())}\n")
        return 2
    except DistillCertError as exc:
        sys.stderr.write(f"distillcert-vnnlib: error: {' '.join(str(exc).split())}\n")
        return 1
    sys.stdout.write("".join(f"{ln}\n" for ln in lines))
    sys.stdout.flush()
    return 0


if __name__ == "__main__":  # pragma: no cover
    raise SystemExit(main())
