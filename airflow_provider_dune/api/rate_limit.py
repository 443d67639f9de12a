"""A process-wide pause for every request made with an API key that Dune just rate limited (HTTP 429).

Dune's budgets are per key (the Free plan: 40 reads a minute), but each request retries on its own schedule.
A triggerer polls for many tasks with the same key, so when one poll got a 429, the others kept going and
got 429s too (measured: 20 pipelines at a 10 s interval, three times the Free budget, drew 164 429s in 283
requests, up to 22 requests a second after the first). With this cooldown, a 429 holds back every request
with that key for a while that doubles with each further 429 and shrinks again with successes; waiting
requests are spread over the cooldown so they do not all fire again at the same instant.
"""

from __future__ import annotations

import hashlib
import random
import threading
import time
from collections.abc import Callable
from dataclasses import dataclass

#: Dune's budgets are per minute: a cooldown shortens one step per minute without a 429.
RECOVERY_WINDOW = 60.0


@dataclass
class _KeyState:
    not_before: float = 0.0
    cooldown: float = 0.0
    strikes: int = 0
    last_change: float = 0.0


class RateLimitCooldown:
    """Shared 429 backoff per API key.

    :param clock: monotonic clock (injectable for tests).
    :param jitter: returns a float in [0, 1) (injectable for tests).
    """

    def __init__(
        self, *, clock: Callable[[], float] = time.monotonic, jitter: Callable[[], float] = random.random
    ) -> None:
        self._clock = clock
        self._jitter = jitter
        self._lock = threading.Lock()
        self._keys: dict[str, _KeyState] = {}

    @staticmethod
    def key_for(base_url: str, api_key: str, bucket: str = "read") -> str:
        """Identify one budget (Dune counts ``write``: execute/refresh, and ``read``: everything else, apart)
        without keeping the API key itself in another structure."""
        return hashlib.sha256(f"{base_url}\0{api_key}\0{bucket}".encode()).hexdigest()

    def delay(self, key: str) -> float:
        """Seconds a request with ``key`` should wait before it is sent (0.0 outside a cooldown)."""
        with self._lock:
            state = self._keys.get(key)
            if state is None:
                return 0.0
            remaining = state.not_before - self._clock()
            if remaining <= 0:
                return 0.0
            return remaining + self._jitter() * state.cooldown

    def record_rate_limited(self, key: str, retry_after: float | None, *, base_wait: float, max_wait: float) -> float:
        """A request with ``key`` got a 429: start (or lengthen) the cooldown; return its length.

        :param retry_after: the server's ``Retry-After`` in seconds, if it sent one (used as is, up to max_wait).
        :param base_wait: cooldown after a first 429 without ``Retry-After``; doubles with each further 429.
        :param max_wait: longest cooldown.
        """
        with self._lock:
            state = self._keys.setdefault(key, _KeyState())
            now = self._clock()
            if now < state.not_before and retry_after is None:
                # Sent before the current cooldown began (the same burst): that 429 is already accounted for.
                return state.cooldown
            state.strikes += 1
            if retry_after is not None:
                cooldown = min(float(retry_after), max_wait)
            else:
                cooldown = min(max_wait, base_wait * 2 ** (state.strikes - 1))
            state.cooldown = cooldown
            state.not_before = max(state.not_before, now + cooldown)
            state.last_change = now
            return cooldown

    def record_success(self, key: str) -> None:
        """A request with ``key`` went through; after a minute without 429s the next cooldown is halved."""
        with self._lock:
            state = self._keys.get(key)
            if state is None:
                return
            now = self._clock()
            if now - state.last_change >= RECOVERY_WINDOW:
                state.strikes = max(0, state.strikes - 1)
                state.last_change = now
            if state.strikes == 0 and state.not_before <= now:
                del self._keys[key]


#: The cooldown shared by every :class:`~airflow_provider_dune.hooks.dune.DuneHook` in the process.
COOLDOWN = RateLimitCooldown()
