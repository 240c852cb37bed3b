"""Learned data augmentation: a small network, every weight a hyperparameter, rewrites inputs."""

from __future__ import annotations

import math

import torch
from torch import nn
from torch.nn import functional as F

from hpo_cli.data import Batch, Splits
from hpo_cli.data.tasks import mean_loss
from hpo_cli.hyper.base import Criterion, HyperModule
from hpo_cli.models import ACTIVATIONS


class ConvResidual(nn.Module):
    """A one-level UNet r(x) for images x (b, C, H, W), returning (b, C, H, W).

    e = act(conv3×3(x)) at full resolution (width channels); d = act(conv3×3, stride 2 (e)) at
    half resolution (2·width); u = act(conv3×3(upsample(d) to H×W)) (width); the output layer
    sees [u, e] (the skip connection) and maps them back to C channels.
    """

    def __init__(self, channels: int, width: int, activation: str) -> None:
        super().__init__()
        self.encode = nn.Conv2d(channels, width, 3, padding=1)
        self.down = nn.Conv2d(width, 2 * width, 3, stride=2, padding=1)
        self.up = nn.Conv2d(2 * width, width, 3, padding=1)
        self.output = nn.Conv2d(2 * width, channels, 3, padding=1)
        self.act = ACTIVATIONS[activation]()

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        skip = self.act(self.encode(x))
        coarse = self.act(self.down(skip))
        fine = F.interpolate(coarse, size=x.shape[-2:], mode="bilinear", align_corners=False)
        return self.output(torch.cat([self.act(self.up(fine)), skip], dim=1))


class MLPResidual(nn.Module):
    """r(x) = W₂ act(W₁ x + b₁) + b₂ for inputs of any shape (flattened to D features)."""

    def __init__(self, features: int, width: int, activation: str) -> None:
        super().__init__()
        self.hidden = nn.Linear(features, width)
        self.output = nn.Linear(width, features)
        self.act = ACTIVATIONS[activation]()

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        flat = x.reshape(len(x), -1)
        return self.output(self.act(self.hidden(flat))).reshape(x.shape)


class AugmentNet(HyperModule):
    """Learned augmentation x̃ = x + r_λ(x) (Lorraine et al., 2020), λ = every weight of r.

    r is a small conv encoder-decoder with a skip connection (:class:`ConvResidual`) for image
    inputs (C, H, W), and a one-hidden-layer MLP (:class:`MLPResidual`) otherwise. Its output
    layer starts at ``init_scale`` times PyTorch's default initialisation with zero bias, so the
    augmentation starts near the identity map (exactly at it for ``init_scale=0``, where only the
    output layer gets a non-zero hypergradient at first). λ is unconstrained.

    λ enters the training loss only, L_t(w, λ) = mean_b ℓ(f_w(x_b + r_λ(x_b)), y_b): validation,
    test and evaluation see clean inputs, so ∂L_v/∂λ = 0.

    Args:
        model: unused (every hyperparameter module receives it).
        width: hidden channels (images) or units (flat inputs) of r.
        activation: a key of :data:`hpo_cli.models.ACTIVATIONS`; a smooth one (tanh, the default)
            keeps the mixed second derivatives of the IFT continuous.
        init_scale: scale of the output layer's initial weights.
        data: the training data context; ``data.input_shape`` chooses and sizes r.
    """

    def __init__(
        self,
        model: nn.Module,
        width: int = 16,
        activation: str = "tanh",
        init_scale: float = 0.01,
        *,
        data: Splits,
    ) -> None:
        super().__init__()
        if width <= 0:
            raise ValueError(f"hyper.width={width} is invalid: must be > 0")
        if activation not in ACTIVATIONS:
            choices = ", ".join(ACTIVATIONS)
            raise ValueError(f"hyper.activation={activation!r} is unknown; choose one of {choices}")
        shape = data.input_shape
        if len(shape) == 3:
            self.net: nn.Module = ConvResidual(shape[0], width, activation)
        else:
            self.net = MLPResidual(math.prod(shape), width, activation)
        with torch.no_grad():
            self.net.output.weight.mul_(init_scale)
            self.net.output.bias.zero_()
        inputs = data.train.inputs
        self.to(inputs.device, inputs.dtype)

    def augment(self, inputs: torch.Tensor) -> torch.Tensor:
        """x̃ = x + r_λ(x), shaped like ``inputs`` (b, *input_shape)."""
        return inputs + self.net(inputs)

    def training_loss(self, model: nn.Module, batch: Batch, criterion: Criterion) -> torch.Tensor:
        """The mean data loss on augmented inputs (plus the zero penalty)."""
        outputs = model(self.augment(batch.inputs))
        return mean_loss(criterion, outputs, batch.targets) + self.penalty(model)

    def constrained_values(self) -> torch.Tensor:
        return torch.cat([p.detach().reshape(-1) for p in self.parameters()])
