"""What one hypergradient costs in hpo-cli, and where the time goes.

Run from the repository root::

    make bench                                    # default sizes on the CPU (a few minutes)
    make bench ARGS="--quick"                     # tiny sizes: a smoke run in seconds
    make bench ARGS="--device cuda"               # the same on the GPU (--device auto: GPU if any)
    make bench ARGS="--threads 1 --out /tmp/bench"
    .venv/bin/python -m benchmarks.hypergradient_cost --device auto --threads 4 --activation elu

On a machine shared with other processes, pass ``--threads 1``: with more threads than idle
cores every parallel region waits for a busy core, and times become erratic. The report states
how many cores other processes kept busy during the run (from ``/proc/stat``) and warns when
that is a quarter of a core or more.

Sections, one Markdown table each:

1. The cost of a Hessian-vector product (HVP) in units of one gradient (cross-entropy on random
   data, float32, training mode), for an MLP 784-256-256-10 (ReLU and ELU, batch 128), a
   LeNet-style CNN (``hpo_cli.models.LeNet``, 1×28×28 MNIST shapes, batch 128) and ResNet-18
   (``hpo_cli.models.resnet18``, 3×32×32 CIFAR shapes; batch 128 on a GPU, 8 on the CPU, with a
   smaller timing budget): (a) forward + ``torch.autograd.grad``; (b) ``TrainingCurvature.hvp``
   reusing the gradient graph (built once, outside the timed region: the steady-state cost per
   product inside a solver); (c) an HVP that rebuilds the gradient graph (forward +
   grad(create_graph) + grad); (d) ``torch.func`` forward-over-reverse, ``jvp(grad(f))`` with
   ``functional_call``, where torch.func accepts the model (ResNet-18's BatchNorm updates its
   running statistics in place, which torch.func refuses: that row is left out with the error
   in a note).
2. Vector arithmetic on lists of tensors (``hpo_cli.core.vectors``, ``torch._foreach_*``) against
   one flat buffer: 50 iterations of hpo-cli's ``ConjugateGradient`` against the same loop on flat
   vectors (on the MLP Hessian, and on a diagonal matrix to isolate the arithmetic), and the
   axpy / dot / norm operations alone on the MLP's parameter list.
3. Time per hypergradient of every solver at K = 5, 10, 20, 50 (Neumann terms; CG iterations
   with tol = 0): (a) ridge regression (n = 200, d = 50, per-weight L2 penalty c = exp(θ),
   float64, w at its closed-form optimum), with the relative error and cosine against the
   closed form; (b) the MLP with one weight-decay hyperparameter per weight (penalty
   Σ softplus(θ)·w², float32), the losses built inside the timed region, in units of one
   training step; (c) the same problem at a reduced width (MLP 64-32-32-10, 3,466 weights,
   float64, pretrained like 3b), with the relative error and cosine against the exact
   hypergradient from a dense ``torch.func`` Hessian, and hpo-cli's ``Exact`` solver timed
   beside the others. A figure, ``<out>/hypergradient_accuracy_<device>[_quick].png``, draws
   the relative error of 3a and 3c against HVPs used and against time.

Timing: ``torch.utils.benchmark.Timer.adaptive_autorange`` with the thread count in force,
after one warm-up call. Statements compared in one table are timed side by side, in
interleaved rounds (so that a change of machine load hits them alike); each time is the median
over all blocks with its interquartile range (IQR), † marks an IQR above 20 % of the median, and
every ratio compares rows of the same run. The Markdown goes to stdout and, with a CSV of the
same rows (machine information repeated on every row), to
``<out>/hypergradient_cost_<device>[_quick].{md,csv}``; the figure is drawn from the rows of 3a
and 3c (``plot_accuracy`` redraws it from the CSV's rows just as well); progress goes to
stderr.
"""

from __future__ import annotations

import argparse
import sys
from collections.abc import Sequence

import torch

from benchmarks.common.accuracy_figure import add_accuracy_figure
from benchmarks.common.harness import (
    DEFAULT_SIZES,
    QUICK_SIZES,
    BenchmarkRun,
    Sizes,
    Table,
    benchmark_command,
    benchmark_parser,
    log,
    parse_benchmark_args,
    report_stem,
    resolve_device,
    write_report,
)
from benchmarks.common.hvp_cost import section_hvp_cost
from benchmarks.common.machine import CpuSnapshot
from benchmarks.common.problems import ACTIVATIONS, make_mlp_problem, pretrain
from benchmarks.common.solver_accuracy import section_mlp, section_reduced_mlp, section_ridge
from benchmarks.common.vector_arithmetic import section_vector_arithmetic


def parse_args(argv: Sequence[str] | None) -> argparse.Namespace:
    parser = benchmark_parser(
        "hypergradient_cost",
        "Benchmark HVPs, vector arithmetic and hypergradient solvers of hpo-cli.",
    )
    parser.add_argument(
        "--activation",
        choices=tuple(ACTIVATIONS),
        default="relu",
        help="MLP activation of sections 2, 3b and 3c (section 1 times both)",
    )
    return parse_benchmark_args(parser, argv)


def run_sections(sizes: Sizes, device: torch.device, activation: str) -> list[Table]:
    tables = [section_hvp_cost(sizes, device)]
    problem = make_mlp_problem(sizes, activation, device)
    log(f"pretraining the MLP ({sizes.pretrain_steps} Adam steps)")
    gradient_norm = pretrain(problem, sizes.pretrain_steps)
    tables.append(section_vector_arithmetic(problem, sizes))
    tables.append(section_ridge(sizes, device))
    tables.append(section_mlp(problem, gradient_norm, sizes))
    tables.append(section_reduced_mlp(sizes, activation, device))
    return tables


def main(argv: Sequence[str] | None = None) -> int:
    args = parse_args(argv)
    device = resolve_device(args.device)
    sizes = QUICK_SIZES if args.quick else DEFAULT_SIZES
    command = benchmark_command("hypergradient_cost", argv)
    start = CpuSnapshot.now()
    tables = run_sections(sizes, device, args.activation)
    run = BenchmarkRun(command, device, sizes, args.quick, start, CpuSnapshot.now())
    figure = report_stem("hypergradient_accuracy", device, args.quick)
    add_accuracy_figure(tables, sizes, args.out, figure, device)
    stem = report_stem("hypergradient_cost", device, args.quick)
    write_report(args.out, stem, "hpo-cli hypergradient cost", run, tables)
    return 0


if __name__ == "__main__":
    sys.exit(main())
