"""The checks of a composed configuration that build or import a target (and so import torch),
run by :func:`hpo_cli.runner.config.validation.validate` after its range checks.

A constructor that can be called before training (the solver, cheap and data-free) checks its
own arguments: :func:`validate_solver` calls it on the solver's node, so ``solver.max_iter=0`` is
refused by ``ConjugateGradient`` itself, early. The model's keys are checked against its
``_target_``'s signature (:func:`hpo_cli.runner.config.targets.check_keys`), so that a key a
user's own model does not take is refused before anything is written.
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
from hpo_cli.runner.config.targets import check_keys
from hpo_cli.runner.errors import ConfigError, require


def validate_constructors(cfg: DictConfig) -> None:
    """The model's keys, the solver's constructor, the inner optimiser's weight decay, the
    preconditioner's optimiser, ``on_failure`` and ``solver_comparison.solvers``; raises
    :class:`ConfigError`."""
    if cfg.get("model") is not None:  # its keys against its target's signature, before any write
        check_keys(cfg.model, supplied=SHAPE_NAMES)
    method = validate_solver(cfg.solver)
    constructor_check(check_inner_weight_decay, method, inner_weight_decay(cfg.optimizer))
    validate_preconditioner(cfg)
    constructor_check(check_on_failure, cfg.on_failure)
    solvers = list(cfg.solver_comparison.solvers)
    require(
        bool(solvers) and set(solvers) <= set(SOLVER_FAMILIES),
        "solver_comparison.solvers",
        solvers,
        f"a non-empty list of {', '.join(SOLVER_FAMILIES)}",
    )


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
