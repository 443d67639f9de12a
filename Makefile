# Two commands for a fresh clone: `make demo` and `make test`. Everything else is a building block.
SHELL := /bin/bash
.SHELLFLAGS := -eu -o pipefail -c

PYTHON ?= python3
VENV ?= .venv
AIRFLOW_VERSION ?= 3.3.2
BIN := $(VENV)/bin
STAMP := $(VENV)/.installed-airflow-$(AIRFLOW_VERSION)
PYTEST_ARGS ?=

.PHONY: help install lint format test test-unit demo emulator bench clean

help:
	@echo "make demo     run the nightly-refresh example DAG against the local Dune API emulator"
	@echo "make test     install into $(VENV), then ruff, mypy and the whole test suite"
	@echo "make emulator start the Dune API emulator on 127.0.0.1:8765 (Ctrl-C to stop)"
	@echo "make lint     ruff + mypy only;  make format  apply ruff's formatting"

$(STAMP): pyproject.toml
	@$(PYTHON) -c 'import sys; sys.exit(0 if sys.version_info >= (3, 10) else "Python 3.10+ is required (set PYTHON=python3.x)")'
	@test -x $(BIN)/python || $(PYTHON) -m venv $(VENV)
	$(BIN)/python -m pip install --quiet --upgrade pip
	$(BIN)/python -m pip install --quiet -e ".[dev]" "apache-airflow==$(AIRFLOW_VERSION)"
	@rm -f $(VENV)/.installed-airflow-*
	@touch $@

install: $(STAMP)

lint: install
	$(BIN)/ruff check .
	$(BIN)/ruff format --check .
	$(BIN)/mypy

format: install
	$(BIN)/ruff check --fix .
	$(BIN)/ruff format .

test: lint
	$(BIN)/python -m pytest $(PYTEST_ARGS)

test-unit: install
	$(BIN)/python -m pytest -m "not e2e" $(PYTEST_ARGS)

demo: install
	$(BIN)/python -m example_dags.demo

emulator: install
	$(BIN)/dune-emulator --port 8765

clean:
	rm -rf $(VENV) .airflow_home .demo build *.egg-info .mypy_cache .ruff_cache .pytest_cache
