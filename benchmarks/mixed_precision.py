"""``precision=bf16-mixed`` against full precision on the CPU: the hypergradient's agreement and
the time of an inner step and of a hyper-step's hypergradient.

Run from the repository root::

    python -m benchmarks.mixed_precision --threads 1     # a minute or two on a CPU
    python -m benchmarks.mixed_precision --quick          # seconds

Each case is hpo-run's default experiment (digits, per-weight decay, Adam inside, Neumann with
4 terms), built by the runner in float32 and trained ``inner_steps`` Adam steps in float32; then,
at those weights and on the same batches, the hypergradient with ``precision=32`` and with
``precision=bf16-mixed`` (the same weights, λ and solver; only the forward passes autocast),
compared by cosine and relative error, and both timed side by side with one inner step each.
Output: ``<out>/mixed_precision_<device>[_quick].{md,csv}``.
"""

from __future__ import annotations

import argparse
import dataclasses
import sys
from collections.abc import Sequence

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
    fmt_sci,
    log,
    measure_group,
    parse_benchmark_args,
    report_stem,
    write_report,
)
from benchmarks.common.machine import CpuSnapshot
from benchmarks.common.run_config import compose_config
from hpo_cli.core.vectors import flatten
from hpo_cli.runner.config.build import build_experiment
from hpo_cli.runner.loop import train
from hpo_cli.runner.loop.hyper_losses import hyper_losses

CASES = {
    "default, MLP 64-64-10": ["model.hidden_sizes=[64]"],
    "MLP 64-1024-1024-10, 1000 training digits": [
        "model.hidden_sizes=[1024,1024]",
        "dataset.train_size=1000",
        "dataset.val_size=500",
        "batch_size=128",
    ],
}
QUICK_CASES = {"default, MLP 64-8-10": ["model.hidden_sizes=[8]"]}


def case_row(label: str, overrides: list[str], quick: bool) -> dict:
    exp = build_experiment(compose_config([*overrides, "device=cpu"]))
    torch.manual_seed(0)
    for _ in range(20 if quick else 200):
        train.inner_step(exp)
    batches = [
        exp.data.train.sample(exp.settings.hyper_train_batch, exp.batches),
        exp.data.val.sample(exp.settings.hyper_val_batch, exp.batches),
    ]
    hparams, method = list(exp.hyper.parameters()), exp.joint.method
    settings = {p: dataclasses.replace(exp.settings, precision=p) for p in ("32", "bf16-mixed")}

    def hypergradient(precision: str):
        def compute():
            exp.settings = settings[precision]
            losses = hyper_losses(exp, *batches)
            return method.hypergradient(exp.model, hparams, exp.joint.optimizer, losses, None)[0]

        return compute

    def inner_step(precision: str):
        def step():
            exp.settings = settings[precision]
            return train.inner_step(exp)

        return step

    sizes = QUICK_SIZES if quick else DEFAULT_SIZES
    hyper = measure_group({p: hypergradient(p) for p in settings}, sizes)
    want, got = (flatten(list(hyper[p][1].grads)).double() for p in settings)  # float64 sums
    inner = measure_group({p: inner_step(p) for p in settings}, sizes)
    return {
        "case": label,
        "weights": sum(p.numel() for p in exp.model.parameters()),
        "rel_error": float((got - want).norm() / want.norm()),
        "cosine": float(torch.nn.functional.cosine_similarity(got, want, dim=0)),
        "inner_32_median_ms": inner["32"][0].median_ms,
        "inner_32_iqr_ms": inner["32"][0].iqr_ms,
        "inner_bf16_median_ms": inner["bf16-mixed"][0].median_ms,
        "inner_bf16_iqr_ms": inner["bf16-mixed"][0].iqr_ms,
        "inner_ratio": inner["bf16-mixed"][0].median_ms / inner["32"][0].median_ms,
        "hyper_32_median_ms": hyper["32"][0].median_ms,
        "hyper_32_iqr_ms": hyper["32"][0].iqr_ms,
        "hyper_bf16_median_ms": hyper["bf16-mixed"][0].median_ms,
        "hyper_bf16_iqr_ms": hyper["bf16-mixed"][0].iqr_ms,
        "hyper_ratio": hyper["bf16-mixed"][0].median_ms / hyper["32"][0].median_ms,
    }


def section_precision(quick: bool) -> Table:
    rows = []
    for label, overrides in (QUICK_CASES if quick else CASES).items():
        log(f"mixed precision: {label}")
        rows.append(case_row(label, overrides, quick))
    table = Table(
        section="precision",
        title="precision=bf16-mixed against precision=32, on the CPU",
        columns=[
            Column("case", "case"),
            Column("weights", "weights d"),
            Column("rel_error", "hypergradient rel. error", fmt_sci),
            Column("cosine", "cosine", lambda c: f"{c:.6f}"),
            Column("inner_32_median_ms", "inner step 32 ms", fmt_ms),
            Column("inner_bf16_median_ms", "inner step bf16 ms", fmt_ms),
            Column("inner_ratio", "bf16 / 32", fmt_ratio),
            Column("hyper_32_median_ms", "hypergradient 32 ms", fmt_ms),
            Column("hyper_bf16_median_ms", "hypergradient bf16 ms", fmt_ms),
            Column("hyper_ratio", "bf16 / 32", fmt_ratio),
        ],
        rows=rows,
    )
    table.notes += [
        "The same weights (trained in float32), λ, batches and solver (Neumann, 4 terms); the "
        "hypergradient's error is against precision=32's. Inner-step times include the Adam "
        "update; hyper-step times the whole hypergradient (products, Lanczos estimate, mixed "
        "term), not the outer optimiser's step.",
        "A CPU: bf16 pays where the CPU has bf16 matrix instructions (AMX, AVX512-BF16); "
        "otherwise autocast's casts cost more than they save. GPUs are not measured here.",
    ]
    return table


def parse_args(argv: Sequence[str] | None) -> argparse.Namespace:
    parser = benchmark_parser("mixed_precision", "precision=bf16-mixed against precision=32.")
    return parse_benchmark_args(parser, argv)


def main(argv: Sequence[str] | None = None) -> int:
    args = parse_args(argv)
    if args.device != "cpu":
        log("mixed precision: measured on the CPU only")
    start = CpuSnapshot.now()
    table = section_precision(args.quick)
    sizes = QUICK_SIZES if args.quick else DEFAULT_SIZES
    cpu = torch.device("cpu")
    run = BenchmarkRun(
        benchmark_command("mixed_precision", argv), cpu, sizes, args.quick, start, CpuSnapshot.now()
    )
    write_report(
        args.out,
        report_stem("mixed_precision", cpu, args.quick),
        "Mixed precision (bf16) on the CPU",
        run,
        [table],
        dtype="float32 weights; bfloat16 autocast",
        timer="torch.utils.benchmark, both precisions side by side in rounds",
    )
    return 0


if __name__ == "__main__":
    sys.exit(main())
