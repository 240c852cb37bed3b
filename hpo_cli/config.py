"""Typed schemas for ``hpo-run``'s configuration, registered in Hydra's ConfigStore.

Each YAML file under ``hpo_cli/conf/<group>/`` starts from one of these schemas (its defaults
list names ``base_<name>``), so a value of the wrong type or a misspelt key fails at start-up with
Hydra's own message. Objects are built with ``hydra.utils.instantiate`` from ``_target_``: a new
solver, dataset, model or hyperparameter module is one Python file, one schema here and one YAML
file.

Range checks that types cannot express (positive learning rates, non-zero step counts) live in
:func:`validate`, which names the offending key in one line before any training starts.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Any

from hydra.core.config_store import ConfigStore
from omegaconf import MISSING, DictConfig


class ConfigError(ValueError):
    """A configuration value is out of range; the message names the key."""


# ---------------------------------------------------------------- dataset / model / hyper
@dataclass
class DigitsDataset:
    _target_: str = "hpo_cli.data.load_digits"
    train_size: int = 50
    val_size: int = 50
    test_size: int | None = None  # None: every remaining example
    standardize: bool = True


@dataclass
class MLPModel:
    _target_: str = "hpo_cli.models.MLP"
    hidden_sizes: list[int] = field(default_factory=lambda: [64])
    activation: str = "elu"


@dataclass
class WeightDecayHyper:
    _target_: str = "hpo_cli.hyper.WeightDecay"
    granularity: str = "weight"  # scalar | layer | weight
    constraint: str = "softplus"  # softplus | exp
    init: float = 1e-3  # constrained starting value of every coefficient
    init_noise: float = 0.0  # uniform jitter of the raw value, as the seed's torch.rand init


# ---------------------------------------------------------------- inverse-HVP solvers
@dataclass
class IdentitySolver:
    _target_: str = "hpo_cli.solvers.Identity"
    scale: float = 1.0


@dataclass
class NeumannSolver:
    _target_: str = "hpo_cli.solvers.Neumann"
    terms: int = 3
    alpha: Any = "auto"  # a positive float, or "auto" for 1/λmax by power iteration
    power_iterations: int = 20
    tol: float = 0.0


@dataclass
class CGSolver:
    _target_: str = "hpo_cli.solvers.ConjugateGradient"
    max_iter: int = 20
    tol: float = 1e-6
    damping: float = 0.0


@dataclass
class ExactSolver:
    _target_: str = "hpo_cli.solvers.Exact"
    damping: float = 0.0
    method: str = "solve"
    rtol: float | None = None
    max_dim: int = 10_000


# ---------------------------------------------------------------- optimisers
@dataclass
class AdamOptimizer:
    _target_: str = "torch.optim.Adam"
    lr: float = 1e-3
    betas: list[float] = field(default_factory=lambda: [0.9, 0.999])
    eps: float = 1e-8
    weight_decay: float = 0.0


@dataclass
class SGDOptimizer:
    _target_: str = "torch.optim.SGD"
    lr: float = 1e-2
    momentum: float = 0.0
    nesterov: bool = False
    weight_decay: float = 0.0


@dataclass
class RMSpropOptimizer:
    _target_: str = "torch.optim.RMSprop"
    lr: float = 1e-2
    alpha: float = 0.99
    eps: float = 1e-8
    momentum: float = 0.0


# ---------------------------------------------------------------- device and top level
@dataclass
class DeviceConfig:
    type: str = "cpu"  # cpu | cuda | auto (cuda when available)


@dataclass
class RunConfig:
    """The top level: what to run and for how long.

    One outer step = ``inner_steps`` inner-optimiser steps on training mini-batches, then one
    hypergradient and one hyper-optimiser step.
    """

    dataset: Any = MISSING
    model: Any = MISSING
    hyper: Any = MISSING
    solver: Any = MISSING
    optimizer: Any = MISSING
    hyper_optimizer: Any = MISSING
    device: DeviceConfig = field(default_factory=DeviceConfig)
    seed: int = 0
    dtype: str = "float32"  # float32 | float64
    threads: int | None = None  # torch intra-op CPU threads; None: torch's default
    outer_steps: int = 200
    inner_steps: int = 50
    warmup_inner_steps: int = 0  # inner steps before the first hyper-step
    batch_size: int = 32  # inner mini-batch
    hyper_train_batch: int | None = None  # None: the full training split
    hyper_val_batch: int | None = None  # None: the full validation split
    reset_inner_optimizer: bool = False  # fresh inner optimiser state every outer step
    eval_every: int = 5  # outer steps between metrics rows
    checkpoint_every: int = 10  # outer steps between checkpoints
    on_failure: str = "stop"  # stop | skip: what a diverged or non-finite hyper-step does
    resume: str | None = None  # a run directory to continue
    progress: bool = True  # tqdm bar on an interactive terminal
    plots: bool = True


GROUP_SCHEMAS: dict[str, dict[str, type]] = {
    "dataset": {"digits": DigitsDataset},
    "model": {"mlp": MLPModel},
    "hyper": {"weight_decay": WeightDecayHyper},
    "solver": {
        "identity": IdentitySolver,
        "neumann": NeumannSolver,
        "cg": CGSolver,
        "exact": ExactSolver,
    },
    "optimizer": {"adam": AdamOptimizer, "sgd": SGDOptimizer, "rmsprop": RMSpropOptimizer},
    "hyper_optimizer": {"adam": AdamOptimizer, "sgd": SGDOptimizer, "rmsprop": RMSpropOptimizer},
    "device": {"device": DeviceConfig},
}


def register_configs() -> None:
    """Store the top-level schema as ``base_config`` and each group's as ``base_<name>``."""
    store = ConfigStore.instance()
    store.store(name="base_config", node=RunConfig)
    for group, schemas in GROUP_SCHEMAS.items():
        for name, schema in schemas.items():
            store.store(group=group, name=f"base_{name}", node=schema)


def _require(condition: bool, key: str, value: object, requirement: str) -> None:
    if not condition:
        raise ConfigError(f"{key}={value} is invalid: {requirement}")


def validate(cfg: DictConfig) -> None:
    """Range checks that the schemas' types cannot express; raises :class:`ConfigError`."""
    for key in ("outer_steps", "inner_steps", "batch_size", "eval_every", "checkpoint_every"):
        _require(cfg[key] > 0, key, cfg[key], "must be > 0")
    _require(cfg.threads is None or cfg.threads > 0, "threads", cfg.threads, "> 0 or null")
    _require(cfg.warmup_inner_steps >= 0, "warmup_inner_steps", cfg.warmup_inner_steps, ">= 0")
    for key in ("hyper_train_batch", "hyper_val_batch"):
        _require(cfg[key] is None or cfg[key] > 0, key, cfg[key], "must be > 0 or null")
    for group in ("optimizer", "hyper_optimizer"):
        _require(cfg[group].lr > 0, f"{group}.lr", cfg[group].lr, "must be > 0")
    _require(cfg.dtype in ("float32", "float64"), "dtype", cfg.dtype, "float32 or float64")
    _require(cfg.on_failure in ("stop", "skip"), "on_failure", cfg.on_failure, "stop or skip")
    _require(
        cfg.device.type in ("cpu", "cuda", "auto"), "device.type", cfg.device.type, "cpu|cuda|auto"
    )
