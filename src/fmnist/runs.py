"""Reading a run folder back: its data, and its model with the weights of a checkpoint.

Every command that works on a finished run (evaluate, predict, export, serve) starts here.
"""

from __future__ import annotations

from pathlib import Path

from torch import nn

from .config import TrainConfig, make_config
from .data import FashionMNIST, load_fashion_mnist
from .device import resolve_device
from .errors import FmnistError
from .files import load_checkpoint, read_json
from .infer import prepare
from .models import create_model, list_models


def load_data(cfg: TrainConfig) -> FashionMNIST:
    return load_fashion_mnist(cfg.data_dir or None, verify=cfg.verify, progress=not cfg.quiet)


def load_run_model(run_dir: Path, checkpoint: str = "best.pt", device: str = "cpu") -> tuple[nn.Module, TrainConfig]:
    """The model of a run folder with the weights of `checkpoint`, and the run's config."""
    run_dir = Path(run_dir)
    if not run_dir.is_dir():
        raise FmnistError(f"run folder {run_dir} does not exist")
    cfg = make_config(read_json(run_dir / "config.json"))
    if cfg.model not in list_models():
        raise FmnistError(f"{run_dir}: its model {cfg.model!r} is not one of fmnist's ({', '.join(list_models())})")
    state = load_checkpoint(run_dir / checkpoint)
    if state.get("config", {}).get("model") != cfg.model:
        raise FmnistError(f"{run_dir / checkpoint} holds a {state.get('config', {}).get('model')!r} "
                          f"model, but the run is for {cfg.model!r}")
    model = create_model(cfg.model)
    try:
        model.load_state_dict(state["model"])
    except (RuntimeError, KeyError, TypeError) as e:
        raise FmnistError(f"{run_dir / checkpoint} does not fit model {cfg.model!r}: "
                          f"{str(e).splitlines()[0]}") from None
    return prepare(model, resolve_device(device)).eval(), cfg


