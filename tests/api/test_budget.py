"""Pacing requests to an API key's budget: the slot arithmetic, and triggers sharing one key over HTTP."""

from __future__ import annotations

import asyncio
import json

import pytest

from airflow_provider_dune.api.budget import BURST, RequestBudget
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
    budget = RequestBudget(clock=clock)
    waits = [budget.reserve("k", 60) for _ in range(6)]  # one a second
    assert waits[: BURST + 1] == [0.0] * (BURST + 1)
    assert waits[BURST + 1 :] == pytest.approx([1.0, 2.0, 3.0])
    clock.now += 10  # idle: the burst allowance comes back, no debt
    assert budget.reserve("k", 60) == 0.0


def test_keys_are_paced_apart_and_zero_means_no_pacing() -> None:
    budget = RequestBudget(clock=Clock())
    for _ in range(10):
        budget.reserve("a", 6)
    assert budget.reserve("b", 6) == 0.0
    assert all(budget.reserve("c", 0) == 0.0 for _ in range(100))


def test_a_429_lowers_the_pace_which_recovers_without_429s() -> None:
    clock = Clock()
    budget = RequestBudget(clock=clock)
    assert budget.record_rate_limited("k") == pytest.approx(0.8)
    assert budget.record_rate_limited("k") == pytest.approx(0.8)  # the same overload: requests already in flight
    clock.now += 11  # a new overload (11 s of recovery first: +5% of the configured rate per minute)
    lowered = (0.8 + 0.05 * 11 / 60) * 0.8
    assert budget.record_rate_limited("k") == pytest.approx(lowered)
    clock.now += 60
    assert budget.fraction("k") == pytest.approx(lowered + 0.05)
    clock.now += 3600
    assert budget.fraction("k") == 1.0


def _pipelines(emulator: DuneEmulator, count: int) -> list[str]:
    for index in range(count):
        emulator.add_query(9700 + index, duration=6.0)
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
    from airflow_provider_dune.api import budget as budget_module

    monkeypatch.setattr(budget_module, "BUDGET", RequestBudget())
    import airflow_provider_dune.hooks.dune as hook_module

    monkeypatch.setattr(hook_module, "BUDGET", budget_module.BUDGET)
    rate = 120 if paced else 0
    monkeypatch.setenv(
        "AIRFLOW_CONN_DUNE_DEFAULT", dune_connection_json(dune_emulator.url, reads_per_minute=rate, max_retries=10)
    )
    pipeline_ids = _pipelines(dune_emulator, 4)
    dune_emulator.set_rate_limit(read_per_minute=120, write_per_minute=None)
    events = asyncio.run(_wait_all(pipeline_ids))
    assert [event["status"] for event in events] == ["success"] * 4
    throttled = sum(1 for r in dune_emulator.requests if r.status == 429)
    print(json.dumps({"paced": paced, "429s": throttled, "reads": dune_emulator.counts.get("get_pipeline_status")}))
    if paced:
        assert throttled == 0
    else:
        assert throttled > 10  # what pacing prevents


def _drain_burst(budget: RequestBudget, key: str, per_minute: float) -> None:
    for _ in range(BURST + 1):
        assert budget.reserve(key, per_minute) == 0.0


async def _served_order(budget: RequestBudget, per_minute: float, urgencies: dict[str, float]) -> list[str]:
    order: list[str] = []

    async def read(name: str, urgency: float) -> None:
        await budget.acquire("k", per_minute, urgency)
        order.append(name)

    await asyncio.gather(*(read(name, urgency) for name, urgency in urgencies.items()))
    return order


def test_reads_waiting_for_the_budget_are_served_most_urgent_first() -> None:
    budget = RequestBudget()
    _drain_burst(budget, "k", 1200)  # a slot every 0.05 s
    order = asyncio.run(_served_order(budget, 1200, {"unlikely": 0.0, "near its end": 1.0, "late": 0.6}))
    assert order == ["near its end", "late", "unlikely"]


def test_a_read_that_waited_longer_than_the_head_start_goes_before_new_urgent_ones(
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    from airflow_provider_dune.api import budget as budget_module

    monkeypatch.setattr(budget_module, "URGENCY_HEAD_START", 0.2)
    budget = RequestBudget()
    _drain_burst(budget, "k", 120)  # a slot every 0.5 s

    async def scenario() -> list[str]:
        order: list[str] = []

        async def read(name: str, urgency: float, delay: float) -> None:
            await asyncio.sleep(delay)
            await budget.acquire("k", 120, urgency)
            order.append(name)

        await asyncio.gather(read("old, unlikely", 0.0, 0.0), read("new, urgent", 1.0, 0.3))
        return order

    assert asyncio.run(scenario()) == ["old, unlikely", "new, urgent"]


def test_a_cancelled_read_gives_its_turn_to_the_next_and_loops_can_come_and_go() -> None:
    budget = RequestBudget()
    _drain_burst(budget, "k", 600)  # a slot every 0.1 s

    async def scenario() -> float:
        doomed = asyncio.ensure_future(budget.acquire("k", 600, 1.0))
        await asyncio.sleep(0)
        doomed.cancel()
        with pytest.raises(asyncio.CancelledError):
            await doomed
        started = asyncio.get_running_loop().time()
        await asyncio.wait_for(budget.acquire("k", 600, 0.0), timeout=2)
        return asyncio.get_running_loop().time() - started

    assert asyncio.run(scenario()) < 1.0
    # A new event loop (the first one is closed, its timer with it) is still served.
    assert asyncio.run(asyncio.wait_for(_served_order(budget, 600, {"a": 0.5, "b": 0.5}), timeout=2)) == ["a", "b"]
    assert budget.queued("k") == 0


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
