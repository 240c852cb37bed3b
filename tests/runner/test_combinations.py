"""Every (dataset, model, hyper) combination runs a few outer steps of hpo-run's loop.

A combination that makes no sense (distillation on a regression set, dropout on a model without
hidden activations, a CNN on flat inputs) must instead be refused before training, in one line.
The solver is damped CG with two iterations: the solver is not what this test is about, and
damping keeps it stable on these barely trained models.

Every combination runs one outer step (inner steps, a hyper-step, two metrics rows, a
checkpoint). ResNet-18 costs seconds a run here, so it runs on half as many examples, on CIFAR-10
only (7 runs instead of 35), and only with the two modules that change its inputs or its training
loss the most (per-weight decay, augment_net) in the default group; the other five are in the
slow group (make test-slow). tests/runner/test_config.py builds it on every image data set.
"""

from __future__ import annotations

import itertools
import re
from pathlib import Path

import pandas as pd
import pytest
from omegaconf import DictConfig, OmegaConf

from hpo_cli.runner.cli.command import train
from hpo_cli.runner.config.build import build_experiment
from hpo_cli.runner.errors import ConfigError
from tests.support.composed import run_config
from tests.support.image_files import write_readable
from tests.support.option_configs import options
from tests.support.tiny_runs import ONE_STEP

FILE_DATASETS = {"mnist", "fashion_mnist", "cifar10", "cifar100"}
FLAT_DATASETS = {"diabetes", "linreg", "regression1d"}
SIZES = {"dataset.train_size": 8, "dataset.val_size": 6, "dataset.test_size": 6}
RESNET_SIZES = {  # a ResNet-18 hyper-step on 32x32 images costs seconds per example
    "dataset.train_size": 4,
    "dataset.val_size": 2,
    "dataset.test_size": 2,
    "batch_size": 2,
}
TINY = [*ONE_STEP, "solver=cg", "solver.max_iter=2", "solver.damping=1.0"]


def config(dataset: str, model: str, hyper: str, data_dir: Path) -> DictConfig:
    """The tiny configuration of one combination (:func:`composed.run_config`: each option's
    node as it composes on its own), then this test's sizes."""
    cfg = run_config(f"dataset={dataset}", f"model={model}", f"hyper={hyper}", *TINY)
    settings = dict(RESNET_SIZES if model == "resnet18" else SIZES)
    if dataset in FILE_DATASETS:
        settings["dataset.data_dir"] = str(data_dir)
    if model == "mlp":
        settings["model.hidden_sizes"] = [8]
    if hyper == "distill":  # 8 training examples cannot seed one real image for each class
        settings["hyper.init"] = "noise"
    if model == "two_layer_linear":
        settings["model.width"] = 8
    for key, value in settings.items():
        OmegaConf.update(cfg, key, value)
    return cfg


@pytest.fixture(scope="module")
def image_root(tmp_path_factory) -> Path:
    root = tmp_path_factory.mktemp("images")
    with pytest.MonkeyPatch.context() as patch:
        for name in FILE_DATASETS:
            write_readable(name, root, patch, train=24, test=12)
    return root


RESNET_IN_DEFAULT_GROUP = {"weight_decay_per_weight", "augment_net"}


def covered(dataset: str, model: str, hyper: str) -> bool:
    return model != "resnet18" or dataset == "cifar10"


def marked(dataset: str, model: str, hyper: str) -> object:
    slow = model == "resnet18" and hyper not in RESNET_IN_DEFAULT_GROUP
    return pytest.param(dataset, model, hyper, marks=[pytest.mark.slow] if slow else [])


def expected_refusal(dataset: str, model: str, hyper: str) -> str | None:
    """The start of the one-line refusal a combination must get, or None when it must run."""
    if dataset in FLAT_DATASETS and model in ("lenet", "resnet18"):
        return f"model={model} needs image inputs (C, H, W)"
    if dataset in FLAT_DATASETS and hyper == "distill":  # the flat sets are the regression sets
        return "hyper=distill needs a classification dataset"
    if hyper == "dropout" and model in ("linear", "two_layer_linear"):
        return "hyper=dropout needs a model with hidden activation layers"
    return None


@pytest.mark.parametrize(
    ("dataset", "model", "hyper"),
    [
        marked(*combination)
        for combination in itertools.product(options("dataset"), options("model"), options("hyper"))
        if covered(*combination)
    ],
)
def test_combination_runs_or_is_refused_in_one_line(
    dataset, model, hyper, image_root, tmp_path, monkeypatch
):
    if dataset.startswith("cifar"):  # the tiny files' checksums, as in tests/data/test_datasets.py
        write_readable(dataset, tmp_path / "checksums", monkeypatch, train=24, test=12)
    cfg = config(dataset, model, hyper, image_root)
    refusal = expected_refusal(dataset, model, hyper)
    if refusal is not None:
        with pytest.raises(ConfigError, match=f"^{re.escape(refusal)}") as error:
            build_experiment(cfg)
        assert "\n" not in str(error.value)
        return
    train(cfg, tmp_path)
    metrics = pd.read_csv(tmp_path / "metrics.csv")
    assert metrics["outer_step"].tolist() == list(range(cfg.outer_steps + 1))
    assert metrics["hypergrad_norm"].iloc[1:].notna().all()
