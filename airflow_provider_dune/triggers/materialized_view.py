"""Event trigger for data-aware scheduling: fires when Dune finishes a refresh of a materialized view.

Use it in an ``AssetWatcher`` (Airflow 3) so that a DAG runs whenever the view is refreshed, whoever started the
refresh: a DAG of yours, someone on dune.com, or Dune itself on the view's own schedule (``cron_expression``)::

    from airflow.sdk import Asset, AssetWatcher
    from airflow_provider_dune.triggers.materialized_view import DuneMaterializedViewRefreshTrigger

    prices = Asset(
        "dune://views/dune.team.result_prices",
        watchers=[
            AssetWatcher(
                name="dune_prices_refreshed",
                trigger=DuneMaterializedViewRefreshTrigger(view_name="dune.team.result_prices", poll_interval=300),
            )
        ],
    )
"""

from __future__ import annotations

import asyncio
from collections.abc import AsyncIterator, Sequence
from dataclasses import dataclass
from typing import Any, Literal

from airflow.triggers import base as _trigger_base
from airflow.triggers.base import TriggerEvent

from airflow_provider_dune.api.errors import DuneAuthError, DuneConfigurationError, DuneNotFoundError
from airflow_provider_dune.api.models import ExecutionStatus, PipelineOutcome
from airflow_provider_dune.api.validation import validate_execution_id, validate_seconds, validate_view_name
from airflow_provider_dune.assets import view_uri
from airflow_provider_dune.hooks.dune import DuneHook
from airflow_provider_dune.utils.config import min_poll_interval

# Airflow 2.11 has no event-driven scheduling: the class still imports there, but AssetWatcher does not exist.
_EventTriggerBase: Any = getattr(_trigger_base, "BaseEventTrigger", None) or _trigger_base.BaseTrigger

#: Key of the watch's state (see :class:`WatchState`) in the watched asset's state store (Airflow 3.3+).
WATERMARK_KEY = "dune_last_refresh_execution_id"
#: Longest wait, in seconds, between reads while the view cannot be read (or ``poll_interval`` if longer): after
#: an error the wait starts at ``poll_interval`` and doubles up to this.
MAX_ERROR_BACKOFF = 600.0
#: Refreshes still running that one watch follows; past this, the oldest is given up, with a warning.
MAX_RUNNING_REFRESHES = 20
#: Reads in a row in which Dune says it does not know a running refresh before the watch gives that refresh up.
MAX_MISSING_READS = 10


@dataclass(frozen=True)
class WatchState:
    """What a watch has handled, saved in the watched asset's state store so that a restart resumes from it.

    :param last_seen: newest refresh taken in (``""``: the view had none when the watch started). Every refresh
        up to it has fired, ended without an event (failed, cancelled) or is in ``running``.
    :param running: refreshes taken in that had not ended yet, oldest first; each fires once when it completes.
    """

    last_seen: str
    running: tuple[str, ...] = ()

    def to_stored(self) -> dict[str, Any]:
        return {"last_seen": self.last_seen, "running": list(self.running)}

    @classmethod
    def from_stored(cls, value: Any) -> WatchState:
        """Read a saved state; earlier versions saved the last refresh handled as a string.

        :raises ValueError: the value is not a state this trigger saved.
        """
        if isinstance(value, str) and value:  # earlier versions never saved an empty one
            value = {"last_seen": value, "running": []}
        if not isinstance(value, dict) or set(value) != {"last_seen", "running"}:
            raise ValueError(f"not a saved watch state: {value!r:.200}")
        last_seen, running = value["last_seen"], value["running"]
        if not isinstance(running, list) or len(running) > MAX_RUNNING_REFRESHES:
            raise ValueError(f"not a list of at most {MAX_RUNNING_REFRESHES} refreshes: {running!r:.200}")
        try:
            ids = [validate_execution_id(item) for item in ([last_seen] if last_seen != "" else []) + running]
        except DuneConfigurationError as err:
            raise ValueError(str(err)) from None
        return cls(last_seen, tuple(ids[1:] if last_seen != "" else ids))


def new_refreshes(last_execution_ids: Sequence[str], watermark: str | None) -> list[str]:
    """Refreshes started after ``watermark``, oldest first (Dune lists them newest first).

    Without a watermark (``None``) nothing is new. An empty watermark (the view had never been refreshed when
    the watch started) makes the whole list new; a watermark that is not in the list makes nothing new (the
    caller starts again from the latest refresh, see the trigger's ``run``).
    """
    if not watermark:
        return list(reversed(last_execution_ids)) if watermark == "" else []
    ids = list(last_execution_ids)
    return list(reversed(ids[: ids.index(watermark)])) if watermark in ids else []


def error_backoff(poll_interval: float, failures: int) -> float:
    """Seconds to wait after ``failures`` failed reads in a row: ``poll_interval``, doubling up to
    :data:`MAX_ERROR_BACKOFF` (never below ``poll_interval``)."""
    cap = max(poll_interval, MAX_ERROR_BACKOFF)
    return min(cap, poll_interval * 2.0 ** min(max(failures - 1, 0), 64))


class DuneMaterializedViewRefreshTrigger(_EventTriggerBase):
    """Fire an event each time Dune completes a refresh of ``view_name``; failed refreshes fire nothing.

    Polls ``GET /v1/materialized-views/{name}`` every ``poll_interval`` seconds and reads the status of each new
    refresh (``last_execution_ids``) until it ends; refreshes fire in the order they end, so one that stays
    running holds back none of the later ones (it fires when it completes). Each event is
    ``{"view_name", "uri", "execution_id", "state"}``: ``execution_id`` identifies the refresh.

    What it has handled is kept in the watched asset's state store (Airflow 3.3+), so a triggerer restart
    neither replays old refreshes nor misses one that ended while it was down (when more than the 10 refreshes
    Dune lists happened meanwhile, it starts again from the latest, with a warning). The state is saved before
    each event is handed to Airflow, so an event fires at most once: a triggerer that stops in the second
    between the two loses that event rather than starting the downstream DAG (and the billed Dune runs in it)
    twice. Without a store, or with a saved state it cannot read (logged as a warning), the watch starts from
    the latest refresh without firing for it.

    No error ends the watch: a failed read (a 5xx, a network error, a 401/403 or a 404, also a lasting one
    when the view was deleted) is logged as a warning and read again after ``poll_interval``, doubling up to
    :data:`MAX_ERROR_BACKOFF`. Serialises ids and settings only, never the API key.

    :param view_name: full name of the view, e.g. ``dune.team.result_prices``.
    :param dune_conn_id: the Dune connection.
    :param poll_interval: seconds between reads (at least ``[dune] min_poll_interval``); every read counts
        against the API key's rate budget.
    """

    def __init__(
        self, *, view_name: str, dune_conn_id: str = DuneHook.default_conn_name, poll_interval: float = 300.0
    ) -> None:
        super().__init__()
        self.view_name = validate_view_name(view_name)
        self.dune_conn_id = dune_conn_id
        self.poll_interval = validate_seconds(poll_interval, "poll_interval", minimum=min_poll_interval())

    def serialize(self) -> tuple[str, dict[str, Any]]:
        return (
            f"{type(self).__module__}.{type(self).__qualname__}",
            {"view_name": self.view_name, "dune_conn_id": self.dune_conn_id, "poll_interval": self.poll_interval},
        )

    async def run(self) -> AsyncIterator[TriggerEvent]:
        state = await self._load_state()
        failures = 0
        missing: dict[str, int] = {}  # reads in a row in which Dune did not know a running refresh
        async with DuneHook(self.dune_conn_id) as hook:
            while True:
                try:
                    ids = (await hook.aget_materialized_view(self.view_name)).last_execution_ids
                    if failures:
                        self.log.info("%s can be read again after %d failed reads", self.view_name, failures)
                    failures = 0
                    state = await self._take_in(state, ids)
                    for execution_id in state.running:
                        status = await self._status(hook, execution_id, missing)
                        if status == "unknown" or (isinstance(status, ExecutionStatus) and not status.is_terminal):
                            continue
                        state = WatchState(state.last_seen, tuple(i for i in state.running if i != execution_id))
                        # Saved before the event leaves: a stop in between loses the event instead of firing it
                        # twice on restart (each event may start a DAG run, and with it billed Dune runs).
                        await self._save_state(state)
                        if isinstance(status, ExecutionStatus) and status.outcome is PipelineOutcome.SUCCESS:
                            self.log.info("Dune refreshed %s (execution %s)", self.view_name, execution_id)
                            yield TriggerEvent(
                                {
                                    "view_name": self.view_name,
                                    "uri": view_uri(self.view_name),
                                    "execution_id": execution_id,
                                    "state": status.state.value,
                                }
                            )
                        elif isinstance(status, ExecutionStatus):
                            self.log.warning(
                                "Refresh %s of %s ended %s: no event", execution_id, self.view_name, status.describe()
                            )
                    wait = self.poll_interval
                except Exception as err:  # no error ends the watch: an ended watcher is restarted without delay
                    failures += 1
                    wait = error_backoff(self.poll_interval, failures)
                    self.log.warning("%s; next read in %gs (%d failed in a row)", self._explain(err), wait, failures)
                await asyncio.sleep(wait)

    async def _take_in(self, state: WatchState | None, ids: Sequence[str]) -> WatchState:
        """``state`` with the refreshes Dune lists after it added to ``running``; saved when it changed."""
        latest = ids[0] if ids else ""
        if state is None:
            self.log.info("Watching %s from refresh %s", self.view_name, latest or "(none yet)")
            state = WatchState(latest)
            await self._save_state(state)
            return state
        if state.last_seen and ids and state.last_seen not in ids:
            self.log.warning(
                "The last refresh of %s this watch handled (%s) is not among the %d Dune lists (more refreshes "
                "happened while the watch was stopped, or its saved state is wrong): starting from the latest "
                "refresh %s without firing for the ones in between",
                self.view_name,
                state.last_seen,
                len(ids),
                latest or "(none)",
            )
            new: list[str] = []
        else:
            new = new_refreshes(ids, state.last_seen)
        running = list(state.running) + [i for i in new if i not in state.running]
        for given_up in running[:-MAX_RUNNING_REFRESHES]:
            self.log.warning("Refresh %s of %s is still running: no longer followed", given_up, self.view_name)
        taken = WatchState(latest or state.last_seen, tuple(running[-MAX_RUNNING_REFRESHES:]))
        if taken != state:
            await self._save_state(taken)
        return taken

    async def _status(
        self, hook: DuneHook, execution_id: str, missing: dict[str, int]
    ) -> ExecutionStatus | Literal["unknown", "given_up"]:
        """Status of a running refresh. A 404 makes it ``"unknown"`` for this read (it stays followed) and
        ``"given_up"`` after :data:`MAX_MISSING_READS` in a row; other errors propagate (the whole read is tried
        again later)."""
        try:
            status = await hook.aget_execution_status(execution_id)
        except DuneNotFoundError as err:
            missing[execution_id] = missing.get(execution_id, 0) + 1
            if missing[execution_id] < MAX_MISSING_READS:
                self.log.warning(
                    "Dune does not know refresh %s of %s (%d of %d reads in a row, then it is no longer followed): %s",
                    execution_id,
                    self.view_name,
                    missing[execution_id],
                    MAX_MISSING_READS,
                    err,
                )
                return "unknown"
            missing.pop(execution_id)
            self.log.warning(
                "Dune does not know refresh %s of %s (%d reads in a row): no longer followed, no event for it",
                execution_id,
                self.view_name,
                MAX_MISSING_READS,
            )
            return "given_up"
        missing.pop(execution_id, None)
        return status

    def _explain(self, err: Exception) -> str:
        """A warning's first part: what went wrong, and what the user can do about a lasting error."""
        if isinstance(err, DuneNotFoundError):
            return (
                f"Could not read {self.view_name}: Dune says it does not exist or is private ({err}); the watch "
                "goes on in case it comes back, check the name and that the key's team can see it"
            )
        if isinstance(err, DuneAuthError):
            return (
                f"Could not read {self.view_name}: the API key of connection {self.dune_conn_id!r} was refused "
                f"({err}); the watch goes on, check the key"
            )
        return f"Could not read {self.view_name}: {type(err).__name__}: {err}"

    def _store(self) -> Any:
        return getattr(self, "asset_state_store", None)

    async def _load_state(self) -> WatchState | None:
        store = self._store()
        if store is None:
            return None
        try:
            value = await store.aget(WATERMARK_KEY)
        except Exception as err:  # several watched assets, or a store that cannot be read
            self.log.warning("No saved state for %s (%s): starting from the latest refresh", self.view_name, err)
            return None
        if value is None:
            return None
        try:
            return WatchState.from_stored(value)
        except ValueError as err:
            self.log.warning(
                "The saved state of the watch of %s (asset state key %r) cannot be read (%s): starting from the "
                "latest refresh without firing for earlier ones",
                self.view_name,
                WATERMARK_KEY,
                err,
            )
            return None

    async def _save_state(self, state: WatchState) -> None:
        store = self._store()
        if store is None:
            return
        try:
            await store.aset(WATERMARK_KEY, state.to_stored())
        except Exception as err:
            self.log.warning(
                "Could not save the watch state of %s (%s): a triggerer restart before the next successful save "
                "resumes from an older saved state (this refresh may fire again) or, with none, from the latest",
                self.view_name,
                err,
            )
