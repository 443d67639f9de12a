"""Pacing requests to an API key's budget, shared by every hook in a process (all triggers of a triggerer).

Dune allows each key a number of reads and of writes (runs started) per minute: 40 and 15 on the Free plan.
:class:`RequestBudget` hands out send times so that the requests of one key never exceed that rate: each
request reserves the next free slot (a generic cell-rate algorithm, with a small burst allowance), and waits
until then. Waiting runs therefore share the budget in turn: with N runs and a budget of B reads a minute,
each is read at most every N/B minutes, and Dune never has to answer 429 because of this process.

After a 429 (another process uses the same key, or the plan is smaller than configured) the key's rate is
lowered by a fifth (429s within ten seconds of each other count once: they are one overload), and it recovers
by a twentieth of the configured rate per minute without a 429. Keys used without pacing are never lowered.
"""

from __future__ import annotations

import threading
import time
from collections.abc import Callable
from dataclasses import dataclass

#: Reads that may go out back to back before pacing starts (a new task's first status read is not held up).
BURST = 2
LOWER_FACTOR = 0.8
RECOVERY_PER_MINUTE = 0.05
MIN_FRACTION = 0.05
#: 429s closer together than this are one overload (requests already in flight), so they lower the pace once.
LOWER_AT_MOST_EVERY = 10.0


@dataclass
class _KeyPace:
    next_slot: float = 0.0  # theoretical time of the next request at the current rate
    fraction: float = 1.0  # share of the configured rate in force (lowered after 429s)
    recovered_at: float = 0.0  # when the lowered fraction last grew back
    lowered_at: float | None = None


class RequestBudget:
    """Per-key pacing of requests to ``per_minute`` requests a minute (``0``: no pacing).

    :param clock: monotonic clock (injectable for tests).
    """

    def __init__(self, *, clock: Callable[[], float] = time.monotonic) -> None:
        self._clock = clock
        self._lock = threading.Lock()
        self._keys: dict[str, _KeyPace] = {}

    def reserve(self, key: str, per_minute: float) -> float:
        """Book the next send slot of ``key``; returns the seconds to wait before sending (0.0 = now)."""
        if per_minute <= 0:
            return 0.0
        with self._lock:
            pace = self._keys.setdefault(key, _KeyPace())
            now = self._clock()
            self._recover(pace, now)
            interval = 60.0 / (per_minute * pace.fraction)
            start = max(pace.next_slot, now - BURST * interval)
            pace.next_slot = start + interval
            return max(0.0, start - now)

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


#: The budget every hook in this process paces with.
BUDGET = RequestBudget()
