"""The one typed configuration of a training run, its checks, and its TOML form.

Values come, lowest priority first, from the dataclass defaults, a TOML file (`--config`), and the
command-line flags the user actually gave. The whole config is saved with every run and checkpoint.
"""

from __future__ import annotations

import dataclasses
import tomllib
import typing
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from .errors import UsageError


@dataclass
class TrainConfig:
    model: str = "shallow"
    epochs: int = 10
    batch_size: int = 32  # images per optimizer step
    lr: float = 1e-3  # Adam step size
    val_split: float = 0.1  # stratified fraction of the training set held out for validation
    seed: int = 0
    device: str = "auto"  # auto: CUDA if present, else CPU
    data_dir: str = ""  # empty: discover (see data.find_dataset)
    verify: bool = True  # check the SHA-256 of the data files
    quiet: bool = False  # no progress bars

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
    if "lr" in merged:
        merged["lr"] = float(merged["lr"])
    if "val_split" in merged:
        merged["val_split"] = float(merged["val_split"])
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
