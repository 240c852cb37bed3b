"""The dropout module: its rates stay in (0, 1) and only training sees dropout, its concrete
mask approaches Bernoulli dropout at low temperature, and it stays accurate in float32 as the rate
nears one (the mask is computed from θ itself). Its hypergradient against finite differences is
in test_modules.py with the other modules'."""

from __future__ import annotations

import pytest
import torch

from hpo_cli.data import Batch
from hpo_cli.data.tasks import cross_entropy
from hpo_cli.hyper import Dropout
from hpo_cli.models import MLP
from tests.hyper.test_modules import CLASSES, DT, make_data, whole


def test_dropout_rates_stay_in_the_unit_interval_and_only_training_sees_dropout():
    data = make_data((3,))
    torch.manual_seed(0)
    model = MLP((3,), CLASSES, hidden_sizes=[4, 5], activation="elu").to(DT)
    hyper = Dropout(model, granularity="unit", init=0.2, data=data)
    assert [p.shape for p in hyper.parameters()] == [(4,), (5,)]
    torch.testing.assert_close(hyper.constrained_values(), torch.full((9,), 0.2, dtype=DT))
    with torch.no_grad():
        for p in hyper.parameters():
            p.copy_(torch.linspace(-30.0, 30.0, p.numel(), dtype=DT))
    rates = hyper.constrained_values()
    assert bool(((rates > 0) & (rates < 1)).all())

    val = whole(data.val)
    clean = model(val.inputs)
    torch.manual_seed(1)
    noisy = hyper.training_loss(model, whole(data.train), cross_entropy)
    plain = cross_entropy(model(data.train.inputs), data.train.targets).mean()
    assert abs(float(noisy.detach() - plain.detach())) > 1e-3, "training loss must see dropout"
    assert torch.equal(model(val.inputs), clean), "plain forward passes must not"
    torch.testing.assert_close(
        hyper.validation_loss(model, val, cross_entropy),
        cross_entropy(clean, val.targets).mean(),
    )
    assert Dropout(model, granularity="layer", data=data).constrained_values().shape == (2,)


def test_concrete_mask_approaches_bernoulli_dropout_at_low_temperature():
    """At t → 0 the relaxed mask is 0 with probability p and 1/(1 − p) otherwise (mean 1)."""
    torch.manual_seed(0)
    model = MLP((2,), 2, hidden_sizes=[3]).to(DT)
    hyper = Dropout(model, init=0.3, temperature=1e-4, data=None)
    torch.manual_seed(2)
    mask = hyper.mask(torch.logit(torch.tensor(0.3, dtype=DT)), torch.Size([200_000, 1]))
    dropped = (mask < 1e-3).to(DT).mean()
    kept = ((mask - 1 / 0.7).abs() < 1e-3).to(DT).mean()
    assert abs(float(dropped) - 0.3) < 0.005 and float(dropped + kept) > 0.998
    assert abs(float(mask.mean()) - 1.0) < 0.01


@pytest.mark.parametrize("theta", [15.0, 20.0])
def test_dropout_stays_accurate_in_float32_as_the_rate_nears_one(theta, monkeypatch):
    """At θ = 15, 1 − sigmoid(θ) in float32 is 17 % wrong; at θ = 20 it is 0 and the mask
    (1 − z)/(1 − p) through p would be NaN. From θ itself, L_t and dL_t/dθ in float32 agree with
    the same computation in float64 (same weights, data and uniform draws) to float32 accuracy."""
    rand = torch.rand
    monkeypatch.setattr(  # both precisions draw the same (float32) uniforms
        torch, "rand", lambda *shape, dtype, device: rand(*shape, device=device).to(dtype)
    )
    data = make_data((3,), train=64)

    def loss_and_grad(dtype: torch.dtype) -> tuple[torch.Tensor, torch.Tensor]:
        torch.manual_seed(0)
        model = MLP((3,), CLASSES, hidden_sizes=[8], activation="tanh")
        model = model.to(torch.float32).to(dtype)  # float32 weights in both
        hyper = Dropout(model, init=0.5, temperature=0.5, data=data)
        with torch.no_grad():
            hyper.raw[0].fill_(theta)
        batch = whole(data.train)
        batch = Batch(batch.inputs.to(torch.float32).to(dtype), batch.targets, batch.index)
        torch.manual_seed(5)
        loss = hyper.training_loss(model, batch, cross_entropy)
        (grad,) = torch.autograd.grad(loss, list(hyper.parameters()))
        return loss.to(DT), grad.to(DT)

    loss, grad = loss_and_grad(torch.float32)
    reference_loss, reference_grad = loss_and_grad(DT)
    assert bool(torch.isfinite(loss)) and bool(torch.isfinite(grad).all())
    assert float(reference_grad.norm()) > 1e-6  # a gradient float32 can carry
    torch.testing.assert_close(loss, reference_loss, rtol=1e-5, atol=0.0)
    torch.testing.assert_close(grad, reference_grad, rtol=1e-4, atol=1e-5 * reference_grad.norm())
