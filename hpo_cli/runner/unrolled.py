"""The losses ``solver=unrolled`` differentiates through: K training mini-batches of
``batch_size`` (the inner phase's batches, drawn from the run's batch generator) and the
hyper-step's validation batch."""

from __future__ import annotations

from collections.abc import Callable

import torch

from hpo_cli.data import Batch
from hpo_cli.runner.build import Experiment
from hpo_cli.runner.config import ConfigError


def unrolled_losses(
    exp: Experiment, val_batch: Batch
) -> tuple[Callable[[int], torch.Tensor], Callable[[], torch.Tensor]]:
    """(k ↦ L_t on training batch k, L_v on ``val_batch``) for ``exp.joint.solver.steps`` steps;
    the batches are drawn now, so that a recomputed step (checkpointing) sees the same one."""
    batches = [
        exp.data.train.sample(exp.cfg.batch_size, exp.batches)
        for _ in range(exp.joint.solver.steps)
    ]

    def training_loss(k: int) -> torch.Tensor:
        return exp.hyper.training_loss(exp.model, batches[k], exp.criterion)

    def validation_loss() -> torch.Tensor:
        return exp.hyper.validation_loss(exp.model, val_batch, exp.criterion)

    return training_loss, validation_loss


def check_unrolled(exp: Experiment) -> None:
    """Refuse, before training, ``solver=unrolled`` with an inner optimiser it cannot unroll."""
    solver = exp.joint.solver
    if not getattr(solver, "unrolls", False):
        return
    try:
        solver.update_and_state(exp.joint.optimizer, list(exp.model.parameters()))
    except ValueError as error:
        raise ConfigError(f"solver=unrolled: {error}") from error
