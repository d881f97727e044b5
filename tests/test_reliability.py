"""Runs that fail loudly and survive being stopped: NaN, SIGTERM and resume, bad checkpoints,
crash-safe writes."""

import json
import os
import signal
import subprocess
import sys
import time

import pytest
import torch
from conftest import NanAfter, cli, train_args, untimed, write_dataset

from fmnist import files
from fmnist.errors import UsageError
from fmnist.jobs.train import resume_run
from fmnist.run import checkpoint
from fmnist.run.checkpoint import load_checkpoint, save_checkpoint


@pytest.fixture
def data_dir(tmp_path):
    write_dataset(tmp_path / "data", train_per_class=30)
    return tmp_path / "data"


def weights(path):
    return torch.load(path, weights_only=True)["model"]


def history_without_time(run):
    return untimed(files.read_csv(run / "history.csv"))


def test_resumed_run_equals_uninterrupted_run(data_dir, tmp_path, capsys):
    assert (
        cli(capsys, *train_args(data_dir, tmp_path / "full", "deep_cnn", "--epochs", "3", "--batch-size", "16"))[0] == 0
    )
    assert (
        cli(capsys, *train_args(data_dir, tmp_path / "part", "deep_cnn", "--epochs", "1", "--batch-size", "16"))[0] == 0
    )
    assert cli(capsys, "resume", tmp_path / "part", "--epochs", "3", "--quiet")[0] == 0
    full, part = weights(tmp_path / "full" / "last.pt"), weights(tmp_path / "part" / "last.pt")
    assert all(torch.equal(full[k], part[k]) for k in full)  # bit for bit on CPU
    assert history_without_time(tmp_path / "full") == history_without_time(tmp_path / "part")
    m_full = json.loads((tmp_path / "full" / "metrics.json").read_text())
    m_part = json.loads((tmp_path / "part" / "metrics.json").read_text())
    assert m_full["test_accuracy"] == m_part["test_accuracy"] and m_full["test_loss"] == m_part["test_loss"]


def test_sigterm_saves_and_resume_matches(tmp_path, capsys):
    write_dataset(tmp_path / "data", train_per_class=300)  # epochs long enough to be caught mid-way
    args = train_args(tmp_path / "data", tmp_path / "killed", "deep_cnn", "--epochs", "3")
    env = {**os.environ, "PYTHONUNBUFFERED": "1"}
    proc = subprocess.Popen(
        [sys.executable, "-m", "fmnist", *map(str, args)],
        env=env,
        stdout=subprocess.PIPE,
        stderr=subprocess.PIPE,
        text=True,
    )
    history = tmp_path / "killed" / "history.csv"
    deadline = time.time() + 120
    while time.time() < deadline and proc.poll() is None:
        if history.is_file() and len(history.read_text().splitlines()) >= 2:
            break  # epoch 1 is saved; epoch 2 is running
        time.sleep(0.05)
    proc.send_signal(signal.SIGTERM)
    _, err = proc.communicate(timeout=60)
    assert proc.returncode == 143, err  # 128 + SIGTERM, as a shell reports it
    assert (
        "interrupted during epoch 2" in err and f"fmnist resume {tmp_path / 'killed'}" in err and "Traceback" not in err
    )
    saved = load_checkpoint(tmp_path / "killed" / "last.pt")
    assert saved["epoch"] == 2 and 0 <= saved["partial"]["step"] < 125  # mid-epoch, at a step boundary
    assert f"step {saved['partial']['step']} of epoch 2" in err

    assert cli(capsys, "resume", tmp_path / "killed", "--quiet")[0] == 0
    # That the resumed run equals an uninterrupted one, bit for bit, is checked in-process by
    # test_resumed_run_equals_uninterrupted_run and, mid-epoch, by test_recipes.
    assert [int(h["epoch"]) for h in files.read_csv(tmp_path / "killed" / "history.csv")] == [1, 2, 3]


def test_nan_loss_stops_loudly_and_keeps_the_last_good_checkpoint(data_dir, tmp_path, capsys, register):
    @register
    def nan_after_12():
        return NanAfter(12)

    code, _, err = cli(capsys, *train_args(data_dir, tmp_path / "run", "nan_after_12", "--batch-size", "32"))
    # 270 training images, batch 32: 9 steps per epoch, so step 13 is epoch 2, step 4
    assert code == 1 and "epoch 2, step 4" in err and len(err.strip().splitlines()) == 1
    run = tmp_path / "run"
    assert load_checkpoint(run / "best.pt")["epoch"] == 1
    metrics = json.loads((run / "metrics.json").read_text())
    assert any("NaN" in d and "epoch 2, step 4" in d for d in metrics["diagnostics"])
    assert "epoch 2, step 4" in (run / "report.html").read_text()


def test_divergence_in_a_resumed_run_is_reported_too(data_dir, tmp_path, capsys, register):
    @register
    def nan_after_12():
        return NanAfter(12)  # counts from each process start: the resumed run diverges too

    run = tmp_path / "run"
    assert cli(capsys, *train_args(data_dir, run, "nan_after_12", "--epochs", "1", "--batch-size", "32"))[0] == 0
    assert not (run / "diverged.json").exists()
    code, _, err = cli(capsys, "resume", run, "--epochs", "3", "--quiet")
    # resumed at epoch 2: 9 good steps there, 3 in epoch 3, then NaN at epoch 3, step 4
    assert code == 1 and "epoch 3, step 4" in err
    assert json.loads((run / "diverged.json").read_text()) == {"epoch": 3, "step": 4}
    assert load_checkpoint(run / "best.pt")["epoch"] in (1, 2)
    metrics = json.loads((run / "metrics.json").read_text())
    assert any("epoch 3, step 4" in d for d in metrics["diagnostics"])


def test_a_study_reports_a_diverged_model_and_goes_on(data_dir, tmp_path, capsys, register):
    @register
    def nan_after_12():
        return NanAfter(12)

    @register
    def nan_at_once():
        return NanAfter(0)

    code, out, err = cli(
        capsys,
        "study",
        "--models",
        "nan_after_12",
        "nan_at_once",
        "shallow",
        "--epochs",
        "3",
        "--data-dir",
        data_dir,
        "--no-verify",
        "--out",
        tmp_path / "s",
        "--quiet",
    )
    assert code == 0, err
    summary = json.loads((tmp_path / "s" / "summary.json").read_text())
    # The model that diverged after a good epoch is reported from that epoch; the one that never
    # finished an epoch has no row; the others are trained as usual.
    assert [m["name"] for m in summary["models"]] == ["nan_after_12", "shallow"]
    assert summary["models"][0]["best_epoch"] == 1 and summary["models"][1]["epochs"] == 3
    flags = "\n".join(summary["diagnostics"])
    assert "nan_after_12: loss became NaN or infinite at epoch 2, step 4" in flags
    assert "nan_at_once: loss became NaN or infinite at epoch 1, step 1" in flags
    assert "training stopped because the loss became NaN" in flags  # nan_after_12's own diagnostics
    assert "nan_at_once" in (tmp_path / "s" / "report.md").read_text()
    assert "warning: nan_at_once: loss became NaN" in err


@pytest.fixture
def run_dir(data_dir, tmp_path, capsys):
    assert cli(capsys, *train_args(data_dir, tmp_path / "run", "shallow", "--epochs", "1"))[0] == 0
    return tmp_path / "run"


@pytest.mark.parametrize(
    "damage, message",
    [
        ("missing", "missing checkpoint"),
        ("truncated", "not a readable checkpoint"),
        ("garbage", "not a readable checkpoint"),
        ("foreign", "not an fmnist checkpoint"),
        ("other model", "holds a 'deep_cnn' model"),
        ("no config", "is not a run folder: it has no config.json"),
    ],
)
def test_damaged_runs_are_one_line_errors(run_dir, tmp_path, capsys, damage, message):
    best = run_dir / "best.pt"
    if damage == "missing":
        best.unlink()
    elif damage == "truncated":
        best.write_bytes(best.read_bytes()[:500])
    elif damage == "garbage":
        best.write_bytes(os.urandom(2000))
    elif damage == "foreign":
        torch.save({"state_dict": {"w": torch.zeros(2)}}, best)
    elif damage == "other model":
        state = torch.load(best, weights_only=True)
        state["config"]["model"] = "deep_cnn"
        torch.save(state, best)
    else:
        (run_dir / "config.json").unlink()
    for argv in (["evaluate", run_dir], ["predict", run_dir, run_dir / "curves.png"]):
        code, _, err = cli(capsys, *argv)
        assert code == 1 and message in err and len(err.strip().splitlines()) == 1, (argv, err)


def test_weights_of_the_wrong_shape_are_refused(run_dir, capsys):
    state = torch.load(run_dir / "best.pt", weights_only=True)
    state["model"] = {k: v[:1] for k, v in state["model"].items()}
    torch.save(state, run_dir / "best.pt")
    code, _, err = cli(capsys, "evaluate", run_dir)
    assert code == 1 and "does not fit model 'shallow'" in err


def test_resume_refuses_to_change_the_recipe(run_dir, capsys):
    code, _, err = cli(capsys, "resume", run_dir, "--lr", "0.1")  # refused by argparse: resume has no --lr
    assert code == 2 and "unrecognized arguments: --lr 0.1" in err
    with pytest.raises(UsageError, match="cannot change lr when resuming"):
        resume_run(run_dir, {"lr": 0.1})  # and by the job itself, for callers from Python


def test_crash_during_a_checkpoint_write_keeps_the_old_file(run_dir, monkeypatch):
    before = (run_dir / "best.pt").read_bytes()

    def broken_save(obj, path):
        with open(path, "wb") as f:
            f.write(b"half a checkpoint")
        raise OSError(28, "No space left on device")

    monkeypatch.setattr(checkpoint.torch, "save", broken_save)
    with pytest.raises(OSError):
        save_checkpoint(run_dir / "best.pt", {"model": {}})
    assert (run_dir / "best.pt").read_bytes() == before
    assert not [p for p in run_dir.iterdir() if p.name.endswith(".tmp")]


@pytest.mark.parametrize(
    "argv, code, message",
    [
        (["shallow", "--out", "{tmp}/file/sub"], 1, "cannot write to output folder"),
        (["shallow", "--batch-size", "100000"], 2, "larger than the"),
        (["shallow", "--config", "{tmp}/bad.toml"], 2, "unknown config key 'learning_rate'"),
    ],
)
def test_command_errors(data_dir, tmp_path, capsys, argv, code, message):
    (tmp_path / "file").write_text("x")
    (tmp_path / "bad.toml").write_text("learning_rate = 0.1\n")
    argv = [a.format(tmp=tmp_path) for a in argv]
    if "--out" not in argv:
        argv += ["--out", str(tmp_path / "o")]
    got, _, err = cli(capsys, "train", "--data-dir", data_dir, "--no-verify", "--quiet", *argv)
    assert got == code and message in err and len(err.strip().splitlines()) == 1


def test_debug_shows_the_traceback(capsys):
    code, _, err = cli(capsys, "evaluate", "/nonexistent/run", "--debug")
    assert (
        code == 1 and "Traceback" in err and err.strip().endswith("does not exist (give a run folder or an .onnx file)")
    )


@pytest.mark.parametrize(
    "problem, message", [("labels out of range", "outside 0-9"), ("wrong dimensions", "not N×28×28")]
)
def test_bad_idx_content(tmp_path, capsys, problem, message):
    import gzip

    import numpy as np

    from fmnist.data.idx import encode_idx

    write_dataset(tmp_path / "d")
    if problem == "labels out of range":
        blob = encode_idx(np.full(200, 11, np.uint8))
        (tmp_path / "d" / "train-labels-idx1-ubyte.gz").write_bytes(gzip.compress(blob))
    else:
        blob = encode_idx(np.zeros((200, 27, 29), np.uint8))
        (tmp_path / "d" / "train-images-idx3-ubyte.gz").write_bytes(gzip.compress(blob))
    code, _, err = cli(capsys, "data", "--data-dir", tmp_path / "d", "--no-verify")
    assert code == 1 and message in err
