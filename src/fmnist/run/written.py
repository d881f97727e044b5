"""What fmnist wrote in a folder: the names are recorded (`.fmnist-files.json`) before each file
appears, and replacing the folder (`--overwrite`) removes those names and nothing else."""

from __future__ import annotations

import os
import tempfile
from pathlib import Path
from typing import Any

from fmnist.errors import FmnistError
from fmnist.files import read_json, write_bytes, write_json, write_text

MANIFEST = ".fmnist-files.json"


def _first_existing(path: Path) -> Path:
    path = path.absolute()
    while not path.exists() and path != path.parent:
        path = path.parent
    return path


class Folder:
    """A folder fmnist writes (a run's, a study's): the names it wrote, and replacing them."""

    def __init__(self, path: Path | str):
        self.path = Path(path)
        self._recorded: set[str] | None = None

    def __str__(self) -> str:
        return str(self.path)

    def file(self, name: str) -> Path:
        return self.path / name

    def recorded(self) -> set[str]:
        """The names fmnist wrote here (files, and the folders of a study's runs)."""
        if self._recorded is None:
            manifest = self.file(MANIFEST)
            self._recorded = set(read_json(manifest)["written"]) if manifest.is_file() else set()
        return self._recorded

    def record(self, name: str) -> Path:
        """Note `name` as fmnist's before it is written; returns its path."""
        if name not in self.recorded():
            self._recorded.add(name)
            write_json(self.file(MANIFEST), {"written": sorted(self._recorded)})
        return self.file(name)

    def write_json(self, name: str, obj: Any) -> Path:
        write_json(self.record(name), obj)
        return self.file(name)

    def write_text(self, name: str, text: str) -> Path:
        write_text(self.record(name), text)
        return self.file(name)

    def write_bytes(self, name: str, data: bytes) -> Path:
        write_bytes(self.record(name), data)
        return self.file(name)

    def check_new(self, overwrite: bool) -> None:
        """Refuse, without writing anything, a folder that cannot be used: a file in its place, a
        folder holding files (unless `overwrite`: then fmnist's own are replaced, and a file of
        someone else's that a new run would write over is refused), or a place that cannot be written."""
        path = self.path
        if path.exists() and not path.is_dir():
            raise FmnistError(f"output path {path} exists and is not a folder")
        if path.is_dir() and any(path.iterdir()):
            if not overwrite:
                raise FmnistError(f"output folder {path} is not empty (use --overwrite to replace it)")
            self._check_replaceable()
        base = _first_existing(path)
        if not base.is_dir():
            raise FmnistError(f"cannot write to output folder {path}: {base} is not a folder")
        if not os.access(base, os.W_OK | os.X_OK):
            raise FmnistError(f"cannot write to output folder {path}: permission denied")

    def _check_replaceable(self) -> None:
        ours = self.recorded()
        if not ours and not self.file(MANIFEST).is_file():
            raise FmnistError(
                f"output folder {self.path} holds files that fmnist did not record writing; "
                "not overwriting it (choose another --out or empty it yourself)"
            )
        for entry in sorted(self.path.iterdir()):
            if entry.name in ours and entry.is_dir() and not entry.is_symlink():
                type(self)(entry)._check_replaceable()
            elif entry.name not in ours and entry.name != MANIFEST and not _is_temporary(entry.name):
                if entry.name in self.written_names():
                    raise FmnistError(
                        f"output folder {self.path} holds {entry.name}, which fmnist did not "
                        "write; not overwriting it (choose another --out or move it yourself)"
                    )

    WRITES: frozenset[str] = frozenset()  # names a new folder of this kind may write

    def written_names(self) -> frozenset[str]:
        """Names fmnist may write here: a foreign file of such a name blocks --overwrite."""
        return self.WRITES

    def prepare(self, overwrite: bool) -> None:
        """Check the folder (see check_new), remove what fmnist wrote there when `overwrite`, and
        create it: a new run never finds an earlier run's files beside its own."""
        self.check_new(overwrite)
        try:
            if self.path.is_dir():
                self._remove_recorded()
            self.path.mkdir(parents=True, exist_ok=True)
            probe = tempfile.NamedTemporaryFile(dir=self.path, prefix=".write-test-", suffix=".tmp")
            probe.close()
        except OSError as e:
            raise FmnistError(f"cannot write to output folder {self.path}: {e.strerror}") from None

    def _remove_recorded(self) -> None:
        for name in sorted(self.recorded()):
            entry = self.file(name)
            if entry.is_dir() and not entry.is_symlink():
                type(self)(entry)._remove_recorded()
                if not any(entry.iterdir()):
                    entry.rmdir()
            elif entry.exists() or entry.is_symlink():
                entry.unlink()
        for entry in self.path.glob(".*.tmp"):  # left by a write that was killed
            entry.unlink()
        self.file(MANIFEST).unlink(missing_ok=True)
        self._recorded = set()


def _is_temporary(name: str) -> bool:
    return name.startswith(".") and name.endswith(".tmp")
