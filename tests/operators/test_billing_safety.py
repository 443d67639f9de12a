"""No code path starts a second billed Dune run the user did not ask for, over HTTP with the emulator's faults.

A task "retry" here is another ``execute()`` of an operator for the same task instance (the same fake TI and
record store), which is what Airflow does. Every test runs with both places a run is recorded: Airflow
Variables (below 3.3) and the task state store of Airflow 3.3+. ``executions_started`` is the emulator's count of
runs really started.
"""

from __future__ import annotations

import json
import time
from pathlib import Path
from typing import Any

import pytest
from airflow.exceptions import AirflowException, TaskDeferred

from airflow_provider_dune.api.errors import DuneAPIError, DuneRateLimitError, DuneServerError
from airflow_provider_dune.hooks.dune import DuneHook
from airflow_provider_dune.operators.pipeline import DuneExecutePipelineOperator
from airflow_provider_dune.operators.query import DuneExecuteQueryOperator, DuneRefreshMaterializedViewOperator
from airflow_provider_dune.testing.emulator import DuneEmulator, Fault
from airflow_provider_dune.utils import task_records
from airflow_provider_dune.version_compat import AirflowFailException
from tests.conftest import dune_connection_json
from tests.operators.fakes import FakeTaskStateStore, FakeTI, FakeVariables

SLOW = 9101  # runs long enough to still be running on the next try
QUICK = 9102
ROWS = [{"n": i} for i in range(25)]
VIEW = "dune.safety.result_view"


@pytest.fixture(params=["variable", "task_state_store"])
def records(request: pytest.FixtureRequest, monkeypatch: pytest.MonkeyPatch) -> FakeVariables | FakeTaskStateStore:
    """Where runs are recorded: Variables (Airflow < 3.3) or the task state store; ``.store`` holds the records."""
    variables = FakeVariables()
    monkeypatch.setattr(task_records, "Variable", variables)
    return variables if request.param == "variable" else FakeTaskStateStore()


@pytest.fixture
def emulator(
    dune_emulator: DuneEmulator, dune_conn_id: str, records: FakeVariables | FakeTaskStateStore
) -> DuneEmulator:
    dune_emulator.add_query(SLOW, duration=20)
    dune_emulator.add_query(QUICK, duration=0.05, rows=ROWS)
    dune_emulator.add_materialized_view(VIEW, query_id=QUICK, duration=0.05)
    return dune_emulator


@pytest.fixture
def context(emulator: DuneEmulator, records: FakeVariables | FakeTaskStateStore) -> dict[str, Any]:
    return {"ti": FakeTI(emulator)} | ({"task_state_store": records} if isinstance(records, FakeTaskStateStore) else {})


def pipeline_op(**kwargs: Any) -> DuneExecutePipelineOperator:
    kwargs.setdefault("task_id", "run_pipeline")
    kwargs.setdefault("poll_interval", 0.05)
    kwargs.setdefault("deferrable", True)
    return DuneExecutePipelineOperator(**kwargs)


def query_op(**kwargs: Any) -> DuneExecuteQueryOperator:
    kwargs.setdefault("task_id", "run_query")
    kwargs.setdefault("query_id", QUICK)
    kwargs.setdefault("poll_interval", 0.05)
    kwargs.setdefault("deferrable", False)
    return DuneExecuteQueryOperator(**kwargs)


def defer(op: Any, context: dict[str, Any]) -> TaskDeferred:
    with pytest.raises(TaskDeferred) as info:
        op.execute(context)
    return info.value


# -- H1: re-attach never gives up on a transient error -----------------------------------------------------------


@pytest.mark.parametrize(
    "fault",
    [Fault.status(503, times=5), Fault.status(429, times=5), Fault.drop(times=5), Fault.status(500, times=5)],
    ids=["503", "429", "dropped", "500"],
)
def test_an_unreadable_previous_run_starts_nothing_and_the_next_try_reattaches(
    emulator: DuneEmulator, context: dict[str, Any], fault: Fault
) -> None:
    first = defer(pipeline_op(query_id=SLOW), context)
    emulator.inject("get_pipeline_status", fault)  # as many failures as the hook has tries
    with pytest.raises(AirflowException, match="Not starting another billed run") as info:
        pipeline_op(query_id=SLOW).execute(context)
    assert not isinstance(info.value, AirflowFailException), "Airflow must be free to retry and check again"
    assert emulator.executions_started(SLOW) == 1
    second = defer(pipeline_op(query_id=SLOW), context)  # the faults are used up: Dune answers again
    assert second.trigger.pipeline_execution_id == first.trigger.pipeline_execution_id
    assert emulator.executions_started(SLOW) == 1


class UnreadableRecords(FakeTaskStateStore):
    """A record store that fails to answer (the API server or the Variable backend is down)."""

    def get(self, key: str, default: Any = None) -> Any:
        raise ConnectionError("the Airflow API server did not answer")


def test_a_retry_that_cannot_read_its_record_starts_nothing(emulator: DuneEmulator) -> None:
    ti = FakeTI(emulator)
    ti.try_number = 2
    with pytest.raises(AirflowException, match="Not starting another billed run") as info:
        pipeline_op(query_id=SLOW).execute({"ti": ti, "task_state_store": UnreadableRecords()})
    assert "did not answer" in str(info.value)
    assert not isinstance(info.value, AirflowFailException), "Airflow must be free to retry and check again"
    assert emulator.executions_started() == 0


def test_a_first_try_that_cannot_read_records_starts_its_run(emulator: DuneEmulator) -> None:
    defer(pipeline_op(query_id=SLOW), {"ti": FakeTI(emulator), "task_state_store": UnreadableRecords()})
    assert emulator.executions_started(SLOW) == 1


def test_a_previous_run_unknown_to_dune_is_started_again(
    emulator: DuneEmulator, context: dict[str, Any], records: FakeVariables | FakeTaskStateStore
) -> None:
    defer(pipeline_op(query_id=SLOW), context)
    emulator.reset()  # Dune forgot every run: the recorded one answers 404
    defer(pipeline_op(query_id=SLOW), context)
    assert emulator.executions_started(SLOW) == 1  # counted since the reset: the new run
    assert len(records.store) == 1


# -- H2: a start that may have happened without an answer is not retried by Airflow ------------------------------


@pytest.mark.parametrize(
    "fault",
    [Fault.drop_after_processing(), Fault.status(500), Fault.status(502), Fault.malformed()],
    ids=["dropped-after-processing", "500", "502", "unreadable-200"],
)
def test_an_unconfirmed_start_fails_without_retries_and_says_where_to_look(
    emulator: DuneEmulator, context: dict[str, Any], records: FakeVariables | FakeTaskStateStore, fault: Fault
) -> None:
    emulator.inject("execute_query_pipeline", fault)
    with pytest.raises(AirflowFailException) as info:
        pipeline_op(query_id=QUICK).execute(context)
    message = str(info.value)
    assert "may have started the run" in message
    assert f"https://dune.com/queries/{QUICK}" in message
    assert "retry_unconfirmed_start=True" in message
    assert emulator.counts["execute_query_pipeline"] == 1  # one POST, never resent
    assert records.store == {}


def test_a_slow_start_beyond_the_deadline_is_unconfirmed_too(
    emulator: DuneEmulator, context: dict[str, Any], monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setenv(
        "AIRFLOW_CONN_DUNE_DEFAULT", dune_connection_json(emulator.url, timeout=0.3, connect_timeout=0.2)
    )
    emulator.inject("execute_query", Fault.slow(1.5))
    with pytest.raises(AirflowFailException, match="may have started the run"):
        query_op().execute(context)
    assert emulator.counts["execute_query"] == 1


def test_the_option_lets_airflow_retry_an_unconfirmed_start(emulator: DuneEmulator, context: dict[str, Any]) -> None:
    emulator.inject("execute_query_pipeline", Fault.drop_after_processing())
    with pytest.raises(DuneAPIError) as info:
        pipeline_op(query_id=QUICK, retry_unconfirmed_start=True).execute(context)
    assert info.value.may_have_started_run and not isinstance(info.value, AirflowFailException)
    defer(pipeline_op(query_id=QUICK, retry_unconfirmed_start=True), context)
    assert emulator.executions_started(QUICK) == 2  # what the user opted into


@pytest.mark.slow
@pytest.mark.parametrize(
    ("fault", "error"),
    [(Fault.status(429, times=5), DuneRateLimitError), (Fault.status(503, times=5), DuneServerError)],
    ids=["429", "503"],
)
def test_a_start_dune_certainly_refused_stays_an_ordinary_retryable_failure(
    emulator: DuneEmulator, context: dict[str, Any], fault: Fault, error: type[Exception]
) -> None:
    emulator.inject("refresh_materialized_view", fault)
    with pytest.raises(error) as info:
        DuneRefreshMaterializedViewOperator(task_id="refresh", view_name=VIEW, poll_interval=0.05).execute(context)
    assert not info.value.may_have_started_run  # type: ignore[attr-defined]
    assert emulator.executions_started() == 0


# -- M3: a failure after the run succeeded never runs it again ---------------------------------------------------


def test_too_many_rows_for_xcom_fails_at_once_before_fetching(emulator: DuneEmulator, context: dict[str, Any]) -> None:
    with pytest.raises(AirflowFailException, match="25 rows, more than max_xcom_rows=3"):
        query_op(fetch_results=True, max_xcom_rows=3).execute(context)
    assert emulator.executions_started(QUICK) == 1
    assert "get_execution_results" not in emulator.counts  # the status said 25 rows: nothing fetched


def test_a_retry_after_a_failed_write_reuses_the_finished_execution(
    emulator: DuneEmulator, context: dict[str, Any], tmp_path: Path, records: FakeVariables | FakeTaskStateStore
) -> None:
    (tmp_path / "not_a_dir").write_text("")
    unwritable = str(tmp_path / "not_a_dir" / "out.csv")
    for _ in range(2):  # try 1 and its retry
        with pytest.raises(OSError):  # noqa: PT011 - the filesystem's own error
            query_op(output_path=unwritable).execute(context)
    assert emulator.executions_started(QUICK) == 1
    assert len(records.store) == 1, "the finished run stays recorded until its result was written"
    result = query_op(output_path=str(tmp_path / "out.csv")).execute(context)  # the user fixed the path
    assert result["row_count"] == 25
    assert emulator.executions_started(QUICK) == 1
    assert records.store == {}


# -- the record of a run never outlives the task ----------------------------------------------------------------


def test_on_kill_cancels_and_forgets_the_run(
    emulator: DuneEmulator, context: dict[str, Any], records: FakeVariables | FakeTaskStateStore
) -> None:
    op = pipeline_op(query_id=SLOW)
    defer(op, context)
    deadline = time.monotonic() + 5
    while not emulator.counts.get("cancel_execution"):  # the node may not have started yet
        op.on_kill()
        assert time.monotonic() < deadline
        time.sleep(0.1)
    assert records.store == {}


def test_a_failed_trigger_cancels_and_forgets_the_run(
    emulator: DuneEmulator, context: dict[str, Any], records: FakeVariables | FakeTaskStateStore
) -> None:
    first = defer(pipeline_op(query_id=SLOW), context)
    pipeline_id = first.trigger.pipeline_execution_id
    deadline = time.monotonic() + 5
    with DuneHook() as hook:
        while not hook.get_pipeline_status(pipeline_id).running_nodes:
            assert time.monotonic() < deadline
            time.sleep(0.05)
    with pytest.raises(Exception, match="Trigger timeout"):
        pipeline_op(query_id=SLOW).resume_execution("__fail__", {"error": "Trigger timeout"}, context)
    assert emulator.counts.get("cancel_execution") == 1
    assert records.store == {}
    json.dumps(first.trigger.serialize()[1])  # the trigger never carried anything but ids and settings


# -- failures a retry cannot change, and what the next try is told ------------------------------------------------

SQL_ERROR = "line 3:14: Column 'volume_usdd' cannot be resolved"


@pytest.mark.parametrize("operator", ["pipeline", "query"])
def test_a_run_that_failed_on_an_sql_error_fails_without_retries(
    emulator: DuneEmulator, context: dict[str, Any], operator: str
) -> None:
    """Dune bills failed executions too: a retry would pay for a run that fails the same way."""
    emulator.add_query(QUICK, duration=0.05, error=SQL_ERROR)
    op = pipeline_op(query_id=QUICK, deferrable=False) if operator == "pipeline" else query_op()
    context["ti"].max_tries = 2
    with pytest.raises(AirflowFailException) as info:
        op.execute(context)
    message = str(info.value)
    assert "cannot be resolved" in message
    assert message.count("\nNot retried: this is an SQL error") == 1
    assert emulator.executions_started(QUICK) == 1


@pytest.mark.parametrize("operator", ["pipeline", "query"])
def test_a_transient_failure_keeps_the_retries_and_the_next_try_names_the_failed_run(
    emulator: DuneEmulator,
    context: dict[str, Any],
    operator: str,
    caplog: pytest.LogCaptureFixture,
    capsys: pytest.CaptureFixture[str],
) -> None:
    emulator.add_query(QUICK, duration=0.05, error="Internal error while executing the query, please try again")
    op = pipeline_op(query_id=QUICK, deferrable=False) if operator == "pipeline" else query_op()
    ti = context["ti"]
    ti.max_tries = 1
    with pytest.raises(AirflowException) as info:
        op.execute(context)
    assert not isinstance(info.value, AirflowFailException), info.value
    failed_run = ti.xcom[op.id_field]

    emulator.add_query(QUICK, duration=0.05, rows=ROWS)  # fixed on Dune's side before the retry
    ti.try_number = 2
    capsys.readouterr()
    with caplog.at_level("WARNING"):
        assert op.execute(context)["outcome"] == "success"
    logged = caplog.text + capsys.readouterr().out  # stdlib logging on Airflow 2, structlog's output on 3
    assert f"Try 1 ran {op.run_label(failed_run)}, which ended failed: " in logged
    assert "Internal error" in logged
    assert emulator.executions_started(QUICK) == 2


def test_the_last_try_leaves_no_record_behind(
    emulator: DuneEmulator, context: dict[str, Any], records: FakeVariables | FakeTaskStateStore
) -> None:
    emulator.add_query(QUICK, duration=0.05, error="Internal error")
    context["ti"].max_tries = 0
    with pytest.raises(AirflowException):
        query_op().execute(context)
    assert records.store == {}


@pytest.mark.parametrize(
    ("message", "reason"),
    [
        (SQL_ERROR, "an SQL error"),
        ("mismatched input 'FORM'. Expecting: ...", "an error in the query (SQL or parameters)"),
        ("Table 'dex.tradez' does not exist", "a missing table, query or view"),
        ("Not allowed to execute query. Query is archived", "a missing permission"),
        ("Query exceeded the maximum execution time (timeout)", None),
        ("Internal error", None),
        ("", None),
        ("line 1:1: internal error, please try again", None),  # a transient sign keeps the retries
    ],
)
def test_which_failures_are_permanent(message: str, reason: str | None) -> None:
    from airflow_provider_dune.api.failures import permanent_run_failure

    assert permanent_run_failure({"error_message": message}) == reason
    assert permanent_run_failure({"error": None, "nodes": [{"error": None}, {"error": message}]}) == reason
