"""Open Inference Protocol request and response bodies, read without Python lists of numbers.

A JSON body's `data` arrays are cut out before the rest is parsed (so a body of floats costs a
NumPy array, not a Python float per value) and read only after the datatype, shape and batch are
checked. The binary data extension (an `Inference-Header-Content-Length` header: the JSON header,
then each input's raw little-endian bytes, `parameters.binary_data_size` each) is read the same
way, and answered in kind when the client asks for binary outputs.
"""

from __future__ import annotations

import json
import re
import secrets
import warnings
from dataclasses import dataclass

import numpy as np
import orjson
from fastapi import HTTPException
from pydantic import ValidationError

from fmnist.serve.schemas import InferRequest

HEADER_LENGTH = "inference-header-content-length"
SHAPES = "[N, 1, 28, 28] or [N, 784]"


@dataclass
class Parsed:
    """An /infer request: its JSON part, its one input as float32 [N, 1, 28, 28], and whether the
    client wants the output as binary data."""

    request: InferRequest
    images: np.ndarray
    binary_output: bool


KEY = re.compile(r'"data"\s*:\s*\[')
# A placeholder a client cannot write: the process's own random mark, then the array's index.
MARK = "\x00" + secrets.token_hex(8) + ":"
MARK_JSON = json.dumps(MARK)[:-1]  # as it reads inside JSON text, without the closing quote


def cut_data(text: str) -> tuple[str, list[str]]:
    """The JSON text with each `"data": [...]` array replaced by a placeholder, and those arrays'
    text (read later as numbers, or refused). The array's end is found by str.find and str.count,
    passes in C: a regular expression over the array cost a third of a one-image request."""
    arrays: list[str] = []
    parts: list[str] = []
    pos = 0
    while (m := KEY.search(text, pos)) is not None:
        start = end = m.end() - 1  # at the array's "["
        depth = 0
        while True:  # to the "]" that closes it: each "]" closes one of the "[" seen so far
            close = text.find("]", end)
            if close < 0:
                break
            depth += text.count("[", end, close) - 1
            end = close + 1
            if depth == 0:
                break
        if close < 0:  # not one whole array: left to the JSON parser to refuse
            break
        parts.append(f'{text[pos : m.start()]}"data": {MARK_JSON}{len(arrays)}"')
        arrays.append(text[start:end])
        pos = end
    parts.append(text[pos:])
    return "".join(parts), arrays


class Unattributed(Exception):
    """A cut array is not where a placeholder would be found again (it lay inside a string)."""


def attribute(body: dict, arrays: list[str]) -> dict[int, str]:
    """Put the cut arrays back where they came from: each input's own `data` text by the input's
    index (its `data` set to None until read), any other `data` (parameters, outputs) parsed in
    place. Raises Unattributed unless every array is found exactly once."""
    found: dict[int, str] = {}
    seen: list[int] = []

    def index_of(value) -> int | None:
        if isinstance(value, str) and value.startswith(MARK) and value[len(MARK) :].isdigit():
            return int(value[len(MARK) :])
        return None

    def walk(node):
        if isinstance(node, dict):
            for key, value in node.items():
                if (k := index_of(value)) is not None:
                    seen.append(k)
                    node[key] = parsed_array(arrays[k]) if k < len(arrays) else value
                else:
                    walk(value)
        elif isinstance(node, list):
            for value in node:
                walk(value)

    for i, tensor in enumerate(input_list(body)):
        if isinstance(tensor, dict) and (k := index_of(tensor.get("data"))) is not None:
            seen.append(k)
            found[i] = arrays[k] if k < len(arrays) else ""
            tensor["data"] = None
    if len(seen) < len(arrays):  # the others lie elsewhere (each placeholder is written once)
        walk(body)
    if sorted(seen) != list(range(len(arrays))):
        raise Unattributed
    return found


def input_list(body) -> list:
    inputs = body.get("inputs") if isinstance(body, dict) else None
    return inputs if isinstance(inputs, list) else []


def parsed_array(text: str):
    try:
        return orjson.loads(text)
    except orjson.JSONDecodeError:  # cut in the wrong place (a "]" inside a string): parse it whole
        raise Unattributed from None


def read_json(head: bytes) -> tuple[InferRequest, dict[int, str]]:
    """The request and each input's `data` text by input index. The arrays are cut out and put
    back by their placeholders; a body where that cannot be done is parsed whole, never guessed."""
    try:
        text = head.decode("utf-8")
    except UnicodeDecodeError:
        raise HTTPException(400, "request body is not UTF-8 JSON") from None
    try:
        cut, arrays = cut_data(text)
        body = json.loads(cut)
        found = attribute(body, arrays)
    except (json.JSONDecodeError, Unattributed):
        try:
            body = json.loads(text)
        except json.JSONDecodeError as e:
            raise HTTPException(400, f"request body is not valid JSON ({e.msg})") from None
        found = {}
        for i, tensor in enumerate(input_list(body)):
            if isinstance(tensor, dict) and isinstance(tensor.get("data"), list):
                found[i] = json.dumps(tensor["data"])
                tensor["data"] = None
    try:
        return InferRequest.model_validate(body), found
    except ValidationError as e:
        first = e.errors()[0]
        where = ".".join(str(p) for p in first.get("loc", ()))
        raise HTTPException(422, f"{where}: {first.get('msg')}".lstrip(": ")) from None


def numbers(array_text: str, expected: int) -> np.ndarray:
    """A JSON array of numbers (flat or nested) as float32, checked to hold `expected` values."""
    try:  # strict JSON numbers, flat or evenly nested: orjson, four times NumPy's text parser
        values = np.asarray(orjson.loads(array_text), dtype=np.float32).reshape(-1)
    except (orjson.JSONDecodeError, ValueError, TypeError):
        values = None  # NaN, Infinity or ragged nesting: the slower parser below decides
    if values is not None and values.size == expected:
        return values
    flat = array_text.replace("[", " ").replace("]", " ").strip()
    values = np.zeros(0, np.float32)
    if flat:
        with warnings.catch_warnings():
            warnings.simplefilter("error")  # NumPy warns, and stops, at text that is not a number
            try:
                values = np.fromstring(flat, dtype=np.float32, sep=",")
            except (ValueError, DeprecationWarning):
                raise HTTPException(400, "input data must be numbers (a flat or nested list)") from None
    if values.size != expected:
        raise HTTPException(400, f"input data holds {values.size} values, the shape needs {expected}")
    return values


def parse_request(body: bytes, header_length: str | None, max_batch: int) -> Parsed:
    """Check and read an /infer body (JSON, or JSON then binary data); a 400 says what is wrong."""
    if header_length is not None:
        try:
            split = int(header_length)
        except ValueError:
            raise HTTPException(400, "bad Inference-Header-Content-Length header") from None
        if not 0 < split <= len(body):
            raise HTTPException(400, f"Inference-Header-Content-Length {split} does not fit a {len(body)}-byte body")
        head, binary = body[:split], body[split:]
    else:
        head, binary = body, None
    request, found = read_json(head)
    n = check_input(request, max_batch)
    tensor = request.inputs[0]
    size = (tensor.parameters or {}).get("binary_data_size")
    if size is not None:
        values = from_binary(binary, size, n * 784)
    elif 0 in found:
        values = numbers(found[0], n * 784)
    elif tensor.data is not None:
        raise HTTPException(400, "input data must be numbers (a flat or nested list)")
    else:
        raise HTTPException(400, "input 'data' is missing (or send it as binary data)")
    check_range(values)
    return Parsed(request, values.reshape(n, 1, 28, 28), wants_binary(request))


def check_input(request: InferRequest, max_batch: int) -> int:
    """The batch size of the request's one FP32 input, after checking its shape."""
    if len(request.inputs) != 1:
        raise HTTPException(400, f"expected one input tensor, got {len(request.inputs)}")
    tensor = request.inputs[0]
    if tensor.datatype != "FP32":
        raise HTTPException(400, f"input datatype must be FP32, got {tensor.datatype!r}")
    shape = tensor.shape
    if not (len(shape) == 4 and shape[1:] == [1, 28, 28]) and not (len(shape) == 2 and shape[1] == 784):
        raise HTTPException(400, f"input shape must be {SHAPES}, got {shape}")
    if not 1 <= shape[0] <= max_batch:
        raise HTTPException(400, f"batch of {shape[0]} images: send 1 to {max_batch}")
    return shape[0]


def from_binary(binary: bytes | None, size, expected: int) -> np.ndarray:
    if binary is None:
        raise HTTPException(400, "binary_data_size given without an Inference-Header-Content-Length header")
    if not isinstance(size, int) or size != len(binary):
        raise HTTPException(400, f"binary_data_size {size} does not match the {len(binary)} bytes after the header")
    if size != expected * 4:
        raise HTTPException(400, f"binary data holds {size} bytes, the shape needs {expected * 4} (FP32)")
    return np.frombuffer(binary, dtype="<f4").astype(np.float32)


def check_range(values: np.ndarray) -> None:
    if not np.isfinite(values).all():
        raise HTTPException(400, "input data holds NaN or infinite values")
    if values.size and (values.min() < 0 or values.max() > 1):
        raise HTTPException(400, "input values must lie in [0, 1] (pixels scaled by 1/255)")


def wants_binary(request: InferRequest) -> bool:
    """Whether the client asked for the output as binary data (per output, or for all)."""
    if request.outputs:
        return any((o.parameters or {}).get("binary_data", False) for o in request.outputs)
    return bool((request.parameters or {}).get("binary_data_output", False))


def response_body(name: str, request_id: str | None, logits: np.ndarray, binary: bool) -> tuple[bytes, dict]:
    """The /infer answer's bytes and headers: JSON, or a JSON header followed by the logits' bytes."""
    output: dict = {"name": "logits", "datatype": "FP32", "shape": list(logits.shape)}
    head: dict = {"model_name": name, "model_version": "1", "outputs": [output]}
    if request_id is not None:
        head["id"] = request_id
    if not binary:
        output["data"] = logits.reshape(-1).tolist()
        return json.dumps(head).encode(), {"content-type": "application/json"}
    raw = np.ascontiguousarray(logits, dtype="<f4").tobytes()
    output["parameters"] = {"binary_data_size": len(raw)}
    header = json.dumps(head).encode()
    return header + raw, {"content-type": "application/octet-stream", HEADER_LENGTH: str(len(header))}
