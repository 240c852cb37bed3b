"""Hessian-free optimisation (Martens, ICML 2010; Martens & Sutskever, 2012) as a torch optimiser.

Each step minimises the damped local quadratic model of the objective f around the weights w,

    q(p) = f(w) + ∇fᵀp + ½ pᵀ(B + λI) p,

B the generalised Gauss-Newton matrix (default, PSD) or the Hessian, by truncated CG
(:mod:`hpo_cli.optim.truncated_cg`) from curvature-vector products only, then:

1. **CG backtracking**: among the iterates saved at iterations ⌈1.3ʲ⌉ and the last one, walk
   back from the last while the objective f(w + x_i) keeps decreasing; the chosen p is the
   last one walked to.
2. **Levenberg-Marquardt damping** from the reduction ratio
   ρ = (f(w + p) − f(w)) / (∇fᵀp + ½ pᵀB p) (actual over predicted change, undamped model):
   ρ < ¼ → λ ← 3/2·λ; ρ > ¾ → λ ← 2/3·λ (ρ = −∞ when the model predicts no decrease).
3. **Armijo line search**: w ← w + t p with t the first of lr, 0.8·lr, 0.8²·lr, ... such that
   f(w + t p) ≤ f(w) + c·t·∇fᵀp; t = 0 (no move) when none of ``line_search_max_evals`` passes.

CG starts from the previous step's last CG iterate times ``warm_start_decay`` and is
preconditioned by M = (diag F + λ)^α, F the empirical Fisher
(:func:`~hpo_cli.optim.local_model.empirical_fisher_diagonal`).

**The closure differs from LBFGS's**: it must return the loss *with its graph* and must not call
``backward()`` or zero gradients — Hessian-free differentiates the loss itself (twice). It returns
either the scalar loss, or a pair ``(loss, outputs)`` with the network outputs (leading dimension
= examples), which the Gauss-Newton curvature and the Fisher preconditioner need. The class
declares this by deriving from :class:`hpo_cli.core.joint.GraphClosureOptimizer`, from which
``JointOptimizer.inner_step`` (the runner's and a hand-written loop's) builds such a closure.
The closure must be deterministic (the same data, no dropout), as it is called again to
evaluate f at trial points.

Gradients are never written to ``.grad``. Per-step diagnostics are in ``optimizer.last_step``.
"""

from __future__ import annotations

import math
from collections.abc import Callable, Iterable, Sequence
from dataclasses import dataclass

import torch

from hpo_cli.core.hvp import MatVec, damped
from hpo_cli.core.joint import GraphClosureOptimizer
from hpo_cli.core.vectors import add, dot, norm, scale
from hpo_cli.optim.local_model import (
    CURVATURES,
    RENAMED,
    Evaluation,
    as_evaluation,
    batch_size,
    curvature_product,
    empirical_fisher_diagonal,
    gradient,
    loss_of,
)
from hpo_cli.optim.truncated_cg import CGRun, Preconditioner, SavedIterate, truncated_cg

Closure = Callable[[], torch.Tensor | tuple[torch.Tensor, torch.Tensor]]

DAMPING_BOOST = 3 / 2
DAMPING_DROP = 2 / 3


@dataclass(frozen=True)
class HFStep:
    """What one Hessian-free step did.

    Attributes:
        loss: f(w) before the step.
        new_loss: f(w) after it.
        damping: λ used in this step's CG.
        next_damping: λ for the next step (after the Levenberg-Marquardt adjustment).
        reduction_ratio: ρ of the backtracked CG iterate.
        cg_iterations: CG iterations (one curvature product each).
        cg_stop_reason: one of :class:`hpo_cli.optim.truncated_cg.StopReason`.
        matvecs: curvature products, including the warm start's.
        backtrack_iteration: the CG iteration whose iterate was chosen.
        line_search_step: t of w + t·p; 0 when the line search found no decrease.
        loss_evaluations: evaluations of f at trial points (backtracking and line search).
    """

    loss: float
    new_loss: float
    damping: float
    next_damping: float
    reduction_ratio: float
    cg_iterations: int
    cg_stop_reason: str
    matvecs: int
    backtrack_iteration: int
    line_search_step: float
    loss_evaluations: int


@dataclass
class _LocalModel:
    """f, ∇f, the curvature product and the Fisher diagonal at the current weights."""

    loss: float
    gradient: list[torch.Tensor]
    curvature: MatVec
    fisher: list[torch.Tensor] | None


class HessianFree(GraphClosureOptimizer):
    """Hessian-free optimisation with truncated CG (see the module docstring for the method).

    Args:
        params: the weights (one parameter group).
        lr: the line search's first step t (1: the CG solution itself).
        curvature: ``"ggn"`` (B = Jᵀ H_z J, the generalised Gauss-Newton matrix; needs
            ``(loss, outputs)`` closures) or ``"hessian"``
            (:data:`hpo_cli.core.curvature.CURVATURES`; ``"gauss_newton"`` is now ``"ggn"``).
        damping: the initial Tikhonov damping λ ≥ 0.
        adapt_damping: adjust λ by the Levenberg-Marquardt rule after each step.
        cg_max_iter: the most CG iterations per step.
        cg_tol: CG stops when ‖r‖ ≤ cg_tol·‖∇f‖.
        cg_progress_tol: ε of Martens' relative-progress stop; 0 disables it.
        warm_start_decay: CG starts from this times the previous step's last iterate; 0: from 0.
        preconditioner: precondition CG by (diag F + λ)^α (needs ``(loss, outputs)`` closures).
        preconditioner_exponent: α.
        backtrack: backtrack over the saved CG iterates (else take the last one).
        line_search: Armijo backtracking line search (else the step is lr·p, unconditionally).
        armijo_c: c of the Armijo condition.
        line_search_shrink: the factor t shrinks by at each rejected trial.
        line_search_max_evals: trials before giving up with t = 0.
    """

    def __init__(
        self,
        params: Iterable[torch.Tensor],
        lr: float = 1.0,
        curvature: str = "ggn",
        damping: float = 1.0,
        adapt_damping: bool = True,
        cg_max_iter: int = 250,
        cg_tol: float = 1e-10,
        cg_progress_tol: float = 5e-4,
        warm_start_decay: float = 0.95,
        preconditioner: bool = True,
        preconditioner_exponent: float = 0.75,
        backtrack: bool = True,
        line_search: bool = True,
        armijo_c: float = 1e-2,
        line_search_shrink: float = 0.8,
        line_search_max_evals: int = 60,
    ) -> None:
        checks = {
            "lr": (lr, lr > 0, "> 0"),
            "curvature": (curvature, curvature in CURVATURES, " or ".join(CURVATURES)),
            "damping": (damping, damping >= 0, ">= 0"),
            "cg_max_iter": (cg_max_iter, cg_max_iter >= 1, ">= 1"),
            "cg_tol": (cg_tol, cg_tol >= 0, ">= 0"),
            "cg_progress_tol": (cg_progress_tol, cg_progress_tol >= 0, ">= 0"),
            "warm_start_decay": (warm_start_decay, 0 <= warm_start_decay <= 1, "in [0, 1]"),
            "preconditioner_exponent": (
                preconditioner_exponent,
                preconditioner_exponent >= 0,
                ">= 0",
            ),
            "armijo_c": (armijo_c, 0 < armijo_c < 1, "in (0, 1)"),
            "line_search_shrink": (line_search_shrink, 0 < line_search_shrink < 1, "in (0, 1)"),
            "line_search_max_evals": (line_search_max_evals, line_search_max_evals >= 1, ">= 1"),
        }
        if curvature in RENAMED:
            raise ValueError(
                f"HessianFree: curvature={curvature!r} is now spelled {RENAMED[curvature]!r}"
            )
        for name, (value, valid, requirement) in checks.items():
            if not valid:
                raise ValueError(f"HessianFree: {name}={value!r} is invalid: must be {requirement}")
        defaults = {
            "lr": lr,
            "curvature": curvature,
            "damping": damping,
            "adapt_damping": adapt_damping,
            "cg_max_iter": cg_max_iter,
            "cg_tol": cg_tol,
            "cg_progress_tol": cg_progress_tol,
            "warm_start_decay": warm_start_decay,
            "preconditioner": preconditioner,
            "preconditioner_exponent": preconditioner_exponent,
            "backtrack": backtrack,
            "line_search": line_search,
            "armijo_c": armijo_c,
            "line_search_shrink": line_search_shrink,
            "line_search_max_evals": line_search_max_evals,
        }
        super().__init__(params, defaults)
        if len(self.param_groups) != 1:
            raise ValueError("HessianFree supports one parameter group only")
        self._params: list[torch.Tensor] = self.param_groups[0]["params"]
        self.last_step: HFStep | None = None

    @property
    def damping(self) -> float:
        """The current λ (kept in the state of the first parameter, saved with state_dict)."""
        return self.state[self._params[0]].get("damping", self.param_groups[0]["damping"])

    def step(self, closure: Closure) -> torch.Tensor:  # type: ignore[override]
        """One Hessian-free step on the objective of ``closure``; returns f before the step."""
        if closure is None:
            raise ValueError("HessianFree.step needs a closure returning the loss with its graph")
        return self._step([closure], None)

    def step_accumulated(
        self, loss_closures: Sequence[Closure], curvature_closures: Sequence[Closure]
    ) -> torch.Tensor:
        """One step whose objective and curvature are averaged over mini-batches.

        With batch sizes n_j (the leading dimension of each closure's outputs; 1 when a closure
        returns no outputs) and N = Σ n_j, the objective, its gradient and the Fisher diagonal
        are Σ_j (n_j/N)·(those of ``loss_closures[j]``), and the curvature product is
        Σ_j (n'_j/N')·B_j v over ``curvature_closures``. For per-batch *mean* losses (plus one
        shared penalty) covering the same data, this is exactly the full-batch step.

        Each loss closure's graph is freed before the next is called; the curvature closures'
        graphs are all held during CG (keep those batches as small as memory requires).
        Returns f before the step.
        """
        if not loss_closures or not curvature_closures:
            raise ValueError("step_accumulated needs at least one loss and one curvature closure")
        return self._step(list(loss_closures), list(curvature_closures))

    # ------------------------------------------------------------------ the step
    def _step(
        self, loss_closures: list[Closure], curvature_closures: list[Closure] | None
    ) -> torch.Tensor:
        group = self.param_groups[0]
        params = self._params
        start = [p.detach().clone() for p in params]
        model, weights = self._local_model(loss_closures, curvature_closures, group)
        damping = self.damping
        matvec = damped(model.curvature, damping)
        preconditioner = None
        if group["preconditioner"]:
            exponent = group["preconditioner_exponent"]
            preconditioner = _divide_by([(f + damping).pow(exponent) for f in model.fisher])
        run = truncated_cg(
            matvec,
            scale(model.gradient, -1.0),
            self._warm_start(group),
            max_iter=group["cg_max_iter"],
            tol=group["cg_tol"],
            progress_tol=group["cg_progress_tol"],
            preconditioner=preconditioner,
        )
        for p, x in zip(params, run.solution, strict=True):
            self.state[p]["warm_start"] = x

        def objective(step: Sequence[torch.Tensor], t: float) -> float:
            self._move(start, step, t)
            with torch.no_grad():
                values = [float(loss_of(closure())) for closure in loss_closures]
            value = sum(w * v for w, v in zip(weights, values, strict=True))
            return value if math.isfinite(value) else math.inf

        chosen, chosen_loss, evaluations = backtrack_iterates(run, objective, group["backtrack"])
        ratio = _reduction_ratio(model.loss, chosen_loss, chosen, damping)
        next_damping = damping
        if group["adapt_damping"]:
            if ratio < 0.25:
                next_damping = damping * DAMPING_BOOST
            elif ratio > 0.75:
                next_damping = damping * DAMPING_DROP
        self.state[params[0]]["damping"] = next_damping

        t, new_loss, more = self._line_search(model, chosen, chosen_loss, objective, group)
        self._move(start, chosen.x, t)
        self.last_step = HFStep(
            loss=model.loss,
            new_loss=new_loss,
            damping=damping,
            next_damping=next_damping,
            reduction_ratio=ratio,
            cg_iterations=run.iterations,
            cg_stop_reason=run.stop_reason,
            matvecs=run.matvecs,
            backtrack_iteration=chosen.iteration,
            line_search_step=t,
            loss_evaluations=evaluations + more,
        )
        return torch.tensor(model.loss, dtype=start[0].dtype, device=start[0].device)

    def _local_model(
        self,
        loss_closures: list[Closure],
        curvature_closures: list[Closure] | None,
        group: dict,
    ) -> tuple[_LocalModel, list[float]]:
        """Weighted f, ∇f, Fisher diagonal and curvature product; also the loss weights n_j/N."""
        params = self._params
        loss_sum, sizes = 0.0, []
        grad_sum = fisher_sum = None
        kept: list[Evaluation] = []
        with torch.enable_grad():
            for closure in loss_closures:
                evaluation = as_evaluation(closure())
                n = batch_size(evaluation)
                sizes.append(n)
                loss_sum += n * float(evaluation[0].detach())
                grad = scale(gradient(evaluation, params), n)
                grad_sum = grad if grad_sum is None else add(grad_sum, grad)
                if group["preconditioner"]:
                    fisher = scale(empirical_fisher_diagonal(evaluation, params), n)
                    fisher_sum = fisher if fisher_sum is None else add(fisher_sum, fisher)
                if curvature_closures is None:
                    kept.append(evaluation)
            if curvature_closures is not None:
                kept = [as_evaluation(closure()) for closure in curvature_closures]
            curvature_sizes = [batch_size(e) for e in kept]
            products = [curvature_product(group["curvature"], e, params) for e in kept]
        total, curvature_total = sum(sizes), sum(curvature_sizes)
        curvature_weights = [n / curvature_total for n in curvature_sizes]

        def curvature(vector: Sequence[torch.Tensor]) -> list[torch.Tensor]:
            pairs = zip(products, curvature_weights, strict=True)
            result: list[torch.Tensor] = []
            for product, weight in pairs:
                term = scale(product(vector), weight)
                result = add(result, term) if result else term
            return result

        model = _LocalModel(
            loss=loss_sum / total,
            gradient=scale(grad_sum, 1 / total),
            curvature=curvature,
            fisher=None if fisher_sum is None else scale(fisher_sum, 1 / total),
        )
        return model, [n / total for n in sizes]

    def _warm_start(self, group: dict) -> list[torch.Tensor] | None:
        decay = group["warm_start_decay"]
        previous = [self.state[p].get("warm_start") for p in self._params]
        if decay == 0 or any(x is None for x in previous):
            return None
        return scale(previous, decay)

    def _line_search(
        self,
        model: _LocalModel,
        chosen: SavedIterate,
        chosen_loss: float,
        objective: Callable[[Sequence[torch.Tensor], float], float],
        group: dict,
    ) -> tuple[float, float, int]:
        """(t, f(w + t p), evaluations made): Armijo backtracking from t = lr."""
        t = group["lr"]
        loss = chosen_loss if t == 1.0 else objective(chosen.x, t)
        evaluations = 0 if t == 1.0 else 1
        if not group["line_search"]:
            return t, loss, evaluations
        slope = float(dot(model.gradient, chosen.x))
        for _ in range(group["line_search_max_evals"]):
            if math.isfinite(loss) and loss <= model.loss + group["armijo_c"] * t * slope:
                return t, loss, evaluations
            t *= group["line_search_shrink"]
            loss = objective(chosen.x, t)
            evaluations += 1
        return 0.0, model.loss, evaluations

    @torch.no_grad()
    def _move(self, start: Sequence[torch.Tensor], step: Sequence[torch.Tensor], t: float) -> None:
        """w ← start + t·step, in place."""
        for p, w0, x in zip(self._params, start, step, strict=True):
            p.copy_(w0 + t * x)


def _divide_by(diagonal: list[torch.Tensor]) -> Preconditioner:
    """v ↦ M⁻¹ v for M = diag(``diagonal``); zero entries (F_ii = λ = 0) count as 1."""
    safe = [torch.where(m > 0, m, torch.ones_like(m)) for m in diagonal]
    return lambda vector: list(torch._foreach_div(list(vector), safe))


def backtrack_iterates(
    run: CGRun, objective: Callable[[Sequence[torch.Tensor], float], float], enabled: bool
) -> tuple[SavedIterate, float, int]:
    """The chosen iterate, f there, and the evaluations made: walk back from the last saved
    iterate while f decreases, stopping at the first increase (Martens, 2010, §4.6); only the
    last iterate when not ``enabled``. ``objective(x, t)`` is f(w + t·x)."""
    candidates = run.saved if enabled else run.saved[-1:]
    chosen = candidates[-1]
    chosen_loss = objective(chosen.x, 1.0)
    evaluations = 1
    for candidate in reversed(candidates[:-1]):
        loss = objective(candidate.x, 1.0)
        evaluations += 1
        if not loss < chosen_loss:
            break
        chosen, chosen_loss = candidate, loss
    return chosen, chosen_loss, evaluations


def _reduction_ratio(loss: float, new_loss: float, chosen: SavedIterate, damping: float) -> float:
    """ρ = (f(w + p) − f(w)) / (∇fᵀp + ½ pᵀB p); the undamped model change is φ(p) − ½λ‖p‖²."""
    predicted = chosen.model_value - 0.5 * damping * float(norm(chosen.x)) ** 2
    if not predicted < 0 or not math.isfinite(new_loss):
        return -math.inf
    return (new_loss - loss) / predicted
