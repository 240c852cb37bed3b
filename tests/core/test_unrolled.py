"""Unrolled differentiation: the differentiable updates against ``torch.optim``'s own steps, and
the unrolled hypergradient against central differences of the actually unrolled training, for
every hyperparameter module (float64, tiny models)."""

from __future__ import annotations

import pytest
import torch

from hpo_cli.core.methods import HyperLosses
from hpo_cli.core.unrolled import Unrolled, state_of, unroll, unrolled_hypergradient, update_for
from hpo_cli.core.unrolled.unroll import evaluate_at
from hpo_cli.data import Batch, Split, Splits
from hpo_cli.data.tasks import cross_entropy
from hpo_cli.hyper import AugmentNet, Distill, Dropout, LossWeights, WeightDecay
from hpo_cli.models import MLP

DT = torch.float64

OPTIMIZERS = {
    "sgd": lambda p: torch.optim.SGD(p, lr=0.1),
    "sgd_momentum": lambda p: torch.optim.SGD(
        p, lr=0.05, momentum=0.9, dampening=0.1, weight_decay=0.01
    ),
    "sgd_nesterov": lambda p: torch.optim.SGD(
        p, lr=0.05, momentum=0.8, nesterov=True, weight_decay=0.02
    ),
    "adam": lambda p: torch.optim.Adam(p, lr=0.01, betas=(0.8, 0.95), weight_decay=0.01),
    "adam_amsgrad": lambda p: torch.optim.Adam(p, lr=0.01, amsgrad=True),
    "adamw": lambda p: torch.optim.AdamW(p, lr=0.01, weight_decay=0.1),
    "rmsprop": lambda p: torch.optim.RMSprop(p, lr=0.01, alpha=0.9, weight_decay=0.01),
    "rmsprop_momentum_centered": lambda p: torch.optim.RMSprop(
        p, lr=0.01, momentum=0.7, centered=True
    ),
}


def objective(params: list[torch.Tensor]) -> torch.Tensor:
    """A non-quadratic function with gradients of different scales per entry."""
    a, b = params
    return (a.sin() * torch.arange(1.0, 7.0, dtype=DT).reshape(2, 3)).sum() + (b**4).sum()


@pytest.mark.parametrize("name", sorted(OPTIMIZERS))
def test_updates_match_torch_optim(name):
    """Five steps of torch.optim and of the differentiable update on the same gradients agree to
    1e-12, weights and state; the update starts from the optimiser's state after two steps."""
    gen = torch.Generator().manual_seed(1)
    params = [
        torch.randn(2, 3, generator=gen, dtype=DT).requires_grad_(),
        torch.randn(4, generator=gen, dtype=DT).requires_grad_(),
    ]
    optimizer = OPTIMIZERS[name](params)

    def torch_step():
        optimizer.zero_grad()
        objective(params).backward()
        optimizer.step()

    for _ in range(2):
        torch_step()
    update = update_for(optimizer)
    ours = [p.detach().clone() for p in params]
    state = state_of(optimizer, update, params)
    for _ in range(5):
        torch_step()
        weights = [w.requires_grad_() for w in ours]
        grads = torch.autograd.grad(objective(weights), weights)
        ours, state = update([w.detach() for w in weights], grads, state)
        for mine, theirs in zip(ours, params, strict=True):
            torch.testing.assert_close(mine, theirs.detach(), rtol=0, atol=1e-12)
    expected = state_of(optimizer, update, params)
    if "step" in optimizer.state[params[0]]:  # SGD keeps no step count
        assert state["step"] == expected["step"] == 7
    for key in expected:
        if key != "step":
            for mine, theirs in zip(state[key], expected[key], strict=True):
                torch.testing.assert_close(mine, theirs, rtol=0, atol=1e-12)


def test_fresh_optimizer_state_is_the_initial_state():
    params = [torch.zeros(3, dtype=DT, requires_grad=True)]
    optimizer = torch.optim.Adam(params)
    update = update_for(optimizer)
    state = state_of(optimizer, update, params)
    assert state["step"] == 0 and float(state["exp_avg"][0].abs().sum()) == 0


def test_unsupported_optimizer_is_a_clear_error():
    with pytest.raises(ValueError, match="LBFGS"):
        update_for(torch.optim.LBFGS([torch.zeros(2, requires_grad=True)]))


# ---------------------------------------------------------------- hypergradient vs differences
CLASSES = 3


def make_data(seed: int = 0) -> Splits:
    gen = torch.Generator().manual_seed(seed)
    teacher = torch.randn(4, CLASSES, generator=gen, dtype=DT)

    def split(count: int) -> Split:
        x = torch.randn(count, 4, generator=gen, dtype=DT)
        return Split(x, (x @ teacher).argmax(dim=1))

    return Splits(split(12), split(10), split(4), "classification", CLASSES, (4,))


HYPER = {
    "weight_decay": lambda model, data: WeightDecay(model, "layer", init=0.05, data=data),
    "loss_weights": lambda model, data: LossWeights(model, data=data),
    "augment_net": lambda model, data: AugmentNet(model, width=3, init_scale=0.5, data=data),
    "distill": lambda model, data: Distill(model, learn_labels=True, weight_decay=0.01, data=data),
    "dropout": lambda model, data: Dropout(model, init=0.2, temperature=0.5, data=data),
}


def problem(name: str, optimizer: str):
    data = make_data()
    torch.manual_seed(0)
    model = MLP((4,), CLASSES, hidden_sizes=[5], activation="tanh").to(DT)
    hyper = HYPER[name](model, data)
    gen = torch.Generator().manual_seed(3)
    with torch.no_grad():
        for p in hyper.parameters():
            p.add_(0.3 * torch.randn(p.shape, generator=gen, dtype=DT))
    inner = OPTIMIZERS[optimizer](model.parameters())
    train = Batch(data.train.inputs, data.train.targets, torch.arange(len(data.train)))
    batches = [Batch(train.inputs[i::2], train.targets[i::2], train.index[i::2]) for i in (0, 1)]
    for step in range(3):  # a non-trivial optimiser state
        inner.zero_grad()
        hyper.training_loss(model, batches[step % 2], cross_entropy).backward()
        inner.step()
    val = Batch(data.val.inputs, data.val.targets, torch.arange(len(data.val)))

    def training_loss(k: int) -> torch.Tensor:
        if k == 0:
            torch.manual_seed(11)  # dropout's noise: the same draws for every evaluation
        return hyper.training_loss(model, batches[k % 2], cross_entropy)

    def validation_loss() -> torch.Tensor:
        return hyper.validation_loss(model, val, cross_entropy)

    return model, hyper, inner, training_loss, validation_loss


@pytest.mark.parametrize(
    ("name", "optimizer"),
    [
        ("weight_decay", "adam"),
        ("weight_decay", "sgd_nesterov"),
        ("loss_weights", "rmsprop_momentum_centered"),
        ("augment_net", "adam_amsgrad"),
        ("distill", "sgd_momentum"),
        ("dropout", "adamw"),
    ],
)
def test_unrolled_hypergradient_matches_finite_differences(name, optimizer):
    """dL_v(w_K)/dλ along a random direction equals the central difference of the validation loss
    after K steps of the real (non-differentiable) training, from the same weights and state."""
    model, hyper, inner, training_loss, validation_loss = problem(name, optimizer)
    hparams = list(hyper.parameters())
    update = update_for(inner)
    steps = 4
    grads, _ = unrolled_hypergradient(
        model,
        hparams,
        update,
        state_of(inner, update, list(model.parameters())),
        training_loss,
        validation_loss,
        steps,
    )
    gen = torch.Generator().manual_seed(5)
    direction = [torch.randn(h.shape, generator=gen, dtype=DT) for h in hparams]
    predicted = sum(float((g * d).sum()) for g, d in zip(grads, direction, strict=True))

    def val_after(shift: float) -> float:
        saved = [h.detach().clone() for h in hparams]
        with torch.no_grad():
            for h, d in zip(hparams, direction, strict=True):
                h.add_(shift * d)
        state = state_of(inner, update, list(model.parameters()))
        weights, _ = unroll(model, update, state, training_loss, steps, create_graph=False)
        with torch.no_grad():
            value = float(evaluate_at(model, weights, validation_loss))
            for h, s in zip(hparams, saved, strict=True):
                h.copy_(s)
        return value

    eps = 1e-5
    difference = (val_after(eps) - val_after(-eps)) / (2 * eps)
    assert abs(predicted) > 1e-6
    assert predicted == pytest.approx(difference, rel=1e-6, abs=1e-9)


def test_checkpointing_gives_the_same_hypergradient_and_leaves_the_run_alone():
    model, hyper, inner, training_loss, validation_loss = problem("dropout", "adam")
    weights = [p.detach().clone() for p in model.parameters()]
    optimizer_state = {k: v.clone() for k, v in inner.state[next(model.parameters())].items()}
    results = []
    for checkpoint in (False, True):
        solver = Unrolled(steps=3, gradient_checkpointing=checkpoint)
        losses = HyperLosses(lambda: training_loss(0), validation_loss, training_loss)
        result, state = solver.hypergradient(
            model, list(hyper.parameters()), inner, losses, solver.init_state()
        )
        assert state is None  # unrolling keeps no state between hyper-steps
        assert result.failure is None and result.hvps == 3
        results.append(result.grads)
    for plain, recomputed in zip(*results, strict=True):
        torch.testing.assert_close(plain, recomputed, rtol=1e-12, atol=1e-14)
    for before, after in zip(weights, model.parameters(), strict=True):
        assert torch.equal(before, after)
    for key, value in inner.state[next(model.parameters())].items():
        assert torch.equal(value, optimizer_state[key])


def test_unrolled_solver_rejects_bad_settings():
    with pytest.raises(ValueError, match="steps"):
        Unrolled(steps=-1)
    with pytest.raises(ValueError, match="inner"):
        Unrolled(inner="lbfgs")
