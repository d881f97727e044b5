"""fmnist from Python: the commands as functions, on the same jobs and folders, so a run trained here
is a run folder every command reads and the same seed gives the same digits as `fmnist train`.

    import fmnist
    run = fmnist.train("deep_cnn", epochs=10, out="runs/deep")   # a registered name, a file or a class
    run.metrics["test_accuracy"], run.history, run.predict(["shirt.png"])
    study = fmnist.study(["shallow", "deep_cnn", MyNet], epochs=5)

A user's mistake is an FmnistError with the command line's message; nothing here prints a
traceback or exits. The kernel's interrupt stops training after a checkpoint, as Ctrl-C does: the
run can be resumed, and a KeyboardInterrupt says so.
"""

from __future__ import annotations

import contextlib
import difflib
import time
from pathlib import Path
from typing import Any

import torch

from fmnist.api.handles import Audit, Run, Study, Sweep
from fmnist.errors import UsageError
from fmnist.models.code import check_interface, record_class
from fmnist.models.network import create_network, resolve_network
from fmnist.run.audit import AuditFolder
from fmnist.run.study import StudyFolder
from fmnist.stops import Interrupted
from fmnist.training.config import TrainConfig, make_config, read_recipe

NOT_SETTINGS = ("network",)  # recorded by fmnist itself


def check_settings(settings: dict[str, Any]) -> None:
    """Every key a TrainConfig field, or one line naming the close matches."""
    known = [k for k in TrainConfig.fields_of("hyper", "run", "record") if k not in NOT_SETTINGS]
    for key in settings:
        if key not in known:
            close = difflib.get_close_matches(key, known, n=3)
            hint = f"did you mean {', '.join(map(repr, close))}? " if close else ""
            raise UsageError(f"unknown setting {key!r}; {hint}settings are TrainConfig's fields")


def config_of(model: Any, recipe: str | None, settings: dict[str, Any]) -> TrainConfig:
    """The config of `model` (a name, a file, a class spec, or a class or builder itself), from
    the recipe's values under `settings`, as the command line builds it from its flags."""
    check_settings(settings)
    base = read_recipe(recipe) if recipe else {}
    if isinstance(model, str) or model is None:
        given = {"model": model} if model else {}
        return resolve_network(make_config(base, settings, given))
    record = record_class(model)
    cfg = make_config(base, settings, {"model": record["name"], "network": record})
    with torch.random.fork_rng(devices=[]):  # the check draws no number the run's seed would
        check_interface(create_network(cfg), record["name"])
    return cfg


@contextlib.contextmanager
def interruptible(out: Path):
    """A stop during training (the kernel's interrupt, Ctrl-C, SIGTERM) raised as the
    KeyboardInterrupt a notebook expects, once the run has its checkpoint."""
    try:
        yield
    except Interrupted as e:
        raise KeyboardInterrupt(f"{e}; continue with fmnist.resume({str(out)!r})") from None


def train(
    model: Any = None,
    out: Path | str | None = None,
    *,
    recipe: str | None = None,
    overwrite: bool = False,
    **settings: Any,
) -> Run:
    """Train `model` into the run folder `out` (default runs/MODEL-TIMESTAMP) and test it once;
    `settings` are TrainConfig's fields (epochs=10, lr=1e-3, seed=0, quiet=True, data_dir=...)."""
    from fmnist.jobs.train import train_run

    cfg = config_of(model, recipe, settings)
    out = Path(out or f"runs/{cfg.model}-{time.strftime('%Y%m%d-%H%M%S')}")
    with interruptible(out):
        train_run(cfg, out, overwrite=overwrite)
    return Run(out)


def resume(run: Run | Path | str, epochs: int | None = None, **settings: Any) -> Run:
    """Continue a stopped run from its last checkpoint, or make it `epochs` long."""
    from fmnist.jobs.train import resume_run

    path = run.path if isinstance(run, Run) else Path(run)
    check_settings(settings)
    with interruptible(path):
        resume_run(path, {"epochs": epochs, **settings})
    return Run(path)


def study(
    models: list[Any] | None = None,
    out: Path | str | None = None,
    *,
    recipe: str | None = None,
    overwrite: bool = False,
    **settings: Any,
) -> Study:
    """Train and compare `models` (default the study's four; names, files, class specs or classes)
    under the same settings, with the study's report; `fmnist study` in Python."""
    from fmnist.jobs.study import run_study
    from fmnist.models.study import STUDY_MODELS

    net_args = settings.pop("net_args", None)
    check_settings(settings)
    base = make_config(read_recipe(recipe) if recipe else {}, settings)
    entries = [m if isinstance(m, str) else record_class(m) for m in (models or STUDY_MODELS)]
    out = Path(out or f"runs/study-{time.strftime('%Y%m%d-%H%M%S')}")
    with interruptible(out):
        run_study(entries, base, out, overwrite=overwrite, net_args=net_args)
    return Study(out)


def ensemble(
    members: list[Run | Path | str], out: Path | str | None = None, *, weights: str = "auto", overwrite: bool = False
) -> Run:
    """Combine trained runs validated on the same split into the ensemble run `out` (default
    runs/ensemble-TIMESTAMP), tested once; `fmnist ensemble` in Python. `weights`: auto (fitted or
    uniform, whichever validates better), fitted or uniform."""
    from fmnist.jobs.ensemble import ensemble_run

    paths = [m.path if isinstance(m, Run) else Path(m) for m in members]
    out = Path(out or f"runs/ensemble-{time.strftime('%Y%m%d-%H%M%S')}")
    ensemble_run(paths, out, weights, overwrite, quiet=True)
    return Run(out)


def audit(
    model: str | None = None,
    out: Path | str | None = None,
    *,
    folds: int = 5,
    repeats: int | None = None,
    similarity: float = 0.99,
    recipe: str | None = "fast",
    overwrite: bool = False,
    **settings: Any,
) -> Audit:
    """`fmnist audit` in Python: likely label errors and duplicates, into the folder `out`."""
    from fmnist.audit import REPEATS
    from fmnist.jobs.audit import run_audit

    cfg = config_of(model, recipe, settings)
    out = Path(out or f"audits/audit-{time.strftime('%Y%m%d-%H%M%S')}")
    run_audit(cfg, out, folds, similarity, overwrite, repeats=repeats or REPEATS)
    return Audit(out)


def open(path: Path | str, network: Any = None) -> Run | Study | Audit | Sweep:  # noqa: A001 (fmnist.open)
    """The folder at `path` as what it is: a Run, a Study, an Audit or a Sweep. `network`: the
    class of a run whose network is a class, to build it from (it is then not run from the
    run's copy of its source, and needs no trust)."""
    path = Path(path)
    if not path.is_dir():
        raise UsageError(f"{path} does not exist" if not path.exists() else f"{path}: a file, not a folder")
    if StudyFolder(path).exists():
        return Study(path)
    if AuditFolder(path).exists():
        return Audit(path)
    if (path / "journal.log").is_file():
        return Sweep(path)
    run = Run(path)  # a run folder, or the command line's one line saying why not
    if network is not None:
        from fmnist.models.code import LIVE

        recorded = run.config.network
        if recorded.get("kind") != "code":
            raise UsageError(f"{path}: its network is not a class, so network= does not apply")
        LIVE[recorded["sha256"]] = network
    return run


def runs(*folders: Path | str, filters: list[str] = (), sort: str = "val_accuracy"):
    """The rows of `fmnist runs FOLDERS` as a pandas DataFrame, the whole config in `config`."""
    import pandas as pd

    from fmnist.run.query import DEFAULT_ROOTS, list_runs, shown

    roots = [Path(f) for f in folders] or [Path(d) for d in DEFAULT_ROOTS if Path(d).is_dir()]
    return pd.DataFrame([shown(r) for r in list_runs(roots, filters, sort)])
