"""Pacing requests to an API key's budget: the slot arithmetic, and triggers sharing one key over HTTP."""

from __future__ import annotations

import asyncio
import json

import pytest

from airflow_provider_dune.api.budget import BURST, KeyPacer, KeyPacers
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


def test_requests_are_spaced_at_the_budget_after_a_small_burst() -> None:
    clock = Clock()
    pacer = KeyPacer(clock=clock)
    waits = [pacer.reserve(60) for _ in range(6)]  # one a second
    assert waits[: BURST + 1] == [0.0] * (BURST + 1)
    assert waits[BURST + 1 :] == pytest.approx([1.0, 2.0, 3.0])
    assert pacer.booked_ahead(60) == 4  # the last one goes out 3 s from now, the next slot is at 4 s
    clock.now += 10  # idle: the burst allowance comes back, no debt
    assert pacer.reserve(60) == 0.0


def test_keys_are_paced_apart_and_zero_means_no_pacing() -> None:
    clock = Clock()
    pacers = KeyPacers(lambda: KeyPacer(clock=clock))
    for _ in range(10):
        pacers.get("https://api.dune.com/api", "a", "read").reserve(6)
    assert pacers.get("https://api.dune.com/api", "b", "read").reserve(6) == 0.0
    assert pacers.get("https://api.dune.com/api", "a", "write").reserve(6) == 0.0
    unpaced = pacers.get("https://api.dune.com/api", "c", "read")
    assert all(unpaced.reserve(0) == 0.0 for _ in range(100))


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
    print(json.dumps({"paced": paced, "429s": throttled, "reads": dune_emulator.counts.get("pipeline_status")}))
    if paced:
        assert throttled == 0
    else:
        assert throttled > 10  # what pacing prevents


def test_one_pacer_serves_threads_and_event_loops_alike() -> None:
    pacer = KeyPacer(clock=Clock())
    waits = [pacer.reserve(600) for _ in range(BURST + 1)]  # a slot every 0.1 s: the burst goes out at once

    async def read() -> float:
        return pacer.reserve(600)

    waits += [asyncio.run(read()), asyncio.run(read())]  # a new loop each time (the first one is closed)
    assert waits == pytest.approx([0.0] * (BURST + 1) + [0.1, 0.2])


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
