"""int8 and OpenVINO: a trained run quantised (calibrated on its training split, kept only if it
validates) and run on OpenVINO's CPU plugin with ONNX Runtime's answers; `bench --formats` as a table."""

from __future__ import annotations

import json

import pytest
import torch
from conftest import cli

from fmnist.data.dataset import stratified_split
from fmnist.inference import quantize
from fmnist.inference.predictor import load_predictor
from fmnist.run.folder import RunFolder


@pytest.fixture
def trained(deployable):
    return deployable


def test_int8_keeps_validation_accuracy_and_says_so(trained, tmp_path, capsys, monkeypatch):
    seen = {}
    original = quantize.calibration_images

    def spy(images, train_idx, seed):
        seen["train_idx"] = set(train_idx.tolist())
        return original(images, train_idx, seed)

    monkeypatch.setattr(quantize, "calibration_images", spy)
    out = tmp_path / "m.int8.onnx"
    code, stdout, err = cli(capsys, "export", trained / "simple_cnn", "--int8", "--out", out)
    assert code == 0, err
    assert "int8" in stdout and out.is_file()
    d = json.loads((tmp_path / "m.int8.onnx.json").read_text())
    q = d["int8"]
    assert q["float_val_accuracy"] - q["val_accuracy"] <= 0.005
    assert q["calibration_method"] in quantize.METHODS and set(q["val_accuracy_by_method"]) == set(quantize.METHODS)
    assert d["checks"]["onnx_checker"] == "full check passed"
    # Calibrated on the training split only: none of the run's validation images.
    run = RunFolder(trained / "simple_cnn")
    cfg = run.read_config()
    labels = run.data(cfg).train_labels
    _, val_idx = stratified_split(labels, cfg.val_split, cfg.seed, cfg.exclude)
    assert seen["train_idx"] and not seen["train_idx"] & set(val_idx.tolist())
    # The file is a model like any export: QDQ nodes inside, answered by predict.
    import onnx

    ops = {n.op_type for n in onnx.load(str(out)).graph.node}
    assert {"QuantizeLinear", "DequantizeLinear"} <= ops
    p = load_predictor(out)
    data = run.data(cfg)
    accuracy = (p.logits(data.test_images).argmax(1) == data.test_labels).float().mean().item()
    assert accuracy == pytest.approx(q["test_accuracy"])
    # From Python, the same file and description.
    import fmnist

    again = fmnist.open(trained / "simple_cnn").export(tmp_path / "api.int8.onnx", int8=True)
    assert json.loads((tmp_path / "api.int8.onnx.json").read_text())["int8"] == q
    assert again.read_bytes() == out.read_bytes()


def test_int8_that_loses_accuracy_is_refused_and_not_written(trained, tmp_path, capsys, monkeypatch):
    # Calibrated on blank images, the activations' ranges are wrong and validation accuracy falls.
    monkeypatch.setattr(quantize, "calibration_images", lambda images, idx, seed: torch.zeros(64, 1, 28, 28))
    out = tmp_path / "bad.int8.onnx"
    code, stdout, err = cli(capsys, "export", trained / "simple_cnn", "--int8", "--out", out)
    assert code != 0
    assert err.count("\n") == 1 and "int8 loses" in err and "validation accuracy" in err
    assert "Traceback" not in err
    assert not out.exists() and not (tmp_path / "bad.int8.onnx.json").exists()


def test_openvino_answers_as_onnx_runtime_does(trained, capsys, tmp_path):
    import numpy as np

    for name in ("simple_cnn", "views"):
        ort = load_predictor(trained / name, "onnx")
        ov = load_predictor(trained / name, "openvino")
        assert ov.backend == "openvino"
        images = RunFolder(trained / name).data(RunFolder(trained / name).read_config()).test_images
        for x in (images[:1], images[:7], images):
            assert (ov.logits(x) - ort.logits(x)).abs().max().item() <= 1e-4
        # A large set through the THROUGHPUT hint's parallel requests, in order.
        many = load_predictor(trained / name, "openvino", hint="THROUGHPUT")
        assert (many.logits(images.repeat(6, 1, 1, 1)) - ort.logits(images.repeat(6, 1, 1, 1))).abs().max() <= 1e-4
    # Through the commands: predict and evaluate.
    from PIL import Image

    png = tmp_path / "x.png"
    Image.fromarray((images[0, 0].numpy() * 255).astype(np.uint8)).save(png)
    a = cli(capsys, "predict", trained / "views", png, "--json", "--backend", "openvino")
    b = cli(capsys, "predict", trained / "views", png, "--json", "--backend", "onnx")
    assert a[0] == b[0] == 0
    pa, pb = json.loads(a[1])[0]["predictions"], json.loads(b[1])[0]["predictions"]
    assert [p["label"] for p in pa] == [p["label"] for p in pb]
    assert [p["probability"] for p in pa] == pytest.approx([p["probability"] for p in pb], abs=1e-5)
    code, out, err = cli(capsys, "evaluate", trained / "views", "--backend", "openvino")
    assert code == 0 and "openvino" in out


def test_openvino_serves(trained):
    from fastapi.testclient import TestClient

    from fmnist.serve import Settings, create_app
    from fmnist.serve.models import load_models

    loaded = load_models([trained / "views"], "openvino")
    assert next(iter(loaded.values())).backend == "openvino"
    body = {"inputs": [{"name": "images", "shape": [2, 1, 28, 28], "datatype": "FP32", "data": [0.25] * 1568}]}
    with TestClient(create_app(loaded, Settings())) as client:
        r = client.post("/v2/models/views/infer", json=body)
        meta = client.get("/v2/models/views")
        models = client.get("/models")
    assert meta.status_code == 200 and meta.json()["platform"] == "openvino_onnx"
    assert models.status_code == 200 and models.json()["models"][0]["backend"] == "openvino"
    assert r.status_code == 200
    got = torch.tensor(r.json()["outputs"][0]["data"]).reshape(2, 10)
    want = load_predictor(trained / "views", "onnx").logits(torch.full((2, 1, 28, 28), 0.25))
    assert (got - want).abs().max() <= 1e-4


def test_bench_formats_is_a_table_with_failures_as_rows(trained, tmp_path, capsys, monkeypatch):
    monkeypatch.setattr(quantize, "MAX_LOSS", -1.0)  # no int8 model can pass: its row says so
    out = tmp_path / "formats.json"
    before = sorted(p.name for p in (trained / "simple_cnn").iterdir())
    code, stdout, err = cli(
        capsys, "bench", "--formats", "torch,onnx,int8,openvino", trained / "simple_cnn", "--json", out, "--quiet"
    )
    assert code == 0, err
    rows = json.loads(out.read_text())["rows"]
    assert [r["format"] for r in rows] == ["torch", "onnx", "int8", "openvino"]
    status = {r["format"]: r["status"] for r in rows}
    assert status == {
        "torch": "exported and checked",
        "onnx": "exported and checked",
        "int8": "exported but failed a check",
        "openvino": "exported and checked",
    }
    int8 = rows[2]
    assert "int8 loses" in int8["reason"]
    accuracy = {r["format"]: r["test_accuracy"] for r in rows if "test_accuracy" in r}
    assert accuracy["onnx"] == pytest.approx(accuracy["torch"]) == pytest.approx(accuracy["openvino"])
    for r in rows:
        if r["status"] == "exported and checked":
            assert r["size_mb"] > 0 and r["latency_ms"] > 0 and r["batch256_images_per_second"] > 0
    lines = stdout.strip().splitlines()
    assert sum("simple_cnn" in line for line in lines) == 4 and "int8 loses" in stdout
    # The run's own folder is not written to.
    assert sorted(p.name for p in (trained / "simple_cnn").iterdir()) == before
    code, _, err = cli(capsys, "bench", "--formats", "torch,tflite", trained / "simple_cnn")
    assert code == 2 and "--formats" in err and err.count("\n") == 1
