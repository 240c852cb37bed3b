"""The data-set protocol (hpo_cli.data.protocol): arrays, separate sets and map-style Datasets
become Splits; anything else is one line naming the protocol."""

from __future__ import annotations

import numpy as np
import pytest
import torch

from hpo_cli.data import Split
from hpo_cli.data.protocol import PROTOCOL, DataOptions, DataProtocolError, as_splits
from hpo_cli.data.streaming import StreamedSplit
from tests.support import own_problem
from tests.support.image_files import write_image_folder


def splits(result, **options):
    return as_splits(result, "mine", DataOptions(**options), seed=0, dtype=torch.float32)


def test_arrays_are_shuffled_with_the_seed_and_cut_to_the_requested_sizes():
    inputs, labels = own_problem.blobs(90, seed=0)
    data = splits((inputs, labels), split_train=40, split_val=20)
    assert (len(data.train), len(data.val), len(data.test)) == (40, 20, 30)
    assert (data.task, data.num_outputs, data.input_shape) == ("classification", 3, (4,))
    rows = torch.cat([data.train.inputs, data.val.inputs, data.test.inputs])
    assert torch.equal(rows.sort(dim=0).values, torch.as_tensor(inputs).sort(dim=0).values)
    assert data.train.targets.dtype == torch.long
    again = splits((inputs, labels), split_train=40, split_val=20)
    assert torch.equal(again.train.inputs, data.train.inputs)


def test_default_sizes_are_60_20_20_percent():
    data = splits(own_problem.blobs(100, seed=0))
    assert (len(data.train), len(data.val), len(data.test)) == (60, 20, 20)
    data = splits(own_problem.blobs(100, seed=0), split_train=30, split_val=20, split_test=10)
    assert (len(data.train), len(data.val), len(data.test)) == (30, 20, 10)


def test_separate_sets_and_datasets_are_used_as_they_are():
    data = splits(own_problem.blob_sets(30))
    assert (len(data.train), len(data.val), len(data.test)) == (30, 30, 30)
    expected = torch.as_tensor(own_problem.blobs(30, seed=2)[0])
    assert torch.equal(data.test.inputs, expected)  # the TensorDataset, in order
    data = splits(own_problem.blob_dataset(60))
    assert (len(data.train), data.num_outputs) == (36, 3)


def test_float_targets_are_regression_and_a_declared_task_wins():
    data = splits(own_problem.line(50), split_train=30, split_val=10)
    assert (data.task, data.num_outputs, data.input_shape) == ("regression", 1, (1,))
    inputs, labels = own_problem.blobs(30, seed=0)
    data = splits((inputs, labels.astype(np.float32)), task="regression")
    assert data.task == "regression"
    data = splits((inputs, labels.astype(np.float32)), task="classification")
    assert data.task == "classification" and data.train.targets.dtype == torch.long


@pytest.mark.parametrize(
    ("result", "options", "problem"),
    [
        ([1, 2, 3], {}, "it returned list"),
        ("data.csv", {}, "it returned str"),
        ((np.zeros((5, 2)), np.zeros(4)), {}, "5 inputs but 4 targets"),
        (
            (np.zeros((5, 2)), np.zeros((5, 3))),
            {},
            "targets must be one label or value per example",
        ),
        ((np.zeros((5, 2)), np.full(5, 0.5)), {"task": "classification"}, "integer class labels"),
        ((np.zeros((5, 2)), -np.ones(5, dtype=int)), {}, "class labels must be 0..k-1"),
        ({"train": None, "test": None}, {}, "its mapping has keys ['test', 'train']"),
    ],
)
def test_what_does_not_follow_the_protocol_is_one_line_naming_it(result, options, problem):
    with pytest.raises(DataProtocolError) as error:
        splits(result, **options)
    message = str(error.value)
    assert message.startswith("dataset=mine: ") and problem in message and PROTOCOL in message
    assert "\n" not in message


def test_sizes_beyond_the_data_are_refused():
    with pytest.raises(DataProtocolError, match=r"data.split_train=80 .* at most the 90 examples"):
        splits(own_problem.blobs(90, seed=0), split_train=80)


def test_an_image_folder_under_the_cap_becomes_tensors(tmp_path):
    from torchvision.datasets import ImageFolder

    data = splits(ImageFolder(str(write_image_folder(tmp_path))), split_train=18, split_val=9)
    assert isinstance(data.train, Split) and data.input_shape == (3, 8, 8)
    assert (data.num_outputs, len(data.test)) == (3, 9)
    assert float(data.train.inputs.min()) >= 0.0 and float(data.train.inputs.max()) <= 1.0


def test_an_image_folder_over_the_cap_is_streamed(tmp_path):
    from torchvision.datasets import ImageFolder

    folder = ImageFolder(str(write_image_folder(tmp_path)))
    cap = 3 * 8 * 8 * 4 * 36 - 1  # one byte under the 36 images in float32
    data = splits(folder, split_train=18, split_val=9, max_in_memory_bytes=cap, num_workers=0)
    assert isinstance(data.train, StreamedSplit) and data.input_shape == (3, 8, 8)
    in_memory = splits(folder, split_train=18, split_val=9, max_in_memory_bytes=cap + 1)
    streamed = torch.cat([inputs for inputs, _ in data.val.chunks(4)])
    assert torch.equal(streamed, in_memory.val.inputs)  # the same split, the same order
    batch = data.train.sample(5)
    assert batch.inputs.shape == (5, 3, 8, 8) and batch.targets.dtype == torch.long
    assert torch.equal(batch.inputs, in_memory.train.inputs[batch.index])
    with pytest.raises(ValueError, match="streamed"):
        data.train.inputs  # noqa: B018  (what a hyper module reading whole splits would do)
