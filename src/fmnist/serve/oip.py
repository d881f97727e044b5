"""The Open Inference Protocol (v2) routes: server and model metadata, health, and /infer with JSON
tensors or the binary data extension (serve/tensors.py), whatever the request's content type."""

from __future__ import annotations

import anyio
import torch
from fastapi import APIRouter, Request, Response

from fmnist import __version__
from fmnist.serve.schemas import ERRORS, InferRequest, InferResponse, ModelMetadata
from fmnist.serve.tensors import HEADER_LENGTH, parse_request, response_body

router = APIRouter(prefix="/v2")
PLATFORMS = {"onnx": "onnxruntime_onnx", "torch": "pytorch", "openvino": "openvino_onnx"}
INLINE_BYTES = 64 * 1024  # an /infer body up to this size (about 4 images of JSON) is parsed in place


@router.get("", summary="server metadata (Open Inference Protocol)")
async def server_metadata():
    return {"name": "fmnist", "version": __version__, "extensions": ["binary_tensor_data"]}


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
        # /infer answers raw logits; softmax(logits / temperature) are the calibrated probabilities
        "parameters": {"temperature": p.temperature},
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
    openapi_extra={"requestBody": {"content": {"application/json": {"schema": InferRequest.model_json_schema()}}}},
)
async def infer(name: str, request: Request):
    body = await request.body()  # bounded by the body limit, which answers 413 past it
    content, headers = await infer_answer(request.app.state, name, body, request.headers.get(HEADER_LENGTH))
    return Response(content, headers=headers)


def infer_route():
    """The /infer route as declared here (its path template labels the metrics)."""
    return next(r for r in router.routes if getattr(r, "endpoint", None) is infer)


async def infer_answer(state, name: str, body: bytes, header: str | None) -> tuple[bytes, dict]:
    """The /infer answer's bytes and headers for `body`, or an HTTPException (4xx) saying why not."""
    batcher = state.models.batcher(name)
    if len(body) <= INLINE_BYTES:  # a few images: cheaper here than a thread's round trip
        parsed = parse_request(body, header, state.settings.max_infer_images)
    else:  # a large body is parsed off the event loop, within the limit of work at a time
        parsed = await anyio.to_thread.run_sync(
            parse_request, body, header, state.settings.max_infer_images, limiter=state.limiter
        )
    logits = await batcher.logits(torch.from_numpy(parsed.images))
    state.metrics.images.labels(name).inc(len(parsed.images))
    return response_body(name, parsed.request.id, logits.numpy(), parsed.binary_output)
