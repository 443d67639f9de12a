# Two commands for a fresh clone: `make demo` and `make test`. Everything else is a building block.
SHELL := /bin/bash
.SHELLFLAGS := -eu -o pipefail -c

PYTHON ?= python3
VENV ?= .venv
AIRFLOW_VERSION ?= 3.3.2
BIN := $(VENV)/bin
STAMP := $(VENV)/.installed-airflow-$(AIRFLOW_VERSION)
PYTEST_ARGS ?=

# Second virtualenv for the oldest supported Airflow; its versions are pinned by a committed constraints file.
VENV2 ?= .venv-airflow2
AIRFLOW2_CONSTRAINTS := constraints/airflow-2.11.txt
STAMP2 := $(VENV2)/.installed

.PHONY: help install install-airflow2 lint format docs docs-linkcheck test test-airflow3 test-airflow2 test-unit demo emulator bench screenshots clean

help:
	@echo "make demo     run the nightly-refresh example DAG against the local Dune API emulator"
	@echo "make test     ruff, mypy, the docs and the whole suite on Airflow $(AIRFLOW_VERSION), then unit + DAG tests on Airflow 2.11"
	@echo "make test-airflow2  only the Airflow 2.11 run (virtualenv $(VENV2))"
	@echo "make emulator start the Dune API emulator on 127.0.0.1:8765 (Ctrl-C to stop)"
	@echo "make lint     ruff + mypy only;  make format  apply ruff's formatting"
	@echo "make docs     build the documentation into build/docs/ (warnings are errors) and check its internal links"
	@echo "make bench    run the benchmarks in bench/ (several minutes; BENCH_ARGS=--quick for a smoke run)"
	@echo "make screenshots  refresh the web UI screenshots in docs/images/ (needs Debian's chromium)"
	@echo "make clean    remove the virtualenvs, build output and caches"

$(STAMP): pyproject.toml
	@$(PYTHON) -c 'import sys; sys.exit(0 if sys.version_info >= (3, 10) else "Python 3.10+ is required (set PYTHON=python3.x)")'
	@test -x $(BIN)/python || $(PYTHON) -m venv $(VENV)
	$(BIN)/python -m pip install --quiet --upgrade pip
	$(BIN)/python -m pip install --quiet -e ".[dev]" "apache-airflow==$(AIRFLOW_VERSION)"
	@rm -f $(VENV)/.installed-airflow-*
	@touch $@

install: $(STAMP)

$(STAMP2): pyproject.toml $(AIRFLOW2_CONSTRAINTS)
	@test -x $(VENV2)/bin/python || $(PYTHON) -m venv $(VENV2)
	$(VENV2)/bin/python -m pip install --quiet --upgrade pip
	$(VENV2)/bin/python -m pip install --quiet -c $(AIRFLOW2_CONSTRAINTS) -e ".[test]"
	@touch $@

install-airflow2: $(STAMP2)

BENCH_STAMP := $(VENV)/.installed-bench
$(BENCH_STAMP): $(STAMP)
	$(BIN)/python -m pip install --quiet -e ".[dev,bench]" "apache-airflow==$(AIRFLOW_VERSION)"
	@touch $@

lint: install
	$(BIN)/ruff check .
	$(BIN)/ruff format --check .
	$(BIN)/mypy

format: install
	$(BIN)/ruff check --fix .
	$(BIN)/ruff format .

# The documentation: every warning is an error (-W, --keep-going to list them all) and every cross-reference
# must resolve (-n), which covers :doc:/:ref: links, the API reference and the example code included by marker
# (a missing file or marker is an error too). Sphinx's linkcheck builder then checks the plain hyperlinks to
# local files (e.g. ../example_dags/...); docs/conf.py sets linkcheck_ignore for http(s):// so it never goes
# on the internet. Both builders share one doctree cache, so the second one does not read the sources again.
DOCS_OUT := build/docs
DOCS_DOCTREES := build/docs-doctrees

SPHINX_LINKCHECK = $(BIN)/sphinx-build -W --keep-going -n -q -b linkcheck -d $(DOCS_DOCTREES) docs build/docs-linkcheck

docs: install
	$(BIN)/sphinx-build -W --keep-going -n -q -b html -d $(DOCS_DOCTREES) docs $(DOCS_OUT)
	$(SPHINX_LINKCHECK)

docs-linkcheck: install
	$(SPHINX_LINKCHECK)

test: test-airflow3 test-airflow2

test-airflow3: lint docs
	$(BIN)/python -m pytest $(PYTEST_ARGS)

# The e2e module drives Airflow 3's api-server/dag-processor stack; everything else runs on 2.11 as well.
test-airflow2: install-airflow2
	$(VENV2)/bin/python -m pytest -m "not e2e" $(PYTEST_ARGS)

test-unit: install
	$(BIN)/python -m pytest -m "not e2e" $(PYTEST_ARGS)

demo: install
	$(BIN)/python -m example_dags.demo

emulator: install
	$(BIN)/dune-emulator --port 8765

# Benchmarks are run by hand (minutes, and they want a quiet machine); results go to bench/results/.
bench: $(BENCH_STAMP)
	$(BIN)/python -m bench $(BENCH_ARGS)

# The browser test saves its screenshots here instead of build/screenshots/; commit the ones the docs show.
screenshots: install
	DUNE_SCREENSHOT_DIR=docs/images DUNE_REQUIRE_BROWSER=1 $(BIN)/python -m pytest tests/e2e/test_first_hour.py -m e2e -k "browser or hook_meta or form"

clean:
	rm -rf $(VENV) $(VENV2) .airflow_home .demo build *.egg-info .mypy_cache .ruff_cache .pytest_cache
