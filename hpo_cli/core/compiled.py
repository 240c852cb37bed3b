"""A compiled inner step: the training loss and the optimiser's step through ``torch.compile``.

As PyTorch documents it for a plain loop: the function that computes L_t(w, λ) on a mini-batch
is compiled (:func:`compiled`: its forward and, through AOTAutograd, its backward), and so is the
optimiser's ``step()`` (:class:`CompiledOptimizerStep`); ``zero_grad`` and ``backward`` stay
calls of their own between them, so a data-parallel all-reduce of the gradients fits where it
always was. Each is compiled on its first call (Inductor; on the CPU that needs a C++ compiler,
:func:`compiler_problem`) and reused while the shapes, dtypes and the optimiser stay the same.

The maths is the eager step's: w ← step(w, ∇_w L_t(w, λ)), with the same random draws
(``fallback_random``: Inductor calls ATen's generators, as eager code does). Results differ only
by rounding (reordered sums; the optimiser's bias corrections in float64, as eager's Python
floats: the step counters are made in float64, see :class:`CompiledOptimizerStep`).

Not compiled: optimisers that evaluate the loss inside ``step`` (L-BFGS, Hessian-free), which
need a closure (:func:`hpo_cli.core.joint.check_compilable`).
"""

from __future__ import annotations

import sys
from collections.abc import Callable
from typing import ParamSpec, TypeVar

import torch

P = ParamSpec("P")
T = TypeVar("T")

OPTIONS = {"fallback_random": True}
"""Inductor's options for both compiled functions: random numbers (dropout masks, augmentation)
from ATen's generators, so that a compiled run draws what the eager run draws."""


def compiled(function: Callable[P, T]) -> Callable[P, T]:
    """``function`` through ``torch.compile`` (Inductor, ``dynamic=False``: one compilation per
    set of shapes, here the mini-batch's), compiled on its first call."""
    return torch.compile(function, dynamic=False, options=OPTIONS)


class CompiledOptimizerStep:
    """``optimizer.step()`` through ``torch.compile``, compiled on the first call.

    torch makes an optimiser's step counter (Adam's, RMSprop's t) a tensor of the default dtype
    (float32) and, eagerly, reads it back as a Python float, so bias corrections such as
    1 − β₁ᵗ are computed in double; compiled, they would be computed in the counter's dtype. The
    counters are therefore made (under a float64 default dtype) and kept in float64: in a
    float64 run the compiled step then equals the eager one to rounding (a float32 counter
    changes each step by float32's rounding, ~1e-7 of its size). Counters restored in float32
    (a checkpoint of an eager run, loaded before or after the first call) are converted before
    the next call; their values are whole numbers, exact in both.

    Args:
        optimizer: any ``torch.optim`` optimiser that needs no closure
            (:func:`hpo_cli.core.joint.check_compilable`).
    """

    def __init__(self, optimizer: torch.optim.Optimizer) -> None:
        self.optimizer = optimizer
        self._step = compiled(optimizer.step)
        self._counters_checked = False
        optimizer.register_load_state_dict_post_hook(self._counters_loaded)

    def _counters_loaded(self, optimizer: torch.optim.Optimizer) -> None:
        self._counters_checked = False

    def __call__(self) -> None:
        if not self._counters_checked:
            for state in self.optimizer.state.values():
                step = state.get("step")
                if isinstance(step, torch.Tensor) and step.dtype != torch.float64:
                    state["step"] = step.to(torch.float64)
            self._counters_checked = True
        default = torch.get_default_dtype()
        torch.set_default_dtype(torch.float64)
        try:
            self._step()
        finally:
            torch.set_default_dtype(default)


def is_compile_error(error: BaseException) -> bool:
    """Whether ``error`` is a failed compilation (Inductor's errors, a failed C++ compilation
    among them), raised on the first call of a compiled function; ``torch._dynamo`` is only
    looked at once something imported it (its import takes seconds)."""
    dynamo = sys.modules.get("torch._dynamo.exc")
    return dynamo is not None and isinstance(error, dynamo.BackendCompilerFailed)


def compiler_problem(device: torch.device) -> str | None:
    """Why Inductor cannot compile for ``device`` (one line), else ``None``: on the CPU, no
    working C++ compiler among ``torch._inductor.config.cpp.cxx`` (the ``CXX`` variable, else
    g++) answers ``--version``."""
    if device.type != "cpu":
        return None
    from torch._inductor import cpp_builder, exc

    try:
        cpp_builder.get_cpp_compiler()
    except exc.InvalidCxxCompiler as error:
        return f"{error} (torch.compile's CPU code is C++: install g++ or set CXX)"
    return None
