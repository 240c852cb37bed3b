"""Hyperparameter modules: λ as an ``nn.Module`` whose parameters the outer optimiser tunes.

A module says how λ enters the losses. The training loss L_t(w, λ) is what the inner optimiser
minimises; the validation loss L_v(w, λ) is what the hypergradient descends. A module that
leaves the validation loss alone (a penalty, an augmentation) has ∂L_v/∂λ = 0; one that enters
it gets the direct term from :func:`hpo_cli.core.hypergradient` automatically.

Losses are built from a per-example ``criterion(outputs, targets) -> (b,)`` so that a module can
weight examples (``batch.index`` says which training examples a batch holds). A module that only
needs the mean data loss takes it from :func:`hpo_cli.data.tasks.mean_loss` (one fused call for
the built-in criteria, as the base class's losses do); one that needs the per-example losses
(:class:`hpo_cli.hyper.LossWeights`) calls ``criterion`` itself.

The contract for a module of one's own (named by ``hyper._target_``, inside hpo-cli or not):

* the constructor takes ``model`` (the network, already on its device and dtype) and/or
  ``data`` (the :class:`hpo_cli.data.Splits`), by those names, only if its signature lists them,
  plus its own keyword arguments from the YAML;
* its parameters (``nn.Parameter``) are λ, on the model's device and dtype;
* :meth:`penalty` (or :meth:`training_loss` / :meth:`validation_loss`, overridden) says how λ
  enters the losses; everything must be differentiable in w and λ (twice in w);
* :meth:`constrained_values` returns λ's values for ``metrics.csv``;
* :meth:`held_constant` (optional to override) may compute, once for a whole inner phase, what
  the training loss needs of λ, without a graph.
"""

from __future__ import annotations

from collections.abc import Callable, Iterator
from contextlib import contextmanager

import torch
from torch import nn

from hpo_cli.core.curvature import loss_and_outputs
from hpo_cli.data import Batch
from hpo_cli.data.tasks import mean_loss

Criterion = Callable[[torch.Tensor, torch.Tensor], torch.Tensor]
"""Per-example loss: outputs (b, k) and targets (b,) to losses (b,)."""


class HyperModule(nn.Module):
    """Base class: the mean data loss, plus :meth:`penalty` in the training loss."""

    def training_loss(self, model: nn.Module, batch: Batch, criterion: Criterion) -> torch.Tensor:
        """L_t(w, λ) on a batch: the mean data loss plus the penalty."""
        return mean_loss(criterion, model(batch.inputs), batch.targets) + self.penalty(model)

    def validation_loss(self, model: nn.Module, batch: Batch, criterion: Criterion) -> torch.Tensor:
        """L_v(w, λ) on a batch: the plain mean data loss (λ does not enter)."""
        return mean_loss(criterion, model(batch.inputs), batch.targets)

    def penalty(self, model: nn.Module) -> torch.Tensor | float:
        """R(w, λ) added to the training loss; none by default."""
        return 0.0

    def constrained_values(self) -> torch.Tensor:
        """Every hyperparameter's constrained value, flattened (for summary statistics)."""
        raise NotImplementedError

    @contextmanager
    def held_constant(self, model: nn.Module) -> Iterator[None]:
        """Within the block λ is a constant of the inner problem min_w L_t(w, λ) on ``model``:
        the inner optimiser never needs ∂/∂λ, so no graph to λ is built (λ's parameters do not
        require grad inside; their flags are restored on leaving). Loss values and the gradients
        in w are the same as outside. Hypergradients are taken outside the block, with their own
        graph. A module may override it to compute what its losses need of λ once (e.g.
        softplus(θ)), for every inner step of the block."""
        flags = [(parameter, parameter.requires_grad) for parameter in self.parameters()]
        for parameter, _ in flags:
            parameter.requires_grad_(False)
        try:
            yield
        finally:
            for parameter, flag in flags:
                parameter.requires_grad_(flag)


def training_terms(
    hyper: HyperModule, model: nn.Module, batch: Batch, criterion: Criterion
) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor | float]:
    """(L_t = ``hyper.training_loss`` on ``batch``, the outputs z of the model call inside it,
    the penalty R = ``hyper.penalty``), each with its graph: what the Gauss-Newton curvature
    (:func:`hpo_cli.core.curvature.curvature_product`) is built from. The runner's hyper-step and
    ``hpo-hessian`` both take theirs from here, so they see the same matrix for every module,
    whatever its training loss (weighted examples, augmented inputs, distilled data).

    Raises:
        ValueError: the training loss called the model other than exactly once.
    """
    loss, outputs = loss_and_outputs(model, lambda: hyper.training_loss(model, batch, criterion))
    return loss, outputs, hyper.penalty(model)
