"""The sanity checks a saliency method must pass (Adebayo et al. 2018, and the deletion test),
counted over each image's garment only: about half of a Fashion-MNIST image is black background,
where deletion changes nothing and every map ties at zero, so counted over all 784 pixels any map
that follows the garment passes both (the maps of a network as initialised correlated 0.76 with a
trained one's that way).

1. Deletion: removing (setting to black) the `fraction` most salient of an image's garment pixels
   lowers the predicted class's probability more than removing as many random garment pixels.
2. Randomisation, cascading from the top layer down: the layers are re-initialised one at a time
   from the output towards the input, and after each the maps are compared with the trained
   model's over the garment pixels (Spearman); a method whose maps survive the randomisation shows
   the image's shape, not what the model learned.
"""

from __future__ import annotations

import copy

import numpy as np
import torch
from scipy.stats import spearmanr
from torch import nn

from fmnist.explain.methods import Forward, saliency_maps, torch_forward

GARMENT = 0.02  # a pixel brighter than this (5 of 255 grey levels) belongs to the garment


def garment(images: torch.Tensor) -> torch.Tensor:
    """bool [N, 784]: the pixels of each image that are not background."""
    return images.reshape(len(images), -1) > GARMENT


@torch.no_grad()
def _probability(forward: Forward, images: torch.Tensor, target: torch.Tensor) -> torch.Tensor:
    return forward(images).softmax(1)[torch.arange(len(images)), target]


def _first_k(scores: torch.Tensor, allowed: torch.Tensor, k: torch.Tensor) -> torch.Tensor:
    """bool [N, P]: each row's k[i] highest-scoring allowed pixels."""
    scores = scores.masked_fill(~allowed, float("-inf"))
    rank = scores.argsort(dim=1, descending=True).argsort(dim=1)
    return rank < k[:, None]


def _deleted(images: torch.Tensor, chosen: torch.Tensor) -> torch.Tensor:
    return images.reshape(len(images), -1).masked_fill(chosen, 0.0).reshape(images.shape)


def deletion_check(
    forward: Forward,
    images: torch.Tensor,
    maps: torch.Tensor,
    target: torch.Tensor,
    fraction: float = 0.1,
    seed: int = 0,
) -> dict:
    """The share of images whose predicted class loses more probability when their `fraction` most
    salient garment pixels are removed than when as many random garment pixels are."""
    mask = garment(images)
    k = (fraction * mask.sum(1)).round().long().clamp(min=1)
    salient = _first_k(maps.reshape(len(maps), -1).float(), mask, k)
    gen = torch.Generator().manual_seed(seed)
    random = _first_k(torch.rand(mask.shape, generator=gen), mask, k)
    before = _probability(forward, images, target)
    salient_drop = before - _probability(forward, _deleted(images, salient), target)
    random_drop = before - _probability(forward, _deleted(images, random), target)
    return {
        "passed": float((salient_drop > random_drop).float().mean()),
        "salient_drop": float(salient_drop.mean()),
        "random_drop": float(random_drop.mean()),
        "pixels": "garment",
    }


def rank_correlation(a: torch.Tensor, b: torch.Tensor, images: torch.Tensor) -> float:
    """Mean Spearman correlation of paired maps over each image's garment pixels (a constant map
    counts as uncorrelated)."""
    mask = garment(images)
    values = []
    for x, y, m in zip(a.reshape(len(a), -1), b.reshape(len(b), -1), mask):
        v = spearmanr(x[m].numpy(), y[m].numpy()).statistic if m.sum() > 2 else float("nan")
        values.append(0.0 if np.isnan(v) else v)
    return float(np.mean(values))


def layers_top_down(model: nn.Module) -> list[tuple[str, nn.Module]]:
    """The model's layers with weights of their own, from the output towards the input."""
    own = [
        (name, m)
        for name, m in model.named_modules()
        if hasattr(m, "reset_parameters") and any(True for _ in m.parameters(recurse=False))
    ]
    return list(reversed(own))


def cascading_randomisation(
    model: nn.Module,
    trained_maps: torch.Tensor,
    images: torch.Tensor,
    target: torch.Tensor,
    method: str,
    seed: int = 0,
    stages: int | None = None,
) -> list[dict]:
    """The layers re-initialised in turn, top down (the ones above staying re-initialised); after
    each (or, with `stages`, after the top layer, at evenly spaced depths and after the last: maps
    cost a pass over every image each) the layer's name and the maps' rank correlation with the
    trained model's, over the garment. The last entry is the network fully re-initialised."""
    randomised = copy.deepcopy(model)
    layers = layers_top_down(randomised)
    measured = set(range(len(layers))) if stages is None else measured_at(len(layers), stages)
    torch.manual_seed(seed)
    steps = []
    for i, (name, layer) in enumerate(layers):
        layer.reset_parameters()
        if hasattr(layer, "reset_running_stats"):
            layer.reset_running_stats()
        if i in measured:
            maps = saliency_maps(torch_forward(randomised), images, target, method)
            steps.append({"layer": name, "spearman": rank_correlation(trained_maps, maps, images)})
    return steps


def measured_at(layers: int, stages: int) -> set[int]:
    """`stages` layer indices from the top one to the last, evenly spaced."""
    if stages < 2 or layers <= stages:
        return set(range(layers)) if stages >= layers else {0, layers - 1}
    return {round(k * (layers - 1) / (stages - 1)) for k in range(stages)}
