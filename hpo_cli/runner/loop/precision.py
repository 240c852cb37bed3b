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

What runs under autocast: the training loss of every inner step, and the training and
validation losses of every hyper-step (so the Hessian-vector and mixed products and ∂L_v/∂w are
differentiated through the low-precision forward). The evaluation rows, the Hessian and
solver-comparison diagnostics and the quality probe stay in ``dtype``.
"""

from __future__ import annotations

from collections.abc import Callable
from typing import ParamSpec, TypeVar

import torch

AUTOCAST_DTYPES = {"bf16-mixed": torch.bfloat16, "16-mixed": torch.float16}
"""The dtype autocast computes in, for the mixed precisions."""

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
