"""The server: `create_app(models, settings)` builds a FastAPI app that answers with models already
loaded and warmed up (serve.models.load_models), through fmnist's JSON API and page (serve/api.py),
the Open Inference Protocol's v2 routes (serve/oip.py) and Prometheus metrics.

Every route is thin: images go through fmnist.data.images (the preprocessing `fmnist predict` uses)
and every model is a fmnist.inference.predictor.Predictor, run off the event loop.
"""

from __future__ import annotations

from dataclasses import dataclass

import anyio
from fastapi import FastAPI, Request
from fastapi.exceptions import RequestValidationError
from fastapi.responses import JSONResponse, Response
from prometheus_client import CONTENT_TYPE_LATEST, generate_latest
from starlette.exceptions import HTTPException as StarletteHTTPException

from fmnist import __version__
from fmnist.data.images import MAX_PIXELS
from fmnist.inference.predictor import Predictor
from fmnist.serve import api, oip
from fmnist.serve.middleware import BodyLimit, Metrics, MetricsMiddleware
from fmnist.serve.models import Models, load_models


@dataclass
class Settings:
    max_body_bytes: int = 10 * 1024 * 1024  # a request body over this is refused (413) unread
    max_images: int = 16  # images in one /predict request
    max_pixels: int = MAX_PIXELS  # an image declaring more is refused before it is decoded
    max_batch: int = 1024  # images in one /v2/.../infer request
    workers: int = 2  # inferences at a time, off the event loop


def create_app(models: dict[str, Predictor] | list, settings: Settings | None = None) -> FastAPI:
    """The app serving `models`: loaded Predictors by name, or a list of run folders, .onnx files
    and Predictors, loaded and warmed up here (a failure raises before any app exists)."""
    settings = settings or Settings()
    loaded = models if isinstance(models, dict) else load_models(list(models))
    app = FastAPI(
        title="fmnist",
        version=__version__,
        description="Fashion-MNIST classifiers trained by fmnist: a JSON API, the Open Inference "
        "Protocol (v2) and a page at /.",
    )
    app.state.models, app.state.settings, app.state.metrics = Models(loaded), settings, Metrics()
    app.state.limiter = anyio.CapacityLimiter(settings.workers)
    app.add_exception_handler(StarletteHTTPException, http_error)
    app.add_exception_handler(RequestValidationError, invalid)
    app.include_router(api.router)
    app.include_router(oip.router)
    app.add_api_route("/metrics", prometheus, include_in_schema=False)
    app.add_middleware(BodyLimit, limit=settings.max_body_bytes)
    app.add_middleware(MetricsMiddleware, metrics=app.state.metrics)  # outermost: counts the 413s too
    return app


async def http_error(request: Request, exc: StarletteHTTPException):
    return JSONResponse({"error": str(exc.detail)}, status_code=exc.status_code, headers=exc.headers)


async def invalid(request: Request, exc: RequestValidationError):
    first = exc.errors()[0] if exc.errors() else {}
    where = ".".join(str(p) for p in first.get("loc", ()) if p != "body")
    status = 400 if first.get("type") == "json_invalid" else 422
    return JSONResponse({"error": f"{where}: {first.get('msg', 'invalid request')}".lstrip(": ")}, status_code=status)


async def prometheus(request: Request):
    return Response(generate_latest(request.app.state.metrics.registry), media_type=CONTENT_TYPE_LATEST)
