"""/infer reads the one input's own `data` array, wherever else a `data` list appears in the body,
and its fast path answers exactly as the declared FastAPI route does."""

import json

import numpy as np
import pytest
import torch
from fastapi import Depends, FastAPI, HTTPException
from fastapi.testclient import TestClient

from fmnist.inference.predictor import load_predictor
from fmnist.serve import Settings, create_app, oip
from fmnist.serve.fastpath import InferFastPath
from fmnist.serve.tensors import parse_request

ZEROS, HALF = [0.0] * 784, [0.5] * 784


def images(data, **extra) -> dict:
    return {**extra, "inputs": [{"name": "images", "shape": [1, 784], "datatype": "FP32", "data": data}]}


DECOYS = {  # each a body whose input is all 0.5, with a list of zeros (or odd text) named data elsewhere
    "parameters.data first": {"parameters": {"data": ZEROS}, **images(HALF)},
    "an output's data before inputs": {"outputs": [{"name": "logits", "parameters": {"data": ZEROS}}], **images(HALF)},
    "a key ending in data": {"parameters": {'x"data': ZEROS}, **images(HALF)},
    "brackets inside strings": {"parameters": {"data": ["]", "[[", ZEROS]}, **images(HALF)},
    "input parameters.data": {
        "inputs": [
            {"name": "images", "shape": [1, 784], "datatype": "FP32", "parameters": {"data": ZEROS}, "data": HALF}
        ]
    },
}


@pytest.mark.parametrize("body", DECOYS.values(), ids=DECOYS.keys())
def test_infer_reads_the_inputs_own_data_and_keeps_the_rest(body):
    parsed = parse_request(json.dumps(body).encode(), None, 8)
    assert parsed.images.shape == (1, 1, 28, 28) and np.all(parsed.images == 0.5)
    if "parameters" in body:  # the other data lists come back as they were sent
        assert parsed.request.parameters == body["parameters"]


def test_a_placeholder_written_by_the_client_is_only_text():
    # the placeholder a client could guess (no process mark) is an ordinary string, refused as data
    body = {"inputs": [{"name": "images", "shape": [1, 784], "datatype": "FP32", "data": "\x00:0"}]}
    with pytest.raises(HTTPException) as e:
        parse_request(json.dumps(body).encode(), None, 8)
    assert e.value.status_code in (400, 422)


@pytest.fixture(scope="module")
def apps(runs):
    """The same models behind the fast path and behind FastAPI's declared route alone."""
    fast = create_app([runs / "shallow"], Settings(max_body_bytes=200_000))
    plain = create_app([runs / "shallow"], Settings(max_body_bytes=200_000))
    plain.user_middleware = [m for m in plain.user_middleware if m.cls is not InferFastPath]
    with TestClient(fast) as a, TestClient(plain) as b:
        yield a, b


SAME = {
    "one image": (images(HALF), {}),
    "a decoy data list": (DECOYS["parameters.data first"], {}),
    "malformed JSON": (b'{"inputs": [', {}),
    "not UTF-8": (b'{"inputs": "\xff"}', {}),
    "wrong shape": ({"inputs": [{"name": "images", "shape": [2, 28, 28], "datatype": "FP32", "data": [0]}]}, {}),
    "values disagree with shape": (images([0.5] * 700), {}),
    "NaN": (json.dumps(images([float("nan")] * 784)).encode(), {}),
    "out of range": (images([3.0] * 784), {}),
    "not numbers": (images(["x"] * 784), {}),
    "no inputs": ({"outputs": []}, {}),
    "bad binary header": (images(HALF), {"inference-header-content-length": "x"}),
    "over the body limit": (images([0.5] * 784 * 40), {}),
}


@pytest.mark.parametrize("body, headers", SAME.values(), ids=SAME.keys())
@pytest.mark.parametrize("model", ["shallow", "nope"])
def test_fast_path_answers_as_the_declared_route(apps, body, headers, model):
    content = body if isinstance(body, bytes) else json.dumps(body).encode()
    answers = [
        c.post(f"/v2/models/{model}/infer", content=content, headers={"content-type": "application/json", **headers})
        for c in apps
    ]
    fast, plain = answers
    assert fast.status_code == plain.status_code, (fast.text, plain.text)
    assert fast.headers["content-type"] == plain.headers["content-type"]
    assert fast.json() == plain.json()


def test_fast_path_answers_the_logits_of_the_input(apps, runs):
    r = apps[0].post("/v2/models/shallow/infer", json=DECOYS["parameters.data first"])
    assert r.status_code == 200, r.text
    expected = load_predictor(runs / "shallow").logits(torch.full((1, 1, 28, 28), 0.5))
    assert torch.allclose(torch.tensor(r.json()["outputs"][0]["data"]).reshape(1, 10), expected, atol=1e-5)


def deny():
    raise HTTPException(401, "no credentials")


def test_a_dependency_on_the_infer_route_applies_to_it(runs, monkeypatch):
    include = FastAPI.include_router

    def with_auth(self, router, **kw):  # the OIP routes included behind a dependency, as authentication is
        if router is oip.router:
            kw["dependencies"] = [Depends(deny)]
        return include(self, router, **kw)

    monkeypatch.setattr(FastAPI, "include_router", with_auth)
    with TestClient(create_app([runs / "shallow"])) as c:
        r = c.post("/v2/models/shallow/infer", json=images(HALF))
        assert r.status_code == 401 and r.json() == {"error": "no credentials"}
        assert c.get("/v2/models/shallow").status_code == 401
