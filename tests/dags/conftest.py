"""Fixtures for running the example DAGs through ``airflow dags test`` in child processes."""

from __future__ import annotations

import subprocess
import sys
from collections.abc import Iterator
from pathlib import Path

import pytest

from airflow_provider_dune.testing.emulator import DEFAULT_SEED_PATH, DuneEmulator
from example_dags.demo import airflow_env

#: Seed durations x this: query 1001's pipeline takes ~2 s, 1005's diamond ~3 s, so a 0.4 s poll interval
#: gives the trigger several status polls while keeping each ``dags test`` short.
DAG_TEST_TIME_SCALE = 0.3
DAG_TEST_POLL_INTERVAL = "0.4"
DAG_TEST_API_KEY = "dag-test-key"


def airflow_command() -> list[str]:
    airflow = Path(sys.executable).with_name("airflow")
    return [str(airflow)] if airflow.exists() else [sys.executable, "-m", "airflow"]


@pytest.fixture(scope="session")
def migrated_airflow_home(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """A separate AIRFLOW_HOME with a migrated sqlite metadata DB, shared by the session's DAG runs."""
    home = tmp_path_factory.mktemp("dag-airflow-home")
    env = airflow_env(home, "{}", DAG_TEST_POLL_INTERVAL)
    env.pop("AIRFLOW_CONN_DUNE_DEFAULT")
    result = subprocess.run(
        [*airflow_command(), "db", "migrate"], env=env, capture_output=True, text=True, timeout=180, check=False
    )
    assert result.returncode == 0, result.stdout[-4000:] + result.stderr[-4000:]
    return home


@pytest.fixture
def dag_test_emulator() -> Iterator[DuneEmulator]:
    """A fresh emulator (demo catalog, durations x 0.3) for one DAG run, so its counts are that run's."""
    emulator = DuneEmulator(api_keys={DAG_TEST_API_KEY: "write"})
    emulator.load_seed(DEFAULT_SEED_PATH, time_scale=DAG_TEST_TIME_SCALE)
    emulator.start()
    try:
        yield emulator
    finally:
        emulator.stop()
