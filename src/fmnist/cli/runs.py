"""`fmnist runs`: list and compare run folders."""

from __future__ import annotations

import json
from pathlib import Path

from fmnist.errors import UsageError

DEFAULT_ROOTS = ("runs", "sweeps", "audits")


def _cell(value) -> str:
    if value is None:
        return ""
    if isinstance(value, float):
        return f"{value:.4f}" if value <= 1 else f"{value:.1f}"
    return str(value)


def print_table(header: list[str], rows: list[list]) -> None:
    cells = [[_cell(c) for c in row] for row in rows]
    widths = [max(len(h), *(len(r[i]) for r in cells)) for i, h in enumerate(header)]
    print("  ".join(h.ljust(w) for h, w in zip(header, widths)).rstrip())
    for row in cells:
        print("  ".join(c.ljust(w) for c, w in zip(row, widths)).rstrip())


def cmd_runs(args) -> int:
    from fmnist.jobs import runs as listing
    from fmnist.run.folder import RunFolder

    if args.dirs[:1] == ["compare"]:
        if len(args.dirs) != 3:
            raise UsageError("fmnist runs compare: give two run folders, A and B")
        lines = listing.compare(RunFolder(args.dirs[1]), RunFolder(args.dirs[2]))
        if args.json:
            print(json.dumps([{"field": k, "a": a, "b": b, "differs": d} for k, a, b, d in lines], indent=1))
            return 0
        print_table(["", "field", args.dirs[1], args.dirs[2]], [["*" if d else "", k, a, b] for k, a, b, d in lines])
        return 0
    roots = [Path(d) for d in args.dirs] or [Path(d) for d in DEFAULT_ROOTS if Path(d).is_dir()]
    missing = [str(r) for r in roots if not r.is_dir()]
    if missing:
        raise UsageError(f"not a folder: {missing[0]}")
    rows = listing.select([listing.describe(r) for r in listing.find_runs(roots)], args.filter, args.sort)
    if args.json:
        print(json.dumps(rows, indent=1))
        return 0
    varied = listing.differing(rows)
    header = ["run", "model", "recipe", *varied, "val acc", "test acc", "train s", "status"]
    print_table(
        header,
        [
            [r["run"], r["model"], r["recipe"], *(r["config"][k] for k in varied)]
            + [r["val_accuracy"], r["test_accuracy"], r["train_seconds"], r["status"]]
            for r in rows
        ],
    )
    return 0


def add_parsers(sub) -> None:
    p = sub.add_parser("runs", help="list every run under some folders, or compare two: fmnist runs compare A B")
    p.add_argument(
        "dirs",
        nargs="*",
        metavar="DIR",
        help=f"folders to search (default: {', '.join(DEFAULT_ROOTS)} where they exist); or: compare A B",
    )
    p.add_argument("--sort", default="val_accuracy", help="a column: val_accuracy (default), test_accuracy, ...")
    p.add_argument(
        "--filter", action="append", default=[], metavar="KEY=VALUE", help="keep rows where a column or setting matches"
    )
    p.add_argument("--json", action="store_true", help="print the rows (with each run's whole config) as JSON")
    p.set_defaults(func=cmd_runs)
