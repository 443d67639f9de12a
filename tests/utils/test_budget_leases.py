"""The triggerers' shares of one API key's budget, from leases in a (fake) Airflow Variable on a fake clock."""

from __future__ import annotations

import asyncio
import json
import logging
from collections.abc import Awaitable, Callable
from contextlib import AsyncExitStack
from typing import Any

import pytest

from airflow_provider_dune.utils import budget_leases
from airflow_provider_dune.utils.budget_leases import (
    LEASE_SECONDS,
    RENEW_JITTER,
    RENEW_SECONDS,
    BudgetLeases,
    lease_for,
    lease_variable,
)
from tests.operators.fakes import FakeVariables

VARIABLE = lease_variable("https://api.dune.com/api", "secret-key")


class FakeClock:
    """Wall-clock time that moves only when a test says so, waking the renewal tasks' sleeps on the way."""

    def __init__(self) -> None:
        self.now = 1_700_000_000.0
        self._sleepers: list[tuple[float, asyncio.Future[None]]] = []

    def __call__(self) -> float:
        return self.now

    async def sleep(self, seconds: float) -> None:
        future: asyncio.Future[None] = asyncio.get_running_loop().create_future()
        self._sleepers.append((self.now + seconds, future))
        await future

    async def advance(self, seconds: float) -> None:
        target = self.now + seconds
        await _settle()
        while due := sorted((s for s in self._sleepers if s[0] <= target), key=lambda s: s[0]):
            wake_at, future = due[0]
            self._sleepers.remove(due[0])
            if not future.done():  # a cancelled task's sleep
                self.now = wake_at
                future.set_result(None)
            await _settle()
        self.now = target
        await _settle()


async def _settle() -> None:
    for _ in range(20):
        await asyncio.sleep(0)


def _inline(fn: Callable[..., Any]) -> Callable[..., Awaitable[Any]]:
    async def call(*args: Any) -> Any:
        return fn(*args)

    return call


@pytest.fixture(autouse=True)
def inline_store_calls(monkeypatch: pytest.MonkeyPatch) -> None:
    """Store calls run in the loop (not a thread), so the fake clock alone decides when renewals happen."""
    monkeypatch.setattr(budget_leases, "sync_to_async", _inline)


class FailingVariables(FakeVariables):
    def __init__(self) -> None:
        super().__init__()
        self.failing = False

    def get(self, key: str, default: Any = None, /) -> Any:
        if self.failing:
            raise ConnectionError("the API server is down")
        return super().get(key, default)


def _process(store: FakeVariables, clock: FakeClock, holder: str) -> BudgetLeases:
    return BudgetLeases(store, clock=clock, sleep=clock.sleep, jitter=lambda: 0.0, holder=holder)


def _stored(store: FakeVariables) -> dict[str, float]:
    return json.loads(store.store[VARIABLE])


async def test_each_process_paces_to_its_share_as_triggerers_come_and_go() -> None:
    store, clock = FakeVariables(), FakeClock()
    first, second = _process(store, clock, "host-1:7"), _process(store, clock, "host-2:7")
    assert first.share(VARIABLE) == 1.0  # no trigger, no lease: the whole budget (a worker)
    async with AsyncExitStack() as first_triggers:
        await first_triggers.enter_async_context(first.hold(VARIABLE))
        await first_triggers.enter_async_context(first.hold(VARIABLE))  # a second trigger: still one lease
        assert first.share(VARIABLE) == 1.0
        assert _stored(store) == {"host-1:7": clock.now + LEASE_SECONDS}
        async with second.hold(VARIABLE):
            assert second.share(VARIABLE) == 0.5  # its first read is already paced to its share
            assert first.share(VARIABLE) == 1.0
            await clock.advance(RENEW_SECONDS)
            assert first.share(VARIABLE) == second.share(VARIABLE) == 0.5
            await clock.advance(10 * RENEW_SECONDS)  # renewals keep both leases alive
            assert first.share(VARIABLE) == second.share(VARIABLE) == 0.5
            assert set(_stored(store)) == {"host-1:7", "host-2:7"}
        # The second's last trigger ended: it gives its lease back at its next renewal, the first then has all.
        await clock.advance(RENEW_SECONDS)
        assert set(_stored(store)) == {"host-1:7"}
        assert second.share(VARIABLE) == 1.0
        await clock.advance(RENEW_SECONDS)
        assert first.share(VARIABLE) == 1.0


async def test_a_dead_process_share_returns_to_the_survivor_when_its_lease_expires() -> None:
    store, clock = FakeVariables(), FakeClock()
    survivor, victim = _process(store, clock, "a:1"), _process(store, clock, "b:1")
    async with survivor.hold(VARIABLE):
        await clock.advance(7)  # the two renew out of step
        holding = victim.hold(VARIABLE)
        await holding.__aenter__()
        await clock.advance(RENEW_SECONDS)  # the victim has just renewed, the survivor 7 s before
        assert survivor.share(VARIABLE) == 0.5
        killed_at = clock.now
        victim._keys[VARIABLE].task.cancel()  # SIGKILL: no renewal, no lease given back
        await _settle()
        await clock.advance(LEASE_SECONDS - 1)
        assert survivor.share(VARIABLE) == 0.5  # still within the victim's lease
        await clock.advance(2)
        assert survivor.share(VARIABLE) == 1.0
        assert clock.now - killed_at <= LEASE_SECONDS + 1  # at the expiry, not a renewal period after it
        assert set(_stored(store)) == {"a:1"}


async def test_a_lost_update_is_repaired_at_the_next_renewal() -> None:
    store, clock = FakeVariables(), FakeClock()
    first, second = _process(store, clock, "a:1"), _process(store, clock, "b:1")
    async with first.hold(VARIABLE), second.hold(VARIABLE):
        await clock.advance(RENEW_SECONDS)
        assert first.share(VARIABLE) == second.share(VARIABLE) == 0.5
        # The first read before the second wrote, then wrote what it read: the second's lease is lost.
        store.store[VARIABLE] = json.dumps({"a:1": clock.now + LEASE_SECONDS})
        await clock.advance(RENEW_SECONDS + RENEW_JITTER)
        assert set(_stored(store)) == {"a:1", "b:1"}  # the second wrote its lease back
        await clock.advance(RENEW_SECONDS + RENEW_JITTER)  # the first may have over-counted for one renewal
        assert first.share(VARIABLE) == second.share(VARIABLE) == 0.5


async def test_a_failing_store_keeps_the_last_share_never_a_larger_one(caplog: pytest.LogCaptureFixture) -> None:
    store, clock = FailingVariables(), FakeClock()
    first, second = _process(store, clock, "a:1"), _process(store, clock, "b:1")
    async with first.hold(VARIABLE), second.hold(VARIABLE):
        await clock.advance(RENEW_SECONDS)
        assert first.share(VARIABLE) == 0.5
        store.failing = True
        await clock.advance(5 * LEASE_SECONDS)
        assert first.share(VARIABLE) == second.share(VARIABLE) == 0.5
        assert "Could not renew this process's lease" in caplog.text
        assert "secret-key" not in caplog.text


async def test_a_store_that_keeps_failing_is_reported_once_until_it_recovers(
    caplog: pytest.LogCaptureFixture,
) -> None:
    store, clock = FailingVariables(), FakeClock()
    process = _process(store, clock, "a:1")
    caplog.set_level(logging.DEBUG, logger=budget_leases.__name__)
    async with process.hold(VARIABLE):
        store.failing = True
        await clock.advance(10 * RENEW_SECONDS)
        failures = [r for r in caplog.records if "Could not renew" in r.getMessage()]
        assert len(failures) >= 9
        assert [r.levelno for r in failures] == [logging.WARNING] + [logging.DEBUG] * (len(failures) - 1)
        store.failing = False
        await clock.advance(RENEW_SECONDS)
        assert [r.levelno for r in caplog.records if "is kept again" in r.getMessage()] == [logging.INFO]
        store.failing = True
        await clock.advance(RENEW_SECONDS)  # failing again after a recovery is news again
        failures = [r for r in caplog.records if "Could not renew" in r.getMessage()]
        assert failures[-1].levelno == logging.WARNING


async def test_a_process_whose_first_renewal_fails_keeps_the_whole_configured_share() -> None:
    store, clock = FailingVariables(), FakeClock()
    store.failing = True
    process = _process(store, clock, "a:1")
    async with process.hold(VARIABLE):
        assert process.share(VARIABLE) == 1.0


async def test_an_unreadable_value_is_rewritten(caplog: pytest.LogCaptureFixture) -> None:
    store, clock = FakeVariables(), FakeClock()
    store.store[VARIABLE] = "[1, 2"
    process = _process(store, clock, "a:1")
    async with process.hold(VARIABLE):
        assert process.share(VARIABLE) == 1.0
        assert _stored(store) == {"a:1": clock.now + LEASE_SECONDS}
    assert "cannot be read" in caplog.text


def test_the_variable_names_a_hash_of_the_key_and_none_is_taken_when_a_share_is_set(
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    assert "secret-key" not in VARIABLE
    assert lease_variable("https://api.dune.com/api", "other-key") != VARIABLE
    monkeypatch.delenv("AIRFLOW__DUNE__BUDGET_SHARE", raising=False)
    assert lease_for("https://api.dune.com/api", "secret-key", paced=True) == VARIABLE
    assert lease_for("https://api.dune.com/api", "secret-key", paced=False) is None
    monkeypatch.setenv("AIRFLOW__DUNE__BUDGET_SHARE", "0.5")
    assert lease_for("https://api.dune.com/api", "secret-key", paced=True) is None
