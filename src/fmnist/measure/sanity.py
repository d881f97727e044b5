"""The sanity checks of saliency methods on a run's model (explain/sanity.py has the checks), for
BENCHMARKS.md ("Explanations") and the tests."""

from __future__ import annotations

from pathlib import Path

import torch

from fmnist.explain.methods import saliency_maps, torch_forward
from fmnist.explain.sanity import cascading_randomisation, deletion_check
from fmnist.run.folder import RunFolder


def sanity_checks(
    run_dir: Path, images: torch.Tensor, methods: list[str], seed: int = 0, stages: int | None = None
) -> dict:
    """Both checks for each method on a run's model, over the garment's pixels (for BENCHMARKS.md and
    the tests): deletion against random deletion, and the randomisation cascading from the top
    layer down (`randomisation_spearman`: once every layer is re-initialised)."""
    model, cfg, _ = RunFolder(run_dir).require().load_model()
    forward = torch_forward(model)
    with torch.no_grad():
        target = forward(images).argmax(1)
    results = {}
    for method in methods:
        maps = saliency_maps(forward, images, target, method)
        cascade = cascading_randomisation(model, maps, images, target, method, seed, stages)
        results[method] = {
            "deletion": deletion_check(forward, images, maps, target, seed=seed),
            "randomisation_spearman": cascade[-1]["spearman"],
            "cascade": cascade,
        }
    return results
