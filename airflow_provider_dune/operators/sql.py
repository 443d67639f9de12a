"""Run SQL that is not saved as a Dune query (``POST /v1/sql/execute``), with the query operator's handling."""

from __future__ import annotations

import hashlib
from collections.abc import Mapping, Sequence
from typing import TYPE_CHECKING, Any

from airflow_provider_dune.api.validation import validate_performance, validate_sql
from airflow_provider_dune.operators.base import is_template, validated
from airflow_provider_dune.operators.query import _DuneResultsOperator

if TYPE_CHECKING:
    from airflow_provider_dune.hooks.dune import DuneHook


class DuneExecuteSQLOperator(_DuneResultsOperator):
    """Execute raw SQL on Dune and wait for it; optionally fetch the result rows.

    Behaves like :class:`~airflow_provider_dune.operators.query.DuneExecuteQueryOperator` (deferral, timeout
    and cancel, re-attach on retry, results to XCom or a file); only the SQL comes from the task instead of a
    saved query. Billed like a query execution.

    :param sql: the SQL, or the path of a ``.sql`` file (relative to the DAG folder or ``template_searchpath``);
        templated.
    :param performance: ``medium`` or ``large`` (templated).

    Results options are those of the query operator (``fetch_results``, ``output_path``, ``output_format``,
    ``page_size``, ``max_xcom_rows``, ``allow_partial_results``); run options those of
    :class:`~airflow_provider_dune.operators.base.DuneRunOperator`.
    """

    run_kind = "sql"

    template_fields: Sequence[str] = ("dune_conn_id", "sql", "performance", "output_path")
    template_ext: Sequence[str] = (".sql",)
    template_fields_renderers = {"sql": "sql"}
    ui_color = "#ffc9a8"

    def __init__(self, *, sql: str, performance: str = "medium", **kwargs: Any) -> None:
        super().__init__(**kwargs)
        self.sql = sql
        self.performance = performance
        self.build_request(allow_templates=True)

    def run_label(self, run_id: str) -> str:
        return f"Dune execution {run_id} of raw SQL"

    def report_what(self) -> str:
        return "raw SQL"

    def lineage_subject(self) -> dict[str, Any]:
        return {"operation": "sql_execution"}

    def build_request(self, *, allow_templates: bool) -> dict[str, Any]:
        self.check_output(allow_templates=allow_templates)
        sql = self.sql
        if not (allow_templates and (is_template(sql) or (isinstance(sql, str) and sql.strip().endswith(".sql")))):
            sql = validate_sql(sql)
        return {
            "sql": sql,
            "performance": validated(self.performance, validate_performance, allow_templates=allow_templates),
        }

    def start_run(self, hook: DuneHook, request: Mapping[str, Any]) -> str:
        started = hook.execute_sql(request["sql"], request["performance"])
        digest = hashlib.sha256(request["sql"].encode()).hexdigest()[:12]
        self.log.info("Started Dune execution %s of raw SQL (sha256 %s)", started.execution_id, digest)
        return started.execution_id

    def where_to_check(self, request: Mapping[str, Any]) -> str:
        return "your recent executions on dune.com (raw SQL runs are not attached to a saved query)"
