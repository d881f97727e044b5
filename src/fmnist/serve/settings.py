"""The server's limits and batching, with their defaults (read by `fmnist serve`'s flags too)."""

from __future__ import annotations

from dataclasses import dataclass

from fmnist.data.images import MAX_PIXELS

METRICS_ENV = "PROMETHEUS_MULTIPROC_DIR"  # prometheus_client's multiprocess mode (serve/processes.py)
# How uvicorn runs the app, in one process or several: its faster event loop and HTTP parser.
UVICORN = {"log_level": "warning", "loop": "uvloop", "http": "httptools"}


@dataclass
class Settings:
    max_body_bytes: int = 10 * 1024 * 1024  # a request body over this is refused (413)
    max_images: int = 16  # images in one /predict request
    max_pixels: int = MAX_PIXELS  # an image declaring more is refused before it is decoded
    max_infer_images: int = 1024  # images in one /v2/.../infer request
    max_batch: int = 64  # images a model answers at once for concurrent requests (1: no batching)
    max_delay: float = 0.001  # seconds a batch waits for more requests after its first
    workers: int = 2  # decodings and model calls at a time, off the event loop
    max_queue: int = 1024  # requests waiting for one model; past it 503 with Retry-After, not a longer wait
    max_models: int = 16  # models served at once, those the page's "serve this run" adds included
    processes: int = 1  # server processes on one port (serve/processes.py)
    runs_roots: tuple[str, ...] = ("runs", "sweeps", "audits")  # what the page's runs view lists
