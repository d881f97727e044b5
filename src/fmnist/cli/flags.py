"""The parser's shared parts: a parser that fails in one line, the data flags, and the flags that
map one-to-one onto TrainConfig's fields."""

from __future__ import annotations

import argparse
import dataclasses
import tomllib

from fmnist.data.exclude import ExcludeFileError, read_index_csv
from fmnist.errors import UsageError
from fmnist.models.code import TRUST_ENV
from fmnist.models.network import resolve_network
from fmnist.training.config import (
    HYPER,
    RUN,
    TrainConfig,
    field_types,
    list_recipes,
    make_config,
    read_recipe,
    read_toml,
)


class Parser(argparse.ArgumentParser):
    def error(self, message: str):  # one line, not usage + message, under the command's own name
        raise UsageError(message, command=self.prog)


def add_data_flags(p: argparse.ArgumentParser) -> None:
    p.add_argument("--data-dir", help="folder with the four Fashion-MNIST files (default: discover)")
    p.add_argument(
        "--no-verify",
        dest="verify",
        action="store_const",
        const=False,
        help="use data files whose SHA-256 does not match (explicit opt-in; a warning says so)",
    )


def _default_text(value) -> str:
    if isinstance(value, bool):
        return "on" if value else "off"
    return repr(value) if value == "" else str(value)


def _index_file(path: str) -> list[int]:
    try:
        return read_index_csv(path)
    except ExcludeFileError as e:
        raise argparse.ArgumentTypeError(str(e)) from None


def add_config_flags(
    p: argparse.ArgumentParser,
    names: list[str],
    training: str = "training (any recipe or --config value is overridden by these)",
) -> None:
    """One flag per TrainConfig field in `names`, its help and default read from the field; a flag
    not given stays None, so the recipe, the config file and the defaults below it keep their say."""
    types = field_types()
    groups = {HYPER: p.add_argument_group(training), RUN: p.add_argument_group("where and how it runs")}
    for f in dataclasses.fields(TrainConfig):
        if f.name not in names:
            continue
        flag = "--" + f.name.replace("_", "-")
        text = f"{f.metadata['help']} (default {_default_text(f.default)})"
        if f.name == "net_args":  # NAME=VALUE, repeated
            groups[HYPER].add_argument(
                "--net-arg", dest="net_args", action=NetArg, metavar="NAME=VALUE", help=f.metadata["help"]
            )
        elif types[f.name] == list[int]:  # a list of indices comes from a file (exclude)
            groups[f.metadata["kind"]].add_argument(flag, type=_index_file, metavar="FILE.csv", help=f.metadata["help"])
        elif types[f.name] is bool:
            groups[f.metadata["kind"]].add_argument(flag, action=argparse.BooleanOptionalAction, help=text)
        else:
            metavar = {int: "N", float: "X"}.get(types[f.name], f.name.upper())
            groups[f.metadata["kind"]].add_argument(flag, type=types[f.name], metavar=metavar, help=text)


def net_arg_value(text: str):
    """A --net-arg value as TOML reads it (64, 0.5, true, "relu"), else the text itself."""
    try:
        return tomllib.loads(f"v = {text}")["v"]
    except tomllib.TOMLDecodeError:
        return text


class NetArg(argparse.Action):
    """--net-arg NAME=VALUE into a dict, a later NAME over an earlier one."""

    def __call__(self, parser, namespace, value, option_string=None):
        name, eq, text = value.partition("=")
        if not eq or not name.strip().isidentifier():
            raise UsageError(f"--net-arg {value!r}: give NAME=VALUE, e.g. --net-arg width=64", command=parser.prog)
        setattr(namespace, self.dest, {**(getattr(namespace, self.dest) or {}), name.strip(): net_arg_value(text)})


def add_trust_flag(p: argparse.ArgumentParser) -> None:
    p.add_argument(
        "--trust-code",
        action="store_true",
        help=f"build a run whose network is a Python class by running its recorded source (or {TRUST_ENV}=1); "
        "only for runs whose code you trust",
    )


def add_train_flags(p: argparse.ArgumentParser) -> None:
    """The config's flags (all but the model, which each command names its own way), the recipe and
    config file they override, and the output folder."""
    p.add_argument(
        "--recipe",
        choices=list_recipes(),
        help="start from a shipped recipe (config file); --config and flags override it",
    )
    p.add_argument("--config", metavar="FILE.toml", help="TOML file of config keys; flags override it")
    add_config_flags(p, [n for n in TrainConfig.fields_of(HYPER, RUN) if n != "model"])
    p.add_argument(
        "--overwrite",
        action="store_true",
        help="replace an output folder that fmnist wrote (the files it recorded writing are removed first)",
    )


def given_flags(args: argparse.Namespace) -> dict:
    """The TrainConfig fields among the parsed flags (None where a flag was not given)."""
    return {f.name: getattr(args, f.name) for f in dataclasses.fields(TrainConfig) if hasattr(args, f.name)}


def config_layers(args: argparse.Namespace, **fixed) -> list[dict]:
    """Lowest first: the recipe, the config file, the flags given, then `fixed` (None where not given)."""
    return [
        read_recipe(args.recipe) if args.recipe else {},
        read_toml(args.config) if args.config else {},
        given_flags(args),
        fixed,
    ]


def config_from(args: argparse.Namespace, **fixed) -> TrainConfig:
    """Defaults, then the recipe, then the config file, then the flags given; a network file or
    class the user named read into the config's record."""
    return resolve_network(make_config(*config_layers(args, **fixed)))
