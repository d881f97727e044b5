"""Calibration (a temperature fitted on validation, ECE, every place that shows probabilities)
and explanations, on a CNN trained on synthetic data with noisy labels (so it cannot be right
about everything, and its confidence has something to be calibrated against)."""

from __future__ import annotations

import base64
import dataclasses
import gzip
import io
import json

import numpy as np
import pytest
import torch
from conftest import cli, make_split
from fastapi.testclient import TestClient
from PIL import Image

from fmnist.data import CLASSES, load_fashion_mnist
from fmnist.data.idx import encode_idx
from fmnist.data.images import load_image
from fmnist.explain.methods import DEFAULT_METHOD, torch_forward
from fmnist.explain.sanity import deletion_check, layers_top_down, rank_correlation
from fmnist.inference.predictor import load_predictor
from fmnist.jobs.evaluate import evaluate_run
from fmnist.measure.sanity import sanity_checks
from fmnist.run.folder import RunFolder
from fmnist.serve import Settings, create_app

NOISE = 0.2  # the share of labels moved to another class, in training and test alike


def noisy_dataset(directory, seed: int = 3) -> None:
    rng = np.random.default_rng(seed)
    arrays = {}
    for prefix, per_class, split_seed in (("train", 60, 1), ("t10k", 30, 2)):
        images, labels = make_split(per_class, split_seed)
        moved = rng.random(len(labels)) < NOISE
        labels[moved] = (labels[moved] + rng.integers(1, 10, moved.sum())) % 10
        arrays[f"{prefix}-images-idx3-ubyte"], arrays[f"{prefix}-labels-idx1-ubyte"] = images, labels
    directory.mkdir(parents=True, exist_ok=True)
    for name, array in arrays.items():
        (directory / f"{name}.gz").write_bytes(gzip.compress(encode_idx(array.astype(np.uint8))))


@pytest.fixture(scope="module")
def trained(tmp_path_factory):
    """simple_cnn trained long enough to be over-confident on noisy labels, and exported to ONNX."""
    from fmnist.cli.main import main

    root = tmp_path_factory.mktemp("understand")
    noisy_dataset(root / "data")
    flags = ["--data-dir", root / "data", "--no-verify", "--quiet", "--device", "cpu"]
    train = ["train", "simple_cnn", *flags, "--epochs", "8", "--lr", "0.003", "--out", root / "run"]
    assert main([str(a) for a in train]) == 0
    assert main([str(a) for a in ["export", root / "run", "--out", root / "model.onnx", *flags[:3]]]) == 0
    return root


def test_the_temperature_comes_from_validation_and_lowers_the_test_ece(trained):
    cal = json.loads((trained / "run" / "metrics.json").read_text())["calibration"]
    assert cal["temperature"] > 1.05  # over-confident, as networks trained to zero loss are
    assert cal["ece_after"] <= cal["ece_before"] and cal["nll_after"] <= cal["nll_before"]
    data = load_fashion_mnist(trained / "data", verify=False)
    shuffled = dataclasses.replace(data, test_labels=data.test_labels[torch.randperm(len(data.test_labels))])
    again = evaluate_run(RunFolder(trained / "run"), data=shuffled)["calibration"]
    assert again["temperature"] == cal["temperature"]  # the test labels changed; the temperature did not
    assert again["ece_before"] != cal["ece_before"]
    assert evaluate_run(RunFolder(trained / "run"), data=data)["calibration"] == cal
    page = (trained / "run" / "report.html").read_text()
    assert "temperature (fitted on validation)" in page and "Reliability" in page and "Highest test losses" in page


def png_of(image: torch.Tensor) -> bytes:
    buf = io.BytesIO()
    Image.fromarray((image[0].numpy() * 255).round().astype(np.uint8)).save(buf, "PNG")
    return buf.getvalue()


def test_predict_serve_and_onnx_give_the_same_calibrated_probabilities(trained, capsys):
    data = load_fashion_mnist(trained / "data", verify=False)
    (trained / "x.png").write_bytes(png_of(data.test_images[0]))
    image = load_image(trained / "x.png")[None]  # what predict and serve make of the file
    run = load_predictor(trained / "run", "torch")
    onnx_file = load_predictor(trained / "model.onnx")
    assert onnx_file.temperature == run.temperature != 1.0
    calibrated = run.probabilities(image)
    raw = run.logits(image).softmax(1)
    assert (calibrated - raw).abs().max() > 1e-3  # the temperature makes a visible difference
    assert torch.allclose(onnx_file.probabilities(image), calibrated, atol=1e-5)
    code, out, _ = cli(
        capsys, "predict", trained / "run", trained / "x.png", "--json", "--top-k", "10", "--backend", "torch"
    )
    by_class = {p["label"]: p["probability"] for p in json.loads(out)[0]["predictions"]}
    assert code == 0 and np.allclose([by_class[c] for c in CLASSES], calibrated[0].numpy(), atol=1e-5)
    with TestClient(create_app([trained / "model.onnx"], Settings())) as client:
        answer = client.post(
            "/predict?top_k=10", files={"file": ("x.png", (trained / "x.png").read_bytes(), "image/png")}
        ).json()
        served = {p["label"]: p["probability"] for p in answer["results"][0]["models"][0]["predictions"]}
        assert np.allclose([served[c] for c in CLASSES], calibrated[0].numpy(), atol=1e-5)
        meta = client.get("/v2/models/model").json()
        assert meta["parameters"]["temperature"] == pytest.approx(run.temperature)
        body = {"inputs": [{"name": "images", "shape": [1, 784], "datatype": "FP32", "data": image.flatten().tolist()}]}
        logits = client.post("/v2/models/model/infer", json=body).json()["outputs"][0]["data"]
        assert np.allclose(logits, run.logits(image)[0].numpy(), atol=1e-4)  # /infer: raw logits
    described = json.loads((trained / "model.onnx.json").read_text())["calibration"]
    assert described["temperature"] == pytest.approx(run.temperature)


def test_the_explain_route_shows_where_each_model_looked_and_is_bounded(trained):
    png = png_of(load_fashion_mnist(trained / "data", verify=False).test_images[0])
    with TestClient(create_app([trained / "model.onnx", trained / "run"], Settings())) as client:
        answer = client.post("/explain", files={"file": ("x.png", png, "image/png")})
        assert answer.status_code == 200 and answer.json()["method"] == "occlusion"
        predicted = client.post("/predict?top_k=1", files={"file": ("x.png", png, "image/png")}).json()
        tops = {m["name"]: m["predictions"][0] for m in predicted["results"][0]["models"]}
        for m in answer.json()["models"]:
            assert m["label"] == tops[m["name"]]["label"]
            assert m["probability"] == pytest.approx(tops[m["name"]]["probability"], abs=1e-5)
            shown = Image.open(io.BytesIO(base64.b64decode(m["map"].split(",", 1)[1])))
            assert shown.size == (112, 112)
        two = client.post(
            "/explain", files=[("file", ("a.png", png, "image/png")), ("file", ("b.png", png, "image/png"))]
        )
        assert two.status_code == 400 and "at most 1" in two.json()["error"]
        bad = client.post("/explain", files={"file": ("x.png", b"not an image", "image/png")})
        assert bad.status_code == 400 and "error" in bad.json()


def test_the_default_method_passes_both_sanity_checks_on_a_trained_cnn(trained):
    images = load_fashion_mnist(trained / "data", verify=False).test_images[:100]  # a map pass per layer
    result = sanity_checks(trained / "run", images, [DEFAULT_METHOD])[DEFAULT_METHOD]
    assert result["deletion"]["passed"] >= 0.8  # salient garment pixels matter more than random ones
    assert result["randomisation_spearman"] < 0.5  # the maps depend on what the model learned
    model, _, _ = RunFolder(trained / "run").load_model()
    layers = [name for name, _ in layers_top_down(model)]
    assert [step["layer"] for step in result["cascade"]] == layers and len(layers) >= 3  # top down
    assert layers[0] == [n for n, m in model.named_modules() if isinstance(m, torch.nn.Linear)][-1]


def test_a_map_that_only_follows_the_garment_passes_neither_check(trained):
    """Counted over all 784 pixels, a map of where the garment is (and nothing of the model) beat
    random deletion and correlated with any other such map; counted over the garment, it does not."""
    images = load_fashion_mnist(trained / "data", verify=False).test_images[:200].clone()
    images[..., :, :12] = 0.0  # a black background beside the garment, as Fashion-MNIST's images have
    model, _, _ = RunFolder(trained / "run").load_model()
    forward = torch_forward(model)
    with torch.no_grad():
        target = forward(images).argmax(1)
    gen = torch.Generator().manual_seed(0)
    shape = (images.reshape(-1, 28, 28) > 0.02).float()  # where the garment is
    a, b = (shape + 0.01 * torch.rand(shape.shape, generator=gen) for _ in range(2))
    assert deletion_check(forward, images, a, target)["passed"] < 0.7
    assert abs(rank_correlation(a, b, images)) < 0.2


def test_explain_writes_an_overlay_per_image_and_the_maps(trained, tmp_path, capsys):
    (tmp_path / "x.png").write_bytes(png_of(load_fashion_mnist(trained / "data", verify=False).test_images[5]))
    flags = ["--data-dir", trained / "data", "--no-verify"]
    code, out, _ = cli(
        capsys, "explain", trained / "run", tmp_path / "x.png", "--test", "3", "--out", tmp_path / "e", *flags
    )
    assert code == 0 and "x.png: " in out
    maps = np.load(tmp_path / "e" / "saliency.npy")
    assert maps.dtype == np.float32 and maps.shape == (4, 28, 28) and np.abs(maps).sum() > 0
    assert sorted(p.name for p in (tmp_path / "e").glob("*.png")) == [
        "000-x.png",
        "001-test-0.png",
        "002-test-1.png",
        "003-test-2.png",
    ]
    described = json.loads((tmp_path / "e" / "explain.json").read_text())
    assert described["method"] == DEFAULT_METHOD and [i["file"] for i in described["images"]][1:] == [
        "test-0",
        "test-1",
        "test-2",
    ]
    # an .onnx file has no gradients: occlusion only; bad requests write nothing
    for argv, message in (
        (
            [
                "explain",
                trained / "model.onnx",
                "--test",
                "2",
                "--method",
                "saliency",
                "--out",
                tmp_path / "o1",
                *flags,
            ],
            "needs the PyTorch model",
        ),
        (["explain", trained / "run", "--out", tmp_path / "o2"], "give IMAGE files or --test N"),
        (["explain", trained / "run", "--test", "1", "--method", "magic", "--out", tmp_path / "o3"], "invalid choice"),
    ):
        code, _, err = cli(capsys, *argv)
        assert code == 2 and message in err and len(err.strip().splitlines()) == 1
    assert not any((tmp_path / d).exists() for d in ("o1", "o2", "o3"))
    occluded = ["explain", trained / "model.onnx", "--test", "2", "--out", tmp_path / "o4"]  # default: occlusion
    assert cli(capsys, *occluded, *flags)[0] == 0 and np.load(tmp_path / "o4" / "saliency.npy").shape == (2, 28, 28)


def test_a_staged_cascade_measures_the_top_layer_even_depths_and_the_whole_network():
    from fmnist.explain.sanity import measured_at

    assert measured_at(12, 4) == {0, 4, 7, 11} and measured_at(3, 4) == {0, 1, 2} and measured_at(9, 2) == {0, 8}
    assert all(max(measured_at(n, 4)) == n - 1 and 0 in measured_at(n, 4) for n in range(1, 20))
