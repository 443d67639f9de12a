"""Operator runs through the emulator with each shape of ``REAL_SHAPES.md`` forced on, plus Dune's datapoint cap,
partial-result refusals and invalid ids: what a task does when Dune answers the way it was seen to answer."""

from __future__ import annotations

import json
import urllib.parse
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import Any

import pytest
from airflow.exceptions import AirflowException, TaskDeferred

from airflow_provider_dune.api.errors import DunePartialResultError
from airflow_provider_dune.hooks.dune import DuneHook
from airflow_provider_dune.operators.pipeline import DuneExecutePipelineOperator
from airflow_provider_dune.operators.query import DuneExecuteQueryOperator
from airflow_provider_dune.sensors.execution import DuneExecutionSensor
from airflow_provider_dune.testing._profiles import ResponseProfile
from airflow_provider_dune.testing.emulator import DuneEmulator
from airflow_provider_dune.testing.pytest_plugin import make_test_emulator
from airflow_provider_dune.utils import task_records
from airflow_provider_dune.version_compat import AirflowFailException
from tests.conftest import dune_connection_json
from tests.emulator.test_emulator_profiles import SHAPE_CASES
from tests.helpers import wait_finished
from tests.operators.fakes import FakeTI, FakeVariables

ROWS = [{"day": f"2026-01-{i + 1:02d}", "volume": i * 1.5} for i in range(25)]
QUERY = 8101  # pending, then executing, then 25 rows
FAILING = 8102
LONG = 8103
PARTIAL = 8104
WIDE = 8105
WIDE_COLUMNS = 30
WIDE_ROWS = [{f"c{column:02d}": row + column for column in range(WIDE_COLUMNS)} for row in range(9_000)]

Start = Callable[..., DuneEmulator]


@pytest.fixture
def start(monkeypatch: pytest.MonkeyPatch) -> Iterator[Start]:
    """Start an emulator with the given profile (forced shapes) and point ``dune_default`` at it."""
    monkeypatch.setattr(task_records, "Variable", FakeVariables())
    started: list[DuneEmulator] = []

    def _start(*always: str, strict: bool = False, **connection_extra: Any) -> DuneEmulator:
        profile = ResponseProfile("strict") if strict else ResponseProfile("realistic", seed=1, always=always)
        emulator = make_test_emulator(profile=profile).start()
        started.append(emulator)
        emulator.add_query(QUERY, pending=0.15, duration=0.15, rows=ROWS)
        emulator.add_query(FAILING, duration=0.05, error="Column 'amount_usdd' cannot be resolved")
        emulator.add_query(LONG, duration=30)
        emulator.add_query(PARTIAL, duration=0.05, rows=ROWS[:3], partial=True)
        emulator.add_query(WIDE, duration=0.05, rows=WIDE_ROWS)
        monkeypatch.setenv("AIRFLOW_CONN_DUNE_DEFAULT", dune_connection_json(emulator.url, **connection_extra))
        return emulator

    yield _start
    for emulator in started:
        emulator.stop()


def context(emulator: DuneEmulator) -> dict[str, Any]:
    return {"ti": FakeTI(emulator)}


def query_op(**kwargs: Any) -> DuneExecuteQueryOperator:
    kwargs.setdefault("task_id", "query")
    kwargs.setdefault("query_id", QUERY)
    kwargs.setdefault("poll_interval", 0.03)
    kwargs.setdefault("deferrable", False)
    return DuneExecuteQueryOperator(**kwargs)


def answers(emulator: DuneEmulator, endpoint: str) -> list[dict[str, Any]]:
    """The 200 bodies the emulator sent for ``endpoint``."""
    return [
        json.loads(r.response_body or b"{}") for r in emulator.requests if r.endpoint == endpoint and r.status == 200
    ]


def assert_sent(emulator: DuneEmulator, shape: str) -> None:
    endpoint, _, shows = SHAPE_CASES[shape]
    sent = answers(emulator, endpoint)
    assert any(_shows(shows, body) for body in sent), f"{shape} never sent on {endpoint}: {sent[:3]}"


def _shows(shows: Callable[[dict[str, Any]], bool], body: dict[str, Any]) -> bool:
    try:
        return bool(shows(body))
    except (KeyError, TypeError):
        return False  # a body of another state than the one the shape is about


@pytest.mark.parametrize(
    "shape",
    [
        "no_finished_flag",
        "large_queue_position",
        "zero_expires_at",
        "cancelled_at_when_completed",
        "extra_status_fields",
        "metadata_fields_absent",
        "flat_result_metadata",
    ],
)
@pytest.mark.parametrize("deferrable", [False, True], ids=["worker", "triggerer"])
def test_query_run_with_each_status_and_result_shape(start: Start, shape: str, deferrable: bool) -> None:
    """REAL_SHAPES.md, Execution status and Results: each shape, a whole query run, rows read back right."""
    emulator = start(shape)
    task = query_op(fetch_results=True, page_size=10, deferrable=deferrable)
    ctx = context(emulator)
    if deferrable:
        with pytest.raises(TaskDeferred) as info:
            task.execute(ctx)
        events = _run_trigger(info.value.trigger)
        result = task.execute_complete(ctx, events[-1])
    else:
        result = task.execute(ctx)
    assert result["state"] == "completed" and result["rows"] == ROWS
    assert emulator.executions_started(QUERY) == 1
    assert_sent(emulator, shape)


def _run_trigger(trigger: Any) -> list[dict[str, Any]]:
    import asyncio

    async def collect() -> list[dict[str, Any]]:
        return [event.payload async for event in trigger.run()]

    return asyncio.run(collect())


def test_failed_query_without_line_and_column(start: Start) -> None:
    """REAL_SHAPES.md, Execution status: a SQL error object without metadata line/column (dune-client #89)."""
    emulator = start("error_without_location")
    with pytest.raises(AirflowException, match="Column 'amount_usdd' cannot be resolved"):
        query_op(query_id=FAILING).execute(context(emulator))
    assert_sent(emulator, "error_without_location")


def test_failed_query_with_line_and_column_names_them(start: Start) -> None:
    emulator = start(strict=True)
    emulator.add_query(8106, duration=0.05, error="line 4:12: Column 'x' cannot be resolved")
    with pytest.raises(AirflowException, match=r"line 4:12: Column 'x' cannot be resolved"):
        query_op(query_id=8106).execute(context(emulator))


def test_cancelled_spelled_with_one_l(start: Start) -> None:
    """REAL_SHAPES.md, Execution status: QUERY_STATE_CANCELED (docs state list)."""
    emulator = start("canceled_one_l")
    with DuneHook() as hook:
        execution_id = hook.execute_query(LONG).execution_id
        assert hook.cancel_execution(execution_id)
    wait_finished(execution_id, pipeline=False)
    sensor = DuneExecutionSensor(task_id="wait", execution_id=execution_id, poke_interval=0.05)
    with pytest.raises(AirflowException, match="cancelled"):
        sensor.poke(context(emulator))  # type: ignore[arg-type]
    assert_sent(emulator, "canceled_one_l")


@pytest.mark.parametrize("shape", ["both_node_status_objects", "extra_pipeline_fields"])
def test_pipeline_run_with_each_pipeline_shape(start: Start, shape: str) -> None:
    """REAL_SHAPES.md, Pipelines: a node carrying both status objects (docs example); unknown extra fields."""
    emulator = start(shape)
    task = DuneExecutePipelineOperator(
        task_id="pipeline", query_id=1001, query_parameters={"date": "2024-06-01"}, poll_interval=0.03, deferrable=False
    )
    result = task.execute(context(emulator))
    assert result["outcome"] == "success"
    kinds = [node["kind"] for node in result["nodes"]]
    assert kinds == ["materialized_view_refresh", "query_execution"]
    assert_sent(emulator, shape)


def test_view_description_with_extra_fields(start: Start) -> None:
    """REAL_SHAPES.md, Materialized views: GET /v1/materialized-views/{name} with fields beyond the spec."""
    emulator = start("extra_view_fields")
    with DuneHook() as hook:
        view = hook.get_materialized_view("dune.demo.result_dex_trades_daily")
    assert view.query_id == 1000
    assert_sent(emulator, "extra_view_fields")


@pytest.mark.parametrize("strict", [True, False], ids=["200-failed-state", "http-400"])
def test_partial_result_refusal_in_either_shape_is_one_clear_error(start: Start, strict: bool) -> None:
    """REAL_SHAPES.md, Results: the partial-result refusal as a 200 failed state (spec) or an HTTP error (docs)."""
    emulator = start("partial_refusal_as_http_400", strict=strict)
    with DuneHook() as hook:
        execution_id = wait_finished(hook.execute_query(PARTIAL).execution_id, pipeline=False)
        with pytest.raises(DunePartialResultError, match="allow_partial_results=True"):
            list(hook.iter_execution_results(execution_id))
        rows = [
            row for page in hook.iter_execution_results(execution_id, allow_partial_results=True) for row in page.rows
        ]
    assert rows == ROWS[:3]
    codes = {r.status for r in emulator.requests if r.endpoint == "get_execution_results"}
    assert codes == ({200} if strict else {400, 200})


def test_operator_accepting_a_partial_result_reads_it(start: Start) -> None:
    emulator = start("partial_refusal_as_http_400")
    result = query_op(query_id=PARTIAL, fetch_results=True, allow_partial_results=True).execute(context(emulator))
    assert result["rows"] == ROWS[:3]


# -- the datapoint cap ----------------------------------------------------------------------------------------


def _limits(emulator: DuneEmulator) -> list[int]:
    return [int(r.query["limit"]) for r in emulator.requests if r.endpoint == "get_execution_results"]


def test_wide_result_is_paged_under_the_default_cap(start: Start, tmp_path: Path) -> None:
    """REAL_SHAPES.md, Results: 10,000-row pages of 26+ columns cross the default 250,000 cap."""
    emulator = start(strict=True)
    target = tmp_path / "wide.jsonl"
    result = query_op(query_id=WIDE, output_path=str(target)).execute(context(emulator))
    assert result["row_count"] == len(WIDE_ROWS)
    assert [json.loads(line) for line in target.read_text().splitlines()] == WIDE_ROWS
    assert _limits(emulator) == [8_333, 8_333]  # 250,000 // 30 columns, known from the status
    assert all(limit * WIDE_COLUMNS <= 250_000 for limit in _limits(emulator))


def test_wide_result_without_column_count_in_the_status(start: Start, tmp_path: Path) -> None:
    emulator = start(strict=True)
    with DuneHook() as hook:
        execution_id = wait_finished(hook.execute_query(WIDE).execution_id, pipeline=False)
        count = sum(len(page.rows) for page in hook.iter_execution_results(execution_id))
    assert count == len(WIDE_ROWS)
    assert _limits(emulator)[:2] == [2_500, 8_333]  # guessed for the first page, then from its columns


def test_lower_account_cap_fails_once_with_how_to_fix_it_and_no_second_run(start: Start, tmp_path: Path) -> None:
    emulator = start(strict=True)
    emulator.set_datapoint_limit(50_000)
    with pytest.raises(AirflowFailException, match="max_datapoints_per_request") as info:
        query_op(query_id=WIDE, output_path=str(tmp_path / "x.jsonl"), retries=2).execute(context(emulator))
    assert "billing cycle" not in str(info.value)
    assert emulator.executions_started(WIDE) == 1
    assert len(_limits(emulator)) == 1  # refused once, not retried


def test_the_connection_setting_matches_pages_to_the_account_cap(start: Start, tmp_path: Path) -> None:
    emulator = start(strict=True, max_datapoints_per_request=50_000)
    emulator.set_datapoint_limit(50_000)
    result = query_op(query_id=WIDE, output_path=str(tmp_path / "x.jsonl")).execute(context(emulator))
    assert result["row_count"] == len(WIDE_ROWS)
    assert set(_limits(emulator)) == {1_666}


# -- invalid ids ----------------------------------------------------------------------------------------------


def test_a_recorded_run_whose_id_dune_calls_invalid_is_replaced_by_a_new_run(start: Start) -> None:
    """REAL_SHAPES.md, Errors: Dune answers 400 "...ID (ID: x) is invalid." for a bad id: no such run exists."""
    emulator = start()
    ctx = context(emulator)
    with pytest.raises(TaskDeferred):
        query_op(query_id=LONG, deferrable=True).execute(ctx)
    store = task_records.Variable.store  # type: ignore[attr-defined]
    (key,) = store
    record = json.loads(store[key])
    record["run_id"] = "not-a-dune-id"
    store[key] = json.dumps(record)
    with pytest.raises(TaskDeferred) as info:
        query_op(query_id=LONG, deferrable=True).execute(ctx)
    assert info.value.trigger.execution_id != "not-a-dune-id"
    assert emulator.executions_started(LONG) == 2  # the recorded id cannot be a run: a new one was right
    checked = [r.status for r in emulator.requests if urllib.parse.unquote(r.path).endswith("/not-a-dune-id/status")]
    assert checked == [400]  # asked once; Dune's "invalid" is an answer, not a transient error
