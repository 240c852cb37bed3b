"""The files every run writes: ``metrics.csv`` (one row per evaluation) and ``summary.json``;
with ``solver_comparison.every``, ``solver_comparison.csv`` (one row per solver and budget).

Each CSV is appended row by row, flushed and fsynced at once (so also before every checkpoint),
so whatever was measured before a crash or a ``kill -9`` is kept; on resume, rows after the
checkpoint are dropped (they are recomputed, deterministically), so the file has neither gaps nor
duplicates. A file damaged before the checkpoint (a row cut short, rows missing, steps out of
order) is refused rather than continued with a hole (:meth:`MetricsLog.checked_rows`).
"""

from __future__ import annotations

import csv
import json
import math
import os
from pathlib import Path
from typing import Any

from hpo_cli.runner.errors import ConfigError
from hpo_cli.runner.rundir.writes import RunFileNotWritten, replacing

COLUMNS = [
    "outer_step",
    "total_inner_steps",
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
    "hypergrad_cosine",
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


class MetricsDamaged(ConfigError):
    """A metrics file cannot be continued without a hole; the message names the file."""


class MetricsLog:
    """Append-only CSV of rows with the given columns (default :data:`COLUMNS`); with
    ``one_row_per_step`` (metrics.csv) no two rows share an outer step, without it (one row per
    solver and budget) rows of one step follow each other."""

    def __init__(
        self, path: Path, columns: list[str] = COLUMNS, *, one_row_per_step: bool = True
    ) -> None:
        self.path = path
        self.columns = columns
        self.one_row_per_step = one_row_per_step

    def append(self, row: dict[str, Any]) -> None:
        """Write one row and force it to disk."""
        self.extend([row])

    def extend(self, rows: list[dict[str, Any]]) -> None:
        """Write rows and force them to disk (once).

        Raises:
            RunFileNotWritten: the disk refused them; the file is as it was before.
        """
        unknown = set().union(*rows) - set(self.columns)
        if unknown:
            raise KeyError(f"unknown metrics columns: {sorted(unknown)}")
        is_new = not self.path.exists() or self.path.stat().st_size == 0
        with self.path.open("a", newline="") as handle:
            size = handle.tell()
            try:
                writer = csv.DictWriter(handle, fieldnames=self.columns)
                if is_new:
                    writer.writeheader()
                for row in rows:
                    writer.writerow({key: _format(row.get(key)) for key in self.columns})
                handle.flush()
                os.fsync(handle.fileno())
            except OSError as error:  # a full disk: the rows before stay whole
                handle.truncate(size)
                raise RunFileNotWritten(self.path, error) from error

    def rows(self) -> list[dict[str, str]]:
        """The rows written so far, as strings."""
        if not self.path.exists():
            return []
        with self.path.open(newline="") as handle:
            return list(csv.DictReader(handle))

    def checked_rows(self, outer_step: int, expected: int | None = None) -> list[dict[str, str]]:
        """The rows up to ``outer_step``, refusing a file that would leave a hole in the run.

        Every row must be complete (all fields, ending in a newline) and the steps increasing
        (strictly with ``one_row_per_step``); with ``expected``, the number of rows the run had
        written when its checkpoint at ``outer_step`` was saved, exactly that many rows must
        precede it. A last line cut
        short after those rows (a crash during a later write) is dropped: it is recomputed.

        Raises:
            MetricsDamaged: a header with columns hpo-run does not write, or a damaged or missing
                row before ``outer_step``.
        """
        try:
            lines = self.path.read_text().splitlines(keepends=True) if self.path.exists() else []
        except (OSError, UnicodeDecodeError) as error:
            raise MetricsDamaged(f"{self.path} cannot be read ({error})") from error
        header = next(csv.reader(lines[:1]), [])
        unknown = [column for column in header if column not in self.columns]
        if lines and (unknown or not header or header[0] != self.columns[0]):
            what = f"unknown columns {', '.join(unknown)}" if unknown else "no outer_step first"
            raise MetricsDamaged(
                f"{self.path} has a damaged header ({what}): it is not a metrics file this run "
                "wrote, and continuing would mix two files"
            )
        rows: list[dict[str, str]] = []
        for number, line in enumerate(lines[1:], start=2):
            fields = next(csv.reader([line]), [])
            step = _step(fields) if len(fields) == len(header) and line.endswith("\n") else None
            if step is None:
                if number == len(lines) and expected is not None and len(rows) == expected:
                    break
                what = "is damaged" if len(fields) > len(header) else "is cut short"
                raise MetricsDamaged(
                    f"{self.path} line {number} {what} ({len(fields)} of {len(header)} "
                    "fields): continuing would leave a hole in the run's metrics"
                )
            if step > outer_step:
                break
            previous = int(rows[-1]["outer_step"]) if rows else None
            if previous is not None and (
                step < previous or (step == previous and self.one_row_per_step)
            ):
                raise MetricsDamaged(
                    f"{self.path} line {number} repeats or goes back to outer step {step}"
                )
            rows.append(dict(zip(header, fields, strict=True)))
        if expected is not None and len(rows) != expected:
            raise MetricsDamaged(
                f"{self.path} holds {len(rows)} rows up to outer step {outer_step}, but the run "
                f"had written {expected} when it saved its checkpoint there: rows are missing, "
                "and continuing would leave a hole in the run's metrics"
            )
        return rows

    def keep_until(self, outer_step: int, expected: int | None = None) -> None:
        """Drop every row after ``outer_step`` (atomically), as a resumed run must, after
        :meth:`checked_rows` has checked those before it."""
        kept = self.checked_rows(outer_step, expected)
        with replacing(self.path) as partial, partial.open("w", newline="") as handle:
            writer = csv.DictWriter(handle, fieldnames=self.columns)
            writer.writeheader()
            writer.writerows(kept)
            handle.flush()
            os.fsync(handle.fileno())


def _step(fields: list[str]) -> int | None:
    """The outer step of a row's fields, ``None`` when it is not an integer."""
    try:
        return int(fields[0])
    except (IndexError, ValueError):
        return None


def _format(value: Any) -> Any:
    if value is None or (isinstance(value, float) and math.isnan(value)):
        return ""
    if isinstance(value, float):
        return repr(value)
    return value


def write_json(path: Path, content: dict[str, Any]) -> None:
    """Write ``content`` as indented JSON, replacing the file atomically
    (:func:`.writes.replacing`)."""
    with replacing(path) as partial:
        partial.write_text(json.dumps(content, indent=2, default=str) + "\n")
