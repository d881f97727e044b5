"""A decorator registry of model builders: one decorated function per model."""

from __future__ import annotations

import difflib
from collections.abc import Callable

import torch
from torch import nn
from torch.utils.flop_counter import FlopCounterMode

from fmnist.errors import UsageError

_BUILDERS: dict[str, Callable[..., nn.Module]] = {}


def register_model(fn: Callable[..., nn.Module], name: str | None = None) -> Callable[..., nn.Module]:
    """Register `fn` under its own name (as a decorator), or under `name`."""
    name = name or fn.__name__
    if name in _BUILDERS:
        raise ValueError(f"model {name!r} is already registered")
    _BUILDERS[name] = fn
    return fn


def list_models() -> list[str]:
    return sorted(_BUILDERS)


def create_model(name: str, **kwargs) -> nn.Module:
    """Build a registered model; its own defaults hold unless `kwargs` names a value."""
    if name not in _BUILDERS:
        close = difflib.get_close_matches(name, list_models(), n=1)
        hint = f"did you mean {close[0]!r}? " if close else ""
        raise UsageError(f"unknown model {name!r}; {hint}choose from: {', '.join(list_models())}")
    return _BUILDERS[name](**kwargs)


def describe(name: str) -> str:
    doc = (getattr(_BUILDERS.get(name), "__doc__", "") or "").strip()  # "" for a name not registered
    return doc.splitlines()[0] if doc else ""


def count_params(model: nn.Module) -> int:
    return sum(p.numel() for p in model.parameters())


def flops_per_image(model: nn.Module) -> dict[str, int]:
    """Forward and training (forward + backward) FLOPs for one 28×28 image, counted by torch."""
    model = model.eval()
    x = torch.zeros(2, 1, 28, 28)
    with FlopCounterMode(display=False) as fwd:
        with torch.no_grad():
            model(x)
    with FlopCounterMode(display=False) as both:
        model(x).sum().backward()
    model.zero_grad(set_to_none=True)
    return {"forward": fwd.get_total_flops() // 2, "train": both.get_total_flops() // 2}
