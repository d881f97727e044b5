"""An audit's folder: what `fmnist audit` found, its report, and a run folder per fold.

audit.json          settings, the data's fingerprint, per-fold figures, counts, timings
probabilities.npz   out-of-sample class probabilities: `train` [60000, 10] (averaged), `test` [10000, 10],
                    `train_repeats` [R, 60000, 10] (each cross-validation's, float16)
label_issues.csv    split,index,given,suggested,score (most likely wrong first, per split)
duplicates.csv      split_a,index_a,split_b,index_b,similarity (most similar first)
label_issues.png, duplicates.png, report.html
fold-1 ... fold-K   the run that left out fold k and predicted it (and, with the others, the test set)
fold-k-repeat-r     the same in the r-th cross-validation, with its own folds and seed
"""

from __future__ import annotations

import sys
from pathlib import Path
from typing import Any

from fmnist.errors import FmnistError
from fmnist.files import read_json
from fmnist.run.folder import RunFolder
from fmnist.run.written import Folder

AUDIT, PROBABILITIES = "audit.json", "probabilities.npz"
LABEL_ISSUES, DUPLICATES, REPORT = "label_issues.csv", "duplicates.csv", "report.html"
FIGURES = {"label_issues": "label_issues.png", "duplicates": "duplicates.png"}


class AuditFolder(Folder):
    # With the runs' names: --overwrite checks the fold folders inside by the same rules.
    WRITES = RunFolder.WRITES | {AUDIT, PROBABILITIES, LABEL_ISSUES, DUPLICATES, REPORT, *FIGURES.values()}

    def exists(self) -> bool:
        return self.file(AUDIT).is_file()

    def run(self, name: str) -> RunFolder:
        """The run folder `name` (fold-k, fold-k-repeat-r) inside the audit, recorded as the audit's."""
        self.record(name)
        return RunFolder(self.file(name))

    def summary(self) -> dict[str, Any]:
        return read_json(self.file(AUDIT))

    def figure(self, name: str) -> Path:
        return self.record(FIGURES[name])


def audit_for(fingerprint: str, root: Path = Path("audits")) -> AuditFolder | None:
    """The newest finished audit under `root` of the data with this fingerprint, if any."""
    found = []
    for path in root.glob(f"*/{AUDIT}"):
        audit = AuditFolder(path.parent)
        try:
            summary = audit.summary()
            if isinstance(summary, dict) and summary.get("data", {}).get("fingerprint") == fingerprint:
                found.append(audit)
        except (FmnistError, AttributeError) as e:  # another's broken audit must not cost this study
            print(f"warning: skipping the audit {audit.path}: {e}", file=sys.stderr)
    return max(found, key=lambda a: a.file(AUDIT).stat().st_mtime, default=None)
