"""Fixtures for running the example DAGs through ``airflow dags test`` in child processes."""

from __future__ import annotations

import subprocess
import sys
from collections.abc import Iterator
from pathlib import Path

import pytest

from airflow_provider_dune.testing.emulator import DEFAULT_SEED_PATH, DuneEmulator
from example_dags.demo import airflow_env, dags_test_setup_commands

#: Seed durations x this: query 1001's pipeline takes ~2 s, 1005's diamond ~3 s, so a 0.4 s poll interval
#: gives the trigger several status polls while keeping each ``dags test`` short.
DAG_TEST_TIME_SCALE = 0.3
DAG_TEST_POLL_INTERVAL = "0.4"
DAG_TEST_API_KEY = "dag-test-key"


def airflow_command() -> list[str]:
    airflow = Path(sys.executable).with_name("airflow")
    return [str(airflow)] if airflow.exists() else [sys.executable, "-m", "airflow"]


def dag_test_env(home: Path, conn_json: str | None) -> dict[str, str]:
    """The environment of the Airflow commands the DAG tests run (``conn_json``: ``dune_default``, or none)."""
    env = airflow_env(home, conn_json or "{}", DAG_TEST_POLL_INTERVAL)
    env["AIRFLOW__DUNE__MIN_POLL_INTERVAL"] = DAG_TEST_POLL_INTERVAL  # below the 1 s floor, to keep runs short
    if conn_json is None:
        env.pop("AIRFLOW_CONN_DUNE_DEFAULT")
    return env


@pytest.fixture(scope="session")
def migrated_airflow_home(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """A separate AIRFLOW_HOME with a migrated sqlite metadata DB, shared by the session's DAG runs."""
    home = tmp_path_factory.mktemp("dag-airflow-home")
    env = dag_test_env(home, None)
    # What `make demo` runs too: the migration, then what this Airflow needs before `dags test` works.
    for command in [["db", "migrate"], *dags_test_setup_commands()]:
        result = subprocess.run(
            [*airflow_command(), *command], env=env, capture_output=True, text=True, timeout=180, check=False
        )
        output = result.stdout[-4000:] + result.stderr[-4000:]
        assert result.returncode == 0, output
        assert "Failed to import" not in result.stdout + result.stderr, output  # reserialize skips such files
    return home


def _emulator(time_scale: float) -> Iterator[DuneEmulator]:
    emulator = DuneEmulator(api_keys={DAG_TEST_API_KEY: "write"})
    emulator.load_seed(DEFAULT_SEED_PATH, time_scale=time_scale)
    emulator.start()
    try:
        yield emulator
    finally:
        emulator.stop()


@pytest.fixture
def dag_test_emulator() -> Iterator[DuneEmulator]:
    """A fresh emulator (demo catalog, durations x 0.3) for one DAG run, so its counts are that run's."""
    yield from _emulator(DAG_TEST_TIME_SCALE)


@pytest.fixture
def slow_pipelines_emulator() -> Iterator[DuneEmulator]:
    """Like ``dag_test_emulator`` with the seed's durations x 1 (query 1005's pipeline ~10 s): for a task that
    must find a pipeline still running although another task started it, on a slow or busy machine too."""
    yield from _emulator(1.0)
