"""Who started a process (:mod:`hpo_cli.runner.cli.launch`): SLURM's host lists expanded, the
precedence torchrun > srun > one process, the rendezvous of a job step, and the variables that
make no sense refused in one line."""

from __future__ import annotations

import pytest

from hpo_cli.runner.cli.launch import (
    PORTS,
    Launch,
    default_port,
    from_environment,
    from_submitit,
    hostnames,
)
from hpo_cli.runner.errors import ConfigError

TORCHRUN = {
    "WORLD_SIZE": "4",
    "RANK": "3",
    "LOCAL_RANK": "1",
    "MASTER_ADDR": "10.0.0.5",
    "MASTER_PORT": "29500",
}
SRUN = {
    "SLURM_JOB_ID": "4242",
    "SLURM_STEP_ID": "0",
    "SLURM_NTASKS": "6",
    "SLURM_STEP_NUM_TASKS": "6",
    "SLURM_PROCID": "5",
    "SLURM_LOCALID": "1",
    "SLURM_STEP_NODELIST": "gpu[07-09]",
    "SLURM_JOB_NODELIST": "gpu[01-09]",
}


@pytest.mark.parametrize(
    ("nodelist", "hosts"),
    [
        ("node17", ["node17"]),
        ("127.0.0.1", ["127.0.0.1"]),
        ("node[01-03,07]", ["node01", "node02", "node03", "node07"]),
        ("node[8-11]", ["node8", "node9", "node10", "node11"]),
        ("node[098-101]", ["node098", "node099", "node100", "node101"]),
        ("a[1-2],b3,c[5]", ["a1", "a2", "b3", "c5"]),
        ("gpu-[1,3]-ib", ["gpu-1-ib", "gpu-3-ib"]),
        ("r[1-2]n[1-2]", ["r1n1", "r1n2", "r2n1", "r2n2"]),
        ("x[1-2],y[3,4]", ["x1", "x2", "y3", "y4"]),
    ],
)
def test_a_slurm_host_list_expands_in_order(nodelist, hosts):
    assert hostnames(nodelist) == hosts


@pytest.mark.parametrize("nodelist", ["node[01-03", "node01-03]", "node[3-1]", "node[a-b]", ""])
def test_what_is_not_a_host_list_is_refused_in_one_line(nodelist):
    with pytest.raises(ConfigError) as refused:
        hostnames(nodelist)
    assert repr(nodelist) in str(refused.value) and "\n" not in str(refused.value)


def test_torchrun_variables_give_the_launch():
    assert from_environment(TORCHRUN) == Launch(3, 4, 1, "10.0.0.5", 29500, "torchrun")


def test_an_srun_step_gives_the_launch_on_the_first_host_of_its_nodes():
    launch = from_environment(SRUN)
    assert launch == Launch(5, 6, 1, "gpu07", default_port("4242.0"), "srun")
    assert PORTS[0] <= launch.port < PORTS[1]


def test_an_srun_step_takes_the_rendezvous_given_in_the_environment():
    launch = from_environment({**SRUN, "MASTER_ADDR": "head", "MASTER_PORT": "12345"})
    assert (launch.address, launch.port) == ("head", 12345)


def test_without_the_steps_node_list_the_jobs_is_used():
    environ = {k: v for k, v in SRUN.items() if k != "SLURM_STEP_NODELIST"}
    assert from_environment(environ).address == "gpu01"


def test_the_default_port_is_the_jobs_and_steps_own():
    assert default_port("4242.0") == default_port("4242.0")
    assert len({default_port(f"4242.{step}") for step in range(4)}) == 4
    assert len({default_port(f"{job}.0") for job in range(4242, 4252)}) == 10


def test_torchrun_comes_before_srun():  # srun --ntasks-per-node=1 torchrun ...: torchrun's ranks
    assert from_environment({**SRUN, **TORCHRUN}).launcher == "torchrun"
    assert from_environment({**SRUN, **TORCHRUN, "WORLD_SIZE": "1", "RANK": "0"}).world_size == 1


@pytest.mark.parametrize(
    "environ",
    [
        {},
        {**SRUN, "SLURM_STEP_NUM_TASKS": "1", "SLURM_PROCID": "0"},  # srun of one task
        {k: v for k, v in SRUN.items() if not k.startswith("SLURM_STEP")},  # a batch script
    ],
)
def test_one_process_otherwise(environ):
    assert from_environment(environ) == Launch()


@pytest.mark.parametrize(
    ("environ", "needle"),
    [
        ({**SRUN, "SLURM_PROCID": "6"}, "rank 6 of 6 processes (from srun's variables)"),
        ({**TORCHRUN, "RANK": "-1"}, "rank -1 of 4 processes (from torchrun's variables)"),
        ({**SRUN, "SLURM_STEP_NUM_TASKS": "two"}, "SLURM_STEP_NUM_TASKS=two is not an integer"),
        ({k: v for k, v in SRUN.items() if k != "SLURM_PROCID"}, "SLURM_PROCID=None is not"),
        ({**SRUN, "SLURM_STEP_NODELIST": "gpu[07-"}, "is not a SLURM host list"),
    ],
)
def test_variables_that_make_no_sense_are_refused_in_one_line(environ, needle):
    with pytest.raises(ConfigError) as refused:
        from_environment(environ)
    assert needle in str(refused.value), refused.value


def test_a_task_of_a_submitit_local_job_meets_the_others_on_this_machine(monkeypatch):
    assert from_submitit() == Launch()  # not started by submitit
    local = {  # what submitit's local executor gives task 1 of a job of 2 tasks
        "SUBMITIT_EXECUTOR": "local",
        "SUBMITIT_LOCAL_JOB_ID": "31337",
        "SUBMITIT_LOCAL_NTASKS": "2",
        "SUBMITIT_LOCAL_JOB_NUM_NODES": "1",
        "SUBMITIT_LOCAL_NODEID": "0",
        "SUBMITIT_LOCAL_GLOBALID": "1",
        "SUBMITIT_LOCAL_LOCALID": "1",
    }
    for name, value in local.items():
        monkeypatch.setenv(name, value)
    assert from_submitit() == Launch(1, 2, 1, "127.0.0.1", default_port("31337"), "submitit")
