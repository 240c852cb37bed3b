"""hpo-cli's hypergradient against other libraries' implicit-differentiation solvers.

Run from the repository root (the peers are the optional ``bench`` extra)::

    pip install -e ".[bench]"                  # torchopt, betty-ml, curvlinops, higher
    python -m benchmarks.peers                 # ridge + MLP on the CPU (about a minute)
    python -m benchmarks.peers --quick         # tiny sizes: a smoke run in seconds
    python -m benchmarks.peers --device cuda   # the same on the GPU
    python -m benchmarks.peers --threads 1 --out /tmp/bench

A peer that does not import is listed as "not available: <reason>" and skipped; with
``--peers`` (``make bench-peers``) the run stops instead, exit 1, one line naming the missing.

Every method computes the same thing, the IFT hypergradient −(∂²L_t/∂λ∂w)ᵀ x with
x ≈ H⁻¹ ∂L_v/∂w from K Hessian-vector products (HVPs), the losses built inside the timed call:

* hpo-cli: ``hypergradient(..., ConjugateGradient(max_iter=K, tol=0) | Neumann(K, alpha=α),
  check_residual=False)``.
* torchopt: ``torchopt.linear_solve.solve_cg(maxiter=K, rtol=0)`` and
  ``solve_inv(ns=True, maxiter=K, alpha=α)`` (the ``solve`` argument of
  ``torchopt.diff.implicit.custom_root``) on an autograd HVP that reuses one gradient graph.
* betty: ``betty.hypergradient.neumann`` and ``betty.hypergradient.cg`` themselves, called with
  minimal stand-ins for betty's ``Problem`` objects (the configuration, ``training_step_exec``,
  the parameter lists) instead of a full ``Engine``.
* curvlinops: ``CGInverseLinearOperator(A, max_iter=K, tolerance=0)`` and
  ``NeumannInverseLinearOperator(A, num_terms=K, scale=α)`` around a ``PyTorchLinearOperator``
  whose ``_matmat`` is the same autograd HVP (curvlinops' own ``HessianLinearOperator`` has no
  place for the per-weight penalty).
* higher: K differentiable SGD steps (step α) from the current weights with
  ``higher.innerloop_ctx``, then the validation loss differentiated through them (unrolled
  differentiation: the same truncated Neumann series, computed by reverse mode), against
  hpo-cli's ``unrolled_hypergradient`` with ``SGDUpdate(α)`` (:mod:`hpo_cli.core.unrolled`) at
  equal K; for both, "graph MB" is the memory autograd holds for the reverse pass (saved
  tensors, unique storages), which grows linearly with K.

α = 1/λ̂max from 100 Lanczos steps at setup, the same for every Neumann method and for
higher's step. Problems: (a) ridge regression (``benchmarks.hypergradient_cost``'s: n = 200,
d = 50, c = exp(θ) per weight, float64, w at its closed-form optimum), error relative to the
closed form; (b) the MLP 784-256-256-10 of that benchmark (float32, pretrained 300 Adam steps),
where no closed form exists: the error column is then the difference to hpo-cli's result with
the same method and K (agreement, not accuracy). Each K's statements are timed side by side
(``torch.utils.benchmark``, interleaved rounds, median and IQR). Output:
``<out>/peers_<device>[_quick].{md,csv}``.

The problems and the list of methods are ``benchmarks.common.peer_methods``, the peers' adapters
``benchmarks.common.peer_adapters``; this module times them and writes the tables.
"""

from __future__ import annotations

import argparse
import sys
import warnings
from collections.abc import Sequence
from typing import Any

import torch

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
    fmt_sci,
    log,
    measure_group,
    parse_benchmark_args,
    report_stem,
    resolve_device,
    write_report,
)
from benchmarks.common.machine import CpuSnapshot
from benchmarks.common.peer_adapters import Problem, add_peers_flag, peer_status, require_peers
from benchmarks.common.peer_methods import FLOOR, methods, mlp_problem, ridge_problem
from benchmarks.common.problems import fixed_alpha
from benchmarks.unrolled_memory import graph_megabytes

RIDGE_KS = (5, 10, 20, 50)
MLP_KS = (10, 50)
QUICK_KS = (5, 10)  # ridge (d = 10 in quick mode: CG is exact at K = 10)
QUICK_MLP_KS = (5,)
PEER_TIMING = {"min_run_time": 0.6, "max_run_time": 1.5, "rounds": 2}
EQUAL_ACCURACY = 1.05  # a peer counts as "as accurate" up to this factor on hpo-cli's error


# --------------------------------------------------------------------------------------------
# Measurement
# --------------------------------------------------------------------------------------------


def relative_error(result: Sequence[torch.Tensor], reference: Sequence[torch.Tensor]) -> float:
    diff = sum(
        float((r - f).double().square().sum()) for r, f in zip(result, reference, strict=True)
    )
    size = sum(float(f.double().square().sum()) for f in reference)
    return (diff / size) ** 0.5


def family(label: str) -> str:
    if label == FLOOR:
        return "floor"
    name = label.split(": ", 1)[1]
    if "cg" in name.lower():
        return "cg"
    return "unrolled" if "unrolled" in name else "neumann"


def k_rows(problem: Problem, k: int, alpha: float, status: dict[str, str], sizes: Sizes) -> list:
    log(f"peers: {problem.name}, K = {k}")
    statements = methods(problem, k, alpha, status)
    timed = measure_group(statements, sizes)
    rows = []
    for label, (timing, result) in timed.items():
        if label == FLOOR:
            floor = {"problem": problem.name, "method": label, "family": "floor", "k": k}
            rows.append({**floor, **timing.columns()})
            continue
        if problem.reference is not None:
            reference = problem.reference
        else:
            same = {"cg": "hpo-cli: cg", "unrolled": "hpo-cli: unrolled SGD"}
            reference = timed[same.get(family(label), "hpo-cli: neumann")][1]
        if family(label) == "unrolled":
            memory = {"graph_mb": graph_megabytes(statements[label])}
        else:
            memory = {}
        rows.append(
            {
                "problem": problem.name,
                "method": label,
                "family": family(label),
                "k": k,
                **timing.columns(),
                "rel_error": relative_error(result, reference),
                **getattr(statements[label], "info", {}),
                **memory,
            }
        )
    return rows


def is_peer(row: dict[str, Any]) -> bool:
    return not row["method"].startswith("hpo-cli") and row["family"] != "floor"


def fastest(rows: Sequence[dict[str, Any]]) -> dict[str, Any] | None:
    return min(rows, key=lambda r: r["median_ms"]) if rows else None


def add_ratios(rows: list[dict[str, Any]], accuracy: bool, wrong: set[str]) -> None:
    """Per hpo-cli row: its time over the fastest peer row with the same family and K, and
    (with ``accuracy``) over the fastest peer row, any method and K, at most as inaccurate.
    Methods in ``wrong`` (whose error does not shrink with K) are left out of both."""
    peers = [r for r in rows if is_peer(r) and r["method"] not in wrong]
    for row in rows:
        if not row["method"].startswith("hpo-cli"):
            continue
        same = fastest([p for p in peers if p["family"] == row["family"] and p["k"] == row["k"]])
        if same is not None:
            row["ratio_same"] = row["median_ms"] / same["median_ms"]
            row["same_peer"] = same["method"]
        bound = row["rel_error"] * EQUAL_ACCURACY + 1e-15
        rival = fastest([p for p in peers if p["rel_error"] <= bound]) if accuracy else None
        if rival is not None:
            row["ratio_accuracy"] = row["median_ms"] / rival["median_ms"]
            row["accuracy_peer"] = f"{rival['method']} (K = {rival['k']})"


STALLED = 10.0  # a peer this many times less accurate than hpo-cli's same method is flagged


def stalled_peers(rows: Sequence[dict[str, Any]]) -> list[str]:
    """Peers whose error at the largest K is ≥ STALLED × that of hpo-cli's same method."""
    largest = max(r["k"] for r in rows)
    last = [r for r in rows if r["k"] == largest]
    own = {r["family"]: r["rel_error"] for r in last if r["method"].startswith("hpo-cli")}
    last = [r for r in last if r["family"] != "floor"]
    return [
        f"{r['method']}: {r['rel_error']:.2e} against hpo-cli's {own[r['family']]:.2e} at "
        f"K = {largest}"
        for r in last
        if r["family"] in own and r["rel_error"] >= STALLED * max(own[r["family"]], 1e-15)
    ]


def wrong_peers(rows: Sequence[dict[str, Any]]) -> list[str]:
    """Methods whose error does not shrink from the smallest to the largest K."""
    flagged = []
    for method in dict.fromkeys(r["method"] for r in rows if r["family"] != "floor"):
        own = sorted((r for r in rows if r["method"] == method), key=lambda r: r["k"])
        if len(own) >= 2 and not own[-1]["rel_error"] < 0.5 * own[0]["rel_error"]:
            flagged.append(
                f"{method}: error {own[0]['rel_error']:.2e} at K = {own[0]['k']} → "
                f"{own[-1]['rel_error']:.2e} at K = {own[-1]['k']}"
            )
    return flagged


COLUMNS = [
    Column("method", "method"),
    Column("k", "K"),
    Column("median_ms", "median ms", fmt_ms),
    Column("iqr_ms", "IQR ms", fmt_ms),
    Column("rel_error", "rel. error", fmt_sci),
    Column("status", "hpo-cli status"),
    Column("hvps", "HVPs"),
    Column("graph_mb", "graph MB", fmt_ms),
    Column("ratio_same", "hpo-cli ÷ fastest same method", fmt_ratio),
    Column("same_peer", "that peer"),
    Column("ratio_accuracy", "hpo-cli ÷ fastest at ≤ its error", fmt_ratio),
    Column("accuracy_peer", "that peer"),
]


def peer_table(
    problem: Problem, ks: Sequence[int], status: dict[str, str], sizes: Sizes, section: str
) -> Table:
    alpha = fixed_alpha(problem.train_loss(), problem.params)
    rows = [row for k in ks for row in k_rows(problem, k, alpha, status, sizes)]
    exact = problem.reference is not None
    wrong = {entry.split(": error")[0] for entry in wrong_peers(rows)} if exact else set()
    add_ratios(rows, accuracy=exact, wrong=wrong)
    notes = [
        f"α = {alpha:.4g} (1/λ̂max) for every Neumann method and for higher's SGD step.",
        floor_note(rows),
    ]
    if exact:
        notes.append(
            "rel. error = ‖g − g*‖/‖g*‖ against the closed form. Ratios: hpo-cli's time over "
            "the fastest peer running the same method (CG / Neumann) at the same K, and over "
            "the fastest peer, any method and K, whose error is at most "
            f"{EQUAL_ACCURACY}× hpo-cli's (equal accuracy); below 1× hpo-cli is faster."
        )
        flagged = wrong_peers(rows)
        notes.append(
            "Error not shrinking with K (at least halving from the smallest to the largest K): "
            + ("; ".join(flagged) if flagged else "none")
            + " (left out of the ratios)."
        )
        stalled = stalled_peers(rows)
        notes.append(
            f"At the largest K, at least {STALLED:g}× less accurate than hpo-cli's same method: "
            + ("; ".join(stalled) if stalled else "none")
            + "."
        )
    else:
        notes.append(
            "No closed form: rel. error = difference to hpo-cli's result with the same method "
            "and K (agreement, not accuracy; higher is compared with hpo-cli's unrolled SGD). "
            "Ratio: hpo-cli's time over the fastest peer running the same method at the same K. "
            "The pretrained MLP's Hessian is indefinite: hpo-cli's CG stops at the first "
            "direction of negative curvature (status, HVPs), the peers' CG runs all K "
            "iterations regardless, so CG rows there compare different amounts of work."
        )
    return Table(
        section=section,
        title=f"{section}. Peers: {describe(problem)}",
        columns=COLUMNS,
        rows=rows,
        notes=notes,
    )


def floor_note(rows: Sequence[dict[str, Any]]) -> str:
    """How far the floor (HVPs alone) lies below the fastest peer per family, at the largest K."""
    largest = max(r["k"] for r in rows)
    floor = next(r for r in rows if r["family"] == "floor" and r["k"] == largest)
    gaps = []
    for kind in ("cg", "neumann"):
        rival = fastest(
            [r for r in rows if is_peer(r) and r["family"] == kind and r["k"] == largest]
        )
        if rival is not None:
            gaps.append(
                f"{kind} {rival['median_ms'] / floor['median_ms']:.2f}× ({rival['method']})"
            )
    return (
        f"{FLOOR}: the gradient graph, ∂L_v/∂w, K HVPs and the mixed product that every method "
        "shares, without any solver arithmetic. The fastest peer over the floor at "
        f"K = {largest}: {', '.join(gaps) or 'no peer'}; no method built on the same autograd "
        "HVPs can beat a peer by more than that."
    )


def describe(problem: Problem) -> str:
    weights = sum(p.numel() for p in problem.params)
    dtype = str(problem.params[0].dtype).removeprefix("torch.")
    return f"{problem.name}, {weights:,} weights and per-weight hyperparameters, {dtype}"


def status_table(status: dict[str, str]) -> Table:
    return Table(
        section="7",
        title="7. Peer libraries",
        columns=[Column("library", "library"), Column("status", "version / status")],
        rows=[{"library": name, "status": value} for name, value in status.items()],
    )


def parse_args(argv: Sequence[str] | None) -> argparse.Namespace:
    parser = benchmark_parser(
        "peers", "hpo-cli's hypergradient against torchopt, betty, curvlinops and higher."
    )
    add_peers_flag(parser)
    return parse_benchmark_args(parser, argv)


def main(argv: Sequence[str] | None = None) -> int:
    args = parse_args(argv)
    # linear_operator warns on every fixed-K CG solve that tolerance 0 was not reached.
    warnings.filterwarnings("ignore", message="CG terminated in")
    device = resolve_device(args.device)
    base = QUICK_SIZES if args.quick else DEFAULT_SIZES
    quick = {"pretrain_steps": 20}
    sizes = Sizes(**{**base.__dict__, **(quick if args.quick else PEER_TIMING)})
    command = benchmark_command("peers", argv)
    start = CpuSnapshot.now()
    status = peer_status()
    require_peers(status, args.peers)
    tables = [status_table(status)]
    ridge_ks, mlp_ks = (QUICK_KS, QUICK_MLP_KS) if args.quick else (RIDGE_KS, MLP_KS)
    tables.append(peer_table(ridge_problem(sizes, device), ridge_ks, status, sizes, "7a"))
    tables.append(peer_table(mlp_problem(sizes, device), mlp_ks, status, sizes, "7b"))
    run = BenchmarkRun(command, device, sizes, args.quick, start, CpuSnapshot.now())
    stem = report_stem("peers", device, args.quick)
    dtype = "float64 (ridge), float32 (MLP)"
    write_report(args.out, stem, "hpo-cli against peer libraries", run, tables, dtype=dtype)
    return 0


if __name__ == "__main__":
    sys.exit(main())
