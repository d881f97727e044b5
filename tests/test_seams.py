"""The joins between commands: a lengthened run stays resumable whenever it stops, stops are not
errors, the run folder's owner removes only what fmnist wrote, flags that read data are obeyed
everywhere, and the server checks everything before it listens."""

import dataclasses
import json
import os
import shutil
import signal
import socket
import subprocess
import sys
import time
from pathlib import Path

import numpy as np
import pytest
import torch
from conftest import cli, train_args, write_dataset

from fmnist.errors import FmnistError
from fmnist.inference.onnx_export import sha256_of
from fmnist.inference.predictor import load_predictor
from fmnist.jobs import bench
from fmnist.run import folder as run_folder
from fmnist.run import written
from fmnist.run.checkpoint import load_checkpoint
from fmnist.run.folder import RunFolder
from fmnist.run.study import StudyFolder
from fmnist.stops import Diverged, Interrupted, Pruned
from fmnist.training.config import TrainConfig

ROOT = Path(__file__).resolve().parents[1]


@pytest.fixture(scope="module")
def data_dir(tmp_path_factory):
    root = tmp_path_factory.mktemp("seams-data")
    write_dataset(root, train_per_class=20, test_per_class=5)
    return root


def epochs_of(run: Path) -> tuple[int, int, int]:
    """config.json's epochs, last.pt's config epochs, and the epochs in history.csv."""
    cfg = json.loads((run / "config.json").read_text())["epochs"]
    last = load_checkpoint(run / "last.pt")
    return cfg, last["config"]["epochs"], len((run / "history.csv").read_text().splitlines()) - 1


def test_stops_are_not_user_errors():
    for stop in (Interrupted(signal.SIGTERM), Diverged(1, 2), Pruned(1)):
        assert not isinstance(stop, FmnistError)
    assert Interrupted(signal.SIGTERM).exit_code == 143 and Interrupted(signal.SIGINT).exit_code == 130


def test_a_run_that_stopped_at_its_target_is_not_lengthened_and_stays_resumable(data_dir, tmp_path, capsys):
    run = tmp_path / "t"
    assert cli(capsys, *train_args(data_dir, run, "shallow", "--epochs", "2", "--target-accuracy", "0.01"))[0] == 0
    code, _, err = cli(capsys, "resume", run, "--epochs", "4", "--quiet")
    assert code == 2 and "stopped at its target accuracy" in err
    code, _, err = cli(capsys, "resume", run, "--quiet")
    assert code == 0, err
    assert epochs_of(run) == (2, 2, 1)


class Killed(BaseException):
    """What a kill -9 at that point leaves: the files on disk, nothing more run."""


@pytest.mark.parametrize(
    "point", ["before the first checkpoint", "between last.pt and config.json", "after the first checkpoint"]
)
def test_a_lengthening_resume_killed_anywhere_leaves_a_resumable_run(point, data_dir, tmp_path, capsys, monkeypatch):
    run = tmp_path / "r"
    assert cli(capsys, *train_args(data_dir, run, "shallow", "--epochs", "2", "--batch-size", "16"))[0] == 0
    real_save, real_write = RunFolder.save, written.write_json
    calls = []

    def save(self, state, history, improved=False):
        calls.append(1)
        if point == "before the first checkpoint" or (point == "after the first checkpoint" and len(calls) == 2):
            raise Killed
        real_save(self, state, history, improved)

    def write_json(path, obj):
        if point == "between last.pt and config.json" and Path(path).name == "config.json":
            raise Killed
        real_write(path, obj)

    monkeypatch.setattr(RunFolder, "save", save)
    monkeypatch.setattr(written, "write_json", write_json)
    with pytest.raises(Killed):
        cli(capsys, "resume", run, "--epochs", "4", "--quiet")
    monkeypatch.undo()
    capsys.readouterr()
    code, _, err = cli(capsys, "resume", run, "--quiet")
    assert code == 0, err
    # Lengthened where a checkpoint of the longer run was saved; as it was where none was.
    expected = (2, 2, 2) if point == "before the first checkpoint" else (4, 4, 4)
    assert epochs_of(run) == expected
    assert cli(capsys, "resume", run, "--epochs", "5", "--quiet")[0] == 0  # and it can still be lengthened
    assert epochs_of(run) == (5, 5, 5)


def start(*args) -> subprocess.Popen:
    env = {**os.environ, "PYTHONUNBUFFERED": "1"}
    return subprocess.Popen(
        [sys.executable, "-m", "fmnist", *map(str, args)],
        stdout=subprocess.PIPE,
        stderr=subprocess.PIPE,
        text=True,
        env=env,
    )


def wait_for(path: Path, lines: int, proc: subprocess.Popen, timeout: float = 120) -> None:
    deadline = time.time() + timeout
    while time.time() < deadline and proc.poll() is None:
        if path.is_file() and len(path.read_text().splitlines()) >= lines:
            return
        time.sleep(0.05)
    raise AssertionError(f"{path} never reached {lines} lines")


@pytest.mark.parametrize("sig", [signal.SIGTERM, signal.SIGKILL])
def test_a_real_signal_in_a_lengthening_resume_leaves_a_resumable_run(sig, tmp_path, capsys):
    write_dataset(tmp_path / "slow", train_per_class=150)
    run = tmp_path / "s"
    assert cli(capsys, *train_args(tmp_path / "slow", run, "simple_cnn", "--epochs", "1", "--batch-size", "16"))[0] == 0
    proc = start("resume", run, "--epochs", "4", "--quiet")
    wait_for(run / "history.csv", 1 + 2, proc)  # the first added epoch is saved; now mid-way through another
    proc.send_signal(sig)
    _, err = proc.communicate(timeout=60)
    if sig == signal.SIGTERM:
        assert proc.returncode == 143 and "interrupted during epoch" in err and "SIGTERM" in err, err
        assert "Traceback" not in err
    else:
        assert proc.returncode == -signal.SIGKILL
    code, _, err = cli(capsys, "resume", run, "--quiet")
    assert code == 0, err
    assert epochs_of(run) == (4, 4, 4)


def test_overwrite_removes_only_what_fmnist_recorded(data_dir, tmp_path, capsys):
    run = tmp_path / "o"
    assert cli(capsys, *train_args(data_dir, run, "shallow", "--epochs", "1"))[0] == 0
    (run / "notes.txt").write_text("mine")
    (run / "mine").mkdir()
    (run / "mine" / "report.md").write_text("my own report")
    assert cli(capsys, *train_args(data_dir, run, "shallow", "--epochs", "1", "--overwrite"))[0] == 0
    assert (run / "notes.txt").read_text() == "mine" and (run / "mine" / "report.md").is_file()
    assert (run / "best.pt").is_file()
    # A file of the user's that a run would write over: refused, nothing touched.
    (run / "report.md").write_text("my notes")
    stamp = (run / "best.pt").stat().st_mtime_ns
    code, _, err = cli(capsys, *train_args(data_dir, run, "shallow", "--epochs", "1", "--overwrite"))
    assert code == 1 and "report.md, which fmnist did not write" in err
    assert (run / "best.pt").stat().st_mtime_ns == stamp
    # A folder fmnist never recorded writing in: refused.
    other = tmp_path / "foreign"
    other.mkdir()
    (other / "config.json").write_text("{}")
    code, _, err = cli(capsys, *train_args(data_dir, other, "shallow", "--epochs", "1", "--overwrite"))
    assert code == 1 and "did not record writing" in err and (other / "config.json").read_text() == "{}"


def test_export_refuses_to_write_over_the_runs_own_files(data_dir, tmp_path, capsys):
    run = tmp_path / "e"
    assert cli(capsys, *train_args(data_dir, run, "shallow", "--epochs", "1"))[0] == 0
    before = {name: sha256_of(run / name) for name in ("best.pt", "config.json")}
    for name in before:
        code, _, err = cli(capsys, "export", run, "--out", run / name, "--data-dir", data_dir, "--no-verify")
        assert code == 1 and "one of the run's own files" in err
    assert {name: sha256_of(run / name) for name in before} == before


def test_evaluate_and_export_read_the_data_the_flags_name(tmp_path, capsys):
    write_dataset(tmp_path / "gone")
    run = tmp_path / "moved"
    assert cli(capsys, *train_args(tmp_path / "gone", run, "shallow", "--epochs", "1"))[0] == 0
    shutil.copytree(tmp_path / "gone", tmp_path / "here")
    shutil.rmtree(tmp_path / "gone")  # the run came from another machine: its data folder is not here
    code, _, err = cli(capsys, "evaluate", run)
    assert code == 1 and "does not exist" in err and len(err.strip().splitlines()) == 1
    code, out, err = cli(capsys, "evaluate", run, "--data-dir", tmp_path / "here", "--no-verify", raw=True)
    assert code == 0 and "test accuracy" in out, err
    assert "warning: --no-verify" in err  # it says so
    code, _, err = cli(capsys, "export", run, "--data-dir", tmp_path / "here", "--no-verify")
    assert code == 0 and (run / "model.onnx").is_file(), err


def test_train_with_a_config_file_that_names_the_model(data_dir, tmp_path, capsys):
    (tmp_path / "f.toml").write_text('model = "simple_cnn"\nepochs = 1\n')
    code, _, err = cli(capsys, *train_args(data_dir, tmp_path / "c", "--config", tmp_path / "f.toml"))
    assert code == 0, err
    assert json.loads((tmp_path / "c" / "config.json").read_text())["model"] == "simple_cnn"
    code, _, err = cli(capsys, *train_args(data_dir, tmp_path / "n"))
    assert code == 2 and "give a MODEL" in err


def test_a_bare_serve_finds_the_newest_study(data_dir, tmp_path, capsys, monkeypatch):
    from fmnist.cli.serve import serve_sources

    monkeypatch.chdir(tmp_path)
    with pytest.raises(FmnistError, match="nothing to serve"):
        serve_sources([])
    code, _, err = cli(
        capsys,
        "study",
        "--models",
        "shallow",
        "simple_cnn",
        "--epochs",
        "1",
        "--data-dir",
        data_dir,
        "--no-verify",
        "--quiet",
        "--device",
        "cpu",
    )
    assert code == 0, err
    (study,) = Path("runs").glob("study-*")
    assert serve_sources([]) == [study / "shallow", study / "simple_cnn"]
    assert serve_sources([str(study)]) == [study / "shallow", study / "simple_cnn"]  # a study folder: its runs


def serve_fails(*args, timeout=60) -> tuple[int, str, float]:
    from conftest import free_port

    begun = time.time()
    proc = subprocess.run(
        [sys.executable, "-m", "fmnist", "serve", *map(str, args), "--port", str(free_port())],
        capture_output=True,
        text=True,
        timeout=timeout,
    )
    return proc.returncode, proc.stderr, time.time() - begun


def test_serve_checks_every_model_before_it_listens(data_dir, tmp_path, capsys):
    run = tmp_path / "ok"
    assert cli(capsys, *train_args(data_dir, run, "shallow", "--epochs", "1"))[0] == 0
    (tmp_path / "junk").mkdir()
    (tmp_path / "junk" / "x.txt").write_text("x")
    (tmp_path / "bad.onnx").write_bytes(b"not onnx")
    shutil.copytree(run, tmp_path / "nobest")
    (tmp_path / "nobest" / "best.pt").unlink()
    # As a process: one line and exit 1 within seconds, never listening.
    code, err, seconds = serve_fails(run, tmp_path / "bad.onnx")
    assert code == 1 and "not a readable ONNX model" in err and "Traceback" not in err, err
    assert len(err.strip().splitlines()) == 1 and seconds < 30
    # Every other bad argument fails the same way before the port opens (in-process: quicker; the
    # port is taken, so a server that did not fail first would fail to bind, not hang the test).
    with socket.socket() as taken:
        taken.bind(("127.0.0.1", 0))
        taken.listen()
        port = str(taken.getsockname()[1])
        for args, message in [
            ((tmp_path / "missing",), "does not exist"),
            ((tmp_path / "junk",), "not a run folder"),
            ((tmp_path / "nobest",), "missing checkpoint"),
        ]:
            code, _, err = cli(capsys, "serve", *args, "--port", port)
            assert code == 1 and message in err and len(err.strip().splitlines()) == 1, err


def fixed_batch_onnx(run: Path, path: Path, batch: int) -> None:
    model, _ = RunFolder(run).load_model()[:2]
    program = torch.onnx.export(
        model.eval(),
        (torch.rand(batch, 1, 28, 28),),
        input_names=["images"],
        output_names=["logits"],
        dynamo=True,
        verbose=False,
    )
    program.save(str(path))


def test_a_foreign_onnx_file_with_a_fixed_batch_runs_at_that_size(data_dir, tmp_path, capsys):
    run = tmp_path / "f"
    assert cli(capsys, *train_args(data_dir, run, "simple_cnn", "--epochs", "1"))[0] == 0
    fixed_batch_onnx(run, tmp_path / "fixed.onnx", 4)
    images = torch.rand(10, 1, 28, 28)
    want = load_predictor(run, "torch").logits(images)
    got = load_predictor(tmp_path / "fixed.onnx").logits(images)  # 10 images: batches of 4, 4 and 2 padded
    assert got.shape == (10, 10) and torch.allclose(got, want, atol=1e-4)
    code, out, err = cli(capsys, "evaluate", tmp_path / "fixed.onnx", "--data-dir", data_dir, "--no-verify")
    assert code == 0 and "test accuracy" in out, err
    # The README's example: --backend names how run folders run; .onnx files run on ONNX Runtime.
    from fmnist.serve import load_models

    served = load_models([run, tmp_path / "fixed.onnx"], "torch")
    assert [p.backend for p in served.values()] == ["torch", "onnx"]


def test_a_sweep_report_takes_no_test_figure_before_the_sweep_ends(data_dir, tmp_path, capsys):
    from fmnist.sweep import study as sweep_study
    from fmnist.sweep import worker
    from fmnist.sweep.space import parse_space

    space = parse_space(
        {"fixed": {"model": "shallow", "epochs": 1}, "search": {"lr": {"low": 1e-3, "high": 1e-2, "log": True}}}
    )
    folder = tmp_path / "sweeps" / "w"
    study = sweep_study.open_sweep("w", folder, None, space, "random", "none", 0)
    study.set_user_attr("trials", 3)  # what `fmnist sweep run w --trials 3` records
    where = {"device": "cpu", "data_dir": str(data_dir), "verify": False}
    assert worker.run_worker(worker.Sweep(study, space, folder, 2, where=where, quiet=True)) == 2
    code, out, err = cli(
        capsys, "sweep", "report", "w", "--dir", tmp_path / "sweeps", "--data-dir", data_dir, "--no-verify"
    )
    assert code == 0 and "no test figure yet" in out, err
    assert not list(folder.glob("trial-*/metrics.json"))
    assert worker.run_worker(worker.Sweep(study, space, folder, 3, where=where, quiet=True)) == 1
    code, out, err = cli(
        capsys, "sweep", "report", "w", "--dir", tmp_path / "sweeps", "--data-dir", data_dir, "--no-verify"
    )
    assert code == 0 and "test accuracy" in out, err
    tested = [p.parent.name for p in folder.glob("trial-*/metrics.json")]
    assert tested == [f"trial-{study.best_trial.number:04d}"]


def test_a_sweep_worker_asked_to_stop_leaves_its_trial_to_be_retried(tmp_path, capsys):
    write_dataset(tmp_path / "slow", train_per_class=150)
    space = tmp_path / "space.toml"
    space.write_text(
        '[fixed]\nmodel = "simple_cnn"\nepochs = 3\nbatch_size = 16\n'
        "[search]\nlr = { low = 0.001, high = 0.01, log = true }\n"
    )
    args = [
        "sweep",
        "run",
        "t",
        "--dir",
        tmp_path / "sweeps",
        "--data-dir",
        tmp_path / "slow",
        "--no-verify",
        "--device",
        "cpu",
        "--quiet",
        "--space",
        space,
        "--trials",
        "2",
        "--pruner",
        "none",
    ]
    proc = start(*args)
    wait_for(tmp_path / "sweeps" / "t" / "trial-0000" / "history.csv", 2, proc)  # mid-trial
    proc.send_signal(signal.SIGTERM)
    _, err = proc.communicate(timeout=60)
    assert proc.returncode == 143 and "Traceback" not in err, err
    assert not (tmp_path / "sweeps" / "t" / "trial-0001").exists()  # it started no other trial
    code, out, err = cli(capsys, *args)
    assert code == 0, err
    import optuna

    study = optuna.load_study(
        study_name="t",
        storage=optuna.storages.journal.JournalStorage(
            optuna.storages.journal.JournalFileBackend(str(tmp_path / "sweeps" / "t" / "journal.log"))
        ),
    )
    states = [t.state.name for t in study.trials]
    assert states.count("COMPLETE") == 2 and states.count("FAIL") == 1
    retry = next(t for t in study.trials if t.user_attrs.get("retry_of") == 0)
    assert retry.params == study.trials[0].params and "asked to stop" in study.trials[0].user_attrs["failed"]


def test_make_clean_keeps_trained_runs(tmp_path):
    shutil.copy(ROOT / "Makefile", tmp_path / "Makefile")
    for d in ("runs/study/shallow", "sweeps/s", ".venv/bin", "build"):
        (tmp_path / d).mkdir(parents=True)
    (tmp_path / "runs" / "study" / "shallow" / "best.pt").write_bytes(b"weights")
    subprocess.run(["make", "clean"], cwd=tmp_path, check=True, capture_output=True)
    assert (tmp_path / "runs" / "study" / "shallow" / "best.pt").is_file() and (tmp_path / "sweeps" / "s").is_dir()
    assert not (tmp_path / ".venv").exists() and not (tmp_path / "build").exists()


def test_bench_measures_through_the_loader_with_each_models_own_peak(monkeypatch):
    built = []
    real = bench.model_predictor
    monkeypatch.setattr(bench, "model_predictor", lambda *a, **k: built.append(a[2]) or real(*a, **k))
    predictors = bench.predictors_for(TrainConfig(model="shallow"), ["torch", "onnx"], torch.device("cpu"))
    assert built == ["torch", "onnx"] and [p.backend for p in predictors.values()] == ["torch", "onnx"]
    if not bench.reset_peak_rss():
        pytest.fail("this Linux cannot reset the peak resident memory (/proc/self/clear_refs)")
    base = bench.peak_rss_mb()
    big = np.ones(400 * 1024 * 1024 // 8)  # 400 MB, touched
    assert bench.peak_rss_mb() > base + 350
    del big
    assert bench.reset_peak_rss() and bench.peak_rss_mb() < base + 100  # a new peak: the next model's alone


def test_study_folder_is_not_a_run(tmp_path):
    study = StudyFolder(tmp_path / "s")
    study.prepare(overwrite=False)
    study.write_json(StudyFolder.SUMMARY, {"models": []})
    with pytest.raises(FmnistError, match="not a run folder.*a study's folder"):
        RunFolder(study.path).require()
    assert dataclasses.is_dataclass(run_folder.TrainConfig)
