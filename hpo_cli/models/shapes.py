"""What a model needs to know about the shape of one input."""

from __future__ import annotations


def image_shape(input_shape: tuple[int, ...], model: str, min_size: int) -> tuple[int, int, int]:
    """``input_shape`` as (C, H, W), or one line saying why ``model`` cannot take it.

    Args:
        input_shape: shape of one input, as the data set reports it.
        model: the option's name, for the message (``lenet``, ``resnet18``).
        min_size: the smallest height and width the model accepts.
    """
    if len(input_shape) != 3:
        raise ValueError(
            f"model={model} needs image inputs (C, H, W) but the dataset's inputs have shape "
            f"{tuple(input_shape)}; use an image dataset (digits, mnist, cifar10, ...) or "
            f"model=mlp / model=linear"
        )
    channels, height, width = input_shape
    if min(height, width) < min_size:
        raise ValueError(
            f"model={model} needs images of at least {min_size}x{min_size}; the dataset's are "
            f"{height}x{width}"
        )
    return channels, height, width


def check_widths(key: str, widths: list[int]) -> None:
    """One line when a list of layer widths (``model.hidden_sizes``, ``model.channels``) holds
    a width below 1."""
    if any(width < 1 for width in widths):
        raise ValueError(f"model.{key}={list(widths)} is invalid: every width must be >= 1")
