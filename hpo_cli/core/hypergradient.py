"""Hypergradients by the implicit function theorem (Lorraine, Vicol & Duvenaud, AISTATS 2020).

Sign convention (the only one in hpo-cli). Let w*(λ) minimise the training loss L_t(w, λ), so
∂L_t/∂w (w*(λ), λ) = 0, and let L_v(w, λ) be the validation loss. The implicit function theorem
gives dw*/dλ = −H⁻¹ ∂²L_t/∂w∂λ with H = ∂²L_t/∂w², hence the hypergradient

    dL_v/dλ = ∂L_v/∂λ − (∂²L_t/∂λ∂w)ᵀ H⁻¹ ∂L_v/∂w,

a vector of the same shape as λ. It is the total derivative of the validation loss: descending
along −dL_v/dλ lowers L_v, so it goes straight into ``λ.grad`` for any ``torch.optim`` optimiser.

Shapes: w is a list of tensors (d entries in all), λ another (p entries). ∂L_v/∂w ∈ R^d,
H ∈ R^{d×d}, ∂²L_t/∂λ∂w ∈ R^{d×p}. Neither matrix is formed: H⁻¹ ∂L_v/∂w is solved from
Hessian-vector products (:mod:`hpo_cli.core.solvers`) and the mixed term is one vector-Jacobian
product, both by double backward (:class:`hpo_cli.core.hvp.TrainingCurvature`) or by central
differences of first-order gradients (:mod:`hpo_cli.core.finite_difference`).

Data parallel (:mod:`hpo_cli.core.distributed`): with a process group, each rank's losses are on
its shard of the batches, and ∂L_v/∂w, ∂L_v/∂λ, every product with H (or A) and the mixed term
are averaged over the ranks, which gives the single-process values on the union of the shards;
the solver then runs in lock-step on every rank. Without one, nothing changes.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass

import torch

from hpo_cli.core.distributed import all_reduce_mean_, averaged
from hpo_cli.core.hvp import CurvatureProducts, MatVec, TrainingCurvature
from hpo_cli.core.solvers.base import InverseHVPSolver, SolveInfo, SolverState
from hpo_cli.core.vectors import TensorList, add_, all_finite, norm, scale_


class HypergradientError(RuntimeError):
    """The hypergradient could not be trusted: the solver diverged or a result is not finite.

    Attributes:
        info: the solver's diagnostics.
    """

    def __init__(self, message: str, info: SolveInfo) -> None:
        super().__init__(message)
        self.info = info


@dataclass
class Hypergradient:
    """The result of :func:`hypergradient`.

    Attributes:
        grads: dL_v/dλ, one tensor per hyperparameter, shaped like it.
        solve: the inverse-HVP solver's diagnostics.
        residual: ‖H x − ∂L_v/∂w‖ / ‖∂L_v/∂w‖ of the returned x against the undamped H (one
            extra HVP), or ``None`` when not checked.
        hvps: Hessian-vector products used in all, the residual check included.
        failure: why the result cannot be trusted (divergence, non-finite values), else ``None``.
        solver_state: the solver's state after the solve, to pass to the next one
            (``solver_state=`` of :func:`hypergradient`); ``None`` for a method without one.
    """

    grads: tuple[torch.Tensor, ...]
    solve: SolveInfo
    residual: float | None
    hvps: int
    failure: str | None = None
    solver_state: SolverState | None = None

    @property
    def norm(self) -> float:
        """‖dL_v/dλ‖ over all hyperparameters."""
        return float(norm(self.grads))


def _nonempty(tensors: Sequence[torch.Tensor], name: str) -> list[torch.Tensor]:
    tensors = list(tensors)
    if not tensors:
        raise ValueError(f"hypergradient: {name} is empty")
    if not all(t.requires_grad for t in tensors):
        raise ValueError(f"hypergradient: every tensor in {name} must require grad")
    return tensors


def hypergradient(
    train_loss: torch.Tensor | None,
    val_loss: torch.Tensor,
    params: Sequence[torch.Tensor],
    hparams: Sequence[torch.Tensor],
    solver: InverseHVPSolver,
    *,
    check_residual: bool = True,
    raise_on_failure: bool = True,
    write_grad: bool = False,
    retain_val_graph: bool = False,
    curvature: MatVec | None = None,
    solver_state: SolverState | None = None,
    second_moments: TensorList | None = None,
    products: CurvatureProducts | None = None,
) -> Hypergradient:
    """dL_v/dλ = ∂L_v/∂λ − (∂²L_t/∂λ∂w)ᵀ H⁻¹ ∂L_v/∂w at the current weights.

    The IFT assumes the weights are (near) a minimiser of the training loss; call this after the
    inner optimisation.

    Args:
        train_loss: scalar L_t(w, λ) with its autograd graph (penalties, augmentation included);
            ``None`` when ``products`` are given.
        val_loss: scalar L_v(w, λ) with its graph; λ may enter it (then ∂L_v/∂λ ≠ 0) or not.
        params: the weights w, e.g. ``list(model.parameters())``.
        hparams: the hyperparameters λ (unconstrained leaf tensors).
        solver: approximates H⁻¹ v, e.g. ``Neumann(terms=10)``, ``ConjugateGradient()``,
            ``Identity()`` or ``Exact()``.
        check_residual: spend one more HVP to report ‖Hx − b‖/‖b‖.
        raise_on_failure: raise :class:`HypergradientError` when the solver diverged or the
            result is not finite; otherwise return it with the diagnostics for the caller.
        write_grad: accumulate the result into ``λ.grad`` (as ``backward()`` would), unless it
            failed.
        retain_val_graph: keep ``val_loss``'s graph. By default it is freed once ∂L_v/∂(w, λ)
            is taken, as ``backward()`` frees it, so that the solve does not hold the
            validation activations; keep it to reuse ``val_loss`` in another call, or when
            ``val_loss`` shares part of its graph with ``train_loss`` (one forward pass over both
            batches). ``train_loss``'s graph is kept either way.
        curvature: the matvec v ↦ A v of the matrix the solver inverts in place of H (e.g. the
            Gauss-Newton matrix, :mod:`hpo_cli.core.curvature`); the residual is then against
            A, and ``hvps`` counts A's products. Default: H = ∂²L_t/∂w² of ``train_loss``.
        solver_state: the state the previous solve returned (``result.solver_state``: warm
            starts, λ̂max estimates); default ``solver.init_state()``, a cold solve.
        second_moments: the inner optimiser's √v̂ + ε per weight, shaped like ``params``, for a
            solver with ``reads_second_moments`` (CG's ``preconditioner="adam"``).
        products: H's and the mixed term's products of L_t (e.g. by finite differences);
            default: double backward through ``train_loss``'s gradient.

    Returns:
        A :class:`Hypergradient` with the gradients and the solver's diagnostics.
    """
    params = _nonempty(params, "params")
    hparams = _nonempty(hparams, "hparams")
    if products is None and train_loss is None:
        raise ValueError("hypergradient: give train_loss or products")
    for name, loss in (("train_loss", train_loss), ("val_loss", val_loss)):
        if loss is not None and loss.dim() != 0:
            raise ValueError(f"hypergradient: {name} must be a scalar, got {tuple(loss.shape)}")

    val_grads = torch.autograd.grad(
        val_loss, params + hparams, retain_graph=retain_val_graph, allow_unused=True
    )
    val_grad_params = [
        torch.zeros_like(p) if g is None else g.detach()
        for p, g in zip(params, val_grads[: len(params)], strict=True)
    ]
    direct = val_grads[len(params) :]  # ∂L_v/∂λ, None where λ does not enter L_v
    del val_grads
    all_reduce_mean_(val_grad_params)  # data parallel: the means over the ranks' shards
    direct = [None if g is None else g.detach() for g in direct]
    all_reduce_mean_([g for g in direct if g is not None])
    training = products
    try:
        if training is None:
            training = TrainingCurvature(train_loss, params, hparams)
    except RuntimeError as error:
        if retain_val_graph or "backward through the graph a second time" not in str(error):
            raise
        raise ValueError(
            "hypergradient: train_loss and val_loss share part of their autograd graph, which "
            "was freed with val_loss's; pass retain_val_graph=True"
        ) from error
    matvec = averaged(training.hvp if curvature is None else curvature)
    matvecs = [0]

    def counted(vector: TensorList) -> list[torch.Tensor]:
        matvecs[0] += 1
        return matvec(vector)

    state = solver.init_state() if solver_state is None else solver_state
    inverse_hvp, info, state = solver.solve(
        counted, val_grad_params, state, second_moments=second_moments
    )
    residual = None
    if check_residual and not info.diverged:
        b_norm = float(norm(val_grad_params))
        mismatch = counted(inverse_hvp)
        add_(mismatch, val_grad_params, alpha=-1.0)
        residual = float(norm(mismatch)) / b_norm if b_norm > 0 else 0.0
        del mismatch
    mixed = training.mixed_vjp(inverse_hvp)  # (∂²L_t/∂λ∂w)ᵀ x
    all_reduce_mean_(mixed)
    scale_(mixed, -1.0)
    for grad, partial in zip(mixed, direct, strict=True):
        if partial is not None:
            grad.add_(partial)
    grads = tuple(mixed)

    failure = None
    if info.diverged:
        failure = f"{info.solver} solver diverged: {info.message}"
    elif not all_finite(grads):
        failure = f"the hypergradient is not finite ({info.solver}: {info.message})"
    if failure and raise_on_failure:
        raise HypergradientError(failure, info)
    result = Hypergradient(grads, info, residual, matvecs[0], failure, state)
    if write_grad and failure is None:
        for hparam, grad in zip(hparams, grads, strict=True):
            hparam.grad = grad.clone() if hparam.grad is None else hparam.grad + grad
    return result
