"""The ``data`` block of ``hpo-run``'s configuration (:class:`DataOptions`), apart from
:mod:`hpo_cli.data.protocol`, which applies it, so that the configuration's schema imports no
torch."""

from __future__ import annotations

from dataclasses import dataclass


@dataclass
class DataOptions:
    """The ``data`` block of ``hpo-run``'s configuration: how a loader's result is split, typed
    and held (the defaults here are the configuration's)."""

    split_train: int | None = None  # a single set's training examples; None: 60 %
    split_val: int | None = None  # its validation examples; None: 20 %
    split_test: int | None = None  # its test examples; None: the rest
    task: str | None = None  # classification | regression; None: from the targets' dtype
    max_in_memory_bytes: int = 2**30  # larger inputs are streamed, built-in sets' refused
    num_workers: int = 2  # DataLoader worker processes of a streamed data set
