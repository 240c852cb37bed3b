"""A fully connected network on flattened inputs."""

from __future__ import annotations

import itertools
import math

from torch import nn

from hpo_cli.models.activations import activation as make_activation
from hpo_cli.models.shapes import check_widths


class MLP(nn.Sequential):
    """Flatten, then Linear → activation for each hidden width, then a Linear output layer.

    Maps inputs (b, *input_shape) to outputs (b, num_outputs).

    Args:
        input_shape: shape of one input; it is flattened to prod(input_shape) features.
        num_outputs: width of the output layer (classes, or 1 for regression).
        hidden_sizes: widths of the hidden layers (the seeds use [784] and [8, 4]); ``None``:
            one hidden layer as wide as the input, as in seed 001 (784-784-10 on MNIST).
        activation: a key of :data:`hpo_cli.models.activations.ACTIVATIONS`.
    """

    def __init__(
        self,
        input_shape: tuple[int, ...],
        num_outputs: int,
        hidden_sizes: list[int] | None = None,
        activation: str = "elu",
    ) -> None:
        make_activation(activation)  # an unknown name fails before any layer is built
        check_widths("hidden_sizes", hidden_sizes or [])
        features = math.prod(input_shape)
        widths = [features, *(hidden_sizes if hidden_sizes is not None else [features])]
        layers: list[nn.Module] = [nn.Flatten()]
        for fan_in, fan_out in itertools.pairwise(widths):
            layers += [nn.Linear(fan_in, fan_out), make_activation(activation)]
        layers.append(nn.Linear(widths[-1], num_outputs))
        super().__init__(*layers)
