"""Ensembles: runs of other seeds sharing a split seed combined into a run folder that every command
reads as a run, its answers the weighted mixture of its members' calibrated probabilities; members
validated on other images refused; the weights' choice made on validation alone."""

import json
import time

import pytest
import torch
from conftest import cli, train_args, untimed, write_dataset
from fastapi.testclient import TestClient

import fmnist
from fmnist import files
from fmnist.errors import UsageError
from fmnist.inference.mixture import choose_weights, fit_weights
from fmnist.inference.predictor import load_predictor
from fmnist.run.folder import RunFolder, split_of
from fmnist.serve import Settings, create_app


@pytest.fixture(scope="module")
def pair(tmp_path_factory):
    """Two one-epoch runs of different seeds and models on one split (--split-seed 0), a third
    validated on another split (seed 1, its own split), and the pair's ensemble."""
    from fmnist.cli.main import main

    root = tmp_path_factory.mktemp("ensemble")
    write_dataset(root / "data", train_per_class=30)
    for name, model, extra in (
        ("a", "shallow", ["--seed", "0"]),
        ("b", "simple_cnn", ["--seed", "1", "--split-seed", "0", "--tta"]),
        ("other", "shallow", ["--seed", "1"]),
    ):
        argv = train_args(root / "data", root / name, model, "--epochs", "1", *extra)
        assert main([str(a) for a in argv]) == 0
    assert main(["ensemble", str(root / "a"), str(root / "b"), "--out", str(root / "ens"), "--quiet"]) == 0
    return root


def test_members_of_other_seeds_share_a_split_seed_s_validation_images(pair):
    data = RunFolder(pair / "a").data(RunFolder(pair / "a").read_config())
    a, b, other = (RunFolder(pair / n).read_config() for n in ("a", "b", "other"))
    assert (a.seed, b.seed) == (0, 1)
    assert torch.equal(split_of(data.train_labels, a)[1], split_of(data.train_labels, b)[1])
    assert not torch.equal(split_of(data.train_labels, a)[1], split_of(data.train_labels, other)[1])


def test_an_ensemble_is_a_run_folder_tested_once_with_its_history(pair):
    run = RunFolder(pair / "ens")
    cfg, metrics, history = run.read_config(), run.metrics(), run.history()
    assert run.status() == "finished" and not run.has_checkpoint(best=False)  # nothing to resume
    members = cfg.network["members"]
    assert [m["run"] for m in members] == [str(pair / "a"), str(pair / "b")]
    assert sum(m["weight"] for m in members) == pytest.approx(1)
    assert cfg.network["weights"] in ("fitted", "uniform") and "cross_validated" in cfg.network["choice"]
    assert len(history) == 1 and metrics["best_epoch"] == 1
    # its training time is its members' together, and then its own making
    seconds = sum(RunFolder(pair / n).metrics()["train_seconds"] for n in ("a", "b"))
    assert metrics["train_seconds"] == pytest.approx(seconds + history[0]["seconds"])
    assert (pair / "ens" / "report.html").is_file() and (pair / "ens" / "confusion.png").is_file()


def test_its_answers_are_the_weighted_mixture_of_its_members_calibrated_probabilities(pair):
    run = RunFolder(pair / "ens")
    members = run.read_config().network["members"]
    x = torch.rand(16, 1, 28, 28, generator=torch.Generator().manual_seed(0))  # not saturated, as test images are
    mixed = sum(m["weight"] * load_predictor(pair / n, "torch").probabilities(x) for m, n in zip(members, "ab"))
    ensemble = load_predictor(pair / "ens", "torch")
    expected = (mixed.log() / ensemble.temperature).softmax(1)  # the ensemble's own calibration on top
    assert torch.allclose(ensemble.probabilities(x), expected, atol=1e-5)
    onnx = load_predictor(pair / "ens", "onnx")  # exported in memory: the same answers
    assert torch.allclose(onnx.probabilities(x), expected, atol=1e-4)


def test_evaluate_predict_export_and_serve_read_an_ensemble(pair, tmp_path, capsys):
    ens = pair / "ens"
    recorded = json.loads((ens / "metrics.json").read_text())
    code, out, err = cli(capsys, "evaluate", ens)
    assert code == 0, err
    assert json.loads((ens / "metrics.json").read_text())["test_accuracy"] == recorded["test_accuracy"]
    code, out, err = cli(capsys, "export", ens)
    assert code == 0, err and "checks passed" in out
    code, out, err = cli(capsys, "evaluate", ens / "model.onnx", "--data-dir", pair / "data", "--no-verify")
    assert code == 0, err
    assert f"test accuracy {recorded['test_accuracy']:.4f}" in out  # the exported file gives its accuracy
    image = ens / "samples.png"
    code, out, err = cli(capsys, "predict", ens, image, "--json")
    assert code == 0, err
    predicted = json.loads(out)
    app = create_app([ens], Settings())
    with TestClient(app) as client:
        deadline = time.time() + 60
        while client.get("/v2/health/ready").status_code != 200 and time.time() < deadline:
            time.sleep(0.05)
        r = client.post("/predict", files={"file": ("samples.png", image.read_bytes(), "image/png")})
        assert r.status_code == 200, r.text
        (model,) = r.json()["results"][0]["models"]
        assert model["name"] == "ens"
        assert [p["label"] for p in model["predictions"]] == [p["label"] for p in predicted[0]["predictions"]]
        assert [p["probability"] for p in model["predictions"]] == pytest.approx(
            [p["probability"] for p in predicted[0]["predictions"]], abs=1e-5
        )


def test_members_validated_on_other_images_are_refused_and_nothing_written(pair, tmp_path, capsys):
    out = tmp_path / "mixed"
    code, _, err = cli(capsys, "ensemble", pair / "a", pair / "other", "--out", out)
    assert code == 2 and len(err.strip().splitlines()) == 1, err
    assert "validated on other images" in err and "--split-seed" in err
    assert not out.exists()
    for argv, message in (
        ([pair / "a"], "two runs or more"),
        ([pair / "a", pair / "a"], "named twice"),
        ([pair / "a", pair / "ens"], "an ensemble itself"),
    ):
        code, _, err = cli(capsys, "ensemble", *argv, "--out", out)
        assert code == 2 and message in err and len(err.strip().splitlines()) == 1, err
        assert not out.exists()
    code, _, err = cli(capsys, "resume", pair / "ens")
    assert code == 2 and "nothing to resume" in err


def test_weights_are_fitted_only_where_they_beat_uniform_on_held_out_validation_images():
    torch.manual_seed(0)
    labels = torch.arange(10).repeat(60)
    good = torch.full((len(labels), 10), -4.0)
    good[torch.arange(len(labels)), labels] = 0.0
    noise = torch.randn(len(labels), 10)
    log_probs = torch.stack([good.log_softmax(1), noise.log_softmax(1)])
    weights, choice = choose_weights(log_probs, labels, seed=0)
    assert choice["chosen"] == "fitted" and weights[0] > 0.9
    assert choice["cross_validated"]["fitted"]["log_loss"] < choice["cross_validated"]["uniform"]["log_loss"]
    same = torch.stack([noise.log_softmax(1), noise.log_softmax(1)])  # nothing to gain: uniform stays
    weights, choice = choose_weights(same, labels, seed=0)
    assert choice["chosen"] == "uniform" and weights.tolist() == [0.5, 0.5]
    assert fit_weights(log_probs, labels).sum() == pytest.approx(1)


def test_the_history_row_holds_the_mixture_s_validation_figures(pair):
    run = RunFolder(pair / "ens")
    (row,) = files.read_csv(pair / "ens" / "history.csv")
    cfg = run.read_config()
    data = run.data(cfg)
    val = split_of(data.train_labels, cfg)[1]
    probs = load_predictor(pair / "ens", "torch").logits(data.train_images[val]).softmax(1)
    assert row["val_accuracy"] == pytest.approx(float((probs.argmax(1) == data.train_labels[val]).float().mean()))


def test_the_python_api_makes_an_ensemble_as_the_command_does(pair, tmp_path):
    run = fmnist.ensemble([fmnist.open(pair / "a"), pair / "b"], tmp_path / "uniform", weights="uniform")
    members = run.config.network["members"]
    assert run.config.network["weights"] == "uniform" and [m["weight"] for m in members] == [0.5, 0.5]
    assert run.metrics["test_accuracy"] == RunFolder(tmp_path / "uniform").metrics()["test_accuracy"]
    assert len(run.predict(torch.rand(2, 1, 28, 28), top_k=1)) == 2  # a Run like any other


def test_train_with_members_trains_seeds_on_one_split_combines_them_and_resumes_after_a_stop(
    pair, tmp_path, capsys, monkeypatch
):
    from fmnist.jobs import train as jobs
    from fmnist.stops import Interrupted
    from fmnist.training.config import make_config

    train_run, real = jobs.train_run, jobs.train_run

    def stopped_before_the_second(cfg, out, **kwargs):
        if out.name == "member-2":
            raise Interrupted()
        return real(cfg, out, **kwargs)

    monkeypatch.setattr(jobs, "train_run", stopped_before_the_second)
    cfg = make_config(
        {
            "model": "shallow",
            "epochs": 1,
            "members": 2,
            "data_dir": str(pair / "data"),
            "verify": False,
            "quiet": True,
            "device": "cpu",
        }
    )
    out = tmp_path / "stopped"
    with pytest.raises(Interrupted):
        train_run(cfg, out)
    assert RunFolder(out).read_config().members == 2 and RunFolder(out / "member-1").status() == "finished"
    assert not (out / "member-2").exists() and not (out / "best.pt").exists()
    monkeypatch.undo()
    first = (out / "member-1" / "best.pt").stat().st_mtime_ns
    code, printed, err = cli(capsys, "resume", out)
    assert code == 0, err
    assert (out / "member-1" / "best.pt").stat().st_mtime_ns == first  # the finished member is not trained again
    assert RunFolder(out / "member-2").status() == "finished" and "an ensemble of 2 runs" in printed
    # the run: the members' ensemble, each member a seed of its own on the first one's split
    cfg = RunFolder(out).read_config()
    assert cfg.model == "ensemble" and cfg.members == 2
    assert [m["run"] for m in cfg.network["members"]] == [str(out / "member-1"), str(out / "member-2")]
    members = [RunFolder(out / f"member-{k}").read_config() for k in (1, 2)]
    assert [c.seed for c in members] == [0, 1] and all(c.validation_seed() == 0 and c.members == 1 for c in members)
    # the first member is, epoch for epoch, the plain run of its seed on that split
    assert untimed(RunFolder(out / "member-1").history()) == untimed(RunFolder(pair / "a").history())
    code, _, err = cli(capsys, *train_args(pair / "data", out, "shallow", "--members", "2"))
    assert code == 1 and "not empty" in err  # a second run into it: refused as any run folder is


def test_members_are_refused_where_each_run_is_one_network(pair, tmp_path, capsys):
    argv = ["study", "--models", "shallow", "simple_cnn", "--members", "2", "--out", tmp_path / "s"]
    code, _, err = cli(capsys, *argv, "--data-dir", pair / "data", "--no-verify", "--quiet")
    assert code == 2 and "the study combines them itself" in err and len(err.strip().splitlines()) == 1, err
    assert not (tmp_path / "s").exists()
    from fmnist.jobs.train import start_run
    from fmnist.training.config import make_config

    with pytest.raises(UsageError, match="made by fmnist train"):  # a sweep's trial starts its run so
        start_run(make_config({"model": "shallow", "members": 2}), tmp_path / "trial")
    assert not (tmp_path / "trial").exists()
