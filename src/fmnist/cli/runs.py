"""`fmnist runs`: list and compare run folders."""

from __future__ import annotations

import json
from pathlib import Path

from fmnist.errors import UsageError
from fmnist.run.query import DEFAULT_ROOTS


def print_table(header: list[str], rows: list[list]) -> None:
    from fmnist.run.query import cell

    cells = [[cell(c) for c in row] for row in rows]
    widths = [max(len(h), *(len(r[i]) for r in cells)) for i, h in enumerate(header)]
    print("  ".join(h.ljust(w) for h, w in zip(header, widths)).rstrip())
    for row in cells:
        print("  ".join(c.ljust(w) for c, w in zip(row, widths)).rstrip())


def cmd_runs(args) -> int:
    from fmnist.run import query as listing
    from fmnist.run.folder import RunFolder

    # `compare A B` compares; a folder named compare is listed as itself (or as ./compare)
    if args.dirs[:1] == ["compare"] and (len(args.dirs) == 3 or not Path("compare").is_dir()):
        if len(args.dirs) != 3:
            raise UsageError("fmnist runs compare: give two run folders, A and B (a folder named compare: ./compare)")
        lines = listing.compare(RunFolder(args.dirs[1]), RunFolder(args.dirs[2]))
        if args.json:
            print(json.dumps([{"field": k, "a": a, "b": b, "differs": d} for k, a, b, d in lines], indent=1))
            return 0
        print_table(["", "field", args.dirs[1], args.dirs[2]], [["*" if d else "", k, a, b] for k, a, b, d in lines])
        return 0
    roots = [Path(d) for d in args.dirs] or [Path(d) for d in DEFAULT_ROOTS if Path(d).is_dir()]
    rows = listing.list_runs(roots, args.filter, args.sort)
    if args.json:
        print(json.dumps([listing.shown(r) for r in rows], indent=1))
        return 0
    if not rows:
        where = ", ".join(str(r) for r in roots) or "this folder (no runs/, sweeps/ or audits/)"
        found = args.filter and listing.find_runs(roots)  # runs there, none matching
        print(f"no run matches {' and '.join(args.filter)} under {where}" if found else f"no runs under {where}")
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
    p.add_argument(
        "--sort",
        default="val_accuracy",
        help="a column or setting, best first: val_accuracy (default) and test_accuracy highest, "
        "test_loss and train_seconds lowest; others ascending",
    )
    p.add_argument(
        "--filter",
        action="append",
        default=[],
        metavar="KEY=VALUE",
        help="keep rows where a column or setting matches, by value: model=deep_cnn, tta=true, lr=0.001, "
        "val_accuracy>=0.9 (also !=, <=, <, >); repeat to combine",
    )
    p.add_argument("--json", action="store_true", help="print the rows (with each run's whole config) as JSON")
    p.set_defaults(func=cmd_runs)
