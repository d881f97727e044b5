"""The server under concurrent requests, against a real uvicorn server on 127.0.0.1: the runs view
and its loads apart from the model calls, one load per run however many ask, a cap on the models,
a bounded queue answering 503, the body limit on /runs/serve, and what several processes share."""

from __future__ import annotations

import contextlib
import shutil
import subprocess
import sys
import threading
import time
from concurrent.futures import ThreadPoolExecutor

import anyio
import httpx
import pytest
import torch
import uvicorn
from conftest import free_port
from fastapi.testclient import TestClient

from fmnist.inference.predictor import load_predictor
from fmnist.serve import Settings, create_app
from fmnist.serve import runs as runs_view
from fmnist.serve.processes import Supervisor, read_spec, write_spec

BODY = {"inputs": [{"name": "images", "shape": [1, 784], "datatype": "FP32", "data": [0.5] * 784}]}


@contextlib.contextmanager
def serving(app):
    """`app` under a real uvicorn server in a thread; its base URL."""
    port = free_port()
    server = uvicorn.Server(uvicorn.Config(app, host="127.0.0.1", port=port, log_level="warning"))
    thread = threading.Thread(target=server.run, daemon=True)
    thread.start()
    deadline = time.time() + 30
    while not server.started and time.time() < deadline:
        time.sleep(0.02)
    try:
        yield f"http://127.0.0.1:{port}"
    finally:
        server.should_exit = True
        thread.join(10)


def test_a_slow_runs_listing_does_not_hold_up_model_calls(runs, monkeypatch):
    release, listing = threading.Event(), threading.Event()
    real = runs_view.table

    def slow_table(found, served):  # a listing of many run folders on a slow disk
        listing.set()
        release.wait(30)
        return real(found, served)

    monkeypatch.setattr(runs_view, "table", slow_table)
    app = create_app([runs / "shallow"], Settings(runs_roots=(str(runs),)))
    with serving(app) as base, ThreadPoolExecutor(4) as pool:
        listings = [pool.submit(httpx.get, base + "/runs", timeout=60) for _ in range(3)]
        assert listing.wait(10)
        try:  # every listing is still waiting: the model calls have their slots all the same
            r = httpx.post(base + "/v2/models/shallow/infer", json=BODY, timeout=10)
            assert r.status_code == 200, r.text
        finally:
            release.set()
        assert all(f.result().status_code == 200 for f in listings)


@pytest.mark.parametrize("loads_at_a_time", [1, 4])  # one load however many the runs view may run at once
def test_concurrent_requests_to_serve_one_run_load_it_once(runs, monkeypatch, loads_at_a_time):
    loads, release = [], threading.Event()
    real = runs_view.load_predictor

    def slow_load(path):
        loads.append(path)
        release.wait(30)
        return real(path)

    monkeypatch.setattr(runs_view, "load_predictor", slow_load)
    app = create_app([runs / "shallow"], Settings(runs_roots=(str(runs),)))
    app.state.runs_limiter = anyio.CapacityLimiter(loads_at_a_time)
    with serving(app) as base, ThreadPoolExecutor(4) as pool:
        ask = {"run": str(runs / "simple_cnn")}
        first = pool.submit(httpx.post, base + "/runs/serve", json=ask, timeout=60)
        deadline = time.time() + 10
        while not loads and time.time() < deadline:
            time.sleep(0.02)
        second = pool.submit(httpx.post, base + "/runs/serve", json=ask, timeout=60)
        files = {"file": ("x.png", (runs / "shallow" / "samples.png").read_bytes(), "image/png")}
        explained = pool.submit(httpx.post, base + "/explain", files=files, timeout=60)
        time.sleep(1.0)  # time for the second to load it again, were it going to
        release.set()
        answers = [first.result(), second.result()]
        assert [a.status_code for a in answers] == [200, 200], [a.text for a in answers]
        assert answers[0].json() == answers[1].json() == {"name": "simple_cnn"}
        assert len(loads) == 1
        assert explained.result().status_code == 200, explained.result().text
        names = [m["name"] for m in httpx.get(base + "/models").json()["models"]]
        assert names == ["shallow", "simple_cnn"]


def test_a_run_served_at_start_by_another_spelling_is_listed_as_served(runs):
    other = runs / "simple_cnn" / ".." / "shallow"
    with TestClient(create_app([other], Settings(runs_roots=(str(runs),)))) as c:
        rows = {r["run"]: r for r in c.get("/runs").json()["runs"]}
        assert rows[str(runs / "shallow")]["served_as"] == "shallow"
        assert c.post("/runs/serve", json={"run": str(runs / "shallow")}).json() == {"name": "shallow"}
        assert len(c.get("/models").json()["models"]) == 1


def test_a_listed_run_that_cannot_be_loaded_is_a_4xx(runs, tmp_path):
    broken = tmp_path / "broken"
    shutil.copytree(runs / "simple_cnn", broken)
    (broken / "best.pt").write_bytes(b"not a checkpoint")
    with TestClient(create_app([runs / "shallow"], Settings(runs_roots=(str(tmp_path),)))) as c:
        r = c.post("/runs/serve", json={"run": str(broken)})
        assert r.status_code == 422 and f"cannot serve {broken}" in r.json()["error"], r.text
        assert [m["name"] for m in c.get("/models").json()["models"]] == ["shallow"]


def test_the_models_served_are_capped(runs):
    with TestClient(create_app([runs / "shallow"], Settings(runs_roots=(str(runs),), max_models=1))) as c:
        r = c.post("/runs/serve", json={"run": str(runs / "simple_cnn")})
        assert r.status_code == 409 and "--max-models 1" in r.json()["error"]


def test_an_over_limit_chunked_body_to_runs_serve_is_a_413(runs):
    with TestClient(create_app([runs / "shallow"], Settings(max_body_bytes=1000, runs_roots=(str(runs),)))) as c:
        r = c.post(
            "/runs/serve", content=iter([b'{"run": "' + b"x" * 600] * 3), headers={"content-type": "application/json"}
        )
        assert r.status_code == 413 and "larger than 1,000 bytes" in r.json()["error"]
        r = c.post("/runs/serve", content=b'{"run": ', headers={"content-type": "application/json"})
        assert r.status_code == 400 and "error" in r.json()
        assert c.post("/runs/serve", json={"colour": "blue"}).status_code == 422


@pytest.mark.parametrize("max_batch", [64, 1])
def test_a_full_queue_answers_503_with_retry_after(runs, max_batch):
    predictor = load_predictor(runs / "shallow", "torch")
    real, entered, release = predictor.logits, threading.Event(), threading.Event()

    def blocked(x):
        entered.set()
        release.wait(30)
        return real(x)

    predictor.logits = blocked
    app = create_app({"shallow": predictor}, Settings(max_queue=2, max_batch=max_batch, workers=1))
    with serving(app) as base, ThreadPoolExecutor(8) as pool:
        infer = base + "/v2/models/shallow/infer"
        first = pool.submit(httpx.post, infer, json=BODY, timeout=60)
        assert entered.wait(10)
        waiting = [pool.submit(httpx.post, infer, json=BODY, timeout=60) for _ in range(2)]
        time.sleep(0.5)  # both are queued
        refused = httpx.post(infer, json=BODY, timeout=10)
        release.set()
        assert refused.status_code == 503 and refused.headers["retry-after"] == "1", refused.text
        assert "requests waiting" in refused.json()["error"]
        assert all(f.result().status_code == 200 for f in [first, *waiting])


def test_torch_workers_serve_the_weights_the_command_loaded(runs, tmp_path):
    run = tmp_path / "shallow"
    shutil.copytree(runs / "shallow", run)
    parent = load_predictor(run, "torch")
    write_spec(tmp_path, {"shallow": parent}, Settings(processes=2))
    other = tmp_path / "other"  # the run changes on disk after the command loaded it (a resume, say)
    shutil.copytree(run, other)
    state = torch.load(other / "best.pt", weights_only=True)
    state["model"] = {k: v + 0.5 if v.is_floating_point() else v for k, v in state["model"].items()}
    torch.save(state, run / "best.pt")
    (loaded, _) = read_spec(tmp_path)
    x = torch.rand(4, 1, 28, 28)
    assert torch.allclose(loaded["shallow"].logits(x), parent.logits(x), atol=1e-6)
    assert not torch.allclose(load_predictor(run, "torch").logits(x), parent.logits(x), atol=1e-3)


def test_a_dead_workers_gauges_leave_the_sum(tmp_path, monkeypatch):
    from prometheus_client import CollectorRegistry, generate_latest
    from prometheus_client.multiprocess import MultiProcessCollector
    from uvicorn.supervisors import Multiprocess

    folder = tmp_path / "metrics"
    folder.mkdir()
    script = (
        "from fmnist.serve.middleware import Metrics\n"
        "import os\n"
        "m = Metrics(); m.in_flight.inc(); print(os.getpid())\n"  # dies with a request in flight
    )
    env = {"PROMETHEUS_MULTIPROC_DIR": str(folder), "PATH": "/usr/bin:/bin"}
    done = subprocess.run([sys.executable, "-c", script], env=env, capture_output=True, text=True)
    dead = int(done.stdout)

    def in_flight() -> float:
        registry = CollectorRegistry()
        MultiProcessCollector(registry, path=str(folder))
        lines = [x for x in generate_latest(registry).decode().splitlines() if x.startswith("fmnist_http_requests_in")]
        return float(lines[0].split()[-1]) if lines else 0.0  # no live process: no sample

    assert in_flight() == 1.0

    class Worker:
        def __init__(self, pid):
            self.pid = pid

    def restart(self):  # what uvicorn's supervisor does with a dead worker: a new one in its place
        self.processes = [Worker(12345678)]

    monkeypatch.setattr(Multiprocess, "keep_subprocess_alive", restart)
    monkeypatch.setenv("PROMETHEUS_MULTIPROC_DIR", str(folder))
    supervisor = Supervisor.__new__(Supervisor)
    supervisor.processes = [Worker(dead)]
    supervisor.keep_subprocess_alive()
    assert in_flight() == 0.0
