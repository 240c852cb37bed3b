"""The files every run writes: ``metrics.csv`` (one row per evaluation) and ``summary.json``;
with ``solver_comparison.every``, ``solver_comparison.csv`` (one row per solver and budget).

Each CSV is appended row by row and flushed to disk at once, so whatever was measured
before a crash or a ``kill -9`` is kept; on resume, rows after the checkpoint are dropped (they
are recomputed, deterministically), so the file has neither gaps nor duplicates.
"""

from __future__ import annotations

import csv
import json
import math
import os
from pathlib import Path
from typing import Any

COLUMNS = [
    "outer_step",
    "inner_steps",
    "wall_time_s",
    "train_loss",
    "train_error",
    "val_loss",
    "val_error",
    "test_loss",
    "test_error",
    "hypergrad_norm",
    "solver_status",
    "solver_iterations",
    "solver_hvps",
    "solver_residual",
    "solver_diverged",
    "skipped_hyper_steps",
    "hyper_mean",
    "hyper_min",
    "hyper_max",
    "inner_optimizer_state",
    "hessian_lambda_max",
    "hessian_lambda_min",
    "hessian_trace",
    "hessian_trace_std_error",
]

SOLVER_COMPARISON_COLUMNS = [
    "outer_step",
    "solver",
    "k",
    "hvps",
    "cosine",
    "rel_error",
    "status",
    "reference",
    "horizon",
    "fd_correlation",
    "time_s",
]
"""``solver_comparison.csv``: see :class:`hpo_cli.analysis.solver_comparison.SolverComparison`."""


class MetricsLog:
    """Append-only CSV of rows with the given columns (default :data:`COLUMNS`)."""

    def __init__(self, path: Path, columns: list[str] = COLUMNS) -> None:
        self.path = path
        self.columns = columns

    def append(self, row: dict[str, Any]) -> None:
        """Write one row and force it to disk."""
        self.extend([row])

    def extend(self, rows: list[dict[str, Any]]) -> None:
        """Write rows and force them to disk (once)."""
        unknown = set().union(*rows) - set(self.columns)
        if unknown:
            raise KeyError(f"unknown metrics columns: {sorted(unknown)}")
        is_new = not self.path.exists() or self.path.stat().st_size == 0
        with self.path.open("a", newline="") as handle:
            writer = csv.DictWriter(handle, fieldnames=self.columns)
            if is_new:
                writer.writeheader()
            for row in rows:
                writer.writerow({key: _format(row.get(key)) for key in self.columns})
            handle.flush()
            os.fsync(handle.fileno())

    def rows(self) -> list[dict[str, str]]:
        """The rows written so far, as strings."""
        if not self.path.exists():
            return []
        with self.path.open(newline="") as handle:
            return list(csv.DictReader(handle))

    def keep_until(self, outer_step: int) -> None:
        """Drop every row after ``outer_step`` (atomically), as a resumed run must."""
        kept = [row for row in self.rows() if int(row["outer_step"]) <= outer_step]
        partial = self.path.with_suffix(".csv.partial")
        with partial.open("w", newline="") as handle:
            writer = csv.DictWriter(handle, fieldnames=self.columns)
            writer.writeheader()
            writer.writerows(kept)
        os.replace(partial, self.path)


def _format(value: Any) -> Any:
    if value is None or (isinstance(value, float) and math.isnan(value)):
        return ""
    if isinstance(value, float):
        return repr(value)
    return value


def write_json(path: Path, content: dict[str, Any]) -> None:
    """Write ``content`` as indented JSON, replacing the file atomically."""
    partial = path.with_suffix(".json.partial")
    partial.write_text(json.dumps(content, indent=2, default=str) + "\n")
    os.replace(partial, path)
