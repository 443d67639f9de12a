"""Sensor that waits for an existing Dune query execution (a query run or a materialized view refresh)."""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from typing import Any

from airflow_provider_dune.api.models import ExecutionStatus, is_partial_result
from airflow_provider_dune.hooks.dune import DuneHook
from airflow_provider_dune.sensors.base import DuneRunSensor
from airflow_provider_dune.triggers.execution import DuneExecutionTrigger


class DuneExecutionSensor(DuneRunSensor):
    """Wait until a Dune execution finishes; fail with Dune's error if it did not succeed.

    Pairs with ``DuneExecuteQueryOperator`` or ``DuneRefreshMaterializedViewOperator`` run with
    ``wait_for_completion=False``, or with an execution started outside Airflow. Works in ``poke`` and
    ``reschedule`` modes, or deferred to the triggerer (``deferrable=True``); never cancels the execution.

    :param execution_id: the execution to wait for, e.g.
        ``"{{ ti.xcom_pull(task_ids='run_query', key='execution_id') }}"`` (templated).
    :param allow_partial_results: accept ``QUERY_STATE_COMPLETED_PARTIAL`` (a result Dune truncated); by
        default such a run fails the sensor.
    :param dune_conn_id: Airflow connection of type ``dune`` (templated).
    :param deferrable: wait in the triggerer; defaults to Airflow's ``[operators] default_deferrable``.
    """

    template_fields: Sequence[str] = ("execution_id", "dune_conn_id")
    id_field = "execution_id"
    trigger_class = DuneExecutionTrigger
    run_noun = "Dune execution"
    started_by = "DuneExecuteQueryOperator or DuneRefreshMaterializedViewOperator"

    def __init__(self, *, execution_id: str, allow_partial_results: bool = False, **kwargs: Any) -> None:
        super().__init__(**kwargs)
        self.execution_id = execution_id
        self._check_id_at_parse_time()
        self.allow_partial_results = allow_partial_results

    def fetch_status(self, hook: DuneHook, run_id: str) -> ExecutionStatus:
        return hook.get_execution_status(run_id)

    def accept_failure(self, details: Mapping[str, Any] | None) -> bool:
        partial = is_partial_result(details)
        if partial and self.allow_partial_results:
            self.log.warning("Accepting a partial result (allow_partial_results=True): Dune truncated it")
        return partial and self.allow_partial_results
