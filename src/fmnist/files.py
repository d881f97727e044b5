"""Atomic writes and reads of plain files (bytes, text, JSON, CSV).

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
from collections.abc import Iterator
from pathlib import Path
from typing import Any

from fmnist.errors import FmnistError


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


def write_csv(path: Path, rows: list[dict[str, Any]], columns: list[str] | None = None) -> None:
    """Rows as CSV; with `columns`, the header is written even when there are no rows."""
    buf = io.StringIO()
    if rows or columns:
        writer = csv.DictWriter(buf, fieldnames=columns or list(rows[0]))
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
