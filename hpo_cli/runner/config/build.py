"""From a composed configuration to the objects of a run: device, data, model, hyperparameter
module, hypergradient method, optimisers, early stopping (:func:`build_experiment`), the typed
:class:`hpo_cli.runner.loop.experiment.Experiment` the loop runs; nothing after it reads the
configuration.

Objects are built with ``hydra.utils.instantiate`` from each group's ``_target_``; run-time
objects (the data, the model, parameter iterators) are passed to the constructors as they are.
"""

from __future__ import annotations

import math
import re
from collections.abc import Callable, Mapping
from dataclasses import dataclass, fields
from typing import Any

import torch
from hydra.utils import instantiate
from omegaconf import DictConfig, OmegaConf

from hpo_cli.core.compiled import compiled, compiler_problem
from hpo_cli.core.joint import JointOptimizer, check_compilable, check_scalable
from hpo_cli.core.methods import hypergradient_method
from hpo_cli.data import Batch, Splits
from hpo_cli.data.protocol import DataOptions, as_splits
from hpo_cli.data.streaming import StreamedSplit
from hpo_cli.data.tasks import CRITERIA, ERRORS
from hpo_cli.hyper import Criterion, HyperModule
from hpo_cli.runner.config.schemas import METHOD_OPTIONS
from hpo_cli.runner.config.targets import check_node, node_key, offered_arguments
from hpo_cli.runner.errors import ConfigError
from hpo_cli.runner.loop.experiment import Experiment, RunSettings
from hpo_cli.runner.loop.precision import gradient_scaler


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


def build(node: DictConfig, *args: Any, offers: Mapping[str, Any] | None = None) -> Any:
    """Instantiate the ``_target_`` of ``node`` with run-time objects (data, modules, parameter
    iterators) passed as they are: given to ``instantiate`` directly, Hydra would first turn
    them into config nodes.

    The node's keys are first checked against the target's own signature
    (:func:`hpo_cli.runner.config.targets.check_node`). ``args`` are passed positionally; of
    ``offers``, only the names the target's signature lists (and the node does not set).

    Raises:
        ConfigError: a key the target does not take, the constructor refused its arguments (a
            value out of range, a file it cannot open), with the constructor's one-line
            message, or an allocation failed (a model no memory can hold).
    """
    offers = offers or {}
    target = check_node(node, supplied=offers, positional=len(args))
    constructor = instantiate(node, _partial_=True)
    try:
        return constructor(*args, **offered_arguments(target, node, offers))
    except (TypeError, ValueError) as error:
        raise ConfigError(first_line(error)) from error
    except OSError as error:  # a file it was given: missing, unreadable
        raise ConfigError(f"{node_key(node)}={node._target_}: {first_line(error)}") from error
    except (MemoryError, RuntimeError) as error:
        if not out_of_memory(error):
            raise
        raise ConfigError(
            f"{node_key(node)}={node._target_} needs more memory than there is "
            f"({allocation(error)}); make it smaller"
        ) from error


def out_of_memory(error: BaseException) -> bool:
    """Whether ``error`` is an allocation that failed: Python's ``MemoryError``, CUDA's
    ``torch.OutOfMemoryError``, or the CPU allocator's ``RuntimeError``."""
    return isinstance(error, MemoryError | torch.OutOfMemoryError) or (
        "can't allocate memory" in str(error)
    )


def allocation(error: BaseException) -> str:
    """``an allocation of 256.0 GB failed`` from the allocator's message, or its first line."""
    found = re.search(r"allocate (\d+) bytes", str(error))
    if found is None:
        return first_line(error)
    return f"an allocation of {int(found.group(1)) / 1e9:.1f} GB failed"


def first_line(error: BaseException) -> str:
    text = str(error).strip()
    return text.splitlines()[0] if text else type(error).__name__


def solver_without_method_options(node: DictConfig) -> DictConfig:
    """The solver's node less :data:`METHOD_OPTIONS`, which the runner reads (the solver never
    sees them); still keyed ``solver`` so that errors name ``solver.<key>``."""
    kept = {k: v for k, v in node.items() if k not in METHOD_OPTIONS}
    return OmegaConf.create({"solver": kept}).solver


def method_options(node: DictConfig) -> dict[str, Any]:
    """The :data:`METHOD_OPTIONS` the solver's node sets (none for a method of its own, such as
    ``solver=unrolled``)."""
    return {key: node[key] for key in METHOD_OPTIONS if key in node}


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
    data = build_data(cfg, dtype).to(device, dtype)
    model = build(cfg.model, offers=shape_offers(data))
    if not isinstance(model, torch.nn.Module):
        raise ConfigError(
            f"model={cfg.model._target_} built a {type(model).__name__}, not a torch.nn.Module"
        )
    model = model.to(device, dtype)
    check_outputs(model, data, cfg.model._target_)
    hyper = build(cfg.hyper, offers={"model": model, "data": data})
    return Problem(device, data, model, hyper)


def build_data(cfg: DictConfig, dtype: torch.dtype) -> Splits:
    """The ``dataset`` loader's result as :class:`Splits` (:mod:`hpo_cli.data.protocol`)."""
    result = build(cfg.dataset, offers={"seed": cfg.seed})
    options = DataOptions(**cfg.data)
    try:
        return as_splits(result, cfg.dataset._target_, options, cfg.seed, dtype)
    except ValueError as error:
        raise ConfigError(first_line(error)) from error


SHAPE_NAMES = ("input_shape", "num_outputs", "in_features", "num_classes", "in_channels")
"""Every name :func:`shape_offers` may offer a model."""


def shape_offers(data: Splits) -> dict[str, Any]:
    """What a model's constructor may ask for by name: ``input_shape`` (one input's shape),
    ``num_outputs`` (classes, or 1), ``in_features`` (prod(input_shape)), ``num_classes``
    (classification only) and ``in_channels`` (image inputs (C, H, W) only)."""
    offers = {
        "input_shape": data.input_shape,
        "num_outputs": data.num_outputs,
        "in_features": math.prod(data.input_shape),
    }
    if data.task == "classification":
        offers["num_classes"] = data.num_outputs
    if len(data.input_shape) == 3:
        offers["in_channels"] = data.input_shape[0]
    return offers


def check_outputs(model: torch.nn.Module, data: Splits, name: str) -> None:
    """One forward pass on two training examples, in eval mode and without gradients (no RNG
    drawn, no batch-norm statistics moved): the outputs must be (b, classes) for
    classification, (b, 1) or (b,) for regression; otherwise one line before training."""
    batch = data.train.head(2)
    model.eval()
    try:
        with torch.no_grad():
            outputs = model(batch.inputs)
    except Exception as error:  # a shape mismatch inside the model, reported as one line
        shape = tuple(batch.inputs.shape)
        raise ConfigError(f"model={name} fails on inputs {shape}: {first_line(error)}") from error
    finally:
        model.train()
    b, k = len(batch.inputs), data.num_outputs
    shape = tuple(getattr(outputs, "shape", ()))
    fits = shape == (b, k) if data.task == "classification" else shape in ((b, 1), (b,))
    if not fits:
        wanted = f"({b}, {k}) for {k} classes" if data.task == "classification" else f"({b}, 1)"
        raise ConfigError(
            f"model={name} maps inputs {tuple(batch.inputs.shape)} to outputs {shape}, but the "
            f"{data.task} data set needs {wanted}"
        )


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
    whole = [key for key in ("hyper_train_batch", "hyper_val_batch") if cfg[key] is None]
    if isinstance(data.train, StreamedSplit) and whole:
        raise ConfigError(
            f"{whole[0]}=null asks for a whole split, but the data set is streamed (larger than "
            f"data.max_in_memory_bytes={cfg.data.max_in_memory_bytes}): set {' and '.join(whole)}"
        )

    def new_optimizer() -> torch.optim.Optimizer:
        return build(cfg.optimizer, model.parameters())

    optimizer = new_optimizer()
    hyper_optimizer = build(cfg.hyper_optimizer, hyper.parameters())
    solver = hypergradient_method(
        build(solver_without_method_options(cfg.solver)), **method_options(cfg.solver)
    )
    scaler = gradient_scaler(cfg.precision, problem.device)
    if scaler is not None:
        try:
            check_scalable(optimizer)
        except ValueError as error:
            raise ConfigError(f"precision={cfg.precision}: {error}") from error
    if cfg.compile:
        check_compile(optimizer, scaler, problem.device)
        # Each run compiles afresh: the code compiled for an earlier run in this process (a
        # multirun's jobs) would count towards Dynamo's recompile limit, past which it runs eager.
        torch._dynamo.reset()
    joint = JointOptimizer(
        model,
        list(hyper.parameters()),
        optimizer=optimizer,
        hyper_optimizer=hyper_optimizer,
        solver=solver,
        on_failure=cfg.on_failure,
        grad_scaler=scaler,
        compile=cfg.compile,
    )
    return Experiment(
        settings=run_settings(cfg),
        device=problem.device,
        data=data,
        model=model,
        hyper=hyper,
        joint=joint,
        criterion=problem.criterion,
        error=ERRORS[data.task],
        batches=torch.Generator().manual_seed(cfg.seed),
        stopping=build(cfg.early_stopping),
        new_optimizer=new_optimizer,
        training_loss=training_loss(hyper, model, problem.criterion, cfg.compile),
    )


def check_compile(
    optimizer: torch.optim.Optimizer, scaler: torch.amp.GradScaler | None, device: torch.device
) -> None:
    """Refuse ``compile=true`` in one line where it cannot work: an optimiser that evaluates the
    loss in its step (L-BFGS, Hessian-free), a gradient scaler (``precision=16-mixed``), or no
    C++ compiler for Inductor on the CPU.

    Raises:
        ConfigError: naming what to change.
    """
    try:
        check_compilable(optimizer)
    except ValueError as error:
        raise ConfigError(f"compile=true: {error} or compile=false") from error
    if scaler is not None:
        raise ConfigError(
            "compile=true cannot compile the gradient scaler of precision=16-mixed: use "
            "compile=false or precision=bf16-mixed"
        )
    problem = compiler_problem(device)
    if problem is not None:
        raise ConfigError(f"compile=true: {problem}; or use compile=false")


def training_loss(
    hyper: HyperModule, model: torch.nn.Module, criterion: Criterion, compile: bool
) -> Callable[[Batch], torch.Tensor]:
    """L_t(w, λ) of a mini-batch, ``hyper.training_loss`` on ``model``: through
    ``torch.compile`` with ``compile`` (:func:`hpo_cli.core.compiled.compiled`), for the inner
    steps only (the hyper-steps call ``hyper`` eagerly)."""

    def loss(batch: Batch) -> torch.Tensor:
        return hyper.training_loss(model, batch, criterion)

    return compiled(loss) if compile else loss


def run_settings(cfg: DictConfig) -> RunSettings:
    """The top-level keys the loop reads, as plain values (``resume``: whether to continue)."""
    values = {f.name: cfg[f.name] for f in fields(RunSettings)}
    values["solver_comparison"] = OmegaConf.to_object(cfg.solver_comparison)
    values["resume"] = bool(cfg.resume)
    return RunSettings(**values)
