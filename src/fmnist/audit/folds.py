"""The audit's folds: which training images each fold's run leaves out and then predicts."""

from __future__ import annotations

import numpy as np
import torch
from sklearn.model_selection import StratifiedKFold

from fmnist.errors import UsageError


def fold_indices(labels: torch.Tensor, folds: int, seed: int) -> list[np.ndarray]:
    """`folds` seeded, class-stratified, disjoint sets of training indices covering every image."""
    smallest = int(torch.bincount(labels).min()) if len(labels) else 0
    if not 2 <= folds <= smallest:
        raise UsageError(f"--folds {folds}: give 2 to {smallest:,} (the images of the smallest class)")
    splitter = StratifiedKFold(n_splits=folds, shuffle=True, random_state=seed)
    return [held for _, held in splitter.split(np.zeros(len(labels)), labels.numpy())]
