"""How steady `fmnist audit`'s flags are, and how well they find planted errors, as the number of
averaged cross-validations grows, for BENCHMARKS.md. Three audits at `--repeats R` (default
settings otherwise): the real data with seeds 0 and 1, and the real data with `--flip` training
labels planted (seed 0, so its folds and seeds are the first audit's: only the labels differ).
Each audit keeps every cross-validation's out-of-sample probabilities, so the flags of the first
r = 1..R averaged are found again here (cleanlab, as the audit does, by each --filter-by rule) and
scored:

- agreement: Jaccard of the two seeds' flagged training images (r = 1 is the audit before repeats);
- recall: planted labels flagged, of those planted;
- precision beyond the unchanged data: of the images the planted audit flags and the seed-0 audit
  of the unchanged data (at the same r) does not, the share that were planted.

No test figure is used. The audits' folders are kept for a later `--skip-audit`.

    .venv/bin/python benchmarks/audit_stability.py --repeats 5 --out audits/stability
"""

from __future__ import annotations

import argparse
import json
import subprocess
import sys
import tempfile
import time
from pathlib import Path

import numpy as np

sys.path.insert(0, str(Path(__file__).parent))
from audit_noise import write_flipped  # noqa: E402

from fmnist.audit.labels import FILTER_BY, label_issues  # noqa: E402
from fmnist.data import load_fashion_mnist  # noqa: E402


def audit(out: Path, seed: int, repeats: int, data_dir: str | None, skip: bool) -> float:
    """Run one audit (unless `skip`); its seconds from the shell."""
    command = [sys.executable, "-m", "fmnist", "audit", "--out", str(out), "--seed", str(seed)]
    command += ["--repeats", str(repeats), "--quiet", "--overwrite"]
    if data_dir:
        command += ["--data-dir", data_dir, "--no-verify"]
    started = time.perf_counter()
    if not skip:
        subprocess.run(command, check=True, stdout=subprocess.DEVNULL)
    return time.perf_counter() - started


def extend(out: Path, seed: int, start: int, stop: int, data_dir: str | None) -> None:
    """Cross-validations up to `stop` of the audit in `out`, as `fmnist audit --repeats stop` would
    run them (the same folds, seeds and runs: run_audit's own calls), kept in `more.npz` beside its
    probabilities, which holds the first `start`; those already in `more.npz` are kept, and it is
    written after each cross-validation, so a stopped extension goes on where it stopped. The runs
    themselves are not kept."""
    import dataclasses

    import torch

    from fmnist.audit.folds import fold_indices
    from fmnist.jobs.audit import probabilities, repeat_seed
    from fmnist.jobs.train import train_run
    from fmnist.run.folder import RunFolder, load_data
    from fmnist.training.config import make_config, read_recipe

    where = {"data_dir": data_dir, "verify": False} if data_dir else {}
    cfg = make_config(read_recipe("fast"), {"seed": seed, "quiet": True, **where})
    data = load_data(cfg)
    stored = out / "more.npz"
    more = list(np.load(stored)["train_repeats"]) if stored.is_file() else []
    with tempfile.TemporaryDirectory() as tmp:
        for r in range(start + len(more), stop):
            repeat_cfg = dataclasses.replace(cfg, seed=repeat_seed(seed, r))
            found = np.zeros((len(data.train_labels), 10), np.float32)
            for k, held in enumerate(fold_indices(data.train_labels, 5, repeat_cfg.seed), 1):
                run = Path(tmp) / f"fold-{k}-repeat-{r + 1}"
                train_run(dataclasses.replace(repeat_cfg, exclude=held.tolist()), run, overwrite=True, data=data)
                both = probabilities(RunFolder(run), torch.cat([data.train_images[held], data.test_images]))
                found[held] = both[: len(held)]
                print(f"{out.name}: repeat {r + 1}, fold {k}", file=sys.stderr, flush=True)
            more.append(found.astype(np.float16))
            np.savez(stored, train_repeats=np.stack(more))


def flags_by_prefix(out: Path, labels: np.ndarray, filter_by: str) -> list[set[int]]:
    """The flagged training images of the first r cross-validations averaged, for each r."""
    repeats = np.load(out / "probabilities.npz")["train_repeats"].astype(np.float64)
    if (out / "more.npz").is_file():  # cross-validations added by --extend
        repeats = np.concatenate([repeats, np.load(out / "more.npz")["train_repeats"].astype(np.float64)])
    found = []
    for r in range(1, len(repeats) + 1):
        probs = repeats[:r].mean(0)
        probs /= probs.sum(1, keepdims=True)  # half precision: rows sum to 1 within 1e-3 only
        found.append({row["index"] for row in label_issues("train", labels, probs.astype(np.float32), filter_by)})
    return found


def main() -> None:
    parser = argparse.ArgumentParser()
    parser.add_argument("--repeats", type=int, default=5)
    parser.add_argument("--flip", type=int, default=300)
    parser.add_argument("--out", default="audits/stability")
    parser.add_argument("--skip-audit", action="store_true", help="score the audits already in --out")
    parser.add_argument(
        "--extend", type=int, metavar="R", help="add cross-validations up to R to each audit (as --repeats R would)"
    )
    parser.add_argument(
        "--filter-by",
        nargs="+",
        default=[FILTER_BY],
        help="cleanlab rules to score (prune_by_noise_rate prune_by_class both confident_learning ...)",
    )
    args = parser.parse_args()
    root = Path(args.out)
    labels = load_fashion_mnist(download=False, progress=False).train_labels.numpy()
    seconds = {}
    seconds["seed-0"] = audit(root / "seed-0", 0, args.repeats, None, args.skip_audit)
    seconds["seed-1"] = audit(root / "seed-1", 1, args.repeats, None, args.skip_audit)
    if args.extend:
        for name, seed in (("seed-0", 0), ("seed-1", 1)):
            extend(root / name, seed, args.repeats, args.extend, None)
    with tempfile.TemporaryDirectory() as tmp:
        flipped = write_flipped(Path(tmp), args.flip, 0)
        noisy = load_fashion_mnist(Path(tmp), verify=False, download=False, progress=False).train_labels.numpy()
        seconds["planted"] = audit(root / "planted", 0, args.repeats, tmp, args.skip_audit)
        if args.extend:
            extend(root / "planted", 0, args.repeats, args.extend, tmp)
    rows = []
    for rule in args.filter_by:
        a, b = flags_by_prefix(root / "seed-0", labels, rule), flags_by_prefix(root / "seed-1", labels, rule)
        planted = flags_by_prefix(root / "planted", noisy, rule)
        rows += score(rule, a, b, planted, flipped)
    json.dump({"flipped": len(flipped), "audit_seconds": seconds, "by_repeats": rows}, sys.stdout, indent=1)
    print()


def score(rule: str, a: list[set], b: list[set], planted: list[set], flipped: set[int]) -> list[dict]:
    rows = []
    for r in range(len(a)):
        beyond = planted[r] - a[r]
        rows.append(
            {
                "filter_by": rule,
                "repeats": r + 1,
                "flagged_seed_0": len(a[r]),
                "flagged_seed_1": len(b[r]),
                "agreed": len(a[r] & b[r]),
                "jaccard": len(a[r] & b[r]) / len(a[r] | b[r]),
                "planted_flagged": len(planted[r] & flipped),
                "recall": len(planted[r] & flipped) / len(flipped),
                "flagged_beyond_unchanged": len(beyond),
                "precision_beyond_unchanged": len(beyond & flipped) / max(1, len(beyond)),
            }
        )
    return rows


if __name__ == "__main__":
    main()
