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
    return padded[..., p - dy : p - dy + h, p - dx : p - dx + w]


def tta_views(batch: torch.Tensor, tta: bool = False, tta_shift: int = 0) -> list[torch.Tensor]:
    """The images a model sees at test time: each image; with `tta_shift`, it moved that many
    pixels right, left, down and up; with `tta`, the mirror image of each of these."""
    views = [batch]
    if tta_shift:
        views += [shift(batch, dx, dy) for dx, dy in ((tta_shift, 0), (-tta_shift, 0), (0, tta_shift), (0, -tta_shift))]
    if tta:
        views += [v.flip(3) for v in views]
    return views


class Averaged(nn.Module):
    """A model's logits averaged over the test-time views of each image: the model as a run is
    tested (and as it is exported, so the exported file gives the same answers)."""

    def __init__(self, model: nn.Module, tta: bool = False, tta_shift: int = 0, channels_last: bool = False):
        super().__init__()
        self.model, self.tta, self.tta_shift, self.channels_last = model, tta, tta_shift, channels_last

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        views = tta_views(x, self.tta, self.tta_shift)
        if self.channels_last:
            views = [v.contiguous(memory_format=torch.channels_last) for v in views]
        return sum(self.model(v).float() for v in views) / len(views)


@torch.inference_mode()
def predict_logits(
    model: nn.Module, images: torch.Tensor, batch_size: int = 1000, tta: bool = False, tta_shift: int = 0
) -> torch.Tensor:
    """Logits for every image, in eval mode, in large batches; returned on the CPU as float32,
    averaged over the test-time views `tta` and `tta_shift` ask for (see tta_views)."""
    was_training = model.training
    model.eval()
    device = next(model.parameters()).device
    averaged = Averaged(model, tta, tta_shift, uses_channels_last(model))
    out = [
        averaged(images[start : start + batch_size].to(device, non_blocking=True)).cpu()
        for start in range(0, len(images), batch_size)
    ]
    model.train(was_training)
    return torch.cat(out) if out else torch.empty(0, 10)


def loss_accuracy(logits: torch.Tensor, labels: torch.Tensor) -> tuple[float, float]:
    loss = F.cross_entropy(logits, labels).item()
    accuracy = (logits.argmax(1) == labels).float().mean().item()
    return loss, accuracy
