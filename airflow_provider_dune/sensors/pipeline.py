"""Sensor that waits for an existing Dune pipeline execution."""

from __future__ import annotations

from collections.abc import Sequence
from typing import Any

from airflow_provider_dune.api.models import PipelineStatus
from airflow_provider_dune.hooks.dune import DuneHook
from airflow_provider_dune.sensors.base import DuneRunSensor
from airflow_provider_dune.triggers.pipeline import DunePipelineTrigger


class DunePipelineSensor(DuneRunSensor):
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
    id_field = "pipeline_execution_id"
    trigger_class = DunePipelineTrigger
    run_noun = "Dune pipeline"
    started_by = "DuneExecutePipelineOperator"

    def __init__(self, *, pipeline_execution_id: str, **kwargs: Any) -> None:
        super().__init__(**kwargs)
        self.pipeline_execution_id = pipeline_execution_id
        self._check_id_at_parse_time()

    def fetch_status(self, hook: DuneHook, run_id: str) -> PipelineStatus:
        return hook.get_pipeline_status(run_id)
