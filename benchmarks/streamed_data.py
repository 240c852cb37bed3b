"""Streamed against in-memory data: the time of one inner step.

Run from the repository root::

    python -m benchmarks.streamed_data                  # 3 × 200 PNGs of 32×32, CPU
    python -m benchmarks.streamed_data --quick          # 3 × 20 PNGs of 16×16: a smoke run
    python -m benchmarks.streamed_data --device cuda    # batches pinned and copied to the GPU

Section 8: an ``ImageFolder`` of random RGB PNGs written to a temporary folder, read through
``hpo_cli.data.protocol.as_splits`` twice: under the in-memory cap (the whole training split a
tensor on the device, batches are index draws) and over it (``StreamedSplit``: each batch
decoded from the PNG files by a ``DataLoader`` with 0 or 2 worker processes, pinned on CUDA,
then copied to the device). One inner step = draw a batch of 64 (16 with --quick) and one Adam
step of an MLP (3·s²-256-3) through ``hpo_cli.core.joint.JointOptimizer.inner_step``. Timing as in
``benchmarks.hypergradient_cost`` (interleaved rounds, median and IQR). Output:
``<out>/streamed_data_<device>[_quick].{md,csv}``.
"""

from __future__ import annotations

import sys
import tempfile
from collections.abc import Callable, Sequence
from pathlib import Path

import numpy as np
import torch
from torch import nn

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
    resolve_device,
    write_report,
)
from benchmarks.common.machine import CpuSnapshot
from hpo_cli import Identity, JointOptimizer
from hpo_cli.data.protocol import DataOptions, as_splits
from hpo_cli.data.tasks import cross_entropy

CLASSES, HIDDEN = 3, 256


def write_pngs(root: Path, per_class: int, side: int) -> Path:
    """``root/class_<k>/<i>.png``: random RGB images of side × side."""
    from PIL import Image

    rng = np.random.default_rng(0)
    for k in range(CLASSES):
        (root / f"class_{k}").mkdir(parents=True)
        for i in range(per_class):
            pixels = rng.integers(0, 256, size=(side, side, 3), dtype=np.uint8)
            Image.fromarray(pixels).save(root / f"class_{k}" / f"{i}.png")
    return root


def inner_step(split, device: torch.device, side: int, batch_size: int) -> Callable[[], float]:
    """One ``JointOptimizer.inner_step`` on a fresh batch of ``split`` (its own MLP and Adam)."""
    torch.manual_seed(0)
    model = nn.Sequential(
        nn.Flatten(), nn.Linear(3 * side * side, HIDDEN), nn.ReLU(), nn.Linear(HIDDEN, CLASSES)
    ).to(device)
    unused = torch.optim.SGD([torch.zeros(1, requires_grad=True)], lr=0.0)  # no hyper-steps here
    joint = JointOptimizer(
        model, [], torch.optim.Adam(model.parameters(), 1e-3), unused, solver=Identity()
    )
    generator = torch.Generator().manual_seed(0)

    def step() -> float:
        batch = split.sample(batch_size, generator)
        loss = joint.inner_step(lambda: cross_entropy(model(batch.inputs), batch.targets).mean())
        return float(loss)  # one host synchronisation, as the runner's finiteness check

    return step


def section_streaming(
    device: torch.device, sizes: Sizes, per_class: int, side: int, batch_size: int
) -> Table:
    from torchvision.datasets import ImageFolder

    with tempfile.TemporaryDirectory() as folder:
        images = ImageFolder(str(write_pngs(Path(folder), per_class, side)))
        n = len(images)
        sizes_kw = {"split_train": n // 2, "split_val": n // 4}

        def splits(cap: int, workers: int):
            options = DataOptions(**sizes_kw, max_in_memory_bytes=cap, num_workers=workers)
            return as_splits(images, "pngs", options, seed=0, dtype=torch.float32).to(
                device, torch.float32
            )

        statements = {
            "in memory": inner_step(splits(2**40, 0).train, device, side, batch_size),
            "streamed, 0 workers": inner_step(splits(0, 0).train, device, side, batch_size),
            "streamed, 2 workers": inner_step(splits(0, 2).train, device, side, batch_size),
        }
        timings = measure_group(statements, sizes)
    base = timings["in memory"][0].median_ms
    rows = [
        {"data": label, **timing.columns(), "ratio": timing.median_ms / base}
        for label, (timing, _) in timings.items()
    ]
    return Table(
        section="8",
        title="8. One inner step: streamed from PNG files against whole tensors in memory",
        columns=[
            Column("data", "data"),
            Column("median_ms", "median ms / step", fmt_ms),
            Column("iqr_ms", "IQR ms", fmt_ms),
            Column("ratio", "× in memory", fmt_ratio),
        ],
        rows=rows,
        notes=[
            f"ImageFolder of {n} random RGB PNGs {side}×{side} ({CLASSES} classes), training "
            f"split {n // 2}; batch {batch_size}; MLP {3 * side * side}-{HIDDEN}-{CLASSES}, Adam.",
            "Streamed batches are decoded from the files each step (no cache); workers prefetch.",
        ],
    )


def main(argv: Sequence[str] | None = None) -> int:
    parser = benchmark_parser("streamed_data", "Streamed against in-memory data: one inner step.")
    args = parse_benchmark_args(parser, argv)
    device = resolve_device(args.device)
    sizes = QUICK_SIZES if args.quick else DEFAULT_SIZES
    per_class, side, batch_size = (20, 16, 16) if args.quick else (200, 32, 64)
    start = CpuSnapshot.now()
    log(f"streaming: {CLASSES * per_class} PNGs of {side}×{side} on {device}")
    table = section_streaming(device, sizes, per_class, side, batch_size)
    run = BenchmarkRun(
        benchmark_command("streamed_data", argv),
        device,
        sizes,
        args.quick,
        start,
        CpuSnapshot.now(),
    )
    stem = report_stem("streamed_data", device, args.quick)
    write_report(args.out, stem, "hpo-cli streamed data", run, [table], dtype="float32")
    return 0


if __name__ == "__main__":
    sys.exit(main())
