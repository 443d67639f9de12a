"""DuneExecutePipelineOperator against the Dune API emulator over real HTTP (worker and deferrable paths)."""

from __future__ import annotations

import json
import logging
import threading
import time
from typing import Any

import pytest
from airflow.exceptions import AirflowException, TaskDeferred

from airflow_provider_dune.api.errors import DuneConfigurationError, DuneCreditsExhaustedError, DuneError
from airflow_provider_dune.api.states import RunState
from airflow_provider_dune.hooks.dune import DuneHook
from airflow_provider_dune.operators.pipeline import XCOM_PIPELINE_EXECUTION_ID, DuneExecutePipelineOperator
from airflow_provider_dune.testing.emulator import DuneEmulator, Fault
from airflow_provider_dune.triggers.pipeline import DunePipelineTrigger
from airflow_provider_dune.version_compat import AirflowFailException
from tests.conftest import TEST_API_KEY, dune_connection_json
from tests.helpers import execution_state, wait_running
from tests.operators.fakes import FakeTI, FakeVariables

QUICK = 2001
SLOW = 2002
FAILING = 1099  # seed: "line 3:8: Column 'amount_usdd' cannot be resolved"
TRANSIENT = 2003  # fails on a timeout, which another run may not repeat
LINEAGE = 1001  # seed: materialized view dune.demo.result_dex_trades_daily -> query 1001 (param "date")
FAILING_VIEW_QUERY = 1007  # seed: lineage through dune.demo.result_wallet_balances, which fails
VIEW = "dune.demo.result_token_prices_hourly"


@pytest.fixture
def emulator(dune_emulator: DuneEmulator, dune_conn_id: str, variables: FakeVariables) -> DuneEmulator:
    dune_emulator.add_query(QUICK, duration=0.1)
    dune_emulator.add_query(SLOW, duration=30)
    return dune_emulator


@pytest.fixture
def ti(emulator: DuneEmulator) -> FakeTI:
    return FakeTI(emulator)


@pytest.fixture
def context(ti: FakeTI) -> Any:
    return {"ti": ti, "ds": "2024-06-01", "params": {}}


def operator(**kwargs: Any) -> DuneExecutePipelineOperator:
    kwargs.setdefault("task_id", "run_pipeline")
    kwargs.setdefault("poll_interval", 0.05)
    kwargs.setdefault("timeout", 20)
    kwargs.setdefault("deferrable", False)
    return DuneExecutePipelineOperator(**kwargs)


def defer(op: DuneExecutePipelineOperator, context: Any) -> TaskDeferred:
    with pytest.raises(TaskDeferred) as info:
        op.execute(context)
    return info.value


# -- success ------------------------------------------------------------------------------------------------------


def test_query_pipeline_success(emulator: DuneEmulator, ti: FakeTI, context: Any, variables: FakeVariables) -> None:
    result = operator(query_id=LINEAGE, query_parameters={"date": "2024-06-01"}).execute(context)

    assert result["outcome"] == "success"
    pipeline_execution_id = result["pipeline_execution_id"]
    assert ti.xcom == {XCOM_PIPELINE_EXECUTION_ID: pipeline_execution_id}
    assert ti.status_calls_at_push == 0  # pushed before the first status call, i.e. before waiting
    assert emulator.counts["get_pipeline_status"] >= 2
    nodes = result["nodes"]
    assert [n["state"] for n in nodes] == ["completed", "completed"]
    assert {n["view_name"] for n in nodes if n["kind"] == "materialized_view_refresh"} == {
        "dune.demo.result_dex_trades_daily"
    }
    assert {n["query_id"] for n in nodes if n["kind"] == "query_execution"} == {LINEAGE}
    assert all(isinstance(n["execution_id"], str) and n["execution_id"] for n in nodes)
    assert json.loads(json.dumps(result)) == result
    assert emulator.executions_started() == 1
    assert variables.store == {}  # registry record deleted once the run ended


def test_explicit_nodes_success(emulator: DuneEmulator, ti: FakeTI, context: Any) -> None:
    nodes = [
        {"id": 1, "materialized_view_refresh": {"name": VIEW}},
        {"id": 2, "dependencies": [1], "query_execution": {"query_id": QUICK, "performance": "large"}},
    ]
    result = operator(nodes=nodes).execute(context)
    assert result["outcome"] == "success"
    assert [(n["node_id"], n["state"]) for n in result["nodes"]] == [(1, "completed"), (2, "completed")]
    assert ti.xcom[XCOM_PIPELINE_EXECUTION_ID] == result["pipeline_execution_id"]
    assert emulator.counts["execute_pipeline"] == 1
    assert emulator.counts.get("execute_query_pipeline", 0) == 0
    body = next(r.json_body for r in emulator.requests if r.endpoint == "execute_pipeline")["pipeline"]
    assert body["nodes"][1]["query_execution"]["performance"] == "large"
    assert body["nodes"][1]["dependencies"] == [1]


def test_no_wait_returns_after_start(emulator: DuneEmulator, ti: FakeTI, context: Any) -> None:
    result = operator(query_id=SLOW, wait_for_completion=False).execute(context)
    assert result["outcome"] == "running"
    assert ti.xcom[XCOM_PIPELINE_EXECUTION_ID] == result["pipeline_execution_id"]
    assert emulator.counts.get("cancel_execution", 0) == 0


# -- failures -----------------------------------------------------------------------------------------------------


def test_node_failure_names_query_and_cancels_running_nodes(emulator: DuneEmulator, context: Any) -> None:
    nodes = [
        {"id": 1, "query_execution": {"query_id": FAILING}},
        {"id": 2, "query_execution": {"query_id": SLOW}},
    ]
    op = operator(nodes=nodes)
    with pytest.raises(AirflowException) as info:
        op.execute(context)
    message = str(info.value)
    assert "query 1099" in message
    assert "line 3:8: Column 'amount_usdd' cannot be resolved" in message
    assert "Cancelled 1 still-running node execution(s)" in message
    assert emulator.counts["cancel_execution"] == 1
    with DuneHook() as hook:
        status = hook.get_pipeline_status(op.pipeline_execution_id or "")
    slow = next(n for n in status.nodes if n.query_id == SLOW)
    assert execution_state(slow.execution_id or "") is RunState.CANCELLED


def test_view_failure_names_view_and_error(emulator: DuneEmulator, context: Any) -> None:
    with pytest.raises(AirflowException) as info:
        operator(query_id=FAILING_VIEW_QUERY).execute(context)
    message = str(info.value)
    assert "materialized view dune.demo.result_wallet_balances" in message
    assert "line 12:5: Column 'balance_raw' cannot be resolved" in message


def test_402_on_execute_is_clear_and_not_retried(emulator: DuneEmulator, context: Any) -> None:
    emulator.inject("execute_query_pipeline", Fault.status(402))
    with pytest.raises(DuneCreditsExhaustedError) as info:
        operator(query_id=QUICK).execute(context)
    assert "402" in str(info.value)
    assert "exceed your configured limits" in str(info.value)
    assert "retrying will not help" in str(info.value)
    assert emulator.counts["execute_query_pipeline"] == 1
    assert emulator.executions_started() == 0
    assert "get_pipeline_status" not in emulator.counts


@pytest.mark.slow
def test_429_on_execute_is_retried_without_a_second_run(emulator: DuneEmulator, context: Any) -> None:
    emulator.inject("execute_query_pipeline", Fault.status(429, times=2))
    result = operator(query_id=QUICK).execute(context)
    assert result["outcome"] == "success"
    assert emulator.counts["execute_query_pipeline"] == 3
    assert emulator.executions_started() == 1


@pytest.mark.slow
def test_429_storm_and_5xx_while_polling_are_survived(emulator: DuneEmulator, context: Any) -> None:
    emulator.inject(
        "get_pipeline_status", Fault.status(429, times=4), Fault.status(500), Fault.status(502), Fault.drop()
    )
    result = operator(query_id=QUICK).execute(context)
    assert result["outcome"] == "success"
    assert emulator.counts["get_pipeline_status"] > 7
    assert emulator.executions_started() == 1


@pytest.mark.slow
def test_status_errors_beyond_hook_retries_are_survived(
    emulator: DuneEmulator, context: Any, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setenv("AIRFLOW_CONN_DUNE_DEFAULT", dune_connection_json(emulator.url, max_retries=1))
    emulator.inject("get_pipeline_status", Fault.status(503))
    result = operator(query_id=QUICK).execute(context)
    assert result["outcome"] == "success"
    assert emulator.counts["get_pipeline_status"] >= 2


def test_timeout_cancels_running_node(emulator: DuneEmulator, context: Any) -> None:
    op = operator(query_id=SLOW, timeout=0.5)
    began = time.monotonic()
    with pytest.raises(AirflowException) as info:
        op.execute(context)
    assert time.monotonic() - began < 5
    message = str(info.value)
    assert "did not finish before the timeout" in message
    assert "Timeout was 0.5 s" in message
    assert "Cancelled 1 still-running node execution(s)" in message
    assert emulator.counts["cancel_execution"] == 1
    with DuneHook() as hook:
        (node,) = hook.get_pipeline_status(op.pipeline_execution_id or "").nodes
    assert execution_state(node.execution_id or "") is RunState.CANCELLED


# -- on_kill ------------------------------------------------------------------------------------------------------


def test_on_kill_cancels_while_waiting_in_worker(emulator: DuneEmulator, context: Any) -> None:
    # execute() stays on the main thread, as in a real task; the kill arrives from another thread.
    op = operator(query_id=SLOW)
    killed: list[str] = []

    def kill_once_running() -> None:
        deadline = time.monotonic() + 5
        while op.pipeline_execution_id is None and time.monotonic() < deadline:
            time.sleep(0.01)
        if op.pipeline_execution_id is not None:
            killed.extend(wait_running(op.pipeline_execution_id))
        op.on_kill()

    killer = threading.Thread(target=kill_once_running, daemon=True)
    killer.start()
    with pytest.raises(AirflowException, match="cancelled"):
        op.execute(context)
    killer.join(10)
    assert not killer.is_alive()
    assert len(killed) == 1
    assert emulator.counts["cancel_execution"] == 1
    assert execution_state(killed[0]) is RunState.CANCELLED


def test_on_kill_without_cancel_on_kill_leaves_run(emulator: DuneEmulator, context: Any) -> None:
    op = operator(query_id=SLOW, deferrable=True, cancel_on_kill=False)
    defer(op, context)
    (execution_id,) = wait_running(op.pipeline_execution_id or "")
    op.on_kill()
    assert emulator.counts.get("cancel_execution", 0) == 0
    assert execution_state(execution_id) in (RunState.PENDING, RunState.EXECUTING)


# -- retry re-attach ----------------------------------------------------------------------------------------------


def test_retry_reattaches_to_running_pipeline(
    emulator: DuneEmulator, context: Any, ti: FakeTI, variables: FakeVariables
) -> None:
    first = defer(operator(query_id=SLOW, deferrable=True), context)
    pipeline_execution_id = first.trigger.pipeline_execution_id
    assert len(variables.store) == 1
    assert TEST_API_KEY not in json.dumps(variables.store)

    ti.xcom.clear()  # a retry starts with cleared XCom
    second = defer(operator(query_id=SLOW, deferrable=True), context)  # same task instance, new try

    assert second.trigger.pipeline_execution_id == pipeline_execution_id
    assert ti.xcom[XCOM_PIPELINE_EXECUTION_ID] == pipeline_execution_id
    assert emulator.executions_started() == 1
    assert emulator.counts["execute_query_pipeline"] == 1


def test_retry_with_different_parameters_starts_new_run(emulator: DuneEmulator, context: Any) -> None:
    first = defer(operator(query_id=SLOW, deferrable=True), context)
    second = defer(operator(query_id=SLOW, performance="large", deferrable=True), context)
    assert second.trigger.pipeline_execution_id != first.trigger.pipeline_execution_id
    assert emulator.executions_started() == 2


def _finish_unwatched(pipeline_execution_id: str) -> None:
    """Let a deferred try's run end while nobody acts on it (e.g. the worker died)."""
    deadline = time.monotonic() + 5
    with DuneHook() as hook:
        while not hook.get_pipeline_status(pipeline_execution_id).is_terminal:
            assert time.monotonic() < deadline
            time.sleep(0.02)


def test_retry_after_previous_run_succeeded_uses_it(
    emulator: DuneEmulator, context: Any, variables: FakeVariables
) -> None:
    first = defer(operator(query_id=QUICK, deferrable=True, poll_interval=0.05), context)
    assert len(variables.store) == 1
    _finish_unwatched(first.trigger.pipeline_execution_id)
    result = operator(query_id=QUICK).execute(context)
    assert result["pipeline_execution_id"] == first.trigger.pipeline_execution_id
    assert result["outcome"] == "success"
    assert emulator.executions_started() == 1
    assert variables.store == {}


def test_retry_after_previous_run_failed_for_a_passing_reason_starts_new_run(
    emulator: DuneEmulator, context: Any
) -> None:
    emulator.add_query(TRANSIENT, duration=0.05, error="Query execution timed out on the cluster")
    first = defer(operator(query_id=TRANSIENT, deferrable=True, poll_interval=0.05), context)
    _finish_unwatched(first.trigger.pipeline_execution_id)
    with pytest.raises(AirflowException, match="timed out") as info:
        operator(query_id=TRANSIENT).execute(context)
    assert not isinstance(info.value, AirflowFailException)  # Airflow may retry it
    assert emulator.executions_started(TRANSIENT) == 2


def test_retry_after_an_unreported_sql_failure_reports_it_without_another_run(
    emulator: DuneEmulator,
    context: Any,
    variables: FakeVariables,
    caplog: pytest.LogCaptureFixture,
    capsys: pytest.CaptureFixture[str],
) -> None:
    # The previous try deferred and never resumed (Airflow failed it first, apache/airflow#67287): the run it
    # started failed on its SQL. Another run would fail the same way and be billed too.
    first = defer(operator(query_id=FAILING, deferrable=True, poll_interval=0.05), context)
    _finish_unwatched(first.trigger.pipeline_execution_id)
    with caplog.at_level(logging.WARNING), pytest.raises(AirflowFailException, match="amount_usdd") as info:
        operator(query_id=FAILING).execute(context)
    assert "Not retried" in str(info.value)
    assert str(info.value).count("cannot be resolved") == 1
    assert emulator.executions_started(FAILING) == 1
    logged = caplog.text + capsys.readouterr().out  # stdlib logging on Airflow 2, structlog's output on 3
    assert "that try did not report it" in logged
    assert variables.store == {}  # reported: a cleared task starts a new run


def test_reuse_disabled_starts_new_run(emulator: DuneEmulator, context: Any) -> None:
    defer(operator(query_id=SLOW, deferrable=True), context)
    defer(operator(query_id=SLOW, deferrable=True, reuse_existing_execution=False), context)
    assert emulator.executions_started() == 2


# -- deferrable path ----------------------------------------------------------------------------------------------


async def test_deferrable_round_trip(emulator: DuneEmulator, context: Any, ti: FakeTI) -> None:
    emulator.add_query(QUICK, duration=0.3)
    op = operator(query_id=QUICK, deferrable=True, timeout=30)
    began = time.time()
    deferred = defer(op, context)

    assert deferred.method_name == "execute_complete"
    assert deferred.timeout is None  # the trigger's own deadline cancels nodes; Airflow's would not
    trigger = deferred.trigger
    assert isinstance(trigger, DunePipelineTrigger)
    classpath, kwargs = trigger.serialize()
    assert classpath == "airflow_provider_dune.triggers.pipeline.DunePipelineTrigger"
    encoded = json.dumps(kwargs)
    assert TEST_API_KEY not in encoded
    assert kwargs["pipeline_execution_id"] == ti.xcom[XCOM_PIPELINE_EXECUTION_ID]
    assert kwargs["poll_interval"] == 0.05
    assert began + 29 < kwargs["end_time"] < time.time() + 31
    assert kwargs["cancel_on_kill"] is True
    # execute() just read the status, so the trigger's first read waits one poll interval.
    assert began + 0.05 <= kwargs["first_poll_at"] <= time.time() + 0.05

    recreated = DunePipelineTrigger(**json.loads(encoded))
    events = [event.payload async for event in recreated.run()]
    assert len(events) == 1

    fresh = operator(query_id=QUICK, deferrable=True, timeout=30)  # Airflow resumes on a new operator instance
    result = fresh.execute_complete(context, events[0])
    assert result["outcome"] == "success"
    assert result["pipeline_execution_id"] == kwargs["pipeline_execution_id"]
    assert [n["state"] for n in result["nodes"]] == ["completed"]
    assert emulator.executions_started() == 1


def test_deferrable_run_already_finished_completes_without_deferring(emulator: DuneEmulator, context: Any) -> None:
    emulator.add_query(QUICK, duration=0)  # finished by the time the first status is read
    result = operator(query_id=QUICK, deferrable=True).execute(context)
    assert result["outcome"] == "success"
    assert emulator.counts["get_pipeline_status"] == 1


# -- execute_complete ---------------------------------------------------------------------------------------------


@pytest.mark.parametrize(
    ("event", "fragment"),
    [
        (None, "without a pipeline execution id"),
        ({"pipeline_execution_id": "P1", "message": "?"}, "unknown status None"),
        ({"pipeline_execution_id": "P1", "status": "finished"}, "unknown status 'finished'"),
    ],
    ids=["none", "missing-status", "unknown-status"],
)
def test_execute_complete_rejects_invalid_events(
    emulator: DuneEmulator, context: Any, event: Any, fragment: str
) -> None:
    with pytest.raises(AirflowException) as info:
        operator(query_id=QUICK).execute_complete(context, event)
    assert fragment in str(info.value)


def test_execute_complete_rejects_event_for_other_run(emulator: DuneEmulator, context: Any) -> None:
    op = operator(query_id=QUICK)
    op.pipeline_execution_id = "P1"
    with pytest.raises(DuneError, match="'P2' while waiting for 'P1'"):
        op.execute_complete(context, {"status": "success", "pipeline_execution_id": "P2", "details": {}})


def test_execute_complete_error_event_fails_with_dune_s_whole_answer(
    emulator: DuneEmulator, context: Any, monkeypatch: pytest.MonkeyPatch
) -> None:
    """The event's message is one shortened line; the status read again gives Dune's answer and the advice."""
    with DuneHook() as hook:
        pipeline_execution_id = hook.execute_query_pipeline(QUICK)
    monkeypatch.setenv("AIRFLOW_CONN_DUNE_DEFAULT", dune_connection_json(emulator.url, api_key="wrong-key"))
    event = {
        "status": "error",
        "message": f"Could not get the status of Dune pipeline {pipeline_execution_id}: Dune API error (HTTP 401)...",
        "pipeline_execution_id": pipeline_execution_id,
    }
    with pytest.raises(AirflowException) as info:
        operator(query_id=QUICK).execute_complete(context, event)
    message = str(info.value)
    assert message.startswith(f"Could not get the status of Dune pipeline {pipeline_execution_id}: ")
    assert "invalid API Key" in message and "Check the API Key field" in message
    assert "wrong-key" not in message


def test_execute_complete_failed_event_cancels_what_still_runs(emulator: DuneEmulator, context: Any) -> None:
    op = operator(query_id=SLOW, deferrable=True)
    deferred = defer(op, context)
    pipeline_execution_id = deferred.trigger.pipeline_execution_id
    (execution_id,) = wait_running(pipeline_execution_id)
    event = {
        "status": "timeout",
        "message": f"Dune pipeline {pipeline_execution_id} did not finish before the timeout",
        "pipeline_execution_id": pipeline_execution_id,
        "details": None,
    }
    with pytest.raises(AirflowException, match="Cancelled 1 still-running"):
        operator(query_id=SLOW, deferrable=True).execute_complete(context, event)
    assert execution_state(execution_id) is RunState.CANCELLED


# -- templating and validation ------------------------------------------------------------------------------------


def test_template_fields() -> None:
    assert set(DuneExecutePipelineOperator.template_fields) >= {
        "query_id",
        "query_parameters",
        "nodes",
        "performance",
        "dune_conn_id",
    }


def test_templates_render_and_reach_dune(emulator: DuneEmulator, context: Any) -> None:
    op = operator(query_id="{{ params.query }}", query_parameters={"date": "{{ ds }}"}, params={"query": LINEAGE})
    context["params"] = {"query": LINEAGE}
    op.render_template_fields(context)
    assert op.query_id == str(LINEAGE)
    assert op.query_parameters == {"date": "2024-06-01"}
    result = op.execute(context)
    assert result["outcome"] == "success"
    request = next(r for r in emulator.requests if r.endpoint == "execute_query_pipeline")
    assert request.path.endswith(f"/query/{LINEAGE}/pipeline/execute")
    assert request.json_body is not None
    assert request.json_body["query_parameters"] == {"date": "2024-06-01"}


def test_numeric_string_query_id_is_accepted(emulator: DuneEmulator, context: Any) -> None:
    assert operator(query_id=str(QUICK)).execute(context)["outcome"] == "success"


@pytest.mark.parametrize(
    ("kwargs", "fragment"),
    [
        ({"query_id": 1, "nodes": [{"id": 1, "query_execution": {"query_id": 1}}]}, "exactly one of query_id"),
        ({}, "exactly one of query_id"),
        (
            {
                "nodes": [
                    {"id": 1, "dependencies": [2], "query_execution": {"query_id": 1}},
                    {"id": 2, "dependencies": [1], "query_execution": {"query_id": 2}},
                ]
            },
            "dependency cycle",
        ),
        ({"nodes": [{"id": 1, "dependencies": [7], "query_execution": {"query_id": 1}}]}, "unknown node id(s) [7]"),
        ({"query_id": 1, "performance": "huge"}, "performance must be one of medium, large, got 'huge'"),
        ({"query_id": -5}, "query_id must be a positive integer"),
        ({"query_id": 1, "poll_interval": 0}, "poll_interval must be a finite number of seconds above zero"),
        ({"query_id": 1, "poll_interval": -1}, "poll_interval must be a finite number of seconds above zero"),
        ({"query_id": 1, "timeout": 0}, "timeout must be a finite number of seconds above zero"),
        ({"query_id": 1, "query_parameters": ["2024-06-01"]}, "query_parameters must be a dict"),
        (
            {"nodes": [{"id": 1, "query_execution": {"query_id": 1}}], "query_parameters": {"a": 1}},
            "put query_parameters inside each query_execution node",
        ),
    ],
    ids=[
        "both",
        "neither",
        "cycle",
        "unknown-dependency",
        "performance",
        "query-id",
        "poll-zero",
        "poll-negative",
        "timeout-zero",
        "params-list",
        "params-with-nodes",
    ],
)
def test_bad_arguments_fail_at_construction(kwargs: dict[str, Any], fragment: str) -> None:
    with pytest.raises(DuneConfigurationError) as info:
        DuneExecutePipelineOperator(task_id="t", **kwargs)
    assert fragment in str(info.value)


def test_templated_values_are_skipped_at_parse_time_and_validated_at_execute(
    emulator: DuneEmulator, context: Any
) -> None:
    op = operator(query_id="{{ params.query }}", performance="{{ params.tier }}")  # no error at parse time
    op.query_id, op.performance = "latest", "large"  # what the templates rendered to
    with pytest.raises(DuneConfigurationError, match="query_id must be a positive integer"):
        op.execute(context)
    op = operator(nodes="{{ params.nodes }}")
    op.nodes = [{"id": 1, "dependencies": [1], "query_execution": {"query_id": QUICK}}]
    with pytest.raises(DuneConfigurationError, match="depends on itself"):
        op.execute(context)
    assert emulator.counts == {}  # nothing was sent to Dune
