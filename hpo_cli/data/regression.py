"""Regression data sets: scikit-learn's diabetes and two synthetic linear problems.

Targets are real numbers (n,), ``task="regression"``, ``num_outputs=1``; inputs are (n, d).
"""

from __future__ import annotations

import torch

from hpo_cli.data.bundled import bundled_table
from hpo_cli.data.splits import Split, Splits, split_sizes, split_tensors


def _check_sizes(**sizes: int) -> None:
    for key, size in sizes.items():
        if size <= 0:
            raise ValueError(f"dataset.{key}={size} is invalid: must be > 0")


def _check_noise(noise: float) -> None:
    if noise < 0:
        raise ValueError(f"dataset.noise={noise} is invalid: must be >= 0")


def _cut(inputs: torch.Tensor, targets: torch.Tensor, sizes: list[int]) -> list[Split]:
    """Consecutive splits of ``sizes`` examples (the rows are i.i.d. draws already)."""
    return [
        Split(x, y)
        for x, y in zip(torch.split(inputs, sizes), torch.split(targets, sizes), strict=True)
    ]


def load_diabetes(
    train_size: int = 200,
    val_size: int = 100,
    test_size: int | None = None,
    *,
    seed: int,
) -> Splits:
    """scikit-learn's bundled diabetes regression set (442 patients, 10 features), offline.

    Stands in for the paper's Boston housing (no longer shipped by scikit-learn). The split is a
    shuffle by ``seed``; features and target are standardised with the training split's mean and
    standard deviation, so validation and test statistics never leak into training.
    """
    inputs = torch.as_tensor(bundled_table("diabetes_data_raw.csv.gz"), dtype=torch.float32)
    targets = torch.as_tensor(bundled_table("diabetes_target.csv.gz"), dtype=torch.float32)
    sizes = split_sizes(len(targets), train_size, val_size, test_size, "diabetes")
    train, val, test = split_tensors(inputs, targets, sizes, seed)
    x_mean, x_std = train.inputs.mean(0), train.inputs.std(0, correction=0)
    y_mean, y_std = train.targets.mean(), train.targets.std(correction=0)
    x_std = torch.where(x_std > 0, x_std, 1.0)
    y_std = torch.where(y_std > 0, y_std, 1.0)
    train, val, test = (
        Split((s.inputs - x_mean) / x_std, (s.targets - y_mean) / y_std) for s in (train, val, test)
    )
    return Splits(train, val, test, "regression", 1, (inputs.shape[1],))


def load_linreg(
    train_size: int = 100,
    val_size: int = 100,
    test_size: int = 1000,
    features: int = 2,
    weights: list[float] | None = [3.0, 1.0],  # noqa: B006 (the schema's default; never mutated)
    noise: float = 1.0,
    *,
    seed: int,
) -> Splits:
    """Synthetic linear regression y = x·w + noise·ε with x, ε ~ N(0, I), as in seed 003.

    Seed 003 uses 2 features, w = [3, 1] and unit noise (with 8 training and 2 validation
    points). Every split is a fresh i.i.d. draw from one generator seeded with ``seed``.

    Args:
        features: d, the width of the inputs (n, d).
        weights: the true w (d entries); ``None``: drawn from N(0, I) with the seed.
        noise: standard deviation of the additive Gaussian noise.
    """
    _check_sizes(train_size=train_size, val_size=val_size, test_size=test_size, features=features)
    _check_noise(noise)
    if weights is not None and len(weights) != features:
        raise ValueError(
            f"dataset.weights has {len(weights)} entries but dataset.features={features}; give "
            f"{features} weights, or dataset.weights=null to draw them from N(0, 1)"
        )
    generator = torch.Generator().manual_seed(seed)
    true_w = (
        torch.randn(features, generator=generator)
        if weights is None
        else torch.tensor(weights, dtype=torch.float32)
    )
    total = train_size + val_size + test_size
    inputs = torch.randn(total, features, generator=generator)
    targets = inputs @ true_w + noise * torch.randn(total, generator=generator)
    train, val, test = _cut(inputs, targets, [train_size, val_size, test_size])
    return Splits(train, val, test, "regression", 1, (features,))


def load_regression1d(
    train_size: int = 1000,
    val_size: int = 1000,
    test_size: int = 1000,
    slope: float = 2.0,
    intercept: float = 1.0,
    noise: float = 0.1,
    *,
    seed: int,
) -> Splits:
    """Seed 000's one-dimensional problem: y = slope·x + intercept + noise·ε, x, ε ~ N(0, 1).

    Inputs (n, 1), targets (n,); seed 000 draws 1000 training and 1000 validation points with
    y = 2x + 1 + 0.1ε. Every split is a fresh i.i.d. draw from one generator seeded with ``seed``.
    """
    _check_sizes(train_size=train_size, val_size=val_size, test_size=test_size)
    _check_noise(noise)
    generator = torch.Generator().manual_seed(seed)
    total = train_size + val_size + test_size
    inputs = torch.randn(total, 1, generator=generator)
    targets = slope * inputs[:, 0] + intercept + noise * torch.randn(total, generator=generator)
    train, val, test = _cut(inputs, targets, [train_size, val_size, test_size])
    return Splits(train, val, test, "regression", 1, (1,))
