"""Optimizers and learning-rate schedules, built from the config.

A schedule is a multiplier of the configured learning rate for each optimizer step, run by
torch's LambdaLR so its state is saved and restored with the checkpoint like the optimizer's.
"""

from __future__ import annotations

import math
from collections.abc import Callable, Sequence

import torch
from torch import nn

SCHEDULES = ("constant", "linear", "cosine")
# Names a saved config may still hold: "onecycle" was the linear schedule's first name (it is not
# torch's OneCycleLR, which also ramps the momentum and decays to a floor above zero).
RENAMED = {"onecycle": "linear"}
OPTIMIZERS = ("adam", "adamw", "sgd")


def lr_factor(schedule: str, total_steps: int | Sequence[int], warmup: float) -> Callable[[int], float]:
    """The multiplier at step t: a linear warm-up over a fraction `warmup` of the steps, then
    constant, a linear decay to zero ("linear": with a warm-up, a triangle), or a cosine decay to
    zero.

    `total_steps` may be a list of cycle lengths: a run made longer on resume runs the schedule
    anew over the added steps (warm-up, then decay), rather than stretching the old one."""
    cycles = [total_steps] if isinstance(total_steps, int) else list(total_steps)

    def within(step: int, total: int) -> float:
        warm = int(round(warmup * total))
        if step < warm:
            return (step + 1) / warm
        if schedule == "constant":
            return 1.0
        progress = min(1.0, (step - warm) / max(1, total - warm))
        if schedule == "linear":
            return 1.0 - progress
        return 0.5 * (1.0 + math.cos(math.pi * progress))

    def factor(step: int) -> float:
        for length in cycles[:-1]:
            if step < length:
                return within(step, length)
            step -= length
        return within(step, cycles[-1])

    return factor


def make_optimizer(
    model: nn.Module, name: str, lr: float, weight_decay: float = 0.0, momentum: float = 0.9
) -> torch.optim.Optimizer:
    """Adam (the study's), AdamW, or SGD with Nesterov momentum. Weight decay spares biases and
    BatchNorm parameters, whose decay only hurts. Frozen parameters are left out."""
    trained = [p for p in model.parameters() if p.requires_grad]
    decay = [p for p in trained if p.ndim > 1]
    rest = [p for p in trained if p.ndim <= 1]
    groups = [{"params": decay, "weight_decay": weight_decay}, {"params": rest, "weight_decay": 0.0}]
    # Fused kernels do the whole update in one pass per step; same arithmetic as the loop versions.
    fused = trained[0].device.type in ("cpu", "cuda")
    if name == "adam":
        return torch.optim.Adam(groups, lr=lr, fused=fused)
    if name == "adamw":
        return torch.optim.AdamW(groups, lr=lr, fused=fused)
    if name == "sgd":
        return torch.optim.SGD(groups, lr=lr, momentum=momentum, nesterov=True, fused=fused)
    raise ValueError(f"unknown optimizer {name!r}")


def make_scheduler(
    optimizer: torch.optim.Optimizer, schedule: str, total_steps: int | Sequence[int], warmup: float
) -> torch.optim.lr_scheduler.LambdaLR:
    return torch.optim.lr_scheduler.LambdaLR(optimizer, lr_factor(schedule, total_steps, warmup))


def cycle_steps(epochs: int, restarts: Sequence[int], steps_per_epoch: int) -> list[int]:
    """Steps in each schedule cycle: one over all epochs, or one more after each restart epoch."""
    bounds = [0, *restarts, epochs]
    return [(b - a) * steps_per_epoch for a, b in zip(bounds, bounds[1:])]
