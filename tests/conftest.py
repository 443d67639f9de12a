"""Test-suite setup: an isolated AIRFLOW_HOME, the Dune API emulator fixtures and a connection pointing at it."""

from __future__ import annotations

import json
import os
import tempfile
from pathlib import Path
from typing import Any

import pytest

_AIRFLOW_HOME = Path(os.environ.get("DUNE_TEST_AIRFLOW_HOME") or tempfile.mkdtemp(prefix="dune-airflow-home-"))
os.environ["AIRFLOW_HOME"] = str(_AIRFLOW_HOME)
os.environ.setdefault("AIRFLOW__CORE__LOAD_EXAMPLES", "False")
os.environ.setdefault("AIRFLOW__CORE__UNIT_TEST_MODE", "True")
os.environ.setdefault("AIRFLOW__CORE__DAGS_FOLDER", str(Path(__file__).resolve().parent.parent / "example_dags"))
os.environ.pop("AIRFLOW_CONN_DUNE_DEFAULT", None)
# The emulator's runs last seconds, so tests poll far faster than the 1 s floor real DAGs get.
os.environ.setdefault("AIRFLOW__DUNE__MIN_POLL_INTERVAL", "0.01")

pytest_plugins = ["airflow_provider_dune.testing.pytest_plugin"]

TEST_API_KEY = "test-key"
REPO_ROOT = Path(__file__).resolve().parent.parent
SHARED_OPENAPI = REPO_ROOT.parent / "shared" / "dune-api" / "openapi.json"


def dune_connection_json(base_url: str, api_key: str = TEST_API_KEY, **extra: object) -> str:
    """An ``AIRFLOW_CONN_*`` value for a Dune connection; retries wait milliseconds so tests stay fast."""
    # No budget pacing unless a test asks for it: the emulator enforces no rate limit unless told to.
    extra = {"retry_min_wait": 0.01, "retry_max_wait": 0.05, "timeout": 5, "reads_per_minute": 0, **extra}
    return json.dumps({"conn_type": "dune", "host": base_url, "password": api_key, "extra": extra})


@pytest.fixture(autouse=True)
def run_durations_store(monkeypatch: pytest.MonkeyPatch) -> Any:
    """Each test starts without previous run durations (they live in Airflow Variables), kept in memory."""
    from airflow_provider_dune.utils import run_durations
    from tests.operators.fakes import FakeVariables

    fake = FakeVariables()
    monkeypatch.setattr(run_durations, "Variable", fake)
    return fake


@pytest.fixture(autouse=True)
def budget_lease_store(monkeypatch: pytest.MonkeyPatch) -> Any:
    """The triggerers' budget leases (Airflow Variables) kept in memory, none held when a test starts."""
    from airflow_provider_dune.utils import budget_leases
    from tests.operators.fakes import FakeVariables

    fake = FakeVariables()
    monkeypatch.setattr(budget_leases.LEASES, "_store", fake)
    monkeypatch.setattr(budget_leases.LEASES, "_keys", {})
    return fake


@pytest.fixture
def dune_conn_id(dune_emulator, monkeypatch: pytest.MonkeyPatch) -> str:
    """``dune_default`` pointing at a fresh emulator with the test key."""
    monkeypatch.setenv("AIRFLOW_CONN_DUNE_DEFAULT", dune_connection_json(dune_emulator.url))
    return "dune_default"


def pytest_terminal_summary(terminalreporter: Any) -> None:
    """Say plainly when a test that needs system packages did not run, and why (easy to miss among the skips)."""
    notes = {
        "browser test skipped": "the web UI browser test did not run",
        "production stack skipped": "the production-shaped stack (PostgreSQL, Redis, Celery) did not run",
        "no Docker Compose CLI": "docker-compose.yaml was not checked by Docker Compose",
    }
    said: set[str] = set()
    for report in terminalreporter.stats.get("skipped", []):
        reason = report.longrepr[2] if isinstance(report.longrepr, tuple) else str(report.longrepr)
        for marker, what in notes.items():
            if marker in reason and marker not in said:
                said.add(marker)
                terminalreporter.write_line("")
                terminalreporter.write_line(f"NOTE: {what}: {reason.split(': ', 1)[-1]}", yellow=True)


def pytest_collection_modifyitems(items: list[pytest.Item]) -> None:
    """The DAG runs first: they are the longest tests, so on several processes (pytest-xdist) they start while
    the short ones fill the other processes, instead of ending the run alone."""
    items.sort(key=lambda item: item.get_closest_marker("dag") is None)
