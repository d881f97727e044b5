"""`fmnist runs`: the runs under some folders with their status, and two runs compared."""

from __future__ import annotations

import json
import shutil

from conftest import cli, train_args

from fmnist.run.folder import RunFolder


def test_runs_lists_exactly_the_runs_with_their_status_and_compare_marks_the_differences(synth_dir, tmp_path, capsys):
    root = tmp_path / "all"
    assert cli(capsys, *train_args(synth_dir, root / "finished", "shallow", "--epochs", "1"))[0] == 0
    stopped, pruned = root / "group" / "stopped", root / "pruned"
    trained = root / "trained"
    for copy in (stopped, pruned, trained):
        shutil.copytree(root / "finished", copy)
        (copy / "metrics.json").unlink()  # not tested, with its last.pt
    config = json.loads((stopped / "config.json").read_text())
    (stopped / "config.json").write_text(json.dumps({**config, "lr": 0.005, "epochs": 2}))  # one epoch of two
    RunFolder(pruned).mark("pruned", {"epoch": 1})
    (root / "notes").mkdir()
    (root / "notes" / "config.json").write_text('{"colour": "blue"}')  # a folder that is not a run
    (root / "notes" / "readme.txt").write_text("hello")

    code, out, _ = cli(capsys, "runs", root, "--json")
    rows = {r["run"]: r for r in json.loads(out)}
    assert code == 0 and set(rows) == {str(root / "finished"), str(stopped), str(pruned), str(trained)}
    assert {r["run"]: r["status"] for r in rows.values()} == {
        str(root / "finished"): "finished",
        str(stopped): "stopped",
        str(pruned): "pruned",
        str(trained): "trained",  # every epoch, no test: as a sweep's trials end
    }
    assert rows[str(stopped)]["test_accuracy"] is None and rows[str(pruned)]["test_accuracy"] is None
    assert rows[str(root / "finished")]["test_accuracy"] is not None

    code, out, _ = cli(capsys, "runs", root, "--sort", "run")
    lines = out.splitlines()
    assert code == 0 and lines[0].split()[:5] == ["run", "model", "recipe", "epochs", "lr"]  # they differ: shown
    assert len(lines) == 5 and "finished" in lines[1] and lines[2].split()[-1] == "stopped"
    assert len(lines[2].split()) == len(lines[1].split()) - 1  # no test figure: an empty cell
    code, out, _ = cli(capsys, "runs", root, "--filter", "status=pruned", "--json")
    assert [r["run"] for r in json.loads(out)] == [str(pruned)]

    code, out, _ = cli(capsys, "runs", "compare", root / "finished", stopped, "--json")
    marked = {line["field"] for line in json.loads(out) if line["differs"]}
    assert code == 0 and marked == {"epochs", "lr", "status", "best_epoch", "test_accuracy", "test_loss"}
    code, out, _ = cli(capsys, "runs", "compare", root / "finished", stopped)
    starred = {line.split()[1] for line in out.splitlines()[1:] if line.startswith("*")}
    assert starred == marked


def test_runs_refuses_what_it_cannot_use(tmp_path, capsys):
    for argv, message in (
        (["runs", tmp_path / "missing"], "not a folder"),
        (["runs", "compare", tmp_path], "give two run folders"),
        (["runs", tmp_path, "--sort", "colour"], "--sort 'colour'"),
        (["runs", tmp_path, "--filter", "model"], "give KEY=VALUE"),
        (["runs", "compare", tmp_path, tmp_path], "is not a run folder"),
    ):
        code, _, err = cli(capsys, *argv)
        assert code in (1, 2) and message in err and len(err.strip().splitlines()) == 1


def test_the_runs_route_lists_the_server_s_runs_and_serves_only_those(runs):
    from fastapi.testclient import TestClient

    from fmnist.serve import Settings, create_app

    with TestClient(create_app([runs / "shallow"], Settings(runs_roots=(str(runs),)))) as client:
        rows = {r["run"]: r for r in client.get("/runs").json()["runs"]}
        assert set(rows) == {str(runs / "shallow"), str(runs / "simple_cnn")}
        assert rows[str(runs / "shallow")]["served_as"] == "shallow" and rows[str(runs / "simple_cnn")]["servable"]
        assert rows[str(runs / "simple_cnn")]["curve"] == [[1, rows[str(runs / "simple_cnn")]["val_accuracy"]]]
        for outside in ("/etc", str(runs), str(runs / "simple_cnn" / "..")):
            answer = client.post("/runs/serve", json={"run": outside})
            assert answer.status_code == 404 and "among the listed runs" in answer.json()["error"]
        assert client.post("/runs/serve", json={"run": str(runs / "simple_cnn")}).json() == {"name": "simple_cnn"}
        assert [m["name"] for m in client.get("/models").json()["models"]] == ["shallow", "simple_cnn"]
        assert client.post("/runs/serve", json={"run": str(runs / "simple_cnn")}).json() == {"name": "simple_cnn"}


def family(trained, root, **changes) -> dict:
    """Copies of one trained run under `root`, each with config (and metrics) values changed."""
    made = {}
    for name, (config, metrics) in changes.items():
        copy = root / name
        shutil.copytree(trained, copy)
        cfg = json.loads((copy / "config.json").read_text())
        (copy / "config.json").write_text(json.dumps({**cfg, **config}))
        m = json.loads((copy / "metrics.json").read_text())
        (copy / "metrics.json").write_text(json.dumps({**m, **metrics}))
        made[name] = str(copy)
    return made


def test_runs_filters_and_sorts_by_value_and_shows_values_by_their_magnitude(synth_dir, tmp_path, capsys):
    trained = tmp_path / "trained"
    assert cli(capsys, *train_args(synth_dir, trained, "shallow", "--epochs", "1"))[0] == 0
    root = tmp_path / "all"
    runs = family(
        trained,
        root,
        slow=({"lr": 1e-5, "tta": True, "exclude": [1, 2, 3, 4]}, {"test_loss": 0.9, "train_seconds": 300.0}),
        fast=({"lr": 3e-5, "exclude": [5, 6, 7, 8]}, {"test_loss": 0.2, "train_seconds": 20.0}),
        middle=({"lr": 3e-5, "exclude": [1, 2, 3, 4]}, {"test_loss": 0.5, "train_seconds": 95.5}),
    )

    def listed(*argv) -> list[str]:
        code, out, err = cli(capsys, "runs", root, *argv, "--json")
        assert code == 0, err
        return [r["run"] for r in json.loads(out)]

    assert listed("--filter", "tta=true") == [runs["slow"]]
    assert listed("--filter", "tta=false", "--filter", "lr=3e-5", "--sort", "run") == [runs["fast"], runs["middle"]]
    assert listed("--filter", "lr<2e-5") == [runs["slow"]]
    assert listed("--filter", "train_seconds>=95.5", "--sort", "run") == [runs["middle"], runs["slow"]]
    assert listed("--sort", "test_loss") == [runs["fast"], runs["middle"], runs["slow"]]  # lowest first
    assert listed("--sort", "train_seconds") == [runs["fast"], runs["middle"], runs["slow"]]  # fewest first

    code, out, _ = cli(capsys, "runs", root, "--sort", "run")
    header, *lines = out.splitlines()
    assert header.split()[:6] == ["run", "model", "recipe", "lr", "tta", "exclude"]  # same length, other images
    assert [line.split()[2] for line in lines] == ["3e-05", "3e-05", "1e-05"]  # recipe: an empty cell
    assert "95.5" in lines[1] and "300" in lines[2]

    code, out, _ = cli(capsys, "runs", "compare", runs["fast"], runs["middle"], "--json")
    assert {x["field"] for x in json.loads(out) if x["differs"]} >= {"exclude", "test_loss", "train_seconds"}
    assert "lr" not in {x["field"] for x in json.loads(out) if x["differs"]}


def test_runs_says_in_one_line_when_nothing_is_found(synth_dir, tmp_path, capsys, monkeypatch):
    empty = tmp_path / "empty"
    empty.mkdir()
    code, out, err = cli(capsys, "runs", empty)
    assert code == 0 and out.strip() == f"no runs under {empty}" and not err
    trained = tmp_path / "compare" / "one"  # a folder named compare is listed, not taken for the verb
    assert cli(capsys, *train_args(synth_dir, trained, "shallow", "--epochs", "1"))[0] == 0
    monkeypatch.chdir(tmp_path)
    code, out, err = cli(capsys, "runs", "compare", "--filter", "model=deep_cnn")
    assert code == 0 and out.strip() == "no run matches model=deep_cnn under compare" and not err
    code, out, _ = cli(capsys, "runs", "compare", "--json")
    assert code == 0 and [r["model"] for r in json.loads(out)] == ["shallow"]
    code, _, err = cli(capsys, "runs", "compare", "--filter", "modle=shallow")
    assert code == 2 and "did you mean 'model'?" in err and len(err.strip().splitlines()) == 1
