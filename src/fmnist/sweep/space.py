"""A search space: training settings held fixed and settings searched, read from a TOML file.

    [fixed]
    model = "resnet_sprint"
    epochs = 1
    [search]
    lr = { low = 0.003, high = 0.03, log = true }
    batch_size = { choices = [128, 256] }
    warmup = { low = 0.0, high = 0.3, step = 0.05 }

Any hyperparameter of TrainConfig may be fixed or searched; a searched one is a range (`low`,
`high`, optionally `log` or `step`) or a list of `choices`. Spaces shipped with fmnist
(src/fmnist/sweep/spaces/NAME.toml) are named instead of a path.
"""

from __future__ import annotations

import tomllib
from dataclasses import dataclass
from importlib import resources
from pathlib import Path
from typing import Any

from fmnist.errors import UsageError
from fmnist.models.network import is_spec, resolve_network
from fmnist.training.config import HYPER, TrainConfig, check_types, field_types, make_config

RANGE_KEYS = {"low", "high", "log", "step"}
NET_ARG = "net_args."  # a searched argument of the network file or class: search.net_args.NAME


@dataclass(frozen=True)
class Param:
    name: str
    kind: str  # "float", "int" or "categorical"
    low: float | None = None
    high: float | None = None
    log: bool = False
    step: float | None = None
    choices: tuple | None = None

    def distribution(self):
        import optuna

        if self.kind == "categorical":
            return optuna.distributions.CategoricalDistribution(list(self.choices))
        if self.kind == "int":
            return optuna.distributions.IntDistribution(
                int(self.low), int(self.high), log=self.log, step=int(self.step or 1)
            )
        return optuna.distributions.FloatDistribution(self.low, self.high, log=self.log, step=self.step)

    def grid(self) -> list:
        """The values a grid search tries: the choices, or every step of a range."""
        if self.kind == "categorical":
            return list(self.choices)
        if self.step is None and self.kind == "float":
            raise UsageError(f"search.{self.name}: a grid needs choices or a step, not a continuous range")
        step = self.step or 1
        count = int(round((self.high - self.low) / step)) + 1
        values = [self.low + i * step for i in range(count)]
        return [int(v) for v in values] if self.kind == "int" else [round(v, 12) for v in values]

    def as_dict(self) -> dict:
        if self.kind == "categorical":
            return {"choices": list(self.choices)}
        out = {"low": self.low, "high": self.high}
        if self.log:
            out["log"] = True
        if self.step is not None:
            out["step"] = self.step
        return out


@dataclass(frozen=True)
class Space:
    fixed: dict[str, Any]
    search: tuple[Param, ...]

    def distributions(self) -> dict:
        return {p.name: p.distribution() for p in self.search}

    def as_dict(self) -> dict:
        """The space as recorded in the study, to tell a continued sweep from a different one."""
        return {"fixed": dict(sorted(self.fixed.items())), "search": {p.name: p.as_dict() for p in self.search}}

    def config(self, params: dict[str, Any], **where: Any) -> TrainConfig:
        """The training config of a trial: the fixed values, the trial's, and where it runs; a
        network file or class read, with the trial's `net_args.NAME` among its arguments."""
        args = {k.removeprefix(NET_ARG): v for k, v in params.items() if k.startswith(NET_ARG)}
        plain = {k: v for k, v in params.items() if not k.startswith(NET_ARG)}
        net_args = {**self.fixed.get("net_args", {}), **args}
        return resolve_network(make_config(self.fixed, plain, {"net_args": net_args or None}, where))


def _param(name: str, spec: Any, want: Any) -> Param:
    where = f"search.{name}"
    if not isinstance(spec, dict):
        raise UsageError(f"{where}: give {{ low = ..., high = ... }} or {{ choices = [...] }}, got {spec!r}")
    if "choices" in spec:
        if set(spec) != {"choices"} or not isinstance(spec["choices"], list) or not spec["choices"]:
            raise UsageError(f"{where}: choices must be a non-empty list, alone")
        for value in spec["choices"] if want is not None else ():
            check_types({name: value})
        return Param(name, "categorical", choices=tuple(spec["choices"]))
    unknown = set(spec) - RANGE_KEYS
    if unknown or not {"low", "high"} <= set(spec):
        raise UsageError(f"{where}: a range needs low and high (and may have log or step); got {sorted(spec)}")
    if want is None:  # a network's argument: a range of ints or of numbers, as its bounds are written
        want = int if isinstance(spec["low"], int) and isinstance(spec["high"], int) else float
    if want not in (int, float):
        raise UsageError(f"{where}: {name} is {want.__name__}, so it takes choices, not a range")
    low, high, log, step = spec["low"], spec["high"], spec.get("log", False), spec.get("step")
    for key, value in (("low", low), ("high", high)) + ((("step", step),) if step is not None else ()):
        number = isinstance(value, (int, float)) and not isinstance(value, bool)
        if not number or (want is int and not isinstance(value, int)):
            raise UsageError(f"{where}.{key} must be {'an int' if want is int else 'a number'}, got {value!r}")
    if not isinstance(log, bool):
        raise UsageError(f"{where}.log must be true or false, got {log!r}")
    if not low < high:
        raise UsageError(f"{where}: empty range, low {low} is not below high {high}")
    if log and low <= 0:
        raise UsageError(f"{where}: a log range needs positive bounds, got low {low}")
    if step is not None and (step <= 0 or log):
        raise UsageError(f"{where}: step must be positive and cannot go with log")
    for value in (low, high) if not name.startswith(NET_ARG) else ():
        check_types({name: value})
        make_config({name: float(value) if want is float else value})  # the field's own limits
    return Param(
        name,
        "int" if want is int else "float",
        float(low) if want is float else low,
        float(high) if want is float else high,
        log,
        step,
    )


def parse_space(values: dict[str, Any], name: str = "space") -> Space:
    extra = set(values) - {"fixed", "search"}
    if extra:
        raise UsageError(f"{name}: unknown table {sorted(extra)[0]!r}; a space has [fixed] and [search]")
    fixed, search = values.get("fixed", {}), dict(values.get("search", {}))
    if not isinstance(fixed, dict) or not isinstance(search, dict) or not search:
        raise UsageError(f"{name}: needs a [search] table of at least one setting (and may have [fixed])")
    searched_args = search.pop("net_args", {})  # net_args.width = {...}: TOML's dotted key
    if not isinstance(searched_args, dict):
        raise UsageError(f"{name}: search.net_args holds the network's arguments, as net_args.NAME = {{ ... }}")
    hyper, types = set(TrainConfig.fields_of(HYPER)) - {"members"}, field_types()  # a trial is one network
    for key in (*fixed, *search):
        if key not in hyper:
            known = ", ".join(sorted(hyper))
            raise UsageError(f"{name}: unknown training setting {key!r} (a space may fix or search: {known})")
    both = set(fixed) & set(search)
    if both:
        raise UsageError(f"{name}: {sorted(both)[0]!r} is both fixed and searched")
    check_types(fixed)
    make_config(fixed)  # fixed values in range
    params = [_param(k, v, types[k]) for k, v in search.items()]
    params += [_param(NET_ARG + k, v, None) for k, v in searched_args.items()]
    if searched_args and not is_spec(str(fixed.get("model", ""))):
        raise UsageError(f"{name}: search.net_args needs [fixed] model to be a network file or class")
    space = Space(dict(fixed), tuple(params))
    if searched_args:  # the file or class takes every searched argument (each range's low end)
        space.config({p.name: p.grid()[0] if p.kind == "categorical" else p.low for p in params})
    return space


def list_spaces() -> list[str]:
    folder = resources.files("fmnist.sweep") / "spaces"
    return sorted(p.name[:-5] for p in folder.iterdir() if p.name.endswith(".toml"))


def read_space(source: str) -> Space:
    """A space from a TOML file, or one shipped with fmnist by name."""
    if source in list_spaces():
        with resources.as_file(resources.files("fmnist.sweep") / "spaces" / f"{source}.toml") as path:
            return read_space(str(path))
    path = Path(source)
    if not path.is_file():
        raise UsageError(f"--space {source}: no such file or shipped space ({', '.join(list_spaces())})")
    try:
        with open(path, "rb") as f:
            values = tomllib.load(f)
    except (OSError, tomllib.TOMLDecodeError) as e:
        raise UsageError(f"cannot read space file {path}: {e}") from None
    return parse_space(values, str(path))
