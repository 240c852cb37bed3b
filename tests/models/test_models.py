"""Every model option: built for the input shapes of the data sets it supports, outputs
(b, num_outputs), gradients for every weight, its architecture as documented, one-line errors
for inputs it cannot take."""

from __future__ import annotations

import pytest
import torch
import torchvision
from torch import nn

from hpo_cli.models import MLP, LeNet, Linear, TwoLayerLinear, resnet18

FLAT = {"linreg": (2,), "regression1d": (1,), "diabetes": (10,)}
IMAGES = {"digits": (1, 8, 8), "mnist": (1, 28, 28), "cifar10": (3, 32, 32)}
BUILDERS = {
    "linear": Linear,
    "mlp": lambda shape, outputs: MLP(shape, outputs, hidden_sizes=[8]),
    "two_layer_linear": lambda shape, outputs: TwoLayerLinear(shape, outputs, width=6),
    "lenet": LeNet,
    "resnet18": resnet18,
}
CASES = [
    (model, dataset, shape, outputs)
    for model in BUILDERS
    for dataset, shape in (
        {**FLAT, **IMAGES} if model not in ("lenet", "resnet18") else IMAGES
    ).items()
    for outputs in ((1,) if dataset in FLAT else (10, 100))
]


@pytest.mark.parametrize(("model", "dataset", "shape", "outputs"), CASES)
def test_models_map_a_batch_to_outputs_and_train(model, dataset, shape, outputs):
    torch.manual_seed(0)
    network = BUILDERS[model](shape, outputs)
    inputs = torch.randn(3, *shape)
    result = network(inputs)
    assert result.shape == (3, outputs) and torch.isfinite(result).all()
    result.square().sum().backward()
    for name, parameter in network.named_parameters():
        assert parameter.grad is not None and torch.isfinite(parameter.grad).all(), name


@pytest.mark.parametrize("builder", [LeNet, resnet18])
@pytest.mark.parametrize("shape", list(FLAT.values()))
def test_convolutional_models_refuse_flat_inputs_in_one_line(builder, shape):
    with pytest.raises(ValueError, match=r"needs image inputs \(C, H, W\)") as error:
        builder(shape, 1)
    assert "\n" not in str(error.value) and str(shape) in str(error.value)


@pytest.mark.parametrize(
    ("builder", "shape", "message"),
    [
        (LeNet, (1, 3, 3), "model=lenet needs images of at least 4x4"),
        (resnet18, (3, 7, 32), "model=resnet18 needs images of at least 8x8"),
        (lambda s, o: LeNet(s, o, channels=[]), (1, 8, 8), "model.channels=\\[\\]"),
        (lambda s, o: MLP(s, o, activation="swish"), (4,), "model.activation='swish'"),
        (lambda s, o: LeNet(s, o, activation="swish"), (1, 8, 8), "model.activation='swish'"),
        (lambda s, o: TwoLayerLinear(s, o, width=0), (4,), "model.width=0"),
    ],
)
def test_bad_model_options_name_their_key(builder, shape, message):
    with pytest.raises(ValueError, match=message):
        builder(shape, 10)


def test_linear_is_one_affine_map_of_the_flattened_input():
    model = Linear((2, 3), 4)
    layer = model[1]
    inputs = torch.randn(5, 2, 3)
    expected = inputs.reshape(5, 6) @ layer.weight.T + layer.bias
    torch.testing.assert_close(model(inputs), expected)
    assert [p.shape for p in Linear((2, 3), 4, bias=False).parameters()] == [(4, 6)]


def test_two_layer_linear_is_w2_w1_x_without_biases():
    model = TwoLayerLinear((5,), 5, width=100)
    w1, w2 = (p for p in model.parameters())
    assert (w1.shape, w2.shape) == ((100, 5), (5, 100))  # seed 004's widths: no other weights
    inputs = torch.randn(7, 5)
    torch.testing.assert_close(model(inputs), inputs @ (w2 @ w1).T)


def test_mlp_widths_follow_hidden_sizes():
    def widths(model: nn.Module) -> list[tuple[int, int]]:
        return [(m.in_features, m.out_features) for m in model if isinstance(m, nn.Linear)]

    assert widths(MLP((1, 28, 28), 10)) == [(784, 784), (784, 10)]  # seed 001: 784-784-10
    relu = MLP((1,), 1, hidden_sizes=[8, 4], activation="relu")  # seed 000: 1-8-4-1 ReLU
    assert widths(relu) == [(1, 8), (8, 4), (4, 1)]
    assert sum(isinstance(m, nn.ReLU) for m in relu) == 2


@pytest.mark.parametrize(
    ("shape", "flattened"),
    [((1, 8, 8), 16 * 2 * 2), ((1, 28, 28), 16 * 7 * 7), ((3, 32, 32), 1024)],
)
def test_lenet_flattened_size_follows_the_image_size(shape, flattened):
    model = LeNet(shape, 10)
    convolutions = [m for m in model if isinstance(m, nn.Conv2d)]
    assert [(c.in_channels, c.out_channels, c.kernel_size) for c in convolutions] == [
        (shape[0], 6, (5, 5)),
        (6, 16, (5, 5)),
    ]
    linears = [(m.in_features, m.out_features) for m in model if isinstance(m, nn.Linear)]
    assert linears == [(flattened, 120), (120, 84), (84, 10)]


def test_lenet_channels_and_widths_are_configurable():
    model = LeNet((3, 16, 16), 5, channels=[4, 8, 12], hidden_sizes=[20])
    assert model(torch.randn(2, 3, 16, 16)).shape == (2, 5)
    linears = [(m.in_features, m.out_features) for m in model if isinstance(m, nn.Linear)]
    assert linears == [(12 * 2 * 2, 20), (20, 5)]


def test_resnet18_has_the_cifar_stem_and_the_requested_classes():
    model = resnet18((1, 28, 28), 100)
    assert (model.conv1.in_channels, model.conv1.kernel_size, model.conv1.stride) == (
        1,
        (3, 3),
        (1, 1),
    )
    assert isinstance(model.maxpool, nn.Identity)
    assert model.fc.out_features == 100
    # the rest is torchvision's resnet18: same parameter count apart from the stem
    reference = torchvision.models.resnet18(weights=None, num_classes=100)
    stem_difference = reference.conv1.weight.numel() - model.conv1.weight.numel()
    count = sum(p.numel() for p in model.parameters())
    assert count == sum(p.numel() for p in reference.parameters()) - stem_difference
