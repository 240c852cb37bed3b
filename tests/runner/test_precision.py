"""``precision``: bf16-mixed runs the forward passes of inner steps and hyper-steps under
autocast while weights, λ and hypergradients stay float32; 16-mixed autocasts the inner steps
through a gradient scaler and keeps the hyper-steps in float32; contradictions with ``dtype``
and what cannot run are refused in one line before anything is written."""

from __future__ import annotations

import dataclasses

import pandas as pd
import pytest
import torch

from hpo_cli.runner.config.build import build_experiment
from hpo_cli.runner.loop import train
from hpo_cli.runner.loop.hyper_losses import hyper_losses
from hpo_cli.runner.loop.progress import Progress
from hpo_cli.runner.loop.state import checkpoint_state, restore
from tests.support.cli_runs import hpo_run
from tests.support.tiny_runs import config, tiny


def test_bf16_mixed_autocasts_inner_and_hyper_steps_and_keeps_float32_elsewhere():
    exp = build_experiment(config("precision=bf16-mixed"))
    seen: list[torch.dtype] = []
    first = next(m for m in exp.model.modules() if isinstance(m, torch.nn.Linear))
    handle = first.register_forward_hook(lambda _m, _i, output: seen.append(output.dtype))
    train.inner_step(exp)
    assert seen == [torch.bfloat16], "the inner step's forward pass"
    batches = [exp.data.train.sample(20, exp.batches), exp.data.val.sample(20, exp.batches)]
    hparams = list(exp.hyper.parameters())
    method, optimizer = exp.joint.method, exp.joint.optimizer
    seen.clear()
    mixed, _ = method.hypergradient(
        exp.model, hparams, optimizer, hyper_losses(exp, *batches), None
    )
    assert set(seen) == {torch.bfloat16}, "the hyper-step's training and validation losses"
    exp.settings = dataclasses.replace(exp.settings, precision=None)
    seen.clear()
    full, _ = method.hypergradient(exp.model, hparams, optimizer, hyper_losses(exp, *batches), None)
    handle.remove()
    assert set(seen) == {torch.float32}
    assert all(p.dtype == torch.float32 for p in [*exp.model.parameters(), *hparams])
    assert all(g.dtype == torch.float32 for g in mixed.grads)
    got, want = (
        torch.cat([g.flatten() for g in mixed.grads]),
        torch.cat([g.flatten() for g in full.grads]),
    )
    assert float(torch.nn.functional.cosine_similarity(got, want, dim=0)) > 0.99
    assert not torch.equal(got, want), "bf16 changed the arithmetic"


def test_a_bf16_mixed_run_trains(tmp_path):
    result = hpo_run(tmp_path, *tiny("precision=bf16-mixed"))
    assert result.returncode == 0, result.stderr
    table = pd.read_csv(tmp_path / "metrics.csv")
    assert table["hypergrad_norm"].iloc[1:].gt(0).all() and table["train_loss"].notna().all()


@pytest.mark.parametrize(
    ("overrides", "message"),
    [
        (
            ["precision=64"],
            "precision=64 contradicts dtype=float32: precision=64 needs dtype=float64",
        ),
        (
            ["precision=bf16-mixed", "dtype=float64"],
            "precision=bf16-mixed contradicts dtype=float64",
        ),
        (
            ["precision=16-mixed", "optimizer=hessian_free"],
            "precision=16-mixed: HessianFree re-evaluates the loss inside its step",
        ),
        (["precision=8"], "precision=8 is invalid: null or one of 32, 64, bf16-mixed, 16-mixed"),
    ],
)
def test_contradictions_and_unsupported_precisions_are_refused_in_one_line(
    tmp_path, overrides, message
):
    result = hpo_run(tmp_path / "run", *tiny(*overrides))
    lines = [line for line in result.stderr.splitlines() if line.startswith("hpo-run: error:")]
    assert result.returncode == 2 and len(lines) == 1 and message in lines[0], result.stderr
    assert not (tmp_path / "run").exists()


@pytest.mark.parametrize("overrides", [["precision=32"], ["precision=64", "dtype=float64"]])
def test_full_precisions_agree_with_dtype_and_run(tmp_path, overrides):
    assert hpo_run(tmp_path, *tiny("outer_steps=1", *overrides)).returncode == 0


def test_a_run_saved_before_products_and_precision_resumes_only_as_it_ran(tmp_path):
    """Its saved configuration has neither key; it ran with autograd products, no autocast."""
    from omegaconf import OmegaConf

    assert hpo_run(tmp_path, *tiny("outer_steps=2")).returncode == 0
    saved = OmegaConf.load(tmp_path / ".hydra" / "config.yaml")
    del saved["precision"], saved.solver["products"]
    OmegaConf.save(saved, tmp_path / ".hydra" / "config.yaml")
    for change in ("precision=bf16-mixed", "solver.products=finite_difference"):
        refused = hpo_run(None, f"resume={tmp_path}", "outer_steps=3", change)
        key = change.split("=")[0]
        assert refused.returncode == 2 and f"cannot change {key} (<missing> ->" in refused.stderr
    assert hpo_run(None, f"resume={tmp_path}", "outer_steps=3").returncode == 0
    assert len(pd.read_csv(tmp_path / "metrics.csv")) == 4


def test_16_mixed_scales_the_inner_steps_and_keeps_the_hyper_steps_in_float32():
    exp = build_experiment(config("precision=16-mixed"))
    scaler = exp.joint.grad_scaler
    assert scaler is not None and scaler.is_enabled()
    seen: list[torch.dtype] = []
    first = next(m for m in exp.model.modules() if isinstance(m, torch.nn.Linear))
    handle = first.register_forward_hook(lambda _m, _i, output: seen.append(output.dtype))
    before = [p.detach().clone() for p in exp.model.parameters()]
    train.inner_step(exp)
    assert seen == [torch.float16], "the inner step's forward pass"
    assert any(not torch.equal(b, p) for b, p in zip(before, exp.model.parameters(), strict=True))
    batches = [exp.data.train.sample(20, exp.batches), exp.data.val.sample(20, exp.batches)]
    seen.clear()
    losses = hyper_losses(exp, *batches)
    losses.training_loss(), losses.validation_loss()
    handle.remove()
    assert set(seen) == {torch.float32}, "the hyper-step's losses"


def test_16_mixed_skips_a_step_whose_gradients_overflow_and_lowers_the_scale():
    """GradScaler's rule: an inner step with a non-finite gradient leaves the weights as they
    were and halves the scale."""
    exp = build_experiment(config("precision=16-mixed"))
    before = [p.detach().clone() for p in exp.model.parameters()]
    first = next(iter(exp.model.parameters()))
    exp.joint.inner_step(lambda: (first * float("inf")).sum())
    assert all(torch.equal(b, p) for b, p in zip(before, exp.model.parameters(), strict=True))
    assert exp.joint.grad_scaler.get_scale() == 65536.0 * 0.5  # torch's initial scale, halved


def test_the_gradient_scalers_state_goes_into_the_checkpoint_and_back():
    exp, again = (build_experiment(config("precision=16-mixed")) for _ in range(2))
    first = next(iter(exp.model.parameters()))
    for _ in range(3):  # three overflows: the scale falls to 65536 / 8
        exp.joint.inner_step(lambda: (first * float("inf")).sum())
    progress = Progress(device="cpu", metrics_rows=0)
    restore(again, checkpoint_state(exp, progress, 0.0))
    assert again.joint.grad_scaler.get_scale() == exp.joint.grad_scaler.get_scale() == 8192.0


def test_a_16_mixed_run_resumes_as_it_would_have_gone_on(tmp_path):
    """The gradient scaler's state (its scale and growth count) is part of the checkpoint: a
    run resumed after an interruption writes the uninterrupted run's metrics."""
    whole, cut = tmp_path / "whole", tmp_path / "cut"
    overrides = tiny("precision=16-mixed", "outer_steps=4", "checkpoint_every=2")
    assert hpo_run(whole, *overrides).returncode == 0
    assert hpo_run(cut, *tiny("precision=16-mixed", "outer_steps=2")).returncode == 0
    state = torch.load(cut / "checkpoint.pt", weights_only=False)
    assert state["grad_scaler"]["scale"] == 65536.0
    from hpo_cli.runner.cli import entry
    from tests.support.cli_runs import call_main

    assert call_main(entry.main, "hpo-run", [f"resume={cut}", "outer_steps=4"]).returncode == 0
    columns = [c for c in pd.read_csv(whole / "metrics.csv").columns if c != "wall_time_s"]
    pd.testing.assert_frame_equal(
        pd.read_csv(whole / "metrics.csv")[columns], pd.read_csv(cut / "metrics.csv")[columns]
    )
