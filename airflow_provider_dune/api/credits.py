"""The credit guard: refuse a billed start when the billing period's credits reached the connection's ceiling.

Pure rules, shared by the sync and async hooks: which ceiling applies (:class:`CreditGuard`), what the usage
read says (:meth:`CreditGuard.refusal`), and a per-key cache so the guard reads ``POST /v1/usage`` (free, but
counted in the key's read budget) at most once a minute per process (:class:`UsageCache`).

The guard compares the credits already used with the ceiling; a run's own cost is not known before it ran, so
runs started within one cache period of crossing the ceiling can still go out. A per-run warning threshold
(:func:`run_cost_warning`) tells when one run cost more than expected.
"""

from __future__ import annotations

import hashlib
import threading
import time
from collections.abc import Callable
from dataclasses import dataclass

from airflow_provider_dune.api.models import CreditUsage

#: The guard reads the usage at most this often per API key and process (seconds).
USAGE_CACHE_SECONDS = 60.0


@dataclass(frozen=True)
class CreditGuard:
    """The connection's credit settings (connection extras).

    :param credit_limit: credits the billing period may use before billed starts are refused (0: no limit).
    :param credit_limit_percent: the same as a percentage of the plan's included credits (0: no limit). With
        both set, the lower ceiling applies.
    :param start_when_usage_unknown: when the usage cannot be read, start anyway (``False``, the default:
        refuse, since the guard cannot tell whether the ceiling was reached).
    :param run_credit_warning: log a warning when one run cost more than this many credits (0: never).
    """

    credit_limit: float = 0.0
    credit_limit_percent: float = 0.0
    start_when_usage_unknown: bool = False
    run_credit_warning: float = 0.0

    @property
    def active(self) -> bool:
        """A ceiling is set, so billed starts read the usage first."""
        return self.credit_limit > 0 or self.credit_limit_percent > 0

    def ceiling(self, usage: CreditUsage) -> tuple[float, str] | None:
        """``(credits, where it comes from)`` of the lowest ceiling that applies, or ``None``."""
        ceilings: list[tuple[float, str]] = []
        if self.credit_limit > 0:
            ceilings.append((self.credit_limit, f"credit_limit = {self.credit_limit:g}"))
        if self.credit_limit_percent > 0 and usage.credits_included:
            ceilings.append(
                (
                    usage.credits_included * self.credit_limit_percent / 100,
                    f"credit_limit_percent = {self.credit_limit_percent:g} % of the plan's "
                    f"{usage.credits_included:g} included credits",
                )
            )
        return min(ceilings) if ceilings else None

    def refusal(self, usage: CreditUsage | None, conn_id: str, *, unknown_reason: str | None = None) -> str | None:
        """Why a billed start must not be sent, or ``None`` to send it.

        :param usage: the period's usage, ``None`` when it could not be read (``unknown_reason`` says why).
        """
        if not self.active:
            return None
        where = f"Airflow connection {conn_id!r}"
        if usage is None or usage.credits_used is None:
            if self.start_when_usage_unknown:
                return None
            reason = unknown_reason or "Dune's usage answer has no credits_used"
            return (
                f"Not starting a billed run: the credit guard of {where} could not read this billing period's "
                f"credits ({reason}). Nothing was sent. Set the connection extra start_when_usage_unknown to "
                "true to start runs when the usage cannot be read."
            )
        ceiling = self.ceiling(usage)
        if ceiling is None:
            if self.start_when_usage_unknown:
                return None
            return (
                f"Not starting a billed run: {where} sets credit_limit_percent but Dune's usage answer has no "
                "included credits to take it from. Nothing was sent. Set credit_limit (credits) instead."
            )
        limit, source = ceiling
        if usage.credits_used < limit:
            return None
        period = f" ({usage.period_start} to {usage.period_end})" if usage.period_start and usage.period_end else ""
        return (
            f"Not starting a billed run: this billing period{period} has used {usage.credits_used:,.2f} credits, "
            f"at or above the ceiling of {limit:,.2f} credits set by {where} ({source}). Nothing was sent. "
            "Raise the ceiling in the connection's extra, or wait for the next billing period."
        )


def run_cost_warning(cost: float | None, guard: CreditGuard, what: str) -> str | None:
    """A warning line when ``what`` cost more than the connection's ``run_credit_warning``, else ``None``."""
    if cost is None or guard.run_credit_warning <= 0 or cost <= guard.run_credit_warning:
        return None
    return (
        f"{what} cost {cost:,.2f} credits, more than the {guard.run_credit_warning:g} credits set as "
        "run_credit_warning on the connection"
    )


class UsageCache:
    """The last usage read per API key, reused for :data:`USAGE_CACHE_SECONDS` (thread-safe, per process)."""

    def __init__(self, max_age: float = USAGE_CACHE_SECONDS, clock: Callable[[], float] = time.monotonic) -> None:
        self.max_age = max_age
        self._clock = clock
        self._lock = threading.Lock()
        self._entries: dict[str, tuple[float, CreditUsage]] = {}

    @staticmethod
    def key(base_url: str, api_key: str) -> str:
        """A cache key that does not hold the API key itself."""
        return hashlib.sha256(f"{base_url}\0{api_key}".encode()).hexdigest()[:24]

    def get(self, key: str) -> CreditUsage | None:
        with self._lock:
            entry = self._entries.get(key)
            if entry is None or self._clock() - entry[0] >= self.max_age:
                return None
            return entry[1]

    def put(self, key: str, usage: CreditUsage) -> None:
        with self._lock:
            self._entries[key] = (self._clock(), usage)

    def clear(self) -> None:
        with self._lock:
            self._entries.clear()


#: The process's cache, shared by every hook.
USAGE_CACHE = UsageCache()
