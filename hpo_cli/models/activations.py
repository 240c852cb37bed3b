"""Activation functions by name, as the configuration spells them."""

from __future__ import annotations

from torch import nn

ACTIVATIONS: dict[str, type[nn.Module]] = {
    "relu": nn.ReLU,
    "elu": nn.ELU,
    "tanh": nn.Tanh,
    "sigmoid": nn.Sigmoid,
    "softplus": nn.Softplus,
    "gelu": nn.GELU,
}


def activation(name: str) -> nn.Module:
    """A fresh activation module for a key of :data:`ACTIVATIONS`; one line naming the key else."""
    if name not in ACTIVATIONS:
        choices = ", ".join(ACTIVATIONS)
        raise ValueError(f"model.activation={name!r} is unknown; choose one of {choices}")
    return ACTIVATIONS[name]()
