"""What ``hpo-run`` prints: one line every ``log_every`` outer steps (:func:`log_due`) and a
final block (:func:`summary_block`). The tqdm bar is drawn on an interactive terminal only."""

from __future__ import annotations

from pathlib import Path
from typing import Any


def log_due(outer_step: int, eval_every: int, log_every: int, last: bool) -> bool:
    """Whether the metrics row of ``outer_step`` gets a console line: the first row at or after
    each multiple of ``log_every`` (rows come every ``eval_every`` steps), and the last one."""
    return last or outer_step // log_every > (outer_step - eval_every) // log_every


def _row_line(row: dict[str, Any] | None) -> str:
    if row is None:
        return "none"
    return (
        f"outer step {row['outer_step']}: val loss {row['val_loss']:.4g}, val error "
        f"{row['val_error']:.3f}, test error {row['test_error']:.3f}"
    )


def summary_block(summary: dict[str, Any], run_dir: Path, trackers: list[str]) -> str:
    """The closing block: why the run stopped, best and final rows, the time split, the files
    and where each tracker shows the run."""
    time_s = dict(summary["time_s"] or {})
    total = time_s.pop("total", 0.0)
    split = ", ".join(f"{name} {seconds:.1f} s" for name, seconds in time_s.items())
    other = total - sum(time_s.values())
    files = sorted(
        path.name
        for path in run_dir.iterdir()
        if path.is_file() and path.suffix in (".csv", ".json", ".pt", ".png")
    )
    best = summary["best"] or {"monitor": "val_error", "row": summary["best_by_validation"]}
    lines = [
        f"hpo-run {summary['status']}"
        + ("" if summary["stop_reason"] == summary["status"] else f": {summary['stop_reason']}"),
        f"  best by {best['monitor']}: {_row_line(best['row'])}",
        f"  final: {_row_line(summary['final'])}",
        f"  time: {total:.1f} s ({split}, other {other:.1f} s)",
        f"  files in {run_dir}: {', '.join(files)}",
        *(f"  {line}" for line in trackers),
    ]
    return "\n".join(lines)
