"""Image classification sets read by torchvision: MNIST, Fashion-MNIST, CIFAR-10, CIFAR-100.

Files live under ``data_dir`` (default ``data/``, relative to the working directory) in
torchvision's layout (``MNIST/raw/train-images-idx3-ubyte``, ``cifar-10-batches-py/...``);
``download=True`` fetches them once, for users with internet. Validation is carved from the
official training set by a shuffle with the run's seed; test is the official test set, or a
seeded subsample of it. Inputs are (n, C, H, W) float32, normalised by ``normalize``:

* ``"standardize"``: per channel, minus the mean and over the standard deviation of the pixels
  of the *training split* (the examples actually drawn, not the whole official set);
* ``"symmetric"``: the fixed map pixel/127.5 − 1 onto [−1, 1], as in seed 001.
"""

from __future__ import annotations

from importlib import import_module
from pathlib import Path
from typing import TYPE_CHECKING

import torch

from hpo_cli.data.splits import Split, Splits

if TYPE_CHECKING:  # torchvision is imported only when an image set is loaded (start-up time)
    from torchvision.datasets import VisionDataset

NORMALIZATIONS = ("standardize", "symmetric")


def _location(kind: type[VisionDataset]) -> tuple[Path, list[str]]:
    """The folder under the data root that torchvision reads ``kind`` from, and its files."""
    if hasattr(kind, "resources"):  # MNIST and its subclasses
        return Path(kind.__name__, "raw"), [Path(name).stem for name, _ in kind.resources]
    names = [name for name, _ in kind.train_list + kind.test_list] + [kind.meta["filename"]]
    return Path(kind.base_folder), names


def _read(
    kind: type[VisionDataset], name: str, data_dir: str, download: bool, train: bool
) -> VisionDataset:
    """torchvision's reader for one official split; a one-line ValueError when it cannot,
    naming the file when an MNIST-style IDX file is damaged."""
    try:
        return kind(str(Path(data_dir).expanduser()), train=train, download=download)
    except (RuntimeError, OSError, AssertionError, ValueError, IndexError) as error:
        subfolder, files = _location(kind)
        folder = Path(data_dir).expanduser().resolve() / subfolder
        damaged = _damaged_idx_file(kind, folder, files)
        if damaged is not None:
            raise ValueError(
                f"dataset={name}: {damaged} is not a valid IDX file (damaged, or not "
                f"{kind.__name__} data); replace it, or delete it and fetch it again with "
                "dataset.download=true"
            ) from error
        if download:
            reason = str(error).strip().splitlines()[0] if str(error).strip() else repr(error)
            raise ValueError(
                f"dataset={name}: downloading into {folder} failed ({reason}); check the "
                f"internet connection, or put {', '.join(files)} there yourself"
            ) from error
        raise ValueError(
            f"dataset={name}: files not found or corrupted in {folder} (expected "
            f"{', '.join(files)}); fetch them once with dataset.download=true (needs internet), "
            f"or set dataset.data_dir to the folder that holds {subfolder}/"
        ) from error


def _damaged_idx_file(kind: type[VisionDataset], folder: Path, files: list[str]) -> Path | None:
    """The first existing IDX file of an MNIST-style ``kind`` in ``folder`` that torchvision's
    IDX reader rejects, or ``None`` (CIFAR, missing files, all readable)."""
    if not hasattr(kind, "resources"):
        return None
    from torchvision.datasets.mnist import read_sn3_pascalvincent_tensor

    for path in (folder / name for name in files):
        if not path.exists():
            continue
        try:
            read_sn3_pascalvincent_tensor(str(path), strict=False)
        except (AssertionError, ValueError, RuntimeError, IndexError, OSError):
            return path
    return None


def _images(dataset: VisionDataset) -> tuple[torch.Tensor, torch.Tensor]:
    """uint8 images (n, C, H, W) and long targets (n,) of a torchvision data set."""
    data = torch.as_tensor(dataset.data)
    data = data.unsqueeze(1) if data.ndim == 3 else data.permute(0, 3, 1, 2)  # MNIST | CIFAR HWC
    return data.contiguous(), torch.as_tensor(dataset.targets, dtype=torch.long)


def _check_sizes(
    name: str, train_size: int, val_size: int, test_size: int | None, available: tuple[int, int]
) -> None:
    for key, size in (("train_size", train_size), ("val_size", val_size), ("test_size", test_size)):
        if size is not None and size <= 0:
            raise ValueError(f"dataset.{key}={size} is invalid: must be > 0")
    if train_size + val_size > available[0]:
        raise ValueError(
            f"dataset sizes train_size={train_size} + val_size={val_size} ask for more than the "
            f"{available[0]} official training examples of {name}"
        )
    if test_size is not None and test_size > available[1]:
        raise ValueError(
            f"dataset.test_size={test_size} asks for more than the {available[1]} official test "
            f"examples of {name}"
        )


def load_images(
    class_name: str,
    name: str,
    train_size: int,
    val_size: int,
    test_size: int | None,
    data_dir: str,
    download: bool,
    normalize: str,
    seed: int,
) -> Splits:
    """Train/validation/test splits of one torchvision image set (see the module docstring).

    Args:
        class_name: the torchvision.datasets class (``"MNIST"``, ``"CIFAR10"``, ...).
        name: the option's name, for messages.
        test_size: ``None``: the whole official test set.
        seed: shuffles the official training set and draws the test subsample.
    """
    if normalize not in NORMALIZATIONS:
        raise ValueError(
            f"dataset.normalize={normalize!r} is unknown; choose one of {', '.join(NORMALIZATIONS)}"
        )
    kind = getattr(import_module("torchvision.datasets"), class_name)
    official_train = _read(kind, name, data_dir, download, train=True)
    official_test = _read(kind, name, data_dir, download, train=False)
    train_images, train_targets = _images(official_train)
    test_images, test_targets = _images(official_test)
    _check_sizes(name, train_size, val_size, test_size, (len(train_targets), len(test_targets)))

    generator = torch.Generator().manual_seed(seed)
    order = torch.randperm(len(train_targets), generator=generator)
    train_index, val_index = order[:train_size], order[train_size : train_size + val_size]
    test_index = (
        torch.arange(len(test_targets))
        if test_size is None
        else torch.randperm(len(test_targets), generator=generator)[:test_size]
    )
    if normalize == "standardize":
        pixels = train_images[train_index].float()
        mean = pixels.mean(dim=(0, 2, 3), keepdim=True)
        std = pixels.std(dim=(0, 2, 3), keepdim=True, correction=0)
        std = torch.where(std > 0, std, 1.0)
    else:
        mean, std = torch.tensor(127.5), torch.tensor(127.5)

    def split(images: torch.Tensor, targets: torch.Tensor, index: torch.Tensor) -> Split:
        return Split((images[index].float() - mean) / std, targets[index])

    return Splits(
        split(train_images, train_targets, train_index),
        split(train_images, train_targets, val_index),
        split(test_images, test_targets, test_index),
        "classification",
        len(official_train.classes),
        tuple(train_images.shape[1:]),
    )


def load_mnist(
    train_size: int = 50000,
    val_size: int = 10000,
    test_size: int | None = None,
    data_dir: str = "data",
    download: bool = False,
    normalize: str = "standardize",
    *,
    seed: int,
) -> Splits:
    """MNIST digits: 60,000 training and 10,000 test images (1, 28, 28), 10 classes."""
    return load_images(
        "MNIST",
        "mnist",
        train_size,
        val_size,
        test_size,
        data_dir,
        download,
        normalize,
        seed,
    )


def load_fashion_mnist(
    train_size: int = 50000,
    val_size: int = 10000,
    test_size: int | None = None,
    data_dir: str = "data",
    download: bool = False,
    normalize: str = "standardize",
    *,
    seed: int,
) -> Splits:
    """Fashion-MNIST: 60,000 training and 10,000 test images (1, 28, 28), 10 classes."""
    return load_images(
        "FashionMNIST",
        "fashion_mnist",
        train_size,
        val_size,
        test_size,
        data_dir,
        download,
        normalize,
        seed,
    )


def load_cifar10(
    train_size: int = 45000,
    val_size: int = 5000,
    test_size: int | None = None,
    data_dir: str = "data",
    download: bool = False,
    normalize: str = "standardize",
    *,
    seed: int,
) -> Splits:
    """CIFAR-10: 50,000 training and 10,000 test images (3, 32, 32), 10 classes."""
    return load_images(
        "CIFAR10",
        "cifar10",
        train_size,
        val_size,
        test_size,
        data_dir,
        download,
        normalize,
        seed,
    )


def load_cifar100(
    train_size: int = 45000,
    val_size: int = 5000,
    test_size: int | None = None,
    data_dir: str = "data",
    download: bool = False,
    normalize: str = "standardize",
    *,
    seed: int,
) -> Splits:
    """CIFAR-100: 50,000 training and 10,000 test images (3, 32, 32), 100 fine classes."""
    return load_images(
        "CIFAR100",
        "cifar100",
        train_size,
        val_size,
        test_size,
        data_dir,
        download,
        normalize,
        seed,
    )
