"""The layers a network file may name: Keras's types, parameters and defaults, each built as the
PyTorch modules that compute it, so a Keras model translates line for line. The list is closed:
a value is a number, a string from a fixed set or a pair, never a path to import. A new layer type
is one entry of LAYERS (its parameters, the input it needs, its builder)."""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass
from typing import Any

from torch import nn

from fmnist.models.resnet import GlobalMaxPool

REQUIRED = object()  # a parameter without a default, as Keras has it

# Keras's activation names; "linear" (Keras's None) is none at all. softmax is understood only as
# the network's last activation and then left out: fmnist trains on logits and applies it itself.
ACTIVATIONS: dict[str, Callable[[], nn.Module] | None] = {
    "linear": None,
    "relu": nn.ReLU,
    "relu6": nn.ReLU6,
    "leaky_relu": lambda: nn.LeakyReLU(0.2),  # Keras's default slope, not PyTorch's 0.01
    "elu": nn.ELU,
    "selu": nn.SELU,
    "gelu": nn.GELU,
    "silu": nn.SiLU,
    "swish": nn.SiLU,
    "sigmoid": nn.Sigmoid,
    "tanh": nn.Tanh,
    "softplus": nn.Softplus,
    "softmax": None,
}
PADDINGS = ("valid", "same")


class LayerError(ValueError):
    """A layer's value that cannot be: the message names the key and the allowed values."""


def positive_int(key: str, value: Any) -> int:
    if isinstance(value, bool) or not isinstance(value, int) or value < 1:
        raise LayerError(f"{key} must be a positive integer, got {value!r}")
    return value


def pair(key: str, value: Any) -> list[int]:
    """An int or a list of two ints, as Keras takes kernel sizes and strides; kept as the pair."""
    values = value if isinstance(value, list) else [value, value]
    if len(values) != 2 or any(isinstance(v, bool) or not isinstance(v, int) or v < 1 for v in values):
        raise LayerError(f"{key} must be a positive integer or a list of two, got {value!r}")
    return values


def optional_pair(key: str, value: Any) -> list[int] | None:
    return None if value is None else pair(key, value)


def choice(options: tuple[str, ...]) -> Callable[[str, Any], str]:
    def check(key: str, value: Any) -> str:
        if value not in options:
            raise LayerError(f"{key} must be one of {', '.join(repr(o) for o in options)}, got {value!r}")
        return value

    return check


def fraction(key: str, value: Any) -> float:
    if isinstance(value, bool) or not isinstance(value, (int, float)) or not 0 <= value < 1:
        raise LayerError(f"{key} must be a number in [0, 1), got {value!r}")
    return float(value)


def positive_float(key: str, value: Any) -> float:
    if isinstance(value, bool) or not isinstance(value, (int, float)) or not value > 0:
        raise LayerError(f"{key} must be a positive number, got {value!r}")
    return float(value)


def boolean(key: str, value: Any) -> bool:
    if not isinstance(value, bool):
        raise LayerError(f"{key} must be true or false, got {value!r}")
    return value


def layer_list(key: str, value: Any) -> list:
    if not isinstance(value, list) or not value or not all(isinstance(v, dict) for v in value):
        raise LayerError(f"{key} must be a non-empty list of layers (tables with a 'type')")
    return value


activation = choice(tuple(ACTIVATIONS))


def with_activation(modules: list[nn.Module], name: str) -> list[nn.Module]:
    make = ACTIVATIONS[name]
    return modules + ([make()] if make else [])


def conv2d(v: dict, shape: tuple[int, ...]) -> list[nn.Module]:
    (kh, kw), (sh, sw), (dh, dw) = v["kernel_size"], v["strides"], v["dilation_rate"]
    padding: Any = 0
    if v["padding"] == "same":
        if (dh * (kh - 1)) % 2 == 0 and (dw * (kw - 1)) % 2 == 0:  # odd kernels: ceil(n / stride) out, as Keras
            padding = (dh * (kh - 1) // 2, dw * (kw - 1) // 2)
        elif (sh, sw) == (1, 1):
            padding = "same"
        else:
            raise LayerError("padding 'same' with an even kernel_size needs strides 1")
    if shape[0] % v["groups"] or v["filters"] % v["groups"]:
        raise LayerError(f"groups {v['groups']} must divide the {shape[0]} input channels and the filters")
    conv = nn.Conv2d(
        shape[0],
        v["filters"],
        (kh, kw),
        stride=(sh, sw),
        padding=padding,
        dilation=(dh, dw),
        groups=v["groups"],
        bias=v["use_bias"],
    )
    return with_activation([conv], v["activation"])


def pooling(kind: type[nn.Module]) -> Callable[[dict, tuple[int, ...]], list[nn.Module]]:
    def build(v: dict, shape: tuple[int, ...]) -> list[nn.Module]:
        size, strides = v["pool_size"], v["strides"] or v["pool_size"]
        options: dict[str, Any] = {"count_include_pad": False} if kind is nn.AvgPool2d else {}
        if v["padding"] == "same":
            if strides == size:  # windows cut at the edge: ceil(n / stride) out, as Keras
                options["ceil_mode"] = True
            elif all(k % 2 for k in size):
                options["padding"] = (size[0] // 2, size[1] // 2)
            else:
                raise LayerError("padding 'same' needs strides equal to pool_size, or an odd pool_size")
        return [kind(_one(size), stride=_one(strides), **options)]

    return build


def _one(values: list[int]) -> int | tuple[int, int]:
    """A square pair as one int, as PyTorch's pooling modules are usually made (and shown)."""
    return values[0] if values[0] == values[1] else (values[0], values[1])


def dense(v: dict, shape: tuple[int, ...]) -> list[nn.Module]:
    return with_activation([nn.Linear(shape[0], v["units"], bias=v["use_bias"])], v["activation"])


def batch_norm(v: dict, shape: tuple[int, ...]) -> list[nn.Module]:
    if v["center"] != v["scale"]:
        raise LayerError("center and scale must be both true or both false")
    norm = nn.BatchNorm2d if len(shape) == 3 else nn.BatchNorm1d
    # Keras's momentum weighs the old average, PyTorch's the new batch.
    # Rounded, so Keras's 0.9 is PyTorch's 0.1 exactly (1 - 0.9 is 0.09999999999999998).
    return [norm(shape[0], eps=v["epsilon"], momentum=round(1 - v["momentum"], 12), affine=v["center"])]


@dataclass(frozen=True)
class LayerType:
    params: dict[str, tuple[Any, Callable[[str, Any], Any]]]  # key -> (default or REQUIRED, check)
    needs: str  # the input it takes: "image" (channels, height, width), "flat" (features) or "any"
    build: Callable[[dict, tuple[int, ...]], list[nn.Module]]  # (values, input shape) -> modules


POOL_PARAMS = {"pool_size": (2, pair), "strides": (None, optional_pair), "padding": ("valid", choice(PADDINGS))}

LAYERS: dict[str, LayerType] = {
    "Conv2D": LayerType(
        {
            "filters": (REQUIRED, positive_int),
            "kernel_size": (REQUIRED, pair),
            "strides": (1, pair),
            "padding": ("valid", choice(PADDINGS)),
            "dilation_rate": (1, pair),
            "groups": (1, positive_int),
            "activation": ("linear", activation),
            "use_bias": (True, boolean),
        },
        "image",
        conv2d,
    ),
    "MaxPooling2D": LayerType(POOL_PARAMS, "image", pooling(nn.MaxPool2d)),
    "AveragePooling2D": LayerType(POOL_PARAMS, "image", pooling(nn.AvgPool2d)),
    "GlobalAveragePooling2D": LayerType({}, "image", lambda v, s: [nn.AdaptiveAvgPool2d(1), nn.Flatten()]),
    "GlobalMaxPooling2D": LayerType({}, "image", lambda v, s: [GlobalMaxPool(), nn.Flatten()]),
    "Flatten": LayerType({}, "any", lambda v, s: [nn.Flatten()]),
    "Dense": LayerType(
        {"units": (REQUIRED, positive_int), "activation": ("linear", activation), "use_bias": (True, boolean)},
        "flat",
        dense,
    ),
    "Dropout": LayerType({"rate": (REQUIRED, fraction)}, "any", lambda v, s: [nn.Dropout(v["rate"])]),
    "BatchNormalization": LayerType(
        {
            "momentum": (0.99, fraction),
            "epsilon": (0.001, positive_float),
            "center": (True, boolean),
            "scale": (True, boolean),
        },
        "any",
        batch_norm,
    ),
    "Activation": LayerType(
        {"activation": (REQUIRED, activation)}, "any", lambda v, s: with_activation([], v["activation"])
    ),
    # A list of layers whose output is added to its input (same shape), then an activation: the
    # residual block of the recipes' ResNets. Built by the network file's walk, which recurses.
    "Residual": LayerType(
        {"layers": (REQUIRED, layer_list), "activation": ("linear", activation)}, "any", lambda v, s: []
    ),
}
