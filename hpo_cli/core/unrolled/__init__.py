"""Unrolled differentiation: differentiable inner-optimiser updates, the hypergradient through K
of them, and the ``unrolled`` solver of ``hpo-run``."""

from hpo_cli.core.unrolled.solver import Unrolled
from hpo_cli.core.unrolled.unroll import evaluate_at, unroll, unrolled_hypergradient
from hpo_cli.core.unrolled.updates import (
    AdamUpdate,
    InnerUpdate,
    RMSpropUpdate,
    SGDUpdate,
    state_of,
    update_for,
)

__all__ = [
    "AdamUpdate",
    "InnerUpdate",
    "RMSpropUpdate",
    "SGDUpdate",
    "Unrolled",
    "evaluate_at",
    "state_of",
    "unroll",
    "unrolled_hypergradient",
    "update_for",
]
