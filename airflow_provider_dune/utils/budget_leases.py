"""Each triggerer's share of an API key's rate budget, from the processes that run Dune triggers with the key.

Every process that runs Dune triggers for a key keeps a short lease in one Airflow Variable per key
(``airflow_provider_dune_budget_leases_<hash of base URL and key>``, JSON ``{process: expiry}``, expiry in
seconds since the epoch), renewed every :data:`RENEW_SECONDS` (plus up to :data:`RENEW_JITTER`) and valid
for :data:`LEASE_SECONDS`. Its share of the key's budget is 1 / the number of live leases, its own included,
recomputed at each renewal, so triggerers that start or die change the others' share within a renewal (a dead
one's lease is dropped when it expires).

Variables have no compare-and-set: two processes renewing at the same moment may each write the leases they
read, and one lease is lost; its owner writes it back at its next renewal, so the others over-count their share
for at most one renewal period. A process whose lease store fails keeps its last share (at most the whole
budget before its first renewal), never a larger one. Processes that run no trigger (workers, which read a
status once per try) take no lease and pace to the whole budget. ``[dune] budget_share``, when set, overrides
all of this: no lease is taken and every process paces to that share.
"""

from __future__ import annotations

import asyncio
import contextlib
import contextvars
import json
import logging
import math
import os
import random
import socket
import time
from collections.abc import AsyncIterator, Awaitable, Callable
from contextlib import asynccontextmanager
from dataclasses import dataclass, field
from functools import lru_cache
from typing import Any, Protocol

from asgiref.sync import sync_to_async

from airflow_provider_dune.api.credits import UsageCache
from airflow_provider_dune.utils.config import configured_budget_share
from airflow_provider_dune.utils.timeouts import wait_within

log = logging.getLogger(__name__)

KEY_PREFIX = "airflow_provider_dune_budget_leases_"
#: How long a lease lasts without renewal (seconds): three renewals, so one late or lost write does not drop it.
LEASE_SECONDS = 45.0
#: Seconds between two renewals by one process, plus a random part up to :data:`RENEW_JITTER` so that
#: processes started together do not keep renewing (and overwriting each other) at the same moment.
RENEW_SECONDS = 15.0
#: The largest random part added to :data:`RENEW_SECONDS` (seconds).
RENEW_JITTER = 5.0
#: How long a trigger waits for its process's first renewal before its first read (then paces to its last share).
FIRST_RENEWAL_TIMEOUT = 10.0
#: Longest stored value read: more than a few hundred processes' leases is not a value this module wrote.
MAX_VALUE_CHARS = 50_000


class VariableStore(Protocol):
    """The part of Airflow's ``Variable`` the leases use (positional default: Airflow 2.11 and 3 name it apart)."""

    def get(self, key: str, default: Any = None, /) -> Any: ...

    def set(self, key: str, value: str, description: str | None = None) -> None: ...


@lru_cache(maxsize=64)
def lease_variable(base_url: str, api_key: str) -> str:
    """The name of the Variable holding the leases of one key (a hash: never the key itself)."""
    return KEY_PREFIX + UsageCache.key(base_url, api_key)


def process_id() -> str:
    """This process among every host's (a lease's name)."""
    return f"{socket.gethostname()}:{os.getpid()}"


def live_leases(raw: Any, now: float) -> dict[str, float]:
    """The unexpired leases in a stored value; an unreadable value counts as none (the next write replaces it)."""
    if raw is None or raw == "":
        return {}
    try:
        if not isinstance(raw, str) or len(raw) > MAX_VALUE_CHARS:
            raise ValueError(f"not a short JSON text ({type(raw).__name__})")
        leases = json.loads(raw)
        if not isinstance(leases, dict):
            raise ValueError(f"a JSON {type(leases).__name__}, not an object")
    except Exception as err:  # RecursionError for a deeply nested value, among others
        log.warning("The Dune budget leases cannot be read (%s): rewriting them", str(err)[:200])
        return {}
    return {
        str(holder): float(expiry)
        for holder, expiry in leases.items()
        if isinstance(expiry, (int, float)) and math.isfinite(expiry) and expiry > now
    }


@dataclass
class _KeyLeases:
    """One key's lease in this process: how many triggers hold it and the share the last renewal found."""

    variable: str
    holders: int = 0
    share: float = 1.0
    renewed: asyncio.Event = field(default_factory=asyncio.Event)
    task: asyncio.Task[None] | None = None
    #: The last write failed (said once at WARNING; the following failures only at DEBUG until one succeeds).
    failing: bool = False


class BudgetLeases:
    """This process's leases, one per API key its triggers use, renewed while at least one trigger holds it.

    :param store: where leases are kept (Airflow's ``Variable`` unless given).
    :param clock: wall-clock time (leases are compared across hosts).
    :param sleep: how the renewal task waits (tests advance a fake clock).
    """

    def __init__(
        self,
        store: VariableStore | None = None,
        *,
        clock: Callable[[], float] = time.time,
        sleep: Callable[[float], Awaitable[Any]] = asyncio.sleep,
        jitter: Callable[[], float] = random.random,
        holder: str | None = None,
    ) -> None:
        self._store = store
        self._clock = clock
        self._sleep = sleep
        self._jitter = jitter
        self.holder = holder or process_id()
        self._keys: dict[str, _KeyLeases] = {}

    @property
    def store(self) -> VariableStore:
        if self._store is None:
            from airflow_provider_dune.version_compat import Variable

            self._store = Variable
        return self._store

    def share(self, variable: str) -> float:
        """This process's share of the key whose leases ``variable`` holds (1 without a lease)."""
        entry = self._keys.get(variable)
        return entry.share if entry is not None else 1.0

    @asynccontextmanager
    async def hold(self, variable: str | None) -> AsyncIterator[None]:
        """Keep this process's lease on a key while the block runs (``None``: no lease); the first holder waits
        (a few seconds at most) for the first renewal, so its first read is paced to the share it found."""
        if variable is None:
            yield
            return
        entry = self._keys.get(variable)
        if entry is None or (entry.task is not None and entry.task.get_loop() is not asyncio.get_running_loop()):
            entry = self._keys[variable] = _KeyLeases(variable)  # a lease kept by a loop that has ended
        entry.holders += 1
        try:
            if entry.task is None:
                # Outside the trigger's context: the lease is the process's, so its log lines go to the process's
                # log rather than to the task log of whichever trigger came first.
                entry.task = contextvars.Context().run(
                    asyncio.get_running_loop().create_task, self._keep(entry), name=f"dune-budget-lease-{variable}"
                )
            with contextlib.suppress(asyncio.TimeoutError):
                await wait_within(entry.renewed.wait(), FIRST_RENEWAL_TIMEOUT)
            yield
        finally:
            entry.holders -= 1

    async def _keep(self, entry: _KeyLeases) -> None:
        """Renew the lease until no trigger holds it, then give it back."""
        while True:
            if entry.holders <= 0:
                # No await between the check and the removal: a trigger that starts after it takes a new lease.
                if self._keys.get(entry.variable) is entry:
                    del self._keys[entry.variable]
                await self._write(entry, keep=False)
                return
            due = await self._write(entry, keep=True)
            entry.renewed.set()
            await self._sleep(max(0.0, due - self._clock()))

    async def _write(self, entry: _KeyLeases, *, keep: bool) -> float:
        """Renew (``keep``) or give back this process's lease; the time the next renewal is due."""
        try:
            due = await sync_to_async(self._read_modify_write)(entry, keep)
        except Exception as err:
            log.log(
                logging.DEBUG if entry.failing else logging.WARNING,
                "Could not %s this process's lease on a Dune API key's budget (Variable %s): %s; pacing to the "
                "share found before (%.2f of the key's budget) until the Variable can be written again",
                "renew" if keep else "give back",
                entry.variable,
                str(err)[:200],
                entry.share,
            )
            entry.failing = True
            return self._clock() + RENEW_SECONDS
        if entry.failing:
            log.info("This process's lease on a Dune API key's budget is kept again (Variable %s)", entry.variable)
            entry.failing = False
        return due

    def _read_modify_write(self, entry: _KeyLeases, keep: bool) -> float:
        now = self._clock()
        leases = live_leases(self.store.get(entry.variable, None), now)
        leases.pop(self.holder, None)
        others = min(leases.values(), default=math.inf)
        if keep:
            leases[self.holder] = now + LEASE_SECONDS
        self.store.set(
            entry.variable,
            json.dumps(leases, sort_keys=True),
            description="Processes running Dune triggers with one API key and when their lease expires; each "
            "paces to 1 / their number of the key's budget.",
        )
        if keep:
            share = 1.0 / len(leases)
            if share != entry.share:
                log.info(
                    "Processes running Dune triggers with this API key: %d (Variable %s); pacing to %.2f of its budget",
                    len(leases),
                    entry.variable,
                    share,
                )
            entry.share = share
        # Renew early when another lease expires first, so a dead process's share comes back at once.
        return min(now + RENEW_SECONDS + RENEW_JITTER * self._jitter(), others + 0.5)


#: The process's leases, shared by every trigger.
LEASES = BudgetLeases()


def budget_share(base_url: str, api_key: str) -> float:
    """This process's share of one key's budget: ``[dune] budget_share`` when set, else from the leases."""
    configured = configured_budget_share()
    if configured is not None:
        return configured
    return LEASES.share(lease_variable(base_url, api_key))


def lease_for(base_url: str, api_key: str, paced: bool) -> str | None:
    """The leases Variable a trigger using this key joins; ``None`` when ``[dune] budget_share`` is set or the key
    is not paced (``paced``: reads or writes per minute above 0), so no lease is needed."""
    if not paced or configured_budget_share() is not None:
        return None
    return lease_variable(base_url, api_key)
