"""``summary.json``: the final and best values of a run, its timings and its provenance."""

from __future__ import annotations

import math
import platform
import statistics
from importlib.metadata import version
from pathlib import Path
from typing import Any

import pandas as pd
import torch

from hpo_cli.runner.loop import solver_health
from hpo_cli.runner.rundir.metrics import write_json
from hpo_cli.runner.rundir.names import BEST_CHECKPOINT, METRICS, SUMMARY


def read_metrics(run_dir: Path) -> list[dict[str, Any]]:
    """The rows of ``metrics.csv`` with their types (missing values as ``None``)."""
    path = run_dir / METRICS
    if not path.exists() or path.stat().st_size == 0:
        return []
    frame = pd.read_csv(path)
    return [
        {key: None if pd.isna(value) else value for key, value in row.items()}
        for row in frame.astype(object).to_dict("records")
    ]


def library_versions() -> dict[str, str]:
    packages = ("hpo-cli", "torch", "torchvision", "hydra-core", "omegaconf")
    return {"python": platform.python_version(), **{name: version(name) for name in packages}}


def best_of_monitor(
    run_dir: Path, rows: list[dict[str, Any]], state: dict[str, Any] | None
) -> dict[str, Any] | None:
    """The early-stopping rule's best evaluation (:mod:`hpo_cli.runner.loop.early_stopping`, kept
    whether or not the rule may stop the run): monitor, step, value, its metrics row and, when
    early stopping is on, ``checkpoint_best.pt``."""
    if not state or state.get("best_step") is None:
        return None
    step = state["best_step"]
    checkpoint = BEST_CHECKPOINT if (run_dir / BEST_CHECKPOINT).exists() else None
    return {
        "monitor": state["monitor"],
        "step": step,
        "value": state["best"],
        "row": next((row for row in rows if row["outer_step"] == step), None),
        "checkpoint": checkpoint,
    }


def validation_rank(row: dict[str, Any]) -> tuple[float, float]:
    """The order of best-by-validation: the lower error, then the lower loss; a missing value
    (a diverged evaluation's NaN, read back as ``None``) ranks last."""
    return tuple(  # type: ignore[return-value]
        math.inf if row[key] is None else row[key] for key in ("val_error", "val_loss")
    )


def hypergradient_quality(probes: list[list[float]] | None) -> dict[str, Any] | None:
    """``quality_every``'s probes in summary.json: how many, the median cosine of the run's
    hypergradient with its reference over the finite ones, and the last probe's step and cosine
    (``None`` where not finite); ``None`` when the run made no probe."""
    if not probes:
        return None
    cosines = [cosine for _, cosine in probes if math.isfinite(cosine)]
    step, last = probes[-1]
    return {
        "probes": len(probes),
        "median_cosine": statistics.median(cosines) if cosines else None,
        "last_cosine": last if math.isfinite(last) else None,
        "last_step": int(step),
    }


def write_summary(
    run_dir: Path,
    *,
    status: str,
    progress: Any,
    overrides: list[str],
    error: str | None = None,
) -> dict[str, Any]:
    """Write ``summary.json`` from ``metrics.csv`` and the run's progress; return its content.
    ``solver_health`` (``ok``, ``doubtful``, ``None`` without hyper-steps) and ``solves`` (the
    hyper-steps by solver status, the doubtful ones, the residual's median and max) are
    :func:`hpo_cli.runner.loop.solver_health.summary`'s; ``hypergrad_cosine`` (the
    ``quality_every`` probes) is :func:`hypergradient_quality`'s.

    ``progress`` is the :class:`hpo_cli.runner.loop.progress.Progress` of the run, or ``None``
    when the run stopped before it had any.
    """
    rows = read_metrics(run_dir)
    best = min(rows, key=validation_rank) if rows else None
    device = progress.device if progress else None
    stop_reason = progress.stop_reason if progress and status == "completed" else None
    solves = solver_health.summary(progress.solves) if progress else None
    summary = {
        "status": status,
        "stop_reason": stop_reason or status,
        "error": error,
        "outer_steps": progress.outer_step if progress else None,
        "total_inner_steps": progress.total_inner_steps if progress else None,
        "skipped_hyper_steps": progress.skipped_hyper_steps if progress else None,
        "solver_health": solves.pop("health") if solves else None,
        "solves": solves,
        "hypergrad_cosine": hypergradient_quality(progress.quality) if progress else None,
        "final": rows[-1] if rows else None,
        "best_by_validation": best,
        "best": best_of_monitor(run_dir, rows, progress.early_stopping if progress else None),
        "time_s": {"total": progress.elapsed_s, **progress.phase_s} if progress else None,
        "device": device,
        "cuda_device": torch.cuda.get_device_name() if device and "cuda" in device else None,
        "versions": library_versions(),
        "overrides": overrides,
    }
    write_json(run_dir / SUMMARY, summary)
    return summary
