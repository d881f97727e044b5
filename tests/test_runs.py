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
    for copy in (stopped, pruned):
        shutil.copytree(root / "finished", copy)
        (copy / "metrics.json").unlink()  # not tested: a run stopped before its test, with its last.pt
    config = json.loads((stopped / "config.json").read_text())
    (stopped / "config.json").write_text(json.dumps({**config, "lr": 0.005}))
    RunFolder(pruned).mark("pruned", {"epoch": 1})
    (root / "notes").mkdir()
    (root / "notes" / "config.json").write_text('{"colour": "blue"}')  # a folder that is not a run
    (root / "notes" / "readme.txt").write_text("hello")

    code, out, _ = cli(capsys, "runs", root, "--json")
    rows = {r["run"]: r for r in json.loads(out)}
    assert code == 0 and set(rows) == {str(root / "finished"), str(stopped), str(pruned)}
    assert {r["run"]: r["status"] for r in rows.values()} == {
        str(root / "finished"): "finished",
        str(stopped): "stopped",
        str(pruned): "pruned",
    }
    assert rows[str(stopped)]["test_accuracy"] is None and rows[str(pruned)]["test_accuracy"] is None
    assert rows[str(root / "finished")]["test_accuracy"] is not None

    code, out, _ = cli(capsys, "runs", root, "--sort", "run")
    lines = out.splitlines()
    assert code == 0 and lines[0].split()[:4] == ["run", "model", "recipe", "lr"]  # lr differs: shown
    assert len(lines) == 4 and "finished" in lines[1] and lines[2].split()[-1] == "stopped"
    assert len(lines[2].split()) == len(lines[1].split()) - 1  # no test figure: an empty cell
    code, out, _ = cli(capsys, "runs", root, "--filter", "status=pruned", "--json")
    assert [r["run"] for r in json.loads(out)] == [str(pruned)]

    code, out, _ = cli(capsys, "runs", "compare", root / "finished", stopped, "--json")
    marked = {line["field"] for line in json.loads(out) if line["differs"]}
    assert code == 0 and marked == {"lr", "status", "best_epoch", "test_accuracy", "test_loss"}
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
