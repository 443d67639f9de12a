"""Trigger that waits for a Dune pipeline execution in the triggerer."""

from __future__ import annotations

from typing import TYPE_CHECKING

from airflow_provider_dune.hooks.dune import DuneHook
from airflow_provider_dune.polling import Snapshot
from airflow_provider_dune.triggers.base import DunePollingTrigger, PollSettings

if TYPE_CHECKING:
    from typing_extensions import Unpack


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
    :param settings: the polling settings of
        :class:`~airflow_provider_dune.triggers.base.DunePollingTrigger` (connection, poll interval, deadline).
    """

    id_field = "pipeline_execution_id"
    run_noun = "Dune pipeline"

    def __init__(self, *, pipeline_execution_id: str, **settings: Unpack[PollSettings]) -> None:
        super().__init__(**settings)
        self.pipeline_execution_id = pipeline_execution_id

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
