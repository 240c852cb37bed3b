"""Memory and time of the unrolled hypergradient against the number K of unrolled steps.

    python -m benchmarks.unrolled_memory                 # CPU, K up to 200
    python -m benchmarks.unrolled_memory --quick         # K up to 10, seconds
    python -m benchmarks.unrolled_memory --device cuda   # adds the real peak (CUDA allocator)

Problem: the default hpo-run problem's shape — an MLP 64-64-10 with one decay per weight
(4,810 weights and hyperparameters), mini-batches of 32 digits-sized inputs, float32 — and K
steps of the differentiable Adam update (:mod:`hpo_cli.core.unrolled`) from a state after 10
real Adam steps, with and without gradient checkpointing over the steps. Columns:

* graph MB: the tensors autograd saves for the reverse pass (unique storages), recorded with
  ``torch.autograd.graph.saved_tensors_hooks`` over one hypergradient. Without checkpointing it
  grows linearly with K (every step's activations and update); with it, only each step's inputs
  (w_k and the optimiser state) are saved, and one step at a time is recomputed in the reverse
  pass (that step's graph, not counted here, is the same for every K).
* peak MB (CUDA only): ``torch.cuda.max_memory_allocated`` over one call, above the memory
  allocated before it — the real peak, recomputation included.
* median ms over a few calls (time.perf_counter; checkpointing recomputes every step's forward
  pass and gradient in the reverse pass).

Output: ``<out>/unrolled_memory_<device>[_quick].{md,csv}``.
"""

from __future__ import annotations

import argparse
import statistics
import time
from collections.abc import Callable
from pathlib import Path

import pandas as pd
import torch
from torch import nn

from hpo_cli.core.unrolled import state_of, unrolled_hypergradient, update_for
from hpo_cli.hyper import WeightDecay

STEPS = (1, 10, 50, 100, 200)
QUICK_STEPS = (1, 5, 10)


def problem(device: torch.device) -> tuple[nn.Module, WeightDecay, torch.optim.Optimizer, list]:
    torch.manual_seed(0)
    model = nn.Sequential(nn.Linear(64, 64), nn.ELU(), nn.Linear(64, 10)).to(device)
    hyper = WeightDecay(model, "weight", init=1e-3, data=None)
    batches = [
        (torch.randn(32, 64, device=device), torch.randint(0, 10, (32,), device=device))
        for _ in range(max(STEPS) + 1)
    ]
    optimizer = torch.optim.Adam(model.parameters(), lr=1e-3)
    for x, y in batches[:10]:
        optimizer.zero_grad()
        (nn.functional.cross_entropy(model(x), y) + hyper.penalty(model)).backward()
        optimizer.step()
    return model, hyper, optimizer, batches


def hypergradient_call(
    model: nn.Module, hyper: WeightDecay, optimizer: torch.optim.Optimizer, batches, steps, ckpt
) -> Callable[[], object]:
    update = update_for(optimizer)
    state = state_of(optimizer, update, list(model.parameters()))
    val_x, val_y = batches[-1]

    def training_loss(k: int) -> torch.Tensor:
        x, y = batches[k]
        return nn.functional.cross_entropy(model(x), y) + hyper.penalty(model)

    def validation_loss() -> torch.Tensor:
        return nn.functional.cross_entropy(model(val_x), val_y)

    def call() -> object:
        return unrolled_hypergradient(
            model,
            list(hyper.parameters()),
            update,
            state,
            training_loss,
            validation_loss,
            steps,
            gradient_checkpointing=ckpt,
        )

    return call


def graph_megabytes(call: Callable[[], object]) -> float:
    """MB of the tensors autograd saves for reverse passes during one call (unique storages)."""
    storages: dict[int, int] = {}

    def pack(tensor: torch.Tensor) -> torch.Tensor:
        storage = tensor.untyped_storage()
        storages[storage.data_ptr()] = storage.nbytes()
        return tensor

    with torch.autograd.graph.saved_tensors_hooks(pack, lambda tensor: tensor):
        call()
    return sum(storages.values()) / 2**20


def peak_megabytes(call: Callable[[], object], device: torch.device) -> float | None:
    if device.type != "cuda":
        return None
    torch.cuda.synchronize(device)
    before = torch.cuda.memory_allocated(device)
    torch.cuda.reset_peak_memory_stats(device)
    call()
    torch.cuda.synchronize(device)
    return (torch.cuda.max_memory_allocated(device) - before) / 2**20


def median_ms(call: Callable[[], object], device: torch.device, repeats: int) -> float:
    times = []
    for _ in range(repeats):
        if device.type == "cuda":
            torch.cuda.synchronize(device)
        started = time.perf_counter()
        call()
        if device.type == "cuda":
            torch.cuda.synchronize(device)
        times.append(1e3 * (time.perf_counter() - started))
    return statistics.median(times)


def main(argv: list[str] | None = None) -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--quick", action="store_true")
    parser.add_argument("--device", default="cpu")
    parser.add_argument("--threads", type=int, default=None)
    parser.add_argument("--out", type=Path, default=Path("outputs/bench"))
    arguments = parser.parse_args(argv)
    if arguments.threads:
        torch.set_num_threads(arguments.threads)
    device = torch.device(arguments.device)
    model, hyper, optimizer, batches = problem(device)
    rows = []
    for steps in QUICK_STEPS if arguments.quick else STEPS:
        results = {}
        for ckpt in (False, True):
            call = hypergradient_call(model, hyper, optimizer, batches, steps, ckpt)
            results[ckpt] = call()[0]
            rows.append(
                {
                    "k": steps,
                    "gradient_checkpointing": ckpt,
                    "graph_mb": graph_megabytes(call),
                    "peak_mb": peak_megabytes(call, device),
                    "median_ms": median_ms(call, device, 3 if arguments.quick else 5),
                }
            )
        difference = max(
            float((a - b).abs().max() / b.abs().max().clamp_min(1e-30))
            for a, b in zip(results[True], results[False], strict=True)
        )
        rows[-1]["gradient_checkpointing_rel_diff"] = rows[-2][
            "gradient_checkpointing_rel_diff"
        ] = difference
        print(rows[-2], rows[-1], sep="\n", flush=True)
    table = pd.DataFrame(rows)
    stem = f"unrolled_memory_{device.type}{'_quick' if arguments.quick else ''}"
    arguments.out.mkdir(parents=True, exist_ok=True)
    table.to_csv(arguments.out / f"{stem}.csv", index=False)
    lines = [" | ".join(table.columns), " | ".join("---" for _ in table.columns)]
    lines += [" | ".join(f"{v:.4g}" if isinstance(v, float) else str(v) for v in row) for row in
              table.itertuples(index=False)]  # fmt: skip
    (arguments.out / f"{stem}.md").write_text(
        f"# Unrolled hypergradient: memory and time against K ({device.type}, "
        f"torch {torch.__version__})\n\n" + "\n".join(f"| {line} |" for line in lines) + "\n"
    )
    print(arguments.out / f"{stem}.md")


if __name__ == "__main__":
    main()
