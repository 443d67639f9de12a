"""The base of the triggers that wait for one Dune run in the triggerer, so no worker slot is held while Dune
works."""

from __future__ import annotations

import asyncio
import time
from abc import abstractmethod
from collections.abc import AsyncIterator
from typing import Any, TypedDict

from airflow.triggers.base import BaseTrigger, TriggerEvent

from airflow_provider_dune.api.budget import READ_URGENCY
from airflow_provider_dune.api.errors import DuneConnectionError
from airflow_provider_dune.api.forecast import usable_durations
from airflow_provider_dune.api.validation import validate_seconds
from airflow_provider_dune.hooks.dune import DuneHook
from airflow_provider_dune.polling import PollingSession, PollTarget, ReadSchedule, Snapshot
from airflow_provider_dune.utils.budget_leases import LEASES, lease_for
from airflow_provider_dune.utils.timeouts import wait_within

#: How long the status check made at the deadline may take before the trigger gives up on it.
FINAL_CHECK_SECONDS = 5.0


class PollSettings(TypedDict, total=False):
    """The settings every Dune trigger takes besides its run id (see :class:`DunePollingTrigger`)."""

    dune_conn_id: str
    poll_interval: float
    end_time: float | None
    cancel_on_kill: bool
    first_poll_at: float | None
    started_at: float | None
    expected_durations: list[float] | None
    adaptive: bool


class DunePollingTrigger(BaseTrigger):
    """Poll one Dune status endpoint until the run finishes or the deadline passes, then fire one event.

    Subclasses say what to fetch; the loop, backoff on transient errors, deadline and event shape are shared.
    Only reads happen in ``run()``, so a triggerer restart that re-creates the trigger is harmless.

    :param dune_conn_id: Airflow connection of type ``dune``.
    :param poll_interval: the longest wait between two status calls (the bound on detection delay), unless the
        API key's rate budget, shared by every run waiting in the process, forces a longer one (then logged).
    :param end_time: deadline as seconds since the epoch; ``None`` waits without limit.
    :param first_poll_at: no status call before this time (seconds since the epoch). The operator just read the
        status before deferring, so reading again as soon as the triggerer starts the trigger would only spend
        API budget; after a triggerer restart this time has passed and the trigger reads at once.
    """

    #: Name of the run id argument, attribute and event field (``pipeline_execution_id``, ``execution_id``).
    id_field: str = "execution_id"
    #: How logs and events name the run, followed by its id.
    run_noun: str = "Dune execution"

    def __init__(
        self,
        *,
        dune_conn_id: str = DuneHook.default_conn_name,
        poll_interval: float = 30.0,
        end_time: float | None = None,
        cancel_on_kill: bool = True,
        first_poll_at: float | None = None,
        started_at: float | None = None,
        expected_durations: list[float] | None = None,
        adaptive: bool = True,
    ) -> None:
        super().__init__()
        self.dune_conn_id = dune_conn_id
        self.poll_interval = validate_seconds(poll_interval, "poll_interval")
        self.end_time = float(end_time) if end_time is not None else None
        self.cancel_on_kill = cancel_on_kill
        self.first_poll_at = float(first_poll_at) if first_poll_at is not None else None
        self.started_at = float(started_at) if started_at is not None else None
        self.expected_durations = usable_durations(expected_durations)
        self.adaptive = bool(adaptive)

    def serialize(self) -> tuple[str, dict[str, Any]]:
        """Ids and settings only: the API key is looked up from the connection in the triggerer."""
        return (
            f"{type(self).__module__}.{type(self).__qualname__}",
            {
                self.id_field: getattr(self, self.id_field),
                "dune_conn_id": self.dune_conn_id,
                "poll_interval": self.poll_interval,
                "end_time": self.end_time,
                "cancel_on_kill": self.cancel_on_kill,
                "first_poll_at": self.first_poll_at,
                "started_at": self.started_at,
                "expected_durations": self.expected_durations,
                "adaptive": self.adaptive,
            },
        )

    @property
    def target(self) -> PollTarget:
        """What is being waited on (id and label for events and logs)."""
        run_id = getattr(self, self.id_field)
        return PollTarget(self.id_field, run_id, f"{self.run_noun} {run_id}")

    @abstractmethod
    async def fetch(self, hook: DuneHook) -> Snapshot:
        """Read the current status."""

    def _hook(self) -> DuneHook:
        return DuneHook(self.dune_conn_id)

    async def _fetch_before_deadline(self, hook: DuneHook) -> Snapshot:
        """:meth:`fetch`, given up at the deadline (plus a few seconds for the final check made at the deadline):
        a status call that hangs must not hold the task past it."""
        if self.end_time is None:
            return await self.fetch(hook)
        allowed = max(self.end_time - time.time(), 0.0) + FINAL_CHECK_SECONDS
        try:
            return await wait_within(self.fetch(hook), allowed)
        except asyncio.TimeoutError:
            raise DuneConnectionError(
                "the status call was still waiting for Dune's answer at the deadline", request_sent=True
            ) from None

    def _initial_wait(self, now: float) -> float:
        """Seconds to wait before the first status call (never past the deadline)."""
        if self.first_poll_at is None:
            return 0.0
        wait = self.first_poll_at - now
        if self.end_time is not None:
            wait = min(wait, self.end_time - now)
        return max(0.0, wait)

    async def _budget_lease(self, hook: DuneHook) -> str | None:
        """The key's budget leases this trigger's process joins while it waits (``None``: none; a connection that
        cannot be read fails at the first status call instead, as before)."""
        try:
            settings = await hook.aget_settings()
        except Exception:
            return None
        paced = settings.reads_per_minute > 0 or settings.writes_per_minute > 0
        return lease_for(settings.base_url, settings.api_key, paced)

    def read_schedule(self) -> ReadSchedule:
        return ReadSchedule.for_run(
            self.poll_interval, started_at=self.started_at, durations=self.expected_durations, adaptive=self.adaptive
        )

    async def run(self) -> AsyncIterator[TriggerEvent]:
        initial_wait = self._initial_wait(time.time())
        if initial_wait:
            await asyncio.sleep(initial_wait)
        session = PollingSession(self.target, self.read_schedule(), self.end_time, self.log)
        async with self._hook() as hook, LEASES.hold(await self._budget_lease(hook)):
            while True:
                result: Snapshot | BaseException
                urgency = READ_URGENCY.set(session.urgency(time.time()))
                try:
                    result = await self._fetch_before_deadline(hook)
                except Exception as err:
                    result = err
                finally:
                    READ_URGENCY.reset(urgency)
                step = session.after_read(result, time.time())
                if step.event is not None:
                    yield TriggerEvent(step.event)
                    return
                await asyncio.sleep(step.wait)
