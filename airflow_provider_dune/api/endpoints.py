"""Request descriptions for every Dune endpoint the provider uses.

Each builder validates its arguments and returns a :class:`DuneRequest`; the hook's sync and async transports
only send it. What each endpoint is (method, path, rate-limit bucket, whether it may be resent) is its entry in
``airflow_provider_dune.api.endpoint_table.ENDPOINTS``, under the builder's name.
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
from airflow_provider_dune.api.endpoint_table import ENDPOINTS, Endpoint
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

    :param endpoint: the endpoint called (method, rate-limit bucket, whether it may be resent).
    :param path: path below the base URL, starting with ``/v1/``.
    :param params: query-string parameters.
    :param json_body: JSON body, if any.
    :param target: what the call is about, for messages: ``query 1234``, ``execution 01H...``.
    :param max_response_bytes: longest answer read; a longer one is refused (results pages get more room).
    :param content: a raw body (CSV or NDJSON rows) sent instead of ``json_body``, with ``content_type``.
    """

    endpoint: Endpoint
    path: str
    params: Mapping[str, str] | None = None
    json_body: Any = None
    target: str | None = None
    max_response_bytes: int = DEFAULT_MAX_RESPONSE_BYTES
    content: bytes | None = None
    content_type: str | None = None

    @property
    def method(self) -> str:
        """HTTP method."""
        return self.endpoint.method

    @property
    def name(self) -> str:
        """The endpoint's template, for logs and errors: ``POST /v1/query/{query_id}/execute``."""
        return self.endpoint.template

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
        ENDPOINTS["execute_query_pipeline"],
        f"/v1/query/{qid}/pipeline/execute",
        json_body=body,
        target=f"query {qid}",
    )


def execute_pipeline(nodes: Sequence[Mapping[str, Any]]) -> DuneRequest:
    """``POST /v1/pipelines/execute``: run an explicit pipeline of nodes."""
    return DuneRequest(
        ENDPOINTS["execute_pipeline"],
        "/v1/pipelines/execute",
        json_body={"pipeline": {"nodes": validate_pipeline_nodes(nodes)}},
    )


def get_query_pipeline(query_id: Any, performance: Any = "medium", query_parameters: Any = None) -> DuneRequest:
    """``GET /v1/query/{query_id}/pipeline``: the pipeline Dune would run (a dry run)."""
    params = {"performance": validate_performance(performance)}
    parameters = validate_query_parameters(query_parameters)
    if parameters:
        params["query_parameters"] = json.dumps(parameters, separators=(",", ":"))
    qid = validate_query_id(query_id)
    return DuneRequest(
        ENDPOINTS["get_query_pipeline"], f"/v1/query/{qid}/pipeline", params=params, target=f"query {qid}"
    )


def get_pipeline_status(pipeline_execution_id: Any) -> DuneRequest:
    """``GET /v1/pipelines/executions/{id}/status``."""
    pid = validate_execution_id(pipeline_execution_id, what="pipeline_execution_id")
    return DuneRequest(
        ENDPOINTS["get_pipeline_status"],
        f"/v1/pipelines/executions/{_segment(pid)}/status",
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
        ENDPOINTS["execute_query"],
        f"/v1/query/{qid}/execute",
        json_body=body,
        target=f"query {qid}",
    )


def get_execution_status(execution_id: Any) -> DuneRequest:
    """``GET /v1/execution/{execution_id}/status``."""
    eid = validate_execution_id(execution_id)
    return DuneRequest(
        ENDPOINTS["get_execution_status"],
        f"/v1/execution/{_segment(eid)}/status",
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
        ENDPOINTS["get_execution_results"],
        f"/v1/execution/{_segment(eid)}/results",
        params=_page_params(limit, offset, allow_partial_results),
        target=f"execution {eid}",
        max_response_bytes=RESULTS_MAX_RESPONSE_BYTES,
    )


def cancel_execution(execution_id: Any) -> DuneRequest:
    """``POST /v1/execution/{execution_id}/cancel``: idempotent, so safe to retry."""
    eid = validate_execution_id(execution_id)
    return DuneRequest(
        ENDPOINTS["cancel_execution"],
        f"/v1/execution/{_segment(eid)}/cancel",
        target=f"execution {eid}",
    )


def refresh_materialized_view(name: Any, performance: Any = "medium") -> DuneRequest:
    """``POST /v1/materialized-views/{name}/refresh``."""
    view = validate_view_name(name)
    return DuneRequest(
        ENDPOINTS["refresh_materialized_view"],
        f"/v1/materialized-views/{_segment(view)}/refresh",
        json_body={"performance": validate_view_performance(performance)},
        target=f"materialized view {view}",
    )


def get_materialized_view(name: Any) -> DuneRequest:
    """``GET /v1/materialized-views/{name}``."""
    view = validate_view_name(name)
    return DuneRequest(
        ENDPOINTS["get_materialized_view"],
        f"/v1/materialized-views/{_segment(view)}",
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
        ENDPOINTS["get_query_results"],
        f"/v1/query/{qid}/results",
        params=_page_params(limit, offset, allow_partial_results),
        target=f"query {qid}",
        max_response_bytes=RESULTS_MAX_RESPONSE_BYTES,
    )


def execute_sql(sql: Any, performance: Any = "medium") -> DuneRequest:
    """``POST /v1/sql/execute``: run SQL that is not saved as a query (billed like a query execution)."""
    return DuneRequest(
        ENDPOINTS["execute_sql"],
        "/v1/sql/execute",
        json_body={"sql": validate_sql(sql), "performance": validate_performance(performance)},
        target="raw SQL",
    )


def get_query(query_id: Any) -> DuneRequest:
    """``GET /v1/query/{queryId}``: a saved query's SQL, name, parameters and flags."""
    qid = validate_query_id(query_id)
    return DuneRequest(ENDPOINTS["get_query"], f"/v1/query/{qid}", target=f"query {qid}")


def create_query(definition: QueryDefinition) -> DuneRequest:
    """``POST /v1/query``: save a new query (no run, no credits)."""
    return DuneRequest(
        ENDPOINTS["create_query"],
        "/v1/query",
        json_body=definition.to_request(),
        target=f"query {definition.name!r}",
    )


def update_query(query_id: Any, definition: QueryDefinition) -> DuneRequest:
    """``PATCH /v1/query/{queryId}``: replace a saved query's SQL, name, parameters and flags (no run)."""
    qid = validate_query_id(query_id)
    return DuneRequest(
        ENDPOINTS["update_query"],
        f"/v1/query/{qid}",
        json_body=definition.to_request(),
        target=f"query {qid}",
    )


def upsert_materialized_view(definition: MaterializedViewDefinition) -> DuneRequest:
    """``POST /v1/materialized-views``: create or change a view; Dune refreshes it right away (billed)."""
    return DuneRequest(
        ENDPOINTS["upsert_materialized_view"],
        "/v1/materialized-views",
        json_body=definition.to_request(),
        target=f"materialized view {definition.name}",
    )


def delete_materialized_view(name: Any) -> DuneRequest:
    """``DELETE /v1/materialized-views/{name}``."""
    view = validate_view_name(name)
    return DuneRequest(
        ENDPOINTS["delete_materialized_view"],
        f"/v1/materialized-views/{_segment(view)}",
        target=f"materialized view {view}",
    )


def create_table(table: TableDefinition) -> DuneRequest:
    """``POST /v1/uploads``: create an uploaded table (Dune bills each creation: 10 credits)."""
    return DuneRequest(
        ENDPOINTS["create_table"],
        "/v1/uploads",
        json_body=table.to_request(),
        target=f"table {table.full_name}",
    )


def insert_rows(namespace: str, table_name: str, content: bytes, content_type: str) -> DuneRequest:
    """``POST /v1/uploads/{namespace}/{table_name}/insert``: append rows (CSV with a header, or NDJSON)."""
    ns, name = validate_table_part(namespace, "namespace"), validate_table_part(table_name, "table_name")
    return DuneRequest(
        ENDPOINTS["insert_rows"],
        f"/v1/uploads/{ns}/{name}/insert",
        target=f"table dune.{ns}.{name}",
        content=content,
        content_type=content_type,
    )


def clear_table(namespace: str, table_name: str) -> DuneRequest:
    """``POST /v1/uploads/{namespace}/{table_name}/clear``: delete every row, keep the table."""
    ns, name = validate_table_part(namespace, "namespace"), validate_table_part(table_name, "table_name")
    return DuneRequest(
        ENDPOINTS["clear_table"],
        f"/v1/uploads/{ns}/{name}/clear",
        target=f"table dune.{ns}.{name}",
    )


def delete_table(namespace: str, table_name: str) -> DuneRequest:
    """``DELETE /v1/uploads/{namespace}/{table_name}``."""
    ns, name = validate_table_part(namespace, "namespace"), validate_table_part(table_name, "table_name")
    return DuneRequest(
        ENDPOINTS["delete_table"],
        f"/v1/uploads/{ns}/{name}",
        target=f"table dune.{ns}.{name}",
    )


def get_usage() -> DuneRequest:
    """``POST /v1/usage``: a cheap authenticated read, used to test the connection."""
    return DuneRequest(ENDPOINTS["get_usage"], "/v1/usage", json_body={})
