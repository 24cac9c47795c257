"""``distillcert bench NAME [--quick] [--out DIR]`` — plugged into the CLI through the
``distillcert.commands`` entry-point group (so :mod:`verifier` never imports :mod:`benchmarks`).

Each benchmark module exposes ``run(quick: bool, out: Path, seed: int) -> dict`` that writes CSV/JSON,
PNG plots and a Markdown summary into ``out`` and returns a summary dict.
"""

from __future__ import annotations

import argparse
import importlib
from pathlib import Path
from typing import Any

from encoders.errors import ConfigError

#: benchmark name -> module implementing ``run``
BENCHMARKS: dict[str, str] = {
    "synthetic-sigmoid": "benchmarks.synthetic_sigmoid",
    "faithfulness": "benchmarks.faithfulness",
    "kdiga-transfer": "benchmarks.kdiga_transfer",
    "solvers": "benchmarks.solvers",
    "vnncomp": "benchmarks.vnncomp_bench",
    "certify-teachers": "benchmarks.certify_teachers",
}


def cmd_bench(args: argparse.Namespace) -> dict[str, Any]:
    if args.name not in BENCHMARKS:
        raise ConfigError(f"bench: unknown benchmark {args.name!r} (choose from {', '.join(BENCHMARKS)})")
    mod = importlib.import_module(BENCHMARKS[args.name])
    out = Path(args.out or f"bench-out/{args.name}{'-quick' if args.quick else ''}")
    out.mkdir(parents=True, exist_ok=True)
    return mod.run(quick=args.quick, out=out, seed=args.seed)


def register(sub: argparse._SubParsersAction) -> None:
    p = sub.add_parser("bench", help="run a benchmark (" + ", ".join(BENCHMARKS) + ")")
    p.add_argument("name", help=" | ".join(BENCHMARKS))
    p.add_argument("--quick", action="store_true", help="small version, <= 2 minutes")
    p.add_argument("--out", help="output folder (default bench-out/NAME)")
    p.add_argument("--seed", type=int, default=0)
    p.set_defaults(func=cmd_bench)
