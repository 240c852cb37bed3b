"""The inner/outer loop of ``hpo-run``: joint training of weights and hyperparameters.

    hpo-run                                  # the default experiment
    hpo-run solver=cg outer_steps=400        # any group or key

One outer step (:func:`outer_step`):
  1. ``inner_steps`` steps of the inner optimiser on training mini-batches of L_t(w, λ);
  2. (with ``solver_comparison.every``) every solver's hypergradient against a dense solve;
  3. one hypergradient dL_v/dλ by the implicit function theorem on training/validation batches,
     and one step of the outer (hyper) optimiser on λ (:class:`hpo_cli.core.joint.JointOptimizer`);
     with ``quality_every``, its cosine with the unrolled hypergradient through the next inner
     steps (:func:`hpo_cli.runner.loop.diagnostics.quality_reference`, taken before the step).
Every ``eval_every`` outer steps (and at the last) a row goes to ``metrics.csv``; early stopping
watches the rows of the ``eval_every`` grid only, so that where a run was paused (a smaller
``outer_steps``, extended on resume) does not move its stop. Every ``checkpoint_every`` a
checkpoint lets ``resume=<run dir>`` continue after an interruption, bit for bit on the CPU.
"""

from __future__ import annotations

import contextlib
import json
import logging
import math
import time
from collections.abc import Callable, Iterator
from typing import Any

import torch
from tqdm import tqdm
from tqdm.contrib.logging import logging_redirect_tqdm

from hpo_cli.core import distributed
from hpo_cli.core.compiled import is_compile_error
from hpo_cli.core.hvp import NoSecondDerivative
from hpo_cli.core.hypergradient import Hypergradient, HypergradientError
from hpo_cli.data import Split
from hpo_cli.runner.loop import solver_health
from hpo_cli.runner.loop.diagnostics import (
    check_quality,
    check_solver_comparison,
    hessian_row,
    hypergradient_cosine,
    quality_due,
    quality_reference,
    solver_comparison_due,
    solver_comparison_rows,
)
from hpo_cli.runner.loop.experiment import Experiment, RunSettings
from hpo_cli.runner.loop.export import export_hyperparameters
from hpo_cli.runner.loop.hyper_losses import check_method, hyper_losses
from hpo_cli.runner.loop.precision import in_precision
from hpo_cli.runner.loop.progress import Progress, RunFailed, RunInterrupted, phase
from hpo_cli.runner.loop.shards import check_shards, draw
from hpo_cli.runner.loop.state import checkpoint_state, restore
from hpo_cli.runner.report.console import eta_text, log_due
from hpo_cli.runner.rundir.directory import RunDirectory
from hpo_cli.runner.rundir.metrics import MetricsLog
from hpo_cli.runner.rundir.writes import RunFileNotWritten
from hpo_cli.runner.tracking import Trackers

log = logging.getLogger(__name__)


def inner_step(exp: Experiment) -> torch.Tensor:
    """One inner-optimiser step on a training mini-batch; returns the (detached) loss. With
    ``compile=true`` its loss (forward and backward) and optimiser step are compiled
    (:mod:`hpo_cli.core.compiled`), on the first call."""
    batch = draw(exp.data.train, exp.settings.batch_size, exp.batches)
    return exp.joint.inner_step(
        in_precision(exp.settings.precision, exp.device, lambda: exp.training_loss(batch))
    )


def inner_phase(exp: Experiment, steps: int) -> torch.Tensor | None:
    """``steps`` inner steps with λ held constant (:meth:`hpo_cli.hyper.HyperModule.held_constant`:
    what the training loss needs of λ, e.g. softplus(θ), computed once and without a graph);
    returns the last (detached) loss, ``None`` for no steps. Nothing here reads the device: the
    caller checks the loss once per phase."""
    loss = None
    with exp.hyper.held_constant(exp.model):
        for _ in range(steps):
            loss = inner_step(exp)
    return loss


def hyper_step(exp: Experiment, progress: Progress) -> Hypergradient:
    """Hypergradient on training/validation batches, then one outer-optimiser step on λ; a
    failed hyper-step stops the run (``on_failure=stop``) or is skipped and counted. Every
    solve is counted by status (:mod:`hpo_cli.runner.loop.solver_health`), which warns once
    when most are doubtful. A training loss autograd cannot differentiate twice stops the run
    naming ``solver.products=finite_difference``. Returns the hypergradient (``failure`` set
    when skipped)."""
    train_batch = draw(exp.data.train, exp.settings.hyper_train_batch, exp.batches)
    val_batch = draw(exp.data.val, exp.settings.hyper_val_batch, exp.batches)
    try:
        result = exp.joint.hyper_step(hyper_losses(exp, train_batch, val_batch))
    except HypergradientError as error:
        solver_health.record(progress.solves, error.info.status, None)
        raise RunFailed(f"outer step {progress.outer_step}: {error}", progress) from error
    except NoSecondDerivative as error:
        raise RunFailed(
            f"outer step {progress.outer_step}: {error}; set solver.products=finite_difference "
            "(central differences of first-order gradients)",
            progress,
        ) from error
    solver_health.record(progress.solves, result.solve.status, result.residual)
    warning = solver_health.warning_due(progress.solves)
    if warning is not None:
        log.warning("outer step %d: %s", progress.outer_step, warning)
    progress.skipped_hyper_steps = exp.joint.skipped_hyper_steps
    progress.last_hyper = {
        "hypergrad_norm": result.norm,
        "solver_status": result.solve.status,
        "solver_iterations": result.solve.iterations,
        "solver_hvps": result.hvps,
        "solver_residual": result.residual,
        "solver_diverged": result.solve.diverged,
    }
    if result.failure is not None:
        log.warning("outer step %d: hyper-step skipped: %s", progress.outer_step, result.failure)
    return result


def check_finite(value: torch.Tensor, what: str, progress: Progress) -> None:
    if not math.isfinite(float(value)):
        message = f"outer step {progress.outer_step}: the {what} is {float(value)}"
        raise RunFailed(message, progress)


@contextlib.contextmanager
def diagnostics_of(progress: Progress) -> Iterator[None]:
    """A diagnostic (Hessian, solver comparison, quality probe) on a model autograd cannot
    differentiate twice stops the run in one line naming the diagnostics: they use autograd's
    products whatever ``solver.products`` is."""
    try:
        yield
    except NoSecondDerivative as error:
        raise RunFailed(
            f"outer step {progress.outer_step}: {error}; the diagnostics hessian_every, "
            "solver_comparison.every and quality_every differentiate twice whatever "
            "solver.products is: turn them off for this model",
            progress,
        ) from error


@contextlib.contextmanager
def compilation_of(progress: Progress) -> Iterator[None]:
    """A compiled inner step (``compile=true``) that fails to compile, on its first call (e.g.
    the C++ compiler fails), stops the run in one line naming ``compile=false``."""
    try:
        yield
    except Exception as error:
        if not is_compile_error(error):
            raise
        reason = next((line for line in str(error).splitlines() if line.strip()), "")
        raise RunFailed(
            f"outer step {progress.outer_step}: compile=true: torch.compile failed: "
            f"{reason.strip()}; use compile=false",
            progress,
        ) from error


def outer_step(exp: Experiment, progress: Progress, comparisons: MetricsLog | None = None) -> None:
    """One outer step: the inner phase, the optional solver comparison (into ``comparisons``),
    and the hyper-step (unless ``hyper_steps=false``).

    Raises:
        RunFailed: a non-finite training loss, or a failed hyper-step with ``on_failure=stop``.
    """
    settings = exp.settings
    progress.outer_step += 1
    if settings.reset_inner_optimizer:
        exp.joint.optimizer = exp.new_optimizer()
    with phase(progress, "inner", exp.device), compilation_of(progress):
        loss = inner_phase(exp, settings.inner_steps)
        progress.total_inner_steps += settings.inner_steps
    check_finite(loss, "training loss", progress)
    if comparisons is not None and solver_comparison_due(settings, progress.outer_step):
        with phase(progress, "solver_comparison", exp.device), diagnostics_of(progress):
            comparisons.extend(solver_comparison_rows(exp, progress))
    if settings.hyper_steps:
        reference = None
        if quality_due(settings, progress.outer_step):
            with phase(progress, "quality", exp.device), diagnostics_of(progress):
                reference = quality_reference(exp)
        with phase(progress, "hypergradient", exp.device):
            result = hyper_step(exp, progress)
        if reference is not None:
            cosine = hypergradient_cosine(result, reference)
            progress.last_hyper["hypergrad_cosine"] = cosine
            progress.quality.append([progress.outer_step, cosine])


@torch.no_grad()
def evaluate_split(exp: Experiment, split: Split, chunk: int = 4096) -> tuple[float, float]:
    """Mean data loss and error over a whole split (no penalty), the model in eval mode (batch
    norm on its running statistics) and put back in training mode afterwards."""
    loss_sum = error_sum = 0.0
    exp.model.eval()
    try:
        for inputs, targets in split.chunks(chunk):
            outputs = exp.model(inputs)
            loss_sum += float(exp.criterion(outputs, targets).sum())
            error_sum += float(exp.error(outputs, targets).sum())
    finally:
        exp.model.train()
    return loss_sum / len(split), error_sum / len(split)


def evaluation_row(exp: Experiment, progress: Progress, wall_time_s: float) -> dict[str, Any]:
    """One ``metrics.csv`` row: losses and errors of every split, λ's statistics, the last
    hyper-step's diagnostics, and (every ``hessian_every`` steps) the Hessian's."""
    row: dict[str, Any] = {
        "outer_step": progress.outer_step,
        "total_inner_steps": progress.total_inner_steps,
    }
    for name in ("train", "val", "test"):
        row[f"{name}_loss"], row[f"{name}_error"] = evaluate_split(exp, getattr(exp.data, name))
    values = exp.hyper.constrained_values()
    inner_state = exp.joint.inner_diagnostics()  # e.g. Hessian-free's damping, CG iterations
    if inner_state is not None:
        row["inner_optimizer_state"] = json.dumps(inner_state)
    row.update(
        hyper_mean=float(values.mean()),
        hyper_min=float(values.min()),
        hyper_max=float(values.max()),
        skipped_hyper_steps=progress.skipped_hyper_steps,
        wall_time_s=wall_time_s,
        **progress.last_hyper,
    )
    every = exp.settings.hessian_every
    if every and progress.outer_step % every == 0:
        with diagnostics_of(progress):
            row.update(hessian_row(exp))
    return row


def log_row(row: dict[str, Any], eta: str = "") -> None:
    log.info(
        "outer %d: train %.4g val %.4g (err %.3f) test err %.3f |dλ| %.3g | %s",
        row["outer_step"],
        row["train_loss"],
        row["val_loss"],
        row["val_error"],
        row["test_error"],
        row.get("hypergrad_norm", math.nan),
        eta,
    )


def start_or_resume(
    exp: Experiment,
    files: RunDirectory | None,
    metrics: MetricsLog | None,
    comparisons: MetricsLog | None,
) -> tuple[Progress, bool]:
    """The progress of a resumed run (its files cut back to its checkpoint), or of a fresh one
    after ``warmup_inner_steps``; and whether the run is fresh. Without ``files`` (rank ≠ 0 of a
    data-parallel run) the checkpoint is rank 0's and nothing is read or written here."""
    logs = [file for file in (metrics, comparisons) if file is not None]
    checkpoint = None
    if exp.settings.resume:
        checkpoint = distributed.from_rank_zero(files.load_checkpoint() if files else None)
    if checkpoint is not None:
        progress = restore(exp, checkpoint)
        progress.device = str(exp.device)
        if metrics is not None:
            metrics.keep_until(progress.outer_step, progress.metrics_rows)
        if comparisons is not None:
            comparisons.keep_until(progress.outer_step)
        if files is not None:
            log.info("resuming %s after outer step %d", files.path, progress.outer_step)
        return progress, False
    if not exp.settings.resume and files is not None:
        files.refuse_existing_run()
    for file in logs:
        file.keep_until(-1)
    progress = Progress(device=str(exp.device), metrics_rows=0)
    with compilation_of(progress):
        inner_phase(exp, exp.settings.warmup_inner_steps)
    progress.total_inner_steps = exp.settings.warmup_inner_steps
    return progress, True


def never() -> str | None:
    return None


def run(
    exp: Experiment,
    files: RunDirectory | None,
    trackers: Trackers | None = None,
    stop_requested: Callable[[], str | None] = never,
) -> Progress:
    """Run (or resume) ``exp``, writing metrics and checkpoints to ``files`` and every metrics
    row to ``trackers``; stop early by ``exp.stopping``
    (:mod:`hpo_cli.runner.loop.early_stopping`), keeping the best weights in checkpoint_best.pt;
    λ in full goes to the hyperparameter files at the end (:mod:`hpo_cli.runner.loop.export`),
    however the run ends. ``stop_requested`` is asked before every outer step: a reason (e.g.
    SIGTERM) ends the run there, the last completed step checkpointed, by :class:`RunInterrupted`.

    Data parallel (:mod:`hpo_cli.core.distributed`): every rank runs this loop in lock-step on
    its shards (:mod:`hpo_cli.runner.loop.shards`); rank 0 alone has ``files`` and ``trackers``
    and writes, the others pass ``None`` and write nothing; rank 0's stop request and checkpoint
    are every rank's, and a checkpoint is written only once every rank holds the same w and λ.

    Raises:
        RunInterrupted: ``stop_requested`` gave a reason; the checkpoint is on disk.
        RunFailed: a non-finite loss or hypergradient, a diverged solver (unless
            ``on_failure=skip``), a run file the disk refused (full, a file-size limit:
            :class:`hpo_cli.runner.rundir.writes.RunFileNotWritten`), or (data parallel)
            processes that no longer agree or a failed collective (another process stopped);
            metrics and the last checkpoint stay on disk.
    """
    settings, stopping = exp.settings, exp.stopping
    check_solver_comparison(exp)
    check_quality(exp)
    check_method(exp)
    check_shards(exp)
    metrics = files.metrics_log() if files is not None else None
    comparisons = None
    if settings.solver_comparison.every and files is not None:
        comparisons = files.comparison_log()
    if exp.joint.compile and files is not None:
        log.info("compile=true: the first inner step compiles it, once (seconds to minutes)")
    started = time.perf_counter()
    progress, fresh = start_or_resume(exp, files, metrics, comparisons)
    checkpointed = None if fresh else progress.outer_step  # the step checkpoint.pt holds
    elapsed_before = progress.elapsed_s

    def elapsed() -> float:
        return elapsed_before + time.perf_counter() - started

    def save_checkpoint() -> None:
        check_ranks_agree(exp, progress)
        if files is not None:
            files.save_checkpoint(checkpoint_state(exp, progress, elapsed()))

    def record(row: dict[str, Any]) -> None:
        if metrics is not None:
            metrics.append(row)
        if progress.metrics_rows is not None:
            progress.metrics_rows += 1
        if trackers is not None and trackers.active:
            with phase(progress, "tracking", exp.device):
                trackers.log_row(row)
        if progress.outer_step % settings.eval_every != 0:
            return  # the last step's row: early stopping watches the eval_every grid only
        if stopping.update(progress.early_stopping, row) and stopping.enabled and files:
            state = checkpoint_state(exp, progress, elapsed())
            files.save_best_checkpoint(state)

    try:
        if fresh:
            record(evaluation_row(exp, progress, elapsed()))
        elif stopping.stopped(progress.early_stopping) and files is not None:
            log.warning(
                "%s stopped at outer step %d by %s; nothing to continue (raise "
                "early_stopping.patience, or set it to null, to train on)",
                files.path,
                progress.outer_step,
                stopping.reason(progress.early_stopping),
            )

        first_step, loop_started = progress.outer_step, time.perf_counter()  # the console's ETA
        bar = tqdm(
            total=settings.outer_steps,
            initial=progress.outer_step,
            desc="outer steps",
            disable=None if settings.progress else True,
            dynamic_ncols=True,
        )
        with logging_redirect_tqdm(), bar:
            while progress.outer_step < settings.outer_steps and not stopping.stopped(
                progress.early_stopping
            ):
                reason = distributed.from_rank_zero(stop_requested())
                if reason is not None:  # between two steps: the last completed one is kept
                    if checkpointed != progress.outer_step:
                        save_checkpoint()
                    raise RunInterrupted(reason, progress)
                outer_step(exp, progress, comparisons)
                last = progress.outer_step == settings.outer_steps
                if progress.outer_step % settings.eval_every == 0 or last:
                    with phase(progress, "eval", exp.device):
                        row = evaluation_row(exp, progress, elapsed())
                    record(row)
                    last = last or stopping.stopped(progress.early_stopping)
                    bar.set_postfix(
                        train_loss=f"{row['train_loss']:.3g}",
                        val_err=f"{row['val_error']:.3f}",
                        test_err=f"{row['test_error']:.3f}",
                    )
                    if log_due(progress.outer_step, settings.eval_every, settings.log_every, last):
                        done, total = progress.outer_step - first_step, settings.outer_steps
                        seconds = time.perf_counter() - loop_started
                        log_row(row, eta_text(done, total - first_step, seconds))
                if progress.outer_step % settings.checkpoint_every == 0 or last:
                    save_checkpoint()
                    checkpointed = progress.outer_step
                bar.update(1)
        warning = solver_health.warning_due(progress.solves, final=True)
        if warning is not None:
            log.warning("%s", warning)
        check_skipped(settings, progress)
    except RunFileNotWritten as error:  # a full disk: the run fails, its files so far kept
        raise RunFailed(str(error), progress) from error
    except distributed.ProcessGroupError as error:  # the checkpoint on disk is whole
        again = f"; torchrun ... resume={files.path} continues it" if files is not None else ""
        raise RunFailed(f"outer step {progress.outer_step}: {error}{again}", progress) from error
    finally:
        progress.elapsed_s = elapsed()
        if files is not None:
            export_hyperparameters(exp, progress, files)  # completed, failed or interrupted
    stopped = stopping.stopped(progress.early_stopping)
    progress.stop_reason = stopping.reason(progress.early_stopping) if stopped else "completed"
    return progress


def check_ranks_agree(exp: Experiment, progress: Progress) -> None:
    """Refuse to go on when the ranks of a data-parallel run no longer hold bit-identical
    weights and λ (a checksum compared across ranks; nothing to check in one process).

    Raises:
        RunFailed: the ranks diverged; the last checkpoint on disk is the last that agreed.
    """
    tensors = [*exp.model.state_dict().values(), *exp.hyper.state_dict().values()]
    if not distributed.agree(tensors):
        raise RunFailed(
            f"outer step {progress.outer_step}: the {distributed.world_size()} processes no "
            "longer hold the same weights and hyperparameters (a non-deterministic kernel?); "
            "not checkpointed",
            progress,
        )


def check_skipped(settings: RunSettings, progress: Progress) -> None:
    """Fail a run whose hyper-steps were mostly skipped (``on_failure=skip``): more than
    ``max_skipped_fraction`` of its outer steps, so λ was hardly tuned.

    Raises:
        RunFailed: with the count, so that summary.json and the exit status say so.
    """
    steps, skipped = progress.outer_step, progress.skipped_hyper_steps
    if settings.hyper_steps and steps and skipped > settings.max_skipped_fraction * steps:
        raise RunFailed(
            f"{skipped} of {steps} hyper-steps were skipped (more than max_skipped_fraction="
            f"{settings.max_skipped_fraction:g} of them): λ was hardly tuned; see the warnings, "
            "and the solver_status column of metrics.csv",
            progress,
        )
