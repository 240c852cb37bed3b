"""End to end: one HPO problem run to the same budget by ``hpo-run``, by a plain PyTorch loop
and by the peers (torchopt, betty, higher) as their users write it.

Run from the repository root::

    python -m benchmarks.end_to_end                       # hpo-run's default experiment, 3 seeds
    python -m benchmarks.end_to_end --quick               # a smoke run in seconds
    python -m benchmarks.end_to_end --problem mlp         # MLP 784-256-256-10, per-weight decay
    python -m benchmarks.end_to_end --seeds 0 1 --threads 1 --out /tmp/bench
    python -m benchmarks.end_to_end --peers               # exit 1 in one line if a peer is missing
    python -m benchmarks.end_to_end --kinds hpo-run torchopt

Every row solves the same problem from the same start: the data, the initial weights and θ are
built by ``hpo_cli.runner.config.build.build_problem`` from the same configuration and seed, the
mini-batches are drawn by a generator seeded alike, and every row takes ``outer_steps`` ×
``inner_steps`` inner steps (Adam on L_t = mean cross-entropy + Σ softplus(θ)·w²) and
``outer_steps`` hyper-steps (RMSprop on θ) on the hyper-step's batches.

* ``hpo-run``: the runner itself (``hpo_cli.runner.cli.command.train``, as ``hpo-run`` calls it,
  ``plots=false``): Neumann with 4 terms, α = 1/λ̂max from 10 Lanczos steps, the residual check,
  every split evaluated after every outer step, a checkpoint every 10, ``metrics.csv``.
* plain PyTorch: the loop one writes by hand (:mod:`benchmarks.common.plain_loop`), no hpo-cli
  code inside: the same inner steps; the IFT hypergradient −(∂²L_t/∂θ∂w)·p with
  p = α Σ_{k<4} (I − αH)^k ∂L_v/∂w (3 Hessian-vector products), α = 1/λ̂max from 10 steps of
  power iteration; the validation split evaluated after every outer step, the test split at
  the end.
* torchopt, betty: the same IFT (4 terms, α from the same power iterations) through
  torchopt's ``custom_root`` and betty's ``Engine`` (:mod:`benchmarks.end_to_end_peers`).
* ``hpo-run unrolled`` and higher: ``solver=unrolled`` (K differentiable Adam steps from the
  current state) by the runner and by ``higher.innerloop_ctx`` in the plain loop.

A peer that does not import is listed as missing (``--peers``: exit 1 in one line instead).
Each run is a child process of its own, so its peak resident memory (``ru_maxrss``) is its own;
the "setup" row is a child that only builds the problem (interpreter, torch, data, model), the
floor under all. Wall and CPU time run from before the build to the end of training, after
torch's lazy imports (the first optimiser imports ``torch._dynamo``: seconds on a busy machine)
and the peer's import. Each seed's round starts at the next kind in turn. Output:
``<out>/end_to_end_<problem>_<device>[_quick].{md,csv}``.
"""

from __future__ import annotations

import argparse
import importlib
import json
import resource
import subprocess
import sys
import tempfile
import time
import warnings
from collections.abc import Callable, Sequence
from pathlib import Path
from typing import Any

import pandas as pd
import torch
from omegaconf import DictConfig
from torch.nn import functional as F

from benchmarks.common.harness import (
    DEFAULT_SIZES,
    QUICK_SIZES,
    BenchmarkRun,
    Column,
    Table,
    benchmark_command,
    benchmark_parser,
    log,
    parse_benchmark_args,
    write_report,
)
from benchmarks.common.machine import CpuSnapshot
from benchmarks.common.peer_adapters import add_peers_flag, peer_status, require_peers
from benchmarks.common.plain_loop import TERMS, Loop, Vector, power_alpha
from benchmarks.common.run_config import compose_config
from benchmarks.end_to_end_peers import PEERS, betty_run, higher_run, torchopt_run
from hpo_cli.runner.cli.command import train
from hpo_cli.runner.config.build import build_problem

PROBLEMS: dict[str, tuple[str, ...]] = {
    "default": (),
    "mlp": (
        "dataset._target_=benchmarks.common.synthetic.synthetic_mnist",
        "dataset.train_size=1000",
        "dataset.val_size=1000",
        "model.hidden_sizes=[256,256]",
        "model.activation=relu",
        "batch_size=128",
        "hyper_train_batch=128",
        "hyper_val_batch=128",
        "outer_steps=20",
        "inner_steps=20",
    ),
}
"""Each problem's hpo-run overrides; "mlp" is the MLP 784-256-256-10 of ``benchmarks.peers`` on
synthetic MNIST-sized data, its hyper-steps on batches of 128, at a budget a CPU runs in minutes."""

QUICK = ("outer_steps=3", "inner_steps=5", "model.hidden_sizes=[8]")
IFT_KINDS = ("hpo-run", "plain PyTorch", "torchopt", "betty")
UNROLLED_KINDS = ("hpo-run unrolled", "higher")
KINDS = IFT_KINDS + UNROLLED_KINDS
KIND_OVERRIDES = {kind: ("solver=unrolled",) for kind in UNROLLED_KINDS}
HPO_RUN = {"hpo-run": IFT_KINDS[1:], "hpo-run unrolled": UNROLLED_KINDS[1:]}
"""Each hpo-run row and the rows that compute the same hypergradient by other code."""


# --------------------------------------------------------------------------------------------
# The plain loop
# --------------------------------------------------------------------------------------------


def plain_hypergradient(
    params: Vector, thetas: Vector, train_loss: torch.Tensor, val_loss: torch.Tensor
) -> Vector | None:
    """−(∂²L_t/∂θ∂w)·p, p = α Σ_{k<TERMS} (I − αH)^k v, v = ∂L_v/∂w, α = 1/λ̂max by power
    iteration from v; ``None`` when λ̂max is not a positive number (the step is skipped)."""
    v = list(torch.autograd.grad(val_loss, params))
    g = torch.autograd.grad(train_loss, params, create_graph=True)

    def hvp(x: Vector) -> Vector:
        return list(torch.autograd.grad(g, params, x, retain_graph=True))

    alpha = power_alpha(hvp, v)
    if alpha is None:
        return None
    term, total = v, list(v)
    for _ in range(TERMS - 1):
        term = [t - alpha * h for t, h in zip(term, hvp(term), strict=True)]
        total = [s + t for s, t in zip(total, term, strict=True)]
    mixed = torch.autograd.grad(g, thetas, [alpha * s for s in total])
    return [-m for m in mixed]


def plain_step(loop: Loop) -> Vector | None:
    """The plain loop's hyper-step: :func:`plain_hypergradient` on the hyper-step's batches."""
    train, val = loop.hyper_batches()
    train_loss = loop.training_loss(train, loop.decay())
    val_loss = F.cross_entropy(loop.model(val[0]), val[1])
    return plain_hypergradient(loop.params, loop.thetas, train_loss, val_loss)


def plain_run(cfg: DictConfig) -> dict[str, float]:
    """The hand-written loop (see the module docstring); its validation losses and test error."""
    return Loop(cfg).run(plain_step)


def hpo_run(cfg: DictConfig) -> dict[str, float]:
    """``hpo-run`` in a temporary run directory; its metrics read back from ``metrics.csv``."""
    with tempfile.TemporaryDirectory() as folder:
        train(cfg, Path(folder))
        metrics = pd.read_csv(Path(folder) / "metrics.csv")
    return {
        "final_val_loss": float(metrics["val_loss"].iloc[-1]),
        "best_val_loss": float(metrics["val_loss"].min()),
        "test_error": float(metrics["test_error"].iloc[-1]),
    }


def setup_only(cfg: DictConfig) -> dict[str, float]:
    build_problem(cfg)
    return {}


CHILDREN: dict[str, Callable[[DictConfig], dict[str, float]]] = {
    "setup": setup_only,
    "hpo-run": hpo_run,
    "plain PyTorch": plain_run,
    "torchopt": torchopt_run,
    "betty": betty_run,
    "hpo-run unrolled": hpo_run,
    "higher": higher_run,
}


def child(kind: str, overrides: Sequence[str]) -> None:
    """One run in this process; one JSON line on stdout: its results, wall time and peak RSS."""
    cfg = compose_config(list(overrides))
    torch.optim.SGD([torch.zeros(1, requires_grad=True)])  # torch's lazy imports (torch._dynamo)
    if kind in PEERS:
        importlib.import_module(PEERS[kind])  # imported before the clock, as torch and hpo-cli
    warnings.filterwarnings("ignore", category=FutureWarning)  # torchopt's functorch.vjp
    start, cpu = time.perf_counter(), time.process_time()
    results = CHILDREN[kind](cfg)
    wall, cpu = time.perf_counter() - start, time.process_time() - cpu
    peak_mib = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024  # KiB on Linux
    print(json.dumps({**results, "wall_s": wall, "cpu_s": cpu, "peak_rss_mib": peak_mib}))


def spawn(kind: str, overrides: Sequence[str]) -> dict[str, Any]:
    overrides = [*overrides, *KIND_OVERRIDES.get(kind, ())]
    command = [sys.executable, "-m", "benchmarks.end_to_end", "--child", kind, *overrides]
    done = subprocess.run(command, capture_output=True, text=True, check=False)
    if done.returncode != 0:
        raise RuntimeError(f"{kind} failed: {done.stderr.strip().splitlines()[-1]}")
    return json.loads(done.stdout.strip().splitlines()[-1])


# --------------------------------------------------------------------------------------------
# Command line
# --------------------------------------------------------------------------------------------


def parse_args(argv: Sequence[str] | None) -> argparse.Namespace:
    parser = benchmark_parser(
        "end_to_end",
        "One HPO problem to the same budget by hpo-run, a plain PyTorch loop and the peers.",
    )
    parser.add_argument("--problem", choices=sorted(PROBLEMS), default="default")
    parser.add_argument("--seeds", type=int, nargs="+", default=[0, 1, 2])
    parser.add_argument("--kinds", nargs="+", choices=KINDS, default=list(KINDS), metavar="KIND")
    parser.add_argument("--override", action="append", default=[], help="an hpo-run override")
    add_peers_flag(parser)
    return parse_benchmark_args(parser, argv)


def run_overrides(args: argparse.Namespace, seed: int) -> list[str]:
    chosen = [f"device={args.device}", "progress=false", "plots=false", f"seed={seed}"]
    if args.threads is not None:
        chosen.append(f"threads={args.threads}")
    chosen += PROBLEMS[args.problem]
    if args.quick:
        chosen += QUICK
    return chosen + list(args.override)


def missing_peers(wanted: bool) -> dict[str, str]:
    """The peer rows whose library does not import, with the reason; with ``wanted`` exit 1 in
    one line when there are any."""
    libraries = peer_status()
    status = {kind: libraries[library] for kind, library in PEERS.items()}
    require_peers(status, wanted)
    return {kind: value for kind, value in status.items() if value.startswith("not available")}


def medians(rows: list[dict[str, Any]], kinds: Sequence[str]) -> list[dict[str, Any]]:
    """Per kind with runs, the median of each number over its seeds."""
    summary = []
    for kind in kinds:
        own = [row for row in rows if row["kind"] == kind and "wall_s" in row]
        if own:
            numbers = pd.DataFrame(own).drop(columns=["seed"]).median(numeric_only=True)
            summary.append({"kind": kind, "seed": "median", **numbers})
    return summary


def verdict(summary: Sequence[dict[str, Any]]) -> list[str]:
    """Per hpo-run row: its median CPU and wall time over those of the row computing the same
    hypergradient otherwise with the least median CPU time (the fairer clock on a shared
    machine), with both median final validation losses."""
    notes = []
    by_kind = {row["kind"]: row for row in summary}
    for ours, others in HPO_RUN.items():
        rivals = [by_kind[kind] for kind in others if kind in by_kind]
        if ours not in by_kind or not rivals:
            continue
        own, rival = by_kind[ours], min(rivals, key=lambda row: row["cpu_s"])
        notes.append(
            f"{ours} ÷ fastest other in CPU time ({rival['kind']}): "
            f"{own['cpu_s'] / rival['cpu_s']:.2f}× CPU time, "
            f"{own['wall_s'] / rival['wall_s']:.2f}× wall time, at final validation loss "
            f"{own['final_val_loss']:.4f} against {rival['final_val_loss']:.4f} (medians)."
        )
    return notes


METHODS = {
    "setup (build only)": "–",
    "hpo-run": "IFT, Neumann 4 terms, α by Lanczos",
    "plain PyTorch": "IFT, Neumann 4 terms, α by power it.",
    "torchopt": "IFT, custom_root + solve_inv(ns)",
    "betty": "IFT, Engine + neumann",
    "hpo-run unrolled": "unrolled Adam, K = solver.steps",
    "higher": "unrolled Adam (innerloop_ctx)",
}


def main(argv: Sequence[str] | None = None) -> int:
    if argv is None and len(sys.argv) > 2 and sys.argv[1] == "--child":
        child(sys.argv[2], sys.argv[3:])
        return 0
    args = parse_args(argv)
    missing = missing_peers(args.peers)
    command = benchmark_command("end_to_end", argv)
    start = CpuSnapshot.now()
    kinds = [kind for kind in KINDS if kind in args.kinds]
    running = [kind for kind in kinds if kind not in missing]
    rows: list[dict[str, Any]] = []
    setup = spawn("setup", run_overrides(args, args.seeds[0]))
    rows.append({"kind": "setup (build only)", "seed": args.seeds[0], **setup})
    for index, seed in enumerate(args.seeds):
        shift = index % len(running)  # each kind starts a seed's round in turn
        for kind in running[shift:] + running[:shift]:
            log(f"end to end: {kind}, seed {seed}")
            rows.append({"kind": kind, "seed": seed, **spawn(kind, run_overrides(args, seed))})
    for row in rows:
        row["above_setup_mib"] = row["peak_rss_mib"] - setup["peak_rss_mib"]
    rows.sort(key=lambda row: KINDS.index(row["kind"]) if row["kind"] in KINDS else -1)
    summary = medians(rows, running)
    rows += summary + [{"kind": kind, "seed": "missing"} for kind in kinds if kind in missing]
    for row in rows:
        row["method"] = METHODS[row["kind"]]
    end = CpuSnapshot.now()
    cfg = compose_config(run_overrides(args, args.seeds[0]))
    if cfg.threads:
        torch.set_num_threads(cfg.threads)  # the children's count, for the machine table
    device = torch.device("cuda" if args.device == "cuda" else "cpu")
    unrolled = compose_config([*run_overrides(args, args.seeds[0]), "solver=unrolled"])
    table = Table(
        section="9",
        title=f"9. End to end, {args.problem}: {describe(cfg)}",
        columns=[
            Column("kind", "run"),
            Column("method", "hypergradient"),
            Column("seed", "seed"),
            Column("wall_s", "wall s", lambda v: f"{v:.1f}"),
            Column("cpu_s", "CPU s", lambda v: f"{v:.1f}"),
            Column("final_val_loss", "final val loss", lambda v: f"{v:.4f}"),
            Column("best_val_loss", "best val loss", lambda v: f"{v:.4f}"),
            Column("test_error", "test error", lambda v: f"{v:.3f}"),
            Column("peak_rss_mib", "peak RSS MiB", lambda v: f"{v:.0f}"),
            Column("above_setup_mib", "above setup MiB", lambda v: f"{v:.0f}"),
        ],
        rows=rows,
        notes=[
            "Wall and CPU time (the child's, all threads): the build and the training in the "
            "child process (not the interpreter's start nor the imports). hpo-run also "
            "evaluates every split after every outer step, checkpoints every 10 and writes "
            "metrics.csv; the other rows evaluate the validation split after every outer step "
            "and the test split at the end.",
            "Peak RSS: the child's maximum resident memory (interpreter and torch included; "
            "the setup row is the floor).",
            f"Unrolled rows: K = {unrolled.solver.steps} differentiable Adam steps per "
            "hyper-step (solver=unrolled).",
            *verdict(summary),
            "Peers missing (not installed): "
            + (", ".join(f"{kind} ({reason})" for kind, reason in missing.items()) or "none")
            + ".",
        ],
    )
    sizes = QUICK_SIZES if args.quick else DEFAULT_SIZES
    run = BenchmarkRun(command, device, sizes, args.quick, start, end)
    stem = f"end_to_end_{args.problem}_{device.type}" + ("_quick" if args.quick else "")
    timer = "one run per child process, time.perf_counter around the build and the training"
    title = "hpo-run against a plain PyTorch loop, torchopt, betty and higher"
    write_report(args.out, stem, title, run, [table], cfg.dtype, timer)
    return 0


def describe(cfg: DictConfig) -> str:
    hidden = "-".join(str(h) for h in cfg.model.hidden_sizes)
    return (
        f"{cfg.dataset._target_.rsplit('.', 1)[-1]} (train {cfg.dataset.train_size}, val "
        f"{cfg.dataset.val_size}), MLP hidden {hidden}, per-weight decay, {cfg.outer_steps} outer "
        f"× {cfg.inner_steps} inner steps, batch {cfg.batch_size}"
    )


if __name__ == "__main__":
    sys.exit(main())
