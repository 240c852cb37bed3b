"""``make gpu-check`` on a machine without a GPU (CI, this suite): one line, exit 2, nothing run.
Its ResNet-18 configuration composes, and the CIFAR-shaped synthetic data builds."""

import pytest
import torch

from benchmarks import gpu_check
from benchmarks.common.run_config import compose_config
from hpo_cli.runner.config.build import build


def test_without_a_gpu_it_says_so_in_one_line_and_exits_2(tmp_path, capsys, monkeypatch):
    monkeypatch.setattr(torch.cuda, "is_available", lambda: False)
    assert gpu_check.main(["--out", str(tmp_path / "gpu")]) == 2
    lines = capsys.readouterr().out.splitlines()
    assert len(lines) == 1 and "no CUDA GPU" in lines[0]
    assert not (tmp_path / "gpu").exists()


def test_the_resnet_check_composes_with_cifar_shaped_synthetic_data():
    cfg = compose_config([*gpu_check.RESNET, "device=cpu"])
    assert cfg.model._target_.endswith("resnet18") and cfg.hyper.granularity == "weight"
    data = build(cfg.dataset, offers={"seed": 0})
    assert data.input_shape == (3, 32, 32) and len(data.train) == cfg.dataset.train_size
    assert data.train.targets.unique().numel() == 10, "every class occurs"


@pytest.mark.parametrize(
    "name",
    [
        "default experiment",
        "default experiment, bf16-mixed",
        "default experiment, 16-mixed",
        "default experiment, finite-difference products",
        "quick solvers_in_the_loop",
        "scaling, 10^7 weights",
    ],
)
def test_every_check_runs_on_cuda(tmp_path, name):
    check = next(c for c in gpu_check.checks(tmp_path) if c.name == name)
    assert any("cuda" in part for part in check.command)


def test_two_gpus_add_a_torchrun_run_of_the_default_experiment(tmp_path, monkeypatch):
    monkeypatch.setattr(torch.cuda, "device_count", lambda: 2)
    check = next(c for c in gpu_check.checks(tmp_path) if "torchrun" in c.name)
    assert "--nproc_per_node=2" in check.command and "device=cuda" in check.command
    monkeypatch.setattr(torch.cuda, "device_count", lambda: 1)
    assert not any("torchrun" in c.name for c in gpu_check.checks(tmp_path))
