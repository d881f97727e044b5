"""Choosing the torch device from a name, refusing one this machine does not have."""

from __future__ import annotations

import os
import re

import torch

from fmnist.errors import FmnistError, UsageError

DEVICE_NAME = re.compile(r"auto|cpu|mps|cuda(:\d+)?")


def check_device_name(name: str) -> None:
    if not DEVICE_NAME.fullmatch(name):
        raise UsageError(f"device must be auto, cpu, cuda, cuda:N or mps, got {name!r}")


def resolve_device(name: str = "auto") -> torch.device:
    """The torch device for a name; a device this machine does not have is an error that says so."""
    check_device_name(name)
    if name == "auto":
        return torch.device("cuda" if torch.cuda.is_available() else "cpu")
    device = torch.device(name)
    if device.type == "cuda":
        if not torch.cuda.is_available():
            raise FmnistError(f"--device {name}: no CUDA device here (torch {torch.__version__}); use cpu or auto")
        if device.index is not None and device.index >= torch.cuda.device_count():
            raise FmnistError(f"--device {name}: this machine has {torch.cuda.device_count()} CUDA device(s)")
    if device.type == "mps" and not torch.backends.mps.is_available():
        raise FmnistError(f"--device {name}: no Apple MPS device here; use cpu or auto")
    return device


def cores() -> int:
    """The cores this process may run on (its affinity), not all the machine has."""
    try:
        return len(os.sched_getaffinity(0))
    except AttributeError:  # not on Linux
        return os.cpu_count() or 1
