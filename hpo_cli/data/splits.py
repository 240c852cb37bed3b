"""Splits and mini-batches: data sets as tensors cut into training, validation and test sets.

:func:`hpo_cli.runner.loop.train` only ever sees :class:`Splits` (built-in loaders return it; other
loaders' results become one, :mod:`hpo_cli.data.protocol`). Small data sets live on the chosen
device as whole tensors (:class:`Split`), and mini-batches are index draws from a seeded
``torch.Generator``, so a run is reproducible and resumable; larger ones are streamed
(:class:`hpo_cli.data.streaming.StreamedSplit`, the same interface).
"""

from __future__ import annotations

from collections.abc import Iterator
from dataclasses import dataclass

import torch


@dataclass
class Batch:
    """A mini-batch: inputs (b, *input_shape), targets (b,) and their positions in the split (b,),
    so a hyperparameter per training example (loss weights) can find its own."""

    inputs: torch.Tensor
    targets: torch.Tensor
    index: torch.Tensor

    def __len__(self) -> int:
        return len(self.targets)

    def shard(self, rank: int, world_size: int) -> Batch:
        """Examples [r·b/N, (r+1)·b/N) of the b drawn, for rank r of N (data parallelism:
        the N shards are equal and their union, in rank order, is this batch, so the mean of
        the shards' mean losses is the batch's mean loss); the batch itself when N = 1.

        Raises:
            ValueError: b is not a multiple of N (unequal shards would weight examples unequally).
        """
        if world_size == 1:
            return self
        if len(self) % world_size:
            raise ValueError(
                f"a batch of {len(self)} examples cannot be cut into {world_size} equal shards"
            )
        size = len(self) // world_size
        part = slice(rank * size, (rank + 1) * size)
        return Batch(self.inputs[part], self.targets[part], self.index[part])


@dataclass
class Split:
    """Inputs (n, *input_shape) and targets (n,) of one split."""

    inputs: torch.Tensor
    targets: torch.Tensor

    def __len__(self) -> int:
        return len(self.targets)

    def to(self, device: torch.device, dtype: torch.dtype, task: str) -> Split:
        """Inputs (and real targets) on ``device`` in ``dtype``."""
        targets = self.targets.to(device)
        return Split(
            self.inputs.to(device, dtype), targets.to(dtype) if task == "regression" else targets
        )

    def chunks(self, size: int) -> Iterator[tuple[torch.Tensor, torch.Tensor]]:
        """The whole split in order as (inputs, targets), ``size`` examples at a time."""
        for start in range(0, len(self), size):
            yield self.inputs[start : start + size], self.targets[start : start + size]

    def state_dict(self) -> dict[str, int]:
        """Nothing to save: draws come from the caller's generator."""
        return {}

    def load_state_dict(self, state: dict[str, int]) -> None:
        """Nothing to restore (see :meth:`state_dict`)."""

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
        index = torch.randperm(len(self), generator=generator)[:size]
        if index.device != self.inputs.device:
            index = index.to(self.inputs.device)
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

        train, val, test = (split.to(device, dtype, self.task) for split in self.splits())
        return Splits(train, val, test, self.task, self.num_outputs, self.input_shape)

    def splits(self) -> tuple[Split, Split, Split]:
        return self.train, self.val, self.test

    def state_dict(self) -> dict[str, dict[str, int]]:
        """The samplers' positions of streamed splits (:mod:`hpo_cli.data.streaming`), plain
        ints for the checkpoint; empty dicts for splits held as tensors."""
        return {name: getattr(self, name).state_dict() for name in ("train", "val", "test")}

    def load_state_dict(self, state: dict[str, dict[str, int]]) -> None:
        for name, split_state in state.items():
            getattr(self, name).load_state_dict(split_state)


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
