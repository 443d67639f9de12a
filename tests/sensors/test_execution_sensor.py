"""DuneExecutionSensor against the Dune API emulator over real HTTP (poke, reschedule-free execute, deferred)."""

from __future__ import annotations

import json
import time
from typing import Any

import pytest
from airflow.exceptions import AirflowException, TaskDeferred

from airflow_provider_dune.hooks.dune import DuneHook
from airflow_provider_dune.sensors.execution import DuneExecutionSensor
from airflow_provider_dune.testing.emulator import DuneEmulator, Fault
from airflow_provider_dune.triggers.execution import DuneExecutionTrigger
from airflow_provider_dune.version_compat import AirflowFailException, AirflowSkipException
from tests.conftest import TEST_API_KEY
from tests.helpers import wait_finished

QUICK = 3001
SLOW = 3002
FAILING = 3003
PARTIAL = 3004
CONTEXT: Any = {}


@pytest.fixture
def emulator(dune_emulator: DuneEmulator, dune_conn_id: str) -> DuneEmulator:
    dune_emulator.add_query(QUICK, duration=0.4)
    dune_emulator.add_query(SLOW, duration=30)
    dune_emulator.add_query(FAILING, duration=0.05, error="line 1:8: Table 'dex.tradez' does not exist")
    dune_emulator.add_query(PARTIAL, duration=0.3, partial=True)
    return dune_emulator


def start(query_id: int) -> str:
    with DuneHook() as hook:
        return hook.execute_query(query_id).execution_id


def finished(execution_id: str) -> str:
    return wait_finished(execution_id, pipeline=False)


def sensor(execution_id: str, **kwargs: Any) -> DuneExecutionSensor:
    kwargs.setdefault("task_id", "wait_for_query")
    kwargs.setdefault("poke_interval", 0.05)
    kwargs.setdefault("timeout", 10)
    kwargs.setdefault("mode", "poke")
    kwargs.setdefault("deferrable", False)
    return DuneExecutionSensor(execution_id=execution_id, **kwargs)


def test_poke_running_then_success(emulator: DuneEmulator) -> None:
    execution_id = start(QUICK)
    task = sensor(execution_id)
    assert task.poke(CONTEXT) is False
    finished(execution_id)
    assert task.poke(CONTEXT) is True
    assert emulator.counts["get_execution_status"] >= 2


def test_failed_query_fails_with_dunes_error_and_is_never_cancelled(emulator: DuneEmulator) -> None:
    execution_id = finished(start(FAILING))
    with pytest.raises(AirflowFailException) as info:
        sensor(execution_id).execute(CONTEXT)
    assert "Table 'dex.tradez' does not exist" in str(info.value)
    assert "cancel_execution" not in emulator.counts


def test_execute_waits_through_transient_errors(emulator: DuneEmulator) -> None:
    execution_id = start(QUICK)
    emulator.inject("get_execution_status", Fault.status(429), Fault.status(502))
    assert sensor(execution_id).execute(CONTEXT) is None


def test_soft_fail_skips(emulator: DuneEmulator) -> None:
    execution_id = finished(start(FAILING))
    with pytest.raises(AirflowSkipException):
        sensor(execution_id, soft_fail=True).execute(CONTEXT)


def test_unknown_execution_fails(emulator: DuneEmulator) -> None:
    with pytest.raises(AirflowException, match="404"):
        sensor("01HKZJ2683PHF9Q9PHHQ8FW4Q1").poke(CONTEXT)


def test_invalid_execution_id_fails_saying_it_is_invalid(emulator: DuneEmulator) -> None:
    """REAL_SHAPES.md, Errors: a bad execution id gets 400 "The requested execution ID (ID: ...) is invalid."."""
    with pytest.raises(AirflowException, match=r"HTTP 400.*ID: 01NOSUCHEXECUTION\) is invalid.*This id is invalid"):
        sensor("01NOSUCHEXECUTION").poke(CONTEXT)


async def test_deferred_round_trip_uses_the_execution_trigger(emulator: DuneEmulator) -> None:
    execution_id = start(QUICK)
    task = sensor(execution_id, deferrable=True, timeout=60, poke_interval=0.05)
    before = time.time()
    with pytest.raises(TaskDeferred) as info:
        task.execute(CONTEXT)
    trigger = info.value.trigger
    assert isinstance(trigger, DuneExecutionTrigger)
    _, kwargs = trigger.serialize()
    assert kwargs["execution_id"] == execution_id
    assert kwargs["cancel_on_kill"] is False
    assert before + 59 < kwargs["end_time"] < time.time() + 61
    assert kwargs["first_poll_at"] >= before + 0.05
    assert TEST_API_KEY not in json.dumps(kwargs)
    events = [event.payload async for event in DuneExecutionTrigger(**kwargs).run()]
    assert [e["status"] for e in events] == ["success"]
    task.execute_complete(CONTEXT, events[0])


@pytest.mark.parametrize("deferrable", [False, True])
async def test_partial_result_fails_unless_allowed(emulator: DuneEmulator, deferrable: bool) -> None:
    async def wait(task: DuneExecutionSensor) -> None:
        try:
            task.execute(CONTEXT)
        except TaskDeferred as deferred:
            (event,) = [e.payload async for e in deferred.trigger.run()]
            task.execute_complete(CONTEXT, event)

    with pytest.raises(AirflowFailException, match="completed only partially"):
        await wait(sensor(start(PARTIAL), deferrable=deferrable))
    await wait(sensor(start(PARTIAL), deferrable=deferrable, allow_partial_results=True))  # accepted


async def test_allow_partial_results_does_not_accept_real_failures(emulator: DuneEmulator) -> None:
    with pytest.raises(AirflowFailException, match="does not exist"):
        sensor(finished(start(FAILING)), allow_partial_results=True).execute(CONTEXT)


def test_pairs_with_a_query_operator_that_does_not_wait(
    emulator: DuneEmulator, monkeypatch: pytest.MonkeyPatch
) -> None:
    from airflow_provider_dune.operators.query import DuneExecuteQueryOperator
    from airflow_provider_dune.utils import task_records
    from tests.operators.fakes import FakeTI, FakeVariables

    monkeypatch.setattr(task_records, "Variable", FakeVariables())
    ti = FakeTI(emulator)
    start_task = DuneExecuteQueryOperator(task_id="run_query", query_id=QUICK, wait_for_completion=False)
    started = start_task.execute({"ti": ti})
    assert started["state"] in ("pending", "executing")
    assert sensor(ti.xcom["execution_id"]).execute(CONTEXT) is None
    assert finished(ti.xcom["execution_id"]) == started["execution_id"]
    assert emulator.executions_started(QUICK) == 1
