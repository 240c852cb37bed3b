# hpo-cli: every target creates .venv on first use, so a fresh clone needs nothing else.
PYTHON ?= python3
VENV   := .venv
BIN    := $(VENV)/bin
STAMP  := $(VENV)/.installed

.PHONY: install run test lint bench clean

install: $(STAMP)

$(STAMP): pyproject.toml
	test -x $(BIN)/python || $(PYTHON) -m venv $(VENV)
	$(BIN)/python -m pip install --upgrade pip
	$(BIN)/python -m pip install -e ".[dev]"
	touch $(STAMP)

run: install
	$(BIN)/hpo-run $(ARGS)

test: install
	$(BIN)/python -m pytest -q $(PYTEST_ARGS)

lint: install
	$(BIN)/ruff check hpo_cli tests benchmarks
	$(BIN)/ruff format --check hpo_cli tests benchmarks

bench: install
	$(BIN)/python -m benchmarks.hypergradient_cost $(ARGS)
	$(BIN)/python -m benchmarks.hessian_free $(ARGS)

.PHONY: bench-hf
bench-hf: install
	$(BIN)/python -m benchmarks.hessian_free $(ARGS)

clean:
	rm -rf $(VENV) build *.egg-info
