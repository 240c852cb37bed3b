"""Tiny image data sets in the real on-disk formats that torchvision's readers parse.

MNIST and Fashion-MNIST: uncompressed IDX files in ``<root>/<Class>/raw/`` (torchvision checks
only that they exist). CIFAR: pickled batches in ``<root>/cifar-10-batches-py/`` or
``<root>/cifar-100-python/``, which torchvision checks against the md5 sums of the official
files: :func:`accept_cifar_checksums` points those sums at the tiny files, so the real check
still runs (and a changed file still fails it).
"""

from __future__ import annotations

import hashlib
import pickle
import struct
from pathlib import Path

import numpy as np
import pytest
from torchvision import datasets

SHAPES = {"mnist": (1, 28, 28), "fashion_mnist": (1, 28, 28), "cifar10": (3, 32, 32)}
SHAPES["cifar100"] = SHAPES["cifar10"]
CLASSES = {"mnist": 10, "fashion_mnist": 10, "cifar10": 10, "cifar100": 100}
KINDS = {
    "mnist": datasets.MNIST,
    "fashion_mnist": datasets.FashionMNIST,
    "cifar10": datasets.CIFAR10,
    "cifar100": datasets.CIFAR100,
}


def _images(count: int, shape: tuple[int, ...], classes: int, seed: int):
    """Random uint8 images (count, C, H, W) and labels (count,) covering every class."""
    rng = np.random.default_rng(seed)
    images = rng.integers(0, 256, size=(count, *shape), dtype=np.uint8)
    labels = (np.arange(count) % classes).astype(np.uint8)
    return images, labels


def _write_idx(path: Path, array: np.ndarray) -> None:
    """IDX: magic 0x00000800 | ndim (uint8 data), big-endian int32 dims, then the bytes."""
    header = struct.pack(">I", 0x0800 + array.ndim) + struct.pack(f">{array.ndim}I", *array.shape)
    path.write_bytes(header + array.tobytes())


def _pickle(path: Path, entry: dict) -> None:
    with path.open("wb") as file:
        pickle.dump(entry, file)


def write(name: str, root: Path, train: int = 64, test: int = 48):
    """Write data set ``name`` with ``train`` and ``test`` images under ``root``.

    Returns ((train images (n, C, H, W), train labels), (test images, test labels)) as written.
    """
    shape, classes = SHAPES[name], CLASSES[name]
    train_set = _images(train, shape, classes, seed=1)
    test_set = _images(test, shape, classes, seed=2)
    if name in ("mnist", "fashion_mnist"):
        raw = root / KINDS[name].__name__ / "raw"
        raw.mkdir(parents=True)
        for prefix, (images, labels) in (("train", train_set), ("t10k", test_set)):
            _write_idx(raw / f"{prefix}-images-idx3-ubyte", images[:, 0])
            _write_idx(raw / f"{prefix}-labels-idx1-ubyte", labels)
        return train_set, test_set
    kind = KINDS[name]
    folder = root / kind.base_folder
    folder.mkdir(parents=True)
    label_key = "labels" if name == "cifar10" else "fine_labels"

    def entry(images: np.ndarray, labels: np.ndarray) -> dict:
        # CIFAR rows are 3072 bytes: the red plane, then green, then blue (row-major 32x32).
        return {"data": images.reshape(len(images), -1), label_key: labels.tolist()}

    parts = np.array_split(np.arange(train), len(kind.train_list))
    for (file_name, _), part in zip(kind.train_list, parts, strict=True):
        _pickle(folder / file_name, entry(train_set[0][part], train_set[1][part]))
    _pickle(folder / kind.test_list[0][0], entry(*test_set))
    names = [f"class_{k}" for k in range(classes)]
    _pickle(folder / kind.meta["filename"], {kind.meta["key"]: names})
    return train_set, test_set


def accept_cifar_checksums(monkeypatch: pytest.MonkeyPatch, name: str, root: Path) -> None:
    """Make torchvision's md5 checks for ``name`` expect the tiny files under ``root``."""
    kind = KINDS[name]
    folder = root / kind.base_folder

    def md5(file_name: str) -> str:
        return hashlib.md5((folder / file_name).read_bytes()).hexdigest()

    monkeypatch.setattr(kind, "train_list", [[f, md5(f)] for f, _ in kind.train_list])
    monkeypatch.setattr(kind, "test_list", [[f, md5(f)] for f, _ in kind.test_list])
    monkeypatch.setattr(kind, "meta", {**kind.meta, "md5": md5(kind.meta["filename"])})


def write_readable(name: str, root: Path, monkeypatch: pytest.MonkeyPatch, **sizes: int):
    """:func:`write`, then (for CIFAR) :func:`accept_cifar_checksums`; returns what was written."""
    written = write(name, root, **sizes)
    if name.startswith("cifar"):
        accept_cifar_checksums(monkeypatch, name, root)
    return written


def write_image_folder(root: Path, classes: int = 3, per_class: int = 12, size: int = 8) -> Path:
    """An ``ImageFolder`` tree of small random RGB PNGs: ``root/class_<k>/<i>.png``."""
    from PIL import Image

    rng = np.random.default_rng(0)
    for k in range(classes):
        folder = root / f"class_{k}"
        folder.mkdir(parents=True)
        for i in range(per_class):
            pixels = rng.integers(0, 256, size=(size, size, 3), dtype=np.uint8)
            Image.fromarray(pixels).save(folder / f"{i}.png")
    return root
