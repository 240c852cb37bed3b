"""``make bench`` keeps working: each benchmark's quick mode runs and writes its files."""

from __future__ import annotations

import importlib
import importlib.util
import re
import subprocess
import sys
from pathlib import Path

import pandas as pd
import pytest
import torch


def run_quick(module: str, out: Path) -> subprocess.CompletedProcess[str]:
    command = [sys.executable, "-m", module, "--quick", "--threads", "1", "--out", str(out)]
    result = subprocess.run(command, capture_output=True, text=True, timeout=300)
    assert result.returncode == 0, result.stderr
    return result


def run_quick_here(module: str, out: Path) -> None:
    """``python -m MODULE --quick --out OUT`` in this process (no second interpreter), with this
    process's thread count restored afterwards."""
    threads = torch.get_num_threads()
    try:
        assert importlib.import_module(module).main(["--quick", "--out", str(out)]) == 0
    finally:
        torch.set_num_threads(threads)


@pytest.mark.slow  # a whole benchmark module; make test-slow runs it
def test_quick_benchmark_runs_every_section(tmp_path):
    run_quick("benchmarks.hypergradient_cost", tmp_path)
    report = (tmp_path / "hypergradient_cost_cpu_quick.md").read_text()
    for heading in ("## 1.", "## 2.", "## 3a.", "## 3b.", "## 3c."):
        assert heading in report
    figure = tmp_path / "hypergradient_accuracy_cpu_quick.png"
    assert figure.stat().st_size > 0 and figure.name in report
    table = pd.read_csv(tmp_path / "hypergradient_cost_cpu_quick.csv")

    hvp = table[table["section"] == "1"]
    assert (hvp["median_ms"] > 0).all()
    models = hvp.groupby("model")["case"].apply(set)
    assert len(models) == 3 and any("LeNet" in m for m in models.index)
    resnet = next(cases for model, cases in models.items() if "ResNet-18" in model)
    assert {case[:3] for case in resnet} >= {"(a)", "(b)", "(c)"}
    rebuilt = hvp[hvp["case"].str.startswith("(c)")]
    assert (rebuilt["rel_diff_to_b"] < 1e-4).all(), "(c) computes the product of (b)"

    ridge = table[table["section"] == "3a"].set_index(["solver", "k"])["rel_error"]
    assert float(ridge["exact"].iloc[0]) < 1e-10, "exact matches the ridge closed form"
    d = int(re.search(r"d = (\d+)", table["table"][table["section"] == "3a"].iloc[0]).group(1))
    assert float(ridge["cg"][d]) < 1e-6, "CG with K = d solves the ridge exactly"
    neumann = ridge[[name.startswith("neumann") and "auto" not in name for name, _ in ridge.index]]
    assert neumann.is_monotonic_decreasing, "Neumann's error shrinks with K on a PD Hessian"

    reduced = table[table["section"] == "3c"]
    exact = reduced[reduced["solver"] == "exact"]
    assert float(exact["rel_error"].iloc[0]) < 1e-8, "Exact agrees with the torch.func Hessian"
    ks = set(reduced["k"].dropna().astype(int))
    assert len(ks) >= 2 and (reduced["hvps"] > 0).all() and reduced["cosine"].notna().all()


@pytest.mark.slow  # a whole benchmark module; make test-slow runs it
def test_quick_overhead_measures_time_and_memory(tmp_path):
    run_quick("benchmarks.overhead", tmp_path)
    table = pd.read_csv(tmp_path / "overhead_cpu_quick.csv", dtype={"section": str})
    on = table[(table["section"] == "4") & (table["case"] == "hyper-steps on")]
    assert float(on["wall_ratio"].iloc[0]) > 1.0, "hyper-steps cost something"
    assert (table[table["section"] == "4"]["cpu_median_ms"] > 0).all()  # --threads 1: CPU time
    bare = table[table["section"] == "4b"]
    assert len(bare) == 3 and (bare["wall_ms"] > 0).all() and (bare["cpu_ms"] > 0).all()
    compiled = table[table["section"] == "4c"].set_index("case")
    steps = compiled.loc[["hpo-run: inner_phase, compile=true", "bare PyTorch loop"], "cpu_ms"]
    assert (steps > 0).all() and len(compiled) == 5
    assert compiled.loc["compilation, cold cache", "compile_cpu_s"] > 0
    memory = table[table["section"] == "5"]
    assert (memory["hyper_kib"] > 0).all() and (memory["train_kib"] > 0).all()


@pytest.mark.slow  # thirteen child processes; make test-slow runs it
def test_quick_end_to_end_runs_every_row_from_the_same_start(tmp_path):
    run_quick("benchmarks.end_to_end", tmp_path)
    table = pd.read_csv(tmp_path / "end_to_end_default_cpu_quick.csv")
    ran = table[table["seed"] != "missing"]
    assert (ran["wall_s"] > 0).all() and (ran["peak_rss_mib"] > 0).all()
    median = table[table["seed"] == "median"].set_index("kind")["final_val_loss"]
    # the same data, start and inner steps; the hypergradients differ (Lanczos or power α)
    assert abs(median["hpo-run"] - median["plain PyTorch"]) < 0.05 * median["hpo-run"]
    if "torchopt" in median:  # the plain loop's maths, its batches and α: the same run
        assert abs(median["torchopt"] - median["plain PyTorch"]) < 1e-4 * median["hpo-run"]
    if "higher" in median:  # the same unrolled Adam steps on the same batches
        assert abs(median["higher"] - median["hpo-run unrolled"]) < 1e-3 * median["hpo-run"]


@pytest.mark.slow  # a whole benchmark module; make test-slow runs it
def test_quick_scaling_fits_a_slope_and_draws_it(tmp_path):
    run_quick("benchmarks.scaling", tmp_path)
    assert (tmp_path / "scaling_cpu_quick.png").stat().st_size > 0
    table = pd.read_csv(tmp_path / "scaling_cpu_quick.csv")
    assert table["weights"].is_monotonic_increasing and (table["status"] == "max_iterations").all()
    assert "Fitted slope" in (tmp_path / "scaling_cpu_quick.md").read_text()


@pytest.mark.slow  # compiles with torch.compile (seconds to tens of seconds)
def test_quick_compiled_hvp_matches_the_reused_graph_product(tmp_path):
    from benchmarks import compiled_hvp

    assert compiled_hvp.main(["--quick", "--out", str(tmp_path)]) == 0
    table = pd.read_csv(tmp_path / "compiled_hvp_cpu_quick.csv")
    assert len(table) == 4 and (table["median_ms"] > 0).all()
    assert (table["rel_diff_to_b"].dropna() < 1e-5).all()  # float32: the same product
    assert "Compilation of (d)" in (tmp_path / "compiled_hvp_cpu_quick.md").read_text()


def test_quick_peers_agree_with_the_closed_form(tmp_path):
    run_quick_here("benchmarks.peers", tmp_path)
    table = pd.read_csv(tmp_path / "peers_cpu_quick.csv")
    ridge = table[table["section"] == "7a"]
    hpo_cg = ridge[(ridge["method"] == "hpo-cli: cg") & (ridge["k"] == ridge["k"].max())]
    assert float(hpo_cg["rel_error"].iloc[0]) < 1e-8, "CG with K ≥ d solves the ridge exactly"
    if importlib.util.find_spec("torchopt") is None:
        pytest.skip("torchopt not installed (the optional bench extra)")
    peer = ridge[(ridge["method"] == "torchopt: solve_cg") & (ridge["k"] == ridge["k"].max())]
    assert float(peer["rel_error"].iloc[0]) < 1e-8


def test_quick_loop_compares_cold_warm_and_peers_at_every_hyper_step(tmp_path):
    """Both problems, both families, every hyper-step."""
    run_quick_here("benchmarks.solvers_in_the_loop", tmp_path)
    table = pd.read_csv(tmp_path / "solvers_in_the_loop_cpu_quick.csv")
    assert set(table["section"]) == {"default", "mlp"}
    hpo = table[table["method"].str.startswith("hpo-cli")]
    assert (hpo["steps"] == 2).all() and (hpo["products"] > 0).all()
    for _, rows in hpo.groupby("section"):
        by = rows.set_index("method")
        cold, kept = (
            by.loc["hpo-cli: neumann, cold"],
            by.loc["hpo-cli: neumann, warm, refresh every 10"],
        )
        assert kept["products"] < cold["products"], "a kept λ̂max spares the Lanczos steps"
        # CG to ‖r‖ ≤ 1e-3‖b‖ on the PD-damped system lands near the reference's 1e-6 solve
        assert by.loc["hpo-cli: cg, cold", "median_error"] < 0.05
        # Hutchinson's 4 probes every call are counted with the preconditioned solve's products
        assert by.loc["hpo-cli: cg, hutchinson every 1, cold", "products"] >= 4 + 1
    report = (tmp_path / "solvers_in_the_loop_cpu_quick.md").read_text()
    assert "target" in report and "× cold products" in report


def test_peers_flag_fails_in_one_line_when_a_peer_is_missing(capsys):
    from benchmarks.common.peer_adapters import require_peers

    status = {"torchopt": "0.7.3", "betty": "not available: ModuleNotFoundError: betty"}
    assert require_peers(status, wanted=False) == ["betty"]
    with pytest.raises(SystemExit) as exit_info:
        require_peers(status, wanted=True)
    assert exit_info.value.code == 1
    lines = capsys.readouterr().err.splitlines()
    assert len(lines) == 1 and "betty" in lines[0] and "make install-bench" in lines[0]


def test_quick_streaming_times_both_paths(tmp_path):
    run_quick_here("benchmarks.streamed_data", tmp_path)
    table = pd.read_csv(tmp_path / "streamed_data_cpu_quick.csv").set_index("data")
    assert list(table.index) == ["in memory", "streamed, 0 workers", "streamed, 2 workers"]
    assert (table["median_ms"] > 0).all() and float(table.loc["in memory", "ratio"]) == 1.0


def test_quick_finite_difference_products_agree_with_autograd_in_float64(tmp_path):
    run_quick_here("benchmarks.finite_difference_products", tmp_path)
    table = pd.read_csv(tmp_path / "finite_difference_products_cpu_quick.csv")
    assert len(table) == 4 and (table["fd_median_ms"] > 0).all()
    double = table[table["dtype"] == "float64"]
    assert (double["fd_vs_autograd"] < 1e-7).all() and (double["autograd_vs_truth"] == 0).all()


def test_quick_mixed_precision_keeps_the_hypergradients_direction(tmp_path):
    run_quick_here("benchmarks.mixed_precision", tmp_path)
    table = pd.read_csv(tmp_path / "mixed_precision_cpu_quick.csv")
    assert len(table) == 1 and (table["hyper_bf16_median_ms"] > 0).all()
    assert (table["cosine"] > 0.99).all() and (table["rel_error"] > 0).all()


@pytest.mark.slow  # a whole benchmark module (fresh interpreters); make test-slow runs it
def test_quick_startup_times_every_command_against_import_torch(tmp_path):
    run_quick("benchmarks.startup", tmp_path)
    table = pd.read_csv(tmp_path / "startup_cpu_quick.csv").set_index("case")
    assert float(table.loc['python -c "import torch"', "ratio"]) == 1.0
    commands = [case for case in table.index if case.startswith("hpo-run")]
    assert len(commands) == 4 and (table.loc[commands, "median_ms"] > 0).all()
    assert (table["rounds"] == 2).all()


@pytest.mark.slow  # four solvers and a dense solve, timed in rounds (about 30 s)
def test_quick_first_order_cost_times_every_solver_against_the_dense_solve(tmp_path):
    run_quick_here("benchmarks.first_order_cost", tmp_path)
    table = pd.read_csv(tmp_path / "first_order_cost_cpu_quick.csv").set_index("solver")
    assert list(table.index) == ["identity", "neumann", "cg", "first_order"]
    assert int(table.loc["first_order", "products"]) == 0
    assert float(table.loc["first_order", "ratio"]) == 1.0
    assert table["cosine"].abs().le(1).all() and (table["median_ms"] > 0).all()
