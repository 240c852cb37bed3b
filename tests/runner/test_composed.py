"""tests/support/composed.py's shortcut gives the configuration Hydra composes, for the override
lists the tests use it with (groups, experiments, lists, null, booleans, nested keys)."""

from __future__ import annotations

import pytest
from omegaconf import OmegaConf
from omegaconf.errors import ConfigAttributeError

from tests.support.composed import run_config
from tests.support.option_configs import hydra_compose

OVERRIDE_LISTS = [
    [],
    ["outer_steps=4", "model.hidden_sizes=[8]", "warmup_inner_steps=50", "plots=false"],
    ["solver=exact", "hyper=weight_decay", "dtype=float64", "hyper.init=0.05", "optimizer=sgd"],
    ["solver=cg", "solver.max_iter=2", "solver.damping=1.0", "solver.preconditioner=hutchinson"],
    ["experiment=neumann_divergence", "plots=false", "outer_steps=2", "warmup_inner_steps=300"],
    ["experiment=hypergradient_quality", "solver_comparison.horizons=[1,2]", "solver=identity"],
    [
        "early_stopping.patience=2",
        "tracking.trackers=[tensorboard]",
        "hessian_every=null",
        "seed=3",
    ],
    ["model.hidden_sizes=[16]", "model=mlp", "dataset=diabetes", "dataset.train_size=20"],
    ["model=resnet18", "dataset=cifar10", "hyper=augment_net", "device=auto"],
    ["hyper=distill", "hyper.init=noise", "hyper_optimizer=sgd", "hyper_optimizer.lr=1.0"],
    ["optimizer=hessian_free", "optimizer.cg_max_iter=20", "solver=unrolled", "solver.steps=3"],
    ["dataset=mnist", "dataset.data_dir=/tmp/x", "model=lenet", "hyper=dropout"],
]


@pytest.mark.parametrize("overrides", OVERRIDE_LISTS, ids=lambda o: " ".join(o) or "default")
def test_the_shortcut_composes_what_hydra_composes(overrides):
    expected = hydra_compose(*overrides)
    assert OmegaConf.to_yaml(run_config(*overrides)) == OmegaConf.to_yaml(expected)


def test_a_misspelt_key_still_fails():
    with pytest.raises(ConfigAttributeError, match="Key 'term' not in 'NeumannConfig'"):
        run_config("solver.term=5")
