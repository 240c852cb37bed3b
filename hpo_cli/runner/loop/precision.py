"""``precision``: the forward passes of inner steps and hyper-steps under autocast, as Lightning
users spell it (``32``, ``64``, ``bf16-mixed``, ``16-mixed``).

``dtype`` is the one source of the weights' dtype; ``precision`` says only whether the forward
passes run under ``torch.autocast``. ``32`` and ``64`` are Lightning's names of full precision
(no autocast) and must agree with ``dtype`` (float32, float64); the mixed precisions keep the
weights, λ, every gradient and the solver's arithmetic in float32 (autocast casts the inputs of
matrix products and convolutions, and autograd returns each gradient in its leaf's dtype), so
they need ``dtype=float32``. ``null`` (the default) is ``dtype``'s full precision. Which
precision runs with which ``dtype`` is checked before anything runs
(:func:`hpo_cli.runner.config.validation.precision_problem`).

What runs under autocast: the training loss of every inner step and, with ``bf16-mixed``, the
training and validation losses of every hyper-step (so the Hessian-vector and mixed products and
∂L_v/∂w are differentiated through the low-precision forward). ``16-mixed`` autocasts the inner
steps only, each through a gradient scaler (:meth:`hpo_cli.core.joint.JointOptimizer.inner_step`:
float16's range would flush small gradients to zero); its hyper-steps run in float32, since
scaling L_t would scale H and break the solvers' damping and step sizes, and float16's 10-bit
mantissa would leave little of the products' accuracy. The evaluation rows, the Hessian and
solver-comparison diagnostics and the quality probe stay in ``dtype``.
"""

from __future__ import annotations

from collections.abc import Callable
from typing import ParamSpec, TypeVar

import torch

AUTOCAST_DTYPES = {"bf16-mixed": torch.bfloat16, "16-mixed": torch.float16}
"""The dtype autocast computes the inner steps in, for the mixed precisions."""

HYPER_STEP_PRECISIONS = ("bf16-mixed",)
"""The mixed precisions whose hyper-steps are autocast too."""

P = ParamSpec("P")
T = TypeVar("T")


def in_precision(
    precision: str | None, device: torch.device, compute: Callable[P, T]
) -> Callable[P, T]:
    """``compute`` run under ``torch.autocast`` on ``device`` for a mixed precision, else
    ``compute`` itself."""
    if precision not in AUTOCAST_DTYPES:
        return compute
    dtype = AUTOCAST_DTYPES[precision]

    def computed(*args: P.args, **kwargs: P.kwargs) -> T:
        with torch.autocast(device.type, dtype=dtype):
            return compute(*args, **kwargs)

    return computed


def hyper_step_precision(precision: str | None) -> str | None:
    """The precision a hyper-step's losses are computed in: ``precision`` for those of
    :data:`HYPER_STEP_PRECISIONS`, else full precision (``None``)."""
    return precision if precision in HYPER_STEP_PRECISIONS else None


def gradient_scaler(precision: str | None, device: torch.device) -> torch.amp.GradScaler | None:
    """The inner steps' gradient scaler: one for ``16-mixed`` on ``device``, else ``None``."""
    return torch.amp.GradScaler(device.type) if precision == "16-mixed" else None
