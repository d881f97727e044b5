"""fmnist's own routes: the page, the list of models, and /predict for uploaded image files."""

from __future__ import annotations

import asyncio
import base64
import io
from importlib import resources

import anyio
import numpy as np
import torch
from fastapi import APIRouter, HTTPException, Query, Request
from fastapi.responses import HTMLResponse, JSONResponse
from PIL import Image
from starlette.datastructures import UploadFile
from starlette.exceptions import HTTPException as StarletteHTTPException

from fmnist.data import CLASSES
from fmnist.data.images import load_image_bytes, to_png
from fmnist.errors import FmnistError
from fmnist.explain.heat import heat
from fmnist.explain.methods import saliency_maps
from fmnist.jobs.predict import top_classes
from fmnist.serve.schemas import ERRORS, ExplainResponse, ModelList, PredictResponse

router = APIRouter()


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
                "temperature": p.temperature,
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


def decode_all(blobs: list[tuple[str, bytes]], max_pixels: int) -> tuple[torch.Tensor, list[str]]:
    """The uploaded images as a batch [N, 1, 28, 28] and their previews (PNG data URIs)."""
    images = torch.stack([load_image_bytes(data, name, max_pixels) for name, data in blobs])
    return images, [png_uri(to_png(image)) for image in images]


def png_uri(png: bytes) -> str:
    """PNG bytes as a data URI, for a page to show."""
    return "data:image/png;base64," + base64.b64encode(png).decode()


@router.post(
    "/predict",
    response_model=PredictResponse,
    responses=ERRORS,
    summary="classify uploaded images with every served model",
)
async def predict(request: Request, top_k: int = Query(3, ge=1, le=10, description="classes per model")):
    state = request.app.state
    settings, models = state.settings, state.models
    blobs = await read_images(request, settings.max_images)
    try:
        images, previews = await anyio.to_thread.run_sync(decode_all, blobs, settings.max_pixels, limiter=state.limiter)
    except FmnistError as e:
        raise HTTPException(400, str(e)) from None
    names = list(models.all())
    answers = await asyncio.gather(*(models.batcher(name).logits(images) for name in names))
    for name in names:
        state.metrics.images.labels(name).inc(len(images))
    top = {name: top_classes(models.get(name).calibrated(logits), top_k) for name, logits in zip(names, answers)}
    results = [
        {
            "file": file,
            "preview": preview,
            "models": [{"name": name, "predictions": top[name][i]} for name in names],
        }
        for i, ((file, _), preview) in enumerate(zip(blobs, previews))
    ]
    return JSONResponse({"results": results})  # the shape PredictResponse documents, unvalidated per request


def explain_all(predictors: dict, image: torch.Tensor) -> list[dict]:
    """Each model's top class for one image, and where it looked for it (occlusion: it needs only
    the model's answers, so it works through ONNX Runtime as through PyTorch)."""
    out = []
    for name, p in predictors.items():
        probs = p.probabilities(image)
        target = probs.argmax(1)
        saliency = saliency_maps(p.logits, image, target, "occlusion")[0]
        rgb = Image.fromarray((heat(image[0], saliency) * 255).round().astype(np.uint8)).resize((112, 112), 0)
        label, probability = CLASSES[int(target[0])], float(probs[0, target[0]])
        buf = io.BytesIO()
        rgb.save(buf, "PNG")
        out.append({"name": name, "label": label, "probability": probability, "map": png_uri(buf.getvalue())})
    return out


@router.post(
    "/explain",
    response_model=ExplainResponse,
    responses=ERRORS,
    summary="where each served model looked for its top class, for one uploaded image (occlusion)",
)
async def explain(request: Request):
    state = request.app.state
    blobs = await read_images(request, 1)  # one image: occlusion asks each model 169 questions
    try:
        images, _ = await anyio.to_thread.run_sync(decode_all, blobs, state.settings.max_pixels, limiter=state.limiter)
    except FmnistError as e:
        raise HTTPException(400, str(e)) from None
    answers = await anyio.to_thread.run_sync(explain_all, state.models.all(), images, limiter=state.limiter)
    return JSONResponse({"file": blobs[0][0], "method": "occlusion", "models": answers})
