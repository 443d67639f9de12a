"""What a user reads at the end of a Dune run: the task log's report table, the start line, the failure message and
the returned summary, against the emulator over real HTTP (worker and deferrable paths)."""

from __future__ import annotations

import asyncio
import json
import re
from typing import Any

import pytest
from airflow.exceptions import AirflowException, TaskDeferred

from airflow_provider_dune.hooks.dune import DuneHook
from airflow_provider_dune.operators.pipeline import DuneExecutePipelineOperator
from airflow_provider_dune.operators.query import DuneExecuteQueryOperator, DuneRefreshMaterializedViewOperator
from airflow_provider_dune.testing.emulator import DuneEmulator, Fault
from tests.conftest import dune_connection_json
from tests.helpers import wait_finished
from tests.operators.fakes import FakeTI, FakeVariables

QUICK = 2001
FAILING = 1099  # seed: "line 3:8: Column 'amount_usdd' cannot be resolved"
LINEAGE = 1001  # seed: materialized view dune.demo.result_dex_trades_daily -> query 1001 (param "date")
VIEW = "dune.demo.result_token_prices_hourly"


@pytest.fixture
def emulator(dune_emulator: DuneEmulator, dune_conn_id: str, variables: FakeVariables) -> DuneEmulator:
    dune_emulator.add_query(QUICK, duration=0.1)
    return dune_emulator


@pytest.fixture
def context(emulator: DuneEmulator) -> Any:
    return {"ti": FakeTI(emulator), "ds": "2024-06-01", "params": {}}


def logged(caplog: pytest.LogCaptureFixture, capsys: pytest.CaptureFixture[str]) -> str:
    """What the task logged: through stdlib logging (Airflow 2, also echoed to stdout: taken once) or printed by
    structlog (Airflow 3)."""
    captured = capsys.readouterr()
    return caplog.text or captured.out + captured.err


def pipeline(**kwargs: Any) -> DuneExecutePipelineOperator:
    kwargs.setdefault("task_id", "run_pipeline")
    kwargs.setdefault("poll_interval", 0.05)
    kwargs.setdefault("timeout", 20)
    kwargs.setdefault("deferrable", False)
    return DuneExecutePipelineOperator(**kwargs)


def table_rows(text: str, run_id: str) -> list[list[str]]:
    """The report's rows (split on whitespace) after its title line for ``run_id``."""
    lines = text.splitlines()
    header = ["node", "what", "state", "queued", "ran", "execution", "credits"]
    start = next(i for i, line in enumerate(lines[:-1]) if run_id in line and lines[i + 1].split() == header)
    assert re.search(r": (success|failed|cancelled|running|unknown)\b", lines[start])
    rows = []
    for line in lines[start + 2 :]:
        if not re.match(r"^\s+(\d+|#\d+|-)\s", line):
            break
        rows.append(line.split())
    return rows


def test_pipeline_success_logs_one_table_and_returns_times_and_credits(
    emulator: DuneEmulator, context: Any, caplog: pytest.LogCaptureFixture, capsys: pytest.CaptureFixture[str]
) -> None:
    capsys.readouterr()
    result = pipeline(query_id=LINEAGE, query_parameters={"date": "2024-06-01"}).execute(context)
    pipeline_execution_id = result["pipeline_execution_id"]
    text = logged(caplog, capsys)

    # One read of each node's execution status, for its times and credits.
    assert emulator.counts["get_execution_status"] == 2
    nodes = result["nodes"]
    assert json.loads(json.dumps(result)) == result
    for node in nodes:
        assert node["queued_seconds"] is not None and node["queued_seconds"] >= 0
        assert node["run_seconds"] is not None and node["run_seconds"] > 0
        assert isinstance(node["credits"], float)
    assert result["total_credits"] == pytest.approx(sum(n["credits"] for n in nodes))

    start = next(line for line in text.splitlines() if "Started Dune pipeline" in line)
    assert f"Started Dune pipeline {pipeline_execution_id} for query {LINEAGE}: https://dune.com/queries/{LINEAGE}" in (
        start
    )
    # The URL ends the message, so the log view's link detection opens it (structlog adds fields after it).
    assert re.search(rf"https://dune.com/queries/{LINEAGE}(\s|$)", start)

    assert f"Dune pipeline {pipeline_execution_id}: success, 2/2 nodes done, " in text
    rows = table_rows(text, pipeline_execution_id)
    expected = [
        [str(n["node_id"]), "refresh", n["view_name"]]
        if n["kind"] == "materialized_view_refresh"
        else [str(n["node_id"]), "query", str(n["query_id"])]
        for n in nodes
    ]
    assert [r[:3] for r in rows] == expected
    assert [r[3] for r in rows] == ["completed", "completed"]
    assert [r[6] for r in rows] == [n["execution_id"] for n in nodes]
    assert all(r[4].endswith("s") and r[5].endswith("s") for r in rows)  # queued and run times
    assert "completed: 2/2 nodes done" not in text  # the table says it


def test_pipeline_failure_is_stated_once_with_line_and_column(
    emulator: DuneEmulator, context: Any, caplog: pytest.LogCaptureFixture, capsys: pytest.CaptureFixture[str]
) -> None:
    nodes = [
        {"id": 1, "query_execution": {"query_id": QUICK}},
        {"id": 2, "dependencies": [1], "query_execution": {"query_id": FAILING}},
    ]
    op = pipeline(nodes=nodes)
    capsys.readouterr()
    with pytest.raises(AirflowException) as info:
        op.execute(context)
    message = str(info.value)
    text = logged(caplog, capsys)
    first = message.splitlines()[0]
    assert first.startswith(f"Dune pipeline {op.pipeline_execution_id} failed: node 2 (query {FAILING}): ")
    assert first.endswith("line 3:8: Column 'amount_usdd' cannot be resolved")
    assert message.count("amount_usdd") == 1
    assert "Pipeline error" not in message
    assert "Not retried: this is an SQL error" in message  # what the retry tests rely on
    # The progress warns about the failed node without repeating Dune's error; the table has both nodes.
    failed_lines = [line for line in text.splitlines() if f"node 2 (query {FAILING}) failed" in line]
    assert len(failed_lines) == 1 and "amount_usdd" not in failed_lines[0]
    rows = table_rows(text, op.pipeline_execution_id or "")
    assert [(r[0], r[3]) for r in rows] == [("1", "completed"), ("2", "failed")]


def test_deferred_pipeline_reads_the_final_status_once_more(emulator: DuneEmulator, context: Any) -> None:
    op = pipeline(query_id=QUICK, deferrable=True)
    with pytest.raises(TaskDeferred) as info:
        op.execute(context)

    async def events() -> list[Any]:
        return [e.payload async for e in info.value.trigger.run()]

    (event,) = asyncio.run(events())
    assert "details" not in event
    before = emulator.counts["get_pipeline_status"]
    result = op.execute_complete(context, event)
    assert emulator.counts["get_pipeline_status"] == before + 1
    assert result["outcome"] == "success" and result["nodes"][0]["run_seconds"] is not None


def test_an_event_of_the_previous_release_with_details_is_still_accepted(emulator: DuneEmulator, context: Any) -> None:
    """A trigger serialized before an upgrade fires the old event, with the whole last status in ``details``."""
    with DuneHook() as hook:
        pipeline_execution_id = wait_finished(hook.execute_query_pipeline(FAILING), pipeline=True)
        details = hook.get_pipeline_status(pipeline_execution_id).to_dict()
    emulator.inject("get_pipeline_status", Fault.status(404, times=10))  # only the event's details remain
    event = {
        "status": "failed",
        "message": f"Dune pipeline {pipeline_execution_id} ended failed ...",
        "pipeline_execution_id": pipeline_execution_id,
        "details": details,
    }
    with pytest.raises(AirflowException) as info:
        pipeline(query_id=FAILING).execute_complete(context, event)
    assert "Not retried: this is an SQL error" in str(info.value)  # classified from the old event's details


def test_success_whose_final_status_cannot_be_read_fails_and_the_retry_re_attaches(
    emulator: DuneEmulator, context: Any, monkeypatch: pytest.MonkeyPatch, variables: FakeVariables
) -> None:
    op = pipeline(query_id=QUICK, deferrable=True)
    with pytest.raises(TaskDeferred) as info:
        op.execute(context)

    async def events() -> list[Any]:
        return [e.payload async for e in info.value.trigger.run()]

    (event,) = asyncio.run(events())
    assert event["status"] == "success"
    monkeypatch.setenv("AIRFLOW_CONN_DUNE_DEFAULT", dune_connection_json(emulator.url, max_retries=1))
    emulator.inject("get_pipeline_status", Fault.status(500))  # max_retries=1: one attempt
    with pytest.raises(AirflowException) as failure:
        op.execute_complete(context, event)
    assert not isinstance(failure.value, TaskDeferred)
    assert "completed, but its final status could not be read" in str(failure.value)
    assert "re-attaches to this run" in str(failure.value)
    assert "HTTP 500" in str(failure.value)
    assert variables.store  # the record stays for the next try

    context["ti"].try_number = 2
    result = pipeline(query_id=QUICK).execute(context)
    assert result["outcome"] == "success"
    assert emulator.executions_started() == 1  # no second run


def test_query_operator_logs_a_one_row_table_and_returns_times(
    emulator: DuneEmulator, context: Any, caplog: pytest.LogCaptureFixture, capsys: pytest.CaptureFixture[str]
) -> None:
    capsys.readouterr()
    op = DuneExecuteQueryOperator(task_id="q", query_id=QUICK, poll_interval=0.05, deferrable=False)
    result = op.execute(context)
    text = logged(caplog, capsys)
    execution_id = result["execution_id"]
    assert f"Started Dune execution {execution_id} of query {QUICK}: https://dune.com/queries/{QUICK}" in text
    assert result["run_seconds"] is not None and result["queued_seconds"] is not None
    assert result["total_credits"] == result["execution_cost_credits"]
    (row,) = table_rows(text, execution_id)
    assert row[:4] == ["-", "query", str(QUICK), "completed"] and row[6] == execution_id


def test_view_refresh_logs_a_one_row_table(
    emulator: DuneEmulator, context: Any, caplog: pytest.LogCaptureFixture, capsys: pytest.CaptureFixture[str]
) -> None:
    capsys.readouterr()
    op = DuneRefreshMaterializedViewOperator(task_id="v", view_name=VIEW, poll_interval=0.05, deferrable=False)
    result = op.execute(context)
    (row,) = table_rows(logged(caplog, capsys), result["execution_id"])
    assert row[:4] == ["-", "refresh", VIEW, "completed"]
