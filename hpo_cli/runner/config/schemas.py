"""Typed schemas for ``hpo-run``'s configuration, registered in Hydra's ConfigStore.

Each YAML file under ``hpo_cli/conf/<group>/`` starts from one of these schemas (its defaults
list names ``base_<name>``), so a value of the wrong type or a misspelt key fails at start-up with
Hydra's own message. The schemas of hpo-cli's solvers, data sets, models and hyperparameter
modules are derived from the signature of the ``_target_`` their YAML names (:func:`schema_for`,
:func:`yaml_schemas`): a new one is its Python file and its YAML file, no registration line.
A user's own YAML files (in their own config directory) need no schema: every node is also
checked against its ``_target_``'s signature when it is built
(:mod:`hpo_cli.runner.config.targets`).

Range checks that types cannot express (positive learning rates, non-zero step counts) live in
:func:`validate`, which names the offending key in one line before any training starts.
"""

from __future__ import annotations

import functools
import inspect
import types
import typing
from collections.abc import Callable
from dataclasses import dataclass, field, make_dataclass
from pathlib import Path
from typing import Any

from hydra.core.config_store import ConfigStore
from hydra.utils import get_object
from omegaconf import MISSING, DictConfig, OmegaConf
from omegaconf.errors import ValidationError

from hpo_cli.analysis.solver_comparison import SOLVER_FAMILIES
from hpo_cli.core.curvature import CURVATURES
from hpo_cli.core.methods import HypergradientMethod
from hpo_cli.core.solvers.diagonal import MOMENT_OPTIMIZERS
from hpo_cli.data.protocol import DataOptions
from hpo_cli.runner.errors import ConfigError
from hpo_cli.runner.loop.early_stopping import MONITORS, EarlyStopping
from hpo_cli.runner.loop.experiment import SolverComparisonConfig
from hpo_cli.runner.tracking import TRACKER_NAMES, TrackingSettings


# ---------------------------------------------------------------- schemas from signatures
def checkable_type(kind: Any, name: str, default: Any) -> Any:
    """``kind`` if OmegaConf can check it, else ``Any``. Unions of several types become ``Any``
    too: OmegaConf would refuse ``1000`` for ``float | str`` (it does not widen int to float)."""
    arguments = [a for a in typing.get_args(kind) if a is not type(None)]
    if typing.get_origin(kind) in (typing.Union, types.UnionType) and len(arguments) > 1:
        return Any
    try:
        OmegaConf.structured(make_dataclass("Probe", [(name, kind, default)]))
    except ValidationError:
        return Any
    return kind


def schema_for(target: Callable[..., Any]) -> type:
    """A structured-config dataclass that instantiates ``target``.

    One field per keyword parameter with a default, typed by its annotation (``Any`` where
    OmegaConf cannot type it, e.g. ``float | str``), plus ``_target_``. Parameters without a
    default (the model, the data's shapes, the seed) are supplied by the runner. Deriving the
    schema from the signature keeps the two from drifting apart.
    """
    function = target.__init__ if isinstance(target, type) else target
    hints = typing.get_type_hints(function)
    fields: list[tuple[str, Any, Any]] = [
        ("_target_", str, f"{target.__module__}.{target.__qualname__}")
    ]
    for name, parameter in inspect.signature(target).parameters.items():
        if parameter.default is inspect.Parameter.empty:
            continue
        default = parameter.default
        if isinstance(default, list):
            default = field(default_factory=functools.partial(list, default))
        fields.append((name, checkable_type(hints.get(name, Any), name, default), default))
    return make_dataclass(f"{target.__name__}Config", fields)


def solver_schema(target: Callable[..., Any]) -> type:
    """:func:`schema_for` a solver; an inverse-HVP solver's (any but a hypergradient method of its
    own, such as ``Unrolled``) gains ``curvature``: the matrix it inverts
    (:data:`hpo_cli.core.curvature.CURVATURES`), the implicit method's constructor argument."""
    schema = schema_for(target)
    if isinstance(target, type) and issubclass(target, HypergradientMethod):
        return schema
    return make_dataclass(schema.__name__, [("curvature", str, "hessian")], bases=(schema,))


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
class ProblemConfig:
    """What ``hpo-run`` and ``hpo-hessian`` share: the data, the network and λ, and where and in
    which precision they live (:func:`hpo_cli.runner.config.build.build_problem` builds them)."""

    dataset: Any = MISSING
    model: Any = MISSING
    hyper: Any = MISSING
    data: DataOptions = field(default_factory=DataOptions)  # how a loader's result is held
    device: DeviceConfig = field(default_factory=DeviceConfig)
    seed: int = 0  # data split, initialisation, batches and noise
    dtype: str = "float32"  # float32 | float64
    threads: int | None = None  # torch intra-op CPU threads; None: torch's default


@dataclass
class RunConfig(ProblemConfig):
    """The top level: what to run and for how long.

    One outer step = ``inner_steps`` inner-optimiser steps on training mini-batches, then one
    hypergradient and one hyper-optimiser step.
    """

    solver: Any = MISSING
    optimizer: Any = MISSING
    hyper_optimizer: Any = MISSING
    outer_steps: int = 200  # hyper-steps (one per outer step)
    inner_steps: int = 50  # inner-optimiser steps per outer step
    warmup_inner_steps: int = 0  # inner steps before the first hyper-step
    batch_size: int = 32  # inner mini-batch
    hyper_train_batch: int | None = None  # None: the full training split
    hyper_val_batch: int | None = None  # None: the full validation split
    reset_inner_optimizer: bool = False  # fresh inner optimiser state every outer step
    eval_every: int = 5  # outer steps between metrics rows
    hyper_steps: bool = True  # false: train at fixed λ (the baseline of a black-box search)
    hessian_every: int | None = None  # outer steps between Hessian diagnostics; None: off
    hessian_probes: int = 10  # Hutchinson probes for the trace estimate
    solver_comparison: SolverComparisonConfig = field(default_factory=SolverComparisonConfig)
    checkpoint_every: int = 10  # outer steps between checkpoints
    on_failure: str = "stop"  # stop | skip: what a diverged or non-finite hyper-step does
    max_skipped_fraction: float = 0.5  # on_failure=skip: a run skipping more hyper-steps fails
    resume: str | None = None  # a run directory to continue
    progress: bool = True  # tqdm bar on an interactive terminal
    log_every: int = 10  # outer steps between console lines (and one at the end)
    plots: bool = True  # PNG plots in the run directory
    logger: Any = field(default_factory=lambda: ["csv"])  # csv (always), tensorboard, mlflow, wandb
    tracking: Any = field(default_factory=schema_for(TrackingSettings))  # where trackers write
    early_stopping: Any = field(default_factory=schema_for(EarlyStopping))  # patience null: off


GROUPS = ("dataset", "model", "hyper", "solver", "optimizer", "hyper_optimizer", "device")
"""The config groups of ``hpo-run`` (``experiment`` aside)."""

GROUP_SCHEMAS: dict[str, dict[str, type]] = {
    "optimizer": {"adam": AdamOptimizer, "sgd": SGDOptimizer, "rmsprop": RMSpropOptimizer},
    "hyper_optimizer": {"adam": AdamOptimizer, "sgd": SGDOptimizer, "rmsprop": RMSpropOptimizer},
    "device": {"device": DeviceConfig},
}
"""Hand-written schemas (torch's optimisers, whose signatures OmegaConf cannot type, and the
device), registered as ``base_<option>``. Every other ``base_<name>`` is derived from a YAML file
(:func:`yaml_schemas`)."""

CONF_DIR = Path(__file__).resolve().parents[2] / "conf"


@functools.cache
def yaml_schemas(conf_dir: Path = CONF_DIR) -> dict[tuple[str, str], type]:
    """(group, ``base_<name>``) → :func:`schema_for` of the ``_target_`` of each hpo-cli YAML file
    whose defaults list names a ``base_<name>`` that :data:`GROUP_SCHEMAS` does not hold.

    This is what makes a new solver, data set, model or hyperparameter module its Python file and
    its YAML file (``defaults: [base_<name>, _self_]`` and ``_target_: package.module.Name``),
    with no registration line: the schema comes from the constructor the YAML names.
    """
    schemas: dict[tuple[str, str], type] = {}
    for path in sorted(conf_dir.glob("*/*.yaml")):
        group, node = path.parent.name, OmegaConf.load(path)
        bases = [
            d for d in node.get("defaults", []) if isinstance(d, str) and d.startswith("base_")
        ]
        if not bases or bases[0][5:] in GROUP_SCHEMAS.get(group, {}):
            continue
        if "_target_" not in node:
            raise ConfigError(f"{path} extends {bases[0]} but names no _target_ to derive it from")
        target = get_object(node._target_)
        schemas[group, bases[0]] = (
            solver_schema(target) if group == "solver" else schema_for(target)
        )
    return schemas


@functools.cache
def register_configs() -> None:
    """Store the top-level schema as ``base_config`` and each group's as ``base_<name>``, once per
    process (the ConfigStore is a process-wide singleton)."""
    store = ConfigStore.instance()
    store.store(name="base_config", node=RunConfig)
    for group, schemas in GROUP_SCHEMAS.items():
        for name, schema in schemas.items():
            store.store(group=group, name=f"base_{name}", node=schema)
    for (group, name), schema in yaml_schemas().items():
        store.store(group=group, name=name, node=schema)


def require(condition: bool, key: str, value: object, requirement: str) -> None:
    """Raise :class:`ConfigError` ``key=value is invalid: requirement`` unless ``condition``."""
    if not condition:
        raise ConfigError(f"{key}={value} is invalid: {requirement}")


def validate(cfg: DictConfig) -> None:
    """Range checks that the schemas' types cannot express; raises :class:`ConfigError`."""
    validate_problem(cfg)
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
    require(cfg.warmup_inner_steps >= 0, "warmup_inner_steps", cfg.warmup_inner_steps, ">= 0")
    for key in ("hyper_train_batch", "hyper_val_batch"):
        require(cfg[key] is None or cfg[key] > 0, key, cfg[key], "must be > 0 or null")
    for group in ("optimizer", "hyper_optimizer"):
        require(cfg[group].lr > 0, f"{group}.lr", cfg[group].lr, "must be > 0")
    curvature = cfg.solver.get("curvature", "hessian")
    require(curvature in CURVATURES, "solver.curvature", curvature, f"one of {CURVATURES}")
    max_iter = cfg.solver.get("max_iter")
    require(
        max_iter is None or max_iter >= 1,
        "solver.max_iter",
        max_iter,
        "must be >= 1 (0 iterations give x = 0: a zero hypergradient every step)",
    )
    validate_preconditioner(cfg)
    require(cfg.on_failure in ("stop", "skip"), "on_failure", cfg.on_failure, "stop or skip")
    fraction = cfg.max_skipped_fraction
    require(0 <= fraction <= 1, "max_skipped_fraction", fraction, "must be in [0, 1]")
    validate_tracking(cfg)


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


def validate_problem(cfg: DictConfig) -> None:
    """Range checks of the :class:`ProblemConfig` keys (dtype, threads, device), shared by
    ``hpo-run`` and ``hpo-hessian``; raises :class:`ConfigError`."""
    require(cfg.dtype in ("float32", "float64"), "dtype", cfg.dtype, "float32 or float64")
    require(cfg.threads is None or cfg.threads > 0, "threads", cfg.threads, "> 0 or null")
    require(
        cfg.device.type in ("cpu", "cuda", "auto"), "device.type", cfg.device.type, "cpu|cuda|auto"
    )
    workers = cfg.data.num_workers
    require(workers >= 0, "data.num_workers", workers, "must be >= 0")


def validate_tracking(cfg: DictConfig) -> None:
    """Range checks of ``logger``, ``tracking`` and ``early_stopping``; raises
    :class:`ConfigError`."""
    names = tracker_names(cfg)
    known = ("csv", *TRACKER_NAMES)
    require(set(names) <= set(known), "logger", cfg.logger, f"a list of {', '.join(known)}")
    mode = cfg.tracking.wandb_mode
    require(mode in ("offline", "online"), "tracking.wandb_mode", mode, "offline or online")
    stopping = cfg.early_stopping
    patience, min_delta = stopping.patience, stopping.min_delta
    require(patience is None or patience > 0, "early_stopping.patience", patience, "> 0 or null")
    require(min_delta >= 0, "early_stopping.min_delta", min_delta, "must be >= 0")
    monitor = stopping.monitor
    require(monitor in MONITORS, "early_stopping.monitor", monitor, " or ".join(MONITORS))


def tracker_names(cfg: DictConfig) -> list[str]:
    """The trackers of ``logger`` besides ``csv`` (which is always on), in the order given:
    ``logger=mlflow`` and ``logger=[tensorboard,mlflow]`` both work."""
    chosen = [cfg.logger] if isinstance(cfg.logger, str) else list(cfg.logger or [])
    return [name for name in dict.fromkeys(chosen) if name != "csv"]


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
