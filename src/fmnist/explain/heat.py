"""A saliency map drawn over its image, as an RGB array: for the run report, `fmnist explain` and
the serve page alike (without matplotlib's figures, which the server does not need)."""

from __future__ import annotations

import numpy as np
import torch


def heat(image: torch.Tensor, saliency: torch.Tensor) -> np.ndarray:
    """The image [H, W, 3] in [0, 1], dimmed, with the map's positive part over it in a hot
    colour map: where the pixels spoke for the class (scaled to the map's 99th percentile)."""
    from matplotlib import colormaps

    grey = image.reshape(28, 28).numpy()
    m = saliency.reshape(28, 28).clamp_min(0).numpy()
    top = np.percentile(m, 99)
    m = np.clip(m / top, 0, 1) if top > 0 else m
    alpha = 0.85 * np.sqrt(m)[..., None]
    return ((1 - alpha) * 0.55 * np.stack([grey] * 3, axis=-1) + alpha * colormaps["hot"](m)[..., :3]).clip(0, 1)
