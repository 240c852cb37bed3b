"""The solver comparison's references beyond the dense solve (``solver_comparison.horizons``):
the unrolled hypergradient through the run's own inner optimiser over h inner steps, validated by
central differences of the real training over the same steps
(:mod:`hpo_cli.analysis.training_response`).

The h steps use the mini-batches the run would draw next (from a copy of its batch generator,
after the hyper-step's own draws), the inner optimiser's current state (a fresh one with
``reset_inner_optimizer``) and, for dropout, one fixed noise seed for every evaluation; the
validation loss is on the comparison's validation batch. Nothing of the run changes: the
caller runs this inside :func:`hpo_cli.runner.loop.diagnostics.untouched_run`.
"""

from __future__ import annotations

import time
from collections.abc import Callable

import torch

from hpo_cli.analysis.solver_comparison import Estimate, SolverComparison, compared
from hpo_cli.analysis.training_response import (
    correlation,
    directional_responses,
    random_directions,
)
from hpo_cli.core.unrolled import state_of, unrolled_hypergradient, update_for
from hpo_cli.data import Batch
from hpo_cli.runner.loop.experiment import Experiment


class Horizon:
    """The run's next ``steps`` inner steps as pure functions of λ (batches and state fixed)."""

    def __init__(self, exp: Experiment, steps: int, val_batch: Batch | None = None) -> None:
        """``val_batch``: the batch of the validation loss; ``None``: the hyper-step's own
        (the one it is about to draw)."""
        self.exp, self.steps = exp, steps
        generator = torch.Generator()
        generator.set_state(exp.batches.get_state())
        hyper_val_batch = None
        if exp.settings.hyper_steps:  # the hyper-step's own draws come first
            exp.data.train.sample(exp.settings.hyper_train_batch, generator)
            hyper_val_batch = exp.data.val.sample(exp.settings.hyper_val_batch, generator)
            for _ in range(exp.joint.method.inner_batches):  # solver=unrolled's K batches
                exp.data.train.sample(exp.settings.batch_size, generator)
        self.batches = [
            exp.data.train.sample(exp.settings.batch_size, generator) for _ in range(steps)
        ]
        params = list(exp.model.parameters())
        self.update = update_for(exp.joint.optimizer)
        if exp.settings.reset_inner_optimizer:
            self.state = self.update.init_state(params)
        else:
            self.state = state_of(exp.joint.optimizer, self.update, params)
        if val_batch is None and hyper_val_batch is None:
            raise ValueError("without hyper-steps a horizon needs its validation batch")
        self.val_batch = val_batch if val_batch is not None else hyper_val_batch

    def training_loss(self, k: int) -> torch.Tensor:
        if k == 0:
            torch.manual_seed(self.exp.settings.seed)  # dropout: the same noise at every evaluation
        return self.exp.hyper.training_loss(self.exp.model, self.batches[k], self.exp.criterion)

    def validation_loss(self) -> torch.Tensor:
        return self.exp.hyper.validation_loss(self.exp.model, self.val_batch, self.exp.criterion)

    def hypergradient(self, steps: int | None = None) -> tuple[torch.Tensor, ...]:
        """The unrolled hypergradient through the first ``steps`` (default all) of the steps."""
        grads, _ = unrolled_hypergradient(
            self.exp.model,
            list(self.exp.hyper.parameters()),
            self.update,
            self.state,
            self.training_loss,
            self.validation_loss,
            self.steps if steps is None else steps,
        )
        return grads

    def responses(self, directions: torch.Tensor, eps: float) -> torch.Tensor:
        return directional_responses(
            self.exp.model,
            list(self.exp.hyper.parameters()),
            self.update,
            self.state,
            self.training_loss,
            self.validation_loss,
            self.steps,
            directions,
            eps,
        )


def unroll_candidates(exp: Experiment, val_batch: Batch, budget: int) -> Callable[[int], tuple]:
    """K ↦ the unrolled hypergradient through the run's next K inner steps (K ≤ ``budget``)."""
    horizon = Horizon(exp, budget, val_batch)
    return horizon.hypergradient


def horizon_rows(
    exp: Experiment, val_batch: Batch, exact: Estimate, estimates: list[Estimate]
) -> list[SolverComparison]:
    """For each horizon h of ``solver_comparison.horizons`` (in inner phases): the unrolled
    reference g_h (row ``reference``: its agreement with the finite differences, cosine and
    relative error taken over the m directional responses), then the dense solve and every
    candidate against g_h with their correlation with the finite differences."""
    settings = exp.settings.solver_comparison
    hparams = list(exp.hyper.parameters())
    directions = random_directions(hparams, settings.directions, exp.settings.seed)
    rows = []
    for phases in settings.horizons:
        steps = phases * exp.settings.inner_steps
        horizon = Horizon(exp, steps, val_batch)
        started = time.perf_counter()
        reference = torch.cat([g.reshape(-1) for g in horizon.hypergradient()]).detach()
        elapsed = time.perf_counter() - started
        measured = horizon.responses(directions, settings.fd_eps).to(reference)
        where = {"reference": "unrolled", "horizon": steps}
        predicted = directions @ reference
        validation = Estimate("reference", steps, steps, "approximation", predicted, elapsed)
        row = compared(validation, measured, **where)
        rows.append(
            SolverComparison(**{**row.__dict__, "fd_correlation": correlation(predicted, measured)})
        )
        for estimate in [exact, *estimates]:
            fd = (
                correlation(directions @ estimate.grads, measured)
                if estimate.grads is not None
                else float("nan")
            )
            rows.append(compared(estimate, reference, fd_correlation=fd, **where))
    return rows
