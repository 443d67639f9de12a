"""``@task.dune_sql``: registered with Airflow, runs the SQL its function returns."""

from __future__ import annotations

from datetime import datetime

import pytest

from airflow_provider_dune.api.errors import DuneConfigurationError
from airflow_provider_dune.get_provider_info import get_provider_info
from airflow_provider_dune.testing.emulator import DuneEmulator
from airflow_provider_dune.utils import task_records
from airflow_provider_dune.version_compat import AIRFLOW_V_3_0_PLUS
from tests.operators.fakes import FakeTI, FakeVariables

if AIRFLOW_V_3_0_PLUS:
    from airflow.sdk import DAG, task
else:
    from airflow import DAG
    from airflow.decorators import task


def test_registered_as_a_task_decorator() -> None:
    (entry,) = get_provider_info()["task-decorators"]
    assert entry == {"name": "dune_sql", "class-name": "airflow_provider_dune.decorators.dune_sql.dune_sql_task"}
    assert callable(task.dune_sql)


def _operator(function_returns: object) -> object:
    with DAG("dune_sql_dag", schedule=None, start_date=datetime(2024, 1, 1)):

        @task.dune_sql(fetch_results=True, poll_interval=0.05, deferrable=False)
        def daily(day: str) -> object:
            return function_returns if function_returns is not None else f"SELECT DATE '{day}' AS day"

        return daily("2024-06-01").operator


def test_runs_the_sql_the_function_returns(
    dune_emulator: DuneEmulator, dune_conn_id: str, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setattr(task_records, "Variable", FakeVariables())
    operator = _operator(None)
    result = operator.execute({"ti": FakeTI(dune_emulator)})  # type: ignore[attr-defined]
    assert result["state"] == "completed" and result["rows"]
    (request,) = [r for r in dune_emulator.requests if r.endpoint == "execute_sql"]
    assert request.json_body["sql"] == "SELECT DATE '2024-06-01' AS day"


@pytest.mark.parametrize("returned", ["  ", 42])
def test_a_function_that_returns_no_sql_fails_clearly(
    dune_emulator: DuneEmulator, dune_conn_id: str, returned: object
) -> None:
    operator = _operator(returned)
    with pytest.raises(DuneConfigurationError, match="the SQL the function returned"):
        operator.execute({"ti": FakeTI(dune_emulator)})  # type: ignore[attr-defined]
    assert "execute_sql" not in dune_emulator.counts
