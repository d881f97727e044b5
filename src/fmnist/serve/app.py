"""The server: `create_app(models, settings)` builds a FastAPI app that answers with any number of
models (run folders or .onnx files) through a JSON API, the Open Inference Protocol's v2 routes,
Prometheus metrics, and a page for people.

Nothing happens at import or in create_app: the models are loaded and warmed up in a thread when
the server starts, and /v2/health/ready says 503 until they all are. Every route is thin: images go
through fmnist.images (the preprocessing `fmnist predict` uses, once per image) and every model is
a fmnist.predictors.Predictor, run off the event loop.
"""

from __future__ import annotations

import base64
import threading
from dataclasses import dataclass
from importlib import resources
from pathlib import Path

import anyio
import numpy as np
import torch
from fastapi import FastAPI, HTTPException, Query, Request
from fastapi.exceptions import RequestValidationError
from fastapi.responses import HTMLResponse, JSONResponse, Response
from prometheus_client import CONTENT_TYPE_LATEST, generate_latest
from starlette.datastructures import UploadFile
from starlette.exceptions import HTTPException as StarletteHTTPException

from .. import __version__
from ..data import CLASSES
from ..errors import FmnistError
from ..images import MAX_PIXELS, load_image_bytes, to_png
from ..predictors import Predictor, load_predictor
from .middleware import BodyLimit, Metrics, MetricsMiddleware
from .schemas import (
    ErrorBody,
    ImageResult,
    InferRequest,
    InferResponse,
    ModelList,
    ModelMetadata,
    PredictResponse,
)

ERRORS = {400: {"model": ErrorBody}, 404: {"model": ErrorBody}, 413: {"model": ErrorBody},
          422: {"model": ErrorBody}, 503: {"model": ErrorBody}}


@dataclass
class Settings:
    max_body_bytes: int = 10 * 1024 * 1024  # a request body over this is refused (413) unread
    max_images: int = 16  # images in one /predict request
    max_pixels: int = MAX_PIXELS  # an image declaring more is refused before it is decoded
    max_batch: int = 1024  # images in one /v2/.../infer request
    workers: int = 2  # inferences at a time, off the event loop
    backend: str | None = None  # for run folders: onnx (default) or torch


class Models:
    """The served models, loaded in a background thread so the server is live at once and ready
    once every model has answered a warm-up batch."""

    def __init__(self, sources: list, backend: str | None):
        self.sources, self.backend = sources, backend
        self.loaded: dict[str, Predictor] = {}
        self.ready = threading.Event()
        self.failure: str | None = None

    def load(self) -> None:
        try:
            for source in self.sources:
                predictor = source if isinstance(source, Predictor) else load_predictor(Path(source), self.backend)
                predictor.logits(torch.zeros(2, 1, 28, 28))  # warm-up: allocations, kernel choice
                name, n = predictor.name, 2
                while name in self.loaded:  # two runs named alike (study/shallow, other/shallow)
                    name, n = f"{predictor.name}-{n}", n + 1
                self.loaded[name] = predictor
            self.ready.set()
        except FmnistError as e:
            self.failure = str(e)

    def get(self, name: str) -> Predictor:
        if name in self.loaded:
            return self.loaded[name]
        if not self.ready.is_set():  # it may be one still to load
            raise HTTPException(503, "models are still loading" if self.failure is None else self.failure)
        raise HTTPException(404, f"no model named {name!r}; served: {', '.join(self.loaded)}")

    def all(self) -> dict[str, Predictor]:
        if not self.ready.is_set():
            raise HTTPException(503, "models are still loading" if self.failure is None else self.failure)
        return self.loaded


def _top(probs: torch.Tensor, k: int) -> list[dict]:
    values, indices = probs.topk(k)
    return [{"label": CLASSES[i], "index": i, "probability": v} for v, i in zip(values.tolist(), indices.tolist())]


def _infer_array(request: InferRequest, max_batch: int) -> np.ndarray:
    """The OIP request's one input as float32 [N, 1, 28, 28], or a 400 saying what is wrong."""
    if len(request.inputs) != 1:
        raise HTTPException(400, f"expected one input tensor, got {len(request.inputs)}")
    tensor = request.inputs[0]
    if tensor.datatype != "FP32":
        raise HTTPException(400, f"input datatype must be FP32, got {tensor.datatype!r}")
    shape = tensor.shape
    if not (len(shape) == 4 and shape[1:] == [1, 28, 28]) and not (len(shape) == 2 and shape[1] == 784):
        raise HTTPException(400, f"input shape must be [N, 1, 28, 28] or [N, 784], got {shape}")
    if not 1 <= shape[0] <= max_batch:
        raise HTTPException(400, f"batch of {shape[0]} images: send 1 to {max_batch}")
    try:
        values = np.asarray(tensor.data, dtype=np.float32).reshape(-1)
    except (ValueError, TypeError):
        raise HTTPException(400, "input data must be numbers (a flat or nested list)") from None
    if values.size != shape[0] * 784:
        raise HTTPException(400, f"input data holds {values.size} values, shape {shape} needs {shape[0] * 784}")
    if not np.isfinite(values).all():
        raise HTTPException(400, "input data holds NaN or infinite values")
    if values.min() < 0 or values.max() > 1:
        raise HTTPException(400, "input values must lie in [0, 1] (pixels scaled by 1/255)")
    return values.reshape(shape[0], 1, 28, 28)


def _page() -> str:
    return (resources.files("fmnist.serve") / "page.html").read_text(encoding="utf-8")


def create_app(models: list, settings: Settings | None = None) -> FastAPI:
    """The app serving `models` (run folders, .onnx files or loaded Predictors)."""
    settings = settings or Settings()
    served = Models(list(models), settings.backend)
    metrics = Metrics()
    limiter = anyio.CapacityLimiter(settings.workers)

    async def lifespan(app):
        threading.Thread(target=served.load, name="fmnist-load-models", daemon=True).start()
        yield

    app = FastAPI(title="fmnist", version=__version__, lifespan=lifespan,
                  description="Fashion-MNIST classifiers trained by fmnist: a JSON API, the Open Inference "
                              "Protocol (v2) and a page at /.")
    app.state.models, app.state.settings, app.state.metrics = served, settings, metrics

    @app.exception_handler(StarletteHTTPException)
    async def http_error(request: Request, exc: StarletteHTTPException):
        return JSONResponse({"error": str(exc.detail)}, status_code=exc.status_code, headers=exc.headers)

    @app.exception_handler(RequestValidationError)
    async def invalid(request: Request, exc: RequestValidationError):
        first = exc.errors()[0] if exc.errors() else {}
        where = ".".join(str(p) for p in first.get("loc", ()) if p != "body")
        status = 400 if first.get("type") == "json_invalid" else 422
        return JSONResponse({"error": f"{where}: {first.get('msg', 'invalid request')}".lstrip(": ")},
                            status_code=status)

    @app.get("/", response_class=HTMLResponse, include_in_schema=False)
    async def page():
        return HTMLResponse(_page())

    @app.get("/models", response_model=ModelList, summary="the served models")
    async def list_models():
        ready = served.ready.is_set()
        return {"ready": ready, "models": [{"name": name, "backend": p.backend, "source": p.source,
                                            "model": p.info.get("model", "?"), "parameters": p.info.get("parameters"),
                                            "test_accuracy": p.info.get("test_accuracy")}
                                           for name, p in (served.loaded.items() if ready else [])]}

    @app.post("/predict", response_model=PredictResponse, responses=ERRORS,
              summary="classify uploaded images with every served model")
    async def predict(request: Request, top_k: int = Query(3, ge=1, le=10, description="classes per model")):
        predictors = served.all()
        try:
            form = await request.form(max_files=settings.max_images + 1, max_fields=8)
        except (StarletteHTTPException, AssertionError) as e:  # not multipart, or a malformed body
            raise HTTPException(400, "send the images as multipart/form-data 'file' fields "
                                     f"({getattr(e, 'detail', e)})") from None
        files = [f for f in form.getlist("file") if isinstance(f, UploadFile)]
        if not files:
            raise HTTPException(400, "no image: send one or more files as multipart fields named 'file'")
        if len(files) > settings.max_images:
            raise HTTPException(400, f"{len(files)} images in one request; send at most {settings.max_images}")
        blobs = [(f.filename or "upload", await f.read()) for f in files]

        def work() -> list[dict]:
            images = torch.stack([load_image_bytes(data, name, settings.max_pixels) for name, data in blobs])
            answers = {name: p.probabilities(images) for name, p in predictors.items()}
            for name in answers:
                metrics.images.labels(name).inc(len(images))
            return [{"file": file, "preview": "data:image/png;base64," + base64.b64encode(to_png(image)).decode(),
                     "models": [{"name": name, "predictions": _top(probs[i], top_k)}
                                for name, probs in answers.items()]}
                    for i, ((file, _), image) in enumerate(zip(blobs, images))]

        try:
            results = await anyio.to_thread.run_sync(work, limiter=limiter)
        except FmnistError as e:
            raise HTTPException(400, str(e)) from None
        return {"results": [ImageResult(**r) for r in results]}

    @app.get("/v2", summary="server metadata (Open Inference Protocol)")
    async def server_metadata():
        return {"name": "fmnist", "version": __version__, "extensions": []}

    @app.get("/v2/health/live", summary="liveness (Open Inference Protocol)")
    async def live():
        return {"live": True}

    @app.get("/v2/health/ready", summary="readiness: 503 until every model is loaded and warmed up",
             responses={503: {"model": ErrorBody}})
    async def ready():
        if not served.ready.is_set():
            return JSONResponse({"ready": False, "error": served.failure or "models are still loading"}, 503)
        return {"ready": True}

    @app.get("/v2/models/{name}", response_model=ModelMetadata, responses=ERRORS,
             summary="model metadata (Open Inference Protocol)")
    async def model_metadata(name: str):
        p = served.get(name)
        platform = "onnxruntime_onnx" if p.backend == "onnx" else "pytorch_torchscript"
        return {"name": name, "versions": ["1"], "platform": platform,
                "inputs": [{"name": "images", "datatype": "FP32", "shape": [-1, 1, 28, 28]}],
                "outputs": [{"name": "logits", "datatype": "FP32", "shape": [-1, 10]}]}

    @app.get("/v2/models/{name}/ready", responses=ERRORS, summary="model readiness (Open Inference Protocol)")
    async def model_ready(name: str):
        served.get(name)
        return {"name": name, "ready": True}

    @app.post("/v2/models/{name}/infer", response_model=InferResponse, responses=ERRORS,
              summary="logits for FP32 images [N, 1, 28, 28] or [N, 784] in [0, 1] (Open Inference Protocol)")
    async def infer(name: str, body: InferRequest):
        p = served.get(name)
        x = torch.from_numpy(_infer_array(body, settings.max_batch))
        logits = await anyio.to_thread.run_sync(p.logits, x, limiter=limiter)
        metrics.images.labels(name).inc(len(x))
        return {"model_name": name, "model_version": "1", "id": body.id,
                "outputs": [{"name": "logits", "datatype": "FP32", "shape": list(logits.shape),
                             "data": logits.reshape(-1).tolist()}]}

    @app.get("/metrics", include_in_schema=False)
    async def prometheus():
        return Response(generate_latest(metrics.registry), media_type=CONTENT_TYPE_LATEST)

    app.add_middleware(BodyLimit, limit=settings.max_body_bytes)
    app.add_middleware(MetricsMiddleware, metrics=metrics)  # outermost: counts the 413s too
    return app
