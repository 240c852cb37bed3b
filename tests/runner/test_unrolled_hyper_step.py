"""``solver=unrolled`` in hpo-run: the hyper-step differentiates K steps of the configured inner
optimiser from its current state, and leaves the run's weights and optimiser state alone."""

from __future__ import annotations

import numpy as np
import pandas as pd
import pytest
import torch

from hpo_cli.core.unrolled import state_of, unrolled_hypergradient, update_for
from hpo_cli.runner.cli.command import train
from hpo_cli.runner.config.build import build_experiment
from hpo_cli.runner.errors import ConfigError
from hpo_cli.runner.loop.hyper_losses import hyper_losses
from hpo_cli.runner.loop.progress import Progress
from hpo_cli.runner.loop.train import hyper_step, inner_step
from tests.support.composed import run_config
from tests.support.tiny_runs import tiny

TINY = tiny("dtype=float64")
UNROLLED = ("solver=unrolled", "solver.steps=3")


def config(*overrides: str, solver: tuple[str, ...] = UNROLLED):
    return run_config(*TINY, *solver, *overrides)


def test_the_hyper_step_is_the_unrolled_hypergradient_and_leaves_the_run_alone():
    exp = build_experiment(config("optimizer=rmsprop", "+optimizer.centered=true"))
    for _ in range(4):
        inner_step(exp)
    weights = [p.detach().clone() for p in exp.model.parameters()]
    first = next(exp.model.parameters())
    saved = {k: v.clone() for k, v in exp.joint.optimizer.state[first].items()}
    hparams = list(exp.hyper.parameters())
    before = [h.detach().clone() for h in hparams]

    generator_state = exp.batches.get_state()
    train_batch = exp.data.train.sample(exp.settings.hyper_train_batch, exp.batches)  # hyper_step's
    val_batch = exp.data.val.sample(exp.settings.hyper_val_batch, exp.batches)
    losses = hyper_losses(exp, train_batch, val_batch)
    training_loss, validation_loss = losses.inner_training_loss, losses.validation_loss
    update = update_for(exp.joint.optimizer)
    expected, _ = unrolled_hypergradient(
        exp.model,
        hparams,
        update,
        state_of(exp.joint.optimizer, update, list(exp.model.parameters())),
        training_loss,
        validation_loss,
        3,
    )
    exp.batches.set_state(generator_state)  # hyper_step draws the same batches again

    progress = Progress()
    hyper_step(exp, progress)
    assert progress.last_hyper["solver_status"] == "approximation"
    lr = exp.joint.hyper_optimizer.param_groups[0]["lr"]
    for h, b, g in zip(hparams, before, expected, strict=True):
        assert not torch.equal(h, b)
        assert h.grad is not None
        torch.testing.assert_close(h.grad, g, rtol=1e-12, atol=0)
        assert float((h - b).detach().abs().max()) <= 10 * lr  # one RMSprop step on λ
    for before_w, after_w in zip(weights, exp.model.parameters(), strict=True):
        assert torch.equal(before_w, after_w)
    for key, value in exp.joint.optimizer.state[first].items():
        assert torch.equal(value, saved[key])


def test_checkpointing_does_not_change_the_run(tmp_path):
    for run, overrides in (("a", ["solver.gradient_checkpointing=true"]), ("b", [])):
        (tmp_path / run).mkdir()
        train(config(*overrides), tmp_path / run)
    a, b = (pd.read_csv(tmp_path / run / "metrics.csv") for run in ("a", "b"))
    for column in ("val_loss", "train_loss", "hypergrad_norm", "hyper_mean"):
        np.testing.assert_allclose(a[column], b[column], rtol=1e-10)


def test_an_optimizer_it_cannot_unroll_is_refused_before_training(tmp_path):
    with pytest.raises(ConfigError, match=r"solver=unrolled: .*HessianFree"):
        train(config("optimizer=hessian_free"), tmp_path)


def test_ggn_curvature_in_the_runner(tmp_path):
    """solver.curvature=ggn: the exact solver solves the GGN system (residual ~0 against it) and
    gives another hypergradient than the Hessian's; the solver itself never sees the key."""
    norms = {}
    for curvature in ("hessian", "ggn"):
        (tmp_path / curvature).mkdir()
        cfg = config("outer_steps=1", solver=("solver=exact", f"solver.curvature={curvature}"))
        train(cfg, tmp_path / curvature)
        row = pd.read_csv(tmp_path / curvature / "metrics.csv").iloc[-1]
        assert row["solver_residual"] < 1e-8
        norms[curvature] = row["hypergrad_norm"]
    assert norms["ggn"] != pytest.approx(norms["hessian"], rel=1e-3)
