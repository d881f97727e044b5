"""The sanity checks a saliency method must pass (Adebayo et al. 2018, and the deletion test):

1. deleting each image's most salient pixels (set to black, the background) lowers the predicted
   class's probability more than deleting as many random pixels;
2. the maps of the same architecture with re-initialised weights are unlike the trained model's
   (low Spearman rank correlation): a method whose maps survive randomisation shows the image's
   edges, not the model's reasons.
"""

from __future__ import annotations

import numpy as np
import torch
from scipy.stats import spearmanr

from fmnist.explain.methods import Forward, saliency_maps


@torch.no_grad()
def _probability(forward: Forward, images: torch.Tensor, target: torch.Tensor) -> torch.Tensor:
    return forward(images).softmax(1)[torch.arange(len(images)), target]


def _deleted(images: torch.Tensor, pixels: torch.Tensor) -> torch.Tensor:
    flat = images.reshape(len(images), -1).clone()
    flat.scatter_(1, pixels, 0.0)
    return flat.reshape(images.shape)


def deletion_check(
    forward: Forward,
    images: torch.Tensor,
    maps: torch.Tensor,
    target: torch.Tensor,
    fraction: float = 0.1,
    seed: int = 0,
) -> dict:
    """The share of images whose predicted class loses more probability when their `fraction` most
    salient pixels are deleted than when as many random pixels are."""
    k = round(fraction * maps[0].numel())
    salient = maps.reshape(len(maps), -1).argsort(dim=1, descending=True)[:, :k]
    gen = torch.Generator().manual_seed(seed)
    random = torch.rand(len(maps), maps[0].numel(), generator=gen).argsort(dim=1)[:, :k]
    before = _probability(forward, images, target)
    salient_drop = before - _probability(forward, _deleted(images, salient), target)
    random_drop = before - _probability(forward, _deleted(images, random), target)
    return {
        "passed": float((salient_drop > random_drop).float().mean()),
        "salient_drop": float(salient_drop.mean()),
        "random_drop": float(random_drop.mean()),
    }


def rank_correlation(a: torch.Tensor, b: torch.Tensor) -> float:
    """Mean Spearman correlation of paired maps (a constant map counts as uncorrelated)."""
    values = [spearmanr(x.flatten().numpy(), y.flatten().numpy()).statistic for x, y in zip(a, b)]
    return float(np.mean([0.0 if np.isnan(v) else v for v in values]))


def randomisation_check(
    trained_maps: torch.Tensor, random_forward: Forward, images: torch.Tensor, target: torch.Tensor, method: str
) -> float:
    """Mean rank correlation of the trained model's maps with a re-initialised model's, same class."""
    return rank_correlation(trained_maps, saliency_maps(random_forward, images, target, method))
