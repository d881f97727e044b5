"""The one typed configuration of a training run, its checks, and its TOML form.

Values come, lowest priority first, from the dataclass defaults, a TOML file (`--config`), and the
command-line flags the user actually gave. The whole config is saved with every run and checkpoint.
"""

from __future__ import annotations

import dataclasses
import json
import tomllib
import typing
from dataclasses import dataclass
from importlib import resources
from pathlib import Path
from typing import Any

from fmnist.device import check_device_name
from fmnist.errors import UsageError
from fmnist.models.ensemble import is_ensemble, member_names
from fmnist.models.network import check_record
from fmnist.training.augment import parse_augment
from fmnist.training.schedule import OPTIMIZERS, RENAMED, SCHEDULES

# Each field is one of three kinds, and that decides where it may come from and change:
HYPER = "hyper"  # what training does: a sweep may search it, a checkpoint must match it
RUN = "run"  # where and how it runs (device, data, output): a resume may change it
RECORD = "record"  # provenance kept with the run, set by fmnist itself, never by a flag


# And what a resume may do with it: keep it as the run has it, change it, or only make it larger.
FIXED, CHANGE, LENGTHEN = "fixed", "change", "lengthen"


def hyper(default: Any, help: str, resume: str = FIXED, factory: Any = None) -> Any:
    meta = {"kind": HYPER, "help": help, "resume": resume}
    if factory is not None:
        return dataclasses.field(default_factory=factory, metadata=meta)
    return dataclasses.field(default=default, metadata=meta)


def run(default: Any, help: str) -> Any:
    return dataclasses.field(default=default, metadata={"kind": RUN, "help": help, "resume": CHANGE})


def record(default: Any, help: str, factory: Any = None) -> Any:
    meta = {"kind": RECORD, "help": help, "resume": FIXED}
    if factory is not None:
        return dataclasses.field(default_factory=factory, metadata=meta)
    return dataclasses.field(default=default, metadata=meta)


# Fields that are fractions, and whether 1 itself is excluded.
UNIT_FIELDS = {
    "momentum": True,
    "label_smoothing": True,
    "ema": True,
    "warmup": False,
    "erase_p": False,
    "target_accuracy": False,
}


@dataclass
class TrainConfig:
    model: str = hyper(
        "shallow", "a registered model, a network file (NAME.toml) or a class (FILE.py:Class, module:Class)"
    )
    net_args: dict[str, Any] = hyper(
        None, "arguments of a network file or class (--net-arg NAME=VALUE, repeatable)", factory=dict
    )
    epochs: int = hyper(10, "passes over the training split", resume=LENGTHEN)
    batch_size: int = hyper(32, "images per optimizer step")
    lr: float = hyper(1e-3, "learning rate (the peak, with a schedule)")
    val_split: float = hyper(0.1, "stratified fraction of the training set held out for validation")
    seed: int = hyper(0, "seed for initialisation, dropout, split, shuffling and augmentation")
    split_seed: int = hyper(
        -1,
        "seed of the validation split alone (-1: the seed): runs of several seeds given one split seed "
        "are validated on the same images, as an ensemble's members must be",
    )
    members: int = hyper(
        1,
        "networks trained one after another (seeds seed, seed+1, ...) on the one validation split of "
        "split_seed (or seed), then combined into an ensemble run that holds their folders (1: one network)",
    )
    # Beyond the study (the recipes use these; the defaults are the study's plain training):
    optimizer: str = hyper("adam", "adam, adamw, or sgd (with Nesterov momentum)")
    momentum: float = hyper(0.9, "SGD momentum")
    weight_decay: float = hyper(0.0, "on weights, not biases or BatchNorm")
    schedule: str = hyper(
        "constant", "learning rate per step, after the warm-up: constant, linear (decay to 0) or cosine (decay to 0)"
    )
    warmup: float = hyper(0.0, "fraction of the steps with a linear learning-rate warm-up")
    label_smoothing: float = hyper(0.0, "label smoothing of the cross-entropy")
    augment: str = hyper("", "comma-separated batch augmentations: crop, flip, erase")
    crop_pad: int = hyper(2, "pixels of shift for crop")
    erase_p: float = hyper(0.5, "probability per image for erase")
    ema: float = hyper(0.0, "decay of a weight average that is validated, checkpointed and tested (0: off)")
    tta: bool = hyper(False, "average predictions over each image and its mirror image")
    tta_shift: int = hyper(
        0,
        "pixels: the test (not each epoch's validation, at five times the "
        "cost) also averages over images moved this far each way",
    )
    mixed_precision: bool = hyper(False, "bfloat16 autocast (pays on GPUs, not on CPUs without AMX)")
    whiten: bool = hyper(False, "first convolution fixed to whitening filters of the training images' patches")
    compile: bool = hyper(
        False,
        "torch.compile the training steps (timed apart; needs a C++ "
        "compiler on CPU, else trains uncompiled with a warning)",
    )
    target_accuracy: float = hyper(0.0, "stop once validation accuracy reaches this, e.g. 0.93 (0: off)")
    sync_batchnorm: bool = hyper(
        False,
        "with several processes on GPUs: BatchNorm statistics over the whole "
        "batch, not each process's share (CUDA only)",
    )
    exclude: list[int] = hyper(
        None,
        "training images left out of training and validation (the split is otherwise the same): a CSV "
        "with an 'index' column (0-based in the IDX file; with a 'split' column, its 'train' rows), as "
        "`fmnist audit` writes",
        factory=list,
    )
    device: str = run("auto", "auto (CUDA if present, else CPU), cpu, cuda, cuda:N or mps")
    data_dir: str = run("", "folder with the four Fashion-MNIST files (empty: discover)")
    verify: bool = run(True, "check the SHA-256 of the data files")
    quiet: bool = run(False, "no progress output")
    track: str = run(
        "",
        "mlflow[:URI] or tensorboard[:DIR]: log the finished run (parameters, each epoch's figures, the "
        "test figures, the report) to MLflow (default URI sqlite:///mlflow.db) or as TensorBoard event files "
        "(default DIR tensorboard), in the working folder",
    )
    network: dict[str, Any] = record(
        None,
        "a network file's layers or a class's source, with its SHA-256, as the run was given them "
        "(empty for a registered model): what every process builds the run's network from",
        factory=dict,
    )
    recipe: str = record("", "the recipe these values started from")
    schedule_restarts: list[int] = record(
        None, "epochs after which a resume that lengthened the run started a new schedule cycle", factory=list
    )

    def __post_init__(self) -> None:
        check_types(dataclasses.asdict(self))
        if self.epochs <= 0:
            raise UsageError(f"epochs must be positive, got {self.epochs}")
        if self.members <= 0:
            raise UsageError(f"members must be positive, got {self.members}")
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
        for key, excludes_one in UNIT_FIELDS.items():  # fractions: [0, 1) or [0, 1]
            value = getattr(self, key)
            if not (0 <= value < 1 if excludes_one else 0 <= value <= 1):
                raise UsageError(f"{key} must lie in [0, 1{')' if excludes_one else ']'}, got {value}")
        if self.split_seed < -1:
            raise UsageError(f"split_seed must be -1 (the seed) or a seed of its own, got {self.split_seed}")
        if self.weight_decay < 0 or self.crop_pad < 0 or self.tta_shift < 0:
            raise UsageError("weight_decay, crop_pad and tta_shift must not be negative")
        check_device_name(self.device)
        check_record(self.model, self.network, self.net_args)
        if self.track and self.track.partition(":")[0] not in ("mlflow", "tensorboard"):
            raise UsageError(f"track must be mlflow[:URI] or tensorboard[:DIR], got {self.track!r}")
        if any(i < 0 for i in self.exclude):
            raise UsageError("exclude holds a negative index; indices are 0-based positions in the IDX file")
        if sorted(set(self.schedule_restarts)) != self.schedule_restarts or any(
            not 0 < e < self.epochs for e in self.schedule_restarts
        ):
            raise UsageError(
                f"schedule_restarts must be increasing epochs below {self.epochs}, got {self.schedule_restarts}"
            )

    def validation_seed(self) -> int:
        """The seed the validation split is drawn with."""
        return self.seed if self.split_seed < 0 else self.split_seed

    @classmethod
    def fields_of(cls, *kinds: str) -> list[str]:
        return [f.name for f in dataclasses.fields(cls) if f.metadata["kind"] in kinds]

    @classmethod
    def resumable(cls) -> list[str]:
        """The fields a resume may set: where and how it runs, and `epochs` (only upwards)."""
        return [f.name for f in dataclasses.fields(cls) if f.metadata["resume"] != FIXED]


def shown_value(value: Any) -> Any:
    """A config value as a table or a tracking store shows it: a long list (the excluded images)
    by its length, not thousands of indices; a network's record by its name, file and digest."""
    if isinstance(value, dict) and is_ensemble(value):
        return "ensemble of " + ", ".join(member_names(value))
    if isinstance(value, dict) and "kind" in value and "sha256" in value:  # a network's record
        return f"{value.get('name')} ({value.get('file')}, sha256 {str(value['sha256'])[:12]})"
    return f"{len(value)} images" if isinstance(value, list) and len(value) > 3 else value


def field_types() -> dict[str, Any]:
    return typing.get_type_hints(TrainConfig)


def _is(value: Any, want: Any) -> bool:
    if typing.get_origin(want) is dict:
        return isinstance(value, dict) and all(isinstance(k, str) for k in value)
    if typing.get_origin(want) is list:
        (item,) = typing.get_args(want)
        return isinstance(value, list) and all(_is(v, item) for v in value)
    if want is float:
        return isinstance(value, (int, float)) and not isinstance(value, bool)
    return isinstance(value, want) and not (want is not bool and isinstance(value, bool))


def check_types(values: dict[str, Any]) -> None:
    """Reject unknown keys and values of the wrong type, naming the key."""
    types = field_types()
    for key, value in values.items():
        if key not in types:
            raise UsageError(f"unknown config key {key!r}; known keys: {', '.join(types)}")
        want = types[key]
        if not _is(value, want):
            name = getattr(want, "__name__", str(want))
            raise UsageError(f"config key {key!r} must be {name}, got {type(value).__name__} {value!r}")


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
    if merged.get("schedule") in RENAMED:  # a config written before the rename
        merged["schedule"] = RENAMED[merged["schedule"]]
    floats = [k for k, t in field_types().items() if t is float]
    merged.update({k: float(merged[k]) for k in floats if k in merged})
    return TrainConfig(**merged)


def to_toml(cfg: TrainConfig) -> str:
    """Write a config as TOML (the form `--config` reads back)."""
    return "".join(f"{key} = {toml_value(value)}\n" for key, value in dataclasses.asdict(cfg).items())


def toml_value(value: Any) -> str:
    """A value in TOML: a JSON string is a TOML basic string, a dict an inline table."""
    if isinstance(value, bool):
        return "true" if value else "false"
    if isinstance(value, str):
        return json.dumps(value, ensure_ascii=False)
    if isinstance(value, list):
        return "[" + ", ".join(toml_value(v) for v in value) + "]"
    if isinstance(value, dict):
        return "{" + ", ".join(f"{json.dumps(k)} = {toml_value(v)}" for k, v in value.items()) + "}"
    return repr(value)


def list_recipes() -> list[str]:
    folder = resources.files("fmnist.training") / "recipes"
    return sorted(p.name[:-5] for p in folder.iterdir() if p.name.endswith(".toml"))


def read_recipe(name: str) -> dict[str, Any]:
    """The values of a recipe shipped with the package (src/fmnist/recipes/NAME.toml)."""
    if name not in list_recipes():
        raise UsageError(f"unknown recipe {name!r}; choose from {', '.join(list_recipes())}")
    with resources.as_file(resources.files("fmnist.training") / "recipes" / f"{name}.toml") as path:
        values = read_toml(path)
    return {**values, "recipe": name}
