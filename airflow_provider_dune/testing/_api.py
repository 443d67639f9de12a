"""The Dune endpoints of the emulator: the routes table, one parsed API request, and the endpoint handlers."""

from __future__ import annotations

import json
import re
from collections.abc import Callable, Sequence
from typing import Any, cast

import jsonschema

from airflow_provider_dune.api.endpoint_table import ENDPOINTS
from airflow_provider_dune.testing import _spec
from airflow_provider_dune.testing._state import PERFORMANCE_TIERS, ApiError, EmulatorState

#: What Dune's execution ids look like (26 characters of Crockford base32); others get Dune's 400.
_EXECUTION_ID = re.compile(r"[0-9A-HJKMNP-TV-Z]{26}", re.IGNORECASE)
#: Dune's query ids are 32-bit; a larger number is "invalid", not "not found".
_MAX_QUERY_ID = 2**31 - 1


def _path_group(match: re.Match[str]) -> str:
    name = re.sub("[A-Z]", lambda upper: "_" + upper[0].lower(), match[1])  # the spec's queryId is query_id here
    return f"(?P<{name}>[^/]+)"


def _route(path: str) -> re.Pattern[str]:
    """The pattern of a spec path below ``/api``: each ``{param}`` becomes a group of that name."""
    return re.compile("/api" + re.sub(r"\{(\w+)\}", _path_group, path))


#: (method, pattern, endpoint name) of every endpoint, for routing.
ROUTES: tuple[tuple[str, re.Pattern[str], str], ...] = tuple(
    (endpoint.method, _route(endpoint.path), endpoint.name) for endpoint in ENDPOINTS.values()
)


class _Request:
    """What a handler needs to know about one API request."""

    def __init__(
        self,
        endpoint: str,
        path_params: dict[str, str],
        query: dict[str, str],
        body: Any,
        has_body: bool,
        base_url: str,
        api_key: str = "",
    ) -> None:
        self.api_key = api_key
        self.endpoint = endpoint
        self.path_params = path_params
        self.query = query
        self.body = body
        self.has_body = has_body
        self.base_url = base_url

    def query_id(self) -> int:
        raw = self.path_params["query_id"]
        if not (raw.isascii() and raw.isdigit()) or not 0 < int(raw) <= _MAX_QUERY_ID:
            raise ApiError(400, f"The requested query ID (ID: {raw}) is invalid.")
        return int(raw)

    def execution_id(self) -> str:
        raw = self.path_params["execution_id"]
        if not _EXECUTION_ID.fullmatch(raw):
            raise ApiError(400, f"The requested execution ID (ID: {raw}) is invalid.")
        return raw

    def json_object(self) -> dict[str, Any]:
        """The JSON object body (``{}`` when there is no body)."""
        if not self.has_body:
            return {}
        if not isinstance(self.body, dict):
            raise ApiError(400, "invalid request body: expected a JSON object")
        return self.body

    def validate(self, validator: jsonschema.Draft7Validator | None, instance: Any) -> None:
        if validator is None:
            return
        message = _spec.first_error(validator, instance)
        if message is not None:
            raise ApiError(400, message)

    def bool_arg(self, name: str) -> bool:
        raw = (self.query.get(name) or "").lower()
        if raw in ("", "false", "0"):
            return False
        if raw in ("true", "1"):
            return True
        raise ApiError(400, f"invalid {name} {raw!r}: must be true or false")

    def int_arg(self, name: str, minimum: int) -> int | None:
        raw = self.query.get(name)
        if raw is None or raw == "":
            return None
        try:
            value = int(raw)
        except ValueError:
            raise ApiError(400, f"invalid {name} {raw!r}: must be an integer") from None
        if value < minimum:
            raise ApiError(400, f"invalid {name} {value}: must be >= {minimum}")
        return value

    def json_arg(self, name: str) -> dict[str, Any] | None:
        raw = self.query.get(name)
        if raw is None or raw == "":
            return None
        try:
            value = json.loads(raw)
        except ValueError:
            raise ApiError(400, f"invalid {name}: not valid JSON") from None
        if not isinstance(value, dict):
            raise ApiError(400, f"invalid {name}: must be a JSON object")
        return value


def _performance(value: Any, where: str = "performance", tiers: Sequence[str] = PERFORMANCE_TIERS) -> str:
    if value is None:
        return "medium"
    if value not in tiers:
        raise ApiError(400, f"invalid {where} {value!r}: must be one of {', '.join(tiers)}")
    return str(value)


class _Api:
    """The Dune endpoints, on top of :class:`EmulatorState`."""

    def __init__(self, state: EmulatorState) -> None:
        self.state = state

    def handle(self, request: _Request) -> tuple[int, dict[str, Any]]:
        handler = cast(Callable[[_Request], dict[str, Any]], getattr(self, request.endpoint))
        return 200, handler(request)

    @staticmethod
    def _body_validator(endpoint: str) -> jsonschema.Draft7Validator | None:
        return _spec.request_body_validator(ENDPOINTS[endpoint].path, ENDPOINTS[endpoint].method)

    def execute_query_pipeline(self, request: _Request) -> dict[str, Any]:
        query_id = request.query_id()
        body = request.json_object()
        request.validate(self._body_validator(request.endpoint), body)
        params = body.get("query_parameters") or {}
        pipeline_id = self.state.execute_query_pipeline(query_id, _performance(body["performance"]), params)
        return {"pipeline_execution_id": pipeline_id}

    def execute_pipeline(self, request: _Request) -> dict[str, Any]:
        body = request.json_object()
        request.validate(self._body_validator(request.endpoint), body)
        pipeline = body.get("pipeline")
        if not isinstance(pipeline, dict) or "nodes" not in pipeline:
            raise ApiError(400, "invalid request body: pipeline.nodes is required")
        return {"pipeline_execution_id": self.state.execute_pipeline(pipeline["nodes"])}

    def get_query_pipeline(self, request: _Request) -> dict[str, Any]:
        query_id = request.query_id()
        performance = _performance(request.query.get("performance") or None)
        params = request.json_arg("query_parameters") or {}
        return {"pipeline": {"nodes": self.state.plan_query_pipeline(query_id, performance, params)}}

    def _max_datapoints(self, request: _Request) -> int | None:
        if request.bool_arg("ignore_max_datapoints_per_request"):
            return None
        return self.state.datapoint_limit(request.api_key)

    def get_pipeline_status(self, request: _Request) -> dict[str, Any]:
        return self.state.pipeline_status(request.path_params["pipeline_execution_id"])

    def execute_query(self, request: _Request) -> dict[str, Any]:
        query_id = request.query_id()
        body = request.json_object()
        request.validate(_spec.execute_query_body_validator(), body)
        performance = body.get("performance", request.query.get("performance") or None)
        params = body.get("query_parameters")
        if params is None:
            params = request.json_arg("query_parameters") or {}
        execution_id = self.state.execute_query(query_id, _performance(performance), params)
        return {"execution_id": execution_id, "state": "QUERY_STATE_PENDING"}

    def get_execution_status(self, request: _Request) -> dict[str, Any]:
        return self.state.execution_status(request.execution_id())

    def get_execution_results(self, request: _Request) -> dict[str, Any]:
        execution_id = request.execution_id()
        limit, offset = request.int_arg("limit", 1), request.int_arg("offset", 0) or 0
        allow = request.bool_arg("allow_partial_results")
        return self.state.execution_results(
            execution_id, limit, offset, request.base_url, allow, self._max_datapoints(request)
        )

    def get_query_results(self, request: _Request) -> dict[str, Any]:
        query_id = request.query_id()
        limit, offset = request.int_arg("limit", 1), request.int_arg("offset", 0) or 0
        allow = request.bool_arg("allow_partial_results")
        return self.state.query_results(query_id, limit, offset, request.base_url, allow, self._max_datapoints(request))

    def cancel_execution(self, request: _Request) -> dict[str, Any]:
        return {"success": self.state.cancel(request.execution_id())}

    def refresh_materialized_view(self, request: _Request) -> dict[str, Any]:
        body = request.json_object()
        request.validate(self._body_validator(request.endpoint), body)
        # Dune's newer materialized-view docs add a small tier the spec does not list.
        performance = _performance(body.get("performance"), tiers=("small", *PERFORMANCE_TIERS))
        execution_id, sql_id = self.state.refresh_view(request.path_params["name"], performance)
        return {"execution_id": execution_id, "sql_id": sql_id}

    def get_materialized_view(self, request: _Request) -> dict[str, Any]:
        return self.state.get_view(request.path_params["name"])

    def get_query(self, request: _Request) -> dict[str, Any]:
        return self.state.get_query(request.query_id())

    def create_query(self, request: _Request) -> dict[str, Any]:
        body = request.json_object()
        request.validate(self._body_validator(request.endpoint), body)
        return {"query_id": self.state.save_query(None, body)}

    def update_query(self, request: _Request) -> dict[str, Any]:
        query_id = request.query_id()
        body = request.json_object()
        if not body:
            raise ApiError(400, "invalid request body: nothing to update")
        return {"query_id": self.state.save_query(query_id, body)}

    def execute_sql(self, request: _Request) -> dict[str, Any]:
        body = request.json_object()
        request.validate(self._body_validator(request.endpoint), body)
        execution_id = self.state.execute_sql(str(body["sql"]), _performance(body.get("performance")))
        return {"execution_id": execution_id, "state": "QUERY_STATE_PENDING"}

    def upsert_materialized_view(self, request: _Request) -> dict[str, Any]:
        body = request.json_object()
        request.validate(self._body_validator(request.endpoint), body)
        for key in ("name", "query_id"):
            if key not in body:
                raise ApiError(400, f"invalid request body: {key} is required")
        performance = _performance(body.get("performance"), tiers=("small", *PERFORMANCE_TIERS))
        execution_id = self.state.upsert_view(body, performance)
        return {"name": body["name"], "execution_id": execution_id}

    def delete_materialized_view(self, request: _Request) -> dict[str, Any]:
        name = request.path_params["name"]
        self.state.delete_view(name)
        return {"message": f"materialized view {name} deleted"}

    def create_table(self, request: _Request) -> dict[str, Any]:
        body = request.json_object()
        # The spec renders a column's type (Go's json.RawMessage) as an array of bytes; Dune's docs send a type
        # name such as "varchar", so the type is checked here, the rest of the body against the spec.
        schema = body.get("schema")
        untyped = [{k: v for k, v in c.items() if k != "type"} if isinstance(c, dict) else c for c in schema or []]
        request.validate(self._body_validator(request.endpoint), {**body, "schema": untyped} if schema else body)
        return self.state.create_table(body)

    def insert_rows(self, request: _Request) -> dict[str, Any]:
        data = cast(dict[str, Any], request.body)
        namespace, table = request.path_params["namespace"], request.path_params["table_name"]
        rows, size = self.state.insert_rows(namespace, table, data["content"], data["content_type"])
        return {"rows_written": rows, "bytes_written": size, "name": f"dune.{namespace}.{table}"}

    def clear_table(self, request: _Request) -> dict[str, Any]:
        self.state.clear_table(request.path_params["namespace"], request.path_params["table_name"])
        return {"message": "table cleared"}

    def delete_table(self, request: _Request) -> dict[str, Any]:
        self.state.delete_table(request.path_params["namespace"], request.path_params["table_name"])
        return {"message": "table deleted"}

    def get_usage(self, request: _Request) -> dict[str, Any]:
        request.validate(self._body_validator(request.endpoint), request.json_object())
        return self.state.usage()
