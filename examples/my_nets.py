"""A network as code: any torch nn.Module whose forward maps a [N, 1, 28, 28] float batch to
[N, 10] logits. fmnist keeps a copy of this file in the run, so the run does not need it later.

    fmnist train examples/my_nets.py:WideNet --net-arg width=48
    fmnist evaluate runs/WideNet-... --trust-code    # runs the recorded copy of this code
"""

import torch
from torch import nn


class WideNet(nn.Module):
    """One wide 5×5 convolution, max-pooled twice, and a linear classifier."""

    def __init__(self, width: int = 32, dropout: float = 0.25):
        super().__init__()
        self.features = nn.Sequential(
            nn.Conv2d(1, width, 5, padding=2),
            nn.BatchNorm2d(width),
            nn.ReLU(),
            nn.MaxPool2d(2),
            nn.Conv2d(width, 2 * width, 3, padding=1),
            nn.ReLU(),
            nn.MaxPool2d(2),
        )
        self.head = nn.Sequential(nn.Flatten(), nn.Dropout(dropout), nn.Linear(2 * width * 7 * 7, 10))

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.head(self.features(x))
