"""Subcommands owned by :mod:`verifier`: ``info``, ``verify``, ``vnncomp``, ``pac``, ``certify``,
``check`` and ``run``.  Each handler returns a dict (see :mod:`verifier.cli`)."""

from __future__ import annotations

import argparse
import sys
from dataclasses import replace
from pathlib import Path
from typing import Any

import numpy as np

from encoders.errors import ConfigError, DataError, SpecError
from encoders.network import load_onnx
from encoders.properties import LAYER_BOUNDS

from ..dispatch import BACKEND_CHOICES, DispatchConfig
from ..results import Result


def _config(args: argparse.Namespace, default_timeout: float = 60.0) -> DispatchConfig:
    timeout = getattr(args, "timeout", None)
    return DispatchConfig(
        backend=args.backend,
        timeout=float(timeout) if timeout is not None else default_timeout,
        threads=getattr(args, "threads", 1),
        seed=getattr(args, "seed", 0),
        bounds=getattr(args, "bounds", "crown"),
    )


def _add_solver_flags(p: argparse.ArgumentParser, timeout: float | None = 60.0) -> None:
    p.add_argument("--backend", default="auto", help=f"one of {', '.join(BACKEND_CHOICES)} (default auto)")
    p.add_argument("--timeout", type=float, default=timeout, help="seconds per query")
    p.add_argument("--threads", type=int, default=1, help="solver threads per query")
    p.add_argument("--seed", type=int, default=0)
    p.add_argument(
        "--bounds",
        default="crown",
        help=f"big-M bounds of the encodings: one of {', '.join(LAYER_BOUNDS)} (default crown)",
    )


def _validate_backend(args: argparse.Namespace) -> None:
    if args.backend not in BACKEND_CHOICES:
        raise ConfigError(
            f"--backend: unknown backend {args.backend!r} (choose from {', '.join(BACKEND_CHOICES)})"
        )


# ---------------------------------------------------------------------------------------------- info
def cmd_info(args: argparse.Namespace) -> dict[str, Any]:
    net = load_onnx(args.model)
    s = net.summary()
    lines = [
        f"{args.model}",
        f"  sha256  {s['sha256']}",
        f"  input   {s['input']['name']} {s['input']['shape']} ({s['input']['size']} values)",
        f"  output  {s['output']['name']} {s['output']['shape']} ({s['output']['size']} values)",
        f"  params  {s['n_params']}   ReLUs {s['n_relus']}   ONNX nodes {s['onnx_nodes']}",
        "  layers:",
    ]
    for i, lay in enumerate(s["layers"]):
        desc = f"Affine {lay['in']} -> {lay['out']}" if lay["type"] == "Affine" else f"Relu {lay['size']}"
        lines.append(f"    {i:2d}  {desc}")
    s["text"] = "\n".join(lines)
    return s


# -------------------------------------------------------------------------------------------- verify
def _domain(args: argparse.Namespace, n: int) -> tuple[np.ndarray, np.ndarray] | None:
    if getattr(args, "domain", None):
        lo, hi = (float(v) for v in args.domain)
        if lo > hi:
            raise SpecError(f"--domain: empty input box (lower {lo} > upper {hi})")
        return np.full(n, lo), np.full(n, hi)
    if getattr(args, "domain_from", None):
        from distill.data import load_dataset

        data = load_dataset(args.domain_from)
        if data.n_features != n:
            raise DataError(
                f"--domain-from {args.domain_from}: {data.n_features} features, network takes {n}"
            )
        return np.asarray(data.domain_lo, float), np.asarray(data.domain_hi, float)
    return None


def _point(args: argparse.Namespace, n: int) -> np.ndarray:
    if args.point:
        p = Path(args.point)
        if not p.exists():
            raise SpecError(f"--point {p}: no such file")
        try:
            x = np.load(p, allow_pickle=False)
        except Exception:
            raise SpecError(f"--point {p}: not a .npy array file") from None
        x = np.asarray(x, dtype=np.float64).reshape(-1)
    elif args.index is not None:
        if not args.data:
            raise ConfigError("--index needs --data NAME")
        from distill.data import load_dataset

        data = load_dataset(args.data)
        X = data.X_test
        if not 0 <= args.index < len(X):
            raise ConfigError(f"--index: {args.index} out of range (test set has {len(X)} points)")
        x = np.asarray(X[args.index], dtype=np.float64).reshape(-1)
    else:
        raise ConfigError("give --point FILE.npy or --index I with --data NAME")
    if x.size != n:
        raise SpecError(f"--point: has {x.size} values but the network takes {n} inputs")
    if not np.all(np.isfinite(x)):
        raise SpecError("--point: contains NaN or inf")
    return x


def _save_query(args: argparse.Namespace, prop: Any, nets: dict[str, Any]) -> str | None:
    """``--save-query FILE.mps|.lp``: write the violation encoding (MILP form) for other tools."""
    path = getattr(args, "save_query", None)
    if not path:
        return None
    from encoders.milp import write_model
    from encoders.properties import EncodeOptions

    if not str(path).endswith((".mps", ".lp")):
        raise ConfigError(f"--save-query {path}: the file name must end in .mps or .lp")
    write_model(prop.encode(nets, EncodeOptions()), path)
    return str(path)


def _result_json(r: Result) -> dict[str, Any]:
    d = r.to_json()
    d["text"] = f"{r.verdict.value.upper()}  ({r.backend}, {r.time_s:.2f}s)  {r.message}"
    return d


def cmd_verify_vnnlib(args: argparse.Namespace) -> dict[str, Any]:
    from ..queries import verify_vnnlib, vnnlib_properties

    if args.save_query:
        net = load_onnx(args.onnx)
        _save_query(args, vnnlib_properties(args.vnnlib, net)[0], {"net": net})
    return _result_json(verify_vnnlib(args.onnx, args.vnnlib, _config(args)))


def cmd_verify_local(args: argparse.Namespace) -> dict[str, Any]:
    from ..queries import verify_local

    if not args.eps > 0:
        raise SpecError(f"--eps: must be positive, got {args.eps}")
    net = load_onnx(args.onnx)
    x0 = _point(args, net.n_inputs)
    dom = _domain(args, net.n_inputs)
    if dom is None:
        dom = (np.zeros(net.n_inputs), np.ones(net.n_inputs))
    from ..queries import local_property

    prop = local_property(net, x0, args.eps, args.norm, dom)
    _save_query(args, prop, {"net": net})
    if args.save_vnnlib:
        if args.norm != "inf":
            raise ConfigError("--save-vnnlib: VNN-LIB states boxes; only --norm inf can be written")
        from encoders.vnnlib import local_robustness_vnnlib

        local_robustness_vnnlib(x0, args.eps, prop.label, net.n_outputs, dom, path=args.save_vnnlib)
    return _result_json(verify_local(net, x0, args.eps, _config(args), args.norm, dom, args.per_target))


def _check_kappa(kappa: float, n_classes: int) -> None:
    if not 0.0 < kappa < 1.0:
        raise SpecError(f"--kappa: must lie in (0, 1), got {kappa}")
    if kappa <= 1.0 / n_classes:
        sys.stderr.write(
            f"distillcert: warning: --kappa {kappa} <= 1/{n_classes}: every prediction is "
            "kappa-confident, so the confidence condition is vacuous\n"
        )


def cmd_verify_global(args: argparse.Namespace) -> dict[str, Any]:
    from ..queries import verify_global

    if args.max_delta:
        return _global_radius(args)
    if args.delta is None:
        raise SpecError("--delta: required (or give --max-delta to search for the largest proved delta)")
    if not args.delta > 0:
        raise SpecError(f"--delta: must be positive, got {args.delta}")
    net = load_onnx(args.onnx)
    _check_kappa(args.kappa, net.n_outputs)
    dom = _domain(args, net.n_inputs) or (np.zeros(net.n_inputs), np.ones(net.n_inputs))
    if args.save_query:
        from encoders.properties import GlobalRobustness

        _save_query(
            args, GlobalRobustness(args.delta, args.kappa, dom[0], dom[1], args.norm, 0), {"a": net, "b": net}
        )
    saved = _save_vnnlib_global(args, net, dom)
    out = _result_json(verify_global(net, args.delta, args.kappa, dom, _config(args), args.norm))
    if saved:
        out["saved_vnnlib"] = saved
    return out


def _save_vnnlib_global(args: argparse.Namespace, net: Any, dom: tuple) -> dict[str, str] | None:
    """``--save-vnnlib Q.vnnlib``: the query in VNN-LIB 2.0 plus ``Q.N.onnx`` (encoders.vnnlib2)."""
    if not getattr(args, "save_vnnlib", None):
        return None
    from encoders.vnnlib2 import global_robustness_text, save_query_bundle

    text = global_robustness_text(net.input_shape, net.output_shape, net.n_inputs, net.n_outputs,
                                  args.delta, args.kappa, dom[0], dom[1], args.norm)
    return save_query_bundle(args.save_vnnlib, text, {"N": args.onnx})


def _global_radius(args: argparse.Namespace) -> dict[str, Any]:
    """``verify global --max-delta``: the certified global radius for one κ (anytime; per class)."""
    from ..search.global_split import certified_global_radius

    if not args.budget > 0:
        raise SpecError(f"--budget: must be positive, got {args.budget}")
    if not 0.0 < args.gap < 1.0:
        raise SpecError(f"--gap: must lie in (0, 1), got {args.gap}")
    net = load_onnx(args.onnx)
    _check_kappa(args.kappa, net.n_outputs)
    dom = _domain(args, net.n_inputs) or (np.zeros(net.n_inputs), np.ones(net.n_inputs))
    cfg = _config(args, 60.0)
    if args.timeout is None or args.timeout == 300.0:  # the single-query default; per probe 60 s
        cfg = replace(cfg, timeout=60.0)
    r = certified_global_radius(net, args.kappa, dom, cfg, args.norm, args.budget, args.gap, args.per_class)
    out = r.to_json()

    def line(name: str, lower: float, upper: float) -> str:
        up = f"{upper:.5g}" if np.isfinite(upper) else "none found"
        return f"  {name:8s} proved delta <= {lower:.5g}   falsified at delta = {up}"

    lines = [
        f"certified global radius, kappa {args.kappa:g}, norm {args.norm} ({r.time_s:.1f} s"
        + (", gap target reached)" if r.complete else ", budget spent: interval so far)")
    ]
    lines.append(line("overall", r.overall.lower, r.overall.upper))
    for c, cr in r.per_class.items():
        lines.append(line(f"class {c}", cr.lower, cr.upper))
    if r.overall.pair is not None:
        cx = r.overall.pair
        dist = float(np.max(np.abs(cx.x - cx.x2)))
        lines.append(
            f"  pair at delta {r.overall.upper:.5g}: |x - x'|_max = {dist:.5g}, class "
            f"{int(np.argmax(cx.y))} at x, class {int(np.argmax(cx.y2))} at x' (replayed on onnxruntime)"
        )
    out["text"] = "\n".join(lines)
    return out


def cmd_verify_faithfulness(args: argparse.Namespace) -> dict[str, Any]:
    from ..queries import faithfulness

    if not args.eps > 0:
        raise SpecError(f"--eps: must be positive, got {args.eps}")
    teacher, student = load_onnx(args.teacher), load_onnx(args.student)
    if teacher.n_inputs != student.n_inputs or teacher.n_outputs != student.n_outputs:
        raise SpecError(f"{args.student}: input/output sizes differ from the teacher {args.teacher}")
    x0 = _point(args, teacher.n_inputs)
    dom = _domain(args, teacher.n_inputs) or (np.zeros(teacher.n_inputs), np.ones(teacher.n_inputs))
    saved = None
    if getattr(args, "save_vnnlib", None):  # --save-vnnlib: the disagreement query in VNN-LIB 2.0
        from encoders.properties import Disagreement
        from encoders.vnnlib2 import disagreement_text, save_query_bundle

        lo, hi = Disagreement(x0, args.eps, dom[0], dom[1]).box()
        text = disagreement_text(teacher.input_shape, teacher.output_shape, teacher.n_inputs,
                                 teacher.n_outputs, lo, hi, args.eps)
        saved = save_query_bundle(args.save_vnnlib, text, {"T": args.teacher, "S": args.student})
    out = faithfulness(teacher, student, x0, args.eps, _config(args), dom, args.method)
    if saved:
        out["saved_vnnlib"] = saved
    out["text"] = (
        f"FAITHUB {out['faithub']:.4f}  EMPLB {out['emplb']:.4f}  disagreement {out['disagreement'].upper()}"
    )
    return out


# ------------------------------------------------------------------------------------------- vnncomp
def cmd_vnncomp(args: argparse.Namespace) -> dict[str, Any]:
    from ..vnncomp import run_vnncomp

    _validate_backend(args)
    return run_vnncomp(
        Path(args.instances),
        Path(args.root) if args.root else None,
        Path(args.out),
        args.backend,
        args.jobs,
        Path(args.expected) if args.expected else None,
        args.timeout,
        args.cluster,
    )


# -------------------------------------------------------------------------------------------- parser
def register(sub: argparse._SubParsersAction) -> None:
    p = sub.add_parser("info", help="print a network's IR: layers, shapes, ReLUs, parameters, hash")
    p.add_argument("model", help="ONNX file")
    p.set_defaults(func=cmd_info)

    v = sub.add_parser("verify", help="verify one property (vnnlib, local, global, faithfulness)")
    vsub = v.add_subparsers(dest="kind", metavar="KIND", parser_class=type(v))
    v.set_defaults(
        func=lambda a: (_ for _ in ()).throw(
            ConfigError("verify: give a KIND: vnnlib, local, global, faithfulness")
        )
    )
    pv = vsub.add_parser("vnnlib", help="a VNN-LIB property")
    pv.add_argument("--onnx", required=True)
    pv.add_argument("--vnnlib", required=True)
    _add_solver_flags(pv)
    pv.set_defaults(func=cmd_verify_vnnlib)

    pl = vsub.add_parser("local", help="local robustness at a point")
    pl.add_argument("--onnx", required=True)
    pl.add_argument("--point", help=".npy file with the input")
    pl.add_argument("--index", type=int, help="test-set index (with --data)")
    pl.add_argument("--data", help="data set name (digits, mnist5k, idx:PATH, ...)")
    pl.add_argument("--eps", type=float, required=True)
    pl.add_argument("--norm", choices=["inf", "2"], default="inf")
    pl.add_argument("--domain", nargs=2, type=float, metavar=("LO", "HI"), help="input domain (default 0 1)")
    pl.add_argument(
        "--per-target", action="store_true", help="one query per competing class, by CROWN margin"
    )
    pl.add_argument("--save-vnnlib", help="also write the property as a VNN-LIB file (L-inf only)")
    _add_solver_flags(pl)
    pl.set_defaults(func=cmd_verify_local)

    pg = vsub.add_parser("global", help="global two-copy kappa-confidence robustness")
    pg.add_argument("--onnx", required=True)
    pg.add_argument("--delta", type=float, help="radius of the query (required unless --max-delta)")
    pg.add_argument("--kappa", type=float, required=True)
    pg.add_argument(
        "--max-delta",
        action="store_true",
        help="search the certified radius: largest delta proved, smallest delta falsified (with its pair)",
    )
    pg.add_argument("--budget", type=float, default=600.0, help="seconds for --max-delta (anytime)")
    pg.add_argument("--gap", type=float, default=0.1, help="--max-delta stops at (upper-lower) <= gap*upper")
    pg.add_argument("--per-class", action="store_true", help="--max-delta: also each class's interval")
    g = pg.add_mutually_exclusive_group()
    g.add_argument("--domain", nargs=2, type=float, metavar=("LO", "HI"))
    g.add_argument("--domain-from", help="per-feature min/max of a data set")
    pg.add_argument("--norm", choices=["inf", "2"], default="inf")
    _add_solver_flags(pg, timeout=300.0)
    pg.set_defaults(func=cmd_verify_global)

    pf = vsub.add_parser("faithfulness", help="FAITHUB, EMPLB and disagreement of a teacher-student pair")
    pf.add_argument("--teacher", required=True)
    pf.add_argument("--student", required=True)
    pf.add_argument("--point")
    pf.add_argument("--index", type=int)
    pf.add_argument("--data")
    pf.add_argument("--eps", type=float, required=True)
    pf.add_argument("--domain", nargs=2, type=float, metavar=("LO", "HI"))
    pf.add_argument(
        "--method",
        choices=["crown", "split", "joint"],
        default="crown",
        help="FAITHUB bound: crown (Eq. 10-11), split (16 sub-boxes), joint (teacher-student coupled, ~1 s)",
    )
    _add_solver_flags(pf)
    pf.set_defaults(func=cmd_verify_faithfulness)
    for q in (pg, pf):
        q.add_argument(
            "--save-vnnlib",
            metavar="Q.vnnlib",
            help="also write the query in VNN-LIB 2.0 (and its networks as Q.NAME.onnx) for other tools",
        )
    for q in (pv, pl, pg):
        q.add_argument(
            "--save-query", help="also write the violation encoding as .mps or .lp (class 0 for global)"
        )
    for q in (pv, pl, pg, pf):
        q.set_defaults(command="verify")

    pc = sub.add_parser("vnncomp", help="run a VNN-COMP instances.csv")
    pc.add_argument("instances")
    pc.add_argument("--root", help="folder the CSV's paths are relative to (default: the CSV's folder)")
    pc.add_argument("--out", required=True, help="results CSV (onnx,vnnlib,result,time_s)")
    pc.add_argument("--backend", default="auto")
    pc.add_argument("--jobs", type=int, default=1)
    pc.add_argument("--expected", help="expected.csv to count wrong results against")
    pc.add_argument("--timeout", type=float, default=None, help="override the per-instance timeout")
    pc.add_argument("--cluster", help="Dask scheduler address tcp://HOST:PORT")
    pc.set_defaults(func=cmd_vnncomp)

    from ..certify.pac import register_pac

    register_pac(sub)

    from .certify_cmds import register_certify

    register_certify(sub)
