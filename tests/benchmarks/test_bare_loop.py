"""The plain loops the benchmarks compare hpo-run with: ``benchmarks.overhead``'s bare loop trains
the same weights as the runner's inner phase (same model, optimiser, batches and penalty, so the
timing compares like with like), and ``benchmarks.end_to_end``'s hand-written hypergradient is
the IFT's."""

from __future__ import annotations

import torch

from benchmarks.common.inner_steps import bare_loop
from benchmarks.common.run_config import compose_config
from benchmarks.end_to_end import plain_hypergradient
from hpo_cli.runner.config.build import build_experiment
from hpo_cli.runner.loop.train import inner_phase


def test_the_bare_loop_trains_the_weights_as_the_runners_inner_phase():
    cfg = compose_config(
        ["hyper_steps=false", "inner_steps=20", "dtype=float64", "hyper.init_noise=1.0"]
    )
    runner, reference = build_experiment(cfg), build_experiment(cfg)
    inner_phase(runner, 20)
    bare_loop(reference)()
    for ours, bare in zip(runner.model.parameters(), reference.model.parameters(), strict=True):
        torch.testing.assert_close(ours, bare, rtol=1e-10, atol=1e-12)
    moved = zip(runner.model.parameters(), build_experiment(cfg).model.parameters(), strict=True)
    assert all(not torch.equal(ours, initial) for ours, initial in moved)


def test_the_plain_loops_hypergradient_is_the_ift_closed_form_on_an_isotropic_quadratic():
    """L_t = ½‖w − a‖² + Σ softplus(θ)·w² with all θ equal: H = c·I, c = 1 + 2 softplus(θ), so
    power iteration finds c at once, α = 1/c makes the series H⁻¹v exactly, and the IFT gives
    dL_v/dθ_i = −2 sigmoid(θ_i) w_i (w_i − b_i) / c for L_v = ½‖w − b‖² (float64)."""
    gen = torch.Generator().manual_seed(0)
    a, b, start = (torch.randn(5, generator=gen, dtype=torch.float64) for _ in range(3))
    w = start.clone().requires_grad_(True)
    theta = torch.full((5,), 0.3, dtype=torch.float64, requires_grad=True)
    softplus = torch.nn.functional.softplus(theta)
    train_loss = 0.5 * (w - a).square().sum() + (softplus * w.square()).sum()
    val_loss = 0.5 * (w - b).square().sum()
    (grad,) = plain_hypergradient([w], [theta], train_loss, val_loss)
    c = 1 + 2 * torch.nn.functional.softplus(theta.detach())
    expected = -2 * torch.sigmoid(theta.detach()) * start * (start - b) / c
    torch.testing.assert_close(grad, expected, rtol=1e-12, atol=0)
