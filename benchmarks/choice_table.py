"""The validation table of a recipe's candidates: for every OUT/NAME-seedS-history.csv (or
NAME-history.csv), each seed's best validation accuracy (the checkpoint a run tests) and its training seconds to
each level, then the candidate's mean over its seeds; where OUT/NAME-validation.json was kept, also the
tested checkpoint's validation accuracy with its test-time views (what an ensemble's or a shifted TTA's
candidates compare on). Only histories and those validation figures are read: no test figure.

    python benchmarks/choice_table.py OUT 0.90 0.91 ...
"""

from __future__ import annotations

import csv
import json
import re
import statistics
import sys
from collections import defaultdict
from pathlib import Path


def first(rows: list[dict], level: float) -> float | None:
    hit = next((r for r in rows if float(r["val_accuracy"]) >= level), None)
    return float(hit["elapsed"]) if hit else None


def main(out: Path, levels: list[float]) -> None:
    runs: dict[str, list[list[dict]]] = defaultdict(list)
    tested: dict[str, list[float]] = defaultdict(list)
    for path in sorted(out.glob("*-history.csv")):
        rows = list(csv.DictReader(path.open()))
        if rows:
            name = re.sub(r"(-seed\d+)?-history\.csv$", "", path.name)
            runs[name].append(rows)
            views = path.with_name(path.name.replace("-history.csv", "-validation.json"))
            if views.is_file():
                tested[name].append(json.loads(views.read_text())["accuracy"])
    heads = " | ".join(f"s to {level * 100:g} %" for level in levels)
    print(f"| candidate | seeds | best validation, each seed | mean | as tested, mean | training s, mean | {heads} |")
    print("|---|---|---|---|---|---|" + "---|" * len(levels))
    for name, seeds in runs.items():
        best = [max(float(r["val_accuracy"]) for r in rows) for rows in seeds]
        seconds = statistics.mean(float(rows[-1]["elapsed"]) for rows in seeds)
        times = []
        for level in levels:
            hits = [first(rows, level) for rows in seeds]
            times.append(", ".join("never" if h is None else f"{h:.0f}" for h in hits))
        each = ", ".join(f"{v:.4f}" for v in best)
        views = f"{statistics.mean(tested[name]):.4f}" if len(tested[name]) == len(seeds) else "—"
        print(
            f"| {name} | {len(seeds)} | {each} | {statistics.mean(best):.4f} | {views} | {seconds:.1f} "
            f"| {' | '.join(times)} |"
        )


if __name__ == "__main__":
    main(Path(sys.argv[1]), [float(a) for a in sys.argv[2:]] or [0.90, 0.91])
