"""Linear models on flattened inputs: one layer, or a product of two bias-free layers."""

from __future__ import annotations

import math

from torch import nn


class Linear(nn.Sequential):
    """Flatten, then one Linear layer: outputs (b, num_outputs) = x W^T (+ b).

    Args:
        input_shape: shape of one input; it is flattened to prod(input_shape) features.
        num_outputs: classes (logistic regression), or 1 (linear regression, seed 003).
        bias: whether the layer has a bias.
    """

    def __init__(self, input_shape: tuple[int, ...], num_outputs: int, bias: bool = True) -> None:
        super().__init__(nn.Flatten(), nn.Linear(math.prod(input_shape), num_outputs, bias=bias))


class TwoLayerLinear(nn.Sequential):
    """Flatten, then two bias-free Linear layers: outputs (b, num_outputs) = x W₁^T W₂^T.

    Seed 004's deep linear network: with squared error the training loss is ½‖Y − W₂W₁X‖², a
    non-convex problem whose Hessian is singular at every minimum (W₁ and W₂ trade scale).

    Args:
        input_shape: shape of one input; it is flattened to prod(input_shape) features.
        num_outputs: rows of W₂.
        width: rows of W₁ (seed 004 uses 100).
    """

    def __init__(self, input_shape: tuple[int, ...], num_outputs: int, width: int = 100) -> None:
        if width <= 0:
            raise ValueError(f"model.width={width} is invalid: must be > 0")
        super().__init__(
            nn.Flatten(),
            nn.Linear(math.prod(input_shape), width, bias=False),
            nn.Linear(width, num_outputs, bias=False),
        )
