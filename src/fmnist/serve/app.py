"""The server: `create_app(models, settings)` builds a FastAPI app that answers with models already
loaded and warmed up (serve.models.load_models), through fmnist's JSON API and page (serve/api.py),
the Open Inference Protocol's v2 routes (serve/oip.py), Prometheus metrics and /docs and /redoc, whose
scripts are served from the package (they render offline).

Every route is thin: images go through fmnist.data.images (the preprocessing `fmnist predict` uses)
and every model is a fmnist.inference.predictor.Predictor, called off the event loop on whole
batches of concurrent requests (serve/batching.py).
"""

from __future__ import annotations

import contextlib
import os

import anyio
from fastapi import FastAPI, Request
from fastapi.exceptions import RequestValidationError
from fastapi.responses import JSONResponse, Response
from fastapi_offline import FastAPIOffline
from prometheus_client import CONTENT_TYPE_LATEST, CollectorRegistry, generate_latest
from prometheus_client.multiprocess import MultiProcessCollector
from starlette.exceptions import HTTPException as StarletteHTTPException

from fmnist import __version__
from fmnist.inference.predictor import Predictor
from fmnist.serve import api, oip, runs
from fmnist.serve.fastpath import InferFastPath
from fmnist.serve.middleware import BodyLimit, Metrics, MetricsMiddleware
from fmnist.serve.models import Models, load_models
from fmnist.serve.settings import METRICS_ENV, Settings

DOCS_ASSETS = "/docs-assets"


def create_app(models: dict[str, Predictor] | list, settings: Settings | None = None) -> FastAPI:
    """The app serving `models`: loaded Predictors by name, or a list of run folders, .onnx files
    and Predictors, loaded and warmed up here (a failure raises before any app exists)."""
    settings = settings or Settings()
    loaded = models if isinstance(models, dict) else load_models(list(models))
    limiter = anyio.CapacityLimiter(settings.workers)
    served = Models(loaded, settings.max_batch, settings.max_delay, limiter, settings.max_queue)

    @contextlib.asynccontextmanager
    async def lifespan(app):
        yield
        served.close()

    app = FastAPIOffline(  # FastAPI, with /docs and /redoc served from the package, not a CDN
        title="fmnist",
        version=__version__,
        lifespan=lifespan,
        static_url=DOCS_ASSETS,
        description="Fashion-MNIST classifiers trained by fmnist: a JSON API, the Open Inference "
        "Protocol (v2) and a page at /.",
    )
    app.state.models, app.state.settings, app.state.metrics, app.state.limiter = served, settings, Metrics(), limiter
    # The runs view and its loads (reading every run folder, an ONNX export) one at a time, apart
    # from the model calls' slots: a listing or a load never stalls /predict and /infer.
    app.state.runs_limiter = anyio.CapacityLimiter(1)
    app.add_exception_handler(StarletteHTTPException, http_error)
    app.add_exception_handler(RequestValidationError, invalid)
    app.include_router(api.router)
    app.include_router(oip.router)
    app.include_router(runs.router)
    app.add_api_route("/metrics", prometheus, include_in_schema=False)
    app.add_middleware(
        InferFastPath, route=oip.infer_route(), router=oip.router
    )  # innermost of the three: inside the limit
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
    registry = request.app.state.metrics.registry
    if os.environ.get(METRICS_ENV):  # one of several processes (serve/processes.py): all of theirs, summed
        registry = CollectorRegistry()
        MultiProcessCollector(registry)
    return Response(generate_latest(registry), media_type=CONTENT_TYPE_LATEST)
