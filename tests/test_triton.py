"""Triton: a model repository of runs that the real `tritonserver` (the nvidia-pytriton wheel's,
installed by `make triton`) serves through `fmnist serve --engine triton`, over HTTP and gRPC, with
fmnist's own answers, Triton's labels and its dynamic batcher."""

from __future__ import annotations

import signal
import subprocess
import sys
import threading
import time
from pathlib import Path

import numpy as np
import pytest
from conftest import cli, free_port

from fmnist.data import CLASSES
from fmnist.inference.predictor import load_predictor
from fmnist.run.folder import RunFolder


def test_config_parses_against_tritons_own_schema(deployable, tmp_path, capsys):
    from google.protobuf import text_format
    from tritonclient.grpc import model_config_pb2 as mc

    repo = tmp_path / "repo"
    code, out, err = cli(capsys, "export", deployable / "views", "--format", "triton", "--out", repo)
    assert code == 0, err
    folder = repo / "views"
    cfg = text_format.Parse((folder / "config.pbtxt").read_text(), mc.ModelConfig())
    assert (cfg.name, cfg.backend, cfg.max_batch_size) == ("views", "onnxruntime", 256)
    (x,), (y,) = cfg.input, cfg.output
    assert (x.name, x.data_type, list(x.dims)) == ("images", mc.TYPE_FP32, [1, 28, 28])
    assert (y.name, y.data_type, list(y.dims), y.label_filename) == ("logits", mc.TYPE_FP32, [10], "labels.txt")
    assert (folder / "labels.txt").read_text().splitlines() == list(CLASSES)
    assert cfg.dynamic_batching.max_queue_delay_microseconds > 0 and list(cfg.dynamic_batching.preferred_batch_size)
    assert [g.kind for g in cfg.instance_group] == [mc.ModelInstanceGroup.KIND_CPU]
    metrics = RunFolder(deployable / "views").metrics()
    assert float(cfg.parameters["temperature"].string_value) == metrics["calibration"]["temperature"]
    assert float(cfg.parameters["test_accuracy"].string_value) == metrics["test_accuracy"]
    assert (folder / "1" / "model.onnx").is_file() and not (folder / "1" / "model.py").exists()
    # The Python backend's repository runs the same file inside Triton.
    python = ["--format", "triton", "--triton-backend", "python", "--out", repo]
    code, _, err = cli(capsys, "export", deployable / "views", *python)
    assert code == 0, err
    assert text_format.Parse((folder / "config.pbtxt").read_text(), mc.ModelConfig()).backend == "python"
    assert (folder / "1" / "model.py").is_file()
    # A folder fmnist did not write is never replaced.
    (repo / "other").mkdir()
    (tmp_path / "stranger" / "views").mkdir(parents=True)
    code, _, err = cli(capsys, "export", deployable / "views", "--format", "triton", "--out", tmp_path / "stranger")
    assert code == 1 and "not written by fmnist" in err and err.count("\n") == 1


def _start(*args) -> tuple[subprocess.Popen, int, list[str]]:
    """`fmnist serve --engine triton ARGS` on free ports, once it says it is serving."""
    for _ in range(5):
        port = free_port()
        proc = subprocess.Popen(
            [sys.executable, "-m", "fmnist", "serve", "--engine", "triton", *map(str, args), "--port", str(port)],
            stdout=subprocess.PIPE,
            stderr=subprocess.PIPE,
            text=True,
        )
        lines: list[str] = []
        reader = threading.Thread(target=lines.extend, args=(proc.stdout,), daemon=True)
        reader.start()
        deadline = time.time() + 150
        while time.time() < deadline and proc.poll() is None and not any("serving" in line for line in lines):
            time.sleep(0.2)
        if any("serving" in line for line in lines):
            return proc, port, lines
        err = proc.stderr.read() if proc.poll() is not None else ""
        proc.kill()
        if "cannot serve" not in err:  # a port taken meanwhile: try others
            raise AssertionError(f"fmnist serve --engine triton did not start: {err}")
    raise AssertionError("no three free ports")


def _children(pid: int) -> list[int]:
    return [int(p) for p in _pids() if _stat(p)[1] == pid]


def _group(pgid: int) -> list[int]:
    return [int(p) for p in _pids() if _stat(p)[2] == pgid]


def _pids() -> list[str]:
    return [p.name for p in Path("/proc").iterdir() if p.name.isdigit()]


def _stat(pid: str) -> tuple[str, int, int]:
    """A process's state, parent and process group (0s for one that has just ended)."""
    try:
        fields = Path(f"/proc/{pid}/stat").read_text().rsplit(")", 1)[1].split()
    except OSError:
        return ("X", 0, 0)
    return (fields[0], int(fields[1]), int(fields[2])) if fields[0] != "Z" else ("Z", 0, 0)


def test_triton_serves_runs_with_fmnists_answers(deployable):
    import tritonclient.grpc as tgrpc
    import tritonclient.http as thttp

    runs = [deployable / "simple_cnn", deployable / "views"]
    proc, port, lines = _start(*runs)
    try:
        images = RunFolder(runs[1]).data(RunFolder(runs[1]).read_config()).test_images[:5].numpy()
        http = thttp.InferenceServerClient(f"127.0.0.1:{port}")
        grpc = tgrpc.InferenceServerClient(f"127.0.0.1:{port + 1}")
        assert http.is_server_ready() and grpc.is_server_ready()
        for run in runs:
            want = load_predictor(run).logits(__import__("torch").from_numpy(images)).numpy()
            for lib, client in ((thttp, http), (tgrpc, grpc)):
                x = lib.InferInput("images", list(images.shape), "FP32")
                x.set_data_from_numpy(images)
                got = client.infer(run.name, [x]).as_numpy("logits")
                assert np.abs(got - want).max() <= 1e-5
                # Triton's classification extension: "score:index:label", from labels.txt.
                top = client.infer(run.name, [x], outputs=[lib.InferRequestedOutput("logits", class_count=2)])
                labels = [[entry.decode().split(":")[2] for entry in row] for row in top.as_numpy("logits")]
                assert labels == [[CLASSES[i] for i in row] for row in np.argsort(-want, axis=1)[:, :2]]
        # Concurrent single-image requests are batched by Triton's dynamic batcher.
        batched = False
        for _ in range(5):

            def one(i):
                c = thttp.InferenceServerClient(f"127.0.0.1:{port}")
                x = thttp.InferInput("images", [1, 1, 28, 28], "FP32")
                x.set_data_from_numpy(images[i % 5 : i % 5 + 1])
                c.infer("simple_cnn", [x])

            threads = [threading.Thread(target=one, args=(i,)) for i in range(24)]
            for t in threads:
                t.start()
            for t in threads:
                t.join()
            stats = http.get_inference_statistics("simple_cnn")["model_stats"][0]["batch_stats"]
            if any(b["batch_size"] > 1 for b in stats):
                batched = True
                break
        assert batched, stats
        server = _children(proc.pid)
        assert len(server) == 1 and len(_group(server[0])) > 1  # tritonserver and its backend stubs
    finally:
        proc.send_signal(signal.SIGINT)
        time.sleep(0.3)
        proc.send_signal(signal.SIGINT)  # an impatient second Ctrl-C while Triton shuts down
        code = proc.wait(30)
    assert code == 0  # Ctrl-C stops the server and fmnist in order
    time.sleep(0.5)
    assert not _group(server[0])  # nothing of Triton's left running, its backend stubs included
    import socket

    with pytest.raises(ConnectionRefusedError), socket.create_connection(("127.0.0.1", port), timeout=2):
        pass


def test_a_model_that_cannot_load_stops_the_start_in_one_line(deployable, tmp_path, capsys):
    repo = tmp_path / "repo"
    python = ["--format", "triton", "--triton-backend", "python", "--out", repo]
    assert cli(capsys, "export", deployable / "views", *python)[0] == 0
    (repo / "views" / "1" / "model.py").write_text("raise ImportError('no such package: shiny')\n")
    port = free_port()
    r = subprocess.run(
        [sys.executable, "-m", "fmnist", "serve", "--engine", "triton", str(repo), "--port", str(port)],
        capture_output=True,
        text=True,
        timeout=150,
    )
    assert r.returncode == 1
    assert r.stderr.count("\n") == 1 and "failed to load 'views'" in r.stderr and "shiny" in r.stderr
    assert "Traceback" not in r.stderr and "serving" not in r.stdout


def test_bad_triton_serving_flags_are_one_line(deployable, capsys, monkeypatch):
    import socket

    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        s.listen()
        taken = s.getsockname()[1]
        code, out, err = cli(capsys, "serve", "--engine", "triton", deployable / "views", "--port", taken - 1)
    assert code == 1 and "cannot serve" in err and err.count("\n") == 1
    code, _, err = cli(capsys, "serve", "--engine", "triton", deployable / "views", "--processes", "2")
    assert code == 2 and "--processes" in err
    monkeypatch.setattr(sys, "prefix", str(Path("/nonexistent")))
    monkeypatch.delenv("FMNIST_TRITON_HOME", raising=False)
    monkeypatch.setenv("PATH", "/usr/bin:/bin")
    code, _, err = cli(capsys, "serve", "--engine", "triton", deployable / "views")
    assert code == 1 and "make triton" in err and err.count("\n") == 1
