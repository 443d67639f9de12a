"""Request descriptions for every Dune endpoint the provider uses.

Each builder validates its arguments and returns a :class:`DuneRequest`; the hook's sync and async transports
only send it. ``starts_run`` marks requests that start billed work, which are never retried after an ambiguous
failure.
"""

from __future__ import annotations

import json
from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from typing import Any
from urllib.parse import quote

from airflow_provider_dune.api.definitions import (
    MaterializedViewDefinition,
    QueryDefinition,
    TableDefinition,
    validate_table_part,
)
from airflow_provider_dune.api.validation import (
    validate_execution_id,
    validate_performance,
    validate_pipeline_nodes,
    validate_query_id,
    validate_query_parameters,
    validate_sql,
    validate_view_name,
    validate_view_performance,
)

#: Largest answer read for a status or start call; Dune's are a few KB.
DEFAULT_MAX_RESPONSE_BYTES = 16 * 1024 * 1024
#: Largest results page read; pages are sized well under it (``paging.PAGE_TARGET_BYTES``). A longer answer is
#: refused with an error that says to lower ``page_size``.
RESULTS_MAX_RESPONSE_BYTES = 128 * 1024 * 1024


@dataclass(frozen=True)
class DuneRequest:
    """One HTTP call to Dune, described without a transport.

    :param method: HTTP method.
    :param path: path below the base URL, starting with ``/v1/``.
    :param name: endpoint template used in logs and errors (no ids or secrets).
    :param params: query-string parameters.
    :param json_body: JSON body, if any.
    :param starts_run: the call starts billed work on Dune (execute/refresh).
    :param target: what the call is about, for messages: ``query 1234``, ``execution 01H...``.
    :param max_response_bytes: longest answer read; a longer one is refused (results pages get more room).
    :param effect: what a ``starts_run`` request does on Dune, for messages about a request that may have
        reached Dune without an answer.
    :param content: a raw body (CSV or NDJSON rows) sent instead of ``json_body``, with ``content_type``.
    """

    method: str
    path: str
    name: str
    params: Mapping[str, str] | None = None
    json_body: Any = None
    starts_run: bool = False
    target: str | None = None
    max_response_bytes: int = DEFAULT_MAX_RESPONSE_BYTES
    effect: str = "started a run"
    content: bytes | None = None
    content_type: str | None = None

    @property
    def description(self) -> str:
        """The endpoint and what it was called for: ``POST /v1/query/{query_id}/execute for query 1234``."""
        return f"{self.name} for {self.target}" if self.target else self.name


def _segment(value: str) -> str:
    return quote(value, safe="")


def _page_params(limit: int | None, offset: int | None, allow_partial_results: bool) -> dict[str, str] | None:
    params: dict[str, str] = {}
    if limit is not None:
        params["limit"] = str(int(limit))
    if offset is not None:
        params["offset"] = str(int(offset))
    if allow_partial_results:
        params["allow_partial_results"] = "true"
    return params or None


def execute_query_pipeline(query_id: Any, performance: Any = "medium", query_parameters: Any = None) -> DuneRequest:
    """``POST /v1/query/{query_id}/pipeline/execute``: run a query with its materialized-view lineage."""
    body: dict[str, Any] = {"performance": validate_performance(performance)}
    parameters = validate_query_parameters(query_parameters)
    if parameters:
        body["query_parameters"] = parameters
    qid = validate_query_id(query_id)
    return DuneRequest(
        "POST",
        f"/v1/query/{qid}/pipeline/execute",
        "POST /v1/query/{query_id}/pipeline/execute",
        json_body=body,
        starts_run=True,
        target=f"query {qid}",
    )


def execute_pipeline(nodes: Sequence[Mapping[str, Any]]) -> DuneRequest:
    """``POST /v1/pipelines/execute``: run an explicit pipeline of nodes."""
    return DuneRequest(
        "POST",
        "/v1/pipelines/execute",
        "POST /v1/pipelines/execute",
        json_body={"pipeline": {"nodes": validate_pipeline_nodes(nodes)}},
        starts_run=True,
    )


def get_query_pipeline(query_id: Any, performance: Any = "medium", query_parameters: Any = None) -> DuneRequest:
    """``GET /v1/query/{query_id}/pipeline``: the pipeline Dune would run (a dry run)."""
    params = {"performance": validate_performance(performance)}
    parameters = validate_query_parameters(query_parameters)
    if parameters:
        params["query_parameters"] = json.dumps(parameters, separators=(",", ":"))
    qid = validate_query_id(query_id)
    return DuneRequest(
        "GET", f"/v1/query/{qid}/pipeline", "GET /v1/query/{query_id}/pipeline", params=params, target=f"query {qid}"
    )


def get_pipeline_status(pipeline_execution_id: Any) -> DuneRequest:
    """``GET /v1/pipelines/executions/{id}/status``."""
    pid = validate_execution_id(pipeline_execution_id, what="pipeline_execution_id")
    return DuneRequest(
        "GET",
        f"/v1/pipelines/executions/{_segment(pid)}/status",
        "GET /v1/pipelines/executions/{pipeline_execution_id}/status",
        target=f"pipeline execution {pid}",
    )


def execute_query(query_id: Any, performance: Any = "medium", query_parameters: Any = None) -> DuneRequest:
    """``POST /v1/query/{query_id}/execute``."""
    body: dict[str, Any] = {"performance": validate_performance(performance)}
    parameters = validate_query_parameters(query_parameters)
    if parameters:
        body["query_parameters"] = parameters
    qid = validate_query_id(query_id)
    return DuneRequest(
        "POST",
        f"/v1/query/{qid}/execute",
        "POST /v1/query/{query_id}/execute",
        json_body=body,
        starts_run=True,
        target=f"query {qid}",
    )


def get_execution_status(execution_id: Any) -> DuneRequest:
    """``GET /v1/execution/{execution_id}/status``."""
    eid = validate_execution_id(execution_id)
    return DuneRequest(
        "GET",
        f"/v1/execution/{_segment(eid)}/status",
        "GET /v1/execution/{execution_id}/status",
        target=f"execution {eid}",
    )


def get_execution_results(
    execution_id: Any,
    *,
    limit: int | None = None,
    offset: int | None = None,
    allow_partial_results: bool = False,
) -> DuneRequest:
    """``GET /v1/execution/{execution_id}/results`` (one page)."""
    eid = validate_execution_id(execution_id)
    return DuneRequest(
        "GET",
        f"/v1/execution/{_segment(eid)}/results",
        "GET /v1/execution/{execution_id}/results",
        params=_page_params(limit, offset, allow_partial_results),
        target=f"execution {eid}",
        max_response_bytes=RESULTS_MAX_RESPONSE_BYTES,
    )


def cancel_execution(execution_id: Any) -> DuneRequest:
    """``POST /v1/execution/{execution_id}/cancel``: idempotent, so safe to retry."""
    eid = validate_execution_id(execution_id)
    return DuneRequest(
        "POST",
        f"/v1/execution/{_segment(eid)}/cancel",
        "POST /v1/execution/{execution_id}/cancel",
        target=f"execution {eid}",
    )


def refresh_materialized_view(name: Any, performance: Any = "medium") -> DuneRequest:
    """``POST /v1/materialized-views/{name}/refresh``."""
    view = validate_view_name(name)
    return DuneRequest(
        "POST",
        f"/v1/materialized-views/{_segment(view)}/refresh",
        "POST /v1/materialized-views/{name}/refresh",
        json_body={"performance": validate_view_performance(performance)},
        starts_run=True,
        target=f"materialized view {view}",
    )


def get_materialized_view(name: Any) -> DuneRequest:
    """``GET /v1/materialized-views/{name}``."""
    view = validate_view_name(name)
    return DuneRequest(
        "GET",
        f"/v1/materialized-views/{_segment(view)}",
        "GET /v1/materialized-views/{name}",
        target=f"materialized view {view}",
    )


def get_query_results(
    query_id: Any,
    *,
    limit: int | None = None,
    offset: int | None = None,
    allow_partial_results: bool = False,
) -> DuneRequest:
    """``GET /v1/query/{query_id}/results``: the latest result of a query, without running it."""
    qid = validate_query_id(query_id)
    return DuneRequest(
        "GET",
        f"/v1/query/{qid}/results",
        "GET /v1/query/{query_id}/results",
        params=_page_params(limit, offset, allow_partial_results),
        target=f"query {qid}",
        max_response_bytes=RESULTS_MAX_RESPONSE_BYTES,
    )


def execute_sql(sql: Any, performance: Any = "medium") -> DuneRequest:
    """``POST /v1/sql/execute``: run SQL that is not saved as a query (billed like a query execution)."""
    return DuneRequest(
        "POST",
        "/v1/sql/execute",
        "POST /v1/sql/execute",
        json_body={"sql": validate_sql(sql), "performance": validate_performance(performance)},
        starts_run=True,
        target="raw SQL",
    )


def get_query(query_id: Any) -> DuneRequest:
    """``GET /v1/query/{queryId}``: a saved query's SQL, name, parameters and flags."""
    qid = validate_query_id(query_id)
    return DuneRequest("GET", f"/v1/query/{qid}", "GET /v1/query/{queryId}", target=f"query {qid}")


def create_query(definition: QueryDefinition) -> DuneRequest:
    """``POST /v1/query``: save a new query (no run, no credits)."""
    # Not billed, but not idempotent either: a resent POST after a lost answer could save the query twice.
    return DuneRequest(
        "POST",
        "/v1/query",
        "POST /v1/query",
        json_body=definition.to_request(),
        starts_run=True,
        target=f"query {definition.name!r}",
        effect="saved the query",
    )


def update_query(query_id: Any, definition: QueryDefinition) -> DuneRequest:
    """``PATCH /v1/query/{queryId}``: replace a saved query's SQL, name, parameters and flags (no run)."""
    qid = validate_query_id(query_id)
    return DuneRequest(
        "PATCH",
        f"/v1/query/{qid}",
        "PATCH /v1/query/{queryId}",
        json_body=definition.to_request(),
        target=f"query {qid}",
    )


def upsert_materialized_view(definition: MaterializedViewDefinition) -> DuneRequest:
    """``POST /v1/materialized-views``: create or change a view; Dune refreshes it right away (billed)."""
    return DuneRequest(
        "POST",
        "/v1/materialized-views",
        "POST /v1/materialized-views",
        json_body=definition.to_request(),
        starts_run=True,
        target=f"materialized view {definition.name}",
    )


def delete_materialized_view(name: Any) -> DuneRequest:
    """``DELETE /v1/materialized-views/{name}``."""
    view = validate_view_name(name)
    return DuneRequest(
        "DELETE",
        f"/v1/materialized-views/{_segment(view)}",
        "DELETE /v1/materialized-views/{name}",
        target=f"materialized view {view}",
    )


def create_table(table: TableDefinition) -> DuneRequest:
    """``POST /v1/uploads``: create an uploaded table (Dune bills each creation: 10 credits)."""
    return DuneRequest(
        "POST",
        "/v1/uploads",
        "POST /v1/uploads",
        json_body=table.to_request(),
        starts_run=True,
        target=f"table {table.full_name}",
        effect="created the table (billed)",
    )


def insert_rows(namespace: str, table_name: str, content: bytes, content_type: str) -> DuneRequest:
    """``POST /v1/uploads/{namespace}/{table_name}/insert``: append rows (CSV with a header, or NDJSON)."""
    ns, name = validate_table_part(namespace, "namespace"), validate_table_part(table_name, "table_name")
    return DuneRequest(
        "POST",
        f"/v1/uploads/{ns}/{name}/insert",
        "POST /v1/uploads/{namespace}/{table_name}/insert",
        starts_run=True,  # not idempotent: a resent insert after a lost answer would add the rows twice
        target=f"table dune.{ns}.{name}",
        effect="inserted the rows",
        content=content,
        content_type=content_type,
    )


def clear_table(namespace: str, table_name: str) -> DuneRequest:
    """``POST /v1/uploads/{namespace}/{table_name}/clear``: delete every row, keep the table."""
    ns, name = validate_table_part(namespace, "namespace"), validate_table_part(table_name, "table_name")
    return DuneRequest(
        "POST",
        f"/v1/uploads/{ns}/{name}/clear",
        "POST /v1/uploads/{namespace}/{table_name}/clear",
        target=f"table dune.{ns}.{name}",
    )


def delete_table(namespace: str, table_name: str) -> DuneRequest:
    """``DELETE /v1/uploads/{namespace}/{table_name}``."""
    ns, name = validate_table_part(namespace, "namespace"), validate_table_part(table_name, "table_name")
    return DuneRequest(
        "DELETE",
        f"/v1/uploads/{ns}/{name}",
        "DELETE /v1/uploads/{namespace}/{table_name}",
        target=f"table dune.{ns}.{name}",
    )


def get_usage() -> DuneRequest:
    """``POST /v1/usage``: a cheap authenticated read, used to test the connection."""
    return DuneRequest("POST", "/v1/usage", "POST /v1/usage", json_body={})
