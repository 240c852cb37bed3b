"""The inner/outer loop of ``hpo-run``: joint training of weights and hyperparameters.

For each outer step:
  1. ``inner_steps`` steps of the inner optimiser on training mini-batches of L_t(w, λ);
  2. one hypergradient dL_v/dλ by the implicit function theorem (:func:`hpo_cli.core.hypergradient`)
     on training/validation batches;
  3. one step of the outer (hyper) optimiser on λ.
Every ``eval_every`` outer steps a row goes to ``metrics.csv``; every ``checkpoint_every`` a
checkpoint lets ``resume=<run dir>`` continue after an interruption, bit for bit on the CPU.
With ``solver_comparison.every``, before the hyper-step of every such outer step (and the last),
the hypergradients of cheaper solvers are compared with a dense solve (``solver_comparison.csv``).
"""

from __future__ import annotations

import json
import logging
import math
import time
from collections import defaultdict
from collections.abc import Iterator
from contextlib import contextmanager
from dataclasses import asdict, dataclass, field, is_dataclass
from pathlib import Path
from typing import Any

import torch
import torch.nn.functional as F
from hydra.utils import instantiate
from omegaconf import DictConfig
from tqdm import tqdm
from tqdm.contrib.logging import logging_redirect_tqdm

from hpo_cli.analysis.hessian import extreme_eigenvalues, hessian_operator, hutchinson_trace
from hpo_cli.analysis.solver_comparison import budget_sweep, compare_hypergradients, neumann_step
from hpo_cli.core.hypergradient import hypergradient
from hpo_cli.core.solvers import Exact, InverseHVPSolver
from hpo_cli.data import Split, Splits
from hpo_cli.hyper import Criterion, HyperModule
from hpo_cli.optim.local_model import loss_and_outputs
from hpo_cli.runner.checkpoint import load_checkpoint, save_checkpoint
from hpo_cli.runner.config import ConfigError
from hpo_cli.runner.metrics import SOLVER_COMPARISON_COLUMNS, MetricsLog

log = logging.getLogger(__name__)


class RunFailed(RuntimeError):
    """The run cannot go on (non-finite loss, diverged solver); files written so far are kept.

    Attributes:
        progress: where the run stopped.
    """

    def __init__(self, message: str, progress: Progress) -> None:
        super().__init__(message)
        self.progress = progress


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


def squared_error(outputs: torch.Tensor, targets: torch.Tensor) -> torch.Tensor:
    """Per-example (z − y)² for outputs (b, 1) and targets (b,)."""
    return (outputs.squeeze(-1) - targets).square()


def cross_entropy(outputs: torch.Tensor, targets: torch.Tensor) -> torch.Tensor:
    """Per-example cross-entropy for logits (b, k) and class indices (b,)."""
    return F.cross_entropy(outputs, targets, reduction="none")


def misclassified(outputs: torch.Tensor, targets: torch.Tensor) -> torch.Tensor:
    """Per-example 0/1 error."""
    return (outputs.argmax(dim=-1) != targets).to(outputs.dtype)


CRITERIA = {"classification": cross_entropy, "regression": squared_error}
ERRORS = {"classification": misclassified, "regression": squared_error}


@dataclass
class Experiment:
    """Everything built from a configuration, ready to train."""

    cfg: DictConfig
    device: torch.device
    data: Splits
    model: torch.nn.Module
    hyper: HyperModule
    solver: InverseHVPSolver
    optimizer: torch.optim.Optimizer
    hyper_optimizer: torch.optim.Optimizer
    criterion: Criterion
    error: Criterion
    batches: torch.Generator

    def new_optimizer(self) -> torch.optim.Optimizer:
        return build(self.cfg.optimizer, self.model.parameters())


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


def build_experiment(cfg: DictConfig) -> Experiment:
    """Instantiate data, model, hyperparameters, solver and optimisers from ``cfg``."""
    device = resolve_device(cfg.device.type)
    dtype = getattr(torch, cfg.dtype)
    if cfg.threads:
        torch.set_num_threads(cfg.threads)
    torch.manual_seed(cfg.seed)
    data = build(cfg.dataset, seed=cfg.seed).to(device, dtype)
    for key, size, split in (
        ("batch_size", cfg.batch_size, data.train),
        ("hyper_train_batch", cfg.hyper_train_batch, data.train),
        ("hyper_val_batch", cfg.hyper_val_batch, data.val),
    ):
        if size is not None and size > len(split):
            raise ConfigError(f"{key}={size} asks for more than the {len(split)} examples there")
    model = build(cfg.model, input_shape=data.input_shape, num_outputs=data.num_outputs)
    model = model.to(device, dtype)
    hyper = build(cfg.hyper, model=model, data=data)
    return Experiment(
        cfg=cfg,
        device=device,
        data=data,
        model=model,
        hyper=hyper,
        solver=build(cfg.solver),
        optimizer=build(cfg.optimizer, model.parameters()),
        hyper_optimizer=build(cfg.hyper_optimizer, hyper.parameters()),
        criterion=CRITERIA[data.task],
        error=ERRORS[data.task],
        batches=torch.Generator().manual_seed(cfg.seed),
    )


@dataclass
class Progress:
    """What a checkpoint must carry besides the state dicts."""

    device: str = "cpu"
    outer_step: int = 0
    inner_steps: int = 0
    skipped_hyper_steps: int = 0
    elapsed_s: float = 0.0
    phase_s: dict[str, float] = field(default_factory=lambda: defaultdict(float))
    last_hyper: dict[str, Any] = field(default_factory=dict)


@contextmanager
def phase(progress: Progress, name: str, device: torch.device) -> Iterator[None]:
    """Add the wall time of the block to ``progress.phase_s[name]``."""
    start = time.perf_counter()
    yield
    if device.type == "cuda":
        torch.cuda.synchronize(device)
    progress.phase_s[name] += time.perf_counter() - start


def inner_step(exp: Experiment) -> torch.Tensor:
    """One inner-optimiser step on a training mini-batch; returns the (detached) loss.

    Uses the ``optimizer.step(closure)`` contract of ``torch.optim``, so optimisers that
    re-evaluate the loss (L-BFGS, line searches) work unchanged. An optimiser that declares
    ``closure_returns_graph = True`` (Hessian-free) differentiates the loss itself: its closure
    returns (loss with graph, model outputs) and calls no ``backward()``; its Gauss-Newton
    curvature then covers the data loss only, the penalty's curvature being left to damping.
    """
    batch = exp.data.train.sample(exp.cfg.batch_size, exp.batches)
    params = list(exp.model.parameters())

    def training_loss() -> torch.Tensor:
        return exp.hyper.training_loss(exp.model, batch, exp.criterion)

    returns_graph = getattr(exp.optimizer, "closure_returns_graph", False)

    def closure() -> torch.Tensor | tuple[torch.Tensor, torch.Tensor]:
        if returns_graph:
            return loss_and_outputs(exp.model, training_loss)
        exp.optimizer.zero_grad(set_to_none=True)
        loss = training_loss()
        loss.backward(inputs=params)
        return loss

    return exp.optimizer.step(closure).detach()


def hyper_step(exp: Experiment, progress: Progress) -> None:
    """Hypergradient on training/validation batches, then one outer-optimiser step on λ."""
    cfg = exp.cfg
    train_batch = exp.data.train.sample(cfg.hyper_train_batch, exp.batches)
    val_batch = exp.data.val.sample(cfg.hyper_val_batch, exp.batches)
    train_loss = exp.hyper.training_loss(exp.model, train_batch, exp.criterion)
    val_loss = exp.hyper.validation_loss(exp.model, val_batch, exp.criterion)
    exp.hyper_optimizer.zero_grad(set_to_none=True)
    result = hypergradient(
        train_loss,
        val_loss,
        list(exp.model.parameters()),
        list(exp.hyper.parameters()),
        exp.solver,
        raise_on_failure=False,
        write_grad=True,
    )
    progress.last_hyper = {
        "hypergrad_norm": result.norm,
        "solver_status": result.solve.status,
        "solver_iterations": result.solve.iterations,
        "solver_hvps": result.hvps,
        "solver_residual": result.residual,
        "solver_diverged": result.solve.diverged,
    }
    if result.failure is None:
        exp.hyper_optimizer.step()
    elif cfg.on_failure == "skip":
        progress.skipped_hyper_steps += 1
        log.warning("outer step %d: hyper-step skipped: %s", progress.outer_step, result.failure)
    else:
        raise RunFailed(f"outer step {progress.outer_step}: {result.failure}", progress)


@torch.no_grad()
def evaluate_split(exp: Experiment, split: Split, chunk: int = 4096) -> tuple[float, float]:
    """Mean data loss and error over a whole split (no penalty), the model in eval mode (batch
    norm on its running statistics) and put back in training mode afterwards."""
    loss_sum = error_sum = 0.0
    exp.model.eval()
    try:
        for start in range(0, len(split), chunk):
            inputs = split.inputs[start : start + chunk]
            targets = split.targets[start : start + chunk]
            outputs = exp.model(inputs)
            loss_sum += float(exp.criterion(outputs, targets).sum())
            error_sum += float(exp.error(outputs, targets).sum())
    finally:
        exp.model.train()
    return loss_sum / len(split), error_sum / len(split)


def evaluation_row(exp: Experiment, progress: Progress, started: float) -> dict[str, Any]:
    row: dict[str, Any] = {"outer_step": progress.outer_step, "inner_steps": progress.inner_steps}
    for name in ("train", "val", "test"):
        row[f"{name}_loss"], row[f"{name}_error"] = evaluate_split(exp, getattr(exp.data, name))
    values = exp.hyper.constrained_values()
    inner_state = getattr(exp.optimizer, "last_step", None)
    if is_dataclass(inner_state):  # e.g. HessianFree.last_step: damping, CG iterations, ...
        row["inner_optimizer_state"] = json.dumps(asdict(inner_state))
    row.update(
        hyper_mean=float(values.mean()),
        hyper_min=float(values.min()),
        hyper_max=float(values.max()),
        skipped_hyper_steps=progress.skipped_hyper_steps,
        wall_time_s=progress.elapsed_s + time.perf_counter() - started,
        **progress.last_hyper,
    )
    every = exp.cfg.curvature_every
    if every and progress.outer_step % every == 0:
        row.update(curvature_row(exp))
    return row


@contextmanager
def untouched_run(exp: Experiment) -> Iterator[None]:
    """Restore the global RNG (dropout noise) and the model's buffers (batch-norm running
    statistics) on exit, so that diagnostics computed inside leave the run's trajectory as it
    would have been without them."""
    devices = [exp.device] if exp.device.type == "cuda" else []
    buffers = [b.clone() for b in exp.model.buffers()]
    with torch.random.fork_rng(devices=devices):
        try:
            yield
        finally:
            with torch.no_grad():
                for buffer, saved in zip(exp.model.buffers(), buffers, strict=True):
                    buffer.copy_(saved)


def curvature_row(exp: Experiment) -> dict[str, float]:
    """Diagnostics of H = ∂²L_t/∂w² on the first ``hyper_train_batch`` training examples: λmax
    and λmin by Lanczos (ARPACK to relative accuracy 1e-3; when it does not converge, Ritz values
    of 30 Lanczos steps, which lie inside the spectrum) and tr H by Hutchinson's estimator with
    its standard error. Computed inside :func:`untouched_run`, so switching the diagnostics on
    leaves the run's trajectory unchanged."""
    with untouched_run(exp):
        batch = exp.data.train.head(exp.cfg.hyper_train_batch)
        loss = exp.hyper.training_loss(exp.model, batch, exp.criterion)
        operator = hessian_operator(loss, list(exp.model.parameters()))
        extremes = {
            which: extreme_eigenvalues(
                operator, 1, which, seed=exp.cfg.seed, tol=1e-3, maxiter=5, fallback_steps=30
            ).values[0]
            for which in ("LA", "SA")
        }
        trace = hutchinson_trace(operator, exp.cfg.curvature_probes, seed=exp.cfg.seed)
    return {
        "hessian_lambda_max": float(extremes["LA"]),
        "hessian_lambda_min": float(extremes["SA"]),
        "hessian_trace": trace.mean,
        "hessian_trace_std_error": trace.std_error,
    }


def solver_comparison_due(cfg: DictConfig, outer_step: int) -> bool:
    """Whether outer step ``outer_step`` compares solvers: every ``solver_comparison.every``
    steps and at the last one."""
    every = cfg.solver_comparison.every
    return bool(every) and (outer_step % every == 0 or outer_step == cfg.outer_steps)


def solver_comparison_rows(exp: Experiment, progress: Progress) -> list[dict[str, Any]]:
    """The hypergradients of ``solver_comparison.solvers`` for K = 0..``budget`` against a dense
    solve at the current weights and λ (:mod:`hpo_cli.analysis.solver_comparison`), on the first
    ``hyper_train_batch``/``hyper_val_batch`` examples. Like :func:`curvature_row` it draws no
    batches and runs inside :func:`untouched_run`, so switching it on leaves the run's
    trajectory unchanged.

    Raises:
        RunFailed: the comparison is impossible here (λmax ≤ 0 leaves Neumann no step α; the
            dense reference is not finite).
    """
    settings = exp.cfg.solver_comparison
    train_batch = exp.data.train.head(exp.cfg.hyper_train_batch)
    val_batch = exp.data.val.head(exp.cfg.hyper_val_batch)

    def losses() -> tuple[torch.Tensor, torch.Tensor]:
        return (
            exp.hyper.training_loss(exp.model, train_batch, exp.criterion),
            exp.hyper.validation_loss(exp.model, val_batch, exp.criterion),
        )

    params, hparams = list(exp.model.parameters()), list(exp.hyper.parameters())
    with untouched_run(exp):
        try:
            alpha = settings.neumann_alpha
            if alpha is None and "neumann" in settings.solvers:
                alpha = neumann_step(losses()[0], params)
            candidates = budget_sweep(settings.solvers, settings.budget, alpha)
            rows = compare_hypergradients(losses, params, hparams, candidates)
        except ValueError as error:
            message = f"outer step {progress.outer_step}: solver_comparison: {error}"
            raise RunFailed(message, progress) from error
    return [{"outer_step": progress.outer_step, **asdict(row)} for row in rows]


def check_solver_comparison(exp: Experiment) -> None:
    """Refuse, before training, a comparison whose dense reference the model is too big for."""
    if not exp.cfg.solver_comparison.every:
        return
    size, limit = sum(p.numel() for p in exp.model.parameters()), Exact().max_dim
    if size > limit:
        raise ConfigError(
            f"solver_comparison.every={exp.cfg.solver_comparison.every} is invalid: its dense "
            f"reference solve takes at most {limit} weights and the model has {size}"
        )


def checkpoint_state(exp: Experiment, progress: Progress, started: float) -> dict[str, Any]:
    return {
        "progress": {
            **progress.__dict__,
            "phase_s": dict(progress.phase_s),
            "elapsed_s": progress.elapsed_s + time.perf_counter() - started,
        },
        "model": exp.model.state_dict(),
        "hyper": exp.hyper.state_dict(),
        "optimizer": exp.optimizer.state_dict(),
        "hyper_optimizer": exp.hyper_optimizer.state_dict(),
        "batches": exp.batches.get_state(),
        "torch_rng": torch.get_rng_state(),
        "cuda_rng": torch.cuda.get_rng_state_all() if exp.device.type == "cuda" else None,
    }


def restore(exp: Experiment, state: dict[str, Any]) -> Progress:
    exp.model.load_state_dict(state["model"])
    exp.hyper.load_state_dict(state["hyper"])
    exp.optimizer.load_state_dict(state["optimizer"])
    exp.hyper_optimizer.load_state_dict(state["hyper_optimizer"])
    exp.batches.set_state(state["batches"])
    torch.set_rng_state(state["torch_rng"])
    if state["cuda_rng"] is not None:
        torch.cuda.set_rng_state_all(state["cuda_rng"])
    progress = Progress(**state["progress"])
    progress.phase_s = defaultdict(float, progress.phase_s)
    return progress


def check_finite(value: torch.Tensor, what: str, progress: Progress) -> None:
    if not math.isfinite(float(value)):
        message = f"outer step {progress.outer_step}: the {what} is {float(value)}"
        raise RunFailed(message, progress)


def train(cfg: DictConfig, run_dir: Path) -> Progress:
    """Run (or resume) the experiment of ``cfg``, writing metrics and checkpoints to ``run_dir``.

    Raises:
        RunFailed: a non-finite loss or hypergradient, or a diverged solver (unless
            ``on_failure=skip``); metrics and the last checkpoint stay on disk.
    """
    exp = build_experiment(cfg)
    check_solver_comparison(exp)
    metrics = MetricsLog(run_dir / "metrics.csv")
    comparisons = MetricsLog(run_dir / "solver_comparison.csv", SOLVER_COMPARISON_COLUMNS)
    progress = Progress(device=str(exp.device))
    started = time.perf_counter()
    checkpoint = load_checkpoint(run_dir) if cfg.resume else None
    if checkpoint is not None:
        progress = restore(exp, checkpoint)
        progress.device = str(exp.device)
        metrics.keep_until(progress.outer_step)
        if cfg.solver_comparison.every:
            comparisons.keep_until(progress.outer_step)
        log.info("resuming %s after outer step %d", run_dir, progress.outer_step)
    elif metrics.rows() and not cfg.resume:
        raise ConfigError(f"{run_dir} already holds metrics.csv; pass resume={run_dir}")
    else:
        metrics.keep_until(-1)
        if cfg.solver_comparison.every:
            comparisons.keep_until(-1)
        for _ in range(cfg.warmup_inner_steps):
            inner_step(exp)
        progress.inner_steps = cfg.warmup_inner_steps
        metrics.append(evaluation_row(exp, progress, started))

    bar = tqdm(
        total=cfg.outer_steps,
        initial=progress.outer_step,
        desc="outer steps",
        disable=None if cfg.progress else True,
        dynamic_ncols=True,
    )
    try:
        with logging_redirect_tqdm(), bar:
            while progress.outer_step < cfg.outer_steps:
                progress.outer_step += 1
                if cfg.reset_inner_optimizer:
                    exp.optimizer = exp.new_optimizer()
                with phase(progress, "inner", exp.device):
                    for _ in range(cfg.inner_steps):
                        loss = inner_step(exp)
                    progress.inner_steps += cfg.inner_steps
                check_finite(loss, "training loss", progress)
                if solver_comparison_due(cfg, progress.outer_step):
                    with phase(progress, "solver_comparison", exp.device):
                        comparisons.extend(solver_comparison_rows(exp, progress))
                if cfg.hyper_steps:
                    with phase(progress, "hypergradient", exp.device):
                        hyper_step(exp, progress)
                last = progress.outer_step == cfg.outer_steps
                if progress.outer_step % cfg.eval_every == 0 or last:
                    with phase(progress, "eval", exp.device):
                        row = evaluation_row(exp, progress, started)
                    metrics.append(row)
                    bar.set_postfix(
                        train_loss=f"{row['train_loss']:.3g}",
                        val_err=f"{row['val_error']:.3f}",
                        test_err=f"{row['test_error']:.3f}",
                    )
                    log.info(
                        "outer %d: train %.4g val %.4g (err %.3f) test err %.3f |dλ| %.3g",
                        row["outer_step"],
                        row["train_loss"],
                        row["val_loss"],
                        row["val_error"],
                        row["test_error"],
                        row.get("hypergrad_norm", math.nan),
                    )
                if progress.outer_step % cfg.checkpoint_every == 0 or last:
                    save_checkpoint(run_dir, checkpoint_state(exp, progress, started))
                bar.update(1)
    finally:
        progress.elapsed_s += time.perf_counter() - started
    return progress
