"""What the loop runs: the objects :func:`hpo_cli.runner.config.build.build_experiment` makes from
a configuration, and the plain settings the loop reads (:class:`RunSettings`).

This is the line at ``build``: before it, Hydra, OmegaConf and the command line; after it, these
typed objects only. Nothing in :mod:`hpo_cli.runner.loop` imports Hydra, OmegaConf or the config
package (``tests/test_layers.py`` checks it).
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass

import torch

from hpo_cli.core.joint import JointOptimizer
from hpo_cli.data import Batch, Splits
from hpo_cli.hyper import Criterion, HyperModule
from hpo_cli.runner.loop.comparison_settings import SolverComparisonConfig
from hpo_cli.runner.loop.early_stopping import EarlyStopping


@dataclass(frozen=True)
class RunSettings:
    """The configuration's top-level keys that the loop reads, as plain values (their meaning and
    defaults: :class:`hpo_cli.runner.config.schemas.RunConfig`)."""

    seed: int
    outer_steps: int
    inner_steps: int
    warmup_inner_steps: int
    batch_size: int
    hyper_train_batch: int | None
    hyper_val_batch: int | None
    reset_inner_optimizer: bool
    hyper_steps: bool
    eval_every: int
    log_every: int
    checkpoint_every: int
    hessian_every: int | None
    hessian_probes: int
    solver_comparison: SolverComparisonConfig
    quality_every: int | None
    quality_horizon: int | None
    max_skipped_fraction: float
    resume: bool
    progress: bool
    precision: str | None  # autocast of inner and hyper-steps (runner/loop/precision.py)


@dataclass
class Experiment:
    """Everything built from a configuration, ready to train.

    ``joint`` holds the model, λ, both optimisers and the hypergradient method
    (:class:`hpo_cli.core.joint.JointOptimizer`); ``batches`` draws every mini-batch;
    ``new_optimizer`` makes a fresh inner optimiser over the model's parameters
    (``reset_inner_optimizer``); ``training_loss`` is L_t of an inner step's mini-batch
    (``hyper.training_loss`` on ``model``), compiled with ``compile=true``.
    """

    settings: RunSettings
    device: torch.device
    data: Splits
    model: torch.nn.Module
    hyper: HyperModule
    joint: JointOptimizer
    criterion: Criterion
    error: Criterion
    batches: torch.Generator
    stopping: EarlyStopping
    new_optimizer: Callable[[], torch.optim.Optimizer]
    training_loss: Callable[[Batch], torch.Tensor]
