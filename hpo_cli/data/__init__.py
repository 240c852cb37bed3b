"""Data: splits and batches (:mod:`hpo_cli.data.splits`), per-task losses
(:mod:`hpo_cli.data.tasks`) and the data sets of the ``dataset`` group, one file per family.

Every loader takes its sizes and options as keyword arguments with defaults (the configuration)
and the run's ``seed`` (supplied by the runner), and returns :class:`hpo_cli.data.Splits`:
train/validation/test splits, deterministic given the seed, with disjoint examples.
Loaders from elsewhere may return plain arrays, separate sets or a ``torch.utils.data.Dataset``
instead (:mod:`hpo_cli.data.protocol`); large ones are streamed (:mod:`hpo_cli.data.streaming`).

| option | loader | inputs | task |
| --- | --- | --- | --- |
| ``digits`` | :func:`hpo_cli.data.digits.load_digits` | (1, 8, 8) | 10 classes |
| ``diabetes`` | :func:`load_diabetes` | (10,) | regression |
| ``linreg`` | :func:`load_linreg` | (features,) | regression |
| ``regression1d`` | :func:`load_regression1d` | (1,) | regression |
| ``mnist`` | :func:`load_mnist` | (1, 28, 28) | 10 classes |
| ``fashion_mnist`` | :func:`load_fashion_mnist` | (1, 28, 28) | 10 classes |
| ``cifar10`` | :func:`load_cifar10` | (3, 32, 32) | 10 classes |
| ``cifar100`` | :func:`load_cifar100` | (3, 32, 32) | 100 classes |
"""

from typing import TYPE_CHECKING

from hpo_cli.lazy import lazy_exports

if TYPE_CHECKING:
    from hpo_cli.data.digits import load_digits
    from hpo_cli.data.regression import load_diabetes, load_linreg, load_regression1d
    from hpo_cli.data.splits import Batch, Split, Splits, split_sizes, split_tensors
    from hpo_cli.data.vision import load_cifar10, load_cifar100, load_fashion_mnist, load_mnist

__getattr__, __dir__ = lazy_exports(
    __name__,
    {
        "hpo_cli.data.digits": ("load_digits",),
        "hpo_cli.data.regression": ("load_diabetes", "load_linreg", "load_regression1d"),
        "hpo_cli.data.splits": ("Batch", "Split", "Splits", "split_sizes", "split_tensors"),
        "hpo_cli.data.vision": (
            "load_cifar10",
            "load_cifar100",
            "load_fashion_mnist",
            "load_mnist",
        ),
    },
)
"""Imported on first use (:mod:`hpo_cli.lazy`), so that :mod:`hpo_cli.data.options` (the
``data`` block of the configuration) imports no torch."""

__all__ = [
    "Batch",
    "Split",
    "Splits",
    "load_cifar10",
    "load_cifar100",
    "load_diabetes",
    "load_digits",
    "load_fashion_mnist",
    "load_linreg",
    "load_mnist",
    "load_regression1d",
    "split_sizes",
    "split_tensors",
]
