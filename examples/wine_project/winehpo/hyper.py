"""Automatic relevance determination: one weight-decay coefficient per input feature."""

from __future__ import annotations

import math

import torch
from torch import nn
from torch.nn.functional import softplus

from hpo_cli.hyper import HyperModule


class FeatureDecay(HyperModule):
    """R(w, λ) = ½ Σ_j softplus(θ_j) ‖W_in[:, j]‖², one λ_j = softplus(θ_j) per input feature.

    The first ``nn.Linear`` of the model is W_in (hidden × features): its column j is everything
    feature j feeds forward, so a large λ_j switches feature j off. The hypergradient tunes each
    λ_j on the validation loss. hpo-cli's contract (:class:`hpo_cli.hyper.HyperModule`): the
    constructor takes the model (and, if it asks, ``data``); :meth:`penalty` enters the training
    loss only; :meth:`constrained_values` reports λ.
    """

    def __init__(self, model: nn.Module, init: float = 1e-3) -> None:
        super().__init__()
        self.layer = next(m for m in model.modules() if isinstance(m, nn.Linear))
        raw = math.log(math.expm1(init))  # softplus⁻¹(init)
        weight = self.layer.weight
        self.raw = nn.Parameter(torch.full((weight.shape[1],), raw, dtype=weight.dtype))

    def penalty(self, model: nn.Module) -> torch.Tensor:
        columns = self.layer.weight.square().sum(dim=0)  # ‖W_in[:, j]‖², (features,)
        return 0.5 * (softplus(self.raw) * columns).sum()

    def constrained_values(self) -> torch.Tensor:
        return softplus(self.raw.detach())
