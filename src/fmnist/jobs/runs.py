"""`fmnist runs`: every run folder under some folders, one row each, read through RunFolder; the
hyperparameters that differ between them; and two runs side by side."""

from __future__ import annotations

import dataclasses
from pathlib import Path

from fmnist.errors import FmnistError, UsageError
from fmnist.run.folder import CONFIG, RunFolder
from fmnist.training.config import HYPER, TrainConfig, shown_value

COLUMNS = ("run", "model", "recipe", "val_accuracy", "test_accuracy", "train_seconds", "status")
FIGURES = ("status", "best_epoch", "val_accuracy", "test_accuracy", "test_loss", "train_seconds")


def find_runs(roots: list[Path]) -> list[RunFolder]:
    """The run folders at or under `roots` (a folder with a readable config.json), each once."""
    found: dict[Path, RunFolder] = {}
    for root in roots:
        candidates = [root] if (root / CONFIG).is_file() else sorted(p.parent for p in root.rglob(CONFIG))
        for path in candidates:
            run = RunFolder(path)
            try:
                run.read_config()
            except FmnistError:  # a config.json that is not a run's
                continue
            found.setdefault(path.resolve(), run)
    return list(found.values())


def describe(run: RunFolder) -> dict:
    """One run's row: what it is, what it reached, how it stands. The test accuracy only where the
    run measured one; the validation accuracy is the best epoch's."""
    cfg, history, metrics = run.read_config(), run.history_so_far(), run.metrics() or {}
    seconds = metrics.get("train_seconds", history[-1].get("elapsed") if history else None)
    return {
        "run": str(run.path),
        "model": cfg.model,
        "recipe": cfg.recipe,
        "val_accuracy": max((h["val_accuracy"] for h in history), default=None),
        "test_accuracy": metrics.get("test_accuracy"),
        "test_loss": metrics.get("test_loss"),
        "best_epoch": metrics.get("best_epoch"),
        "train_seconds": seconds,
        "status": run.status(),
        "config": {k: shown_value(v) for k, v in dataclasses.asdict(cfg).items()},
    }


def differing(rows: list[dict]) -> list[str]:
    """The hyperparameters (other than the model) whose values differ between the rows."""
    keys = [k for k in TrainConfig.fields_of(HYPER) if k != "model"]
    return [k for k in keys if len({repr(r["config"][k]) for r in rows}) > 1]


def select(rows: list[dict], filters: list[str], sort: str) -> list[dict]:
    """Rows matching every KEY=VALUE filter (a column or a config field), sorted by `sort`
    (highest first for numbers; rows without the value last)."""
    for f in filters:
        key, sep, value = f.partition("=")
        if not sep:
            raise UsageError(f"--filter {f!r}: give KEY=VALUE, such as model=deep_cnn")
        rows = [r for r in rows if str(r.get(key, r["config"].get(key))) == value]
    if sort not in (*COLUMNS, "test_loss", "best_epoch"):
        raise UsageError(f"--sort {sort!r}: give one of {', '.join((*COLUMNS, 'test_loss', 'best_epoch'))}")
    numeric = sort in ("val_accuracy", "test_accuracy", "test_loss", "train_seconds", "best_epoch")
    present = sorted((r for r in rows if r[sort] is not None), key=lambda r: r[sort], reverse=numeric)
    return present + [r for r in rows if r[sort] is None]


def compare(a: RunFolder, b: RunFolder) -> list[tuple[str, object, object, bool]]:
    """(field, A's value, B's value, differs) for every config field and figure of two runs."""
    ra, rb = describe(a.require()), describe(b.require())
    lines = [(k, ra["config"][k], rb["config"][k]) for k in ra["config"]]
    lines += [(k, ra[k], rb[k]) for k in FIGURES]
    return [(k, x, y, x != y) for k, x, y in lines]
