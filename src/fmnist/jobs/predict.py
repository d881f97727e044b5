"""Classify a user's image files with a run or an exported model."""

from __future__ import annotations

from pathlib import Path

import torch

from fmnist.data import CLASSES
from fmnist.data.images import load_image
from fmnist.errors import FmnistError
from fmnist.inference.predictor import load_predictor


def predict_files(source: Path, paths: list[Path], top_k: int = 3, backend: str | None = None) -> list[dict]:
    """Top-k classes for each image file, from a run folder or an exported .onnx file (with the
    run's own test-time augmentation, what its test accuracy was measured with); a file that
    cannot be read gets an `error` instead."""
    predictor = load_predictor(source, backend)
    results, images, where = [], [], []
    for path in paths:
        try:
            images.append(load_image(path))
            where.append(len(results))
            results.append({"file": str(path)})
        except FmnistError as e:
            results.append({"file": str(path), "error": str(e)})
    if images:
        top = predictor.probabilities(torch.stack(images)).topk(min(top_k, len(CLASSES)), dim=1)
        for i, (p, c) in zip(where, zip(top.values.tolist(), top.indices.tolist())):
            results[i]["predictions"] = [{"class": CLASSES[k], "probability": v} for v, k in zip(p, c)]
    return results
