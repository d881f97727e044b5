"""--track mlflow: a finished run's parameters, curves, test figures and files in MLflow's store,
read back with MLflow's own client; an unreachable store costs a warning, not the run."""

from __future__ import annotations

import json
from pathlib import Path

import pytest
from conftest import cli, train_args


def test_a_tracked_run_is_in_the_mlflow_store_with_one_value_per_epoch(synth_dir, tmp_path, monkeypatch, capsys):
    from mlflow import MlflowClient

    monkeypatch.chdir(tmp_path)  # MLflow's artefacts go below the working folder
    uri = f"sqlite:///{tmp_path / 'store.db'}"
    args = train_args(
        synth_dir, tmp_path / "run", "shallow", "--epochs", "3", "--lr", "0.002", "--track", f"mlflow:{uri}"
    )
    code, _, err = cli(capsys, *args)
    assert code == 0 and "warning" not in err, err
    client = MlflowClient(uri)
    (run,) = client.search_runs([client.get_experiment_by_name("fmnist").experiment_id])
    assert run.data.tags["fmnist.run_dir"] == str(tmp_path / "run") and run.info.status == "FINISHED"
    assert run.data.params["lr"] == "0.002" and run.data.params["model"] == "shallow"
    history = client.get_metric_history(run.info.run_id, "val_accuracy")
    assert sorted(m.step for m in history) == [1, 2, 3]
    recorded = json.loads((tmp_path / "run" / "metrics.json").read_text())
    assert run.data.metrics["test_accuracy"] == recorded["test_accuracy"]
    files = {a.path for a in client.list_artifacts(run.info.run_id)}
    assert {"report.html", "metrics.json", "curves.png", "reliability.png", "history.csv"} <= files
    assert cli(capsys, "export", tmp_path / "run", "--data-dir", synth_dir, "--no-verify")[0] == 0
    files = {a.path for a in client.list_artifacts(run.info.run_id)}
    assert {"model.onnx", "model.onnx.json"} <= files


def test_an_unreachable_tracking_server_costs_one_warning_and_the_run_finishes(synth_dir, tmp_path, capsys):
    args = train_args(synth_dir, tmp_path / "run", "shallow", "--epochs", "1", "--track", "mlflow:http://127.0.0.1:9")
    code, out, err = cli(capsys, *args)
    warnings = [line for line in err.splitlines() if line.startswith("warning:")]
    assert code == 0 and "test accuracy" in out and (tmp_path / "run" / "metrics.json").is_file()
    assert len(warnings) == 1 and "could not log to MLflow at http://127.0.0.1:9" in warnings[0]
    assert not (tmp_path / "run" / "tracking.json").exists()


def test_track_names_mlflow_or_is_refused(synth_dir, tmp_path, capsys):
    code, _, err = cli(capsys, *train_args(synth_dir, tmp_path / "run", "shallow", "--track", "wandb"))
    assert code == 2 and "track must be mlflow[:URI] or tensorboard[:DIR]" in err and not (tmp_path / "run").exists()


def test_tensorboard_event_files_hold_each_epoch_and_the_figures(synth_dir, tmp_path, monkeypatch, capsys):
    from tensorboard.backend.event_processing.event_accumulator import EventAccumulator

    monkeypatch.chdir(tmp_path)
    args = train_args(synth_dir, "runs/tb", "shallow", "--epochs", "3", "--track", "tensorboard")
    assert cli(capsys, *args)[0] == 0
    events = tmp_path / "tensorboard" / "runs" / "tb"  # one subfolder per run, by its path
    assert [p.name for p in (tmp_path / "tensorboard").iterdir()] == ["runs"] and any(events.iterdir())
    read = EventAccumulator(str(events), size_guidance={"images": 0})
    read.Reload()
    assert [e.step for e in read.Scalars("val_accuracy")] == [1, 2, 3]
    assert {"curves", "confusion", "reliability"} <= set(read.Tags()["images"])
    recorded = json.loads((tmp_path / "runs" / "tb" / "metrics.json").read_text())
    assert read.Scalars("test/test_accuracy")[0].value == pytest.approx(recorded["test_accuracy"])


def test_a_sweep_s_trials_are_nested_runs_of_the_sweep_s_run(synth_dir, tmp_path, monkeypatch, capsys):
    from mlflow import MlflowClient
    from test_sweep import space_file, sweep_args

    monkeypatch.chdir(tmp_path)
    uri = f"sqlite:///{tmp_path / 'store.db'}"
    argv = sweep_args(
        "s", tmp_path, synth_dir, "--space", space_file(tmp_path), "--trials", "2", "--track", f"mlflow:{uri}"
    )
    code, _, err = cli(capsys, *argv)
    assert code == 0 and "warning" not in err, err
    client = MlflowClient(uri)
    runs = client.search_runs([client.get_experiment_by_name("fmnist").experiment_id])
    (parent,) = [r for r in runs if "fmnist.sweep_dir" in r.data.tags]
    trials = [r for r in runs if r.data.tags.get("mlflow.parentRunId") == parent.info.run_id]
    assert (
        len(runs) == 3 and len(trials) == 2 and parent.data.tags["fmnist.sweep_dir"] == str(tmp_path / "sweeps" / "s")
    )
    assert all(len(client.get_metric_history(t.info.run_id, "val_accuracy")) == 2 for t in trials)  # 2 epochs each


def test_a_backend_that_cannot_be_used_is_refused_before_training(synth_dir, tmp_path, capsys, monkeypatch):
    (tmp_path / "a-file").write_text("not a folder")
    for track in (f"tensorboard:{tmp_path / 'a-file' / 'events'}", f"mlflow:sqlite:///{tmp_path / 'a-file' / 's.db'}"):
        code, _, err = cli(capsys, *train_args(synth_dir, tmp_path / "run", "shallow", "--track", track))
        assert code == 2 and f"cannot write in {tmp_path / 'a-file'}" in err
        assert len(err.strip().splitlines()) == 1 and not (tmp_path / "run").exists()
    monkeypatch.chdir(tmp_path)
    import fmnist.run.tracking as tracking

    real = tracking.importlib.util.find_spec
    monkeypatch.setattr(tracking.importlib.util, "find_spec", lambda n: None if n == "tensorboard" else real(n))
    for argv in (
        train_args(synth_dir, tmp_path / "run", "shallow", "--track", "tensorboard"),
        ["study", "--models", "shallow", "--out", tmp_path / "s", "--track", "tensorboard", "--data-dir", synth_dir],
    ):
        code, _, err = cli(capsys, *argv)
        assert code == 2 and "--track tensorboard needs the tensorboard package: pip install 'fmnist[track]'" in err
        assert len(err.strip().splitlines()) == 1 and not (tmp_path / "run").exists() and not (tmp_path / "s").exists()


def test_a_tracking_failure_after_training_is_one_warning_and_the_study_goes_on(
    synth_dir, tmp_path, capsys, monkeypatch
):
    import fmnist.run.tracking as tracking

    def broken(folder, root):
        raise OSError(28, "No space left on device")

    monkeypatch.setattr(tracking, "write_events", broken)
    monkeypatch.chdir(tmp_path)
    argv = ["study", "--models", "shallow", "simple_cnn", "--epochs", "1", "--out", tmp_path / "s"]
    code, out, err = cli(capsys, *argv, "--track", "tensorboard", "--data-dir", synth_dir, "--no-verify")
    warnings = [line for line in err.splitlines() if line.startswith("warning: could not log")]
    assert code == 0, err
    assert len(warnings) == 2 and "TensorBoard in tensorboard" in warnings[0] and "No space left" in warnings[0]
    assert all((tmp_path / "s" / name / "metrics.json").is_file() for name in ("shallow", "simple_cnn"))


def test_event_folders_of_runs_named_alike_stay_apart(tmp_path, monkeypatch):
    from fmnist.run.tracking import events_name

    monkeypatch.chdir(tmp_path)
    assert events_name(Path("runs/a-b")) != events_name(Path("runs/a/b"))
    assert events_name(Path("runs/a/b")) == Path("runs/a/b")
    assert events_name(Path("/elsewhere/x")) == Path("elsewhere/x")


def test_racing_sweep_workers_share_one_parent_run_even_with_quotes_in_the_path(tmp_path):
    from mlflow import MlflowClient

    from fmnist.run.tracking import _experiment, _sweep_run

    client = MlflowClient(f"sqlite:///{tmp_path / 'store.db'}")
    sweep_dir = tmp_path / "sweeps" / 'it\'s "odd"'
    first = _sweep_run(client, "odd", sweep_dir)
    assert _sweep_run(client, "odd", sweep_dir) == first  # found again by its key, quotes and all

    class Late:  # a worker whose first search ran before the other worker's parent was made
        def __init__(self):
            self.searches = 0

        def __getattr__(self, name):
            return getattr(client, name)

        def search_runs(self, *args, **kw):
            self.searches += 1
            return [] if self.searches == 1 else client.search_runs(*args, **kw)

    assert _sweep_run(Late(), "odd", sweep_dir) == first
    alive = client.search_runs([_experiment(client)], filter_string="tags.`fmnist.sweep_dir` != ''")
    assert [r.info.run_id for r in alive] == [first]


def test_the_recorded_store_is_found_from_any_folder(synth_dir, tmp_path, capsys, monkeypatch):
    monkeypatch.chdir(tmp_path)
    args = train_args(synth_dir, tmp_path / "run", "shallow", "--epochs", "1", "--track", "mlflow")
    assert cli(capsys, *args)[0] == 0
    uri = json.loads((tmp_path / "run" / "tracking.json").read_text())["mlflow"]["uri"]
    assert uri == f"sqlite:///{tmp_path / 'mlflow.db'}"
    elsewhere = tmp_path / "elsewhere"
    elsewhere.mkdir()
    monkeypatch.chdir(elsewhere)
    assert cli(capsys, "export", tmp_path / "run", "--data-dir", synth_dir, "--no-verify")[0] == 0
    assert not (elsewhere / "mlflow.db").exists()
