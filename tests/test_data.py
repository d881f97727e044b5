import os
import shutil

import pytest
import torch
from conftest import write_dataset

from fmnist.data import dataset as data
from fmnist.data import load_fashion_mnist, stratified_split
from fmnist.errors import FmnistError, UsageError


def test_loads_tensors_scaled_to_unit_range(synth_verified):
    ds = load_fashion_mnist(str(synth_verified), download=False)
    assert ds.train_images.shape == (200, 1, 28, 28) and ds.test_images.shape == (50, 1, 28, 28)
    assert ds.train_images.dtype == torch.float32 and ds.train_labels.dtype == torch.int64
    assert 0.0 <= ds.train_images.min() and ds.train_images.max() == 1.0
    assert ds.origin == "--data-dir" and ds.verified


def test_raw_idx_files_work_too(tmp_path, monkeypatch):
    sums = write_dataset(tmp_path / "raw", gz=False)
    monkeypatch.setattr(data, "SHA256", sums)
    assert len(load_fashion_mnist(str(tmp_path / "raw"), download=False).train_labels) == 200


def test_checksum_mismatch_is_an_error_unless_explicitly_unverified(synth_dir):
    with pytest.raises(FmnistError, match="checksum mismatch.*--no-verify"):
        load_fashion_mnist(str(synth_dir), download=False)
    ds = load_fashion_mnist(str(synth_dir), verify=False, download=False)
    assert not ds.verified


def test_verification_is_remembered(synth_verified, monkeypatch):
    load_fashion_mnist(str(synth_verified), download=False)

    def no_hash(*a, **k):
        raise AssertionError("hashed again")

    monkeypatch.setattr(data.hashlib, "sha256", no_hash)
    load_fashion_mnist(str(synth_verified), download=False)  # no full hash the second time
    os.utime(synth_verified / "t10k-labels-idx1-ubyte.gz", ns=(1, 1))  # a changed file is hashed
    with pytest.raises(AssertionError, match="hashed again"):
        load_fashion_mnist(str(synth_verified), download=False)


def test_discovery_order(synth_verified, tmp_path, monkeypatch, isolated_cache):
    env_dir, debian = tmp_path / "env", tmp_path / "debian"
    for d in (env_dir, debian, isolated_cache):
        shutil.copytree(synth_verified, d)
    monkeypatch.setattr(data, "DEBIAN_DIR", debian)
    monkeypatch.setenv("FMNIST_DATA_DIR", str(env_dir))
    assert load_fashion_mnist(str(synth_verified)).origin == "--data-dir"
    assert load_fashion_mnist().origin == "$FMNIST_DATA_DIR"
    monkeypatch.delenv("FMNIST_DATA_DIR")
    assert load_fashion_mnist().origin == "cache"
    shutil.rmtree(isolated_cache)
    assert load_fashion_mnist().origin == "debian"
    shutil.rmtree(debian)
    with pytest.raises(FmnistError, match="not found.*apt-get install dataset-fashion-mnist"):
        load_fashion_mnist()  # the test mirrors do not answer


def test_a_bad_cache_copy_is_neither_used_nor_kept(synth_verified, tmp_path, monkeypatch, isolated_cache):
    shutil.copytree(synth_verified, isolated_cache)
    bad = isolated_cache / "train-labels-idx1-ubyte.gz"
    shutil.copy(tmp_path / "synth-ok" / "t10k-labels-idx1-ubyte.gz", bad)  # valid gzip, wrong content
    debian = tmp_path / "debian"
    shutil.copytree(synth_verified, debian)
    monkeypatch.setattr(data, "DEBIAN_DIR", debian)
    assert load_fashion_mnist().origin == "debian"
    assert not bad.exists()


@pytest.mark.parametrize("problem", ["missing dir", "missing file", "not gzip", "labels mismatch"])
def test_explicit_folder_problems_are_clear(tmp_path, synth_dir, problem):
    target = synth_dir
    if problem == "missing dir":
        target = tmp_path / "nope"
    elif problem == "missing file":
        (synth_dir / "t10k-images-idx3-ubyte.gz").unlink()
    elif problem == "not gzip":
        (synth_dir / "t10k-images-idx3-ubyte.gz").write_bytes(b"\x1f\x8bthis is not gzip")
    else:
        write_dataset(tmp_path / "other", test_per_class=6)
        shutil.copy(tmp_path / "other" / "t10k-labels-idx1-ubyte.gz", synth_dir)
    with pytest.raises(FmnistError):
        load_fashion_mnist(str(target), verify=False, download=False)


def test_stratified_split_is_exact_disjoint_and_seeded():
    labels = torch.arange(10).repeat_interleave(100)
    train, val = stratified_split(labels, 0.1, seed=0)
    assert len(val) == 100 and len(train) == 900
    assert set(train.tolist()).isdisjoint(val.tolist())
    assert torch.bincount(labels[val], minlength=10).tolist() == [10] * 10
    assert torch.equal(val, stratified_split(labels, 0.1, seed=0)[1])
    assert not torch.equal(val, stratified_split(labels, 0.1, seed=1)[1])


def test_split_too_small_is_a_usage_error():
    with pytest.raises(UsageError):
        stratified_split(torch.arange(10), 0.1, seed=0)
