"""What a hyper-step differentiates, as :class:`hpo_cli.core.methods.HyperLosses`: the training
and validation losses on the hyper-step's batches, the penalty (for ``curvature=ggn``), and the
``inner_batches`` training mini-batches of ``batch_size`` (drawn like the inner phase's) that an
unrolled method steps through."""

from __future__ import annotations

import torch

from hpo_cli.core.methods import HyperLosses
from hpo_cli.data import Batch
from hpo_cli.hyper import training_terms
from hpo_cli.runner.errors import ConfigError
from hpo_cli.runner.loop.experiment import Experiment
from hpo_cli.runner.loop.precision import hyper_step_precision, in_precision
from hpo_cli.runner.loop.shards import draw


def output_losses(
    exp: Experiment, train_batch: Batch, val_batch: Batch
) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor, torch.Tensor | float]:
    """(L_t, L_v, the outputs L_t's data term came from, the penalty R) on the two batches
    (L_t, z and R from :func:`hpo_cli.hyper.training_terms`, as ``hpo-hessian`` takes them)."""
    train_loss, outputs, penalty = training_terms(exp.hyper, exp.model, train_batch, exp.criterion)
    val_loss = exp.hyper.validation_loss(exp.model, val_batch, exp.criterion)
    return train_loss, val_loss, outputs, penalty


def hyper_losses(exp: Experiment, train_batch: Batch, val_batch: Batch) -> HyperLosses:
    """L_t on ``train_batch``, L_v on ``val_batch``, λ's penalty, and k ↦ L_t on training batch k
    for the method's ``inner_batches`` batches, drawn now (none for the IFT), so that a
    recomputed step (checkpointing) sees the same one; the losses under the hyper-steps'
    precision (:func:`hpo_cli.runner.loop.precision.hyper_step_precision`)."""
    batches = [
        draw(exp.data.train, exp.settings.batch_size, exp.batches)
        for _ in range(exp.joint.method.inner_batches)
    ]
    precision, device = hyper_step_precision(exp.settings.precision), exp.device
    return HyperLosses(
        training_loss=in_precision(
            precision,
            device,
            lambda: exp.hyper.training_loss(exp.model, train_batch, exp.criterion),
        ),
        validation_loss=in_precision(
            precision,
            device,
            lambda: exp.hyper.validation_loss(exp.model, val_batch, exp.criterion),
        ),
        inner_training_loss=in_precision(
            precision,
            device,
            lambda k: exp.hyper.training_loss(exp.model, batches[k], exp.criterion),
        ),
        penalty=lambda: exp.hyper.penalty(exp.model),
    )


def check_method(exp: Experiment) -> None:
    """Refuse, before training, a method that cannot work with the inner optimiser
    (``solver=unrolled`` with one it cannot unroll, ``solver=first_order`` with one whose
    preconditioner it cannot read)."""
    method = exp.joint.method
    try:
        method.check(exp.joint.optimizer, list(exp.model.parameters()))
    except ValueError as error:
        raise ConfigError(f"solver={method.name}: {error}") from error
