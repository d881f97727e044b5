"""Creating or continuing a sweep's Optuna study: its sampler and pruner, and the record that makes
it reproducible (space, sampler and its settings, pruner, seed, Optuna and fmnist versions)."""

from __future__ import annotations

import logging
import warnings
from pathlib import Path

from fmnist import __version__
from fmnist.errors import FmnistError, UsageError
from fmnist.sweep.space import Space
from fmnist.sweep.storage import open_storage, redact, study_lock

SAMPLERS = ("tpe", "random", "grid")
PRUNERS = ("median", "hyperband", "none")


def quiet_optuna() -> None:
    """Optuna logs every trial at INFO and warns of experimental features; fmnist prints its own line."""
    import optuna

    optuna.logging.set_verbosity(logging.WARNING)
    warnings.filterwarnings("ignore", category=optuna.exceptions.ExperimentalWarning)


SEEDING = "the seed plus the number of trials in the study when a trial is proposed"


def make_sampler(name: str, seed: int, space: Space):
    """The sampler, and its settings as recorded. Its generator is seeded anew for every proposal
    (see `sampler_for`), so a sequential sweep proposes the same parameters again, and parallel
    workers, proposing at different counts, do not propose the same ones."""
    import optuna

    if name == "tpe":
        return optuna.samplers.TPESampler(seed=seed), {
            "name": "TPESampler",
            "seed": seed,
            "seeding": SEEDING,
            "n_startup_trials": 10,
        }
    if name == "random":
        return optuna.samplers.RandomSampler(seed=seed), {"name": "RandomSampler", "seed": seed, "seeding": SEEDING}
    if name == "grid":
        grid = {p.name: p.grid() for p in space.search}
        return optuna.samplers.GridSampler(grid, seed=seed), {
            "name": "GridSampler",
            "seed": seed,
            "seeding": SEEDING,
            "grid": grid,
        }
    raise UsageError(f"--sampler must be one of {', '.join(SAMPLERS)}, got {name!r}")


def sampler_for(name: str, seed: int, space: Space):
    """A function of the study's trial count giving the sampler of the next proposal. The grid's
    keeps the study's seed: its seed also orders the grid, and a grid point's number must mean the
    same point to every proposal (reseeded, two trials of one sweep ran the same point)."""
    return lambda count: make_sampler(name, seed if name == "grid" else seed + count, space)[0]


def make_pruner(name: str):
    import optuna

    if name == "median":  # from a trial's second epoch on, stop it below the median of earlier trials there
        return optuna.pruners.MedianPruner(n_startup_trials=5, n_warmup_steps=2), {
            "name": "MedianPruner",
            "n_startup_trials": 5,
            "n_warmup_steps": 2,
        }
    if name == "hyperband":
        return optuna.pruners.HyperbandPruner(min_resource=1), {"name": "HyperbandPruner", "min_resource": 1}
    if name == "none":
        return optuna.pruners.NopPruner(), {"name": "NopPruner"}
    raise UsageError(f"--pruner must be one of {', '.join(PRUNERS)}, got {name!r}")


def open_sweep(
    name: str,
    folder: Path,
    storage_url: str | None,
    space: Space | None = None,
    sampler: str = "tpe",
    pruner: str = "median",
    seed: int = 0,
):
    """The study `name`: created with this space, sampler, pruner and seed, or continued when its
    record says the same. Without `space`, an existing study is opened to read (status, report).
    A study that exists with other settings is refused before anything is written."""
    import optuna

    quiet_optuna()
    missing = (
        f"no sweep named {name!r} in {redact(storage_url or str(folder))} "
        f"(start one: fmnist sweep run {name} --space ...)"
    )
    if space is None:
        if storage_url is None and not (folder / "journal.log").is_file():
            raise FmnistError(missing)
        try:
            return optuna.load_study(study_name=name, storage=open_storage(storage_url, folder))
        except KeyError:
            raise FmnistError(missing) from None
    the_sampler, sampler_settings = make_sampler(sampler, seed, space)
    the_pruner, pruner_settings = make_pruner(pruner)
    record = {"space": space.as_dict(), "sampler": sampler_settings, "pruner": pruner_settings, "seed": seed}
    with study_lock(storage_url, folder, name):  # also around the first worker's creating the tables
        storage = open_storage(storage_url, folder)
        try:
            study = optuna.load_study(study_name=name, storage=storage, sampler=the_sampler, pruner=the_pruner)
        except KeyError:
            study = optuna.create_study(
                study_name=name, storage=storage, direction="maximize", sampler=the_sampler, pruner=the_pruner
            )
            for key, value in {**record, "optuna": optuna.__version__, "fmnist": __version__}.items():
                study.set_user_attr(key, value)
            return study
    recorded = {k: study.user_attrs.get(k) for k in record}
    for key in record:
        if recorded[key] != record[key]:
            raise UsageError(
                f"sweep {name!r} exists with another {key} ({recorded[key]!r}, not {record[key]!r}); "
                "continue it with the same settings or start a sweep of another name"
            )
    return study
