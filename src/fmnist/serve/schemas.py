"""The request and response shapes of the server, as pydantic models (so /docs shows them)."""

from __future__ import annotations

from pydantic import BaseModel, Field


class ErrorBody(BaseModel):
    error: str = Field(description="what is wrong with the request, in one line")


ERRORS = {status: {"model": ErrorBody} for status in (400, 404, 413, 422)}


class ClassScore(BaseModel):
    label: str = Field(examples=["Sneaker"])
    index: int = Field(ge=0, le=9, description="the class's index in Fashion-MNIST")
    probability: float = Field(ge=0, le=1)


class ModelAnswer(BaseModel):
    name: str
    predictions: list[ClassScore] = Field(description="the top-k classes, most probable first")


class ImageResult(BaseModel):
    file: str = Field(description="the uploaded file's name")
    preview: str = Field(description="the 28×28 image every model saw, as a PNG data URI")
    models: list[ModelAnswer]


class PredictResponse(BaseModel):
    results: list[ImageResult] = Field(description="one per uploaded image, in upload order")


class Explanation(BaseModel):
    name: str = Field(description="the served model")
    label: str = Field(description="its top class for the image")
    probability: float = Field(ge=0, le=1, description="its calibrated probability")
    map: str = Field(description="the image with where the model looked for that class, as a PNG data URI")


class ExplainResponse(BaseModel):
    file: str
    method: str = Field(description="occlusion: 4×4 patches blacked out in turn, the class's logit watched")
    models: list[Explanation]


class ModelInfo(BaseModel):
    name: str = Field(description="the name the API uses for it (run folder or file name)")
    model: str = Field(description="the registered architecture, e.g. deep_cnn")
    parameters: int | None
    test_accuracy: float | None = Field(description="the run's own test accuracy, where it recorded one")
    backend: str = Field(description="onnx (ONNX Runtime) or torch (PyTorch)")
    source: str
    temperature: float = Field(description="divides the logits before the softmax (fitted on validation; 1: none)")


class ModelList(BaseModel):
    models: list[ModelInfo]
    ready: bool


# The Open Inference Protocol (v2) shapes that KServe, Triton and MLServer share.


class TensorMetadata(BaseModel):
    name: str
    datatype: str
    shape: list[int]


class ModelMetadata(BaseModel):
    name: str
    versions: list[str]
    platform: str
    inputs: list[TensorMetadata]
    outputs: list[TensorMetadata]
    parameters: dict[str, float] = Field(
        default_factory=dict,
        description="temperature: /infer answers raw logits; softmax(logits / temperature) is calibrated",
    )


class InferInput(BaseModel):
    name: str
    shape: list[int]
    datatype: str
    data: list | None = Field(
        None,
        description="the tensor's values, flat in row-major order (nested lists are accepted); "
        "absent when they follow the JSON as binary data (parameters.binary_data_size)",
    )
    parameters: dict | None = Field(None, description="binary_data_size: bytes of this input after the JSON header")


class RequestedOutput(BaseModel):
    name: str
    parameters: dict | None = Field(None, description="binary_data: true for the output as binary data")


class InferRequest(BaseModel):
    id: str | None = None
    inputs: list[InferInput]
    outputs: list[RequestedOutput] | None = None
    parameters: dict | None = Field(None, description="binary_data_output: true for every output as binary data")


class InferOutput(BaseModel):
    name: str
    shape: list[int]
    datatype: str
    data: list[float] | None = None
    parameters: dict | None = None


class InferResponse(BaseModel):
    model_name: str
    model_version: str | None = None
    id: str | None = None
    outputs: list[InferOutput]
