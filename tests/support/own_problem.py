"""A researcher's own package, outside hpo_cli: models, loaders, a hyperparameter module and a
solver that the tests name by ``_target_`` (``tests.support.own_problem.*``: the repository root
is on sys.path; nothing here is in hpo_cli)."""

from __future__ import annotations

import numpy as np
import torch
from torch import nn
from torch.utils.data import TensorDataset

from hpo_cli.core.solvers import SolveInfo, StatelessSolver, Status
from hpo_cli.hyper import HyperModule


class WideNet(nn.Sequential):
    """Asks for the two shapes it needs, by the documented names, and nothing else."""

    def __init__(self, in_features: int, num_classes: int, width: int = 16) -> None:
        super().__init__(
            nn.Flatten(), nn.Linear(in_features, width), nn.Tanh(), nn.Linear(width, num_classes)
        )


class FixedNet(nn.Sequential):
    """Asks for no shapes at all: 64 features in, ``classes`` logits out."""

    def __init__(self, classes: int = 10) -> None:
        super().__init__(nn.Flatten(), nn.Linear(64, classes))


def not_a_model(size: int = 3) -> list[int]:
    return list(range(size))


def blobs(n: int = 90, features: int = 4, classes: int = 3, *, seed: int):
    """(inputs (n, features), labels (n,)) as NumPy arrays: Gaussian blobs, one per class."""
    rng = np.random.default_rng(seed)
    labels = np.arange(n) % classes
    inputs = rng.normal(size=(n, features)) + 2.0 * labels[:, None]
    return inputs.astype(np.float32), labels


def blob_sets(n: int = 30):
    """Separate train/validation/test sets: two pairs and a TensorDataset."""
    sets = [blobs(n, seed=k) for k in range(3)]
    test = TensorDataset(torch.as_tensor(sets[2][0]), torch.as_tensor(sets[2][1]))
    return {"train": sets[0], "val": sets[1], "test": test}


def blob_dataset(n: int = 60):
    inputs, labels = blobs(n, seed=0)
    return TensorDataset(torch.as_tensor(inputs), torch.as_tensor(labels))


def line(n: int = 60):
    """Regression: y = 2x + 1 (float targets, so the task is inferred)."""
    x = torch.linspace(-1, 1, n)
    return x, 2 * x + 1


def three_things():
    return [1, 2, 3]


class ScaledL2(HyperModule):
    """A hyperparameter module that takes only the model: exp(θ)·‖w‖²/2."""

    def __init__(self, model: nn.Module, init: float = 1e-3) -> None:
        super().__init__()
        self.log_scale = nn.Parameter(torch.tensor(float(np.log(init))))
        self.model_size = sum(p.numel() for p in model.parameters())

    def penalty(self, model: nn.Module) -> torch.Tensor:
        squares = sum(p.square().sum() for p in model.parameters())
        return 0.5 * self.log_scale.exp() * squares

    def constrained_values(self) -> torch.Tensor:
        return self.log_scale.detach().exp().reshape(1)


class HalfIdentity(StatelessSolver):
    """A toy inverse-HVP solver: H⁻¹ b ≈ scale · b (the solver contract of
    hpo_cli.core.solvers.base; no state between solves, so only ``__call__``)."""

    def __init__(self, scale: float = 0.5) -> None:
        self.scale = scale

    def __call__(self, matvec, b):
        info = SolveInfo("half_identity", Status.APPROXIMATION, message="scaled identity")
        return [self.scale * v for v in b], info
