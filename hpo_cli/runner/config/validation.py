"""Range checks of a composed configuration, in one line naming the key, before anything runs.

A range has one home. A constructor that can be called before training (the solver, cheap and
data-free) checks its own arguments: :func:`validate_solver` calls it on the solver's node, so
``solver.max_iter=0`` is refused by ``ConjugateGradient`` itself, early. The keys no constructor
owns (the top level, ``solver_comparison``, ``tracking``, ``early_stopping``) are
checked here with :func:`require`. The data set, model and hyperparameter module check their
own arguments when :func:`hpo_cli.runner.config.build.build` builds them (they need the data);
the model's keys are checked against its ``_target_``'s signature here already
(:func:`hpo_cli.runner.config.targets.check_keys`), so that a key a user's own model does not
take is refused before anything is written.

``hpo-run`` calls :func:`validate` in its preflight (:mod:`hpo_cli.runner.cli.preflight`), before
Hydra writes the run directory, and again in each job of a multirun.
"""

from __future__ import annotations

import inspect
from collections.abc import Callable
from typing import Any

from hydra.utils import get_object
from omegaconf import DictConfig

from hpo_cli.analysis.solver_comparison import SOLVER_FAMILIES
from hpo_cli.core.joint import check_inner_weight_decay, check_on_failure
from hpo_cli.core.methods import HypergradientMethod, hypergradient_method
from hpo_cli.core.solvers.diagonal import MOMENT_OPTIMIZERS
from hpo_cli.runner.config.build import (
    SHAPE_NAMES,
    build,
    first_line,
    method_options,
    solver_without_method_options,
)
from hpo_cli.runner.config.schemas import tracker_names
from hpo_cli.runner.config.targets import check_keys
from hpo_cli.runner.errors import ConfigError
from hpo_cli.runner.loop.early_stopping import MONITORS
from hpo_cli.runner.loop.precision import precision_problem
from hpo_cli.runner.tracking import TRACKER_NAMES


def require(condition: bool, key: str, value: object, requirement: str) -> None:
    """Raise :class:`ConfigError` ``key=value is invalid: requirement`` unless ``condition``."""
    if not condition:
        raise ConfigError(f"{key}={value} is invalid: {requirement}")


def validate(cfg: DictConfig) -> None:
    """Range checks that the schemas' types cannot express, and the solver's node given to its
    constructor (which owns its ranges); raises :class:`ConfigError`."""
    validate_problem(cfg)
    if cfg.get("model") is not None:  # its keys against its target's signature, before any write
        check_keys(cfg.model, supplied=SHAPE_NAMES)
    for key in (
        "outer_steps",
        "inner_steps",
        "batch_size",
        "eval_every",
        "checkpoint_every",
        "log_every",
    ):
        require(cfg[key] > 0, key, cfg[key], "must be > 0")
    every = cfg.hessian_every
    require(every is None or every > 0, "hessian_every", every, "must be > 0 or null")
    require(cfg.hessian_probes >= 2, "hessian_probes", cfg.hessian_probes, "must be >= 2")
    validate_solver_comparison(cfg.solver_comparison)
    for key in ("quality_every", "quality_horizon"):
        require(cfg[key] is None or cfg[key] > 0, key, cfg[key], "must be > 0 or null")
    probe = cfg.quality_every
    require(not probe or cfg.hyper_steps, "quality_every", probe, "needs hyper_steps=true")
    require(cfg.warmup_inner_steps >= 0, "warmup_inner_steps", cfg.warmup_inner_steps, ">= 0")
    for key in ("hyper_train_batch", "hyper_val_batch"):
        require(cfg[key] is None or cfg[key] > 0, key, cfg[key], "must be > 0 or null")
    for group in ("optimizer", "hyper_optimizer"):  # torch refuses lr < 0 only, and late
        require(cfg[group].lr > 0, f"{group}.lr", cfg[group].lr, "must be > 0")
    method = validate_solver(cfg.solver)
    constructor_check(check_inner_weight_decay, method, inner_weight_decay(cfg.optimizer))
    validate_preconditioner(cfg)
    constructor_check(check_on_failure, cfg.on_failure)
    fraction = cfg.max_skipped_fraction
    require(0 <= fraction <= 1, "max_skipped_fraction", fraction, "must be in [0, 1]")
    validate_tracking(cfg)
    problem = precision_problem(cfg.precision, cfg.dtype)
    if problem is not None:
        raise ConfigError(problem)


def validate_preconditioner(cfg: DictConfig) -> None:
    """``solver.preconditioner=adam`` reads the inner optimiser's second moments: it needs
    Adam, AdamW or RMSprop (:data:`hpo_cli.core.solvers.diagonal.MOMENT_OPTIMIZERS`)."""
    if cfg.solver.get("preconditioner") != "adam":
        return
    target = cfg.optimizer._target_
    optimizer = get_object(target)
    require(
        isinstance(optimizer, type) and issubclass(optimizer, MOMENT_OPTIMIZERS),
        "solver.preconditioner",
        "adam",
        f"needs optimizer=adam or rmsprop (second moments), not {target}",
    )


MAX_SEED = 2**63 - 1
"""The largest ``seed``: torch's generators take seeds below 2**64, and the data's samplers add
offsets below 2**33 to it (:mod:`hpo_cli.data.streaming`)."""


def validate_problem(cfg: DictConfig) -> None:
    """Range checks of the :class:`ProblemConfig` keys (seed, dtype, threads, device), shared by
    ``hpo-run`` and ``hpo-hessian``; raises :class:`ConfigError`."""
    require(0 <= cfg.seed <= MAX_SEED, "seed", cfg.seed, "must be an integer in [0, 2**63 - 1]")
    require(cfg.dtype in ("float32", "float64"), "dtype", cfg.dtype, "float32 or float64")
    require(cfg.threads is None or cfg.threads > 0, "threads", cfg.threads, "> 0 or null")
    require(
        cfg.device.type in ("cpu", "cuda", "auto"), "device.type", cfg.device.type, "cpu|cuda|auto"
    )
    workers = cfg.data.num_workers
    require(workers >= 0, "data.num_workers", workers, "must be >= 0")


def validate_tracking(cfg: DictConfig) -> None:
    """Range checks of ``tracking`` and ``early_stopping``; raises :class:`ConfigError`."""
    names, known = tracker_names(cfg), TRACKER_NAMES
    require(
        set(names) <= set(known),
        "tracking.trackers",
        names,
        f"a list of {', '.join(known)} (metrics.csv and summary.json are always written)",
    )
    mode = cfg.tracking.wandb_mode
    require(mode in ("offline", "online"), "tracking.wandb_mode", mode, "offline or online")
    stopping = cfg.early_stopping
    patience, min_delta = stopping.patience, stopping.min_delta
    require(patience is None or patience > 0, "early_stopping.patience", patience, "> 0 or null")
    require(min_delta >= 0, "early_stopping.min_delta", min_delta, "must be >= 0")
    monitor = stopping.monitor
    require(monitor in MONITORS, "early_stopping.monitor", monitor, " or ".join(MONITORS))


def validate_solver_comparison(comparison: DictConfig) -> None:
    """Range checks of the ``solver_comparison`` block; raises :class:`ConfigError`."""
    every, solvers = comparison.every, list(comparison.solvers)
    key = "solver_comparison"
    require(every is None or every > 0, f"{key}.every", every, "must be > 0 or null")
    require(comparison.budget >= 0, f"{key}.budget", comparison.budget, "must be >= 0")
    require(
        bool(solvers) and set(solvers) <= set(SOLVER_FAMILIES),
        f"{key}.solvers",
        solvers,
        f"a non-empty list of {', '.join(SOLVER_FAMILIES)}",
    )
    alpha = comparison.neumann_alpha
    require(alpha is None or alpha > 0, f"{key}.neumann_alpha", alpha, "must be > 0 or null")
    horizons = list(comparison.horizons)
    require(all(h > 0 for h in horizons), f"{key}.horizons", horizons, "phases must be > 0")
    require(comparison.directions >= 2, f"{key}.directions", comparison.directions, "must be >= 2")
    require(comparison.fd_eps > 0, f"{key}.fd_eps", comparison.fd_eps, "must be > 0")


def validate_solver(node: DictConfig) -> HypergradientMethod:
    """Build the solver of ``node`` (``cfg.solver``) and its hypergradient method, so that its
    constructor's range checks (and those of ``curvature`` and ``products``) refuse a bad value
    before anything runs; raises :class:`ConfigError` with the constructor's one-line message.
    Returns the method."""
    solver = build(solver_without_method_options(node))
    try:
        return constructor_check(lambda: hypergradient_method(solver, **method_options(node)))
    except ConfigError as error:  # the method's message names its argument: name the key
        raise ConfigError(f"solver.{error}") from error


def inner_weight_decay(node: DictConfig) -> float:
    """The inner optimiser's ``weight_decay``: the node's, else its ``_target_``'s default
    (``torch.optim.AdamW``'s is 0.01), else 0 (an optimiser without one)."""
    if "weight_decay" in node:
        return node.weight_decay
    parameter = inspect.signature(get_object(node._target_)).parameters.get("weight_decay")
    if parameter is None or parameter.default is inspect.Parameter.empty:
        return 0.0
    return parameter.default


def constructor_check(check: Callable[..., Any], *args: Any) -> Any:
    """``check(*args)``, its ``ValueError`` turned into a one-line :class:`ConfigError`."""
    try:
        return check(*args)
    except ValueError as error:
        raise ConfigError(first_line(error)) from error
