"""Batched inference on a whole tensor of images, shared by training (validation) and evaluation."""

from __future__ import annotations

import torch
import torch.nn.functional as F
from torch import nn


def resolve_device(name: str = "auto") -> torch.device:
    if name == "auto":
        return torch.device("cuda" if torch.cuda.is_available() else "cpu")
    return torch.device(name)


def uses_channels_last(model: nn.Module) -> bool:
    # oneDNN convolutions and pooling run several times faster on channels-last tensors; the
    # numbers are the same (within float rounding), only the memory layout differs.
    return any(isinstance(m, nn.Conv2d) for m in model.modules())


def prepare(model: nn.Module, device: torch.device) -> nn.Module:
    model = model.to(device)
    return model.to(memory_format=torch.channels_last) if uses_channels_last(model) else model


def layout(model: nn.Module, images: torch.Tensor) -> torch.Tensor:
    return images.contiguous(memory_format=torch.channels_last) if uses_channels_last(model) else images


@torch.inference_mode()
def predict_logits(model: nn.Module, images: torch.Tensor, batch_size: int = 1000,
                   tta: bool = False) -> torch.Tensor:
    """Logits for every image, in eval mode, in large batches; returned on the CPU as float32.
    With `tta`, the mean of the logits of each image and of its mirror image."""
    was_training = model.training
    model.eval()
    device = next(model.parameters()).device
    out = []
    for start in range(0, len(images), batch_size):
        batch = layout(model, images[start:start + batch_size].to(device, non_blocking=True))
        logits = model(batch).float()
        if tta:
            logits = (logits + model(batch.flip(3)).float()) / 2
        out.append(logits.cpu())
    model.train(was_training)
    return torch.cat(out) if out else torch.empty(0, 10)


def loss_accuracy(logits: torch.Tensor, labels: torch.Tensor) -> tuple[float, float]:
    loss = F.cross_entropy(logits, labels).item()
    accuracy = (logits.argmax(1) == labels).float().mean().item()
    return loss, accuracy
