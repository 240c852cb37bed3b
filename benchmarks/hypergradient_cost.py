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
import csv
import datetime
import itertools
import os
import platform
import shlex
import sys
import time
from collections.abc import Callable, Sequence
from dataclasses import dataclass, field, replace
from pathlib import Path
from typing import Any

import matplotlib
import torch
import torch.nn.functional as F
from torch import nn
from torch.func import functional_call, grad, jacrev, jvp
from torch.utils import benchmark

from hpo_cli import (
    ConjugateGradient,
    Exact,
    Hypergradient,
    Identity,
    Neumann,
    TrainingCurvature,
    hypergradient,
)
from hpo_cli.core.solvers import InverseHVPSolver, estimate_largest_eigenvalue
from hpo_cli.core.vectors import add, dot, flatten, norm, unflatten
from hpo_cli.models import LeNet, resnet18

Vector = list[torch.Tensor]
Losses = Callable[[], tuple[torch.Tensor, torch.Tensor]]  # () -> (train loss, validation loss)
MLP_DTYPE = torch.float32
RIDGE_DTYPE = torch.float64
REDUCED_DTYPE = torch.float64  # 3c: errors far below float32 round-off stay measurable
MNIST_SHAPE = (1, 28, 28)
CIFAR_SHAPE = (3, 32, 32)
ACTIVATIONS: dict[str, type[nn.Module]] = {"relu": nn.ReLU, "elu": nn.ELU}
IQR_THRESHOLD = 0.05  # adaptive_autorange stops once IQR/median falls below this
NOISY_IQR = 0.2  # a median whose IQR exceeds this fraction of it is marked † in the tables
BUSY_CORES = 0.25  # warn when other processes kept this many cores busy during the run
WEIGHT_DECAY = 1e-3  # initial softplus(θ) of every MLP weight
CG_DAMPING = 1e-2  # μ for the damped CG rows on the (indefinite) MLP Hessian
SETUP_POWER_ITERATIONS = 100  # λmax estimate behind the fixed Neumann step α = 1/λ̂max
PRETRAIN_LR = 1e-3
ERROR_FLOOR = 1e-17  # relative errors below this (an exact 0) are drawn at it on log axes


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
    statements: dict[str, Callable[[], Any]], sizes: Sizes
) -> dict[str, tuple[Timing, Any]]:
    """Time statements side by side, after one warm-up call of each.

    ``sizes.rounds`` rounds each run ``Timer.adaptive_autorange`` on every statement in turn,
    so that a change of machine load during the group hits all of them alike; the blocks of all
    rounds are merged. Returns each statement's timing and the result of its warm-up call.
    """
    results = {label: fn() for label, fn in statements.items()}
    timers = {
        label: benchmark.Timer(
            stmt="fn()", globals={"fn": fn}, label=label, num_threads=torch.get_num_threads()
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


# --------------------------------------------------------------------------------------------
# Problems
# --------------------------------------------------------------------------------------------


def randn(
    gen: torch.Generator, *shape: int, dtype: torch.dtype, device: torch.device
) -> torch.Tensor:
    """Normal samples drawn on the CPU (the same numbers on every device), then moved."""
    return torch.randn(*shape, generator=gen, dtype=dtype).to(device)


def randint(gen: torch.Generator, high: int, size: int, device: torch.device) -> torch.Tensor:
    return torch.randint(high, (size,), generator=gen).to(device)


def make_mlp(
    sizes: Sizes,
    activation: str,
    device: torch.device,
    seed: int,
    dtype: torch.dtype = MLP_DTYPE,
) -> nn.Sequential:
    """inputs-hidden-hidden-classes with the given activation (float32 unless told)."""
    torch.manual_seed(seed)
    widths = (sizes.inputs, sizes.hidden, sizes.hidden, sizes.classes)
    layers: list[nn.Module] = []
    for fan_in, fan_out in itertools.pairwise(widths):
        layers += [nn.Linear(fan_in, fan_out), ACTIVATIONS[activation]()]
    return nn.Sequential(*layers[:-1]).to(device=device, dtype=dtype)


def mlp_widths(sizes: Sizes) -> str:
    """The MLP's layer widths as in the tables, e.g. ``784-256-256-10``."""
    return f"{sizes.inputs}-{sizes.hidden}-{sizes.hidden}-{sizes.classes}"


@dataclass
class Batch:
    x: torch.Tensor
    y: torch.Tensor


def random_batch(
    sizes: Sizes, gen: torch.Generator, device: torch.device, dtype: torch.dtype = MLP_DTYPE
) -> Batch:
    x = randn(gen, sizes.batch, sizes.inputs, dtype=dtype, device=device)
    return Batch(x, randint(gen, sizes.classes, sizes.batch, device))


def random_images(
    batch: int, shape: tuple[int, ...], classes: int, gen: torch.Generator, device: torch.device
) -> Batch:
    """``batch`` float32 images of ``shape`` (C, H, W) with random labels."""
    x = randn(gen, batch, *shape, dtype=MLP_DTYPE, device=device)
    return Batch(x, randint(gen, classes, batch, device))


@dataclass
class MLPProblem:
    """An MLP with one weight-decay hyperparameter per weight: c = softplus(θ)."""

    model: nn.Module
    params: Vector
    hparams: Vector
    train: Batch
    val: Batch

    def data_loss(self, batch: Batch) -> torch.Tensor:
        return F.cross_entropy(self.model(batch.x), batch.y)

    def train_loss(self) -> torch.Tensor:
        """Cross-entropy on the training batch + Σ softplus(θ)·w²."""
        penalty = sum(
            (F.softplus(t) * p.square()).sum()
            for t, p in zip(self.hparams, self.params, strict=True)
        )
        return self.data_loss(self.train) + penalty

    def val_loss(self) -> torch.Tensor:
        return self.data_loss(self.val)


def make_mlp_problem(
    sizes: Sizes, activation: str, device: torch.device, dtype: torch.dtype = MLP_DTYPE
) -> MLPProblem:
    model = make_mlp(sizes, activation, device, seed=1, dtype=dtype)
    gen = torch.Generator().manual_seed(2)
    params = list(model.parameters())
    raw = torch.log(torch.expm1(torch.tensor(WEIGHT_DECAY))).item()  # softplus⁻¹
    hparams = [torch.full_like(p, raw).requires_grad_() for p in params]
    train = random_batch(sizes, gen, device, dtype)
    return MLPProblem(model, params, hparams, train, random_batch(sizes, gen, device, dtype))


def pretrain(problem: MLPProblem, steps: int) -> float:
    """Adam on the penalised training loss, so that w is near a minimiser (as the IFT assumes);
    returns the final ‖∂L_t/∂w‖."""
    optimizer = torch.optim.Adam(problem.params, lr=PRETRAIN_LR)
    for _ in range(steps):
        optimizer.zero_grad(set_to_none=True)
        gradients = torch.autograd.grad(problem.train_loss(), problem.params)
        for param, gradient in zip(problem.params, gradients, strict=True):
            param.grad = gradient
        optimizer.step()
    for param in problem.params:
        param.grad = None
    return float(norm(torch.autograd.grad(problem.train_loss(), problem.params)))


def random_like(params: Sequence[torch.Tensor], seed: int) -> Vector:
    gen = torch.Generator().manual_seed(seed)
    return [randn(gen, *p.shape, dtype=p.dtype, device=p.device) for p in params]


def relative_difference(xs: Sequence[torch.Tensor], ys: Sequence[torch.Tensor]) -> float:
    """‖x − y‖ / ‖y‖ of two vectors given as tensor lists."""
    return float(norm(add(xs, ys, alpha=-1.0)) / norm(ys))


def accuracy(grads: Sequence[torch.Tensor], reference: torch.Tensor) -> dict[str, float]:
    """Relative error ‖g − g*‖/‖g*‖ and cosine ⟨g, g*⟩/(‖g‖‖g*‖) of a hypergradient (a tensor
    list) against the flat reference g*."""
    flat = flatten([g.detach() for g in grads])
    error = torch.linalg.vector_norm(flat - reference) / torch.linalg.vector_norm(reference)
    return {
        "rel_error": float(error),
        "cosine": float(F.cosine_similarity(flat, reference, dim=0)),
    }


# --------------------------------------------------------------------------------------------
# Section 1: HVP cost relative to one gradient
# --------------------------------------------------------------------------------------------


def hvp_closures(
    model: nn.Module, batch: Batch, direction: Vector
) -> dict[str, Callable[[], Sequence[torch.Tensor]]]:
    """The four statements of section 1, keyed by their row label."""
    params = list(model.parameters())

    def loss() -> torch.Tensor:
        return F.cross_entropy(model(batch.x), batch.y)

    def gradient() -> Sequence[torch.Tensor]:
        return torch.autograd.grad(loss(), params)

    curvature = TrainingCurvature(loss(), params)  # built once, outside the timed region

    def hvp_reused() -> Sequence[torch.Tensor]:
        return curvature.hvp(direction)

    def hvp_rebuilt() -> Sequence[torch.Tensor]:
        gradients = torch.autograd.grad(loss(), params, create_graph=True)
        return torch.autograd.grad(gradients, params, grad_outputs=direction)

    names = [name for name, _ in model.named_parameters()]
    primals = {name: p.detach() for name, p in zip(names, params, strict=True)}
    tangents = dict(zip(names, direction, strict=True))

    def functional_loss(weights: dict[str, torch.Tensor]) -> torch.Tensor:
        return F.cross_entropy(functional_call(model, weights, (batch.x,)), batch.y)

    gradient_fn = grad(functional_loss)

    def hvp_forward_over_reverse() -> Sequence[torch.Tensor]:
        _, product = jvp(gradient_fn, (primals,), (tangents,))
        return [product[name] for name in names]

    return {
        "(a) gradient: forward + autograd.grad": gradient,
        "(b) HVP reusing the gradient graph (TrainingCurvature.hvp)": hvp_reused,
        "(c) HVP rebuilding the graph: forward + grad(create_graph) + grad": hvp_rebuilt,
        "(d) HVP by torch.func jvp(grad(f)) (forward-over-reverse)": hvp_forward_over_reverse,
    }


@dataclass
class HvpModel:
    """One model of section 1 with its batch of random data and timing budget."""

    name: str
    activation: str
    model: nn.Module
    batch: Batch
    sizes: Sizes  # the timing budget (min_run_time, max_run_time, rounds) of its statements


def hvp_models(sizes: Sizes, device: torch.device) -> list[HvpModel]:
    """The MLP (ReLU and ELU), LeNet on MNIST shapes and ResNet-18 on CIFAR shapes.

    ResNet-18 runs at ``sizes.resnet_batch_cuda`` on a GPU, at ``sizes.resnet_batch_cpu`` on
    the CPU, with its own (smaller) timing budget.
    """
    models = []
    for activation in ACTIVATIONS:
        model = make_mlp(sizes, activation, device, seed=0)
        batch = random_batch(sizes, torch.Generator().manual_seed(0), device)
        models.append(HvpModel(f"MLP {mlp_widths(sizes)}", activation, model, batch, sizes))
    torch.manual_seed(0)
    lenet = LeNet(MNIST_SHAPE, sizes.classes).to(device)
    gen = torch.Generator().manual_seed(0)
    images = random_images(sizes.lenet_batch, MNIST_SHAPE, sizes.classes, gen, device)
    models.append(HvpModel("LeNet, 1×28×28", "relu", lenet, images, sizes))
    torch.manual_seed(0)
    resnet = resnet18(CIFAR_SHAPE, sizes.classes).to(device)
    batch = sizes.resnet_batch_cuda if device.type == "cuda" else sizes.resnet_batch_cpu
    images = random_images(batch, CIFAR_SHAPE, sizes.classes, gen, device)
    resnet_timing = replace(
        sizes, min_run_time=sizes.resnet_min_run_time, max_run_time=sizes.resnet_max_run_time
    )
    models.append(HvpModel("ResNet-18, 3×32×32", "relu", resnet, images, resnet_timing))
    return models


def first_line(error: BaseException) -> str:
    """``Type: first line of the message`` of an exception."""
    return f"{type(error).__name__}: {str(error).splitlines()[0] if str(error) else ''}"


def hvp_cost_rows(case: HvpModel) -> tuple[list[dict[str, Any]], list[str]]:
    """Section 1's rows for one model, and notes on statements left out.

    Forward-mode AD (d) is tried once before timing; a model that torch.func refuses (ResNet's
    BatchNorm updates its running statistics in place) loses that row, with the error in a note.
    """
    params = list(case.model.parameters())
    direction = random_like(params, seed=3)
    statements = hvp_closures(case.model, case.batch, direction)
    notes = []
    forward_label = next(label for label in statements if label.startswith("(d)"))
    try:
        statements[forward_label]()
    except RuntimeError as error:
        del statements[forward_label]
        notes.append(
            f"{case.name}: (d) left out, torch.func refuses this model in training mode: "
            f"`{first_line(error)}`"
        )
    dim = sum(p.numel() for p in params)
    log(f"section 1: HVP cost, {case.name} ({case.activation}), batch {len(case.batch.y)}")
    timed = measure_group(statements, case.sizes)
    (gradient, _), (_, reference) = list(timed.values())[:2]
    rows = []
    for label, (timing, result) in timed.items():
        row = {
            "model": case.name,
            "weights": dim,
            "batch": len(case.batch.y),
            "activation": case.activation,
            "case": label,
            **timing.columns(),
        }
        row["ratio_to_gradient"] = timing.median_ms / gradient.median_ms
        if not label.startswith("(a)"):
            row["rel_diff_to_b"] = relative_difference(result, reference)
        rows.append(row)
    return rows, notes


def section_hvp_cost(sizes: Sizes, device: torch.device) -> Table:
    table = Table(
        section="1",
        title="1. HVP cost relative to one gradient (cross-entropy, random data, float32)",
        columns=[
            Column("model", "model"),
            Column("weights", "weights", lambda v: f"{v:,}"),
            Column("batch", "batch"),
            Column("activation", "act."),
            Column("case", "statement timed"),
            Column("median_ms", "median ms", fmt_ms),
            Column("iqr_ms", "IQR ms", fmt_ms),
            Column("ratio_to_gradient", "× (a)", fmt_ratio),
            Column("rel_diff_to_b", "‖Hv − Hv_(b)‖/‖Hv_(b)‖", fmt_sci),
        ],
    )
    for case in hvp_models(sizes, device):
        rows, notes = hvp_cost_rows(case)
        table.rows += rows
        table.notes += notes
    resnet_batch = sizes.resnet_batch_cuda if device.type == "cuda" else sizes.resnet_batch_cpu
    table.notes += [
        "Cross-entropy on random inputs and labels at the initial weights, models in training "
        "mode; v is a random direction. (b) builds `TrainingCurvature(loss, params)` (forward + "
        "create_graph gradient) once outside the timed region and times only `.hvp(v)`.",
        f"× (a) divides by the gradient of the same model. LeNet: `hpo_cli.models.LeNet` "
        f"(conv 6, 16; fc 120, 84) at batch {sizes.lenet_batch}. ResNet-18: "
        f"`hpo_cli.models.resnet18` (CIFAR stem) at batch {resnet_batch} on {device.type} "
        f"(full batch {sizes.resnet_batch_cuda} on a GPU only, {sizes.resnet_batch_cpu} on the "
        f"CPU), timed with a smaller budget (min_run_time {sizes.resnet_min_run_time} s, "
        f"max_run_time {sizes.resnet_max_run_time} s per statement); its BatchNorm layers "
        "update their running statistics at every forward pass, as in training.",
        "The last column checks that (c) and (d) compute the same product as (b).",
    ]
    return table


# --------------------------------------------------------------------------------------------
# Section 2: lists of tensors against one flat buffer
# --------------------------------------------------------------------------------------------


def flat_axpy(x: torch.Tensor, y: torch.Tensor, alpha: float) -> torch.Tensor:
    """x + alpha·y on flat vectors, with the kernel of ``hpo_cli.core.vectors.add``."""
    return torch.add(x, y, alpha=alpha)


def flat_cg(
    matvec: Callable[[torch.Tensor], torch.Tensor],
    b: torch.Tensor,
    max_iter: int,
    damping: float = 0.0,
) -> tuple[torch.Tensor, int]:
    """The loop of ``hpo_cli.ConjugateGradient(max_iter, tol=0, damping)`` (no preconditioner)
    on one flat vector: the same operations and host synchronisations, step for step."""
    solution = torch.zeros_like(b)
    residual = b
    b_norm = float(torch.linalg.vector_norm(b))
    direction = residual
    rz = float(torch.dot(residual, residual))
    residual_norm, iterations = b_norm, 0
    while residual_norm > 0.0 and iterations < max_iter:
        product = matvec(direction)
        if damping:
            product = flat_axpy(product, direction, damping)
        curvature = float(torch.dot(direction, product))
        if not curvature > 0.0:  # ConjugateGradient stops here too (non-finite or ≤ 0)
            break
        step = rz / curvature
        solution = flat_axpy(solution, direction, step)
        residual = flat_axpy(residual, product, -step)
        residual_norm = float(torch.linalg.vector_norm(residual))
        rz_next = float(torch.dot(residual, residual))
        direction = flat_axpy(residual, direction, rz_next / rz)
        rz = rz_next
        iterations += 1
    bool(torch.isfinite(solution).all())  # ConjugateGradient's final all_finite check
    return solution, iterations


def cg_pair(
    label: str,
    list_matvec: Callable[[Vector], Vector],
    like: Vector,
    b: Vector,
    iterations: int,
    damping: float,
    sizes: Sizes,
    flat_matvec: Callable[[torch.Tensor], torch.Tensor] | None = None,
) -> dict[str, Any]:
    """hpo-cli's CG on tensor lists against ``flat_cg``; the flat matvec defaults to the list
    one wrapped as ``flatten(list_matvec(unflatten(v)))``."""
    solver = ConjugateGradient(max_iter=iterations, tol=0.0, damping=damping)
    b_flat = flatten(b)

    def wrapped_matvec(vector: torch.Tensor) -> torch.Tensor:
        return flatten(list_matvec(unflatten(vector, like)))

    flat_matvec = flat_matvec or wrapped_matvec
    log(f"section 2: {label}")
    timed = measure_group(
        {
            "lists": lambda: solver(list_matvec, b),
            "flat": lambda: flat_cg(flat_matvec, b_flat, iterations, damping),
        },
        sizes,
    )
    list_timing, (list_x, info) = timed["lists"]
    flat_timing, (flat_x, flat_iterations) = timed["flat"]
    return {
        "operation": label,
        **list_timing.columns("list_"),
        **flat_timing.columns("flat_"),
        "list_over_flat": list_timing.median_ms / flat_timing.median_ms,
        "iterations": f"{info.iterations} / {flat_iterations}",
        "rel_diff": relative_difference(unflatten(flat_x, like), list_x),
    }


def micro_pair(
    label: str, list_fn: Callable[[], Any] | None, flat_fn: Callable[[], Any], sizes: Sizes
) -> dict[str, Any]:
    log(f"section 2: {label}")
    statements = {"flat": flat_fn} if list_fn is None else {"lists": list_fn, "flat": flat_fn}
    timed = measure_group(statements, sizes)
    row: dict[str, Any] = {"operation": label, "iterations": None}
    row.update(timed["flat"][0].columns("flat_"))
    if "lists" in timed:
        row.update(timed["lists"][0].columns("list_"))
        row["list_over_flat"] = timed["lists"][0].median_ms / timed["flat"][0].median_ms
    return row


def micro_rows(params: Vector, sizes: Sizes) -> list[dict[str, Any]]:
    xs, ys = random_like(params, seed=4), random_like(params, seed=5)
    x, y = flatten(xs), flatten(ys)
    cases: list[tuple[str, Callable[[], Any] | None, Callable[[], Any]]] = [
        ("axpy x + a·y", lambda: add(xs, ys, alpha=0.5), lambda: flat_axpy(x, y, 0.5)),
        ("dot ⟨x, y⟩", lambda: dot(xs, ys), lambda: torch.dot(x, y)),
        ("norm ‖x‖", lambda: norm(xs), lambda: torch.linalg.vector_norm(x)),
        (
            "flatten(unflatten(x)): a flat design's copy per matvec",
            None,
            lambda: flatten(unflatten(x, params)),
        ),
    ]
    return [micro_pair(label, list_fn, flat_fn, sizes) for label, list_fn, flat_fn in cases]


def section_vector_arithmetic(problem: MLPProblem, sizes: Sizes) -> Table:
    params = problem.params
    dim = sum(p.numel() for p in params)
    table = Table(
        section="2",
        title=f"2. Tensor lists (torch._foreach_*) vs one flat buffer ({len(params)} tensors, "
        f"{dim:,} weights, float32)",
        columns=[
            Column("operation", "operation"),
            Column("list_median_ms", "lists ms", fmt_ms),
            Column("list_iqr_ms", "IQR", fmt_ms),
            Column("flat_median_ms", "flat ms", fmt_ms),
            Column("flat_iqr_ms", "IQR", fmt_ms),
            Column("list_over_flat", "lists / flat", fmt_ratio),
            Column("iterations", "iters lists / flat"),
            Column("rel_diff", "‖x_flat − x_lists‖/‖x_lists‖", fmt_sci),
        ],
    )
    iterations = sizes.cg_iterations
    curvature = TrainingCurvature(problem.train_loss(), params)
    b = [g.detach() for g in torch.autograd.grad(problem.val_loss(), params)]
    table.rows.append(
        cg_pair(
            f"CG, {iterations} iterations, MLP Hessian + μI (μ = {CG_DAMPING:g})",
            curvature.hvp,
            params,
            b,
            iterations,
            CG_DAMPING,
            sizes,
        )
    )
    gen = torch.Generator().manual_seed(6)
    diagonal = [
        (1.0 + 9.0 * torch.rand(p.shape, generator=gen, dtype=p.dtype)).to(p.device) for p in params
    ]
    diagonal_flat = flatten(diagonal)
    table.rows.append(
        cg_pair(
            f"CG, {iterations} iterations, diagonal matrix (vector arithmetic only)",
            lambda v: list(torch._foreach_mul(list(v), diagonal)),
            params,
            b,
            iterations,
            0.0,
            sizes,
            flat_matvec=lambda v: v * diagonal_flat,
        )
    )
    table.rows += micro_rows(params, sizes)
    table.notes += [
        "Lists: hpo-cli's `ConjugateGradient` and `hpo_cli.core.vectors`. Flat: the same CG loop "
        "(same kernels and host syncs) in this file on one 1-D tensor. The HVP row wraps "
        "`TrainingCurvature.hvp` as `flatten(hvp(unflatten(v)))` (built once, outside the timed "
        "region, on the pretrained MLP of section 3b); the diagonal row multiplies natively "
        "(`_foreach_mul` on lists, one `mul` flat), so it isolates the vector arithmetic.",
        "Ratios above 1 mean the tensor lists are slower.",
    ]
    return table


# --------------------------------------------------------------------------------------------
# Section 3: time per hypergradient
# --------------------------------------------------------------------------------------------


@dataclass(frozen=True)
class SolverCase:
    name: str
    k: int | None
    solver: InverseHVPSolver

    @property
    def label(self) -> str:
        return self.name if self.k is None else f"{self.name}, K = {self.k}"


def solver_cases(
    ks: Sequence[int], alpha: float, cg_damping: float | None, exact: bool
) -> list[SolverCase]:
    """identity; Neumann with fixed α and with α = "auto"; CG (tol = 0); damped CG; exact."""
    cases = [SolverCase("identity", None, Identity())]
    cases += [SolverCase(f"neumann α = {alpha:.3g}", k, Neumann(k, alpha=alpha)) for k in ks]
    cases += [SolverCase("neumann α = auto", k, Neumann(k, alpha="auto")) for k in ks]
    cases += [SolverCase("cg", k, ConjugateGradient(max_iter=k, tol=0.0)) for k in ks]
    if cg_damping:
        cases += [
            SolverCase(
                f"cg μ = {cg_damping:g}",
                k,
                ConjugateGradient(max_iter=k, tol=0.0, damping=cg_damping),
            )
            for k in ks
        ]
    if exact:
        cases.append(SolverCase("exact", None, Exact()))
    return cases


def fixed_alpha(loss: torch.Tensor, params: Vector) -> float:
    """α = 1/λ̂max from a long power iteration at setup time (a step tuned once, outside)."""
    curvature = TrainingCurvature(loss, params)
    start = random_like(params, seed=7)
    largest, _ = estimate_largest_eigenvalue(curvature.hvp, start, SETUP_POWER_ITERATIONS)
    return 1.0 / largest


def hypergradient_statement(
    case: SolverCase, losses: Losses, params: Vector, hparams: Vector
) -> Callable[[], Hypergradient]:
    """One hypergradient as a user computes it: both losses built, then ``hypergradient``."""

    def run() -> Hypergradient:
        train_loss, val_loss = losses()
        return hypergradient(
            train_loss, val_loss, params, hparams, case.solver, raise_on_failure=False
        )

    return run


def time_solvers(
    cases: Sequence[SolverCase],
    losses: Losses,
    params: Vector,
    hparams: Vector,
    sizes: Sizes,
    extra: dict[str, Callable[[], Any]],
) -> tuple[list[dict[str, Any]], dict[str, Timing]]:
    """Time every solver case (and the ``extra`` statements) side by side; returns one row per
    case, with the hypergradient kept under ``"grads"``, and the extra statements' timings."""
    statements = dict(extra)
    statements |= {
        case.label: hypergradient_statement(case, losses, params, hparams) for case in cases
    }
    timed = measure_group(statements, sizes)
    rows = []
    for case in cases:
        timing, result = timed[case.label]
        rows.append(
            {
                "solver": case.name,
                "k": case.k,
                **timing.columns(),
                "hvps": result.hvps,
                "status": result.solve.status,
                "residual": result.residual,
                "grads": result.grads,
            }
        )
    return rows, {label: timed[label][0] for label in extra}


def marginal_hvp_cost(rows: Sequence[dict[str, Any]]) -> str:
    """Per solver run at two K: (time at the larger K − time at the smaller) / (extra HVPs)."""
    parts = []
    for name, group in itertools.groupby(rows, key=lambda row: row["solver"]):
        runs = [row for row in group if row.get("k") is not None]
        if len(runs) < 2 or runs[-1]["hvps"] <= runs[0]["hvps"]:
            continue
        extra_ms = runs[-1]["median_ms"] - runs[0]["median_ms"]
        parts.append(f"{name}: {extra_ms / (runs[-1]['hvps'] - runs[0]['hvps']):.3g} ms")
    return (
        "Marginal cost per extra HVP inside a solve (between the smallest and the largest K): "
        + "; ".join(parts)
    )


def ridge_hessian(x: torch.Tensor, c: torch.Tensor) -> torch.Tensor:
    """H = 2XᵀX/n + 2 diag(c)."""
    return 2.0 * x.T @ x / x.shape[0] + 2.0 * torch.diag(c)


@dataclass
class RidgeProblem:
    """(1/n)‖Xw − y‖² + Σ exp(θ_i) w_i² at w = w*(θ), validated by (1/m)‖X_v w − y_v‖²."""

    x_train: torch.Tensor
    y_train: torch.Tensor
    x_val: torch.Tensor
    y_val: torch.Tensor
    theta: torch.Tensor
    weights: torch.Tensor

    def losses(self) -> tuple[torch.Tensor, torch.Tensor]:
        train = (self.x_train @ self.weights - self.y_train).square().mean()
        penalty = (self.theta.exp() * self.weights.square()).sum()
        val = (self.x_val @ self.weights - self.y_val).square().mean()
        return train + penalty, val

    def hessian(self) -> torch.Tensor:
        return ridge_hessian(self.x_train, self.theta.detach().exp())

    def reference(self) -> torch.Tensor:
        """dL_v/dθ_i = −2 w*_i [H⁻¹∇L_v(w*)]_i · c_i (chain rule through c = exp θ)."""
        w = self.weights.detach()
        m = self.x_val.shape[0]
        val_gradient = 2.0 * self.x_val.T @ (self.x_val @ w - self.y_val) / m
        inverse_hvp = torch.linalg.solve(self.hessian(), val_gradient)
        return -2.0 * w * inverse_hvp * self.theta.detach().exp()


def make_ridge(sizes: Sizes, device: torch.device) -> RidgeProblem:
    gen = torch.Generator().manual_seed(8)
    n, m, d = sizes.ridge_train, sizes.ridge_val, sizes.ridge_dim

    def sample(*shape: int) -> torch.Tensor:
        return randn(gen, *shape, dtype=RIDGE_DTYPE, device=device)

    w_true, x_train, x_val = sample(d), sample(n, d), sample(m, d)
    y_train = x_train @ w_true + 0.5 * sample(n)
    y_val = x_val @ w_true + 0.5 * sample(m)
    log10_c = torch.empty(d, dtype=RIDGE_DTYPE).uniform_(-2.0, 0.0, generator=gen)
    theta = (log10_c * torch.log(torch.tensor(10.0, dtype=RIDGE_DTYPE))).to(device)  # c ∈ [.01, 1]
    optimum = torch.linalg.solve(ridge_hessian(x_train, theta.exp()), 2.0 * x_train.T @ y_train / n)
    return RidgeProblem(
        x_train, y_train, x_val, y_val, theta.requires_grad_(), optimum.requires_grad_()
    )


def accuracy_columns(reference: str) -> list[Column]:
    """Columns of a table of solvers timed and checked against ``reference`` (sections 3a, 3c)."""
    return [
        Column("solver", "solver"),
        Column("k", "K"),
        Column("median_ms", "median ms", fmt_ms),
        Column("iqr_ms", "IQR ms", fmt_ms),
        Column("hvps", "HVPs"),
        Column("status", "status"),
        Column("rel_error", f"rel. error vs {reference}", fmt_sci),
        Column("cosine", "cosine", fmt_cosine),
        Column("residual", "‖Hx − b‖/‖b‖", fmt_sci),
    ]


def section_ridge(sizes: Sizes, device: torch.device) -> Table:
    problem = make_ridge(sizes, device)
    params, hparams = [problem.weights], [problem.theta]
    alpha = fixed_alpha(problem.losses()[0], params)
    reference = problem.reference()
    table = Table(
        section="3a",
        title=f"3a. Hypergradient per solver: ridge regression (n = {sizes.ridge_train}, "
        f"d = {sizes.ridge_dim}, per-weight c = exp(θ), float64)",
        columns=accuracy_columns("closed form"),
    )
    log("section 3a: ridge regression")
    cases = solver_cases(sizes.ks, alpha, cg_damping=None, exact=True)
    table.rows, _ = time_solvers(cases, problem.losses, params, hparams, sizes, extra={})
    for row in table.rows:
        row.update(accuracy(row.pop("grads"), reference))
    table.notes.append(marginal_hvp_cost(table.rows) + ".")
    eigenvalues = torch.linalg.eigvalsh(problem.hessian())
    table.notes += [
        f"Fixed α = 1/λ̂max with λ̂max = {1 / alpha:.4g} from {SETUP_POWER_ITERATIONS} power "
        f"iterations at setup (true eigenvalues of H: {eigenvalues.min():.3g} … "
        f"{eigenvalues.max():.4g}); α = auto spends {Neumann().power_iterations} power iterations "
        "inside every call.",
        "Each call builds both losses and runs `hypergradient(..., check_residual=True)`: HVPs "
        "include the residual check; the error is ‖g − g*‖/‖g*‖ against the closed form "
        "dL_v/dθ_i = −2 w*_i [H⁻¹∇L_v(w*)]_i c_i.",
    ]
    return table


def section_mlp(problem: MLPProblem, gradient_norm: float, sizes: Sizes) -> Table:
    params, hparams = problem.params, problem.hparams
    alpha = fixed_alpha(problem.train_loss(), params)
    dim = sum(p.numel() for p in params)
    table = Table(
        section="3b",
        title=f"3b. Hypergradient per solver: MLP {mlp_widths(sizes)}, {dim:,} weight-decay "
        f"hyperparameters, batch {sizes.batch}, float32",
        columns=[
            Column("solver", "solver"),
            Column("k", "K"),
            Column("median_ms", "median ms", fmt_ms),
            Column("iqr_ms", "IQR ms", fmt_ms),
            Column("train_steps", "× training step", fmt_ratio),
            Column("hvps", "HVPs"),
            Column("status", "status"),
            Column("residual", "‖Hx − b‖/‖b‖", fmt_sci),
        ],
    )

    def losses() -> tuple[torch.Tensor, torch.Tensor]:
        return problem.train_loss(), problem.val_loss()

    def training_step() -> Sequence[torch.Tensor]:
        return torch.autograd.grad(problem.train_loss(), params)

    log("section 3b: MLP")
    step_label = "training step: forward + grad of L_t"
    cases = solver_cases(sizes.ks, alpha, cg_damping=CG_DAMPING, exact=False)
    rows, extra = time_solvers(
        cases, losses, params, hparams, sizes, extra={step_label: training_step}
    )
    step = extra[step_label]
    table.rows = [{"solver": step_label, "k": None, **step.columns()}, *rows]
    for row in table.rows:
        row.pop("grads", None)
        row["train_steps"] = row["median_ms"] / step.median_ms
    table.notes.append(marginal_hvp_cost(rows) + ".")
    table.notes += [
        f"Weights pretrained for {sizes.pretrain_steps} Adam steps on the penalised training "
        f"loss (final ‖∂L_t/∂w‖ = {gradient_norm:.2g}); initial softplus(θ) = {WEIGHT_DECAY:g}. "
        "The Hessian is still indefinite there, so undamped CG can stop early on negative "
        "curvature (status column); the damped rows solve (H + μI)x = b.",
        f"Fixed α = 1/λ̂max = {alpha:.4g} from {SETUP_POWER_ITERATIONS} power iterations at "
        "setup. Exact (a dense d×d Hessian) is infeasible at this size and skipped: the "
        "accuracy of each solver on this problem is measured at a reduced width in 3c.",
        "Each call builds both losses (two forward passes) and runs "
        "`hypergradient(..., check_residual=True)`; HVPs include the residual check. The "
        "training step is one forward + `autograd.grad` of the penalised loss (no optimiser).",
    ]
    return table


def dense_mlp_reference(problem: MLPProblem) -> tuple[torch.Tensor, torch.Tensor]:
    """The exact hypergradient of the per-weight decay MLP, and the eigenvalues of H.

    Independent of hpo-cli's curvature products and solvers: H = ∂²L_t/∂w² is the dense d×d
    Hessian of the training loss as a function of the flat weights (``torch.func`` reverse
    over reverse, ``jacrev(jacrev(L_t))``), and with the penalty Σ softplus(θ_i)·w_i²,
    ∂²L_t/∂θ_i∂w_j = δ_ij·2w_i·σ(θ_i), so

        dL_v/dθ = −2 w ⊙ σ(θ) ⊙ H⁻¹ ∂L_v/∂w      (L_v does not depend on θ).

    Returns:
        The flat hypergradient (d entries, hyperparameters in parameter order) and the
        eigenvalues of H in ascending order.
    """
    names = [name for name, _ in problem.model.named_parameters()]
    like = [p.detach() for p in problem.params]
    weights = flatten(like)
    theta = flatten([t.detach() for t in problem.hparams])

    def data_loss(flat: torch.Tensor, batch: Batch) -> torch.Tensor:
        tensors = dict(zip(names, unflatten(flat, like), strict=True))
        return F.cross_entropy(functional_call(problem.model, tensors, (batch.x,)), batch.y)

    def train_loss(flat: torch.Tensor) -> torch.Tensor:
        return data_loss(flat, problem.train) + (F.softplus(theta) * flat.square()).sum()

    hessian = jacrev(jacrev(train_loss))(weights)
    val_gradient = grad(lambda flat: data_loss(flat, problem.val))(weights)
    inverse_hvp = torch.linalg.solve(hessian, val_gradient)
    return -2.0 * weights * torch.sigmoid(theta) * inverse_hvp, torch.linalg.eigvalsh(hessian)


def section_reduced_mlp(sizes: Sizes, activation: str, device: torch.device) -> Table:
    """3c: every solver's time and accuracy on a reduced-width MLP, against the exact answer."""
    reduced = replace(sizes, inputs=sizes.reduced_inputs, hidden=sizes.reduced_hidden)
    problem = make_mlp_problem(reduced, activation, device, dtype=REDUCED_DTYPE)
    params, hparams = problem.params, problem.hparams
    dim = sum(p.numel() for p in params)
    log(f"section 3c: reduced MLP {mlp_widths(reduced)} ({dim:,} weights), pretraining")
    gradient_norm = pretrain(problem, sizes.pretrain_steps)
    reference, eigenvalues = dense_mlp_reference(problem)
    alpha = fixed_alpha(problem.train_loss(), params)
    table = Table(
        section="3c",
        title=f"3c. Hypergradient per solver against the exact one: MLP {mlp_widths(reduced)} "
        f"({activation}), {dim:,} weight-decay hyperparameters, batch {sizes.batch}, "
        f"{str(REDUCED_DTYPE).removeprefix('torch.')}",
        columns=accuracy_columns("exact"),
    )

    def losses() -> tuple[torch.Tensor, torch.Tensor]:
        return problem.train_loss(), problem.val_loss()

    log("section 3c: timing the solvers")
    cases = solver_cases(sizes.ks, alpha, cg_damping=CG_DAMPING, exact=True)
    table.rows, _ = time_solvers(cases, losses, params, hparams, sizes, extra={})
    for row in table.rows:
        row.update(accuracy(row.pop("grads"), reference))
    negative = int((eigenvalues < 0).sum())
    small = int((eigenvalues.abs() < 0.01 * eigenvalues[-1]).sum())
    smallest = float(eigenvalues.abs().min())
    table.notes.append(marginal_hvp_cost(table.rows) + ".")
    table.notes += [
        "The exact hypergradient −2w ⊙ σ(θ) ⊙ H⁻¹∇L_v(w) is computed once from a dense H "
        "(`torch.func.jacrev(jacrev(L_t))` of the flat-weight loss, independent of hpo-cli's "
        "curvature code "
        "and solvers); the `exact` row (hpo-cli's `Exact` solver, timed like the others) "
        "reproduces it, and every other error is measured against it.",
        f"Weights pretrained like 3b ({sizes.pretrain_steps} Adam steps, final ‖∂L_t/∂w‖ = "
        f"{gradient_norm:.2g}), in {str(REDUCED_DTYPE).removeprefix('torch.')} so that errors "
        f"far below float32 round-off stay visible. Eigenvalues of H: {eigenvalues[0]:.3g} … "
        f"{eigenvalues[-1]:.4g}; {negative} of {dim} negative, {small} with |λ| below 1 % of "
        f"λmax, smallest |λ| = {smallest:.2g}. H⁻¹ magnifies the components of ∇L_v along "
        "those directions by 1/|λ|, which can dominate the exact hypergradient while a solver "
        "started from 0 resolves them last, or never: undamped CG stops on negative "
        "curvature, Neumann's terms grow along negative directions, and damped CG converges "
        f"to (H + μI)⁻¹b (μ = {CG_DAMPING:g}), not to H⁻¹b.",
        f"Fixed α = 1/λ̂max = {alpha:.4g} from {SETUP_POWER_ITERATIONS} power iterations at "
        "setup; HVPs include the residual check.",
    ]
    return table


def plot_accuracy(
    problems: Sequence[tuple[str, Sequence[dict[str, Any]]]], path: Path, device: torch.device
) -> None:
    """Relative error against HVPs used (left) and against time (right), log-log, one line per
    solver (identity and exact are single points), one row of panels per problem.

    Args:
        problems: (panel title, rows) pairs; each row has ``solver``, ``hvps``, ``median_ms``
            and ``rel_error`` (the rows of 3a and 3c, or the same columns read from the CSV).
        path: the PNG to write.
        device: named in the figure's title.
    """
    matplotlib.use("Agg")
    import matplotlib.pyplot as plt
    from matplotlib.ticker import NullFormatter

    families = ("identity", "neumann α =", "neumann α = auto", "cg", "cg μ", "exact")

    def colour(solver: str) -> str:
        """The same colour for a solver in every panel (a fixed α differs between problems)."""
        family = max((f for f in families if solver.startswith(f)), key=len, default="")
        return f"C{families.index(family) if family else len(families)}"

    figure, axes = plt.subplots(len(problems), 2, figsize=(11, 4.2 * len(problems)), squeeze=False)
    for row_axes, (title, table_rows) in zip(axes, problems, strict=True):
        by_solver: dict[str, list[dict[str, Any]]] = {}
        for row in table_rows:
            by_solver.setdefault(row["solver"], []).append(row)
        for ax, key, label in (
            (row_axes[0], "hvps", "HVPs per hypergradient (residual check included)"),
            (row_axes[1], "median_ms", "median time per hypergradient (ms)"),
        ):
            for solver, rows in by_solver.items():
                points = [(r[key], max(r["rel_error"], ERROR_FLOOR)) for r in rows]
                style = "o-" if len(points) > 1 else "s"
                ax.loglog(*zip(*points, strict=True), style, color=colour(solver), label=solver)
            ax.set_xlabel(label)
            ax.set_ylabel("relative error vs exact")
            ax.set_title(title, fontsize=10)
            ax.xaxis.set_minor_formatter(NullFormatter())  # minor labels collide on short ranges
            ax.grid(True, which="both", alpha=0.3)
        row_axes[0].legend(fontsize=8)
    figure.suptitle(f"hpo-cli: accuracy of one hypergradient per solver ({device.type})")
    figure.tight_layout()
    figure.savefig(path, dpi=110)
    plt.close(figure)


# --------------------------------------------------------------------------------------------
# Report
# --------------------------------------------------------------------------------------------


def cpu_name() -> str:
    try:
        for line in Path("/proc/cpuinfo").read_text().splitlines():
            if line.startswith("model name"):
                return line.split(":", 1)[1].strip()
    except OSError:
        pass
    return platform.processor() or "unknown CPU"


def device_name(device: torch.device) -> str:
    if device.type == "cuda":
        return f"{torch.cuda.get_device_name(device)} (CUDA {torch.version.cuda})"
    return f"CPU: {cpu_name()}"


def system_busy_seconds() -> float | None:
    """CPU seconds all processes have spent busy since boot (Linux ``/proc/stat``), or None."""
    try:
        fields = Path("/proc/stat").read_text().split("\n", 1)[0].split()[1:9]
    except OSError:
        return None
    ticks = [int(x) for x in fields]  # user nice system idle iowait irq softirq steal
    busy = sum(ticks) - ticks[3] - ticks[4]
    return busy / os.sysconf("SC_CLK_TCK")


@dataclass(frozen=True)
class CpuSnapshot:
    """What the whole machine and this process had consumed at one instant."""

    wall: float
    own: float
    system: float | None

    @classmethod
    def now(cls) -> CpuSnapshot:
        return cls(time.perf_counter(), time.process_time(), system_busy_seconds())


def other_cores(start: CpuSnapshot, end: CpuSnapshot) -> float | None:
    """Cores kept busy by other processes between two snapshots, on average."""
    if start.system is None or end.system is None:
        return None
    others = (end.system - start.system) - (end.own - start.own)
    return max(others, 0.0) / (end.wall - start.wall)


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


def background_warning(background: float | None) -> str | None:
    """A warning when other processes kept a quarter of a core or more busy during the run."""
    if background is None or background < BUSY_CORES:
        return None
    return (
        f"> **Warning:** other processes kept {background:.2f} cores busy on average during "
        "this run, so absolute times are inflated and noisier (with several threads, each "
        "parallel region may wait for a busy core). Statements compared in one table are timed "
        "in interleaved rounds, which keeps their ratios fairer; rerun on an idle machine (or "
        "with --threads 1) for absolute numbers."
    )


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
) -> None:
    """``<out>/<stem>.md`` and ``.csv``, and the Markdown on stdout; ``dtype`` replaces the
    machine table's default dtype line."""
    background = other_cores(run.start, run.end)
    machine = machine_info(run.device, run.sizes, run.quick, background)
    if dtype is not None:
        machine["dtype"] = dtype
    wall_s = run.end.wall - run.start.wall
    report = markdown_report(
        title, machine, tables, run.command, wall_s, background_warning(background)
    )
    out.mkdir(parents=True, exist_ok=True)
    (out / f"{stem}.md").write_text(report)
    write_csv(out / f"{stem}.csv", machine, tables)
    print(report)
    log(f"wrote {out / stem}.md and .csv")


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


def resolve_device(name: str) -> torch.device:
    if name == "auto":
        return torch.device("cuda" if torch.cuda.is_available() else "cpu")
    return torch.device(name)


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


def add_accuracy_figure(
    tables: Sequence[Table], sizes: Sizes, out: Path, stem: str, device: torch.device
) -> None:
    """Draw 3a's and 3c's rows to ``<out>/<stem>.png`` and link it from 3c's notes."""
    ridge, reduced = (next(t for t in tables if t.section == key) for key in ("3a", "3c"))
    path = out / f"{stem}.png"
    out.mkdir(parents=True, exist_ok=True)
    widths = mlp_widths(replace(sizes, inputs=sizes.reduced_inputs, hidden=sizes.reduced_hidden))
    plot_accuracy(
        [
            (f"3a. ridge regression, d = {sizes.ridge_dim}, float64 (vs closed form)", ridge.rows),
            (f"3c. MLP {widths}, float64 (vs exact)", reduced.rows),
        ],
        path,
        device,
    )
    reduced.notes.append(
        f"Relative error against HVPs and against time, 3a and 3c: `{path.name}` "
        f"![accuracy per solver]({path.name})"
    )
    log(f"wrote {path}")


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
