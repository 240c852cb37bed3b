"""Which setting of a sweep won: every job's best-by-validation row, and the settings ranked by it.

A job's *best row* is the one its ``summary.json`` records as ``best_by_validation`` (lowest
validation error, ties broken by validation loss): the job's own best evaluation, not its final
one. A setting (the swept overrides other than ``seed``) is scored by the mean over its completed
seeds of their best rows; settings are ranked by mean validation error, ties by mean validation
loss. Jobs that did not complete are counted per setting (``failed``) and never ranked.

* :func:`best_rows`: one row per job (``job``, ``status``, ``setting``, ``seed`` and the best
  row's ``outer_step`` and :data:`SCORES`);
* :func:`rank`: one row per setting (:data:`RANKING_COLUMNS`), best first;
* :func:`console_lines`: the ranking as a compact console table and the ``best:`` line.
"""

from __future__ import annotations

import math
from typing import Any

import pandas as pd

SCORES = ("val_error", "val_loss", "test_error", "test_loss")
"""The values of a job's best row that the ranking averages over seeds."""
BEST_COLUMNS = ["job", "status", "setting", "seed", "outer_step", *SCORES]
RANKING_COLUMNS = [
    "rank",
    "setting",
    "seeds",
    "failed",
    *(f"{score}_{stat}" for score in SCORES for stat in ("mean", "std")),
]
SHOWN = 20
"""At most this many settings on the console; the file holds them all."""
SETTING_WIDTH = 48


def best_rows(jobs: list[dict[str, Any]]) -> pd.DataFrame:
    """One row per job with its best-by-validation row (:data:`BEST_COLUMNS`).

    Args:
        jobs: per job, ``job``, ``status``, ``setting``, ``seed`` and ``best`` (the
            ``best_by_validation`` row of its ``summary.json``, or ``None``).
    """
    rows = []
    for job in jobs:
        best = job.get("best") or {}
        rows.append(
            {
                **{key: job[key] for key in ("job", "status", "setting", "seed")},
                **{key: best.get(key) for key in ("outer_step", *SCORES)},
            }
        )
    frame = pd.DataFrame(rows, columns=BEST_COLUMNS)
    for key in SCORES:
        frame[key] = pd.to_numeric(frame[key], errors="coerce")
    frame["outer_step"] = pd.to_numeric(frame["outer_step"], errors="coerce").astype("Int64")
    return frame


def rank(best: pd.DataFrame) -> pd.DataFrame:
    """Per setting (:data:`RANKING_COLUMNS`): ``seeds``, the completed jobs with a finite best
    validation error; ``failed``, the jobs that did not complete; mean and standard deviation
    (ddof 1, empty for one seed) of :data:`SCORES` over the seeds' best rows; ``rank`` from 1,
    lowest mean validation error first, ties by mean validation loss. Settings with no ranked
    seed come last, without a rank."""
    ranked = best[(best["status"] == "completed") & best["val_error"].notna()]
    settings = list(dict.fromkeys(best["setting"]))
    grouped = ranked.groupby("setting", sort=False)[list(SCORES)].agg(["mean", "std"])
    grouped.columns = [f"{score}_{stat}" for score, stat in grouped.columns]
    table = grouped.reindex(settings)
    table.insert(0, "seeds", ranked.groupby("setting").size().reindex(settings).fillna(0))
    failed = best[best["status"] != "completed"].groupby("setting").size()
    table.insert(1, "failed", failed.reindex(settings).fillna(0))
    table = table.reset_index(names="setting")
    table = table.sort_values(
        ["val_error_mean", "val_loss_mean"], na_position="last", kind="stable"
    ).reset_index(drop=True)
    table[["seeds", "failed"]] = table[["seeds", "failed"]].astype(int)
    count = int((table["seeds"] > 0).sum())
    table.insert(0, "rank", pd.array([*range(1, count + 1), *[None] * (len(table) - count)]))
    table["rank"] = table["rank"].astype("Int64")
    return table[RANKING_COLUMNS]


def best_setting(ranking: pd.DataFrame) -> dict[str, Any] | None:
    """The first setting of :func:`rank`'s table as a dict (its columns), ``None`` when no
    setting has a completed seed."""
    if ranking.empty or pd.isna(ranking["rank"].iloc[0]):
        return None
    row = ranking.iloc[0].to_dict()
    return {
        key: (None if pd.isna(value) else value if isinstance(value, str) else float(value))
        for key, value in row.items()
    } | {"rank": 1, "seeds": int(row["seeds"]), "failed": int(row["failed"])}


def _mean_std(mean: float, std: float, digits: int) -> str:
    if mean is None or not math.isfinite(mean):
        return "–"
    if std is None or not math.isfinite(std):
        return f"{mean:.{digits}f}"
    return f"{mean:.{digits}f} ± {std:.{digits}f}"


def _seeds(count: int) -> str:
    return f"{count} seed" if count == 1 else f"{count} seeds"


def ties(ranking: pd.DataFrame) -> int:
    """How many other ranked settings have the best one's mean validation error and loss."""
    ranked = ranking[ranking["rank"].notna()]
    if len(ranked) < 2:
        return 0
    first = ranked.iloc[0]
    same = [
        math.isclose(row.val_error_mean, first["val_error_mean"], rel_tol=1e-9, abs_tol=1e-12)
        and math.isclose(row.val_loss_mean, first["val_loss_mean"], rel_tol=1e-9, abs_tol=1e-12)
        for row in ranked.iloc[1:].itertuples()
    ]
    return sum(same)


def best_line(ranking: pd.DataFrame) -> str:
    """``best: <setting> — val error m ± s over n seeds (val loss m ± s, test error m ± s)``,
    with the number of settings tied with it, or why there is none."""
    best = best_setting(ranking)
    if best is None:
        return "best: none (no job of the sweep completed)"
    val = _mean_std(best["val_error_mean"], best["val_error_std"], 3)
    test = _mean_std(best["test_error_mean"], best["test_error_std"], 3)
    tied = ties(ranking)
    tie = f"; tied with {tied} other setting{'s' * (tied > 1)}" if tied else ""
    return (
        f"best: {best['setting']} — val error {val} over {_seeds(best['seeds'])} "
        f"(val loss {_mean_std(best['val_loss_mean'], best['val_loss_std'], 4)}, "
        f"test error {test}{tie})"
    )


def _short(setting: str, width: int) -> str:
    return setting if len(setting) <= width else setting[: width - 1] + "…"


def console_lines(ranking: pd.DataFrame, file_name: str, shown: int = SHOWN) -> list[str]:
    """The ranking on the console: a heading, one line per setting (the first ``shown``; the
    rest counted in one line), then :func:`best_line`."""
    ranked = int(ranking["rank"].notna().sum())
    lines = [
        f"sweep ranking: {len(ranking)} settings by each job's best validation row, "
        f"mean ± std over seeds (in {file_name})"
    ]
    width = min(SETTING_WIDTH, max([len("setting"), *map(len, ranking["setting"])]))
    header = (
        f"  {'rank':>4}  {'setting':<{width}}  {'seeds':>5}  {'failed':>6}  "
        f"{'val error':<13}  {'val loss':<17}  test error"
    )
    lines.append(header)
    for row in ranking.head(shown).itertuples():
        number = "–" if pd.isna(row.rank) else str(row.rank)
        lines.append(
            f"  {number:>4}  {_short(row.setting, width):<{width}}  {row.seeds:>5}  "
            f"{row.failed:>6}  {_mean_std(row.val_error_mean, row.val_error_std, 3):<13}  "
            f"{_mean_std(row.val_loss_mean, row.val_loss_std, 4):<17}  "
            f"{_mean_std(row.test_error_mean, row.test_error_std, 3)}"
        )
    rest = ranking.iloc[shown:]
    if len(rest):
        unranked = int(rest["rank"].isna().sum())
        without = f", {unranked} of them with no completed job" if unranked else ""
        lines.append(f"  … {len(rest)} more settings{without}, in {file_name}")
    if ranked == 0:
        lines[0] = f"sweep ranking: {len(ranking)} settings, none with a completed job"
    lines.append(best_line(ranking))
    return lines
