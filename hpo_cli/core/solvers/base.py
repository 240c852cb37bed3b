"""The contract shared by every inverse-HVP solver.

A solver approximates x ≈ A⁻¹ b for a symmetric d×d matrix A that it only sees through a
``matvec`` callable v ↦ A v (a Hessian-vector product in practice). Vectors are lists of
tensors shaped like the model's parameters (:mod:`hpo_cli.core.vectors`).

Solvers are stateless, as jaxopt's ``solve_cg(matvec, b, ridge, init)``: the object holds its
settings only (a frozen dataclass), and whatever one solve hands to the next (CG's warm start
and Hutchinson diagonal, Neumann's λ̂max and Ritz vector) is a :class:`SolverState` the caller
passes in and gets back::

    state = solver.init_state()
    for step in range(steps):
        x, info, state = solver.solve(matvec_at_step, b_at_step, state)

    x, info = solver(matvec, b)          # one cold solve: solve(matvec, b, init_state())[:2]

``solve`` never mutates ``state``; the caller keeps the returned one (``JointOptimizer`` does,
and puts it in its ``state_dict``, so that hpo-run's checkpoints resume bit-exactly). A solver
whose preconditioner is the inner optimiser's second moments declares ``reads_second_moments``
and gets them per call (``second_moments=``, √v̂ + ε shaped like b), never a live optimiser.
A hypergradient that needs more of the inner optimiser than that (its learning rates and update
rule: ``solver=unrolled``, ``solver=first_order``) is not an inverse-HVP solver but a
:class:`hpo_cli.core.methods.HypergradientMethod`, which is handed the optimiser at every
hyper-step and refuses, in :meth:`~hpo_cli.core.methods.HypergradientMethod.check`, one it
cannot read.

The solver does not know where the products come from; the caller does not know how the
solver iterates. Adding a solver means writing one such class in its own file (inside
hpo-cli or in one's own package, named by ``solver._target_``; its constructor's keyword
arguments are the YAML's keys); a solver without state subclasses :class:`StatelessSolver` and
writes ``__call__`` only. It returns x as a list shaped like b and a :class:`SolveInfo`;
status ``diverged`` (or non-finite values in x) makes the caller apply its failure policy.
"""

from __future__ import annotations

from dataclasses import asdict, dataclass, field, fields
from typing import Any, ClassVar, Protocol, Self

import torch

from hpo_cli.core.hvp import MatVec
from hpo_cli.core.vectors import TensorList, clone


class Status:
    """Why a solver stopped (the ``status`` field of :class:`SolveInfo`)."""

    CONVERGED = "converged"  # met its tolerance, or solved directly
    MAX_ITERATIONS = "max_iterations"  # used its whole budget of products
    APPROXIMATION = "approximation"  # a fixed approximation (identity), nothing to converge
    UNSTABLE = "unstable"  # Neumann: ρ(I − αA) >= 1 but the truncated sum has not blown up yet
    DIVERGED = "diverged"  # the iteration blew up; x is garbage
    NEGATIVE_CURVATURE = "negative_curvature"  # CG met pᵀAp ≤ 0 and stopped before dividing


@dataclass
class SolveInfo:
    """Diagnostics of one solve of A x = b.

    Attributes:
        solver: the solver's name.
        status: one of :class:`Status`.
        iterations: iterations performed (products in the series for Neumann: the highest
            power computed, terms − 1 when all are summed; steps for CG).
        matvecs: products with A used, including any spent estimating a step size.
        residual: ‖A x − b‖ / ‖b‖ for the system the solver solved (damping included), when
            the solver knows it without extra products; otherwise ``None``.
        message: one human-readable line explaining the status.
        extras: solver-specific numbers (step α, λmax estimate, spectral radius, ...).
    """

    solver: str
    status: str
    iterations: int = 0
    matvecs: int = 0
    residual: float | None = None
    message: str = ""
    extras: dict[str, float] = field(default_factory=dict)

    @property
    def converged(self) -> bool:
        return self.status == Status.CONVERGED

    @property
    def diverged(self) -> bool:
        return self.status == Status.DIVERGED

    def as_dict(self) -> dict[str, object]:
        """Flat, JSON-friendly view (for metrics files)."""
        info = asdict(self)
        info.update(converged=self.converged, diverged=self.diverged)
        return info


@dataclass(frozen=True)
class SolverState:
    """What one solve hands to the next; the base (and the whole state) of stateless solvers.

    Subclasses add fields (tensors, tensor lists, numbers or ``None``) with defaults, the
    defaults being the state before the first solve. :meth:`as_dict` and :meth:`from_dict`
    convert to and from a checkpoint's plain values (``torch.load(weights_only=True)`` reads
    them); the field names are the checkpoint's keys.
    """

    def as_dict(self) -> dict[str, Any]:
        """Detached copies of the fields that are set (``None`` ones are left out)."""
        return {
            f.name: _copy(getattr(self, f.name))
            for f in fields(self)
            if getattr(self, f.name) is not None
        }

    @classmethod
    def from_dict(cls, state: dict[str, Any] | None) -> Self:
        """The state of :meth:`as_dict` (an empty or ``None`` dict: the initial state)."""
        return cls(**(state or {}))


def _copy(value: Any) -> Any:
    """A detached copy of a state entry: a tensor list, a tensor or a number."""
    if isinstance(value, torch.Tensor):
        return value.detach().clone()
    return clone(value) if isinstance(value, list | tuple) else value


class InverseHVPSolver(Protocol):
    """Maps (matvec, b, state) to an approximate solution of A x = b, its diagnostics and the
    state for the next solve; see the module docstring."""

    reads_second_moments: bool
    """Whether :meth:`solve` uses ``second_moments`` (the caller computes them only then)."""

    def init_state(self) -> SolverState:
        """The state before the first solve."""
        ...

    def solve(
        self,
        matvec: MatVec,
        b: TensorList,
        state: SolverState,
        *,
        second_moments: TensorList | None = None,
    ) -> tuple[list[torch.Tensor], SolveInfo, SolverState]:
        """x ≈ A⁻¹ b (a list shaped like b), the diagnostics, and the next state.

        Args:
            matvec: v ↦ A v for A symmetric d×d (d the number of entries of b).
            b: the right-hand side, tensors shaped like the weights.
            state: the previous solve's returned state (or :meth:`init_state`); not mutated.
            second_moments: the inner optimiser's √v̂ + ε per weight, shaped like b, for a
                solver with ``reads_second_moments``; ``None`` when it has none yet.
        """
        ...

    def __call__(self, matvec: MatVec, b: TensorList) -> tuple[list[torch.Tensor], SolveInfo]:
        """One solve from the initial state: ``solve(matvec, b, init_state())[:2]``."""
        ...


class WarmSolver:
    """Base of a solver whose state carries over between solves (CG's and Neumann's warm starts,
    the λ̂max estimate): subclasses write ``init_state`` and ``solve``; calling the solver is one
    solve from the initial state."""

    def __call__(self, matvec: MatVec, b: TensorList) -> tuple[list[torch.Tensor], SolveInfo]:
        """One solve from the initial state: ``solve(matvec, b, init_state())[:2]``."""
        x, info, _ = self.solve(matvec, b, self.init_state())  # type: ignore[attr-defined]
        return x, info


class StatelessSolver:
    """Base of a solver with no state between solves (identity, exact): subclasses write
    ``__call__(matvec, b) -> (x, SolveInfo)``; :meth:`solve` passes the empty state through."""

    reads_second_moments: ClassVar[bool] = False

    def init_state(self) -> SolverState:
        return SolverState()

    def solve(
        self,
        matvec: MatVec,
        b: TensorList,
        state: SolverState,
        *,
        second_moments: TensorList | None = None,
    ) -> tuple[list[torch.Tensor], SolveInfo, SolverState]:
        x, info = self(matvec, b)
        return x, info, state

    def __call__(self, matvec: MatVec, b: TensorList) -> tuple[list[torch.Tensor], SolveInfo]:
        raise NotImplementedError
