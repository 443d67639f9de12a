"""Every Dune endpoint the provider calls, described once for the request builders and the API emulator.

Adding an endpoint is one entry here, a builder of the same name in :mod:`~airflow_provider_dune.api.endpoints`
and a handler of the same name in the emulator. Kept free of Airflow imports: the emulator runs without Airflow.
"""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass
from types import MappingProxyType
from typing import Literal

#: Dune's two per-key rate-limit buckets: ``write`` counts the calls that start an execution (execute, refresh),
#: ``read`` everything else (status, results, cancel, saving queries, uploads).
Bucket = Literal["read", "write"]


@dataclass(frozen=True)
class Endpoint:
    """One Dune endpoint.

    :param name: the request builder's name, also the emulator's name for it (``counts``, ``inject``).
    :param method: HTTP method.
    :param path: path template as in Dune's OpenAPI spec (``/v1/query/{query_id}/execute``).
    :param bucket: the rate-limit bucket the call counts against (see :data:`Bucket`).
    :param retry_safe: sending it twice does no harm; ``False`` for a call Dune may have acted on when its answer
        was lost and that would bill or add something again (it is then never resent).
    :param write_key: a read-only API key gets 403.
    :param billed: the call starts a billed execution: the connection's credit guard checks before it is sent.
    :param effect: what a call that is not ``retry_safe`` does on Dune, for messages about a lost answer.
    """

    name: str
    method: str
    path: str
    bucket: Bucket = "read"
    retry_safe: bool = True
    write_key: bool = False
    billed: bool = False
    effect: str = "started a run"

    @property
    def template(self) -> str:
        """``POST /v1/query/{query_id}/execute``: for logs and errors (no ids or secrets)."""
        return f"{self.method} {self.path}"


def _run(name: str, method: str, path: str) -> Endpoint:
    """An endpoint that starts a billed execution: a write, never resent."""
    return Endpoint(name, method, path, bucket="write", retry_safe=False, write_key=True, billed=True)


def _change(name: str, method: str, path: str, effect: str | None = None) -> Endpoint:
    """An endpoint that changes something on Dune without starting an execution; with ``effect``, not resent."""
    if effect is None:
        return Endpoint(name, method, path, write_key=True)
    return Endpoint(name, method, path, retry_safe=False, write_key=True, effect=effect)


ENDPOINTS: Mapping[str, Endpoint] = MappingProxyType(
    {
        endpoint.name: endpoint
        for endpoint in (
            _run("execute_query_pipeline", "POST", "/v1/query/{query_id}/pipeline/execute"),
            _run("execute_pipeline", "POST", "/v1/pipelines/execute"),
            Endpoint("get_query_pipeline", "GET", "/v1/query/{query_id}/pipeline"),
            Endpoint("get_pipeline_status", "GET", "/v1/pipelines/executions/{pipeline_execution_id}/status"),
            _run("execute_query", "POST", "/v1/query/{query_id}/execute"),
            Endpoint("get_execution_status", "GET", "/v1/execution/{execution_id}/status"),
            Endpoint("get_execution_results", "GET", "/v1/execution/{execution_id}/results"),
            Endpoint("get_query_results", "GET", "/v1/query/{query_id}/results"),
            _change("cancel_execution", "POST", "/v1/execution/{execution_id}/cancel"),
            _run("refresh_materialized_view", "POST", "/v1/materialized-views/{name}/refresh"),
            Endpoint("get_materialized_view", "GET", "/v1/materialized-views/{name}"),
            Endpoint("get_query", "GET", "/v1/query/{queryId}"),
            Endpoint("get_usage", "POST", "/v1/usage"),
            # Not billed, but a resent POST after a lost answer could save the query twice.
            _change("create_query", "POST", "/v1/query", effect="saved the query"),
            _change("update_query", "PATCH", "/v1/query/{queryId}"),
            _run("execute_sql", "POST", "/v1/sql/execute"),
            # Dune refreshes a view right away when it is created or changed (billed).
            _run("upsert_materialized_view", "POST", "/v1/materialized-views"),
            _change("delete_materialized_view", "DELETE", "/v1/materialized-views/{name}"),
            _change("create_table", "POST", "/v1/uploads", effect="created the table (billed)"),
            _change("insert_rows", "POST", "/v1/uploads/{namespace}/{table_name}/insert", effect="inserted the rows"),
            _change("clear_table", "POST", "/v1/uploads/{namespace}/{table_name}/clear"),
            _change("delete_table", "DELETE", "/v1/uploads/{namespace}/{table_name}"),
        )
    }
)
