"""The server: every route with FastAPI's test client, every bad input a 4xx with a JSON error and
never a 500, metrics, readiness; and a real uvicorn process under a bounded load."""

import asyncio
import io
import json
import os
import struct
import time
import zlib

import numpy as np
import pytest
import torch
from conftest import cli, start_server
from fastapi.testclient import TestClient
from hypothesis import HealthCheck, given
from hypothesis import settings as hsettings
from hypothesis import strategies as st
from PIL import Image

from fmnist.data import CLASSES
from fmnist.data.images import load_image_bytes
from fmnist.errors import FmnistError
from fmnist.inference.predictor import load_predictor
from fmnist.jobs.predict import predict_files
from fmnist.measure.load import Call, run_load
from fmnist.serve import Settings, create_app


def wait_ready(client, seconds=60):
    deadline = time.time() + seconds
    while time.time() < deadline:
        if client.get("/v2/health/ready").status_code == 200:
            return
        time.sleep(0.05)
    raise AssertionError("the server never became ready")


@pytest.fixture(scope="module")
def client(runs):
    app = create_app([runs / "shallow", runs / "simple_cnn"], Settings(max_body_bytes=200_000, max_images=4))
    with TestClient(app) as c:
        wait_ready(c)
        yield c


def png(array) -> bytes:
    buf = io.BytesIO()
    Image.fromarray(np.asarray(array, np.uint8)).save(buf, "PNG")
    return buf.getvalue()


def garment(seed=0) -> bytes:
    rng = np.random.default_rng(seed)
    a = np.full((60, 40), 230, np.uint8)
    a[5:55, 8 + seed % 5 : 30] = rng.integers(0, 90, (50, 22 - seed % 5))
    return png(a)


def test_predict_answers_per_image_and_per_model_as_predict_does(client, runs, tmp_path):
    blobs = [garment(0), garment(3)]
    r = client.post(
        "/predict", params={"top_k": 4}, files=[("file", (f"g{i}.png", b, "image/png")) for i, b in enumerate(blobs)]
    )
    assert r.status_code == 200
    results = r.json()["results"]
    assert [x["file"] for x in results] == ["g0.png", "g1.png"]
    for i, (result, blob) in enumerate(zip(results, blobs)):
        (tmp_path / f"g{i}.png").write_bytes(blob)
        assert [m["name"] for m in result["models"]] == ["shallow", "simple_cnn"]
        for m in result["models"]:
            expected = predict_files(runs / m["name"], [tmp_path / f"g{i}.png"], 4)[0]["predictions"]
            assert [p["label"] for p in m["predictions"]] == [p["label"] for p in expected]
            assert [p["probability"] for p in m["predictions"]] == pytest.approx(
                [p["probability"] for p in expected], abs=1e-6
            )
            assert [p["index"] for p in m["predictions"]] == [CLASSES.index(p["label"]) for p in m["predictions"]]
        assert result["preview"].startswith("data:image/png;base64,")
        shown = Image.open(io.BytesIO(__import__("base64").b64decode(result["preview"].split(",")[1])))
        seen = torch.from_numpy(np.asarray(shown, np.float32) / 255)
        assert shown.size == (28, 28) and torch.allclose(seen, load_image_bytes(blob, "x")[0], atol=1 / 255)


def test_models_route_describes_each_model(client, runs):
    body = client.get("/models").json()
    metrics = json.loads((runs / "shallow" / "metrics.json").read_text())
    recorded, temperature = metrics["test_accuracy"], metrics["calibration"]["temperature"]
    assert body["ready"] and [m["name"] for m in body["models"]] == ["shallow", "simple_cnn"]
    assert body["models"][0] == {
        "name": "shallow",
        "model": "shallow",
        "parameters": 101_770,
        "test_accuracy": recorded,
        "backend": "onnx",
        "source": str(runs / "shallow"),
        "temperature": temperature,
    }


def test_open_inference_protocol_routes(client, runs):
    assert client.get("/v2/health/live").json() == {"live": True}
    assert client.get("/v2/health/ready").json() == {"ready": True}
    meta = client.get("/v2/models/simple_cnn").json()
    assert meta["inputs"] == [{"name": "images", "datatype": "FP32", "shape": [-1, 1, 28, 28]}]
    assert meta["outputs"] == [{"name": "logits", "datatype": "FP32", "shape": [-1, 10]}]
    assert client.get("/v2/models/simple_cnn/ready").json() == {"name": "simple_cnn", "ready": True}
    x = torch.rand(3, 1, 28, 28)
    expected = load_predictor(runs / "simple_cnn").logits(x)
    for shape, data in (([3, 1, 28, 28], x.reshape(-1).tolist()), ([3, 784], x.reshape(3, 784).tolist())):
        r = client.post(
            "/v2/models/simple_cnn/infer",
            json={"id": "req-7", "inputs": [{"name": "images", "shape": shape, "datatype": "FP32", "data": data}]},
        )
        assert r.status_code == 200, r.text
        out = r.json()
        assert out["model_name"] == "simple_cnn" and out["id"] == "req-7"
        assert out["outputs"][0]["shape"] == [3, 10]
        assert torch.allclose(torch.tensor(out["outputs"][0]["data"]).reshape(3, 10), expected, atol=1e-5)


def infer_body(shape=(1, 784), data=None, datatype="FP32"):
    n = int(np.prod(shape))
    return {
        "inputs": [
            {
                "name": "images",
                "shape": list(shape),
                "datatype": datatype,
                "data": data if data is not None else [0.5] * n,
            }
        ]
    }


def bomb_png(side=40_000) -> bytes:
    """A PNG of a few dozen bytes whose header declares side×side pixels."""

    def chunk(kind, data):
        return struct.pack(">I", len(data)) + kind + data + struct.pack(">I", zlib.crc32(kind + data))

    idat = zlib.compress(b"\0" * 64)
    return (
        b"\x89PNG\r\n\x1a\n"
        + chunk(b"IHDR", struct.pack(">IIBBBBB", side, side, 8, 0, 0, 0, 0))
        + chunk(b"IDAT", idat)
        + chunk(b"IEND", b"")
    )


BAD = [
    ("not an image", "post_file", b"hello, I am text", 400, "not an image"),
    ("empty file", "post_file", b"", 400, "empty file"),
    ("truncated", "post_file", "truncated", 400, "corrupt or truncated"),
    ("decompression bomb", "post_file", "bomb", 400, "image is too large (more than 40,000,000 pixels)"),
    ("no file", "post_form", None, 400, "no image"),
    ("too many images", "post_many", 5, 400, "at most 4"),
    ("top_k 0", "post_topk", 0, 422, "top_k"),
    ("top_k 11", "post_topk", 11, 422, "top_k"),
    ("body over the limit", "post_big", None, 413, "larger than 200,000 bytes"),
    ("body over the limit, streamed", "post_stream", None, 413, "larger than 200,000 bytes"),
    ("malformed JSON", "infer_raw", b'{"inputs": [', 400, "JSON"),
    ("wrong shape", "infer", infer_body((2, 28, 28)), 400, "shape must be [N, 1, 28, 28] or [N, 784]"),
    ("data and shape disagree", "infer", infer_body((2, 784), [0.5] * 784), 400, "holds 784 values"),
    ("NaN", "infer_raw", json.dumps(infer_body((1, 784), [float("nan")] * 784)).encode(), 400, "NaN"),
    ("out of range", "infer", infer_body((1, 784), [255.0] * 784), 400, "must lie in [0, 1]"),
    ("not numbers", "infer", infer_body((1, 784), ["x"] * 784), 400, "must be numbers"),
    ("wrong datatype", "infer", infer_body(datatype="INT8"), 400, "FP32"),
    ("no inputs field", "infer", {"outputs": []}, 422, "inputs"),
    ("batch too large", "infer", infer_body((2000, 784), [0.0]), 400, "send 1 to 1024"),
    ("unknown model", "get", "/v2/models/resnet1000", 404, "no model named 'resnet1000'"),
    ("unknown model infer", "infer_to", "/v2/models/resnet1000/infer", 404, "no model named"),
    ("unknown model ready", "get", "/v2/models/resnet1000/ready", 404, "no model named"),
    ("unknown route", "get", "/nowhere", 404, "Not Found"),
    ("wrong method", "get", "/predict", 405, "Method Not Allowed"),
]


@pytest.mark.parametrize("what, how, arg, status, message", BAD, ids=[b[0] for b in BAD])
def test_bad_input_is_a_4xx_with_a_json_error(client, what, how, arg, status, message):
    if how == "post_file":
        blob = arg
        if arg == "truncated":
            blob = garment()[:150]
        elif arg == "bomb":
            blob = bomb_png()
            assert len(blob) < 1000
        start = time.perf_counter()
        r = client.post("/predict", files={"file": ("x.png", blob, "image/png")})
        assert time.perf_counter() - start < 1.0
    elif how == "post_form":
        r = client.post("/predict", data={"note": "no file here"})
    elif how == "post_many":
        r = client.post("/predict", files=[("file", (f"{i}.png", garment(i), "image/png")) for i in range(arg)])
    elif how == "post_topk":
        r = client.post("/predict", params={"top_k": arg}, files={"file": ("x.png", garment(), "image/png")})
    elif how == "post_big":
        r = client.post("/predict", files={"file": ("x.png", os.urandom(300_000), "image/png")})
    elif how == "post_stream":  # no Content-Length: the body is counted as it arrives
        r = client.post(
            "/predict", content=iter([b"x" * 50_000] * 6), headers={"content-type": "multipart/form-data; boundary=b"}
        )
    elif how == "infer":
        r = client.post("/v2/models/shallow/infer", json=arg)
    elif how == "infer_raw":
        r = client.post("/v2/models/shallow/infer", content=arg, headers={"content-type": "application/json"})
    elif how == "infer_to":
        r = client.post(arg, json=infer_body())
    else:
        r = client.get(arg)
    assert r.status_code == status, r.text
    assert r.headers["content-type"].startswith("application/json")
    assert set(r.json()) == {"error"} and message in r.json()["error"], r.json()


@hsettings(max_examples=40, deadline=None, suppress_health_check=[HealthCheck.function_scoped_fixture])
@given(blob=st.binary(max_size=400), flip=st.integers(0, 399))
def test_no_upload_makes_a_500(client, blob, flip):
    good = bytearray(garment())
    good[flip % len(good)] ^= 0xFF
    for payload in (blob, bytes(good)):
        r = client.post("/predict", files={"file": ("x.png", payload, "image/png")})
        assert r.status_code in (200, 400), r.text


@hsettings(max_examples=40, deadline=None, suppress_health_check=[HealthCheck.function_scoped_fixture])
@given(
    body=st.recursive(
        st.none() | st.booleans() | st.floats() | st.integers() | st.text(max_size=5),
        lambda kids: st.lists(kids, max_size=4) | st.dictionaries(st.text(max_size=6), kids, max_size=4),
    )
)
def test_no_json_makes_a_500(client, body):
    r = client.post(
        "/v2/models/shallow/infer", content=json.dumps(body).encode(), headers={"content-type": "application/json"}
    )
    assert 400 <= r.status_code < 500, r.text


def test_metrics_count_requests_by_route_and_status(client):
    client.get("/v2/models/nope")
    client.post("/predict", files={"file": ("x.png", garment(), "image/png")})
    text = client.get("/metrics").text
    assert 'fmnist_http_requests_total{method="GET",route="/v2/models/{name}",status="404"}' in text
    assert 'fmnist_http_requests_total{method="POST",route="/predict",status="200"}' in text
    assert 'fmnist_http_request_duration_seconds_bucket{le="0.1",route="/predict"}' in text
    assert "fmnist_http_requests_in_flight 0.0" in text or "fmnist_http_requests_in_flight 1.0" in text
    assert 'fmnist_images_classified_total{model="shallow"}' in text


def test_every_model_is_loaded_and_warm_before_the_app_exists(runs, tmp_path):
    warmed = []
    predictor = load_predictor(runs / "shallow", "torch")
    real = predictor.logits
    predictor.logits = lambda x: warmed.append(len(x)) or real(x)
    app = create_app([predictor])
    assert warmed == [2]  # answered a warm-up batch before any request could come
    with TestClient(app) as c:
        assert c.get("/v2/health/ready").json() == {"ready": True}
        assert c.get("/v2/models/shallow/ready").json() == {"name": "shallow", "ready": True}
    (tmp_path / "bad.onnx").write_bytes(b"junk")
    with pytest.raises(FmnistError, match="not a readable ONNX model"):
        create_app([runs / "shallow", tmp_path / "bad.onnx"])


def test_the_page_is_served_with_everything_it_needs(client):
    r = client.get("/")
    assert r.status_code == 200 and r.headers["content-type"].startswith("text/html")
    page = r.text
    assert "<canvas" in page and 'type="file"' in page and 'fetch("predict?top_k=' in page
    assert "http://" not in page and "https://" not in page  # no CDN: it works offline
    assert client.get("/openapi.json").json()["paths"]["/predict"]["post"]["summary"]


def test_serve_without_runs_says_what_to_do(tmp_path, capsys, monkeypatch):
    monkeypatch.chdir(tmp_path)
    code, _, err = cli(capsys, "serve")
    assert code == 1 and "run a study first" in err and len(err.strip().splitlines()) == 1
    code, _, err = cli(capsys, "serve", tmp_path / "nothing")
    assert code == 1 and "does not exist" in err


def rss_mb(pid: int) -> float:
    with open(f"/proc/{pid}/status") as f:
        return next(int(line.split()[1]) for line in f if line.startswith("VmRSS")) / 1024


@pytest.fixture(scope="module")
def live_server(runs, tmp_path_factory):
    """`fmnist serve` in its own process, as a user starts it (a study folder, no arguments)."""
    work = tmp_path_factory.mktemp("live")
    (work / "runs" / "study").mkdir(parents=True)
    for name in ("shallow", "simple_cnn"):
        os.symlink(runs / name, work / "runs" / "study" / name)
    models = [{"name": name, "run_dir": f"runs/study/{name}"} for name in ("shallow", "simple_cnn")]
    (work / "runs" / "study" / "summary.json").write_text(json.dumps({"models": models}))
    base, proc = start_server(cwd=work)  # no arguments: it serves the newest study under runs/
    yield base, proc
    proc.terminate()
    proc.wait(timeout=30)


def test_a_real_server_answers_and_survives_a_bounded_load(live_server, runs, tmp_path):
    base, proc = live_server
    names = ["shallow", "simple_cnn"]
    images = {i: garment(i) for i in range(4)}
    expected = {}
    for i, blob in images.items():
        (tmp_path / f"{i}.png").write_bytes(blob)
        expected[i] = {
            n: predict_files(runs / n, [tmp_path / f"{i}.png"], 1)[0]["predictions"][0]["label"] for n in names
        }
    x = torch.rand(2, 1, 28, 28)
    logits = {n: load_predictor(runs / n).logits(x) for n in names}

    def good_predict(i):
        def check(status, body):
            return status == 200 and all(
                m["predictions"][0]["label"] == expected[i][m["name"]] for m in body["results"][0]["models"]
            )

        return Call(
            "predict", "POST", "/predict?top_k=1", files={"file": (f"{i}.png", images[i], "image/png")}, check=check
        )

    def good_infer(n):
        def check(status, body):
            got = torch.tensor(body["outputs"][0]["data"]).reshape(2, 10) if status == 200 else None
            return got is not None and torch.allclose(got, logits[n], atol=1e-5)

        return Call(
            "infer",
            "POST",
            f"/v2/models/{n}/infer",
            check=check,
            json_body={
                "inputs": [
                    {"name": "images", "shape": [2, 1, 28, 28], "datatype": "FP32", "data": x.reshape(-1).tolist()}
                ]
            },
        )

    def bad(kind, status, **kw):
        return Call(kind, check=lambda s, body: s == status and "error" in body, **kw)

    calls = []
    for k in range(480):
        i = k % 4
        calls += [
            good_predict(i),
            good_infer(names[k % 2]),
            Call("ready", "GET", "/v2/health/ready", check=lambda s, b: s == 200 and b == {"ready": True}),
        ][k % 3 : k % 3 + 1]
        if k % 8 == 0:
            calls.append(
                bad(
                    "bad image",
                    400,
                    method="POST",
                    path="/predict",
                    files={"file": ("x.png", b"not an image", "image/png")},
                )
            )
        if k % 8 == 4:
            calls.append(
                bad(
                    "bad tensor",
                    400,
                    method="POST",
                    path="/v2/models/shallow/infer",
                    json_body={"inputs": [{"name": "images", "shape": [1, 5], "datatype": "FP32", "data": [0] * 5}]},
                )
            )
    before = rss_mb(proc.pid)
    report = asyncio.run(run_load(base, calls, clients=64, time_limit=150))
    after = rss_mb(proc.pid)
    assert report["made"] == report["planned"] == len(calls), report
    assert report["failed"] == 0, report
    assert all(s.startswith(("2", "4")) for k in report["kinds"].values() for s in k["statuses"])
    assert after - before < 150, (before, after)  # resident memory stays near where it started
    assert proc.poll() is None
    # What the load did shows in the metrics.
    import httpx

    text = httpx.get(base + "/metrics").text
    assert 'route="/predict",status="200"' in text and 'route="/v2/models/{name}/infer",status="400"' in text
