"""Dynamic batching: concurrent requests for one model are queued and run as one batch, up to
`max_batch` images, waiting at most `max_delay` seconds after the first for others to join (the
scheme of Triton's dynamic batcher). Each request gets back exactly its own rows.
"""

from __future__ import annotations

import asyncio
import time

import anyio
import torch
from fastapi import HTTPException

from fmnist.inference.predictor import Predictor


class Batcher:
    """The queue and the one consumer of a model; `max_batch` 1 runs every request alone."""

    def __init__(
        self,
        predictor: Predictor,
        max_batch: int,
        max_delay: float,
        limiter: anyio.CapacityLimiter,
        max_queue: int = 1024,
    ):
        self.predictor, self.max_batch, self.max_delay, self.limiter = predictor, max_batch, max_delay, limiter
        self.max_queue = max_queue
        self.queue: asyncio.Queue | None = None
        self.loop: asyncio.AbstractEventLoop | None = None  # the queue's (a test client may start others)
        self.consumer: asyncio.Task | None = None
        self.held: tuple[torch.Tensor, asyncio.Future] | None = None  # too large to join the last batch
        self.batches: list[int] = []  # requests per batch run, newest last (a bounded record, for tests)

    async def logits(self, images: torch.Tensor) -> torch.Tensor:
        """The model's logits for `images`, computed alone or in a batch with other requests'."""
        if self.max_batch <= 1:
            if self.limiter.statistics().tasks_waiting >= self.max_queue:
                raise overloaded(self.max_queue)
            return await anyio.to_thread.run_sync(self.predictor.logits, images, limiter=self.limiter)
        loop = asyncio.get_running_loop()
        if self.loop is not loop:
            self.queue, self.loop, self.held = asyncio.Queue(), loop, None
            self.consumer = loop.create_task(self._consume())
        if self.queue.qsize() >= self.max_queue:  # overload: say so now, not after an ever longer wait
            raise overloaded(self.max_queue)
        done = loop.create_future()
        await self.queue.put((images, done))
        return await done

    async def _gather(self) -> list[tuple[torch.Tensor, asyncio.Future]]:
        """The next batch: the first request waiting, then others until max_batch images or max_delay."""
        first, self.held = self.held or await self.queue.get(), None
        batch, count = [first], len(first[0])
        deadline = time.perf_counter() + self.max_delay
        while count < self.max_batch:
            if self.queue.empty():
                left = deadline - time.perf_counter()
                if left <= 0:
                    break
                try:
                    item = await asyncio.wait_for(self.queue.get(), left)
                except TimeoutError:
                    break
            else:
                item = self.queue.get_nowait()
            if count + len(item[0]) > self.max_batch:
                self.held = item  # too large to join: first of the next batch
                break
            batch.append(item)
            count += len(item[0])
        return batch

    async def _consume(self) -> None:
        while True:
            batch = await self._gather()
            live = [(x, f) for x, f in batch if not f.done()]  # a request whose client left is dropped
            if not live:
                continue
            try:
                logits = await anyio.to_thread.run_sync(
                    self.predictor.logits, torch.cat([x for x, _ in live]), limiter=self.limiter
                )
            except Exception as e:  # the model's failure is each waiting request's answer
                for _, f in live:
                    if not f.done():
                        f.set_exception(e)
                continue
            self.batches = [*self.batches[-999:], len(live)]
            for part, (_, f) in zip(logits.split([len(x) for x, _ in live]), live):
                if not f.done():
                    f.set_result(part)

    def close(self) -> None:
        if self.consumer is not None:
            self.consumer.cancel()


def overloaded(max_queue: int) -> HTTPException:
    return HTTPException(
        503, f"the model has {max_queue} requests waiting already: try again shortly", headers={"Retry-After": "1"}
    )
