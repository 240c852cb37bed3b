"""``precision``: the forward passes of inner steps and hyper-steps under autocast, as Lightning
users spell it (``32``, ``64``, ``bf16-mixed``, ``16-mixed``).

``dtype`` is the one source of the weights' dtype; ``precision`` says only whether the forward
passes run under ``torch.autocast``. ``32`` and ``64`` are Lightning's names of full precision
(no autocast) and must agree with ``dtype`` (float32, float64); the mixed precisions keep the
weights, λ, every gradient and the solver's arithmetic in float32 (autocast casts the inputs of
matrix products and convolutions, and autograd returns each gradient in its leaf's dtype), so
they need ``dtype=float32``. ``null`` (the default) is ``dtype``'s full precision.

What runs under autocast: the training loss of every inner step, and the training and
validation losses of every hyper-step (so the Hessian-vector and mixed products and ∂L_v/∂w are
differentiated through the low-precision forward). The evaluation rows, the Hessian and
solver-comparison diagnostics and the quality probe stay in ``dtype``.
"""

from __future__ import annotations

from collections.abc import Callable
from typing import ParamSpec, TypeVar

import torch

PRECISIONS = ("32", "64", "bf16-mixed", "16-mixed")
"""The values of ``precision`` besides ``null``."""

WEIGHT_DTYPES = {"32": "float32", "64": "float64", "bf16-mixed": "float32", "16-mixed": "float32"}
"""The ``dtype`` each precision needs."""

AUTOCAST_DTYPES = {"bf16-mixed": torch.bfloat16, "16-mixed": torch.float16}
"""The dtype autocast computes in, for the mixed precisions."""

P = ParamSpec("P")
T = TypeVar("T")


def precision_problem(precision: str | None, dtype: str) -> str | None:
    """Why ``precision`` cannot run with ``dtype`` (one line), else ``None``."""
    if precision is None:
        return None
    if precision not in PRECISIONS:
        return f"precision={precision} is invalid: null or one of {', '.join(PRECISIONS)}"
    if precision == "16-mixed":
        return (
            "precision=16-mixed is not supported yet: float16 needs a gradient scaler through "
            "the inner steps and the hyper-steps' products; use precision=bf16-mixed"
        )
    needed = WEIGHT_DTYPES[precision]
    if dtype != needed:
        return (
            f"precision={precision} contradicts dtype={dtype}: precision={precision} needs "
            f"dtype={needed} (dtype is the weights' dtype; precision adds autocast only)"
        )
    return None


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
