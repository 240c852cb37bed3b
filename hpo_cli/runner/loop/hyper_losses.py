"""What a hyper-step differentiates: the IFT's training and validation losses (with the
``solver.curvature`` matvec), or the losses ``solver=unrolled`` unrolls through: K training
mini-batches of ``batch_size`` (drawn like the inner phase's) and the hyper-step's validation
batch."""

from __future__ import annotations

from collections.abc import Callable

import torch

from hpo_cli.core.curvature import curvature_matvec
from hpo_cli.core.hvp import MatVec
from hpo_cli.data import Batch
from hpo_cli.hyper import training_terms
from hpo_cli.runner.config.build import Experiment
from hpo_cli.runner.errors import ConfigError


def output_losses(
    exp: Experiment, train_batch: Batch, val_batch: Batch
) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor, torch.Tensor | float]:
    """(L_t, L_v, the outputs L_t's data term came from, the penalty R) on the two batches
    (L_t, z and R from :func:`hpo_cli.hyper.training_terms`, as ``hpo-hessian`` takes them)."""
    train_loss, outputs, penalty = training_terms(exp.hyper, exp.model, train_batch, exp.criterion)
    val_loss = exp.hyper.validation_loss(exp.model, val_batch, exp.criterion)
    return train_loss, val_loss, outputs, penalty


def ift_losses(
    exp: Experiment, train_batch: Batch, val_batch: Batch
) -> tuple[torch.Tensor, torch.Tensor, MatVec | None]:
    """(L_t on ``train_batch``, L_v on ``val_batch``, the ``solver.curvature`` matvec: ``None``
    for the Hessian, else the Gauss-Newton matrix of the data loss plus the penalty's Hessian)."""
    curvature = exp.cfg.solver.get("curvature", "hessian")
    if curvature == "hessian":
        train_loss = exp.hyper.training_loss(exp.model, train_batch, exp.criterion)
        return train_loss, exp.hyper.validation_loss(exp.model, val_batch, exp.criterion), None
    train_loss, val_loss, outputs, penalty = output_losses(exp, train_batch, val_batch)
    params = list(exp.model.parameters())
    return train_loss, val_loss, curvature_matvec(curvature, train_loss, params, outputs, penalty)


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
