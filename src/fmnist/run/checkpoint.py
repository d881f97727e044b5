"""The checkpoint's format: a plain dict saved with torch.save, loaded without pickled code."""

from __future__ import annotations

from pathlib import Path
from typing import Any

import torch

from fmnist.errors import FmnistError
from fmnist.files import atomic_path

CHECKPOINT_FORMAT = "fmnist-checkpoint-1"


def save_checkpoint(path: Path, state: dict[str, Any]) -> None:
    with atomic_path(path) as tmp:
        torch.save({"format": CHECKPOINT_FORMAT, **state}, tmp)


def load_checkpoint(path: Path) -> dict[str, Any]:
    """Load a checkpoint safely (no pickled code) and check that it is one of ours."""
    path = Path(path)
    if not path.is_file():
        raise FmnistError(f"missing checkpoint: {path}")
    try:
        state = torch.load(path, map_location="cpu", weights_only=True)
    except Exception as e:  # torch raises many types for truncated or foreign files
        raise FmnistError(f"{path} is not a readable checkpoint ({type(e).__name__})") from None
    if not isinstance(state, dict) or state.get("format") != CHECKPOINT_FORMAT:
        raise FmnistError(f"{path} is not an fmnist checkpoint")
    return state
