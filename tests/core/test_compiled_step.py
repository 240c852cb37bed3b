"""``JointOptimizer(compile=True)``: the inner optimiser's ``step()`` through ``torch.compile``
(:class:`hpo_cli.core.compiled.CompiledOptimizerStep`) takes the eager step, to float64 rounding,
for the optimisers hpo-run offers; optimisers that need a closure, and a gradient scaler, are
refused. The compiling test is slow (Inductor compiles C++)."""

from __future__ import annotations

import copy

import pytest
import torch
from torch import nn

from hpo_cli import JointOptimizer, Neumann
from hpo_cli.optim.hessian_free import HessianFree

DT = torch.float64


def linear_problem(seed: int = 0):
    gen = torch.Generator().manual_seed(seed)
    model = nn.Linear(5, 3).to(DT)
    with torch.no_grad():
        for p in model.parameters():
            p.copy_(torch.randn(p.shape, generator=gen, dtype=DT))
    x, y = torch.randn(16, 5, generator=gen, dtype=DT), torch.randn(16, 3, generator=gen, dtype=DT)
    decay = torch.tensor(0.1, dtype=DT, requires_grad=True)

    def loss() -> torch.Tensor:
        return (model(x) - y).square().mean() + decay * model.weight.square().sum()

    return model, decay, loss


def joint_of(model, decay, optimizer, **options) -> JointOptimizer:
    hyper_optimizer = torch.optim.SGD([decay], lr=0.1)
    return JointOptimizer(model, [decay], optimizer, hyper_optimizer, Neumann(terms=2), **options)


@pytest.mark.parametrize(
    "optimizer",
    [
        lambda params: torch.optim.LBFGS(params),
        lambda params: HessianFree(params),
    ],
    ids=["lbfgs", "hessian_free"],
)
def test_an_optimiser_that_needs_a_closure_is_refused(optimizer):
    model, decay, _ = linear_problem()
    with pytest.raises(ValueError, match="evaluates the loss inside its step"):
        joint_of(model, decay, optimizer(model.parameters()), compile=True)


def test_a_gradient_scaler_is_refused():
    model, decay, _ = linear_problem()
    optimizer = torch.optim.SGD(model.parameters(), lr=0.1)
    with pytest.raises(ValueError, match="gradient scaler"):
        joint_of(model, decay, optimizer, compile=True, grad_scaler=torch.amp.GradScaler("cpu"))


@pytest.mark.slow
@pytest.mark.parametrize(
    ("optimizer", "options"),
    [
        (torch.optim.Adam, {"lr": 0.05}),
        (torch.optim.SGD, {"lr": 0.05, "momentum": 0.9, "nesterov": True}),
        (torch.optim.RMSprop, {"lr": 0.01, "momentum": 0.5}),
    ],
)
def test_the_compiled_step_is_the_eager_step(optimizer, options):
    """20 inner steps each way; the compiled one's step counters (Adam's, RMSprop's) in float64
    so that its bias corrections are eager's (a float32 counter misses by ~1e-9 here)."""
    runs = []
    for compile in (False, True):
        model, decay, loss = linear_problem()
        joint = joint_of(model, decay, optimizer(model.parameters(), **options), compile=compile)
        losses = [joint.inner_step(loss) for _ in range(20)]
        runs.append((losses, [p.detach().clone() for p in model.parameters()]))
    (eager_losses, eager_weights), (losses, weights) = runs
    torch.testing.assert_close(torch.stack(losses), torch.stack(eager_losses), rtol=1e-12, atol=0)
    for got, want in zip(weights, eager_weights, strict=True):
        torch.testing.assert_close(got, want, rtol=1e-12, atol=0)


@pytest.mark.slow
def test_float32_step_counters_loaded_after_the_first_call_are_made_float64():
    """An eager checkpoint (Adam's counters in float32) loaded into a compiled run that has
    already stepped: the next steps are the eager ones still, to float64 rounding."""
    eager_model, eager_decay, eager_loss = linear_problem()
    eager = joint_of(eager_model, eager_decay, torch.optim.Adam(eager_model.parameters(), lr=0.05))
    model, decay, loss = linear_problem()
    joint = joint_of(model, decay, torch.optim.Adam(model.parameters(), lr=0.05), compile=True)
    for _ in range(3):
        eager.inner_step(eager_loss)
        joint.inner_step(loss)
    counters = [state["step"].dtype for state in eager.optimizer.state.values()]
    assert counters == [torch.float32, torch.float32]
    joint.optimizer.load_state_dict(copy.deepcopy(eager.optimizer.state_dict()))  # unshared
    with torch.no_grad():
        for got, want in zip(model.parameters(), eager_model.parameters(), strict=True):
            got.copy_(want)
    for _ in range(10):
        want = eager.inner_step(eager_loss)
        torch.testing.assert_close(joint.inner_step(loss), want, rtol=1e-12, atol=0)
    for got, want in zip(model.parameters(), eager_model.parameters(), strict=True):
        torch.testing.assert_close(got, want, rtol=1e-12, atol=0)
