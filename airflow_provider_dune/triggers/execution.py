"""Trigger that waits for a single Dune execution (a query run or a materialized view refresh)."""

from __future__ import annotations

from typing import TYPE_CHECKING

from airflow_provider_dune.hooks.dune import DuneHook
from airflow_provider_dune.polling import Snapshot
from airflow_provider_dune.triggers.base import DunePollingTrigger, PollSettings

if TYPE_CHECKING:
    from typing_extensions import Unpack


class DuneExecutionTrigger(DunePollingTrigger):
    """Wait for one Dune execution with the same polling core as
    :class:`~airflow_provider_dune.triggers.pipeline.DunePipelineTrigger`.

    Serialises only the execution id, the connection id and the polling settings: never the API key. Fires one
    small event ``{"status", "message", "execution_id", "timing"}``. A ``COMPLETED_PARTIAL`` result fires
    ``failed``; the operator reads the final status again and decides whether to accept it.

    :param execution_id: the execution to wait for.
    :param cancel_on_kill: cancel the execution when a user kills the deferred task (Airflow 3.3+).
    :param settings: the polling settings of
        :class:`~airflow_provider_dune.triggers.base.DunePollingTrigger` (connection, poll interval, deadline).
    """

    id_field = "execution_id"
    run_noun = "Dune execution"

    def __init__(self, *, execution_id: str, **settings: Unpack[PollSettings]) -> None:
        super().__init__(**settings)
        self.execution_id = execution_id

    async def fetch(self, hook: DuneHook) -> Snapshot:
        return await hook.aget_execution_status(self.execution_id)

    async def on_kill(self) -> None:
        """Cancel the execution when the user kills the deferred task."""
        if not self.cancel_on_kill:
            return
        async with self._hook() as hook:
            try:
                accepted = await hook.acancel_execution(self.execution_id)
                self.log.info("Cancelled Dune execution %s: %s", self.execution_id, accepted)
            except Exception as err:
                self.log.warning("Could not cancel Dune execution %s: %s", self.execution_id, err)
