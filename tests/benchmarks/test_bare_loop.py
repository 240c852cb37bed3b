"""The bare PyTorch loop that ``benchmarks.overhead`` times against the runner's inner phase
trains the same weights: the same model, optimiser, batches and penalty, so the timing compares
like with like."""

from __future__ import annotations

import torch

from benchmarks.common.run_config import compose_config
from benchmarks.overhead import bare_loop
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
