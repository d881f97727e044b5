"""Residual networks for the recipes: compact ones for time-to-accuracy, wider ones for accuracy.

All pool early: a 3×3 convolution costs the same at every pixel, so the wide layers run at 14×14
and 7×7, never at 28×28. Each stage is conv-BN-ReLU, max-pool, then residual blocks of two
conv-BN-ReLU layers (as in the ResNet-9 of the DAWNBench speed runs). The quickest skips 28×28
altogether: its stem reads each 2×2 patch once (a 2×2 convolution with stride 2), which with 8
channels keeps everything in the image and, whitened, is lossless. The sprint goes further: its
first stage's convolution has stride 2, so the only 14×14 maps are the stem's 8 channels (the
14×14×32 maps, their BatchNorm, ReLU and pooling were most of the quick one's step). The large one
spends what the patch stem saves on a third stage, at 3×3.
"""

from __future__ import annotations

import torch
from torch import nn

from fmnist.models.registry import register_model


def conv_bn(c_in: int, c_out: int, kernel: int = 3, stride: int = 1, padding: int = 1) -> list[nn.Module]:
    # No conv bias: the BatchNorm that follows has its own.
    return [
        nn.Conv2d(c_in, c_out, kernel, stride=stride, padding=padding, bias=False),
        nn.BatchNorm2d(c_out),
        nn.ReLU(inplace=True),
    ]


class Residual(nn.Module):
    def __init__(self, width: int):
        super().__init__()
        self.body = nn.Sequential(*conv_bn(width, width), *conv_bn(width, width))

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return x + self.body(x)


class GlobalMaxPool(nn.Module):
    """The maximum of each channel over the image, shape (N, C, 1, 1): nn.AdaptiveMaxPool2d(1),
    which torch.onnx's exporter in torch 2.11 cannot translate, in operations it can. `max` with a
    dim, not `amax`: like the pool, it sends the gradient to the first maximum only (`amax` splits
    it among ties, which bfloat16 makes common, and so trains differently)."""

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return x.flatten(2).max(dim=2, keepdim=True).values.unsqueeze(-1)


def resnet(
    stem: int, widths: tuple[int, ...], blocks: tuple[int, ...], patches: bool = False, first_stride: int = 1
) -> nn.Sequential:
    """A stem conv at 28×28 and a 2×2 max-pool (or, with `patches`, a 2×2 stride-2 stem), then per
    stage a conv to `widths[i]` (the first with stride `first_stride`) and `blocks[i]` residual
    blocks, with a 2×2 max-pool between stages; global max-pool, a linear classifier."""
    # The patch stem goes from 28×28 to 14×14 in one step, over non-overlapping 2×2 patches.
    layers: list[nn.Module] = (
        conv_bn(1, stem, kernel=2, stride=2, padding=0) if patches else [*conv_bn(1, stem), nn.MaxPool2d(2)]
    )
    c = stem
    for i, (width, n) in enumerate(zip(widths, blocks)):
        if i:
            layers.append(nn.MaxPool2d(2))
        stride = first_stride if i == 0 else 1
        layers += [*conv_bn(c, width, stride=stride), *(Residual(width) for _ in range(n))]
        c = width
    return nn.Sequential(*layers, GlobalMaxPool(), nn.Flatten(), nn.Linear(c, 10))


@register_model
def resnet_fast() -> nn.Module:
    """Compact ResNet (16 at 28×28, 32 at 14×14 and 7×7, 64 at 3×3; one residual block): seconds per epoch on a CPU."""
    return resnet(16, (32, 32, 64), (0, 1, 0))


@register_model
def resnet_quick() -> nn.Module:
    """resnet_fast with a 2×2 stride-2 stem of 8 channels: nothing runs at 28×28, a third less time per step."""
    return resnet(8, (32, 32, 64), (0, 1, 0), patches=True)


@register_model
def resnet_sprint() -> nn.Module:
    """resnet_quick with a stride-2 first stage (32 at 7×7, 64 at 3×3): about half its step, for 91 % in seconds."""
    return resnet(8, (32, 64), (1, 0), patches=True, first_stride=2)


@register_model
def resnet_wide() -> nn.Module:
    """Wider ResNet (32 at 28×28, 64 at 14×14 and 128 at 7×7, a residual block at each): for accuracy."""
    return resnet(32, (64, 128), (1, 1))


@register_model
def resnet_large() -> nn.Module:
    """Three stages after resnet_quick's 2×2 stem (64 at 14×14, 128 at 7×7, 256 at 3×3; a residual block at each)."""
    return resnet(8, (64, 128, 256), (1, 1, 1), patches=True)
