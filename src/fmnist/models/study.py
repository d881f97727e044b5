"""The four models of the original study, shipped as network files (nets/*.toml): the proof that the
format covers the study, and the examples a user copies. Each is registered under its name."""

from __future__ import annotations

from importlib import resources

from torch import nn

from fmnist.models.netfile import build_layers, read_network_file
from fmnist.models.registry import register_model

STUDY_MODELS = ["shallow", "simple_cnn", "deep_cnn", "deeper_cnn"]  # the original study's four, in its order
SHIPPED: dict[str, dict] = {}  # name -> the record of its network file


def shipped_file(name: str):
    return resources.files("fmnist.models") / "nets" / f"{name}.toml"


def _register(name: str) -> None:
    with resources.as_file(shipped_file(name)) as path:
        record = read_network_file(path, check=False)  # at import: parsed only; each build checks it
    record["file"] = f"fmnist/models/nets/{name}.toml"  # where it lies in the package, not on this disk

    def build() -> nn.Module:
        return build_layers(record, {})

    build.__doc__ = record["description"]
    SHIPPED[name] = record
    register_model(build, name=name)


for _name in STUDY_MODELS:
    _register(_name)
