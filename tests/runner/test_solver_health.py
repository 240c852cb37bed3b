"""Solver failures are loud and counted: the doubtful rule, the counts by status in summary.json
and the closing block, the one warning (its text, once, mid-run or at the end), a doubtful run
still ``completed``, counts that survive a resume exactly, and solver.png's status markers."""

from __future__ import annotations

import json
import logging

import matplotlib.pyplot as plt
import pytest
import torch

from hpo_cli.core.solvers.base import Status
from hpo_cli.runner.loop import solver_health
from hpo_cli.runner.loop.solver_health import doubtful, initial_counts, record, warning_due
from hpo_cli.runner.report import plots
from tests.support.tiny_runs import interrupt_at, run

CG = ["solver=cg", "solver.curvature=hessian", "solver.damping=0.0"]
"""On the tiny run, undamped CG on H (not solver=cg's defaults) meets negative curvature at every
hyper-step (‖Hx − b‖/‖b‖ about 2)."""
ADVICE = (
    "their hypergradients may point anywhere; try solver.damping=0.1 (or larger), "
    "solver.curvature=ggn, or with solver=neumann a smaller solver.alpha or fewer solver.terms; "
    "each evaluation's solver_status and solver_residual are in metrics.csv"
)


def summary_of(run_dir):
    return json.loads((run_dir / "summary.json").read_text())


def solver_warnings(caplog) -> list[str]:
    return [r.getMessage() for r in caplog.records if "hyper-steps are doubtful" in r.getMessage()]


@pytest.mark.parametrize(
    ("status", "residual", "expected"),
    [
        (Status.DIVERGED, None, True),
        (Status.NEGATIVE_CURVATURE, 0.5, True),  # the matrix is indefinite whatever r is
        (Status.NEGATIVE_CURVATURE, None, True),
        (Status.UNSTABLE, 0.2, True),
        (Status.MAX_ITERATIONS, 1.2, True),  # worse than x = 0
        (Status.MAX_ITERATIONS, float("nan"), True),
        (Status.MAX_ITERATIONS, 1.0, False),  # as good as x = 0: the limit itself is not
        (Status.MAX_ITERATIONS, 0.6, False),  # a short Neumann series, by design
        (Status.MAX_ITERATIONS, None, False),  # residual not checked: nothing to go by
        (Status.CONVERGED, 3.0, False),
        (Status.APPROXIMATION, 2.2, False),  # identity: a chosen approximation
        ("a_custom_status", 1.5, True),
    ],
)
def test_the_doubtful_rule(status, residual, expected):
    assert doubtful(status, residual) is expected


def test_the_warning_is_given_once_after_warn_after_steps_or_at_the_end():
    counts = initial_counts()
    for residual in (6.0, 2.0, 18.0, 4.0):
        record(counts, Status.NEGATIVE_CURVATURE, residual)
        assert warning_due(counts) is None  # fewer than WARN_AFTER = 5 hyper-steps
    record(counts, Status.MAX_ITERATIONS, 0.5)  # 4 of 5 doubtful
    text = warning_due(counts)
    assert text == (
        "solver: 4 of 5 hyper-steps are doubtful (4 negative_curvature), median ‖Hx − b‖/‖b‖ 4 "
        f"(x = 0 has 1): {ADVICE}"
    )
    record(counts, Status.UNSTABLE, 3.0)
    assert warning_due(counts) is None and warning_due(counts, final=True) is None  # once
    assert solver_health.summary(counts) == {
        "health": "doubtful",
        "hyper_steps": 6,
        "statuses": {"max_iterations": 1, "negative_curvature": 4, "unstable": 1},
        "doubtful": {"negative_curvature": 4, "unstable": 1},
        "residual": {"median": 3.5, "max": 18.0},
    }
    short = initial_counts()
    record(short, Status.DIVERGED, None)
    record(short, Status.MAX_ITERATIONS, 0.7)
    record(short, Status.MAX_ITERATIONS, 1.5)
    assert warning_due(short) is None
    assert warning_due(short, final=True).startswith(
        "solver: 2 of 3 hyper-steps are doubtful (1 diverged, 1 max_iterations), median "
        "‖Hx − b‖/‖b‖ 1.1 (x = 0 has 1)"
    )
    half = initial_counts()
    for status in (Status.UNSTABLE, Status.CONVERGED):
        record(half, status, 0.1)
    assert warning_due(half, final=True) is None  # half is not most
    assert solver_health.summary(half)["health"] == "ok"
    assert solver_health.summary(initial_counts())["health"] is None


def test_a_doubtful_run_completes_warns_once_at_the_end_and_says_so(tmp_path, caplog):
    """4 hyper-steps (fewer than WARN_AFTER), all negative curvature: one warning at the end,
    ``completed`` with ``solver_health: doubtful``, the counts in summary.json and the block."""
    with caplog.at_level(logging.INFO):
        run(tmp_path, *CG)
    summary = summary_of(tmp_path)
    assert summary["status"] == "completed" and summary["stop_reason"] == "completed"
    assert summary["solver_health"] == "doubtful"
    solves = summary["solves"]
    assert solves["hyper_steps"] == 4
    assert solves["statuses"] == solves["doubtful"] == {"negative_curvature": 4}
    assert 1 < solves["residual"]["median"] <= solves["residual"]["max"]
    (warning,) = solver_warnings(caplog)
    median = solves["residual"]["median"]
    assert warning == (
        "solver: 4 of 4 hyper-steps are doubtful (4 negative_curvature), median ‖Hx − b‖/‖b‖ "
        f"{median:.3g} (x = 0 has 1): {ADVICE}"
    )
    block = caplog.records[-1].getMessage().splitlines()
    assert block[0] == "hpo-run completed"
    assert block[3] == (
        f"  solver: 4 hyper-steps, 4 negative_curvature; ‖Hx − b‖/‖b‖ median {median:.3g}, "
        f"max {solves['residual']['max']:.3g}"
    )
    assert block[4] == (
        "  solver health: doubtful (4 of 4 hyper-steps doubtful: their hypergradients may point "
        "anywhere; see the warning)"
    )


def test_solver_cg_as_configured_is_healthy_where_undamped_cg_on_h_is_not(tmp_path, caplog):
    """conf/solver/cg.yaml's Gauss-Newton curvature and damping (docs/solvers.md, the defaults by
    evidence): on the tiny run where :data:`CG` meets negative curvature at every hyper-step,
    ``solver=cg`` has no doubtful one and gives no warning."""
    with caplog.at_level(logging.WARNING):
        run(tmp_path, "solver=cg")
    summary = summary_of(tmp_path)
    assert summary["solver_health"] == "ok" and summary["solves"]["doubtful"] == {}
    assert summary["solves"]["hyper_steps"] == 4 and solver_warnings(caplog) == []


def test_a_longer_doubtful_run_warns_once_as_soon_as_most_of_five_steps_are(tmp_path, caplog):
    with caplog.at_level(logging.WARNING):
        run(tmp_path, *CG, "outer_steps=8")
    (warning,) = solver_warnings(caplog)
    assert warning.startswith("outer step 5: solver: 5 of 5 hyper-steps are doubtful")
    assert summary_of(tmp_path)["solves"]["statuses"] == {"negative_curvature": 8}


def test_the_default_neumann_run_is_ok_and_silent(tmp_path, caplog):
    """terms=4 stops at max_iterations with a residual below 1: by design, not doubtful."""
    with caplog.at_level(logging.WARNING):
        run(tmp_path)
    summary = summary_of(tmp_path)
    assert summary["solver_health"] == "ok"
    assert summary["solves"]["statuses"] == {"max_iterations": 4}
    assert summary["solves"]["doubtful"] == {} and summary["solves"]["residual"]["max"] < 1
    assert solver_warnings(caplog) == []


def test_without_hyper_steps_there_is_no_solver_health(tmp_path):
    run(tmp_path, "hyper_steps=false")
    summary = summary_of(tmp_path)
    assert summary["solver_health"] is None and summary["solves"]["hyper_steps"] == 0


def test_a_failed_run_counts_the_step_that_diverged(tmp_path):
    with pytest.raises(SystemExit):
        run(tmp_path, "solver.alpha=2")  # Neumann's series explodes at the first hyper-step
    summary = summary_of(tmp_path)
    assert summary["status"] == "failed"
    assert summary["solves"]["statuses"] == {"diverged": 1}


def test_the_counts_survive_a_resume_exactly(tmp_path, monkeypatch, caplog):
    """Interrupted at outer step 7 (its checkpoint after step 6, past the warning of step 5),
    the resumed run's counts, residuals and health equal the uninterrupted run's, and it does not
    warn again."""
    steps = [*CG, "outer_steps=8"]
    run(tmp_path / "whole", *steps)
    interrupt_at(monkeypatch, 7)
    with pytest.raises(SystemExit):
        run(tmp_path / "resumed", *steps)
    monkeypatch.undo()
    saved = torch.load(tmp_path / "resumed" / "checkpoint.pt", weights_only=True)
    assert saved["progress"]["outer_step"] == 6 and saved["progress"]["solves"]["warned"]
    caplog.clear()
    with caplog.at_level(logging.WARNING):
        run(tmp_path / "resumed", *steps, f"resume={tmp_path / 'resumed'}")
    assert solver_warnings(caplog) == []
    whole, resumed = (summary_of(tmp_path / d) for d in ("whole", "resumed"))
    assert resumed["solves"] == whole["solves"] and resumed["solves"]["hyper_steps"] == 8
    assert resumed["solver_health"] == whole["solver_health"] == "doubtful"
    final = [
        torch.load(tmp_path / d / "checkpoint.pt")["progress"]["solves"]
        for d in ("whole", "resumed")
    ]
    assert final[0] == final[1]  # every residual, bit for bit


def test_solver_png_marks_each_rows_status_and_the_doubtful_ones(tmp_path):
    run(tmp_path, *CG)
    figure = plots.draw(tmp_path, "solver.png")
    bottom = figure.axes[1]
    labels = [text.get_text() for text in bottom.get_legend().get_texts()]
    assert labels == ["x = 0 (residual 1)", "negative_curvature", "doubtful"]
    marked = [len(collection.get_offsets()) for collection in bottom.collections]
    assert marked == [4, 4]  # a status marker and a red ring on each hyper-step's row
    plt.close(figure)
