"""The data audit: cross-validated runs give every training image a prediction from a model that
never saw it, a run on all training images predicts the test set; confident learning then lists the
likely label errors, and a nearest-neighbour search the duplicates.

    run_audit(make_config(read_recipe("fast")), Path("audits/fast"), folds=5)
"""

from __future__ import annotations

import dataclasses
import io
import time
from collections.abc import Callable
from pathlib import Path

import numpy as np
import torch

from fmnist.audit import duplicates, labels
from fmnist.audit.folds import fold_indices
from fmnist.data import FashionMNIST, fingerprint, stratified_split
from fmnist.device import resolve_device
from fmnist.errors import UsageError
from fmnist.files import write_csv
from fmnist.jobs.train import train_run
from fmnist.models import create_model
from fmnist.models.forward import predict_logits
from fmnist.reports.audit import write_audit_report
from fmnist.run import audit as names
from fmnist.run.audit import AuditFolder
from fmnist.run.folder import RunFolder, load_data
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
    n_train = len(stratified_split(data.train_labels, cfg.val_split, cfg.seed, largest)[0])
    check_trainable(create_model(cfg.model), cfg, n_train)
    return parts


def run_audit(
    cfg: TrainConfig,
    out: Path,
    folds: int = 5,
    similarity: float = 0.99,
    overwrite: bool = False,
    say: Callable[[str], None] = lambda line: None,
) -> dict:
    """Audit the data `cfg` names into the folder `out`; returns audit.json's content."""
    audit = AuditFolder(out)
    audit.check_new(overwrite)
    resolve_device(cfg.device)
    check_tracking(cfg.track)
    data = load_data(cfg)
    parts = check_audit(cfg, data, folds, similarity)
    audit.prepare(overwrite)
    started, summary = time.perf_counter(), {"folds": []}
    train_probs = np.zeros((len(data.train_labels), 10), np.float32)
    for k, held in enumerate(parts, 1):
        run = audit.run(f"fold-{k}")
        train_run(dataclasses.replace(cfg, exclude=held.tolist()), run.path, overwrite=True, data=data)
        train_probs[held] = probabilities(run, data.train_images[held])
        accuracy = float((train_probs[held].argmax(1) == data.train_labels[held].numpy()).mean())
        summary["folds"].append({"run": run.path.name, "held_out": len(held), "held_out_accuracy": accuracy})
        say(f"fold {k}/{folds}: {len(held):,} held-out training images, accuracy {accuracy:.4f} ({run.path})")
    run = audit.run(names.ALL)
    metrics = train_run(cfg, run.path, overwrite=True, data=data)
    test_probs = probabilities(run, data.test_images)
    say(f"all training images: test accuracy {metrics['test_accuracy']:.4f} ({run.path})")
    summary["test_model"] = {"run": run.path.name, "test_accuracy": metrics["test_accuracy"]}
    summary["seconds"] = {"models": time.perf_counter() - started}
    buf = io.BytesIO()
    np.savez(buf, train=train_probs, test=test_probs)
    audit.write_bytes(names.PROBABILITIES, buf.getvalue())
    return finish_audit(audit, data, cfg, (train_probs, test_probs), similarity, summary)


def finish_audit(
    audit: AuditFolder,
    data: FashionMNIST,
    cfg: TrainConfig,
    probs: tuple[np.ndarray, np.ndarray],
    similarity: float,
    summary: dict,
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
            "settings": {"folds": len(summary["folds"]), "similarity": similarity, "config": dataclasses.asdict(cfg)},
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
