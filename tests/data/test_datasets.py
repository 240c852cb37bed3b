"""Every data set option: sizes, disjoint splits, determinism per seed, shapes and dtypes; the
image sets through torchvision's real readers on tiny files in the official formats; the
regression sets against the model that generated them; one-line errors; short runs."""

from __future__ import annotations

from urllib.error import URLError

import numpy as np
import pandas as pd
import pytest
import torch
from hydra import compose, initialize_config_module

from hpo_cli.data import (
    Splits,
    bundled,
    load_cifar10,
    load_cifar100,
    load_diabetes,
    load_digits,
    load_fashion_mnist,
    load_linreg,
    load_mnist,
    load_regression1d,
)
from hpo_cli.data.bundled import bundled_table
from hpo_cli.runner.cli.command import train
from hpo_cli.runner.config.schemas import register_configs
from tests.support.image_files import CLASSES, SHAPES, write, write_readable
from tests.support.tiny_runs import BRIEF

IMAGE_LOADERS = {
    "mnist": load_mnist,
    "fashion_mnist": load_fashion_mnist,
    "cifar10": load_cifar10,
    "cifar100": load_cifar100,
}
OFFLINE_LOADERS = {
    # name: (loader, input shape, task, outputs)
    "digits": (load_digits, (1, 8, 8), "classification", 10),
    "diabetes": (load_diabetes, (10,), "regression", 1),
    "linreg": (load_linreg, (2,), "regression", 1),
    "regression1d": (load_regression1d, (1,), "regression", 1),
}


def row_bytes(inputs: torch.Tensor) -> list[bytes]:
    """Each example's values as bytes, in order: a hashable key for comparing examples."""
    return [row.numpy().tobytes() for row in inputs.reshape(len(inputs), -1)]


def rows(inputs: torch.Tensor) -> set[bytes]:
    return set(row_bytes(inputs))


def check_splits(data: Splits, sizes: tuple[int, int, int], shape, task: str, outputs: int):
    """Sizes, shapes, dtypes and pairwise-disjoint splits (no input appears in two splits)."""
    assert (data.input_shape, data.task, data.num_outputs) == (shape, task, outputs)
    target_dtype = torch.long if task == "classification" else torch.float32
    for split, size in zip((data.train, data.val, data.test), sizes, strict=True):
        assert len(split) == size
        assert split.inputs.shape == (size, *shape)
        assert split.inputs.dtype == torch.float32 and split.targets.dtype == target_dtype
        assert torch.isfinite(split.inputs).all()
        assert len(rows(split.inputs)) == size  # no duplicates inside a split
    train, val, test = (rows(s.inputs) for s in (data.train, data.val, data.test))
    assert not train & val and not train & test and not val & test
    if task == "classification":
        assert int(data.train.targets.min()) >= 0 and int(data.train.targets.max()) < outputs


def assert_same(first: Splits, second: Splits) -> None:
    for a, b in zip(
        (first.train, first.val, first.test), (second.train, second.val, second.test), strict=True
    ):
        assert torch.equal(a.inputs, b.inputs) and torch.equal(a.targets, b.targets)


# ---------------------------------------------------------------- offline sets
@pytest.mark.parametrize("name", OFFLINE_LOADERS)
def test_offline_sets_have_the_requested_disjoint_splits(name):
    loader, shape, task, outputs = OFFLINE_LOADERS[name]
    data = loader(train_size=30, val_size=20, test_size=40, seed=3)
    check_splits(data, (30, 20, 40), shape, task, outputs)


@pytest.mark.parametrize("name", OFFLINE_LOADERS)
def test_offline_sets_are_deterministic_per_seed(name):
    loader = OFFLINE_LOADERS[name][0]
    assert_same(
        loader(train_size=10, val_size=10, test_size=10, seed=4),
        loader(train_size=10, val_size=10, test_size=10, seed=4),
    )
    other = loader(train_size=10, val_size=10, test_size=10, seed=5)
    assert not torch.equal(
        loader(train_size=10, val_size=10, test_size=10, seed=4).train.inputs, other.train.inputs
    )


@pytest.mark.parametrize(
    ("loader", "kwargs", "key"),
    [
        (load_diabetes, {"train_size": 400, "val_size": 100}, "442 examples of diabetes"),
        (load_diabetes, {"val_size": 0}, "dataset.val_size=0"),
        (load_linreg, {"test_size": 0}, "dataset.test_size=0"),
        (load_linreg, {"features": 3}, "dataset.weights has 2 entries but dataset.features=3"),
        (load_linreg, {"noise": -1.0}, "dataset.noise=-1.0"),
        (load_regression1d, {"train_size": -5}, "dataset.train_size=-5"),
    ],
)
def test_bad_regression_options_name_their_key(loader, kwargs, key):
    with pytest.raises(ValueError, match=key):
        loader(**kwargs, seed=0)


def test_the_bundled_tables_are_scikit_learns_own_data():
    """hpo-cli reads scikit-learn's digits and diabetes files without importing scikit-learn
    (about two seconds of every hpo-run start): the same arrays as scikit-learn's loaders."""
    from sklearn.datasets import load_diabetes as sklearn_diabetes
    from sklearn.datasets import load_digits as sklearn_digits

    digits = sklearn_digits()
    table = bundled_table("digits.csv.gz", delimiter=",")
    np.testing.assert_array_equal(table[:, :-1], digits.data)
    np.testing.assert_array_equal(table[:, -1], digits.target)
    inputs, targets = sklearn_diabetes(return_X_y=True, scaled=False)
    np.testing.assert_array_equal(bundled_table("diabetes_data_raw.csv.gz"), inputs)
    np.testing.assert_array_equal(bundled_table("diabetes_target.csv.gz"), targets)
    data = load_digits(train_size=1000, val_size=797, seed=0)
    everything = torch.cat([data.train.inputs, data.val.inputs]).reshape(-1, 64)
    expected = torch.as_tensor(digits.data, dtype=torch.float32) / 8.0 - 1.0
    assert rows(everything) == rows(expected)


def test_a_missing_or_damaged_bundled_file_is_one_line(tmp_path, monkeypatch):
    with pytest.raises(ValueError, match=r"^scikit-learn.s bundled data file nope\.csv\.gz is"):
        bundled_table("nope.csv.gz")
    (tmp_path / "digits.csv.gz").write_bytes(b"\x1f\x8b not gzip")
    monkeypatch.setattr(bundled, "sklearn_data_folder", lambda: tmp_path)
    with pytest.raises(ValueError, match=r"digits\.csv\.gz cannot be read") as error:
        load_digits(seed=0)
    assert "\n" not in str(error.value)
    monkeypatch.setattr(bundled, "sklearn_data_folder", lambda: None)
    with pytest.raises(ValueError, match=r"is missing \(scikit-learn is not installed\)"):
        load_diabetes(seed=0)


def test_diabetes_is_standardised_with_training_statistics():
    data = load_diabetes(train_size=200, val_size=100, seed=0)
    assert len(data.test) == 442 - 300
    torch.testing.assert_close(data.train.inputs.mean(0), torch.zeros(10), atol=1e-5, rtol=0)
    torch.testing.assert_close(data.train.inputs.std(0, correction=0), torch.ones(10))
    assert abs(float(data.train.targets.mean())) < 1e-5
    assert float(data.train.targets.std(correction=0)) == pytest.approx(1.0, rel=1e-5)
    # the other splits use the training split's statistics, not their own
    assert abs(float(data.val.targets.mean())) > 1e-3


def least_squares(inputs: torch.Tensor, targets: torch.Tensor) -> torch.Tensor:
    """[w, intercept] minimising ‖[X 1][w; c] − y‖², in float64."""
    design = torch.cat([inputs, torch.ones(len(inputs), 1)], dim=1).double()
    return torch.linalg.lstsq(design, targets.double().unsqueeze(1)).solution.squeeze(1)


def test_linreg_least_squares_recovers_the_true_weights():
    data = load_linreg(train_size=4000, val_size=10, test_size=10, seed=0)
    fit = least_squares(data.train.inputs, data.train.targets)
    # standard error of each coefficient ≈ noise / sqrt(n) ≈ 0.016: 0.08 is five of them
    torch.testing.assert_close(
        fit, torch.tensor([3.0, 1.0, 0.0], dtype=torch.float64), atol=0.08, rtol=0
    )
    residual = data.train.targets - data.train.inputs @ torch.tensor([3.0, 1.0])
    assert float(residual.std()) == pytest.approx(1.0, abs=0.05)  # unit noise


def test_linreg_draws_weights_from_the_seed_when_none_are_given():
    first = load_linreg(features=5, weights=None, noise=0.0, train_size=50, seed=1)
    fit = least_squares(first.train.inputs, first.train.targets)
    assert fit.shape == (6,) and abs(float(fit[-1])) < 1e-4  # noiseless: exact, no intercept
    again = load_linreg(features=5, weights=None, noise=0.0, train_size=50, seed=1)
    other = load_linreg(features=5, weights=None, noise=0.0, train_size=50, seed=2)
    assert torch.allclose(fit, least_squares(again.train.inputs, again.train.targets))
    assert not torch.allclose(fit, least_squares(other.train.inputs, other.train.targets), atol=0.1)


def test_regression1d_is_seed_000s_line():
    data = load_regression1d(seed=0)
    assert (len(data.train), len(data.val), len(data.test)) == (1000, 1000, 1000)
    for split in (data.train, data.val):
        slope, intercept = least_squares(split.inputs, split.targets)
        assert float(slope) == pytest.approx(2.0, abs=0.02)
        assert float(intercept) == pytest.approx(1.0, abs=0.02)
        residual = split.targets - 2 * split.inputs[:, 0] - 1
        assert float(residual.std()) == pytest.approx(0.1, rel=0.1)


# ---------------------------------------------------------------- image sets
@pytest.mark.parametrize("name", IMAGE_LOADERS)
def test_image_sets_read_the_official_formats(name, tmp_path, monkeypatch):
    """Tiny files in the real formats through torchvision's readers: validation carved from the
    official training set, test from the official test set, pixels in (C, H, W) order, labels
    kept with their images."""
    (train_images, train_labels), (test_images, test_labels) = write_readable(
        name, tmp_path, monkeypatch
    )
    data = IMAGE_LOADERS[name](
        train_size=20,
        val_size=12,
        test_size=30,
        data_dir=str(tmp_path),
        normalize="symmetric",
        seed=0,
    )
    check_splits(data, (20, 12, 30), SHAPES[name], "classification", CLASSES[name])
    official = {
        "train": dict(zip(row_bytes(torch.as_tensor(train_images)), train_labels, strict=True)),
        "test": dict(zip(row_bytes(torch.as_tensor(test_images)), test_labels, strict=True)),
    }
    for split, source in ((data.train, "train"), (data.val, "train"), (data.test, "test")):
        pixels = ((split.inputs + 1) * 127.5).round().to(torch.uint8)  # undo pixel/127.5 − 1
        for image, label in zip(pixels, split.targets, strict=True):
            assert official[source][image.numpy().tobytes()] == int(label)


@pytest.mark.parametrize("name", ["mnist", "cifar10"])
def test_image_sets_standardise_each_channel_with_the_training_split(name, tmp_path, monkeypatch):
    write_readable(name, tmp_path, monkeypatch)
    data = IMAGE_LOADERS[name](train_size=20, val_size=12, data_dir=str(tmp_path), seed=0)
    assert len(data.test) == 48  # test_size=None: the whole official test set
    channels = data.input_shape[0]
    mean = data.train.inputs.mean(dim=(0, 2, 3))
    std = data.train.inputs.std(dim=(0, 2, 3), correction=0)
    torch.testing.assert_close(mean, torch.zeros(channels), atol=1e-5, rtol=0)
    torch.testing.assert_close(std, torch.ones(channels), atol=1e-5, rtol=0)
    assert not torch.allclose(data.val.inputs.mean(dim=(0, 2, 3)), torch.zeros(channels))


@pytest.mark.parametrize("name", ["fashion_mnist", "cifar100"])
def test_image_sets_are_deterministic_per_seed(name, tmp_path, monkeypatch):
    write_readable(name, tmp_path, monkeypatch)
    load = IMAGE_LOADERS[name]
    kwargs = {"train_size": 10, "val_size": 10, "test_size": 10, "data_dir": str(tmp_path)}
    assert_same(load(**kwargs, seed=7), load(**kwargs, seed=7))
    assert not torch.equal(load(**kwargs, seed=7).val.inputs, load(**kwargs, seed=8).val.inputs)


def test_image_batches_come_out_in_the_run_dtype(tmp_path, monkeypatch):
    write_readable("mnist", tmp_path, monkeypatch)
    data = load_mnist(train_size=10, val_size=10, data_dir=str(tmp_path), seed=0)
    moved = data.to(torch.device("cpu"), torch.float64)
    batch = moved.train.sample(4, torch.Generator().manual_seed(0))
    assert batch.inputs.shape == (4, 1, 28, 28) and batch.inputs.dtype == torch.float64
    assert batch.targets.dtype == torch.long
    torch.testing.assert_close(batch.inputs, data.train.inputs[batch.index].double())


@pytest.mark.parametrize("name", IMAGE_LOADERS)
def test_missing_files_are_one_line_with_the_way_out(name, tmp_path):
    with pytest.raises(ValueError) as error:
        IMAGE_LOADERS[name](data_dir=str(tmp_path), seed=0)
    message = str(error.value)
    assert "\n" not in message
    assert f"dataset={name}: files not found" in message
    assert str(tmp_path) in message and "dataset.download=true" in message


@pytest.mark.parametrize("name", ["cifar10", "cifar100"])
def test_cifar_files_that_fail_the_md5_check_are_refused(name, tmp_path):
    """Without the test's checksum patch, torchvision's real md5 check rejects the tiny files."""
    write(name, tmp_path)
    with pytest.raises(ValueError, match="not found or corrupted"):
        IMAGE_LOADERS[name](train_size=10, val_size=10, data_dir=str(tmp_path), seed=0)


@pytest.mark.parametrize("name", ["mnist", "fashion_mnist"])
def test_an_idx_file_of_random_bytes_is_named_in_one_line(name, tmp_path):
    """It used to be a 47-line AssertionError from torchvision's IDX reader."""
    write(name, tmp_path)
    damaged = next(tmp_path.glob("*/raw/train-images-idx3-ubyte"))
    damaged.write_bytes(torch.randint(0, 256, (5000,), dtype=torch.uint8).numpy().tobytes())
    with pytest.raises(ValueError) as error:
        IMAGE_LOADERS[name](train_size=10, val_size=10, data_dir=str(tmp_path), seed=0)
    message = str(error.value)
    assert "\n" not in message and f"{damaged} is not a valid IDX file" in message


def test_a_failed_download_is_one_line(tmp_path, monkeypatch):
    def offline(*args, **kwargs):
        raise URLError("no network")

    monkeypatch.setattr("torchvision.datasets.mnist.download_and_extract_archive", offline)
    with pytest.raises(ValueError, match=r"^dataset=mnist: downloading into .* failed") as error:
        load_mnist(data_dir=str(tmp_path), download=True, seed=0)
    assert "\n" not in str(error.value)


@pytest.mark.parametrize(
    ("kwargs", "key"),
    [
        ({"train_size": 60, "val_size": 10}, "train_size=60 \\+ val_size=10 ask for more"),
        ({"test_size": 49}, "dataset.test_size=49 asks for more than the 48"),
        ({"val_size": 0}, "dataset.val_size=0 is invalid"),
        ({"normalize": "minmax"}, "dataset.normalize='minmax' is unknown"),
    ],
)
def test_bad_image_options_name_their_key(kwargs, key, tmp_path, monkeypatch):
    write_readable("mnist", tmp_path, monkeypatch)
    options = {"train_size": 10, "val_size": 10, **kwargs}
    with pytest.raises(ValueError, match=key):
        load_mnist(**options, data_dir=str(tmp_path), seed=0)


# ---------------------------------------------------------------- short runs of hpo-run
def run(tmp_path, *overrides: str) -> pd.DataFrame:
    register_configs()
    with initialize_config_module("hpo_cli.conf", version_base="1.3"):
        cfg = compose(
            "config",
            overrides=[*BRIEF, "batch_size=8", "solver=cg", *overrides],
        )
    run_dir = tmp_path / "run"
    run_dir.mkdir()
    train(cfg, run_dir)
    return pd.read_csv(run_dir / "metrics.csv")


def test_linreg_with_a_linear_model_runs(tmp_path):
    metrics = run(
        tmp_path,
        "dataset=linreg",
        "model=linear",
        "hyper=weight_decay",
        "dataset.train_size=16",
        "dataset.val_size=16",
        "dataset.test_size=32",
    )
    assert list(metrics["outer_step"]) == [0, 1, 2]
    assert metrics[["train_loss", "val_loss", "test_loss"]].notna().all().all()


def test_mnist_with_lenet_runs_on_files_in_data_dir(tmp_path, monkeypatch):
    write_readable("mnist", tmp_path / "data", monkeypatch)
    metrics = run(
        tmp_path,
        "dataset=mnist",
        "model=lenet",
        "hyper=weight_decay",
        f"dataset.data_dir={tmp_path / 'data'}",
        "dataset.train_size=16",
        "dataset.val_size=16",
        "dataset.test_size=16",
    )
    assert list(metrics["outer_step"]) == [0, 1, 2]
    errors = metrics[["train_error", "val_error", "test_error"]]
    assert ((errors >= 0) & (errors <= 1)).all().all()
