"""Which hyper-steps' inverse-HVP solves are *doubtful*, their count over a run, and the one
warning a run gives when most of them are.

The rule (:func:`doubtful`), on a solve's status (:class:`hpo_cli.core.solvers.base.Status`) and
its residual r = ‖Hx − b‖/‖b‖ (``solver_residual`` in metrics.csv):

- ``diverged``: x is garbage (the hyper-step is skipped, or the run stops: ``on_failure``);
- ``negative_curvature``: CG met pᵀ(H + μI)p ≤ 0 and stopped there; the matrix is not positive
  definite along p, so the IFT's linear system does not describe a minimum, and a stop at
  iteration 0 returns x = 0: the hypergradient is its direct term alone;
- ``unstable``: Neumann's ρ(I − αH) ≥ 1; the truncated sum has not blown up yet, but more terms
  would not converge;
- any other status with r > 1 (:data:`RESIDUAL_LIMIT`), ``max_iterations`` above all: x = 0 has
  r = 1 exactly, so such an x fits the system worse than no solve at all (dropping the indirect
  term);

and never ``converged`` (the tolerance was met, or the solve is direct) nor ``approximation``
(identity, unrolled: a fixed approximation that was chosen). A short Neumann series stopping at
``max_iterations`` with r < 1 is the short-horizon approximation it is designed to be (r ≈ 0.6
on the default experiment with terms=4), not a doubtful solve; neither is a status of unknown
residual (``solver.check_residual`` off) other than the three above.

A run's solver health (:func:`summary`, summary.json's ``solver_health``) is ``doubtful`` when
more than half (:data:`DOUBTFUL_FRACTION`) of its hyper-steps are, else ``ok`` (``None``
without hyper-steps). Such a run still ends ``completed``: its λ was tuned by hypergradients
that may point anywhere, which the closing block, summary.json and one warning say; a run
whose hyper-steps fail outright already fails through ``on_failure`` and
``max_skipped_fraction``.

The warning (:func:`warning_due`) is given once per run: at the first hyper-step after which at
least :data:`WARN_AFTER` hyper-steps are counted and more than half are doubtful (so a long run
says so early, while it can still be stopped), or else at the end of a run whose health is
``doubtful`` (a run shorter than :data:`WARN_AFTER` hyper-steps). The counts live in a plain
dict carried by :class:`hpo_cli.runner.loop.progress.Progress` (``solves``), so every checkpoint
holds them and a resumed run counts, and warns, as an uninterrupted one does.
"""

from __future__ import annotations

import math
import statistics
from typing import Any

from hpo_cli.core.solvers.base import Status

DOUBTFUL_STATUSES = (Status.DIVERGED, Status.NEGATIVE_CURVATURE, Status.UNSTABLE)
"""Statuses doubtful whatever the residual."""
TRUSTED_STATUSES = (Status.CONVERGED, Status.APPROXIMATION)
"""Statuses never doubtful."""
RESIDUAL_LIMIT = 1.0
"""Above it, any other status is doubtful: x = 0 has residual 1."""
DOUBTFUL_FRACTION = 0.5
"""A run is ``doubtful`` when more than this fraction of its hyper-steps are."""
WARN_AFTER = 5
"""Hyper-steps counted before the warning may be given during the run."""
ADVICE = (
    "try solver.damping=0.1 (or larger), solver.curvature=ggn, or with solver=neumann a smaller "
    "solver.alpha or fewer solver.terms; each evaluation's solver_status and solver_residual "
    "are in metrics.csv"
)


def initial_counts() -> dict[str, Any]:
    """No hyper-step yet: hyper-steps by status, doubtful ones by status, every known
    residual (in order), and whether the warning was given."""
    return {"statuses": {}, "doubtful": {}, "residuals": [], "warned": False}


def doubtful(status: str, residual: float | None) -> bool:
    """Whether a solve is doubtful by the module docstring's rule."""
    if status in DOUBTFUL_STATUSES:
        return True
    if status in TRUSTED_STATUSES or residual is None:
        return False
    return not residual <= RESIDUAL_LIMIT  # a NaN residual is doubtful too


def record(counts: dict[str, Any], status: str, residual: float | None) -> None:
    """Count one hyper-step's solve into ``counts`` (in place)."""
    counts["statuses"][status] = counts["statuses"].get(status, 0) + 1
    if doubtful(status, residual):
        counts["doubtful"][status] = counts["doubtful"].get(status, 0) + 1
    if residual is not None:
        counts["residuals"].append(float(residual))


def _mostly_doubtful(steps: int, doubtful_steps: int) -> bool:
    return steps > 0 and doubtful_steps > DOUBTFUL_FRACTION * steps


def summary(counts: dict[str, Any]) -> dict[str, Any]:
    """summary.json's view: ``health`` (``doubtful``, ``ok`` or ``None`` without hyper-steps),
    ``hyper_steps``, ``statuses`` and ``doubtful`` (counts by status), and the residual's
    ``median`` and ``max`` over the hyper-steps that report one (``None`` when none does)."""
    steps = sum(counts["statuses"].values())
    doubtful_steps = sum(counts["doubtful"].values())
    residuals = [value for value in counts["residuals"] if not math.isnan(value)]
    health = None
    if steps:
        health = "doubtful" if _mostly_doubtful(steps, doubtful_steps) else "ok"
    return {
        "health": health,
        "hyper_steps": steps,
        "statuses": dict(sorted(counts["statuses"].items())),
        "doubtful": dict(sorted(counts["doubtful"].items())),
        "residual": {
            "median": statistics.median(residuals) if residuals else None,
            "max": max(residuals) if residuals else None,
        },
    }


def describe(counts: dict[str, int]) -> str:
    """``25 negative_curvature, 5 max_iterations``: most frequent first."""
    ranked = sorted(counts.items(), key=lambda item: (-item[1], item[0]))
    return ", ".join(f"{count} {status}" for status, count in ranked)


def warning_text(counts: dict[str, Any]) -> str:
    """The warning: how many hyper-steps are doubtful and why, the median residual, what to
    try."""
    view = summary(counts)
    median = view["residual"]["median"]
    residual = "unknown" if median is None else f"{median:.3g}"
    return (
        f"solver: {sum(view['doubtful'].values())} of {view['hyper_steps']} hyper-steps are "
        f"doubtful ({describe(view['doubtful'])}), median ‖Hx − b‖/‖b‖ {residual} (x = 0 has "
        f"1): their hypergradients may point anywhere; {ADVICE}"
    )


def warning_due(counts: dict[str, Any], *, final: bool = False) -> str | None:
    """The warning's text when it is due now (marking it given in ``counts``), else ``None``:
    during the run (``final=False``) once :data:`WARN_AFTER` hyper-steps are counted, at the end
    (``final=True``) whatever their number; given at most once per run."""
    steps = sum(counts["statuses"].values())
    if counts["warned"] or (steps < WARN_AFTER and not final):
        return None
    if not _mostly_doubtful(steps, sum(counts["doubtful"].values())):
        return None
    counts["warned"] = True
    return warning_text(counts)
