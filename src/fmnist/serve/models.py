"""The served models: each loaded through fmnist.inference.predictor and warmed up with a batch
before the server opens its port, under a name unique among them, with its dynamic batcher."""

from __future__ import annotations

from pathlib import Path

import anyio
import torch
from fastapi import HTTPException

from fmnist.inference.predictor import Predictor, load_predictor
from fmnist.serve.batching import Batcher


def load_models(sources: list, backend: str | None = None) -> dict[str, Predictor]:
    """Run folders, .onnx files or Predictors, each loaded and warmed up (allocations, kernel
    choice) by name; the first that fails raises its FmnistError."""
    loaded: dict[str, Predictor] = {}
    for source in sources:
        predictor = warmed(source if isinstance(source, Predictor) else load_predictor(Path(source), backend))
        loaded[unique_name(predictor.name, loaded)] = predictor
    return loaded


def warmed(predictor: Predictor) -> Predictor:
    predictor.logits(torch.zeros(2, 1, 28, 28))
    return predictor


def unique_name(name: str, taken) -> str:
    """`name`, or `name-2`, `name-3`... for two runs named alike (study/shallow, other/shallow)."""
    candidate, n = name, 2
    while candidate in taken:
        candidate, n = f"{name}-{n}", n + 1
    return candidate


class Models:
    """The loaded models by name, for the routes (a name not served is a 404), each with the
    batcher its requests go through."""

    def __init__(self, loaded: dict[str, Predictor], max_batch: int, max_delay: float, limiter: anyio.CapacityLimiter):
        self.loaded, self.max_batch, self.max_delay, self.limiter = loaded, max_batch, max_delay, limiter
        self.batchers = {name: Batcher(p, max_batch, max_delay, limiter) for name, p in loaded.items()}

    def get(self, name: str) -> Predictor:
        if name not in self.loaded:
            raise HTTPException(404, f"no model named {name!r}; served: {', '.join(self.loaded)}")
        return self.loaded[name]

    def batcher(self, name: str) -> Batcher:
        self.get(name)
        return self.batchers[name]

    def add(self, predictor: Predictor) -> str:
        """Serve one more (loaded, warmed-up) model; its name."""
        name = unique_name(predictor.name, self.loaded)
        self.batchers[name] = Batcher(predictor, self.max_batch, self.max_delay, self.limiter)
        self.loaded[name] = predictor
        return name

    def all(self) -> dict[str, Predictor]:
        return self.loaded

    def close(self) -> None:
        for b in self.batchers.values():
            b.close()
