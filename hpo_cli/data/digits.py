"""scikit-learn's bundled 8×8 digits: the offline default data set."""

from __future__ import annotations

import torch

from hpo_cli.data.bundled import bundled_table
from hpo_cli.data.splits import Splits, split_sizes, split_tensors


def load_digits(
    train_size: int = 50,
    val_size: int = 50,
    test_size: int | None = None,
    standardize: bool = True,
    *,
    seed: int,
) -> Splits:
    """scikit-learn's bundled 8×8 handwritten digits (1797 images, 10 classes), offline.

    Pixels (0..16) are mapped to [-1, 1] when ``standardize``; inputs are images of shape
    (1, 8, 8), so both flat models (which flatten them) and convolutional ones take them. The
    split is a shuffle by ``seed`` (the run's seed, supplied by the runner).
    """
    table = torch.as_tensor(bundled_table("digits.csv.gz", delimiter=","))  # 64 pixels, label
    inputs = table[:, :-1].to(torch.float32).reshape(-1, 1, 8, 8)
    if standardize:
        inputs = inputs / 8.0 - 1.0
    targets = table[:, -1].to(torch.long)
    sizes = split_sizes(len(targets), train_size, val_size, test_size, "digits")
    train, val, test = split_tensors(inputs, targets, sizes, seed)
    return Splits(train, val, test, "classification", 10, (1, 8, 8))
