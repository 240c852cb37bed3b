"""Splits too large for the device: mini-batches streamed through a ``DataLoader``.

A :class:`StreamedSplit` has the interface of :class:`hpo_cli.data.Split` (``len``, ``sample``,
``head``, ``chunks``) but keeps its examples where they are (a map-style ``Dataset``: files on
disk, arrays in host memory). Each batch size it is asked for gets its own stream: a
:class:`SeededBatchSampler` (epoch e is a permutation of the split drawn from its own seed and e,
cut into batches), read by a ``DataLoader`` with worker processes and pinned memory, then moved to
the device. A stream's state is the number of batches it has handed out, a plain int, so a
checkpoint holds it (:meth:`StreamedSplit.state_dict`) and a resumed run draws exactly the batches
the interrupted one would have drawn, whatever the loader had prefetched.
"""

from __future__ import annotations

import zlib
from collections.abc import Iterator
from dataclasses import dataclass, field

import torch
from torch.utils.data import DataLoader, Dataset, Sampler

from hpo_cli.data.splits import Batch


def as_tensor(value: object) -> torch.Tensor:
    """One input or target as a tensor; a PIL image becomes (C, H, W) in [0, 1] (torchvision's
    ``to_tensor``)."""
    if isinstance(value, torch.Tensor):
        return value
    if type(value).__module__.startswith("PIL."):
        from torchvision.transforms.functional import to_tensor

        return to_tensor(value)
    return torch.as_tensor(value)


class Items(Dataset):
    """The examples ``indices`` of ``dataset`` as (input, target, position in the split)."""

    def __init__(self, dataset: Dataset, indices: list[int]) -> None:
        self.dataset, self.indices = dataset, indices

    def __len__(self) -> int:
        return len(self.indices)

    def __getitem__(self, position: int) -> tuple[torch.Tensor, torch.Tensor, int]:
        inputs, targets = self.dataset[self.indices[position]]
        return as_tensor(inputs), as_tensor(targets), position


class SeededBatchSampler(Sampler[list[int]]):
    """Endless batches of ``size`` distinct positions in range(n), starting at batch ``start``.

    Batch b belongs to epoch e = b // (n // size): a permutation of range(n) drawn from
    ``torch.Generator().manual_seed(seed + e)``, cut into consecutive batches (the last partial
    one dropped). So batch b depends on (seed, b) alone.
    """

    def __init__(self, n: int, size: int, seed: int, start: int = 0) -> None:
        if not 0 < size <= n:
            raise ValueError(f"batch size {size} must be in 1..{n}")
        self.n, self.size, self.seed, self.start = n, size, seed, start
        self._epoch: tuple[int, torch.Tensor] | None = None

    def batch(self, b: int) -> list[int]:
        epoch, k = divmod(b, self.n // self.size)
        if self._epoch is None or self._epoch[0] != epoch:
            generator = torch.Generator().manual_seed(self.seed + epoch)
            self._epoch = (epoch, torch.randperm(self.n, generator=generator))
        return self._epoch[1][k * self.size : (k + 1) * self.size].tolist()

    def __iter__(self) -> Iterator[list[int]]:
        b = self.start
        while True:
            yield self.batch(b)
            b += 1


@dataclass
class Loading:
    """Where and how batches are read: device, dtype, task, worker processes."""

    device: torch.device = field(default_factory=lambda: torch.device("cpu"))
    dtype: torch.dtype = torch.float32
    task: str = "classification"
    num_workers: int = 2

    def loader(self, items: Dataset, seed: int, **sampling: object) -> DataLoader:
        """A DataLoader over ``items``; its own generator keeps torch's global RNG untouched."""
        workers = self.num_workers
        return DataLoader(
            items,
            num_workers=workers,
            pin_memory=self.device.type == "cuda",
            generator=torch.Generator().manual_seed(seed),
            **sampling,
        )

    def batch(self, inputs: torch.Tensor, targets: torch.Tensor, index: torch.Tensor) -> Batch:
        """A loaded batch on the device: inputs in ``dtype``, targets as the task wants them."""
        kind = torch.long if self.task == "classification" else self.dtype
        return Batch(
            inputs.to(self.device, self.dtype, non_blocking=True),
            targets.reshape(len(targets)).to(self.device, kind, non_blocking=True),
            index.to(self.device),
        )


class _Stream:
    """Batches of one size from one split; its state is how many it has handed out."""

    def __init__(self, items: Items, size: int, seed: int, loading: Loading) -> None:
        self.items, self.size, self.seed, self.loading = items, size, seed, loading
        self.consumed = 0
        self._iterator: Iterator | None = None

    def next(self) -> Batch:
        if self._iterator is None:
            sampler = SeededBatchSampler(len(self.items), self.size, self.seed, self.consumed)
            loader = self.loading.loader(
                self.items, self.seed + self.consumed, batch_sampler=sampler
            )
            self._iterator = iter(loader)
        batch = self.loading.batch(*next(self._iterator))
        self.consumed += 1
        return batch

    def restart_at(self, consumed: int) -> None:
        self.consumed, self._iterator = consumed, None


class StreamedSplit:
    """A split read batch by batch from a map-style ``Dataset`` (see the module docstring).

    Args:
        dataset: yields (input, target) pairs.
        indices: the examples of ``dataset`` in this split.
        seed: the seed of this split's samplers (each batch size gets seed + a fixed offset).
        loading: device, dtype, task and workers (set by :meth:`to`).
    """

    def __init__(self, dataset: Dataset, indices: list[int], seed: int, loading: Loading) -> None:
        self.items = Items(dataset, indices)
        self.seed, self.loading = seed, loading
        self._streams: dict[int, _Stream] = {}

    def __len__(self) -> int:
        return len(self.items)

    @property
    def inputs(self) -> torch.Tensor:
        raise ValueError(
            "this needs the whole split in memory, but the data set is streamed (larger than "
            "data.max_in_memory_bytes): raise data.max_in_memory_bytes, or pick another option"
        )

    def to(self, device: torch.device, dtype: torch.dtype, task: str) -> StreamedSplit:
        self.loading.device, self.loading.dtype, self.loading.task = device, dtype, task
        return self

    def sample(self, size: int | None, generator: torch.Generator | None = None) -> Batch:
        """The next batch of ``size`` from this size's own seeded stream (``generator`` is
        unused: the streams keep their own state, see :meth:`state_dict`)."""
        if size is None:
            raise ValueError(
                "a streamed split has no whole-split batch: set hyper_train_batch and "
                "hyper_val_batch"
            )
        return self._stream(size).next()

    def head(self, size: int | None) -> Batch:
        """The first ``size`` examples of the split."""
        if size is None:
            return self.sample(None)
        count = min(size, len(self))
        return next(self._in_order(count))

    def _in_order(self, size: int) -> Iterator[Batch]:
        loader = self.loading.loader(self.items, self.seed, batch_size=size, shuffle=False)
        return (self.loading.batch(*raw) for raw in loader)

    def chunks(self, size: int) -> Iterator[tuple[torch.Tensor, torch.Tensor]]:
        """The whole split in order, ``size`` examples at a time, on the device."""
        return ((batch.inputs, batch.targets) for batch in self._in_order(size))

    def state_dict(self) -> dict[str, int]:
        """Batch size → batches handed out (plain ints, for the checkpoint)."""
        return {str(size): stream.consumed for size, stream in self._streams.items()}

    def load_state_dict(self, state: dict[str, int]) -> None:
        for size, consumed in state.items():
            self._stream(int(size)).restart_at(consumed)

    def _stream(self, size: int) -> _Stream:
        if size not in self._streams:
            seed = self.seed + zlib.crc32(str(size).encode())
            self._streams[size] = _Stream(self.items, size, seed, self.loading)
        return self._streams[size]
