"""A study's folder: summary.json, its report and figures, and a run folder per model inside it."""

from __future__ import annotations

from pathlib import Path
from typing import Any

from fmnist.files import read_json
from fmnist.run.folder import CONFIG, SUMMARY, RunFolder
from fmnist.run.written import Folder


def study_rows(summary: dict[str, Any]) -> list[dict[str, Any]]:
    """summary.json's rows as its report shows them: each model's, then the models combined."""
    return summary["models"] + ([summary["combined"]] if "combined" in summary else [])


class StudyFolder(Folder):
    """A study: summary.json, its report and figures, and a run folder per model inside it."""

    SUMMARY = SUMMARY
    WRITES = RunFolder.WRITES

    def exists(self) -> bool:
        return self.file(self.SUMMARY).is_file()

    def run(self, model: str) -> RunFolder:
        self.record(model)
        return RunFolder(self.file(model))

    def summary(self) -> dict[str, Any]:
        return read_json(self.file(self.SUMMARY))

    def combined(self) -> RunFolder | None:
        """The ensemble of the study's models, where the study made one."""
        row = self.summary().get("combined") if self.exists() else None
        run = RunFolder(row["run_dir"]) if row else None
        return run if run is not None and run.has_checkpoint() else None

    def runs(self) -> list[RunFolder]:
        """The study's runs that have a tested checkpoint, in the study's order."""
        if self.exists():
            runs = [RunFolder(m["run_dir"]) for m in self.summary()["models"]]
        else:
            runs = [RunFolder(p.parent) for p in sorted(self.path.glob(f"*/{CONFIG}"))]
        return [r for r in runs if r.has_checkpoint()]


def latest_study(root: Path = Path("runs")) -> StudyFolder | None:
    """The newest study under `root` (runs/study, runs/study-TIMESTAMP, ...), by its summary's time."""
    studies = [StudyFolder(p.parent) for p in root.glob(f"study*/{StudyFolder.SUMMARY}")]
    studies = [s for s in studies if s.runs()]
    return max(studies, key=lambda s: s.file(StudyFolder.SUMMARY).stat().st_mtime, default=None)
