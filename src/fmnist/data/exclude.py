"""Reading a list of training images to leave out (`--exclude FILE.csv`), such as the label issues
or duplicates an audit wrote."""

from __future__ import annotations

import csv
from pathlib import Path


class ExcludeFileError(ValueError):
    """An --exclude file that cannot be used; its message is one line for the user."""


def read_index_csv(path: str | Path) -> list[int]:
    """The sorted, distinct training-set indices of a CSV with an `index` column; with a `split`
    column, only its `train` rows count (an audit's files list test images too). An audit's
    duplicates.csv (pairs) leaves out one copy of each: the later image of a training pair, and the
    training image of a training-test pair (test-test pairs have none to leave out)."""
    try:
        with open(path, newline="", encoding="utf-8") as f:
            lines = list(csv.reader(f))
    except (OSError, UnicodeDecodeError, csv.Error) as e:
        raise ExcludeFileError(f"cannot read {path}: {getattr(e, 'strerror', None) or e}") from None
    header = lines[0] if lines else []
    if {"split_a", "index_a", "split_b", "index_b"} <= set(header) and "index" not in header:
        return one_copy_each(path, header, lines[1:])
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


def one_copy_each(path, header: list[str], rows: list[list[str]]) -> list[int]:
    """From duplicate pairs: the training image of each pair to leave out (see read_index_csv)."""
    col = {name: header.index(name) for name in ("split_a", "index_a", "split_b", "index_b")}
    indices = set()
    for number, row in enumerate(rows, start=2):
        if not row:
            continue
        try:
            split_a, split_b = row[col["split_a"]], row[col["split_b"]]
            index_a, index_b = int(row[col["index_a"]]), int(row[col["index_b"]])
        except (IndexError, ValueError):
            raise ExcludeFileError(f"{path}, line {number}: not a pair of splits and whole-number indices") from None
        if min(index_a, index_b) < 0:
            raise ExcludeFileError(f"{path}, line {number}: a negative index")
        if split_b == "train":  # both training images: the later one goes
            indices.add(max(index_a, index_b) if split_a == "train" else index_b)
        elif split_a == "train":  # the training copy of a test image
            indices.add(index_a)
    return sorted(indices)
