"""The server as inference servers are: bounded memory for any request, 413 for any oversized body
(read by clients that send it whole first), Triton's own client with its binary tensors, dynamic
batching whose answers are each request's own, /docs offline."""

import asyncio
import functools
import io
import json
import re
import subprocess
import sys
import urllib.error
import urllib.request

import httpx
import numpy as np
import pytest
import torch
from conftest import free_port, start_server
from fastapi import HTTPException
from fastapi.testclient import TestClient
from PIL import Image

from fmnist.inference.predictor import load_predictor
from fmnist.serve import Settings, create_app
from fmnist.serve.batching import Batcher
from fmnist.serve.tensors import numbers


@pytest.fixture(scope="module")
def server(runs):
    base, proc = start_server(runs / "shallow", runs / "simple_cnn")
    yield base, proc
    proc.terminate()
    proc.wait(timeout=30)


def peak_mb(pid: int) -> float:
    with open(f"/proc/{pid}/status") as f:
        return next(int(line.split()[1]) for line in f if line.startswith("VmHWM")) / 1024


@functools.cache
def big_png(seed: int) -> bytes:
    """A 6000×6000 colour photo that is mostly black: a few hundred KB that decode to 108 MB."""
    a = np.zeros((6000, 6000, 3), np.uint8)
    a[1500 + seed * 50 : 4500, 2000:4000] = 180
    buf = io.BytesIO()
    Image.fromarray(a).save(buf, "PNG", compress_level=1)
    return buf.getvalue()


def test_large_requests_cost_bounded_memory(server):
    base, proc = server
    files = [("file", (f"{i}.png", big_png(i % 4), "image/png")) for i in range(16)]
    assert sum(len(f[1][1]) for f in files) < 10 * 1024 * 1024
    before = peak_mb(proc.pid)
    r = httpx.post(base + "/predict", files=files, timeout=120)
    assert r.status_code == 200, r.text
    assert len(r.json()["results"]) == 16
    values = ",".join(["0.12345678"] * (1024 * 784))  # about 9 MB of JSON text
    body = f'{{"inputs": [{{"name": "images", "shape": [1024, 784], "datatype": "FP32", "data": [{values}]}}]}}'
    assert 8.5e6 < len(body) < 10 * 1024 * 1024
    r = httpx.post(base + "/v2/models/simple_cnn/infer", content=body.encode(), timeout=120)
    assert r.status_code == 200 and r.json()["outputs"][0]["shape"] == [1024, 10]
    grown = peak_mb(proc.pid) - before
    assert grown < 300, f"the server's peak resident memory grew by {grown:.0f} MB"


def test_an_oversized_body_is_413_chunked_or_not_and_a_client_sending_it_whole_reads_it(server):
    base, _ = server

    def chunks():
        for _ in range(12):
            yield b"x" * (1024 * 1024)

    r = httpx.post(base + "/v2/models/shallow/infer", content=chunks(), timeout=60)  # no Content-Length
    assert r.status_code == 413 and "larger than" in r.json()["error"]
    request = urllib.request.Request(
        base + "/predict",
        data=b"y" * (21 * 1024 * 1024),
        method="POST",
        headers={"Content-Type": "multipart/form-data; boundary=b"},
    )
    with pytest.raises(urllib.error.HTTPError) as e:  # urllib sends all 21 MB before it reads an answer
        urllib.request.urlopen(request, timeout=60)
    assert e.value.code == 413 and "larger than" in json.loads(e.value.read())["error"]


def test_tritons_client_with_binary_tensors_gets_the_json_answer(server, runs):
    import tritonclient.http as triton

    base, _ = server
    x = np.random.default_rng(0).random((5, 1, 28, 28), dtype=np.float32)
    client = triton.InferenceServerClient(base.removeprefix("http://"))
    assert client.is_server_ready() and client.is_model_ready("simple_cnn")
    assert client.get_model_metadata("simple_cnn")["platform"] == "onnxruntime_onnx"
    tensor = triton.InferInput("images", list(x.shape), "FP32")
    tensor.set_data_from_numpy(x)  # binary_data=True: the binary data extension, its default
    binary = client.infer("simple_cnn", [tensor]).as_numpy("logits")
    tensor.set_data_from_numpy(x, binary_data=False)
    wanted = [triton.InferRequestedOutput("logits", binary_data=False)]
    as_json = client.infer("simple_cnn", [tensor], outputs=wanted).as_numpy("logits")
    body = {"inputs": [{"name": "images", "shape": [5, 784], "datatype": "FP32", "data": x.reshape(-1).tolist()}]}
    plain = np.array(httpx.post(base + "/v2/models/simple_cnn/infer", json=body).json()["outputs"][0]["data"])
    assert binary.shape == (5, 10) and np.array_equal(binary, as_json)
    assert np.allclose(binary.reshape(-1), plain, atol=1e-6)
    assert np.allclose(binary, load_predictor(runs / "simple_cnn").logits(torch.from_numpy(x)).numpy(), atol=1e-5)


@pytest.mark.parametrize("backend", ["torch", "onnx"])
def test_batched_answers_are_each_requests_own(runs, backend):
    predictor = load_predictor(runs / "simple_cnn", backend)
    rng = np.random.default_rng(1)
    requests = [torch.from_numpy(rng.random((1 + k % 3, 1, 28, 28), dtype=np.float32)) for k in range(24)]
    alone = [predictor.logits(x) for x in requests]

    async def together():
        import anyio

        batcher = Batcher(predictor, max_batch=16, max_delay=0.01, limiter=anyio.CapacityLimiter(2))
        answers = await asyncio.gather(*(batcher.logits(x) for x in requests))
        batcher.close()
        return answers, batcher.batches

    answers, batches = asyncio.run(together())
    assert max(batches) > 1 and sum(batches) == len(requests)  # they did run together
    for got, want in zip(answers, alone):
        assert got.shape == want.shape and torch.allclose(got, want, atol=1e-5, rtol=0)
        assert torch.equal(got.argmax(1), want.argmax(1))


def test_batching_off_runs_every_request_alone(runs):
    predictor = load_predictor(runs / "shallow", "torch")
    calls = []
    real = predictor.logits
    predictor.logits = lambda x: calls.append(len(x)) or real(x)

    async def go():
        import anyio

        batcher = Batcher(predictor, max_batch=1, max_delay=0.01, limiter=anyio.CapacityLimiter(2))
        await asyncio.gather(*(batcher.logits(torch.rand(1, 1, 28, 28)) for _ in range(6)))

    asyncio.run(go())
    assert calls == [1] * 6


def test_docs_render_from_the_package_alone(runs):
    with TestClient(create_app([runs / "shallow"], Settings())) as c:
        for docs, script in (("/docs", "swagger-ui-bundle.js"), ("/redoc", "redoc.standalone.js")):
            page = c.get(docs)
            assert page.status_code == 200 and script in page.text
            assert not re.findall(r"https?://", page.text), f"{docs} loads something from another host"
            assets = re.findall(r'(?:src|href)="(/[^"]+)"', page.text)
            assert any(a.endswith(script) for a in assets)
            for asset in assets:
                assert c.get(asset).status_code == 200, asset


def test_listening_beyond_this_machine_warns_there_is_no_authentication(tmp_path):
    proc = subprocess.run(
        [
            sys.executable,
            "-m",
            "fmnist",
            "serve",
            tmp_path / "missing",
            "--host",
            "0.0.0.0",
            "--port",
            str(free_port()),
        ],
        capture_output=True,
        text=True,
        timeout=60,
    )
    assert proc.returncode == 1
    assert "no authentication" in proc.stderr and "does not exist" in proc.stderr


@pytest.mark.parametrize(
    "text, expected",
    [
        ("[0.5, 1, 0, 2.5e-1]", [0.5, 1, 0, 0.25]),  # flat, strict JSON: the fast parser
        ("[[[0.5, 1]], [[0, 0.25]]]", [0.5, 1, 0, 0.25]),  # evenly nested
        ("[[0.5], [1, 0, 0.25]]", [0.5, 1, 0, 0.25]),  # ragged nesting: the NumPy text parser
        ("[NaN, 1, Infinity, 0]", [np.nan, 1, np.inf, 0]),  # not JSON for orjson: read, refused later
    ],
)
def test_infer_numbers_read_alike_by_either_parser(text, expected):
    values = numbers(text, 4)
    assert values.dtype == np.float32 and np.array_equal(values, np.float32(expected), equal_nan=True)
    with pytest.raises(HTTPException, match="holds 4 values, the shape needs 5"):
        numbers(text, 5)


def test_the_workers_rebuild_the_served_models_as_loaded(runs, tmp_path):
    from fmnist.serve.processes import read_spec, write_spec

    loaded = {
        "a": load_predictor(runs / "shallow", "onnx"),
        "b": load_predictor(runs / "simple_cnn", "torch"),
    }
    loaded["a"].temperature = 1.7
    write_spec(tmp_path, loaded, Settings(processes=2, max_batch=5))
    rebuilt, settings = read_spec(tmp_path)
    assert settings == Settings(processes=2, max_batch=5)
    assert len(list(tmp_path.glob("*.onnx"))) == 1  # the exported graph travels: no worker exports again
    x = torch.rand(3, 1, 28, 28)
    for name, p in loaded.items():
        q = rebuilt[name]
        assert (q.name, q.source, q.backend, q.temperature, q.info) == (
            name,
            p.source,
            p.backend,
            p.temperature,
            p.info,
        )
        assert torch.allclose(q.logits(x), p.logits(x), atol=1e-6)


METRICS_SCRIPT = """
import os, sys
os.environ["PROMETHEUS_MULTIPROC_DIR"] = sys.argv[2]
from fastapi.testclient import TestClient
from fmnist.inference.predictor import load_predictor
from fmnist.serve import create_app
one, other = (create_app({"m": load_predictor(sys.argv[1])}) for _ in range(2))
for _ in range(3):
    assert TestClient(one).get("/v2/health/ready").status_code == 200
print(TestClient(other).get("/metrics").text)
"""


def test_metrics_of_several_processes_are_summed(runs, tmp_path):
    """Two apps stand for two worker processes: each writes its counts where the other's /metrics
    reads them (prometheus_client's multiprocess mode, which fmnist serve --processes turns on)."""
    out = subprocess.run(
        [sys.executable, "-c", METRICS_SCRIPT, str(runs / "shallow"), str(tmp_path)],
        capture_output=True,
        text=True,
        timeout=120,
    )
    assert out.returncode == 0, out.stderr
    assert re.search(r'fmnist_http_requests_total\{[^}]*route="/v2/health/ready"[^}]*status="200"\} 3\.0', out.stdout)


def test_several_processes_answer_on_one_port(runs):
    base, proc = start_server(runs / "shallow", runs / "simple_cnn", "--processes", "2", seconds=180)
    try:
        workers = subprocess.run(
            ["pgrep", "-P", str(proc.pid), "-f", "multiprocessing"], capture_output=True, text=True
        )
        assert len(workers.stdout.split()) >= 2, workers  # two workers (and perhaps the resource tracker)
        x = np.random.default_rng(0).random((2, 784), dtype=np.float32)
        body = {"inputs": [{"name": "images", "shape": [2, 784], "datatype": "FP32", "data": x.reshape(-1).tolist()}]}
        want = load_predictor(runs / "shallow").logits(torch.from_numpy(x).reshape(2, 1, 28, 28)).numpy()
        for _ in range(20):  # new connections, answered by either worker
            r = httpx.post(base + "/v2/models/shallow/infer", json=body)
            assert r.status_code == 200 and np.allclose(
                np.array(r.json()["outputs"][0]["data"]), want.reshape(-1), atol=1e-5
            )
        r = httpx.post(base + "/runs/serve", json={"run": str(runs / "shallow")})
        assert r.status_code == 409 and "--processes 1" in r.json()["error"]
        for _ in range(4):  # whichever worker answers, it counts every worker's requests
            text = httpx.get(base + "/metrics").text
            assert re.search(r'route="/v2/models/\{name\}/infer",status="200"\} 20\.0', text), text
    finally:
        proc.send_signal(2)  # Ctrl-C: the supervisor stops its workers, then itself
        assert proc.wait(timeout=60) == 0
    assert subprocess.run(["pgrep", "-P", str(proc.pid)], capture_output=True).stdout == b""
