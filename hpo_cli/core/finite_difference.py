"""Hessian-vector and mixed products by central differences of first-order gradients: no double
backward, so they work with kernels that have none (flash or memory-efficient attention, a
``torch.autograd.Function`` marked ``@once_differentiable``) and with gradient hooks (DDP).

For a training loss L_t(w, λ), g_w = ∂L_t/∂w and g_λ = ∂L_t/∂λ, a vector v (shaped like w) with
unit direction u = v/‖v‖ and a step length h > 0:

    H v                ≈ ‖v‖ (g_w(w + h u) − g_w(w − h u)) / 2h,
    (∂²L_t/∂λ∂w)ᵀ v    ≈ ‖v‖ (g_λ(w + h u) − g_λ(w − h u)) / 2h,

each from two forward and two first-order backward passes (the brief's ε is h/‖v‖).

Step length. Taylor's expansion g(w ± h u) = g ± h H u + (h²/2) T[u,u] ± (h³/6) Q[u,u,u] + O(h⁴)
(T, Q the third and fourth derivatives) makes the central difference H u + (h²/6) Q[u,u,u] +
O(h⁴): the even terms cancel, a truncation error O(h²). Rounding adds about ε_m C / h, with ε_m
the dtype's machine epsilon and C the scale of the computed gradients plus ‖H‖‖w‖, the error of
storing w ± h u itself (each entry is rounded relative to |w_i|). The sum (h²/6)‖Q‖ + ε_m C/h is
smallest at h* = (3 ε_m C/‖Q‖)^{1/3} ∝ ε_m^{1/3}, where the error is ∝ ε_m^{2/3}. With C/‖Q‖
unknown, the weights set the scale:

    h = ε_m^{1/3} (1 + ‖w‖),

a relative perturbation ε_m^{1/3} of the weights (4.9e-3 in float32, 6.1e-6 in float64; the
``1 +`` keeps the step from vanishing at w ≈ 0). Forward differences (g(w + h u) − g(w))/h would
keep the O(h) term, whence the classic √ε_m rule and an error ∝ √ε_m; central differences cost
one more gradient per product and gain ε_m^{2/3} (≈ 2e-5 in float32, ≈ 4e-11 in float64 for
unit constants). The products are exactly homogeneous in v (‖v‖ factors out) and linear up to
the same O(h²), so CG and Neumann see a matrix that is symmetric and linear to that accuracy.

Every gradient is taken at the same random state (dropout masks, augmentation) and the model's
buffers (BatchNorm's running statistics) are put back after each, so that the differences see
the loss's dependence on w only; the weights are restored bit for bit. No host synchronisation:
‖w‖, ‖v‖ and h stay tensors on the weights' device.
"""

from __future__ import annotations

import contextlib
from collections.abc import Callable, Iterator, Sequence

import torch

from hpo_cli.core.vectors import TensorList, add, clone, norm


def step_length(params: TensorList) -> torch.Tensor:
    """h = ε_m^{1/3} (1 + ‖w‖) for central differences at w = ``params`` (a 0-dim tensor on
    their device; ε_m the machine epsilon of their dtype). See the module docstring."""
    epsilon = torch.finfo(params[0].dtype).eps
    return epsilon ** (1.0 / 3.0) * (1.0 + norm([p.detach() for p in params]))


class FiniteDifferenceCurvature:
    """H v and (∂²L_t/∂λ∂w)ᵀ x by central differences of ∂L_t/∂(w, λ) (module docstring).

    The same interface as :class:`hpo_cli.core.hvp.TrainingCurvature`, built from a closure that
    evaluates L_t instead of one loss tensor with its graph.

    Args:
        training_loss: () ↦ scalar L_t(w, λ) at the current values of ``params`` (the same
            mini-batch at every call), with a first-order graph to ``params`` and ``hparams``.
        params: the weights w (leaf tensors); perturbed in place during a product and restored
            bit for bit.
        hparams: the hyperparameters λ (may be empty when only ``hvp`` is used).
        buffers: tensors the loss may update (a model's ``buffers()``), put back after every
            evaluation.

    Attributes:
        hvp_count: how many Hessian-vector products have been evaluated.
        step: the step length h, a 0-dim tensor.
    """

    def __init__(
        self,
        training_loss: Callable[[], torch.Tensor],
        params: Sequence[torch.Tensor],
        hparams: Sequence[torch.Tensor] = (),
        buffers: Sequence[torch.Tensor] = (),
    ) -> None:
        self.training_loss = training_loss
        self.params = list(params)
        self.hparams = list(hparams)
        self.buffers = list(buffers)
        self._weights = clone(self.params)
        self._buffer_values = clone(self.buffers)
        self.step = step_length(self.params)
        device = self.params[0].device
        self._devices = [device] if device.type == "cuda" else []
        self._cpu_rng = torch.get_rng_state()
        self._cuda_rng = torch.cuda.get_rng_state(device) if self._devices else None
        self.hvp_count = 0

    def hvp(self, vector: TensorList) -> list[torch.Tensor]:
        """H v with H = ∂²L_t/∂w²; ``vector`` and the result are shaped like ``params``."""
        self.hvp_count += 1
        return self._central_difference(vector, self.params)

    def mixed_vjp(self, vector: TensorList) -> list[torch.Tensor]:
        """(∂²L_t/∂λ∂w)ᵀ x: the change of ∂L_t/∂λ along x; shaped like ``hparams``."""
        if not self.hparams:
            return []
        return self._central_difference(vector, self.hparams)

    def _central_difference(
        self, vector: TensorList, inputs: Sequence[torch.Tensor]
    ) -> list[torch.Tensor]:
        """‖v‖ (∂L_t/∂inputs (w + h u) − ∂L_t/∂inputs (w − h u)) / 2h, u = v/‖v‖ (0 for v = 0)."""
        vector = [v.detach() for v in vector]
        length = norm(vector)
        tiny = torch.finfo(length.dtype).tiny
        unit = [v / length.clamp_min(tiny) for v in vector]  # 0 for v = 0, never 0·∞
        displacement = [u * self.step for u in unit]  # h u
        forward = self._gradient_at(displacement, inputs, sign=1.0)
        backward = self._gradient_at(displacement, inputs, sign=-1.0)
        difference = add(forward, backward, alpha=-1.0)
        return [d * (length / (2 * self.step)) for d in difference]

    def _gradient_at(
        self, displacement: TensorList, inputs: Sequence[torch.Tensor], sign: float
    ) -> list[torch.Tensor]:
        """∂L_t/∂inputs at w + sign·displacement, detached; the weights and buffers put back."""
        with self._perturbed(displacement, sign), self._same_randomness():
            loss = self.training_loss()
            grads = torch.autograd.grad(
                loss, list(inputs), allow_unused=True, materialize_grads=True
            )
        return [g.detach() for g in grads]

    @contextlib.contextmanager
    def _perturbed(self, displacement: TensorList, sign: float) -> Iterator[None]:
        # Through .data: the weights' version counters stay as they are, so graphs built at w
        # before this product (the validation loss's) are not invalidated by a change undone
        # here bit for bit.
        data = [p.data for p in self.params]
        torch._foreach_add_(data, list(displacement), alpha=sign)
        try:
            yield
        finally:
            torch._foreach_copy_(data, self._weights)
            if self.buffers:
                torch._foreach_copy_([b.data for b in self.buffers], self._buffer_values)

    @contextlib.contextmanager
    def _same_randomness(self) -> Iterator[None]:
        with torch.random.fork_rng(devices=self._devices):
            torch.set_rng_state(self._cpu_rng)
            if self._cuda_rng is not None:
                torch.cuda.set_rng_state(self._cuda_rng, self._devices[0])
            yield
