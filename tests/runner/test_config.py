"""Every config group option composes, validates and builds; bad values fail before training."""

from __future__ import annotations

import copy
import itertools
import typing

import pytest
import torch
from hydra.errors import ConfigCompositionException
from omegaconf import OmegaConf
from omegaconf.errors import ConfigAttributeError, ConfigKeyError, ValidationError

from hpo_cli.runner.config.build import build_experiment
from hpo_cli.runner.config.validation import validate
from hpo_cli.runner.errors import ConfigError
from tests.support.cli_runs import hpo_run
from tests.support.composed import run_config
from tests.support.image_files import write_readable
from tests.support.option_configs import (
    CONF,
    GROUPS,
    covering_compositions,
    hydra_compose,
    option_node,
    options,
)
from tests.support.tiny_runs import DATA, MODEL

SMALL = [*DATA, *MODEL]  # the tiny run's data and model, without its steps


def test_every_group_has_options():
    for group in ("dataset", "model", "hyper", "solver", "optimizer", "hyper_optimizer"):
        assert options(group), group
    solvers = {"identity", "neumann", "cg", "exact", "unrolled", "first_order"}
    assert set(options("solver")) == solvers
    assert set(options("device")) == {"cpu", "cuda", "auto"}


FLAT_DATASETS = {"diabetes", "linreg", "regression1d"}  # inputs (d,)
IMAGE_MODELS = {"lenet", "resnet18"}  # take only (C, H, W) inputs
FILE_DATASETS = {"mnist", "fashion_mnist", "cifar10", "cifar100"}  # read from dataset.data_dir


def takes(dataset: str, model: str) -> bool:
    """Whether ``model`` is meant to work on ``dataset``'s inputs."""
    return not (dataset in FLAT_DATASETS and model in IMAGE_MODELS)


def test_every_combination_composes_and_validates():
    """Every option of every group composes and validates (:mod:`option_configs`: each in one
    of eight compositions); then every data set with every model meant for its inputs,
    assembled from those compositions. Group files never refer to one another (the test below),
    so the composition of a combination is its options' nodes in the base configuration:
    composing each option once covers every combination, and composing the product would only
    add time."""
    composed = set()
    for choices, cfg in covering_compositions():
        validate(cfg)
        composed |= {(group, choices[group]) for group in GROUPS}
    assert composed == {(group, name) for group in GROUPS for name in options(group)}
    base = hydra_compose("device=auto")
    for dataset, model in itertools.product(options("dataset"), options("model")):
        if takes(dataset, model):
            cfg = copy.deepcopy(base)
            cfg.dataset, cfg.model = option_node("dataset", dataset), option_node("model", model)
            validate(cfg)


def test_group_files_do_not_refer_to_other_groups():
    """The premise of the test above: a group's YAML only extends its own schema and
    interpolates no other value."""
    for group in ("dataset", "model", "hyper", "solver", "optimizer", "hyper_optimizer", "device"):
        for path in (CONF / group).glob("*.yaml"):
            defaults = OmegaConf.load(path).get("defaults", [])
            assert all(
                (isinstance(d, str) and d.startswith("base_")) or d == "_self_" for d in defaults
            ), path
            assert "${" not in path.read_text(), path


@pytest.mark.parametrize(
    ("dataset", "model"),
    [(d, m) for d in options("dataset") for m in options("model") if not takes(d, m)],
)
def test_a_model_that_cannot_take_the_inputs_says_so_before_training(dataset, model):
    small = [o for o in SMALL if not o.startswith("model.")]
    with pytest.raises(ConfigError) as error:
        build_experiment(run_config(f"dataset={dataset}", f"model={model}", *small))
    message = str(error.value)
    assert f"model={model} needs image inputs (C, H, W)" in message and "\n" not in message


@pytest.mark.parametrize(
    ("group", "name"),
    [
        (group, name)
        for group in ("dataset", "model", "hyper", "solver", "optimizer", "hyper_optimizer")
        for name in options(group)
    ],
)
def test_each_option_builds_an_experiment(group, name, tmp_path, monkeypatch):
    overrides = [f"{group}={name}", *SMALL]
    if group == "model" and name != "mlp":
        overrides.remove("model.hidden_sizes=[8]")
    if group == "dataset" and name in FILE_DATASETS:  # tiny files in the official format
        write_readable(name, tmp_path, monkeypatch)
        overrides.append(f"dataset.data_dir={tmp_path}")
    experiment = build_experiment(run_config(*overrides))
    assert next(experiment.model.parameters()).device.type == "cpu"
    assert len(list(experiment.hyper.parameters())) >= 1


def test_default_is_the_seed_001_setting():
    cfg = hydra_compose()
    assert cfg.dataset._target_.endswith("load_digits")
    assert (cfg.dataset.train_size, cfg.dataset.val_size) == (50, 50)
    assert cfg.hyper.granularity == "weight"
    assert cfg.solver._target_.endswith("Neumann") and cfg.solver.terms == 4
    assert cfg.optimizer._target_ == "torch.optim.Adam"
    assert cfg.hyper_optimizer._target_ == "torch.optim.RMSprop"


def test_unknown_option_lists_the_choices():
    with pytest.raises(ConfigCompositionException, match="Available options") as error:
        hydra_compose("solver=newton")
    assert "neumann" in str(error.value) and "cg" in str(error.value)


def test_misspelt_key_fails_at_composition():
    with pytest.raises(ConfigCompositionException) as error:
        hydra_compose("solver.term=5")
    assert isinstance(error.value.__cause__, ConfigAttributeError | ConfigKeyError)
    assert "Key 'term' not in 'NeumannConfig'" in str(error.value.__cause__)


def test_forced_unknown_key_fails_before_training():
    """Hydra's + bypasses the schema; the signature check still refuses the key, naming the
    valid ones."""
    with pytest.raises(
        ConfigError,
        match=r"^solver.term is not a parameter of .*Neumann; did you mean solver.terms\? "
        r"valid keys: alpha, .*terms",
    ):
        build_experiment(hydra_compose("+solver.term=5", *SMALL))


def test_wrong_type_fails_at_composition():
    with pytest.raises(ConfigCompositionException) as error:
        hydra_compose("outer_steps=many")
    assert isinstance(error.value.__cause__, ValidationError)


@pytest.mark.parametrize(
    ("override", "key"),
    [
        ("optimizer.lr=0", "optimizer.lr"),
        ("hyper_optimizer.lr=-1", "hyper_optimizer.lr"),
        ("outer_steps=0", "outer_steps"),
        ("inner_steps=0", "inner_steps"),
        ("batch_size=-2", "batch_size"),
        ("threads=0", "threads"),
        ("dtype=float16", "dtype"),
        ("on_failure=ignore", "on_failure"),
        ("data.num_workers=-1", "data.num_workers"),
    ],
)
def test_out_of_range_values_name_their_key(override, key):
    with pytest.raises(ConfigError, match=f"^{key}="):
        validate(run_config(override))


@pytest.mark.parametrize(
    "overrides",
    [
        ["optimizer=adam", "optimizer.weight_decay=1e-4"],
        ["optimizer=sgd", "optimizer.weight_decay=0.01", "solver=cg"],
        ["optimizer=rmsprop", "+optimizer.weight_decay=0.01", "solver=neumann"],
        ["optimizer._target_=torch.optim.AdamW", "optimizer.weight_decay=0.01"],  # decoupled
    ],
)
def test_inner_weight_decay_is_refused_in_one_line_before_anything_is_written(tmp_path, overrides):
    """The optimiser's decay is not in L_t: the IFT would differentiate another problem."""
    result = hpo_run(tmp_path / "run", *overrides)
    lines = [line for line in result.stderr.splitlines() if line.startswith("hpo-run: error:")]
    assert result.returncode == 2, result.stderr
    assert len(lines) == 1, result.stderr
    assert lines[0].startswith("hpo-run: error: optimizer.weight_decay=")
    assert "is not in L_t" in lines[0] and "hyper=weight_decay" in lines[0]
    assert "solver=unrolled" in lines[0]
    assert not (tmp_path / "run").exists()


def test_inner_weight_decay_is_kept_by_unrolled_differentiation():
    """Unrolled differentiation differentiates the optimiser's updates, decay included."""
    validate(run_config("optimizer.weight_decay=1e-4", "solver=unrolled"))
    validate(run_config("optimizer.weight_decay=0"))


def test_an_own_optimizer_node_without_weight_decay_has_its_targets_default():
    """A user's own YAML need not name weight_decay: AdamW's default (0.01) is refused too."""
    cfg = run_config()
    cfg.optimizer = OmegaConf.create({"_target_": "torch.optim.AdamW", "lr": 1e-3})
    with pytest.raises(ConfigError, match=r"^optimizer.weight_decay=0.01 is invalid"):
        validate(cfg)
    cfg.optimizer = OmegaConf.create({"_target_": "torch.optim.LBFGS", "lr": 1.0})  # has none
    validate(cfg)


@pytest.mark.parametrize(
    ("overrides", "key"),
    [
        (["dataset.train_size=5000"], "train_size"),
        (["batch_size=51"], "batch_size"),
        (["hyper_val_batch=60"], "hyper_val_batch"),
    ],
)
def test_more_samples_than_the_dataset_has(overrides, key):
    with pytest.raises(ConfigError, match=key):
        build_experiment(run_config(*overrides))


@pytest.mark.skipif(torch.cuda.is_available(), reason="checks the message when CUDA is absent")
def test_cuda_without_cuda_is_one_clear_line():
    with pytest.raises(ConfigError, match="device=cuda was requested but CUDA is not available"):
        build_experiment(run_config("device=cuda"))


def test_auto_device_picks_what_exists():
    experiment = build_experiment(run_config("device=auto", *SMALL))
    expected = "cuda" if torch.cuda.is_available() else "cpu"
    assert experiment.device.type == expected


def test_solver_options_reach_the_solver():
    cfg = run_config("solver=cg", "solver.max_iter=7", "solver.damping=0.5", *SMALL)
    method = build_experiment(cfg).joint.method
    solver = method.solver
    assert (solver.max_iter, solver.damping, method.curvature) == (7, 0.5, "ggn")  # cg.yaml
    assert OmegaConf.select(cfg, "solver.tol") == solver.tol


def test_the_type_check_shortcut_accepts_only_what_omegaconf_accepts():
    """``targets._plainly_valid`` skips OmegaConf for plain values: never for one it refuses."""
    from hpo_cli.runner.config.targets import _plainly_valid, _value_schema

    kinds = [int, float, str, bool, int | None, float | None, str | None, list[int], typing.Any]
    values = [1, 1.5, True, "a", "3", None, float("nan"), [1], {"a": 1}]
    shortcuts = 0
    for kind in kinds:
        for value in values:
            if _plainly_valid(kind, value):
                shortcuts += 1
                schema = _value_schema(kind)
                if schema is not None:
                    OmegaConf.merge(schema, {"value": value})  # raises on a refused value
    assert shortcuts >= 10
