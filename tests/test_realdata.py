"""Tests on the real Fashion-MNIST files. They fail, not skip, when the data is missing:
`make test` installs it first (see the Makefile's data target)."""

import hashlib

import pytest

from fmnist.config import TrainConfig
from fmnist.data import SHA256, class_counts, load_fashion_mnist, locate
from fmnist.idx import read_bytes
from fmnist.workflow import train_run

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
    # The study's default settings (10 epochs, batch 32, Adam 1e-3, seed 0) on CPU.
    cfg = TrainConfig(model="shallow", device="cpu", quiet=True)
    metrics = train_run(cfg, tmp_path / "run", data=real)
    assert metrics["test_accuracy"] >= 0.875
    assert sum(r["support"] for k, r in metrics["classification_report"].items()
               if k in ("Trouser", "Bag")) == 2000
