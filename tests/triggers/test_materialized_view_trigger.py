"""DuneMaterializedViewRefreshTrigger against the emulator, including refreshes Dune runs on its own schedule."""

from __future__ import annotations

import asyncio
import contextlib
from typing import Any

import pytest

from airflow_provider_dune.api.errors import DuneConfigurationError, DuneNotFoundError
from airflow_provider_dune.hooks.dune import DuneHook
from airflow_provider_dune.testing.emulator import DuneEmulator
from airflow_provider_dune.triggers.materialized_view import (
    WATERMARK_KEY,
    DuneMaterializedViewRefreshTrigger,
    new_refreshes,
)
from airflow_provider_dune.version_compat import AIRFLOW_V_3_0_PLUS
from tests.helpers import wait_finished

VIEW = "dune.watch.result_prices"


class MemoryStateStore:
    """The asset state store Airflow 3.3+ gives a watcher trigger (one watched asset), in memory."""

    def __init__(self) -> None:
        self.values: dict[str, Any] = {}

    async def aget(self, key: str, default: Any = None) -> Any:
        return self.values.get(key, default)

    async def aset(self, key: str, value: Any) -> None:
        self.values[key] = value


@pytest.fixture
def emulator(dune_emulator: DuneEmulator, dune_conn_id: str) -> DuneEmulator:
    dune_emulator.add_materialized_view(VIEW, query_id=9500, duration=0.05)
    return dune_emulator


def refresh(wait: bool = True) -> str:
    with DuneHook() as hook:
        execution_id = hook.refresh_materialized_view(VIEW).execution_id
    if wait:
        wait_finished(execution_id, pipeline=False)
    return execution_id


def trigger(**kwargs: Any) -> DuneMaterializedViewRefreshTrigger:
    kwargs.setdefault("view_name", VIEW)
    kwargs.setdefault("poll_interval", 0.05)
    return DuneMaterializedViewRefreshTrigger(**kwargs)


class Watch:
    """Runs a trigger in a task and queues its events, so that waiting for one never cancels the trigger."""

    def __init__(self, watcher: DuneMaterializedViewRefreshTrigger) -> None:
        self.queue: asyncio.Queue[Any] = asyncio.Queue()
        self.task = asyncio.ensure_future(self._run(watcher))

    async def _run(self, watcher: DuneMaterializedViewRefreshTrigger) -> None:
        try:
            async for event in watcher.run():
                await self.queue.put(event.payload)
        except Exception as err:
            await self.queue.put(err)

    async def next(self, count: int = 1, timeout: float = 5) -> list[dict[str, Any]]:
        got = []
        for _ in range(count):
            item = await asyncio.wait_for(self.queue.get(), timeout)
            if isinstance(item, Exception):
                raise item
            got.append(item)
        return got

    async def nothing_within(self, seconds: float) -> bool:
        await asyncio.sleep(seconds)
        return self.queue.empty()

    async def stop(self) -> None:
        self.task.cancel()
        with contextlib.suppress(asyncio.CancelledError):
            await self.task


@pytest.mark.parametrize(
    ("ids", "watermark", "new"),
    [
        (["c", "b", "a"], None, []),  # first look: nothing is new
        (["c", "b", "a"], "a", ["b", "c"]),
        (["c", "b", "a"], "c", []),
        (["c", "b"], "zz", ["b", "c"]),  # fell out of the list: all of it is new
        (["b", "a"], "", ["a", "b"]),  # the view had never been refreshed when the watch started
    ],
)
def test_new_refreshes(ids: list[str], watermark: str | None, new: list[str]) -> None:
    assert new_refreshes(ids, watermark) == new


def test_serialises_ids_and_settings_only() -> None:
    classpath, kwargs = trigger(dune_conn_id="dune_default").serialize()
    assert classpath == "airflow_provider_dune.triggers.materialized_view.DuneMaterializedViewRefreshTrigger"
    assert kwargs == {"view_name": VIEW, "dune_conn_id": "dune_default", "poll_interval": 0.05}


@pytest.mark.skipif(not AIRFLOW_V_3_0_PLUS, reason="BaseEventTrigger and AssetWatcher need Airflow 3")
def test_usable_with_an_asset_watcher() -> None:
    from airflow.sdk import Asset, AssetWatcher

    asset = Asset(f"dune://views/{VIEW}", watchers=[AssetWatcher(name="w", trigger=trigger())])
    assert asset.watchers[0].trigger.view_name == VIEW


@pytest.mark.parametrize("bad", [{"poll_interval": 0}, {"poll_interval": float("nan")}, {"view_name": "a/b"}])
def test_bad_arguments_are_refused(bad: dict[str, Any]) -> None:
    with pytest.raises(DuneConfigurationError):
        trigger(**bad)


@pytest.mark.slow
async def test_no_event_for_refreshes_before_the_watch_then_one_per_new_refresh(emulator: DuneEmulator) -> None:
    refresh()
    refresh()
    watch = Watch(trigger())
    assert await watch.nothing_within(0.4)  # no storm on start-up
    first = refresh(wait=False)
    second = refresh(wait=False)
    got = await watch.next(2)
    assert [event["execution_id"] for event in got] == [first, second]  # in order
    assert got[0] == {"view_name": VIEW, "uri": f"dune://views/{VIEW}", "execution_id": first, "state": "completed"}
    assert await watch.nothing_within(0.3)
    await watch.stop()


async def test_a_failed_refresh_fires_nothing(emulator: DuneEmulator) -> None:
    watch = Watch(trigger())
    assert await watch.nothing_within(0.2)
    emulator.add_materialized_view(VIEW, query_id=9500, duration=0.05, error="boom")
    refresh()
    assert await watch.nothing_within(0.4)
    emulator.add_materialized_view(VIEW, query_id=9500, duration=0.05)
    good = refresh()
    assert [event["execution_id"] for event in await watch.next()] == [good]
    await watch.stop()


async def test_refreshes_dune_runs_on_its_own_schedule(emulator: DuneEmulator) -> None:
    emulator.add_materialized_view("dune.watch.result_scheduled", query_id=9501, duration=0.05, refresh_every=0.3)
    watch = Watch(trigger(view_name="dune.watch.result_scheduled"))
    got = await watch.next(3, timeout=3)
    assert len({event["execution_id"] for event in got}) == 3
    assert emulator.executions_started() == 0  # Dune's own refreshes are not runs the key started
    await watch.stop()


async def test_a_restart_neither_replays_nor_misses_refreshes(emulator: DuneEmulator) -> None:
    store = MemoryStateStore()
    before = refresh()
    watcher = trigger()
    watcher.asset_state_store = store
    watch = Watch(watcher)
    assert await watch.nothing_within(0.2)
    assert store.values[WATERMARK_KEY] == before
    seen = refresh()
    assert [e["execution_id"] for e in await watch.next()] == [seen]
    await watch.stop()  # the triggerer stops ...
    missed = refresh()  # ... a refresh ends while it is down ...
    restarted = trigger()
    restarted.asset_state_store = store
    watch = Watch(restarted)  # ... and it comes back
    assert [e["execution_id"] for e in await watch.next()] == [missed]
    assert await watch.nothing_within(0.3)
    await watch.stop()


async def test_a_view_that_does_not_exist_is_an_error(emulator: DuneEmulator) -> None:
    watch = Watch(trigger(view_name="dune.watch.nope"))
    with pytest.raises(DuneNotFoundError):
        await watch.next()


async def test_transient_errors_do_not_stop_the_watch(emulator: DuneEmulator) -> None:
    from airflow_provider_dune.testing.emulator import Fault

    watch = Watch(trigger())
    assert await watch.nothing_within(0.2)
    emulator.inject("get_materialized_view", Fault.status(503, times=8))
    done = refresh()
    assert [e["execution_id"] for e in await watch.next(timeout=8)] == [done]
    await watch.stop()
