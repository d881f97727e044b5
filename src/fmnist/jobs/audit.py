"""The data audit: cross-validated runs give every training image a prediction from models that
never saw it, and the test set one from all of them; confident learning then lists the likely
label errors, and a nearest-neighbour search the duplicates.

The cross-validation is repeated (`repeats`, each with its own fold split and training seed) and
the out-of-sample probabilities averaged: one repetition's flags move with its models' own
variation (two audits that differ only in their seed agreed on half their flags), the average's
far less (BENCHMARKS.md, "Auditing the data").

    run_audit(make_config(read_recipe("fast")), Path("audits/fast"), folds=5, repeats=11)
"""

from __future__ import annotations

import dataclasses
import io
import time
from collections.abc import Callable
from pathlib import Path

import numpy as np
import torch

from fmnist.audit import REPEATS, duplicates, labels
from fmnist.audit.folds import fold_indices
from fmnist.data import FashionMNIST, fingerprint
from fmnist.device import resolve_device
from fmnist.errors import UsageError
from fmnist.files import write_csv
from fmnist.jobs.train import train_run
from fmnist.models.forward import predict_logits
from fmnist.models.network import create_network
from fmnist.reports.audit import write_audit_report
from fmnist.run import audit as names
from fmnist.run.audit import AuditFolder
from fmnist.run.folder import RunFolder, load_data, split_of
from fmnist.run.tracking import check_tracking
from fmnist.training.config import TrainConfig
from fmnist.training.setup import check_trainable


def probabilities(run: RunFolder, images: torch.Tensor) -> np.ndarray:
    """The class probabilities of a run's best checkpoint (with its test-time views) for `images`."""
    model, cfg, _ = run.load_model()
    return predict_logits(model, images, tta=cfg.tta, tta_shift=cfg.tta_shift).softmax(1).numpy()


def check_audit(cfg: TrainConfig, data: FashionMNIST, folds: int, similarity: float) -> list[np.ndarray]:
    """Everything that can be known to fail, before anything is written; returns the folds."""
    if cfg.exclude:
        raise UsageError("an audit looks at every training image: --exclude does not apply to it")
    if not 0 < similarity <= 1:
        raise UsageError(f"--similarity {similarity}: give a cosine similarity in (0, 1]")
    parts = fold_indices(data.train_labels, folds, cfg.seed)
    largest = max(parts, key=len).tolist()
    n_train = len(split_of(data.train_labels, cfg, largest)[0])
    check_trainable(create_network(cfg), cfg, n_train)
    return parts


def repeat_seed(seed: int, repeat: int) -> int:
    """The seed of a repetition: the audit's own for the first (one repetition is the plain
    K-fold audit), then seeds drawn from it that other audits' seeds do not reach."""
    return seed if repeat == 0 else int(np.random.SeedSequence([seed, repeat]).generate_state(1)[0] >> 1)


def run_audit(
    cfg: TrainConfig,
    out: Path,
    folds: int = 5,
    similarity: float = 0.99,
    overwrite: bool = False,
    say: Callable[[str], None] = lambda line: None,
    repeats: int = REPEATS,
) -> dict:
    """Audit the data `cfg` names into the folder `out`; returns audit.json's content."""
    audit = AuditFolder(out)
    audit.check_new(overwrite)
    resolve_device(cfg.device)
    check_tracking(cfg.track)
    data = load_data(cfg)
    if repeats < 1:
        raise UsageError(f"--repeats {repeats}: give 1 or more")
    repeat_cfgs = [dataclasses.replace(cfg, seed=repeat_seed(cfg.seed, r)) for r in range(repeats)]
    splits = [check_audit(c, data, folds, similarity) for c in repeat_cfgs]
    audit.prepare(overwrite)
    started, summary = time.perf_counter(), {"folds": []}
    n_train, labels = len(data.train_labels), data.train_labels.numpy()
    per_repeat = np.zeros((repeats, n_train, 10), np.float32)
    test_probs = np.zeros((len(data.test_labels), 10), np.float64)
    for r, (repeat_cfg, parts) in enumerate(zip(repeat_cfgs, splits)):
        for k, held in enumerate(parts, 1):
            run = audit.run(f"fold-{k}" if r == 0 else f"fold-{k}-repeat-{r + 1}")
            train_run(dataclasses.replace(repeat_cfg, exclude=held.tolist()), run.path, overwrite=True, data=data)
            both = probabilities(run, torch.cat([data.train_images[held], data.test_images]))
            per_repeat[r, held], test_probs = both[: len(held)], test_probs + both[len(held) :]
            accuracy = float((per_repeat[r, held].argmax(1) == labels[held]).mean())
            summary["folds"].append({"run": run.path.name, "held_out": len(held), "held_out_accuracy": accuracy})
            say(
                f"repeat {r + 1}/{repeats}, fold {k}/{folds}: {len(held):,} held-out training images, "
                f"accuracy {accuracy:.4f} ({run.path})"
            )
    train_probs = per_repeat.mean(0)
    test_probs = (test_probs / (repeats * folds)).astype(np.float32)  # every fold model: none saw a test image
    accuracy = float((test_probs.argmax(1) == data.test_labels.numpy()).mean())
    say(f"the test set, by the {repeats * folds} fold models averaged: accuracy {accuracy:.4f}")
    summary["test_model"] = {"run": f"the {repeats * folds} fold models, averaged", "test_accuracy": accuracy}
    summary["seconds"] = {"models": time.perf_counter() - started}
    buf = io.BytesIO()  # each repetition's too (half precision): how the flags settle as they are averaged
    np.savez(buf, train=train_probs, test=test_probs, train_repeats=per_repeat.astype(np.float16))
    audit.write_bytes(names.PROBABILITIES, buf.getvalue())
    return finish_audit(audit, data, cfg, (train_probs, test_probs), similarity, summary, repeats)


def finish_audit(
    audit: AuditFolder,
    data: FashionMNIST,
    cfg: TrainConfig,
    probs: tuple[np.ndarray, np.ndarray],
    similarity: float,
    summary: dict,
    repeats: int = 1,
) -> dict:
    """The label issues and duplicates from the probabilities, written with audit.json and the report."""
    started = time.perf_counter()
    issues = labels.label_issues("train", data.train_labels.numpy(), probs[0])
    issues += labels.label_issues("test", data.test_labels.numpy(), probs[1])
    summary["seconds"]["label_issues"] = time.perf_counter() - started
    started = time.perf_counter()
    pairs = duplicates.find_duplicates(data.train_images, data.test_images, similarity, cfg.seed)
    summary["seconds"]["duplicates"] = time.perf_counter() - started
    write_csv(audit.record(names.LABEL_ISSUES), issues, labels.COLUMNS)
    write_csv(audit.record(names.DUPLICATES), pairs, duplicates.COLUMNS)
    summary.update(
        {
            "settings": {
                "folds": len(summary["folds"]) // repeats,
                "repeats": repeats,
                "similarity": similarity,
                "config": dataclasses.asdict(cfg),
            },
            "data": {"directory": str(data.directory), "verified": data.verified, "fingerprint": fingerprint(data)},
            "label_issues": {
                "train": sum(r["split"] == "train" for r in issues),
                "test": sum(r["split"] == "test" for r in issues),
                "pairs": labels.pair_counts(issues),
            },
            "duplicates": duplicate_counts(pairs),
        }
    )
    write_audit_report(audit, data, issues, pairs, summary)
    audit.write_json(names.AUDIT, summary)  # last: an audit.json means a finished audit
    return summary


def duplicate_counts(pairs: list[dict]) -> dict:
    """Exact and near pairs per (split, split): train-train, train-test, test-test."""
    counts: dict = {"exact": {}, "near": {}}
    for p in pairs:
        kind = "exact" if p["similarity"] == 1.0 else "near"
        key = f"{p['split_a']}-{p['split_b']}"
        counts[kind][key] = counts[kind].get(key, 0) + 1
    return counts
