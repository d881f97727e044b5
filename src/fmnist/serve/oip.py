"""The Open Inference Protocol (v2) routes: server and model metadata, health, and /infer."""

from __future__ import annotations

import anyio
import numpy as np
import torch
from fastapi import APIRouter, HTTPException, Request

from fmnist import __version__
from fmnist.serve.schemas import ERRORS, InferRequest, InferResponse, ModelMetadata

router = APIRouter(prefix="/v2")
PLATFORMS = {"onnx": "onnxruntime_onnx", "torch": "pytorch"}


def infer_array(request: InferRequest, max_batch: int) -> np.ndarray:
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


@router.get("", summary="server metadata (Open Inference Protocol)")
async def server_metadata():
    return {"name": "fmnist", "version": __version__, "extensions": []}


@router.get("/health/live", summary="liveness (Open Inference Protocol)")
async def live():
    return {"live": True}


@router.get("/health/ready", summary="readiness: every model was loaded and warmed up before the port opened")
async def ready():
    return {"ready": True}


@router.get(
    "/models/{name}", response_model=ModelMetadata, responses=ERRORS, summary="model metadata (Open Inference Protocol)"
)
async def model_metadata(name: str, request: Request):
    p = request.app.state.models.get(name)
    return {
        "name": name,
        "versions": ["1"],
        "platform": PLATFORMS[p.backend],
        "inputs": [{"name": "images", "datatype": "FP32", "shape": [-1, 1, 28, 28]}],
        "outputs": [{"name": "logits", "datatype": "FP32", "shape": [-1, 10]}],
    }


@router.get("/models/{name}/ready", responses=ERRORS, summary="model readiness (Open Inference Protocol)")
async def model_ready(name: str, request: Request):
    request.app.state.models.get(name)
    return {"name": name, "ready": True}


@router.post(
    "/models/{name}/infer",
    response_model=InferResponse,
    responses=ERRORS,
    summary="logits for FP32 images [N, 1, 28, 28] or [N, 784] in [0, 1] (Open Inference Protocol)",
)
async def infer(name: str, body: InferRequest, request: Request):
    state = request.app.state
    p = state.models.get(name)
    x = torch.from_numpy(infer_array(body, state.settings.max_batch))
    logits = await anyio.to_thread.run_sync(p.logits, x, limiter=state.limiter)
    state.metrics.images.labels(name).inc(len(x))
    return {
        "model_name": name,
        "model_version": "1",
        "id": body.id,
        "outputs": [
            {"name": "logits", "datatype": "FP32", "shape": list(logits.shape), "data": logits.reshape(-1).tolist()}
        ],
    }
