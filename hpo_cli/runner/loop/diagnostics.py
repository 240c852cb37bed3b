"""Optional diagnostics of a run that leave its trajectory unchanged: the training Hessian's
extreme eigenvalues and trace (``hessian_every``) and every solver's hypergradient against a
dense solve (``solver_comparison.every``), and the run's own hypergradient against the real
training's response over its next inner steps (``quality_every``)."""

from __future__ import annotations

from collections.abc import Iterator
from contextlib import contextmanager
from dataclasses import asdict
from typing import Any

import torch

from hpo_cli.analysis.hessian import extreme_eigenvalues, hessian_operator, hutchinson_trace
from hpo_cli.analysis.solver_comparison import (
    budget_sweep,
    compared,
    estimate_hypergradients,
    neumann_step,
)
from hpo_cli.analysis.training_response import agreement
from hpo_cli.core.first_order import FirstOrder, check_preconditioned
from hpo_cli.core.hypergradient import Hypergradient
from hpo_cli.core.methods import HyperLosses
from hpo_cli.core.solvers import Exact
from hpo_cli.core.unrolled import update_for
from hpo_cli.data import Batch
from hpo_cli.runner.errors import ConfigError
from hpo_cli.runner.loop.experiment import Experiment, RunSettings
from hpo_cli.runner.loop.horizons import Horizon, horizon_rows, unroll_candidates
from hpo_cli.runner.loop.hyper_losses import output_losses
from hpo_cli.runner.loop.progress import Progress, RunFailed


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


def hessian_row(exp: Experiment) -> dict[str, float]:
    """Diagnostics of H = ∂²L_t/∂w² on the first ``hyper_train_batch`` training examples: λmax
    and λmin by Lanczos (ARPACK to relative accuracy 1e-3; when it does not converge, Ritz values
    of 30 Lanczos steps, which lie inside the spectrum) and tr H by Hutchinson's estimator with
    its standard error. Computed inside :func:`untouched_run`, so switching the diagnostics on
    leaves the run's trajectory unchanged."""
    with untouched_run(exp):
        batch = exp.data.train.head(exp.settings.hyper_train_batch)
        loss = exp.hyper.training_loss(exp.model, batch, exp.criterion)
        operator = hessian_operator(loss, list(exp.model.parameters()))
        extremes = {
            which: extreme_eigenvalues(
                operator, 1, which, seed=exp.settings.seed, tol=1e-3, maxiter=5, fallback_steps=30
            ).values[0]
            for which in ("LA", "SA")
        }
        trace = hutchinson_trace(operator, exp.settings.hessian_probes, seed=exp.settings.seed)
    return {
        "hessian_lambda_max": float(extremes["LA"]),
        "hessian_lambda_min": float(extremes["SA"]),
        "hessian_trace": trace.mean,
        "hessian_trace_std_error": trace.std_error,
    }


def solver_comparison_due(settings: RunSettings, outer_step: int) -> bool:
    """Whether outer step ``outer_step`` compares solvers: every ``solver_comparison.every``
    steps and at the last one."""
    every = settings.solver_comparison.every
    return bool(every) and (outer_step % every == 0 or outer_step == settings.outer_steps)


def solver_comparison_rows(exp: Experiment, progress: Progress) -> list[dict[str, Any]]:
    """The hypergradients of ``solver_comparison.solvers`` for K = 0..``budget`` against a dense
    solve at the current weights and λ (:mod:`hpo_cli.analysis.solver_comparison`), on the first
    ``hyper_train_batch``/``hyper_val_batch`` examples. Like :func:`hessian_row` it draws no
    batches and runs inside :func:`untouched_run`, so switching it on leaves the run's
    trajectory unchanged.

    Raises:
        RunFailed: the comparison is impossible here (λmax ≤ 0 leaves Neumann no step α; the
            dense reference is not finite).
    """
    settings = exp.settings.solver_comparison
    train_batch = exp.data.train.head(exp.settings.hyper_train_batch)
    val_batch = exp.data.val.head(exp.settings.hyper_val_batch)

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
            exact, estimates = estimate_hypergradients(
                losses,
                params,
                hparams,
                candidates,
                output_losses=lambda: output_losses(exp, train_batch, val_batch),
                unroll=(
                    unroll_candidates(exp, val_batch, settings.budget)
                    if "unrolled" in settings.solvers
                    else None
                ),
                first_order=lambda: first_order_estimate(exp, train_batch, val_batch),
            )
            rows = [compared(e, exact.grads) for e in [exact, *estimates]]
            rows += horizon_rows(exp, val_batch, exact, estimates)
        except ValueError as error:
            message = f"outer step {progress.outer_step}: solver_comparison: {error}"
            raise RunFailed(message, progress) from error
    return [{"outer_step": progress.outer_step, **asdict(row)} for row in rows]


def first_order_estimate(exp: Experiment, train_batch: Batch, val_batch: Batch) -> Hypergradient:
    """The first-order hypergradient (:class:`hpo_cli.core.first_order.FirstOrder`) on the two
    batches with the run's inner optimiser's preconditioner as it is now."""
    losses = HyperLosses(
        training_loss=lambda: exp.hyper.training_loss(exp.model, train_batch, exp.criterion),
        validation_loss=lambda: exp.hyper.validation_loss(exp.model, val_batch, exp.criterion),
    )
    hparams = list(exp.hyper.parameters())
    return FirstOrder().hypergradient(exp.model, hparams, exp.joint.optimizer, losses, None)[0]


def check_solver_comparison(exp: Experiment) -> None:
    """Refuse, before training, a comparison whose dense reference the model is too big for, or
    whose unrolled candidates and references the inner optimiser cannot be unrolled for, or
    whose first_order candidate cannot read its preconditioner."""
    settings = exp.settings.solver_comparison
    if not settings.every:
        return
    if settings.horizons or "unrolled" in settings.solvers:
        try:
            update_for(exp.joint.optimizer)
        except ValueError as error:
            raise ConfigError(f"solver_comparison (horizons, unrolled): {error}") from error
    if "first_order" in settings.solvers:
        try:
            check_preconditioned(exp.joint.optimizer)
        except ValueError as error:
            raise ConfigError(f"solver_comparison (first_order): {error}") from error
    size, limit = sum(p.numel() for p in exp.model.parameters()), Exact().max_dim
    if size > limit:
        raise ConfigError(
            f"solver_comparison.every={exp.settings.solver_comparison.every} is invalid: its dense "
            f"reference solve takes at most {limit} weights and the model has {size}"
        )


def quality_due(settings: RunSettings, outer_step: int) -> bool:
    """Whether outer step ``outer_step`` probes the hypergradient's quality: every
    ``quality_every`` steps and at the last one (never without hyper-steps)."""
    every = settings.quality_every
    due = bool(every) and (outer_step % every == 0 or outer_step == settings.outer_steps)
    return due and settings.hyper_steps


def quality_horizon(settings: RunSettings) -> int:
    """The inner steps h of the probe's reference: ``quality_horizon``, else ``inner_steps``."""
    return settings.quality_horizon or settings.inner_steps


def quality_reference(exp: Experiment) -> torch.Tensor:
    """The probe's reference, taken just before the hyper-step at the weights and λ it
    differentiates at: g_h = dL_v(w_h(λ))/dλ, the unrolled hypergradient through the run's
    next h = :func:`quality_horizon` real inner steps, flattened. Those steps are the run's own:
    its inner optimiser and that optimiser's current state (a fresh one with
    ``reset_inner_optimizer``), on the mini-batches its generator will draw after the
    hyper-step's; L_v is on the hyper-step's own validation batch
    (:class:`hpo_cli.runner.loop.horizons.Horizon`). So it is what the next inner phase does
    with a change of λ, to first order, on the objective the hyper-step differentiates.

    Cost: one forward and a double-backward-sized reverse pass through h differentiable inner
    steps, about 3–4 inner steps' worth each (3h–4h in all), and memory linear in h. Inside
    :func:`untouched_run`, with streamed splits' sampler positions put back: the run's
    trajectory is unchanged.
    """
    positions = exp.data.state_dict()
    with untouched_run(exp):
        try:
            horizon = Horizon(exp, quality_horizon(exp.settings))
            grads = horizon.hypergradient()
        finally:
            exp.data.load_state_dict(positions)
    return torch.cat([g.detach().reshape(-1) for g in grads])


def hypergradient_cosine(result: Hypergradient | None, reference: torch.Tensor) -> float:
    """cos(g, g_h) of the hypergradient the outer optimiser used with the probe's reference; NaN
    for a skipped hyper-step (none was used) or a non-finite one, 0 when either is zero."""
    if result is None or result.failure is not None:
        return float("nan")
    used = torch.cat([g.detach().reshape(-1) for g in result.grads]).to(reference)
    if not (torch.isfinite(used).all() and torch.isfinite(reference).all()):
        return float("nan")
    return agreement(used, reference)[0]


def check_quality(exp: Experiment) -> None:
    """Refuse, before training, a probe whose reference the inner optimiser cannot be unrolled
    for (``optimizer=hessian_free``)."""
    if not exp.settings.quality_every:
        return
    try:
        update_for(exp.joint.optimizer)
    except ValueError as error:
        raise ConfigError(f"quality_every: {error}") from error
