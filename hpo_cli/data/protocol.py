"""The data-set protocol: what a ``dataset`` loader may return, and how the runner makes
:class:`hpo_cli.data.Splits` of it.

A loader (any function or class named by ``dataset._target_``, given its YAML keys and, if its
signature asks for it, the run's ``seed``) returns one of:

1. :class:`hpo_cli.data.Splits`: used as it is (hpo-cli's own loaders);
2. ``(inputs, targets)``: arrays or tensors with one row per example, which the runner shuffles
   with the seed and cuts into ``data.split_train``/``data.split_val``/``data.split_test``;
3. a mapping ``{"train": ..., "val": ..., "test": ...}`` of three such pairs or data sets,
   used as they are;
4. a map-style ``torch.utils.data.Dataset`` whose items are (input, target) pairs (torchvision's
   ``ImageFolder`` with ``transform=ToTensor()``, or without: PIL images become (C, H, W) in
   [0, 1]), split like 2.

Targets are one label or value per example: integers (classification, with classes 0..k−1) or
reals (regression), unless ``data.task`` declares the task. A data set whose inputs take at most
``data.max_in_memory_bytes`` (in the run's dtype) becomes tensors on the device, as the built-in
ones; a larger one is streamed (:mod:`hpo_cli.data.streaming`), except for 1., which the loader
has read whole already: over the limit, it is refused. Anything else is refused with one line
naming this protocol.
"""

from __future__ import annotations

import math
from collections.abc import Mapping

import torch
from torch.utils.data import Dataset, IterableDataset

from hpo_cli.data.options import DataOptions
from hpo_cli.data.splits import Split, Splits
from hpo_cli.data.streaming import Loading, StreamedSplit, as_tensor

PROTOCOL = (
    "a dataset loader returns hpo_cli.data.Splits, (inputs, targets) arrays or tensors, a "
    "{'train', 'val', 'test'} mapping of those, or a map-style torch.utils.data.Dataset of "
    "(input, target) pairs"
)
TASKS = ("classification", "regression")


class DataProtocolError(ValueError):
    """A loader's result does not follow the protocol; the message names it."""


def _refuse(name: str, problem: str) -> DataProtocolError:
    return DataProtocolError(f"dataset={name}: {problem}; {PROTOCOL}")


class _Pairs(Dataset):
    """Tensors (n, ...) and (n,) as a map-style data set of pairs."""

    def __init__(self, inputs: torch.Tensor, targets: torch.Tensor) -> None:
        self.inputs, self.targets = inputs, targets

    def __len__(self) -> int:
        return len(self.targets)

    def __getitem__(self, i: int) -> tuple[torch.Tensor, torch.Tensor]:
        return self.inputs[i], self.targets[i]


def _pairs(value: object, name: str) -> Dataset:
    """A pair of arrays as :class:`_Pairs`, or a map-style data set as it is."""
    if isinstance(value, tuple | list) and len(value) == 2:
        try:
            inputs, targets = (as_tensor(v) for v in value)
        except (TypeError, ValueError, RuntimeError) as error:
            raise _refuse(name, f"its (inputs, targets) are not arrays ({error})") from error
        if inputs.ndim == 1:
            inputs = inputs[:, None]  # one feature per example
        if len(inputs) != len(targets):
            raise _refuse(name, f"{len(inputs)} inputs but {len(targets)} targets")
        return _Pairs(inputs, _one_per_example(targets, name))
    if isinstance(value, Dataset) and not isinstance(value, IterableDataset):
        if not hasattr(value, "__len__"):
            raise _refuse(name, "its Dataset has no __len__")
        return value
    raise _refuse(name, f"it returned {type(value).__name__}")


def _one_per_example(targets: torch.Tensor, name: str) -> torch.Tensor:
    if targets.ndim == 2 and targets.shape[1] == 1:
        targets = targets[:, 0]
    if targets.ndim != 1:
        raise _refuse(
            name, f"targets must be one label or value per example, not {tuple(targets.shape)}"
        )
    return targets


def _targets(dataset: Dataset, name: str) -> torch.Tensor:
    """Every target of ``dataset`` (its ``targets`` attribute when it has one)."""
    if isinstance(dataset, _Pairs):
        return dataset.targets
    known = getattr(dataset, "targets", None)
    if known is not None and len(known) == len(dataset):
        return _one_per_example(torch.as_tensor(known), name)
    return _one_per_example(
        torch.stack([as_tensor(_item(dataset, i, name)[1]) for i in range(len(dataset))]), name
    )


def _item(dataset: Dataset, i: int, name: str) -> tuple[object, object]:
    item = dataset[i]
    if not (isinstance(item, tuple | list) and len(item) == 2):
        raise _refuse(name, f"its Dataset's items are {type(item).__name__}, not (input, target)")
    return item[0], item[1]


def _task(targets: torch.Tensor, declared: str | None, name: str) -> tuple[str, int]:
    """(task, num_outputs): declared or from the targets' dtype; classes are 0..k−1."""
    if declared is not None and declared not in TASKS:
        raise DataProtocolError(f"data.task={declared} is invalid: classification or regression")
    task = declared or ("regression" if targets.is_floating_point() else "classification")
    if task == "regression":
        return task, 1
    if targets.is_floating_point() and not torch.equal(targets, targets.round()):
        raise _refuse(name, "classification targets must be integer class labels")
    if len(targets) and int(targets.min()) < 0:
        raise _refuse(name, f"class labels must be 0..k-1, not {int(targets.min())}")
    return task, int(targets.max()) + 1 if len(targets) else 0


def _sizes(total: int, options: DataOptions) -> tuple[int, int, int]:
    train = options.split_train if options.split_train is not None else int(0.6 * total)
    val = options.split_val if options.split_val is not None else int(0.2 * total)
    test = options.split_test if options.split_test is not None else total - train - val
    if min(train, val, test) <= 0 or train + val + test > total:
        raise DataProtocolError(
            f"data.split_train={train} + data.split_val={val} + data.split_test={test} must be "
            f"positive and at most the {total} examples the dataset returned"
        )
    return train, val, test


def _materialise(dataset: Dataset, indices: list[int], task: str, name: str) -> Split:
    """The examples ``indices`` of ``dataset`` as tensors."""
    if isinstance(dataset, _Pairs):
        index = torch.as_tensor(indices, dtype=torch.long)
        inputs, targets = dataset.inputs[index], dataset.targets[index]
    else:
        items = [_item(dataset, i, name) for i in indices]
        try:
            inputs = torch.stack([as_tensor(x) for x, _ in items])
        except RuntimeError as error:
            raise _refuse(name, f"its inputs differ in shape ({error})") from error
        targets = _one_per_example(torch.stack([as_tensor(y) for _, y in items]), name)
    return Split(inputs, targets if task == "regression" else targets.long())


def _check_held(splits: Splits, name: str, options: DataOptions, dtype: torch.dtype) -> None:
    """A loader that returns :class:`Splits` of tensors (hpo-cli's own) has read them whole
    into memory: they cannot be streamed, so inputs over ``data.max_in_memory_bytes`` (counted
    in the run's dtype, as for any loader) are refused rather than held against the limit.

    Raises:
        DataProtocolError: naming the data set, its size and the limit.
    """
    held = sum(len(split) for split in splits.splits() if isinstance(split, Split))
    size = held * math.prod(splits.input_shape) * dtype.itemsize
    if size > options.max_in_memory_bytes:
        raise DataProtocolError(
            f"dataset={name} reads its {held} examples whole into memory ({size} bytes in "
            f"{str(dtype).removeprefix('torch.')}), more than data.max_in_memory_bytes="
            f"{options.max_in_memory_bytes}, and cannot stream them (only a loader returning "
            "(inputs, targets) or a Dataset is streamed); raise data.max_in_memory_bytes"
        )


def as_splits(
    result: object, name: str, options: DataOptions, seed: int, dtype: torch.dtype
) -> Splits:
    """What a loader returned (see the module docstring) as :class:`Splits`.

    Args:
        result: the loader's return value.
        name: the loader's name, for messages.
        options: the ``data`` block.
        seed: the run's seed: the shuffle of a single set, and the streamed samplers.
        dtype: the run's dtype (the in-memory size is counted in it).

    Raises:
        DataProtocolError: one line naming the protocol.
    """
    if isinstance(result, Splits):
        _check_held(result, name, options, dtype)
        return result
    if isinstance(result, Mapping):
        if set(result) != {"train", "val", "test"}:
            raise _refuse(name, f"its mapping has keys {sorted(result)}")
        parts = [(_pairs(result[key], name), None) for key in ("train", "val", "test")]
    else:
        whole = _pairs(result, name)
        order = torch.randperm(len(whole), generator=torch.Generator().manual_seed(seed))
        sizes = _sizes(len(whole), options)
        cuts = torch.split(order[: sum(sizes)], list(sizes))
        parts = [(whole, cut.tolist()) for cut in cuts]
    parts = [(data, list(range(len(data))) if idx is None else idx) for data, idx in parts]
    targets = torch.cat(
        [_targets(data, name)[torch.as_tensor(idx, dtype=torch.long)] for data, idx in parts]
    )
    task, num_outputs = _task(targets, options.task, name)
    first = as_tensor(_item(parts[0][0], parts[0][1][0], name)[0])
    input_shape = tuple(first.shape)
    size = sum(len(idx) for _, idx in parts) * math.prod(input_shape) * dtype.itemsize
    if size <= options.max_in_memory_bytes:
        train, val, test = (_materialise(data, idx, task, name) for data, idx in parts)
    else:
        train, val, test = (
            StreamedSplit(data, idx, seed + k, Loading(task=task, num_workers=options.num_workers))
            for k, (data, idx) in enumerate(parts)
        )
    return Splits(train, val, test, task, num_outputs, input_shape)
