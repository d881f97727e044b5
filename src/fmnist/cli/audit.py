"""`fmnist audit`: likely label errors and duplicates in the data, found by cross-validated runs."""

from __future__ import annotations

import time
from pathlib import Path

from fmnist.audit import REPEATS
from fmnist.cli.flags import add_train_flags, config_from


def cmd_audit(args) -> int:
    from fmnist.jobs.audit import run_audit
    from fmnist.run import audit as names

    if not args.recipe and not args.config:
        args.recipe = "fast"  # cheap, and accurate enough that its doubts mean something
    cfg = config_from(args, model=args.model)
    out = Path(args.out or f"audits/audit-{time.strftime('%Y%m%d-%H%M%S')}")
    summary = run_audit(cfg, out, args.folds, args.similarity, args.overwrite, say=print, repeats=args.repeats)
    issues, dup = summary["label_issues"], summary["duplicates"]
    print(f"label issues: {issues['train']:,} training and {issues['test']:,} test images ({out / names.LABEL_ISSUES})")
    print(
        f"duplicates: {sum(dup['exact'].values()):,} exact and {sum(dup['near'].values()):,} near pairs "
        f"(similarity >= {args.similarity}) ({out / names.DUPLICATES})"
    )
    print(f"report: {out / names.REPORT}")
    return 0


def add_parsers(sub) -> None:
    p = sub.add_parser(
        "audit", help="find likely label errors and duplicates with cross-validated runs; write a report"
    )
    p.add_argument("--model", help="the model the runs train (default: the recipe's)")
    p.add_argument("--folds", type=int, default=5, help="cross-validation folds of the training set (default 5)")
    p.add_argument(
        "--repeats",
        type=int,
        default=REPEATS,
        help=f"cross-validations, each with its own folds and seed, averaged: steadier flags (default {REPEATS})",
    )
    p.add_argument(
        "--similarity",
        type=float,
        default=0.99,
        metavar="X",
        help="cosine similarity from which two images are near duplicates (default 0.99; README says why)",
    )
    p.add_argument("--out", help="audit folder (default audits/audit-TIMESTAMP)")
    add_train_flags(p)  # --recipe (default fast here), --config, every training flag
    p.set_defaults(func=cmd_audit)
