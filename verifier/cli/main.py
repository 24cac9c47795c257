"""The ``distillcert`` command line.

Conventions (every subcommand)
------------------------------
* ``--json`` prints exactly one JSON object on stdout; logs and progress bars go to stderr.
* Exit status 0 when the command completed (whatever a verdict says), 2 for bad input or usage
  (one line on stderr naming the file or option and the problem, no traceback), 1 for an internal
  error.

Subcommands are registered from the packages that own them through a lookup table of
``register(subparsers)`` functions; each handler takes the parsed ``argparse.Namespace`` and returns
a JSON-serialisable ``dict`` (its ``"text"`` entry, if present, is the human-readable rendering).
``bench`` is contributed by :mod:`benchmarks` through the ``distillcert.commands`` entry-point group,
so that this package never imports :mod:`benchmarks`.
"""

from __future__ import annotations

import argparse
import importlib
import json
import math
import sys
from collections.abc import Callable, Sequence
from importlib import metadata
from typing import Any

import numpy as np

from encoders.errors import DistillCertError, InputError

# module path -> names of subcommands it registers (for --help ordering and lazy imports)
_REGISTRARS: tuple[str, ...] = (
    "verifier.cli.verify_cmds",  # run, verify, pac, certify, check, vnncomp, info
    "distill.commands",  # train-teacher, distill, export, diagnose
)


class _Parser(argparse.ArgumentParser):
    """argparse that reports usage errors as one line and exit status 2."""

    def error(self, message: str) -> None:  # type: ignore[override]
        sys.stderr.write(f"distillcert {self.prog.split(' ', 1)[-1]}: error: {message}\n")
        raise SystemExit(2)


def _jsonable(obj: Any) -> Any:
    if isinstance(obj, dict):
        return {str(k): _jsonable(v) for k, v in obj.items()}
    if isinstance(obj, list | tuple):
        return [_jsonable(v) for v in obj]
    if isinstance(obj, np.ndarray):
        return _jsonable(obj.tolist())
    if isinstance(obj, np.generic):
        return _jsonable(obj.item())
    if isinstance(obj, float) and not math.isfinite(obj):
        return None if math.isnan(obj) else (1e308 if obj > 0 else -1e308)
    if hasattr(obj, "value") and hasattr(obj, "name") and not isinstance(obj, type):  # enums
        return obj.value
    return obj


def build_parser() -> argparse.ArgumentParser:
    parser = _Parser(prog="distillcert", description=__doc__.split("\n\n")[0])
    sub = parser.add_subparsers(dest="command", metavar="COMMAND", parser_class=_Parser)
    for modname in _REGISTRARS:
        try:
            mod = importlib.import_module(modname)
        except ImportError as exc:
            sys.stderr.write(f"distillcert: internal error: cannot load {modname} ({exc})\n")
            raise SystemExit(1) from None
        mod.register(sub)
    for ep in metadata.entry_points(group="distillcert.commands"):
        try:
            ep.load()(sub)
        except ImportError as exc:  # an optional plugin that cannot load must not break the CLI
            sys.stderr.write(f"distillcert: warning: command plugin {ep.name!r} unavailable ({exc})\n")
    _add_json(parser)
    return parser


def _add_json(parser: argparse.ArgumentParser, top: bool = True) -> None:
    """Give every (nested) subcommand a ``--json`` flag."""
    for action in parser._actions:
        if isinstance(action, argparse._SubParsersAction):
            for p in action.choices.values():
                if not any("--json" in a.option_strings for a in p._actions):
                    p.add_argument("--json", action="store_true", help="print one JSON object on stdout")
                _add_json(p, top=False)


def _render(result: dict[str, Any]) -> str:
    if "text" in result:
        return str(result["text"])
    lines = []
    for k, v in result.items():
        if isinstance(v, dict | list) and len(json.dumps(_jsonable(v))) > 100:
            v = json.dumps(_jsonable(v), indent=2)
        lines.append(f"{k}: {v}")
    return "\n".join(lines)


def main(argv: Sequence[str] | None = None) -> int:
    """Entry point of the ``distillcert`` console script; returns the exit status."""
    parser = build_parser()
    args = parser.parse_args(argv)
    # small batched matrix products (bounds, replay) are fastest single-threaded; torch keeps its own pool
    try:
        from threadpoolctl import threadpool_limits

        threadpool_limits(1, user_api="blas")
    except ImportError:  # pragma: no cover - threadpoolctl ships with scikit-learn
        pass
    if "torch" in sys.modules:  # the MLPs here are small: one intra-op thread is fastest on 2 cores
        sys.modules["torch"].set_num_threads(1)
    if not getattr(args, "command", None):
        parser.print_help(sys.stderr)
        return 2
    handler: Callable[[argparse.Namespace], dict[str, Any]] = args.func
    try:
        result = handler(args)
    except InputError as exc:
        msg = " ".join(str(exc).split())
        sys.stderr.write(f"distillcert {args.command}: error: {msg}\n")
        return 2
    except KeyboardInterrupt:
        sys.stderr.write(
            f"distillcert {args.command}: interrupted; finished work is journaled, rerun to resume\n"
        )
        return 130
    except DistillCertError as exc:
        sys.stderr.write(f"distillcert {args.command}: internal error: {exc}\n")
        return 1
    if args.json:
        out = dict(result)
        out.pop("text", None)
        sys.stdout.write(json.dumps(_jsonable(out)) + "\n")
    else:
        sys.stdout.write(_render(result) + "\n")
    sys.stdout.flush()
    return 0


if __name__ == "__main__":  # pragma: no cover
    raise SystemExit(main())
