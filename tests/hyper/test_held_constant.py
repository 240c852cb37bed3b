"""λ held constant through an inner phase (``HyperModule.held_constant``): the same losses and
weight gradients as with λ's graph, bit for bit, no graph to λ inside, and a fresh λ in every
block (the runner's ``inner_phase`` against the same inner steps taken one by one)."""

from __future__ import annotations

import pytest
import torch

from hpo_cli.data import Batch
from hpo_cli.data.tasks import cross_entropy
from hpo_cli.hyper import HyperModule, LossWeights, WeightDecay
from hpo_cli.models import MLP
from hpo_cli.runner.config.build import build_experiment
from hpo_cli.runner.loop.train import inner_phase, inner_step
from tests.hyper.test_modules import make_data, whole
from tests.support.composed import run_config
from tests.support.tiny_runs import tiny


def model_and_data():
    torch.manual_seed(0)
    data = make_data((5,))
    return MLP((5,), 3, [4]).double(), data


def weight_decay(model, granularity: str) -> WeightDecay:
    return WeightDecay(model, granularity, init=0.1, init_noise=1.0, data=None)


def loss_and_weight_grads(
    hyper: HyperModule, model, batch: Batch
) -> tuple[torch.Tensor, list[torch.Tensor]]:
    loss = hyper.training_loss(model, batch, cross_entropy)
    return loss.detach(), list(torch.autograd.grad(loss, list(model.parameters())))


def modules(model, data) -> dict[str, HyperModule]:
    return {
        **{f"weight_decay/{g}": weight_decay(model, g) for g in ("scalar", "layer", "weight")},
        "loss_weights": LossWeights(model, data=data),
    }


NAMES = ["weight_decay/scalar", "weight_decay/layer", "weight_decay/weight", "loss_weights"]


@pytest.mark.parametrize("name", NAMES)
def test_inside_the_block_the_loss_and_weight_gradients_are_the_same_without_a_graph_to_lambda(
    name,
):
    model, data = model_and_data()
    hyper = modules(model, data)[name]
    batch = whole(data.train)
    outside = loss_and_weight_grads(hyper, model, batch)
    with hyper.held_constant(model):
        inside = loss_and_weight_grads(hyper, model, batch)
        hyper.training_loss(model, batch, cross_entropy).backward()
    assert torch.equal(inside[0], outside[0])
    assert all(torch.equal(a, b) for a, b in zip(inside[1], outside[1], strict=True))
    assert all(theta.grad is None for theta in hyper.parameters())  # no graph reached λ
    assert all(theta.requires_grad for theta in hyper.parameters())  # restored on leaving
    loss = hyper.training_loss(model, batch, cross_entropy)  # outside: λ's graph again
    assert all(g is not None for g in torch.autograd.grad(loss, list(hyper.parameters())))


def test_each_block_sees_lambda_as_the_last_hyper_step_left_it():
    model, _ = model_and_data()
    hyper = weight_decay(model, "weight")
    with hyper.held_constant(model):
        first = hyper.penalty(model).detach()
    with torch.no_grad():
        for theta in hyper.parameters():
            theta.add_(0.5)  # what an outer-optimiser step does
    with hyper.held_constant(model):
        second = hyper.penalty(model).detach()
    assert torch.equal(second, hyper.penalty(model).detach())
    assert not torch.equal(first, second)


def test_inside_the_block_another_models_penalty_is_its_own():
    model, _ = model_and_data()
    other = MLP((5,), 3, [4]).double()
    hyper = weight_decay(model, "weight")
    with torch.no_grad():
        expected = sum(float((c * w.square()).sum()) for c, w in hyper.pairs(other))
        with hyper.held_constant(model):
            assert float(hyper.penalty(other)) == pytest.approx(expected, rel=1e-12)
            assert float(hyper.penalty(other)) != pytest.approx(float(hyper.penalty(model)))


def test_the_runners_inner_phase_trains_the_weights_bit_for_bit_as_single_steps():
    """``inner_phase`` (λ computed once, no graph) against the same steps with λ's graph rebuilt
    at every step, from two identical builds of the default experiment (per-weight softplus)."""
    cfg = run_config(*tiny("inner_steps=7", "dtype=float64", "hyper.init_noise=1.0"))
    held, single = build_experiment(cfg), build_experiment(cfg)
    inner_phase(held, 7)
    for _ in range(7):
        inner_step(single)
    pairs = zip(held.model.parameters(), single.model.parameters(), strict=True)
    assert all(torch.equal(a, b) for a, b in pairs)
    assert torch.equal(held.hyper.constrained_values(), single.hyper.constrained_values())
