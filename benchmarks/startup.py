"""How long ``hpo-run`` takes to start, as ratios to ``python -c "import torch"``.

Run from the repository root::

    python -m benchmarks.startup                        # 7 interleaved rounds
    python -m benchmarks.startup --quick                # 2 rounds: a smoke run
    python -m benchmarks.startup --before ../old-tree   # the same commands from another checkout

Section S, one Markdown table: the wall time of each command in a fresh interpreter, as a user
types it (``hpo-run`` is its console script's entry point, ``hpo_cli.runner.cli.main``):

* ``python -c "import torch"``, the yardstick, and ``python -c pass``, the interpreter alone;
  ``import torch`` and a first ``torch.optim`` optimiser, which every run builds: torch imports
  ``torch._dynamo`` (and sympy) on the first optimiser's ``__init__``
  (``torch._compile._disable_dynamo``), a cost of torch's that hpo-run cannot avoid;
* ``hpo-run --help`` and two refused commands (``solver=cgg``: a composition error;
  ``optimizer.lr=-1``: a range error), which should import no torch and answer in under a
  second (a ratio well below 1);
* a one-step run (``outer_steps=1 inner_steps=1 progress=false plots=false``, into a fresh
  temporary directory each time), which should take at most a second more than ``import torch``
  plus the step itself.

Every round runs every command once, in turn, so that a change of the machine's load hits them
alike; each row is the median over rounds with its interquartile range. With ``--before DIR``
each hpo-run command also runs from the checkout ``DIR`` (in that folder, so that its ``hpo_cli``
comes first on ``sys.path``; same interpreter and packages) in the same rounds: before and
after, side by side. Output: ``<out>/startup_cpu[_quick].{md,csv}``.
"""

from __future__ import annotations

import argparse
import statistics
import subprocess
import sys
import tempfile
import time
from collections.abc import Sequence
from pathlib import Path

import torch

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
    log,
    report_stem,
    write_report,
)
from benchmarks.common.machine import CpuSnapshot

ROUNDS, QUICK_ROUNDS = 7, 2
TARGET_RATIO = 0.5  # --help and a refusal: at most half of import torch (about 1.9 s idle)
TARGET_EXTRA_S = 1.0  # a one-step run: at most a second above import torch and the step
HPO_RUN = "import sys; from hpo_cli.runner.cli import main; sys.argv[0] = 'hpo-run'; main()"
COMMANDS = {
    "hpo-run --help": ["--help"],
    "hpo-run solver=cgg (composition error)": ["solver=cgg"],
    "hpo-run optimizer.lr=-1 (range error)": ["optimizer.lr=-1"],
    "hpo-run one step": ["outer_steps=1", "inner_steps=1", "progress=false", "plots=false"],
}
FIRST_OPTIMISER = "import torch; torch.optim.SGD([torch.zeros(1, requires_grad=True)], lr=1.0)"
YARDSTICKS = {
    'python -c "import torch"': ["-c", "import torch"],
    "python -c pass": ["-c", "pass"],
    "import torch + a first torch.optim optimiser": ["-c", FIRST_OPTIMISER],
}


def timed(arguments: list[str], tree: Path, expect: int) -> float:
    """Seconds of wall time of ``python ARGUMENTS`` run in the checkout ``tree`` (its
    ``hpo_cli`` comes first on ``sys.path``), which must exit with ``expect``."""
    start = time.perf_counter()
    result = subprocess.run([sys.executable, *arguments], capture_output=True, text=True, cwd=tree)
    seconds = time.perf_counter() - start
    if result.returncode != expect:
        raise SystemExit(f"{arguments} exited {result.returncode}: {result.stderr[-2000:]}")
    return seconds


def cases(before: Path | None) -> dict[str, tuple[list[str], Path, int, bool]]:
    """Label → (python arguments, the checkout it runs in, expected exit status, whether it is
    the run that writes a directory)."""
    here = Path.cwd()
    trees = {"": here} if before is None else {"": here, " [before]": before.resolve()}
    chosen = {label: (arguments, here, 0, False) for label, arguments in YARDSTICKS.items()}
    for suffix, tree in trees.items():
        for label, arguments in COMMANDS.items():
            expect = 2 if "error" in label else 0
            chosen[label + suffix] = (["-c", HPO_RUN, *arguments], tree, expect, "step" in label)
    return chosen


def section_startup(rounds: int, before: Path | None, scratch: Path) -> Table:
    """Every command once per round, interleaved; medians and IQRs over the rounds."""
    chosen = cases(before)
    times: dict[str, list[float]] = {label: [] for label in chosen}
    for round_ in range(rounds):
        log(f"section S: round {round_ + 1} of {rounds}")
        for index, (label, (arguments, tree, expect, writes)) in enumerate(chosen.items()):
            run_dir = [f"hydra.run.dir={scratch / f'{round_}-{index}'}"] if writes else []
            times[label].append(timed([*arguments, *run_dir], tree, expect))
    torch_s = statistics.median(times['python -c "import torch"'])
    rows = []
    for label, seconds in times.items():
        quartiles = statistics.quantiles(seconds, n=4) if len(seconds) > 1 else [seconds[0]] * 3
        median = statistics.median(seconds)
        rows.append(
            {
                "case": label,
                "median_ms": median * 1e3,
                "iqr_ms": (quartiles[2] - quartiles[0]) * 1e3,
                "rounds": len(seconds),
                "ratio": median / torch_s,
                "minus_torch_ms": (median - torch_s) * 1e3,
            }
        )
    verdicts = []
    for row in rows:
        if row["case"].startswith("hpo-run") and "step" not in row["case"]:
            meets = "meets" if row["ratio"] <= TARGET_RATIO else "misses"
            verdicts.append(
                f"{row['case']}: {row['ratio']:.2f}× import torch ({meets} ≤ {TARGET_RATIO}×)"
            )
    return Table(
        section="S",
        title='S. Start-up: wall time of a fresh hpo-run against python -c "import torch"',
        columns=[
            Column("case", "command"),
            Column("median_ms", "median ms", fmt_ms),
            Column("iqr_ms", "IQR ms", fmt_ms),
            Column("ratio", "× import torch", fmt_ratio),
            Column("minus_torch_ms", "ms above import torch", fmt_ms),
        ],
        rows=rows,
        notes=[
            f"Medians over {rounds} rounds, each command once per round in turn (a fresh "
            "interpreter each: no cached imports).",
            *verdicts,
            f"The one-step run's target: at most {TARGET_EXTRA_S:.0f} s above import torch, the "
            "step itself included.",
        ],
    )


def parse_args(argv: Sequence[str] | None) -> argparse.Namespace:
    parser = benchmark_parser("startup", "Start-up wall times of hpo-run against import torch.")
    parser.add_argument(
        "--before", type=Path, default=None, help="a checkout whose hpo_cli to time alongside"
    )
    args = parser.parse_args(argv)
    if args.device != "cpu" or args.threads is not None:  # make bench ARGS=... reaches every one
        log(
            "start-up: --device and --threads do not apply (each command runs as typed, on the CPU)"
        )
    return args


def main(argv: Sequence[str] | None = None) -> int:
    args = parse_args(argv)
    command = benchmark_command("startup", argv)
    rounds = QUICK_ROUNDS if args.quick else ROUNDS
    start = CpuSnapshot.now()
    with tempfile.TemporaryDirectory() as scratch:
        tables = [section_startup(rounds, args.before, Path(scratch))]
    end = CpuSnapshot.now()
    device = torch.device("cpu")
    sizes = QUICK_SIZES if args.quick else DEFAULT_SIZES
    run = BenchmarkRun(command, device, sizes, args.quick, start, end)
    stem = report_stem("startup", device, args.quick)
    timer = "wall clock around each subprocess"
    write_report(args.out, stem, "hpo-run start-up", run, tables, dtype="(none)", timer=timer)
    return 0


if __name__ == "__main__":
    sys.exit(main())
