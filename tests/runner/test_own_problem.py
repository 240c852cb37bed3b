"""A researcher's own model, data, hyperparameter module and solver (tests/support/own_problem.py,
outside hpo_cli) and their own config directory: built by ``_target_``, checked against their own
signatures, refused in one line when they do not fit."""

from __future__ import annotations

import pandas as pd
import pytest
from hydra import compose, initialize_config_module

from hpo_cli.runner.cli.command import train
from hpo_cli.runner.config.build import build_experiment
from hpo_cli.runner.config.schemas import register_configs
from hpo_cli.runner.errors import ConfigError
from tests.support.config_dirs import compose_with, conf_dir
from tests.support.tiny_runs import BRIEF, DATA

SMALL = [*DATA, *BRIEF]  # a user's own model: no model.hidden_sizes


def test_an_outside_model_gets_only_the_shapes_it_asks_for(tmp_path):
    conf = conf_dir(
        tmp_path, {"model/wide.yaml": "_target_: tests.support.own_problem.WideNet\nwidth: 12\n"}
    )
    exp = build_experiment(compose_with(conf, "model=wide", "model.width=5", *SMALL))
    first, last = exp.model[1], exp.model[3]
    assert (first.in_features, first.out_features, last.out_features) == (64, 5, 10)
    exp = build_experiment(
        compose_with(
            conf,
            "model=wide",
            "model._target_=tests.support.own_problem.FixedNet",
            "~model.width",
            *SMALL,
        )
    )
    assert exp.model[1].out_features == 10  # took no shapes at all


@pytest.mark.parametrize(
    ("overrides", "message"),
    [
        (
            ["+model.widht=3"],
            r"^model.widht is not a parameter of tests.support.own_problem.WideNet; "
            r"did you mean model.width\? valid keys: width$",
        ),
        (
            ["model.width=many"],
            r"^model.width='many' is invalid: tests.support.own_problem.WideNet takes width: int$",
        ),
        (
            ["model._target_=tests.support.own_problem.Missing"],
            r"^model._target_=tests.support.own_problem.Missing cannot be imported",
        ),
        (
            ["model._target_=tests.support.own_problem.not_a_model", "~model.width"],
            r"built a list, not a torch.nn.Module$",
        ),
        (
            [
                "model._target_=tests.support.own_problem.FixedNet",
                "~model.width",
                "+model.classes=3",
            ],
            r"^model=tests.support.own_problem.FixedNet maps inputs \(2, 1, 8, 8\) to outputs "
            r"\(2, 3\), but the "
            r"classification data set needs \(2, 10\) for 10 classes$",
        ),
        (
            [
                "model._target_=torch.nn.Linear",
                "~model.width",
                "+model.in_features=5",
                "+model.out_features=10",
            ],
            r"^model=torch.nn.Linear fails on inputs \(2, 1, 8, 8\): ",
        ),
    ],
)
def test_a_model_that_does_not_fit_fails_before_training_in_one_line(tmp_path, overrides, message):
    conf = conf_dir(
        tmp_path, {"model/wide.yaml": "_target_: tests.support.own_problem.WideNet\nwidth: 16\n"}
    )
    with pytest.raises(ConfigError, match=message) as error:
        build_experiment(compose_with(conf, "model=wide", *overrides, *SMALL))
    assert "\n" not in str(error.value)


def test_a_required_parameter_nobody_supplies_is_named(tmp_path):
    conf = conf_dir(tmp_path, {"model/lin.yaml": "_target_: torch.nn.Linear\nin_features: 64\n"})
    with pytest.raises(ConfigError, match=r"^model.out_features is missing: torch.nn.Linear"):
        build_experiment(compose_with(conf, "model=lin", *SMALL))


def test_own_loader_model_hyper_module_and_solver_train_from_a_config_directory(tmp_path):
    """The registration claim of the README: a new solver (or model, data set, hyperparameter
    module) is its Python file and its YAML file; nothing in hpo_cli is edited."""
    conf = conf_dir(
        tmp_path,
        {
            "dataset/blobs.yaml": "_target_: tests.support.own_problem.blobs\nn: 60\n",
            "model/wide.yaml": "_target_: tests.support.own_problem.WideNet\nwidth: 8\n",
            "hyper/scaled_l2.yaml": "_target_: tests.support.own_problem.ScaledL2\ninit: 0.01\n",
            "solver/half.yaml": "_target_: tests.support.own_problem.HalfIdentity\nscale: 0.25\n",
            "experiment/mine.yaml": """\
                # @package _global_
                defaults:
                  - override /dataset: blobs
                  - override /model: wide
                  - override /hyper: scaled_l2
                  - override /solver: half
                data:
                  split_train: 20
                  split_val: 20
                batch_size: 8
                """,
        },
    )
    cfg = compose_with(conf, "experiment=mine", *SMALL[3:])
    progress = train(cfg, tmp_path)
    table = pd.read_csv(tmp_path / "metrics.csv")
    assert progress.outer_step == 2 and len(table) == 3
    assert set(table["solver_status"].dropna()) == {"approximation"}
    assert table["hypergrad_norm"].iloc[1:].gt(0).all()
    assert table["hyper_mean"].iloc[-1] != pytest.approx(0.01)  # λ moved
    with pytest.raises(
        ConfigError,
        match=r"^solver.scael is not a parameter of .*HalfIdentity; did you mean solver.scale\? "
        r"valid keys: scale$",
    ):
        build_experiment(compose_with(conf, "experiment=mine", "+solver.scael=1", *SMALL[3:]))


def test_config_dirs_become_one_absolute_searchpath_that_resume_keeps(tmp_path, monkeypatch):
    from omegaconf import OmegaConf

    from hpo_cli.runner.cli.preflight import config_dir_arguments, resume_overrides

    monkeypatch.chdir(tmp_path)
    arguments = config_dir_arguments(
        ["-m", "--config-dir", "conf", "seed=1", "hydra.searchpath=[file://more]"]
    )
    searchpath = f"hydra.searchpath=[file://{tmp_path / 'conf'},file://{tmp_path / 'more'}]"
    assert arguments == ["-m", "seed=1", searchpath]
    run_dir = tmp_path / "run"
    (run_dir / ".hydra").mkdir(parents=True)
    OmegaConf.save(
        OmegaConf.create(["model=wide", "seed=1"]), run_dir / ".hydra" / "overrides.yaml"
    )
    OmegaConf.save(OmegaConf.create({"seed": 1}), run_dir / ".hydra" / "config.yaml")
    hydra = {"overrides": {"hydra": [searchpath, "hydra.mode=RUN"]}}
    OmegaConf.save(OmegaConf.create({"hydra": hydra}), run_dir / ".hydra" / "hydra.yaml")
    resumed = resume_overrides(run_dir, [f"resume={run_dir}", "seed=2"])
    assert searchpath in resumed and "model=wide" in resumed and "seed=2" in resumed
    assert "seed=1" not in resumed and "hydra.mode=RUN" not in resumed


def test_a_model_from_the_command_line_alone_replaces_the_built_in_one():
    """No YAML file: ``~model`` drops the default model (and its schema), ``+model.*`` adds."""
    register_configs()
    with initialize_config_module("hpo_cli.conf", version_base="1.3"):
        cfg = compose(
            "config",
            overrides=[
                "~model",
                "+model._target_=tests.support.own_problem.WideNet",
                "+model.width=7",
                *SMALL,
            ],
        )
    assert build_experiment(cfg).model[1].out_features == 7
