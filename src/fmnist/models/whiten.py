"""A data-dependent start for the first convolution: a fixed bank of patch-whitening filters.

As in the CIFAR-10 speed runs (airbench), the first layer's filters are the eigenvectors of the
covariance of the training images' patches, scaled by one over the square root of their
eigenvalues, each with its negative (so a ReLU keeps both signs), and are not trained. The network
then sees decorrelated, equally scaled inputs from the first step, which speeds early training.
"""

from __future__ import annotations

import torch
from torch import nn

MAX_PATCH_IMAGES = 10_000  # enough images for a stable covariance of a few patch pixels


def first_conv(model: nn.Module) -> nn.Conv2d:
    conv = next((m for m in model.modules() if isinstance(m, nn.Conv2d)), None)
    if conv is None:
        raise ValueError("the model has no convolution to whiten")
    return conv


def check_whitenable(model: nn.Module) -> nn.Conv2d:
    """The first convolution, if whitening filters fit it: an even count of channels, at most
    twice the pixels of a patch (each eigenvector and its negative)."""
    conv = first_conv(model)
    out_channels, in_channels, kh, kw = conv.weight.shape
    if out_channels % 2 or out_channels // 2 > in_channels * kh * kw:
        raise ValueError(
            f"cannot whiten a {kh}×{kw} convolution to {out_channels} channels: "
            f"needs an even count of at most {2 * in_channels * kh * kw}"
        )
    return conv


@torch.no_grad()
def whitening_filters(images: torch.Tensor, conv: nn.Conv2d, eps: float = 5e-4) -> torch.Tensor:
    """Filters of `conv`'s shape for `images` (N, C, H, W): the top out_channels / 2 eigenvectors
    of the patch covariance, whitened, and their negatives."""
    out_channels, in_channels, kh, kw = conv.weight.shape
    x = images[:MAX_PATCH_IMAGES].float().cpu()
    # The patches the convolution reads: with a stride, only those (fewer, and cheaper to gather).
    patches = nn.functional.unfold(x, (kh, kw), padding=conv.padding, stride=conv.stride).transpose(1, 2)
    patches = patches.reshape(-1, in_channels * kh * kw).double()
    patches -= patches.mean(0)
    eigenvalues, eigenvectors = torch.linalg.eigh(patches.T @ patches / len(patches))
    k = out_channels // 2  # eigh sorts ascending: the last k carry the most variance
    filters = (eigenvectors[:, -k:] / (eigenvalues[-k:] + eps).sqrt()).T
    filters = filters.reshape(k, in_channels, kh, kw).float()
    return torch.cat([filters, -filters])


@torch.no_grad()
def whiten_first_conv(model: nn.Module, images: torch.Tensor) -> None:
    """Set the first convolution to whitening filters of `images` (the training split)."""
    conv = check_whitenable(model)
    conv.weight.copy_(whitening_filters(images, conv).to(conv.weight.device))


def freeze_first_conv(model: nn.Module) -> None:
    """Leave the first convolution out of training (before the optimizer is made)."""
    for p in first_conv(model).parameters():
        p.requires_grad_(False)
