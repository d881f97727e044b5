"""`fmnist sweep run|status|report`: the command-line side of sweeps (the search itself is in
space, study, worker and report, imported only when a sweep command runs: they need optuna)."""

from __future__ import annotations

import dataclasses
from pathlib import Path

from fmnist.cli.flags import Parser, add_config_flags, add_data_flags, given_flags
from fmnist.device import resolve_device
from fmnist.errors import FmnistError, UsageError
from fmnist.run.tracking import check_tracking
from fmnist.training.config import HYPER, TrainConfig

SAMPLERS, PRUNERS = ("tpe", "random", "grid"), ("median", "hyperband", "none")  # as in sweep/study.py
# Every training setting as a flag, but --seed: that is the sampler's (the trials' seed is the space's).
SWEEP_FLAGS = [n for n in TrainConfig.fields_of(HYPER) if n != "seed"]


def sweep_modules():
    try:
        import optuna  # noqa: F401
    except ImportError:
        raise FmnistError(
            "fmnist sweep needs the sweep extra (optuna is missing): pip install 'fmnist[sweep]'"
        ) from None
    from fmnist.sweep import report, space, study, worker

    return space, study, worker, report


def sweep_folder(args) -> Path:
    if not args.name or "/" in args.name or args.name.startswith("."):
        raise UsageError(f"a sweep name is a plain name (letters, digits, - and _), got {args.name!r}")
    return Path(args.dir) / args.name


def cmd_sweep_run(args) -> int:
    space_mod, study_mod, worker, _ = sweep_modules()
    if args.trials < 1 or not args.heartbeat > 0:
        raise UsageError("--trials must be at least 1 and --heartbeat positive")
    folder = sweep_folder(args)
    space = with_flags(space_mod.read_space(args.space), args)  # every check before the study is touched
    where = {
        k: v
        for k, v in {
            "device": args.device,
            "data_dir": args.data_dir,
            "verify": args.verify,
            "track": args.track,
        }.items()
        if v is not None
    }
    space.config({}, **where)  # the fixed values and where it runs, checked once more as a whole
    resolve_device(args.device or "auto")
    check_tracking(args.track or "")
    study = study_mod.open_sweep(args.name, folder, args.storage, space, args.sampler, args.pruner, args.seed)
    sweep = worker.Sweep(
        study,
        space,
        folder,
        args.trials,
        args.storage,
        args.heartbeat,
        where,
        args.quiet,
        study_mod.sampler_for(args.sampler, args.seed, space),
    )
    study.set_user_attr("trials", args.trials)  # how many the sweep asks for: its end, for the report
    ran = worker.run_worker(sweep)
    best = study.best_trial if any(t.value is not None for t in study.get_trials(deepcopy=False)) else None
    print(
        f"sweep {args.name}: this worker ran {ran} trial(s); "
        + (
            f"best so far trial {best.number}, validation accuracy {best.value:.4f}"
            if best
            else "no complete trial yet"
        )
        + f" (fmnist sweep status {args.name})"
    )
    return 0


def with_flags(space, args):
    """The space with the training flags given on the command line as fixed values over its own
    (`--epochs 1` for a quick sweep); a flag that names a searched setting is refused."""
    given = {k: v for k, v in given_flags(args).items() if v is not None and k in SWEEP_FLAGS}
    searched = sorted(set(given) & {p.name for p in space.search})
    if searched:
        flags = ", ".join("--" + k.replace("_", "-") for k in searched)
        raise UsageError(f"{flags}: searched by the space; drop the flag or take it out of [search]")
    return dataclasses.replace(space, fixed={**space.fixed, **given})


def cmd_sweep_status(args) -> int:
    _, study_mod, _, report = sweep_modules()
    study = study_mod.open_sweep(args.name, sweep_folder(args), args.storage)
    header, body = report.status_table(study)
    widths = [max(len(h), *(len(r[i]) for r in body)) if body else len(h) for i, h in enumerate(header)]
    print("  ".join(h.ljust(w) for h, w in zip(header, widths)))
    for row in body:
        print("  ".join(c.ljust(w) for c, w in zip(row, widths)))
    return 0


def cmd_sweep_report(args) -> int:
    _, study_mod, _, report = sweep_modules()
    folder = sweep_folder(args)
    study = study_mod.open_sweep(args.name, folder, args.storage)
    folder.mkdir(parents=True, exist_ok=True)
    best = report.write_report(study, folder, args.data_dir, args.verify)
    test = (
        f"test accuracy {best['test_accuracy']:.4f}"
        if best["test_accuracy"] is not None
        else "no test figure yet (taken once, when the sweep has ended)"
    )
    print(
        f"best trial {best['trial']}: validation accuracy {best['val_accuracy']:.4f}, {test}; "
        f"wrote {folder / 'report.html'} and report.md"
    )
    return 0


def add_parsers(sub) -> None:
    p = sub.add_parser("sweep", help="search hyperparameters with Optuna (run, status, report)")
    actions = p.add_subparsers(dest="action", required=True, parser_class=Parser)
    for name, func, text in (
        ("run", cmd_sweep_run, "create or continue a sweep and run trials in this worker"),
        ("status", cmd_sweep_status, "print the sweep's trials, best first"),
        ("report", cmd_sweep_report, "write the sweep's report, with the best trial's test accuracy"),
    ):
        q = actions.add_parser(name, help=text)
        q.add_argument("name", help="the sweep's name (its folder is DIR/NAME)")
        q.add_argument("--dir", default="sweeps", help="the folder of sweeps (default sweeps)")
        q.add_argument(
            "--storage",
            metavar="URL",
            help="a database URL (e.g. postgresql://user@host/db) shared by workers on many machines "
            "(default: a journal file in the sweep's folder, for workers on this machine)",
        )
        q.set_defaults(func=func)
        if name == "report":
            add_data_flags(q)
        if name != "run":
            continue
        q.add_argument(
            "--space",
            required=True,
            metavar="FILE.toml|NAME",
            help="search space: a TOML file or a shipped space (fast, shallow, best)",
        )
        q.add_argument(
            "--trials", type=int, default=20, help="trials in the whole study, all workers together (default 20)"
        )
        q.add_argument("--sampler", choices=SAMPLERS, default="tpe", help="default tpe")
        q.add_argument("--pruner", choices=PRUNERS, default="median", help="default median")
        q.add_argument("--seed", type=int, default=0, help="the sampler's seed (default 0)")
        q.add_argument(
            "--heartbeat",
            type=float,
            default=10.0,
            help="seconds between a running trial's heartbeats; a trial silent for four is retried (default 10)",
        )
        add_config_flags(q, SWEEP_FLAGS, "fixed training settings for every trial, over the space's [fixed]")
        q.add_argument("--device", help="auto, cpu, cuda, cuda:N, mps (default auto)")
        q.add_argument(
            "--track",
            metavar="mlflow[:URI]",
            help="log each trial when it ends: to MLflow, as a nested run of the sweep's, or tensorboard[:DIR]",
        )
        add_data_flags(q)
        q.add_argument("--quiet", action="store_true", help="no line per trial")
