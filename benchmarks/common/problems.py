"""The problems the benchmarks share: random data, the MLP with one weight-decay
hyperparameter per weight (pretrained towards a minimiser), ridge regression with its closed-form
hypergradient, and the checks of a hypergradient against a reference."""

from __future__ import annotations

import itertools
from collections.abc import Callable, Sequence
from dataclasses import dataclass

import torch
import torch.nn.functional as F
from torch import nn

from benchmarks.common.harness import Sizes
from hpo_cli import TrainingCurvature
from hpo_cli.core.solvers import estimate_largest_eigenvalue
from hpo_cli.core.vectors import add, flatten, norm

Vector = list[torch.Tensor]
Losses = Callable[[], tuple[torch.Tensor, torch.Tensor]]  # () -> (train loss, validation loss)
MLP_DTYPE = torch.float32
RIDGE_DTYPE = torch.float64
MNIST_SHAPE = (1, 28, 28)
CIFAR_SHAPE = (3, 32, 32)
ACTIVATIONS: dict[str, type[nn.Module]] = {"relu": nn.ReLU, "elu": nn.ELU}
WEIGHT_DECAY = 1e-3  # initial softplus(θ) of every MLP weight
CG_DAMPING = 1e-2  # μ for the damped CG rows on the (indefinite) MLP Hessian
SETUP_LANCZOS_STEPS = 100  # Lanczos steps behind the fixed Neumann step α = 1/λ̂max
PRETRAIN_LR = 1e-3


def randn(
    gen: torch.Generator, *shape: int, dtype: torch.dtype, device: torch.device
) -> torch.Tensor:
    """Normal samples drawn on the CPU (the same numbers on every device), then moved."""
    return torch.randn(*shape, generator=gen, dtype=dtype).to(device)


def randint(gen: torch.Generator, high: int, size: int, device: torch.device) -> torch.Tensor:
    return torch.randint(high, (size,), generator=gen).to(device)


def make_mlp(
    sizes: Sizes,
    activation: str,
    device: torch.device,
    seed: int,
    dtype: torch.dtype = MLP_DTYPE,
) -> nn.Sequential:
    """inputs-hidden-hidden-classes with the given activation (float32 unless told)."""
    torch.manual_seed(seed)
    widths = (sizes.inputs, sizes.hidden, sizes.hidden, sizes.classes)
    layers: list[nn.Module] = []
    for fan_in, fan_out in itertools.pairwise(widths):
        layers += [nn.Linear(fan_in, fan_out), ACTIVATIONS[activation]()]
    return nn.Sequential(*layers[:-1]).to(device=device, dtype=dtype)


def mlp_widths(sizes: Sizes) -> str:
    """The MLP's layer widths as in the tables, e.g. ``784-256-256-10``."""
    return f"{sizes.inputs}-{sizes.hidden}-{sizes.hidden}-{sizes.classes}"


@dataclass
class Batch:
    x: torch.Tensor
    y: torch.Tensor


def random_batch(
    sizes: Sizes, gen: torch.Generator, device: torch.device, dtype: torch.dtype = MLP_DTYPE
) -> Batch:
    x = randn(gen, sizes.batch, sizes.inputs, dtype=dtype, device=device)
    return Batch(x, randint(gen, sizes.classes, sizes.batch, device))


def random_images(
    batch: int, shape: tuple[int, ...], classes: int, gen: torch.Generator, device: torch.device
) -> Batch:
    """``batch`` float32 images of ``shape`` (C, H, W) with random labels."""
    x = randn(gen, batch, *shape, dtype=MLP_DTYPE, device=device)
    return Batch(x, randint(gen, classes, batch, device))


@dataclass
class MLPProblem:
    """An MLP with one weight-decay hyperparameter per weight: c = softplus(θ)."""

    model: nn.Module
    params: Vector
    hparams: Vector
    train: Batch
    val: Batch

    def data_loss(self, batch: Batch) -> torch.Tensor:
        return F.cross_entropy(self.model(batch.x), batch.y)

    def train_loss(self) -> torch.Tensor:
        """Cross-entropy on the training batch + Σ softplus(θ)·w²."""
        penalty = sum(
            (F.softplus(t) * p.square()).sum()
            for t, p in zip(self.hparams, self.params, strict=True)
        )
        return self.data_loss(self.train) + penalty

    def val_loss(self) -> torch.Tensor:
        return self.data_loss(self.val)


def make_mlp_problem(
    sizes: Sizes, activation: str, device: torch.device, dtype: torch.dtype = MLP_DTYPE
) -> MLPProblem:
    model = make_mlp(sizes, activation, device, seed=1, dtype=dtype)
    gen = torch.Generator().manual_seed(2)
    params = list(model.parameters())
    raw = torch.log(torch.expm1(torch.tensor(WEIGHT_DECAY))).item()  # softplus⁻¹
    hparams = [torch.full_like(p, raw).requires_grad_() for p in params]
    train = random_batch(sizes, gen, device, dtype)
    return MLPProblem(model, params, hparams, train, random_batch(sizes, gen, device, dtype))


def pretrain(problem: MLPProblem, steps: int) -> float:
    """Adam on the penalised training loss, so that w is near a minimiser (as the IFT assumes);
    returns the final ‖∂L_t/∂w‖."""
    optimizer = torch.optim.Adam(problem.params, lr=PRETRAIN_LR)
    for _ in range(steps):
        optimizer.zero_grad(set_to_none=True)
        gradients = torch.autograd.grad(problem.train_loss(), problem.params)
        for param, gradient in zip(problem.params, gradients, strict=True):
            param.grad = gradient
        optimizer.step()
    for param in problem.params:
        param.grad = None
    return float(norm(torch.autograd.grad(problem.train_loss(), problem.params)))


def random_like(params: Sequence[torch.Tensor], seed: int) -> Vector:
    gen = torch.Generator().manual_seed(seed)
    return [randn(gen, *p.shape, dtype=p.dtype, device=p.device) for p in params]


def relative_difference(xs: Sequence[torch.Tensor], ys: Sequence[torch.Tensor]) -> float:
    """‖x − y‖ / ‖y‖ of two vectors given as tensor lists."""
    return float(norm(add(xs, ys, alpha=-1.0)) / norm(ys))


def accuracy(grads: Sequence[torch.Tensor], reference: torch.Tensor) -> dict[str, float]:
    """Relative error ‖g − g*‖/‖g*‖ and cosine ⟨g, g*⟩/(‖g‖‖g*‖) of a hypergradient (a tensor
    list) against the flat reference g*."""
    flat = flatten([g.detach() for g in grads])
    error = torch.linalg.vector_norm(flat - reference) / torch.linalg.vector_norm(reference)
    return {
        "rel_error": float(error),
        "cosine": float(F.cosine_similarity(flat, reference, dim=0)),
    }


def fixed_alpha(loss: torch.Tensor, params: Vector) -> float:
    """α = 1/λ̂max from a long Lanczos run at setup time (a step tuned once, outside)."""
    curvature = TrainingCurvature(loss, params)
    start = random_like(params, seed=7)
    largest, _ = estimate_largest_eigenvalue(curvature.hvp, start, SETUP_LANCZOS_STEPS)
    return 1.0 / largest


def ridge_hessian(x: torch.Tensor, c: torch.Tensor) -> torch.Tensor:
    """H = 2XᵀX/n + 2 diag(c)."""
    return 2.0 * x.T @ x / x.shape[0] + 2.0 * torch.diag(c)


@dataclass
class RidgeProblem:
    """(1/n)‖Xw − y‖² + Σ exp(θ_i) w_i² at w = w*(θ), validated by (1/m)‖X_v w − y_v‖²."""

    x_train: torch.Tensor
    y_train: torch.Tensor
    x_val: torch.Tensor
    y_val: torch.Tensor
    theta: torch.Tensor
    weights: torch.Tensor

    def losses(self) -> tuple[torch.Tensor, torch.Tensor]:
        train = (self.x_train @ self.weights - self.y_train).square().mean()
        penalty = (self.theta.exp() * self.weights.square()).sum()
        val = (self.x_val @ self.weights - self.y_val).square().mean()
        return train + penalty, val

    def hessian(self) -> torch.Tensor:
        return ridge_hessian(self.x_train, self.theta.detach().exp())

    def reference(self) -> torch.Tensor:
        """dL_v/dθ_i = −2 w*_i [H⁻¹∇L_v(w*)]_i · c_i (chain rule through c = exp θ)."""
        w = self.weights.detach()
        m = self.x_val.shape[0]
        val_gradient = 2.0 * self.x_val.T @ (self.x_val @ w - self.y_val) / m
        inverse_hvp = torch.linalg.solve(self.hessian(), val_gradient)
        return -2.0 * w * inverse_hvp * self.theta.detach().exp()


def make_ridge(sizes: Sizes, device: torch.device) -> RidgeProblem:
    gen = torch.Generator().manual_seed(8)
    n, m, d = sizes.ridge_train, sizes.ridge_val, sizes.ridge_dim

    def sample(*shape: int) -> torch.Tensor:
        return randn(gen, *shape, dtype=RIDGE_DTYPE, device=device)

    w_true, x_train, x_val = sample(d), sample(n, d), sample(m, d)
    y_train = x_train @ w_true + 0.5 * sample(n)
    y_val = x_val @ w_true + 0.5 * sample(m)
    log10_c = torch.empty(d, dtype=RIDGE_DTYPE).uniform_(-2.0, 0.0, generator=gen)
    theta = (log10_c * torch.log(torch.tensor(10.0, dtype=RIDGE_DTYPE))).to(device)  # c ∈ [.01, 1]
    optimum = torch.linalg.solve(ridge_hessian(x_train, theta.exp()), 2.0 * x_train.T @ y_train / n)
    return RidgeProblem(
        x_train, y_train, x_val, y_val, theta.requires_grad_(), optimum.requires_grad_()
    )
