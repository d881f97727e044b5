"""The served models: each loaded through fmnist.inference.predictor and warmed up with a batch
before the server opens its port, under a name unique among them, with its dynamic batcher."""

from __future__ import annotations

import asyncio
from collections.abc import Callable
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


def resolved(source: str | Path) -> str:
    """A source as one string however it was spelt (runs/x, ./runs/x, /abs/runs/x)."""
    return str(Path(source).resolve())


class Models:
    """The loaded models by name, for the routes (a name not served is a 404), each with the
    batcher its requests go through. The tables are replaced, never changed in place, when a model
    is added: a route (or a thread) that took `all()` keeps a table that does not change under it."""

    def __init__(
        self,
        loaded: dict[str, Predictor],
        max_batch: int,
        max_delay: float,
        limiter: anyio.CapacityLimiter,
        max_queue: int = 1024,
    ):
        self.loaded, self.max_batch, self.max_delay, self.limiter = dict(loaded), max_batch, max_delay, limiter
        self.max_queue = max_queue
        self.batchers = {name: self._batcher(p) for name, p in loaded.items()}
        self.loading: dict[str, asyncio.Future] = {}  # by resolved source: one load each, however many ask

    def _batcher(self, predictor: Predictor) -> Batcher:
        return Batcher(predictor, self.max_batch, self.max_delay, self.limiter, self.max_queue)

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
        self.batchers = {**self.batchers, name: self._batcher(predictor)}
        self.loaded = {**self.loaded, name: predictor}
        return name

    def served_as(self, source: str | Path) -> str | None:
        """The name of the model loaded from `source` (by its resolved path), if one is."""
        key = resolved(source)
        return next((name for name, p in self.loaded.items() if resolved(p.source) == key), None)

    async def load_once(
        self, source: Path, load: Callable[[], Predictor], limiter: anyio.CapacityLimiter, cap: int
    ) -> str:
        """Serve the model at `source`, loading it (off the event loop, within `limiter`) only if no
        model of that source is served or being loaded; at most `cap` models in all (409 past it)."""
        key = resolved(source)
        if (name := self.served_as(key)) is not None:
            return name
        if key in self.loading:  # another request is loading it: its answer is this one's
            return await asyncio.shield(self.loading[key])
        if len(self.loaded) + len(self.loading) >= cap:
            raise HTTPException(
                409, f"serving {len(self.loaded)} models already, the most this server takes (--max-models {cap})"
            )
        future = asyncio.get_running_loop().create_future()
        self.loading[key] = future
        try:
            name = self.add(await anyio.to_thread.run_sync(load, limiter=limiter))
            future.set_result(name)
            return name
        except BaseException as e:
            future.set_exception(e)
            future.exception()  # retrieved: the requests waiting on it raise it too
            raise
        finally:
            del self.loading[key]

    def all(self) -> dict[str, Predictor]:
        return self.loaded

    def close(self) -> None:
        for b in self.batchers.values():
            b.close()
