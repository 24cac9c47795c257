"""CLI subcommands of :mod:`distill`: ``train-teacher``, ``distill``, ``export``, ``diagnose``.

Registered by :mod:`verifier.cli` through :func:`register`.  Each handler validates its options up
front (bad values raise an :class:`~encoders.errors.InputError` subclass → one stderr line, exit 2),
then returns a JSON-serialisable dict whose ``"text"`` entry is the human rendering.  Progress bars go
to stderr (``--no-progress`` silences them).  Torch runs on one thread.

Files written (atomically):

* ``train-teacher --out DIR`` → ``DIR/teacher.pt``, ``DIR/teacher.onnx``, ``DIR/teacher.onnx.json``
* ``distill --out DIR``       → ``DIR/student.pt``, ``DIR/student.onnx``, ``DIR/student.onnx.json``
* ``export --model M.pt --out M.onnx`` → ``M.onnx`` and ``M.onnx.json``
* ``diagnose --plot P.png``   → the sorted-BNC plot
"""

from __future__ import annotations

import argparse
import math
import time
from pathlib import Path
from typing import Any

import numpy as np
import torch

from encoders.errors import ConfigError, DataError
from encoders.network import file_sha256

__all__ = ["register"]


def _limit_threads() -> None:
    """One torch thread: the small MLP batches here run fastest single-threaded (thread start-up and
    spin-waiting cost more than they save, badly so on a busy machine)."""
    torch.set_num_threads(1)


def _nonneg(name: str, v: float | None) -> None:
    if v is not None and (not math.isfinite(v) or v < 0):
        raise ConfigError(f"{name} {v}: must be a finite number >= 0")


def _positive_int(name: str, v: int | None) -> None:
    if v is not None and v < 1:
        raise ConfigError(f"{name} {v}: must be at least 1")


def _out_dir(path: str) -> Path:
    p = Path(path)
    if p.exists() and not p.is_dir():
        raise ConfigError(f"--out {path}: exists and is not a directory")
    p.mkdir(parents=True, exist_ok=True)
    return p


def _teacher_meta_seed(meta: dict[str, Any]) -> int:
    tr = meta.get("training") or {}
    s = tr.get("seed")
    return int(s) if isinstance(s, int) else 0


def _meta_eps(meta: dict[str, Any]) -> float | None:
    tr = meta.get("training") or {}
    e = tr.get("adv_eps")
    if isinstance(e, int | float) and e > 0:
        return float(e)
    e = tr.get("eps")
    return float(e) if isinstance(e, int | float) and e > 0 else None


def _default_eps(meta: dict[str, Any], data: Any) -> float:
    e = _meta_eps(meta)
    if e is not None:
        return e
    return 0.1 * float(np.mean(data.domain_hi - data.domain_lo))


def _model_io(model: torch.nn.Module, path: str) -> tuple[int, int]:
    """``(inputs, classes)`` of an MLP (its widths) or of a zoo/imported teacher (its attributes)."""
    from .models import model_widths

    n_in, n_out = getattr(model, "n_inputs", None), getattr(model, "n_classes", None)
    if isinstance(n_in, int) and isinstance(n_out, int) and n_out > 0:
        return n_in, n_out
    w = model_widths(model)
    return w[0], w[-1]


def _check_model_data(model: torch.nn.Module, path: str, data: Any, opt: str) -> None:
    n_in, n_out = _model_io(model, path)
    if n_in != data.n_features or n_out != data.n_classes:
        raise ConfigError(
            f"{opt} {path}: the model maps {n_in} inputs to {n_out} outputs but data set {data.name} has "
            f"{data.n_features} features and {data.n_classes} classes"
        )


# --------------------------------------------------------------------------------------------------
# train-teacher
# --------------------------------------------------------------------------------------------------
def _cmd_train_teacher(args: argparse.Namespace) -> dict[str, Any]:
    from .attacks import robust_accuracy
    from .data import load_dataset
    from .export import export_onnx, save_checkpoint
    from .models import check_arch_matches, is_zoo_arch, n_parameters, parse_arch, zoo_model
    from .train import model_meta, train_teacher

    _nonneg("--adv-eps", args.adv_eps)
    _positive_int("--epochs", args.epochs)
    _nonneg("--eval-steps", args.eval_steps)
    zoo = is_zoo_arch(args.arch)
    widths = parse_arch(args.arch) if args.arch and not zoo else None
    data = load_dataset(args.data, seed=args.seed, test_fraction=args.test_fraction)
    if widths is not None:
        check_arch_matches(widths, data.n_features, data.n_classes)
    if zoo:
        zoo_model(args.arch, data.image_shape, data.n_classes)  # shape errors before any training
    out = _out_dir(args.out)
    _limit_threads()
    res = train_teacher(
        data,
        arch=args.arch,
        adv_eps=args.adv_eps,
        epochs=args.epochs,
        lr=args.lr,
        seed=args.seed,
        batch_size=args.batch_size,
        attack_steps=args.attack_steps,
        norm=args.norm,
        progress=not args.no_progress,
    )
    meta = model_meta(data, res.config)
    pt, onnx_path = out / "teacher.pt", out / "teacher.onnx"
    save_checkpoint(res.model, pt, meta)
    side = export_onnx(res.model, onnx_path, data.n_features, meta, seed=args.seed)
    from .teacher import load_teacher

    # the file as a certifier will import it: interpreter vs onnxruntime parity, encodability
    imported = load_teacher(onnx_path, domain=data.domain, X=data.X_test, seed=args.seed)
    robust = None
    if args.adv_eps > 0 and args.eval_steps > 0:
        robust = robust_accuracy(
            res.model,
            data.X_test,
            data.y_test,
            args.adv_eps,
            norm=args.norm,
            steps=args.eval_steps,
            domain=data.domain,
            seed=args.seed,
        )
    result = {
        "checkpoint": str(pt),
        "onnx": str(onnx_path),
        "sidecar": str(onnx_path) + ".json",
        "sha256": side["sha256"],
        "dataset": data.summary(),
        "config": res.config,
        "n_parameters": n_parameters(res.model),
        "teacher_import": imported.summary(),
        "train_accuracy": res.train_accuracy,
        "test_accuracy": res.test_accuracy,
        "pgd": {"eps": args.adv_eps, "steps": args.eval_steps, "test_robust_accuracy": robust}
        if robust is not None
        else None,
        "seconds": res.seconds,
    }
    mode = f"PGD-AT eps {args.adv_eps:g}" if args.adv_eps > 0 else "standard"
    text = [
        f"teacher {res.config['arch']} on {data.name} ({mode}, {args.epochs} epochs, {res.seconds:.1f} s)",
        f"test accuracy {res.test_accuracy:.4f}"
        + (f", PGD-{args.eval_steps} accuracy {robust:.4f}" if robust is not None else ""),
        f"{n_parameters(res.model)} parameters; input shape {'x'.join(map(str, imported.input_shape))}; "
        f"import parity {imported.parity:.2g} on {imported.parity_points} points; "
        + ("encodable (network IR)" if imported.encodable else "not encodable (teacher only)"),
        f"wrote {pt}, {onnx_path} (+ .json), sha256 {side['sha256'][:16]}...",
    ]
    result["text"] = "\n".join(text)
    return result


# --------------------------------------------------------------------------------------------------
# distill
# --------------------------------------------------------------------------------------------------
def _cmd_distill(args: argparse.Namespace) -> dict[str, Any]:
    from .attacks import robust_accuracy
    from .data import load_dataset
    from .export import export_onnx, save_checkpoint
    from .losses import DistillConfig, distill_student, resolve_method
    from .models import check_arch_matches, parse_arch, predict
    from .teacher import load_teacher_model
    from .train import model_meta

    method = resolve_method(args.method)
    for name in ("eps", "alpha", "temperature", "lambda_ce", "lambda_kl", "lambda_g", "warmup"):
        _nonneg("--" + name.replace("_", "-"), getattr(args, name))
    _positive_int("--epochs", args.epochs)
    widths = parse_arch(args.arch) if args.arch else None
    teacher = load_teacher_model(args.teacher)
    tmeta: dict[str, Any] = getattr(teacher, "meta", {}) or {}
    data_name = args.data or tmeta.get("dataset")
    if not data_name:
        raise DataError(f"--teacher {args.teacher}: no data set recorded with the model; pass --data")
    split_seed = args.split_seed if args.split_seed is not None else _teacher_meta_seed(tmeta)
    data = load_dataset(data_name, seed=split_seed, test_fraction=args.test_fraction)
    _check_model_data(teacher, args.teacher, data, "--teacher")
    if widths is not None:
        check_arch_matches(widths, data.n_features, data.n_classes)
    eps = args.eps if args.eps is not None else _default_eps(tmeta, data)
    cfg = DistillConfig(
        alpha=args.alpha,
        temperature=args.temperature,
        lambda_ce=args.lambda_ce,
        lambda_kl=args.lambda_kl,
        lambda_g=args.lambda_g,
        eps=eps,
        norm=args.norm,
        attack_steps=args.attack_steps,
        warmup=args.warmup,
    )
    cfg.validate()
    out = _out_dir(args.out)
    _limit_threads()
    eq13 = None
    if args.eq13_kappa is not None:
        student, eq13 = _distill_eq13(args, teacher, data, method, cfg)
        res_config, res_seconds, label_source = eq13.config, eq13.seconds, "teacher argmax"
        train_agreement = eq13.train_agreement
    else:
        res = distill_student(
            teacher,
            data,
            method=method,
            arch=args.arch,
            epochs=args.epochs,
            seed=args.seed,
            cfg=cfg,
            labels=args.labels,
            lr=args.lr,
            batch_size=args.batch_size,
            progress=not args.no_progress,
        )
        student, res_config, res_seconds, label_source = res.model, res.config, res.seconds, res.label_source
        train_agreement = res.train_agreement
    pt_s, pt_t = predict(student, data.X_test), predict(teacher, data.X_test)
    test_acc = float(np.mean(pt_s == data.y_test))
    agreement = float(np.mean(pt_s == pt_t))
    config = {
        **res_config,
        "teacher": str(args.teacher),
        "teacher_sha256": file_sha256(args.teacher),
        "split_seed": split_seed,
    }
    meta = model_meta(data, config)
    pt, onnx_path = out / "student.pt", out / "student.onnx"
    save_checkpoint(student, pt, meta)
    side = export_onnx(student, onnx_path, data.n_features, meta, seed=args.seed)
    robust = None
    if args.eval_steps > 0 and eps > 0:
        robust = {
            "eps": eps,
            "steps": args.eval_steps,
            "student": robust_accuracy(
                student,
                data.X_test,
                data.y_test,
                eps,
                norm=args.norm,
                steps=args.eval_steps,
                domain=data.domain,
                seed=args.seed,
            ),
            "teacher": robust_accuracy(
                teacher,
                data.X_test,
                data.y_test,
                eps,
                norm=args.norm,
                steps=args.eval_steps,
                domain=data.domain,
                seed=args.seed,
            ),
        }
    result = {
        "checkpoint": str(pt),
        "onnx": str(onnx_path),
        "sidecar": str(onnx_path) + ".json",
        "sha256": side["sha256"],
        "method": method,
        "config": config,
        "test_accuracy": test_acc,
        "teacher_test_accuracy": float(np.mean(pt_t == data.y_test)),
        "test_agreement": agreement,
        "train_agreement": train_agreement,
        "pgd": robust,
        "seconds": res_seconds,
        "eq13": eq13.to_dict() if eq13 is not None else None,
    }
    if eq13 is not None:
        result["eq13"].pop("history", None)
    text = [
        f"student {config['arch']} distilled from {args.teacher} with {method} on {data.name} "
        f"({args.epochs} epochs, {res_seconds:.1f} s, labels: {label_source})",
        f"test accuracy {test_acc:.4f} (teacher {result['teacher_test_accuracy']:.4f}), "
        f"agreement {agreement:.4f}",
    ]
    if eq13 is not None:
        f = eq13.final
        text.append(
            f"Eq. 13 ({f['scope']}, kappa {args.eq13_kappa:g}) on the training points: "
            f"{'holds' if eq13.holds else 'FAILS'} after {eq13.rounds} round(s), hinge weights "
            f"{', '.join(f'{w:g}' for w in eq13.hinge_weights)}; violations per round "
            f"{list(eq13.violations)} of {f['n_checked']}, disagreements {f['disagreements']}"
        )
    if robust is not None:
        text.append(
            f"PGD-{args.eval_steps} accuracy at eps {eps:g}: student {robust['student']:.4f}, "
            f"teacher {robust['teacher']:.4f}"
        )
    text.append(f"wrote {pt}, {onnx_path} (+ .json), sha256 {side['sha256'][:16]}...")
    result["text"] = "\n".join(text)
    return result


def _distill_eq13(
    args: argparse.Namespace, teacher: Any, data: Any, method: str, cfg: Any
) -> tuple[Any, Any]:
    """``distill --eq13-kappa K``: :func:`distill.losses.distill_for_eq13` on the training inputs (labels:
    the teacher's argmax)."""
    from .losses import Eq13Config, distill_for_eq13

    ecfg = Eq13Config(
        kappa=args.eq13_kappa,
        scope=args.eq13_scope,
        method=method,
        distill=cfg,
        arch=args.arch,
        epochs=args.epochs,
        lr=args.lr,
        batch_size=args.batch_size,
        seed=args.seed,
        hinge_weight=args.eq13_hinge,
        max_rounds=args.eq13_rounds,
    )
    ecfg.validate()
    return distill_for_eq13(teacher, data, ecfg, progress=not args.no_progress)


# --------------------------------------------------------------------------------------------------
# export
# --------------------------------------------------------------------------------------------------
def _cmd_export(args: argparse.Namespace) -> dict[str, Any]:
    from .export import export_onnx, load_model
    from .models import model_widths

    out = Path(args.out)
    if out.suffix.lower() != ".onnx":
        raise ConfigError(f"--out {args.out}: expected a path ending in .onnx")
    if out.exists() and out.is_dir():
        raise ConfigError(f"--out {args.out}: is a directory")
    model = load_model(args.model)
    meta = dict(getattr(model, "meta", {}) or {})
    n_features = model_widths(model)[0]
    _limit_threads()
    side = export_onnx(model, out, n_features, meta, seed=args.seed)
    result = dict(side)
    result["onnx"] = str(out)
    result["sidecar"] = str(out) + ".json"
    chk = side["export_check"]
    result["text"] = (
        f"wrote {out} (+ .json): {side['architecture'].get('spec', side['architecture'].get('type'))}, "
        f"opset {side['opset']}, sha256 {side['sha256'][:16]}...\n"
        f"check on {chk['points']} domain points: max |onnxruntime - torch| = "
        f"{chk['max_abs_diff_onnxruntime_vs_torch']:.3g} (tolerance {chk['tolerance']:g}); "
        "imports into the network IR"
    )
    return result


# --------------------------------------------------------------------------------------------------
# diagnose
# --------------------------------------------------------------------------------------------------
def _cmd_diagnose(args: argparse.Namespace) -> dict[str, Any]:
    from .data import load_dataset
    from .diagnostics import diagnose
    from .teacher import load_teacher_model

    _nonneg("--eps", args.eps)
    _positive_int("--steps", args.steps)
    _positive_int("--restarts", args.restarts)
    _positive_int("--max-points", args.max_points)
    teacher = load_teacher_model(args.teacher)
    student = load_teacher_model(args.student)
    tmeta: dict[str, Any] = getattr(teacher, "meta", {}) or {}
    smeta: dict[str, Any] = getattr(student, "meta", {}) or {}
    data_name = args.data or smeta.get("dataset") or tmeta.get("dataset")
    if not data_name:
        raise DataError("diagnose: no data set recorded with the models; pass --data")
    split_seed = args.split_seed if args.split_seed is not None else _teacher_meta_seed(tmeta)
    data = load_dataset(data_name, seed=split_seed, test_fraction=args.test_fraction)
    _check_model_data(teacher, args.teacher, data, "--teacher")
    _check_model_data(student, args.student, data, "--student")
    eps = args.eps if args.eps is not None else _default_eps(tmeta, data)
    X, y = (data.X_test, data.y_test) if args.split == "test" else (data.X_train, data.y_train)
    _limit_threads()
    t0 = time.perf_counter()
    res = diagnose(
        teacher,
        student,
        X,
        y,
        eps=eps,
        norm=args.norm,
        steps=args.steps,
        restarts=args.restarts,
        domain=data.domain,
        seed=args.seed,
        plot_path=args.plot,
        max_points=args.max_points,
    )
    res["dataset"] = data.name
    res["split"] = args.split
    res["seconds"] = time.perf_counter() - t0
    return res


# --------------------------------------------------------------------------------------------------
# registration
# --------------------------------------------------------------------------------------------------
def _common(p: argparse.ArgumentParser) -> None:
    p.add_argument("--seed", type=int, default=0, help="random seed (default 0)")
    p.add_argument("--no-progress", action="store_true", help="no progress bars on stderr")


def register(subparsers: Any) -> None:
    """Add ``train-teacher``, ``distill``, ``export`` and ``diagnose`` to the CLI."""
    from .data import DATASET_NAMES
    from .losses import METHOD_NAMES
    from .models import ZOO_NAMES

    data_help = f"data set: {', '.join(DATASET_NAMES)}"

    p = subparsers.add_parser(
        "train-teacher",
        help="train a teacher: MLP or a convolutional zoo preset (standard or PGD adversarial training)",
        description="Train a teacher; writes DIR/teacher.pt and a checked DIR/teacher.onnx.",
    )
    p.add_argument("--data", default="digits", help=data_help + " (default digits)")
    p.add_argument(
        "--arch",
        default=None,
        help=f"MLP widths, e.g. 64-128-128-10 (default N-128-128-K for the data), or a preset for image "
        f"data: {', '.join(ZOO_NAMES)}",
    )
    p.add_argument(
        "--adv-eps", type=float, default=0.0, help="PGD adversarial-training radius (0 = standard)"
    )
    p.add_argument("--norm", choices=["inf", "2"], default="inf", help="attack norm (default inf)")
    p.add_argument("--epochs", type=int, default=30)
    p.add_argument("--lr", type=float, default=0.05)
    p.add_argument("--batch-size", type=int, default=64)
    p.add_argument("--attack-steps", type=int, default=10, help="PGD steps per training batch (default 10)")
    p.add_argument(
        "--eval-steps", type=int, default=50, help="PGD steps of the final robustness check (0 = skip)"
    )
    p.add_argument("--test-fraction", type=float, default=0.25)
    p.add_argument("--out", required=True, help="output folder")
    _common(p)
    p.set_defaults(func=_cmd_train_teacher)

    p = subparsers.add_parser(
        "distill",
        help="distil a teacher (.pt or .onnx) into a small MLP student",
        description="Distil a teacher into a student; writes DIR/student.pt and a checked DIR/student.onnx.",
    )
    p.add_argument("--teacher", required=True, help="teacher model (.pt checkpoint or .onnx)")
    p.add_argument("--data", default=None, help=data_help + " (default: the teacher's)")
    p.add_argument("--method", default="kdiga", help=f"one of {', '.join(METHOD_NAMES)} (default kdiga)")
    p.add_argument("--arch", default=None, help="student widths (default N-32-32-K)")
    p.add_argument(
        "--eps",
        type=float,
        default=None,
        help="radius of the adversarial methods and of the final check (default: the teacher's adv-eps)",
    )
    p.add_argument("--norm", choices=["inf", "2"], default="inf")
    p.add_argument("--epochs", type=int, default=80)
    p.add_argument("--lr", type=float, default=0.05)
    p.add_argument("--batch-size", type=int, default=64)
    p.add_argument(
        "--labels",
        choices=["auto", "teacher", "data"],
        default="auto",
        help="train on the data's labels or on argmax f_T(x) (default auto: data labels if any)",
    )
    p.add_argument("--alpha", type=float, default=0.9)
    p.add_argument("--temperature", type=float, default=4.0)
    p.add_argument("--lambda-ce", type=float, default=1.0)
    p.add_argument("--lambda-kl", type=float, default=1.0)
    p.add_argument("--lambda-g", type=float, default=10.0, help="input-gradient alignment weight (KDIGA)")
    p.add_argument(
        "--warmup", type=float, default=0.3, help="fraction of training over which lambda-g and eps ramp up"
    )
    p.add_argument("--attack-steps", type=int, default=10)
    p.add_argument(
        "--eval-steps", type=int, default=50, help="PGD steps of the final robustness check (0 = skip)"
    )
    p.add_argument("--split-seed", type=int, default=None, help="data split seed (default: the teacher's)")
    p.add_argument("--test-fraction", type=float, default=0.25)
    p.add_argument(
        "--eq13-kappa",
        type=float,
        default=None,
        help="aim at Eq. 13 at this kappa: add the confidence-gap hinge and retry until the student is at "
        "least as confident as the teacher at every teacher-confident training point (labels: teacher)",
    )
    p.add_argument("--eq13-scope", choices=["confident", "all", "kappa"], default="confident")
    p.add_argument("--eq13-hinge", type=float, default=1.0, help="initial hinge weight (default 1)")
    p.add_argument("--eq13-rounds", type=int, default=4, help="maximum rounds (default 4)")
    p.add_argument("--out", required=True, help="output folder")
    _common(p)
    p.set_defaults(func=_cmd_distill)

    p = subparsers.add_parser(
        "export",
        help="export a .pt model to checked ONNX with a JSON sidecar",
        description="Export a model to ONNX (checked against onnxruntime and the network IR).",
    )
    p.add_argument("--model", required=True, help="model to export (.pt checkpoint or .onnx)")
    p.add_argument("--out", required=True, help="ONNX file to write (sidecar: OUT.json)")
    p.add_argument("--seed", type=int, default=0, help="seed of the 1000 check points")
    p.set_defaults(func=_cmd_export)

    p = subparsers.add_parser(
        "diagnose",
        help="distillation diagnostics of a teacher/student pair",
        description="Accuracy, agreement, confidence dominance, gradient ratio, LLM, "
        "PGD agreement, EMPLB and BNC/MBNC of a teacher/student pair.",
    )
    p.add_argument("--teacher", required=True)
    p.add_argument("--student", required=True)
    p.add_argument("--data", default=None, help=data_help + " (default: the models')")
    p.add_argument("--split", choices=["test", "train"], default="test")
    p.add_argument("--split-seed", type=int, default=None, help="data split seed (default: the teacher's)")
    p.add_argument("--test-fraction", type=float, default=0.25)
    p.add_argument("--eps", type=float, default=None, help="attack radius (default: the teacher's adv-eps)")
    p.add_argument("--norm", choices=["inf", "2"], default="inf")
    p.add_argument("--steps", type=int, default=50)
    p.add_argument("--restarts", type=int, default=1)
    p.add_argument("--max-points", type=int, default=None)
    p.add_argument("--plot", default=None, help="PNG path for the sorted-BNC plot")
    _common(p)
    p.set_defaults(func=_cmd_diagnose)
