"""ResNet-18 with the CIFAR stem, from torchvision (random initialisation, no download)."""

from __future__ import annotations

from torch import nn

from hpo_cli.models.shapes import image_shape


def resnet18(input_shape: tuple[int, ...], num_outputs: int) -> nn.Module:
    """``torchvision.models.resnet18(weights=None, num_classes=num_outputs)`` with the CIFAR stem.

    Maps images (b, C, H, W), H, W ≥ 8, to outputs (b, num_outputs). The first convolution is
    3×3 with stride 1 on C input channels and the max-pool is dropped (the usual choice for
    32×32 images), so the network downsamples 8× before its adaptive average pool.

    Its BatchNorm layers make one example's output depend on the rest of the batch in training
    mode, and update their running statistics at every training-mode forward pass.

    Args:
        input_shape: (C, H, W) of one image.
        num_outputs: classes (or 1 for regression).
    """
    import torchvision  # here, not at the top: it adds a second to every hpo-run start-up

    channels = image_shape(input_shape, "resnet18", 8)[0]
    model = torchvision.models.resnet18(weights=None, num_classes=num_outputs)
    model.conv1 = nn.Conv2d(channels, 64, kernel_size=3, stride=1, padding=1, bias=False)
    nn.init.kaiming_normal_(model.conv1.weight, mode="fan_out", nonlinearity="relu")
    model.maxpool = nn.Identity()
    return model
