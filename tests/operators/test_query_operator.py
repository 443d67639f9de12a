"""DuneExecuteQueryOperator and DuneRefreshMaterializedViewOperator against the emulator."""

from __future__ import annotations

import asyncio
import csv
import json
from pathlib import Path
from typing import Any

import pytest
from airflow.exceptions import AirflowException, TaskDeferred

from airflow_provider_dune.api.errors import DuneConfigurationError, DuneCreditsExhaustedError
from airflow_provider_dune.hooks.dune import DuneHook
from airflow_provider_dune.operators.query import DuneExecuteQueryOperator, DuneRefreshMaterializedViewOperator
from airflow_provider_dune.testing.emulator import DuneEmulator, Fault
from airflow_provider_dune.triggers.execution import DuneExecutionTrigger
from airflow_provider_dune.utils import query_versions, task_records
from airflow_provider_dune.version_compat import AirflowFailException
from tests.operators.fakes import FakeTI, FakeVariables

ROWS = [{"day": f"2026-01-{i + 1:02d}", "volume": i * 10.5, "tags": ["a", i]} for i in range(25)]


@pytest.fixture
def emulator(dune_emulator: DuneEmulator, dune_conn_id: str, monkeypatch: pytest.MonkeyPatch) -> DuneEmulator:
    variables = FakeVariables()
    monkeypatch.setattr(task_records, "Variable", variables)
    monkeypatch.setattr(query_versions, "Variable", variables)
    dune_emulator.add_query(8001, duration=0.1, rows=ROWS, parameters=["date"])
    dune_emulator.add_query(8002, duration=30)
    dune_emulator.add_query(8003, duration=0.05, error="line 1:8: Column 'x' cannot be resolved")
    dune_emulator.add_query(8004, duration=0.3, rows=ROWS[:3], partial=True)
    return dune_emulator


@pytest.fixture
def context(emulator: DuneEmulator) -> dict[str, Any]:
    return {"ti": FakeTI(emulator), "ds": "2026-01-01"}


def query_op(**kwargs: Any) -> DuneExecuteQueryOperator:
    kwargs.setdefault("task_id", "query")
    kwargs.setdefault("query_id", 8001)
    kwargs.setdefault("poll_interval", 0.05)
    kwargs.setdefault("deferrable", False)
    return DuneExecuteQueryOperator(**kwargs)


def test_query_result_rows_to_xcom(emulator: DuneEmulator, context: dict[str, Any]) -> None:
    result = query_op(query_parameters={"date": "2026-01-01"}, fetch_results=True, page_size=10).execute(context)
    assert result["state"] == "completed"
    assert result["rows"] == ROWS
    assert result["row_count"] == 25
    assert context["ti"].xcom["execution_id"] == result["execution_id"]
    assert emulator.counts["get_execution_results"] == 3  # 10 + 10 + 5 rows, followed by offset
    json.dumps(result)


def test_result_too_big_for_xcom_fails_without_retry_and_says_to_use_output_path(context: dict[str, Any]) -> None:
    with pytest.raises(AirflowFailException, match="Set output_path"):
        query_op(fetch_results=True, max_xcom_rows=5).execute(context)


@pytest.mark.parametrize("suffix", ["jsonl", "csv"])
def test_results_stream_to_a_file(tmp_path: Path, context: dict[str, Any], suffix: str) -> None:
    target = tmp_path / "out" / f"volume.{suffix}"
    result = query_op(output_path=str(target), page_size=7).execute(context)
    assert result["row_count"] == 25
    assert result["output_format"] == suffix
    text = target.read_text()
    if suffix == "jsonl":
        assert [json.loads(line) for line in text.splitlines()] == ROWS
    else:
        rows = list(csv.DictReader(text.splitlines()))
        assert len(rows) == 25
        assert rows[3]["day"] == "2026-01-04"
        assert rows[3]["volume"] == "31.5"
        assert json.loads(rows[3]["tags"]) == ["a", 3]


@pytest.mark.parametrize("deferrable", [False, True])
async def test_partial_result_is_surfaced_not_accepted(
    emulator: DuneEmulator, context: dict[str, Any], deferrable: bool
) -> None:
    op = query_op(query_id=8004, fetch_results=True, deferrable=deferrable)

    async def run() -> None:
        try:
            op.execute(context)
        except TaskDeferred as deferred:
            (event,) = [e.payload async for e in deferred.trigger.run()]
            op.execute_complete(context, event)

    with pytest.raises(AirflowException, match="completed only partially") as info:
        await run()
    assert "allow_partial_results=True" in str(info.value)
    assert "get_execution_results" not in emulator.counts


def test_allowed_partial_result_is_fetched_with_the_flag(emulator: DuneEmulator, context: dict[str, Any]) -> None:
    result = query_op(query_id=8004, fetch_results=True, allow_partial_results=True).execute(context)
    assert result["state"] == "completed_partial"
    assert result["rows"] == ROWS[:3]
    results_calls = [r for r in emulator.requests if r.endpoint == "get_execution_results"]
    assert results_calls and all(r.query.get("allow_partial_results") == "true" for r in results_calls)


def test_failed_query_fails_with_dunes_error(context: dict[str, Any]) -> None:
    with pytest.raises(AirflowException, match="Column 'x' cannot be resolved"):
        query_op(query_id=8003).execute(context)


def test_unknown_query_and_bad_parameters_fail_without_retries(context: dict[str, Any]) -> None:
    """Dune refused the start: another try would be refused the same way, so Airflow does not retry."""
    with pytest.raises(AirflowFailException, match=r"(?s)HTTP 404.*Not retried: this is a missing query"):
        query_op(query_id=999999).execute(context)
    with pytest.raises(AirflowFailException, match=r"(?s)HTTP 400.*\nNot retried: "):
        query_op(query_parameters={"nope": 1}).execute(context)


def test_credits_exhausted(emulator: DuneEmulator, context: dict[str, Any]) -> None:
    emulator.inject("execute_query", Fault.status(402))
    with pytest.raises(DuneCreditsExhaustedError, match="retrying will not help"):
        query_op().execute(context)
    assert emulator.counts["execute_query"] == 1


def test_timeout_cancels_the_execution(emulator: DuneEmulator, context: dict[str, Any]) -> None:
    with pytest.raises(AirflowException, match="did not finish before the timeout") as info:
        query_op(query_id=8002, timeout=0.3).execute(context)
    assert "Cancelled 1 still-running execution" in str(info.value)
    with DuneHook() as hook:
        assert hook.get_execution_status(context["ti"].xcom["execution_id"]).state.value == "cancelled"


def test_deferrable_path_and_retry_reattach(emulator: DuneEmulator, context: dict[str, Any]) -> None:
    op = query_op(query_id=8001, deferrable=True, fetch_results=True)
    with pytest.raises(TaskDeferred) as info:
        op.execute(context)
    trigger = info.value.trigger
    assert isinstance(trigger, DuneExecutionTrigger)
    assert info.value.timeout is None
    # A retry while the execution is still running re-attaches instead of starting a second run.
    with pytest.raises(TaskDeferred):
        query_op(query_id=8001, deferrable=True, fetch_results=True).execute(context)
    assert emulator.executions_started() == 1

    async def first_event() -> dict[str, Any]:
        async for event in trigger.run():
            return event.payload
        raise AssertionError("the trigger fired no event")

    result = op.execute_complete(context, asyncio.run(first_event()))
    assert result["rows"] == ROWS


def test_execute_complete_rejects_bad_events(context: dict[str, Any]) -> None:
    op = query_op()
    for event in (None, {"status": "maybe"}, {"status": "error", "message": "boom", "execution_id": "E"}):
        op.run_id = "E"
        with pytest.raises(AirflowException):
            op.execute_complete(context, event)


def test_construction_errors_say_what_to_fix() -> None:
    with pytest.raises(DuneConfigurationError, match="positive integer Dune query id"):
        query_op(query_id="abc")
    with pytest.raises(DuneConfigurationError, match="cannot tell the output format"):
        query_op(output_path="/tmp/out.parquet")
    with pytest.raises(DuneConfigurationError, match="need wait_for_completion=True"):
        query_op(fetch_results=True, wait_for_completion=False)
    templated = query_op(query_id="{{ params.qid }}", query_parameters={"date": "{{ ds }}"})
    assert templated.query_id == "{{ params.qid }}"


def test_refresh_materialized_view(emulator: DuneEmulator, context: dict[str, Any]) -> None:
    view = "dune.demo.result_token_prices_hourly"
    result = DuneRefreshMaterializedViewOperator(
        task_id="refresh", view_name=view, poll_interval=0.05, deferrable=False
    ).execute(context)
    assert result["outcome"] == "success"
    assert emulator.counts["refresh_materialized_view"] == 1
    with pytest.raises(AirflowFailException, match=r"(?s)HTTP 404.*Not retried"):
        DuneRefreshMaterializedViewOperator(task_id="r2", view_name="dune.nope.missing", deferrable=False).execute(
            context
        )


# -- reusing the latest result only when it is the one the task would compute ---------------------------------


def _run_and_wait(query_id: int, parameters: dict[str, Any] | None = None) -> str:
    from tests.helpers import wait_finished

    with DuneHook() as hook:
        return wait_finished(hook.execute_query(query_id, query_parameters=parameters).execution_id, pipeline=False)


def _logged(caplog: pytest.LogCaptureFixture, capsys: pytest.CaptureFixture[str]) -> str:
    """What the task logged: through stdlib logging (Airflow 2) or printed by structlog (Airflow 3)."""
    captured = capsys.readouterr()
    return caplog.text + captured.out + captured.err


def _reusing_task(query_id: int) -> DuneExecuteQueryOperator:
    return query_op(query_id=query_id, fetch_results=True, reuse_latest_result_max_age=3600)


def test_reuse_uses_a_fresh_result_of_a_query_without_parameters(
    emulator: DuneEmulator, context: dict[str, Any]
) -> None:
    emulator.add_query(8110, duration=0.05, rows=ROWS[:2])
    latest = _run_and_wait(8110)
    result = _reusing_task(8110).execute(context)
    assert result["execution_id"] == latest and result["rows"] == ROWS[:2]
    assert emulator.counts["execute_query"] == 1  # only the run above


def test_reuse_skips_a_result_that_may_be_of_other_parameter_values(
    emulator: DuneEmulator,
    context: dict[str, Any],
    caplog: pytest.LogCaptureFixture,
    capsys: pytest.CaptureFixture[str],
) -> None:
    emulator.add_query(8111, duration=0.05, parameters=["symbol"])
    someone_elses = _run_and_wait(8111, {"symbol": "BTC"})  # the task asks for the defaults
    result = _reusing_task(8111).execute(context)
    assert result["execution_id"] != someone_elses
    assert emulator.counts["execute_query"] == 2
    assert "has parameters (symbol)" in _logged(caplog, capsys)


def test_reuse_skips_a_result_of_the_sql_before_the_query_was_updated(
    emulator: DuneEmulator,
    context: dict[str, Any],
    caplog: pytest.LogCaptureFixture,
    capsys: pytest.CaptureFixture[str],
) -> None:
    from airflow_provider_dune.api.definitions import QueryDefinition

    with DuneHook() as hook:
        query_id = hook.create_query(QueryDefinition.build(name="volume", sql="SELECT 1 AS volume"))
    old_sql_result = _run_and_wait(query_id)
    with DuneHook() as hook:
        hook.update_query(query_id, QueryDefinition.build(name="volume", sql="SELECT 2 AS volume"))
    result = _reusing_task(query_id).execute(context)
    assert result["execution_id"] != old_sql_result
    assert emulator.counts["execute_query"] == 2
    assert "older SQL" in _logged(caplog, capsys)


def test_reuse_takes_a_result_started_after_the_current_version_was_first_seen(
    emulator: DuneEmulator, context: dict[str, Any]
) -> None:
    """Dune does not say when a query changed: the first check notes the version, later results of it are reused."""
    from airflow_provider_dune.api.definitions import QueryDefinition

    with DuneHook() as hook:
        query_id = hook.create_query(QueryDefinition.build(name="volume", sql="SELECT 1 AS volume"))
        hook.update_query(query_id, QueryDefinition.build(name="volume", sql="SELECT 2 AS volume"))
    _run_and_wait(query_id)  # of version 2, but nothing here can prove it
    first = _reusing_task(query_id).execute(context)
    assert emulator.counts["execute_query"] == 2
    second = _reusing_task(query_id).execute(context)
    assert second["execution_id"] == first["execution_id"]  # started after version 2 was noted
    assert emulator.counts["execute_query"] == 2

    with DuneHook() as hook:  # changed again, on dune.com: the note is of another version
        hook.update_query(query_id, QueryDefinition.build(name="volume", sql="SELECT 3 AS volume"))
    third = _reusing_task(query_id).execute(context)
    assert third["execution_id"] != first["execution_id"]
    assert emulator.counts["execute_query"] == 3


def test_reuse_skips_a_result_dated_in_the_future(
    emulator: DuneEmulator,
    context: dict[str, Any],
    caplog: pytest.LogCaptureFixture,
    capsys: pytest.CaptureFixture[str],
) -> None:
    emulator.add_query(8112, duration=0.05)
    emulator._state._wall0 += 86_400  # Dune's clock runs a day ahead of the worker's
    future = _run_and_wait(8112)
    result = _reusing_task(8112).execute(context)
    assert result["execution_id"] != future
    assert emulator.counts["execute_query"] == 2
    assert "in the future" in _logged(caplog, capsys)


@pytest.mark.parametrize("ended_at", ["2026-02-30T00:00:00Z", "9999-12-31T23:59:59Z"])
def test_reuse_skips_a_result_with_an_unreadable_or_far_future_time_and_runs(
    emulator: DuneEmulator,
    context: dict[str, Any],
    monkeypatch: pytest.MonkeyPatch,
    caplog: pytest.LogCaptureFixture,
    capsys: pytest.CaptureFixture[str],
    ended_at: str,
) -> None:
    from dataclasses import replace

    emulator.add_query(8113, duration=0.05)
    latest = _run_and_wait(8113)
    real_status = DuneHook.get_execution_status

    def dune_sends_a_bad_time(hook: DuneHook, execution_id: str) -> Any:  # no emulator answer carries one
        status = real_status(hook, execution_id)
        return replace(status, execution_ended_at=ended_at) if execution_id == latest else status

    monkeypatch.setattr(DuneHook, "get_execution_status", dune_sends_a_bad_time)
    result = _reusing_task(8113).execute(context)
    assert result["execution_id"] != latest and emulator.counts["execute_query"] == 2
    logged = _logged(caplog, capsys)
    assert "not a readable time" in logged or "in the future" in logged


# -- results are read in bounded memory -------------------------------------------------------------------------

WIDE_ROWS = [{"n": i, "payload": "x" * 10_000} for i in range(30)]  # ~10 KB of JSON a row


def test_wide_rows_are_read_in_pages_sized_by_bytes_not_only_rows(
    emulator: DuneEmulator, context: dict[str, Any], monkeypatch: pytest.MonkeyPatch, tmp_path: Path
) -> None:
    from airflow_provider_dune.api import paging

    monkeypatch.setattr(paging, "PAGE_TARGET_BYTES", 64 * 1024, raising=False)  # 32 MiB, scaled down
    emulator.add_query(8120, duration=0.05, rows=WIDE_ROWS)
    result = query_op(query_id=8120, output_path=str(tmp_path / "wide.jsonl")).execute(context)
    assert result["row_count"] == 30
    pages = [r for r in emulator.requests if r.endpoint == "get_execution_results"]
    biggest = max(len(r.response_body) for r in pages)
    assert len(pages) > 1 and biggest <= 2 * 64 * 1024, (len(pages), biggest)  # page_size=10,000 rows asked one page


def test_a_results_page_over_the_cap_says_to_lower_page_size_and_is_not_read_again(
    emulator: DuneEmulator, monkeypatch: pytest.MonkeyPatch
) -> None:
    from airflow_provider_dune.api import endpoints
    from tests.helpers import wait_finished

    monkeypatch.setattr(endpoints, "RESULTS_MAX_RESPONSE_BYTES", 64 * 1024)  # 128 MiB, scaled down
    emulator.add_query(8121, duration=0.05, rows=WIDE_ROWS)
    with DuneHook() as hook:
        execution_id = wait_finished(hook.execute_query(8121).execution_id, pipeline=False)
        with pytest.raises(DuneConfigurationError, match=r"\(30 rows\) is larger than 0.0625 MiB.*lower page_size"):
            hook.get_execution_results(execution_id, limit=30)
    assert emulator.counts["get_execution_results"] == 1  # reading it again would cost the same and fail the same


def test_a_worker_never_sleeps_for_the_key_s_budget_past_the_task_s_timeout(
    emulator: DuneEmulator, context: dict[str, Any], monkeypatch: pytest.MonkeyPatch
) -> None:
    """With one read a minute, the second status read's slot is a minute away; the 0.5 s timeout comes first."""
    import time as time_module

    from tests.conftest import dune_connection_json

    monkeypatch.setenv("AIRFLOW_CONN_DUNE_DEFAULT", dune_connection_json(emulator.url, reads_per_minute=1))
    pauses: list[float] = []
    real_sleep = time_module.sleep

    def sleep(seconds: float) -> None:
        pauses.append(seconds)
        real_sleep(min(seconds, 0.05))

    monkeypatch.setattr(time_module, "sleep", sleep)
    with pytest.raises(AirflowException, match="did not finish before the timeout"):
        query_op(query_id=8002, timeout=0.5, poll_interval=0.1).execute(context)
    assert pauses and max(pauses) <= 0.5, pauses
