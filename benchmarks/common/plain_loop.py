"""The hand-written HPO loop of ``benchmarks.end_to_end``, shared by its plain PyTorch row and by
the peers' rows that plug a library's hypergradient into it (torchopt, higher).

One outer step: ``inner_steps`` Adam steps on training mini-batches of L_t(w, θ) = mean
cross-entropy + Σ softplus(θ)·w² with c = softplus(θ) held constant, then the hyper-step's
batches (``hyper_train_batch``, ``hyper_val_batch``; ``None``: the whole split), a hypergradient
dL_v/dθ from the row's own ``HyperStep``, one RMSprop step on θ, and the validation loss on the
whole split. The data, initial weights and θ are ``build_problem``'s for the configuration and
seed; every batch is drawn by one generator seeded with the seed, in the runner's order.
"""

from __future__ import annotations

import math
from collections.abc import Callable
from typing import Any

import torch
from omegaconf import DictConfig, OmegaConf
from torch import nn
from torch.nn import functional as F

from hpo_cli.runner.config.build import build_problem

Vector = list[torch.Tensor]
Batch = tuple[torch.Tensor, torch.Tensor]
POWER_STEPS = 10  # power iterations for α = 1/λ̂max (hpo-run: 10 Lanczos steps)
TERMS = 4  # Neumann terms, as hpo-run's default solver (TERMS − 1 products)


def dot(a: Vector, b: Vector) -> torch.Tensor:
    return sum((x * y).sum() for x, y in zip(a, b, strict=True))


def power_alpha(hvp: Callable[[Vector], Vector], start: Vector) -> float | None:
    """α = 1/λ̂max, λ̂max the Rayleigh quotient after ``POWER_STEPS`` power iterations of the
    product ``hvp`` from ``start``; ``None`` when λ̂max is not a positive number."""
    x, largest = start, torch.zeros(())
    for _ in range(POWER_STEPS):
        norm = dot(x, x).sqrt()
        x = [xi / norm for xi in x]
        hx = hvp(x)
        largest, x = dot(x, hx), hx
    if not math.isfinite(float(largest)) or float(largest) <= 0:
        return None
    return 1.0 / float(largest)


def options(node: DictConfig) -> dict[str, Any]:
    """An optimiser group's keyword arguments (without ``_target_``)."""
    values = OmegaConf.to_container(node, resolve=True)
    return {key: value for key, value in values.items() if not key.startswith("_")}


@torch.no_grad()
def loss_and_error(model: nn.Module, inputs: torch.Tensor, targets: torch.Tensor):
    model.eval()
    outputs = model(inputs)
    model.train()
    loss = float(F.cross_entropy(outputs, targets))
    return loss, float((outputs.argmax(dim=1) != targets).float().mean())


class Loop:
    """The problem, the two optimisers and the batch generator of one hand-written run."""

    def __init__(self, cfg: DictConfig) -> None:
        problem = build_problem(cfg)
        self.cfg, self.model, self.data = cfg, problem.model, problem.data
        self.hyper = problem.hyper
        self.params: Vector = list(self.model.parameters())
        self.thetas: Vector = list(problem.hyper.parameters())
        self.optimizer = torch.optim.Adam(self.params, **options(cfg.optimizer))
        self.hyper_optimizer = torch.optim.RMSprop(self.thetas, **options(cfg.hyper_optimizer))
        self.generator = torch.Generator().manual_seed(cfg.seed)

    def batch(self, split: Any, size: int | None) -> Batch:
        """``size`` distinct examples of ``split`` (all of them for ``None``)."""
        if size is None or size >= len(split.targets):
            return split.inputs, split.targets
        index = torch.randperm(len(split.targets), generator=self.generator)[:size]
        index = index.to(split.inputs.device)
        return split.inputs[index], split.targets[index]

    def decay(self) -> Vector:
        """c = softplus(θ), with θ's graph."""
        return [F.softplus(theta) for theta in self.thetas]

    def training_loss(
        self,
        batch: Batch,
        decay: Vector,
        model: Callable[[torch.Tensor], torch.Tensor] | None = None,
        params: Vector | None = None,
    ) -> torch.Tensor:
        """L_t on ``batch`` of ``model``/``params`` (default: the module and its weights)."""
        model, params = model or self.model, params or self.params
        penalty = torch.stack([(c * w.square()).sum() for c, w in zip(decay, params, strict=True)])
        return F.cross_entropy(model(batch[0]), batch[1]) + penalty.sum()

    def inner_phase(self) -> None:
        """``inner_steps`` Adam steps on mini-batches of ``batch_size``, c held constant."""
        with torch.no_grad():
            decay = self.decay()
        for _ in range(self.cfg.inner_steps):
            batch = self.batch(self.data.train, self.cfg.batch_size)
            self.optimizer.zero_grad(set_to_none=True)
            self.training_loss(batch, decay).backward()
            self.optimizer.step()

    def hyper_batches(self) -> tuple[Batch, Batch]:
        """The hyper-step's training and validation batches."""
        train = self.batch(self.data.train, self.cfg.hyper_train_batch)
        return train, self.batch(self.data.val, self.cfg.hyper_val_batch)

    def apply(self, grads: Vector | None) -> None:
        """One RMSprop step on θ with ``grads`` (none for ``None``: a skipped hyper-step)."""
        if grads is None:
            return
        self.hyper_optimizer.zero_grad(set_to_none=True)
        for theta, grad in zip(self.thetas, grads, strict=True):
            theta.grad = grad
        self.hyper_optimizer.step()

    def val_loss(self) -> float:
        return loss_and_error(self.model, self.data.val.inputs, self.data.val.targets)[0]

    def run(self, hyper_step: Callable[[Loop], Vector | None]) -> dict[str, float]:
        """``outer_steps`` outer steps, the hyper-step's hypergradient from ``hyper_step``
        (called after the inner phase); the final and best validation loss, the test error."""
        val_losses = [self.val_loss()]
        for _ in range(self.cfg.outer_steps):
            self.inner_phase()
            self.apply(hyper_step(self))
            val_losses.append(self.val_loss())
        return results(self.model, self.data, val_losses)


def results(model: nn.Module, data: Any, val_losses: list[float]) -> dict[str, float]:
    """The final and best of ``val_losses`` and the test error of ``model``."""
    return {
        "final_val_loss": val_losses[-1],
        "best_val_loss": min(val_losses),
        "test_error": loss_and_error(model, data.test.inputs, data.test.targets)[1],
    }
