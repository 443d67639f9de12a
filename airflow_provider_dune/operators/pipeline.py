"""Operator that runs a Dune pipeline (a query with its materialized-view lineage, or an explicit node graph)."""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from typing import TYPE_CHECKING, Any

from airflow_provider_dune.api.errors import DuneConfigurationError, DuneError
from airflow_provider_dune.api.models import ExecutionStatus, PipelineStatus
from airflow_provider_dune.api.run_report import pipeline_rows, pipeline_summary
from airflow_provider_dune.api.validation import validate_performance, validate_pipeline_nodes
from airflow_provider_dune.assets import RefreshedObject, refreshed_by_pipeline
from airflow_provider_dune.links import DuneQueryLink
from airflow_provider_dune.operators.base import (
    DEFAULT_TIMEOUT,
    DuneRunOperator,
    RunReport,
    is_template,
    query_run_request,
    validated,
)
from airflow_provider_dune.triggers.pipeline import DunePipelineTrigger

if TYPE_CHECKING:
    from airflow_provider_dune.hooks.dune import DuneHook
    from airflow_provider_dune.polling import Snapshot

XCOM_PIPELINE_EXECUTION_ID = "pipeline_execution_id"

__all__ = ["DEFAULT_TIMEOUT", "XCOM_PIPELINE_EXECUTION_ID", "DuneExecutePipelineOperator"]


class DuneExecutePipelineOperator(DuneRunOperator):
    """Run a Dune pipeline and (by default) wait for it to finish.

    Give either ``query_id`` (Dune builds the pipeline from the query's materialized-view lineage) or ``nodes``
    (an explicit pipeline in Dune's node shape). The pipeline execution id is pushed to XCom under
    ``pipeline_execution_id`` before waiting. When the run ends, the task log gets one table with each node's
    query or view, state, queued and run time, execution id and credits, and the return value is a JSON summary
    with the final state and the same per-node data (``queued_seconds``, ``run_seconds``, ``credits``, and the
    run's ``total_credits`` when every started node's is known). Dune's pipeline status has no times or costs,
    so this reads each started node's execution status once: one read per node, paced by the API key's read
    budget like every other status read. On failure, timeout or kill, the node executions still running are
    cancelled.

    :param query_id: Dune query id to run as a query pipeline (templated).
    :param nodes: explicit pipeline nodes, e.g. ``[{"id": 1, "query_execution": {"query_id": 1234}},
        {"id": 2, "dependencies": [1], "materialized_view_refresh": {"name": "dune.team.result_x"}}]``
        (templated; validated locally: unique ids, known dependencies, no cycles, one action per node).
    :param performance: ``medium`` or ``large`` (templated); with ``nodes``, the tier of every node that does
        not set its own.
    :param query_parameters: query parameters, e.g. ``{"date": RUN_DATE}`` with
        :data:`~airflow_provider_dune.schedules.RUN_DATE`, the run's date also for a manual run without a logical
        date (templated).

    Other parameters (``dune_conn_id``, ``wait_for_completion``, ``deferrable``, ``poll_interval``,
    ``timeout``, ``reuse_existing_execution``, ``cancel_on_kill``) are those of
    :class:`~airflow_provider_dune.operators.base.DuneRunOperator`.
    """

    id_field = XCOM_PIPELINE_EXECUTION_ID
    trigger_class = DunePipelineTrigger
    cancelled_noun = "node execution(s)"
    run_kind = "pipeline"
    template_fields: Sequence[str] = ("dune_conn_id", "query_id", "query_parameters", "nodes", "performance")
    template_fields_renderers = {"query_parameters": "json", "nodes": "json"}
    operator_extra_links = (DuneQueryLink(),)
    ui_color = "#ffb199"

    def __init__(
        self,
        *,
        query_id: int | str | None = None,
        nodes: Sequence[Mapping[str, Any]] | str | None = None,
        performance: str = "medium",
        query_parameters: Mapping[str, Any] | str | None = None,
        **kwargs: Any,
    ) -> None:
        super().__init__(**kwargs)
        if (query_id is None) == (nodes is None):
            raise DuneConfigurationError(
                f"{type(self).__name__} needs exactly one of query_id (run a query pipeline) or nodes "
                "(run an explicit pipeline)"
            )
        if nodes is not None and query_parameters is not None:
            raise DuneConfigurationError(
                "query_parameters applies to query_id only; with nodes, put query_parameters inside each "
                "query_execution node"
            )
        self.query_id = query_id
        self.nodes = nodes
        self.performance = performance
        self.query_parameters = query_parameters
        self.build_request(allow_templates=True)

    @property
    def pipeline_execution_id(self) -> str | None:
        """The pipeline this task started or re-attached to."""
        return self.run_id

    @pipeline_execution_id.setter
    def pipeline_execution_id(self, value: str | None) -> None:
        self.run_id = value

    def run_label(self, run_id: str) -> str:
        return f"Dune pipeline {run_id}"

    def refreshed_objects(self, details: Mapping[str, Any]) -> list[RefreshedObject]:
        return refreshed_by_pipeline(details)

    def lineage_subject(self) -> dict[str, Any]:
        query_id = self.query_id if isinstance(self.query_id, int) else None
        return {"operation": "query_pipeline" if self.nodes is None else "pipeline", "query_id": query_id}

    def build_request(self, *, allow_templates: bool) -> dict[str, Any]:
        if self.nodes is not None:
            performance = validated(self.performance, validate_performance, allow_templates=allow_templates)
            if allow_templates and (is_template(self.nodes) or "{{" in repr(self.nodes) or is_template(performance)):
                return {"nodes": self.nodes}
            return {"nodes": validate_pipeline_nodes(self.nodes, default_performance=performance)}
        return query_run_request(
            self.query_id, self.performance, self.query_parameters, allow_templates=allow_templates
        )

    def start_run(self, hook: DuneHook, request: Mapping[str, Any]) -> str:
        if "nodes" in request:
            pipeline_execution_id = hook.execute_pipeline(request["nodes"])
            self.log.info("Started Dune pipeline %s with %d node(s)", pipeline_execution_id, len(request["nodes"]))
        else:
            pipeline_execution_id = hook.execute_query_pipeline(
                request["query_id"], request["performance"], request["query_parameters"]
            )
            self.log.info(
                "Started Dune pipeline %s for query %s: %s",
                pipeline_execution_id,
                request["query_id"],
                DuneQueryLink.url_for(request["query_id"]),
            )
        return pipeline_execution_id

    def where_to_check(self, request: Mapping[str, Any]) -> str:
        if "nodes" in request:
            parts = [
                f"query {n['query_execution']['query_id']}"
                if "query_execution" in n
                else f"materialized view {n['materialized_view_refresh']['name']}"
                for n in request["nodes"][:5]
            ]
            return f"the latest executions of the pipeline's nodes ({', '.join(parts)}) on dune.com"
        return f"the latest executions of query {request['query_id']} at {DuneQueryLink.url_for(request['query_id'])}"

    def get_status(self, hook: DuneHook, run_id: str) -> PipelineStatus:
        return hook.get_pipeline_status(run_id)

    def report(self, hook: DuneHook, status: Snapshot) -> RunReport:
        """The pipeline's summary and table, with each started node's times and credits (one read per node)."""
        if not isinstance(status, PipelineStatus):
            raise TypeError(f"expected a pipeline status, got {type(status).__name__}")
        executions = self.node_executions(hook, status)
        return RunReport(
            pipeline_summary(status, executions), pipeline_rows(status, executions), status.failure_message(executions)
        )

    def node_executions(self, hook: DuneHook, status: PipelineStatus) -> dict[str, ExecutionStatus]:
        """Each started node's execution status, read once; a node whose read fails is reported without times."""
        executions = {}
        for node in status.nodes:
            if not node.execution_id or node.execution_id in executions:
                continue
            try:
                executions[node.execution_id] = hook.get_execution_status(node.execution_id)
            except DuneError as err:
                self.log.warning("Could not read the execution of %s for the report: %s", node.name, err)
        return executions

    def running_executions(
        self, hook: DuneHook, run_id: str, details: Mapping[str, Any] | None, status: Snapshot | None = None
    ) -> list[tuple[str, str]]:
        """Started, unfinished nodes from a fresh status; from the last known summary if Dune is unreachable."""
        try:
            current = status if isinstance(status, PipelineStatus) else hook.get_pipeline_status(run_id)
            return [(n.label, n.execution_id) for n in current.running_nodes if n.execution_id]
        except DuneError as err:
            self.log.warning(
                "Could not read %s; cancelling from its last known status: %s", self.run_label(run_id), err
            )
            return [
                (f"node {n.get('node_id')}", str(n["execution_id"]))
                for n in (details or {}).get("nodes", [])
                if n.get("execution_id") and n.get("state") in ("pending", "executing", "unknown")
            ]
