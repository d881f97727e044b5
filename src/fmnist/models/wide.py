"""Wide residual networks (Zagoruyko & Komodakis, 2016) for 28×28 images: WRN-d-k has three stages
of (d − 4) / 6 pre-activation blocks (BN-ReLU-conv, twice) at 16k, 32k and 64k channels, at 28×28,
14×14 and 7×7. They are the published single-model references on Fashion-MNIST (WRN-28-10: 95.99 %,
96.35 % with random erasing, after 300 epochs) and are far too large for a CPU: these are the
networks of the `gpu` recipe, wide enough to keep a GPU's arithmetic busy.
"""

from __future__ import annotations

import torch
from torch import nn

from fmnist.models.registry import register_model


class PreActBlock(nn.Module):
    """BN-ReLU-conv twice, added to the input (through a 1×1 convolution where the shape changes)."""

    def __init__(self, c_in: int, c_out: int, stride: int):
        super().__init__()
        self.bn1, self.relu1 = nn.BatchNorm2d(c_in), nn.ReLU(inplace=True)
        self.conv1 = nn.Conv2d(c_in, c_out, 3, stride=stride, padding=1, bias=False)
        self.bn2, self.relu2 = nn.BatchNorm2d(c_out), nn.ReLU(inplace=True)
        self.conv2 = nn.Conv2d(c_out, c_out, 3, padding=1, bias=False)
        self.shortcut = None if stride == 1 and c_in == c_out else nn.Conv2d(c_in, c_out, 1, stride=stride, bias=False)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        o = self.relu1(self.bn1(x))
        y = self.conv2(self.relu2(self.bn2(self.conv1(o))))
        return y + (x if self.shortcut is None else self.shortcut(o))


class GlobalAvgPool(nn.Module):
    """The mean of each channel, (N, C): a plain mean exports to ONNX as nn.AdaptiveAvgPool2d may not."""

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return x.mean(dim=(2, 3))


def wide_resnet(depth: int, k: int) -> nn.Sequential:
    if (depth - 4) % 6:
        raise ValueError(f"a WRN's depth is 6n + 4, got {depth}")
    n = (depth - 4) // 6
    layers: list[nn.Module] = [nn.Conv2d(1, 16, 3, padding=1, bias=False)]
    c = 16
    for stage, width in enumerate((16 * k, 32 * k, 64 * k)):
        for i in range(n):
            layers.append(PreActBlock(c, width, stride=2 if stage and i == 0 else 1))
            c = width
    return nn.Sequential(*layers, nn.BatchNorm2d(c), nn.ReLU(inplace=True), GlobalAvgPool(), nn.Linear(c, 10))


@register_model
def wrn_16_4() -> nn.Module:
    """WRN-16-4 (64, 128, 256 channels at 28×28, 14×14, 7×7; 2.7 M parameters): the gpu recipe at small scale."""
    return wide_resnet(16, 4)


@register_model
def wrn_16_8() -> nn.Module:
    """WRN-16-8 (128, 256, 512 channels at 28×28, 14×14, 7×7; 11 M parameters): the gpu recipe's network."""
    return wide_resnet(16, 8)


@register_model
def wrn_28_10() -> nn.Module:
    """WRN-28-10 (160, 320, 640 channels; 36 M parameters): the published reference's network, for a GPU."""
    return wide_resnet(28, 10)
