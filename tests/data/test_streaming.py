"""Streamed splits (hpo_cli.data.streaming): seeded batches, their state in a checkpoint, and a
resumed hpo-run on an ImageFolder larger than the in-memory cap giving the uninterrupted run's
metrics bit for bit (CPU)."""

from __future__ import annotations

import pandas as pd
import pytest
import torch
from torch.utils.data import TensorDataset

from hpo_cli.data.streaming import Loading, SeededBatchSampler, StreamedSplit
from hpo_cli.runner.cli.command import train
from hpo_cli.runner.loop import train as loop
from tests.support.config_dirs import compose_with, conf_dir
from tests.support.image_files import write_image_folder


def test_each_epoch_is_a_permutation_and_batches_depend_on_seed_and_position():
    sampler = SeededBatchSampler(n=10, size=3, seed=7)
    batches = [sampler.batch(b) for b in range(6)]  # two epochs of three batches
    for epoch in (batches[:3], batches[3:]):
        flat = [i for batch in epoch for i in batch]
        assert len(set(flat)) == 9 and set(flat) <= set(range(10))
    assert batches[:3] != batches[3:]
    later = SeededBatchSampler(n=10, size=3, seed=7, start=4)
    assert next(iter(later)) == batches[4]


@pytest.mark.parametrize("workers", [0, 2])
def test_a_restored_stream_continues_with_the_batches_it_would_have_drawn(workers):
    inputs = torch.arange(40.0).reshape(20, 2)
    dataset = TensorDataset(inputs, torch.arange(20) % 2)

    def split() -> StreamedSplit:
        return StreamedSplit(dataset, list(range(20)), seed=3, loading=Loading(num_workers=workers))

    first = split()
    drawn = [first.sample(4).index.tolist() for _ in range(7)]
    second = split()
    for _ in range(3):
        second.sample(4)
    state = second.state_dict()
    assert state == {"4": 3}
    third = split()
    third.load_state_dict(state)
    assert [third.sample(4).index.tolist() for _ in range(4)] == drawn[3:]
    batch = third.sample(4)
    assert torch.equal(batch.inputs, inputs[batch.index])


def test_a_stream_restored_with_another_worker_count_draws_the_same_batches():
    """``data.num_workers`` may change on resume (RESUME_MAY_CHANGE): the sampler alone picks the
    examples; the workers only read them."""
    inputs = torch.arange(40.0).reshape(20, 2)
    dataset = TensorDataset(inputs, torch.arange(20) % 2)

    def split(workers: int) -> StreamedSplit:
        return StreamedSplit(dataset, list(range(20)), seed=3, loading=Loading(num_workers=workers))

    first = split(0)
    drawn = [first.sample(4) for _ in range(6)]
    second = split(0)
    for _ in range(3):
        second.sample(4)
    third = split(2)
    third.load_state_dict(second.state_dict())
    for want in drawn[3:]:
        got = third.sample(4)
        assert torch.equal(got.index, want.index) and torch.equal(got.inputs, want.inputs)


def test_a_resumed_streamed_run_gives_the_uninterrupted_metrics(tmp_path, monkeypatch):
    """ImageFolder PNGs over a cap set low; the first run is killed after outer step 3 (its last
    checkpoint is step 2), the resumed run finishes: metrics.csv equals an uninterrupted run's."""
    from torchvision.datasets import ImageFolder  # noqa: F401  (imported by the _target_)

    images = write_image_folder(tmp_path / "images")
    conf = conf_dir(
        tmp_path,
        {"dataset/pngs.yaml": f"_target_: torchvision.datasets.ImageFolder\nroot: {images}\n"},
    )
    overrides = [
        "dataset=pngs",
        "data.split_train=18",
        "data.split_val=9",
        "data.max_in_memory_bytes=1000",
        "data.num_workers=0",
        "model.hidden_sizes=[8]",
        "hyper=weight_decay",
        "batch_size=4",
        "hyper_train_batch=8",
        "hyper_val_batch=8",
        "outer_steps=4",
        "inner_steps=2",
        "eval_every=1",
        "checkpoint_every=2",
        "plots=false",
        "progress=false",
    ]
    whole, killed = tmp_path / "whole", tmp_path / "killed"
    whole.mkdir(), killed.mkdir()
    train(compose_with(conf, *overrides), whole)

    original, calls = loop.outer_step, []

    def dies_after_three(*args, **kwargs):
        if len(calls) == 3:
            raise KeyboardInterrupt  # the process dies; only the step-2 checkpoint survives
        calls.append(1)
        return original(*args, **kwargs)

    monkeypatch.setattr(loop, "outer_step", dies_after_three)
    with pytest.raises(KeyboardInterrupt):
        train(compose_with(conf, *overrides), killed)
    monkeypatch.setattr(loop, "outer_step", original)
    train(compose_with(conf, *overrides, f"resume={killed}"), killed)

    tables = [pd.read_csv(d / "metrics.csv").drop(columns="wall_time_s") for d in (whole, killed)]
    assert len(tables[0]) == 5
    pd.testing.assert_frame_equal(*tables)


def test_streamed_data_without_hyper_batch_sizes_is_one_line(tmp_path):
    from hpo_cli.runner.config.build import build_experiment
    from hpo_cli.runner.errors import ConfigError

    images = write_image_folder(tmp_path / "images", per_class=4)
    conf = conf_dir(
        tmp_path,
        {"dataset/pngs.yaml": f"_target_: torchvision.datasets.ImageFolder\nroot: {images}\n"},
    )
    cfg = compose_with(
        conf,
        "dataset=pngs",
        "data.max_in_memory_bytes=10",
        "data.num_workers=0",
        "batch_size=2",
        "hyper_val_batch=2",
    )
    with pytest.raises(ConfigError, match=r"^hyper_train_batch=null asks for a whole split, but"):
        build_experiment(cfg)
