"""What a run's `model` names, and the one way every command builds it.

A model is a registered name (`deep_cnn`), a network file (`nets/wider.toml`) or a class
(`my_nets.py:WideNet`, `package.module:WideNet`). A file or a class is read once, where the user
names it, into the run's `network` record (its layers, or its source), and `model` becomes the
network's name; from then on every process builds it from the record alone, with the run's
`net_args`: training ranks, sweep workers, the audit's folds, evaluation, export and the server.
"""

from __future__ import annotations

from typing import Any

import torch
from torch import nn

from fmnist.errors import FmnistError, UsageError
from fmnist.models.code import build_code, read_code
from fmnist.models.ensemble import build_ensemble, check_ensemble, is_ensemble, member_names
from fmnist.models.netfile import build_layers, check_network, layer_rows, read_network_file
from fmnist.models.registry import create_model
from fmnist.models.study import SHIPPED


def is_spec(model: str) -> bool:
    """Whether `model` names a network file or a class rather than a registered model."""
    return model.endswith((".toml", ".py")) or ":" in model


def read_spec(spec: str, net_args: dict[str, Any]) -> tuple[str, dict[str, Any]]:
    """The network's name and record of a file or class the user named, checked with `net_args`."""
    if spec.endswith(".toml"):
        record = read_network_file(spec, check=not net_args)
        if net_args:
            check_network(record, net_args)
        return record["name"], record
    if spec.endswith(".py"):
        raise UsageError(f"{spec}: name the class in it to train, as {spec}:ClassName")
    record = read_code(spec, net_args)
    return record["name"], record


def resolve_network(cfg: Any) -> Any:
    """`cfg` (a TrainConfig) with a network file or class read into its record; unchanged when it
    names a registered model. Only for a model the user gave: a run's own config is never read so
    (its record is what it trained)."""
    import dataclasses

    if not is_spec(cfg.model):
        return cfg
    name, record = read_spec(cfg.model, cfg.net_args)
    return dataclasses.replace(cfg, model=name, network=record)


def check_record(model: str, network: dict[str, Any], net_args: dict[str, Any]) -> None:
    """What can be checked of a config's network without running any code: a file's layers with
    its arguments (on the meta device), and that arguments go with a file or class."""
    if network.get("kind") == "layers":
        check_network(network, net_args)
    elif is_ensemble(network):
        check_ensemble(network, net_args)
    elif not network and net_args and not is_spec(model):
        raise UsageError(f"net_args: model {model!r} takes no arguments (a network file or class does)")
    elif network and network.get("kind") not in ("layers", "code"):
        raise FmnistError(f"unknown network kind {network.get('kind')!r} (this fmnist knows layers, code and ensemble)")


def create_network(cfg: Any) -> nn.Module:
    """The network a config names (a TrainConfig, or anything with its `model`, `network` and
    `net_args`), freshly initialised from the global seed. A class runs only when trusted."""
    network = getattr(cfg, "network", None) or {}
    args = getattr(cfg, "net_args", None) or {}
    if not network:
        return create_model(cfg.model)
    if network["kind"] == "layers":
        return build_layers(network, args)
    if is_ensemble(network):
        return build_ensemble(network)
    return build_code(network, args)


def network_rows(cfg: Any) -> list[tuple[str, str, tuple[int, ...], int]] | None:
    """The layer table of a network file's run (a shipped one's too), or None for a class or a
    Python builder."""
    network = getattr(cfg, "network", None) or SHIPPED.get(cfg.model, {})
    if network.get("kind") == "layers":
        return layer_rows(network, getattr(cfg, "net_args", None) or {})
    if is_ensemble(network):  # a row per member: its model and its parameters
        from fmnist.training.config import make_config

        configs = [make_config(m["config"]) for m in network["members"]]
        return [(str(k), c.model, (10,), parameters_of(c)) for k, c in enumerate(configs, 1)]
    return None


def module_rows(model: nn.Module) -> list[tuple[str, str, tuple[int, ...], int]]:
    """(index, type, output shape, parameters) of each top-level part of any network, by hooks on
    one forward pass of a 1×28×28 zero image (eval mode, no gradient)."""
    rows: list = []
    children = list(model.children()) or [model]
    hooks = [
        child.register_forward_hook(
            lambda m, i, out, k=k: rows.append((str(k), type(m).__name__, tuple(out.shape[1:]), count(m)))
        )
        for k, child in enumerate(children, 1)
    ]
    was = model.training
    try:
        with torch.no_grad():
            model.eval()(torch.zeros(1, 1, 28, 28))
    finally:
        model.train(was)
        for hook in hooks:
            hook.remove()
    return rows


def layer_table(cfg: Any) -> list[list]:
    """[index, type, output shape, parameters] of each layer: a network file's own (Keras) layers,
    else each top-level module of the built network (a class runs only when trusted)."""
    rows = network_rows(cfg)
    if rows is None:
        with torch.random.fork_rng(devices=[]):
            rows = module_rows(create_network(cfg))
    return [[index, kind, "×".join(map(str, shape)), f"{params:,}"] for index, kind, shape, params in rows]


def origin(cfg: Any) -> str:
    """Where a run's network came from, in a few words."""
    network = getattr(cfg, "network", None) or {}
    if is_ensemble(network):
        return f"an ensemble of {', '.join(member_names(network))} ({network['weights']} weights)"
    if network.get("kind") == "code":
        return f"class {network['class']} of {network['file']} (sha256 {network['sha256'][:12]})"
    if network.get("kind") == "layers":
        return f"network file {network['file']} (sha256 {network['sha256'][:12]})"
    return "shipped with fmnist"


def count(model: nn.Module) -> int:
    return sum(p.numel() for p in model.parameters())


def parameters_of(cfg: Any) -> int:
    """The network's parameter count, its weights not initialised (a file's counted on the meta
    device); the global random state is left as it was."""
    rows = network_rows(cfg)
    if rows is not None:
        return sum(n for index, *_, n in rows if "." not in index)
    with torch.random.fork_rng(devices=[]):
        return count(create_network(cfg))
