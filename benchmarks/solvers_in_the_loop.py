"""Hypergradients where they are used: every hyper-step of a run, cold against warm, and the peers.

Run from the repository root::

    python -m benchmarks.solvers_in_the_loop              # both problems on the CPU (minutes)
    python -m benchmarks.solvers_in_the_loop --quick      # tiny sizes: a smoke run in seconds
    python -m benchmarks.solvers_in_the_loop --peers      # fail (exit 1, one line) without a peer
    python -m benchmarks.solvers_in_the_loop --threads 1 --out /tmp/bench
    python -m benchmarks.solvers_in_the_loop --frontier --threads 1 --clock cpu  # frontiers

With ``--frontier`` the run sweeps each library's own knobs instead (Neumann products, α or
its estimate, warm starts, Krylov series, CG tolerances; ``benchmarks.common.frontier_grid``),
every configuration on the same damped system, and reports each library's frontier of time
against error, hpo-cli's speed-up over each peer where the frontiers overlap and the lowest error
each library reaches (``benchmarks.common.frontier_report``), with a plot:
``<out>/solvers_in_the_loop_frontier_<device>[_quick].{md,csv,png}``.

Section 8, one table per problem: (a) hpo-run's default experiment (digits, MLP 64-64-10,
per-weight weight decay, Adam inside, RMSprop outside); (b) the MLP 784-256-256-10 (ReLU) with
per-weight weight decay on synthetic MNIST-shaped data (``benchmarks.common.synthetic``: Gaussian
images, labels from a random linear teacher), built through the runner like (a). The run is the
runner's own: ``inner_steps`` calls of ``hpo_cli.runner.loop.train.inner_step`` per outer step, then
the hyper-step on batches drawn as ``hyper_step`` draws them, driven by hpo-cli's cold Neumann
(the default solver). At every hyper-step each method computes the hypergradient at that same
state (losses built inside the timed call, ``check_residual=False`` for all, so hpo-cli's
products exclude the runner's one-product residual check):

* Neumann family (K = 3 products, terms=4, hpo-run's default): hpo-cli cold (α = auto from 10
  Lanczos steps from ∂L_v/∂w every call, and rows with 4 and 6 steps) and warm (λ̂max kept, refreshed
  every 1, 3 or 10 calls by 3 Lanczos steps from the kept Ritz vector), and cold with
  ``krylov_series=True`` (10 and 6 steps: the series summed from the Lanczos vectors, no
  product); the peers' Neumann
  series with a fixed α = 1/λ̂max estimated once before the run (100 Lanczos steps), as they
  are used. Reference: the same K-term series with α = 1/λmax, λmax from ARPACK's implicitly
  restarted Lanczos at that state (relative accuracy 10⁻⁴, independent of any start vector).
* CG family on (H + μI)x = b, μ = max(0, −λ̂min) + 0.1·λ̂max at the first state (100
  Lanczos steps; H is indefinite here), stopping at ‖r‖ ≤ 10⁻³‖b‖:
  hpo-cli cold and warm; preconditioned by Hutchinson's diagonal (4 probes, counted in the
  products, re-estimated every 1 or 10 calls; cold, and warm at 10) or by the inner Adam's
  second moments (cold); without ``--quick``, cold with ``compile=True`` (its first call
  includes the compilation, reported in a note with the hyper-steps that repay it);
  torchopt's ``solve_cg(rtol=10⁻³)`` and curvlinops'
  ``CGInverseLinearOperator(tolerance=10⁻³)`` on the same damped, counted product, cold.
  Reference: CG to ‖r‖ ≤ 10⁻⁶‖b‖ (or 1,000 iterations).

Accuracy is ‖g − g*‖/‖g*‖ against the reference's hypergradient g* at the same state. Times are
single calls (warm state changes from call to call, so a call cannot be repeated), timed with
``time.perf_counter`` in an order rotated at every step so that load hits all methods alike.
Output: ``<out>/loop_<device>[_quick].{md,csv}``. The run itself (the states, the list of
methods, the loop) is ``benchmarks.common.loop_run``; this module turns its records into the tables.
"""

from __future__ import annotations

import argparse
import statistics
import sys
from collections.abc import Sequence
from dataclasses import replace
from typing import Any

from benchmarks.common.frontier_grid import FULL, QUICK, frontier_family
from benchmarks.common.frontier_report import (
    config_table,
    frontier_table,
    fronts,
    plot_frontiers,
    points,
    speedup_table,
)
from benchmarks.common.harness import (
    DEFAULT_SIZES,
    QUICK_SIZES,
    BenchmarkRun,
    Column,
    Table,
    benchmark_command,
    benchmark_parser,
    fmt_ms,
    fmt_ratio,
    fmt_sci,
    log,
    parse_benchmark_args,
    report_stem,
    resolve_device,
    write_report,
)
from benchmarks.common.loop_run import (
    COMPILED,
    Family,
    LoopProblem,
    Record,
    problems,
    run_families,
    run_problem,
)
from benchmarks.common.machine import CpuSnapshot
from benchmarks.common.peer_adapters import add_peers_flag, peer_status, require_peers

EQUAL_ACCURACY = 1.05  # errors within this factor count as equal
TARGET_PRODUCTS, TARGET_PEER_TIME = 2.0, 1.3


def summary_rows(family: Family, records: dict[str, Record]) -> list[dict[str, Any]]:
    rows = []
    for label in family.methods:
        record = records[label]
        counts: dict[str, int] = {}
        for status in record.statuses:
            counts[status] = counts.get(status, 0) + 1
        rows.append(
            {
                "family": family.name,
                "method": label,
                "steps": len(record.products),
                "products": statistics.fmean(record.products),
                "median_ms": statistics.median(record.times_ms),
                "total_s": sum(record.times_ms) / 1e3,
                "median_error": statistics.median(record.errors),
                "max_error": max(record.errors),
                "statuses": ", ".join(f"{n} {s}" for s, n in counts.items() if s),
            }
        )
    cold = next(row for row in rows if row["method"] == family.cold)
    for row in rows:
        row["products_vs_cold"] = row["products"] / cold["products"]
        row["time_vs_cold"] = row["median_ms"] / cold["median_ms"]
    return rows


def verdicts(family: Family, rows: list[dict[str, Any]]) -> list[str]:
    """One line per warm variant against cold (products at equal accuracy), and one on the
    fastest peer against the fastest hpo-cli method at least as accurate as it."""
    by = {row["method"]: row for row in rows}
    cold = by[family.cold]
    notes = []
    for label in family.warm:
        warm = by[label]
        ratio = cold["products"] / warm["products"]
        equal = warm["median_error"] <= EQUAL_ACCURACY * cold["median_error"]
        met = ratio >= TARGET_PRODUCTS and equal
        notes.append(
            f"{label}: {ratio:.2f}× fewer products per hyper-step than cold, median error "
            f"{warm['median_error']:.2g} vs cold {cold['median_error']:.2g} "
            f"({'equal or better' if equal else 'less accurate'}): the target (≥ "
            f"{TARGET_PRODUCTS:g}× fewer at equal accuracy) is {'met' if met else 'missed'}."
        )
    peers = [row for row in rows if not row["method"].startswith("hpo-cli")]
    if not peers:
        return [*notes, f"{family.name}: no peer available, no peer comparison."]
    fastest = min(peers, key=lambda row: row["median_ms"])
    ours = [
        row
        for row in rows
        if row["method"].startswith("hpo-cli")
        and row["median_error"] <= EQUAL_ACCURACY * fastest["median_error"]
    ]
    if not ours:
        return [*notes, f"{family.name}: no hpo-cli method is as accurate as {fastest['method']}."]
    best = min(ours, key=lambda row: row["median_ms"])
    speedup = fastest["median_ms"] / best["median_ms"]
    notes.append(
        f"{family.name}: the fastest peer ({fastest['method']}, median error "
        f"{fastest['median_error']:.2g}) takes {speedup:.2f}× the time of the fastest hpo-cli "
        f"method at least as accurate ({best['method']}, {best['median_error']:.2g}): the "
        f"target (≥ {TARGET_PEER_TIME:g}×) is {'met' if speedup >= TARGET_PEER_TIME else 'missed'}."
    )
    return notes


COLUMNS = [
    Column("family", "family"),
    Column("method", "method"),
    Column("steps", "hyper-steps"),
    Column("products", "products / step", lambda v: f"{v:.1f}"),
    Column("products_vs_cold", "× cold products", fmt_ratio),
    Column("median_ms", "median ms / step", fmt_ms),
    Column("time_vs_cold", "× cold time", fmt_ratio),
    Column("total_s", "total s", lambda v: f"{v:.2f}"),
    Column("median_error", "median rel. error", fmt_sci),
    Column("max_error", "max rel. error", fmt_sci),
    Column("statuses", "solver statuses"),
]


def compile_note(records: dict[str, Record]) -> list[str]:
    """The compiled CG against the eager cold one: the compilation (its first call less the
    median of its later calls), the time saved per call (medians of calls 2..n) and the
    hyper-steps that repay the compilation."""
    if COMPILED not in records or len(records[COMPILED].times_ms) < 2:
        return []
    compiled = records[COMPILED].times_ms
    eager = records["hpo-cli: cg, cold"].times_ms
    per_call = statistics.median(compiled[1:])
    overhead = compiled[0] - per_call
    saving = statistics.median(eager[1:]) - per_call
    repaid = (
        f"repaid after {overhead / saving:.0f} hyper-steps"
        if saving > 0
        else "never repaid (no time saved per call)"
    )
    return [
        f"{COMPILED}: compilation {overhead / 1e3:.1f} s; {saving:+.2f} ms saved per call "
        f"against the eager cold CG ({per_call:.2f} ms per call compiled): {repaid}."
    ]


def step_note(records: dict[str, Record]) -> list[str]:
    """How close each hpo-cli Neumann row's λ̂max (α = 1/λ̂max) is to ARPACK's λmax."""
    notes = []
    for label, record in records.items():
        if record.lambda_ratios:
            ratios = record.lambda_ratios
            notes.append(
                f"{label}: λ̂max / λmax (ARPACK) over the run: min {min(ratios):.3f}, median "
                f"{statistics.median(ratios):.3f}, max {max(ratios):.3f}."
            )
    return notes


def section_loop(
    problem: LoopProblem, available: set[str], missing: list[str], compiled: bool
) -> Table:
    log(f"section 8: {problem.title}")
    chosen, records = run_problem(problem, available, compiled)
    table = Table(section=problem.name, title=problem.title, columns=COLUMNS)
    for family in chosen:
        rows = summary_rows(family, records)
        table.rows += rows
        table.notes += verdicts(family, rows)
    table.notes += compile_note(records)
    table.notes += step_note(records)
    table.notes += [
        f"Overrides of hpo-run's defaults: {' '.join(problem.overrides) or 'none'}; "
        f"{problem.outer_steps} hyper-steps, driven by hpo-cli's cold Neumann (the default). "
        "Errors: ‖g − g*‖/‖g*‖ against the family's reference at the same state (module "
        "docstring); times: one call per step, median over the run.",
    ]
    if missing:
        table.notes.append(f"Peers not available (no rows): {', '.join(missing)}.")
    return table


def section_frontier(
    problem: LoopProblem, available: set[str], quick: bool, clock: str
) -> tuple[list[Table], tuple[str, list, dict]]:
    """The frontier run on ``problem``: its three tables and its plot panel."""
    log(f"frontiers: {problem.title}")
    grid = QUICK if quick else FULL
    _, records = run_families(
        problem, lambda alpha, damping: frontier_family(grid, alpha, damping, available)
    )
    all_points = points(records, clock)
    front = fronts(all_points)
    tables = [
        frontier_table(problem, records, front, clock),
        speedup_table(problem, front, clock),
        config_table(problem, records, front, clock),
    ]
    tables[0].notes.append(
        f"{problem.outer_steps} hyper-steps of hpo-run's loop (overrides: "
        f"{' '.join(problem.overrides) or 'none'}), driven by hpo-cli's cold Neumann (the "
        "default); every configuration solves (H + μI)x = ∂L_v/∂w at each hyper-step's state; "
        "errors ‖g − g*‖/‖g*‖ against CG to 10⁻⁶ on that system; medians over the hyper-steps."
    )
    return tables, (problem.title, all_points, front)


def parse_args(argv: Sequence[str] | None) -> argparse.Namespace:
    parser = benchmark_parser(
        "solvers_in_the_loop", "Cold vs warm hypergradients over a run, and the peers."
    )
    add_peers_flag(parser)
    parser.add_argument(
        "--frontier",
        action="store_true",
        help="sweep each library's knobs and report its frontier of time against error",
    )
    parser.add_argument(
        "--clock",
        choices=("wall", "cpu"),
        default="wall",
        help="the frontier's time: wall, or this thread's CPU time (needs --threads 1)",
    )
    parser.add_argument(
        "--hyper-steps", type=int, default=None, help="hyper-steps per problem (default: 30, 20)"
    )
    args = parse_benchmark_args(parser, argv)
    if args.clock == "cpu" and args.threads != 1:
        parser.error("--clock cpu measures one thread's CPU time: it needs --threads 1")
    if args.hyper_steps is not None and args.hyper_steps < 1:
        parser.error("--hyper-steps must be >= 1")
    return args


def main(argv: Sequence[str] | None = None) -> int:
    args = parse_args(argv)
    device = resolve_device(args.device)
    status = peer_status()
    missing = require_peers({k: v for k, v in status.items() if k != "higher"}, args.peers)
    available = set(status) - set(missing)
    sizes = QUICK_SIZES if args.quick else DEFAULT_SIZES
    command = benchmark_command("solvers_in_the_loop", argv)
    chosen = problems(args.quick, f"device={device.type}")
    if args.hyper_steps is not None:
        chosen = [replace(problem, outer_steps=args.hyper_steps) for problem in chosen]
    start = CpuSnapshot.now()
    if args.frontier:
        stem = report_stem("solvers_in_the_loop_frontier", device, args.quick)
        results = [section_frontier(p, available, args.quick, args.clock) for p in chosen]
        tables = [table for problem_tables, _ in results for table in problem_tables]
        figure = args.out / f"{stem}.png"
        plot_frontiers([panel for _, panel in results], figure, args.clock)
        tables[0].notes.append(f"The frontiers, both problems: ![frontiers]({figure.name})")
        if missing:
            tables[0].notes.append(f"Peers not available (no frontier): {', '.join(missing)}.")
        title = "hpo-cli and its peers in the loop: time to accuracy"
    else:
        stem = report_stem("solvers_in_the_loop", device, args.quick)
        tables = [
            section_loop(problem, available, missing, compiled=not args.quick) for problem in chosen
        ]
        title = "hpo-cli hypergradients in the loop"
    run = BenchmarkRun(command, device, sizes, args.quick, start, CpuSnapshot.now())
    write_report(
        args.out,
        stem,
        title,
        run,
        tables,
        dtype="float32",
        timer="time.perf_counter (wall) and time.thread_time (CPU) around one call per method "
        "and hyper-step (warm state changes between calls, so none is repeated); order rotated "
        "every step",
    )
    return 0


if __name__ == "__main__":
    sys.exit(main())
