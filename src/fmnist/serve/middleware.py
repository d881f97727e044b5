"""ASGI middleware of the server: the body-size limit, and the Prometheus request metrics."""

from __future__ import annotations

import json
import time

import anyio
from prometheus_client import CollectorRegistry, Counter, Gauge, Histogram


async def send_error(send, status: int, message: str) -> None:
    body = json.dumps({"error": message}).encode()
    await send(
        {
            "type": "http.response.start",
            "status": status,
            "headers": [
                (b"content-type", b"application/json"),
                (b"content-length", str(len(body)).encode()),
                (b"connection", b"close"),
            ],
        }
    )
    await send({"type": "http.response.body", "body": body})


class BodyTooLarge(Exception):
    pass


DRAIN_BYTES = 64 * 1024 * 1024  # of an oversized body, read and dropped before answering 413
DRAIN_SECONDS = 10.0


async def drain(receive, seen: int = 0) -> None:
    """Read and drop the rest of a request body (up to DRAIN_BYTES in all, for DRAIN_SECONDS), so a
    client that sends its whole body before it reads the answer reads the 413 rather than a reset
    connection (nginx's "lingering close")."""
    with anyio.move_on_after(DRAIN_SECONDS):
        while seen <= DRAIN_BYTES:
            event = await receive()
            if event["type"] != "http.request":
                return
            seen += len(event.get("body", b""))
            if not event.get("more_body", False):
                return


class BodyLimit:
    """Refuse a request body over `limit` bytes with 413: at once when Content-Length says so, else
    as soon as the streamed body passes the limit; in both cases after draining what the client
    still sends (unless it waits for 100 Continue, which it then never gets)."""

    def __init__(self, app, limit: int):
        self.app, self.limit = app, limit

    async def __call__(self, scope, receive, send):
        if scope["type"] != "http":
            return await self.app(scope, receive, send)
        message = f"request body larger than {self.limit:,} bytes"
        headers = dict(scope["headers"])
        length = headers.get(b"content-length")
        if length is not None:
            try:
                declared = int(length)
            except ValueError:
                return await send_error(send, 400, "bad Content-Length header")
            if declared > self.limit:
                if b"100-continue" not in headers.get(b"expect", b"").lower():
                    await drain(receive)
                return await send_error(send, 413, message)
        seen, started, ended = 0, False, False

        async def counted():
            nonlocal seen, ended
            event = await receive()
            if event["type"] == "http.request":
                seen += len(event.get("body", b""))
                ended = not event.get("more_body", False)
                if seen > self.limit:
                    raise BodyTooLarge
            return event

        async def tracked(event):
            nonlocal started
            if event["type"] == "http.response.start":
                started = True
            await send(event)

        try:
            await self.app(scope, counted, tracked)
        except BodyTooLarge:
            if not started:
                if not ended:
                    await drain(receive, seen)
                await send_error(send, 413, message)


class Metrics:
    """Requests by route and status, their latency, and those in flight, in a registry of this
    app's own (two apps in one process do not share counts)."""

    def __init__(self) -> None:
        self.registry = CollectorRegistry()
        self.requests = Counter(
            "fmnist_http_requests", "HTTP requests answered", ["route", "method", "status"], registry=self.registry
        )
        self.latency = Histogram(
            "fmnist_http_request_duration_seconds",
            "time to answer a request",
            ["route"],
            registry=self.registry,
            buckets=(0.001, 0.0025, 0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1, 2.5, 5, 10),
        )
        self.in_flight = Gauge(
            "fmnist_http_requests_in_flight",
            "requests being answered",
            registry=self.registry,
            multiprocess_mode="livesum",  # summed over a server's live processes
        )
        self.images = Counter(
            "fmnist_images_classified", "images classified, by model", ["model"], registry=self.registry
        )


class MetricsMiddleware:
    def __init__(self, app, metrics: Metrics):
        self.app, self.metrics = app, metrics

    async def __call__(self, scope, receive, send):
        if scope["type"] != "http":
            return await self.app(scope, receive, send)
        status = 500
        start = time.perf_counter()

        async def tracked(event):
            nonlocal status
            if event["type"] == "http.response.start":
                status = event["status"]
            await send(event)

        self.metrics.in_flight.inc()
        try:
            await self.app(scope, receive, tracked)
        finally:
            self.metrics.in_flight.dec()
            route = getattr(scope.get("route"), "path", None) or "unmatched"  # the template, not the raw path
            self.metrics.requests.labels(route, scope["method"], str(status)).inc()
            self.metrics.latency.labels(route).observe(time.perf_counter() - start)
