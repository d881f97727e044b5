"""How well `fmnist audit` finds label errors planted in the real training images, for BENCHMARKS.md:
a copy of Fashion-MNIST with `--flip` training labels changed at random (seeded) to another class,
audited with the default settings, then precision and recall of the training set's label issues
against the planted set.

    .venv/bin/python benchmarks/audit_noise.py --flip 300 --seed 0 --out audits/planted-300

The real labels have errors of their own, which the audit also lists: precision counts those as
misses, so it is a lower bound; with --baseline (an audit of the unchanged data), precision is
also given among the images that audit did not flag.
"""

from __future__ import annotations

import argparse
import csv
import gzip
import json
import subprocess
import sys
import tempfile
import time
from pathlib import Path

import numpy as np

from fmnist.data import load_fashion_mnist
from fmnist.data.idx import encode_idx


def write_flipped(directory: Path, flip: int, seed: int) -> set[int]:
    """The real data with `flip` training labels moved to another class; the flipped indices."""
    data = load_fashion_mnist(download=False, progress=False)
    labels = data.train_labels.numpy().astype(np.uint8)
    rng = np.random.default_rng(seed)
    flipped = rng.choice(len(labels), flip, replace=False)
    labels[flipped] = (labels[flipped] + rng.integers(1, 10, flip)) % 10
    pixels = {
        "train-images-idx3-ubyte": data.train_images,
        "t10k-images-idx3-ubyte": data.test_images,
    }
    for name, images in pixels.items():
        array = (images.squeeze(1).numpy() * 255).round().astype(np.uint8)
        (directory / f"{name}.gz").write_bytes(gzip.compress(encode_idx(array), 1))
    (directory / "train-labels-idx1-ubyte.gz").write_bytes(gzip.compress(encode_idx(labels)))
    test_labels = data.test_labels.numpy().astype(np.uint8)
    (directory / "t10k-labels-idx1-ubyte.gz").write_bytes(gzip.compress(encode_idx(test_labels)))
    return set(flipped.tolist())


def train_issues(audit: Path) -> set[int]:
    with open(audit / "label_issues.csv", newline="") as f:
        return {int(r["index"]) for r in csv.DictReader(f) if r["split"] == "train"}


def main() -> None:
    parser = argparse.ArgumentParser()
    parser.add_argument("--flip", type=int, default=300)
    parser.add_argument("--seed", type=int, default=0, help="which labels are flipped")
    parser.add_argument("--out", default="audits/planted")
    parser.add_argument("--skip-audit", action="store_true", help="score the audit already in --out")
    parser.add_argument("--baseline", help="an audit of the unchanged data: its issues are set aside too")
    parser.add_argument("audit_flags", nargs="*", help="more `fmnist audit` flags, after --")
    args = parser.parse_args()
    with tempfile.TemporaryDirectory() as tmp:
        flipped = write_flipped(Path(tmp), args.flip, args.seed)
        command = [
            sys.executable,
            "-m",
            "fmnist",
            "audit",
            "--data-dir",
            tmp,
            "--no-verify",
            "--out",
            args.out,
            "--quiet",
        ]
        started = time.perf_counter()
        if not args.skip_audit:
            subprocess.run([*command, "--overwrite", *args.audit_flags], check=True)
        seconds = time.perf_counter() - started
    found = train_issues(Path(args.out))
    hits = len(found & flipped)
    result = {
        "flipped": len(flipped),
        "flagged": len(found),
        "flagged_and_planted": hits,
        "precision": hits / max(1, len(found)),
        "recall": hits / len(flipped),
        "flagged_not_planted": len(found - flipped),
        "audit_seconds": seconds,
    }
    if args.baseline:  # precision among the images the unchanged data's audit did not flag
        new = found - train_issues(Path(args.baseline))
        result |= {
            "flagged_beyond_baseline": len(new),
            "precision_beyond_baseline": len(new & flipped) / max(1, len(new)),
        }
    json.dump(result, sys.stdout, indent=1)
    print()


if __name__ == "__main__":
    main()
