"""A bounded load test of a running `fmnist serve`: many concurrent clients, a fixed number of
requests (good and bad mixed), a time limit; per endpoint, the requests per second and the p50 and
p99 latency, and every answer checked. Used by the tests and by benchmarks/serve_load.py."""

from __future__ import annotations

import asyncio
import json
import statistics
import time
from collections.abc import Callable
from dataclasses import dataclass, field


@dataclass
class Call:
    """One request to make, and how to judge its answer."""

    kind: str  # a label for the report, e.g. "predict", "infer", "bad image"
    method: str
    path: str
    files: list | None = None  # httpx multipart files
    json_body: object = None
    content: bytes | None = None
    headers: dict | None = None
    check: Callable[[int, dict], bool] = field(default=lambda status, body: 200 <= status < 300)


@dataclass
class Outcome:
    kind: str
    status: int
    seconds: float
    ok: bool
    error: str = ""


async def _client(client, queue: asyncio.Queue, outcomes: list, deadline: float) -> None:
    while time.perf_counter() < deadline:
        try:
            call = queue.get_nowait()
        except asyncio.QueueEmpty:
            return
        start = time.perf_counter()
        try:
            r = await client.request(
                call.method,
                call.path,
                files=call.files,
                json=call.json_body,
                content=call.content,
                headers=call.headers,
            )
            try:
                body = r.json()
            except json.JSONDecodeError:
                body = {}
            ok = call.check(r.status_code, body)
            outcomes.append(Outcome(call.kind, r.status_code, time.perf_counter() - start, ok))
        except Exception as e:  # a dropped connection is a failure to report, not to raise
            outcomes.append(Outcome(call.kind, 0, time.perf_counter() - start, False, f"{type(e).__name__}: {e}"))


async def run_load(base_url: str, calls: list[Call], clients: int = 64, time_limit: float = 120.0) -> dict:
    """Make `calls` with `clients` concurrent connections; stop at `time_limit` seconds whatever is left."""
    import httpx

    queue: asyncio.Queue = asyncio.Queue()
    for call in calls:
        queue.put_nowait(call)
    outcomes: list[Outcome] = []
    limits = httpx.Limits(max_connections=clients, max_keepalive_connections=clients)
    start = time.perf_counter()
    async with httpx.AsyncClient(base_url=base_url, limits=limits, timeout=60.0) as client:
        await asyncio.gather(*(_client(client, queue, outcomes, start + time_limit) for _ in range(clients)))
    return summarize(outcomes, time.perf_counter() - start, len(calls))


def summarize(outcomes: list[Outcome], seconds: float, planned: int) -> dict:
    by_kind: dict[str, list[Outcome]] = {}
    for o in outcomes:
        by_kind.setdefault(o.kind, []).append(o)
    kinds = {}
    for kind, group in sorted(by_kind.items()):
        lat = sorted(o.seconds for o in group)
        kinds[kind] = {
            "requests": len(group),
            "failed": sum(not o.ok for o in group),
            "statuses": dict(
                sorted({str(s): sum(o.status == s for o in group) for s in {o.status for o in group}}.items())
            ),
            "requests_per_second": len(group) / seconds,
            "p50_ms": statistics.median(lat) * 1e3,
            "p99_ms": lat[min(len(lat) - 1, int(0.99 * len(lat)))] * 1e3,
        }
    return {
        "planned": planned,
        "made": len(outcomes),
        "seconds": seconds,
        "requests_per_second": len(outcomes) / seconds,
        "failed": sum(not o.ok for o in outcomes),
        "errors": sorted({o.error for o in outcomes if o.error})[:5],
        "kinds": kinds,
    }
