"""A researcher's model with a layer autograd cannot differentiate twice (a custom kernel's
backward marked ``@once_differentiable``, as flash attention's has no double backward), named by
``_target_`` (``tests.support.no_double_backward.OnceTanhNet``)."""

from __future__ import annotations

import torch
from torch import nn
from torch.autograd.function import once_differentiable


class OnceTanh(torch.autograd.Function):
    """tanh whose backward has no derivative of its own."""

    @staticmethod
    def forward(ctx, x: torch.Tensor) -> torch.Tensor:
        y = torch.tanh(x)
        ctx.save_for_backward(y)
        return y

    @staticmethod
    @once_differentiable
    def backward(ctx, grad: torch.Tensor) -> torch.Tensor:
        (y,) = ctx.saved_tensors
        return grad * (1 - y * y)


class OnceTanhNet(nn.Module):
    """in_features → width → num_classes through :class:`OnceTanh`."""

    def __init__(self, in_features: int, num_classes: int, width: int = 8) -> None:
        super().__init__()
        self.first, self.last = nn.Linear(in_features, width), nn.Linear(width, num_classes)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.last(OnceTanh.apply(self.first(x.flatten(1))))
