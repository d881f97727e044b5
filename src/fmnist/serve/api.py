"""fmnist's own routes: the page, the list of models, and /predict for uploaded image files."""

from __future__ import annotations

import base64
from importlib import resources

import anyio
import torch
from fastapi import APIRouter, HTTPException, Query, Request
from fastapi.responses import HTMLResponse
from starlette.datastructures import UploadFile
from starlette.exceptions import HTTPException as StarletteHTTPException

from fmnist.data import CLASSES
from fmnist.data.images import load_image_bytes, to_png
from fmnist.errors import FmnistError
from fmnist.serve.schemas import ERRORS, ImageResult, ModelList, PredictResponse

router = APIRouter()


def _top(probs: torch.Tensor, k: int) -> list[dict]:
    values, indices = probs.topk(k)
    return [{"label": CLASSES[i], "index": i, "probability": v} for v, i in zip(values.tolist(), indices.tolist())]


@router.get("/", response_class=HTMLResponse, include_in_schema=False)
async def page():
    return HTMLResponse((resources.files("fmnist.serve") / "page.html").read_text(encoding="utf-8"))


@router.get("/models", response_model=ModelList, summary="the served models")
async def list_models(request: Request):
    served = request.app.state.models
    return {
        "ready": True,
        "models": [
            {
                "name": name,
                "backend": p.backend,
                "source": p.source,
                "model": p.info.get("model", "?"),
                "parameters": p.info.get("parameters"),
                "test_accuracy": p.info.get("test_accuracy"),
            }
            for name, p in served.all().items()
        ],
    }


async def read_images(request: Request, max_images: int) -> list[tuple[str, bytes]]:
    """The uploaded files of a multipart body, or a 400 saying what is wrong."""
    try:
        form = await request.form(max_files=max_images + 1, max_fields=8)
    except (StarletteHTTPException, AssertionError) as e:  # not multipart, or a malformed body
        raise HTTPException(
            400, f"send the images as multipart/form-data 'file' fields ({getattr(e, 'detail', e)})"
        ) from None
    files = [f for f in form.getlist("file") if isinstance(f, UploadFile)]
    if not files:
        raise HTTPException(400, "no image: send one or more files as multipart fields named 'file'")
    if len(files) > max_images:
        raise HTTPException(400, f"{len(files)} images in one request; send at most {max_images}")
    return [(f.filename or "upload", await f.read()) for f in files]


@router.post(
    "/predict",
    response_model=PredictResponse,
    responses=ERRORS,
    summary="classify uploaded images with every served model",
)
async def predict(request: Request, top_k: int = Query(3, ge=1, le=10, description="classes per model")):
    state = request.app.state
    settings, predictors = state.settings, state.models.all()
    blobs = await read_images(request, settings.max_images)

    def work() -> list[dict]:
        images = torch.stack([load_image_bytes(data, name, settings.max_pixels) for name, data in blobs])
        answers = {name: p.probabilities(images) for name, p in predictors.items()}
        for name in answers:
            state.metrics.images.labels(name).inc(len(images))
        return [
            {
                "file": file,
                "preview": "data:image/png;base64," + base64.b64encode(to_png(image)).decode(),
                "models": [{"name": name, "predictions": _top(probs[i], top_k)} for name, probs in answers.items()],
            }
            for i, ((file, _), image) in enumerate(zip(blobs, images))
        ]

    try:
        results = await anyio.to_thread.run_sync(work, limiter=state.limiter)
    except FmnistError as e:
        raise HTTPException(400, str(e)) from None
    return {"results": [ImageResult(**r) for r in results]}
