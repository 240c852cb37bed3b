"""Does ``torch.compile`` pay for itself on the Hessian-vector product over a run?

Run from the repository root::

    python -m benchmarks.compiled_hvp --threads 1            # MLP 784-256-256-10 (a minute)
    python -m benchmarks.compiled_hvp --quick                # MLP 64-32-32-10

The training loss of the MLP (ReLU, float32, cross-entropy on a random batch of 128 plus a
per-weight decay penalty Σ exp(θ)⊙w², as hpo-run's default hyperparameters give) and, timed side
by side with ``torch.utils.benchmark``:

* (a) what a hypergradient does once per hyper-step: the forward pass and the gradient with
  ``create_graph=True`` (``TrainingCurvature``), whose graph every product then reuses;
* (b) one product H v reusing that graph (``TrainingCurvature.hvp``, hpo-cli's HVP);
* (c) one product by ``torch.func``, jvp(grad(f)) of the loss as a function of the weights
  (forward-over-reverse; no graph kept between products);
* (d) (c) through ``torch.compile`` (Inductor, ``dynamic=False``), compiled once beforehand:
  the compilation's wall time is reported apart.

A hyper-step of K products costs a + K·b with hpo-cli's HVP. Compiled products would still need
(a): the mixed product ∂²L_t/∂λ∂w and ∂L_v/∂w of the same hyper-step use that graph, so (d) can
only save K·(b − d) per hyper-step, and the compilation is repaid after compile / (K·(b − d))
hyper-steps (never when d ≥ b). Output: ``<out>/compiled_hvp_<device>[_quick].{md,csv}``.
"""

from __future__ import annotations

import argparse
import sys
import time
from collections.abc import Sequence

import torch
import torch.nn.functional as F
from torch.func import functional_call, grad, jvp

from benchmarks.common.harness import (
    DEFAULT_SIZES,
    QUICK_SIZES,
    Column,
    Table,
    benchmark_parser,
    fmt_ms,
    fmt_sci,
    log,
    measure_group,
    parse_benchmark_args,
    resolve_device,
    write_one_table,
)
from benchmarks.common.machine import CpuSnapshot
from benchmarks.common.problems import make_mlp, mlp_widths, random_batch, random_like
from hpo_cli import TrainingCurvature
from hpo_cli.core.vectors import flatten

PRODUCTS_PER_STEP = 10  # K: a CG or Neumann budget per hyper-step


def section_compiled_hvp(quick: bool, device: torch.device) -> Table:
    sizes = QUICK_SIZES if quick else DEFAULT_SIZES
    model = make_mlp(sizes, "relu", device, seed=0)
    batch = random_batch(sizes, torch.Generator().manual_seed(0), device)
    names = [name for name, _ in model.named_parameters()]
    params = list(model.parameters())
    weights = [p.detach() for p in params]
    log_decay = [torch.full_like(p, -7.0) for p in weights]  # softplus-free: exp(θ) ≈ 1e-3
    direction = random_like(params, seed=3)

    def loss_of(ws: Sequence[torch.Tensor]) -> torch.Tensor:
        outputs = functional_call(model, dict(zip(names, ws, strict=True)), (batch.x,))
        penalty = sum((t.exp() * w * w).sum() for t, w in zip(log_decay, ws, strict=True))
        return F.cross_entropy(outputs, batch.y) + penalty

    def setup() -> TrainingCurvature:
        return TrainingCurvature(loss_of(params), params)

    curvature = setup()

    def functional_hvp(ws: list[torch.Tensor], v: list[torch.Tensor]) -> list[torch.Tensor]:
        return list(jvp(grad(loss_of), (ws,), (v,))[1])

    log(f"compiled HVP: compiling jvp(grad(f)) of the MLP {mlp_widths(sizes)}")
    compiled = torch.compile(functional_hvp, dynamic=False)
    start = time.perf_counter()
    compiled(weights, direction)
    compile_s = time.perf_counter() - start
    statements = {
        "(a) per hyper-step: forward + create_graph gradient (TrainingCurvature)": setup,
        "(b) H v reusing the gradient graph (hpo-cli)": lambda: curvature.hvp(direction),
        "(c) H v by torch.func jvp(grad(f)), eager": lambda: functional_hvp(weights, direction),
        "(d) (c) through torch.compile": lambda: compiled(weights, direction),
    }
    log("compiled HVP: timing")
    timed = measure_group(statements, sizes)
    (_, _), (reused, reference), _, (fused, _) = timed.values()
    rows = []
    for label, (timing, result) in timed.items():
        row = {"case": label, **timing.columns()}
        if not label.startswith("(a)"):
            got, want = flatten(list(result)), flatten(list(reference))
            row["rel_diff_to_b"] = float((got - want).norm() / want.norm())
        rows.append(row)
    saving_ms = PRODUCTS_PER_STEP * (reused.median_ms - fused.median_ms)
    repaid = (
        f"repaid after {compile_s * 1e3 / saving_ms:.0f} hyper-steps"
        if saving_ms > 0
        else "never repaid"
    )
    table = Table(
        section="compiled_hvp",
        title=f"torch.compile of the HVP, MLP {mlp_widths(sizes)}, batch {sizes.batch}",
        columns=[
            Column("case", "statement timed"),
            Column("median_ms", "median ms", fmt_ms),
            Column("iqr_ms", "IQR ms", fmt_ms),
            Column("rel_diff_to_b", "‖Hv − Hv_(b)‖/‖Hv_(b)‖", fmt_sci),
        ],
        rows=rows,
    )
    table.notes += [
        f"Compilation of (d): {compile_s:.1f} s (wall time of its first call; Inductor's disk "
        "cache, if warm from an earlier run, shortens it).",
        f"With K = {PRODUCTS_PER_STEP} products per hyper-step, (d) saves "
        f"{saving_ms:+.1f} ms per hyper-step against (b) ((a) is needed either way): {repaid}.",
    ]
    return table


def parse_args(argv: Sequence[str] | None) -> argparse.Namespace:
    parser = benchmark_parser("compiled_hvp", "torch.compile of the HVP against hpo-cli's.")
    return parse_benchmark_args(parser, argv)


def main(argv: Sequence[str] | None = None) -> int:
    args = parse_args(argv)
    device = resolve_device(args.device)
    start = CpuSnapshot.now()
    table = section_compiled_hvp(args.quick, device)
    return write_one_table(
        "compiled_hvp",
        argv,
        args,
        device,
        start,
        table,
        "torch.compile of the Hessian-vector product",
        dtype="float32",
        timer="torch.utils.benchmark, statements side by side in rounds",
    )


if __name__ == "__main__":
    sys.exit(main())
