"""DuneExecutionTrigger against the emulator: the shared polling core applied to a single execution."""

from __future__ import annotations

import importlib
import json
import time

import pytest

from airflow_provider_dune.api.models import PipelineOutcome, parse_execution_status
from airflow_provider_dune.hooks.dune import DuneHook
from airflow_provider_dune.testing.emulator import DuneEmulator, Fault
from airflow_provider_dune.triggers.execution import DuneExecutionTrigger


async def collect(trigger: DuneExecutionTrigger) -> list[dict]:
    return [event.payload async for event in trigger.run()]


def start(dune_conn_id: str, query_id: int) -> str:
    with DuneHook(dune_conn_id) as hook:
        return hook.execute_query(query_id).execution_id


async def test_success_event_is_small(dune_emulator: DuneEmulator, dune_conn_id: str) -> None:
    dune_emulator.add_query(7001, duration=0.2)
    execution_id = start(dune_conn_id, 7001)
    dune_emulator.inject("get_execution_status", Fault.status(429), Fault.status(500), Fault.drop())
    events = await collect(
        DuneExecutionTrigger(execution_id=execution_id, dune_conn_id=dune_conn_id, poll_interval=0.05)
    )
    assert len(events) == 1
    assert events[0]["status"] == "success"
    assert events[0]["execution_id"] == execution_id
    assert set(events[0]) == {"status", "message", "execution_id", "timing"}
    assert dune_emulator.counts["get_execution_status"] >= 4


async def test_failed_execution_reports_dunes_error(dune_emulator: DuneEmulator, dune_conn_id: str) -> None:
    dune_emulator.add_query(7002, duration=0.05, error="line 3:7: Column 'amount_usd' cannot be resolved")
    execution_id = start(dune_conn_id, 7002)
    events = await collect(
        DuneExecutionTrigger(execution_id=execution_id, dune_conn_id=dune_conn_id, poll_interval=0.05)
    )
    assert [e["status"] for e in events] == ["failed"]
    assert "amount_usd" not in events[0]["message"]  # stated once, by the task, from the status it reads
    assert "query 7002" in events[0]["message"]


async def test_timeout_after_a_final_check(dune_emulator: DuneEmulator, dune_conn_id: str) -> None:
    dune_emulator.add_query(7003, duration=30)
    execution_id = start(dune_conn_id, 7003)
    trigger = DuneExecutionTrigger(
        execution_id=execution_id, dune_conn_id=dune_conn_id, poll_interval=10, end_time=time.time() + 0.3
    )
    started = time.monotonic()
    events = await collect(trigger)
    assert [e["status"] for e in events] == ["timeout"]
    assert time.monotonic() - started < 5  # the deadline cuts the 10 s poll interval short
    assert dune_emulator.counts["get_execution_status"] == 2  # first check + the final check at the deadline
    assert dune_emulator.counts.get("cancel_execution", 0) == 0  # the trigger itself only reads


@pytest.mark.parametrize(
    ("execution_id", "expected"),
    [
        ("01HKZJ2683PHF9Q9PHHQ8FW4Q1", "HTTP 404"),  # well formed, unknown
        ("01NOPE", "HTTP 400"),  # REAL_SHAPES.md, Errors: Dune's 400 for an invalid execution id
    ],
)
async def test_unknown_execution_is_an_error_event(
    dune_emulator: DuneEmulator, dune_conn_id: str, execution_id: str, expected: str
) -> None:
    trigger = DuneExecutionTrigger(execution_id=execution_id, dune_conn_id=dune_conn_id, poll_interval=0.05)
    events = await collect(trigger)
    assert [e["status"] for e in events] == ["error"]
    assert expected in events[0]["message"]
    assert execution_id in events[0]["message"]


async def test_on_kill_cancels_and_can_be_disabled(dune_emulator: DuneEmulator, dune_conn_id: str) -> None:
    dune_emulator.add_query(7004, duration=30)
    kept = start(dune_conn_id, 7004)
    await DuneExecutionTrigger(execution_id=kept, dune_conn_id=dune_conn_id, cancel_on_kill=False).on_kill()
    assert dune_emulator.counts.get("cancel_execution", 0) == 0
    killed = start(dune_conn_id, 7004)
    await DuneExecutionTrigger(execution_id=killed, dune_conn_id=dune_conn_id).on_kill()
    with DuneHook(dune_conn_id) as hook:
        assert hook.get_execution_status(killed).outcome is PipelineOutcome.CANCELLED
        assert hook.get_execution_status(kept).outcome is PipelineOutcome.RUNNING


def test_serialisation_round_trip_holds_no_key(dune_conn_id: str) -> None:
    trigger = DuneExecutionTrigger(execution_id="01ABC", dune_conn_id=dune_conn_id, poll_interval=15, end_time=123.0)
    path, kwargs = trigger.serialize()
    module, _, name = path.rpartition(".")
    clone = getattr(importlib.import_module(module), name)(**kwargs)
    assert clone.serialize() == (path, kwargs)
    assert "test-key" not in json.dumps(kwargs)


def test_partial_result_is_not_success() -> None:
    status = parse_execution_status({"execution_id": "E", "query_id": 5, "state": "QUERY_STATE_COMPLETED_PARTIAL"})
    assert status.outcome is PipelineOutcome.FAILED
    assert "allow_partial_results=True" in status.failure_message()
    assert (
        parse_execution_status({"execution_id": "E", "state": "QUERY_STATE_PENDING"}).outcome is PipelineOutcome.RUNNING
    )
    finished_unknown = parse_execution_status({"execution_id": "E", "state": "WEIRD", "is_execution_finished": True})
    assert finished_unknown.outcome is PipelineOutcome.UNKNOWN
