"""One short check of hpo-cli on an NVIDIA GPU (``make gpu-check``; CI never runs it).

Run from the repository root on a machine with CUDA::

    python -m benchmarks.gpu_check                 # every check, a compact report on stdout
    python -m benchmarks.gpu_check --out /tmp/gpu  # run directories and reports go there

Checks, each in its own process with a time limit:

1. ``hpo-run device=cuda`` on the default experiment (20 outer steps), and the same with
   ``precision=bf16-mixed`` and ``16-mixed`` (autocast; float16 through a gradient scaler) and
   with ``solver.products=finite_difference`` (products
   without double backward); with two GPUs or more, the same run in 2 processes under
   ``torchrun`` (data parallel, NCCL).
2. ResNet-18 with one weight-decay hyperparameter per weight on CIFAR-shaped synthetic data
   (``benchmarks.common.synthetic.synthetic_cifar``), 3 outer steps of 5 inner steps, batch 128.
3. The quick benchmarks with ``--device cuda``: hypergradient_cost, overhead, scaling, peers,
   solvers_in_the_loop.
4. The 10⁷-weight point of the scaling benchmark (one hypergradient, time and peak memory).

Exit status: 0 when every check passed; 1 when one failed (the report says which, with the last
line of its error); 2 on a machine without a CUDA GPU, where nothing runs and one line says so.
"""

from __future__ import annotations

import argparse
import json
import subprocess
import sys
import time
from collections.abc import Sequence
from dataclasses import dataclass
from pathlib import Path

import torch

QUICK_BENCHMARKS = ("hypergradient_cost", "overhead", "scaling", "peers", "solvers_in_the_loop")
RUN_LIMIT_S = 900
RESNET = (
    "model=resnet18",
    "hyper=weight_decay_per_weight",
    "dataset._target_=benchmarks.common.synthetic.synthetic_cifar",
    "dataset.train_size=512",
    "dataset.val_size=256",
    "outer_steps=3",
    "inner_steps=5",
    "batch_size=128",
    "hyper_train_batch=128",
    "hyper_val_batch=128",
)


@dataclass
class Check:
    name: str
    command: list[str]
    summary: Path | None = None  # an hpo-run summary.json to quote


def checks(out: Path) -> list[Check]:
    python = sys.executable
    cli = "import sys; from hpo_cli.runner.cli import main; sys.exit(main())"
    hpo_run = [python, "-c", cli, "device=cuda", "plots=false", "progress=false"]
    runs = [
        Check("default experiment", [*hpo_run, "outer_steps=20"], out / "default"),
        Check(
            "default experiment, bf16-mixed",
            [*hpo_run, "outer_steps=20", "precision=bf16-mixed"],
            out / "bf16_mixed",
        ),
        Check(
            "default experiment, 16-mixed",
            [*hpo_run, "outer_steps=20", "precision=16-mixed"],
            out / "fp16_mixed",
        ),
        Check(
            "default experiment, finite-difference products",
            [*hpo_run, "outer_steps=20", "solver.products=finite_difference"],
            out / "finite_difference",
        ),
        Check("ResNet-18, per-weight decay", [*hpo_run, *RESNET], out / "resnet18"),
    ]
    if torch.cuda.device_count() >= 2:
        torchrun = [python, "-m", "torch.distributed.run", "--nproc_per_node=2"]
        script = str(Path(python).parent / "hpo-run")
        command = [*torchrun, script, *hpo_run[3:], "outer_steps=20"]
        runs.append(Check("default experiment, 2 GPUs (torchrun)", command, out / "two_gpus"))
    for check in runs:
        check.command.append(f"hydra.run.dir={check.summary}")
    bench = [
        Check(
            f"quick {name}",
            [python, "-m", f"benchmarks.{name}", "--quick", "--device", "cuda", "--out", str(out)],
        )
        for name in QUICK_BENCHMARKS
    ]
    scaling = Check(
        "scaling, 10^7 weights",
        [
            python,
            "-c",
            f"from benchmarks.gpu_check import scaling_point; scaling_point({str(out)!r})",
        ],
    )
    return [*runs, *bench, scaling]


def scaling_point(out: str) -> None:
    """One hypergradient at 10⁷ weights on the GPU, as ``benchmarks.scaling`` measures it."""
    from benchmarks.common.harness import QUICK_SIZES
    from benchmarks.scaling import size_row

    row = size_row(7.0, torch.device("cuda"), QUICK_SIZES)
    Path(out, "scaling_1e7.json").write_text(json.dumps(row))
    print(json.dumps(row))


def run_check(check: Check) -> tuple[bool, float, str]:
    """Run one check; returns (passed, wall seconds, a one-line detail)."""
    start = time.perf_counter()
    try:
        result = subprocess.run(check.command, capture_output=True, text=True, timeout=RUN_LIMIT_S)
    except subprocess.TimeoutExpired:
        return False, time.perf_counter() - start, f"timed out after {RUN_LIMIT_S} s"
    wall = time.perf_counter() - start
    if result.returncode != 0:
        lines = [line for line in result.stderr.splitlines() if line.strip()] or ["(no stderr)"]
        return False, wall, f"exit {result.returncode}: {lines[-1]}"
    detail = "ok"
    if check.summary is not None and (check.summary / "summary.json").exists():
        summary = json.loads((check.summary / "summary.json").read_text())
        final = summary.get("final") or {}
        detail = (
            f"{summary['status']}, {summary['outer_steps']} outer steps, "
            f"{summary['skipped_hyper_steps']} skipped, val error {final.get('val_error')}, "
            f"test error {final.get('test_error')}"
        )
    elif check.name.startswith("scaling"):
        row = json.loads(result.stdout.strip().splitlines()[-1])
        detail = (
            f"{row['weights']:,} weights: {row['median_ms']:.3g} ms, "
            f"{row['peak_mib']:.0f} MiB peak, {row['hvps']} HVPs"
        )
    return True, wall, detail


def main(argv: Sequence[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="python -m benchmarks.gpu_check", description=__doc__)
    parser.add_argument("--out", type=Path, default=Path("outputs/gpu_check"))
    args = parser.parse_args(argv)
    if not torch.cuda.is_available():
        print(
            "gpu-check: no CUDA GPU on this machine (torch.cuda.is_available() is False); "
            "nothing was run"
        )
        return 2
    args.out.mkdir(parents=True, exist_ok=True)
    print(
        f"gpu-check on {torch.cuda.get_device_name()} (torch {torch.__version__}, CUDA "
        f"{torch.version.cuda})"
    )
    failed = 0
    for check in checks(args.out):
        passed, wall, detail = run_check(check)
        failed += not passed
        print(
            f"{'PASS' if passed else 'FAIL'}  {check.name:<30} {wall:7.1f} s  {detail}", flush=True
        )
    print(
        f"gpu-check: {failed} of {len(checks(args.out))} checks failed"
        if failed
        else "gpu-check: every check passed"
    )
    return 1 if failed else 0


if __name__ == "__main__":
    sys.exit(main())
