"""Typed schemas for ``hpo-run``'s configuration, registered in Hydra's ConfigStore.

Each YAML file under ``hpo_cli/conf/<group>/`` starts from one of these schemas (its defaults
list names ``base_<name>``), so a value of the wrong type or a misspelt key fails at start-up with
Hydra's own message. The schemas of hpo-cli's solvers, data sets, models and hyperparameter
modules are derived from the signature of the ``_target_`` their YAML names (:func:`schema_for`,
:func:`yaml_schemas`): a new one is its Python file and its YAML file, no registration line.
The signature is read from the target's source (:mod:`hpo_cli.runner.config.signatures`), so
that composing the configuration imports no torch.
A user's own YAML files (in their own config directory) need no schema: every node is also
checked against its ``_target_``'s signature when it is built
(:mod:`hpo_cli.runner.config.targets`).

Each default has one home: a top-level key's is its field here (``conf/config.yaml`` chooses
the groups and nothing else), a group option's is its constructor's (or its YAML's, where the
option deliberately differs, said in a comment there). Range checks that types cannot express
live in :mod:`hpo_cli.runner.config.validation`.
"""

from __future__ import annotations

import dataclasses
import functools
import inspect
import types
import typing
from collections.abc import Callable
from dataclasses import dataclass, field, make_dataclass
from pathlib import Path
from typing import Any

import yaml
from hydra.core.config_store import ConfigStore
from hydra.utils import get_object
from omegaconf import MISSING, DictConfig, OmegaConf
from omegaconf.errors import ValidationError

from hpo_cli.data.options import DataOptions
from hpo_cli.runner.config import signatures
from hpo_cli.runner.errors import ConfigError
from hpo_cli.runner.loop.comparison_settings import SolverComparisonConfig
from hpo_cli.runner.loop.early_stopping import EarlyStopping
from hpo_cli.runner.tracking.base import TrackingSettings


# ---------------------------------------------------------------- schemas from signatures
def checkable_type(kind: Any, name: str, default: Any) -> Any:
    """``kind`` if OmegaConf can check it, else ``Any``. Unions of several types become ``Any``
    too: OmegaConf would refuse ``1000`` for ``float | str`` (it does not widen int to float)."""
    arguments = [a for a in typing.get_args(kind) if a is not type(None)]
    if typing.get_origin(kind) in (typing.Union, types.UnionType) and len(arguments) > 1:
        return Any
    if kind in (int, float, str, bool) and type(default) is kind:  # accepted: no probe needed
        return kind
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
    factories = {
        f.name: f.default_factory
        for f in (dataclasses.fields(target) if dataclasses.is_dataclass(target) else ())
        if f.default_factory is not dataclasses.MISSING
    }
    parameters = [
        signatures.Parameter(
            name,
            hints.get(name, Any),
            field(default_factory=factories[name]) if name in factories else parameter.default,
        )
        for name, parameter in inspect.signature(target).parameters.items()
        if parameter.default is not inspect.Parameter.empty
    ]
    return make_schema(f"{target.__module__}.{target.__qualname__}", parameters)


def make_schema(target: str, parameters: list[signatures.Parameter]) -> type:
    """The dataclass :func:`schema_for` describes, from ``target``'s path and its parameters with
    a default (a list or dict default becomes a factory of copies; a dataclass's
    ``field(default_factory=...)`` stays one)."""
    fields: list[tuple[str, Any, Any]] = [("_target_", str, target)]
    for parameter in parameters:
        default = parameter.default
        if isinstance(default, list | dict):
            default = field(default_factory=functools.partial(type(default), default))
        kind = checkable_type(parameter.annotation, parameter.name, default)
        fields.append((parameter.name, kind, default))
    return make_dataclass(f"{target.rpartition('.')[2]}Config", fields)


METHOD = "hpo_cli.core.methods.HypergradientMethod"
"""A solver of this class is a hypergradient method of its own: it takes no ``curvature``."""
IMPLICIT = "hpo_cli.core.methods.ImplicitDifferentiation"
"""The method that wraps every other solver; its ``curvature`` default is the solver's."""


def target_schema(target: str, group: str) -> type:
    """:func:`schema_for` the ``_target_`` path ``target`` of a YAML file of ``group`` (a solver:
    :func:`solver_schema`), read from its source without importing it
    (:mod:`hpo_cli.runner.config.signatures`: ``hpo-run --help`` and a refused command import no
    torch), or, where the source cannot be read so, from the imported target."""
    try:
        schema = make_schema(target, signatures.parameters(target))
    except signatures.Unreadable:
        imported = get_object(target)
        return solver_schema(imported) if group == "solver" else schema_for(imported)
    if group != "solver" or METHOD in signatures.ancestors(target):
        return schema
    return with_method_options(schema)


METHOD_OPTIONS = ("curvature", "products")
"""The keys of an inverse-HVP solver's node that are the implicit method's (arguments of
:class:`hpo_cli.core.methods.ImplicitDifferentiation`), not the solver's."""


def solver_schema(target: Callable[..., Any]) -> type:
    """:func:`schema_for` a solver; an inverse-HVP solver's (any but a hypergradient method of its
    own, such as ``Unrolled``) gains the implicit method's constructor arguments ``curvature``
    (the matrix it inverts, :data:`hpo_cli.core.curvature.CURVATURES`) and ``products`` (how its
    products are made, :data:`hpo_cli.core.hvp.PRODUCTS`), with that constructor's defaults."""
    schema = schema_for(target)
    method = get_object(METHOD)
    if isinstance(target, type) and issubclass(target, method):
        return schema
    return with_method_options(schema)


def with_method_options(schema: type) -> type:
    """``schema`` with :data:`METHOD_OPTIONS`, the arguments of the implicit method
    (:class:`hpo_cli.core.methods.ImplicitDifferentiation`) that wraps the solver, at that
    constructor's defaults (read from its source)."""
    defaults = {p.name: p.default for p in signatures.parameters(IMPLICIT)}
    added = [(name, str, defaults[name]) for name in METHOD_OPTIONS]
    return make_dataclass(schema.__name__, added, bases=(schema,))


# ---------------------------------------------------------------- optimisers
# Torch's signatures, typed for OmegaConf; each default is torch's own
# (tests/runner/test_defaults.py).
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
    lr: float = 1e-3
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
    threads: int | None = 1  # torch's intra-op CPU threads; None: torch's default (every core)


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
    eval_every: int = 1  # outer steps between metrics rows
    hyper_steps: bool = True  # false: train at fixed λ (the baseline of a black-box search)
    hessian_every: int | None = None  # outer steps between Hessian diagnostics; None: off
    hessian_probes: int = 10  # Hutchinson probes for the trace estimate
    quality_every: int | None = None  # outer steps between hypergradient-quality probes; None: off
    quality_horizon: int | None = None  # inner steps of the probe's reference; None: inner_steps
    solver_comparison: SolverComparisonConfig = field(default_factory=SolverComparisonConfig)
    checkpoint_every: int = 10  # outer steps between checkpoints
    on_failure: str = "stop"  # stop | skip: what a diverged or non-finite hyper-step does
    max_skipped_fraction: float = 0.5  # on_failure=skip: a run skipping more hyper-steps fails
    precision: str | None = None  # null | 32 | 64 | bf16-mixed | 16-mixed (docs/precision.md)
    compile: bool = False  # torch.compile the inner steps, hyper-steps eager (docs/performance.md)
    resume: str | None = None  # a run directory to continue
    progress: bool = True  # tqdm bar on an interactive terminal
    log_every: int = 10  # outer steps between console lines (and one at the end)
    plots: bool = True  # PNG plots in the run directory
    tracking: Any = field(default_factory=schema_for(TrackingSettings))  # trackers, where to
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
        group, node = path.parent.name, yaml.safe_load(path.read_text()) or {}
        defaults = node.get("defaults") or []
        bases = [d for d in defaults if isinstance(d, str) and d.startswith("base_")]
        if not bases or bases[0][5:] in GROUP_SCHEMAS.get(group, {}):
            continue
        if "_target_" not in node:
            raise ConfigError(f"{path} extends {bases[0]} but names no _target_ to derive it from")
        schemas[group, bases[0]] = target_schema(node["_target_"], group)
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


def tracker_names(cfg: DictConfig) -> list[str]:
    """The trackers of ``tracking.trackers``, once each, in the order given:
    ``tracking.trackers=mlflow`` and ``tracking.trackers=[tensorboard,mlflow]`` both work."""
    chosen = cfg.tracking.trackers
    return list(dict.fromkeys([chosen] if isinstance(chosen, str) else list(chosen or [])))
