"""Tests on the real Fashion-MNIST files. They fail, not skip, when the data is missing:
`make test` installs it first (see the Makefile's data target)."""

import hashlib
import io
import json

import numpy as np
import pytest
import torch
from conftest import cli
from PIL import Image

from fmnist.data.dataset import CLASSES, SHA256, class_counts, load_fashion_mnist, locate
from fmnist.data.idx import read_bytes
from fmnist.data.images import load_image_bytes
from fmnist.jobs.train import train_run
from fmnist.models.forward import predict_logits
from fmnist.run.folder import RunFolder
from fmnist.training.config import TrainConfig

pytestmark = pytest.mark.realdata


@pytest.fixture(scope="module")
def real():
    return load_fashion_mnist(download=False, progress=False)


def test_checksums_of_the_decompressed_files(real):
    files = locate(real.directory)
    for name, sha in SHA256.items():
        assert hashlib.sha256(read_bytes(files[name])).hexdigest() == sha, name


def test_sizes_and_per_class_counts(real):
    assert real.train_images.shape == (60000, 1, 28, 28) and real.test_images.shape == (10000, 1, 28, 28)
    assert class_counts(real.train_labels) == [6000] * 10
    assert class_counts(real.test_labels) == [1000] * 10
    assert real.train_images.min() == 0.0 and real.train_images.max() == 1.0


def test_shallow_reaches_its_accuracy_floor_at_the_study_settings(real, tmp_path):
    # The study's settings (batch 32, Adam 1e-3, seed 0) on CPU, for 1 of its 10 epochs (the whole
    # study's figures are make study's; this checks the real data trains, in seconds: 84.5 % here).
    cfg = TrainConfig(model="shallow", epochs=1, device="cpu", quiet=True)
    metrics = train_run(cfg, tmp_path / "run", data=real)
    assert metrics["test_accuracy"] >= 0.83
    assert sum(r["support"] for k, r in metrics["classification_report"].items() if k in ("Trouser", "Bag")) == 2000


@pytest.fixture(scope="module")
def trained_run(real, tmp_path_factory):
    # simple_cnn, one epoch: its labels of rescaled and recompressed files agree with its evaluation
    # with a margin of five images or more out of 300 at each threshold below, in a third of deep_cnn's time.
    out = tmp_path_factory.mktemp("real") / "simple"
    train_run(TrainConfig(model="simple_cnn", epochs=1, batch_size=128, device="cpu", quiet=True), out, data=real)
    return out


def photo_like(a: np.ndarray, kind: str) -> Image.Image:
    """A test image (28×28, light object on black) as a user's file might hold it."""
    img = Image.fromarray(a)
    if kind == "inverted":  # dark object on white
        return Image.fromarray(255 - a)
    big = img.resize((112, 112), Image.Resampling.BICUBIC)
    if kind == "scaled":
        return big
    canvas = Image.new("L", (300, 220), 235)  # dark object, scaled up, off-centre on a light page
    canvas.paste(Image.fromarray(255 - np.asarray(big)), (60, 50))
    return canvas.convert("RGB")


@pytest.mark.parametrize(
    "kind, fmt, agree",
    [
        ("as is", "PNG", 0.97),
        ("as is", "JPEG", 0.95),
        ("inverted", "PNG", 0.97),
        ("scaled", "PNG", 0.9),
        ("on a page", "JPEG", 0.9),
    ],
)
def test_predict_gives_test_images_as_files_the_label_the_evaluation_gives(
    real, trained_run, tmp_path, capsys, kind, fmt, agree
):
    n = 300
    model, cfg = RunFolder(trained_run).load_model()[:2]
    expected = predict_logits(model, real.test_images[:n], tta=cfg.tta, tta_shift=cfg.tta_shift).argmax(1)
    paths = []
    for i in range(n):
        a = (real.test_images[i, 0].numpy() * 255).round().astype(np.uint8)
        img = a if kind == "as is" else photo_like(a, kind)
        paths.append(tmp_path / f"{i}.{fmt.lower()}")
        (Image.fromarray(img) if isinstance(img, np.ndarray) else img).save(paths[-1], fmt)
    code, out, _ = cli(capsys, "predict", trained_run, *paths, "--json", "--top-k", "1")
    got = [CLASSES.index(r["predictions"][0]["label"]) for r in json.loads(out)]
    assert code == 0
    rate = np.mean(np.array(got) == expected.numpy())
    assert rate >= agree


def test_the_exported_model_scores_the_runs_own_test_accuracy(trained_run, tmp_path, capsys):
    recorded = json.loads((trained_run / "metrics.json").read_text())["test_accuracy"]
    assert cli(capsys, "export", trained_run, "--out", tmp_path / "simple.onnx")[0] == 0
    code, out, _ = cli(capsys, "evaluate", tmp_path / "simple.onnx")
    assert code == 0 and f"test accuracy {recorded:.4f}" in out
    assert out.split("test accuracy ")[1].split(",")[0] == f"{recorded:.4f}"


def png_bytes(image: torch.Tensor) -> bytes:
    buf = io.BytesIO()
    Image.fromarray((image[0].numpy() * 255).round().astype(np.uint8)).save(buf, "PNG")
    return buf.getvalue()


def test_every_test_image_saved_as_a_png_comes_back_as_itself(real):
    images = real.test_images  # each PNG file's bytes, read by predict's (and the server's) preprocessing
    back = torch.stack([load_image_bytes(png_bytes(x), f"{i}.png") for i, x in enumerate(images)])
    changed = (back != images).flatten(1).any(1)
    assert int(changed.sum()) == 0, f"{int(changed.sum())} of {len(images)} test images changed"
