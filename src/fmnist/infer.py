"""Batched inference on a whole tensor of images, shared by training (validation) and evaluation."""

from __future__ import annotations

import torch
import torch.nn.functional as F
from torch import nn


def uses_channels_last(model: nn.Module) -> bool:
    # oneDNN convolutions and pooling run several times faster on channels-last tensors; the
    # numbers are the same (within float rounding), only the memory layout differs.
    return any(isinstance(m, nn.Conv2d) for m in model.modules())


def prepare(model: nn.Module, device: torch.device) -> nn.Module:
    model = model.to(device)
    return model.to(memory_format=torch.channels_last) if uses_channels_last(model) else model


def layout(model: nn.Module, images: torch.Tensor) -> torch.Tensor:
    return images.contiguous(memory_format=torch.channels_last) if uses_channels_last(model) else images


def shift(images: torch.Tensor, dx: int, dy: int) -> torch.Tensor:
    """`images` (N, C, H, W) moved `dx` pixels right and `dy` down, the uncovered edge zero."""
    h, w = images.shape[-2:]
    p = max(abs(dx), abs(dy))
    padded = F.pad(images, (p, p, p, p))
    return padded[..., p - dy:p - dy + h, p - dx:p - dx + w]


@torch.inference_mode()
def predict_logits(model: nn.Module, images: torch.Tensor, batch_size: int = 1000,
                   tta: bool = False, tta_shift: int = 0) -> torch.Tensor:
    """Logits for every image, in eval mode, in large batches; returned on the CPU as float32.
    With `tta`, the mean of the logits of each image and of its mirror image; with `tta_shift`,
    also over the image moved that many pixels up, down, left and right."""
    was_training = model.training
    model.eval()
    device = next(model.parameters()).device
    out = []
    for start in range(0, len(images), batch_size):
        batch = images[start:start + batch_size].to(device, non_blocking=True)
        views = [batch]
        if tta_shift:
            views += [shift(batch, dx, dy) for dx, dy in
                      ((tta_shift, 0), (-tta_shift, 0), (0, tta_shift), (0, -tta_shift))]
        if tta:
            views += [v.flip(3) for v in views]
        logits = sum(model(layout(model, v)).float() for v in views) / len(views)
        out.append(logits.cpu())
    model.train(was_training)
    return torch.cat(out) if out else torch.empty(0, 10)


def loss_accuracy(logits: torch.Tensor, labels: torch.Tensor) -> tuple[float, float]:
    loss = F.cross_entropy(logits, labels).item()
    accuracy = (logits.argmax(1) == labels).float().mean().item()
    return loss, accuracy
