"""`fmnist train`, `fmnist resume`, `fmnist study` and `fmnist ensemble`."""

from __future__ import annotations

import dataclasses
import sys
import time
from pathlib import Path

from fmnist.cli.flags import (
    add_config_flags,
    add_data_flags,
    add_train_flags,
    add_trust_flag,
    config_from,
    config_layers,
    given_flags,
)
from fmnist.errors import UsageError
from fmnist.inference.mixture import WEIGHTS
from fmnist.models import list_models
from fmnist.models.study import STUDY_MODELS
from fmnist.run.folder import RunFolder
from fmnist.run.study import study_rows
from fmnist.training import distributed
from fmnist.training.config import TrainConfig


def cmd_train(args) -> int:
    from fmnist.jobs.train import resume_run, train_run

    if not any(layer.get("model") for layer in config_layers(args, model=args.model)):
        raise UsageError(
            "fmnist train: give a MODEL, a --recipe or a --config that names one "
            "(to continue a run: fmnist resume RUN_DIR)"
        )
    cfg = config_from(args, model=args.model)
    dist = distributed.from_environment()
    if dist.active and not args.out:
        raise UsageError("with several processes (torchrun), give --out: every process must name the same folder")
    out = Path(args.out or f"runs/{cfg.model}-{time.strftime('%Y%m%d-%H%M%S')}")
    dist, device = distributed.init(cfg.device)
    cfg = dataclasses.replace(cfg, device=device)
    try:
        if dist.restarts and RunFolder(out).has_checkpoint(best=False):  # torchrun restarted us: go on
            return print_run(cfg.model, out, resume_run(out, {"device": device, "quiet": cfg.quiet}, dist), dist)
        overwrite = args.overwrite or dist.restarts > 0  # a restart before the first checkpoint starts afresh
        return print_run(cfg.model, out, train_run(cfg, out, overwrite=overwrite, dist=dist, phases=True), dist)
    finally:
        distributed.shutdown()


def cmd_resume(args) -> int:
    from fmnist.jobs.train import resume_run

    run = RunFolder(args.run_dir).require()
    overrides = given_flags(args)
    dist, device = distributed.init(overrides.get("device") or run.read_config().device)
    if dist.active:
        overrides["device"] = device
    try:
        return print_run(run.read_config().model, run.path, resume_run(run.path, overrides, dist), dist)
    finally:
        distributed.shutdown()


def print_run(model: str, out: Path, metrics: dict, dist: distributed.Dist | None = None) -> int:
    if dist is not None and not dist.is_main:
        return 0  # the first process reports for all
    chosen = metrics.get("ensemble")
    if chosen:
        print(
            f"{model}: an ensemble of {len(chosen['weights'])} runs, {chosen['chosen']} weights "
            f"({', '.join(f'{w:.3f}' for w in chosen['weights'])}; chosen on {chosen['on']})"
        )
    target = metrics.get("target")
    if target and target["reached"]:
        print(
            f"{model}: validation accuracy reached {target['val_accuracy']:.4f} at epoch {target['epoch']} "
            f"after {target['seconds']:.1f} s of training"
        )
    elif target:
        print(f"{model}: validation accuracy never reached {target['val_accuracy']:.4f}")
    print(
        f"{model}: test accuracy {metrics['test_accuracy']:.4f}, loss {metrics['test_loss']:.4f} "
        f"(best epoch {metrics['best_epoch']}"
        + (f" after {metrics['best_seconds']:.1f} s" if "best_seconds" in metrics else "")
        + f"; {metrics['train_seconds']:.1f} s of training"
        + (f", {metrics['compile_seconds']:.1f} s compiling" if metrics.get("compile_seconds") else "")
        + f"); run folder {out}"
    )
    phases = metrics.get("phases")
    if phases:
        print(
            f"{model}: {phases['command']:.1f} s from the command: {phases['before_training']:.1f} s before training "
            f"(interpreter, imports, data), {phases['training']:.1f} s training, {phases['evaluation']:.1f} s "
            f"evaluating and reporting, {phases['other']:.1f} s setting up and saving"
        )
    reached = {k: v for k, v in metrics.get("time_to_accuracy", {}).items() if v is not None}
    if reached:
        print(
            f"{model}: validation accuracy first reached "
            + ", ".join(f"{k} after {v:.1f} s" for k, v in reached.items())
        )
    for flag in metrics["diagnostics"]:
        print(f"warning: {flag}", file=sys.stderr)
    return 0


def cmd_study(args) -> int:
    from fmnist.jobs.study import run_study

    net_args, args.net_args = args.net_args, None  # each network file's and class's, not the base's
    base = config_from(args)
    out = Path(args.out or f"runs/study-{time.strftime('%Y%m%d-%H%M%S')}")
    summary = run_study(args.models or STUDY_MODELS, base, out, overwrite=args.overwrite, net_args=net_args)
    print(f"{'model':<12} {'params':>10} {'val acc':>8} {'test acc':>8} {'train s':>8}")
    for m in study_rows(summary):
        print(
            f"{m['name']:<12} {m['params']:>10,} {m['val_accuracy']:>8.4f} {m['test_accuracy']:>8.4f} "
            f"{m['train_seconds']:>8.0f}"
        )
    for flag in summary["diagnostics"]:
        print(f"warning: {flag}", file=sys.stderr)
    print(f"report: {out / 'report.html'}")
    return 0


def cmd_ensemble(args) -> int:
    from fmnist.jobs.ensemble import ensemble_run
    from fmnist.run.folder import load_data

    members = [Path(p) for p in args.runs]
    out = Path(args.out or f"runs/ensemble-{time.strftime('%Y%m%d-%H%M%S')}")
    data = None
    if args.data_dir is not None or args.verify is not None:  # this machine's copy, not the members' own
        data = load_data(RunFolder(members[0]).read_config(), args.data_dir, args.verify)
    return print_run("ensemble", out, ensemble_run(members, out, args.weights, args.overwrite, data, args.quiet))


def add_parsers(sub) -> None:
    p = sub.add_parser("train", help="train one model into a run folder")
    p.add_argument(
        "model",
        nargs="?",
        help=f"one of: {', '.join(list_models())}; or a network file (NAME.toml) or a class (FILE.py:Class)",
    )
    p.add_argument("--out", help="run folder (default runs/MODEL-TIMESTAMP)")
    add_train_flags(p)
    p.set_defaults(func=cmd_train)

    p = sub.add_parser("resume", help="continue a stopped run from its last.pt, or make it longer")
    p.add_argument("run_dir", metavar="RUN_DIR", help="a run folder written by 'fmnist train'")
    # The only settings a resume may change: its length (upwards), and where and how it runs.
    add_config_flags(
        p,
        TrainConfig.resumable(),
        "the run's length (default: as it was; more epochs run a new schedule cycle over the added ones)",
    )
    add_trust_flag(p)
    p.set_defaults(func=cmd_resume)

    p = sub.add_parser("study", help="train and compare models under identical settings")
    p.add_argument(
        "--models",
        nargs="+",
        metavar="MODEL",
        help=f"models to compare (default: the study's four): any of {', '.join(list_models())}, "
        "network files (NAME.toml) or classes (FILE.py:Class)",
    )
    p.add_argument("--out", help="study folder (default runs/study-TIMESTAMP)")
    add_train_flags(p)
    p.set_defaults(func=cmd_study)

    p = sub.add_parser("ensemble", help="combine trained runs into one ensemble run")
    p.add_argument("runs", nargs="+", metavar="RUN", help="run folders validated on the same split (two or more)")
    p.add_argument("--out", help="the ensemble's run folder (default runs/ensemble-TIMESTAMP)")
    p.add_argument(
        "--weights",
        choices=WEIGHTS,
        default="auto",
        help="members' weights: fitted on validation, uniform, or (auto) whichever validates better "
        "by two-fold cross-validation inside the validation split (default auto)",
    )
    p.add_argument("--overwrite", action="store_true", help="replace an earlier run in --out")
    p.add_argument("--quiet", action="store_true", help="no progress output")
    add_data_flags(p)
    add_trust_flag(p)
    p.set_defaults(func=cmd_ensemble)
