"""Atomic writes and the plain-file formats of a run folder (JSON, CSV, checkpoints).

Every file is written to a temporary sibling and renamed, so a crash never leaves a half-written
file where a good one is expected.
"""

from __future__ import annotations

import contextlib
import csv
import io
import json
import os
import tempfile
from pathlib import Path
from typing import Any, Iterator

import torch

from .errors import FmnistError

CHECKPOINT_FORMAT = "fmnist-checkpoint-1"


@contextlib.contextmanager
def atomic_path(path: Path) -> Iterator[Path]:
    """Yield a temporary path beside `path`; rename it onto `path` only if the block succeeds."""
    path = Path(path)
    fd, tmp = tempfile.mkstemp(dir=path.parent, prefix=f".{path.name}.", suffix=".tmp")
    os.close(fd)
    try:
        yield Path(tmp)
        os.replace(tmp, path)
    finally:
        with contextlib.suppress(FileNotFoundError):
            os.unlink(tmp)


def write_bytes(path: Path, data: bytes) -> None:
    with atomic_path(path) as tmp:
        tmp.write_bytes(data)


def write_text(path: Path, text: str) -> None:
    write_bytes(path, text.encode("utf-8"))


def write_json(path: Path, obj: Any) -> None:
    write_text(path, json.dumps(obj, indent=2) + "\n")


def read_json(path: Path) -> Any:
    try:
        return json.loads(Path(path).read_text(encoding="utf-8"))
    except FileNotFoundError:
        raise FmnistError(f"missing file: {path}") from None
    except (OSError, UnicodeDecodeError, json.JSONDecodeError) as e:
        raise FmnistError(f"cannot read {path}: {e}") from None


def write_csv(path: Path, rows: list[dict[str, Any]]) -> None:
    buf = io.StringIO()
    if rows:
        writer = csv.DictWriter(buf, fieldnames=list(rows[0]))
        writer.writeheader()
        writer.writerows(rows)
    write_text(path, buf.getvalue())


def read_csv(path: Path) -> list[dict[str, float]]:
    """Read a numeric CSV (one row per epoch) back into dicts of floats."""
    try:
        with open(path, newline="", encoding="utf-8") as f:
            return [{k: float(v) for k, v in row.items()} for row in csv.DictReader(f)]
    except FileNotFoundError:
        raise FmnistError(f"missing file: {path}") from None
    except (OSError, ValueError, TypeError) as e:
        raise FmnistError(f"cannot read {path}: {e}") from None


def save_checkpoint(path: Path, state: dict[str, Any]) -> None:
    with atomic_path(path) as tmp:
        torch.save({"format": CHECKPOINT_FORMAT, **state}, tmp)


def load_checkpoint(path: Path) -> dict[str, Any]:
    """Load a checkpoint safely (no pickled code) and check that it is one of ours."""
    path = Path(path)
    if not path.is_file():
        raise FmnistError(f"missing checkpoint: {path}")
    try:
        state = torch.load(path, map_location="cpu", weights_only=True)
    except Exception as e:  # torch raises many types for truncated or foreign files
        raise FmnistError(f"{path} is not a readable checkpoint ({type(e).__name__})") from None
    if not isinstance(state, dict) or state.get("format") != CHECKPOINT_FORMAT:
        raise FmnistError(f"{path} is not an fmnist checkpoint")
    return state


def prepare_out_dir(path: Path, overwrite: bool) -> Path:
    """Create an output folder; refuse a non-empty one unless `overwrite`."""
    path = Path(path)
    if path.exists() and not path.is_dir():
        raise FmnistError(f"output path {path} exists and is not a folder")
    if path.is_dir() and any(path.iterdir()) and not overwrite:
        raise FmnistError(f"output folder {path} is not empty (use --overwrite to replace it)")
    try:
        path.mkdir(parents=True, exist_ok=True)
        probe = tempfile.NamedTemporaryFile(dir=path, prefix=".write-test-")
        probe.close()
    except OSError as e:
        raise FmnistError(f"cannot write to output folder {path}: {e.strerror}") from None
    return path
