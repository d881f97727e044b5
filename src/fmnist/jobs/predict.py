"""Classify a user's image files with a run or an exported model."""

from __future__ import annotations

from pathlib import Path

import torch

from fmnist.data import CLASSES
from fmnist.data.images import load_image
from fmnist.errors import FmnistError, UsageError
from fmnist.inference.predictor import load_predictor


def predict_files(source: Path, paths: list[Path], top_k: int = 3, backend: str | None = None) -> list[dict]:
    """Top-k classes for each image file, from a run folder or an exported .onnx file (with the
    run's own test-time augmentation, what its test accuracy was measured with); a file that
    cannot be read gets an `error` instead. `top_k` as the API takes it: 1 to 10."""
    if not 1 <= top_k <= len(CLASSES):
        raise UsageError(f"--top-k must be 1-{len(CLASSES)} (there are {len(CLASSES)} classes), got {top_k}")
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
        for i, top in zip(where, top_classes(predictor.probabilities(torch.stack(images)), top_k)):
            results[i]["predictions"] = top
    return results


def top_classes(probs: torch.Tensor, k: int) -> list[list[dict]]:
    """Each row's k most probable classes, most probable first: the CLI's and the API's answer."""
    values, indices = probs.topk(k, dim=1)
    return [
        [{"label": CLASSES[c], "index": c, "probability": v} for v, c in zip(vs, cs)]
        for vs, cs in zip(values.tolist(), indices.tolist())
    ]
