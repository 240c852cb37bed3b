"""The peers' rows of ``benchmarks.end_to_end`` compute hpo-cli's hypergradient: torchopt's
``custom_root`` and betty's ``Engine`` the 4-term Neumann IFT of ``hpo_cli.core.hypergradient``
with the same α, higher the unrolled hypergradient of ``solver=unrolled`` (``Unrolled``), each on
a tiny float64 problem after a few inner steps. The same method with the same α on the same
batches agrees to rounding, far below the method's own error (the 4-term series against the
exact solve: above 1e-3 here), so the IFT tests assert agreement to 1e-8 relative. The peers
are the optional bench extra (``make install-bench``): a test whose peer is missing is skipped."""

from __future__ import annotations

import pytest
import torch
from torch.nn import functional as F

from benchmarks.common.plain_loop import TERMS, Batch, Loop, Vector
from benchmarks.common.run_config import compose_config
from benchmarks.end_to_end_peers import (
    betty_engine,
    higher_hypergradient,
    neumann_alpha,
    torchopt_hypergradient,
)
from hpo_cli.core.hypergradient import hypergradient
from hpo_cli.core.methods import HyperLosses
from hpo_cli.core.solvers.exact import Exact
from hpo_cli.core.solvers.neumann import Neumann
from hpo_cli.core.unrolled.solver import Unrolled

TINY = [
    "dtype=float64",
    "model.hidden_sizes=[6]",
    "dataset.train_size=40",
    "dataset.val_size=40",
    "hyper.init_noise=1.0",
    "inner_steps=5",
    "batch_size=16",
    "optimizer.lr=0.05",
]


def tiny_loop(*overrides: str) -> Loop:
    loop = Loop(compose_config([*TINY, *overrides]))
    loop.inner_phase()  # weights and Adam's state away from their start
    return loop


def relative(result: Vector, reference: Vector) -> float:
    diff = sum(float((r - f).square().sum()) for r, f in zip(result, reference, strict=True))
    return (diff / sum(float(f.square().sum()) for f in reference)) ** 0.5


def hpo_cli_neumann(loop: Loop, train: Batch, val: Batch, alpha: float | None) -> Vector:
    """hpo-cli's IFT hypergradient with Neumann(4 terms, α), or the exact solve for ``None``."""
    solver = Exact() if alpha is None else Neumann(terms=TERMS, alpha=alpha)
    result = hypergradient(
        loop.training_loss(train, loop.decay()),
        F.cross_entropy(loop.model(val[0]), val[1]),
        loop.params,
        loop.thetas,
        solver,
        check_residual=False,
    )
    return list(result.grads)


def test_torchopts_custom_root_is_hpo_clis_neumann_hypergradient():
    pytest.importorskip("torchopt", reason="the optional bench extra")
    loop = tiny_loop()
    train, val = loop.hyper_batches()
    alpha = neumann_alpha(
        loop.params,
        loop.training_loss(train, loop.decay()),
        F.cross_entropy(loop.model(val[0]), val[1]),
    )
    ours = hpo_cli_neumann(loop, train, val, alpha)
    assert relative(ours, hpo_cli_neumann(loop, train, val, None)) > 1e-3  # the series' error
    assert relative(torchopt_hypergradient(loop, train, val), ours) < 1e-8


def test_bettys_engine_steps_theta_by_hpo_clis_neumann_hypergradient():
    """One outer step with SGD of step 1 on θ: θ moves by minus betty's hypergradient, taken on
    the inner problem's last mini-batch and the whole validation split with the α it set."""
    pytest.importorskip("betty", reason="installed by make install-bench", exc_type=ImportError)
    loop = tiny_loop("outer_steps=1")
    loop.hyper_optimizer = torch.optim.SGD(loop.thetas, lr=1.0)
    before = [theta.detach().clone() for theta in loop.thetas]
    engine = betty_engine(loop, [])
    engine.run()
    moved = [b - theta.detach() for b, theta in zip(before, loop.thetas, strict=True)]
    with torch.no_grad():
        for theta, b in zip(loop.thetas, before, strict=True):
            theta.copy_(b)  # the reference at the θ of the hyper-step
    val = (loop.data.val.inputs, loop.data.val.targets)
    alpha = engine.inner.config.neumann_alpha
    ours = hpo_cli_neumann(loop, engine.inner.cur_batch, val, alpha)
    assert alpha != 1.0  # set from the power iterations, not the placeholder
    assert relative(moved, ours) < 1e-8


def test_highers_unrolled_adam_is_hpo_clis_unrolled_hypergradient():
    """K = 4 steps of the run's Adam from its state, with the two places where higher's Adam is
    not torch's made void: ε (higher adds it to √v before the bias correction, torch after; here
    1e-30) and the step count (torch keeps it as a float32 tensor, so higher's bias corrections
    β^t are float32: 1e-5 relative on this problem; here made float64)."""
    pytest.importorskip("higher", reason="the optional bench extra")
    loop = tiny_loop("optimizer.eps=1e-30")
    for state in loop.optimizer.state.values():
        state["step"] = state["step"].double()
    _, val = loop.hyper_batches()
    batches = [loop.batch(loop.data.train, loop.cfg.batch_size) for _ in range(4)]
    theirs = higher_hypergradient(loop, batches, val)

    def inner_loss(k: int) -> torch.Tensor:  # the weights hpo-cli substitutes into the module
        return loop.training_loss(batches[k], loop.decay(), params=list(loop.model.parameters()))

    losses = HyperLosses(
        training_loss=lambda: inner_loss(0),
        validation_loss=lambda: F.cross_entropy(loop.model(val[0]), val[1]),
        inner_training_loss=inner_loss,
    )
    result, _ = Unrolled(steps=4).hypergradient(loop.model, loop.thetas, loop.optimizer, losses)
    ours = list(result.grads)
    assert sum(float(g.abs().sum()) for g in ours) > 0
    assert relative(theirs, ours) < 1e-12


def test_a_missing_peer_is_listed_and_fails_bench_peers_in_one_line(monkeypatch, capsys):
    from benchmarks import end_to_end

    status = {"torchopt": "0.7.3", "betty": "not available: ImportError: x", "higher": "0.2.1"}
    monkeypatch.setattr(end_to_end, "peer_status", lambda: status)
    assert end_to_end.missing_peers(False) == {"betty": status["betty"]}
    capsys.readouterr()
    with pytest.raises(SystemExit) as stop:
        end_to_end.missing_peers(True)
    assert stop.value.code == 1
    assert capsys.readouterr().err == (
        "error: --peers: not installed: betty (run `make install-bench`)\n"
    )
