"""A LeNet-5 style convolutional network for images of any size."""

from __future__ import annotations

import itertools

from torch import nn

from hpo_cli.models.activations import activation as make_activation
from hpo_cli.models.shapes import check_widths, image_shape


class LeNet(nn.Sequential):
    """Conv(5×5, same padding) → activation → 2×2 max-pool per entry of ``channels``, then
    flatten and fully connected layers of ``hidden_sizes``, then a Linear output layer.

    Maps images (b, C, H, W) to outputs (b, num_outputs). With the defaults on 28×28 MNIST:
    6 and 16 channels, 16·7·7 = 784 features, then 120 → 84 → 10. Each pool halves the image
    (rounding down), so H and W must be at least 2^len(channels) (4 with the defaults); the
    flattened size is computed from ``input_shape``.

    Args:
        input_shape: (C, H, W) of one image.
        num_outputs: classes (or 1 for regression).
        channels: output channels of the convolutions.
        hidden_sizes: widths of the fully connected hidden layers.
        activation: a key of :data:`hpo_cli.models.activations.ACTIVATIONS`.
    """

    def __init__(
        self,
        input_shape: tuple[int, ...],
        num_outputs: int,
        channels: list[int] = [6, 16],  # noqa: B006 (the schema's default; never mutated)
        hidden_sizes: list[int] = [120, 84],  # noqa: B006
        activation: str = "relu",
    ) -> None:
        make_activation(activation)
        if not channels:
            raise ValueError("model.channels=[] is invalid: give at least one convolution")
        check_widths("channels", channels)
        check_widths("hidden_sizes", hidden_sizes)
        in_channels, height, width = image_shape(input_shape, "lenet", 2 ** len(channels))
        layers: list[nn.Module] = []
        for fan_in, fan_out in itertools.pairwise([in_channels, *channels]):
            layers += [
                nn.Conv2d(fan_in, fan_out, kernel_size=5, padding=2),
                make_activation(activation),
                nn.MaxPool2d(2),
            ]
            height, width = height // 2, width // 2
        widths = [channels[-1] * height * width, *hidden_sizes]
        layers.append(nn.Flatten())
        for fan_in, fan_out in itertools.pairwise(widths):
            layers += [nn.Linear(fan_in, fan_out), make_activation(activation)]
        layers.append(nn.Linear(widths[-1], num_outputs))
        super().__init__(*layers)
