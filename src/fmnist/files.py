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
import shutil
import tempfile
from pathlib import Path
from typing import Any, Iterator

import torch

from .errors import FmnistError

CHECKPOINT_FORMAT = "fmnist-checkpoint-1"


def umask() -> int:
    """The process's file-creation mask, read without changing it where Linux allows."""
    with contextlib.suppress(OSError, ValueError):
        with open("/proc/self/status", encoding="ascii") as f:
            for line in f:
                if line.startswith("Umask:"):
                    return int(line.split()[1], 8)
    mask = os.umask(0o022)  # elsewhere: set and restore (not thread-safe, hence the fallback only)
    os.umask(mask)
    return mask


@contextlib.contextmanager
def atomic_path(path: Path) -> Iterator[Path]:
    """Yield a temporary path beside `path`; rename it onto `path` only if the block succeeds.

    The file gets the mode a plain `open()` would give it (0666 less the umask), or the mode of the
    file it replaces: mkstemp's owner-only 0600 is right for the temporary file, not for the result.
    """
    path = Path(path)
    fd, tmp = tempfile.mkstemp(dir=path.parent, prefix=f".{path.name}.", suffix=".tmp")
    os.close(fd)
    try:
        yield Path(tmp)
        try:
            mode = os.stat(path).st_mode & 0o7777
        except FileNotFoundError:
            mode = 0o666 & ~umask()
        os.chmod(tmp, mode)
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


# The names fmnist writes in run and study folders (a study's runs are folders inside it). An
# --overwrite removes these and refuses a folder holding anything else: it is not fmnist's to clear.
WRITTEN_NAMES = frozenset({
    "config.json", "history.csv", "best.pt", "last.pt", "metrics.json", "diverged.json",
    "curves.png", "confusion.png", "samples.png", "misclassified.png", "report.html", "report.md",
    "summary.json", "val_curves.png", "f1.png", "model.onnx", "model.onnx.json", "pruned.json", "failed.json",
})


def _written_by_fmnist(entry: Path) -> bool:
    if entry.is_symlink():
        return False
    if entry.is_dir():
        return all(_written_by_fmnist(e) for e in entry.iterdir())
    name = entry.name
    return name in WRITTEN_NAMES or (name.startswith(".") and name.endswith(".tmp"))


def _first_existing(path: Path) -> Path:
    path = path.absolute()
    while not path.exists() and path != path.parent:
        path = path.parent
    return path


def check_out_dir(path: Path, overwrite: bool) -> None:
    """Refuse an output folder that cannot be used, without writing anything: a file in its place,
    a folder that is not empty (unless `overwrite`, and then only one that fmnist wrote), or a
    place that cannot be written."""
    path = Path(path)
    if path.exists() and not path.is_dir():
        raise FmnistError(f"output path {path} exists and is not a folder")
    if path.is_dir() and any(path.iterdir()):
        if not overwrite:
            raise FmnistError(f"output folder {path} is not empty (use --overwrite to replace it)")
        foreign = next((e for e in sorted(path.iterdir()) if not _written_by_fmnist(e)), None)
        if foreign is not None:
            raise FmnistError(f"output folder {path} holds {foreign.name}, which fmnist did not write; "
                              "not overwriting it (choose another --out or remove it yourself)")
    base = _first_existing(path)
    if not base.is_dir():
        raise FmnistError(f"cannot write to output folder {path}: {base} is not a folder")
    if not os.access(base, os.W_OK | os.X_OK):
        raise FmnistError(f"cannot write to output folder {path}: permission denied")


def prepare_out_dir(path: Path, overwrite: bool) -> Path:
    """Check the output folder (see check_out_dir), empty it of what fmnist wrote there when
    `overwrite`, and create it: a new run never finds an earlier run's files beside its own."""
    path = Path(path)
    check_out_dir(path, overwrite)
    try:
        if path.is_dir():
            for entry in path.iterdir():
                shutil.rmtree(entry) if entry.is_dir() else entry.unlink()
        path.mkdir(parents=True, exist_ok=True)
        probe = tempfile.NamedTemporaryFile(dir=path, prefix=".write-test-", suffix=".tmp")
        probe.close()
    except OSError as e:
        raise FmnistError(f"cannot write to output folder {path}: {e.strerror}") from None
    return path
