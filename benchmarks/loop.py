"""Hypergradients where they are used: every hyper-step of a run, cold against warm, and the peers.

Run from the repository root::

    python -m benchmarks.loop                    # both problems on the CPU (minutes)
    python -m benchmarks.loop --quick            # tiny sizes: a smoke run in seconds
    python -m benchmarks.loop --peers            # fail (exit 1, one line) without every peer
    python -m benchmarks.loop --threads 1 --out /tmp/bench

Section 8, one table per problem: (a) hpo-run's default experiment (digits, MLP 64-64-10,
per-weight weight decay, Adam inside, RMSprop outside); (b) the MLP 784-256-256-10 (ReLU) with
per-weight weight decay on synthetic MNIST-shaped data (``benchmarks.synthetic``: Gaussian
images, labels from a random linear teacher), built through the runner like (a). The run is the
runner's own: ``inner_steps`` calls of ``hpo_cli.runner.loop.inner_step`` per outer step, then
the hyper-step on batches drawn as ``hyper_step`` draws them, driven by hpo-cli's cold Neumann
(the default solver). At every hyper-step each method computes the hypergradient at that same
state (losses built inside the timed call, ``check_residual=False`` for all, so hpo-cli's
products exclude the runner's one-product residual check):

* Neumann family (K = 3 terms, hpo-run's default): hpo-cli cold (α = auto from 10 power
  iterations every call) and warm (λ̂max kept, refreshed every 1, 3 or 10 calls by 3 power
  iterations from the kept eigenvector); the peers' Neumann series with a fixed α = 1/λ̂max
  estimated once before the run (100 power iterations), as they are used. Reference: the same
  K-term series with α = 1/λmax, λmax from ARPACK's Lanczos at that state (relative accuracy
  10⁻⁴; independent of the start vector, which a power iteration's few steps are not).
* CG family on (H + μI)x = b, μ = max(0, −λ̂min) + 0.1·λ̂max at the first state (power
  iterations; H is indefinite here), stopping at ‖r‖ ≤ 10⁻³‖b‖:
  hpo-cli cold and warm; torchopt's ``solve_cg(rtol=10⁻³)`` and curvlinops'
  ``CGInverseLinearOperator(tolerance=10⁻³)`` on the same damped, counted product, cold.
  Reference: CG to ‖r‖ ≤ 10⁻⁶‖b‖ (or 1,000 iterations).

Accuracy is ‖g − g*‖/‖g*‖ against the reference's hypergradient g* at the same state. Times are
single calls (warm state changes from call to call, so a call cannot be repeated), timed with
``time.perf_counter`` in an order rotated at every step so that load hits all methods alike.
Output: ``<out>/loop_<device>[_quick].{md,csv}``.
"""

from __future__ import annotations

import argparse
import statistics
import sys
import time
from collections.abc import Callable, Sequence
from dataclasses import dataclass, field
from typing import Any

import torch

from benchmarks.harness import (
    DEFAULT_SIZES,
    QUICK_SIZES,
    BenchmarkRun,
    Column,
    CpuSnapshot,
    Table,
    benchmark_command,
    benchmark_parser,
    fmt_ms,
    fmt_ratio,
    fmt_sci,
    log,
    parse_benchmark_args,
    report_stem,
    resolve_device,
    write_report,
)
from benchmarks.overhead import compose_config
from benchmarks.peers import (
    IFTPieces,
    add_peers_flag,
    betty_method,
    curvlinops_method,
    ift_pieces,
    peer_status,
    require_peers,
    torchopt_method,
)
from hpo_cli import ConjugateGradient, Neumann, TrainingCurvature, hypergradient
from hpo_cli.analysis.hessian.lanczos import extreme_eigenvalues
from hpo_cli.analysis.hessian.operators import SymmetricOperator
from hpo_cli.core.solvers import estimate_largest_eigenvalue
from hpo_cli.core.vectors import add, flatten
from hpo_cli.runner.build import Experiment, build_experiment
from hpo_cli.runner.loop import inner_step

Vector = list[torch.Tensor]
TERMS = 3  # hpo-run's default Neumann series
SETUP_POWER_ITERATIONS = 100
LANCZOS_TOL = 1e-4
CG_TOL, REFERENCE_TOL, REFERENCE_ITERATIONS, CG_MAX_ITER = 1e-3, 1e-6, 1000, 200
DAMPING_FRACTION = 0.1  # μ = max(0, −λ̂min) + this × λ̂max, at the first state
EQUAL_ACCURACY = 1.05  # errors within this factor count as equal
TARGET_PRODUCTS, TARGET_PEER_TIME = 2.0, 1.3
REFRESH_EVERY = (1, 3, 10)  # Neumann's warm rows: calls between two λ̂max refreshes


@dataclass(frozen=True)
class LoopProblem:
    name: str
    title: str
    overrides: tuple[str, ...]
    outer_steps: int


def problems(quick: bool, device: str) -> list[LoopProblem]:
    hidden, train, inner, outer = ("[16,16]", 64, 2, 2) if quick else ("[256,256]", 1000, 20, 20)
    mlp = (
        "dataset._target_=benchmarks.synthetic.synthetic_mnist",
        f"dataset.train_size={train}",
        f"dataset.val_size={train}",
        f"model.hidden_sizes={hidden}",
        "model.activation=relu",
        "batch_size=128" if not quick else "batch_size=16",
        f"hyper_train_batch={128 if not quick else 16}",
        f"hyper_val_batch={128 if not quick else 16}",
        f"inner_steps={inner}",
        device,
    )
    default = ("inner_steps=5", "model.hidden_sizes=[8]", device) if quick else (device,)
    return [
        LoopProblem("default", "8a. hpo-run's default experiment", default, 2 if quick else 30),
        LoopProblem("mlp", f"8b. MLP 784-{hidden[1:-1].replace(',', '-')}-10", mlp, outer),
    ]


# --------------------------------------------------------------------------------------------
# One state of the run, and the methods that compute its hypergradient
# --------------------------------------------------------------------------------------------


@dataclass
class State:
    """The losses of one hyper-step (fixed batches), as every method sees them."""

    exp: Experiment
    train_batch: Any
    val_batch: Any

    @property
    def params(self) -> Vector:
        return list(self.exp.model.parameters())

    @property
    def hparams(self) -> Vector:
        return list(self.exp.hyper.parameters())

    def train_loss(self) -> torch.Tensor:
        return self.exp.hyper.training_loss(self.exp.model, self.train_batch, self.exp.criterion)

    def val_loss(self) -> torch.Tensor:
        return self.exp.hyper.validation_loss(self.exp.model, self.val_batch, self.exp.criterion)

    def largest_eigenvalue(self, shift: float = 0.0) -> float:
        """λ̂max of H − shift·I by power iteration from ∂L_v/∂w (with shift = λ̂max of H, the
        most negative eigenvalue of H minus the shift)."""
        curvature = TrainingCurvature(self.train_loss(), self.params)
        b = list(torch.autograd.grad(self.val_loss(), self.params))

        def shifted(vector: Vector) -> Vector:
            return add(curvature.hvp(vector), vector, alpha=-shift)

        return estimate_largest_eigenvalue(shifted, b, SETUP_POWER_ITERATIONS)[0]

    def lanczos_largest_eigenvalue(self) -> float:
        """λmax of H by ARPACK's Lanczos (relative accuracy 10⁻⁴), independent of any start
        vector a solver uses."""
        curvature = TrainingCurvature(self.train_loss(), self.params)
        operator = SymmetricOperator(curvature.hvp, [p.detach() for p in self.params])
        return float(extreme_eigenvalues(operator, 1, "LA", tol=LANCZOS_TOL).values[-1])

    def damping(self, largest: float) -> float:
        """μ that makes H + μI positive definite here: max(0, −λ̂min) + 0.1·λ̂max."""
        smallest = self.largest_eigenvalue(shift=largest) + largest
        return max(0.0, -smallest) + DAMPING_FRACTION * largest


Outcome = tuple[Vector, int, str]  # hypergradient, products, status
Method = Callable[[State], Outcome]


def hpo_cli_method(solver: Any) -> Method:
    def run(state: State) -> Outcome:
        result = hypergradient(
            state.train_loss(),
            state.val_loss(),
            state.params,
            state.hparams,
            solver,
            check_residual=False,
            raise_on_failure=False,
        )
        return list(result.grads), result.hvps, result.solve.status

    return run


def peer_neumann(make: Callable[..., Callable[[], Vector]], kind: str, alpha: float) -> Method:
    """A peer's Neumann series (benchmarks.peers' adapter) with a fixed α: K products."""

    def run(state: State) -> Outcome:
        return make(state, kind, TERMS, alpha)(), TERMS, "fixed"

    return run


@dataclass
class CountingPieces:
    """``IFTPieces`` whose product is damped, (H + μI)v, and counted."""

    pieces: IFTPieces
    damping: float
    products: int = 0

    def matvec(self, vector: Sequence[torch.Tensor]) -> Vector:
        self.products += 1
        return add(self.pieces.matvec(vector), list(vector), alpha=self.damping)


def torchopt_cg(damping: float) -> Method:
    from torchopt import linear_solve

    solve = linear_solve.solve_cg(maxiter=CG_MAX_ITER, rtol=CG_TOL, atol=0.0)

    def run(state: State) -> Outcome:
        pieces = CountingPieces(ift_pieces(state), damping)
        return pieces.pieces.finish(solve(pieces.matvec, pieces.pieces.rhs)), pieces.products, ""

    return run


def curvlinops_cg(damping: float) -> Method:
    from curvlinops import CGInverseLinearOperator
    from curvlinops._torch_base import PyTorchLinearOperator

    class Operator(PyTorchLinearOperator):
        SELF_ADJOINT = True

        def __init__(self, pieces: CountingPieces) -> None:
            shapes = [tuple(p.shape) for p in pieces.pieces.params]
            super().__init__(shapes, shapes)
            self.pieces = pieces

        def _matmat(self, X: list[torch.Tensor]) -> list[torch.Tensor]:
            columns = [self.pieces.matvec([x[..., j] for x in X]) for j in range(X[0].shape[-1])]
            return [torch.stack(parts, dim=-1) for parts in zip(*columns, strict=True)]

    def run(state: State) -> Outcome:
        pieces = CountingPieces(ift_pieces(state), damping)
        inverse = CGInverseLinearOperator(
            Operator(pieces), max_iter=CG_MAX_ITER, max_tridiag_iter=CG_MAX_ITER, tolerance=CG_TOL
        )
        solution = inverse @ [r.detach() for r in pieces.pieces.rhs]
        return pieces.pieces.finish(solution), pieces.products, ""

    return run


@dataclass
class Family:
    """The methods of one solver family, and the reference they are compared with."""

    name: str
    reference: Callable[[State], Method]
    methods: dict[str, Method]

    @property
    def cold(self) -> str:
        return next(label for label in self.methods if label.endswith(", cold"))

    @property
    def warm(self) -> list[str]:
        return [label for label in self.methods if label.startswith("hpo-cli") and "warm" in label]


def families(alpha: float, damping: float, available: set[str]) -> list[Family]:
    neumann = {"hpo-cli: neumann, cold": hpo_cli_method(Neumann(TERMS))}
    for k in REFRESH_EVERY:
        solver = Neumann(TERMS, warm_start=True, refresh_every=k)
        neumann[f"hpo-cli: neumann, warm, refresh every {k}"] = hpo_cli_method(solver)
    peers_neumann = {
        "torchopt": ("torchopt: solve_inv(ns=True), fixed α", torchopt_method),
        "betty": ("betty: neumann, fixed α", betty_method),
        "curvlinops": ("curvlinops: NeumannInverseLinearOperator, fixed α", curvlinops_method),
    }
    for peer, (label, make) in peers_neumann.items():
        if peer in available:
            neumann[label] = peer_neumann(make, "neumann", alpha)
    cg = {
        "hpo-cli: cg, cold": hpo_cli_method(ConjugateGradient(CG_MAX_ITER, CG_TOL, damping)),
        "hpo-cli: cg, warm": hpo_cli_method(
            ConjugateGradient(CG_MAX_ITER, CG_TOL, damping, warm_start=True)
        ),
    }
    if "torchopt" in available:
        cg["torchopt: solve_cg"] = torchopt_cg(damping)
    if "curvlinops" in available:
        cg["curvlinops: CGInverseLinearOperator"] = curvlinops_cg(damping)

    def neumann_reference(state: State) -> Method:
        return hpo_cli_method(Neumann(TERMS, alpha=1.0 / state.lanczos_largest_eigenvalue()))

    reference_cg = ConjugateGradient(REFERENCE_ITERATIONS, REFERENCE_TOL, damping, warm_start=False)
    return [
        Family("neumann", neumann_reference, neumann),
        Family("cg", lambda state: hpo_cli_method(reference_cg), cg),
    ]


# --------------------------------------------------------------------------------------------
# The run
# --------------------------------------------------------------------------------------------


@dataclass
class Record:
    products: list[int] = field(default_factory=list)
    times_ms: list[float] = field(default_factory=list)
    errors: list[float] = field(default_factory=list)
    statuses: list[str] = field(default_factory=list)


def relative_error(grads: Vector, reference: Vector) -> float:
    g, r = flatten([x.detach() for x in grads]), flatten([x.detach() for x in reference])
    return float(torch.linalg.vector_norm(g - r) / torch.linalg.vector_norm(r))


def hyper_step_with(exp: Experiment, grads: Vector) -> None:
    """One outer-optimiser step on λ with ``grads`` (what ``JointOptimizer.hyper_step`` does)."""
    exp.joint.hyper_optimizer.zero_grad(set_to_none=True)
    for hparam, grad in zip(exp.joint.hparams, grads, strict=True):
        hparam.grad = grad.detach().clone()
    exp.joint.hyper_optimizer.step()


def run_problem(problem: LoopProblem, available: set[str]) -> tuple[list[Family], dict]:
    exp = build_experiment(compose_config(problem.overrides))
    cfg = exp.cfg
    records: dict[str, Record] = {}
    chosen: list[Family] = []
    for step in range(problem.outer_steps):
        for _ in range(cfg.inner_steps):
            inner_step(exp)
        train_batch = exp.data.train.sample(cfg.hyper_train_batch, exp.batches)
        val_batch = exp.data.val.sample(cfg.hyper_val_batch, exp.batches)
        state = State(exp, train_batch, val_batch)
        if not chosen:
            largest = state.largest_eigenvalue()
            chosen = families(1.0 / largest, state.damping(largest), available)
        driving = None
        for family in chosen:
            reference, _, _ = family.reference(state)(state)
            labels = list(family.methods)
            shift = step % len(labels)
            for label in labels[shift:] + labels[:shift]:
                start = time.perf_counter()
                grads, products, status = family.methods[label](state)
                if exp.device.type == "cuda":
                    torch.cuda.synchronize(exp.device)
                elapsed = (time.perf_counter() - start) * 1e3
                record = records.setdefault(label, Record())
                record.products.append(products)
                record.times_ms.append(elapsed)
                record.errors.append(relative_error(grads, reference))
                record.statuses.append(status)
                if label == "hpo-cli: neumann, cold":  # hpo-run's default solver drives the run
                    driving = grads
        if driving is not None and all(bool(torch.isfinite(g).all()) for g in driving):
            hyper_step_with(exp, driving)  # else skipped, as hpo-run's on_failure=skip does
        log(f"section 8: {problem.name}, hyper-step {step + 1}/{problem.outer_steps}")
    return chosen, records


def summary_rows(family: Family, records: dict[str, Record]) -> list[dict[str, Any]]:
    rows = []
    for label in family.methods:
        record = records[label]
        counts: dict[str, int] = {}
        for status in record.statuses:
            counts[status] = counts.get(status, 0) + 1
        rows.append(
            {
                "family": family.name,
                "method": label,
                "steps": len(record.products),
                "products": statistics.fmean(record.products),
                "median_ms": statistics.median(record.times_ms),
                "total_s": sum(record.times_ms) / 1e3,
                "median_error": statistics.median(record.errors),
                "max_error": max(record.errors),
                "statuses": ", ".join(f"{n} {s}" for s, n in counts.items() if s),
            }
        )
    cold = next(row for row in rows if row["method"] == family.cold)
    for row in rows:
        row["products_vs_cold"] = row["products"] / cold["products"]
        row["time_vs_cold"] = row["median_ms"] / cold["median_ms"]
    return rows


def verdicts(family: Family, rows: list[dict[str, Any]]) -> list[str]:
    """One line per warm variant against cold (products at equal accuracy), and one on the
    fastest peer against the fastest hpo-cli method at least as accurate as it."""
    by = {row["method"]: row for row in rows}
    cold = by[family.cold]
    notes = []
    for label in family.warm:
        warm = by[label]
        ratio = cold["products"] / warm["products"]
        equal = warm["median_error"] <= EQUAL_ACCURACY * cold["median_error"]
        met = ratio >= TARGET_PRODUCTS and equal
        notes.append(
            f"{label}: {ratio:.2f}× fewer products per hyper-step than cold, median error "
            f"{warm['median_error']:.2g} vs cold {cold['median_error']:.2g} "
            f"({'equal or better' if equal else 'less accurate'}): the target (≥ "
            f"{TARGET_PRODUCTS:g}× fewer at equal accuracy) is {'met' if met else 'missed'}."
        )
    peers = [row for row in rows if not row["method"].startswith("hpo-cli")]
    if not peers:
        return [*notes, f"{family.name}: no peer available, no peer comparison."]
    fastest = min(peers, key=lambda row: row["median_ms"])
    ours = [
        row
        for row in rows
        if row["method"].startswith("hpo-cli")
        and row["median_error"] <= EQUAL_ACCURACY * fastest["median_error"]
    ]
    if not ours:
        return [*notes, f"{family.name}: no hpo-cli method is as accurate as {fastest['method']}."]
    best = min(ours, key=lambda row: row["median_ms"])
    speedup = fastest["median_ms"] / best["median_ms"]
    notes.append(
        f"{family.name}: the fastest peer ({fastest['method']}, median error "
        f"{fastest['median_error']:.2g}) takes {speedup:.2f}× the time of the fastest hpo-cli "
        f"method at least as accurate ({best['method']}, {best['median_error']:.2g}): the "
        f"target (≥ {TARGET_PEER_TIME:g}×) is {'met' if speedup >= TARGET_PEER_TIME else 'missed'}."
    )
    return notes


COLUMNS = [
    Column("family", "family"),
    Column("method", "method"),
    Column("steps", "hyper-steps"),
    Column("products", "products / step", lambda v: f"{v:.1f}"),
    Column("products_vs_cold", "× cold products", fmt_ratio),
    Column("median_ms", "median ms / step", fmt_ms),
    Column("time_vs_cold", "× cold time", fmt_ratio),
    Column("total_s", "total s", lambda v: f"{v:.2f}"),
    Column("median_error", "median rel. error", fmt_sci),
    Column("max_error", "max rel. error", fmt_sci),
    Column("statuses", "solver statuses"),
]


def section_loop(problem: LoopProblem, available: set[str], missing: list[str]) -> Table:
    log(f"section 8: {problem.title}")
    chosen, records = run_problem(problem, available)
    table = Table(section=problem.name, title=problem.title, columns=COLUMNS)
    for family in chosen:
        rows = summary_rows(family, records)
        table.rows += rows
        table.notes += verdicts(family, rows)
    table.notes += [
        f"Overrides of hpo-run's defaults: {' '.join(problem.overrides) or 'none'}; "
        f"{problem.outer_steps} hyper-steps, driven by hpo-cli's cold Neumann (the default). "
        "Errors: ‖g − g*‖/‖g*‖ against the family's reference at the same state (module "
        "docstring); times: one call per step, median over the run.",
    ]
    if missing:
        table.notes.append(f"Peers not available (no rows): {', '.join(missing)}.")
    return table


def parse_args(argv: Sequence[str] | None) -> argparse.Namespace:
    parser = benchmark_parser("loop", "Cold vs warm hypergradients over a run, and the peers.")
    add_peers_flag(parser)
    return parse_benchmark_args(parser, argv)


def main(argv: Sequence[str] | None = None) -> int:
    args = parse_args(argv)
    device = resolve_device(args.device)
    status = peer_status()
    missing = require_peers({k: v for k, v in status.items() if k != "higher"}, args.peers)
    available = set(status) - set(missing)
    sizes = QUICK_SIZES if args.quick else DEFAULT_SIZES
    command = benchmark_command("loop", argv)
    start = CpuSnapshot.now()
    tables = [
        section_loop(problem, available, missing)
        for problem in problems(args.quick, f"device={device.type}")
    ]
    run = BenchmarkRun(command, device, sizes, args.quick, start, CpuSnapshot.now())
    write_report(
        args.out,
        report_stem("loop", device, args.quick),
        "hpo-cli hypergradients in the loop",
        run,
        tables,
        dtype="float32",
        timer="time.perf_counter around one call per method and hyper-step (warm state changes "
        "between calls, so none is repeated); order rotated every step",
    )
    return 0


if __name__ == "__main__":
    sys.exit(main())
