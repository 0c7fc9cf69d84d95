# One entry point for everything: `make train` and `make test` set up .venv on first use.
PYTHON ?= python3
VENV   ?= .venv
BIN     = $(VENV)/bin
# CPU machines: the CPU wheel of torch, installed first so nothing pulls in CUDA packages.
# On a GPU machine: make TORCH_SPEC=torch (or any build you want) before the first run.
TORCH_SPEC ?= torch==2.13.0
ENV    ?= SpaceInvaders
ARGS   ?=

.PHONY: setup train test test-fast check lint format typecheck clean

setup: $(VENV)/.installed

$(VENV)/.installed: pyproject.toml
	$(PYTHON) -m venv $(VENV)
	$(BIN)/pip install --quiet --upgrade pip
	$(BIN)/pip install --quiet "$(TORCH_SPEC)"
	$(BIN)/pip install --quiet -e ".[dev]"
	touch $@

train: setup  ## dqn train --env $(ENV) $(ARGS)
	$(BIN)/dqn train --env $(ENV) $(ARGS)

test: setup  ## the whole suite, learning tests included
	$(BIN)/python -m pytest

test-fast: setup  ## skips the learning tests marked slow
	$(BIN)/python -m pytest -m "not slow"

check: lint typecheck  ## lint, format check and type check

lint: setup
	$(BIN)/ruff check dqn_cli tests benchmarks
	$(BIN)/ruff format --check dqn_cli tests benchmarks

format: setup
	$(BIN)/ruff format dqn_cli tests benchmarks
	$(BIN)/ruff check --fix dqn_cli tests benchmarks

typecheck: setup
	$(BIN)/mypy

clean:
	rm -rf $(VENV) .mypy_cache .ruff_cache .pytest_cache
