"""Several trained networks as one: an ensemble's module, built from its run's `network` record.

Each member sees the test-time views its own run was tested with, its logits are divided by the
temperature fitted on its validation split (so every member's probabilities mean what they say),
and the members' softmaxes are averaged with the ensemble's weights. The ensemble's logits are the
logarithm of that mixture, by log-sum-exp so they stay finite where a probability underflows: the
argmax is the mixture's class, and a softmax of them gives the mixture back.

The record (in config.json, what every process builds the ensemble from):

    {"kind": "ensemble", "name": "ensemble", "weights": "fitted" | "uniform",
     "members": [{"run": ..., "config": {the member's TrainConfig}, "temperature": T,
                  "weight": w, "checkpoint_sha256": ...}, ...], "choice": {...}}
"""

from __future__ import annotations

from typing import Any

import torch
from torch import nn

from fmnist.errors import FmnistError, UsageError
from fmnist.models.forward import Averaged

KIND = "ensemble"


class Ensemble(nn.Module):
    """The weighted mixture of the members' calibrated probabilities, as log-probabilities."""

    def __init__(self, members: list[nn.Module], views: list[tuple[bool, int]], temperatures, weights):
        super().__init__()
        self.members = nn.ModuleList(members)
        self.views = [(bool(flip), int(shift)) for flip, shift in views]
        # from the record, not the checkpoint: config.json is the one place they are kept
        self.register_buffer("temperatures", torch.tensor(temperatures, dtype=torch.float32), persistent=False)
        self.register_buffer("log_weights", torch.tensor(weights, dtype=torch.float32).log(), persistent=False)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        parts = [
            (Averaged(member, flip, shift)(x) / self.temperatures[k]).log_softmax(1) + self.log_weights[k]
            for k, (member, (flip, shift)) in enumerate(zip(self.members, self.views))
        ]
        return torch.logsumexp(torch.stack(parts), 0)


def is_ensemble(network: dict[str, Any] | None) -> bool:
    return bool(network) and network.get("kind") == KIND


def check_ensemble(network: dict[str, Any], net_args: dict[str, Any]) -> None:
    """What can be checked of an ensemble's record without building it."""
    members = network.get("members")
    if net_args:
        raise UsageError("net_args: an ensemble takes no arguments (its members have their own)")
    if not isinstance(members, list) or len(members) < 2 or not all(isinstance(m, dict) for m in members):
        raise FmnistError("an ensemble's record must list two members or more")
    for m in members:
        if not isinstance(m.get("config"), dict) or is_ensemble(m["config"].get("network")):
            raise FmnistError("each member of an ensemble's record needs its run's config (and is no ensemble)")
        for key in ("temperature", "weight"):
            value = m.get(key)
            if not isinstance(value, (int, float)) or isinstance(value, bool) or not 0 < value < float("inf"):
                raise FmnistError(f"an ensemble member's {key} must be a positive number, got {value!r}")
    total = sum(m["weight"] for m in members)
    if abs(total - 1) > 1e-6:
        raise FmnistError(f"an ensemble's weights must sum to 1, got {total}")


def build_ensemble(network: dict[str, Any]) -> Ensemble:
    """The ensemble a record describes, each member freshly built from its config (weights come
    from the ensemble's best.pt)."""
    from fmnist.models.network import create_network
    from fmnist.training.config import make_config

    configs = [make_config(m["config"]) for m in network["members"]]
    return Ensemble(
        [create_network(cfg) for cfg in configs],
        [(cfg.tta, cfg.tta_shift) for cfg in configs],
        [m["temperature"] for m in network["members"]],
        [m["weight"] for m in network["members"]],
    )


def member_names(network: dict[str, Any]) -> list[str]:
    return [m["config"]["model"] for m in network["members"]]
