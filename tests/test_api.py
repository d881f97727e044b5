"""fmnist from Python: the same runs and digits as the commands, a class given in-process, handles
that show themselves in a notebook, one-line errors as FmnistError, and an interrupt that leaves a
run fmnist.resume completes."""

import json
import os
import signal

import pytest
import torch
from conftest import cli, train_args, untimed, write_dataset
from torch import nn

import fmnist
from fmnist.errors import FmnistError

TIMED = ("train_seconds", "best_seconds", "phases", "seconds_per_epoch", "time_to_accuracy", "compile_seconds")


@pytest.fixture
def data_dir(tmp_path):
    write_dataset(tmp_path / "data", train_per_class=20)
    return tmp_path / "data"


def figures(metrics: dict) -> dict:
    return {k: v for k, v in metrics.items() if k not in TIMED}


def where(data_dir) -> dict:
    return {"data_dir": str(data_dir), "verify": False, "quiet": True, "device": "cpu"}


def test_train_in_python_gives_the_command_s_digits(data_dir, tmp_path, capsys):
    assert cli(capsys, *train_args(data_dir, tmp_path / "cli", "shallow", "--epochs", "1", "--seed", "3"))[0] == 0
    run = fmnist.train("shallow", tmp_path / "py", epochs=1, seed=3, **where(data_dir))
    ours, theirs = json.loads((tmp_path / "py" / "metrics.json").read_text()), run.folder.metrics()
    expected = json.loads((tmp_path / "cli" / "metrics.json").read_text())
    assert figures(ours) == figures(expected) and ours == theirs
    assert untimed(run.history.to_dict("records")) == untimed(fmnist.open(tmp_path / "cli").folder.history())
    assert isinstance(fmnist.open(tmp_path / "py"), fmnist.Run) and run.config.seed == 3
    assert cli(capsys, "evaluate", tmp_path / "py", "--data-dir", data_dir, "--no-verify")[0] == 0  # a command reads it


class Tiny(nn.Module):
    def __init__(self, width: int = 4):
        super().__init__()
        self.conv, self.head = nn.Conv2d(1, width, 3, padding=1), nn.Linear(width, 10)

    def forward(self, x):
        return self.head(torch.relu(self.conv(x)).mean((2, 3)))


def test_a_class_given_in_python_trains_predicts_and_is_given_again_elsewhere(data_dir, tmp_path, capsys):
    run = fmnist.train(Tiny, tmp_path / "tiny", epochs=1, net_args={"width": 3}, **where(data_dir))
    cfg = run.config
    assert cfg.model == "Tiny" and cfg.network["kind"] == "code" and "class Tiny" in cfg.network["source"]
    assert run.folder.checkpoint()["model"]["conv.weight"].shape == (3, 1, 3, 3)
    table = run.predict(torch.rand(2, 1, 28, 28), top_k=2)
    assert list(table["rank"]) == [1, 2, 1, 2] and set(table["label"]) <= set(fmnist.CLASSES)
    from fmnist.models import code

    code.LIVE.clear()  # as another process: the class is not given, and its code is not trusted
    with pytest.raises(FmnistError, match="--trust-code"):
        fmnist.open(tmp_path / "tiny").predict(torch.rand(1, 28, 28))
    again = fmnist.open(tmp_path / "tiny", network=Tiny)  # the class given again: no trust needed
    assert len(again.predict(torch.rand(1, 28, 28))) == 3


def test_a_class_typed_in_a_notebook_cell_is_recorded_from_the_cell(tmp_path):
    import linecache

    cell = (
        "import math\n\nclass Cell(nn.Module):\n    def __init__(self):\n        super().__init__()\n"
        "        self.head = nn.Linear(784, 10)\n\n    def forward(self, x):\n"
        "        return self.head(x.flatten(1))\n\nprint('trained')\n"
    )
    name = "/tmp/ipykernel_1/123.py"  # as IPython names a cell's code; linecache holds its text
    linecache.cache[name] = (len(cell), None, cell.splitlines(keepends=True), name)
    scope = {"__name__": "__main__", "nn": nn}
    exec(compile(cell, name, "exec"), scope)
    from fmnist.models.code import build_code, record_class, trusted

    record = record_class(scope["Cell"])
    assert record["source"].count("class Cell") == 1 and "import math" in record["source"]
    assert "print('trained')" not in record["source"]  # the definition, not the rest of the cell
    from fmnist.models import code

    code.LIVE.clear()
    os.environ[code.TRUST_ENV] = "1"
    try:
        assert trusted(record) and build_code(record, {})(torch.rand(2, 1, 28, 28)).shape == (2, 10)
    finally:
        del os.environ[code.TRUST_ENV]


def test_handles_show_their_figures_and_images_in_a_notebook(data_dir, tmp_path):
    run = fmnist.train("shallow", tmp_path / "run", epochs=1, **where(data_dir))
    page = run._repr_html_()
    assert f"{run.metrics['test_accuracy']:.4f}" in page and page.count("<img src='data:image/png;base64,") == 2
    assert "shallow" in repr(run)
    study = fmnist.study(["shallow", Tiny], tmp_path / "study", epochs=1, **where(data_dir))
    page = study._repr_html_()
    assert "<td>Tiny</td>" in page and "<td>shallow</td>" in page and "data:image/png" in page
    assert "<td>the two combined</td>" in page  # the models combined, the last row
    assert list(study.table()["name"]) == ["shallow", "Tiny", "the two combined"]
    assert [r.path for r in study.runs] == [tmp_path / "study" / "shallow", tmp_path / "study" / "Tiny"]
    assert study.combined.path == tmp_path / "study" / "combined" and study.combined.metrics["test_accuracy"] > 0


def test_runs_in_python_are_the_command_s_rows(data_dir, tmp_path, capsys):
    for seed in (0, 1):
        fmnist.train("shallow", tmp_path / "runs" / f"s{seed}", epochs=1, seed=seed, **where(data_dir))
    code, out, _ = cli(capsys, "runs", tmp_path / "runs", "--json")
    assert code == 0
    assert fmnist.runs(tmp_path / "runs").to_dict("records") == json.loads(out)
    filtered = fmnist.runs(tmp_path / "runs", filters=["seed=1"])
    assert list(filtered["run"]) == [str(tmp_path / "runs" / "s1")]


def test_a_mistake_is_an_fmnist_error_with_the_command_s_line(tmp_path, capsys):
    with pytest.raises(FmnistError, match=r"unknown setting 'epoch'; did you mean 'epochs'"):
        fmnist.train("shallow", epoch=3)
    with pytest.raises(FmnistError) as raised:
        fmnist.train("shallow", tmp_path / "x", data_dir=str(tmp_path / "nowhere"))
    code, _, err = cli(capsys, "train", "shallow", "--data-dir", tmp_path / "nowhere", "--out", tmp_path / "y")
    assert code != 0 and err.strip().endswith(str(raised.value)) and "nowhere" in str(raised.value)
    with pytest.raises(FmnistError, match="nowhere does not exist"):
        fmnist.open(tmp_path / "nowhere")
    with pytest.raises(FmnistError, match="unknown model 'shalow'; did you mean 'shallow'"):
        fmnist.train("shalow", tmp_path / "x")
    assert not (tmp_path / "x").exists()


class Interrupts(nn.Module):
    """Sends this process SIGINT (the kernel's interrupt button) at its 4th training step, once."""

    fired = False

    def __init__(self):
        super().__init__()
        self.net, self.calls = nn.Sequential(nn.Flatten(), nn.Linear(784, 10)), 0

    def forward(self, x):
        if self.training:
            self.calls += 1
            if self.calls == 4 and not Interrupts.fired:
                Interrupts.fired = True
                os.kill(os.getpid(), signal.SIGINT)
        return self.net(x)


def test_an_interrupt_leaves_a_run_that_resume_completes(data_dir, tmp_path):
    out = tmp_path / "stopped"
    with pytest.raises(KeyboardInterrupt, match="fmnist.resume"):
        fmnist.train(Interrupts, out, epochs=2, batch_size=16, **where(data_dir))
    run = fmnist.open(out)
    assert run.folder.status() != "finished" and run.metrics is None and run.folder.has_checkpoint(best=False)
    done = fmnist.resume(out)
    assert done.metrics is not None and len(done.history) == 2
