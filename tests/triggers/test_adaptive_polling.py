"""Reads placed around a run's expected end, over HTTP: the trigger with and without a forecast, and the
operator learning a request's duration for its next run."""

from __future__ import annotations

import asyncio
import itertools
import json
import time
from typing import Any

import pytest
from airflow.exceptions import TaskDeferred

from airflow_provider_dune.hooks.dune import DuneHook
from airflow_provider_dune.operators.pipeline import DuneExecutePipelineOperator
from airflow_provider_dune.testing.emulator import DuneEmulator
from airflow_provider_dune.triggers.pipeline import DunePipelineTrigger
from airflow_provider_dune.utils import run_durations, task_records
from tests.operators.fakes import FakeTI, FakeVariables

DURATION = 6.0
POLL_INTERVAL = 5.0


def _status_reads(emulator: DuneEmulator, pipeline_execution_id: str) -> list[float]:
    return [r.at for r in emulator.requests if r.endpoint == "get_pipeline_status" and pipeline_execution_id in r.path]


async def _detected_at(trigger: DunePipelineTrigger) -> tuple[dict[str, Any], float]:
    events = [event.payload async for event in trigger.run()]
    assert len(events) == 1
    return events[0], time.time()


@pytest.mark.slow
def test_a_forecast_from_history_notices_the_end_within_seconds_reads_staying_within_poll_interval(
    dune_emulator: DuneEmulator, dune_conn_id: str
) -> None:
    dune_emulator.add_query(9801, duration=DURATION)
    dune_emulator.add_query(9802, duration=DURATION)
    with DuneHook() as hook:
        started_at = time.time()
        adaptive_id = hook.execute_query_pipeline(9801)
        fixed_id = hook.execute_query_pipeline(9802)
    common = {"poll_interval": POLL_INTERVAL, "end_time": started_at + 60, "started_at": started_at}
    adaptive = DunePipelineTrigger(pipeline_execution_id=adaptive_id, expected_durations=[DURATION], **common)
    fixed = DunePipelineTrigger(pipeline_execution_id=fixed_id, expected_durations=[DURATION], adaptive=False, **common)

    async def both() -> list[tuple[dict[str, Any], float]]:
        return await asyncio.gather(_detected_at(adaptive), _detected_at(fixed))

    (adaptive_event, adaptive_seen), (fixed_event, fixed_seen) = asyncio.run(both())
    assert adaptive_event["status"] == fixed_event["status"] == "success"
    ended = started_at + DURATION
    # Fixed reads at +5 s and +10 s see the end 4 s late; the forecast reads across [+4 s, +8 s] every second.
    assert fixed_seen - ended > 3.0
    assert adaptive_seen - ended < 1.6
    for run_id in (adaptive_id, fixed_id):
        reads = [started_at, *_status_reads(dune_emulator, run_id)]
        assert max(b - a for a, b in itertools.pairwise(reads)) <= POLL_INTERVAL + 0.5
    timing = adaptive_event["timing"]
    assert timing["started_at"] == pytest.approx(started_at, abs=1e-3)
    assert timing["last_running_at"] < ended + 0.5 <= timing["finished_seen_at"] + 0.5
    assert timing["status_reads"] == len(_status_reads(dune_emulator, adaptive_id))


@pytest.fixture
def variables(monkeypatch: pytest.MonkeyPatch) -> FakeVariables:
    fake = FakeVariables()
    monkeypatch.setattr(task_records, "Variable", fake)
    return fake


def _deferred_trigger(context: Any, **kwargs: Any) -> tuple[DuneExecutePipelineOperator, DunePipelineTrigger]:
    op = DuneExecutePipelineOperator(task_id="refresh", query_id=9803, deferrable=True, **kwargs)
    with pytest.raises(TaskDeferred) as info:
        op.execute(context)
    trigger = info.value.trigger
    assert isinstance(trigger, DunePipelineTrigger)
    return op, DunePipelineTrigger(**json.loads(json.dumps(trigger.serialize()[1])))


@pytest.mark.slow
def test_the_operator_learns_the_duration_of_its_request_and_forecasts_the_next_run(
    dune_emulator: DuneEmulator, dune_conn_id: str, variables: FakeVariables, run_durations_store: FakeVariables
) -> None:
    dune_emulator.add_query(9803, duration=1.0)
    context = {"ti": FakeTI(dune_emulator), "params": {}}
    op, trigger = _deferred_trigger(context, poll_interval=0.2)
    assert trigger.started_at is not None and trigger.expected_durations == []
    event = asyncio.run(_detected_at(trigger))[0]
    assert op.execute_complete(context, event)["outcome"] == "success"
    (learnt,) = [json.loads(v) for k, v in run_durations_store.store.items() if k.startswith(run_durations.KEY_PREFIX)]
    assert learnt == [pytest.approx(1.0, abs=0.3)]

    context = {"ti": FakeTI(dune_emulator, run_id="manual__2024-06-02"), "params": {}}
    _, second = _deferred_trigger(context, poll_interval=0.2)
    assert second.expected_durations == learnt  # the next run of the same request is forecast from it
    asyncio.run(_detected_at(second))

    # Another request (other parameters, or polling not adaptive) gets no forecast from this one.
    context = {"ti": FakeTI(dune_emulator, run_id="manual__2024-06-03"), "params": {}}
    _, other = _deferred_trigger(context, poll_interval=0.2, performance="large")
    assert other.expected_durations == []
    asyncio.run(_detected_at(other))
    context = {"ti": FakeTI(dune_emulator, run_id="manual__2024-06-04"), "params": {}}
    _, fixed = _deferred_trigger(context, poll_interval=0.2, adaptive_polling=False)
    assert fixed.expected_durations == [] and fixed.adaptive is False


def test_a_failed_run_teaches_nothing(
    dune_emulator: DuneEmulator, dune_conn_id: str, variables: FakeVariables, run_durations_store: FakeVariables
) -> None:
    dune_emulator.add_query(9803, duration=0.3, error="line 1:1: boom")
    context = {"ti": FakeTI(dune_emulator), "params": {}}
    op, trigger = _deferred_trigger(context, poll_interval=0.1)
    event = asyncio.run(_detected_at(trigger))[0]
    assert event["status"] == "failed"
    with pytest.raises(Exception, match="boom"):
        op.execute_complete(context, event)
    assert run_durations_store.store == {}


@pytest.mark.slow
def test_waiting_in_the_worker_learns_and_uses_durations_too(
    dune_emulator: DuneEmulator, dune_conn_id: str, variables: FakeVariables, run_durations_store: FakeVariables
) -> None:
    dune_emulator.add_query(9804, duration=1.0)
    for day in (1, 2):
        op = DuneExecutePipelineOperator(task_id="refresh", query_id=9804, poll_interval=0.2, deferrable=False)
        context = {"ti": FakeTI(dune_emulator, run_id=f"manual__2024-06-0{day}"), "params": {}}
        assert op.execute(context)["outcome"] == "success"
    (learnt,) = [json.loads(v) for k, v in run_durations_store.store.items() if k.startswith(run_durations.KEY_PREFIX)]
    assert learnt == [pytest.approx(1.0, abs=0.3)] * 2
