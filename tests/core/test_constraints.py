"""Constraints c = f(θ): round trips, domain checks, constrained_parameter (float64)."""

import math

import pytest
import torch

from hpo_cli import CONSTRAINTS, constrained_parameter, constraint

DT = torch.float64

ROUND_TRIP_VALUES = {
    "softplus": [1e-300, 1e-8, 1e-3, 0.5, 1.0, 5.0, 19.9, 40.0, 1e3, 1e6, 1e300],
    "exp": [1e-300, 1e-5, 1.0, 1e5, 1e300],
    "sigmoid": [1e-12, 1e-3, 0.5, 0.999, 1 - 1e-9],
    "identity": [-1e300, -3.5, 0.0, 2.0, 1e300],
}
ROUND_TRIP_CASES = [(name, v) for name, values in ROUND_TRIP_VALUES.items() for v in values]


def test_the_four_constraints_are_registered():
    assert set(CONSTRAINTS) == {"softplus", "exp", "sigmoid", "identity"}


@pytest.mark.parametrize(("name", "value"), ROUND_TRIP_CASES)
def test_forward_of_inverse_is_identity(name, value):
    f = constraint(name)
    c = torch.tensor(value, dtype=DT)
    assert float(f(f.inverse(c))) == pytest.approx(value, rel=1e-12, abs=0)


@pytest.mark.parametrize("value", [20.5, 25.0, 30.0])
def test_softplus_round_trip_is_float64_accurate_just_above_torch_threshold(value):
    """F.softplus returns θ itself once θ > 20 (its default `threshold`, tuned for float32),
    dropping log(1 + e^−θ) ≈ e^−θ ~ 1e−9: in float64 the round trip is then off by ~1e−10
    relative although _inverse_softplus is exact there."""
    f = constraint("softplus")
    c = torch.tensor(value, dtype=DT)
    assert float(f(f.inverse(c))) == pytest.approx(value, rel=1e-14, abs=0)


@pytest.mark.parametrize(("name", "raw"), [("softplus", 50.0), ("softplus", -50.0)])
def test_inverse_of_forward_is_identity_for_large_raw_values(name, raw):
    f = constraint(name)
    theta = torch.tensor(raw, dtype=DT)
    assert float(f.inverse(f(theta))) == pytest.approx(raw, rel=1e-12)


@pytest.mark.parametrize(
    ("name", "raw", "expected"),
    [
        ("softplus", 0.0, math.log(2.0)),
        ("softplus", 1.0, math.log1p(math.e)),
        ("exp", 2.0, math.exp(2.0)),
        ("sigmoid", 0.0, 0.5),
        ("sigmoid", 2.0, 1 / (1 + math.exp(-2.0))),
        ("identity", -1.5, -1.5),
    ],
)
def test_forward_matches_its_formula(name, raw, expected):
    assert float(constraint(name)(torch.tensor(raw, dtype=DT))) == pytest.approx(
        expected, rel=1e-15
    )


def test_softplus_inverse_is_finite_for_huge_values():
    theta = constraint("softplus").inverse(torch.tensor([1e300, 1e6], dtype=DT))
    assert bool(torch.isfinite(theta).all())


@pytest.mark.parametrize(
    ("name", "value"),
    [
        ("softplus", 0.0),
        ("softplus", -1.0),
        ("exp", 0.0),
        ("exp", -1e-3),
        ("sigmoid", 0.0),
        ("sigmoid", 1.0),
        ("sigmoid", 1.5),
        ("identity", math.inf),
        ("identity", math.nan),
        ("softplus", math.nan),
    ],
)
def test_invalid_initial_values_raise(name, value):
    with pytest.raises(ValueError, match=name):
        constraint(name).inverse(torch.tensor(value, dtype=DT))


def test_one_invalid_entry_among_valid_ones_raises():
    with pytest.raises(ValueError):
        constraint("exp").inverse(torch.tensor([0.1, 2.0, -1.0], dtype=DT))


def test_unknown_constraint_name_raises():
    with pytest.raises(ValueError, match="unknown constraint"):
        constraint("relu")


@pytest.mark.parametrize("name", ["softplus", "exp", "sigmoid", "identity"])
def test_constrained_parameter_maps_to_its_value(name):
    theta = constrained_parameter(0.3, name, (4,), dtype=DT)
    assert isinstance(theta, torch.nn.Parameter)
    assert theta.requires_grad
    assert theta.shape == (4,)
    assert theta.dtype == DT
    torch.testing.assert_close(
        constraint(name)(theta.detach()), torch.full((4,), 0.3, dtype=DT), rtol=1e-14, atol=0
    )


def test_constrained_parameter_broadcasts_a_tensor_value():
    value = torch.tensor([0.1, 0.2, 0.7], dtype=DT)
    theta = constrained_parameter(value, "sigmoid", (2, 3), dtype=DT)
    torch.testing.assert_close(
        torch.sigmoid(theta.detach()), value.expand(2, 3), rtol=1e-14, atol=0
    )


def test_constrained_parameter_is_scalar_by_default():
    assert constrained_parameter(1.0, "exp").shape == ()


def test_constrained_parameter_rejects_invalid_value():
    with pytest.raises(ValueError):
        constrained_parameter(-0.5, "softplus", dtype=DT)
