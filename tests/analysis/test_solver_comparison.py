"""The comparison of inverse-HVP solvers (hpo_cli.analysis.solver_comparison) and hpo-run's
``solver_comparison`` option, against ridge regression's closed form in float64.

On diabetes with a linear model x̃ = [x, 1] and one decay per weight (bias included),
L_t = (1/n)‖X̃w − y‖² + Σ_i c_i w_i² with c = softplus(θ) and L_v = (1/m)‖X̃_v w − y_v‖²:

    H = 2(X̃ᵀX̃/n + diag c),   b = ∂L_v/∂w = (2/m) X̃_vᵀ(X̃_v w − y_v),
    g(x) = dL_v/dθ for the inverse-HVP x = −2 σ(θ) ⊙ w ⊙ x   (σ = softplus'),

so every solver's hypergradient is D x with D = diag(−2σ(θ) ⊙ w): its cosine and relative error
against g* = D H⁻¹b follow from dense linear algebra, with no autograd.
"""

from __future__ import annotations

import pandas as pd
import pytest
import torch
from hydra import compose, initialize_config_module

from hpo_cli.analysis.solver_comparison import budget_sweep, compare_hypergradients, neumann_step
from hpo_cli.data import load_diabetes
from hpo_cli.data.tasks import squared_error
from hpo_cli.hyper import WeightDecay
from hpo_cli.models import Linear
from hpo_cli.runner.cli.command import train
from hpo_cli.runner.config.schemas import register_configs
from hpo_cli.runner.config.validation import validate
from hpo_cli.runner.errors import ConfigError
from hpo_cli.runner.rundir.metrics import SOLVER_COMPARISON_COLUMNS
from tests.support.composed import run_config

DT = torch.float64
BUDGET = 12
DIMENSION = 11  # 10 diabetes features and the bias


def ridge_at_its_minimum():
    """The model at w*(c) = (X̃ᵀX̃/n + diag c)⁻¹ X̃ᵀy/n, its losses and the closed-form pieces."""
    torch.manual_seed(0)
    data = load_diabetes(seed=0).to(torch.device("cpu"), DT)
    model = Linear((10,), 1).to(DT)
    decay = WeightDecay(model, "weight", init=1e-3, init_noise=1.0, data=None)
    ones = torch.ones(len(data.train), 1, dtype=DT)
    inputs = torch.cat([data.train.inputs, ones], dim=1)
    c = torch.cat([x.detach().reshape(-1) for x in decay.coefficients()])
    gram = inputs.T @ inputs / len(inputs)
    weights = torch.linalg.solve(gram + torch.diag(c), inputs.T @ data.train.targets / len(inputs))
    layer = model[1]
    with torch.no_grad():
        layer.weight.copy_(weights[:-1].unsqueeze(0))
        layer.bias.copy_(weights[-1:])

    def losses():
        return (
            decay.training_loss(model, data.train.head(None), squared_error),
            decay.validation_loss(model, data.val.head(None), squared_error),
        )

    val_inputs = torch.cat([data.val.inputs, torch.ones(len(data.val), 1, dtype=DT)], dim=1)
    residual = val_inputs @ weights - data.val.targets
    theta = torch.cat([x.detach().reshape(-1) for x in decay.parameters()])
    closed_form = {
        "H": 2 * (gram + torch.diag(c)),
        "b": 2 * val_inputs.T @ residual / len(val_inputs),
        "D": -2 * torch.sigmoid(theta) * weights,
    }
    return model, decay, losses, closed_form


def measures(estimate: torch.Tensor, exact: torch.Tensor) -> tuple[float, float]:
    cosine = float(estimate @ exact / (estimate.norm() * exact.norm()))
    return cosine, float((estimate - exact).norm() / exact.norm())


def test_the_comparison_matches_the_closed_form():
    model, decay, losses, closed = ridge_at_its_minimum()
    params, hparams = list(model.parameters()), list(decay.parameters())
    H, b, D = closed["H"], closed["b"], closed["D"]
    largest = float(torch.linalg.eigvalsh(H)[-1])
    alpha = neumann_step(losses()[0], params)
    assert alpha == pytest.approx(1 / largest, rel=1e-12)

    rows = compare_hypergradients(
        losses, params, hparams, budget_sweep(["identity", "neumann", "cg"], BUDGET, alpha)
    )
    table = pd.DataFrame([row.__dict__ for row in rows]).set_index(["solver", "k"])
    assert len(table) == 1 + 1 + 2 * (BUDGET + 1)
    assert table.loc[("exact", DIMENSION), "hvps"] == DIMENSION  # one product per column of H

    exact = D * torch.linalg.solve(H, b)
    cosine, error = measures(D * b, exact)  # the identity: x = b
    assert table.loc[("identity", 0), "cosine"] == pytest.approx(cosine, rel=1e-10)
    assert table.loc[("identity", 0), "rel_error"] == pytest.approx(error, rel=1e-10)
    step = torch.eye(DIMENSION, dtype=DT) - alpha * H
    term, partial_sum = alpha * b, torch.zeros_like(b)
    for k in range(BUDGET + 1):  # x_K = α Σ_{k≤K} (I − αH)ᵏ b
        partial_sum, term = partial_sum + term, step @ term
        cosine, error = measures(D * partial_sum, exact)
        row = table.loc[("neumann", k)]
        assert row["hvps"] == k
        assert row["cosine"] == pytest.approx(cosine, rel=1e-9), k
        assert row["rel_error"] == pytest.approx(error, rel=1e-9), k
    # CG: x₀ = 0 leaves g = 0 (weight decay has no direct term); exact in d steps.
    assert table.loc[("cg", 0), ["cosine", "rel_error"]].tolist() == [0.0, 1.0]
    assert table.loc[("cg", DIMENSION), "rel_error"] < 1e-8
    assert table.loc[("cg", DIMENSION), "cosine"] == pytest.approx(1.0, abs=1e-12)
    assert (table.loc["cg", "hvps"] <= table.loc["cg"].index).all()


def test_budget_sweep_refuses_what_it_cannot_build():
    with pytest.raises(ValueError, match="unknown solvers"):
        budget_sweep(["newton"], 3, 0.1)
    with pytest.raises(ValueError, match="neumann needs a step"):
        budget_sweep(["neumann"], 3, None)
    identity_only = budget_sweep(["identity", "cg"], 2, None)
    assert [(c.name, c.k) for c in identity_only] == [
        ("identity", 0),
        ("cg", 0),
        ("cg", 1),
        ("cg", 2),
    ]


def config(*overrides: str):
    return run_config("experiment=inverse_comparison", "plots=false", "outer_steps=2", *overrides)


def test_the_runner_compares_solvers_without_changing_the_run(tmp_path):
    on = ["solver_comparison.every=1", f"solver_comparison.budget={BUDGET}"]
    for name, extra in (("off", ["solver_comparison.every=null"]), ("on", on)):
        (tmp_path / name).mkdir()
        train(config(*extra, "batch_size=50"), tmp_path / name)  # mini-batches: RNG in use
    assert not (tmp_path / "off" / "solver_comparison.csv").exists()
    runs = [pd.read_csv(tmp_path / name / "metrics.csv") for name in ("off", "on")]
    columns = [c for c in runs[0].columns if c != "wall_time_s"]
    pd.testing.assert_frame_equal(runs[0][columns], runs[1][columns])

    table = pd.read_csv(tmp_path / "on" / "solver_comparison.csv")
    assert table.columns.tolist() == SOLVER_COMPARISON_COLUMNS
    assert table.groupby("outer_step").size().to_dict() == {1: 28, 2: 28}
    last = table[table["outer_step"] == 2].set_index(["solver", "k"])
    assert last.loc[("cg", DIMENSION), "rel_error"] < 1e-8
    assert last.loc[("cg", DIMENSION), "cosine"] == pytest.approx(1.0, abs=1e-12)
    neumann = last.loc["neumann", "rel_error"]
    assert neumann[BUDGET] < 0.9 * neumann[0]
    assert (neumann.diff().dropna() <= 1e-12).all(), "Neumann's error grows with K"


def test_a_resumed_run_keeps_one_comparison_per_step(tmp_path):
    overrides = ["solver_comparison.every=1", "solver_comparison.budget=2"]
    train(config(*overrides), tmp_path)
    path = tmp_path / "solver_comparison.csv"
    table = pd.read_csv(path)
    stale = table[table["outer_step"] == 2].assign(outer_step=3)  # written, then killed
    pd.concat([table, stale]).to_csv(path, index=False)
    train(config(*overrides, "outer_steps=3", f"resume={tmp_path}"), tmp_path)
    counts = pd.read_csv(path).groupby("outer_step").size()
    assert counts.to_dict() == {1: 8, 2: 8, 3: 8}


@pytest.mark.parametrize(
    ("override", "key"),
    [
        ("solver_comparison.every=0", "solver_comparison.every=0"),
        ("solver_comparison.budget=-1", "solver_comparison.budget=-1"),
        ("solver_comparison.solvers=[newton]", "solver_comparison.solvers=['newton']"),
        ("solver_comparison.solvers=[]", "solver_comparison.solvers=[]"),
        ("solver_comparison.neumann_alpha=0", "solver_comparison.neumann_alpha=0.0"),
    ],
)
def test_bad_comparison_settings_fail_in_one_line(override, key):
    with pytest.raises(ConfigError) as error:
        validate(config(override))
    assert str(error.value).startswith(f"{key} is invalid") and "\n" not in str(error.value)


def test_a_model_too_big_for_the_dense_reference_is_refused_before_training(tmp_path):
    register_configs()
    with initialize_config_module("hpo_cli.conf", version_base="1.3"):
        cfg = compose("config", ["solver_comparison.every=1", "model.hidden_sizes=[200]"])
    with pytest.raises(ConfigError, match=r"at most 10000 weights and the model has 15010"):
        train(cfg, tmp_path)
    assert not (tmp_path / "metrics.csv").exists()
