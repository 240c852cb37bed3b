# hpo-cli: every target creates .venv on first use, so a fresh clone needs nothing else.
PYTHON ?= python3
VENV   := .venv
BIN    := $(VENV)/bin
STAMP  := $(VENV)/.installed

.PHONY: install run test lint bench clean docs

install: $(STAMP)

$(STAMP): pyproject.toml
	test -x $(BIN)/python || $(PYTHON) -m venv $(VENV)
	$(BIN)/python -m pip install --upgrade pip
	$(BIN)/python -m pip install -e ".[dev]"
	touch $(STAMP)

run: install
	$(BIN)/hpo-run $(ARGS)

# One test process per core (pytest-xdist); the tests that share a module's or a session's run
# share one xdist_group (tests/conftest.py) and stay in one process. The run ends with its 15
# slowest tests.
# Bytecode is cached even where PYTHONDONTWRITEBYTECODE is set: each test process and each command
# the tests start would otherwise compile hpo-cli and the tests again (about 1 s each).
TEST_WORKERS ?= 2
test: install-tracking
	PYTHONDONTWRITEBYTECODE= $(BIN)/python -m pytest -q -n $(TEST_WORKERS) --dist loadgroup \
		--durations=15 $(PYTEST_ARGS)

# The tracking extra: TensorBoard, MLflow and W&B for tracking.trackers=[...] (make test installs
# it so that the trackers' tests run; make run does without it).
TRACKING := $(VENV)/.installed-tracking
.PHONY: install-tracking
install-tracking: $(TRACKING)

$(TRACKING): $(STAMP)
	$(BIN)/python -m pip install -e ".[dev,tracking]"
	touch $(TRACKING)

# The cluster extra: the Ray launcher and the Optuna sweeper (not needed by make test or CI).
CLUSTER := $(VENV)/.installed-cluster

.PHONY: install-cluster
install-cluster: $(CLUSTER)

$(CLUSTER): $(STAMP)
	$(BIN)/python -m pip install -e ".[dev,cluster]"
	touch $(CLUSTER)

# The slow group, skipped by make test: sweeps through the joblib launcher, submitit's local mode and
# through Ray (a local instance and a running cluster, on 127.0.0.1 only), the Optuna baseline,
# a run and a sweep sent to a real mlflow server on 127.0.0.1, five of the seven ResNet-18
# combinations, whole quick benchmarks and the torch.compile tests.
.PHONY: test-slow
test-slow: install-cluster install-tracking
	$(BIN)/python -m pytest -q -m slow $(PYTEST_ARGS)

lint: install
	$(BIN)/ruff check hpo_cli tests benchmarks experiments examples
	$(BIN)/ruff format --check hpo_cli tests benchmarks experiments examples

bench: install
	$(BIN)/python -m benchmarks.hypergradient_cost $(ARGS)
	$(BIN)/python -m benchmarks.inner_optimizers $(ARGS)
	$(BIN)/python -m benchmarks.overhead $(ARGS)
	$(BIN)/python -m benchmarks.scaling $(ARGS)
	$(BIN)/python -m benchmarks.peers $(ARGS)
	$(BIN)/python -m benchmarks.solvers_in_the_loop $(ARGS)
	$(BIN)/python -m benchmarks.compiled_hvp $(ARGS)
	$(BIN)/python -m benchmarks.streamed_data $(ARGS)
	$(BIN)/python -m benchmarks.finite_difference_products $(ARGS)
	$(BIN)/python -m benchmarks.first_order_cost $(ARGS)
	$(BIN)/python -m benchmarks.mixed_precision $(ARGS)
	$(BIN)/python -m benchmarks.startup $(ARGS)
	$(BIN)/python -m benchmarks.end_to_end $(ARGS)

# The peer comparisons with the peers required: exit 1 in one line when one is not installed.
.PHONY: bench-peers
bench-peers: install
	$(BIN)/python -m benchmarks.peers --peers $(ARGS)
	$(BIN)/python -m benchmarks.solvers_in_the_loop --peers $(ARGS)
	$(BIN)/python -m benchmarks.solvers_in_the_loop --frontier --peers $(ARGS)
	$(BIN)/python -m benchmarks.end_to_end --peers $(ARGS)

# On a machine with an NVIDIA GPU: the default experiment, ResNet-18, the quick benchmarks and
# the 10^7-weight scaling point on CUDA (exit 1 on any failure; without a GPU, one line, exit 2).
.PHONY: gpu-check
gpu-check: install
	$(BIN)/python -m benchmarks.gpu_check $(ARGS)

# The peer libraries of benchmarks.peers and benchmarks.solvers_in_the_loop (`make bench-peers`
# fails without them). betty-ml 0.1.1's metadata (`torch>=1.6.*`) is refused by pip >= 24.1,
# which `install` upgrades to: a pip < 24.1 kept apart in .venv/oldpip installs it without its
# dependencies (torch and numpy, which hpo-cli already installs).
.PHONY: install-bench
install-bench: install
	$(BIN)/python -m pip install -e ".[bench]"
	$(BIN)/python -m pip install --quiet --target $(VENV)/oldpip "pip<24.1"
	PYTHONPATH=$(VENV)/oldpip $(BIN)/python -m pip install --no-deps "betty-ml==0.1.1"

.PHONY: bench-hf
bench-hf: install
	$(BIN)/python -m benchmarks.inner_optimizers $(ARGS)

# docs/configuration.md, generated from the schemas, constructors and YAML files
# (tests/runner/test_help.py fails when it is stale).
docs: install
	$(BIN)/python -c 'from hpo_cli.runner.cli.help import write_reference; write_reference()'

clean:
	rm -rf $(VENV) build *.egg-info

# Figures and outputs/figures/REPORT.md from the experiment catalogue (FULL=1: paper scale;
# FROM_DISK=1: run nothing, a missing run is one line naming the command that makes it).
.PHONY: figures
figures: install
	$(BIN)/python -m experiments.figures --out outputs/figures $(if $(FULL),--full) $(if $(FROM_DISK),--from-disk)
