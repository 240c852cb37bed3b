"""Data reweighting: one learned loss weight per training example."""

from __future__ import annotations

import torch
from torch import nn

from hpo_cli.data import Batch, Splits
from hpo_cli.hyper.base import Criterion, HyperModule


class LossWeights(HyperModule):
    """Weighted training loss with a = n · softmax(θ) over the n training examples (mean 1).

    On a batch B of training examples (``batch.index`` gives their positions i in the split),

        L_t(w, θ) = (1/|B|) Σ_{b∈B} a_{i_b} ℓ_b(w),   a = n · softmax(θ) ∈ R^n,  Σ_i a_i = n,

    an unbiased estimate of the full weighted loss Σ_i softmax(θ)_i ℓ_i(w) whatever the batch. The
    softmax over the whole set (rather than sigmoid/softplus weights normalised per batch) keeps
    the weights positive and their mean fixed at 1, so the outer optimiser can move weight between
    examples but cannot shrink or inflate all of them (which would only rescale the inner
    problem's step size), and a batch's loss does not depend on which other examples share it.
    θ + c·1 gives the same weights: the hypergradient is orthogonal to 1.

    θ enters the training loss only; the validation loss is the plain mean, so ∂L_v/∂θ = 0.

    Args:
        model: unused (every hyperparameter module receives it).
        data: the training data context; θ has one entry per example of ``data.train``.
    """

    def __init__(self, model: nn.Module, *, data: Splits) -> None:
        super().__init__()
        inputs = data.train.inputs
        self.raw = nn.Parameter(
            torch.zeros(len(data.train), dtype=inputs.dtype, device=inputs.device)
        )

    def weights(self) -> torch.Tensor:
        """a = n · softmax(θ), shape (n,): positive, mean 1."""
        return self.raw.numel() * torch.softmax(self.raw, dim=0)

    def training_loss(self, model: nn.Module, batch: Batch, criterion: Criterion) -> torch.Tensor:
        """(1/|B|) Σ_b a_{index_b} ℓ_b plus the (zero) penalty."""
        losses = criterion(model(batch.inputs), batch.targets)
        return (self.weights()[batch.index] * losses).mean() + self.penalty(model)

    def constrained_values(self) -> torch.Tensor:
        return self.weights().detach()
