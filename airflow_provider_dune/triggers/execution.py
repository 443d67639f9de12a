"""Trigger that waits for a single Dune execution (a query run or a materialized view refresh)."""

from __future__ import annotations

from airflow_provider_dune.hooks.dune import DuneHook
from airflow_provider_dune.polling import PollTarget, Snapshot
from airflow_provider_dune.triggers.base import DunePollingTrigger


class DuneExecutionTrigger(DunePollingTrigger):
    """Wait for one Dune execution with the same polling core as
    :class:`~airflow_provider_dune.triggers.pipeline.DunePipelineTrigger`.

    Serialises only the execution id, the connection id and the polling settings: never the API key. Fires one
    small event ``{"status", "message", "execution_id", "timing"}``. A ``COMPLETED_PARTIAL`` result fires
    ``failed``; the operator reads the final status again and decides whether to accept it.

    :param execution_id: the execution to wait for.
    :param cancel_on_kill: cancel the execution when a user kills the deferred task (Airflow 3.3+).
    """

    id_field = "execution_id"

    def __init__(
        self,
        *,
        execution_id: str,
        dune_conn_id: str = DuneHook.default_conn_name,
        poll_interval: float = 30.0,
        end_time: float | None = None,
        cancel_on_kill: bool = True,
        first_poll_at: float | None = None,
        started_at: float | None = None,
        expected_durations: list[float] | None = None,
        adaptive: bool = True,
    ) -> None:
        super().__init__(
            dune_conn_id=dune_conn_id,
            poll_interval=poll_interval,
            end_time=end_time,
            cancel_on_kill=cancel_on_kill,
            first_poll_at=first_poll_at,
            started_at=started_at,
            expected_durations=expected_durations,
            adaptive=adaptive,
        )
        self.execution_id = execution_id

    @property
    def target(self) -> PollTarget:
        return PollTarget(self.id_field, self.execution_id, f"Dune execution {self.execution_id}")

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
