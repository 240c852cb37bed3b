"""Learned dropout rates on a model's hidden units, by concrete (relaxed-Bernoulli) dropout."""

from __future__ import annotations

from collections.abc import Callable

import torch
from torch import nn
from torch.utils.hooks import RemovableHandle

from hpo_cli.core.constraints import constrained_parameter, constraint
from hpo_cli.data import Batch, Splits
from hpo_cli.hyper.base import Criterion, HyperModule
from hpo_cli.models import ACTIVATIONS

WIDTH_LAYERS = (nn.Linear, nn.Conv1d, nn.Conv2d, nn.Conv3d)


def hidden_layers(model: nn.Module) -> list[tuple[nn.Module, int]]:
    """(activation module, units) for every activation of :data:`hpo_cli.models.ACTIVATIONS` in
    ``model`` (in registration order, the forward order of an ``nn.Sequential``) that follows a
    Linear or Conv layer; units are that layer's output features or channels."""
    layers: list[tuple[nn.Module, int]] = []
    width: int | None = None
    for module in model.modules():
        if isinstance(module, nn.Linear):
            width = module.out_features
        elif isinstance(module, WIDTH_LAYERS):
            width = module.out_channels
        elif isinstance(module, tuple(ACTIVATIONS.values())) and width is not None:
            layers.append((module, width))
    return layers


class Dropout(HyperModule):
    """Concrete dropout (Gal, Hron & Kendall, 2017) with rates p = sigmoid(θ) ∈ (0, 1).

    A Bernoulli mask has no derivative in its rate, so the training loss multiplies each hidden
    activation h (b, u) — or (b, C, ...) for convolutions, one rate per channel — by the relaxed
    mask

        m = (1 − z) / (1 − p),   z = σ((logit p + logit u) / t),   u ~ U(0, 1) per example and unit,

    which tends to a Bernoulli(1 − p) keep-mask scaled by 1/(1 − p) as the temperature t → 0 and
    is differentiable in p for t > 0. The rates sit on the outputs of the model's hidden
    activation modules (for :class:`hpo_cli.models.MLP`, every hidden layer), through forward
    hooks that act only inside :meth:`training_loss`.

    p enters the training loss only: validation, evaluation and plain ``model(x)`` calls see no
    dropout, so ∂L_v/∂p = 0 and the hypergradient flows through the IFT term alone.

    Noise: u is drawn from torch's global generator when the training loss is built (so a run's
    checkpoint, which saves that generator, resumes exactly). Every Hessian-vector product of one
    hypergradient differentiates that one graph, so they all see the same sample; to evaluate
    the same function twice, seed the generator (``torch.manual_seed``) before each call.

    Args:
        model: the model whose hidden units are dropped (hooks are registered on it).
        granularity: ``"unit"`` (one rate per hidden unit or channel) or ``"layer"`` (one per
            hidden layer).
        init: starting rate of every unit, in (0, 1).
        temperature: t > 0 of the relaxation (Gal et al. use 0.1).
        data: the training data context; unused by dropout.
    """

    def __init__(
        self,
        model: nn.Module,
        granularity: str = "unit",
        init: float = 0.1,
        temperature: float = 0.1,
        *,
        data: Splits | None,
    ) -> None:
        super().__init__()
        if granularity not in ("unit", "layer"):
            raise ValueError(f"hyper.granularity={granularity!r} is unknown; choose unit or layer")
        if not 0.0 < init < 1.0:
            raise ValueError(f"hyper.init={init} is invalid: a rate must lie in (0, 1)")
        if not temperature > 0.0:
            raise ValueError(f"hyper.temperature={temperature} is invalid: must be > 0")
        layers = hidden_layers(model)
        if not layers:
            raise ValueError(
                "hyper=dropout needs a model with hidden activation layers (e.g. model=mlp)"
            )
        reference = next(model.parameters())
        self.granularity = granularity
        self.temperature = temperature
        self.raw = nn.ParameterList(
            constrained_parameter(
                init,
                "sigmoid",
                (units,) if granularity == "unit" else (),
                dtype=reference.dtype,
                device=reference.device,
            )
            for _, units in layers
        )
        self.active = False
        self.handles: list[RemovableHandle] = [
            module.register_forward_hook(self._hook(layer))
            for layer, (module, _) in enumerate(layers)
        ]

    def rates(self) -> list[torch.Tensor]:
        """p = sigmoid(θ), one tensor per hidden layer: (units,) or a scalar."""
        transform = constraint("sigmoid")
        return [transform(raw) for raw in self.raw]

    def mask(self, raw: torch.Tensor, shape: torch.Size) -> torch.Tensor:
        """A relaxed keep-mask (1 − z)/(1 − p) for activations of ``shape`` (b, u, ...), p =
        sigmoid(``raw``): one draw per example and unit, broadcast over any spatial dimensions.

        Computed from θ = ``raw`` itself, never from p: logit p = θ, 1 − z = σ(−a) with
        a = (θ + logit u)/t, 1 − p = σ(−θ), so m = exp(log σ(−a) − log σ(−θ)). Through p, 1 − p
        loses its digits as p nears 1 (17 % wrong at θ = 15 in float32) and is 0 once p rounds to
        1 (θ ≈ 17 in float32, 37 in float64), making L_t NaN.
        """
        noise_shape = (*shape[:2], *(1 for _ in shape[2:]))
        tiny = torch.finfo(raw.dtype).tiny
        uniform = torch.rand(noise_shape, dtype=raw.dtype, device=raw.device)
        uniform = uniform.clamp(tiny, 1.0 - torch.finfo(raw.dtype).eps)
        raw = raw.reshape(-1, *(1 for _ in shape[2:])) if raw.dim() else raw
        logsigmoid = nn.functional.logsigmoid
        log_kept = logsigmoid(-(raw + torch.logit(uniform)) / self.temperature)  # log(1 − z)
        return torch.exp(log_kept - logsigmoid(-raw))  # (1 − z)/(1 − p)

    def _hook(self, layer: int) -> Callable[..., torch.Tensor | None]:
        """The forward hook of hidden layer ``layer``: masks its output while active."""

        def hook(module: nn.Module, inputs: tuple[torch.Tensor, ...], output: torch.Tensor):
            if not self.active:
                return None
            return output * self.mask(self.raw[layer], output.shape)

        return hook

    def training_loss(self, model: nn.Module, batch: Batch, criterion: Criterion) -> torch.Tensor:
        """The mean data loss with concrete dropout on the hidden units (one fresh noise draw)."""
        self.active = True
        try:
            return super().training_loss(model, batch, criterion)
        finally:
            self.active = False

    def constrained_values(self) -> torch.Tensor:
        return torch.cat([p.detach().reshape(-1) for p in self.rates()])
