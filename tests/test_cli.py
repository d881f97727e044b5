"""Smoke runs of every command through main(argv) on synthetic data, and one-line errors."""

import json
from pathlib import Path

import numpy as np
import pytest
from PIL import Image

from fmnist.cli import main

from conftest import cli, train_args, write_dataset


@pytest.fixture(scope="module")
def trained(tmp_path_factory):
    """One trained shallow run on synthetic data, shared by the tests that only read it."""
    root = tmp_path_factory.mktemp("cli")
    write_dataset(root / "data")
    assert main([str(a) for a in train_args(root / "data", root / "run", "shallow", "--epochs", "1")]) == 0
    return root


def test_train_writes_the_run_folder(trained):
    names = {p.name for p in (trained / "run").iterdir()}
    assert {"config.json", "history.csv", "metrics.json", "best.pt", "last.pt", "curves.png",
            "confusion.png", "samples.png", "misclassified.png", "report.html"} <= names
    metrics = json.loads((trained / "run" / "metrics.json").read_text())
    assert len(metrics["confusion_matrix"]) == 10 and "macro avg" in metrics["classification_report"]
    assert len(metrics["most_confused"]) <= 5 and 0 <= metrics["top2_accuracy"] <= 1


def test_evaluate_recomputes_from_files(trained, capsys):
    before = json.loads((trained / "run" / "metrics.json").read_text())
    (trained / "run" / "metrics.json").unlink()
    code, out, _ = cli(capsys, "evaluate", trained / "run")
    assert code == 0 and "test accuracy" in out
    assert json.loads((trained / "run" / "metrics.json").read_text())["test_accuracy"] == before["test_accuracy"]


def test_predict_reports_bad_files_and_classifies_the_rest(trained, tmp_path, capsys):
    good = tmp_path / "shirt.png"
    Image.fromarray(np.full((40, 30), 200, np.uint8)).save(good)
    (tmp_path / "empty.png").write_bytes(b"")
    (tmp_path / "text.png").write_text("hello")
    code, out, err = cli(capsys, "predict", trained / "run", good, tmp_path / "empty.png",
                         tmp_path / "text.png", tmp_path / "missing.png", "--json", "--top-k", "2")
    results = json.loads(out)
    assert code == 1 and len(results) == 4
    assert len(results[0]["predictions"]) == 2
    assert abs(sum(p["probability"] for p in results[0]["predictions"])) <= 1.0 + 1e-6
    assert [("error" in r) for r in results] == [False, True, True, True]
    assert len(err.strip().splitlines()) == 3


def test_study_writes_summary_and_reports(trained, tmp_path, capsys):
    code, out, _ = cli(capsys, "study", "--models", "shallow", "simple_cnn", "--epochs", "1",
                       "--data-dir", trained / "data", "--no-verify", "--out", tmp_path / "s", "--quiet")
    assert code == 0
    summary = json.loads((tmp_path / "s" / "summary.json").read_text())
    assert [m["name"] for m in summary["models"]] == ["shallow", "simple_cnn"]
    for m in summary["models"]:
        assert {"name", "params", "epochs", "batch_size", "train_accuracy", "val_accuracy",
                "test_accuracy", "test_loss", "train_seconds", "run_dir"} <= set(m)
        assert 0 <= m["test_accuracy"] <= 1 and m["epochs"] == 1 and m["batch_size"] == 32
        run_metrics = json.loads((Path(m["run_dir"]) / "metrics.json").read_text())
        assert m["train_seconds"] == run_metrics["train_seconds"]  # one definition of training time
    html = (tmp_path / "s" / "report.html").read_text()
    assert "data:image/png;base64," in html and "simple_cnn" in html
    assert "## Comparison" in (tmp_path / "s" / "report.md").read_text()


def test_models_and_data_commands(trained, capsys):
    code, out, _ = cli(capsys, "models")
    assert code == 0 and "693,962" in out and "deeper_cnn" in out
    code, out, _ = cli(capsys, "data", "--data-dir", trained / "data", "--no-verify")
    assert code == 0 and "NOT verified" in out and "T-shirt/top" in out


@pytest.mark.parametrize("argv, code, message", [
    (["train", "shallow", "--data-dir", "{tmp}/nowhere", "--out", "{tmp}/o"], 1, "does not exist"),
    (["train", "resnet1000"], 2, "unknown model 'resnet1000'"),
    (["train", "shallow", "--epochs", "0"], 2, "epochs must be positive"),
    (["train", "shallow", "--lr", "-1"], 2, "lr must be positive"),
    (["train", "shallow", "--val-split", "1.5"], 2, "val_split"),
    (["train", "shallow", "--batch-size", "many"], 2, "invalid int value"),
    (["train", "shallow", "--bogus"], 2, "unrecognized arguments"),
    (["train", "shallow", "--config", "{tmp}/none.toml"], 2, "config file not found"),
    (["evaluate", "{tmp}/no-run"], 1, "does not exist"),
    (["predict", "{tmp}/no-run", "x.png"], 1, "does not exist"),
    (["predict", "{run}", "x.png", "--top-k", "0"], 2, "--top-k"),
    (["data", "--data-dir", "{tmp}"], 1, "does not hold the four"),
])
def test_user_errors_are_one_line(trained, tmp_path, capsys, argv, code, message):
    argv = [a.format(tmp=tmp_path, run=trained / "run") for a in argv]
    got, _, err = cli(capsys, *argv)
    assert got == code
    assert len(err.strip().splitlines()) == 1 and message in err and "Traceback" not in err


def test_corrupt_data_file_is_one_line(trained, tmp_path, capsys):
    import shutil
    shutil.copytree(trained / "data", tmp_path / "d")
    path = tmp_path / "d" / "train-images-idx3-ubyte.gz"
    path.write_bytes(path.read_bytes()[:1000])
    got, _, err = cli(capsys, "data", "--data-dir", tmp_path / "d", "--no-verify")
    assert got == 1 and "corrupt or truncated" in err and len(err.strip().splitlines()) == 1


def test_non_empty_output_folder_needs_overwrite(trained, capsys):
    got, _, err = cli(capsys, "train", "shallow", "--out", trained / "run", "--data-dir", trained / "data")
    assert got == 1 and "--overwrite" in err


def test_bench_writes_its_json(trained, tmp_path, capsys):
    code, out, _ = cli(capsys, "bench", "--models", "shallow", "simple_cnn", "--batch-size", "16",
                       "--data-dir", trained / "data", "--no-verify", "--json", tmp_path / "b.json", "--quiet")
    result = json.loads((tmp_path / "b.json").read_text())
    assert code == 0 and result["matmul_gflops"] > 0 and "simple_cnn" in out
    for row in result["models"]:
        assert {"name", "epoch_seconds", "train_images_per_second", "predict_test_seconds", "latency_ms",
                "peak_rss_mb", "train_gflops", "predict_gflops"} <= set(row)
        assert row["epoch_seconds"] > 0 and row["latency_ms"] > 0
