"""A network as data: a TOML file of a name, a description, named arguments and a list of Keras-named
layers (see layers.py), read into a record that a run keeps, and built into an nn.Sequential.

    name = "wider"
    [args]
    width = 64
    [[layers]]
    type = "Conv2D"
    filters = "$width"
    kernel_size = 3
    activation = "relu"

Shapes come from a dry run on one 1×28×28 image, so no layer names its input size. Every mistake
is one UsageError naming the file, the layer (its index from 1; "4.2" inside a Residual), its
type and key, before anything is built for real.
"""

from __future__ import annotations

import difflib
import hashlib
import re
import tomllib
from pathlib import Path
from typing import Any

import torch
from torch import nn

from fmnist.errors import UsageError
from fmnist.models.layers import ACTIVATIONS, LAYERS, REQUIRED, LayerError

INPUT = (1, 28, 28)
CLASSES = 10
TOP_KEYS = ("name", "description", "args", "layers")
NAME = re.compile(r"[A-Za-z0-9][A-Za-z0-9_.-]*")


class Residual(nn.Module):
    """`body`'s output added to its input, then an activation (or none)."""

    def __init__(self, body: nn.Sequential, activation: nn.Module | None):
        super().__init__()
        self.body, self.activation = body, activation

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        y = x + self.body(x)
        return self.activation(y) if self.activation is not None else y


def read_network_file(path: str | Path, check: bool = True) -> dict[str, Any]:
    """The record of a network file: its name, description, declared arguments (with their
    defaults), its layers as written and the SHA-256 of its bytes; with `check`, every layer
    checked with the defaults (a build checks them anyway)."""
    path = Path(path)
    try:
        raw = path.read_bytes()
        values = tomllib.loads(raw.decode("utf-8"))
    except FileNotFoundError:
        raise UsageError(f"network file not found: {path}") from None
    except IsADirectoryError:
        raise UsageError(f"{path}: a folder, not a network file") from None
    except (OSError, UnicodeDecodeError, tomllib.TOMLDecodeError) as e:
        raise UsageError(f"cannot read network file {path}: {e}") from None
    unknown = sorted(set(values) - set(TOP_KEYS))
    if unknown:
        raise UsageError(f"{path}: unknown key {unknown[0]!r}; a network file has {', '.join(TOP_KEYS)}")
    name = values.get("name")
    if not isinstance(name, str) or not NAME.fullmatch(name):
        raise UsageError(
            f"{path}: 'name' must be a word of letters, digits, '_', '.' or '-' (a folder name), got {name!r}"
        )
    args = values.get("args", {})
    if not isinstance(args, dict) or any(not isinstance(v, (bool, int, float, str)) for v in args.values()):
        raise UsageError(f"{path}: [args] must map names to numbers, strings or booleans (their defaults)")
    if not isinstance(values.get("layers"), list) or not values["layers"]:
        raise UsageError(f"{path}: no layers; add [[layers]] tables, each with a 'type'")
    record = {
        "kind": "layers",
        "name": name,
        "description": str(values.get("description", "")),
        "file": str(path),
        "sha256": hashlib.sha256(raw).hexdigest(),
        "args": args,
        "layers": values["layers"],
    }
    if check:
        check_network(record, {})
    return record


def arguments(record: dict[str, Any], given: dict[str, Any]) -> dict[str, Any]:
    """The declared arguments' defaults with `given` (from --net-arg) over them, each given one
    declared and of its default's type (an int where a float is declared is taken)."""
    declared = record.get("args", {})
    values = dict(declared)
    for key, value in given.items():
        if key not in declared:
            close = difflib.get_close_matches(key, list(declared), n=1)
            hint = f"did you mean {close[0]!r}? " if close else ""
            have = ", ".join(declared) or "none"
            raise UsageError(f"{where_of(record)}: no argument {key!r}; {hint}it declares: {have}")
        want = type(declared[key])
        if want is float and isinstance(value, int) and not isinstance(value, bool):
            value = float(value)
        if type(value) is not want:
            raise UsageError(f"{where_of(record)}: argument {key!r} must be {want.__name__}, got {value!r}")
        values[key] = value
    return values


def where_of(record: dict[str, Any]) -> str:
    return record.get("file") or record.get("name", "network")


def normalised(record: dict[str, Any], given: dict[str, Any]) -> list[dict[str, Any]]:
    """The layers with the arguments put in and every default written out, checked key by key."""
    values = arguments(record, given)
    return [_normalise(layer, str(i), values, record) for i, layer in enumerate(record["layers"], 1)]


def _normalise(layer: Any, index: str, args: dict[str, Any], record: dict[str, Any]) -> dict[str, Any]:
    where = f"{where_of(record)}: layer {index}"
    if not isinstance(layer, dict) or "type" not in layer:
        raise UsageError(f"{where}: a layer is a table with a 'type' ({', '.join(LAYERS)})")
    kind = layer["type"]
    if kind not in LAYERS:
        close = difflib.get_close_matches(str(kind), list(LAYERS), n=1)
        hint = f"did you mean {close[0]!r}? " if close else ""
        raise UsageError(f"{where}: unknown type {kind!r}; {hint}allowed: {', '.join(LAYERS)}")
    where = f"{where} ({kind})"
    params = LAYERS[kind].params
    out: dict[str, Any] = {"type": kind}
    for key in layer:
        if key != "type" and key not in params:
            allowed = ", ".join(params) or "no keys"
            raise UsageError(f"{where}: unknown key {key!r}; {kind} takes {allowed}")
    for key, (default, check) in params.items():
        value = layer.get(key, default)
        if isinstance(value, str) and value.startswith("$"):
            if value[1:] not in args:
                have = ", ".join(args) or "none"
                raise UsageError(f"{where}: {key}: no argument {value[1:]!r} (declared: {have})")
            value = args[value[1:]]
        if value is REQUIRED:
            raise UsageError(f"{where}: {key} is required")
        try:
            out[key] = check(key, value)
        except LayerError as e:
            raise UsageError(f"{where}: {e}") from None
    if kind == "Residual":
        out["layers"] = [_normalise(x, f"{index}.{j}", args, record) for j, x in enumerate(out["layers"], 1)]
    return out


def walk(
    layers: list[dict[str, Any]], shape: tuple[int, ...], where: str, device: str, last: bool, rows: list | None
) -> tuple[list[nn.Module], tuple[int, ...]]:
    """Each layer's modules, built on `device` and run on one zero image of `shape` in order (a
    run on the meta device checks shapes without computing or drawing random numbers); the
    modules and the output shape. `rows` collects (index, type, output shape, parameters)."""
    modules: list[nn.Module] = []
    for i, layer in enumerate(layers, 1):
        index, kind = f"{where}{i}", layer["type"]
        at = f"layer {index} ({kind})"
        final = last and i == len(layers)
        if layer.get("activation") == "softmax" and not final:
            raise UsageError(f"{at}: softmax only as the network's last activation (fmnist trains on logits)")
        needs = LAYERS[kind].needs
        if needs == "flat" and len(shape) != 1:
            raise UsageError(
                f"{at}: needs a flat input, got a {'×'.join(map(str, shape))} map: put a Flatten or "
                "GlobalAveragePooling2D before it"
            )
        if needs == "image" and len(shape) != 3:
            raise UsageError(f"{at}: needs an image input (channels, height, width), got {shape[0]} flat features")
        row = len(rows) if rows is not None else 0  # a Residual's row goes before its layers' rows
        try:
            with torch.device(device):
                if kind == "Residual":
                    body, inner = walk(layer["layers"], shape, f"{index}.", device, False, rows)
                    if inner != shape:
                        raise LayerError(f"its layers give {_shape(inner)}, not its input's {_shape(shape)}")
                    make = ACTIVATIONS[layer["activation"]]
                    made: list[nn.Module] = [Residual(nn.Sequential(*body), make() if make else None)]
                else:
                    made = LAYERS[kind].build(layer, shape)
            with torch.no_grad():
                x = torch.zeros((1, *shape), device=device)
                for m in made:
                    x = m.eval()(x)
        except LayerError as e:
            raise UsageError(f"{at}: {e}") from None
        except RuntimeError as e:
            raise UsageError(
                f"{at}: does not fit its {_shape(shape)} input: {str(e).strip().splitlines()[0]}"
            ) from None
        shape = tuple(x.shape[1:])
        if rows is not None:
            rows.insert(row, (index, kind, shape, sum(p.numel() for m in made for p in m.parameters())))
        modules += made
    return modules, shape


def _shape(shape: tuple[int, ...]) -> str:
    return "×".join(map(str, shape))


def build_layers(record: dict[str, Any], given: dict[str, Any], device: str = "cpu", rows: list | None = None):
    """The network of a record with the arguments `given`: an nn.Sequential of the layers' modules
    in the file's order (so a file and a builder making the same modules in the same order give
    the same weights from the same seed). Raises UsageError if it does not end in 10 logits."""
    layers = normalised(record, given)
    try:
        modules, out = walk(layers, INPUT, "", device, True, rows)
    except UsageError as e:
        raise UsageError(f"{where_of(record)}: {e}") from None
    if out != (CLASSES,):
        raise UsageError(
            f"{where_of(record)}: the network ends in {_shape(out)} outputs; it must end in {CLASSES} "
            "(one per class): end with Dense(units = 10)"
        )
    return nn.Sequential(*modules).train()  # the dry run left each module in eval mode


def check_network(record: dict[str, Any], given: dict[str, Any]) -> None:
    """Every check of build_layers, on the meta device: no memory, no arithmetic, and the random
    numbers a real build would draw left undrawn."""
    with torch.random.fork_rng(devices=[]):
        build_layers(record, given, device="meta")


def layer_rows(record: dict[str, Any], given: dict[str, Any]) -> list[tuple[str, str, tuple[int, ...], int]]:
    """(index, type, output shape, parameters) of each layer, for `fmnist models FILE` and reports."""
    rows: list = []
    with torch.random.fork_rng(devices=[]):
        build_layers(record, given, device="meta", rows=rows)
    return rows
