"""Sensor that waits for an existing Dune pipeline execution."""

from __future__ import annotations

import time
from collections.abc import Sequence
from datetime import timedelta
from typing import TYPE_CHECKING, Any

from airflow.configuration import conf
from airflow.exceptions import AirflowException

from airflow_provider_dune.api.errors import DuneConfigurationError
from airflow_provider_dune.api.models import PipelineOutcome
from airflow_provider_dune.api.validation import validate_execution_id
from airflow_provider_dune.hooks.dune import DuneHook
from airflow_provider_dune.triggers.pipeline import DunePipelineTrigger
from airflow_provider_dune.utils.polling import SUCCESS, TIMEOUT, PollTarget, validate_event
from airflow_provider_dune.version_compat import (
    AirflowFailException,
    AirflowSensorTimeout,
    AirflowSkipException,
    BaseSensorOperator,
)

if TYPE_CHECKING:
    from airflow.sdk import Context


class DunePipelineSensor(BaseSensorOperator):
    """Wait until a Dune pipeline execution finishes; fail (with each failed node's error) if it did not succeed.

    Works in ``poke`` and ``reschedule`` modes, or deferred to the triggerer (``deferrable=True``). ``timeout``,
    ``poke_interval`` and ``soft_fail`` behave as for any Airflow sensor. The sensor never cancels the
    pipeline: it only watches a run that something else started.

    :param pipeline_execution_id: the run to wait for, e.g.
        ``"{{ ti.xcom_pull(task_ids='start', key='pipeline_execution_id') }}"`` (templated).
    :param dune_conn_id: Airflow connection of type ``dune`` (templated).
    :param deferrable: wait in the triggerer; defaults to Airflow's ``[operators] default_deferrable``.
    """

    template_fields: Sequence[str] = ("pipeline_execution_id", "dune_conn_id")
    ui_color = "#ffd4c4"

    def __init__(
        self,
        *,
        pipeline_execution_id: str,
        dune_conn_id: str = DuneHook.default_conn_name,
        deferrable: bool = conf.getboolean("operators", "default_deferrable", fallback=False),
        poke_interval: timedelta | float = 30.0,
        **kwargs: Any,
    ) -> None:
        super().__init__(poke_interval=poke_interval, **kwargs)
        self.pipeline_execution_id = pipeline_execution_id
        self.dune_conn_id = dune_conn_id
        self.deferrable = deferrable

    def _target(self) -> PollTarget:
        return PollTarget(
            "pipeline_execution_id", self.pipeline_execution_id, f"Dune pipeline {self.pipeline_execution_id}"
        )

    def _validated_id(self) -> str:
        try:
            return validate_execution_id(self.pipeline_execution_id, what="pipeline_execution_id")
        except DuneConfigurationError as err:
            raise AirflowFailException(
                f"{err}. Pass the id pushed by DuneExecutePipelineOperator, e.g. "
                "\"{{ ti.xcom_pull(task_ids='<task>', key='pipeline_execution_id') }}\""
            ) from None

    def poke(self, context: Context) -> bool:
        self.pipeline_execution_id = self._validated_id()
        status = DuneHook(self.dune_conn_id).get_pipeline_status(self.pipeline_execution_id)
        self.log.info("%s: %s", self._target().label, status.progress_summary())
        if status.outcome is PipelineOutcome.RUNNING:
            return False
        if status.outcome is PipelineOutcome.SUCCESS:
            return True
        # The run is over and did not succeed: re-poking cannot change that, so fail without retries.
        raise AirflowFailException(status.failure_message())

    def execute(self, context: Context) -> Any:
        if not self.deferrable:
            return super().execute(context)
        try:
            done = self.poke(context)
        except AirflowFailException as err:
            # BaseSensorOperator.execute applies soft_fail/never_fail; this path bypasses it, so do it here.
            if self.soft_fail or getattr(self, "never_fail", False):
                raise AirflowSkipException(f"Skipping due to soft_fail/never_fail: {err}") from err
            raise
        if done:
            return None
        self.defer(
            trigger=DunePipelineTrigger(
                pipeline_execution_id=self.pipeline_execution_id,
                dune_conn_id=self.dune_conn_id,
                poll_interval=float(self.poke_interval),
                end_time=time.time() + float(self.timeout),
                cancel_on_kill=False,
                first_poll_at=time.time() + float(self.poke_interval),  # poke() just read the status
            ),
            method_name="execute_complete",
            timeout=None,
        )

    def execute_complete(self, context: Context, event: dict[str, Any] | None = None) -> None:
        status, message, _ = validate_event(event, self._target())
        if status == SUCCESS:
            self.log.info(message)
            return
        if status == TIMEOUT:
            raise AirflowSensorTimeout(f"{message} (sensor timeout {float(self.timeout):g} s)")
        if status == "error":
            raise AirflowException(message)
        raise AirflowFailException(message)
