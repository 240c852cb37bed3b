"""Time-to-accuracy frontiers: which configurations of a library are worth running, how long a
library takes to reach an error, and how two libraries compare where both reach it.

A configuration is a point (t, e): its median time per hyper-step and its median relative
error. Its library's frontier is the set of non-dominated points, no other point being at
least as fast and at least as accurate, one of them strictly; sorted by time, the errors strictly
decrease. Between two frontier points (t₁, e₁), (t₂, e₂) the time to reach an error e is
interpolated linearly in log-log coordinates,

    log t(e) = log t₁ + (log e − log e₁) · (log t₂ − log t₁) / (log e₂ − log e₁),

defined on [e_min, e_max], the frontier's error range: no configuration reaches below e_min
("cannot reach below e_min"). Two frontiers overlap on the intersection of their error ranges;
there, the speed-up of A over B at e is t_B(e) / t_A(e).

Pure functions on plain numbers, for ``benchmarks.solvers_in_the_loop --frontier``.
"""

from __future__ import annotations

import itertools
import math
from collections.abc import Iterable, Sequence
from dataclasses import dataclass


@dataclass(frozen=True)
class Point:
    """One configuration of one library: median time (ms) and median relative error."""

    library: str
    config: str
    time_ms: float
    error: float


def pareto_front(points: Iterable[Point]) -> list[Point]:
    """The non-dominated points, sorted by increasing time (and so strictly decreasing error).

    Points with a non-finite or non-positive time or error (a diverged solve, an exact zero) are
    left out: they have no place on log-log axes.
    """
    usable = [p for p in points if 0 < p.time_ms < math.inf and 0 < p.error < math.inf]
    front: list[Point] = []
    for point in sorted(usable, key=lambda p: (p.time_ms, p.error)):
        if not front or point.error < front[-1].error:
            front.append(point)
    return front


def error_range(front: Sequence[Point]) -> tuple[float, float]:
    """(e_min, e_max) of a frontier: the lowest error it reaches and its fastest point's."""
    return front[-1].error, front[0].error


def time_at_error(front: Sequence[Point], error: float) -> float:
    """t(e) on ``front`` (from :func:`pareto_front`), interpolated in log-log between the two
    frontier points whose errors bracket ``error``; ``nan`` outside the frontier's error range."""
    lowest, highest = error_range(front)
    if not lowest <= error <= highest:
        return math.nan
    for fast, slow in itertools.pairwise(front):
        if slow.error <= error <= fast.error:
            share = math.log(error / fast.error) / math.log(slow.error / fast.error)
            return math.exp(math.log(fast.time_ms) + share * math.log(slow.time_ms / fast.time_ms))
    return front[0].time_ms  # a one-point frontier, at its own error


def overlap(a: Sequence[Point], b: Sequence[Point]) -> tuple[float, float] | None:
    """The errors both frontiers reach, (low, high), or None when their ranges do not meet."""
    low = max(error_range(a)[0], error_range(b)[0])
    high = min(error_range(a)[1], error_range(b)[1])
    return (low, high) if low <= high else None


def levels_in(low: float, high: float, per_decade: int = 2) -> list[float]:
    """Error levels 10^(j/per_decade) in [low, high], from high to low; the two ends themselves
    when no such level falls inside."""
    top = math.floor(math.log10(high) * per_decade) + 1  # one more each side, then kept
    bottom = math.ceil(math.log10(low) * per_decade) - 1  # only inside: no rounding slips
    candidates = (10 ** (j / per_decade) for j in range(top, bottom - 1, -1))
    levels = [level for level in candidates if low <= level <= high]
    return levels or sorted({high, low}, reverse=True)


def speedups(
    a: Sequence[Point], b: Sequence[Point], per_decade: int = 2
) -> list[tuple[float, float]]:
    """(e, t_B(e) / t_A(e)) at the levels of :func:`levels_in` where the frontiers overlap;
    empty when they do not."""
    shared = overlap(a, b)
    if shared is None:
        return []
    return [
        (level, time_at_error(b, level) / time_at_error(a, level))
        for level in levels_in(*shared, per_decade)
    ]
