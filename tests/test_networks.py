"""Your own network: a TOML network file (Keras-named layers, arguments) or a Python class, trained
and used by every command as a shipped model is; the study's four models as files; every mistake
in a file one line before anything is written; a class's code run only when trusted."""

import json
import textwrap

import pytest
import torch
from conftest import cli, free_port, start_server, train_args, untimed, write_dataset
from torch import nn

from fmnist.models import create_model
from fmnist.run.checkpoint import load_checkpoint
from fmnist.run.folder import RunFolder


@pytest.fixture
def data_dir(tmp_path):
    write_dataset(tmp_path / "data", train_per_class=20)
    return tmp_path / "data"


# The study's builders as they were written in Python before the network files replaced them: the
# files must build these modules, in this order, so a seed gives the same weights and digits.
def conv_relu(c_in, c_out, padding=0, bn=False):
    return [nn.Conv2d(c_in, c_out, 3, padding=padding), *([nn.BatchNorm2d(c_out)] if bn else []), nn.ReLU()]


def reference(name: str) -> nn.Module:
    if name == "shallow":
        return nn.Sequential(nn.Flatten(), nn.Linear(784, 128), nn.ReLU(), nn.Linear(128, 10))
    if name == "simple_cnn":  # (each module made in the order it runs: the order draws the weights)
        return nn.Sequential(
            *conv_relu(1, 32), nn.MaxPool2d(2), nn.Flatten(), nn.Linear(5408, 128), nn.ReLU(), nn.Linear(128, 10)
        )
    if name == "deep_cnn":
        return nn.Sequential(
            *conv_relu(1, 32),
            nn.MaxPool2d(2),
            *conv_relu(32, 64),
            nn.MaxPool2d(2),
            *conv_relu(64, 128),
            *[nn.Flatten(), nn.Linear(1152, 128), nn.ReLU(), nn.Dropout(0.5), nn.Linear(128, 10)],
        )

    def stage(a, b):
        return [*conv_relu(a, b, 1, bn=True), *conv_relu(b, b, 1), nn.MaxPool2d(2), nn.Dropout(0.25)]

    body = [*stage(1, 32), *stage(32, 64), *conv_relu(64, 128, 1, bn=True), nn.Flatten()]
    head = [nn.Linear(6272, 256), nn.ReLU(), nn.Dropout(0.5), nn.Linear(256, 128), nn.ReLU(), nn.Linear(128, 10)]
    return nn.Sequential(*body, *head)


STUDY = ["shallow", "simple_cnn", "deep_cnn", "deeper_cnn"]


@pytest.mark.parametrize("name", STUDY)
def test_a_study_model_s_file_builds_its_builder_s_modules_and_weights(name):
    torch.manual_seed(0)
    expected = reference(name)
    torch.manual_seed(0)
    built = create_model(name)
    assert [type(m) for m in built] == [type(m) for m in expected]
    for (k, a), (j, b) in zip(built.state_dict().items(), expected.state_dict().items(), strict=True):
        assert k == j and torch.equal(a, b), k
    for a, b in zip(built.modules(), expected.modules()):  # the same hyperparameters (BatchNorm's, pools')
        assert repr(a) == repr(b)
    assert built.training
    x = torch.rand(3, 1, 28, 28)
    assert torch.equal(built.eval()(x), expected.eval()(x))


@pytest.mark.parametrize("name", STUDY)
def test_a_study_model_s_file_trains_to_its_builder_s_history(name, data_dir, register):
    # fit, as `fmnist train` calls it (without the test figures the history does not depend on)
    from fmnist import TrainConfig, build_model, fit, load_fashion_mnist, stratified_split

    register(lambda: reference(name), name=f"reference_{name}")
    data = load_fashion_mnist(data_dir, verify=False, progress=False)
    results = []
    for model in (name, f"reference_{name}"):
        cfg = TrainConfig(model=model, epochs=1, quiet=True, device="cpu")
        train, val = stratified_split(data.train_labels, cfg.val_split, cfg.seed)
        net = build_model(cfg)
        history = fit(
            net,
            (data.train_images[train], data.train_labels[train]),
            (data.train_images[val], data.train_labels[val]),
            cfg,
        )
        results.append((untimed(history), net.state_dict()))
    (ours, a), (theirs, b) = results
    assert ours == theirs and len(ours) == 1
    assert all(torch.equal(a[k], b[k]) for k in b)


WIDER = """\
name = "wider"
description = "a wider first convolution, then a residual block"

[args]
width = 8

[[layers]]
type = "Conv2D"
filters = "$width"
kernel_size = 3
activation = "relu"

[[layers]]
type = "MaxPooling2D"

[[layers]]
type = "Residual"
layers = [
  { type = "Conv2D", filters = "$width", kernel_size = 3, padding = "same" },
  { type = "BatchNormalization" },
]
activation = "relu"

[[layers]]
type = "GlobalAveragePooling2D"

[[layers]]
type = "Dense"
units = 10
activation = "softmax"
"""


def test_a_network_file_with_an_argument_trains_and_its_run_needs_the_file_no_more(data_dir, tmp_path, capsys):
    net = tmp_path / "wider.toml"
    net.write_text(WIDER)
    out = tmp_path / "run"
    code, stdout, err = cli(capsys, *train_args(data_dir, out, net, "--epochs", "1", "--net-arg", "width=6"))
    assert code == 0, err
    cfg = json.loads((out / "config.json").read_text())
    assert cfg["model"] == "wider" and cfg["net_args"] == {"width": 6}
    assert cfg["network"]["layers"][0]["filters"] == "$width" and len(cfg["network"]["sha256"]) == 64
    weights = load_checkpoint(out / "best.pt")["model"]
    assert weights["0.weight"].shape == (6, 1, 3, 3) and weights["3.body.1.weight"].shape == (6,)
    assert load_checkpoint(out / "best.pt")["config"]["network"] == cfg["network"]
    # Keras's BatchNormalization defaults: momentum 0.99 (PyTorch's 0.01), epsilon 0.001
    model, _, _ = RunFolder(out).load_model()
    assert model[3].body[1].momentum == pytest.approx(0.01) and model[3].body[1].eps == 0.001
    net.unlink()
    assert cli(capsys, "evaluate", out, "--data-dir", data_dir, "--no-verify")[0] == 0
    assert cli(capsys, "export", out)[0] == 0 and (out / "model.onnx").is_file()  # residual block included
    code, stdout, _ = cli(capsys, "runs", tmp_path)
    assert code == 0 and "wider" in stdout


def test_an_audit_s_folds_train_a_network_file(data_dir, tmp_path, capsys):
    (tmp_path / "wider.toml").write_text(WIDER)
    argv = ["audit", "--model", tmp_path / "wider.toml", "--net-arg", "width=3", "--folds", "2", "--repeats", "1"]
    argv += [
        "--epochs",
        "1",
        "--batch-size",
        "32",
        "--no-whiten",
        "--quiet",
        "--device",
        "cpu",
        "--data-dir",
        data_dir,
        "--no-verify",
    ]
    code, out, err = cli(capsys, *argv, "--out", tmp_path / "au")
    assert code == 0, err
    for fold in ("fold-1", "fold-2"):
        cfg = json.loads((tmp_path / "au" / fold / "config.json").read_text())
        assert cfg["model"] == "wider" and cfg["net_args"] == {"width": 3} and cfg["network"]["kind"] == "layers"
        assert load_checkpoint(tmp_path / "au" / fold / "best.pt")["model"]["0.weight"].shape[0] == 3


NET_CLASS = """\
import torch
from torch import nn


class WideNet(nn.Module):
    def __init__(self, width: int = 4):
        super().__init__()
        self.conv = nn.Conv2d(1, width, 3, padding=1)
        self.head = nn.Linear(width, 10)

    def forward(self, x):
        return self.head(torch.relu(self.conv(x)).mean((2, 3)))


class FiveWay(WideNet):
    def forward(self, x):
        return super().forward(x)[:, :5]
"""


@pytest.fixture
def class_run(data_dir, tmp_path, capsys):
    """A run of a class from a file in a temporary folder, the file deleted afterwards."""
    code_dir = tmp_path / "code"
    code_dir.mkdir()
    (code_dir / "my_nets.py").write_text(NET_CLASS)
    out = tmp_path / "class-run"
    spec = f"{code_dir / 'my_nets.py'}:WideNet"
    code, _, err = cli(capsys, *train_args(data_dir, out, spec, "--epochs", "1", "--net-arg", "width=5"))
    assert code == 0, err
    (code_dir / "my_nets.py").unlink()
    from fmnist.models import code as network_code

    network_code.TRUSTED.clear()  # a new process: it has not been given the class
    return out


def test_a_class_s_run_is_rebuilt_from_its_own_copy_only_when_trusted(class_run, data_dir, tmp_path, capsys):
    cfg = json.loads((class_run / "config.json").read_text())
    assert (
        cfg["model"] == "WideNet" and cfg["network"]["kind"] == "code" and "class WideNet" in cfg["network"]["source"]
    )
    before = (class_run / "metrics.json").read_bytes()
    image = tmp_path / "one.png"
    from PIL import Image

    Image.new("L", (28, 28), 0).save(image)
    for argv in (
        ["evaluate", class_run, "--data-dir", data_dir, "--no-verify"],
        ["export", class_run],
        ["predict", class_run, image],
        ["explain", class_run, image, "--out", tmp_path / "maps"],
        ["resume", class_run, "--epochs", "2"],
    ):
        code, out, err = cli(capsys, *argv)
        assert code == 2 and len(err.strip().splitlines()) == 1, (argv, err)
        assert "WideNet" in err and cfg["network"]["sha256"][:12] in err and "--trust-code" in err, err
    assert (class_run / "metrics.json").read_bytes() == before and not (class_run / "model.onnx").exists()
    assert not (tmp_path / "maps").exists()
    evaluated = cli(capsys, "evaluate", class_run, "--data-dir", data_dir, "--no-verify", "--trust-code")
    assert evaluated[0] == 0, evaluated[2]
    assert cli(capsys, "export", class_run, "--trust-code")[0] == 0 and (class_run / "model.onnx").is_file()
    code, out, _ = cli(capsys, "predict", class_run, image, "--json", "--trust-code")
    assert code == 0 and len(json.loads(out)) == 1
    import os

    assert "FMNIST_TRUST_CODE" not in os.environ  # --trust-code was the command's, not the process's


def test_a_class_s_run_is_served_only_when_trusted_and_its_onnx_file_without_code(class_run, capsys):
    import subprocess
    import sys

    import httpx

    refused = subprocess.run(
        [sys.executable, "-m", "fmnist", "serve", class_run, "--port", str(free_port())],
        capture_output=True,
        text=True,
        timeout=120,
    )
    assert refused.returncode == 2 and "--trust-code" in refused.stderr.strip().splitlines()[-1]
    body = {"inputs": [{"name": "images", "shape": [1, 784], "datatype": "FP32", "data": [0.5] * 784}]}
    base, proc = start_server(class_run, "--trust-code", "--backend", "torch")
    try:
        answer = httpx.post(f"{base}/v2/models/class-run/infer", json=body, timeout=30)
        assert answer.status_code == 200, answer.text
        logits = answer.json()["outputs"][0]["data"]
    finally:
        proc.terminate()
        proc.wait(30)
    exported = cli(capsys, "export", class_run, "--trust-code")
    assert exported[0] == 0, exported[2]
    base, proc = start_server(class_run / "model.onnx")  # no --trust-code: the file is no code
    try:
        answer = httpx.post(f"{base}/v2/models/model/infer", json=body, timeout=30)
        assert answer.status_code == 200, answer.text
        assert answer.json()["outputs"][0]["data"] == pytest.approx(logits, abs=1e-4)
    finally:
        proc.terminate()
        proc.wait(30)


def test_opening_a_received_run_never_runs_its_code(data_dir, tmp_path, capsys, class_run):
    marker = tmp_path / "ran"
    cfg = json.loads((class_run / "config.json").read_text())
    source = f"open({str(marker)!r}, 'w').close()\n" + cfg["network"]["source"]
    import hashlib

    cfg["network"].update(source=source, sha256=hashlib.sha256(source.encode()).hexdigest())
    (class_run / "config.json").write_text(json.dumps(cfg))
    assert cli(capsys, "runs", tmp_path)[0] == 0
    assert cli(capsys, "runs", "compare", class_run, class_run)[0] == 0
    assert cli(capsys, "evaluate", class_run, "--data-dir", data_dir, "--no-verify")[0] == 2
    assert not marker.exists()
    assert cli(capsys, "evaluate", class_run, "--data-dir", data_dir, "--no-verify", "--trust-code")[0] == 0
    assert marker.exists()  # the check above could fail: trusted, the recorded code does run


def test_a_study_compares_shipped_models_a_network_file_and_a_class(data_dir, tmp_path, capsys):
    (tmp_path / "wider.toml").write_text(WIDER)
    (tmp_path / "my_nets.py").write_text(NET_CLASS)
    models = ["shallow", "simple_cnn", str(tmp_path / "wider.toml"), f"{tmp_path / 'my_nets.py'}:WideNet"]
    argv = ["study", "--models", *models, "--epochs", "1", "--out", tmp_path / "study", "--data-dir", data_dir]
    code, out, err = cli(capsys, *argv, "--no-verify", "--quiet", "--device", "cpu", "--net-arg", "width=3")
    assert code == 0, err
    summary = json.loads((tmp_path / "study" / "summary.json").read_text())
    assert [m["name"] for m in summary["models"]] == ["shallow", "simple_cnn", "wider", "WideNet"]
    widths = {m["name"]: m["network"]["net_args"] for m in summary["models"]}
    assert widths == {"shallow": {}, "simple_cnn": {}, "wider": {"width": 3}, "WideNet": {"width": 3}}
    report = (tmp_path / "study" / "report.html").read_text()
    for name in ("shallow", "simple_cnn", "wider", "WideNet", "GlobalAveragePooling2D", "Residual", "class WideNet"):
        assert name in report, name
    assert all(f"<td>{m['name']}</td>" in report for m in summary["models"])  # each a row of the comparison


def test_a_sweep_searches_a_network_file_s_argument(data_dir, tmp_path, capsys):
    (tmp_path / "wider.toml").write_text(WIDER)
    space = tmp_path / "space.toml"
    space.write_text(
        f'[fixed]\nmodel = "{tmp_path / "wider.toml"}"\nepochs = 1\n[search]\nnet_args.width = {{ choices = [3, 5] }}\n'
    )
    argv = ["sweep", "run", "w", "--dir", tmp_path / "sweeps", "--space", space, "--trials", "2", "--sampler", "grid"]
    code, out, err = cli(capsys, *argv, "--data-dir", data_dir, "--no-verify", "--device", "cpu")
    assert code == 0, err
    runs = sorted((tmp_path / "sweeps" / "w").glob("trial-*"))
    widths = {json.loads((r / "config.json").read_text())["net_args"]["width"] for r in runs}
    assert widths == {3, 5}  # each grid point once
    assert {load_checkpoint(r / "best.pt")["model"]["0.weight"].shape[0] for r in runs} == {3, 5}


def layers(*tables: str) -> str:
    return 'name = "bad"\n' + "".join(f"[[layers]]\n{textwrap.dedent(t)}\n" for t in tables)


DENSE10 = 'type = "Dense"\nunits = 10'
BAD_FILES = {
    "unknown type": (layers('type = "Conv3D"', "type = 'Flatten'", DENSE10), "layer 1: unknown type 'Conv3D'"),
    "unknown key": (
        layers('type = "Conv2D"\nfilter = 8\nkernel_size = 3', "type = 'Flatten'", DENSE10),
        "layer 1 (Conv2D): unknown key 'filter'; Conv2D takes filters, kernel_size",
    ),
    "bad value": (
        layers('type = "Conv2D"\nfilters = 8\nkernel_size = 3\npadding = "full"', "type = 'Flatten'", DENSE10),
        "layer 1 (Conv2D): padding must be one of 'valid', 'same', got 'full'",
    ),
    "bad activation": (
        layers("type = 'Flatten'", 'type = "Dense"\nunits = 10\nactivation = "rellu"'),
        "layer 2 (Dense): activation must be one of 'linear', 'relu'",
    ),
    "missing key": (layers("type = 'Flatten'", 'type = "Dense"'), "layer 2 (Dense): units is required"),
    "dense on a map": (
        layers('type = "Conv2D"\nfilters = 8\nkernel_size = 3', DENSE10),
        "layer 2 (Dense): needs a flat input, got a 8×26×26 map: put a Flatten",
    ),
    "conv on features": (
        layers("type = 'Flatten'", 'type = "Conv2D"\nfilters = 8\nkernel_size = 3', DENSE10),
        "layer 2 (Conv2D): needs an image input",
    ),
    "wrong output size": (
        layers("type = 'Flatten'", 'type = "Dense"\nunits = 7'),
        "ends in 7 outputs; it must end in 10",
    ),
    "softmax inside": (
        layers("type = 'Flatten'", 'type = "Dense"\nunits = 64\nactivation = "softmax"', DENSE10),
        "layer 2 (Dense): softmax only as the network's last activation",
    ),
    "kernel too large": (
        layers('type = "Conv2D"\nfilters = 8\nkernel_size = 29', "type = 'Flatten'", DENSE10),
        "layer 1 (Conv2D): does not fit its 1×28×28 input",
    ),
    "undeclared argument": (
        layers('type = "Conv2D"\nfilters = "$width"\nkernel_size = 3', "type = 'Flatten'", DENSE10),
        "layer 1 (Conv2D): filters: no argument 'width' (declared: none)",
    ),
    "residual changes the shape": (
        layers(
            'type = "Residual"\nlayers = [{ type = "Conv2D", filters = 4, kernel_size = 3 }]',
            "type = 'Flatten'",
            DENSE10,
        ),
        "layer 1 (Residual): its layers give 4×26×26, not its input's 1×28×28",
    ),
    "no layers": ('name = "bad"\n', "no layers; add [[layers]] tables"),
    "no name": (layers(DENSE10).replace('name = "bad"\n', ""), "'name' must be a word"),
    "unknown top key": ('name = "bad"\nlayer = []\n', "unknown key 'layer'; a network file has name"),
    "not TOML": ("name = bad\n", "cannot read network file"),
}


@pytest.mark.parametrize("kind", BAD_FILES)
def test_every_bad_network_file_is_one_line_before_anything_is_written(kind, data_dir, tmp_path, capsys):
    text, message = BAD_FILES[kind]
    (tmp_path / "bad.toml").write_text(text)
    code, out, err = cli(capsys, *train_args(data_dir, tmp_path / "run", tmp_path / "bad.toml"))
    assert code == 2 and len(err.strip().splitlines()) == 1, err
    assert message in err and "bad.toml" in err, err
    assert not (tmp_path / "run").exists()


@pytest.mark.parametrize(
    "spec, extra, message",
    [
        ("wider.toml", ["--net-arg", "widht=4"], "no argument 'widht'; did you mean 'width'?"),
        ("wider.toml", ["--net-arg", "width=wide"], "argument 'width' must be int, got 'wide'"),
        ("wider.toml", ["--net-arg", "width"], "--net-arg 'width': give NAME=VALUE"),
        ("missing.toml", [], "network file not found"),
        ("my_nets.py:FiveWay", [], "maps a [2, 1, 28, 28] batch to [2, 5]; a network must give [N, 10] logits"),
        ("my_nets.py:Missing", [], "no class 'Missing'; it defines: WideNet, FiveWay"),
        ("my_nets.py:WideNet", ["--net-arg", "depth=2"], "WideNet(depth=2) failed: TypeError"),
        ("my_nets.py", [], "name the class in it to train, as"),
        ("shallow", ["--net-arg", "width=2"], "model 'shallow' takes no arguments"),
    ],
)
def test_a_bad_argument_or_class_is_one_line_and_no_run(spec, extra, message, data_dir, tmp_path, capsys, monkeypatch):
    monkeypatch.chdir(tmp_path)
    (tmp_path / "wider.toml").write_text(WIDER)
    (tmp_path / "my_nets.py").write_text(NET_CLASS)
    code, out, err = cli(capsys, *train_args(data_dir, tmp_path / "run", spec, *extra))
    assert code == 2 and len(err.strip().splitlines()) == 1, err
    assert message in err, err
    assert not (tmp_path / "run").exists()


def test_models_shows_a_network_file_s_layers(tmp_path, capsys):
    (tmp_path / "wider.toml").write_text(WIDER)
    code, out, err = cli(capsys, "models", tmp_path / "wider.toml", "--net-arg", "width=6")
    assert code == 0, err
    lines = out.splitlines()
    assert lines[0].startswith("wider: a wider first convolution")
    assert [line.split()[:3] for line in lines[2:8]] == [
        ["1", "Conv2D", "6×26×26"],
        ["2", "MaxPooling2D", "6×13×13"],
        ["3", "Residual", "6×13×13"],
        ["3.1", "Conv2D", "6×13×13"],
        ["3.2", "BatchNormalization", "6×13×13"],
        ["4", "GlobalAveragePooling2D", "6"],
    ]
    params = 6 * 9 + 6 + 6 * 6 * 9 + 6 + 2 * 6 + 6 * 10 + 10
    assert f"total {params:,} parameters" in lines[-1]


def test_the_examples_build_as_the_readme_says(capsys):
    from pathlib import Path

    examples = Path(__file__).parent.parent / "examples"
    code, out, err = cli(capsys, "models", examples / "nets" / "deep_cnn_plus.toml")
    assert code == 0 and "total 477,610 parameters, 28.89 MFLOP" in out, err
    code, out, err = cli(capsys, "models", f"{examples / 'my_nets.py'}:WideNet", "--net-arg", "width=8")
    assert code == 0 and out.startswith("WideNet"), err
