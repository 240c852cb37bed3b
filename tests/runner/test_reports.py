"""Readable reports: plot titles and axes, a failed run's plots, sweep.png's failed settings,
plots redrawn from files alone, and the console (log_every, no bar off a terminal, the closing
block)."""

from __future__ import annotations

import logging
import sys

import matplotlib.image
import matplotlib.pyplot as plt
import pandas as pd
import pytest

from hpo_cli.runner.report import plots
from hpo_cli.runner.report.console import eta_text, log_due
from hpo_cli.runner.sweeps.plots import draw_sweep
from tests.support.tiny_runs import metrics, run

HYDRA_RECORD = """hydra:
  runtime:
    choices:
      dataset: digits
      model: mlp
      hyper: weight_decay_per_weight
      solver: neumann
"""


@pytest.fixture(scope="module")
def failed_run(tmp_path_factory):
    """A run whose training loss is NaN at outer step 1 (Adam with a step of 1e30), plots on,
    with Hydra's record of its choices as ``hpo-run`` leaves it."""
    run_dir = tmp_path_factory.mktemp("failed")
    (run_dir / ".hydra").mkdir()  # before the run: Hydra writes its record first
    (run_dir / ".hydra" / "hydra.yaml").write_text(HYDRA_RECORD)
    with pytest.raises(SystemExit) as exit_info:
        run(run_dir, "optimizer.lr=1e30", "plots=true")
    assert exit_info.value.code == 1
    return run_dir


def test_log_due_prints_one_row_per_log_every_steps_and_the_last():
    assert [s for s in range(1, 26) if log_due(s, 1, 10, last=s == 25)] == [10, 20, 25]
    assert [s for s in range(3, 31, 3) if log_due(s, 3, 10, last=False)] == [12, 21, 30]


def test_eta_is_the_steps_left_times_the_mean_step_so_far():
    assert eta_text(0, 10, 0.2) == "elapsed 0.2s, ETA ?"
    assert eta_text(2, 10, 3.0) == "elapsed 3.0s, ETA 12s"  # 8 steps x 1.5 s
    assert eta_text(10, 40, 90.0) == "elapsed 1m30s, ETA 4m30s"
    assert eta_text(1, 1000, 30.0) == "elapsed 30s, ETA 8h19m"
    assert eta_text(10, 10, 5.0) == "elapsed 5.0s, ETA 0.0s"


def test_every_plot_is_titled_on_a_linear_outer_step_axis(failed_run):
    for name in plots.PLOTS:
        figure = plots.draw(failed_run, name)
        title = figure._suptitle.get_text()
        assert title == "digits · mlp · weight_decay_per_weight · neumann · failed", name
        bottom = figure.axes[-1]
        assert bottom.get_xlabel() == "outer step" and bottom.get_xscale() == "linear", name
        plt.close(figure)


def test_a_failed_runs_plots_show_its_rows_and_where_it_failed(failed_run):
    assert metrics(failed_run)["outer_step"].tolist() == [0]
    figure = plots.draw(failed_run, "errors.png")
    lines = {line.get_label(): line for line in figure.axes[0].get_lines()}
    assert lines["Validation"].get_marker() == "o"  # one point, still visible
    assert list(lines["Validation"].get_xdata()) == [0]
    failure = lines["failed: outer step 1: the training loss is nan"]
    assert list(failure.get_xdata()) == [1, 1] and failure.get_color() == "tab:red"
    plt.close(figure)
    solver = plots.draw(failed_run, "solver.png")  # no hyper-step before the failure
    assert [t.get_text() for t in solver.axes[0].texts] == ["no values recorded"]
    plt.close(solver)


def test_the_plots_script_redraws_the_same_pngs_from_the_files(failed_run, tmp_path, monkeypatch):
    before = {name: matplotlib.image.imread(failed_run / name) for name in plots.PLOTS}
    monkeypatch.setattr(sys, "argv", ["plots", str(failed_run)])
    plots.main()
    for name, image in before.items():
        assert (matplotlib.image.imread(failed_run / name) == image).all(), name


def test_sweep_png_marks_the_settings_with_failed_jobs():
    rows = []
    for job, setting, status, steps in [
        (0, "solver=cg", "completed", 3),
        (1, "solver=cg", "failed", 1),
        (2, "solver=neumann", "completed", 3),
        (3, "solver=neumann", "completed", 3),
    ]:
        for step in range(steps + 1):
            rows.append(
                {"job": job, "status": status, "setting": setting, "seed": job % 2,
                 "outer_step": step, "val_loss": 1.0 / (step + 1), "test_error": 0.5}
            )  # fmt: skip
    figure = draw_sweep(pd.DataFrame(rows), "sweep 2026-11-30/10-00-00")
    legend = [text.get_text() for text in figure.axes[0].get_legend().get_texts()]
    assert legend == ["solver=cg (1 of 2 jobs failed)", "solver=neumann"]
    dashed = [line for line in figure.axes[0].get_lines() if line.get_linestyle() == "--"]
    assert len(dashed) == 1 and list(dashed[0].get_xdata()) == [0, 1]
    assert figure._suptitle.get_text() == (
        "sweep 2026-11-30/10-00-00: 4 jobs, 1 did not complete (dashed, × where they stopped)"
    )
    plt.close(figure)


def test_the_console_logs_every_log_every_steps_and_ends_with_a_summary_block(
    tmp_path, caplog, capsys
):
    with caplog.at_level(logging.INFO):
        run(tmp_path, "log_every=2", "progress=true")
    rows = [r.getMessage() for r in caplog.records if r.name == "hpo_cli.runner.loop.train"]
    assert [line.split(":")[0] for line in rows] == ["outer 2", "outer 4"]
    assert all(" | elapsed " in line and ", ETA " in line for line in rows)
    assert rows[-1].endswith("ETA 0.0s")
    block = caplog.records[-1].getMessage().splitlines()
    assert block[0] == "hpo-run completed"
    assert block[1].startswith("  best by val_loss: outer step ")
    assert block[2].startswith("  final: outer step 4: val loss ")
    assert block[3].startswith("  solver: 4 hyper-steps, 4 max_iterations; ‖Hx − b‖/‖b‖ median ")
    assert block[4] == "  solver health: ok (0 of 4 hyper-steps doubtful)"
    assert block[5].startswith("  time: ") and "inner" in block[5] and "hypergradient" in block[5]
    assert block[6].startswith(f"  files in {tmp_path}: ")
    files = set(block[6].split(": ")[1].split(", "))
    assert {"checkpoint.pt", "metrics.csv", "summary.json"} <= files
    assert "outer steps" not in capsys.readouterr().err  # no tqdm bar off a terminal
