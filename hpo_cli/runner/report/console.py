"""What ``hpo-run`` prints: one line every ``log_every`` outer steps (:func:`log_due`) and a
final block (:func:`summary_block`). The tqdm bar is drawn on an interactive terminal only."""

from __future__ import annotations

from pathlib import Path
from typing import Any


def log_due(outer_step: int, eval_every: int, log_every: int, last: bool) -> bool:
    """Whether the metrics row of ``outer_step`` gets a console line: the first row at or after
    each multiple of ``log_every`` (rows come every ``eval_every`` steps), and the last one."""
    return last or outer_step // log_every > (outer_step - eval_every) // log_every


def clock(seconds: float) -> str:
    """``4.2s``, ``42s``, ``3m05s``, ``2h07m``: a duration as the console shows it."""
    if seconds < 9.95:
        return f"{max(seconds, 0.0):.1f}s"
    seconds = round(seconds)
    if seconds < 60:
        return f"{seconds}s"
    if seconds < 3600:
        return f"{seconds // 60}m{seconds % 60:02d}s"
    return f"{seconds // 3600}h{seconds % 3600 // 60:02d}m"


def eta_text(done: int, total: int, elapsed_s: float) -> str:
    """``elapsed 12s, ETA 35s``: the time this process has run, and the outer steps still to
    do (``total - done``) times the mean time of the ``done`` steps it has run (``ETA ?``
    before the first). Early stopping may end the run sooner."""
    if done <= 0:
        return f"elapsed {clock(elapsed_s)}, ETA ?"
    return f"elapsed {clock(elapsed_s)}, ETA {clock(max(total - done, 0) * elapsed_s / done)}"


def _row_line(row: dict[str, Any] | None) -> str:
    if row is None:
        return "none"
    return (
        f"outer step {row['outer_step']}: val loss {row['val_loss']:.4g}, val error "
        f"{row['val_error']:.3f}, test error {row['test_error']:.3f}"
    )


def _solver_lines(summary: dict[str, Any]) -> list[str]:
    """The hyper-steps by solver status with the residual's median and max, and the run's
    solver health (:mod:`hpo_cli.runner.loop.solver_health`); nothing without hyper-steps."""
    solves = summary.get("solves")
    if not solves or not solves["hyper_steps"]:
        return []
    ranked = sorted(solves["statuses"].items(), key=lambda item: (-item[1], item[0]))
    residual = solves["residual"]
    spread = (
        f"; ‖Hx − b‖/‖b‖ median {residual['median']:.3g}, max {residual['max']:.3g}"
        if residual["median"] is not None
        else ""
    )
    doubtful = sum(solves["doubtful"].values())
    health = (
        f"solver health: {summary['solver_health']} ({doubtful} of {solves['hyper_steps']} "
        "hyper-steps doubtful"
        + (
            ": their hypergradients may point anywhere; see the warning)"
            if summary["solver_health"] == "doubtful"
            else ")"
        )
    )
    return [
        f"solver: {solves['hyper_steps']} hyper-steps, "
        + ", ".join(f"{count} {status}" for status, count in ranked)
        + spread,
        health,
    ]


def summary_block(summary: dict[str, Any], run_dir: Path, trackers: list[str]) -> str:
    """The closing block: why the run stopped, best and final rows, the hyper-steps' solver
    statuses and health, the time split, the files and where each tracker shows the run."""
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
        *(f"  {line}" for line in _solver_lines(summary)),
        f"  time: {total:.1f} s ({split}, other {other:.1f} s)",
        f"  files in {run_dir}: {', '.join(files)}",
        *(f"  {line}" for line in trackers),
    ]
    return "\n".join(lines)
