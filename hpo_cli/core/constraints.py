"""Parametrisations that keep a constrained hyperparameter valid whatever the optimiser does.

The outer optimiser updates an unconstrained raw tensor θ; the model sees c = f(θ):

* ``softplus``: c = log(1 + e^θ) > 0      (weight decay)
* ``exp``:      c = e^θ > 0               (weight decay on a log scale)
* ``sigmoid``:  c = 1 / (1 + e^-θ) ∈ (0, 1) (dropout and other rates)
* ``identity``: c = θ                     (unconstrained)

Without one, gradient steps drive a penalty negative (seed 003: "the hyperparameter becomes
negative, w starts to increase"). Each constraint has an inverse, so a hyperparameter is
initialised by its constrained value.
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass

import torch


@dataclass(frozen=True)
class Constraint:
    """A bijection f from R onto the valid set ``(low, high)``, with its inverse."""

    name: str
    forward: Callable[[torch.Tensor], torch.Tensor]
    backward: Callable[[torch.Tensor], torch.Tensor]
    low: float = -float("inf")
    high: float = float("inf")

    def __call__(self, raw: torch.Tensor) -> torch.Tensor:
        """c = f(θ)."""
        return self.forward(raw)

    def inverse(self, value: torch.Tensor) -> torch.Tensor:
        """θ = f⁻¹(c); raises ValueError when ``value`` lies outside (low, high)."""
        if not bool(((value > self.low) & (value < self.high)).all()):
            raise ValueError(
                f"{self.name} constraint: initial values must lie in ({self.low:g}, {self.high:g})"
            )
        return self.backward(value)


def _softplus(raw: torch.Tensor) -> torch.Tensor:
    """log(1 + e^θ) accurate in every dtype (``F.softplus`` returns θ itself above θ = 20,
    which loses float64 precision); its derivative is exactly sigmoid(θ)."""
    return torch.logaddexp(raw, torch.zeros_like(raw))


def _inverse_softplus(value: torch.Tensor) -> torch.Tensor:
    """log(e^c − 1), written to stay accurate for large c."""
    return value + torch.log(-torch.expm1(-value))


CONSTRAINTS: dict[str, Constraint] = {
    "softplus": Constraint("softplus", _softplus, _inverse_softplus, low=0.0),
    "exp": Constraint("exp", torch.exp, torch.log, low=0.0),
    "sigmoid": Constraint("sigmoid", torch.sigmoid, torch.logit, low=0.0, high=1.0),
    "identity": Constraint("identity", lambda raw: raw, torch.clone),
}


def constraint(name: str) -> Constraint:
    """The constraint called ``name`` (a key of :data:`CONSTRAINTS`)."""
    if name not in CONSTRAINTS:
        raise ValueError(f"unknown constraint {name!r}; choose one of {', '.join(CONSTRAINTS)}")
    return CONSTRAINTS[name]


def constrained_parameter(
    value: float | torch.Tensor,
    name: str,
    shape: tuple[int, ...] = (),
    *,
    dtype: torch.dtype | None = None,
    device: torch.device | str | None = None,
) -> torch.nn.Parameter:
    """An unconstrained parameter θ with f(θ) = ``value`` broadcast to ``shape``."""
    target = torch.as_tensor(value, dtype=dtype or torch.get_default_dtype(), device=device)
    return torch.nn.Parameter(constraint(name).inverse(target.expand(shape).clone()))
