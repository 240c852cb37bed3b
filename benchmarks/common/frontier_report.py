"""The tables and the plot of ``benchmarks.solvers_in_the_loop --frontier``: from the loop's
records (``benchmarks.common.loop_run``), each configuration's point, each library's frontier,
hpo-cli's speed-up over each peer where their frontiers overlap, and the lowest error each
library reaches (``benchmarks.common.frontier`` holds the maths)."""

from __future__ import annotations

import statistics
from collections.abc import Sequence
from pathlib import Path

import matplotlib

from benchmarks.common.frontier import (
    Point,
    error_range,
    overlap,
    pareto_front,
    speedups,
    time_at_error,
)
from benchmarks.common.frontier_grid import library
from benchmarks.common.harness import Column, Table, fmt_ms, fmt_ratio, fmt_sci
from benchmarks.common.loop_run import REFERENCE_TOL, LoopProblem, Record

OURS = "hpo-cli"
# The reference is CG to ‖r‖ ≤ 10⁻⁶‖b‖ in float32: its own error is of the order of κ·10⁻⁶, so
# a smaller error says only that a solver took the reference's own path (hpo-cli's cold CG at
# 10⁻⁶ *is* the reference: error 0). Errors below this floor count as the floor.
ERROR_FLOOR = 10 * REFERENCE_TOL
CLOCKS = {"wall": "wall", "cpu": "thread CPU"}


def points(records: dict[str, Record], clock: str) -> list[Point]:
    """One point per configuration: the medians over the run's hyper-steps of its time
    (``clock``: "wall" or "cpu", this thread's CPU time) and of its relative error, raised to
    ``ERROR_FLOOR``."""
    return [
        Point(
            library(label),
            label.split(": ", 1)[1],
            statistics.median(record.times_ms if clock == "wall" else record.cpu_ms),
            max(statistics.median(record.errors), ERROR_FLOOR),
        )
        for label, record in records.items()
    ]


def fronts(all_points: Sequence[Point]) -> dict[str, list[Point]]:
    """Each library's frontier, hpo-cli first."""
    libraries = sorted({p.library for p in all_points}, key=lambda name: (name != OURS, name))
    return {name: pareto_front(p for p in all_points if p.library == name) for name in libraries}


CONFIG_COLUMNS = [
    Column("library", "library"),
    Column("config", "configuration"),
    Column("products", "products / step", lambda v: f"{v:.1f}"),
    Column("median_ms", "median wall ms", fmt_ms),
    Column("median_cpu_ms", "median CPU ms", fmt_ms),
    Column("median_error", "median rel. error", fmt_sci),
    Column("max_error", "max rel. error", fmt_sci),
    Column("on_frontier", "on its frontier"),
]
SPEEDUP_COLUMNS = [
    Column("peer", "peer"),
    Column("error", "rel. error", fmt_sci),
    Column("peer_ms", "peer ms (frontier)", fmt_ms),
    Column("ours_ms", "hpo-cli ms (frontier)", fmt_ms),
    Column("speedup", "peer / hpo-cli", fmt_ratio),
]


def config_table(
    problem: LoopProblem, records: dict[str, Record], front: dict[str, list[Point]], clock: str
) -> Table:
    on_front = {(p.library, p.config) for points in front.values() for p in points}
    table = Table(
        section=f"{problem.name}-configs",
        title=f"{problem.title}: every configuration (frontier on {CLOCKS[clock]} time)",
        columns=CONFIG_COLUMNS,
    )
    for label, record in records.items():
        name, config = library(label), label.split(": ", 1)[1]
        table.rows.append(
            {
                "library": name,
                "config": config,
                "products": statistics.fmean(record.products),
                "median_ms": statistics.median(record.times_ms),
                "median_cpu_ms": statistics.median(record.cpu_ms),
                "median_error": statistics.median(record.errors),
                "max_error": max(record.errors),
                "on_frontier": "yes" if (name, config) in on_front else "",
            }
        )
    table.rows.sort(key=lambda row: (row["library"] != OURS, row["library"], row["median_error"]))
    return table


def frontier_table(
    problem: LoopProblem, records: dict[str, Record], front: dict[str, list[Point]], clock: str
) -> Table:
    """Each library's frontier points, fastest first, and where each library cannot reach."""
    rows = config_table(problem, records, front, clock).rows
    table = Table(
        section=f"{problem.name}-frontier",
        title=f"{problem.title}: each library's frontier ({CLOCKS[clock]} time against error)",
        columns=CONFIG_COLUMNS[:-1],
        rows=[row for row in rows if row["on_frontier"]],
    )
    key = "median_ms" if clock == "wall" else "median_cpu_ms"
    table.rows.sort(key=lambda row: (row["library"] != OURS, row["library"], row[key]))
    for name, points in front.items():
        low, high = error_range(points)
        reach = (
            f"it reaches the reference's own accuracy (errors ≤ {ERROR_FLOOR:.0e} count as "
            f"{ERROR_FLOOR:.0e}) with {points[-1].config} in {points[-1].time_ms:.3g} ms"
            if low <= ERROR_FLOOR
            else f"it cannot reach below {low:.1e} (its most accurate configuration, "
            f"{points[-1].config}, {points[-1].time_ms:.3g} ms)"
        )
        table.notes.append(
            f"{name}: its fastest configuration reaches {high:.1e} in {points[0].time_ms:.3g} ms; "
            f"{reach}."
        )
    return table


def speedup_table(problem: LoopProblem, front: dict[str, list[Point]], clock: str) -> Table:
    """hpo-cli's speed-up over each peer at the errors where their frontiers overlap (two levels
    a decade, times interpolated in log-log on each frontier)."""
    table = Table(
        section=f"{problem.name}-speedup",
        title=f"{problem.title}: {CLOCKS[clock]} time at equal error, on the frontiers",
        columns=SPEEDUP_COLUMNS,
    )
    if OURS not in front:
        return table
    ours = front[OURS]
    for peer, theirs in front.items():
        if peer == OURS:
            continue
        shared = overlap(ours, theirs)
        if shared is None:
            low, high = error_range(theirs)
            table.notes.append(
                f"{peer}: no overlap with hpo-cli's frontier (errors {low:.1e}–{high:.1e} "
                f"against hpo-cli's {error_range(ours)[0]:.1e}–{error_range(ours)[1]:.1e})."
            )
            continue
        for error, ratio in speedups(ours, theirs):
            table.rows.append(
                {
                    "peer": peer,
                    "error": error,
                    "peer_ms": time_at_error(theirs, error),
                    "ours_ms": time_at_error(ours, error),
                    "speedup": ratio,
                }
            )
        table.notes.append(
            f"{peer}: frontiers overlap on errors {shared[0]:.1e}–{shared[1]:.1e}; "
            f"{beyond(shared[0], error_range(ours)[0], peer, error_range(theirs)[0])}."
        )
    return table


def beyond(shared_low: float, ours_low: float, peer: str, theirs_low: float) -> str:
    """Who reaches below the errors two frontiers share."""
    if ours_low < shared_low:
        return f"below {shared_low:.1e} only hpo-cli reaches (down to {ours_low:.1e})"
    if theirs_low < shared_low:
        return f"below {shared_low:.1e} only {peer} reaches (down to {theirs_low:.1e})"
    if shared_low <= ERROR_FLOOR:
        return "both reach the reference's own accuracy"
    return f"neither reaches below {shared_low:.1e}"


def plot_frontiers(
    panels: Sequence[tuple[str, Sequence[Point], dict[str, list[Point]]]],
    path: Path,
    clock: str,
) -> None:
    """One log-log panel per problem: every configuration as a faint dot, each library's
    frontier as a line, in the library's colour, and the error floor (``ERROR_FLOOR``)."""
    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    figure, axes = plt.subplots(1, len(panels), figsize=(6.5 * len(panels), 5), squeeze=False)
    names = sorted({p.library for _, pts, _ in panels for p in pts}, key=lambda n: (n != OURS, n))
    colour = {name: f"C{i}" for i, name in enumerate(names)}
    for ax, (title, all_points, front) in zip(axes[0], panels, strict=True):
        for name, points in front.items():
            mine = [p for p in all_points if p.library == name and p.error > 0]
            ax.loglog(
                [p.time_ms for p in mine],
                [p.error for p in mine],
                ".",
                color=colour[name],
                alpha=0.3,
            )
            ax.loglog(
                [p.time_ms for p in points],
                [p.error for p in points],
                "o-",
                color=colour[name],
                label=name,
            )
        ax.axhline(ERROR_FLOOR, color="grey", linestyle=":", label="the reference's accuracy")
        ax.set_xlabel(f"median {CLOCKS[clock]} time per hyper-step (ms)")
        ax.set_ylabel("median relative error vs tight CG")
        ax.set_title(title, fontsize=10)
        ax.grid(True, which="both", alpha=0.3)
        ax.legend(fontsize=8)
    figure.suptitle("Time to accuracy in hpo-run's loop: each library's frontier")
    figure.tight_layout()
    path.parent.mkdir(parents=True, exist_ok=True)
    figure.savefig(path, dpi=110)
    plt.close(figure)
