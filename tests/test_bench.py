"""``make bench`` keeps working: its quick mode runs every section and writes its files."""

from __future__ import annotations

import subprocess
import sys

import pandas as pd


def test_quick_benchmark_runs_every_section(tmp_path):
    result = subprocess.run(
        [
            sys.executable,
            "-m",
            "benchmarks.hypergradient_cost",
            "--quick",
            "--threads",
            "1",
            "--out",
            str(tmp_path),
        ],
        capture_output=True,
        text=True,
        timeout=300,
    )
    assert result.returncode == 0, result.stderr
    report = (tmp_path / "hypergradient_cost_cpu_quick.md").read_text()
    for heading in ("## 1.", "## 2.", "## 3a.", "## 3b."):
        assert heading in report
    table = pd.read_csv(tmp_path / "hypergradient_cost_cpu_quick.csv")
    exact = table[(table["section"] == "3a") & (table["solver"] == "exact")]
    assert float(exact["rel_error"].iloc[0]) < 1e-10, "exact matches the ridge closed form"
