"""DunePipelineTrigger against the Dune API emulator over real HTTP (the async transport, as in the triggerer)."""

from __future__ import annotations

import asyncio
import importlib
import json
import time
from typing import Any

import pytest
from airflow.triggers.base import TriggerEvent

from airflow_provider_dune.api.states import RunState
from airflow_provider_dune.hooks.dune import DuneHook
from airflow_provider_dune.polling import MAX_EVENT_MESSAGE
from airflow_provider_dune.testing.emulator import DuneEmulator, Fault
from airflow_provider_dune.triggers.base import DunePollingTrigger
from airflow_provider_dune.triggers.pipeline import DunePipelineTrigger
from tests.conftest import TEST_API_KEY, dune_connection_json
from tests.helpers import execution_state, wait_running

QUICK = 2001
SLOW = 2002
FAILING = 1099  # seed: fails with "line 3:8: Column 'amount_usdd' cannot be resolved"
LINEAGE = 1001  # seed: query + materialized view dune.demo.result_dex_trades_daily


@pytest.fixture
def emulator(dune_emulator: DuneEmulator, dune_conn_id: str) -> DuneEmulator:
    dune_emulator.add_query(QUICK, duration=0.3)
    dune_emulator.add_query(SLOW, duration=30)
    return dune_emulator


def start(query_id: int, **params: Any) -> str:
    with DuneHook() as hook:
        return hook.execute_query_pipeline(query_id, query_parameters=params or None)


def trigger_for(pipeline_execution_id: str, **kwargs: Any) -> DunePipelineTrigger:
    kwargs.setdefault("poll_interval", 0.05)
    kwargs.setdefault("end_time", time.time() + 20)
    return DunePipelineTrigger(pipeline_execution_id=pipeline_execution_id, **kwargs)


async def events_of(trigger: DunePipelineTrigger) -> list[dict[str, Any]]:
    return [event.payload async for event in trigger.run()]


# -- serialisation ------------------------------------------------------------------------------------------------


def test_serialize_round_trip_without_api_key(dune_conn_id: str) -> None:
    trigger = DunePipelineTrigger(
        pipeline_execution_id="01PIPE",
        dune_conn_id=dune_conn_id,
        poll_interval=12,
        end_time=1_700_000_000.5,
        cancel_on_kill=False,
        first_poll_at=1_699_999_990.0,
        started_at=1_699_999_900.0,
        expected_durations=[61.5, 58.0, float("nan"), -1],
    )
    classpath, kwargs = trigger.serialize()
    module_name, _, class_name = classpath.rpartition(".")
    cls = getattr(importlib.import_module(module_name), class_name)
    assert cls is DunePipelineTrigger
    assert kwargs == {
        "pipeline_execution_id": "01PIPE",
        "dune_conn_id": dune_conn_id,
        "poll_interval": 12.0,
        "end_time": 1_700_000_000.5,
        "cancel_on_kill": False,
        "first_poll_at": 1_699_999_990.0,
        "started_at": 1_699_999_900.0,
        "expected_durations": [61.5, 58.0],
        "adaptive": True,
    }
    encoded = json.dumps(kwargs)
    assert TEST_API_KEY not in encoded and TEST_API_KEY not in repr(kwargs) and TEST_API_KEY not in repr(trigger)
    recreated = cls(**json.loads(encoded))
    assert recreated.serialize() == (classpath, kwargs)


@pytest.mark.parametrize(
    "classpath",
    [
        "airflow_provider_dune.triggers.pipeline.DunePipelineTrigger",
        "airflow_provider_dune.triggers.execution.DuneExecutionTrigger",
    ],
)
def test_classpaths_stored_by_earlier_releases_still_resolve(classpath: str) -> None:
    """Airflow keeps each deferred task's trigger classpath in its database across provider upgrades."""
    module_name, _, class_name = classpath.rpartition(".")
    cls = getattr(importlib.import_module(module_name), class_name)
    assert issubclass(cls, DunePollingTrigger)
    assert cls(**{cls.id_field: "01RUN"}).serialize()[0] == classpath


def test_the_base_trigger_can_still_be_imported_from_the_pipeline_module() -> None:
    from airflow_provider_dune.triggers import pipeline

    assert pipeline.DunePollingTrigger is DunePollingTrigger


def test_serialize_defaults_have_no_deadline() -> None:
    _, kwargs = DunePipelineTrigger(pipeline_execution_id="x").serialize()
    assert kwargs["end_time"] is None
    assert kwargs["cancel_on_kill"] is True
    assert kwargs["dune_conn_id"] == "dune_default"
    assert kwargs["first_poll_at"] is None


async def test_first_poll_waits_until_first_poll_at(emulator: DuneEmulator) -> None:
    # The operator read the status just before deferring: the trigger does not read it again at once.
    pipeline_execution_id = start(LINEAGE, date="2024-06-01")
    before = emulator.counts.get("get_pipeline_status", 0)
    trigger = trigger_for(pipeline_execution_id, poll_interval=0.05, first_poll_at=time.time() + 0.6)
    run = asyncio.ensure_future(events_of(trigger))
    await asyncio.sleep(0.4)
    assert emulator.counts.get("get_pipeline_status", 0) == before
    (event,) = await asyncio.wait_for(run, 30)
    assert event["status"] == "success"
    assert emulator.counts["get_pipeline_status"] > before


async def test_first_poll_at_in_the_past_reads_at_once_and_never_waits_past_the_deadline() -> None:
    now = time.time()
    assert trigger_for("x", first_poll_at=now - 30)._initial_wait(now) == 0.0  # e.g. after a triggerer restart
    assert trigger_for("x", first_poll_at=now + 30, end_time=now + 5)._initial_wait(now) == 5.0
    assert trigger_for("x", first_poll_at=now + 30, end_time=None)._initial_wait(now) == 30.0
    assert trigger_for("x")._initial_wait(now) == 0.0


# -- exactly one event per outcome --------------------------------------------------------------------------------


async def test_success_event_is_small_and_has_no_node_list(emulator: DuneEmulator) -> None:
    pipeline_execution_id = start(LINEAGE, date="2024-06-01")
    events = await events_of(trigger_for(pipeline_execution_id))
    assert len(events) == 1
    event = events[0]
    assert event["status"] == "success"
    assert event["pipeline_execution_id"] == pipeline_execution_id
    assert event["message"] == f"Dune pipeline {pipeline_execution_id} completed: 2/2 nodes done"
    assert set(event) == {"status", "message", "pipeline_execution_id", "timing"}  # the operator reads the rest
    json.dumps(event)


@pytest.mark.parametrize("failing", [False, True], ids=["success", "failed"])
async def test_airflow_s_trigger_fired_line_of_a_ten_node_pipeline_is_short(
    emulator: DuneEmulator, failing: bool
) -> None:
    """Airflow's triggerer logs every event (``Trigger fired event ... result=TriggerEvent<{...}>``) and keeps it in
    its database: with ten nodes, and Dune's SQL error in the message, the line stays under 500 characters."""
    nodes: list[dict[str, Any]] = [
        {"id": i, "query_execution": {"query_id": QUICK, "performance": "medium"}} for i in range(1, 10)
    ]
    nodes.append({"id": 10, "query_execution": {"query_id": FAILING if failing else QUICK, "performance": "medium"}})
    with DuneHook() as hook:
        pipeline_execution_id = hook.execute_pipeline(nodes)
    (payload,) = await events_of(trigger_for(pipeline_execution_id))
    assert payload["status"] == ("failed" if failing else "success")
    if failing:
        assert "node 10 (query 1099)" in payload["message"] and "amount_usdd" not in payload["message"]
    line = f"Trigger fired event ... result={TriggerEvent(payload)}"  # as the triggerer logs it
    assert len(line) < 500, line
    assert "nodes" not in payload and "details" not in payload


async def test_failed_event_names_node_and_error(emulator: DuneEmulator) -> None:
    pipeline_execution_id = start(FAILING)
    events = await events_of(trigger_for(pipeline_execution_id))
    assert [e["status"] for e in events] == ["failed"]
    assert "query 1099" in events[0]["message"]
    assert "amount_usdd" not in events[0]["message"]  # stated once, by the task


async def test_cancelled_event(emulator: DuneEmulator) -> None:
    pipeline_execution_id = start(SLOW)
    (execution_id,) = wait_running(pipeline_execution_id)
    with DuneHook() as hook:
        assert hook.cancel_execution(execution_id)
    events = await events_of(trigger_for(pipeline_execution_id))
    assert [e["status"] for e in events] == ["cancelled"]


async def test_timeout_event_keeps_last_status_and_does_not_cancel(emulator: DuneEmulator) -> None:
    pipeline_execution_id = start(SLOW)
    began = time.monotonic()
    events = await events_of(trigger_for(pipeline_execution_id, end_time=time.time() + 0.3))
    assert time.monotonic() - began < 5
    assert [e["status"] for e in events] == ["timeout"]
    assert "did not finish before the timeout (0/1 nodes done)" in events[0]["message"]
    # Cancelling is the operator's job (execute_complete); the trigger only reads.
    assert emulator.counts.get("cancel_execution", 0) == 0


async def test_wrong_api_key_gives_error_event(emulator: DuneEmulator, monkeypatch: pytest.MonkeyPatch) -> None:
    pipeline_execution_id = start(QUICK)
    monkeypatch.setenv("AIRFLOW_CONN_DUNE_DEFAULT", dune_connection_json(emulator.url, api_key="wrong-key"))
    events = await events_of(trigger_for(pipeline_execution_id))
    assert [e["status"] for e in events] == ["error"]
    assert "HTTP 401" in events[0]["message"]
    # Shortened to one line: the operator (or sensor) reads the status again and fails with Dune's whole answer.
    assert len(events[0]["message"]) <= MAX_EVENT_MESSAGE


async def test_unknown_pipeline_gives_error_event(emulator: DuneEmulator) -> None:
    events = await events_of(trigger_for("01NOSUCHPIPELINE"))
    assert [e["status"] for e in events] == ["error"]
    assert "01NOSUCHPIPELINE" in events[0]["message"]
    assert "404" in events[0]["message"]


# -- resilience ---------------------------------------------------------------------------------------------------


@pytest.mark.parametrize(
    "faults",
    [
        (Fault.status(429, times=3),),
        (Fault.status(500, times=2), Fault.status(502), Fault.status(503)),
        (Fault.drop(times=2), Fault.malformed()),
    ],
    ids=["429-storm", "5xx", "drop-malformed"],
)
async def test_survives_faults_mid_poll(emulator: DuneEmulator, faults: tuple[Fault, ...]) -> None:
    pipeline_execution_id = start(QUICK)
    emulator.inject("get_pipeline_status", *faults)
    events = await events_of(trigger_for(pipeline_execution_id))
    assert [e["status"] for e in events] == ["success"]
    injected = sum(f.times for f in faults)
    assert emulator.counts["get_pipeline_status"] > injected  # every fault was consumed, then polling went on


@pytest.mark.slow
async def test_survives_errors_beyond_hook_retries(emulator: DuneEmulator, monkeypatch: pytest.MonkeyPatch) -> None:
    """A status call that still fails after the hook's retries is not fatal: the trigger backs off and polls."""
    monkeypatch.setenv("AIRFLOW_CONN_DUNE_DEFAULT", dune_connection_json(emulator.url, max_retries=1))
    pipeline_execution_id = start(QUICK)
    emulator.inject("get_pipeline_status", Fault.status(429))
    events = await events_of(trigger_for(pipeline_execution_id))
    assert [e["status"] for e in events] == ["success"]
    assert emulator.counts["get_pipeline_status"] >= 2


# -- logging ------------------------------------------------------------------------------------------------------


def logged_progress(text: str, pipeline_execution_id: str) -> list[str]:
    marker = f"Dune pipeline {pipeline_execution_id}: "
    return [line.split(marker, 1)[1].split(" [", 1)[0].strip() for line in text.splitlines() if marker in line]


async def test_progress_logged_only_when_it_changes(emulator: DuneEmulator, capsys: pytest.CaptureFixture[str]) -> None:
    pipeline_execution_id = start(LINEAGE, date="2024-06-01")
    capsys.readouterr()
    await events_of(trigger_for(pipeline_execution_id, poll_interval=0.02))
    # Airflow 3 task/trigger logging goes through structlog to stdout.
    progress = logged_progress(capsys.readouterr().out, pipeline_execution_id)
    polls = emulator.counts["get_pipeline_status"]
    assert progress, "no progress was logged"
    assert progress[0].startswith("0/2 nodes done")  # the first read: where the run is
    assert "node 2 (query 1001) started" in progress  # then what changed
    assert progress[-1].startswith("node 2 (query 1001) completed") and progress[-1].endswith("(2/2 nodes done)")
    assert len(progress) < polls  # polled more often than the progress changed
    assert len(progress) == len(set(progress))  # each progress line once


async def test_a_failed_node_is_a_warning(emulator: DuneEmulator, capsys: pytest.CaptureFixture[str]) -> None:
    pipeline_execution_id = start(FAILING)
    capsys.readouterr()
    await events_of(trigger_for(pipeline_execution_id, poll_interval=0.02))
    lines = [line for line in capsys.readouterr().out.splitlines() if "(query 1099) failed" in line]
    assert len(lines) == 1 and "warning" in lines[0].lower(), lines
    assert "amount_usdd" not in lines[0]  # Dune's error is stated once, by the task when it fails


# -- on_kill ------------------------------------------------------------------------------------------------------


async def test_on_kill_cancels_running_nodes(emulator: DuneEmulator) -> None:
    pipeline_execution_id = start(SLOW)
    (execution_id,) = wait_running(pipeline_execution_id)
    await trigger_for(pipeline_execution_id).on_kill()
    assert emulator.counts["cancel_execution"] == 1
    assert execution_state(execution_id) is RunState.CANCELLED


async def test_on_kill_without_cancel_on_kill_leaves_run_alone(emulator: DuneEmulator) -> None:
    pipeline_execution_id = start(SLOW)
    (execution_id,) = wait_running(pipeline_execution_id)
    await trigger_for(pipeline_execution_id, cancel_on_kill=False).on_kill()
    assert emulator.counts.get("cancel_execution", 0) == 0
    assert execution_state(execution_id) in (RunState.PENDING, RunState.EXECUTING)


# -- the key's budget shared between triggerers -------------------------------------------------------------------


async def test_a_waiting_trigger_holds_its_process_lease_and_paces_to_its_share(
    emulator: DuneEmulator, budget_lease_store: Any, monkeypatch: pytest.MonkeyPatch
) -> None:
    from airflow_provider_dune.api.endpoints import get_pipeline_status
    from airflow_provider_dune.utils.budget_leases import LEASES, lease_variable

    monkeypatch.setenv("AIRFLOW_CONN_DUNE_DEFAULT", dune_connection_json(emulator.url, reads_per_minute=600))
    variable = lease_variable(emulator.url, TEST_API_KEY)
    budget_lease_store.store[variable] = json.dumps({"other-triggerer:1": time.time() + 45})
    pipeline = start(QUICK)
    shares: list[float] = []
    trigger = trigger_for(pipeline)
    fetch = trigger.fetch

    async def fetch_noting_the_pace(hook: DuneHook) -> Any:
        settings = await hook.aget_settings()
        shares.append(DuneHook._per_minute(get_pipeline_status(pipeline), settings))
        return await fetch(hook)

    monkeypatch.setattr(trigger, "fetch", fetch_noting_the_pace)
    (event,) = await events_of(trigger)
    assert event["status"] == "success"
    assert shares and set(shares) == {300}  # half of 600: two processes hold a lease
    assert set(json.loads(budget_lease_store.store[variable])) == {"other-triggerer:1", LEASES.holder}
    assert TEST_API_KEY not in variable and TEST_API_KEY not in budget_lease_store.store[variable]
