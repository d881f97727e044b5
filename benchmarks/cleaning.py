"""What training without an audit's label issues does, for BENCHMARKS.md: each configuration is
trained on the raw training set and with `--exclude` the audit's training label issues, on the
same seeds, and judged on the validation images neither run trained on and the audit did not flag
(the cleaned run's validation split: the raw one less the flagged images); the test accuracy is
printed beside it, to be reported once.

    .venv/bin/python benchmarks/cleaning.py --audit audits/fast --recipe fast --seeds 1 2 3
    .venv/bin/python benchmarks/cleaning.py --audit audits/fast --models shallow simple_cnn --raw-dir runs/study

With --raw-dir, the raw runs are those already there (a study's), not trained again.
"""

from __future__ import annotations

import argparse
import dataclasses
import json
from pathlib import Path

import numpy as np

from fmnist.data import load_fashion_mnist, stratified_split
from fmnist.data.exclude import read_index_csv
from fmnist.jobs.train import train_run
from fmnist.models.forward import predict_logits
from fmnist.run.folder import RunFolder
from fmnist.training.config import HYPER, TrainConfig, make_config, read_recipe


def val_accuracy(run: RunFolder, data, indices: np.ndarray) -> float:
    model, cfg, _ = run.load_model()
    logits = predict_logits(model, data.train_images[indices], tta=cfg.tta, tta_shift=cfg.tta_shift)
    return float((logits.argmax(1).numpy() == data.train_labels[indices].numpy()).mean())


def compare(cfg, flagged: list[int], data, out: Path, raw_dir: Path | None) -> dict:
    cleaned = dataclasses.replace(cfg, exclude=flagged)
    raw_run = RunFolder(raw_dir / cfg.model) if raw_dir else RunFolder(out / "raw")
    if raw_dir is None:
        train_run(cfg, raw_run.path, overwrite=True, data=data)
    differ = [k for k in TrainConfig.fields_of(HYPER) if getattr(raw_run.read_config(), k) != getattr(cfg, k)]
    if differ:
        raise SystemExit(f"{raw_run.path} was trained with other {', '.join(differ)}")
    clean_run = RunFolder(out / "cleaned")
    train_run(cleaned, clean_run.path, overwrite=True, data=data)
    # The cleaned run's validation images are the raw run's less the flagged ones: neither run
    # trained on them, and their labels are the ones the audit did not doubt.
    val = stratified_split(data.train_labels, cfg.val_split, cfg.seed, flagged)[1].numpy()
    return {
        "model": cfg.model,
        "seed": cfg.seed,
        "val_images": len(val),
        **{
            f"{name}_{key}": value
            for name, run in (("raw", raw_run), ("cleaned", clean_run))
            for key, value in {"val": val_accuracy(run, data, val), "test": run.metrics()["test_accuracy"]}.items()
        },
    }


def main() -> None:
    parser = argparse.ArgumentParser()
    parser.add_argument("--audit", required=True, help="an audit folder (its label_issues.csv)")
    parser.add_argument("--recipe", help="a recipe to compare (else --models at the study's settings)")
    parser.add_argument("--models", nargs="+", default=[])
    parser.add_argument("--seeds", nargs="+", type=int, default=[0])
    parser.add_argument("--raw-dir", type=Path, help="reuse the raw runs in this folder (a study's)")
    parser.add_argument("--out", type=Path, default=Path("runs/cleaning"))
    args = parser.parse_args()
    flagged = read_index_csv(Path(args.audit) / "label_issues.csv")
    data = load_fashion_mnist(download=False, progress=False)
    base = read_recipe(args.recipe) if args.recipe else {}
    results = []
    for model in args.models or [None]:
        for seed in args.seeds:
            cfg = make_config(base, {"model": model, "seed": seed, "quiet": True})
            out = args.out / f"{args.recipe or 'study'}-{cfg.model}-seed{seed}"
            results.append(compare(cfg, flagged, data, out, args.raw_dir))
            print(json.dumps(results[-1]), flush=True)
    (args.out / f"{args.recipe or 'study'}.json").write_text(json.dumps(results, indent=1))


if __name__ == "__main__":
    main()
