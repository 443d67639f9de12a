"""Operators that run one Dune query, or refresh one materialized view, and wait for the execution."""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from datetime import datetime, timedelta, timezone
from typing import TYPE_CHECKING, Any

from airflow_provider_dune.api.errors import DuneAPIError, DuneConfigurationError, DuneResponseError
from airflow_provider_dune.api.models import (
    ExecutionStatus,
    is_partial_result,
    parse_result_metadata,
    parse_timestamp,
    result_age_seconds,
)
from airflow_provider_dune.api.paging import json_bytes_per_row
from airflow_provider_dune.api.run_report import execution_row, execution_summary
from airflow_provider_dune.api.states import RunState
from airflow_provider_dune.api.validation import (
    validate_positive_int,
    validate_seconds,
    validate_view_name,
    validate_view_performance,
)
from airflow_provider_dune.assets import RefreshedObject, refreshed_by_query, refreshed_by_view_refresh
from airflow_provider_dune.links import DuneQueryLink
from airflow_provider_dune.operators.base import DuneRunOperator, RunReport, is_template, query_run_request, validated
from airflow_provider_dune.triggers.execution import DuneExecutionTrigger
from airflow_provider_dune.utils.query_versions import current_since, note
from airflow_provider_dune.utils.results import output_format_for, write_pages

if TYPE_CHECKING:
    from airflow.sdk import Context

    from airflow_provider_dune.hooks.dune import DuneHook
    from airflow_provider_dune.polling import Snapshot

DEFAULT_MAX_XCOM_ROWS = 1000
#: How far in the future a result's time may be (Dune's clock vs the worker's) before its age is not trusted.
CLOCK_SKEW_ALLOWANCE_SECONDS = 60


def _not_of_current_query(query_id: int, query: Mapping[str, Any], submitted: datetime) -> str | None:
    """Why a result submitted at ``submitted`` may not be what the query (``GET /v1/query/{id}``) computes now.

    Dune's latest result says neither the parameter values it ran with nor the query version, so:

    - a query with parameters is never reused (the latest run may have used other values than the defaults);
    - the result must be newer than the query's last change: when Dune's answer carries ``updated_at``, the
      result must have been submitted after it; when it does not (Dune's documented answer has only ``version``,
      a counter of changes), a query never changed since it was created (``version`` 1) qualifies, and so does a
      result started after this deployment first saw the current version
      (:mod:`~airflow_provider_dune.utils.query_versions`; the sync operator notes the versions it makes).
    """
    parameters = query.get("parameters")
    if parameters:
        names = ", ".join(str(p.get("key")) if isinstance(p, Mapping) else str(p) for p in parameters)
        return f"the query has parameters ({names}) and Dune's latest result does not say which values it ran with"
    try:
        updated = parse_timestamp(query.get("updated_at"), "the query's updated_at")
    except DuneResponseError as err:
        return str(err)
    if updated is not None:
        if submitted <= updated:
            return f"the query was changed at {query.get('updated_at')}, after this result was started (older SQL)"
        return None
    version = query.get("version")
    if version == 1:
        return None
    since = current_since(query_id, version)
    if since is not None:
        if submitted <= since:
            return f"it was started before version {version} of the query was first seen here ({since.isoformat()})"
        return None
    note(query_id, version)
    return (
        f"the query was changed since it was created (version {version!r}) and Dune does not say when, so the "
        "result may be of older SQL; this version is noted now, so results started from now on can be reused"
    )


class _DuneExecutionOperator(DuneRunOperator):
    """A run that is one Dune execution: shared status, trigger and cancel logic."""

    id_field = "execution_id"
    trigger_class = DuneExecutionTrigger

    def get_status(self, hook: DuneHook, run_id: str) -> ExecutionStatus:
        return hook.get_execution_status(run_id)

    def running_executions(
        self, hook: DuneHook, run_id: str, details: Mapping[str, Any] | None, status: Snapshot | None = None
    ) -> list[tuple[str, str]]:
        current = status if isinstance(status, ExecutionStatus) else hook.get_execution_status(run_id)
        return [] if current.is_terminal else [(self.run_label(run_id), run_id)]

    def report_what(self) -> str:
        """What the execution ran, for the report's ``what`` column."""
        return "execution"

    def report(self, hook: DuneHook, status: Snapshot) -> RunReport:
        """One row, from the execution's own status: no further read."""
        if not isinstance(status, ExecutionStatus):
            raise TypeError(f"expected an execution status, got {type(status).__name__}")
        return RunReport(
            execution_summary(status), [execution_row(status, self.report_what())], status.failure_message()
        )


class _DuneResultsOperator(_DuneExecutionOperator):
    """An execution whose result rows can go to XCom or to a file: the options shared by queries and raw SQL.

    :param fetch_results: put the rows in the return value (XCom); meant for small results, refused above
        ``max_xcom_rows`` rows (write them to ``output_path`` instead).
    :param output_path: stream every row to this file or object-storage URL (``s3://bucket/key.csv``,
        ``/data/out.jsonl``), page by page, without holding the result in memory (templated).
    :param output_format: ``jsonl`` or ``csv``; inferred from the ``output_path`` suffix when omitted.
    :param page_size: most rows per results request; fewer when rows x columns would cross the
        connection's ``max_datapoints_per_request`` (Dune's per-request cap) or when a page would be much
        larger than 32 MiB of JSON (estimated from the bytes Dune reports), so one page in memory stays
        bounded. A page over 128 MiB is refused: lower ``page_size`` then.
    :param max_xcom_rows: largest result ``fetch_results`` accepts.
    :param allow_partial_results: accept ``QUERY_STATE_COMPLETED_PARTIAL`` (a result Dune truncated); by
        default it fails the task.
    """

    def __init__(
        self,
        *,
        fetch_results: bool = False,
        output_path: str | None = None,
        output_format: str | None = None,
        page_size: int = 10_000,
        max_xcom_rows: int = DEFAULT_MAX_XCOM_ROWS,
        allow_partial_results: bool = False,
        **kwargs: Any,
    ) -> None:
        super().__init__(**kwargs)
        self.fetch_results = fetch_results
        self.output_path = output_path
        self.output_format = output_format
        if (fetch_results or output_path) and not self.wait_for_completion:
            raise DuneConfigurationError("fetch_results/output_path need wait_for_completion=True")
        self.page_size = validate_positive_int(page_size, "page_size")
        if isinstance(max_xcom_rows, bool) or not isinstance(max_xcom_rows, int) or max_xcom_rows < 0:
            raise DuneConfigurationError(f"max_xcom_rows must be a whole number >= 0, got {max_xcom_rows!r}")
        self.max_xcom_rows = max_xcom_rows
        self.allow_partial_results = allow_partial_results

    def check_output(self, *, allow_templates: bool) -> None:
        """Refuse an ``output_path`` whose format cannot be told, before anything runs."""
        if self.output_path is not None and not (allow_templates and is_template(self.output_path)):
            output_format_for(self.output_path, self.output_format)

    def accept_failure(self, details: Mapping[str, Any] | None) -> bool:
        partial = is_partial_result(details)
        if partial and self.allow_partial_results:
            self.log.warning("Accepting a partial result (allow_partial_results=True): Dune truncated it")
        return partial and self.allow_partial_results

    def on_success(self, context: Context, hook: DuneHook, run_id: str, details: Mapping[str, Any] | None) -> Any:
        summary: dict[str, Any] = dict(details or {"execution_id": run_id})
        partial = summary.get("state") == RunState.COMPLETED_PARTIAL.value
        metadata = summary.get("result_metadata")
        columns = metadata.get("column_names") if isinstance(metadata, Mapping) else None
        pages = hook.iter_execution_results(
            run_id,
            page_size=self.page_size,
            allow_partial_results=partial,
            column_count=len(columns) if isinstance(columns, list) and columns else None,
            row_bytes=json_bytes_per_row(parse_result_metadata(metadata), total=True),
        )
        if self.output_path:
            fmt = output_format_for(self.output_path, self.output_format)
            count = write_pages(pages, self.output_path, fmt)
            self.log.info("Wrote %d row(s) of %s to %s", count, run_id, self.output_path)
            summary.update(output_path=self.output_path, output_format=fmt, row_count=count)
        elif self.fetch_results:
            metadata = summary.get("result_metadata") or {}
            known_rows = metadata.get("total_row_count") if isinstance(metadata, Mapping) else None
            if isinstance(known_rows, int) and known_rows > self.max_xcom_rows:
                raise DuneConfigurationError(self._too_many_rows(run_id, known_rows))
            rows: list[dict[str, Any]] = []
            for page in pages:
                total = page.metadata.total_row_count if page.metadata else None
                if (total or 0) > self.max_xcom_rows or len(rows) + len(page.rows) > self.max_xcom_rows:
                    raise DuneConfigurationError(self._too_many_rows(run_id, total))
                rows.extend(page.rows)
            summary.update(rows=rows, row_count=len(rows))
        return summary

    def _too_many_rows(self, run_id: str, rows: int | None) -> str:
        count = f"{rows} rows" if rows else f"more than max_xcom_rows={self.max_xcom_rows} rows"
        return (
            f"the result of {run_id} has {count}, more than max_xcom_rows={self.max_xcom_rows}: too big for XCom. "
            "Set output_path to stream it to a file or object storage, or raise max_xcom_rows"
        )


class DuneExecuteQueryOperator(_DuneResultsOperator):
    """Execute one Dune query and wait for it; optionally fetch its result rows.

    The execution id is pushed to XCom under ``execution_id`` before waiting. The return value holds the final
    execution status and result metadata, plus the rows (``fetch_results=True`` without ``output_path``) or
    the path and row count of the written file.

    :param query_id: Dune query id (templated).
    :param query_parameters: parameters, e.g. ``{"date": RUN_DATE}`` with
        :data:`~airflow_provider_dune.schedules.RUN_DATE`, the run's date also for a manual run without a logical
        date (templated).
    :param performance: ``medium`` or ``large`` (templated).
    :param reuse_latest_result_max_age: seconds (or a ``timedelta``): when the query's latest result (whoever
        ran it) completed less than this long ago, use it instead of executing the query, which spends no
        execution credits. Only for tasks without ``query_parameters``, and only a result that is provably what
        this task would compute: the query has no parameters (Dune's latest result does not say which values it
        ran with), the result is newer than the query's last change (Dune's answer has no change time, so only a
        query never changed since it was created qualifies, unless Dune sends ``updated_at``), and its times
        are readable and not more than 60 s in the future (a Dune clock ahead of the worker's would make an
        old result look fresh). Otherwise the query runs, and the log says why.

    Results options (``fetch_results``, ``output_path``, ``output_format``, ``page_size``, ``max_xcom_rows``,
    ``allow_partial_results``) are those of ``_DuneResultsOperator``.

    Other parameters (``dune_conn_id``, ``deferrable``, ``poll_interval``, ``timeout``, ``wait_for_completion``,
    ``reuse_existing_execution``, ``cancel_on_kill``) are those of
    :class:`~airflow_provider_dune.operators.base.DuneRunOperator`.
    """

    template_fields: Sequence[str] = ("dune_conn_id", "query_id", "query_parameters", "performance", "output_path")
    template_fields_renderers = {"query_parameters": "json"}
    operator_extra_links = (DuneQueryLink(),)
    ui_color = "#ffb199"

    def __init__(
        self,
        *,
        query_id: int | str,
        query_parameters: Mapping[str, Any] | str | None = None,
        performance: str = "medium",
        reuse_latest_result_max_age: timedelta | float | None = None,
        **kwargs: Any,
    ) -> None:
        super().__init__(**kwargs)
        self.query_id = query_id
        self.query_parameters = query_parameters
        self.performance = performance
        self.reuse_latest_result_max_age = (
            None
            if reuse_latest_result_max_age is None
            else validate_seconds(reuse_latest_result_max_age, "reuse_latest_result_max_age")
        )
        if self.reuse_latest_result_max_age is not None and query_parameters:
            raise DuneConfigurationError(
                "reuse_latest_result_max_age needs a query without query_parameters: Dune's latest result may be "
                "of other parameter values"
            )
        self.build_request(allow_templates=True)

    def reusable_run(self, hook: DuneHook, request: Mapping[str, Any]) -> tuple[str, Any] | None:
        """The query's latest execution, when it is provably the result this task would compute, else ``None``.

        Every reason not to reuse is logged and the query runs; nothing here fails the task (a reuse check
        that cannot decide falls back to what the task does without the option: run the query).
        """
        if self.reuse_latest_result_max_age is None:
            return None
        query_id = request["query_id"]
        try:
            latest = hook.get_query_results(query_id, limit=1)
            status = hook.get_execution_status(latest.execution_id)
            reason = self._not_reusable(hook, query_id, status)
        except DuneAPIError as err:
            reason = f"it could not be read: {err}"
        if reason is not None:
            self.log.info("Not reusing the latest result of query %s: %s. Running the query", query_id, reason)
            return None
        self.log.info(
            "Reusing execution %s of query %s, completed %.0fs ago (reuse_latest_result_max_age=%gs): no credits spent",
            status.execution_id,
            query_id,
            result_age_seconds(status.execution_ended_at) or 0.0,
            self.reuse_latest_result_max_age,
        )
        return status.execution_id, status

    def _not_reusable(self, hook: DuneHook, query_id: int, status: ExecutionStatus) -> str | None:
        """Why ``status`` (the query's latest execution) is not reusable, or ``None`` when it is."""
        if not status.succeeded:
            return f"it is not complete ({status.progress_summary()})"
        if status.query_id is not None and status.query_id != int(query_id):
            return f"Dune answered with a result of query {status.query_id}"
        now = datetime.now(timezone.utc)
        try:
            ended = parse_timestamp(status.execution_ended_at, "its end time")
            submitted = parse_timestamp(status.submitted_at or status.execution_started_at, "its submission time")
        except DuneResponseError as err:
            return str(err)
        if ended is None or submitted is None:
            return "Dune did not say when it was run"
        ahead = (max(ended, submitted) - now).total_seconds()
        if ahead > CLOCK_SKEW_ALLOWANCE_SECONDS:
            return (
                f"its time {status.execution_ended_at} is {ahead:.0f}s in the future (more than the "
                f"{CLOCK_SKEW_ALLOWANCE_SECONDS}s allowed for clock differences): Dune's clock and this worker's "
                "disagree, so its age cannot be trusted"
            )
        age = (now - ended).total_seconds()
        if age > (self.reuse_latest_result_max_age or 0):
            return f"it is {age:.0f}s old, more than reuse_latest_result_max_age={self.reuse_latest_result_max_age:g}s"
        return _not_of_current_query(int(query_id), hook.get_query(query_id), submitted)

    def run_label(self, run_id: str) -> str:
        return f"Dune execution {run_id} of query {self.query_id}"

    def report_what(self) -> str:
        return f"query {self.query_id}"

    def refreshed_objects(self, details: Mapping[str, Any]) -> list[RefreshedObject]:
        return refreshed_by_query(details, self.query_id)

    def lineage_subject(self) -> dict[str, Any]:
        return {"operation": "query_execution", "query_id": int(self.query_id)}

    def build_request(self, *, allow_templates: bool) -> dict[str, Any]:
        self.check_output(allow_templates=allow_templates)
        return query_run_request(
            self.query_id, self.performance, self.query_parameters, allow_templates=allow_templates
        )

    def start_run(self, hook: DuneHook, request: Mapping[str, Any]) -> str:
        started = hook.execute_query(request["query_id"], request["performance"], request["query_parameters"])
        self.log.info(
            "Started Dune execution %s of query %s: %s",
            started.execution_id,
            request["query_id"],
            DuneQueryLink.url_for(request["query_id"]),
        )
        return started.execution_id

    def where_to_check(self, request: Mapping[str, Any]) -> str:
        return f"the latest executions of query {request['query_id']} at {DuneQueryLink.url_for(request['query_id'])}"


class DuneRefreshMaterializedViewOperator(_DuneExecutionOperator):
    """Refresh one Dune materialized view and wait for the refresh execution.

    :param view_name: full view name, e.g. ``dune.team.result_daily_volume`` (templated).
    :param performance: ``small``, ``medium`` or ``large`` (templated); ``small`` comes from Dune's newer
        materialized-view docs, not its API spec.

    Other parameters are those of :class:`~airflow_provider_dune.operators.base.DuneRunOperator`.
    """

    template_fields: Sequence[str] = ("dune_conn_id", "view_name", "performance")
    ui_color = "#ffd4c4"
    run_kind = "view_refresh"

    def __init__(self, *, view_name: str, performance: str = "medium", **kwargs: Any) -> None:
        super().__init__(**kwargs)
        self.view_name = view_name
        self.performance = performance
        self.build_request(allow_templates=True)

    def run_label(self, run_id: str) -> str:
        return f"Dune refresh {run_id} of materialized view {self.view_name}"

    def report_what(self) -> str:
        return f"refresh {self.view_name}"

    def refreshed_objects(self, details: Mapping[str, Any]) -> list[RefreshedObject]:
        return refreshed_by_view_refresh(details, self.view_name)

    def lineage_subject(self) -> dict[str, Any]:
        return {"operation": "materialized_view_refresh", "view_name": self.view_name}

    def build_request(self, *, allow_templates: bool) -> dict[str, Any]:
        return {
            "view_name": validated(self.view_name, validate_view_name, allow_templates=allow_templates),
            "performance": validated(self.performance, validate_view_performance, allow_templates=allow_templates),
        }

    def where_to_check(self, request: Mapping[str, Any]) -> str:
        return (
            f"the latest refresh of materialized view {request['view_name']} on dune.com (or its "
            "last_execution_ids from GET /v1/materialized-views/{name})"
        )

    def start_run(self, hook: DuneHook, request: Mapping[str, Any]) -> str:
        refresh = hook.refresh_materialized_view(request["view_name"], request["performance"])
        self.log.info("Started refresh %s of materialized view %s", refresh.execution_id, request["view_name"])
        return refresh.execution_id
