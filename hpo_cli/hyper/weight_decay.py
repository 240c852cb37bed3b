"""L2 weight decay with one coefficient for all weights, per parameter tensor, or per weight."""

from __future__ import annotations

from collections.abc import Iterator
from contextlib import contextmanager

import torch
from torch import nn

from hpo_cli.core.constraints import constrained_parameter, constraint
from hpo_cli.data import Splits
from hpo_cli.hyper.base import HyperModule


class WeightDecay(HyperModule):
    """L2 penalty R(w, λ) = Σ_t Σ_i c_{t,i} w_{t,i}² with c = f(θ) > 0.

    Args:
        model: the model whose weights are penalised (all its parameters, biases included).
        granularity: ``"scalar"`` (one c for all), ``"layer"`` (one c per parameter tensor) or
            ``"weight"`` (one c per weight: as many hyperparameters as weights).
        constraint: ``"softplus"`` or ``"exp"``, keeping c > 0.
        init: starting value of every c.
        init_noise: add uniform noise in [0, init_noise) to each raw θ (the seed's
            ``torch.rand`` initialisation is init_noise=1 around softplus(0)).
        data: the training data context every hyperparameter module receives from the runner;
            unused by weight decay.
    """

    def __init__(
        self,
        model: nn.Module,
        granularity: str = "weight",
        constraint: str = "softplus",
        init: float = 1e-3,
        init_noise: float = 0.0,
        *,
        data: Splits | None,
    ) -> None:
        super().__init__()
        shapes = {
            "scalar": [()],
            "layer": [() for _ in model.parameters()],
            "weight": [tuple(p.shape) for p in model.parameters()],
        }
        if granularity not in shapes:
            raise ValueError(
                f"hyper.granularity={granularity!r} is unknown; choose scalar, layer or weight"
            )
        if constraint not in ("softplus", "exp"):
            raise ValueError(f"hyper.constraint={constraint!r} must be softplus or exp")
        reference = next(model.parameters())
        self.granularity = granularity
        self.constraint = constraint
        self.raw = nn.ParameterList()
        for shape in shapes[granularity]:
            parameter = constrained_parameter(
                init, constraint, shape, dtype=reference.dtype, device=reference.device
            )
            with torch.no_grad():
                parameter.add_(init_noise * torch.rand(shape).to(parameter))
            self.raw.append(parameter)
        self._held: tuple[nn.Module, list[tuple[torch.Tensor, torch.Tensor]]] | None = None

    def coefficients(self) -> list[torch.Tensor]:
        """The constrained coefficients c, one tensor per raw parameter."""
        transform = constraint(self.constraint)
        return [transform(raw) for raw in self.raw]

    def pairs(self, model: nn.Module) -> list[tuple[torch.Tensor, torch.Tensor]]:
        """(c_t, w_t) for every parameter tensor t of ``model`` (the scalar c repeated)."""
        coefficients = self.coefficients()
        weights = list(model.parameters())
        if self.granularity == "scalar":
            coefficients = coefficients * len(weights)
        return list(zip(coefficients, weights, strict=True))

    def penalty(self, model: nn.Module) -> torch.Tensor:
        held = self._held
        pairs = held[1] if held is not None and held[0] is model else self.pairs(model)
        return torch.stack([(c * w.square()).sum() for c, w in pairs]).sum()

    @contextmanager
    def held_constant(self, model: nn.Module) -> Iterator[None]:
        """c = f(θ) computed once for the block, without a graph, and paired with ``model``'s
        parameter tensors: the penalty of ``model`` inside is R(w, c) with c a constant (the
        same values and gradients in w as outside; no softplus or parameter walk per step)."""
        with super().held_constant(model):
            with torch.no_grad():
                self._held = (model, self.pairs(model))
            try:
                yield
            finally:
                self._held = None

    def constrained_values(self) -> torch.Tensor:
        return torch.cat([c.detach().reshape(-1) for c in self.coefficients()])
