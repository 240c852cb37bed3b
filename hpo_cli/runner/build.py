"""From a composed configuration to the objects of a run: device, data, model, hyperparameter
module, solver, optimisers (:func:`build_experiment`).

Objects are built with ``hydra.utils.instantiate`` from each group's ``_target_``; run-time
objects (the data, the model, parameter iterators) are passed to the constructors as they are.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any

import torch
from hydra.utils import instantiate
from omegaconf import DictConfig, OmegaConf

from hpo_cli.core.joint import JointOptimizer
from hpo_cli.data import Splits
from hpo_cli.data.tasks import CRITERIA, ERRORS
from hpo_cli.hyper import Criterion, HyperModule
from hpo_cli.runner.config import ConfigError


def resolve_device(kind: str) -> torch.device:
    """``cpu``, ``cuda`` (an error when absent) or ``auto`` (cuda when available)."""
    if kind == "cuda" and not torch.cuda.is_available():
        raise ConfigError(
            f"device=cuda was requested but CUDA is not available (torch {torch.__version__}, "
            f"built for CUDA {torch.version.cuda}); use device=cpu or device=auto"
        )
    if kind == "auto":
        kind = "cuda" if torch.cuda.is_available() else "cpu"
    return torch.device(kind)


def build(node: DictConfig, *args: Any, **runtime: Any) -> Any:
    """Instantiate the ``_target_`` of ``node`` with run-time objects (data, modules, parameter
    iterators) passed as they are: given to ``instantiate`` directly, Hydra would first turn
    them into config nodes.

    Raises:
        ConfigError: the constructor refused its arguments (a value out of range, an unknown
            key forced in with ``+``), with the constructor's one-line message.
    """
    constructor = instantiate(node, _partial_=True)
    try:
        return constructor(*args, **runtime)
    except (TypeError, ValueError) as error:
        raise ConfigError(str(error)) from error


def solver_without_curvature(node: DictConfig) -> DictConfig:
    """The solver's node less ``curvature``, which the runner reads (the solver never sees it)."""
    return OmegaConf.create({k: v for k, v in node.items() if k != "curvature"})


@dataclass
class Experiment:
    """Everything built from a configuration, ready to train.

    ``joint`` holds the model, λ, both optimisers and the solver
    (:class:`hpo_cli.core.joint.JointOptimizer`); ``batches`` draws every mini-batch.
    """

    cfg: DictConfig
    device: torch.device
    data: Splits
    model: torch.nn.Module
    hyper: HyperModule
    joint: JointOptimizer
    criterion: Criterion
    error: Criterion
    batches: torch.Generator

    def new_optimizer(self) -> torch.optim.Optimizer:
        """A fresh inner optimiser over the model's parameters (``reset_inner_optimizer``)."""
        return build(self.cfg.optimizer, self.model.parameters())


@dataclass
class Problem:
    """The data, the network and λ of a configuration: what ``hpo-run`` trains and
    ``hpo-hessian`` analyses (no solver, no optimisers)."""

    device: torch.device
    data: Splits
    model: torch.nn.Module
    hyper: HyperModule

    @property
    def criterion(self) -> Criterion:
        return CRITERIA[self.data.task]


def build_problem(cfg: DictConfig) -> Problem:
    """The ``dataset``, ``model`` and ``hyper`` groups of ``cfg`` on its device and dtype.

    Applies ``threads`` and seeds torch's global RNG with ``seed`` first, so the model's
    initial weights depend on the seed alone.
    """
    device = resolve_device(cfg.device.type)
    dtype = getattr(torch, cfg.dtype)
    if cfg.threads:
        torch.set_num_threads(cfg.threads)
    torch.manual_seed(cfg.seed)
    data = build(cfg.dataset, seed=cfg.seed).to(device, dtype)
    model = build(cfg.model, input_shape=data.input_shape, num_outputs=data.num_outputs)
    model = model.to(device, dtype)
    hyper = build(cfg.hyper, model=model, data=data)
    return Problem(device, data, model, hyper)


def build_experiment(cfg: DictConfig) -> Experiment:
    """Instantiate data, model, hyperparameters, solver and optimisers from ``cfg``."""
    problem = build_problem(cfg)
    data, model, hyper = problem.data, problem.model, problem.hyper
    for key, size, split in (
        ("batch_size", cfg.batch_size, data.train),
        ("hyper_train_batch", cfg.hyper_train_batch, data.train),
        ("hyper_val_batch", cfg.hyper_val_batch, data.val),
    ):
        if size is not None and size > len(split):
            raise ConfigError(f"{key}={size} asks for more than the {len(split)} examples there")
    joint = JointOptimizer(
        model,
        list(hyper.parameters()),
        optimizer=build(cfg.optimizer, model.parameters()),
        hyper_optimizer=build(cfg.hyper_optimizer, hyper.parameters()),
        solver=build(solver_without_curvature(cfg.solver)),
        on_failure=cfg.on_failure,
    )
    return Experiment(
        cfg=cfg,
        device=problem.device,
        data=data,
        model=model,
        hyper=hyper,
        joint=joint,
        criterion=problem.criterion,
        error=ERRORS[data.task],
        batches=torch.Generator().manual_seed(cfg.seed),
    )
