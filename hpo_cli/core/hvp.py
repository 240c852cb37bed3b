"""Hessian-vector, Gauss-Newton-vector and mixed products of a scalar loss, without forming any
matrix; Tikhonov damping of any such product (:func:`damped`).

For a training loss L_t(w, λ) with weights w (d entries) and hyperparameters λ (p entries):

* ``hvp(v)      = H v``,             H = ∂²L_t/∂w²        (d×d, symmetric), v in R^d;
* ``mixed_vjp(x) = (∂²L_t/∂λ∂w)ᵀ x`` = ∂/∂λ <∂L_t/∂w, x>  (a vector in R^p),   x in R^d.

Both are reverse-mode products through the graph of g = ∂L_t/∂w, built once with
``create_graph=True`` and reused (``retain_graph=True``) by every product: one HVP then costs
about one backward pass, instead of a forward, a backward and a double-backward when the
gradient graph is rebuilt for each product.

A loss whose gradient has no derivative of its own (a ``torch.autograd.Function`` marked
``@once_differentiable``, a kernel without double backward) raises :class:`NoSecondDerivative`
instead of a traceback, or, worse, of products that silently leave that part out (PyTorch's
``allow_unused`` reads such a gradient as constant); central differences of first-order gradients
(:mod:`hpo_cli.core.finite_difference`) make the same products without double backward.

Vectors are lists of tensors shaped like ``params`` (see :mod:`hpo_cli.core.vectors`).
"""

from __future__ import annotations

from collections.abc import Callable, Sequence
from typing import Protocol

import torch

from hpo_cli.core.vectors import TensorList, add, flatten, unflatten

MatVec = Callable[[TensorList], list[torch.Tensor]]


class CurvatureProducts(Protocol):
    """The two products of a training loss an IFT hypergradient needs (:class:`TrainingCurvature`
    by double backward, :class:`hpo_cli.core.finite_difference.FiniteDifferenceCurvature` by
    central differences of gradients)."""

    hvp_count: int

    def hvp(self, vector: TensorList) -> list[torch.Tensor]:
        """H v, H = ∂²L_t/∂w²; ``vector`` and the result shaped like the weights."""
        ...

    def mixed_vjp(self, vector: TensorList) -> list[torch.Tensor]:
        """(∂²L_t/∂λ∂w)ᵀ x, shaped like the hyperparameters."""
        ...


PRODUCTS = ("autograd", "finite_difference")
"""How an IFT hypergradient's products with H and ∂²L_t/∂λ∂w are made: autograd's double backward
(:class:`TrainingCurvature`) or central differences of first-order gradients
(:mod:`hpo_cli.core.finite_difference`). The one spelling of the choice."""


class NoSecondDerivative(RuntimeError):
    """The training loss's gradient cannot be differentiated by autograd (double backward)."""


MISSING_DOUBLE_BACKWARD = "not implemented"
"""What autograd's error says when an operation's backward has no derivative of its own."""


def passes_once_differentiable(tensors: Sequence[torch.Tensor]) -> bool:
    """Whether the graphs of ``tensors`` hold a node autograd cannot differentiate (the ``Error``
    node a ``@once_differentiable`` backward leaves). A walk over the graph's nodes, no tensor
    read (no host synchronisation)."""
    stack = [t.grad_fn for t in tensors if t.grad_fn is not None]
    seen = {id(node) for node in stack}
    while stack:
        node = stack.pop()
        if type(node).__name__ == "Error":
            return True
        for parent, _ in node.next_functions:
            if parent is not None and id(parent) not in seen:
                seen.add(id(parent))
                stack.append(parent)
    return False


class TrainingCurvature:
    """Hessian-vector and mixed second-derivative products of one training loss.

    Args:
        loss: scalar training loss L_t with an autograd graph reaching ``params`` (and
            ``hparams``, if mixed products are wanted).
        params: the weights w, the variables of the inner problem.
        hparams: the hyperparameters λ (may be empty when only ``hvp`` is used).

    Attributes:
        hvp_count: how many Hessian-vector products have been evaluated.
    """

    def __init__(
        self,
        loss: torch.Tensor,
        params: Sequence[torch.Tensor],
        hparams: Sequence[torch.Tensor] = (),
    ) -> None:
        if loss.dim() != 0:
            raise ValueError(f"the training loss must be a scalar, got shape {tuple(loss.shape)}")
        self.params = list(params)
        self.hparams = list(hparams)
        grads = torch.autograd.grad(
            loss, self.params, create_graph=True, allow_unused=True, materialize_grads=True
        )
        self.gradient = list(grads)
        if passes_once_differentiable(self.gradient):
            raise NoSecondDerivative(
                "the training loss has no second derivative: its backward passes through a "
                "function marked @once_differentiable, whose double backward autograd cannot take"
            )
        # Components of g that do not depend on any variable (e.g. the gradient of a loss that is
        # linear in a weight) contribute nothing to second derivatives and have no graph.
        self._differentiable = [i for i, g in enumerate(grads) if g.requires_grad]
        self.hvp_count = 0

    def _backward_through_gradient(
        self, vector: TensorList, inputs: Sequence[torch.Tensor]
    ) -> list[torch.Tensor]:
        """∂/∂inputs <g(w, λ), vector>, keeping the gradient graph for later products."""
        if not self._differentiable or not inputs:
            return [torch.zeros_like(x) for x in inputs]
        outputs = [self.gradient[i] for i in self._differentiable]
        cotangents = [vector[i].detach() for i in self._differentiable]
        try:
            products = torch.autograd.grad(
                outputs,
                inputs,
                grad_outputs=cotangents,
                retain_graph=True,
                allow_unused=True,
                materialize_grads=True,
            )
        except RuntimeError as error:
            if MISSING_DOUBLE_BACKWARD not in str(error):
                raise
            first = str(error).strip().splitlines()[0]
            raise NoSecondDerivative(
                f"the training loss has no second derivative (autograd: {first})"
            ) from error
        return [p.detach() for p in products]

    def hvp(self, vector: TensorList) -> list[torch.Tensor]:
        """H v with H = ∂²L_t/∂w²; ``vector`` and the result are shaped like ``params``."""
        self.hvp_count += 1
        return self._backward_through_gradient(vector, self.params)

    def mixed_vjp(self, vector: TensorList) -> list[torch.Tensor]:
        """(∂²L_t/∂λ∂w)ᵀ x: the change of <∂L_t/∂w, x> with λ; shaped like ``hparams``."""
        return self._backward_through_gradient(vector, self.hparams)


class GaussNewtonCurvature:
    """Generalised Gauss-Newton products G v = Jᵀ H_z J v of a loss ℓ(z) of network outputs z(w).

    J = ∂z/∂w (outputs × d) and H_z = ∂²ℓ/∂z² (outputs × outputs). G is positive semi-definite
    whenever ℓ is convex in z (squared error, cross-entropy), unlike the Hessian, which adds the
    term Σ_i (∂ℓ/∂z_i) ∂²z_i/∂w². Only the loss's dependence through ``outputs`` is counted: a
    penalty on w added to the loss contributes nothing here (add its curvature, or damping).

    Each product is three reverse passes over graphs built once: J v by the double-vjp trick
    (J v = ∂/∂u <Jᵀu, v> for a dummy u), H_z (J v) by a Hessian-vector product in output space,
    and Jᵀ(·) by a vector-Jacobian product.

    Args:
        outputs: the network outputs z (any shape) with their graph to ``params``.
        loss: scalar ℓ computed from ``outputs``.
        params: the weights w.

    Attributes:
        gvp_count: how many products have been evaluated.
    """

    def __init__(
        self, outputs: torch.Tensor, loss: torch.Tensor, params: Sequence[torch.Tensor]
    ) -> None:
        self.params = list(params)
        self.outputs = outputs
        self._output_gradient = torch.autograd.grad(loss, outputs, create_graph=True)[0]
        self._dummy = torch.zeros_like(outputs, requires_grad=True)
        self._transpose_product = torch.autograd.grad(
            outputs,
            self.params,
            grad_outputs=self._dummy,
            create_graph=True,
            allow_unused=True,
            materialize_grads=True,
        )
        self.gvp_count = 0

    def jvp(self, vector: TensorList) -> torch.Tensor:
        """J v, shaped like ``outputs``."""
        (product,) = torch.autograd.grad(
            self._transpose_product,
            self._dummy,
            grad_outputs=[v.detach() for v in vector],
            retain_graph=True,
            allow_unused=True,
            materialize_grads=True,
        )
        return product.detach()

    def gvp(self, vector: TensorList) -> list[torch.Tensor]:
        """G v = Jᵀ H_z J v, shaped like ``params``."""
        self.gvp_count += 1
        output_direction = self.jvp(vector)
        if self._output_gradient.requires_grad:
            (curved,) = torch.autograd.grad(
                self._output_gradient,
                self.outputs,
                grad_outputs=output_direction,
                retain_graph=True,
            )
        else:  # ℓ linear in z: H_z = 0
            curved = torch.zeros_like(output_direction)
        products = torch.autograd.grad(
            self.outputs,
            self.params,
            grad_outputs=curved.detach(),
            retain_graph=True,
            allow_unused=True,
            materialize_grads=True,
        )
        return [p.detach() for p in products]


def damped(matvec: MatVec, damping: float) -> MatVec:
    """v ↦ (A + μI) v for μ = ``damping`` ≥ 0 (Tikhonov damping): A's spectrum shifted up by μ.

    The one place damping is written; every solver that takes a ``damping`` (CG, Neumann, the
    exact solve) and the Hessian-free optimiser apply it through this. μ = 0 returns ``matvec``
    itself, so undamped products cost nothing extra.
    """
    if damping == 0:
        return matvec
    return lambda vector: add(matvec(vector), vector, alpha=damping)


def dense_matrix(matvec: MatVec, like: TensorList) -> torch.Tensor:
    """The d×d matrix A of a linear map v ↦ A v on vectors shaped like ``like``, one column per
    product (columns in parameter order, each tensor flattened row-major).

    Meant for reference solves and analysis of models up to a few thousand weights: it costs d
    products and d² memory.
    """
    d = sum(x.numel() for x in like)
    identity = torch.eye(d, dtype=like[0].dtype, device=like[0].device)
    columns = [flatten(matvec(unflatten(identity[j], like))) for j in range(d)]
    return torch.stack(columns, dim=1)
