"""Sweeps: search spaces and their errors, reproducible proposals, pruning, several workers on one
journal file or one PostgreSQL database with exactly the trials asked for, a killed worker's trial
retried, and a report that evaluates the test set once, for the best trial alone."""

import json
import signal
import subprocess
import sys
import time
from pathlib import Path

import optuna
import pytest
from conftest import cli, write_dataset
from optuna.trial import TrialState

from fmnist.errors import UsageError
from fmnist.sweep import study as sweep_study
from fmnist.sweep import worker
from fmnist.sweep.space import parse_space, read_space
from fmnist.training.config import HYPER, TrainConfig

SPACE = """
[fixed]
model = "shallow"
epochs = {epochs}
[search]
lr = {{ low = 0.0003, high = 0.03, log = true }}
batch_size = {{ choices = [16, 32] }}
"""


@pytest.fixture(scope="module")
def data_dir(tmp_path_factory):
    root = tmp_path_factory.mktemp("sweep-data")
    write_dataset(root, train_per_class=20, test_per_class=5)
    return root


def space_file(tmp_path, epochs=2, text=SPACE):
    path = tmp_path / f"space-{epochs}.toml"
    path.write_text(text.format(epochs=epochs))
    return path


def sweep_args(name, tmp_path, data_dir, *extra):
    return [
        "sweep",
        "run",
        name,
        "--dir",
        tmp_path / "sweeps",
        "--data-dir",
        data_dir,
        "--no-verify",
        "--device",
        "cpu",
        "--quiet",
        *extra,
    ]


def load(name, tmp_path, storage=None):
    return optuna.load_study(
        study_name=name,
        storage=storage
        or optuna.storages.journal.JournalStorage(
            optuna.storages.journal.JournalFileBackend(str(tmp_path / "sweeps" / name / "journal.log"))
        ),
    )


@pytest.mark.parametrize(
    "text, message",
    [
        ("[search]\nlearning_rate = { low = 0.1, high = 1.0 }\n", "unknown training setting 'learning_rate'"),
        ("[search]\nlr = { low = 0.1, high = 0.1 }\n", "empty range, low 0.1 is not below high 0.1"),
        ("[search]\nlr = { low = 0.0, high = 0.1, log = true }\n", "a log range needs positive bounds"),
        ("[search]\nepochs = { low = 1.5, high = 3 }\n", "search.epochs.low must be an int"),
        ("[search]\nbatch_size = { choices = [] }\n", "choices must be a non-empty list"),
        ("[search]\nbatch_size = { choices = ['big'] }\n", "'batch_size' must be int"),
        ("[fixed]\nlr = 0.1\n[search]\nlr = { low = 0.01, high = 0.1 }\n", "'lr' is both fixed and searched"),
        ("[fixed]\nmodel = 'shallow'\n", "needs a [search] table"),
        ("[fixed]\ndevice = 'cpu'\n[search]\nlr = { low = 0.01, high = 0.1 }\n", "unknown training setting 'device'"),
        ("[search]\nwarmup = { low = 0.5, high = 1.5 }\n", "warmup must lie in [0, 1]"),
        ("[search]\nmembers = { choices = [1, 2] }\n", "unknown training setting 'members'"),  # a trial: one network
    ],
)
def test_bad_spaces_are_one_line_and_write_nothing(text, message, tmp_path, data_dir, capsys):
    path = tmp_path / "bad.toml"
    path.write_text(text)
    code, _, err = cli(capsys, *sweep_args("s", tmp_path, data_dir, "--space", path))
    assert code == 2 and message in err and len(err.strip().splitlines()) == 1, err
    assert not (tmp_path / "sweeps").exists()


def test_shipped_spaces_read_and_a_grid_needs_steps():
    for name in ("fast", "shallow", "best"):
        space = read_space(name)
        assert space.search and set(space.fixed) | {p.name for p in space.search} <= set(TrainConfig.fields_of(HYPER))
        assert space.config({p.name: p.choices[0] if p.choices else p.low for p in space.search}).model
    grid = parse_space(
        {"search": {"warmup": {"low": 0.0, "high": 0.3, "step": 0.1}, "batch_size": {"choices": [64, 128]}}}
    )
    assert [p.grid() for p in grid.search] == [[0.0, 0.1, 0.2, 0.3], [64, 128]]
    with pytest.raises(UsageError, match="a grid needs choices or a step"):
        parse_space({"search": {"lr": {"low": 0.01, "high": 0.1}}}).search[0].grid()


def test_a_sequential_sweep_with_the_same_seed_proposes_the_same_parameters(tmp_path, data_dir, capsys):
    path = space_file(tmp_path)
    proposals = {}
    for name, seed in (("a", 0), ("b", 0), ("c", 1)):
        assert (
            cli(capsys, *sweep_args(name, tmp_path, data_dir, "--space", path, "--trials", "4", "--seed", str(seed)))[0]
            == 0
        )
        proposals[name] = [t.params for t in load(name, tmp_path).trials]
    assert proposals["a"] == proposals["b"] and proposals["a"] != proposals["c"]
    attrs = load("a", tmp_path).user_attrs
    assert attrs["sampler"]["name"] == "TPESampler" and attrs["sampler"]["seed"] == 0
    assert attrs["optuna"] == optuna.__version__ and attrs["space"]["search"]["lr"] == {
        "low": 0.0003,
        "high": 0.03,
        "log": True,
    }


def test_a_sweep_continues_only_with_its_own_space(tmp_path, data_dir, capsys):
    assert (
        cli(capsys, *sweep_args("s", tmp_path, data_dir, "--space", space_file(tmp_path, 2), "--trials", "2"))[0] == 0
    )
    journal = tmp_path / "sweeps" / "s" / "journal.log"
    before = journal.read_bytes()
    code, _, err = cli(
        capsys, *sweep_args("s", tmp_path, data_dir, "--space", space_file(tmp_path, 3), "--trials", "3")
    )
    assert code == 2 and "sweep 's' exists with another space" in err and len(err.strip().splitlines()) == 1
    assert journal.read_bytes() == before  # nothing written to the study
    # The same space continues it to the new total.
    assert (
        cli(capsys, *sweep_args("s", tmp_path, data_dir, "--space", space_file(tmp_path, 2), "--trials", "3"))[0] == 0
    )
    assert len(load("s", tmp_path).trials) == 3


def test_an_unreachable_database_is_refused_within_seconds(tmp_path, data_dir, capsys):
    for url in ("postgresql://fmnist@127.0.0.1:1/nothing", "postgresql://fmnist@192.0.2.1:5432/nothing"):
        start = time.perf_counter()
        code, _, err = cli(
            capsys, *sweep_args("s", tmp_path, data_dir, "--space", space_file(tmp_path), "--storage", url)
        )
        assert time.perf_counter() - start < 20
        assert (
            code == 1
            and "cannot use storage postgresql+psycopg://fmnist@" in err
            and len(err.strip().splitlines()) == 1
        ), err


def test_a_poor_trial_is_pruned_and_its_folder_says_so(tmp_path, data_dir):
    space = parse_space(
        {
            "fixed": {"model": "shallow", "epochs": 4, "batch_size": 16},
            "search": {"lr": {"low": 1e-7, "high": 0.05, "log": True}},
        }
    )
    folder = tmp_path / "sweeps" / "p"
    study = sweep_study.open_sweep("p", folder, None, space, "tpe", "median", 0)
    for lr in (0.01, 0.015, 0.02, 0.025, 0.03, 1e-7):  # five that learn, then one that cannot
        study.enqueue_trial({"lr": lr})
    sweep = worker.Sweep(
        study, space, folder, 6, where={"device": "cpu", "data_dir": str(data_dir), "verify": False}, quiet=True
    )
    assert worker.run_worker(sweep) == 6
    poor = study.trials[5]
    assert [t.state for t in study.trials] == [TrialState.COMPLETE] * 5 + [TrialState.PRUNED]
    assert poor.params == {"lr": 1e-7} and len(poor.intermediate_values) < 4
    pruned = json.loads((folder / "trial-0005" / "pruned.json").read_text())
    assert pruned["epoch"] == len(poor.intermediate_values) == 2 and "pruner" in pruned["reason"]
    assert (folder / "trial-0005" / "best.pt").is_file()  # the epochs it did run are an ordinary run


def start_worker(name, tmp_path, data_dir, *extra):
    args = sweep_args(name, tmp_path, data_dir, *extra)
    return subprocess.Popen(
        [sys.executable, "-m", "fmnist", *map(str, args)], stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True
    )


def check_parallel(name, tmp_path, data_dir, trials, *extra):
    """Two workers at once on one study: exactly `trials` trials, all complete, every folder whole."""
    procs = [
        start_worker(name, tmp_path, data_dir, "--space", space_file(tmp_path, 2), "--trials", str(trials), *extra)
        for _ in range(2)
    ]
    outputs = [p.communicate(timeout=180)[0] for p in procs]
    assert [p.returncode for p in procs] == [0, 0], outputs
    assert not any("locked" in o or "Traceback" in o for o in outputs), outputs
    ran = [int(o.split("this worker ran ")[1].split(" ")[0]) for o in outputs]
    assert sum(ran) == trials and all(ran), ran  # both worked, together exactly the total
    return ran


def test_two_workers_share_a_journal_file(tmp_path, data_dir, capsys):
    check_parallel("j", tmp_path, data_dir, 4)
    study = load("j", tmp_path)
    assert len(study.trials) == 4 and all(t.state == TrialState.COMPLETE for t in study.trials)
    assert sorted(t.number for t in study.trials) == list(range(4))
    assert len({tuple(sorted(t.params.items())) for t in study.trials}) == 4  # no two workers proposed alike
    for t in study.trials:
        run = Path(t.user_attrs["run_dir"])
        assert {"config.json", "history.csv", "best.pt", "last.pt"} <= {p.name for p in run.iterdir()}
        assert len((run / "history.csv").read_text().splitlines()) == 1 + 2
    code, out, _ = cli(capsys, "sweep", "status", "j", "--dir", tmp_path / "sweeps")
    lines = out.splitlines()
    values = [float(line.split()[2]) for line in lines[1:]]
    assert code == 0 and lines[0].split()[:5] == ["trial", "state", "val", "accuracy", "epochs"]
    assert values == sorted(values, reverse=True) and len(values) == 4


def test_two_workers_share_a_postgresql_database(postgres_url, tmp_path, data_dir, capsys):
    check_parallel("pg", tmp_path, data_dir, 4, "--storage", postgres_url)
    storage = optuna.storages.RDBStorage(postgres_url.replace("postgresql://", "postgresql+psycopg://"))
    study = optuna.load_study(study_name="pg", storage=storage)
    assert len(study.trials) == 4 and all(t.state == TrialState.COMPLETE for t in study.trials)
    code, out, _ = cli(capsys, "sweep", "status", "pg", "--dir", tmp_path / "sweeps", "--storage", postgres_url)
    assert code == 0 and len(out.splitlines()) == 5


def test_a_killed_workers_trial_is_failed_and_retried(tmp_path, data_dir):
    write_dataset(tmp_path / "slow", train_per_class=200)  # trials of a few seconds, to be killed in
    slow = ["--space", space_file(tmp_path, 12), "--trials", "2", "--heartbeat", "0.5"]
    first = start_worker("k", tmp_path, tmp_path / "slow", *slow)
    deadline = time.time() + 60
    while time.time() < deadline and not (tmp_path / "sweeps" / "k" / "trial-0000" / "history.csv").is_file():
        time.sleep(0.1)
    first.send_signal(signal.SIGKILL)  # mid-trial, after its first epoch
    first.wait(timeout=10)
    killed_at = time.time()
    second = start_worker("k", tmp_path, tmp_path / "slow", *slow)
    out = second.communicate(timeout=180)[0]
    assert second.returncode == 0, out
    study = load("k", tmp_path)
    states = {t.number: t.state for t in study.trials}
    dead = study.trials[0]
    retry = next(t for t in study.trials if t.user_attrs.get("retry_of") == 0)
    assert dead.state == TrialState.FAIL and "worker died" in dead.user_attrs["failed"]
    assert retry.params == dead.params and retry.state == TrialState.COMPLETE
    assert sorted(states.values(), key=str) == sorted([TrialState.FAIL] + [TrialState.COMPLETE] * 2, key=str)
    assert json.loads((tmp_path / "sweeps" / "k" / "trial-0000" / "failed.json").read_text())["retried"]
    assert dead.datetime_complete.timestamp() - killed_at < 60  # failed within a minute of its death
    listed = subprocess.run(
        [sys.executable, "-m", "fmnist", "runs", tmp_path / "sweeps" / "k", "--json"], capture_output=True, text=True
    )
    status = {Path(r["run"]).name: r["status"] for r in json.loads(listed.stdout)}
    assert status == {"trial-0000": "retried", "trial-0001": "trained", "trial-0002": "trained"}, status


def test_a_stopped_worker_says_its_trial_is_queued_again(tmp_path, data_dir):
    write_dataset(tmp_path / "slow", train_per_class=200)
    worker = start_worker("t", tmp_path, tmp_path / "slow", "--space", space_file(tmp_path, 12), "--trials", "2")
    deadline = time.time() + 60
    while time.time() < deadline and not (tmp_path / "sweeps" / "t" / "trial-0000" / "history.csv").is_file():
        time.sleep(0.1)
    worker.send_signal(signal.SIGTERM)
    out = worker.communicate(timeout=60)[0]
    assert worker.returncode == 143, out
    assert "trial 0 is queued again: the next `fmnist sweep run t` runs it" in out and "fmnist resume" not in out


def test_the_report_tests_the_best_trial_once_and_no_other(tmp_path, data_dir, capsys):
    assert (
        cli(
            capsys,
            *sweep_args("r", tmp_path, data_dir, "--space", space_file(tmp_path), "--trials", "3", "--pruner", "none"),
        )[0]
        == 0
    )
    study = load("r", tmp_path)
    best = study.best_trial
    code, out, _ = cli(capsys, "sweep", "report", "r", "--dir", tmp_path / "sweeps")
    assert code == 0 and f"best trial {best.number}" in out
    folders = {t.number: Path(t.user_attrs["run_dir"]) for t in study.trials}
    assert [n for n, f in folders.items() if (f / "metrics.json").is_file()] == [best.number]
    metrics = json.loads((folders[best.number] / "metrics.json").read_text())
    assert f"test accuracy {metrics['test_accuracy']:.4f}" in out
    stamp = (folders[best.number] / "metrics.json").stat().st_mtime_ns
    assert cli(capsys, "sweep", "report", "r", "--dir", tmp_path / "sweeps")[0] == 0
    assert (folders[best.number] / "metrics.json").stat().st_mtime_ns == stamp  # not evaluated again
    md = (tmp_path / "sweeps" / "r" / "report.md").read_text()
    assert "![Optimisation history" in md and f"{metrics['test_accuracy']:.4f}" in md
    assert "data:image/png;base64," in (tmp_path / "sweeps" / "r" / "report.html").read_text()
    # A trial's folder is an ordinary run folder: evaluate and predict work on it.
    other = next(f for n, f in folders.items() if n != best.number)
    assert cli(capsys, "evaluate", other)[0] == 0


def test_status_of_a_sweep_that_does_not_exist(tmp_path, capsys):
    code, _, err = cli(capsys, "sweep", "status", "nothing", "--dir", tmp_path)
    assert code == 1 and "no sweep named 'nothing'" in err


def test_training_flags_are_fixed_settings_over_the_space(tmp_path, data_dir, capsys):
    argv = sweep_args("f", tmp_path, data_dir, "--space", space_file(tmp_path, 3), "--trials", "2", "--epochs", "1")
    code, _, err = cli(capsys, *argv, "--label-smoothing", "0.1")
    assert code == 0, err
    study = load("f", tmp_path)
    assert study.user_attrs["space"]["fixed"]["epochs"] == 1 and study.user_attrs["space"]["fixed"]["label_smoothing"]
    trials = sorted((tmp_path / "sweeps" / "f").glob("trial-*"))
    assert len(trials) == 2
    for trial in trials:
        cfg = json.loads((trial / "config.json").read_text())
        assert cfg["epochs"] == 1 and cfg["label_smoothing"] == 0.1
        assert len((trial / "history.csv").read_text().strip().splitlines()) == 2  # header and one epoch
    code, _, err = cli(capsys, *sweep_args("g", tmp_path, data_dir, "--space", space_file(tmp_path), "--lr", "0.01"))
    assert code == 2 and "--lr: searched by the space" in err and not (tmp_path / "sweeps" / "g").exists()
