"""The run behind ``benchmarks.solvers_in_the_loop``: hpo-run's own inner and outer loop, and at
every hyper-step each method's hypergradient at that same state, timed and compared with the
family's reference (the methods, references and constants are described in
``benchmarks.solvers_in_the_loop``).

:func:`families` is the one list of methods; :func:`run_problem` drives the run and returns one
:class:`Record` per method, which ``benchmarks.solvers_in_the_loop`` turns into its tables.
"""

from __future__ import annotations

import functools
import math
import time
from collections.abc import Callable
from dataclasses import dataclass, field
from typing import Any

import torch

from benchmarks.common.harness import log
from benchmarks.common.peer_adapters import (
    Counted,
    betty_method,
    curvlinops_damped_cg,
    curvlinops_method,
    torchopt_damped_cg,
    torchopt_method,
)
from benchmarks.common.problems import SETUP_LANCZOS_STEPS
from benchmarks.common.run_config import compose_config
from hpo_cli import ConjugateGradient, Neumann, TrainingCurvature, hypergradient
from hpo_cli.analysis.hessian.lanczos import extreme_eigenvalues
from hpo_cli.analysis.hessian.operators import SymmetricOperator
from hpo_cli.core.solvers import lanczos_extremes
from hpo_cli.core.solvers.diagonal import second_moment_diagonal
from hpo_cli.core.vectors import flatten
from hpo_cli.runner.config.build import build_experiment
from hpo_cli.runner.loop.experiment import Experiment
from hpo_cli.runner.loop.train import inner_step

Vector = list[torch.Tensor]
TERMS = 3  # products of hpo-run's default Neumann series (terms=4: powers 0..3)
LANCZOS_TOL = 1e-4
CG_TOL, REFERENCE_TOL, REFERENCE_ITERATIONS, CG_MAX_ITER = 1e-3, 1e-6, 1000, 200
DAMPING_FRACTION = 0.1  # μ = max(0, −λ̂min) + this × λ̂max, at the first state
REFRESH_EVERY = (1, 3, 10)  # Neumann's warm rows: calls between two λ̂max refreshes
SHORT_LANCZOS = (4, 6)  # Neumann's cold rows with fewer Lanczos steps than the default
KRYLOV_LANCZOS = (10, 6)  # and with krylov_series=True (the series without its K products)
CG_REFRESH_EVERY = (1, 10)  # preconditioned CG's rows: calls between two Hutchinson diagonals
COMPILED = "hpo-cli: cg, cold, compiled"  # its first call includes the compilation


@dataclass(frozen=True)
class LoopProblem:
    name: str
    title: str
    overrides: tuple[str, ...]
    outer_steps: int


def problems(quick: bool, device: str) -> list[LoopProblem]:
    hidden, train, inner, outer = ("[16,16]", 64, 2, 2) if quick else ("[256,256]", 1000, 20, 20)
    mlp = (
        "dataset._target_=benchmarks.common.synthetic.synthetic_mnist",
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

    def extreme_eigenvalues(self) -> tuple[float, float]:
        """λ̂max and λ̂min of H: the extreme Ritz values of a long Lanczos run from ∂L_v/∂w."""
        curvature = TrainingCurvature(self.train_loss(), self.params)
        b = list(torch.autograd.grad(self.val_loss(), self.params))
        extremes = lanczos_extremes(curvature.hvp, b, SETUP_LANCZOS_STEPS)
        return extremes.largest, extremes.smallest

    @functools.cached_property
    def lanczos_largest_eigenvalue(self) -> float:
        """λmax of H by ARPACK's Lanczos (relative accuracy 10⁻⁴), independent of any start
        vector a solver uses."""
        curvature = TrainingCurvature(self.train_loss(), self.params)
        operator = SymmetricOperator(curvature.hvp, [p.detach() for p in self.params])
        return float(extreme_eigenvalues(operator, 1, "LA", tol=LANCZOS_TOL).values[-1])

    @staticmethod
    def damping(largest: float, smallest: float) -> float:
        """μ that makes H + μI positive definite: max(0, −λ̂min) + 0.1·λ̂max."""
        return max(0.0, -smallest) + DAMPING_FRACTION * largest


Outcome = tuple[Vector, int, str, float]  # hypergradient, products, status, λ̂max (or nan)
Method = Callable[[State], Outcome]


def hpo_cli_method(solver: Any) -> Method:
    carried = [solver.init_state()]  # the solver's state from one call to the next (warm starts)

    def run(state: State) -> Outcome:
        moments = None
        if solver.reads_second_moments:  # as ImplicitDifferentiation does
            moments = second_moment_diagonal(state.exp.joint.optimizer, state.params)
        result = hypergradient(
            state.train_loss(),
            state.val_loss(),
            state.params,
            state.hparams,
            solver,
            check_residual=False,
            raise_on_failure=False,
            solver_state=carried[0],
            second_moments=moments,
        )
        carried[0] = result.solver_state
        estimate = result.solve.extras.get("lambda_max_estimate", math.nan)
        return list(result.grads), result.hvps, result.solve.status, estimate

    return run


def peer_neumann(make: Callable[..., Callable[[], Vector]], kind: str, alpha: float) -> Method:
    """A peer's Neumann series (``benchmarks.common.peer_adapters``) with a fixed α: K products."""

    def run(state: State) -> Outcome:
        return make(state, kind, TERMS, alpha)(), TERMS, "fixed", math.nan

    return run


def peer_cg(make: Callable[[float, int, float], Counted], damping: float) -> Method:
    """A peer's CG on the damped system (``benchmarks.common.peer_adapters``), to
    ‖r‖ ≤ CG_TOL·‖b‖."""
    solve = make(damping, CG_MAX_ITER, CG_TOL)

    def run(state: State) -> Outcome:
        grads, products = solve(state)
        return grads, products, "", math.nan

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


def families(
    alpha: float, damping: float, available: set[str], compiled: bool = False
) -> list[Family]:
    neumann = {"hpo-cli: neumann, cold": hpo_cli_method(Neumann(TERMS + 1))}
    for steps in SHORT_LANCZOS:
        solver = Neumann(TERMS + 1, lanczos_iterations=steps)
        neumann[f"hpo-cli: neumann, cold with {steps} Lanczos steps"] = hpo_cli_method(solver)
    for steps in KRYLOV_LANCZOS:
        solver = Neumann(TERMS + 1, lanczos_iterations=steps, krylov_series=True)
        label = f"hpo-cli: neumann, Krylov series, cold with {steps} Lanczos steps"
        neumann[label] = hpo_cli_method(solver)
    for k in REFRESH_EVERY:
        solver = Neumann(TERMS + 1, warm_start=True, refresh_every=k)
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
    for k in CG_REFRESH_EVERY:
        cg[f"hpo-cli: cg, hutchinson every {k}, cold"] = hpo_cli_method(
            ConjugateGradient(CG_MAX_ITER, CG_TOL, damping, "hutchinson", refresh_every=k)
        )
    cg[f"hpo-cli: cg, hutchinson every {k}, warm"] = hpo_cli_method(
        ConjugateGradient(CG_MAX_ITER, CG_TOL, damping, "hutchinson", True, refresh_every=k)
    )
    cg["hpo-cli: cg, adam, cold"] = hpo_cli_method(
        ConjugateGradient(CG_MAX_ITER, CG_TOL, damping, "adam")
    )
    if compiled:
        cg[COMPILED] = hpo_cli_method(ConjugateGradient(CG_MAX_ITER, CG_TOL, damping, compile=True))
    if "torchopt" in available:
        cg["torchopt: solve_cg"] = peer_cg(torchopt_damped_cg, damping)
    if "curvlinops" in available:
        cg["curvlinops: CGInverseLinearOperator"] = peer_cg(curvlinops_damped_cg, damping)

    def neumann_reference(state: State) -> Method:
        return hpo_cli_method(Neumann(TERMS + 1, alpha=1.0 / state.lanczos_largest_eigenvalue))

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
    times_ms: list[float] = field(default_factory=list)  # wall
    cpu_ms: list[float] = field(default_factory=list)  # this thread's CPU time
    errors: list[float] = field(default_factory=list)
    statuses: list[str] = field(default_factory=list)
    lambda_ratios: list[float] = field(default_factory=list)  # λ̂max used / ARPACK's λmax


def relative_error(grads: Vector, reference: Vector) -> float:
    g, r = flatten([x.detach() for x in grads]), flatten([x.detach() for x in reference])
    return float(torch.linalg.vector_norm(g - r) / torch.linalg.vector_norm(r))


def hyper_step_with(exp: Experiment, grads: Vector) -> None:
    """One outer-optimiser step on λ with ``grads`` (what ``JointOptimizer.hyper_step`` does)."""
    exp.joint.hyper_optimizer.zero_grad(set_to_none=True)
    for hparam, grad in zip(exp.joint.hparams, grads, strict=True):
        hparam.grad = grad.detach().clone()
    exp.joint.hyper_optimizer.step()


def run_problem(
    problem: LoopProblem, available: set[str], compiled: bool = False
) -> tuple[list[Family], dict[str, Record]]:
    """The run with :func:`families`; ``compiled`` adds the row of CG with ``compile=True``."""
    return run_families(
        problem, lambda alpha, damping: families(alpha, damping, available, compiled)
    )


def run_families(
    problem: LoopProblem, build: Callable[[float, float], list[Family]]
) -> tuple[list[Family], dict[str, Record]]:
    """hpo-run's loop on ``problem``, driven by hpo-cli's cold Neumann (hpo-run's default
    solver, untimed); at every hyper-step each method of ``build(1/λ̂max, μ)`` (λ̂max and μ from
    the first state, :meth:`State.extreme_eigenvalues` and :meth:`State.damping`) is timed once,
    wall and thread CPU time, in an order rotated every step, and compared with its family's
    reference at that state."""
    exp = build_experiment(compose_config(problem.overrides))
    cfg = exp.settings
    records: dict[str, Record] = {}
    chosen: list[Family] = []
    drive = hpo_cli_method(Neumann(TERMS + 1))
    for step in range(problem.outer_steps):
        for _ in range(cfg.inner_steps):
            inner_step(exp)
        train_batch = exp.data.train.sample(cfg.hyper_train_batch, exp.batches)
        val_batch = exp.data.val.sample(cfg.hyper_val_batch, exp.batches)
        state = State(exp, train_batch, val_batch)
        if not chosen:
            largest, smallest = state.extreme_eigenvalues()
            chosen = build(1.0 / largest, state.damping(largest, smallest))
        for family in chosen:
            reference = family.reference(state)(state)[0]
            labels = list(family.methods)
            shift = step % len(labels)
            for label in labels[shift:] + labels[:shift]:
                start, start_cpu = time.perf_counter(), time.thread_time()
                grads, products, status, estimate = family.methods[label](state)
                if exp.device.type == "cuda":
                    torch.cuda.synchronize(exp.device)
                elapsed = (time.perf_counter() - start) * 1e3
                record = records.setdefault(label, Record())
                record.cpu_ms.append((time.thread_time() - start_cpu) * 1e3)
                record.products.append(products)
                record.times_ms.append(elapsed)
                record.errors.append(relative_error(grads, reference))
                record.statuses.append(status)
                if family.name == "neumann" and math.isfinite(estimate):
                    record.lambda_ratios.append(estimate / state.lanczos_largest_eigenvalue)
        driving = drive(state)[0]
        if all(bool(torch.isfinite(g).all()) for g in driving):
            hyper_step_with(exp, driving)  # else skipped, as hpo-run's on_failure=skip does
        log(f"{problem.title}: hyper-step {step + 1}/{problem.outer_steps}")
    return chosen, records
