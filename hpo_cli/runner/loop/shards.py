"""Which examples this process trains on: its shard of every batch the run draws.

In a data-parallel run (:mod:`hpo_cli.core.distributed`, N processes under ``torchrun``) every
rank draws the same batch from the run's seeded generator, in the same order, and keeps its
equal shard of it (:meth:`hpo_cli.data.Batch.shard`): the generator stays in step everywhere, and
the union of the shards is the batch one process would draw. In one process, the whole batch.
"""

from __future__ import annotations

import torch

from hpo_cli.core import distributed
from hpo_cli.core.joint import GraphClosureOptimizer
from hpo_cli.data import Batch, Split
from hpo_cli.runner.errors import ConfigError
from hpo_cli.runner.loop.experiment import Experiment


def draw(split: Split, size: int | None, generator: torch.Generator) -> Batch:
    """This rank's shard of ``split.sample(size, generator)``."""
    return split.sample(size, generator).shard(distributed.rank(), distributed.world_size())


def check_shards(exp: Experiment) -> None:
    """Refuse, before training, a data-parallel run whose batches its N processes cannot share
    equally (b drawn examples, b not a multiple of N), whose inner optimiser differentiates the
    loss itself (Hessian-free: its products are not averaged), whose inner steps go through a
    gradient scaler (``precision=16-mixed``), or that asks for the solver comparison (it writes
    its own file as it goes and runs in one process only).

    Raises:
        ConfigError: naming the key and N.
    """
    processes = distributed.world_size()
    if processes == 1:
        return
    settings = exp.settings
    sizes = (
        ("batch_size", len(exp.data.train), settings.batch_size),
        ("hyper_train_batch", len(exp.data.train), settings.hyper_train_batch),
        ("hyper_val_batch", len(exp.data.val), settings.hyper_val_batch),
    )
    for key, available, size in sizes:
        drawn = available if size is None else min(size, available)
        if drawn % processes:
            raise ConfigError(
                f"{key}={size} draws {drawn} examples, which {processes} processes cannot share "
                f"equally: make it a multiple of {processes}"
            )
    if isinstance(exp.joint.optimizer, GraphClosureOptimizer):
        raise ConfigError(
            f"the {type(exp.joint.optimizer).__name__} inner optimiser is not data parallel: "
            f"run it in one process, not {processes}"
        )
    if exp.joint.grad_scaler is not None:
        raise ConfigError(
            f"precision={settings.precision} is not data parallel (each process would decide "
            f"alone whether to skip a step): use precision=bf16-mixed with {processes} processes"
        )
    if settings.solver_comparison.every:
        raise ConfigError(
            f"solver_comparison.every={settings.solver_comparison.every} runs in one process "
            f"only, not in a run of {processes} processes"
        )
