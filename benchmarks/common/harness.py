"""The harness every hpo-cli benchmark shares: sizes, timing, tables, reports, command line.

- Timing: ``measure_group`` times statements side by side with
  ``torch.utils.benchmark.Timer.adaptive_autorange`` (one warm-up call each, then interleaved
  rounds so that a change of machine load hits them alike); each ``Timing`` is the median over
  all blocks with its interquartile range (IQR).
- Tables: a ``Table`` is a list of rows (dicts) with ``Column`` formats and notes; a median whose
  IQR exceeds ``NOISY_IQR`` of it is marked † in the Markdown.
- Reports: ``write_report`` writes ``<out>/<stem>.md`` and ``.csv`` (machine information on every
  CSV row) and prints the Markdown, with the machine table, the command, the wall time and the
  load other processes put on the machine (:mod:`benchmarks.common.machine`).
- Command line: ``benchmark_parser`` / ``parse_benchmark_args`` give every benchmark the flags
  --device, --threads, --quick and --out; progress goes to stderr through ``log``.
"""

from __future__ import annotations

import argparse
import csv
import datetime
import os
import platform
import shlex
import sys
import time
from collections.abc import Callable, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import torch
from torch.utils import benchmark

from benchmarks.common.machine import CpuSnapshot, background_warning, device_name, other_cores

IQR_THRESHOLD = 0.05  # adaptive_autorange stops once IQR/median falls below this
NOISY_IQR = 0.2  # a median whose IQR exceeds this fraction of it is marked † in the tables


@dataclass(frozen=True)
class Sizes:
    """Problem sizes and timing budget of one run."""

    inputs: int = 784
    hidden: int = 256
    classes: int = 10
    batch: int = 128
    lenet_batch: int = 128
    resnet_batch_cpu: int = 8  # ResNet-18 at full batch only on the GPU
    resnet_batch_cuda: int = 128
    ridge_train: int = 200
    ridge_val: int = 200
    ridge_dim: int = 50
    reduced_inputs: int = 64  # the reduced-width MLP of 3c, small enough for a dense Hessian
    reduced_hidden: int = 32
    ks: tuple[int, ...] = (5, 10, 20, 50)
    cg_iterations: int = 50
    pretrain_steps: int = 300
    min_run_time: float = 2.0  # per statement, spread over the rounds
    max_run_time: float = 5.0
    rounds: int = 3
    resnet_min_run_time: float = 1.0  # ResNet-18 statements take about a second each on a CPU
    resnet_max_run_time: float = 2.0


DEFAULT_SIZES = Sizes()
QUICK_SIZES = Sizes(
    inputs=64,
    hidden=32,
    batch=16,
    lenet_batch=8,
    resnet_batch_cpu=2,
    resnet_batch_cuda=2,
    ridge_train=40,
    ridge_val=40,
    ridge_dim=10,
    reduced_inputs=8,
    reduced_hidden=6,
    ks=(2, 5, 10),  # 10 = ridge_dim: CG at K = d reaches the closed form
    cg_iterations=5,
    min_run_time=0.02,
    max_run_time=0.05,
    rounds=1,
    resnet_min_run_time=0.01,
    resnet_max_run_time=0.02,
)


# --------------------------------------------------------------------------------------------
# Timing and tables
# --------------------------------------------------------------------------------------------


@dataclass(frozen=True)
class Timing:
    """Median and IQR over timed blocks of one statement, in milliseconds per run."""

    median_ms: float
    iqr_ms: float
    blocks: int
    runs: int

    def columns(self, prefix: str = "") -> dict[str, Any]:
        return {
            f"{prefix}median_ms": self.median_ms,
            f"{prefix}iqr_ms": self.iqr_ms,
            f"{prefix}blocks": self.blocks,
            f"{prefix}runs": self.runs,
        }


def summarise(measurements: Sequence[benchmark.Measurement]) -> Timing:
    """Merge the rounds of one statement (per-run times of every block) into one Timing."""
    merged = benchmark.Measurement.merge(measurements)[0]
    return Timing(
        median_ms=merged.median * 1e3,
        iqr_ms=merged.iqr * 1e3,
        blocks=len(merged.times),
        runs=sum(len(m.times) * m.number_per_run for m in measurements),
    )


def measure_group(
    statements: dict[str, Callable[[], Any]],
    sizes: Sizes,
    clock: Callable[[], float] | None = None,
) -> dict[str, tuple[Timing, Any]]:
    """Time statements side by side, after one warm-up call of each.

    ``sizes.rounds`` rounds each run ``Timer.adaptive_autorange`` on every statement in turn,
    so that a change of machine load during the group hits all of them alike; the blocks of all
    rounds are merged. ``clock``: ``None`` for torch's (wall time, the device synchronised);
    ``time.thread_time`` counts the CPU time of this thread only (on a shared machine, not the
    time spent waiting for a core; CPU statements in one thread only). Returns
    each statement's timing and the result of its warm-up call.
    """
    results = {label: fn() for label, fn in statements.items()}
    timers = {
        label: benchmark.Timer(
            stmt="fn()",
            globals={"fn": fn},
            label=label,
            num_threads=torch.get_num_threads(),
            **({} if clock is None else {"timer": clock}),
        )
        for label, fn in statements.items()
    }
    rounds: dict[str, list[benchmark.Measurement]] = {label: [] for label in statements}
    for _ in range(sizes.rounds):
        for label, timer in timers.items():
            rounds[label].append(
                timer.adaptive_autorange(
                    threshold=IQR_THRESHOLD,
                    min_run_time=sizes.min_run_time / sizes.rounds,
                    max_run_time=sizes.max_run_time / sizes.rounds,
                )
            )
    return {label: (summarise(rounds[label]), results[label]) for label in statements}


@dataclass(frozen=True)
class Column:
    """One Markdown column: the row key, its header and how to print a value."""

    key: str
    header: str
    fmt: Callable[[Any], str] = str


def fmt_ms(value: float) -> str:
    return f"{value:.3g}"


def fmt_ratio(value: float) -> str:
    return f"{value:.2f}×"


def fmt_sci(value: float) -> str:
    return f"{value:.1e}"


def fmt_cosine(value: float) -> str:
    """Cosines near 1 with enough digits to tell 0.9999 from 1 (1 − cos shown below 1e-4)."""
    gap = 1.0 - value
    if gap >= 1e-4:
        return f"{value:.4f}"
    return "1" if gap <= 0.0 else f"1 − {gap:.0e}"


@dataclass
class Table:
    """The result of one section: rows (dicts, also written to the CSV) and notes."""

    section: str
    title: str
    columns: list[Column]
    rows: list[dict[str, Any]] = field(default_factory=list)
    notes: list[str] = field(default_factory=list)


_START = time.perf_counter()


def log(message: str) -> None:
    print(f"[bench {time.perf_counter() - _START:6.1f} s] {message}", file=sys.stderr, flush=True)


def first_line(error: BaseException) -> str:
    """``Type: first line of the message`` of an exception."""
    return f"{type(error).__name__}: {str(error).splitlines()[0] if str(error) else ''}"


# --------------------------------------------------------------------------------------------
# Report
# --------------------------------------------------------------------------------------------


def machine_info(
    device: torch.device,
    sizes: Sizes,
    quick: bool,
    background: float | None,
) -> dict[str, str]:
    return {
        "date": datetime.datetime.now().astimezone().isoformat(timespec="seconds"),
        "sizes": "quick (smoke run: too small for meaningful timings)" if quick else "default",
        "platform": platform.platform(),
        "python": platform.python_version(),
        "cpu_count": str(os.cpu_count()),
        "device": device_name(device),
        "torch": torch.__version__,
        "dtype": "float32 (sections 1, 2, 3b), float64 (ridge: 3a; reduced MLP: 3c)",
        "threads": str(torch.get_num_threads()),
        "timer": (
            f"torch.utils.benchmark adaptive_autorange(threshold={IQR_THRESHOLD}, "
            f"min_run_time={sizes.min_run_time} s, max_run_time={sizes.max_run_time} s per "
            f"statement, spread over {sizes.rounds} interleaved rounds)"
        ),
        "other_processes": (
            "n/a"
            if background is None
            else f"{background:.2f} of {os.cpu_count()} cores busy on average during the run"
        ),
    }


def is_noisy(row: dict[str, Any], key: str) -> bool:
    """True for a median whose IQR exceeds NOISY_IQR of it."""
    iqr = row.get(key.removesuffix("median_ms") + "iqr_ms")
    return key.endswith("median_ms") and iqr is not None and iqr > NOISY_IQR * row[key]


def format_cell(column: Column, row: dict[str, Any]) -> str:
    value = row.get(column.key)
    if value is None:
        return "–"
    return column.fmt(value) + (" †" if is_noisy(row, column.key) else "")


def markdown_table(table: Table) -> str:
    lines = [
        f"## {table.title}",
        "",
        "| " + " | ".join(c.header for c in table.columns) + " |",
        "|" + "|".join("---" for _ in table.columns) + "|",
    ]
    lines += [
        "| " + " | ".join(format_cell(c, r) for c in table.columns) + " |" for r in table.rows
    ]
    notes = list(table.notes)
    if any(is_noisy(row, c.key) for row in table.rows for c in table.columns):
        notes.append(
            f"† IQR above {NOISY_IQR:.0%} of the median: noisy (a busy machine?); "
            "treat that time and its ratios with caution."
        )
    lines += [""] + [f"- {note}" for note in notes]
    return "\n".join(lines)


def markdown_report(
    title: str,
    machine: dict[str, str],
    tables: Sequence[Table],
    command: str,
    wall_s: float,
    warning: str | None,
) -> str:
    header = [f"# {title}", "", f"Command: `{command}`", ""]
    header += ["| machine | |", "|---|---|"]
    header += [f"| {key} | {value} |" for key, value in machine.items()]
    header += ["", warning] if warning else []
    body = [markdown_table(table) for table in tables]
    footer = f"Total wall time of this run: {wall_s:.0f} s."
    return "\n\n".join(["\n".join(header), *body, footer]) + "\n"


def write_csv(path: Path, machine: dict[str, str], tables: Sequence[Table]) -> None:
    rows = [
        {**machine, "section": t.section, "table": t.title, **row} for t in tables for row in t.rows
    ]
    fieldnames = list(dict.fromkeys(key for row in rows for key in row))
    with path.open("w", newline="") as handle:
        writer = csv.DictWriter(handle, fieldnames=fieldnames, restval="")
        writer.writeheader()
        writer.writerows(rows)


def benchmark_command(module: str, argv: Sequence[str] | None) -> str:
    """The command line that reproduces this run of ``benchmarks.<module>``."""
    flags = shlex.join(sys.argv[1:] if argv is None else argv)
    return f"python -m benchmarks.{module} {flags}".strip()


def report_stem(name: str, device: torch.device, quick: bool) -> str:
    """The file stem of a benchmark's outputs: ``<name>_<device>[_quick]``."""
    return f"{name}_{device.type}" + ("_quick" if quick else "")


@dataclass(frozen=True)
class BenchmarkRun:
    """What a report says about its own run: the command that reproduces it, the device and
    sizes, and CPU snapshots taken before and after the measurements (wall time, and the load
    other processes put on the machine meanwhile)."""

    command: str
    device: torch.device
    sizes: Sizes
    quick: bool
    start: CpuSnapshot
    end: CpuSnapshot


def write_report(
    out: Path,
    stem: str,
    title: str,
    run: BenchmarkRun,
    tables: Sequence[Table],
    dtype: str | None = None,
    timer: str | None = None,
) -> None:
    """``<out>/<stem>.md`` and ``.csv``, and the Markdown on stdout; ``dtype`` and ``timer``
    replace the machine table's default dtype and timer lines."""
    background = other_cores(run.start, run.end)
    machine = machine_info(run.device, run.sizes, run.quick, background)
    if dtype is not None:
        machine["dtype"] = dtype
    if timer is not None:
        machine["timer"] = timer
    wall_s = run.end.wall - run.start.wall
    report = markdown_report(
        title, machine, tables, run.command, wall_s, background_warning(background)
    )
    out.mkdir(parents=True, exist_ok=True)
    (out / f"{stem}.md").write_text(report)
    write_csv(out / f"{stem}.csv", machine, tables)
    print(report)
    log(f"wrote {out / stem}.md and .csv")


def write_one_table(
    module: str,
    argv: Sequence[str] | None,
    args: argparse.Namespace,
    device: torch.device,
    start: CpuSnapshot,
    table: Table,
    title: str,
    dtype: str,
    timer: str,
) -> int:
    """The report of a benchmark of one table measured from ``start`` until now
    (:func:`write_report` into ``args.out``, named by ``module``, ``device`` and ``args.quick``);
    returns 0, the benchmark's exit status."""
    sizes = QUICK_SIZES if args.quick else DEFAULT_SIZES
    command = benchmark_command(module, argv)
    run = BenchmarkRun(command, device, sizes, args.quick, start, CpuSnapshot.now())
    stem = report_stem(module, device, args.quick)
    write_report(args.out, stem, title, run, [table], dtype=dtype, timer=timer)
    return 0


# --------------------------------------------------------------------------------------------
# Command line
# --------------------------------------------------------------------------------------------


def benchmark_parser(module: str, description: str) -> argparse.ArgumentParser:
    """The flags every hpo-cli benchmark takes: --device, --threads, --quick, --out."""
    parser = argparse.ArgumentParser(prog=f"python -m benchmarks.{module}", description=description)
    parser.add_argument("--device", choices=("cpu", "cuda", "auto"), default="cpu")
    parser.add_argument(
        "--threads", type=int, default=None, help="torch.set_num_threads (default: torch's)"
    )
    parser.add_argument("--quick", action="store_true", help="tiny sizes: a smoke run")
    parser.add_argument("--out", type=Path, default=Path("outputs/bench"), help="output folder")
    return parser


def parse_benchmark_args(
    parser: argparse.ArgumentParser, argv: Sequence[str] | None
) -> argparse.Namespace:
    """Parse, check --threads and --device, and apply --threads."""
    args = parser.parse_args(argv)
    if args.threads is not None and args.threads < 1:
        parser.error("--threads must be >= 1")
    if args.device == "cuda" and not torch.cuda.is_available():
        parser.error("--device cuda: CUDA is not available")
    if args.threads is not None:
        torch.set_num_threads(args.threads)
    return args


def resolve_device(name: str) -> torch.device:
    if name == "auto":
        return torch.device("cuda" if torch.cuda.is_available() else "cpu")
    return torch.device(name)
