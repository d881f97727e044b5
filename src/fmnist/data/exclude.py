"""Reading a list of training images to leave out (`--exclude FILE.csv`), such as the label issues
or duplicates an audit wrote."""

from __future__ import annotations

import csv
from pathlib import Path


class ExcludeFileError(ValueError):
    """An --exclude file that cannot be used; its message is one line for the user."""


def read_index_csv(path: str | Path) -> list[int]:
    """The sorted, distinct training-set indices of a CSV with an `index` column; with a `split`
    column, only its `train` rows count (an audit's files list test images too)."""
    try:
        with open(path, newline="", encoding="utf-8") as f:
            lines = list(csv.reader(f))
    except (OSError, UnicodeDecodeError, csv.Error) as e:
        raise ExcludeFileError(f"cannot read {path}: {getattr(e, 'strerror', None) or e}") from None
    header = lines[0] if lines else []
    if "index" not in header:
        raise ExcludeFileError(f"{path} has no 'index' column (its columns: {', '.join(header) or 'none'})")
    at, split = header.index("index"), header.index("split") if "split" in header else None
    indices = set()
    for number, row in enumerate(lines[1:], start=2):
        if not row or (split is not None and split < len(row) and row[split] != "train"):
            continue
        text = row[at] if at < len(row) else ""
        if not text.strip().isdigit():
            raise ExcludeFileError(f"{path}, line {number}: index {text!r} is not a whole number from 0")
        indices.add(int(text))
    return sorted(indices)
