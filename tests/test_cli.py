"""Smoke runs of every command through main(argv) on synthetic data, and one-line errors."""

import io
import json
import subprocess
import sys
from pathlib import Path

import numpy as np
import pytest
import torch
from conftest import cli, train_args, write_dataset
from PIL import Image

from fmnist import CLASSES, files, load_fashion_mnist, predict_logits
from fmnist.cli.main import main
from fmnist.data.images import load_image
from fmnist.run.folder import RunFolder


@pytest.fixture(scope="module")
def trained(tmp_path_factory):
    """One trained shallow run on synthetic data, shared by the tests that only read it."""
    root = tmp_path_factory.mktemp("cli")
    write_dataset(root / "data")
    assert main([str(a) for a in train_args(root / "data", root / "run", "shallow", "--epochs", "1")]) == 0
    return root


def test_train_writes_the_run_folder(trained):
    names = {p.name for p in (trained / "run").iterdir()}
    assert {
        "config.json",
        "history.csv",
        "metrics.json",
        "best.pt",
        "last.pt",
        "curves.png",
        "confusion.png",
        "samples.png",
        "misclassified.png",
        "report.html",
    } <= names
    metrics = json.loads((trained / "run" / "metrics.json").read_text())
    cm = np.array(metrics["confusion_matrix"])
    assert cm.shape == (10, 10) and cm.sum() == metrics["n_test"] == 50  # every test image once
    assert metrics["test_accuracy"] == pytest.approx(np.trace(cm) / cm.sum())
    assert metrics["classification_report"]["accuracy"] == pytest.approx(metrics["test_accuracy"])
    assert metrics["test_accuracy"] <= metrics["top2_accuracy"]
    off = cm - np.diag(np.diag(cm))
    assert [p["count"] for p in metrics["most_confused"]] == sorted(off[off > 0].tolist(), reverse=True)[:5]


def test_run_report_shows_the_numbers_of_metrics_json(trained):
    metrics = json.loads((trained / "run" / "metrics.json").read_text())
    html = (trained / "run" / "report.html").read_text()
    for key in ("test_accuracy", "test_loss", "top2_accuracy", "train_seconds"):
        value = metrics[key]
        assert f"<td>{value:.1f}</td>" in html if key == "train_seconds" else f"<td>{value:.4f}</td>" in html, key
    f1 = metrics["classification_report"]["Trouser"]["f1-score"]
    assert "<td>Trouser</td>" in html and f"{f1:.3f}" in html


def test_evaluate_recomputes_from_files(trained, capsys):
    before = json.loads((trained / "run" / "metrics.json").read_text())
    (trained / "run" / "metrics.json").unlink()
    code, out, _ = cli(capsys, "evaluate", trained / "run")
    assert code == 0 and "test accuracy" in out
    assert json.loads((trained / "run" / "metrics.json").read_text())["test_accuracy"] == before["test_accuracy"]


def test_predict_reports_bad_files_and_classifies_the_rest(trained, tmp_path, capsys):
    data = load_fashion_mnist(str(trained / "data"), verify=False, progress=False)
    good = []
    for i in range(2):
        good.append(tmp_path / f"test{i}.png")
        Image.fromarray((data.test_images[i, 0].numpy() * 255).round().astype(np.uint8)).save(good[-1])
    # The run's model on the files as predict brings them to the dataset's form (the real-data
    # tests check that form against the test set itself).
    model, _ = RunFolder(trained / "run").load_model()[:2]
    temperature = json.loads((trained / "run" / "metrics.json").read_text())["calibration"]["temperature"]
    expected = (predict_logits(model, torch.stack([load_image(g) for g in good])) / temperature).softmax(1)
    (tmp_path / "empty.png").write_bytes(b"")
    (tmp_path / "text.png").write_text("hello")
    code, out, err = cli(
        capsys,
        "predict",
        trained / "run",
        good[0],
        tmp_path / "empty.png",
        good[1],
        tmp_path / "text.png",
        tmp_path / "missing.png",
        "--json",
        "--top-k",
        "2",
    )
    results = json.loads(out)
    assert code == 1 and [("error" in r) for r in results] == [False, True, False, True, True]
    for r, probs in zip((results[0], results[2]), expected):
        top = probs.topk(2)
        assert [p["label"] for p in r["predictions"]] == [CLASSES[k] for k in top.indices.tolist()]
        assert [p["probability"] for p in r["predictions"]] == pytest.approx(top.values.tolist(), abs=1e-5)
    assert len(err.strip().splitlines()) == 3


def test_study_writes_summary_and_reports(trained, tmp_path, capsys):
    code, out, _ = cli(
        capsys,
        "study",
        "--models",
        "shallow",
        "simple_cnn",
        "--epochs",
        "1",
        "--data-dir",
        trained / "data",
        "--no-verify",
        "--out",
        tmp_path / "s",
        "--quiet",
    )
    assert code == 0
    summary = json.loads((tmp_path / "s" / "summary.json").read_text())
    assert [m["name"] for m in summary["models"]] == ["shallow", "simple_cnn"]
    md = (tmp_path / "s" / "report.md").read_text()
    html = (tmp_path / "s" / "report.html").read_text()
    for m in summary["models"]:
        run = Path(m["run_dir"])
        # Each row holds its own run's figures, read back from that run's files.
        metrics = json.loads((run / "metrics.json").read_text())
        history = files.read_csv(run / "history.csv")
        best = next(h for h in history if h["epoch"] == metrics["best_epoch"])
        assert json.loads((run / "config.json").read_text())["model"] == m["name"] and run.name == m["name"]
        assert (m["test_accuracy"], m["test_loss"]) == (metrics["test_accuracy"], metrics["test_loss"])
        assert m["val_accuracy"] == best["val_accuracy"] and m["epochs"] == len(history) == 1
        # Training time: steps and validation of every epoch, more than the steps alone.
        assert m["train_seconds"] == metrics["train_seconds"] == history[-1]["elapsed"]
        assert m["train_seconds"] > sum(h["seconds"] for h in history)
        row = (
            f"| {m['name']} | {m['params']:,} | 1 | 32 | {m['train_accuracy']:.2%} | {m['val_accuracy']:.2%} "
            f"| {m['test_accuracy']:.2%} | {m['test_loss']:.4f} | {m['train_seconds']:.0f} |"
        )
        assert row in md, row
        assert f"<td>{m['test_accuracy']:.2%}</td><td>{m['test_loss']:.4f}</td>" in html
    assert "data:image/png;base64," in html
    # The models combined: an ensemble run beside them, its row read back from its own folder.
    combined = summary["combined"]
    run = Path(combined["run_dir"])
    metrics, cfg = json.loads((run / "metrics.json").read_text()), json.loads((run / "config.json").read_text())
    assert combined["name"] == "the two combined" and run == tmp_path / "s" / "combined"
    assert [m["run"] for m in cfg["network"]["members"]] == [m["run_dir"] for m in summary["models"]]
    assert (combined["test_accuracy"], combined["test_loss"]) == (metrics["test_accuracy"], metrics["test_loss"])
    assert combined["val_accuracy"] == files.read_csv(run / "history.csv")[0]["val_accuracy"]
    assert combined["epochs"] == 2 and combined["params"] == sum(m["params"] for m in summary["models"])
    assert f"| the two combined | {combined['params']:,} | 2 | 32 |" in md and "is their ensemble" in md
    assert "<h3>the two combined</h3>" in html  # its confusion matrix beside the models'
    f1 = metrics["classification_report"]["Trouser"]["f1-score"]
    assert "| Trouser | " in md and f"{f1:.3f} |" in md.split("| Trouser |")[1].splitlines()[0]
    assert "the two combined" in out


def test_models_and_data_commands(trained, capsys):
    code, out, _ = cli(capsys, "models")
    assert code == 0 and "693,962" in out and "deeper_cnn" in out
    code, out, _ = cli(capsys, "data", "--data-dir", trained / "data", "--no-verify")
    assert code == 0 and "NOT verified" in out and "T-shirt/top" in out


@pytest.mark.parametrize(
    "argv, code, message",
    [
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
        (["serve", "{run}", "--processes", "0"], 2, "--processes must be positive"),
        (["serve", "{run}", "--max-batch", "0"], 2, "--max-models and --processes must be positive"),
        (["data", "--data-dir", "{tmp}"], 1, "does not hold the four"),
        (["train", "shallow", "--device", "cuda"], 1, "no CUDA device here"),
        (["train", "shallow", "--device", "cuda:1"], 1, "no CUDA device here"),
        (["train", "shallow", "--device", "mps"], 1, "no Apple MPS device here"),
        (["train", "shallow", "--device", "gpu"], 2, "device must be auto, cpu"),
        (["study", "--device", "cuda", "--out", "{tmp}/s"], 1, "no CUDA device here"),
        (["bench", "--device", "bogus"], 2, "device must be auto, cpu"),
        (["bench", "--device", "cuda"], 1, "no CUDA device here"),
        (
            [
                "study",
                "--recipe",
                "fast",
                "--batch-size",
                "32",
                "--out",
                "{tmp}/s",
                "--data-dir",
                "{run}/../data",
                "--no-verify",
            ],
            2,
            "--whiten: shallow: the model has no convolution to whiten; --whiten: simple_cnn: cannot whiten",
        ),
    ],
)
def test_user_errors_are_one_line(trained, tmp_path, capsys, argv, code, message):
    argv = [a.format(tmp=tmp_path, run=trained / "run") for a in argv]
    got, _, err = cli(capsys, *argv)
    assert got == code
    assert len(err.strip().splitlines()) == 1 and message in err and "Traceback" not in err
    assert not (tmp_path / "o").exists() and not (tmp_path / "s").exists()  # nothing written


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
    code, out, _ = cli(
        capsys,
        "bench",
        "--models",
        "shallow",
        "simple_cnn",
        "--batch-size",
        "16",
        "--data-dir",
        trained / "data",
        "--no-verify",
        "--json",
        tmp_path / "b.json",
        "--quiet",
        "--backend",
        "torch,onnx",
    )
    result = json.loads((tmp_path / "b.json").read_text())
    assert code == 0 and result["matmul_gflops"] > 0 and result["backends"] == ["torch", "onnx"]
    assert [r["name"] for r in result["models"]] == ["shallow", "simple_cnn"]
    for row in result["models"]:
        assert row["epoch_seconds"] > 0 and row["train_images_per_second"] == pytest.approx(180 / row["epoch_seconds"])
        for backend in ("torch", "onnx"):
            x = row[backend]
            assert 0 < x["latency_ms"] <= x["latency_p99_ms"] and x["batch256_images_per_second"] > 0
            assert (
                x["predict_test_seconds"] > 0
                and f"{row['name']:<12} {backend:<7} {x['predict_test_seconds']:>9.3f}" in out
            )


def test_bench_of_prediction_alone_and_bad_backends(trained, tmp_path, capsys):
    code, out, _ = cli(
        capsys,
        "bench",
        "--models",
        "shallow",
        "--no-train",
        "--backend",
        "onnx",
        "--data-dir",
        trained / "data",
        "--no-verify",
        "--json",
        tmp_path / "b.json",
        "--quiet",
    )
    row = json.loads((tmp_path / "b.json").read_text())["models"][0]
    assert code == 0 and "epoch_seconds" not in row and "torch" not in row and row["onnx"]["latency_ms"] > 0
    code, _, err = cli(capsys, "bench", "--backend", "torch,tensorrt")
    assert code == 2 and "a comma-separated list of torch, onnx" in err


def test_the_command_exits_with_its_code_after_its_exit_handlers_without_the_interpreter_s_teardown(tmp_path):
    # A teardown that prints shows whether the interpreter freed its objects one by one (seconds,
    # once PyTorch and matplotlib are loaded); the exit handlers (MLflow's, logging's) still run.
    script = (
        "import atexit, sys\n"
        "class Teardown:\n"
        "    def __del__(self): print('teardown', flush=True)\n"
        "kept = Teardown()\n"
        "atexit.register(lambda: print('exit handler', flush=True))\n"
        "from concurrent.futures import ThreadPoolExecutor\n"
        "pool = ThreadPoolExecutor(1)  # kept, as a library keeps its pool: its idle worker stays\n"
        "pool.submit(int).result()\n"
        "from fmnist.cli.main import run\n"
        "run(sys.argv[1:])\n"
    )
    proc = subprocess.run([sys.executable, "-c", script, "models"], capture_output=True, text=True, timeout=60)
    assert proc.returncode == 0, proc.stderr
    assert "deeper_cnn" in proc.stdout  # the output flushed before the exit
    assert proc.stdout.rstrip().endswith("exit handler") and "teardown" not in proc.stdout


def test_a_reader_that_goes_away_ends_the_command_quietly(capsys, monkeypatch):
    class Gone(io.StringIO):  # a pipe whose reader has exited (`fmnist models | head -1`)
        def write(self, text):
            raise BrokenPipeError(32, "Broken pipe")

    monkeypatch.setattr(sys, "stdout", Gone())
    assert main(["models"]) == 141
    assert capsys.readouterr().err == ""  # no "error: Broken pipe" line
