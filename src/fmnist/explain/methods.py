"""Saliency maps through Captum: one [28, 28] map per image, for a chosen class, large where the
pixels speak for that class. Occlusion needs only the model's answers, so it also explains an
exported .onnx file; the gradient methods need the PyTorch model.

The maps explain the network on the image as given, not the average over test-time views.
"""

from __future__ import annotations

from collections.abc import Callable

import torch
from torch import nn

from fmnist.errors import UsageError

Forward = Callable[[torch.Tensor], torch.Tensor]
METHODS = ("occlusion", "integrated_gradients", "saliency")
DEFAULT_METHOD = "occlusion"  # BENCHMARKS.md, "Explanations": counted over the garment, it passes both best
BLACK_BOX = ("occlusion",)  # what works without gradients (an ONNX Runtime session)
BATCH = 50


def _occlusion(forward: Forward, images: torch.Tensor, target: torch.Tensor) -> torch.Tensor:
    from captum.attr import Occlusion

    # 4×4 patches every 2 pixels, replaced by black (the dataset's background)
    return Occlusion(forward).attribute(
        images,
        sliding_window_shapes=(1, 4, 4),
        strides=(1, 2, 2),
        baselines=0.0,
        target=target,
        perturbations_per_eval=64,
    )


def _integrated_gradients(forward: Forward, images: torch.Tensor, target: torch.Tensor) -> torch.Tensor:
    from captum.attr import IntegratedGradients

    return IntegratedGradients(forward).attribute(images, baselines=0.0, target=target, n_steps=32)


def _saliency(forward: Forward, images: torch.Tensor, target: torch.Tensor) -> torch.Tensor:
    from captum.attr import Saliency

    return Saliency(forward).attribute(images, target=target, abs=True)


ATTRIBUTE = {"occlusion": _occlusion, "integrated_gradients": _integrated_gradients, "saliency": _saliency}


def check_method(method: str, gradients: bool) -> str:
    if method not in METHODS:
        raise UsageError(f"--method must be one of {', '.join(METHODS)}, got {method!r}")
    if not gradients and method not in BLACK_BOX:
        raise UsageError(f"--method {method} needs the PyTorch model (a run folder); an .onnx file allows occlusion")
    return method


def saliency_maps(forward: Forward, images: torch.Tensor, target: torch.Tensor, method: str) -> torch.Tensor:
    """float32 [N, 28, 28] maps of `method` for class `target[i]` of each image, in batches."""
    out = []
    for start in range(0, len(images), BATCH):
        x = images[start : start + BATCH].detach().clone().requires_grad_(method != "occlusion")
        with torch.set_grad_enabled(method != "occlusion"):
            out.append(ATTRIBUTE[method](forward, x, target[start : start + BATCH]).detach().reshape(-1, 28, 28))
    return torch.cat(out).float() if out else torch.zeros(0, 28, 28)


def torch_forward(model: nn.Module) -> Forward:
    """The model in eval mode as a function of images, with the layout its weights expect."""
    from fmnist.models.forward import layout

    model.eval()
    return lambda images: model(layout(model, images)).float()
