"""A small residual network for tabular data."""

from __future__ import annotations

import torch
from torch import nn


class ResidualMLP(nn.Module):
    """x ↦ head(h_B), h_0 = tanh(W_in x), h_{b+1} = h_b + tanh(W_b h_b).

    Asks hpo-cli for ``in_features`` and ``num_classes`` by name (the runner passes only the
    shapes a constructor's signature lists); ``width`` and ``blocks`` come from the YAML.
    Maps inputs (b, in_features) to logits (b, num_classes).
    """

    def __init__(self, in_features: int, num_classes: int, width: int = 32, blocks: int = 2):
        super().__init__()
        self.stem = nn.Linear(in_features, width)
        self.blocks = nn.ModuleList(nn.Linear(width, width) for _ in range(blocks))
        self.head = nn.Linear(width, num_classes)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        h = torch.tanh(self.stem(x))
        for block in self.blocks:
            h = h + torch.tanh(block(h))
        return self.head(h)
