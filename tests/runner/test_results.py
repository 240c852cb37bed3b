"""A run's results taken away: the hyperparameter files read back with plain torch and json, and
``hpo_cli.load_run`` on a completed, a resumed and an early-stopped run."""

from __future__ import annotations

import json
import logging
from pathlib import Path

import numpy as np
import pytest
import torch
from omegaconf import OmegaConf

import hpo_cli
from hpo_cli.runner.config.build import build_problem
from hpo_cli.runner.loop.export import named_hyperparameters
from hpo_cli.runner.results import RunNotLoadable
from hpo_cli.runner.rundir.checkpoint import CheckpointError
from hpo_cli.runner.rundir.directory import RunDirectory
from tests.support import tiny_runs
from tests.support.tiny_runs import config, interrupt_at, metrics

NEVER_IMPROVES = ["early_stopping.patience=2", "early_stopping.min_delta=1e9"]


def run(run_dir: Path, *overrides: str) -> None:
    """A tiny run whose folder keeps its configuration, as Hydra's does."""
    tiny_runs.run(run_dir, *overrides)
    OmegaConf.save(config(*overrides), RunDirectory(run_dir).saved_config)


def saved(run_dir: Path, name: str) -> dict[str, torch.Tensor]:
    return torch.load(run_dir / name, weights_only=True)


def states_equal(a: dict[str, torch.Tensor], b: dict[str, torch.Tensor]) -> bool:
    return a.keys() == b.keys() and all(torch.equal(a[k], b[k]) for k in a)


def test_the_hyperparameter_files_read_back_without_hpo_cli(tmp_path):
    run(tmp_path)
    values = saved(tmp_path, "hyperparameters.pt")  # a plain {name: tensor}
    summary = json.loads((tmp_path / "hyperparameters.json").read_text())
    loaded = hpo_cli.load_run(tmp_path, which="last")
    names = [name for name, _ in loaded.model.named_parameters()]
    assert list(values) == [f"weight_decay/{name}" for name in names]
    for (name, tensor), (_, weights) in zip(
        values.items(), loaded.model.named_parameters(), strict=True
    ):
        assert tensor.shape == weights.shape and tensor.device.type == "cpu", name
    flat = torch.cat([tensor.reshape(-1) for tensor in values.values()])
    assert torch.equal(flat, loaded.hyper.constrained_values())  # λ through its constraint
    assert (flat > 0).all()
    assert summary["last_outer_step"] == 4 and summary["best"] is None
    assert summary["files"] == {"last": "hyperparameters.pt", "best": None}
    for entry in summary["last"]:
        tensor = values[entry["name"]].double().reshape(-1).numpy()
        assert entry["shape"] == list(values[entry["name"]].shape)
        assert entry["mean"] == pytest.approx(tensor.mean())
        quantiles = np.quantile(tensor, [0, 0.05, 0.25, 0.5, 0.75, 0.95, 1])
        assert list(entry["quantiles"]) == ["0%", "5%", "25%", "50%", "75%", "95%", "100%"]
        assert list(entry["quantiles"].values()) == pytest.approx(quantiles.tolist())
        assert ("values" in entry) == (tensor.size <= 32)
        if tensor.size <= 32:
            assert entry["values"] == pytest.approx(tensor.tolist())
    assert not (tmp_path / "hyperparameters_best.pt").exists()


def test_load_run_on_a_completed_run(tmp_path):
    run(tmp_path)
    loaded = hpo_cli.load_run(tmp_path, which="last")
    checkpoint = torch.load(tmp_path / "checkpoint.pt", weights_only=True)
    assert states_equal(loaded.model.state_dict(), checkpoint["model"])
    assert states_equal(loaded.hyper.state_dict(), checkpoint["hyper"])
    assert loaded.which == "last" and loaded.outer_step == 4
    assert loaded.progress["total_inner_steps"] == 50 + 4 * 5
    assert loaded.config["outer_steps"] == 4 and isinstance(loaded.config["model"], dict)
    assert (len(loaded.data.train), len(loaded.data.val), len(loaded.data.test)) == (20, 20, 40)
    loaded.model.eval()
    with torch.no_grad():
        outputs = loaded.model(loaded.data.val.inputs)
        val_loss = torch.nn.functional.cross_entropy(outputs, loaded.data.val.targets)
    assert float(val_loss) == pytest.approx(metrics(tmp_path)["val_loss"].iloc[-1], rel=1e-5)
    assert states_equal(loaded.hyperparameters(), saved(tmp_path, "hyperparameters.pt"))
    with pytest.raises(RunNotLoadable, match=r"has no best checkpoint .*which='last'") as error:
        hpo_cli.load_run(tmp_path)  # which="best" by default; this run kept none
    assert "\n" not in str(error.value)


def test_load_run_restores_the_callers_random_generator(tmp_path):
    run(tmp_path)
    torch.manual_seed(123)
    expected = torch.rand(3)
    torch.manual_seed(123)
    hpo_cli.load_run(tmp_path, "last")
    assert torch.equal(torch.rand(3), expected)


def test_load_run_on_a_resumed_run_equals_the_uninterrupted_one(tmp_path, monkeypatch):
    run(tmp_path / "whole")
    interrupt_at(monkeypatch, 3)
    with pytest.raises(SystemExit):
        run(tmp_path / "resumed")
    monkeypatch.undo()
    interrupted = json.loads((tmp_path / "resumed" / "hyperparameters.json").read_text())
    assert interrupted["last_outer_step"] == 2  # written at the interruption too
    run(tmp_path / "resumed", f"resume={tmp_path / 'resumed'}")
    whole, resumed = (hpo_cli.load_run(tmp_path / d, "last") for d in ("whole", "resumed"))
    assert resumed.outer_step == whole.outer_step == 4
    assert states_equal(resumed.model.state_dict(), whole.model.state_dict())
    assert states_equal(resumed.hyper.state_dict(), whole.hyper.state_dict())
    assert states_equal(
        saved(tmp_path / "resumed", "hyperparameters.pt"),
        saved(tmp_path / "whole", "hyperparameters.pt"),
    )


def test_load_run_best_gives_the_best_checkpoint_of_an_early_stopped_run(tmp_path):
    run(tmp_path, *NEVER_IMPROVES)  # best at step 0, stopped at step 2
    best, last = hpo_cli.load_run(tmp_path), hpo_cli.load_run(tmp_path, which="last")
    assert (best.which, best.outer_step, last.outer_step) == ("best", 0, 2)
    checkpoint = torch.load(tmp_path / "checkpoint_best.pt", weights_only=True)
    assert states_equal(best.model.state_dict(), checkpoint["model"])
    assert not states_equal(best.model.state_dict(), last.model.state_dict())
    assert states_equal(best.hyperparameters(), saved(tmp_path, "hyperparameters_best.pt"))
    assert states_equal(last.hyperparameters(), saved(tmp_path, "hyperparameters.pt"))
    assert not states_equal(best.hyperparameters(), last.hyperparameters())
    summary = json.loads((tmp_path / "hyperparameters.json").read_text())
    assert (summary["last_outer_step"], summary["best_outer_step"]) == (2, 0)
    assert [entry["name"] for entry in summary["best"]] == list(best.hyperparameters())


def test_load_run_refuses_what_it_cannot_load_in_one_line(tmp_path):
    with pytest.raises(RunNotLoadable, match="is not an hpo-run run directory"):
        hpo_cli.load_run(tmp_path)
    run(tmp_path, *NEVER_IMPROVES)
    with pytest.raises(RunNotLoadable, match="choose 'best' or 'last'"):
        hpo_cli.load_run(tmp_path, which="final")
    (tmp_path / "checkpoint_best.pt").write_bytes(b"not a checkpoint")
    with pytest.raises(CheckpointError, match=r"checkpoint_best\.pt is damaged") as error:
        hpo_cli.load_run(tmp_path)
    assert "\n" not in str(error.value)


def test_the_closing_block_names_the_hyperparameter_files(tmp_path, caplog):
    with caplog.at_level(logging.INFO, logger="hpo_cli"):
        run(tmp_path, *NEVER_IMPROVES)
    (line,) = [
        line
        for record in caplog.records
        for line in record.getMessage().splitlines()
        if "hyperparameters in full" in line
    ]
    assert "hyperparameters.json, hyperparameters.pt, hyperparameters_best.pt" in line


@pytest.mark.parametrize(
    ("hyper", "names"),
    [
        ("weight_decay", ["weight_decay"]),
        ("dropout", ["dropout_rate/2"]),
        ("loss_weights", ["example_weights"]),
        ("distill", ["distill/images", "distill/labels"]),
    ],
)
def test_every_module_names_its_tensors(hyper, names):
    problem = build_problem(config(f"hyper={hyper}"))
    if hyper == "weight_decay":
        assert problem.hyper.granularity == "scalar"
    named = named_hyperparameters(problem.hyper, problem.model)
    assert list(named) == names
    flat = torch.cat(
        [tensor.reshape(-1).to(problem.hyper.constrained_values()) for tensor in named.values()]
    )
    if hyper != "distill":  # distill's fixed labels are class indices, not a hyperparameter
        assert torch.equal(flat, problem.hyper.constrained_values())


def test_a_failed_run_writes_its_hyperparameters_too(tmp_path):
    with pytest.raises(SystemExit) as exit_:
        run(tmp_path, "solver.alpha=1000")  # the Neumann solve diverges at outer step 1
    assert exit_.value.code == 1
    summary = json.loads((tmp_path / "hyperparameters.json").read_text())
    assert summary["last_outer_step"] == 1
    values = saved(tmp_path, "hyperparameters.pt")
    assert [entry["name"] for entry in summary["last"]] == list(values)


def test_a_damaged_best_checkpoint_leaves_the_last_values_written(tmp_path, caplog):
    run(tmp_path, *NEVER_IMPROVES, "outer_steps=1")
    (tmp_path / "checkpoint_best.pt").write_bytes(b"damaged")
    with caplog.at_level(logging.WARNING):
        run(tmp_path, *NEVER_IMPROVES, "outer_steps=2", f"resume={tmp_path}")
    assert any("no best hyperparameters written" in r.getMessage() for r in caplog.records)
    summary = json.loads((tmp_path / "hyperparameters.json").read_text())
    assert summary["last_outer_step"] == 2 and summary["best"] is None
    assert not (tmp_path / "hyperparameters_best.pt").exists()
