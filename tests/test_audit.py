"""`fmnist audit` on synthetic data with planted label errors and duplicates, `train --exclude`,
and the study report's link to the audit of its data."""

from __future__ import annotations

import csv
import dataclasses
import gzip
import json

import numpy as np
import pytest
import torch
from conftest import cli, make_split

from fmnist.audit.duplicates import find_duplicates
from fmnist.cli.main import main
from fmnist.data import fingerprint, load_fashion_mnist
from fmnist.data.idx import encode_idx
from fmnist.jobs.train import split
from fmnist.run.audit import audit_for
from fmnist.training.config import make_config

FLIPPED_TRAIN, FLIPPED_TEST = 30, 10
# The runs: small and quick, but enough to learn the synthetic classes.
RUN_FLAGS = ["--model", "shallow", "--epochs", "5", "--batch-size", "32", "--no-whiten", "--quiet", "--device", "cpu"]


def planted_dataset(directory) -> dict:
    """600 training and 200 test images (conftest's learnable bars) with labels flipped at random in
    a known set, test images that are training images plus pixel noise, and exact copies."""
    train_x, train_y = make_split(60, 1)
    test_x, test_y = make_split(20, 2)
    rng = np.random.default_rng(7)
    flipped = rng.choice(np.arange(10, len(train_y)), FLIPPED_TRAIN, replace=False)
    train_y[flipped] = (train_y[flipped] + rng.integers(1, 10, FLIPPED_TRAIN)) % 10
    test_flipped = rng.choice(np.arange(10, len(test_y)), FLIPPED_TEST, replace=False)
    test_y[test_flipped] = (test_y[test_flipped] + rng.integers(1, 10, FLIPPED_TEST)) % 10
    near = [(t, t) for t in range(5)]  # test t = train t + noise of up to 2 grey levels
    for t, s in near:
        noise = rng.integers(-2, 3, size=(28, 28))
        test_x[t], test_y[t] = np.clip(train_x[s].astype(int) + noise, 0, 255), train_y[s]
    test_x[5], test_y[5] = train_x[5], train_y[5]  # exact, train/test
    train_x[7], train_y[7] = train_x[6], train_y[6]  # exact, within training
    files = {"train-images-idx3-ubyte": train_x, "train-labels-idx1-ubyte": train_y}
    files |= {"t10k-images-idx3-ubyte": test_x, "t10k-labels-idx1-ubyte": test_y}
    directory.mkdir(parents=True)
    for name, array in files.items():
        (directory / f"{name}.gz").write_bytes(gzip.compress(encode_idx(array.astype(np.uint8))))
    return {
        "train": set(flipped.tolist()),
        "test": set(test_flipped.tolist()),
        "near": {("train", s, "test", t) for s, t in near},
        "exact": {("train", 5, "test", 5), ("train", 6, "train", 7)},
    }


@pytest.fixture(scope="module")
def audited(tmp_path_factory):
    """One audit of the planted data (3 folds, 2 cross-validations), run through the command line."""
    root = tmp_path_factory.mktemp("audit")
    planted = planted_dataset(root / "data")
    code = main(
        [
            "audit",
            *RUN_FLAGS,
            "--data-dir",
            str(root / "data"),
            "--no-verify",
            "--folds",
            "3",
            "--repeats",
            "2",
            "--out",
            str(root / "au"),
        ]
    )
    assert code == 0 or pytest.fail("audit failed")
    return root, planted


def read_rows(path) -> list[dict]:
    with open(path, newline="") as f:
        return list(csv.DictReader(f))


def test_planted_label_errors_are_found_with_precision_and_recall_of_at_least_0_8(audited):
    root, planted = audited
    rows = read_rows(root / "au" / "label_issues.csv")
    assert list(rows[0]) == ["split", "index", "given", "suggested", "score"]
    for part in ("train", "test"):
        scores = [float(r["score"]) for r in rows if r["split"] == part]
        assert scores == sorted(scores)  # most likely wrong first
    found = {(r["split"], int(r["index"])) for r in rows}
    truth = {("train", i) for i in planted["train"]} | {("test", i) for i in planted["test"]}
    train_found = {i for s, i in found if s == "train"}
    assert len(train_found & planted["train"]) / len(train_found) >= 0.8  # precision, cross-validated
    assert len(train_found & planted["train"]) / len(planted["train"]) >= 0.8  # recall
    assert len(found & truth) / len(found) >= 0.8 and len(found & truth) / len(truth) >= 0.8
    flipped = next(r for r in rows if r["split"] == "train")
    assert flipped["given"] != flipped["suggested"]  # class names, not numbers
    summary = json.loads((root / "au" / "audit.json").read_text())
    assert summary["label_issues"]["train"] == len(train_found)


def test_planted_duplicates_are_all_listed_and_exact_ones_with_similarity_1(audited):
    root, planted = audited
    rows = read_rows(root / "au" / "duplicates.csv")
    assert list(rows[0]) == ["split_a", "index_a", "split_b", "index_b", "similarity"]
    pairs = {(r["split_a"], int(r["index_a"]), r["split_b"], int(r["index_b"])): float(r["similarity"]) for r in rows}
    assert all(0.99 <= pairs[p] < 1 for p in planted["near"]), pairs
    assert all(pairs[p] == 1.0 for p in planted["exact"]), pairs
    assert set(pairs) == planted["near"] | planted["exact"]  # distinct images of a class are not listed


def test_each_fold_is_a_run_that_never_saw_the_images_it_predicted(audited):
    root, _ = audited
    partitions, seeds = [], set()
    for suffix in ("", "-repeat-2"):  # each cross-validation: disjoint folds covering every image
        configs = [json.loads((root / "au" / f"fold-{k}{suffix}" / "config.json").read_text()) for k in (1, 2, 3)]
        held = [set(c["exclude"]) for c in configs]
        assert not (held[0] & held[1]) and not (held[1] & held[2]) and set().union(*held) == set(range(600))
        partitions.append({frozenset(h) for h in held})
        seeds |= {c["seed"] for c in configs}
        for k in (1, 2, 3):
            folder = root / "au" / f"fold-{k}{suffix}"
            assert (folder / "best.pt").is_file() and (folder / "metrics.json").is_file()
    assert partitions[0] != partitions[1] and len(seeds) == 2  # its own folds and its own seed
    probs = np.load(root / "au" / "probabilities.npz")
    assert probs["train"].shape == (600, 10) and probs["test"].shape == (200, 10)
    assert probs["train_repeats"].shape == (2, 600, 10)
    assert np.allclose(probs["train"], probs["train_repeats"].astype(np.float32).mean(0), atol=1e-3)
    assert not np.allclose(probs["train_repeats"][0], probs["train_repeats"][1], atol=1e-3)
    assert np.allclose(probs["train"].sum(1), 1, atol=1e-5) and np.allclose(probs["test"].sum(1), 1, atol=1e-5)
    assert json.loads((root / "au" / "audit.json").read_text())["settings"]["repeats"] == 2
    page = (root / "au" / "report.html").read_text()
    assert "data:image/png;base64" in page and "http://" not in page and "https://" not in page
    assert "candidate for a person to look at" in page


def test_a_study_report_links_the_audit_of_its_own_data_only(audited, tmp_path, monkeypatch, capsys):
    root, _ = audited
    monkeypatch.chdir(tmp_path)
    (tmp_path / "audits").symlink_to(root)  # audits/au: where studies look for audits
    base = ["study", "--models", "shallow", "--epochs", "1", "--quiet", "--device", "cpu", "--no-verify"]
    assert cli(capsys, *base, "--data-dir", root / "data", "--out", "same")[0] == 0
    page = (tmp_path / "same" / "report.html").read_text()
    assert "Data audit" in page and "href='../audits/au/report.html'" in page
    summary = json.loads((tmp_path / "same" / "summary.json").read_text())
    assert summary["audit"]["label_issues"]["train"] > 0
    (tmp_path / "same" / "report.html").unlink()  # evaluating the study writes it again, with the runs
    code, out, _ = cli(capsys, "evaluate", "same", "--data-dir", root / "data", "--no-verify")
    page = (tmp_path / "same" / "report.html").read_text()
    assert code == 0 and "shallow: test accuracy" in out and "Data audit" in page and "Calibration" in page
    data = load_fashion_mnist(root / "data", verify=False)
    relabelled = dataclasses.replace(data, train_labels=data.train_labels.clone())
    relabelled.train_labels[0] = (relabelled.train_labels[0] + 1) % 10  # one label differs: other data
    assert audit_for(fingerprint(data), tmp_path / "audits").path.name == "au"
    (tmp_path / "mixed" / "broken").mkdir(parents=True)
    (tmp_path / "mixed" / "broken" / "audit.json").write_text("{not json")  # another's broken audit beside it
    (tmp_path / "mixed" / "au").symlink_to(root / "au")
    capsys.readouterr()
    assert audit_for(fingerprint(data), tmp_path / "mixed").path.name == "au"
    assert "warning: skipping the audit" in capsys.readouterr().err
    assert audit_for(fingerprint(relabelled), tmp_path / "audits") is None  # so its study links nothing


@pytest.mark.parametrize(
    "flags, message",
    [
        (["--folds", "1"], "--folds 1: give 2 to"),
        (["--folds", "61"], "--folds 61: give 2 to"),
        (["--similarity", "1.5"], "--similarity 1.5"),
        (["--exclude", "missing.csv"], "cannot read missing.csv"),
    ],
)
def test_bad_audit_input_is_one_line_and_writes_nothing(flags, message, tmp_path, monkeypatch, capsys):
    monkeypatch.chdir(tmp_path)
    planted_dataset(tmp_path / "data")
    code, _, err = cli(capsys, "audit", "--data-dir", "data", "--no-verify", "--out", "au", *flags)
    assert code == 2 and message in err and len(err.strip().splitlines()) == 1
    assert not (tmp_path / "au").exists()


def train_excluding(capsys, root, exclude, *flags) -> tuple[int, str, str]:
    """`fmnist train shallow` on the planted data in `root`, without the images `exclude` lists."""
    data = ["--data-dir", root / "data", "--no-verify", "--quiet"]
    return cli(capsys, "train", "shallow", *data, "--exclude", exclude, "--out", root / "run", *flags)


def test_train_exclude_leaves_the_listed_training_images_out_of_training_and_validation(tmp_path, capsys):
    planted = planted_dataset(tmp_path / "data")
    issues = tmp_path / "issues.csv"
    issues.write_text("split,index,given\ntrain,3,x\ntest,4,y\ntrain,11,z\ntrain,3,x\n")
    code, _, err = train_excluding(capsys, tmp_path, issues, "--epochs", "1")
    assert code == 0, err
    assert json.loads((tmp_path / "run" / "config.json").read_text())["exclude"] == [3, 11]  # test rows ignored
    data = load_fashion_mnist(tmp_path / "data", verify=False)
    cfg = make_config({"model": "shallow", "exclude": sorted(planted["train"])})
    (x, _), (v, _) = split(data, cfg, torch.device("cpu"))
    rows = {tuple(r.flatten().tolist()) for r in torch.cat([x, v])}
    assert len(x) + len(v) == 600 - FLIPPED_TRAIN
    assert not any(tuple(data.train_images[i].flatten().tolist()) in rows for i in planted["train"])
    plain = split(data, make_config({"model": "shallow"}), torch.device("cpu"))
    plain_val = {tuple(r.flatten().tolist()) for r in plain[1][0]}
    cleaned_val = {tuple(r.flatten().tolist()) for r in v}
    flipped_val = {tuple(data.train_images[i].flatten().tolist()) for i in planted["train"]} & plain_val
    assert flipped_val and cleaned_val == plain_val - flipped_val  # the same validation images, less the excluded


@pytest.mark.parametrize(
    "text, message",
    [
        ("index\n600\n", "excluded index 600 is out of range"),
        ("index\nx1\n", "not a whole"),
        ("a,b\n1,2\n", "has no 'index' column"),
        (None, "cannot read"),
    ],
)
def test_a_bad_exclude_file_is_refused_before_anything_is_written(text, message, tmp_path, capsys):
    planted_dataset(tmp_path / "data")
    if text is not None:
        (tmp_path / "ex.csv").write_text(text)
    code, _, err = train_excluding(capsys, tmp_path, tmp_path / "ex.csv")
    assert code == 2 and message in err and len(err.strip().splitlines()) == 1
    assert not (tmp_path / "run").exists()


def test_near_duplicates_need_the_threshold_and_exact_ones_are_similarity_1():
    gen = torch.Generator().manual_seed(0)
    train = torch.rand(50, 1, 28, 28, generator=gen)
    test = torch.rand(10, 1, 28, 28, generator=gen)
    test[0] = (train[3] + 0.01 * torch.randn(1, 28, 28, generator=gen)).clamp(0, 1)  # near
    test[1] = train[4]  # exact
    train[9] = (train[8] + 0.3 * torch.randn(1, 28, 28, generator=gen)).clamp(0, 1)  # far from a copy
    rows = find_duplicates(train, test, threshold=0.99)
    pairs = {(r["split_a"], r["index_a"], r["split_b"], r["index_b"]): r["similarity"] for r in rows}
    assert pairs[("train", 4, "test", 1)] == 1.0 and rows[0]["similarity"] == 1.0
    assert 0.99 <= pairs[("train", 3, "test", 0)] < 1
    assert set(pairs) == {("train", 4, "test", 1), ("train", 3, "test", 0)}
    looser = find_duplicates(train, test, threshold=0.5)
    assert ("train", 8, "train", 9) in {(r["split_a"], r["index_a"], r["split_b"], r["index_b"]) for r in looser}


def test_a_group_of_near_copies_larger_than_the_neighbours_searched_is_counted_whole():
    gen = torch.Generator().manual_seed(1)
    train = torch.rand(200, 1, 28, 28, generator=gen)
    base = train[0].clone()
    for i in range(1, 12):  # twelve near-copies of one image: 66 pairs, each beyond five neighbours
        train[i] = (base + 0.004 * torch.randn(1, 28, 28, generator=gen)).clamp(0, 1)
    rows = find_duplicates(train, torch.rand(5, 1, 28, 28, generator=gen), threshold=0.99)
    pairs = {(r["index_a"], r["index_b"]) for r in rows if r["split_a"] == r["split_b"] == "train"}
    assert pairs == {(a, b) for a in range(12) for b in range(a + 1, 12)}


def test_duplicates_csv_leaves_out_one_copy_of_each_pair(tmp_path):
    from fmnist.data.exclude import read_index_csv

    (tmp_path / "duplicates.csv").write_text(
        "split_a,index_a,split_b,index_b,similarity\n"
        "train,3,train,9,1.0\ntrain,3,train,12,0.995\ntrain,9,train,12,0.993\n"
        "train,40,test,7,0.996\ntest,1,test,2,0.999\n"
    )
    assert read_index_csv(tmp_path / "duplicates.csv") == [9, 12, 40]  # 3 kept; 40 is a test image's copy
    (tmp_path / "bad.csv").write_text("split_a,index_a,split_b,index_b,similarity\ntrain,x,train,2,1\n")
    with pytest.raises(ValueError, match="line 2: not a pair"):
        read_index_csv(tmp_path / "bad.csv")
