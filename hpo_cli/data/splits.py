"""Splits and mini-batches: data sets as tensors cut into training, validation and test sets.

A loader returns :class:`Splits`; :func:`hpo_cli.runner.loop` only ever sees that. The loaders of
the ``dataset`` group are listed in :mod:`hpo_cli.data`. Small data sets
live on the chosen device as whole tensors, and mini-batches are index draws from a seeded
``torch.Generator``, so a run is reproducible and resumable.
"""

from __future__ import annotations

from dataclasses import dataclass

import torch


@dataclass
class Batch:
    """A mini-batch: inputs (b, *input_shape), targets (b,) and their positions in the split (b,),
    so a hyperparameter per training example (loss weights) can find its own."""

    inputs: torch.Tensor
    targets: torch.Tensor
    index: torch.Tensor


@dataclass
class Split:
    """Inputs (n, *input_shape) and targets (n,) of one split."""

    inputs: torch.Tensor
    targets: torch.Tensor

    def __len__(self) -> int:
        return len(self.targets)

    def head(self, size: int | None) -> Batch:
        """The first ``size`` examples (``None``: all), drawing no random numbers."""
        count = len(self) if size is None else min(size, len(self))
        index = torch.arange(count, device=self.inputs.device)
        return Batch(self.inputs[:count], self.targets[:count], index)

    def sample(self, size: int | None, generator: torch.Generator) -> Batch:
        """A mini-batch of ``size`` distinct examples drawn uniformly; ``None``: the whole split."""
        if size is None or size >= len(self):
            index = torch.arange(len(self), device=self.inputs.device)
            return Batch(self.inputs, self.targets, index)
        index = torch.randperm(len(self), generator=generator)[:size].to(self.inputs.device)
        return Batch(self.inputs[index], self.targets[index], index)


@dataclass
class Splits:
    """The three splits of a data set and what a model needs to know about it.

    Attributes:
        task: ``"classification"`` (integer targets) or ``"regression"`` (real targets).
        num_outputs: classes, or 1 for regression.
        input_shape: shape of one input.
    """

    train: Split
    val: Split
    test: Split
    task: str
    num_outputs: int
    input_shape: tuple[int, ...]

    def to(self, device: torch.device, dtype: torch.dtype) -> Splits:
        """The same splits with inputs (and real targets) on ``device`` in ``dtype``."""

        def move(split: Split) -> Split:
            targets = split.targets.to(device)
            if self.task == "regression":
                targets = targets.to(dtype)
            return Split(split.inputs.to(device, dtype), targets)

        return Splits(
            move(self.train),
            move(self.val),
            move(self.test),
            self.task,
            self.num_outputs,
            self.input_shape,
        )


def split_sizes(
    total: int, train_size: int, val_size: int, test_size: int | None, name: str
) -> tuple[int, int, int]:
    """Check the requested sizes against the ``total`` examples available."""
    for key, size in (("train_size", train_size), ("val_size", val_size)):
        if size <= 0:
            raise ValueError(f"dataset.{key}={size} is invalid: must be > 0")
    remaining = total - train_size - val_size
    test = remaining if test_size is None else test_size
    if test < 0 or test > remaining or (test_size is not None and test_size <= 0):
        raise ValueError(
            f"dataset sizes train_size={train_size} + val_size={val_size} + "
            f"test_size={test_size} ask for more than the {total} examples of {name}"
        )
    return train_size, val_size, test


def split_tensors(
    inputs: torch.Tensor,
    targets: torch.Tensor,
    sizes: tuple[int, int, int],
    seed: int,
) -> tuple[Split, Split, Split]:
    """Shuffle with ``seed`` and cut into train/validation/test splits of ``sizes``."""
    order = torch.randperm(len(targets), generator=torch.Generator().manual_seed(seed))
    cuts = torch.split(order[: sum(sizes)], list(sizes))
    return tuple(Split(inputs[index], targets[index]) for index in cuts)
