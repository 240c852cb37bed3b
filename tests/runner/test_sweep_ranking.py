"""Which setting of a sweep won: the ranking in ``sweep_summary.csv``, ``sweep_best.csv`` and on
the console, built from hand-made job directories written through the run directory's own
writers (metrics rows, ``summary.json``, ``.hydra/overrides.yaml``).

The planted sweep: ``optimizer.lr=0.01`` (three seeds) overfits, its best rows (val error 0.04,
0.05, 0.06 at outer step 1) far better than its final rows (0.30); ``optimizer.lr=0.1`` (two
seeds, one more that failed) improves to the end (0.10, 0.12). Averaging final rows would pick
0.1; the best rows pick 0.01. ``optimizer.lr=1.0``'s only job failed with a validation error of
0 before it did: counted, never ranked."""

from __future__ import annotations

import sys
from pathlib import Path

import pandas as pd
import pytest
from omegaconf import OmegaConf

from hpo_cli.runner.rundir.directory import RunDirectory
from hpo_cli.runner.sweeps import aggregate as sweep_module
from hpo_cli.runner.sweeps import ranking
from hpo_cli.runner.sweeps.aggregate import aggregate, read_ranking

# (lr, seed, status, [(val_error, val_loss, test_error)] per outer step 0, 1, 2)
JOBS = [
    ("0.01", 0, "completed", [(0.50, 1.5, 0.55), (0.04, 0.30, 0.08), (0.30, 0.90, 0.35)]),
    ("0.01", 1, "completed", [(0.50, 1.5, 0.55), (0.05, 0.32, 0.09), (0.30, 0.95, 0.36)]),
    ("0.01", 2, "completed", [(0.50, 1.5, 0.55), (0.06, 0.34, 0.10), (0.30, 1.00, 0.37)]),
    ("0.1", 0, "completed", [(0.50, 1.5, 0.55), (0.20, 0.60, 0.25), (0.10, 0.40, 0.15)]),
    ("0.1", 1, "completed", [(0.50, 1.5, 0.55), (0.20, 0.60, 0.25), (0.12, 0.42, 0.16)]),
    ("0.1", 2, "failed", [(0.50, 1.5, 0.55), (0.00, 0.10, 0.05)]),
    ("1.0", 0, "failed", [(0.00, 0.05, 0.01)]),
]


def write_job(job_dir: Path, lr: str, seed: int, status: str, rows: list[tuple]) -> None:
    """One job as hpo-run leaves it: overrides, metrics rows and summary.json, each through
    :class:`RunDirectory`'s writers."""
    run_dir = RunDirectory(job_dir)
    (job_dir / ".hydra").mkdir(parents=True)
    overrides = [f"optimizer.lr={lr}", f"seed={seed}"]
    run_dir.save_config(OmegaConf.create({"seed": seed}), overrides)
    run_dir.metrics_log().extend(
        [
            {
                "outer_step": step,
                "val_error": val_error,
                "val_loss": val_loss,
                "test_error": test_error,
                "test_loss": 2 * val_loss,
            }
            for step, (val_error, val_loss, test_error) in enumerate(rows)
        ]
    )
    error = "outer step 2: the training loss is nan" if status == "failed" else None
    run_dir.write_summary(status=status, progress=None, overrides=overrides, error=error)


@pytest.fixture
def planted(tmp_path) -> Path:
    for job, spec in enumerate(JOBS):
        write_job(tmp_path / str(job), *spec)
    return tmp_path


def test_a_job_is_scored_by_its_best_row_not_its_final_one(planted):
    aggregate(planted)
    best = pd.read_csv(planted / "sweep_best.csv")
    first = best[best["job"] == 0].iloc[0]
    assert (first["outer_step"], first["val_error"], first["test_error"]) == (1, 0.04, 0.08)
    # the planted sweep discriminates: averaging final rows picks the other setting
    table = pd.read_csv(planted / "sweep.csv")
    finals = table[table["status"] == "completed"].groupby("job").tail(1)
    assert finals.groupby("setting")["val_error"].mean().idxmin() == "optimizer.lr=0.1"
    ranked = read_ranking(planted)
    assert ranked["setting"].tolist() == [
        "optimizer.lr=0.01",
        "optimizer.lr=0.1",
        "optimizer.lr=1.0",
    ]


def test_the_seeds_of_a_setting_are_averaged_and_failures_counted_not_ranked(planted):
    aggregate(planted)
    table = read_ranking(planted).set_index("setting")
    winner = table.loc["optimizer.lr=0.01"]
    assert (winner["rank"], winner["seeds"], winner["failed"]) == (1, 3, 0)
    assert winner["val_error_mean"] == pytest.approx(0.05)
    assert winner["val_error_std"] == pytest.approx(0.01)
    assert winner["val_loss_mean"] == pytest.approx(0.32)
    assert winner["test_error_mean"] == pytest.approx(0.09)
    assert winner["test_loss_mean"] == pytest.approx(0.64)
    second = table.loc["optimizer.lr=0.1"]  # the failed seed's 0.00 is not averaged in
    assert (second["rank"], second["seeds"], second["failed"]) == (2, 2, 1)
    assert second["val_error_mean"] == pytest.approx(0.11)
    only_failed = table.loc["optimizer.lr=1.0"]
    assert pd.isna(only_failed["rank"]) and (only_failed["seeds"], only_failed["failed"]) == (0, 1)
    assert pd.isna(only_failed["val_error_mean"])


def test_the_script_prints_the_table_and_names_the_best_setting(planted, monkeypatch, capsys):
    monkeypatch.setattr(sys, "argv", ["hpo_cli.runner.sweeps.aggregate", str(planted)])
    with pytest.raises(SystemExit) as exit_info:
        sweep_module.main()
    assert exit_info.value.code == 1  # two jobs failed
    lines = capsys.readouterr().out.splitlines()
    start = next(i for i, line in enumerate(lines) if line.startswith("sweep ranking:"))
    assert lines[start] == (
        "sweep ranking: 3 settings by each job's best validation row, mean ± std over seeds "
        f"(in {planted}/sweep_summary.csv)"
    )
    table = [" ".join(line.split()) for line in lines[start + 1 : start + 5]]  # spacing aside
    assert table[0] == "rank setting seeds failed val error val loss test error"
    assert table[1] == "1 optimizer.lr=0.01 3 0 0.050 ± 0.010 0.3200 ± 0.0200 0.090 ± 0.010"
    assert table[2].startswith("2 optimizer.lr=0.1 2 1 0.110 ± 0.014 ")
    assert table[3] == "– optimizer.lr=1.0 0 1 – – –"
    assert lines[start + 5] == (
        "best: optimizer.lr=0.01 — val error 0.050 ± 0.010 over 3 seeds "
        "(val loss 0.3200 ± 0.0200, test error 0.090 ± 0.010)"
    )


def test_the_console_shows_twenty_settings_and_counts_the_rest():
    best = pd.DataFrame(
        [
            {"job": str(i), "status": "completed", "setting": f"x={i}", "seed": 0}
            | {"outer_step": 1, "val_error": i / 100, "val_loss": 1.0}
            | {"test_error": 0.5, "test_loss": 1.0}
            for i in range(25)
        ]
        + [{"job": "25", "status": "failed", "setting": "x=25", "seed": 0}]
    )
    lines = ranking.console_lines(ranking.rank(best), "sweep_summary.csv")
    assert len(lines) == 2 + 20 + 2
    assert lines[-2] == "  … 6 more settings, 1 of them with no completed job, in sweep_summary.csv"
    assert lines[-1].startswith("best: x=0 — val error 0.000 over 1 seed (val loss 1.0000, ")


def test_a_tie_at_the_top_is_said():
    rows = [
        {"job": str(i), "status": "completed", "setting": setting, "seed": 0}
        | {"outer_step": 1, "val_error": 0.1, "val_loss": 0.5, "test_error": 0.2, "test_loss": 1}
        for i, setting in enumerate(["solver=cg", "solver=neumann"])
    ]
    line = ranking.best_line(ranking.rank(pd.DataFrame(rows)))
    assert line.endswith("; tied with 1 other setting)")


def test_a_sweep_with_no_completed_job_names_no_best():
    best = ranking.best_rows(
        [{"job": "0", "status": "failed", "setting": "(one setting)", "seed": 0, "best": None}]
    )
    table = ranking.rank(best)
    assert ranking.best_setting(table) is None
    assert ranking.console_lines(table, "f.csv")[-1] == "best: none (no job of the sweep completed)"
