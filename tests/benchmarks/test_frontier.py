"""Time-to-accuracy frontiers (``benchmarks.common.frontier``) on hand-made points, and the quick
``solvers_in_the_loop --frontier`` run end to end."""

from __future__ import annotations

import math

import pandas as pd
import pytest
import torch

from benchmarks.common.frontier import (
    Point,
    levels_in,
    overlap,
    pareto_front,
    speedups,
    time_at_error,
)


def pt(time_ms: float, error: float, config: str = "") -> Point:
    return Point("lib", config or f"{time_ms}/{error}", time_ms, error)


def test_pareto_front_keeps_exactly_the_non_dominated_points():
    points = [
        pt(1, 0.5, "fast"),
        pt(2, 0.6, "slower and worse"),
        pt(2, 0.1, "middle"),
        pt(3, 0.1, "as accurate, slower"),
        pt(4, 0.01, "accurate"),
        pt(5, 0.02, "dominated by accurate"),
        pt(1, 0.7, "as fast, worse"),
        pt(0.5, math.nan, "diverged"),
        pt(0.4, math.inf, "overflowed"),
        pt(0.2, 0.0, "exact zero: off log axes"),
    ]
    front = pareto_front(points)
    assert [p.config for p in front] == ["fast", "middle", "accurate"]
    assert pareto_front([]) == []


def test_time_at_error_interpolates_in_log_log_and_is_nan_outside():
    front = [pt(1, 1e-1), pt(100, 1e-3)]  # t = 10⁻² · e⁻¹ on this segment
    assert time_at_error(front, 1e-2) == pytest.approx(10.0)
    assert time_at_error(front, 10**-1.5) == pytest.approx(10**0.5)
    assert time_at_error(front, 1e-1) == pytest.approx(1.0)
    assert time_at_error(front, 1e-3) == pytest.approx(100.0)
    assert math.isnan(time_at_error(front, 2e-1))
    assert math.isnan(time_at_error(front, 1e-4))
    three = [pt(1, 1e-1), pt(2, 1e-2), pt(200, 1e-4)]  # the bracketing segment, not the first
    assert time_at_error(three, 1e-3) == pytest.approx(20.0)
    assert time_at_error([pt(3, 0.5)], 0.5) == 3.0


def test_levels_and_overlap():
    assert levels_in(1e-3, 1e-1) == pytest.approx([1e-1, 10**-1.5, 1e-2, 10**-2.5, 1e-3])
    assert levels_in(0.2, 0.3) == [0.3, 0.2]  # no level inside: the two ends
    assert overlap([pt(1, 1e-1), pt(9, 1e-4)], [pt(2, 1e-2), pt(3, 1e-3)]) == (1e-3, 1e-2)
    assert overlap([pt(1, 1e-1), pt(2, 1e-2)], [pt(1, 1e-4), pt(2, 1e-5)]) is None


def test_speedups_are_peer_time_over_ours_at_shared_errors():
    ours = [pt(1, 1e-1), pt(10, 1e-3), pt(1000, 1e-6)]
    peer = [pt(5, 1e-1), pt(500, 1e-3)]  # reaches only 10⁻³: 5× then 50× slower
    ratios = dict(speedups(ours, peer, per_decade=1))
    assert list(ratios) == pytest.approx([1e-1, 1e-2, 1e-3])
    assert ratios[1e-1] == pytest.approx(5.0)
    assert ratios[1e-2] == pytest.approx(50.0 / math.sqrt(10.0))  # ours: 10^0.5 ms there
    assert ratios[1e-3] == pytest.approx(50.0)
    assert speedups(ours, [pt(1, 1e-7), pt(2, 1e-8)]) == []


@pytest.mark.parametrize(
    ("argv", "message"),
    [
        (["--frontier", "--clock", "cpu"], "error: --clock cpu"),
        (["--frontier", "--clock", "cpu", "--threads", "2"], "error: --clock cpu"),
        (["--frontier", "--hyper-steps", "0"], "error: --hyper-steps must be >= 1"),
    ],
)
def test_bad_frontier_flags_exit_2_in_one_line(argv, message, capsys):
    from benchmarks.solvers_in_the_loop import parse_args

    with pytest.raises(SystemExit) as exit_info:
        parse_args(argv)
    assert exit_info.value.code == 2
    assert message in capsys.readouterr().err.strip().splitlines()[-1]


@pytest.mark.slow  # the whole quick frontier run (~30 s on 2 loaded cores)
def test_quick_frontier_run_writes_fronts_speedups_and_plot(tmp_path):
    from benchmarks.common.frontier_report import ERROR_FLOOR
    from benchmarks.solvers_in_the_loop import main

    threads = torch.get_num_threads()
    try:
        assert main(["--frontier", "--quick", "--threads", "1", "--out", str(tmp_path)]) == 0
    finally:
        torch.set_num_threads(threads)
    stem = "solvers_in_the_loop_frontier_cpu_quick"
    table = pd.read_csv(tmp_path / f"{stem}.csv")
    assert (tmp_path / f"{stem}.png").stat().st_size > 0
    configs = table[table["section"].str.endswith("-configs")]
    assert set(configs["library"]) >= {"hpo-cli"}
    assert (configs["median_error"] >= 0).all() and (configs["median_ms"] > 0).all()
    for (section, name), rows in configs.groupby(["section", "library"]):
        front = table[(table["section"] == section.replace("configs", "frontier"))]
        front = front[front["library"] == name]
        errors = rows["median_error"].clip(lower=ERROR_FLOOR)
        points = [pt(t, e) for t, e in zip(rows["median_ms"], errors, strict=True)]
        assert len(front) == len(pareto_front(points)), (section, name)
    report = (tmp_path / f"{stem}.md").read_text()
    assert "cannot reach below" in report and f"{stem}.png" in report
