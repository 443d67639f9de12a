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
from typing import Any

from airflow.triggers import base as _trigger_base
from airflow.triggers.base import TriggerEvent

from airflow_provider_dune.api.errors import DuneAuthError, DuneError, DuneNotFoundError
from airflow_provider_dune.api.models import PipelineOutcome
from airflow_provider_dune.api.validation import validate_seconds, validate_view_name
from airflow_provider_dune.assets import view_uri
from airflow_provider_dune.hooks.dune import DuneHook
from airflow_provider_dune.utils.config import min_poll_interval

# Airflow 2.11 has no event-driven scheduling: the class still imports there, but AssetWatcher does not exist.
_EventTriggerBase: Any = getattr(_trigger_base, "BaseEventTrigger", None) or _trigger_base.BaseTrigger

#: Key of the last refresh handled, in the watched asset's state store (Airflow 3.3+).
WATERMARK_KEY = "dune_last_refresh_execution_id"


def new_refreshes(last_execution_ids: Sequence[str], watermark: str | None) -> list[str]:
    """Refreshes started after ``watermark``, oldest first (Dune lists them newest first).

    Without a watermark (``None``) nothing is new: the latest refresh becomes the starting point, so a watcher
    that starts does not fire for refreshes that happened before it. An empty watermark (the view had never
    been refreshed when the watch started) and a watermark that fell out of Dune's list (more refreshes than it
    lists happened in between) make the whole list new.
    """
    if watermark is None:
        return []
    ids = list(last_execution_ids)
    newer = ids[: ids.index(watermark)] if watermark in ids else ids
    return list(reversed(newer))


class DuneMaterializedViewRefreshTrigger(_EventTriggerBase):
    """Fire an event each time Dune completes a refresh of ``view_name``; failed refreshes fire nothing.

    Polls ``GET /v1/materialized-views/{name}`` every ``poll_interval`` seconds and reads the status of each new
    refresh (``last_execution_ids``) until it ends. The last refresh handled is kept in the watched asset's
    state store (Airflow 3.3+), so a triggerer restart neither replays old refreshes nor misses one that ended
    while it was down; without a store, the watch starts from the latest refresh. Each event is
    ``{"view_name", "uri", "execution_id", "state"}``. Serialises ids and settings only, never the API key.

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
        watermark = await self._load_watermark()
        pending: list[str] = []
        async with DuneHook(self.dune_conn_id) as hook:
            while True:
                try:
                    view = await hook.aget_materialized_view(self.view_name)
                    if watermark is None:
                        watermark = view.last_execution_ids[0] if view.last_execution_ids else ""
                        await self._save_watermark(watermark)
                        self.log.info("Watching %s from refresh %s", self.view_name, watermark or "(none yet)")
                    for execution_id in new_refreshes(view.last_execution_ids, watermark):
                        if execution_id not in pending:
                            pending.append(execution_id)
                    while pending:  # in order: a refresh still running holds back the ones after it
                        status = await hook.aget_execution_status(pending[0])
                        if not status.is_terminal:
                            break
                        execution_id = pending.pop(0)
                        watermark = execution_id
                        if status.outcome is PipelineOutcome.SUCCESS:
                            self.log.info("Dune refreshed %s (execution %s)", self.view_name, execution_id)
                            yield TriggerEvent(
                                {
                                    "view_name": self.view_name,
                                    "uri": view_uri(self.view_name),
                                    "execution_id": execution_id,
                                    "state": status.state.value,
                                }
                            )
                        else:
                            self.log.warning(
                                "Refresh %s of %s ended %s: no event", execution_id, self.view_name, status.describe()
                            )
                        await self._save_watermark(watermark)
                except (DuneNotFoundError, DuneAuthError):
                    raise  # the view is gone or the key cannot see it: say so instead of polling forever
                except DuneError as err:
                    self.log.warning(
                        "Could not read %s, trying again in %gs: %s", self.view_name, self.poll_interval, err
                    )
                await asyncio.sleep(self.poll_interval)

    def _store(self) -> Any:
        return getattr(self, "asset_state_store", None)

    async def _load_watermark(self) -> str | None:
        store = self._store()
        if store is None:
            return None
        try:
            value = await store.aget(WATERMARK_KEY)
        except Exception as err:  # several watched assets, or a store that cannot be read
            self.log.warning("No saved refresh for %s (%s): starting from the latest", self.view_name, err)
            return None
        return value if isinstance(value, str) else None

    async def _save_watermark(self, execution_id: str) -> None:
        store = self._store()
        if store is None or not execution_id:
            return
        try:
            await store.aset(WATERMARK_KEY, execution_id)
        except Exception as err:
            self.log.warning("Could not save the last refresh of %s: %s", self.view_name, err)
