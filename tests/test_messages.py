"""The command line's own words: one prefix, a command list for a bare `fmnist`, --version, a
close match for a misspelt model, and a run's file given where its folder is meant."""

import pytest
from conftest import cli, train_args

from fmnist import __version__


def test_a_bare_fmnist_lists_the_commands(capsys):
    code, out, err = cli(capsys)
    assert code == 2 and not err
    for command in ("train", "study", "predict", "serve", "runs", "sweep", "audit", "export"):
        assert command in out


def test_version(capsys):
    with pytest.raises(SystemExit) as e:
        cli(capsys, "--version")
    assert e.value.code == 0 and capsys.readouterr().out.strip() == f"fmnist {__version__}"


def test_a_usage_error_has_one_prefix_naming_its_command(capsys):
    code, _, err = cli(capsys, "train", "shallow", "--epochs", "many")
    assert code == 2 and err.startswith("fmnist train: error: argument --epochs: invalid int value")
    assert err.count("fmnist") == 1 and len(err.strip().splitlines()) == 1
    code, _, err = cli(capsys, "nonsense")
    assert code == 2 and err.startswith("fmnist: error: argument COMMAND: invalid choice") and err.count("fmnist:") == 1


def test_a_misspelt_model_gets_its_close_match(synth_dir, tmp_path, capsys):
    code, _, err = cli(capsys, *train_args(synth_dir, tmp_path / "run", "deep_cn"))
    assert code == 2 and "unknown model 'deep_cn'; did you mean 'deep_cnn'?" in err and not (tmp_path / "run").exists()


def test_a_run_diverged_before_its_first_checkpoint_says_nothing_was_kept(synth_dir, tmp_path, capsys):
    code, _, err = cli(capsys, *train_args(synth_dir, tmp_path / "run", "shallow", "--epochs", "1", "--lr", "1e30"))
    assert code != 0 and "before the first checkpoint, so nothing was kept" in err
    assert "last good checkpoint is kept" not in err and not (tmp_path / "run" / "best.pt").exists()


def test_a_run_s_file_given_for_its_folder_is_named_so(synth_dir, tmp_path, capsys):
    run = tmp_path / "run"
    assert cli(capsys, *train_args(synth_dir, run, "shallow", "--epochs", "1"))[0] == 0
    for argv in (["evaluate", run / "best.pt"], ["predict", run / "best.pt", run / "samples.png"]):
        code, _, err = cli(capsys, *argv)
        assert code == 1 and f"is a file of the run folder {run}: give the folder itself" in err, err
        assert "ONNX" not in err
    image = tmp_path / "shirt.png"
    image.write_bytes((run / "samples.png").read_bytes())
    code, _, err = cli(capsys, "predict", image, run)  # the image first
    assert code == 1 and f"{image} is neither a run folder nor an ONNX model" in err


def test_serve_refuses_a_port_in_use_before_saying_it_serves(runs, capsys):
    import socket

    with socket.socket() as taken:
        taken.bind(("127.0.0.1", 0))
        taken.listen()
        port = taken.getsockname()[1]
        code, out, err = cli(capsys, "serve", runs / "shallow", "--port", port)
    assert code == 1 and f"cannot serve on 127.0.0.1:{port}" in err and "serving" not in out


def test_a_bare_serve_takes_the_newest_study_named_study(runs, tmp_path, monkeypatch):
    import json
    import os

    from fmnist.cli.serve import serve_sources

    monkeypatch.chdir(tmp_path)
    for i, (name, model) in enumerate((("study", "shallow"), ("quick", "simple_cnn"))):  # quick is newer
        folder = tmp_path / "runs" / name
        folder.mkdir(parents=True)
        (folder / "summary.json").write_text(json.dumps({"models": [{"run_dir": str(runs / model)}]}))
        os.utime(folder / "summary.json", (1000 + i, 1000 + i))
    assert serve_sources([]) == [runs / "shallow"]


def test_predict_refuses_a_top_k_the_api_refuses(runs, capsys):
    code, _, err = cli(capsys, "predict", runs / "shallow", runs / "shallow" / "samples.png", "--top-k", "11")
    assert code == 2 and "--top-k must be 1-10" in err
