"""DuneMaterializedViewRefreshTrigger against the emulator, including refreshes Dune runs on its own schedule."""

from __future__ import annotations

import asyncio
import contextlib
import json
import logging
from collections.abc import Callable, Iterator
from typing import Any

import pytest

from airflow_provider_dune.api.errors import DuneConfigurationError
from airflow_provider_dune.hooks.dune import DuneHook
from airflow_provider_dune.testing.emulator import DuneEmulator, Fault
from airflow_provider_dune.triggers import materialized_view
from airflow_provider_dune.triggers.materialized_view import (
    MAX_ERROR_BACKOFF,
    WATERMARK_KEY,
    DuneMaterializedViewRefreshTrigger,
    WatchState,
    error_backoff,
    new_refreshes,
)
from airflow_provider_dune.version_compat import AIRFLOW_V_3_0_PLUS
from tests.conftest import dune_connection_json
from tests.helpers import wait_finished

VIEW = "dune.watch.result_prices"


class MemoryStateStore:
    """The asset state store Airflow 3.3+ gives a watcher trigger (one watched asset), in memory."""

    def __init__(self) -> None:
        self.values: dict[str, Any] = {}
        self.saved = asyncio.Event()

    async def aget(self, key: str, default: Any = None) -> Any:
        return self.values.get(key, default)

    async def aset(self, key: str, value: Any) -> None:
        self.values[key] = json.loads(json.dumps(value))  # the real store keeps JSON values only
        self.saved.set()


@pytest.fixture
def emulator(dune_emulator: DuneEmulator, dune_conn_id: str, monkeypatch: pytest.MonkeyPatch) -> DuneEmulator:
    # Refreshes started by the tests are not paced (the default budget spaces them 4 s apart).
    monkeypatch.setenv("AIRFLOW_CONN_DUNE_DEFAULT", dune_connection_json(dune_emulator.url, writes_per_minute=0))
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
        """Cancel the trigger as the triggerer does; a trigger that does not stop fails the test instead of
        hanging it."""
        self.task.cancel()
        done, _ = await asyncio.wait({self.task}, timeout=10)
        assert done, "the trigger was still running 10 s after it was cancelled"
        with contextlib.suppress(asyncio.CancelledError):
            await self.task


@pytest.mark.parametrize(
    ("ids", "watermark", "new"),
    [
        (["c", "b", "a"], None, []),  # first look: nothing is new
        (["c", "b", "a"], "a", ["b", "c"]),
        (["c", "b", "a"], "c", []),
        (["c", "b"], "zz", []),  # not in the list (fell out, or a wrong state): the watch restarts from "c"
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
    await asyncio.wait_for(store.saved.wait(), 5)  # the watch has its starting point
    assert await watch.nothing_within(0.2)
    assert store.values[WATERMARK_KEY]["last_seen"] == before
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


@pytest.fixture
def warnings_about(caplog: pytest.LogCaptureFixture, capsys: pytest.CaptureFixture[str]) -> Callable[[str], list[str]]:
    """Warnings the trigger logged since the last call that mention a text: Airflow 3's structured log writes
    them to stdout, Airflow 2's goes through the standard logging module."""
    caplog.set_level(logging.WARNING)

    def read(text: str) -> list[str]:
        lines = [line for line in capsys.readouterr().out.splitlines() if "[warning" in line and text in line]
        lines += [r.getMessage() for r in caplog.records if r.levelno == logging.WARNING and text in r.getMessage()]
        caplog.clear()
        return lines

    return read


@pytest.mark.slow
async def test_a_view_that_does_not_exist_is_watched_with_a_capped_backoff_and_warnings(
    emulator: DuneEmulator, monkeypatch: pytest.MonkeyPatch, warnings_about: Callable[[str], list[str]]
) -> None:
    """A lasting 404 neither ends the trigger (a restart loop that ignores poll_interval) nor polls faster."""
    monkeypatch.setattr(materialized_view, "MAX_ERROR_BACKOFF", 0.2)
    watch = Watch(trigger(view_name="dune.watch.later"))
    assert await watch.nothing_within(1.0)  # still running: a raised error would be queued here
    gone = warnings_about("dune.watch.later")
    assert len(gone) >= 3
    assert all("does not exist" in message for message in gone)
    assert len([r for r in emulator.requests if r.endpoint == "get_materialized_view"]) <= 12  # 0.05, 0.1, 0.2, 0.2...
    emulator.add_materialized_view("dune.watch.later", query_id=9500, duration=0.05)  # the view comes (back)
    assert await watch.nothing_within(0.5)  # its refreshes so far are not new: the watch starts from the latest
    with DuneHook() as hook:
        done = wait_finished(hook.refresh_materialized_view("dune.watch.later").execution_id, pipeline=False)
    assert [e["execution_id"] for e in await watch.next()] == [done]
    await watch.stop()


@pytest.mark.parametrize(
    ("poll_interval", "failures", "wait"),
    [
        (60, 1, 60),
        (60, 2, 120),
        (60, 4, 480),
        (60, 5, MAX_ERROR_BACKOFF),
        (60, 5000, MAX_ERROR_BACKOFF),  # no overflow after days of errors
        (3600, 3, 3600),  # never shorter than poll_interval
    ],
)
def test_error_backoff_doubles_from_poll_interval_up_to_a_cap(poll_interval: float, failures: int, wait: float) -> None:
    assert error_backoff(poll_interval, failures) == wait


@pytest.mark.parametrize("code", [401, 403, 404, 500])
async def test_one_error_of_any_kind_does_not_end_the_watch(
    emulator: DuneEmulator, code: int, warnings_about: Callable[[str], list[str]]
) -> None:
    watch = Watch(trigger())
    assert await watch.nothing_within(0.2)
    emulator.inject("get_materialized_view", Fault.status(code, times=1))
    done = refresh()
    assert [e["execution_id"] for e in await watch.next()] == [done]
    assert warnings_about(VIEW)
    await watch.stop()


@pytest.mark.parametrize(
    "corrupt",
    ["no-such-refresh", "", 42, None, ["a"], {"last_seen": 5}, {"last_seen": "x", "running": "y"}, "a/b"],
)
async def test_a_corrupt_saved_state_starts_from_the_latest_refresh_without_replaying(
    emulator: DuneEmulator, corrupt: Any, warnings_about: Callable[[str], list[str]]
) -> None:
    for _ in range(3):
        refresh()
    store = MemoryStateStore()
    store.values[WATERMARK_KEY] = corrupt
    watcher = trigger()
    watcher.asset_state_store = store
    watch = Watch(watcher)
    assert await watch.nothing_within(0.4)  # no replay of the three refreshes before
    if corrupt is not None:
        assert warnings_about("starting from the latest refresh")
    new = refresh()
    assert [e["execution_id"] for e in await watch.next()] == [new]
    await asyncio.wait_for(store.saved.wait(), 5)  # the watch has its starting point
    assert await watch.nothing_within(0.2)
    await watch.stop()


@pytest.mark.parametrize(
    ("stored", "state"),
    [
        ("01HOLD", WatchState("01HOLD")),  # saved by earlier versions: the last refresh handled
        ({"last_seen": "b", "running": ["a"]}, WatchState("b", ("a",))),
        ({"last_seen": "", "running": []}, WatchState("")),
    ],
)
def test_saved_states_read_back(stored: Any, state: WatchState) -> None:
    assert WatchState.from_stored(stored) == state
    assert WatchState.from_stored(state.to_stored()) == state


async def test_a_stop_right_after_an_event_does_not_fire_it_again(emulator: DuneEmulator) -> None:
    """The triggerer stops between handing an event over and the trigger's next step: at most once."""
    store = MemoryStateStore()
    first = trigger()
    first.asset_state_store = store
    events: Any = first.run()  # an async generator: closed below as the triggerer does
    starting = asyncio.ensure_future(events.__anext__())
    await asyncio.wait_for(store.saved.wait(), 5)  # the watch has its starting point
    done = refresh()
    assert (await asyncio.wait_for(starting, 5)).payload["execution_id"] == done
    await events.aclose()  # stopped before the generator resumed after its yield
    restarted = trigger()
    restarted.asset_state_store = store
    watch = Watch(restarted)
    assert await watch.nothing_within(0.4)
    assert store.values[WATERMARK_KEY]["last_seen"] == done
    await watch.stop()


class ManualClock:
    """The emulator's clock, moved by the test: a refresh runs until the test says time has passed."""

    def __init__(self) -> None:
        self.now = 1000.0

    def __call__(self) -> float:
        return self.now


@pytest.fixture
def clocked(monkeypatch: pytest.MonkeyPatch) -> Iterator[tuple[DuneEmulator, ManualClock]]:
    clock = ManualClock()
    with DuneEmulator(clock=clock) as emulator:
        monkeypatch.setenv("AIRFLOW_CONN_DUNE_DEFAULT", dune_connection_json(emulator.url, writes_per_minute=0))
        yield emulator, clock


async def test_a_stuck_refresh_does_not_hold_back_later_ones(clocked: tuple[DuneEmulator, ManualClock]) -> None:
    emulator, clock = clocked
    emulator.add_materialized_view(VIEW, query_id=9500, duration=100)
    store = MemoryStateStore()
    watcher = trigger()
    watcher.asset_state_store = store
    watch = Watch(watcher)
    await asyncio.wait_for(store.saved.wait(), 5)  # the watch has its starting point
    assert await watch.nothing_within(0.2)
    stuck = refresh(wait=False)
    clock.now += 1
    emulator.add_materialized_view(VIEW, query_id=9500, duration=1)
    quick = refresh(wait=False)
    clock.now += 2  # quick ended, stuck still running
    assert [e["execution_id"] for e in await watch.next()] == [quick]
    assert store.values[WATERMARK_KEY]["running"] == [stuck]  # a restart keeps following it
    later = refresh(wait=False)
    clock.now += 2
    assert [e["execution_id"] for e in await watch.next()] == [later]
    clock.now += 200  # stuck ends
    assert [e["execution_id"] for e in await watch.next()] == [stuck]
    assert await watch.nothing_within(0.3)  # once
    assert store.values[WATERMARK_KEY]["running"] == []
    await watch.stop()


async def test_transient_errors_do_not_stop_the_watch(emulator: DuneEmulator) -> None:
    from airflow_provider_dune.testing.emulator import Fault

    watch = Watch(trigger())
    assert await watch.nothing_within(0.2)
    emulator.inject("get_materialized_view", Fault.status(503, times=8))
    done = refresh()
    assert [e["execution_id"] for e in await watch.next(timeout=8)] == [done]
    await watch.stop()


async def test_a_refresh_dune_briefly_does_not_know_is_still_followed(
    clocked: tuple[DuneEmulator, ManualClock],
    monkeypatch: pytest.MonkeyPatch,
    warnings_about: Callable[[str], list[str]],
) -> None:
    emulator, clock = clocked
    monkeypatch.setattr(materialized_view, "MAX_MISSING_READS", 3)
    emulator.add_materialized_view(VIEW, query_id=9500, duration=10)
    watch = Watch(trigger())
    assert await watch.nothing_within(0.2)
    blip = refresh(wait=False)
    emulator.inject("get_execution_status", Fault.status(404, times=2))  # fewer than MAX_MISSING_READS
    assert await watch.nothing_within(0.4)
    assert len(warnings_about(f"Dune does not know refresh {blip}")) == 2
    clock.now += 20
    assert [e["execution_id"] for e in await watch.next()] == [blip]
    lost = refresh(wait=False)
    emulator.inject("get_execution_status", Fault.status(404, times=3))  # Dune lost it: given up, no event
    assert await watch.nothing_within(0.4)
    assert warnings_about(f"Dune does not know refresh {lost}")[-1].count("no longer followed, no event")
    clock.now += 20
    later = refresh(wait=False)
    clock.now += 20
    assert [e["execution_id"] for e in await watch.next()] == [later]
    assert await watch.nothing_within(0.2)
    await watch.stop()
