"""experiments.solver_defaults: the study's table says what its runs' metrics say, a refused pair
is listed as refused, a finished study is read back rather than run again, and every candidate
spells out the keys it is compared on."""

from __future__ import annotations

import dataclasses
import statistics
from pathlib import Path

import pandas as pd
import pytest

from experiments import figures, solver_defaults
from experiments.common import MissingRun
from tests.support.tiny_runs import DATA

TINY = solver_defaults.Scale(
    "tiny",
    outer_steps=3,
    quality_every=1,
    seeds=(0,),
    extra=(*DATA, "inner_steps=5", "eval_every=1"),
)
CANDIDATES = tuple(c for c in solver_defaults.CANDIDATES if c.name in ("cg", "neumann"))


def tiny_grid(patch: pytest.MonkeyPatch, models: tuple[str, ...], hypers: tuple[str, ...]) -> None:
    """The study cut to :data:`TINY`'s scale, CG and Neumann out of the box, these pairs."""
    patch.setattr(solver_defaults, "SMALL", TINY)
    patch.setattr(solver_defaults, "MODELS", models)
    patch.setattr(solver_defaults, "HYPERS", hypers)
    patch.setattr(solver_defaults, "CANDIDATES", CANDIDATES)


def run_tiny_study(study_dir: Path, models=("mlp",), hypers=("weight_decay",)) -> Path:
    with pytest.MonkeyPatch.context() as patch:
        tiny_grid(patch, models, hypers)
        solver_defaults.run_study(study_dir)
    return study_dir


@pytest.fixture(scope="module")
def study(tmp_path_factory) -> Path:
    """A tiny study: CG and Neumann out of the box on linear and MLP × scalar decay and dropout
    (linear × dropout is refused), 3 outer steps of 5 inner steps, every step probed."""
    study_dir = tmp_path_factory.mktemp("study")
    return run_tiny_study(study_dir, ("linear", "mlp"), ("weight_decay", "dropout"))


def doubtful_by_hand(status: str, residual: float) -> bool:
    """solver_health's rule, written out again: a failure status, or an unconverged solve that
    fits worse than x = 0."""
    if status in ("diverged", "negative_curvature", "unstable"):
        return True
    return status not in ("converged", "approximation") and residual > 1


def test_the_table_counts_what_the_metrics_files_hold(study):
    table = pd.read_csv(study / "solver_defaults.csv")
    assert len(table) == len(CANDIDATES) * 2 * 2
    trained = table[~table["refused"]]
    assert len(trained) == len(CANDIDATES) * 3 and (trained["status"] == "completed").all()
    for row in trained.itertuples():
        candidate = next(c for c in CANDIDATES if c.name == row.candidate)
        cell = solver_defaults.cell_dir(study, TINY, candidate, row.model, row.hyper, row.seed)
        metrics = pd.read_csv(cell / "metrics.csv")
        steps = metrics[metrics["outer_step"] > 0]
        assert row.hyper_steps == len(steps) == TINY.outer_steps
        solves = zip(steps.solver_status, steps.solver_residual, strict=True)
        assert row.doubtful == sum(doubtful_by_hand(s, r) for s, r in solves), row
        assert row.median_residual == pytest.approx(statistics.median(steps.solver_residual))
        cosines = steps["hypergrad_cosine"].dropna()
        assert len(cosines) == TINY.outer_steps
        assert row.median_cosine == pytest.approx(statistics.median(cosines))


def test_the_candidates_table_sums_the_cells_and_names_the_refused_pair(study):
    table = pd.read_csv(study / "solver_defaults.csv")
    summary = solver_defaults.candidate_summary(table).set_index("candidate")
    for candidate in CANDIDATES:
        cells = table[(table["candidate"] == candidate.name) & ~table["refused"]]
        row = summary.loc[candidate.name]
        assert row["runs"] == 3
        assert row["doubtful hyper-steps"] == f"{cells['doubtful'].sum()} of 9"
        completed_ok = (cells["status"] == "completed") & (cells["health"] == "ok")
        assert row["health ok"] == completed_ok.sum()
        assert row["median cosine"] == pytest.approx(statistics.median(cells["median_cosine"]))
    text = (study / "solver_defaults.md").read_text()
    assert "Refused: linear × dropout (hyper=dropout needs a model with hidden activation" in text
    assert text.count("\n| cg |") == 1 and text.count("\n| neumann |") == 1


def test_a_finished_study_is_read_back_and_drawn_without_running(study, tmp_path, monkeypatch):
    def no_runs(*args, **kwargs):
        raise AssertionError("a finished cell was run again")

    monkeypatch.setattr(solver_defaults, "run_cell", no_runs)
    tiny_grid(monkeypatch, ("linear", "mlp"), ("weight_decay", "dropout"))
    before = (study / "solver_defaults.csv").read_text()
    solver_defaults.run_study(study)
    assert (study / "solver_defaults.csv").read_text() == before
    png, pdf = solver_defaults.plot(study, tmp_path)
    assert png.read_bytes()[:8] == b"\x89PNG\r\n\x1a\n" and pdf.read_bytes()[:5] == b"%PDF-"


def test_the_full_scale_reuses_no_cell_of_the_small_one(study, monkeypatch):
    class Ran(Exception):
        pass

    def ran(*args, **kwargs):
        raise Ran

    tiny_grid(monkeypatch, ("linear", "mlp"), ("weight_decay", "dropout"))
    monkeypatch.setattr(solver_defaults, "FULL", dataclasses.replace(TINY, name="tiny_full"))
    monkeypatch.setattr(solver_defaults, "run_cell", ran)
    with pytest.raises(Ran):
        solver_defaults.run_study(study, full=True)


def test_the_figures_grid_puts_each_cells_numbers_at_its_candidate_and_pair(study):
    table = pd.read_csv(study / "solver_defaults.csv")
    cosine, bad = solver_defaults.grid(table)
    assert list(cosine.index) == list(bad.index) == [c.name for c in CANDIDATES]
    assert list(cosine.columns) == list(bad.columns)
    assert "linear × dropout" not in cosine.columns  # refused: no cell
    for row in table[~table["refused"]].itertuples():
        pair = f"{row.model} × {row.hyper}"
        assert cosine.loc[row.candidate, pair] == pytest.approx(row.median_cosine)
        failed = row.health == "doubtful" or row.status != "completed"
        assert bad.loc[row.candidate, pair] == failed


def test_every_candidate_spells_out_every_key_a_candidate_of_its_solver_changes():
    """A cell measures its setting whatever conf/solver's defaults are at the time."""
    keys: dict[str, set[str]] = {}
    for candidate in solver_defaults.CANDIDATES:
        solver = candidate.overrides[0]
        keys.setdefault(solver, set()).update(o.split("=")[0] for o in candidate.overrides[1:])
    for candidate in solver_defaults.CANDIDATES:
        own = {o.split("=")[0] for o in candidate.overrides[1:]}
        assert own == keys[candidate.overrides[0]], candidate.name


def test_the_catalogue_names_the_studys_command_when_it_is_missing(tmp_path):
    (figure,) = [f for f in figures.CATALOGUE if f.name == "solver_defaults"]
    run_dir = tmp_path / "runs" / "solver_defaults"
    with pytest.raises(MissingRun, match=r"no solver_defaults\.csv, solver_defaults\.md"):
        figure.check(run_dir, full=False)
    with pytest.raises(MissingRun) as error:
        figure.check(run_dir, full=True)
    assert str(error.value).endswith(f"run: python -m experiments.solver_defaults {run_dir} --full")
