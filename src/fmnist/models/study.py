"""The four models of the original study, made concrete. Each returns logits."""

from __future__ import annotations

from torch import nn

from fmnist.models.registry import register_model

STUDY_MODELS = ["shallow", "simple_cnn", "deep_cnn", "deeper_cnn"]  # the original study's four, in its order


def conv_relu(c_in: int, c_out: int, padding: int = 0, bn: bool = False) -> list[nn.Module]:
    layers: list[nn.Module] = [nn.Conv2d(c_in, c_out, 3, padding=padding)]
    if bn:
        layers.append(nn.BatchNorm2d(c_out))
    return layers + [nn.ReLU()]


def classifier(*widths: int, dropout: float = 0.0) -> list[nn.Module]:
    """Flatten, then Linear+ReLU layers; dropout before the last Linear when asked."""
    layers: list[nn.Module] = [nn.Flatten()]
    for i, (a, b) in enumerate(zip(widths, widths[1:])):
        if i == len(widths) - 2 and dropout:
            layers.append(nn.Dropout(dropout))
        layers.append(nn.Linear(a, b))
        if i < len(widths) - 2:
            layers.append(nn.ReLU())
    return layers


@register_model
def shallow() -> nn.Module:
    """Dense net: 784 → 128 → 10."""
    return nn.Sequential(*classifier(784, 128, 10))


@register_model
def simple_cnn() -> nn.Module:
    """One 3×3 conv (32), max-pool, dense 128."""
    return nn.Sequential(*conv_relu(1, 32), nn.MaxPool2d(2), *classifier(5408, 128, 10))


@register_model
def deep_cnn() -> nn.Module:
    """Three 3×3 convs (32, 64, 128) with two max-pools, dense 128, dropout 0.5."""
    return nn.Sequential(
        *conv_relu(1, 32),
        nn.MaxPool2d(2),
        *conv_relu(32, 64),
        nn.MaxPool2d(2),
        *conv_relu(64, 128),
        *classifier(1152, 128, 10, dropout=0.5),
    )


@register_model
def deeper_cnn() -> nn.Module:
    """Three same-padded conv stages with BatchNorm and dropout, dense 256 → 128."""

    def stage(c_in: int, c_out: int) -> list[nn.Module]:
        return [*conv_relu(c_in, c_out, 1, bn=True), *conv_relu(c_out, c_out, 1), nn.MaxPool2d(2), nn.Dropout(0.25)]

    return nn.Sequential(
        *stage(1, 32),
        *stage(32, 64),
        *conv_relu(64, 128, 1, bn=True),
        nn.Flatten(),
        nn.Linear(6272, 256),
        nn.ReLU(),
        nn.Dropout(0.5),
        nn.Linear(256, 128),
        nn.ReLU(),
        nn.Linear(128, 10),
    )
