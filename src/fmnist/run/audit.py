"""An audit's folder: what `fmnist audit` found, its report, and a run folder per fold.

audit.json          settings, the data's fingerprint, per-fold figures, counts, timings
probabilities.npz   out-of-sample class probabilities: `train` [60000, 10], `test` [10000, 10]
label_issues.csv    split,index,given,suggested,score (most likely wrong first, per split)
duplicates.csv      split_a,index_a,split_b,index_b,similarity (most similar first)
label_issues.png, duplicates.png, report.html
fold-1 ... fold-K   the run that left out fold k and predicted it
all                 the run trained on every training image, which predicted the test set
"""

from __future__ import annotations

from pathlib import Path
from typing import Any

from fmnist.files import read_json
from fmnist.run.folder import RunFolder
from fmnist.run.written import Folder

AUDIT, PROBABILITIES = "audit.json", "probabilities.npz"
LABEL_ISSUES, DUPLICATES, REPORT = "label_issues.csv", "duplicates.csv", "report.html"
FIGURES = {"label_issues": "label_issues.png", "duplicates": "duplicates.png"}
ALL = "all"


class AuditFolder(Folder):
    # With the runs' names: --overwrite checks the fold folders inside by the same rules.
    WRITES = RunFolder.WRITES | {AUDIT, PROBABILITIES, LABEL_ISSUES, DUPLICATES, REPORT, *FIGURES.values()}

    def exists(self) -> bool:
        return self.file(AUDIT).is_file()

    def run(self, name: str) -> RunFolder:
        """The run folder `name` (fold-K or all) inside the audit, recorded as the audit's."""
        self.record(name)
        return RunFolder(self.file(name))

    def summary(self) -> dict[str, Any]:
        return read_json(self.file(AUDIT))

    def figure(self, name: str) -> Path:
        return self.record(FIGURES[name])


def audit_for(fingerprint: str, root: Path = Path("audits")) -> AuditFolder | None:
    """The newest finished audit under `root` of the data with this fingerprint, if any."""
    found = [AuditFolder(p.parent) for p in root.glob(f"*/{AUDIT}")]
    found = [a for a in found if a.summary().get("data", {}).get("fingerprint") == fingerprint]
    return max(found, key=lambda a: a.file(AUDIT).stat().st_mtime, default=None)
