"""Pacing requests to an API key's budget: the slot arithmetic, and triggers sharing one key over HTTP."""

from __future__ import annotations

import asyncio
import itertools
import json
import threading
import time
from collections.abc import Iterator

import pytest

from airflow_provider_dune.api.budget import BURST, READ_URGENCY, URGENCY_HEAD_START, KeyPacer, KeyPacers
from airflow_provider_dune.api.retry import RetryPolicy
from airflow_provider_dune.hooks.dune import DuneHook
from airflow_provider_dune.testing.emulator import DuneEmulator
from airflow_provider_dune.triggers.pipeline import DunePipelineTrigger
from tests.conftest import dune_connection_json


class Clock:
    def __init__(self) -> None:
        self.now = 100.0

    def __call__(self) -> float:
        return self.now


def _waits(pacer: KeyPacer, per_minute: float, count: int) -> tuple[list[float], list[Iterator[float]]]:
    """Ask for ``count`` slots now: the first wait of each, and the waits still going on."""
    asks = [pacer.turns(per_minute) for _ in range(count)]
    return [next(ask, 0.0) for ask in asks], asks


def test_requests_are_spaced_at_the_budget_after_a_small_burst() -> None:
    clock = Clock()
    pacer = KeyPacer(clock=clock)
    waits, asks = _waits(pacer, 60, 6)  # one a second
    assert waits[: BURST + 1] == [0.0] * (BURST + 1)
    assert waits[BURST + 1 :] == pytest.approx([1.0, 2.0, 3.0])
    assert pacer.queued() == 3
    clock.now += 1
    assert list(asks[BURST + 1]) == []  # its slot came: it goes
    assert next(asks[-1]) == pytest.approx(2.0)  # the others are still in line
    del asks
    assert pacer.queued() == 0  # given up
    clock.now += 10  # idle: the burst allowance comes back, no debt
    assert _waits(pacer, 60, 1)[0] == [0.0]


def test_keys_are_paced_apart_and_zero_means_no_pacing() -> None:
    clock = Clock()
    pacers = KeyPacers(lambda: KeyPacer(clock=clock))
    _waits(pacers.get("https://api.dune.com/api", "a", "read"), 6, 10)
    assert _waits(pacers.get("https://api.dune.com/api", "b", "read"), 6, 1)[0] == [0.0]
    assert _waits(pacers.get("https://api.dune.com/api", "a", "write"), 6, 1)[0] == [0.0]
    assert _waits(pacers.get("https://api.dune.com/api", "c", "read"), 0, 100)[0] == [0.0] * 100


def _ask(pacer: KeyPacer, per_minute: float, urgency: float) -> tuple[float, Iterator[float]]:
    """A request of ``urgency`` asking for a slot now: its first wait, and the wait going on."""
    token = READ_URGENCY.set(urgency)
    try:
        ask = pacer.turns(per_minute)
        return next(ask), ask
    finally:
        READ_URGENCY.reset(token)


def test_when_the_budget_is_short_the_most_urgent_requests_go_first() -> None:
    clock = Clock()
    pacer = KeyPacer(clock=clock)
    _waits(pacer, 60, BURST + 1)  # the burst: the next slot is 1 s away
    first, unlikely = _ask(pacer, 60, 0.0)
    assert first == pytest.approx(1.0)
    first, near_its_end = _ask(pacer, 60, 1.0)
    assert first == pytest.approx(1.0)  # ahead of the one that asked before
    first, late = _ask(pacer, 60, 0.6)
    assert first == pytest.approx(2.0)
    clock.now += 1
    assert next(unlikely) == pytest.approx(2.0)  # woke for its slot, found more urgent ones ahead: waits on
    assert list(near_its_end) == []
    clock.now += 1
    assert list(late) == []
    assert next(unlikely) == pytest.approx(1.0)
    clock.now += 1
    assert list(unlikely) == []


def test_a_request_that_waited_longer_than_the_head_start_goes_before_new_urgent_ones() -> None:
    clock = Clock()
    pacer = KeyPacer(clock=clock)
    per_minute = 60 / (URGENCY_HEAD_START + 10)  # one slot every 40 s
    _waits(pacer, per_minute, BURST + 1)
    _, old = _ask(pacer, per_minute, 0.0)
    clock.now += URGENCY_HEAD_START + 1
    first, urgent = _ask(pacer, per_minute, 1.0)
    assert first == pytest.approx(9.0 + 40.0)  # after the old one's slot, 9 s from now
    clock.now += 9
    assert list(old) == []
    clock.now += 40
    assert list(urgent) == []


def test_the_deadline_of_a_request_comes_before_the_budget() -> None:
    clock = Clock()
    pacer = KeyPacer(clock=clock)
    _waits(pacer, 6, BURST + 1)  # the next slot is 10 s away
    assert list(pacer.turns(6, latest=4.0)) == [4.0]
    assert pacer.queued() == 0
    assert _waits(pacer, 6, 1)[0] == [10.0]  # the slot it did not take is still free


def test_a_429_lowers_the_pace_which_recovers_without_429s() -> None:
    clock = Clock()
    pacer = KeyPacer(clock=clock)
    policy = RetryPolicy()
    pacer.rate_limited(None, policy, 40)
    assert pacer.fraction == pytest.approx(0.8)
    pacer.rate_limited(None, policy, 40)
    assert pacer.fraction == pytest.approx(0.8)  # the same overload: requests already in flight
    clock.now += 11  # a new overload (11 s of recovery first: +5% of the configured rate per minute)
    lowered = (0.8 + 0.05 * 11 / 60) * 0.8
    pacer.rate_limited(None, policy, 40)
    assert pacer.fraction == pytest.approx(lowered)
    clock.now += 60
    assert pacer.fraction == pytest.approx(lowered + 0.05)
    clock.now += 3600
    assert pacer.fraction == 1.0


def test_a_key_used_without_pacing_is_never_lowered() -> None:
    pacer = KeyPacer(clock=Clock())
    pacer.rate_limited(None, RetryPolicy(), 0)
    assert pacer.fraction == 1.0


def _pipelines(emulator: DuneEmulator, count: int, duration: float) -> list[str]:
    for index in range(count):
        emulator.add_query(9700 + index, duration=duration)
    with DuneHook() as hook:
        return [hook.execute_query_pipeline(9700 + index) for index in range(count)]


async def _wait_all(pipeline_ids: list[str]) -> list[dict]:
    triggers = [DunePipelineTrigger(pipeline_execution_id=p, poll_interval=0.02) for p in pipeline_ids]

    async def last(trigger: DunePipelineTrigger) -> dict:
        return [event.payload async for event in trigger.run()][-1]

    return await asyncio.gather(*(last(t) for t in triggers))


@pytest.mark.slow
@pytest.mark.parametrize("paced", [True, False], ids=["paced", "unpaced"])
def test_triggers_sharing_a_key_stay_inside_its_budget(
    dune_emulator: DuneEmulator, monkeypatch: pytest.MonkeyPatch, paced: bool
) -> None:
    """Four triggers polling every 0.02 s (12,000 reads a minute asked) on a key allowed 120 a minute."""
    import airflow_provider_dune.hooks.dune as hook_module

    monkeypatch.setattr(hook_module, "PACERS", KeyPacers())
    rate = 120 if paced else 0
    monkeypatch.setenv(
        "AIRFLOW_CONN_DUNE_DEFAULT", dune_connection_json(dune_emulator.url, reads_per_minute=rate, max_retries=10)
    )
    # Unpaced, the reads must outlast the emulator's full bucket (a minute's worth) to draw 429s; paced, 2 s will do.
    pipeline_ids = _pipelines(dune_emulator, 4, duration=2.0 if paced else 6.0)
    dune_emulator.set_rate_limit(read_per_minute=120, write_per_minute=None)
    events = asyncio.run(_wait_all(pipeline_ids))
    assert [event["status"] for event in events] == ["success"] * 4
    throttled = sum(1 for r in dune_emulator.requests if r.status == 429)
    print(json.dumps({"paced": paced, "429s": throttled, "reads": dune_emulator.counts.get("get_pipeline_status")}))
    if paced:
        assert throttled == 0
    else:
        assert throttled > 10  # what pacing prevents


def test_one_pacer_serves_threads_and_event_loops_alike() -> None:
    pacer = KeyPacer()
    per_minute = 1200  # a slot every 0.05 s
    _waits(pacer, per_minute, BURST + 1)
    sent: list[float] = []

    def in_a_thread() -> None:
        pacer.wait(per_minute)
        sent.append(time.monotonic())

    async def in_event_loops() -> None:
        for _ in range(2):
            await pacer.await_turn(per_minute)
            sent.append(time.monotonic())

    thread = threading.Thread(target=in_a_thread)
    thread.start()
    asyncio.run(in_event_loops())
    asyncio.run(in_event_loops())  # a new loop: nothing of the first one is left in the pacer
    thread.join(timeout=5)
    sent.sort()
    assert len(sent) == 5
    assert all(b - a >= 0.04 for a, b in itertools.pairwise(sent))  # one a slot (less timer slack)
    assert pacer.queued() == 0


def test_a_request_given_up_while_waiting_leaves_the_queue() -> None:
    pacer = KeyPacer()
    _waits(pacer, 60, BURST + 1)  # the next slot is 1 s away

    async def scenario() -> None:
        doomed = asyncio.ensure_future(pacer.await_turn(60))
        await asyncio.sleep(0.01)
        assert pacer.queued() == 1
        doomed.cancel()
        with pytest.raises(asyncio.CancelledError):
            await doomed

    asyncio.run(scenario())
    assert pacer.queued() == 0


def test_budget_share_paces_this_process_to_its_part_of_the_key(
    monkeypatch: pytest.MonkeyPatch, caplog: pytest.LogCaptureFixture
) -> None:
    from airflow_provider_dune.api.connection import DuneConnectionSettings
    from airflow_provider_dune.api.endpoints import get_pipeline_status

    settings = DuneConnectionSettings(base_url="https://api.dune.com/api", api_key="k", reads_per_minute=40)
    request = get_pipeline_status("01PIPE")
    assert DuneHook._per_minute(request, settings) == 40
    monkeypatch.setenv("AIRFLOW__DUNE__BUDGET_SHARE", "0.5")
    assert DuneHook._per_minute(request, settings) == 20
    for wrong in ("0", "1.5", "half"):
        monkeypatch.setenv("AIRFLOW__DUNE__BUDGET_SHARE", wrong)
        assert DuneHook._per_minute(request, settings) == 40
        assert f"[dune] budget_share = '{wrong}' is not a number above 0 and at most 1" in caplog.text
    # Unset, a process holding a lease on the key paces to the share its leases found; a set share wins.
    from airflow_provider_dune.utils.budget_leases import LEASES, _KeyLeases, lease_variable

    variable = lease_variable(settings.base_url, settings.api_key)
    monkeypatch.setitem(LEASES._keys, variable, _KeyLeases(variable, holders=1, share=0.25))
    monkeypatch.delenv("AIRFLOW__DUNE__BUDGET_SHARE")
    assert DuneHook._per_minute(request, settings) == 10
    monkeypatch.setenv("AIRFLOW__DUNE__BUDGET_SHARE", "1")
    assert DuneHook._per_minute(request, settings) == 40
