"""Synthetic image data sets for benchmarks and the GPU check, offline: the shapes of MNIST and
CIFAR-10, Gaussian pixels, labels from a random linear teacher plus noise (learnable, not
trivially). Each is a dataset ``_target_`` for hpo-run
(``dataset._target_=benchmarks.common.synthetic.synthetic_mnist`` from the repository root),
taking the keys of the digits group."""

from __future__ import annotations

import torch

from hpo_cli.data.splits import Split, Splits

CLASSES = 10
TEST_SIZE = 100  # when test_size is None


def synthetic_images(
    shape: tuple[int, ...], train_size: int, val_size: int, test_size: int | None, seed: int
) -> Splits:
    """N(0, 1) images of ``shape`` (C, H, W), labels = argmax(x·W + 0.5ε) for a random W."""
    gen = torch.Generator().manual_seed(seed)
    sizes = (train_size, val_size, test_size or TEST_SIZE)
    inputs = torch.randn(sum(sizes), *shape, generator=gen)
    features = inputs[0].numel()
    teacher = torch.randn(features, CLASSES, generator=gen) / features**0.5
    noise = 0.5 * torch.randn(sum(sizes), CLASSES, generator=gen)
    targets = (inputs.flatten(1) @ teacher + noise).argmax(dim=1)
    parts = [Split(x, y) for x, y in zip(inputs.split(sizes), targets.split(sizes), strict=True)]
    return Splits(*parts, task="classification", num_outputs=CLASSES, input_shape=shape)


def synthetic_mnist(
    train_size: int = 1000,
    val_size: int = 1000,
    test_size: int | None = None,
    standardize: bool = True,
    *,
    seed: int,
) -> Splits:
    """MNIST-shaped (1, 28, 28) data; the inputs are standard normal whatever ``standardize``
    (taken so that the digits group's keys apply)."""
    return synthetic_images((1, 28, 28), train_size, val_size, test_size, seed)


def synthetic_cifar(
    train_size: int = 1000,
    val_size: int = 1000,
    test_size: int | None = None,
    standardize: bool = True,
    *,
    seed: int,
) -> Splits:
    """CIFAR-shaped (3, 32, 32) data; ``standardize`` as in :func:`synthetic_mnist`."""
    return synthetic_images((3, 32, 32), train_size, val_size, test_size, seed)
