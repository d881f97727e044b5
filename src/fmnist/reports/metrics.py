"""Test-set metrics from logits: accuracy, loss, top-2, confusion matrix, per-class report."""

from __future__ import annotations

import numpy as np
import torch

from fmnist.data import CLASSES
from fmnist.models.forward import loss_accuracy


def most_confused(cm: np.ndarray, k: int = 5) -> list[dict]:
    """The k largest off-diagonal cells: (true class, predicted class, count)."""
    off = cm.copy()
    np.fill_diagonal(off, 0)
    order = np.argsort(off, axis=None)[::-1][:k]
    pairs = []
    for flat in order:
        t, p = np.unravel_index(flat, cm.shape)
        if off[t, p] > 0:
            pairs.append({"true": CLASSES[t], "predicted": CLASSES[p], "count": int(off[t, p])})
    return pairs


def metrics_from_logits(logits: torch.Tensor, labels: torch.Tensor) -> dict:
    """Everything `metrics.json` holds, computed from test logits and labels."""
    from sklearn.metrics import classification_report, confusion_matrix  # here: every command paid its import

    loss, accuracy = loss_accuracy(logits, labels)
    y_true, y_pred = labels.numpy(), logits.argmax(1).numpy()
    top2 = (logits.topk(2, dim=1).indices == labels[:, None]).any(1).float().mean().item()
    cm = confusion_matrix(y_true, y_pred, labels=range(len(CLASSES)))
    report = classification_report(
        y_true, y_pred, labels=range(len(CLASSES)), target_names=CLASSES, output_dict=True, zero_division=0
    )
    return {
        "test_accuracy": accuracy,
        "test_loss": loss,
        "top2_accuracy": top2,
        "n_test": len(labels),
        "confusion_matrix": cm.tolist(),
        "classification_report": report,
        "most_confused": most_confused(cm),
    }
