"""Models whose weights are the inner problem's variables w."""

from __future__ import annotations

import itertools
import math

from torch import nn

ACTIVATIONS: dict[str, type[nn.Module]] = {
    "relu": nn.ReLU,
    "elu": nn.ELU,
    "tanh": nn.Tanh,
    "sigmoid": nn.Sigmoid,
    "softplus": nn.Softplus,
    "gelu": nn.GELU,
}


class MLP(nn.Sequential):
    """Flatten, then Linear → activation for each hidden width, then a Linear output layer.

    Args:
        input_shape: shape of one input; it is flattened to prod(input_shape) features.
        num_outputs: width of the output layer (classes, or 1 for regression).
        hidden_sizes: widths of the hidden layers (the seeds use [784] and [8, 4]); ``None``:
            one hidden layer as wide as the input, as in seed 001.
        activation: a key of :data:`ACTIVATIONS`.
    """

    def __init__(
        self,
        input_shape: tuple[int, ...],
        num_outputs: int,
        hidden_sizes: list[int] | None = None,
        activation: str = "elu",
    ) -> None:
        if activation not in ACTIVATIONS:
            choices = ", ".join(ACTIVATIONS)
            raise ValueError(f"model.activation={activation!r} is unknown; choose one of {choices}")
        features = math.prod(input_shape)
        widths = [features, *(hidden_sizes if hidden_sizes is not None else [features])]
        layers: list[nn.Module] = [nn.Flatten()]
        for fan_in, fan_out in itertools.pairwise(widths):
            layers += [nn.Linear(fan_in, fan_out), ACTIVATIONS[activation]()]
        layers.append(nn.Linear(widths[-1], num_outputs))
        super().__init__(*layers)
