"""Hessian-free against SGD and Adam: training loss per epoch and wall-clock, MLP on digits.

Run from the repository root::

    make bench-hf                                   # default sizes (about a minute on 2 cores)
    python -m benchmarks.inner_optimizers --quick       # a smoke run in seconds
    python -m benchmarks.inner_optimizers --device cuda --threads 1 --out /tmp/bench

An MLP 64-64-10 (tanh, float32, cross-entropy) on scikit-learn's 8×8 digits (``--train``
examples), the same initial weights and the same shuffled mini-batch order for every optimiser:

* ``hessian_free``: hpo-cli's :class:`~hpo_cli.optim.HessianFree` with its defaults (Gauss-Newton
  curvature, Fisher preconditioner, warm start, backtracking, line search), initial damping 0.1,
  mini-batches of ``--hf-batch`` examples (one HF step each);
* ``sgd`` (lr 0.1, momentum 0.9) and ``adam`` (lr 1e-3), mini-batches of 32.

Each epoch is timed whole with ``time.perf_counter`` (after a CUDA synchronise); the training
loss on all training examples is measured after each epoch, outside the timed region. The
Markdown table goes to stdout and, with a CSV of every epoch, to
``<out>/inner_optimizers_<device>[_quick].{md,csv}``.
"""

from __future__ import annotations

import argparse
import csv
import platform
import time
from collections.abc import Callable
from pathlib import Path

import torch
import torch.nn.functional as F

from hpo_cli.core.joint import GraphClosureOptimizer
from hpo_cli.data import load_digits
from hpo_cli.optim import HessianFree

OPTIMISERS: dict[str, tuple[Callable[..., torch.optim.Optimizer], int | None]] = {
    "hessian_free": (lambda params: HessianFree(params, damping=0.1), None),  # --hf-batch
    "sgd": (lambda params: torch.optim.SGD(params, lr=0.1, momentum=0.9), 32),
    "adam": (lambda params: torch.optim.Adam(params, lr=1e-3), 32),
}


def make_model(device: torch.device) -> torch.nn.Module:
    torch.manual_seed(0)
    layers = [torch.nn.Linear(64, 64), torch.nn.Tanh(), torch.nn.Linear(64, 10)]
    return torch.nn.Sequential(*layers).to(device)


def train_epoch(
    model: torch.nn.Module,
    optimizer: torch.optim.Optimizer,
    inputs: torch.Tensor,
    labels: torch.Tensor,
    batches: list[torch.Tensor],
) -> None:
    for index in batches:
        if isinstance(optimizer, GraphClosureOptimizer):

            def closure(index: torch.Tensor = index) -> tuple[torch.Tensor, torch.Tensor]:
                outputs = model(inputs[index])
                return F.cross_entropy(outputs, labels[index]), outputs

            optimizer.step(closure)
        else:
            optimizer.zero_grad(set_to_none=True)
            F.cross_entropy(model(inputs[index]), labels[index]).backward()
            optimizer.step()


def run(args: argparse.Namespace) -> list[dict[str, object]]:
    device = torch.device(args.device)
    data = load_digits(train_size=args.train, val_size=10, test_size=10, seed=0)
    data = data.to(device, torch.float32)
    inputs, labels = data.train.inputs.reshape(args.train, -1), data.train.targets
    rows = []
    for name, (make_optimizer, batch) in OPTIMISERS.items():
        batch = batch or args.hf_batch
        model = make_model(device)
        optimizer = make_optimizer(model.parameters())
        order = torch.Generator().manual_seed(0)
        elapsed = 0.0
        for epoch in range(1, args.epochs + 1):
            batches = [
                b.to(device) for b in torch.randperm(args.train, generator=order).split(batch)
            ]
            start = time.perf_counter()
            train_epoch(model, optimizer, inputs, labels, batches)
            if device.type == "cuda":
                torch.cuda.synchronize(device)
            epoch_s = time.perf_counter() - start
            elapsed += epoch_s
            with torch.no_grad():
                loss = float(F.cross_entropy(model(inputs), labels))
            rows.append(
                {
                    "optimizer": name,
                    "batch": batch,
                    "epoch": epoch,
                    "train_loss": loss,
                    "epoch_s": epoch_s,
                    "elapsed_s": elapsed,
                }
            )
            print(f"{name} epoch {epoch}: loss {loss:.4g}, {epoch_s:.3f} s", flush=True)
    return rows


def markdown(rows: list[dict[str, object]], args: argparse.Namespace) -> str:
    names = list(OPTIMISERS)
    header = " | ".join(f"{n} loss | {n} s" for n in names)
    lines = [
        f"# Hessian-free vs SGD vs Adam: MLP 64-64-10 on {args.train} digits ({args.device})",
        "",
        f"torch {torch.__version__}, {torch.get_num_threads()} threads, {platform.machine()}; "
        "loss = training cross-entropy after the epoch; s = cumulative training wall-clock.",
        "",
        f"| epoch | {header} |",
        "| --- |" + " --- | --- |" * len(names),
    ]
    for epoch in range(1, args.epochs + 1):
        cells = []
        for name in names:
            row = next(r for r in rows if r["optimizer"] == name and r["epoch"] == epoch)
            cells.append(f"{row['train_loss']:.4f} | {row['elapsed_s']:.2f}")
        lines.append(f"| {epoch} | " + " | ".join(cells) + " |")
    return "\n".join(lines) + "\n"


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--quick", action="store_true", help="2 epochs on 200 examples")
    parser.add_argument("--epochs", type=int, default=10)
    parser.add_argument("--train", type=int, default=1000, help="training examples")
    parser.add_argument("--hf-batch", type=int, default=250, help="Hessian-free mini-batch")
    parser.add_argument("--device", default="cpu", help="cpu | cuda | auto")
    parser.add_argument("--threads", type=int, default=None)
    parser.add_argument("--out", type=Path, default=Path("outputs/bench"))
    args = parser.parse_args()
    if args.quick:
        args.epochs, args.train, args.hf_batch = 2, 200, 100
    if args.device == "auto":
        args.device = "cuda" if torch.cuda.is_available() else "cpu"
    if args.threads:
        torch.set_num_threads(args.threads)
    rows = run(args)
    report = markdown(rows, args)
    print(report)
    args.out.mkdir(parents=True, exist_ok=True)
    stem = args.out / f"inner_optimizers_{args.device}{'_quick' if args.quick else ''}"
    stem.with_suffix(".md").write_text(report)
    with stem.with_suffix(".csv").open("w", newline="") as file:
        writer = csv.DictWriter(file, fieldnames=list(rows[0]))
        writer.writeheader()
        writer.writerows(rows)


if __name__ == "__main__":
    main()
