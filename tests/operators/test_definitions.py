"""Dune as code against the emulator: saved queries from SQL, raw SQL runs, materialized views, latest results."""

from __future__ import annotations

import json
import time
from typing import Any

import pytest
from airflow.exceptions import AirflowException

from airflow_provider_dune.api.definitions import QueryDefinition
from airflow_provider_dune.api.errors import DuneAPIError, DuneConfigurationError
from airflow_provider_dune.hooks.dune import DuneHook
from airflow_provider_dune.operators import definitions as definitions_module
from airflow_provider_dune.operators.definitions import (
    VIEW_VARIABLE_PREFIX,
    DuneDeleteMaterializedViewOperator,
    DuneSyncQueryOperator,
    DuneUpsertMaterializedViewOperator,
)
from airflow_provider_dune.operators.sql import DuneExecuteSQLOperator
from airflow_provider_dune.testing.emulator import DuneEmulator, Fault
from airflow_provider_dune.utils import query_versions, task_records
from airflow_provider_dune.version_compat import AirflowFailException
from tests.operators.fakes import FakeTaskStateStore, FakeTI, FakeVariables

SQL = "SELECT block_date, SUM(amount_usd) AS volume\nFROM dex.trades\nWHERE block_date = DATE '{{day}}'\nGROUP BY 1"


@pytest.fixture
def variables(monkeypatch: pytest.MonkeyPatch) -> FakeVariables:
    fake = FakeVariables()
    monkeypatch.setattr(task_records, "Variable", fake)
    monkeypatch.setattr(definitions_module, "Variable", fake)
    monkeypatch.setattr(query_versions, "Variable", fake)
    return fake


@pytest.fixture
def context(dune_emulator: DuneEmulator, dune_conn_id: str, variables: FakeVariables) -> dict[str, Any]:
    return {"ti": FakeTI(dune_emulator)}


def sync(**kwargs: Any) -> DuneSyncQueryOperator:
    kwargs.setdefault("task_id", "sync")
    kwargs.setdefault("name", "daily volume")
    kwargs.setdefault("sql", SQL)
    kwargs.setdefault("parameters", [{"key": "day", "type": "text", "value": "2024-06-01"}])
    return DuneSyncQueryOperator(**kwargs)


# -- saved queries ------------------------------------------------------------------------------------------


def test_sync_creates_once_then_changes_nothing_then_updates(
    dune_emulator: DuneEmulator, context: dict[str, Any], variables: FakeVariables
) -> None:
    query_id = sync().execute(context)
    assert json.loads(variables.store["airflow_provider_dune_query__daily_volume"]) == {
        "query_id": query_id,
        "name": "daily volume",
    }
    assert sync().execute(context) == query_id  # unchanged: nothing sent
    assert dune_emulator.counts.get("create_query") == 1 and "update_query" not in dune_emulator.counts
    changed = sync(sql=SQL.replace("SUM", "AVG"), tags=["dex"]).execute(context)
    assert changed == query_id and dune_emulator.counts["update_query"] == 1
    with DuneHook() as hook:
        saved = hook.get_query(query_id)
    assert saved["query_sql"] == SQL.replace("SUM", "AVG") and saved["tags"] == ["dex"] and saved["version"] == 2
    assert context["ti"].xcom["query_uri"] == f"dune://queries/{query_id}"


def test_sync_ignores_whitespace_editors_add(dune_emulator: DuneEmulator, context: dict[str, Any]) -> None:
    sync().execute(context)
    sync(sql="\n" + SQL.replace("\n", "   \n") + "\n\n").execute(context)
    assert "update_query" not in dune_emulator.counts


def test_sync_recreates_a_query_deleted_on_dune(
    dune_emulator: DuneEmulator, context: dict[str, Any], variables: FakeVariables
) -> None:
    variables.store["airflow_provider_dune_query__daily_volume"] = "1999999"  # remembered, but gone
    query_id = sync().execute(context)
    assert query_id != 1999999
    assert json.loads(variables.store["airflow_provider_dune_query__daily_volume"])["query_id"] == query_id


def test_sync_of_an_explicit_query_id_updates_it(dune_emulator: DuneEmulator, context: dict[str, Any]) -> None:
    assert sync(query_id=1003, sql="SELECT 1", parameters=[], name="token_prices_latest").execute(context) == 1003
    assert dune_emulator.counts["update_query"] == 1 and "create_query" not in dune_emulator.counts


def test_an_unanswered_create_is_not_sent_twice(dune_emulator: DuneEmulator, context: dict[str, Any]) -> None:
    dune_emulator.inject("create_query", Fault.drop_after_processing())
    with pytest.raises(AirflowFailException, match="saved the query"):
        sync().execute(context)
    assert dune_emulator.counts["create_query"] == 1


def test_a_refused_create_withdraws_the_intent(
    dune_emulator: DuneEmulator, context: dict[str, Any], variables: FakeVariables
) -> None:
    dune_emulator.inject("create_query", Fault.status(400, "invalid request body"))
    with pytest.raises(DuneAPIError, match="invalid request body"):
        sync().execute(context)
    assert "airflow_provider_dune_query__daily_volume" not in variables.store
    sync().execute(context)  # nothing was created: the next run creates it
    assert dune_emulator.counts["create_query"] == 2


@pytest.mark.parametrize(
    ("kwargs", "message"),
    [
        ({"sql": "   "}, "is empty"),
        ({"sql": "SELECT 1", "parameters": ["day"]}, r"\['day'\] do not appear in the SQL"),
        ({"parameters": [{"key": "day", "type": "date"}]}, "'type' must be one of"),
        ({"parameters": ["day", "day"]}, "repeat a key"),
        ({"name": " "}, "query name must be a non-empty string"),
        ({"tags": "dex"}, "tags must be a list"),
    ],
)
def test_bad_definitions_fail_before_any_request(
    dune_emulator: DuneEmulator, context: dict[str, Any], kwargs: dict[str, Any], message: str
) -> None:
    with pytest.raises(DuneConfigurationError, match=message):
        sync(**kwargs).execute(context)
    assert dune_emulator.counts == {}


def test_query_key_is_checked_when_the_dag_is_parsed() -> None:
    with pytest.raises(DuneConfigurationError, match="names an Airflow Variable"):
        sync(query_key="a/b")


def test_definition_changes() -> None:
    definition = QueryDefinition.build(name="q", sql="SELECT {{x}}", parameters=["x"])
    current = {"query_sql": "SELECT {{x}}", "name": "q", "parameters": [{"key": "x", "type": "text", "value": ""}]}
    assert definition.changes_from(current) == []
    assert definition.changes_from({**current, "is_private": True, "name": "r"}) == ["name", "is_private"]


# -- raw SQL ------------------------------------------------------------------------------------------------


@pytest.mark.parametrize("deferrable", [False, True], ids=["worker", "triggerer"])
def test_raw_sql_runs_once_and_returns_rows(
    dune_emulator: DuneEmulator, context: dict[str, Any], deferrable: bool
) -> None:
    from airflow.exceptions import TaskDeferred

    task = DuneExecuteSQLOperator(
        task_id="sql", sql="SELECT 42 AS answer", fetch_results=True, poll_interval=0.05, deferrable=deferrable
    )
    if deferrable:
        import asyncio

        with pytest.raises(TaskDeferred) as info:
            task.execute(context)

        async def last_event() -> Any:
            return [event.payload async for event in info.value.trigger.run()][-1]

        result = task.execute_complete(context, asyncio.run(last_event()))
    else:
        result = task.execute(context)
    assert result["state"] == "completed" and result["rows"]
    assert dune_emulator.counts["execute_sql"] == 1
    assert context["ti"].xcom["execution_id"] == result["execution_id"]


def test_failing_raw_sql_fails_with_dunes_message(dune_emulator: DuneEmulator, context: dict[str, Any]) -> None:
    task = DuneExecuteSQLOperator(
        task_id="sql",
        sql="-- emulator: fail line 1:8: Column 'x' cannot be resolved\nSELECT x",
        poll_interval=0.05,
        deferrable=False,
    )
    with pytest.raises(AirflowException, match="Column 'x' cannot be resolved"):
        task.execute(context)


def test_raw_sql_is_checked_before_anything_runs() -> None:
    with pytest.raises(DuneConfigurationError, match="is empty"):
        DuneExecuteSQLOperator(task_id="sql", sql="  ")


# -- materialized views -------------------------------------------------------------------------------------


def view(**kwargs: Any) -> DuneUpsertMaterializedViewOperator:
    kwargs.setdefault("task_id", "view")
    kwargs.setdefault("name", "dune.demo.result_code_view")
    kwargs.setdefault("query_id", 1001)
    kwargs.setdefault("cron_expression", "0 */6 * * *")
    return DuneUpsertMaterializedViewOperator(**kwargs)


def test_view_upsert_only_when_the_definition_changed(dune_emulator: DuneEmulator, context: dict[str, Any]) -> None:
    created = view().execute(context)
    assert created["action"] == "created" and created["execution_id"]
    assert view().execute(context) == {
        "name": "dune.demo.result_code_view",
        "action": "unchanged",
        "execution_id": None,
    }
    assert dune_emulator.counts["upsert_materialized_view"] == 1  # an upsert is a billed refresh: only one
    updated = view(cron_expression="0 */12 * * *").execute(context)
    assert updated["action"] == "updated" and dune_emulator.counts["upsert_materialized_view"] == 2
    assert view(is_private=True).execute(context)["action"] == "updated"
    with DuneHook() as hook:
        assert hook.get_materialized_view("dune.demo.result_code_view").is_private is True


def test_view_delete_is_idempotent(dune_emulator: DuneEmulator, context: dict[str, Any]) -> None:
    view().execute(context)
    delete = DuneDeleteMaterializedViewOperator(task_id="drop", name="dune.demo.result_code_view")
    assert "deleted" in delete.execute(context)
    assert "did not exist" in delete.execute(context)
    with pytest.raises(AirflowException, match="404"):
        DuneDeleteMaterializedViewOperator(task_id="drop", name="dune.demo.result_code_view", missing_ok=False).execute(
            context
        )


@pytest.mark.parametrize(
    ("kwargs", "message"),
    [
        ({"cron_expression": "every day"}, "five fields"),
        ({"performance": "huge"}, "performance"),
        ({"expires_at": "tomorrow"}, "RFC 3339"),
    ],
)
def test_bad_view_definitions_fail_before_any_request(
    dune_emulator: DuneEmulator, context: dict[str, Any], kwargs: dict[str, Any], message: str
) -> None:
    with pytest.raises(DuneConfigurationError, match=message):
        view(**kwargs).execute(context)
    assert dune_emulator.counts == {}


# -- latest results -----------------------------------------------------------------------------------------


def test_latest_results_without_running(dune_emulator: DuneEmulator, dune_conn_id: str) -> None:
    with DuneHook() as hook:
        rows = [row for page in hook.iter_query_results(1001, page_size=3) for row in page.rows]
    assert len(rows) == 7
    assert dune_emulator.executions_started() == 0


# -- reusing the latest result ------------------------------------------------------------------------------


def test_a_fresh_latest_result_is_reused_without_running(dune_emulator: DuneEmulator, context: dict[str, Any]) -> None:
    from airflow_provider_dune.operators.query import DuneExecuteQueryOperator

    task = DuneExecuteQueryOperator(
        task_id="q",
        query_id=1002,
        fetch_results=True,
        reuse_latest_result_max_age=3600,
        poll_interval=0.05,
        deferrable=False,
    )
    result = task.execute(context)
    assert "execute_query" not in dune_emulator.counts and dune_emulator.executions_started() == 0
    assert result["state"] == "completed" and result["rows"]


def test_a_stale_latest_result_runs_the_query(dune_emulator: DuneEmulator, context: dict[str, Any]) -> None:
    import time

    from airflow_provider_dune.operators.query import DuneExecuteQueryOperator

    time.sleep(0.3)
    task = DuneExecuteQueryOperator(
        task_id="q", query_id=1002, reuse_latest_result_max_age=0.1, poll_interval=0.05, deferrable=False
    )
    task.execute(context)
    assert dune_emulator.counts["execute_query"] == 1


def test_reuse_refuses_parameters() -> None:
    from airflow_provider_dune.operators.query import DuneExecuteQueryOperator

    with pytest.raises(DuneConfigurationError, match="without query_parameters"):
        DuneExecuteQueryOperator(
            task_id="q", query_id=1001, query_parameters={"date": "x"}, reuse_latest_result_max_age=60
        )


@pytest.mark.parametrize(
    ("ended", "age"),
    [
        ("2026-01-01T00:00:00.123456789Z", 59.876543),
        ("2026-01-01T00:00:30Z", 30.0),
        ("2026-01-01T01:00:00+01:00", 60.0),
        ("not a time", None),
        (None, None),
    ],
)
def test_result_age(ended: str | None, age: float | None) -> None:
    from datetime import datetime, timezone

    from airflow_provider_dune.api.models import result_age_seconds

    now = datetime(2026, 1, 1, 0, 1, tzinfo=timezone.utc)
    got = result_age_seconds(ended, now)
    assert got == pytest.approx(age) if age is not None else got is None


# -- DataFrames ---------------------------------------------------------------------------------------------


def test_results_as_dataframes(dune_emulator: DuneEmulator, dune_conn_id: str) -> None:
    pytest.importorskip("pandas", reason="needs pandas (the pandas extra)")
    from tests.helpers import wait_finished

    with DuneHook() as hook:
        execution_id = wait_finished(
            hook.execute_query(1003, query_parameters={"symbol": "ETH"}).execution_id, pipeline=False
        )
        frame = hook.get_results_dataframe(execution_id, page_size=1)
        chunks = list(hook.iter_results_dataframes(execution_id, page_size=2))
        latest = hook.get_results_dataframe(query_id=1001)
    assert len(frame) == 3 and [len(chunk) for chunk in chunks] == [2, 1]
    assert list(frame.columns) == list(chunks[0].columns)
    assert len(latest) == 7 and "volume_usd" in latest.columns
    with pytest.raises(Exception, match="exactly one of execution_id or query_id"):
        next(hook.iter_results_dataframes())


# -- retries, lost answers and shared keys ------------------------------------------------------------------


def run_with_airflow_retries(task: Any, context: dict[str, Any], retries: int = 1) -> Any:
    """Execute ``task`` as Airflow would for one task instance: an error other than ``AirflowFailException``
    is retried (the same TI, the next try number) up to ``retries`` times."""
    for attempt in range(1, retries + 2):
        context["ti"].try_number = attempt
        try:
            return task.execute(context)
        except AirflowFailException:
            raise
        except Exception:
            if attempt > retries:
                raise
    raise AssertionError("unreachable")


class FlakyVariables(FakeVariables):
    """Variables whose ``set`` of keys starting with ``prefix`` fails ``failures`` times."""

    def __init__(self, prefix: str, failures: int = 1) -> None:
        super().__init__()
        self.prefix = prefix
        self.failures = failures

    def set(self, key: str, value: str, description: str | None = None) -> None:
        if key.startswith(self.prefix) and self.failures > 0:
            self.failures -= 1
            raise RuntimeError("the metadata database is unavailable")
        super().set(key, value, description)


@pytest.fixture(params=["variable", "task_state_store"])
def retry_context(
    request: pytest.FixtureRequest, dune_emulator: DuneEmulator, dune_conn_id: str, monkeypatch: pytest.MonkeyPatch
) -> dict[str, Any]:
    """A context whose task records live in Variables (Airflow < 3.3) or in the task state store (3.3+)."""
    variables = FlakyVariables(VIEW_VARIABLE_PREFIX, failures=0)
    monkeypatch.setattr(task_records, "Variable", variables)
    monkeypatch.setattr(definitions_module, "Variable", variables)
    store = {"task_state_store": FakeTaskStateStore()} if request.param == "task_state_store" else {}
    return {"ti": FakeTI(dune_emulator), "variables": variables, **store}


def test_a_lost_upsert_answer_is_not_upserted_again_by_a_retry(
    dune_emulator: DuneEmulator, retry_context: dict[str, Any]
) -> None:
    dune_emulator.inject("upsert_materialized_view", Fault.drop_after_processing())
    with pytest.raises(AirflowFailException) as info:
        run_with_airflow_retries(view(), retry_context)
    assert dune_emulator.counts["upsert_materialized_view"] == 1  # one billed refresh, not two
    message = str(info.value)
    assert "dune.demo.result_code_view" in message and "a second billed refresh" in message
    assert "airflow_provider_dune_view__dune.demo.result_code_view" in message  # what to set if it was applied


def test_a_retry_after_the_digest_could_not_be_saved_does_not_upsert_again(
    dune_emulator: DuneEmulator, retry_context: dict[str, Any]
) -> None:
    variables: FlakyVariables = retry_context["variables"]
    variables.failures = 1
    result = run_with_airflow_retries(view(), retry_context)
    assert dune_emulator.counts["upsert_materialized_view"] == 1
    assert result["action"] == "created" and result["execution_id"]
    assert view().execute(retry_context)["action"] == "unchanged"  # the digest was saved by the retry
    assert dune_emulator.counts["upsert_materialized_view"] == 1


def test_an_upsert_that_cannot_be_recorded_anywhere_fails_without_retries(
    dune_emulator: DuneEmulator, dune_conn_id: str, monkeypatch: pytest.MonkeyPatch
) -> None:
    variables = FlakyVariables("airflow_provider_dune_view", failures=2)  # the task record and the digest
    monkeypatch.setattr(task_records, "Variable", variables)
    monkeypatch.setattr(definitions_module, "Variable", variables)
    with pytest.raises(
        AirflowFailException, match=r"Set Variable airflow_provider_dune_view__dune\.demo\.result_code_view"
    ):
        run_with_airflow_retries(view(), {"ti": FakeTI(dune_emulator)})
    assert dune_emulator.counts["upsert_materialized_view"] == 1


@pytest.mark.parametrize(
    "spelling",
    ["2027-01-01T00:00:00+00:00", "2027-01-01T00:00:00.000Z", "2027-01-01T01:00:00+01:00", "2027-01-01t00:00:00z"],
)
def test_the_spelling_of_expires_at_does_not_pay_a_refresh(
    dune_emulator: DuneEmulator, context: dict[str, Any], spelling: str
) -> None:
    view(expires_at="2027-01-01T00:00:00Z").execute(context)
    assert view(expires_at=spelling).execute(context)["action"] == "unchanged"
    assert dune_emulator.counts["upsert_materialized_view"] == 1
    assert view(expires_at="2027-01-01T00:00:00.5Z").execute(context)["action"] == "updated"


@pytest.mark.parametrize("expires_at", ["2027-13-01T00:00:00Z", "2027-01-01T00:00:00", "2027-01-01 00:00"])
def test_an_unreadable_expires_at_is_refused(
    dune_emulator: DuneEmulator, context: dict[str, Any], expires_at: str
) -> None:
    with pytest.raises(DuneConfigurationError, match="RFC 3339"):
        view(expires_at=expires_at).execute(context)
    assert dune_emulator.counts == {}


def test_two_tasks_declaring_one_view_differently_fail_clearly(
    dune_emulator: DuneEmulator, context: dict[str, Any]
) -> None:
    context["ti"].dag_id, context["ti"].task_id = "dag_a", "view_a"
    view().execute(context)
    context["ti"].dag_id, context["ti"].task_id = "dag_b", "view_b"
    assert view().execute(context)["action"] == "unchanged"  # the same definition: fine
    with pytest.raises(DuneConfigurationError, match=r"dag_a\.view_a") as info:
        view(cron_expression="0 */12 * * *").execute(context)
    assert "take_over=True" in str(info.value)
    assert dune_emulator.counts["upsert_materialized_view"] == 1
    assert view(cron_expression="0 */12 * * *", take_over=True).execute(context)["action"] == "updated"
    context["ti"].dag_id, context["ti"].task_id = "dag_a", "view_a"
    with pytest.raises(DuneConfigurationError, match=r"dag_b\.view_b"):
        view().execute(context)
    assert dune_emulator.counts["upsert_materialized_view"] == 2


def test_a_lost_create_answer_under_an_airflow_retry_creates_one_query(
    dune_emulator: DuneEmulator, retry_context: dict[str, Any]
) -> None:
    dune_emulator.inject("create_query", Fault.drop_after_processing())
    with pytest.raises(AirflowFailException) as info:
        run_with_airflow_retries(sync(), retry_context)
    assert dune_emulator.counts["create_query"] == 1
    assert "'daily volume'" in str(info.value) and "query_id=" in str(info.value)
    # The user clears the task without looking: it still does not create a second query.
    retry_context["ti"].try_number = 1
    with pytest.raises(DuneConfigurationError, match="started creating query 'daily volume'"):
        sync().execute(retry_context)
    assert dune_emulator.counts["create_query"] == 1


def test_two_tasks_syncing_one_key_at_once_create_one_query(
    dune_emulator: DuneEmulator, context: dict[str, Any], monkeypatch: pytest.MonkeyPatch
) -> None:
    other_task: list[BaseException] = []
    create = DuneHook.create_query

    def create_while_another_task_syncs(hook: DuneHook, definition: QueryDefinition) -> int:
        # The other task runs between this task's look at the Variable and its create.
        monkeypatch.setattr(DuneHook, "create_query", create)
        try:
            sync(task_id="other").execute({"ti": FakeTI(dune_emulator, run_id="other_run")})
        except Exception as err:
            other_task.append(err)
        return create(hook, definition)

    monkeypatch.setattr(DuneHook, "create_query", create_while_another_task_syncs)
    query_id = sync().execute(context)
    assert dune_emulator.counts["create_query"] == 1
    assert len(other_task) == 1 and isinstance(other_task[0], DuneConfigurationError)
    assert "started creating query 'daily volume'" in str(other_task[0])
    assert sync().execute(context) == query_id  # the intent was replaced by the id


def test_names_sharing_a_key_are_refused(dune_emulator: DuneEmulator, context: dict[str, Any]) -> None:
    sync(name="Daily volume").execute(context)
    with pytest.raises(DuneConfigurationError, match="query_key") as info:
        sync(name="daily volume!").execute(context)
    assert "'Daily volume'" in str(info.value)
    assert "update_query" not in dune_emulator.counts
    other = sync(name="daily volume!", query_key="daily_volume_bang").execute(context)
    assert dune_emulator.counts["create_query"] == 2 and other


def test_a_plain_id_variable_is_still_read(
    dune_emulator: DuneEmulator, context: dict[str, Any], variables: FakeVariables
) -> None:
    with DuneHook() as hook:
        query_id = hook.create_query(QueryDefinition.build(name="daily volume", sql="SELECT 1"))
    variables.store["airflow_provider_dune_query__daily_volume"] = str(query_id)
    assert sync().execute(context) == query_id
    assert dune_emulator.counts["create_query"] == 1 and dune_emulator.counts["update_query"] == 1
    assert json.loads(variables.store["airflow_provider_dune_query__daily_volume"]) == {
        "query_id": query_id,
        "name": "daily volume",
    }


@pytest.mark.parametrize("recorded", ["plain", "json"])
def test_a_variable_pointing_at_another_query_is_refused(
    dune_emulator: DuneEmulator, context: dict[str, Any], variables: FakeVariables, recorded: str
) -> None:
    sync().execute(context)
    key = "airflow_provider_dune_query__daily_volume"
    variables.store[key] = "1003" if recorded == "plain" else json.dumps({"query_id": 1003, "name": "daily volume"})
    with pytest.raises(DuneConfigurationError, match="token_prices_latest") as info:
        sync(sql="SELECT 2", parameters=[]).execute(context)
    assert "update_query" not in dune_emulator.counts
    assert key in str(info.value)


def test_a_synced_query_s_next_result_is_reused_by_an_export(
    dune_emulator: DuneEmulator, context: dict[str, Any]
) -> None:
    """The sync notes the version it made, so the export after the run reuses that run's result (one run)."""
    from airflow_provider_dune.hooks.dune import DuneHook
    from airflow_provider_dune.operators.query import DuneExecuteQueryOperator

    def sync(sql: str) -> int:
        return DuneSyncQueryOperator(task_id="sync", name="Reused volume", sql=sql).execute(context)

    query_id = sync("SELECT 1 AS volume")
    assert sync("SELECT 2 AS volume") == query_id  # version 2
    with DuneHook() as hook:
        execution_id = hook.execute_query(query_id).execution_id
        while not hook.get_execution_status(execution_id).is_terminal:
            time.sleep(0.05)
    export = DuneExecuteQueryOperator(
        task_id="export", query_id=query_id, reuse_latest_result_max_age=3600, poll_interval=0.05, deferrable=False
    )
    assert export.execute(context)["execution_id"] == execution_id
    assert dune_emulator.counts["execute_query"] == 1
