"""Operator that runs a Dune pipeline (a query with its materialized-view lineage, or an explicit node graph)."""

from __future__ import annotations

import time
from collections.abc import Mapping, Sequence
from datetime import timedelta
from typing import TYPE_CHECKING, Any

from airflow.configuration import conf
from airflow.exceptions import AirflowException

from airflow_provider_dune.api.errors import DuneConfigurationError, DuneError
from airflow_provider_dune.api.models import PipelineStatus
from airflow_provider_dune.api.validation import (
    validate_performance,
    validate_pipeline_nodes,
    validate_query_id,
    validate_query_parameters,
)
from airflow_provider_dune.hooks.dune import DuneHook
from airflow_provider_dune.links import DuneQueryLink
from airflow_provider_dune.triggers.pipeline import DunePipelineTrigger
from airflow_provider_dune.utils import run_registry
from airflow_provider_dune.utils.polling import SUCCESS, TIMEOUT, PollTarget, decide, validate_event
from airflow_provider_dune.version_compat import BaseOperator

if TYPE_CHECKING:
    from airflow.sdk import Context

XCOM_PIPELINE_EXECUTION_ID = "pipeline_execution_id"
DEFAULT_TIMEOUT = timedelta(hours=24)


def _is_template(value: Any) -> bool:
    return isinstance(value, str) and ("{{" in value or "{%" in value)


def _seconds(value: timedelta | float | int | None, name: str) -> float | None:
    if value is None:
        return None
    seconds = value.total_seconds() if isinstance(value, timedelta) else value
    if isinstance(seconds, bool) or not isinstance(seconds, (int, float)) or seconds <= 0:
        raise DuneConfigurationError(f"{name} must be a positive number of seconds or a timedelta, got {value!r}")
    return float(seconds)


class DuneExecutePipelineOperator(BaseOperator):
    """Run a Dune pipeline and (by default) wait for it to finish.

    Give either ``query_id`` (Dune builds the pipeline from the query's materialized-view lineage) or ``nodes``
    (an explicit pipeline in Dune's node shape). The pipeline execution id is pushed to XCom under
    ``pipeline_execution_id`` before waiting; the return value is a JSON summary with the final state, the
    per-node states and each node's execution id.

    :param query_id: Dune query id to run as a query pipeline (templated).
    :param nodes: explicit pipeline nodes, e.g. ``[{"id": 1, "query_execution": {"query_id": 1234}},
        {"id": 2, "dependencies": [1], "materialized_view_refresh": {"name": "dune.team.result_x"}}]``
        (templated; validated locally: unique ids, known dependencies, no cycles, one action per node).
    :param performance: ``medium`` or ``large`` (templated; query pipelines only, nodes carry their own).
    :param query_parameters: query parameters, e.g. ``{"date": "{{ ds }}"}`` (templated).
    :param dune_conn_id: Airflow connection of type ``dune`` (templated).
    :param wait_for_completion: wait for the pipeline; with ``False`` the task ends once Dune accepted the run
        (pair it with :class:`~airflow_provider_dune.sensors.pipeline.DunePipelineSensor`).
    :param deferrable: wait in the triggerer instead of a worker slot; defaults to Airflow's
        ``[operators] default_deferrable``.
    :param poll_interval: seconds between status calls (keep >= 10 s on Dune's Free plan: 40 reads/minute).
    :param timeout: longest wait for the pipeline (seconds or timedelta, ``None`` for no limit). When it
        passes, a final status check is made, then the still-running node executions are cancelled and the
        task fails.
    :param reuse_existing_execution: when a retry of this task instance finds the pipeline it started still
        running (same request), wait for that run instead of starting a second billed one.
    :param cancel_on_kill: cancel running node executions when the task is killed (``on_kill``) or marked
        failed while deferred (Airflow 3.3+).
    """

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
        dune_conn_id: str = DuneHook.default_conn_name,
        wait_for_completion: bool = True,
        deferrable: bool = conf.getboolean("operators", "default_deferrable", fallback=False),
        poll_interval: timedelta | float = 30.0,
        timeout: timedelta | float | None = DEFAULT_TIMEOUT,
        reuse_existing_execution: bool = True,
        cancel_on_kill: bool = True,
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
        self.dune_conn_id = dune_conn_id
        self.wait_for_completion = wait_for_completion
        self.deferrable = deferrable
        self.poll_interval = _seconds(poll_interval, "poll_interval") or 30.0
        self.timeout = _seconds(timeout, "timeout")
        self.reuse_existing_execution = reuse_existing_execution
        self.cancel_on_kill = cancel_on_kill
        self.pipeline_execution_id: str | None = None
        self._validate_arguments(allow_templates=True)

    # -- arguments ----------------------------------------------------------------------------------------

    def _validate_arguments(self, *, allow_templates: bool) -> dict[str, Any]:
        """Validate (and normalise) the request; at parse time, still-unrendered templates are skipped."""

        def check(value: Any, validator: Any) -> Any:
            if allow_templates and _is_template(value):
                return value
            return validator(value)

        if self.nodes is not None:
            nodes = self.nodes
            if allow_templates and (_is_template(nodes) or "{{" in repr(nodes)):
                return {"nodes": nodes}
            return {"nodes": validate_pipeline_nodes(nodes)}
        return {
            "query_id": check(self.query_id, validate_query_id),
            "performance": check(self.performance, validate_performance),
            "query_parameters": check(self.query_parameters, validate_query_parameters),
        }

    @property
    def hook(self) -> DuneHook:
        return DuneHook(self.dune_conn_id)

    def _target(self, pipeline_execution_id: str) -> PollTarget:
        return PollTarget(XCOM_PIPELINE_EXECUTION_ID, pipeline_execution_id, f"Dune pipeline {pipeline_execution_id}")

    # -- execute ------------------------------------------------------------------------------------------

    def execute(self, context: Context) -> dict[str, Any]:
        request = self._validate_arguments(allow_templates=False)
        fingerprint = run_registry.request_fingerprint(request)
        hook = self.hook
        status = self._reattach(context, hook, fingerprint)
        if status is None:
            pipeline_execution_id = self._start(hook, request)
            run_registry.remember(context, pipeline_execution_id, fingerprint)
            status = None
        else:
            pipeline_execution_id = status.pipeline_execution_id
        self.pipeline_execution_id = pipeline_execution_id
        context["ti"].xcom_push(key=XCOM_PIPELINE_EXECUTION_ID, value=pipeline_execution_id)

        if not self.wait_for_completion:
            status = status or hook.get_pipeline_status(pipeline_execution_id)
            self.log.info("Not waiting for %s: %s", pipeline_execution_id, status.progress_summary())
            run_registry.forget(context)
            return status.to_dict()

        end_time = time.time() + self.timeout if self.timeout is not None else None
        if self.deferrable:
            target = self._target(pipeline_execution_id)
            try:
                first: PipelineStatus | BaseException = status or hook.get_pipeline_status(pipeline_execution_id)
            except DuneError as err:
                first = err
            step = decide(target, first, now=time.time(), end_time=end_time, poll_interval=self.poll_interval)
            if step.event is not None:
                return self.execute_complete(context, step.event)
            self.defer(
                trigger=DunePipelineTrigger(
                    pipeline_execution_id=pipeline_execution_id,
                    dune_conn_id=self.dune_conn_id,
                    poll_interval=self.poll_interval,
                    end_time=end_time,
                    cancel_on_kill=self.cancel_on_kill,
                ),
                method_name="execute_complete",
                timeout=None,
            )
        return self.execute_complete(context, self._wait_in_worker(hook, pipeline_execution_id, end_time))

    def _start(self, hook: DuneHook, request: Mapping[str, Any]) -> str:
        if "nodes" in request:
            pipeline_execution_id = hook.execute_pipeline(request["nodes"])
            self.log.info("Started Dune pipeline %s with %d node(s)", pipeline_execution_id, len(request["nodes"]))
        else:
            pipeline_execution_id = hook.execute_query_pipeline(
                request["query_id"], request["performance"], request["query_parameters"]
            )
            self.log.info(
                "Started Dune pipeline %s for query %s (%s)",
                pipeline_execution_id,
                request["query_id"],
                DuneQueryLink.url_for(request["query_id"]),
            )
        return pipeline_execution_id

    def _reattach(self, context: Context, hook: DuneHook, fingerprint: str) -> PipelineStatus | None:
        """The still-running pipeline a previous try of this task instance started, if any."""
        if not self.reuse_existing_execution:
            return None
        previous = run_registry.recall(context, fingerprint)
        if not previous:
            return None
        try:
            status = hook.get_pipeline_status(previous)
        except DuneError as err:
            self.log.warning(
                "Could not check the pipeline %s of a previous try (%s); starting a new one", previous, err
            )
            return None
        if status.is_terminal:
            self.log.info(
                "The pipeline %s of a previous try already ended (%s); starting a new one",
                previous,
                status.outcome.value,
            )
            return None
        self.log.info("Re-attaching to pipeline %s started by a previous try: %s", previous, status.progress_summary())
        return status

    def _wait_in_worker(self, hook: DuneHook, pipeline_execution_id: str, end_time: float | None) -> dict[str, Any]:
        target = self._target(pipeline_execution_id)
        errors = 0
        last: PipelineStatus | None = None
        last_summary = None
        while True:
            result: PipelineStatus | BaseException
            try:
                result = hook.get_pipeline_status(pipeline_execution_id)
                errors, last = 0, result
                if result.progress_summary() != last_summary:
                    last_summary = result.progress_summary()
                    self.log.info("%s: %s", target.label, last_summary)
            except DuneError as err:
                errors += 1
                result = err
                self.log.warning("Status call for %s failed (%d in a row): %s", target.label, errors, err)
            step = decide(
                target,
                result,
                now=time.time(),
                end_time=end_time,
                poll_interval=self.poll_interval,
                consecutive_errors=errors,
                last_snapshot=last,
            )
            if step.event is not None:
                return step.event
            time.sleep(step.wait)

    def execute_complete(self, context: Context, event: dict[str, Any] | None = None) -> dict[str, Any]:
        """Act on the final event: return the summary on success, otherwise cancel what still runs and fail."""
        pipeline_execution_id = self.pipeline_execution_id or (event or {}).get(XCOM_PIPELINE_EXECUTION_ID)
        if not isinstance(pipeline_execution_id, str) or not pipeline_execution_id:
            raise AirflowException(f"received a trigger event without a pipeline execution id: {event!r}")
        self.pipeline_execution_id = pipeline_execution_id
        status, message, details = validate_event(event, self._target(pipeline_execution_id))
        if status == SUCCESS:
            self.log.info(message)
            run_registry.forget(context)
            return dict(details or {"pipeline_execution_id": pipeline_execution_id, "outcome": SUCCESS})
        cancelled = self._cancel_running_nodes(pipeline_execution_id, details)
        run_registry.forget(context)
        if cancelled:
            message += f"\nCancelled {cancelled} still-running node execution(s) so they use no more credits."
        if status == TIMEOUT and self.timeout is not None:
            message += f"\nTimeout was {self.timeout:g} s; raise `timeout` if the pipeline legitimately needs longer."
        raise AirflowException(message)

    def _cancel_running_nodes(self, pipeline_execution_id: str, details: Mapping[str, Any] | None) -> int:
        """Best effort: cancel every node execution that has started and not finished; return how many."""
        hook = self.hook
        try:
            running = [(n.label, n.execution_id) for n in hook.get_pipeline_status(pipeline_execution_id).running_nodes]
        except DuneError as err:
            self.log.warning("Could not read pipeline %s to cancel its running nodes: %s", pipeline_execution_id, err)
            running = [
                (f"node {n.get('node_id')}", n.get("execution_id"))
                for n in (details or {}).get("nodes", [])
                if n.get("execution_id") and n.get("state") in ("pending", "executing", "unknown")
            ]
        cancelled = 0
        for label, execution_id in running:
            if not execution_id:
                continue
            try:
                if hook.cancel_execution(execution_id):
                    cancelled += 1
                self.log.info("Cancelled %s (execution %s)", label, execution_id)
            except DuneError as err:
                self.log.warning("Could not cancel %s (execution %s): %s", label, execution_id, err)
        return cancelled

    def on_kill(self) -> None:
        """Cancel the running node executions when the task is killed while waiting in the worker."""
        if self.cancel_on_kill and self.pipeline_execution_id:
            self._cancel_running_nodes(self.pipeline_execution_id, None)
