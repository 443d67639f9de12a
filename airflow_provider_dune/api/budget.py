"""Pacing the requests of an API key to its budget, and backing off together after a 429.

Dune allows each key a number of reads and of writes (runs started) per minute: 40 and 15 on the Free plan. Every
hook in a process (all triggers of a triggerer, a worker's tasks) shares one :class:`KeyPacer` per key and
budget, from :data:`PACERS`; the sync and the async transport both wait for their turn with it
(:meth:`KeyPacer.wait`, :meth:`KeyPacer.await_turn`) and tell it how Dune answered
(:meth:`KeyPacer.rate_limited`, :meth:`KeyPacer.succeeded`).

Pace: each request takes the next free send slot at the key's rate (a generic cell-rate algorithm with a burst
of :data:`BURST`) and waits until then, so waiting runs share the budget in turn: with N runs and a budget of B
reads a minute, each is read at most every N/B minutes, and Dune never has to answer 429 because of this
process. When requests have to wait, they queue in order of urgency: each is ranked by the time it asked, less
:data:`URGENCY_HEAD_START` seconds times its urgency (how likely the read is to find its run finished, set by
the trigger in :data:`READ_URGENCY`), so the runs nearest their expected end are read first, and a request that
waited that much longer goes before any new one (nothing starves). A waiting request sleeps until its place's
slot and looks again, as a more urgent one may have gone ahead of it meanwhile; the sync hook (threads) and the
async hook (event loops) wait the same way.

After a 429 (another process uses the same key, or the plan is smaller than configured):

* cooldown: every request with the key waits until the cooldown is over: ``Retry-After`` when Dune sends one
  (up to the retry policy's ``max_retry_after``), otherwise twice ``retry_min_wait``, doubling with each further
  429 up to ``retry_max_wait`` and shrinking a step per minute without one. 429s to requests sent before the
  cooldown began are one overload and count once. A paced key's queue then goes on one slot at a time;
  requests of an unpaced key are spread over one more cooldown length so they do not all go out at once;
* slowdown: a paced key's rate is lowered by a fifth (429s within :data:`LOWER_AT_MOST_EVERY` seconds of each
  other count once) down to :data:`MIN_FRACTION` of the configured rate, and recovers by
  :data:`RECOVERY_PER_MINUTE` of it per minute without a 429. Keys used without pacing are never lowered.
"""

from __future__ import annotations

import asyncio
import bisect
import contextlib
import contextvars
import hashlib
import itertools
import random
import threading
import time
from collections.abc import Callable, Generator

from airflow_provider_dune.api.endpoint_table import Bucket
from airflow_provider_dune.api.retry import RetryPolicy

#: Requests that may go out back to back before pacing starts (a new task's first status read is not held up).
BURST = 2
#: A 429 lowers a paced key's rate to this share of the rate in force.
LOWER_FACTOR = 0.8
#: Share of the configured rate a lowered key wins back per minute without a 429.
RECOVERY_PER_MINUTE = 0.05
#: The lowest share of the configured rate a key is lowered to.
MIN_FRACTION = 0.05
#: 429s closer together than this are one overload (requests already in flight), so they lower the pace once.
LOWER_AT_MOST_EVERY = 10.0
#: Dune's budgets are per minute: the 429 cooldown shortens one step per minute without a 429.
COOLDOWN_RECOVERY = 60.0
#: Seconds of queueing a request of urgency 1.0 is credited with over one of urgency 0.0.
URGENCY_HEAD_START = 30.0

#: How likely the reads of the current task are to find their run finished (0..1), as set by a trigger around its
#: status read: the rank of a read waiting for a slot (see :class:`KeyPacer`).
READ_URGENCY: contextvars.ContextVar[float] = contextvars.ContextVar("dune_read_urgency", default=0.5)


class KeyPacer:
    """When the requests of one key's budget (reads, or runs started) may go out, in this process.

    :param clock: monotonic clock (injectable for tests).
    :param jitter: returns a float in [0, 1) (injectable for tests).
    """

    def __init__(
        self, *, clock: Callable[[], float] = time.monotonic, jitter: Callable[[], float] = random.random
    ) -> None:
        self._clock = clock
        self._jitter = jitter
        self._lock = threading.Lock()
        self._next_slot = 0.0  # theoretical time of the next request at the current rate
        self._queue: list[tuple[float, int]] = []  # (rank, arrival) of the requests waiting, most urgent first
        self._arrivals = itertools.count()
        self._fraction = 1.0  # share of the configured rate in force (lowered after 429s)
        self._recovered_at = 0.0  # when the lowered fraction last grew back
        self._lowered_at: float | None = None
        self._not_before = 0.0  # end of the cooldown after a 429
        self._cooldown = 0.0
        self._strikes = 0  # 429s not yet forgiven: the next cooldown doubles with each
        self._strikes_changed = 0.0

    def turns(self, per_minute: float, *, latest: float | None = None) -> Generator[float, None, None]:
        """Yield the seconds to sleep, until the request may go out (then the slot is taken and the iterator ends).

        :param per_minute: this process's rate for the key (``0``: no pacing, only the cooldown after a 429).
        :param latest: seconds from now not to wait past: the request then goes out outside the budget, without a
            slot.
        """
        with self._lock:
            now = self._clock()
            until = None if latest is None else now + max(0.0, latest)
            if per_minute <= 0:
                pause = self._cooldown_left(now)
                if until is not None:
                    pause = min(pause, until - now)
            else:
                urgency = min(max(READ_URGENCY.get(), 0.0), 1.0)
                ticket = (now - URGENCY_HEAD_START * urgency, next(self._arrivals))
                bisect.insort(self._queue, ticket)
        if per_minute <= 0:
            if pause > 0:
                yield pause
            return
        try:
            while True:
                with self._lock:
                    now = self._clock()
                    start = max(self._next_start(now, per_minute), self._not_before)
                    interval = self._interval(per_minute)
                    pause = start + bisect.bisect_left(self._queue, ticket) * interval - now
                    last = False
                    if until is not None and now + pause > until:
                        self._queue.remove(ticket)  # the deadline comes first: go then, without a slot
                        pause, last = until - now, True
                    elif pause <= 0:
                        self._next_slot = start + interval
                        self._queue.remove(ticket)
                        return
                if pause > 0:
                    yield pause
                if last:
                    return
        finally:
            with self._lock:
                if ticket in self._queue:  # given up (cancelled) while waiting
                    self._queue.remove(ticket)

    def wait(self, per_minute: float, *, latest: float | None = None) -> float:
        """Sleep until the request may go out (see :meth:`turns`); return the seconds slept."""
        slept = 0.0
        with contextlib.closing(self.turns(per_minute, latest=latest)) as turns:
            for pause in turns:
                time.sleep(pause)
                slept += pause
        return slept

    async def await_turn(self, per_minute: float, *, latest: float | None = None) -> float:
        """:meth:`wait` in an event loop."""
        slept = 0.0
        with contextlib.closing(self.turns(per_minute, latest=latest)) as turns:
            for pause in turns:
                await asyncio.sleep(pause)
                slept += pause
        return slept

    def queued(self) -> int:
        """Requests of this process waiting for a slot."""
        with self._lock:
            return len(self._queue)

    def rate_limited(self, retry_after: float | None, retry: RetryPolicy, per_minute: float) -> float:
        """Dune answered 429: start (or lengthen) the cooldown and, if paced, lower the pace; return the cooldown.

        :param retry_after: the server's ``Retry-After`` in seconds, if it sent one.
        :param retry: the hook's retry policy: ``2 * min_wait`` is the first cooldown without ``Retry-After``,
            ``max_wait`` the longest; ``max_retry_after`` caps ``Retry-After``.
        :param per_minute: this process's rate for the key (``0``: unpaced, the pace is not lowered).
        """
        with self._lock:
            now = self._clock()
            if per_minute > 0:
                self._lower(now)
            if now < self._not_before and retry_after is None:
                # Sent before the current cooldown began (the same burst): that 429 is already accounted for.
                return self._cooldown
            self._strikes += 1
            if retry_after is not None:
                cooldown = min(float(retry_after), retry.max_retry_after)
            else:
                cooldown = min(retry.max_wait, 2 * retry.min_wait * 2 ** (self._strikes - 1))
            self._cooldown = cooldown
            self._not_before = max(self._not_before, now + cooldown)
            self._next_slot = max(self._next_slot, self._not_before)  # no burst right after the cooldown
            self._strikes_changed = now
            return cooldown

    def succeeded(self) -> None:
        """A request went through; after a minute without 429s the next cooldown is halved."""
        with self._lock:
            if self._strikes:
                now = self._clock()
                if now - self._strikes_changed >= COOLDOWN_RECOVERY:
                    self._strikes -= 1
                    self._strikes_changed = now

    @property
    def fraction(self) -> float:
        """The share of the configured rate in force (1.0 until a 429)."""
        with self._lock:
            self._recover(self._clock())
            return self._fraction

    def _cooldown_left(self, now: float) -> float:
        remaining = self._not_before - now
        return remaining + self._jitter() * self._cooldown if remaining > 0 else 0.0

    def _interval(self, per_minute: float) -> float:
        return 60.0 / (per_minute * self._fraction)

    def _next_start(self, now: float, per_minute: float) -> float:
        self._recover(now)
        return max(self._next_slot, now - BURST * self._interval(per_minute))

    def _lower(self, now: float) -> None:
        self._recover(now)
        if self._lowered_at is not None and now - self._lowered_at < LOWER_AT_MOST_EVERY:
            return
        self._fraction = max(MIN_FRACTION, self._fraction * LOWER_FACTOR)
        self._recovered_at = self._lowered_at = now

    def _recover(self, now: float) -> None:
        if self._fraction < 1.0:
            minutes = (now - self._recovered_at) / 60.0
            if minutes > 0:
                self._fraction = min(1.0, self._fraction + RECOVERY_PER_MINUTE * minutes)
                self._recovered_at = now


class KeyPacers:
    """The :class:`KeyPacer` of each key and budget, made on first use."""

    def __init__(self, factory: Callable[[], KeyPacer] = KeyPacer) -> None:
        self._factory = factory
        self._lock = threading.Lock()
        self._pacers: dict[str, KeyPacer] = {}

    @staticmethod
    def key_for(base_url: str, api_key: str, bucket: Bucket) -> str:
        """Identify one budget (Dune counts ``write``: execute/refresh, and ``read``: everything else, apart)
        without keeping the API key itself in another structure."""
        return hashlib.sha256(f"{base_url}\0{api_key}\0{bucket}".encode()).hexdigest()

    def get(self, base_url: str, api_key: str, bucket: Bucket) -> KeyPacer:
        """The pacer of ``api_key``'s ``bucket`` budget at ``base_url``."""
        key = self.key_for(base_url, api_key, bucket)
        with self._lock:
            pacer = self._pacers.get(key)
            if pacer is None:
                pacer = self._pacers[key] = self._factory()
            return pacer


#: The pacers every hook in this process uses.
PACERS = KeyPacers()
