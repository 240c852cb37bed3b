"""The distilled images of a ``hyper=distill`` run as an image grid, one column per class.

python -m experiments.distillation <run dir> <out dir>
"""

from __future__ import annotations

import math
from pathlib import Path

import matplotlib.pyplot as plt
import torch

from experiments.common import read_summary, restore_run, save, script_main

CAPTION = (
    "Dataset distillation: the synthetic training images (one per class) learned from noise; "
    "the network trained on these alone reaches the test error in the title."
)


def image_grid(images: torch.Tensor, input_shape: tuple[int, ...]) -> torch.Tensor:
    """Images (k, *input_shape) as displayable (k, H, W) or (k, H, W, 3), scaled to [0, 1].

    Flat inputs of a square size (digits: 64) are reshaped to √d × √d.
    """
    if len(input_shape) == 1:
        side = math.isqrt(input_shape[0])
        if side * side != input_shape[0]:
            raise ValueError(f"cannot show flat inputs of size {input_shape[0]} as square images")
        images = images.reshape(-1, side, side)
    elif input_shape[0] == 1:
        images = images[:, 0]
    else:
        images = images.permute(0, 2, 3, 1)
    low = images.amin(dim=tuple(range(1, images.dim())), keepdim=True)
    high = images.amax(dim=tuple(range(1, images.dim())), keepdim=True)
    return (images - low) / (high - low).clamp_min(1e-12)


def plot(run_dir: Path, out_dir: Path) -> list[Path]:
    """Draw the checkpoint's synthetic images, labelled by class."""
    exp = restore_run(run_dir)
    images = image_grid(exp.hyper.images.detach().cpu().float(), exp.data.input_shape)
    labels = exp.hyper.labels.tolist()
    per_class = max(labels.count(label) for label in set(labels))
    classes = len(set(labels))
    figure, axes = plt.subplots(
        per_class, classes, figsize=(1.2 * classes, 1.3 * per_class + 0.4), squeeze=False
    )
    for index, (image, label) in enumerate(zip(images, labels, strict=True)):
        axis = axes[index % per_class][label]
        axis.imshow(image.numpy(), cmap="gray")
        axis.set_title(str(label), fontsize=9)
    for axis in axes.flat:
        axis.axis("off")
    final = read_summary(run_dir)["final"]
    figure.suptitle(f"Distilled images (test error {final['test_error']:.3f})")
    return save(figure, out_dir, "distillation")


if __name__ == "__main__":
    script_main(plot, "distillation")
