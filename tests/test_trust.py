"""A run folder reports its own run's numbers: overwriting starts clean, a run that cannot start
leaves nothing, a resume continues only its own run (and defines what "train longer" does), and
the same config and seed give the same weights from the CLI and from Python."""

import json
import os
import subprocess
import sys

import numpy as np
import pytest
import torch
from conftest import NanAfter, cli, train_args, write_dataset
from PIL import Image
from torch.optim.optimizer import register_optimizer_step_pre_hook

from fmnist import CLASSES, TrainConfig, build_model, files, fit, load_fashion_mnist, predict_logits, stratified_split
from fmnist.data.images import load_image
from fmnist.run.checkpoint import load_checkpoint
from fmnist.run.folder import RunFolder


@pytest.fixture
def data_dir(tmp_path):
    write_dataset(tmp_path / "data", train_per_class=30)
    return tmp_path / "data"


def read(path):
    return json.loads(path.read_text())


def test_overwrite_starts_from_an_empty_folder(data_dir, tmp_path, capsys, register):
    @register
    def nan_at_once():
        return NanAfter(0)  # diverges at its first step: no epoch, so no checkpoint of its own

    run = tmp_path / "run"
    assert cli(capsys, *train_args(data_dir, run, "shallow", "--epochs", "1"))[0] == 0
    assert (run / "best.pt").is_file() and (run / "metrics.json").is_file()
    code, _, err = cli(capsys, *train_args(data_dir, run, "nan_at_once", "--overwrite"))
    assert code == 1 and "epoch 1, step 1" in err
    # Nothing of the shallow run is left to be evaluated or reported as the new run's.
    assert not (run / "best.pt").exists() and not (run / "metrics.json").exists()
    assert not (run / "history.csv").exists() and not (run / "report.html").exists()
    assert read(run / "config.json")["model"] == "nan_at_once"


@pytest.mark.parametrize(
    "argv, code",
    [
        (["shallow", "--whiten"], 2),  # no convolution to whiten
        (["resnet_wide", "--whiten"], 2),  # a stem too wide to whiten
        (["shallow", "--batch-size", "100000"], 2),
        (["shallow", "--device", "cuda"], 1),
        (["shallow", "--data-dir", "{tmp}/nowhere"], 1),
    ],
)
def test_a_run_that_cannot_start_leaves_no_folder(data_dir, tmp_path, capsys, argv, code):
    argv = [a.format(tmp=tmp_path) for a in argv]
    args = ["train", "--out", tmp_path / "run", "--quiet", "--no-verify", *argv]
    if "--data-dir" not in argv:
        args += ["--data-dir", data_dir]
    got, _, err = cli(capsys, *args)
    assert got == code and len(err.strip().splitlines()) == 1, err
    assert not (tmp_path / "run").exists()


def test_a_stale_checkpoint_is_not_resumed_under_another_config(data_dir, tmp_path, capsys):
    run = tmp_path / "run"
    assert cli(capsys, *train_args(data_dir, run, "shallow", "--epochs", "1", "--lr", "0.001"))[0] == 0
    config = read(run / "config.json")
    files.write_json(run / "config.json", {**config, "lr": 0.1})  # as if last.pt came from another run
    code, _, err = cli(capsys, "resume", run, "--epochs", "2", "--quiet")
    assert code == 1 and "trained with lr=0.001" in err and "not this run's checkpoint" in err
    assert read(run / "config.json")["lr"] == 0.1 and read(run / "config.json")["epochs"] == 1


COSINE = ["deep_cnn", "--schedule", "cosine", "--lr", "0.01", "--optimizer", "sgd", "--batch-size", "30"]


def test_a_longer_resume_runs_a_new_schedule_cycle_over_the_added_epochs(data_dir, tmp_path, capsys):
    short, longer = tmp_path / "short", tmp_path / "longer"
    assert cli(capsys, *train_args(data_dir, short, *COSINE, "--epochs", "2"))[0] == 0
    assert cli(capsys, *train_args(data_dir, longer, *COSINE, "--epochs", "2"))[0] == 0
    assert cli(capsys, "resume", longer, "--epochs", "4", "--quiet")[0] == 0
    assert read(longer / "config.json")["schedule_restarts"] == [2]
    lrs = [row["lr"] for row in files.read_csv(longer / "history.csv")]
    first = [row["lr"] for row in files.read_csv(short / "history.csv")]
    # Epochs 3-4 repeat the 2-epoch schedule: half-way down the cosine, then at zero; a schedule
    # stretched to 4 epochs would have stood at 0.0015 after epoch 3 instead.
    assert lrs[:2] == first and lrs[2:] == pytest.approx(first)
    assert lrs[2] == pytest.approx(0.005) and lrs[3] == pytest.approx(0.0, abs=1e-12)
    for shorter in ("3", "2"):  # 2: not past the restart either, once an internal message
        code, _, err = cli(capsys, "resume", longer, "--epochs", shorter, "--quiet")
        assert code == 2 and "can only make the run longer than its 4 epochs" in err, err


def test_the_added_cycle_starts_at_its_own_rate(data_dir, tmp_path, capsys):
    rates = []
    hook = register_optimizer_step_pre_hook(lambda opt, args, kwargs: rates.append(opt.param_groups[0]["lr"]))
    try:
        assert cli(capsys, *train_args(data_dir, tmp_path / "run", *COSINE, "--epochs", "1"))[0] == 0
        first = list(rates)
        rates.clear()
        assert cli(capsys, "resume", tmp_path / "run", "--epochs", "2", "--quiet")[0] == 0
    finally:
        hook.remove()
    # Every step of the added epoch at the rate of the same step of the first: 0.01 at its first
    # step, not the 0 that the finished schedule had left in the optimizer.
    assert rates[0] == pytest.approx(0.01) and rates == pytest.approx(first)


def test_the_same_config_gives_the_same_weights_from_the_cli_and_from_python(data_dir, tmp_path, capsys):
    args = ["--epochs", "2", "--batch-size", "16", "--seed", "3"]
    assert cli(capsys, *train_args(data_dir, tmp_path / "cli", "deep_cnn", *args))[0] == 0  # with dropout
    data = load_fashion_mnist(str(data_dir), verify=False, progress=False)
    cfg = TrainConfig(model="deep_cnn", epochs=2, batch_size=16, seed=3, quiet=True)
    train_idx, val_idx = stratified_split(data.train_labels, cfg.val_split, cfg.seed)
    x, y = data.train_images, data.train_labels
    trained = []
    for draws in (1, 1000):
        model = build_model(cfg)
        torch.rand(draws)  # whatever the caller draws between building and training
        fit(model, (x[train_idx], y[train_idx]), (x[val_idx], y[val_idx]), cfg)
        trained.append(model.state_dict())
    from_cli = load_checkpoint(tmp_path / "cli" / "last.pt")["model"]
    for k in from_cli:
        assert torch.equal(trained[0][k], trained[1][k]) and torch.equal(trained[0][k], from_cli[k]), k


@pytest.mark.parametrize("mask, mode", [(0o022, 0o644), (0o077, 0o600), (0o002, 0o664)])
def test_files_get_the_usual_mode_under_the_umask(data_dir, tmp_path, capsys, mask, mode):
    old = os.umask(mask)
    try:
        assert cli(capsys, *train_args(data_dir, tmp_path / "run", "shallow", "--epochs", "1"))[0] == 0
        files.write_json(tmp_path / "x.json", {})
    finally:
        os.umask(old)
    written = [p for p in (tmp_path / "run").iterdir()] + [tmp_path / "x.json"]
    assert {p.name: oct(p.stat().st_mode & 0o777) for p in written} == {p.name: oct(mode) for p in written}


def test_a_rewritten_file_keeps_its_mode(tmp_path):
    path = tmp_path / "shared.json"
    files.write_json(path, {"a": 1})
    os.chmod(path, 0o640)
    files.write_json(path, {"a": 2})
    assert path.stat().st_mode & 0o777 == 0o640 and read(path) == {"a": 2}


def test_in_a_log_training_prints_one_line_per_epoch_and_no_bars(data_dir, tmp_path):
    args = train_args(data_dir, tmp_path / "run", "shallow", "--epochs", "3", "--batch-size", "8")
    args.remove("--quiet")
    # Bytes, not text: text mode would turn the carriage returns of a progress bar into newlines.
    proc = subprocess.run([sys.executable, "-m", "fmnist", *map(str, args)], capture_output=True, timeout=120)
    out, err = proc.stdout.decode(), proc.stderr.decode()
    assert proc.returncode == 0, err
    assert "\r" not in out + err
    epoch_lines = [line for line in out.splitlines() if " epoch " in line and "val loss" in line]
    assert [line.split(":")[0] for line in epoch_lines] == [f"shallow epoch {i}/3" for i in (1, 2, 3)]


def test_predict_uses_the_test_time_augmentation_the_run_was_tested_with(data_dir, tmp_path, capsys):
    run = tmp_path / "run"
    assert cli(capsys, *train_args(data_dir, run, "simple_cnn", "--epochs", "1", "--tta", "--tta-shift", "1"))[0] == 0
    image = tmp_path / "x.png"
    Image.fromarray(np.tri(20, 12, dtype=np.uint8) * 255).save(image)  # lopsided, so mirrors matter
    code, out, _ = cli(capsys, "predict", run, image, "--json", "--top-k", "10")
    got = {p["label"]: p["probability"] for p in json.loads(out)[0]["predictions"]}
    model, _ = RunFolder(run).load_model()[:2]
    x = load_image(image)[None]
    t = json.loads((run / "metrics.json").read_text())["calibration"]["temperature"]  # predict shows calibrated
    with_tta = (predict_logits(model, x, tta=True, tta_shift=1) / t).softmax(1)[0]
    plain = (predict_logits(model, x) / t).softmax(1)[0]
    assert code == 0 and not torch.allclose(with_tta, plain, atol=1e-4)
    assert [got[c] for c in CLASSES] == pytest.approx(with_tta.tolist(), abs=1e-6)
