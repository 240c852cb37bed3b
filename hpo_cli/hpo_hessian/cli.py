"""``hpo-hessian``: the Hessian (or Gauss-Newton matrix) of the training loss, analysed like the
solvers see it.

    hpo-hessian                                      # train the configured model, then analyse
    hpo-hessian params=[3.weight] curvature=ggn      # one weight matrix, Gauss-Newton matrix
    hpo-hessian run_dir=outputs/runs/<date>/<time>   # the weights of an hpo-run checkpoint
    hpo-hessian mode=lanczos k=10 neumann_alpha=0.05 # matrix-free, diagnose a Neumann step

The matrix is the Hessian (or generalised Gauss-Newton matrix) of the training loss L_t(w, λ) on
the whole training split with respect to the weights named in ``params``; see
:mod:`hpo_cli.analysis.hessian` for the maths. With ``run_dir=null`` the model of the
``dataset``/``model``/``hyper`` groups is trained first by full-batch L-BFGS until
‖∇L_t‖ ≤ ``train_tol`` (the IFT
assumes a minimum); with ``run_dir`` set, that hpo-run run's own configuration and
``checkpoint.pt`` (weights and hyperparameters) are loaded instead and nothing is trained.
Results land in Hydra's run directory: hessian.json, spectrum.png, density.png and the log.
"""

from __future__ import annotations

import dataclasses
import json
import logging
import sys
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import hydra
import torch
from hydra.core.config_store import ConfigStore
from hydra.core.hydra_config import HydraConfig
from hydra.errors import InstantiationException
from omegaconf import DictConfig, OmegaConf

from hpo_cli.analysis.hessian import CurvatureReport, analyse, ggn_operator, hessian_operator
from hpo_cli.analysis.hessian.analysis import json_safe
from hpo_cli.analysis.hessian.operators import SymmetricOperator
from hpo_cli.core.curvature import CURVATURES
from hpo_cli.core.vectors import norm
from hpo_cli.data import Batch
from hpo_cli.hpo_hessian.plots import plot_density, plot_spectrum
from hpo_cli.hyper import training_terms
from hpo_cli.runner.cli.help import experiment_misfit, group_options, help_text, print_help
from hpo_cli.runner.cli.preflight import (
    MULTIRUN_FLAGS,
    argument,
    compose_jobs,
    literal_prefix,
)
from hpo_cli.runner.cli.renames import refuse_renamed_run
from hpo_cli.runner.config.build import Problem, build_problem
from hpo_cli.runner.config.schemas import ProblemConfig, register_configs
from hpo_cli.runner.config.trust import check_trusted, trust_argument
from hpo_cli.runner.config.validation import require, validate_problem
from hpo_cli.runner.errors import ConfigError, fail
from hpo_cli.runner.rundir.checkpoint import load_into, require_keys
from hpo_cli.runner.rundir.directory import RunDirectory
from hpo_cli.runner.rundir.names import HESSIAN_LOG

log = logging.getLogger("hpo_cli.analysis.hessian")


@dataclass
class HessianConfig(ProblemConfig):
    """The top level of ``hpo-hessian``: hpo-run's data, model and λ (:class:`ProblemConfig`),
    then what to analyse and how."""

    seed: int = 0  # data split and initialisation
    dtype: str = "float64"  # float32 | float64
    run_dir: str | None = None  # an hpo-run run directory to analyse; None: train here
    train_steps: int = 1000  # L-BFGS iterations at most (run_dir=null)
    train_tol: float = 1e-6  # stop training once ‖∇_w L_t‖ ≤ train_tol
    params: list[str] | None = None  # parameter names (model.named_parameters()); None: all
    mode: str = "auto"  # dense | lanczos | auto (dense when d ≤ dense_max)
    dense_max: int = 2000  # mode=auto: dense up to this many weights
    curvature: str = "hessian"  # hessian | ggn
    k: int = 6  # eigenvalues at each end (lanczos)
    probes: int = 100  # Hutchinson probes (lanczos)
    slq_probes: int = 4  # stochastic Lanczos quadrature start vectors (lanczos)
    slq_steps: int = 64  # Lanczos steps per SLQ start vector
    neumann_alpha: float | None = None  # Neumann step to diagnose; None: 1 (no step, seed 000)
    cg_tol: float = 1e-6  # CG relative accuracy for the iteration prediction
    rank_rtol: float | None = None  # τ = rank_rtol·max|λ|; None: max|λ|·d·ε(dtype)
    plots: bool = True  # spectrum and density PNGs


def register() -> None:
    """hpo-run's group schemas plus ``base_hessian``."""
    register_configs()
    ConfigStore.instance().store(name="base_hessian", node=HessianConfig)


register()


def validate(cfg: DictConfig) -> None:
    """Range checks in one line naming the key; raises :class:`ConfigError`."""
    validate_problem(cfg)
    require(cfg.mode in ("auto", "dense", "lanczos"), "mode", cfg.mode, "auto|dense|lanczos")
    require(cfg.curvature in CURVATURES, "curvature", cfg.curvature, "|".join(CURVATURES))
    for key in ("dense_max", "k", "slq_probes", "slq_steps"):
        require(cfg[key] > 0, key, cfg[key], "must be > 0")
    require(cfg.probes >= 2, "probes", cfg.probes, "must be >= 2")
    require(cfg.train_steps >= 0, "train_steps", cfg.train_steps, "must be >= 0")
    require(cfg.train_tol >= 0, "train_tol", cfg.train_tol, "must be >= 0")
    require(0 < cfg.cg_tol < 1, "cg_tol", cfg.cg_tol, "must be in (0, 1)")
    for key in ("neumann_alpha", "rank_rtol"):
        require(cfg[key] is None or cfg[key] > 0, key, cfg[key], "must be > 0 or null")


def training_loss(problem: Problem) -> torch.Tensor:
    """L_t(w, λ) on the whole training split, as hpo-run's hypergradient defines it."""
    return problem.hyper.training_loss(problem.model, whole_train(problem), problem.criterion)


def whole_train(problem: Problem) -> Batch:
    """The whole training split as one batch (``index`` = every example, in order)."""
    return problem.data.train.sample(None, torch.Generator())


TRUSTED = {"run_dir": False}
"""Whether the command line said ``trust_run_dir=true`` (:func:`main` takes it out of the
arguments before Hydra sees them)."""


def load_run(cfg: DictConfig) -> tuple[Problem, str]:
    """The model and hyperparameters of an hpo-run run directory's last checkpoint, built from
    that run's own configuration in the dtype and on the device asked for here; and a line
    naming the source."""
    run_dir = Path(cfg.run_dir).expanduser().resolve()
    saved = RunDirectory(run_dir).saved_config
    checkpoint = RunDirectory(run_dir).load_checkpoint() if saved.exists() else None
    if checkpoint is None:
        missing = saved if not saved.exists() else RunDirectory(run_dir).checkpoint
        raise ConfigError(f"run_dir={cfg.run_dir} is not an hpo-run run directory (no {missing})")
    check_trusted(run_dir, "run_dir", TRUSTED["run_dir"])  # again: a flag may skip main's check
    refuse_renamed_run(run_dir, "run_dir")
    run_cfg = RunDirectory(run_dir).read_saved_config()
    run_cfg.dtype, run_cfg.device = cfg.dtype, cfg.device
    if cfg.threads:
        run_cfg.threads = cfg.threads
    problem = build_problem(run_cfg)
    require_keys(checkpoint, ("model", "hyper"))
    load_into(problem.model, checkpoint["model"], checkpoint, "model")
    load_into(problem.hyper, checkpoint["hyper"], checkpoint, "hyperparameters")
    outer_step = checkpoint.get("progress", {}).get("outer_step")
    return problem, f"{run_dir} (outer step {outer_step})"


def train_here(cfg: DictConfig, chunk: int = 10) -> tuple[Problem, dict[str, Any]]:
    """Build the configured data, model and hyperparameters as hpo-run does; train w by
    full-batch L-BFGS (strong-Wolfe line search) for at most ``train_steps`` iterations, in
    chunks of ``chunk``, until ‖∇_w L_t‖ ≤ ``train_tol``. Returns the problem and a record of
    the training."""
    problem = build_problem(cfg)
    params = list(problem.model.parameters())

    def closure() -> torch.Tensor:
        for param in params:
            param.grad = None
        loss = training_loss(problem)
        loss.backward(inputs=params)
        return loss

    steps = 0
    loss = closure().detach()
    gradient_norm = float(norm([p.grad for p in params]))
    optimizer = None  # made at the first step: torch.optim's first use imports torch._dynamo (2 s)
    while steps < cfg.train_steps and gradient_norm > cfg.train_tol:
        optimizer = optimizer or torch.optim.LBFGS(
            params, lr=1, line_search_fn="strong_wolfe", tolerance_grad=0, tolerance_change=0
        )
        optimizer.param_groups[0]["max_iter"] = min(chunk, cfg.train_steps - steps)
        optimizer.step(closure)
        steps += optimizer.param_groups[0]["max_iter"]
        loss = closure().detach()
        gradient_norm = float(norm([p.grad for p in params]))
    return problem, {
        "optimizer": "L-BFGS (strong Wolfe), full batch",
        "steps": steps,
        "loss": float(loss),
        "gradient_norm": gradient_norm,
        "converged": gradient_norm <= cfg.train_tol,
    }


def select_parameters(model: torch.nn.Module, names: list[str] | None) -> dict[str, torch.Tensor]:
    """The named parameters to differentiate with respect to (all when ``names`` is None)."""
    named = dict(model.named_parameters())
    if names is None:
        return named
    unknown = [name for name in names if name not in named]
    if unknown or not names:
        raise ConfigError(
            f"params={list(names)} is invalid: {', '.join(unknown) or 'empty'} not among the "
            f"model's parameters {', '.join(named)}"
        )
    return {name: named[name] for name in names}


def curvature_operator(
    problem: Problem, params: list[torch.Tensor], curvature: str
) -> SymmetricOperator:
    """H of L_t, or G = Jᵀ H_z J + ∇²R, on the whole training split: L_t, its outputs z and the
    penalty R from the hyperparameter module's training loss exactly as hpo-run's hyper-step
    takes them (:func:`hpo_cli.hyper.training_terms`), so G is the matrix that
    ``solver.curvature=ggn`` inverts for every module (weighted, augmented, distilled)."""
    if curvature == "hessian":
        return hessian_operator(training_loss(problem), params)
    batch = whole_train(problem)
    loss, outputs, penalty = training_terms(problem.hyper, problem.model, batch, problem.criterion)
    return ggn_operator(outputs, loss, params, penalty)


def _g(value: float) -> str:
    return f"{value:.4g}"


def summary_lines(report: CurvatureReport, names: list[str], curvature: str) -> list[str]:
    """A readable console summary of a report."""
    matrix = "Hessian" if curvature == "hessian" else "Gauss-Newton matrix"
    lines = [
        f"{matrix} of the training loss w.r.t. {', '.join(names)}: d = {report.size}, "
        f"{report.dtype}, {report.mode}",
        f"eigenvalues: λmin = {_g(report.smallest)}, λmax = {_g(report.largest)}"
        + (
            ""
            if report.converged
            else " (ARPACK did not converge: Ritz values, inside the spectrum)"
        ),
    ]
    spectrum = report.spectrum
    if spectrum is not None:
        gap = "none dropped" if spectrum.gap is None else f"gap {_g(spectrum.gap)}"
        lines += [
            f"negative eigenvalues: {spectrum.negative} (below −τ)",
            f"rank {spectrum.rank} of {report.size} at τ = {spectrum.tolerance:.3g} ({gap}: "
            f"smallest kept / largest dropped |λ|)",
            f"condition number: {_g(spectrum.condition_nonzero)} over the non-zero spectrum, "
            f"{_g(spectrum.condition_full)} over the full spectrum",
            f"trace: {_g(report.trace)} (exact)",
        ]
    else:
        estimate = report.trace_estimate
        assert estimate is not None
        lines += [
            f"condition number λmax/λmin: {_g(report.condition)} (inf unless λmin > τ = "
            f"{report.tolerance:.3g})",
            f"trace ≈ {_g(estimate.mean)} ± {_g(estimate.upper - estimate.mean)} "
            f"({estimate.confidence:.0%} interval, {estimate.probes} Hutchinson probes)",
        ]
    lines += [f"Neumann: {report.neumann.message}", report.cg.message]
    return lines


def analyse_config(cfg: DictConfig, output_dir: Path) -> dict[str, Any]:
    """Everything ``hpo-hessian`` does for a validated config; returns hessian.json's content."""
    training: dict[str, Any] | None = None
    if cfg.run_dir:
        problem, source = load_run(cfg)
    else:
        (problem, training), source = train_here(cfg), "trained here"
        log.info(
            "trained %d L-BFGS steps: loss %.6g, ‖∇L_t‖ = %.3g%s",
            training["steps"],
            training["loss"],
            training["gradient_norm"],
            "" if training["converged"] else f" (> train_tol={cfg.train_tol}: not a minimum)",
        )
    selected = select_parameters(problem.model, cfg.params)
    params = list(selected.values())
    size = sum(p.numel() for p in params)
    mode = cfg.mode if cfg.mode != "auto" else ("dense" if size <= cfg.dense_max else "lanczos")
    if mode == "lanczos" and not cfg.k < size:
        raise ConfigError(f"k={cfg.k} is invalid: Lanczos needs k < d = {size}; use mode=dense")
    operator = curvature_operator(problem, params, cfg.curvature)
    report = analyse(
        operator,
        mode=mode,
        k=cfg.k,
        probes=cfg.probes,
        slq_probes=cfg.slq_probes,
        slq_steps=cfg.slq_steps,
        neumann_alpha=1.0 if cfg.neumann_alpha is None else cfg.neumann_alpha,
        cg_tol=cfg.cg_tol,
        rank_rtol=cfg.rank_rtol,
        seed=cfg.seed,
    )
    result = {
        "source": source,
        "curvature": cfg.curvature,
        "params": {name: list(p.shape) for name, p in selected.items()},
        "device": str(operator.device),
        "training": json_safe(training) if training else None,
        **report.to_dict(),
    }
    (output_dir / "hessian.json").write_text(json.dumps(result, indent=1, allow_nan=False))
    if cfg.plots:
        plot_spectrum(report, output_dir / "spectrum.png")
        plot_density(report, output_dir / "density.png")
    for line in summary_lines(report, list(selected), cfg.curvature):
        log.info("%s", line)
    log.info("results in %s", output_dir)
    return result


@hydra.main(version_base="1.3", config_path="../conf", config_name="hessian")
def run(cfg: DictConfig) -> None:
    """Validate, claim the output directory (as hpo-run claims a run's: its lock, then
    ``.hydra/`` and hpo-hessian.log; one that holds a run or an analysis is refused, so that
    ``hydra.run.dir=<a run>`` cannot rewrite that run's records), then analyse; one clear line
    on bad input."""
    hydra_cfg = HydraConfig.get()
    files = RunDirectory(Path(hydra_cfg.runtime.output_dir))
    try:
        validate(cfg)
        if files.holds_run() or files.saved_config.exists():
            raise ConfigError(
                f"hydra.run.dir={files.path} already holds a run or an analysis; hpo-hessian "
                "writes into a directory of its own (run_dir= names a run to analyse)"
            )
        with files.claimed(
            cfg,
            list(hydra_cfg.overrides.task),
            HydraConfig.instance().cfg,
            fresh=True,
            log_name=HESSIAN_LOG,
        ):
            analyse_config(cfg, files.path)
    except InstantiationException as error:
        fail("hpo-hessian", str(error.__cause__ or error), 2)
    except ConfigError as error:
        fail("hpo-hessian", str(error), 2)


HESSIAN_GROUPS = ("dataset", "model", "hyper", "device")


def fitting_experiments() -> dict[str, str | None]:
    """hpo-run's experiments → the first group or key hpo-hessian does not take (``None``:
    the experiment fits hpo-hessian)."""
    keys = {f.name for f in dataclasses.fields(HessianConfig)}
    return {
        name: experiment_misfit(name, set(HESSIAN_GROUPS), keys)
        for name in group_options("experiment")
    }


def check_arguments(arguments: list[str], trusted: bool = False) -> None:
    """Refuse, before Hydra runs, an experiment that sets what hpo-hessian does not take,
    anything Hydra cannot compose, an output directory that cannot be one (a file in its place
    or in its path, :meth:`RunDirectory.check_creatable`), and a ``run_dir`` whose saved
    configuration is not trusted
    (:func:`hpo_cli.runner.config.trust.check_trusted`; ``trusted``: ``trust_run_dir=true``)
    (one line, exit 2).

    Raises:
        ConfigError: the command line is refused.
    """
    experiment = argument(arguments, "experiment")
    misfits = fitting_experiments()
    if experiment in misfits and misfits[experiment] is not None:
        fitting = ", ".join(name for name, misfit in misfits.items() if misfit is None)
        raise ConfigError(
            f"experiment={experiment} sets {misfits[experiment]}, which hpo-hessian does not "
            f"take (it is an hpo-run experiment); hpo-hessian's experiments: {fitting}"
        )
    configs = compose_jobs(arguments, "hessian", HessianConfig)
    multirun = any(a in MULTIRUN_FLAGS for a in arguments)
    node = configs[0].hydra.sweep if multirun else configs[0].hydra.run
    output_dir = OmegaConf.to_container(node, resolve=False)["dir"]
    RunDirectory(literal_prefix(output_dir)).check_creatable()
    for cfg in configs:
        if cfg.run_dir:
            check_trusted(Path(cfg.run_dir).expanduser().resolve(), "run_dir", trusted)


def main() -> None:
    """Console-script entry point: its own ``--help``, then the command line checked
    (:func:`check_arguments`), then Hydra."""
    arguments = sys.argv[1:]
    try:
        trusted, arguments = trust_argument(arguments)
        TRUSTED["run_dir"] = trusted
        sys.argv = [sys.argv[0], *arguments]  # Hydra never sees trust_run_dir=
        if "--help" in arguments or "-h" in arguments:
            groups = {group: group_options(group) for group in HESSIAN_GROUPS}
            groups["experiment"] = [n for n, bad in fitting_experiments().items() if not bad]
            summary = "the curvature of a training loss (Hessian spectra, condition, solvers)"
            print_help(
                help_text("hpo-hessian", summary, HessianConfig, groups, "hessian", arguments)
            )
            return
        if all(a in MULTIRUN_FLAGS or not a.startswith("-") for a in arguments):
            check_arguments(arguments, trusted)
    except ConfigError as error:  # before Hydra has set up logging: stderr only
        print(f"hpo-hessian: error: {error}", file=sys.stderr)
        sys.exit(2)
    run()
