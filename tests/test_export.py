"""Export: every registered model becomes an ONNX file that ONNX Runtime runs with PyTorch's
answers; predict and evaluate take the file; bad runs, paths and files are one-line errors."""

import dataclasses
import json
import os

import numpy as np
import onnx
import onnxruntime as ort
import pytest
import torch
from conftest import cli, train_args, write_dataset

from fmnist import files
from fmnist.device import cores
from fmnist.inference import onnx_export as export
from fmnist.inference import onnx_runtime
from fmnist.inference.onnx_export import sha256_of
from fmnist.inference.onnx_runtime import session_options
from fmnist.jobs.export import export_run
from fmnist.models import create_model, list_models
from fmnist.models.forward import predict_logits
from fmnist.models.whiten import check_whitenable, whiten_first_conv
from fmnist.run.checkpoint import save_checkpoint
from fmnist.run.folder import RunFolder
from fmnist.training.config import TrainConfig


@pytest.fixture(scope="module")
def data_dir(tmp_path_factory):
    root = tmp_path_factory.mktemp("export-data")
    write_dataset(root, train_per_class=20, test_per_class=30)  # 300 test images: batch 256 is real
    return root


def fake_run(folder, data_dir, name, **settings):
    """A run folder holding freshly initialised weights (a whitened stem where the model has one
    that fits), as a trained run would hold them."""
    cfg = TrainConfig(model=name, data_dir=str(data_dir), verify=False, quiet=True, **settings)
    torch.manual_seed(0)
    model = create_model(name)
    try:
        check_whitenable(model)
        whiten_first_conv(model, torch.rand(64, 1, 28, 28))
    except ValueError:
        pass
    for m in model.modules():  # BatchNorm statistics that are not the identity
        if isinstance(m, torch.nn.BatchNorm2d):
            m.running_mean.uniform_(-0.2, 0.2)
            m.running_var.uniform_(0.5, 2.0)
    folder.mkdir(parents=True)
    files.write_json(folder / "config.json", dataclasses.asdict(cfg))
    save_checkpoint(folder / "best.pt", {"model": model.state_dict(), "config": dataclasses.asdict(cfg), "epoch": 1})
    return folder


# WRN-16-8 and WRN-28-10 are wrn_16_4's layers, wider and deeper: their exports' checks on 256
# images cost 25 and 58 s of a CPU, and nothing wrn_16_4 does not exercise.
EXPORTED = [m for m in list_models() if m not in ("wrn_16_8", "wrn_28_10")]


@pytest.mark.parametrize("name", EXPORTED)
def test_every_model_exports_and_runs_with_pytorchs_answers(name, data_dir, tmp_path):
    run = fake_run(tmp_path / name, data_dir, name)
    description = export_run(run)
    path = run / "model.onnx"
    onnx.checker.check_model(onnx.load(str(path)), full_check=True)
    session = ort.InferenceSession(str(path), providers=["CPUExecutionProvider"])
    model, _ = RunFolder(run).load_model()[:2]
    for n in (1, 5, 64):  # the batch dimension is dynamic
        x = torch.rand(n, 1, 28, 28)
        ours = session.run(None, {"images": x.numpy()})[0]
        assert ours.shape == (n, 10)
        np.testing.assert_allclose(ours, predict_logits(model, x).numpy(), atol=1e-4)
    assert description["sha256"] == sha256_of(path)
    assert set(description["checks"]["max_abs_logit_difference"]) == {"1", "7", "256"}


def test_the_description_says_what_the_file_is(data_dir, tmp_path):
    run = fake_run(tmp_path / "run", data_dir, "simple_cnn")
    files.write_json(run / "metrics.json", {"test_accuracy": 0.8765, "best_epoch": 3})
    out = tmp_path / "elsewhere" / "m.onnx"
    out.parent.mkdir()
    export_run(run, out)
    d = json.loads((tmp_path / "elsewhere" / "m.onnx.json").read_text())
    assert d["file"] == "m.onnx" and d["sha256"] == sha256_of(out)
    assert d["classes"][0] == "T-shirt/top" and len(d["classes"]) == 10
    assert d["input"] == {"name": "images", "shape": ["batch", 1, 28, 28], "dtype": "float32", "range": [0.0, 1.0]}
    assert d["source"]["test_accuracy"] == 0.8765 and d["source"]["model"] == "simple_cnn"
    assert d["source"]["checkpoint_sha256"] == sha256_of(run / "best.pt")
    assert d["opset"] >= 18 and d["versions"]["onnx"] == onnx.__version__ and "cropped" in d["preprocessing"]


def test_test_time_augmentation_is_part_of_the_exported_model(data_dir, tmp_path, capsys):
    run = fake_run(tmp_path / "run", data_dir, "resnet_sprint", tta=True, tta_shift=1)
    export_run(run)
    session = ort.InferenceSession(str(run / "model.onnx"), providers=["CPUExecutionProvider"])
    model, _ = RunFolder(run).load_model()[:2]
    x = torch.rand(4, 1, 28, 28)
    ours = torch.from_numpy(session.run(None, {"images": x.numpy()})[0])
    assert torch.allclose(ours, predict_logits(model, x, tta=True, tta_shift=1), atol=1e-4)
    assert not torch.allclose(ours, predict_logits(model, x), atol=1e-3)


def test_predict_and_evaluate_give_the_same_answers_from_the_file(data_dir, tmp_path, capsys):
    run = tmp_path / "run"
    assert cli(capsys, *train_args(data_dir, run, "simple_cnn", "--epochs", "1", "--tta"))[0] == 0
    assert cli(capsys, "export", run)[0] == 0
    image = tmp_path / "x.png"
    from PIL import Image

    Image.fromarray((np.tri(28, 20) * 200).astype(np.uint8)).save(image)
    answers = []
    for source, backend in ((run, "torch"), (run, "onnx"), (run / "model.onnx", None)):
        argv = ["predict", source, image, "--json", "--top-k", "10"] + (["--backend", backend] if backend else [])
        code, out, _ = cli(capsys, *argv)
        assert code == 0
        answers.append(json.loads(out)[0]["predictions"])
    for other in answers[1:]:
        assert [p["label"] for p in other] == [p["label"] for p in answers[0]]
        assert [p["probability"] for p in other] == pytest.approx([p["probability"] for p in answers[0]], abs=1e-5)
    recorded = json.loads((run / "metrics.json").read_text())["test_accuracy"]
    code, out, _ = cli(capsys, "evaluate", run / "model.onnx", "--data-dir", data_dir, "--no-verify")
    assert code == 0 and f"test accuracy {recorded:.4f}" in out and f"the run recorded {recorded:.4f}" in out


def test_a_model_that_fails_a_check_is_not_written(data_dir, tmp_path, capsys, monkeypatch):
    run = fake_run(tmp_path / "run", data_dir, "deep_cnn")
    monkeypatch.setattr(export, "TOLERANCE", -1.0)  # no difference is small enough
    code, _, err = cli(capsys, "export", run)
    assert code == 1 and "check failed: at batch 1 ONNX Runtime's logits differ from PyTorch's" in err
    assert sorted(p.name for p in run.iterdir()) == ["best.pt", "config.json"]


def test_onnx_runtime_is_set_up_for_this_machine(monkeypatch):
    assert cores() == len(os.sched_getaffinity(0))  # the cores this process may use, not the machine's
    monkeypatch.setattr(onnx_runtime, "cores", lambda: 5)  # a machine of five, whatever this one has
    options = session_options()
    assert options.intra_op_num_threads == 5
    assert options.get_session_config_entry("session.intra_op.allow_spinning") == "0"
    assert options.graph_optimization_level == ort.GraphOptimizationLevel.ORT_ENABLE_ALL


def other_onnx(path, model, shape):
    torch.onnx.export(model.eval(), (torch.rand(*shape),), str(path), dynamo=True, input_names=["images"])


@pytest.mark.parametrize(
    "damage, message",
    [
        ("no checkpoint", "missing checkpoint"),
        ("unknown model", "model 'resnet1000' is not one of fmnist's"),
        ("missing folder", "folder {tmp}/nowhere does not exist"),
        ("unwritable folder", "cannot write /proc/m.onnx"),
    ],
)
def test_bad_runs_and_outputs_are_one_line_errors(data_dir, tmp_path, capsys, damage, message):
    run = fake_run(tmp_path / "run", data_dir, "shallow")
    argv = ["export", run]
    if damage == "no checkpoint":
        (run / "best.pt").unlink()
    elif damage == "unknown model":
        files.write_json(run / "config.json", {**json.loads((run / "config.json").read_text()), "model": "resnet1000"})
    elif damage == "missing folder":
        argv += ["--out", tmp_path / "nowhere" / "m.onnx"]
    else:
        argv += ["--out", "/proc/m.onnx"]
    before = sorted(p.name for p in run.iterdir())
    code, _, err = cli(capsys, *argv)
    assert code == 1 and message.format(tmp=tmp_path) in err and len(err.strip().splitlines()) == 1, err
    assert sorted(p.name for p in run.iterdir()) == before


@pytest.mark.parametrize(
    "kind, message",
    [
        ("not onnx", "is not a readable ONNX model"),
        ("truncated", "is not a readable ONNX model"),
        ("wrong input", "takes input ['batch', 3, 32, 32]"),
        ("seven classes", "gives output ['batch', 7], not [N, 10]"),
    ],
)
def test_bad_onnx_files_are_one_line_errors(data_dir, tmp_path, capsys, kind, message):
    path = tmp_path / "m.onnx"
    if kind == "not onnx":
        path.write_bytes(os.urandom(3000))
    elif kind == "truncated":
        export_run(fake_run(tmp_path / "run", data_dir, "simple_cnn"), path)
        path.write_bytes(path.read_bytes()[:5000])
    elif kind == "wrong input":
        net = torch.nn.Sequential(torch.nn.Conv2d(3, 4, 3), torch.nn.Flatten(), torch.nn.LazyLinear(10))
        net(torch.rand(2, 3, 32, 32))
        torch.onnx.export(
            net.eval(),
            (torch.rand(2, 3, 32, 32),),
            str(path),
            dynamo=True,
            dynamic_shapes=({0: torch.export.Dim("batch")},),
        )
    else:
        torch.onnx.export(
            torch.nn.Sequential(torch.nn.Flatten(), torch.nn.Linear(784, 7)).eval(),
            (torch.rand(2, 1, 28, 28),),
            str(path),
            dynamo=True,
            dynamic_shapes=({0: torch.export.Dim("batch")},),
        )
    image = tmp_path / "x.png"
    from PIL import Image

    Image.new("L", (20, 20), 255).save(image)
    for argv in (["predict", path, image], ["evaluate", path, "--data-dir", data_dir, "--no-verify"]):
        code, _, err = cli(capsys, *argv)
        assert code == 1 and message in err and len(err.strip().splitlines()) == 1, (argv, err)
