"""The runs query behind `fmnist runs` and the server's runs view: every run folder under some
folders, one row each, read through RunFolder; rows filtered and compared by their values (not by
how a table shows them), sorted by what "better" means for each column; two runs side by side."""

from __future__ import annotations

import dataclasses
import difflib
import math
import operator
import re
from pathlib import Path

from fmnist.errors import FmnistError, UsageError
from fmnist.run.folder import CONFIG, RunFolder
from fmnist.training.config import HYPER, TrainConfig, shown_value

DEFAULT_ROOTS = ("runs", "sweeps", "audits")  # where runs are looked for unless told
COLUMNS = ("run", "model", "recipe", "val_accuracy", "test_accuracy", "train_seconds", "status")
FIGURES = ("status", "best_epoch", "val_accuracy", "test_accuracy", "test_loss", "train_seconds")
# Sorted best first: the highest accuracy, the lowest loss, the fewest seconds and epochs.
HIGHER_IS_BETTER = {"val_accuracy": True, "test_accuracy": True, "test_loss": False, "train_seconds": False}
SORTABLE = (*COLUMNS, "test_loss", "best_epoch")
OPERATORS = {
    "!=": operator.ne,
    ">=": operator.ge,
    "<=": operator.le,
    "=": operator.eq,
    ">": operator.gt,
    "<": operator.lt,
}
FILTER = re.compile(r"^([A-Za-z_][A-Za-z0-9_]*)\s*(!=|>=|<=|=|>|<)(.*)$")


def list_runs(roots: list[Path], filters: list[str] = (), sort: str = "val_accuracy") -> list[dict]:
    """The rows of `fmnist runs ROOTS --filter ... --sort ...` (and of fmnist.runs())."""
    missing = [str(r) for r in roots if not Path(r).is_dir()]
    if missing:
        raise UsageError(f"not a folder: {missing[0]}")
    return select([describe(r) for r in find_runs([Path(r) for r in roots])], list(filters), sort)


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
    run measured one; the validation accuracy is the best epoch's. `config` holds the values
    themselves (the table shows a long list by its length, shown())."""
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
        "config": dataclasses.asdict(cfg),
    }


def shown(row: dict) -> dict:
    """The row with its config as a table or a JSON listing shows it (long lists by their length)."""
    return {**row, "config": {k: shown_value(v) for k, v in row["config"].items()}}


def differing(rows: list[dict]) -> list[str]:
    """The hyperparameters (other than the model) whose values differ between the rows."""
    keys = [k for k in TrainConfig.fields_of(HYPER) if k != "model"]
    return [k for k in keys if len({repr(r["config"][k]) for r in rows}) > 1]


def value_of(row: dict, key: str):
    return row[key] if key in row and key != "config" else row["config"][key]


def keys_of(rows: list[dict]) -> list[str]:
    return [*SORTABLE, *(rows[0]["config"] if rows else dataclasses.asdict(TrainConfig()))]


def unknown(kind: str, key: str, rows: list[dict]) -> UsageError:
    names = keys_of(rows)
    close = difflib.get_close_matches(key, names, n=1)
    hint = f"; did you mean {close[0]!r}?" if close else f"; give one of {', '.join(SORTABLE)} or a setting"
    return UsageError(f"{kind} {key!r}: no such column or setting{hint}")


def matches(value, op, text: str) -> bool:
    """Whether `value op text` holds, `text` read as the value's own type: true/false for a flag,
    a number for a number (equal where it is the value, or what the table shows of it)."""
    text = text.strip()
    if value is None:
        return op is operator.ne if text.lower() not in ("", "none", "null") else op is operator.eq
    if isinstance(value, bool):
        flag = {"true": True, "yes": True, "1": True, "false": False, "no": False, "0": False}.get(text.lower())
        if flag is None:
            raise UsageError(f"--filter: {text!r} is not true or false")
        return op(value, flag)
    if isinstance(value, (int, float)):
        try:
            number = float(text)
        except ValueError:
            raise UsageError(f"--filter: {text!r} is not a number") from None
        same = math.isclose(value, number, rel_tol=1e-9, abs_tol=0.0) or cell(value) == cell(number)
        if op is operator.eq:
            return same
        if op is operator.ne:
            return not same
        return op(value, number)
    if op not in (operator.eq, operator.ne):
        raise UsageError(f"--filter: {text!r}: only = and != compare text")
    return op(str(value), text)


def select(rows: list[dict], filters: list[str], sort: str) -> list[dict]:
    """Rows matching every filter (KEY=VALUE, or !=, >=, <=, >, <; a column or a setting), sorted by
    `sort`: best first for the figures (highest accuracy, lowest loss and seconds), ascending for
    the rest; rows without the value last."""
    for f in filters:
        m = FILTER.match(f.strip())
        if not m:
            raise UsageError(f"--filter {f!r}: give KEY=VALUE (or !=, >=, <=, >, <), such as model=deep_cnn")
        key, op, text = m.groups()
        if key not in keys_of(rows):
            raise unknown("--filter", key, rows)
        rows = [r for r in rows if matches(value_of(r, key), OPERATORS[op], text)]
    if sort not in keys_of(rows):
        raise unknown("--sort", sort, rows)
    present = [r for r in rows if value_of(r, sort) is not None]
    present.sort(key=lambda r: sort_key(value_of(r, sort)), reverse=HIGHER_IS_BETTER.get(sort, False))
    return present + [r for r in rows if value_of(r, sort) is None]


def sort_key(value):
    return (0, value) if isinstance(value, (int, float)) else (1, str(value))


def cell(value) -> str:
    """A value as the table shows it: a number by its magnitude (four significant digits)."""
    if value is None:
        return ""
    if isinstance(value, float):
        return f"{value:.4g}"
    return str(shown_value(value))


def compare(a: RunFolder, b: RunFolder) -> list[tuple[str, object, object, bool]]:
    """(field, A's value, B's value, differs) for every config field and figure of two runs; a
    field differs where its values do, even where they show alike (two lists of one length)."""
    ra, rb = describe(a.require()), describe(b.require())
    lines = [(k, ra["config"][k], rb["config"][k]) for k in ra["config"]]
    lines += [(k, ra[k], rb[k]) for k in FIGURES]
    return [(k, shown_value(x), shown_value(y), x != y) for k, x, y in lines]
