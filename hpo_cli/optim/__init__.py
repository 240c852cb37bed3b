"""Optimisers of the weights that go beyond ``torch.optim``: Hessian-free (Martens, 2010)."""

from hpo_cli.optim.hessian_free import HessianFree, HFStep
from hpo_cli.optim.truncated_cg import CGRun, StopReason, truncated_cg

__all__ = ["CGRun", "HFStep", "HessianFree", "StopReason", "truncated_cg"]
