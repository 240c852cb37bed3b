"""The learned hyperparameters, readable without hpo-cli.

``hyperparameters.pt`` (the last values) and ``hyperparameters_best.pt`` (those of the best
checkpoint, with early stopping) are ``torch.save`` files of one plain ``{name: tensor}`` dict:
every tensor of λ through its constraint, on the CPU, named by what it belongs to (the model
parameter a per-weight decay decays, the layer a dropout rate drops, ...: :func:`hpo_cli.runner.
loop.export.named_hyperparameters`). ``torch.load(path, weights_only=True)`` reads them.

``hyperparameters.json`` summarises them: per tensor its name, shape, size, mean, the quantiles
0/5/25/50/75/95/100 % and, for tensors of at most :data:`FULL_VALUES` entries, every value.
"""

from __future__ import annotations

import math
from pathlib import Path
from typing import Any

import numpy as np
import torch

from hpo_cli.runner.rundir.metrics import write_json
from hpo_cli.runner.rundir.names import (
    BEST_HYPERPARAMETERS,
    HYPERPARAMETERS,
    HYPERPARAMETERS_SUMMARY,
)
from hpo_cli.runner.rundir.writes import replacing

QUANTILES = (0, 5, 25, 50, 75, 95, 100)
"""The percentiles each tensor's summary gives."""

FULL_VALUES = 32
"""Tensors of at most this many entries are written out whole in the summary."""

Tensors = dict[str, torch.Tensor]


def _number(value: float) -> float | None:
    """A JSON number, or ``None`` for NaN and ±inf (which JSON cannot hold)."""
    return float(value) if math.isfinite(value) else None


def describe(name: str, tensor: torch.Tensor) -> dict[str, Any]:
    """One tensor's summary: name, shape, size, mean, quantiles (and its values when small)."""
    values = tensor.detach().to("cpu", torch.float64).reshape(-1).numpy()
    entry: dict[str, Any] = {"name": name, "shape": list(tensor.shape), "numel": values.size}
    if values.size:
        entry["mean"] = _number(values.mean())
        quantiles = np.quantile(values, [q / 100 for q in QUANTILES])
        entry["quantiles"] = {
            f"{q}%": _number(v) for q, v in zip(QUANTILES, quantiles, strict=True)
        }
    if values.size <= FULL_VALUES:
        entry["values"] = [_number(v) for v in values.tolist()]
    return entry


def save_tensors(path: Path, tensors: Tensors) -> None:
    """``torch.save`` a ``{name: tensor}`` dict (CPU copies) to ``path`` atomically."""
    plain = {
        name: tensor.detach().to("cpu").clone().contiguous() for name, tensor in tensors.items()
    }
    with replacing(path) as partial:
        torch.save(plain, partial)


def write_hyperparameters(
    run_dir: Path, last: Tensors, best: Tensors | None, about: dict[str, Any]
) -> None:
    """Write ``hyperparameters.pt``, ``hyperparameters_best.pt`` (when ``best`` is given; an older
    one is removed otherwise) and ``hyperparameters.json`` (``about``: what the values are,
    the outer step of each set)."""
    save_tensors(run_dir / HYPERPARAMETERS, last)
    best_path = run_dir / BEST_HYPERPARAMETERS
    if best is not None:
        save_tensors(best_path, best)
    else:
        best_path.unlink(missing_ok=True)
    content = {
        **about,
        "files": {"last": HYPERPARAMETERS, "best": BEST_HYPERPARAMETERS if best else None},
        "last": [describe(name, tensor) for name, tensor in last.items()],
        "best": None if best is None else [describe(name, t) for name, t in best.items()],
    }
    write_json(run_dir / HYPERPARAMETERS_SUMMARY, content)
