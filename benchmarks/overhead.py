"""What hyper-steps add to training: time per inner step and peak memory of a hyper-step.

Run from the repository root::

    python -m benchmarks.overhead                          # hpo-run's default experiment, CPU
    python -m benchmarks.overhead --quick                  # a smoke run in seconds
    python -m benchmarks.overhead --device cuda            # the same on the GPU
    python -m benchmarks.overhead --threads 1 --out /tmp/bench
    python -m benchmarks.overhead --override solver=cg     # any hpo-run override, repeatable
    python -m benchmarks.overhead --threads 1 --sections 4c  # the compiled inner step only

Sections, one Markdown table each:

4. Joint-training overhead. The experiment ``hpo-run`` runs by default (digits, MLP, per-weight
   weight decay, Neumann with 4 terms (3 products) and α = auto, Adam inside, RMSprop outside),
   built with ``hpo_cli.runner.config.build.build_experiment`` from the composed config. Both rows
   time the runner's own ``hpo_cli.runner.loop.train.outer_step``: with hyper-steps on,
   ``inner_steps`` inner steps and one hyper-step (hypergradient + RMSprop step); with
   ``hyper_steps=false``, the same inner steps and no hypergradient. The ratio of the two times
   per inner step is the overhead (target ≤ 1.10×). Timed in wall time and, on the CPU with one
   thread, also in this thread's CPU time (``time.thread_time``), as in 4b.
   Evaluation, logging and checkpoints are left out of both (the runner does them either way).
4b. The inner phase under the runner (``hpo_cli.runner.loop.train.inner_phase``, what an outer
   step with ``hyper_steps=false`` runs) against a bare PyTorch loop written by hand: a copy of
   the same model, inner optimiser (class and settings), training split, batch size, batch draws
   and penalty Σ c·w² with c = softplus(θ) computed once per outer step (target ≤ 1.05×;
   ``tests/benchmarks/test_bare_loop.py`` checks that it trains the weights as the runner
   does); and the
   runner's inner steps taken one by one, λ's graph rebuilt at every step (as before λ was held
   constant through the inner phase). Timed twice, side by side: in wall time, and in this
   thread's CPU time (``time.thread_time``), which on a shared machine leaves out the time spent
   waiting for a core. Only for per-weight weight decay on a classification data set.
4c. A compiled inner step (``compile=true``: :mod:`hpo_cli.core.compiled`) against the eager one
   and the bare loop of 4b, side by side as in 4b (wall and thread CPU time); and the one-off
   compilation: the first inner step of a freshly built ``compile=true`` experiment less one
   compiled step, with Inductor's cache empty (``cold``: a first run of this model) and filled
   by the cold one (``warm``: the same model again, Dynamo's in-memory caches cleared by the
   build), in wall time and in CPU time of this process and the C++ compiler it waits for
   (``getrusage``; Inductor compiles in this process, ``compile_threads=1``). From these, the
   break-even: the inner steps after which compile=true has saved its compilation,
   compile time / (eager − compiled time per inner step). ``--sections`` picks sections.
5. Peak memory of one hyper-step divided by that of one training step (target ≤ 3×). On the
   GPU: ``torch.cuda.max_memory_allocated`` above the memory allocated before the step. On the
   CPU: (a) the CPU allocator's running total, which ``torch.profiler`` (``profile_memory=True``)
   attaches to every allocation and free it records (the ``Total Allocated`` of its ``[memory]``
   events), highest point minus the level before the step: the CPU twin of the GPU method; and
   (b) the bytes of the distinct tensors autograd saves for backward during the step
   (``torch.autograd.graph.saved_tensors_hooks``), the graph's share of the peak.

Timing as in ``benchmarks.hypergradient_cost`` (``torch.utils.benchmark``, interleaved rounds,
medians and IQR). Output: ``<out>/overhead_<device>[_quick].{md,csv}``.
"""

from __future__ import annotations

import argparse
import dataclasses
import math
import resource
import sys
import tempfile
import time
from collections.abc import Sequence
from typing import Any

import torch
from omegaconf import DictConfig

from benchmarks.common.harness import (
    DEFAULT_SIZES,
    QUICK_SIZES,
    BenchmarkRun,
    Column,
    Sizes,
    Table,
    benchmark_command,
    benchmark_parser,
    fmt_ms,
    fmt_ratio,
    log,
    measure_group,
    parse_benchmark_args,
    report_stem,
    write_report,
)
from benchmarks.common.inner_steps import (
    BARE,
    BARE_ROUNDS,
    bare_loop,
    clocks_of,
    per_step_columns,
    per_step_rows,
)
from benchmarks.common.machine import CpuSnapshot
from benchmarks.common.memory import memory_methods
from benchmarks.common.run_config import compose_config
from hpo_cli.hyper import WeightDecay
from hpo_cli.runner.config.build import build_experiment
from hpo_cli.runner.loop.experiment import Experiment
from hpo_cli.runner.loop.progress import Progress
from hpo_cli.runner.loop.train import hyper_step, inner_phase, inner_step, outer_step

QUICK_OVERRIDES = ("inner_steps=5", "model.hidden_sizes=[8]")
TARGET_TIME = 1.10
TARGET_BARE = 1.05
TARGET_MEMORY = 3.0


def synchronized_outer_step(exp: Experiment, progress: Progress) -> None:
    """The runner's own :func:`hpo_cli.runner.loop.train.outer_step`, waited for on a GPU."""
    outer_step(exp, progress)
    if exp.device.type == "cuda":
        torch.cuda.synchronize(exp.device)


def section_overhead(cfg: DictConfig, sizes: Sizes) -> Table:
    """Two experiments built alike, one trained with hyper-steps and one without."""
    without = cfg.copy()
    without.hyper_steps = False
    on, off = build_experiment(cfg), build_experiment(without)
    progress, progress_off = Progress(device=str(on.device)), Progress(device=str(off.device))
    statements = {
        "hyper-steps off": lambda: synchronized_outer_step(off, progress_off),
        "hyper-steps on": lambda: synchronized_outer_step(on, progress),
        "one hyper_step alone": lambda: hyper_step(on, progress),
        "one inner_step alone": lambda: inner_step(on),
    }
    rows = {label: {"case": label} for label in statements}
    for name, clock in clocks_of(on).items():
        log(
            f"section 4: joint-training overhead ({cfg.inner_steps} inner steps per outer step, "
            f"{name} time)"
        )
        timed = measure_group(statements, sizes, clock)
        base = timed["hyper-steps off"][0].median_ms / cfg.inner_steps
        for label, (timing, _) in timed.items():
            per_outer = label.startswith("hyper-steps")
            per_inner = timing.median_ms / cfg.inner_steps if per_outer else None
            columns = timing.columns()
            rows[label].update(
                {
                    f"{name}_median_ms": columns["median_ms"],
                    f"{name}_iqr_ms": columns["iqr_ms"],
                    f"{name}_per_inner_ms": per_inner,
                    f"{name}_ratio": (per_inner if per_outer else timing.median_ms) / base,
                }
            )
    rows = list(rows.values())
    verdicts = [
        f"{name} time {rows[1][f'{name}_ratio']:.2f}× ("
        + ("meets" if rows[1][f"{name}_ratio"] <= TARGET_TIME else "misses")
        + f" the target ≤ {TARGET_TIME}×)"
        for name in clocks_of(on)
    ]
    columns = [Column("case", "statement timed")]
    for name, header in (("wall", "wall"), ("cpu", "thread CPU")):
        if name in clocks_of(on):
            columns += [
                Column(f"{name}_median_ms", f"{header} median ms", fmt_ms),
                Column(f"{name}_iqr_ms", "IQR ms", fmt_ms),
                Column(f"{name}_per_inner_ms", "ms per inner step", fmt_ms),
                Column(f"{name}_ratio", "× off per inner step", fmt_ratio),
            ]
    hyper = progress.last_hyper
    return Table(
        section="4",
        title=f"4. Joint-training overhead: hpo-run defaults, {cfg.inner_steps} inner steps per "
        "hyper-step",
        columns=columns,
        rows=rows,
        notes=[
            f"Overhead of hyper-steps per inner step: {'; '.join(verdicts)}.",
            f"Configuration: {describe(cfg)}. Last hyper-step: solver status "
            f"{hyper.get('solver_status')}, {hyper.get('solver_hvps')} HVPs (Lanczos steps "
            "for α = auto, series terms and the residual check).",
            "The last two rows are in units of one inner step of the 'off' row.",
        ],
    )


def single_steps(exp: Experiment) -> None:
    """The runner's inner steps one by one, outside ``inner_phase``: λ's graph every step."""
    for _ in range(exp.settings.inner_steps):
        inner_step(exp)


def section_bare(cfg: DictConfig, sizes: Sizes, quick: bool) -> Table:
    """The runner's inner phase against :func:`bare_loop`, in wall and in thread CPU time."""
    without = cfg.copy()
    without.hyper_steps = False
    runner, stepwise, reference = (build_experiment(without) for _ in range(3))
    title = "4b. The inner step under hpo-run (hyper_steps=false) against a bare PyTorch loop"
    hyper = runner.hyper
    if not (isinstance(hyper, WeightDecay) and hyper.granularity == "weight") or (
        runner.data.task != "classification"
    ):
        return Table(
            "4b",
            title,
            [Column("case", "case")],
            notes=["Skipped: only for per-weight weight decay on a classification data set."],
        )
    steps = cfg.inner_steps
    if not quick:
        sizes = dataclasses.replace(sizes, rounds=BARE_ROUNDS)  # finer interleaving
    statements = {
        "hpo-run: inner_phase (λ held constant)": lambda: inner_phase(runner, steps),
        BARE: bare_loop(reference),
        "hpo-run: inner steps one by one (λ's graph every step)": lambda: single_steps(stepwise),
    }
    clocks = clocks_of(runner)
    rows = per_step_rows(statements, sizes, clocks, steps, "4b: inner steps against a bare loop")
    first = rows[next(iter(statements))]
    verdicts = [
        f"{name} time {first[f'{name}_ratio']:.2f}× ("
        + ("meets" if first[f"{name}_ratio"] <= TARGET_BARE else "misses")
        + f" the target ≤ {TARGET_BARE}×)"
        for name in clocks
    ]
    columns = per_step_columns(clocks)
    notes = [
        f"The runner's inner phase over the bare loop: {'; '.join(verdicts)}.",
        f"Each statement: {steps} inner steps (one outer step's); both use F.cross_entropy's "
        "fused mean (hpo_cli.data.tasks.mean_loss).",
    ]
    if "cpu" not in clocks:
        notes.append("Thread CPU time only on the CPU with --threads 1.")
    return Table("4b", title, columns, list(rows.values()), notes)


COMPILED = "hpo-run: inner_phase, compile=true"
EAGER = "hpo-run: inner_phase, compile=false"


def process_cpu_s() -> float:
    """CPU seconds of this process and of the children it waited for (the C++ compiler)."""
    own, children = (
        resource.getrusage(resource.RUSAGE_SELF),
        resource.getrusage(resource.RUSAGE_CHILDREN),
    )
    return own.ru_utime + own.ru_stime + children.ru_utime + children.ru_stime


def first_compiled_step(cfg: DictConfig) -> tuple[Experiment, float, float]:
    """A ``compile=true`` experiment built afresh, and the wall and CPU seconds of its first
    inner step (compilation of the loss and of the optimiser's step, and one step) less those
    of its second (one compiled step)."""
    exp = build_experiment(cfg)  # resets Dynamo: nothing compiled before is reused in memory
    costs = []
    for _ in range(2):
        wall, cpu = time.perf_counter(), process_cpu_s()
        inner_phase(exp, 1)
        costs.append((time.perf_counter() - wall, process_cpu_s() - cpu))
    (wall, cpu), (step_wall, step_cpu) = costs
    return exp, wall - step_wall, cpu - step_cpu


def section_compiled(cfg: DictConfig, sizes: Sizes, quick: bool) -> Table:
    """The compiled inner phase against the eager one and :func:`bare_loop`, and its one-off
    compilation, cold and warm (see the module's doc)."""
    from torch._inductor import config as inductor
    from torch._inductor.runtime.cache_dir_utils import temporary_cache_dir

    without = cfg.copy()
    without.hyper_steps = False
    compiled_cfg = without.copy()
    compiled_cfg.compile = True
    title = "4c. A compiled inner step (compile=true) against the eager one and a bare loop"
    inductor.compile_threads = 1
    compile_rows = []
    with tempfile.TemporaryDirectory() as cache, temporary_cache_dir(cache):
        for kind in ("cold", "warm"):
            log(f"section 4c: compiling the inner step ({kind} Inductor cache)")
            compiled, wall, cpu = first_compiled_step(compiled_cfg)
            compile_rows.append(
                {"case": f"compilation, {kind} cache", "compile_wall_s": wall, "compile_cpu_s": cpu}
            )
        eager, reference = build_experiment(without), build_experiment(without)
        steps = cfg.inner_steps
        if not quick:
            sizes = dataclasses.replace(sizes, rounds=BARE_ROUNDS)
        statements = {
            COMPILED: lambda: inner_phase(compiled, steps),
            EAGER: lambda: inner_phase(eager, steps),
            BARE: bare_loop(reference),
        }
        clocks = clocks_of(compiled)
        rows = per_step_rows(statements, sizes, clocks, steps, "4c: compiled and eager inner steps")
    clock = "cpu" if "cpu" in clocks else "wall"
    saved = {
        label: rows[label][f"{clock}_ms"] - rows[COMPILED][f"{clock}_ms"] for label in (EAGER, BARE)
    }
    for row in compile_rows:
        seconds = row[f"compile_{clock}_s"]
        for label, key in ((EAGER, "break_even_eager"), (BARE, "break_even_bare")):
            row[key] = math.ceil(1000 * seconds / saved[label]) if saved[label] > 0 else None
    columns = per_step_columns(clocks)
    columns += [
        Column("compile_wall_s", "compile wall s", fmt_seconds),
        Column("compile_cpu_s", "compile CPU s", fmt_seconds),
        Column("break_even_eager", "break-even steps vs hpo-run eager", fmt_count),
        Column("break_even_bare", "break-even steps vs bare loop", fmt_count),
    ]
    cold = compile_rows[0]
    notes = [
        f"Per inner step ({clock} time): compiled {rows[COMPILED][f'{clock}_ms']:.3f} ms, eager "
        f"{rows[EAGER][f'{clock}_ms']:.3f} ms, bare loop {rows[BARE][f'{clock}_ms']:.3f} ms; "
        f"compile=true repays a cold compilation after {fmt_count(cold['break_even_eager'])} "
        f"inner steps against the eager runner, {fmt_count(cold['break_even_bare'])} against "
        "the bare loop (break-even = compile time / time saved per step, in the "
        f"{'thread CPU' if clock == 'cpu' else 'wall'} times above; compile CPU time for it).",
        f"Each statement: {steps} inner steps (one outer step's), λ held constant; compilation "
        "rows: the first inner step of a fresh build less one compiled step.",
    ]
    return Table("4c", title, columns, [*rows.values(), *compile_rows], notes)


def fmt_seconds(value: float) -> str:
    return f"{value:.1f}"


def fmt_count(value: int | None) -> str:
    return "never" if value is None else f"{value:,}"


def describe(cfg: DictConfig) -> str:
    solver = cfg.solver.get("_target_", "?").rsplit(".", 1)[-1]
    details = ", ".join(
        f"{k}={v}" for k, v in cfg.solver.items() if k != "_target_" and not str(k).startswith("_")
    )
    model = cfg.model.get("hidden_sizes")
    return (
        f"dataset {cfg.dataset.get('_target_', '?').rsplit('.', 1)[-1]} "
        f"(train {cfg.dataset.train_size}, val {cfg.dataset.val_size}), MLP hidden {model}, "
        f"batch {cfg.batch_size}, hyper-batches full, {cfg.dtype}, solver {solver} ({details})"
    )


# --------------------------------------------------------------------------------------------
# Memory
# --------------------------------------------------------------------------------------------


def memory_rows(cfg: DictConfig, case: str) -> list[dict[str, Any]]:
    """One row per measuring method: peak of an inner step and of a hyper-step under ``cfg``."""
    exp = build_experiment(cfg)
    progress = Progress(device=str(exp.device))
    outer_step(exp, progress)  # optimiser states exist before measuring
    vector = sum(p.numel() * p.element_size() for p in exp.model.parameters())
    rows = []
    for method, measure in memory_methods(exp.device).items():
        train = measure(lambda: inner_step(exp))
        hyper = measure(lambda: hyper_step(exp, progress))
        rows.append(
            {
                "case": case,
                "method": method,
                "train_kib": train / 1024,
                "train_vectors": train / vector,
                "hyper_kib": hyper / 1024,
                "hyper_vectors": hyper / vector,
                "memory_ratio": hyper / train if train else None,
            }
        )
    return rows


def section_memory(cfg: DictConfig) -> Table:
    log("section 5: peak memory of a hyper-step and of a training step")
    batch = cfg.batch_size
    same_batch = cfg.copy()
    same_batch.hyper_train_batch = same_batch.hyper_val_batch = batch
    rows = memory_rows(cfg, "defaults (hyper-step on the full splits)")
    rows += memory_rows(same_batch, f"hyper_train_batch = hyper_val_batch = {batch}")
    ratio = rows[0]["memory_ratio"]
    verdict = "meets" if ratio is not None and ratio <= TARGET_MEMORY else "misses"
    exp = build_experiment(cfg)
    params = sum(p.numel() for p in exp.model.parameters())
    hparams = sum(p.numel() for p in exp.hyper.parameters())
    return Table(
        section="5",
        title="5. Peak memory of one hyper-step over one training step (hpo-run defaults)",
        columns=[
            Column("case", "hyper-step batches"),
            Column("method", "method"),
            Column("train_kib", "training step KiB", lambda v: f"{v:,.0f}"),
            Column("train_vectors", "in weight-sized vectors", lambda v: f"{v:.1f}"),
            Column("hyper_kib", "hyper-step KiB", lambda v: f"{v:,.0f}"),
            Column("hyper_vectors", "in weight-sized vectors", lambda v: f"{v:.1f}"),
            Column("memory_ratio", "ratio", fmt_ratio),
        ],
        rows=rows,
        notes=[
            f"Defaults, first method: {ratio:.2f}× ({verdict} the target ≤ {TARGET_MEMORY}×). "
            f"{params:,} weights, {hparams:,} hyperparameters ({params * 4 / 1024:.0f} KiB per "
            f"weight-sized float32 vector); training step on a batch of {batch} "
            f"({cfg.dataset.train_size} training, {cfg.dataset.val_size} validation examples).",
            "Peak = highest point of the memory allocated above the level at the start of the "
            "step (model, data and optimiser states, allocated before, are not counted).",
        ],
    )


# --------------------------------------------------------------------------------------------
# Command line
# --------------------------------------------------------------------------------------------


def parse_args(argv: Sequence[str] | None) -> argparse.Namespace:
    parser = benchmark_parser(
        "overhead", "Time and memory that hyper-steps add to hpo-run's default training."
    )
    parser.add_argument("--override", action="append", default=[], help="an hpo-run override")
    parser.add_argument(
        "--sections", nargs="+", choices=("4", "4b", "4c", "5"), help="only these (default: all)"
    )
    return parse_benchmark_args(parser, argv)


def overrides(args: argparse.Namespace) -> list[str]:
    chosen = [f"device={args.device}", "progress=false", "plots=false"]
    if args.threads is not None:
        chosen.append(f"threads={args.threads}")
    if args.quick:
        chosen += QUICK_OVERRIDES
    return chosen + list(args.override)


def main(argv: Sequence[str] | None = None) -> int:
    args = parse_args(argv)
    cfg = compose_config(overrides(args))
    sizes = QUICK_SIZES if args.quick else DEFAULT_SIZES
    command = benchmark_command("overhead", argv)
    start = CpuSnapshot.now()
    sections = {
        "4": lambda: section_overhead(cfg, sizes),
        "4b": lambda: section_bare(cfg, sizes, args.quick),
        "4c": lambda: section_compiled(cfg, sizes, args.quick),
        "5": lambda: section_memory(cfg),
    }
    tables = [sections[name]() for name in args.sections or sections]
    end = CpuSnapshot.now()
    device = build_experiment(cfg).device
    run = BenchmarkRun(command, device, sizes, args.quick, start, end)
    stem = report_stem("overhead", device, args.quick)
    write_report(args.out, stem, "hpo-cli joint-training overhead", run, tables, dtype=cfg.dtype)
    return 0


if __name__ == "__main__":
    sys.exit(main())
