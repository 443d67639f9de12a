"""Trigger that waits for a Dune pipeline execution in the triggerer."""

from __future__ import annotations

from airflow_provider_dune.hooks.dune import DuneHook
from airflow_provider_dune.polling import PollTarget, Snapshot
from airflow_provider_dune.triggers.base import DunePollingTrigger


class DunePipelineTrigger(DunePollingTrigger):
    """Wait for a Dune pipeline execution.

    Serialises only the pipeline execution id, the connection id and the polling settings: never the API key,
    which is looked up from the connection in the triggerer.

    Fires exactly one small event ``{"status": success|failed|cancelled|timeout|error, "message",
    "pipeline_execution_id", "timing"}``: ``message`` is one line (the first cause of a failure, shortened),
    ``timing`` says when the run was started and seen running and finished (its duration is learnt). No node
    list: the operator reads the final status again when it resumes.

    :param pipeline_execution_id: the run to wait for.
    :param cancel_on_kill: when a user marks the deferred task failed/success or clears it (Airflow 3.3+
        calls ``on_kill`` on the trigger), cancel the node executions still running.
    """

    id_field = "pipeline_execution_id"

    def __init__(
        self,
        *,
        pipeline_execution_id: str,
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
        self.pipeline_execution_id = pipeline_execution_id

    @property
    def target(self) -> PollTarget:
        return PollTarget(
            "pipeline_execution_id", self.pipeline_execution_id, f"Dune pipeline {self.pipeline_execution_id}"
        )

    async def fetch(self, hook: DuneHook) -> Snapshot:
        return await hook.aget_pipeline_status(self.pipeline_execution_id)

    async def on_kill(self) -> None:
        """Cancel the pipeline's running node executions when the user kills the deferred task."""
        if not self.cancel_on_kill:
            return
        async with self._hook() as hook:
            status = await hook.aget_pipeline_status(self.pipeline_execution_id)
            for node in status.running_nodes:
                try:
                    accepted = await hook.acancel_execution(node.execution_id or "")
                    self.log.info("Cancelled %s (execution %s): %s", node.label, node.execution_id, accepted)
                except Exception as err:
                    self.log.warning("Could not cancel %s (execution %s): %s", node.label, node.execution_id, err)
