"""The identity approximation H⁻¹ ≈ s·I: no Hessian-vector products at all."""

from __future__ import annotations

from dataclasses import dataclass

import torch

from hpo_cli.core.hvp import MatVec
from hpo_cli.core.solvers.base import SolveInfo, StatelessSolver, Status
from hpo_cli.core.vectors import TensorList, scale


@dataclass(frozen=True)
class Identity(StatelessSolver):
    """x = s·b. With s = 1 the hypergradient reduces to ∂Lv/∂λ − (∂²Lt/∂λ∂w)ᵀ ∂Lv/∂w, the
    one-step unrolled approximation (Lorraine et al., 2020, Table 1).

    Args:
        scale: the multiple s of the identity.
    """

    scale: float = 1.0

    def __call__(self, matvec: MatVec, b: TensorList) -> tuple[list[torch.Tensor], SolveInfo]:
        info = SolveInfo(
            solver="identity",
            status=Status.APPROXIMATION,
            message=f"H⁻¹ approximated by {self.scale:g}·I",
        )
        return scale(b, self.scale), info
