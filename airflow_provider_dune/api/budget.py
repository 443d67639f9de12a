"""Pacing requests to an API key's budget, shared by every hook in a process (all triggers of a triggerer).

Dune allows each key a number of reads and of writes (runs started) per minute: 40 and 15 on the Free plan.
:class:`RequestBudget` hands out send times so that the requests of one key never exceed that rate: each
request reserves the next free slot (a generic cell-rate algorithm, with a small burst allowance), and waits
until then. Waiting runs therefore share the budget in turn: with N runs and a budget of B reads a minute,
each is read at most every N/B minutes, and Dune never has to answer 429 because of this process.

Reads of the triggers in one process queue for the key's slots in order of urgency: each waiting read is
served by the time it asked, less a head start of :data:`URGENCY_HEAD_START` seconds times its urgency (how
likely it is to find its run finished, set by the caller in :data:`READ_URGENCY`), so when the budget is short
the runs near their expected end are read first, and a read that waited that much longer goes before any new
one (nothing starves). Calls from threads (a worker's waits) take the next free slot directly.

After a 429 (another process uses the same key, or the plan is smaller than configured) the key's rate is
lowered by a fifth (429s within ten seconds of each other count once: they are one overload), and it recovers
by a twentieth of the configured rate per minute without a 429. Keys used without pacing are never lowered.
"""

from __future__ import annotations

import asyncio
import contextvars
import heapq
import itertools
import threading
import time
from collections.abc import Callable
from dataclasses import dataclass, field

#: Reads that may go out back to back before pacing starts (a new task's first status read is not held up).
BURST = 2
LOWER_FACTOR = 0.8
RECOVERY_PER_MINUTE = 0.05
MIN_FRACTION = 0.05
#: 429s closer together than this are one overload (requests already in flight), so they lower the pace once.
LOWER_AT_MOST_EVERY = 10.0
#: Seconds of queueing a read of urgency 1.0 is credited with over a read of urgency 0.0.
URGENCY_HEAD_START = 30.0

#: Urgency (0..1) of the reads made in the current task: set by a trigger around its status read.
READ_URGENCY: contextvars.ContextVar[float] = contextvars.ContextVar("dune_read_urgency", default=0.5)


@dataclass(order=True)
class _Waiter:
    rank: float
    seq: int
    future: asyncio.Future[None] = field(compare=False)
    loop: asyncio.AbstractEventLoop = field(compare=False)


@dataclass
class _KeyPace:
    next_slot: float = 0.0  # theoretical time of the next request at the current rate
    fraction: float = 1.0  # share of the configured rate in force (lowered after 429s)
    recovered_at: float = 0.0  # when the lowered fraction last grew back
    lowered_at: float | None = None
    waiters: list[_Waiter] = field(default_factory=list)  # heap: lowest rank is served first
    timer: asyncio.TimerHandle | None = None
    timer_loop: asyncio.AbstractEventLoop | None = None


class RequestBudget:
    """Per-key pacing of requests to ``per_minute`` requests a minute (``0``: no pacing).

    :param clock: monotonic clock (injectable for tests).
    """

    def __init__(self, *, clock: Callable[[], float] = time.monotonic) -> None:
        self._clock = clock
        self._lock = threading.RLock()
        self._keys: dict[str, _KeyPace] = {}
        self._seq = itertools.count()
        self._rates: dict[str, float] = {}
        self._first_come: set[str] = set()

    def order_by_urgency(self, key: str, enabled: bool) -> None:
        """Serve ``key``'s waiting reads by urgency (the default) or, ``enabled=False``, first come first served."""
        with self._lock:
            if enabled:
                self._first_come.discard(key)
            else:
                self._first_come.add(key)

    def reserve(self, key: str, per_minute: float) -> float:
        """Book the next send slot of ``key``; returns the seconds to wait before sending (0.0 = now)."""
        if per_minute <= 0:
            return 0.0
        with self._lock:
            pace = self._keys.setdefault(key, _KeyPace())
            self._rates[key] = per_minute
            now = self._clock()
            start = self._next_start(pace, now, per_minute)
            pace.next_slot = start + self._interval(pace, per_minute)
            return max(0.0, start - now)

    async def acquire(self, key: str, per_minute: float, urgency: float | None = None) -> float:
        """Wait for a send slot of ``key``, served by urgency among the reads waiting in this process.

        :param urgency: 0..1, how likely this read is to find its run finished (default: :data:`READ_URGENCY`).
        :return: the seconds waited.
        """
        if per_minute <= 0:
            return 0.0
        loop = asyncio.get_running_loop()
        with self._lock:
            pace = self._keys.setdefault(key, _KeyPace())
            self._rates[key] = per_minute
            now = self._clock()
            start = self._next_start(pace, now, per_minute)
            if start <= now and not pace.waiters:
                pace.next_slot = start + self._interval(pace, per_minute)
                return 0.0
            level = READ_URGENCY.get() if urgency is None else urgency
            if key in self._first_come:
                level = 0.0
            waiter = _Waiter(
                now - URGENCY_HEAD_START * min(max(level, 0.0), 1.0), next(self._seq), loop.create_future(), loop
            )
            heapq.heappush(pace.waiters, waiter)
            self._arm(key, pace, max(0.0, start - now), loop)
        try:
            await waiter.future
        except asyncio.CancelledError:
            with self._lock:
                if not waiter.future.done():
                    waiter.future.cancel()
                elif not waiter.future.cancelled():
                    # The slot was handed over just as this read was given up: pass it to the next waiter.
                    pace.next_slot -= self._interval(pace, per_minute)
                    self._dispatch(key)
            raise
        return max(0.0, self._clock() - now)

    def next_wait(self, key: str, per_minute: float) -> float:
        """Seconds until ``key``'s next free slot, without booking it."""
        if per_minute <= 0:
            return 0.0
        with self._lock:
            pace = self._keys.get(key)
            if pace is None:
                return 0.0
            now = self._clock()
            return max(0.0, self._next_start(pace, now, per_minute) - now)

    def queued(self, key: str) -> int:
        """Reads of ``key`` waiting for a slot in this process."""
        with self._lock:
            pace = self._keys.get(key)
            return sum(1 for w in pace.waiters if not w.future.done()) if pace else 0

    def _interval(self, pace: _KeyPace, per_minute: float) -> float:
        return 60.0 / (per_minute * pace.fraction)

    def _next_start(self, pace: _KeyPace, now: float, per_minute: float) -> float:
        self._recover(pace, now)
        return max(pace.next_slot, now - BURST * self._interval(pace, per_minute))

    def _arm(self, key: str, pace: _KeyPace, delay: float, loop: asyncio.AbstractEventLoop) -> None:
        """Make sure a timer hands out ``key``'s next slot (on a loop that still runs)."""
        timer_loop = pace.timer_loop
        if pace.timer is not None and timer_loop is not None and not timer_loop.is_closed() and timer_loop.is_running():
            return
        pace.timer = loop.call_later(delay, self._dispatch, key)
        pace.timer_loop = loop

    def _dispatch(self, key: str) -> None:
        """Timer callback: hand every slot that is due to the best-ranked waiting read, then re-arm."""
        with self._lock:
            pace = self._keys.get(key)
            if pace is None:
                return
            pace.timer = None
            per_minute = self._rates.get(key, 0.0)
            while pace.waiters:
                if pace.waiters[0].future.done():
                    heapq.heappop(pace.waiters)
                    continue
                now = self._clock()
                start = self._next_start(pace, now, per_minute)
                if start > now:
                    head = pace.waiters[0]
                    if head.loop.is_closed():
                        heapq.heappop(pace.waiters)
                        continue
                    try:
                        head.loop.call_soon_threadsafe(self._rearm, key, start - now)
                    except RuntimeError:  # its loop closed meanwhile
                        heapq.heappop(pace.waiters)
                        continue
                    return
                waiter = heapq.heappop(pace.waiters)
                pace.next_slot = start + self._interval(pace, per_minute)
                try:
                    waiter.loop.call_soon_threadsafe(_release, waiter.future)
                except RuntimeError:  # its loop closed: the slot goes to the next one
                    pace.next_slot = start

    def _rearm(self, key: str, delay: float) -> None:
        """:meth:`_arm` on the loop of the read now first in line (called there by :meth:`_dispatch`)."""
        with self._lock:
            if pace := self._keys.get(key):
                self._arm(key, pace, delay, asyncio.get_running_loop())

    def record_rate_limited(self, key: str) -> float:
        """Dune answered 429 for ``key``: lower its pace; returns the fraction of the configured rate now used."""
        with self._lock:
            pace = self._keys.setdefault(key, _KeyPace())
            now = self._clock()
            self._recover(pace, now)
            if pace.lowered_at is not None and now - pace.lowered_at < LOWER_AT_MOST_EVERY:
                return pace.fraction
            pace.fraction = max(MIN_FRACTION, pace.fraction * LOWER_FACTOR)
            pace.recovered_at = pace.lowered_at = now
            return pace.fraction

    def fraction(self, key: str) -> float:
        """The share of the configured rate in force for ``key`` (1.0 until a 429)."""
        with self._lock:
            pace = self._keys.get(key)
            if pace is None:
                return 1.0
            self._recover(pace, self._clock())
            return pace.fraction

    @staticmethod
    def _recover(pace: _KeyPace, now: float) -> None:
        if pace.fraction < 1.0:
            minutes = (now - pace.recovered_at) / 60.0
            if minutes > 0:
                pace.fraction = min(1.0, pace.fraction + RECOVERY_PER_MINUTE * minutes)
                pace.recovered_at = now


def _release(future: asyncio.Future[None]) -> None:
    if not future.done():
        future.set_result(None)


#: The budget every hook in this process paces with.
BUDGET = RequestBudget()
