"""The hyperparameter modules of the paper: augment_net, distill, loss_weights, dropout.

Hypergradients (exact solver) are checked in float64 against central differences of the
validation loss through an inner problem re-solved by Newton's method with the dense Hessian
(as in test_core_mlp.py), or against a closed form (distillation into ridge regression). The
inner problems get a fixed extra L2 term ``RIDGE·‖w‖²`` so that their minimiser is unique.
"""

from __future__ import annotations

from collections.abc import Callable

import pandas as pd
import pytest
import torch
from hydra import compose, initialize_config_module
from torch import nn
from torch.func import functional_call

from hpo_cli import Exact, Identity, hypergradient
from hpo_cli.data import Batch, Split, Splits
from hpo_cli.data.tasks import cross_entropy
from hpo_cli.hyper import AugmentNet, Distill, Dropout, HyperModule, LossWeights, WeightDecay
from hpo_cli.models import MLP
from hpo_cli.runner.cli.command import train
from hpo_cli.runner.config.schemas import register_configs
from tests.support.composed import run_config
from tests.support.tiny_runs import tiny

DT = torch.float64
RIDGE = 1e-2
CLASSES = 3


@pytest.fixture(autouse=True, scope="module")
def single_thread():
    """Tiny dense Hessians gain nothing from threads; restore the setting afterwards."""
    threads = torch.get_num_threads()
    torch.set_num_threads(1)
    yield
    torch.set_num_threads(threads)


def make_data(input_shape: tuple[int, ...], train: int = 12, val: int = 10, seed: int = 0):
    """A 3-class problem with labels from a random linear teacher plus noise."""
    gen = torch.Generator().manual_seed(seed)
    features = torch.Size(input_shape).numel()
    teacher = torch.randn(features, CLASSES, generator=gen, dtype=DT)

    def split(count: int) -> Split:
        x = torch.randn(count, *input_shape, generator=gen, dtype=DT)
        noisy = x.reshape(count, -1) @ teacher + torch.randn(
            count, CLASSES, generator=gen, dtype=DT
        )
        return Split(x, noisy.argmax(dim=1))

    return Splits(split(train), split(val), split(4), "classification", CLASSES, input_shape)


def whole(split: Split) -> Batch:
    return Batch(split.inputs, split.targets, torch.arange(len(split)))


def linear_model(input_shape: tuple[int, ...]) -> nn.Module:
    torch.manual_seed(0)
    return nn.Sequential(nn.Flatten(), nn.Linear(torch.Size(input_shape).numel(), CLASSES)).to(DT)


def randomise(module: nn.Module, scale: float, seed: int) -> None:
    """Move every hyperparameter off its symmetric start so no derivative vanishes by accident."""
    gen = torch.Generator().manual_seed(seed)
    with torch.no_grad():
        for p in module.parameters():
            p.add_(scale * torch.randn(p.shape, generator=gen, dtype=p.dtype))


class InnerProblem:
    """L_t(w, λ) = hyper.training_loss + RIDGE·‖w‖² and L_v(w, λ) = hyper.validation_loss as
    functions of the model's weights flattened into one vector w (``torch.func.functional_call``),
    so that Newton's method, the IFT and finite differences all see the same functions.

    ``noise_seed``: reseed torch's generator before each training loss (dropout's noise), so
    L_t is one deterministic function of (w, λ).
    """

    def __init__(
        self,
        model: nn.Module,
        hyper: HyperModule,
        data: Splits,
        criterion: Callable = cross_entropy,
        noise_seed: int | None = None,
    ) -> None:
        self.model, self.hyper, self.criterion = model, hyper, criterion
        self.train_batch, self.val_batch = whole(data.train), whole(data.val)
        self.noise_seed = noise_seed
        self.names = [name for name, _ in model.named_parameters()]
        self.shapes = [p.shape for p in model.parameters()]
        self.start = 0.1 * torch.randn(
            sum(s.numel() for s in self.shapes),
            generator=torch.Generator().manual_seed(3),
            dtype=DT,
        )

    def bound(self, flat: torch.Tensor) -> Callable[[torch.Tensor], torch.Tensor]:
        chunks = flat.split([s.numel() for s in self.shapes])
        params = {n: c.reshape(s) for n, c, s in zip(self.names, chunks, self.shapes, strict=True)}
        return lambda inputs: functional_call(self.model, params, (inputs,))

    def train_loss(self, flat: torch.Tensor) -> torch.Tensor:
        if self.noise_seed is not None:
            torch.manual_seed(self.noise_seed)
        data_loss = self.hyper.training_loss(self.bound(flat), self.train_batch, self.criterion)
        return data_loss + RIDGE * flat.square().sum()

    def val_loss(self, flat: torch.Tensor) -> torch.Tensor:
        return self.hyper.validation_loss(self.bound(flat), self.val_batch, self.criterion)

    def solve(self, start: torch.Tensor, grad_tol: float = 1e-12, max_steps: int = 60):
        """Damped Newton (shifted Hessian where not positive definite, Armijo backtracking)."""
        w = start.clone()
        for _ in range(max_steps):
            leaf = w.clone().requires_grad_(True)
            (grad,) = torch.autograd.grad(self.train_loss(leaf), [leaf])
            grad = grad.detach()
            if float(grad.norm()) < grad_tol:
                return w
            hess = torch.autograd.functional.hessian(self.train_loss, w).detach()
            smallest = float(torch.linalg.eigvalsh(hess)[0])
            if smallest < 1e-6:
                hess = hess + (1e-3 - smallest) * torch.eye(len(w), dtype=DT)
            step = torch.linalg.solve(hess, grad)
            t, slope = 1.0, float(grad @ step)
            near_minimum = smallest >= 1e-6 and float(grad.norm()) < 1e-6
            with torch.no_grad():
                value = float(self.train_loss(w))
                while (
                    not near_minimum
                    and float(self.train_loss(w - t * step)) > value - 1e-4 * t * slope
                ):
                    t /= 2
            w = w - t * step
        raise AssertionError(f"Newton did not reach ‖g‖ < {grad_tol:g}")

    def hypergradient(self, w: torch.Tensor, solver=None):
        leaf = w.clone().requires_grad_(True)
        return hypergradient(
            self.train_loss(leaf),
            self.val_loss(leaf),
            [leaf],
            list(self.hyper.parameters()),
            solver or Exact(),
        )

    def directional_difference(self, w_star: torch.Tensor, direction, step: float = 1e-4) -> float:
        """(L_v(w*(λ + h v)) − L_v(w*(λ − h v))) / 2h, re-solving the inner problem each time."""
        values = []
        for sign in (1.0, -1.0):
            with torch.no_grad():
                for p, v in zip(self.hyper.parameters(), direction, strict=True):
                    p.add_(sign * step * v)
            w = self.solve(w_star)
            with torch.no_grad():
                values.append(float(self.val_loss(w)))
            with torch.no_grad():
                for p, v in zip(self.hyper.parameters(), direction, strict=True):
                    p.sub_(sign * step * v)
        return (values[0] - values[1]) / (2 * step)


def check_against_finite_differences(problem: InnerProblem, directions: int, rtol: float) -> None:
    """⟨dL_v/dλ, v⟩ from the IFT against central differences along random unit directions v."""
    w_star = problem.solve(problem.start)
    grads = problem.hypergradient(w_star).grads
    gen = torch.Generator().manual_seed(7)
    for _ in range(directions):
        direction = [torch.randn(g.shape, generator=gen, dtype=DT) for g in grads]
        length = torch.cat([v.reshape(-1) for v in direction]).norm()
        direction = [v / length for v in direction]
        predicted = float(sum((g * v).sum() for g, v in zip(grads, direction, strict=True)))
        measured = problem.directional_difference(w_star, direction)
        assert abs(predicted) > 1e-6, "a vanishing derivative would make the check vacuous"
        assert abs(predicted - measured) <= rtol * abs(measured), (predicted, measured)


# ---------------------------------------------------------------- hypergradients vs FD
@pytest.mark.parametrize("input_shape", [(5,), (1, 4, 4)], ids=["flat", "image"])
def test_augment_net_hypergradient_matches_finite_differences(input_shape):
    data = make_data(input_shape)
    model = linear_model(input_shape)
    hyper = AugmentNet(model, width=2, init_scale=1.0, data=data)
    randomise(hyper, 0.1, seed=1)
    check_against_finite_differences(InnerProblem(model, hyper, data), directions=3, rtol=1e-6)


def test_loss_weights_hypergradient_matches_finite_differences():
    data = make_data((4,))
    model = linear_model((4,))
    hyper = LossWeights(model, data=data)
    randomise(hyper, 0.5, seed=2)
    check_against_finite_differences(InnerProblem(model, hyper, data), directions=3, rtol=1e-6)


@pytest.mark.parametrize("granularity", ["unit", "layer"])
def test_dropout_hypergradient_matches_finite_differences(granularity):
    data = make_data((3,), train=16)
    torch.manual_seed(0)
    model = MLP((3,), CLASSES, hidden_sizes=[4], activation="tanh").to(DT)
    hyper = Dropout(model, granularity=granularity, init=0.5, temperature=0.5, data=data)
    randomise(hyper, 0.5, seed=3)
    problem = InnerProblem(model, hyper, data, noise_seed=11)
    check_against_finite_differences(problem, directions=2, rtol=1e-6)


def squared_error_to_labels(outputs: torch.Tensor, targets: torch.Tensor) -> torch.Tensor:
    """Σ_k (z_k − y_k)² per example, y one-hot for class indices or the given soft labels."""
    if targets.dim() == 1:
        targets = nn.functional.one_hot(targets, outputs.shape[-1]).to(outputs.dtype)
    return (outputs - targets).square().sum(dim=-1)


@pytest.mark.parametrize("learn_labels", [False, True])
def test_distill_hypergradient_matches_ridge_closed_form(learn_labels):
    """A linear model with squared error trained on m synthetic points (X̃, Q) is ridge regression:
    with A = [X̃, 1], (AᵀA/m + cI) Θ = AᵀQ/m. Autograd through that solve gives dL_v/d(X̃, Z)."""
    c = 0.1
    data = make_data((3,), train=15, val=12)
    model = nn.Linear(3, CLASSES).to(DT)
    torch.manual_seed(4)
    hyper = Distill(model, images_per_class=2, learn_labels=learn_labels, weight_decay=c, data=data)
    randomise(hyper, 0.3, seed=4)

    def closed_form(images: torch.Tensor, targets: torch.Tensor) -> torch.Tensor:
        design = torch.cat([images, torch.ones(len(images), 1, dtype=DT)], dim=1)
        gram = design.T @ design / len(images) + c * torch.eye(design.shape[1], dtype=DT)
        return torch.linalg.solve(gram, design.T @ targets / len(images))  # (4, k): [Wᵀ; b]

    def targets() -> torch.Tensor:
        soft = hyper.targets()
        return soft if learn_labels else nn.functional.one_hot(soft, CLASSES).to(DT)

    theta = closed_form(hyper.images, targets())
    val_outputs = data.val.inputs @ theta[:3] + theta[3]
    val_loss = squared_error_to_labels(val_outputs, data.val.targets).mean()
    expected = torch.autograd.grad(val_loss, list(hyper.parameters()))

    with torch.no_grad():
        model.weight.copy_(theta[:3].T)
        model.bias.copy_(theta[3])
    ignored = Batch(data.train.inputs[:1], data.train.targets[:1], torch.arange(1))
    result = hypergradient(
        hyper.training_loss(model, ignored, squared_error_to_labels),
        hyper.validation_loss(model, whole(data.val), squared_error_to_labels),
        list(model.parameters()),
        list(hyper.parameters()),
        Exact(),
    )
    assert len(result.grads) == (2 if learn_labels else 1)
    for actual, reference in zip(result.grads, expected, strict=True):
        assert float(reference.norm()) > 1e-3
        torch.testing.assert_close(actual, reference, rtol=1e-9, atol=1e-12)


# ---------------------------------------------------------------- the direct term
def built_modules():
    """Every module on a tiny MLP (dropout needs hidden layers), with its data."""
    data = make_data((1, 3, 3))
    torch.manual_seed(0)
    model = MLP((1, 3, 3), CLASSES, hidden_sizes=[4], activation="tanh").to(DT)
    return (
        model,
        data,
        [
            WeightDecay(model, data=None),
            AugmentNet(model, width=2, init_scale=1.0, data=data),
            Distill(model, images_per_class=1, learn_labels=True, data=data),
            LossWeights(model, data=data),
            Dropout(model, data=data),
        ],
    )


def test_modules_that_leave_the_validation_loss_alone_get_exactly_zero_direct_term():
    """Identity(scale=0) makes the IFT term vanish: the hypergradient is then ∂L_v/∂λ alone."""
    model, data, modules = built_modules()
    for hyper in modules:
        randomise(hyper, 0.3, seed=5)
        train_loss = hyper.training_loss(model, whole(data.train), cross_entropy)
        val_loss = hyper.validation_loss(model, whole(data.val), cross_entropy)
        params, hparams = list(model.parameters()), list(hyper.parameters())
        direct = hypergradient(
            train_loss, val_loss, params, hparams, Identity(scale=0.0), retain_val_graph=True
        ).grads
        assert all(bool((g == 0).all()) for g in direct), type(hyper).__name__
        one_step = hypergradient(train_loss, val_loss, params, hparams, Identity()).grads
        assert sum(float(g.norm()) for g in one_step) > 0, type(hyper).__name__


class LogitScale(HyperModule):
    """A test module whose λ enters both losses: outputs scaled by e^s in training and
    validation (a learned temperature), so ∂L_v/∂s ≠ 0."""

    def __init__(self) -> None:
        super().__init__()
        self.log_scale = nn.Parameter(torch.tensor(0.3, dtype=DT))

    def _scaled(self, model):
        return lambda inputs: model(inputs) * self.log_scale.exp()

    def training_loss(self, model, batch, criterion):
        return super().training_loss(self._scaled(model), batch, criterion)

    def validation_loss(self, model, batch, criterion):
        return super().validation_loss(self._scaled(model), batch, criterion)


def test_a_module_entering_the_validation_loss_gets_its_direct_term():
    data = make_data((4,))
    model = linear_model((4,))
    problem = InnerProblem(model, LogitScale(), data)
    w_star = problem.solve(problem.start)
    leaf = w_star.clone().requires_grad_(True)
    (direct,) = torch.autograd.grad(problem.val_loss(leaf), [problem.hyper.log_scale])
    (from_ift,) = problem.hypergradient(w_star, Identity(scale=0.0)).grads
    assert float(direct.abs()) > 1e-4
    torch.testing.assert_close(from_ift, direct, rtol=1e-12, atol=0)
    check_against_finite_differences(problem, directions=1, rtol=1e-6)


# ---------------------------------------------------------------- constraints and behaviour
def test_loss_weights_are_positive_with_mean_one_and_follow_batch_index():
    data = make_data((4,), train=10)
    model = linear_model((4,))
    hyper = LossWeights(model, data=data)
    assert torch.equal(hyper.weights(), torch.ones(10, dtype=DT))
    with torch.no_grad():
        hyper.raw.copy_(torch.linspace(-20.0, 3.0, 10, dtype=DT))
    weights = hyper.weights()
    assert bool((weights > 0).all())
    torch.testing.assert_close(weights.mean(), torch.tensor(1.0, dtype=DT))
    torch.testing.assert_close(hyper.constrained_values(), weights.detach())

    index = torch.tensor([7, 2, 9])
    batch = Batch(data.train.inputs[index], data.train.targets[index], index)
    losses = cross_entropy(model(batch.inputs), batch.targets)
    expected = (weights[7] * losses[0] + weights[2] * losses[1] + weights[9] * losses[2]) / 3
    torch.testing.assert_close(hyper.training_loss(model, batch, cross_entropy), expected)
    shuffled = Batch(batch.inputs, batch.targets, torch.tensor([2, 9, 7]))
    assert not torch.allclose(hyper.training_loss(model, shuffled, cross_entropy), expected)
    val = whole(data.val)
    torch.testing.assert_close(
        hyper.validation_loss(model, val, cross_entropy),
        cross_entropy(model(val.inputs), val.targets).mean(),
    )


def test_augment_net_starts_near_identity_and_only_training_sees_it():
    for shape in [(6,), (2, 5, 7)]:
        data = make_data(shape)
        model = linear_model(shape)
        identity = AugmentNet(model, init_scale=0.0, data=data)
        x = data.train.inputs
        assert torch.equal(identity.augment(x), x)
        hyper = AugmentNet(model, data=data)
        augmented = hyper.augment(x).detach()
        assert augmented.shape == x.shape
        assert 0 < float((augmented - x).abs().max()) < 0.1
        randomise(hyper, 0.5, seed=6)
        train, val = whole(data.train), whole(data.val)
        torch.testing.assert_close(
            hyper.training_loss(model, train, cross_entropy),
            cross_entropy(model(hyper.augment(x)), train.targets).mean(),
        )
        assert float((hyper.augment(x).detach() - x).abs().max()) > 0.1
        torch.testing.assert_close(
            hyper.validation_loss(model, val, cross_entropy),
            cross_entropy(model(val.inputs), val.targets).mean(),
        )


def test_distill_trains_on_synthetic_data_only_and_starts_from_real_examples():
    data = make_data((4,), train=30)
    model = linear_model((4,))
    torch.manual_seed(0)
    hyper = Distill(model, images_per_class=3, learn_labels=True, data=data)
    labels = hyper.labels.tolist()
    assert labels == [0, 0, 0, 1, 1, 1, 2, 2, 2]
    for image, label in zip(hyper.images.detach(), labels, strict=True):
        matches = (data.train.inputs == image).all(dim=1).nonzero().reshape(-1)
        assert len(matches) == 1 and int(data.train.targets[matches[0]]) == label
    assert len({tuple(image.tolist()) for image in hyper.images.detach()}) == 9
    soft = hyper.targets()
    torch.testing.assert_close(soft.sum(dim=1), torch.ones(9, dtype=DT))
    assert torch.equal(soft.argmax(dim=1), hyper.labels)
    first = hyper.training_loss(model, whole(data.train), cross_entropy)
    other = Batch(data.val.inputs, data.val.targets, torch.arange(len(data.val)))
    assert torch.equal(first, hyper.training_loss(model, other, cross_entropy))
    decay = 1e-3 * sum(w.square().sum() for w in model.parameters())  # the default c = 1e-3
    expected = cross_entropy(model(hyper.images), soft).mean() + decay
    torch.testing.assert_close(first, expected)
    noise = Distill(model, images_per_class=2, init="noise", data=data)
    assert noise.images.shape == (6, 4) and noise.targets().tolist() == [0, 0, 1, 1, 2, 2]


@pytest.mark.parametrize(
    ("build", "key"),
    [
        (lambda m, d: Distill(m, images_per_class=99, data=d), "hyper.images_per_class=99"),
        (lambda m, d: Distill(m, init="zeros", data=d), "hyper.init='zeros'"),
        (lambda m, d: Dropout(m, init=1.5, data=d), "hyper.init=1.5"),
        (lambda m, d: Dropout(nn.Linear(4, 3), data=d), "hyper=dropout"),
        (lambda m, d: AugmentNet(m, width=0, data=d), "hyper.width=0"),
    ],
)
def test_bad_arguments_fail_in_one_line_naming_the_key(build, key):
    data = make_data((4,))
    with pytest.raises(ValueError, match=key.replace("(", r"\(")) as error:
        build(linear_model((4,)), data)
    assert "\n" not in str(error.value)


# ---------------------------------------------------------------- end to end with hpo-run
TINY = tiny("outer_steps=3", "hyper_optimizer.lr=1e-3")


@pytest.mark.parametrize("name", ["augment_net", "distill", "loss_weights", "dropout"])
def test_each_module_runs_end_to_end(tmp_path, name):
    cfg = run_config(*TINY, f"hyper={name}")
    progress = train(cfg, tmp_path)
    table = pd.read_csv(tmp_path / "metrics.csv")
    assert progress.outer_step == 3 and len(table) == 4
    assert table["hypergrad_norm"].iloc[1:].gt(0).all()
    assert table[["train_loss", "val_loss", "hyper_mean"]].notna().all().all()
    assert table["hyper_mean"].nunique() > 1 or table["hyper_max"].nunique() > 1


def test_distillation_from_noise_beats_chance_on_digits_with_one_image_per_class(tmp_path):
    """The network sees only 10 learned images, started from noise: all it knows of digits came
    through the hypergradient. Chance is 90% error; seeds 0-3 end at 20-42%."""
    register_configs()
    with initialize_config_module("hpo_cli.conf", version_base="1.3"):
        cfg = compose("config", overrides=["experiment=distillation", "plots=false"])
    assert cfg.hyper.images_per_class == 1 and cfg.hyper.init == "noise"
    train(cfg, tmp_path)
    errors = pd.read_csv(tmp_path / "metrics.csv")["test_error"]
    assert errors.iloc[0] > 0.8, "the noise images start at chance"
    assert errors.iloc[-1] < 0.5
