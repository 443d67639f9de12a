"""DunePipelineSensor against the Dune API emulator over real HTTP (poke mode and deferred)."""

from __future__ import annotations

import json
import time
from typing import Any

import pytest
from airflow.exceptions import AirflowException, TaskDeferred

from airflow_provider_dune.hooks.dune import DuneHook
from airflow_provider_dune.sensors.pipeline import DunePipelineSensor
from airflow_provider_dune.testing.emulator import DuneEmulator, Fault
from airflow_provider_dune.triggers.pipeline import DunePipelineTrigger
from airflow_provider_dune.version_compat import AirflowFailException, AirflowSensorTimeout, AirflowSkipException
from tests.conftest import TEST_API_KEY
from tests.helpers import wait_finished

QUICK = 2001
SLOW = 2002
FAILING = 1099  # seed: "line 3:8: Column 'amount_usdd' cannot be resolved"


@pytest.fixture
def emulator(dune_emulator: DuneEmulator, dune_conn_id: str) -> DuneEmulator:
    dune_emulator.add_query(QUICK, duration=0.4)
    dune_emulator.add_query(SLOW, duration=30)
    return dune_emulator


CONTEXT: Any = {}


def start(query_id: int) -> str:
    with DuneHook() as hook:
        return hook.execute_query_pipeline(query_id)


def finished(pipeline_execution_id: str) -> str:
    return wait_finished(pipeline_execution_id, pipeline=True)


def sensor(pipeline_execution_id: str, **kwargs: Any) -> DunePipelineSensor:
    kwargs.setdefault("task_id", "wait_for_pipeline")
    kwargs.setdefault("poke_interval", 0.05)
    kwargs.setdefault("timeout", 10)
    kwargs.setdefault("mode", "poke")
    kwargs.setdefault("deferrable", False)
    return DunePipelineSensor(pipeline_execution_id=pipeline_execution_id, **kwargs)


# -- poke ---------------------------------------------------------------------------------------------------------


def test_poke_running_then_success(emulator: DuneEmulator) -> None:
    pipeline_execution_id = start(QUICK)
    task = sensor(pipeline_execution_id)
    assert task.poke(CONTEXT) is False
    finished(pipeline_execution_id)
    assert task.poke(CONTEXT) is True


def test_poke_failure_raises_fail_exception_with_node_error(emulator: DuneEmulator) -> None:
    pipeline_execution_id = finished(start(FAILING))
    with pytest.raises(AirflowFailException) as info:
        sensor(pipeline_execution_id).poke(CONTEXT)
    assert "query 1099" in str(info.value)
    assert "line 3:8: Column 'amount_usdd' cannot be resolved" in str(info.value)


def test_poke_cancelled_run_fails(emulator: DuneEmulator) -> None:
    pipeline_execution_id = start(SLOW)
    with DuneHook() as hook:
        deadline = time.monotonic() + 5
        while not (running := hook.get_pipeline_status(pipeline_execution_id).running_nodes):
            assert time.monotonic() < deadline
            time.sleep(0.02)
        hook.cancel_execution(running[0].execution_id or "")
    with pytest.raises(AirflowFailException, match=f"Dune pipeline {pipeline_execution_id} was cancelled"):
        sensor(pipeline_execution_id).poke(CONTEXT)


def test_execute_waits_until_success(emulator: DuneEmulator) -> None:
    pipeline_execution_id = start(QUICK)
    assert sensor(pipeline_execution_id).execute(CONTEXT) is None
    assert emulator.counts["get_pipeline_status"] >= 2


def test_execute_failure_fails_without_soft_fail(emulator: DuneEmulator) -> None:
    pipeline_execution_id = start(FAILING)
    with pytest.raises(AirflowFailException, match="amount_usdd"):
        sensor(pipeline_execution_id).execute(CONTEXT)


def test_soft_fail_skips_on_failure(emulator: DuneEmulator) -> None:
    pipeline_execution_id = start(FAILING)
    with pytest.raises(AirflowSkipException) as info:
        sensor(pipeline_execution_id, soft_fail=True).execute(CONTEXT)
    assert "amount_usdd" in str(info.value.__cause__)


def test_sensor_timeout(emulator: DuneEmulator) -> None:
    pipeline_execution_id = start(SLOW)
    began = time.monotonic()
    with pytest.raises(AirflowSensorTimeout):
        sensor(pipeline_execution_id, timeout=0.3).execute(CONTEXT)
    assert time.monotonic() - began < 5
    assert emulator.counts.get("cancel_execution", 0) == 0  # the sensor never cancels


def test_sensor_timeout_with_soft_fail_skips(emulator: DuneEmulator) -> None:
    pipeline_execution_id = start(SLOW)
    with pytest.raises(AirflowSkipException):
        sensor(pipeline_execution_id, timeout=0.2, soft_fail=True).execute(CONTEXT)


def test_poke_survives_transient_errors(emulator: DuneEmulator) -> None:
    pipeline_execution_id = start(QUICK)
    emulator.inject("get_pipeline_status", Fault.status(429, times=2), Fault.status(500))
    assert sensor(pipeline_execution_id).execute(CONTEXT) is None


def test_unknown_pipeline_id_fails(emulator: DuneEmulator) -> None:
    with pytest.raises(AirflowException, match="404"):
        sensor("01NOSUCHPIPELINE").poke(CONTEXT)


# -- deferrable ---------------------------------------------------------------------------------------------------


def test_deferrable_defers_with_trigger(emulator: DuneEmulator) -> None:
    pipeline_execution_id = start(SLOW)
    task = sensor(pipeline_execution_id, deferrable=True, timeout=60, poke_interval=5)
    before = time.time()
    with pytest.raises(TaskDeferred) as info:
        task.execute(CONTEXT)
    deferred = info.value
    assert deferred.method_name == "execute_complete"
    trigger = deferred.trigger
    assert isinstance(trigger, DunePipelineTrigger)
    _, kwargs = trigger.serialize()
    assert kwargs["pipeline_execution_id"] == pipeline_execution_id
    assert kwargs["poll_interval"] == 5
    assert kwargs["cancel_on_kill"] is False  # the sensor only watches someone else's run
    assert before + 59 < kwargs["end_time"] < time.time() + 61
    assert before + 5 <= kwargs["first_poll_at"] <= time.time() + 5  # poke() just read the status
    assert TEST_API_KEY not in json.dumps(kwargs)


def test_deferrable_already_finished_does_not_defer(emulator: DuneEmulator) -> None:
    pipeline_execution_id = finished(start(QUICK))
    assert sensor(pipeline_execution_id, deferrable=True).execute(CONTEXT) is None


def test_deferrable_already_failed_with_soft_fail_skips(emulator: DuneEmulator) -> None:
    pipeline_execution_id = finished(start(FAILING))
    with pytest.raises(AirflowSkipException):
        sensor(pipeline_execution_id, deferrable=True, soft_fail=True).execute(CONTEXT)


async def test_deferrable_round_trip_success(emulator: DuneEmulator) -> None:
    pipeline_execution_id = start(QUICK)
    task = sensor(pipeline_execution_id, deferrable=True)
    with pytest.raises(TaskDeferred) as info:
        task.execute(CONTEXT)
    events = [event.payload async for event in info.value.trigger.run()]
    assert [e["status"] for e in events] == ["success"]
    task.execute_complete(CONTEXT, events[0])  # raises unless the event is a success for this run


def event(status: str, message: str = "msg", pipeline_execution_id: str = "P1") -> dict[str, Any]:
    return {"status": status, "message": message, "pipeline_execution_id": pipeline_execution_id, "details": None}


@pytest.mark.parametrize(
    ("payload", "exception", "fragment"),
    [
        (event("failed", "node 1 (query 1099): failed: boom"), AirflowFailException, "boom"),
        (event("cancelled", "ended cancelled"), AirflowFailException, "ended cancelled"),
        (event("timeout", "did not finish"), AirflowSensorTimeout, "sensor timeout 10 s"),
        # No connection here: the status read again after an error event says why, in full.
        (event("error", "HTTP 401"), AirflowException, "Could not get the status of Dune pipeline P1: "),
        ({"message": "no status"}, AirflowException, "unknown status None"),
        (event("exploded"), AirflowException, "unknown status 'exploded'"),
        (event("success", pipeline_execution_id="P2"), AirflowException, "'P2' while waiting for 'P1'"),
        (None, AirflowException, "invalid trigger event"),
    ],
    ids=["failed", "cancelled", "timeout", "error", "missing-status", "unknown-status", "wrong-id", "none"],
)
def test_execute_complete_events(payload: Any, exception: type[BaseException], fragment: str) -> None:
    with pytest.raises(exception) as info:
        sensor("P1").execute_complete(CONTEXT, payload)
    assert fragment in str(info.value)


def test_execute_complete_success() -> None:
    sensor("P1").execute_complete(CONTEXT, event("success"))  # no exception: success


def test_resume_with_failed_event_and_soft_fail_skips() -> None:
    task = sensor("P1", deferrable=True, soft_fail=True)
    with pytest.raises(AirflowSkipException):
        task.resume_execution("execute_complete", {"event": event("failed")}, CONTEXT)
