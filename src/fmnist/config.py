"""The one typed configuration of a training run, its checks, and its TOML form.

Values come, lowest priority first, from the dataclass defaults, a TOML file (`--config`), and the
command-line flags the user actually gave. The whole config is saved with every run and checkpoint.
"""

from __future__ import annotations

import dataclasses
import tomllib
import typing
from dataclasses import dataclass
from importlib import resources
from pathlib import Path
from typing import Any

from .augment import parse_augment
from .errors import UsageError
from .schedule import OPTIMIZERS, SCHEDULES


# Fields that are fractions, and whether 1 itself is excluded.
UNIT_FIELDS = {"momentum": True, "label_smoothing": True, "ema": True,
               "warmup": False, "erase_p": False, "target_accuracy": False}


@dataclass
class TrainConfig:
    model: str = "shallow"
    epochs: int = 10
    batch_size: int = 32  # images per optimizer step
    lr: float = 1e-3  # peak step size
    val_split: float = 0.1  # stratified fraction of the training set held out for validation
    seed: int = 0
    device: str = "auto"  # auto: CUDA if present, else CPU
    data_dir: str = ""  # empty: discover (see data.find_dataset)
    verify: bool = True  # check the SHA-256 of the data files
    quiet: bool = False  # no progress bars
    # Beyond the study (the recipes use these; the defaults are the study's plain training):
    optimizer: str = "adam"  # adam, adamw, or sgd (with Nesterov momentum)
    momentum: float = 0.9  # SGD only
    weight_decay: float = 0.0  # on weights only, not biases or BatchNorm
    schedule: str = "constant"  # constant, onecycle (linear decay to 0) or cosine, per step
    warmup: float = 0.0  # fraction of the steps with a linear learning-rate warm-up
    label_smoothing: float = 0.0
    augment: str = ""  # comma-separated: crop, flip, erase
    crop_pad: int = 2  # pixels of shift for "crop"
    erase_p: float = 0.5  # probability per image for "erase"
    ema: float = 0.0  # decay of an exponential moving average of the weights (0: off); the
    # average is what is validated, checkpointed and tested
    tta: bool = False  # average predictions over the image and its mirror image
    tta_shift: int = 0  # and over the image moved this many pixels each way, for the test
    # (validation each epoch leaves the shifts out: five times the cost)
    mixed_precision: bool = False  # bfloat16 autocast (pays on GPUs, not on CPUs without AMX)
    whiten: bool = False  # first conv: fixed patch-whitening filters of the training split
    compile: bool = False  # torch.compile the training step's model (timed apart from training)
    target_accuracy: float = 0.0  # stop once validation accuracy reaches this (0: off)
    recipe: str = ""  # the recipe these values started from, for the record

    def __post_init__(self) -> None:
        check_types(dataclasses.asdict(self))
        if self.epochs <= 0:
            raise UsageError(f"epochs must be positive, got {self.epochs}")
        if self.batch_size <= 0:
            raise UsageError(f"batch_size must be positive, got {self.batch_size}")
        if not self.lr > 0:
            raise UsageError(f"lr must be positive, got {self.lr}")
        if not 0 < self.val_split < 1:
            raise UsageError(f"val_split must lie strictly between 0 and 1, got {self.val_split}")
        if self.optimizer not in OPTIMIZERS:
            raise UsageError(f"optimizer must be one of {', '.join(OPTIMIZERS)}, got {self.optimizer!r}")
        if self.schedule not in SCHEDULES:
            raise UsageError(f"schedule must be one of {', '.join(SCHEDULES)}, got {self.schedule!r}")
        try:
            parse_augment(self.augment)
        except ValueError as e:
            raise UsageError(str(e)) from None
        for key, top_open in UNIT_FIELDS.items():  # fractions: [0, 1) or [0, 1]
            value = getattr(self, key)
            if not (0 <= value < 1 if top_open else 0 <= value <= 1):
                raise UsageError(f"{key} must lie in [0, 1{')' if top_open else ']'}, got {value}")
        if self.weight_decay < 0 or self.crop_pad < 0 or self.tta_shift < 0:
            raise UsageError("weight_decay, crop_pad and tta_shift must not be negative")
        if self.device not in ("auto", "cpu", "mps") and not self.device.startswith("cuda"):
            raise UsageError(f"device must be auto, cpu, cuda[:N] or mps, got {self.device!r}")


def field_types() -> dict[str, type]:
    return typing.get_type_hints(TrainConfig)


def check_types(values: dict[str, Any]) -> None:
    """Reject unknown keys and values of the wrong type, naming the key."""
    types = field_types()
    for key, value in values.items():
        if key not in types:
            raise UsageError(f"unknown config key {key!r}; known keys: {', '.join(types)}")
        want = types[key]
        ok = isinstance(value, want) and not (want is not bool and isinstance(value, bool))
        if want is float and isinstance(value, int) and not isinstance(value, bool):
            ok = True
        if not ok:
            raise UsageError(
                f"config key {key!r} must be {want.__name__}, got {type(value).__name__} {value!r}"
            )


def read_toml(path: str | Path) -> dict[str, Any]:
    """Read a TOML file of config keys (flat, or under a [train] table) and check it."""
    try:
        with open(path, "rb") as f:
            values = tomllib.load(f)
    except FileNotFoundError:
        raise UsageError(f"config file not found: {path}") from None
    except (OSError, tomllib.TOMLDecodeError) as e:
        raise UsageError(f"cannot read config file {path}: {e}") from None
    values = values.get("train", values) if set(values) == {"train"} else values
    check_types(values)
    return values


def make_config(*layers: dict[str, Any]) -> TrainConfig:
    """Build a config from dicts of values, later ones overriding earlier ones."""
    merged: dict[str, Any] = {}
    for layer in layers:
        merged.update({k: v for k, v in layer.items() if v is not None})
    check_types(merged)
    floats = [k for k, t in field_types().items() if t is float]
    merged.update({k: float(merged[k]) for k in floats if k in merged})
    return TrainConfig(**merged)


def to_toml(cfg: TrainConfig) -> str:
    """Write a config as TOML (the form `--config` reads back)."""
    lines = []
    for key, value in dataclasses.asdict(cfg).items():
        if isinstance(value, bool):
            text = "true" if value else "false"
        elif isinstance(value, str):
            text = '"' + value.replace("\\", "\\\\").replace('"', '\\"') + '"'
        else:
            text = repr(value)
        lines.append(f"{key} = {text}")
    return "\n".join(lines) + "\n"


def list_recipes() -> list[str]:
    folder = resources.files("fmnist") / "recipes"
    return sorted(p.name[:-5] for p in folder.iterdir() if p.name.endswith(".toml"))


def read_recipe(name: str) -> dict[str, Any]:
    """The values of a recipe shipped with the package (src/fmnist/recipes/NAME.toml)."""
    if name not in list_recipes():
        raise UsageError(f"unknown recipe {name!r}; choose from {', '.join(list_recipes())}")
    with resources.as_file(resources.files("fmnist") / "recipes" / f"{name}.toml") as path:
        values = read_toml(path)
    return {**values, "recipe": name}
