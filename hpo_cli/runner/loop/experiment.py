"""What the loop runs: the objects :func:`hpo_cli.runner.config.build.build_experiment` makes from
a configuration, and the plain settings the loop reads (:class:`RunSettings`).

This is the line at ``build``: before it, Hydra, OmegaConf and the command line; after it, these
typed objects only. Nothing in :mod:`hpo_cli.runner.loop` imports Hydra, OmegaConf or the config
package (``tests/test_layers.py`` checks it).
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass, field

import torch

from hpo_cli.core.joint import JointOptimizer
from hpo_cli.data import Splits
from hpo_cli.hyper import Criterion, HyperModule
from hpo_cli.runner.loop.early_stopping import EarlyStopping


@dataclass
class SolverComparisonConfig:
    """Every ``every`` outer steps and at the last one, the hypergradients of ``solvers`` at
    budgets K = 0..``budget`` against a dense solve (:mod:`hpo_cli.analysis.solver_comparison`),
    on the first ``hyper_train_batch``/``hyper_val_batch`` examples, into
    ``solver_comparison.csv``."""

    every: int | None = None  # outer steps between comparisons; None: off
    solvers: list[str] = field(default_factory=lambda: ["identity", "neumann", "cg"])
    budget: int = 50  # the largest K: Neumann terms, CG steps
    neumann_alpha: float | None = None  # Neumann's fixed step; None: 1/λmax of the dense H
    horizons: list[int] = field(default_factory=list)  # inner phases of the unrolled references
    directions: int = 8  # random directions of λ for the finite-difference check
    fd_eps: float = 1e-4  # central-difference step along each unit direction


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
    (``reset_inner_optimizer``).
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
