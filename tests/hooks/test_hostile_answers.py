"""Answers no well-behaved Dune sends, from the emulator's hostile faults: nothing hangs, bloats or leaks.

Each case runs through the sync (worker) and async (triggerer) transports. Connection timeouts are short so a
request's deadline (connect timeout + read timeout) is about a second.
"""

from __future__ import annotations

import asyncio
import re
import time
from collections.abc import Callable
from typing import Any

import pytest

from airflow_provider_dune.api.errors import (
    DuneAuthError,
    DuneConnectionError,
    DuneRedirectError,
    DuneResponseError,
)
from airflow_provider_dune.hooks.dune import DuneHook
from airflow_provider_dune.testing.emulator import DuneEmulator, Fault
from airflow_provider_dune.triggers.execution import DuneExecutionTrigger
from tests.conftest import TEST_API_KEY, dune_connection_json

QUERY = 4101
DEADLINE = 1.0  # connect 0.5 + read 0.5


@pytest.fixture
def emulator(dune_emulator: DuneEmulator, monkeypatch: pytest.MonkeyPatch) -> DuneEmulator:
    dune_emulator.add_query(QUERY, duration=30)
    monkeypatch.setenv(
        "AIRFLOW_CONN_DUNE_DEFAULT",
        dune_connection_json(dune_emulator.url, timeout=0.5, connect_timeout=0.5, max_retries=2),
    )
    return dune_emulator


@pytest.fixture(params=["sync", "async"])
def call(request: pytest.FixtureRequest, emulator: DuneEmulator) -> Callable[..., Any]:
    def invoke(name: str, *args: Any) -> Any:
        hook = DuneHook()
        if request.param == "sync":
            with hook:
                return getattr(hook, name)(*args)

        async def run() -> Any:
            async with hook:
                return await getattr(hook, f"a{name}")(*args)

        return asyncio.run(run())

    return invoke


def _execution(emulator: DuneEmulator) -> str:
    with DuneHook() as hook:
        return hook.execute_query(QUERY).execution_id


@pytest.mark.slow
def test_a_dripping_server_is_cut_off_at_the_request_deadline(call: Callable[..., Any], emulator: DuneEmulator) -> None:
    execution_id = _execution(emulator)
    emulator.inject("get_execution_status", Fault.drip(0.05, times=2))  # each read gets a byte in time
    started = time.monotonic()
    with pytest.raises(DuneConnectionError, match=f"no complete answer within {DEADLINE:g} s"):
        call("get_execution_status", execution_id)
    elapsed = time.monotonic() - started
    assert elapsed < 2 * DEADLINE + 1.5, f"two tries should take about {2 * DEADLINE:g} s, took {elapsed:.1f} s"
    assert emulator.counts["get_execution_status"] == 2


@pytest.mark.slow
def test_a_dripping_answer_to_a_start_is_an_unconfirmed_start(call: Callable[..., Any], emulator: DuneEmulator) -> None:
    emulator.inject("execute_query", Fault.drip(0.05))
    with pytest.raises(DuneConnectionError) as info:
        call("execute_query", QUERY)
    assert info.value.may_have_started_run
    assert emulator.executions_started(QUERY) == 1
    assert emulator.counts["execute_query"] == 1


def test_an_oversized_answer_is_refused_without_reading_it(call: Callable[..., Any], emulator: DuneEmulator) -> None:
    execution_id = _execution(emulator)
    emulator.inject("get_execution_status", Fault.oversized(600 * 1024 * 1024, times=2))
    started = time.monotonic()
    with pytest.raises(DuneResponseError, match="larger than 16 MiB"):
        call("get_execution_status", execution_id)
    assert time.monotonic() - started < 5  # 600 MB were never read


def test_an_echoed_api_key_never_reaches_the_error(call: Callable[..., Any], emulator: DuneEmulator) -> None:
    emulator.inject("get_execution_status", Fault.echo_key(401))
    with pytest.raises(DuneAuthError) as info:
        call("get_execution_status", "01ANY")
    assert TEST_API_KEY not in str(info.value) and TEST_API_KEY not in repr(info.value.args)
    assert "***" in str(info.value)


def test_a_truncated_answer_to_a_read_is_retried(call: Callable[..., Any], emulator: DuneEmulator) -> None:
    execution_id = _execution(emulator)
    emulator.inject("get_execution_status", Fault.truncated())
    assert call("get_execution_status", execution_id).execution_id == execution_id
    assert emulator.counts["get_execution_status"] == 2


def test_a_truncated_answer_to_a_start_is_an_unconfirmed_start(
    call: Callable[..., Any], emulator: DuneEmulator
) -> None:
    emulator.inject("execute_query", Fault.truncated())
    with pytest.raises(DuneConnectionError, match="connection broke") as info:
        call("execute_query", QUERY)
    assert info.value.may_have_started_run
    assert emulator.counts["execute_query"] == 1


def test_a_redirect_is_not_followed(call: Callable[..., Any], emulator: DuneEmulator) -> None:
    emulator.inject("get_execution_status", Fault.redirect("https://elsewhere.example/api/v1/x"))
    with pytest.raises(DuneRedirectError, match=re.escape("redirect to https://elsewhere.example/api/v1/x")):
        call("get_execution_status", "01ANY")
    assert emulator.counts["get_execution_status"] == 1


@pytest.mark.slow
async def test_a_trigger_gives_up_at_its_deadline_while_a_call_hangs(
    dune_emulator: DuneEmulator, monkeypatch: pytest.MonkeyPatch
) -> None:
    dune_emulator.add_query(QUERY, duration=30)
    monkeypatch.setenv("AIRFLOW_CONN_DUNE_DEFAULT", dune_connection_json(dune_emulator.url, timeout=60))
    execution_id = _execution(dune_emulator)
    dune_emulator.inject("get_execution_status", Fault.drip(0.5, times=5))  # minutes for one answer
    trigger = DuneExecutionTrigger(
        execution_id=execution_id, dune_conn_id="dune_default", poll_interval=1, end_time=time.time() + 1
    )
    started = time.monotonic()
    events = [event.payload async for event in trigger.run()]
    elapsed = time.monotonic() - started
    assert [e["status"] for e in events] == ["timeout"]
    assert elapsed < 10, f"the trigger held its task {elapsed:.0f} s past a 1 s deadline"
