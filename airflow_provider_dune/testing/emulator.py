"""A local emulator of the Dune analytics API (``https://api.dune.com/api``), for tests, demos and CI.

It is a real HTTP/1.1 server on loopback (stdlib ``http.server`` plus ``jsonschema`` for request validation)
that implements the endpoints the provider uses, with Dune's paths, bodies, error shapes and state
machines. Runs advance with the clock, computed lazily whenever they are read::

    from airflow_provider_dune.testing.emulator import DuneEmulator, Fault

    with DuneEmulator(api_keys={"test-key": "write"}) as emu:
        emu.add_materialized_view("dune.team.result_x", query_id=10, duration=0.2)
        emu.add_query(11, depends_on=["dune.team.result_x"], duration=0.1, parameters=["date"])
        emu.inject("execute_query_pipeline", Fault.status(429, retry_after=1))
        ...  # point a client at emu.url with header X-Dune-Api-Key: test-key

Endpoints (all under ``/api``; names used by ``counts`` and ``inject``)::

    execute_query_pipeline     POST /v1/query/{query_id}/pipeline/execute
    execute_pipeline           POST /v1/pipelines/execute
    get_query_pipeline         GET  /v1/query/{query_id}/pipeline
    pipeline_status            GET  /v1/pipelines/executions/{pipeline_execution_id}/status
    execute_query              POST /v1/query/{query_id}/execute
    execution_status           GET  /v1/execution/{execution_id}/status
    execution_results          GET  /v1/execution/{execution_id}/results
    query_results              GET  /v1/query/{query_id}/results
    cancel_execution           POST /v1/execution/{execution_id}/cancel
    refresh_materialized_view  POST /v1/materialized-views/{name}/refresh
    get_materialized_view      GET  /v1/materialized-views/{name}
    get_query                  GET  /v1/query/{queryId}
    usage                      POST /v1/usage

Behaviour worth knowing:

* Auth: ``X-Dune-Api-Key`` header or ``api_key`` query parameter; unknown key -> 401 ``invalid API Key``;
  a ``read`` key -> 403 on the execute, refresh and cancel endpoints.
* Request bodies are validated against the request schemas of Dune's OpenAPI spec (bundled as
  ``dune_openapi.json``); explicit pipelines are also checked for structure (one action per node, unique ids,
  known dependencies, no cycles) and for unknown queries/views. Unknown query parameters -> 400.
* A pipeline node becomes runnable when all its dependencies completed (it then gets an execution id), is
  ``pending`` for its ``pending`` seconds, ``executing`` for its ``duration`` and ends ``completed`` or
  ``failed``. Nodes downstream of a failed or cancelled node end ``cancelled`` without ever starting.
  The overall status is ``pending`` until some node executes, then ``executing``, and once every node has
  ended: ``cancelled`` if a node was cancelled through the API, else ``failed`` (with ``error`` naming the
  node) if a node failed, else ``completed``.
* ``POST /v1/execution/{id}/cancel`` on a pending or executing execution answers ``{"success": true}`` and
  the execution ends ``QUERY_STATE_CANCELLED``; on an execution that already finished it answers
  ``{"success": false}`` (HTTP 200) and changes nothing.
* ``GET /v1/query/{id}/results`` answers with the latest finished run of the query; for a query never run
  through the API, with a run that finished before the emulator started (as if run from Dune's web app).
* A query added with ``partial=True`` ends ``QUERY_STATE_COMPLETED_PARTIAL`` (a result Dune truncated); its
  results are answered with ``QUERY_STATE_FAILED`` unless requested with ``allow_partial_results=true``, as
  Dune's spec says.
* Timestamps are RFC 3339 UTC with nanoseconds (``2024-12-20T11:04:18.724658237Z``), as Dune sends them.
* Rate limits (off by default, :meth:`DuneEmulator.set_rate_limit`): per-key token buckets, ``write`` for
  the execute/refresh endpoints and ``read`` for everything else; 429 ``Too many requests`` without a
  ``Retry-After`` header (Dune documents none).

Control API (no key needed; served when ``control_api=True``), for driving an emulator in another process
(see :class:`DuneEmulatorClient`)::

    GET  /_emulator/health              {"status": "ok"}
    POST /_emulator/queries             add_query kwargs plus "query_id"
    POST /_emulator/materialized-views  add_materialized_view kwargs plus "name"
    POST /_emulator/faults              {"endpoint": "...", "query_id": 1 | null,
                                         "faults": [{"kind": "status", "code": 429, "retry_after": 1, "times": 3},
                                                    {"kind": "slow", "seconds": 2}, {"kind": "drop"}, ...]}
    GET  /_emulator/counts              {"counts": {...}, "executions_started": {"<query_id>": n},
                                         "executions_started_total": n, "connections_opened": n}
    GET  /_emulator/requests            {"requests": [...]}  (keys masked)
    POST /_emulator/reset               forget runs, counts, requests and faults
    POST /_emulator/rate-limit          {"read_per_minute": n | null, "write_per_minute": n | null}
    POST /_emulator/settings            {"node_state_style": "lower" | "query_state"}
    POST /_emulator/seed?time_scale=x   a seed document (below)

Seed documents (``--seed FILE``, :meth:`DuneEmulator.load_seed`, the bundled ``default_seed.json``)::

    {
      "description": "optional free text",
      "materialized_views": [
        {"name": "dune.demo.result_dex_trades_daily", "query_id": 1000, "duration": 3.0, "pending": 1.0,
         "error": null, "depends_on": []}
      ],
      "queries": [
        {"query_id": 1001, "name": "daily_dex_volume", "duration": 2.0, "pending": 0.5, "error": null,
         "depends_on": ["dune.demo.result_dex_trades_daily"], "parameters": ["date"],
         "rows": [{"block_date": "2024-06-01", "volume_usd": 1523400012.55}]}
      ]
    }

Every field except ``query_id`` (queries) and ``name``/``query_id`` (views) is optional, with the defaults of
:meth:`DuneEmulator.add_query` / :meth:`DuneEmulator.add_materialized_view`; ``time_scale`` multiplies every
``duration`` and ``pending``.

Command line (also the ``dune-emulator`` console script)::

    python -m airflow_provider_dune.testing.emulator --host 127.0.0.1 --port 8765 --api-key KEY \\
        [--read-api-key KEY] [--seed FILE | --no-seed] [--time-scale X] [--verbose] [--allow-remote]

``--port 0`` picks a free port; the start line ``Dune API emulator listening on http://HOST:PORT/api`` shows
it. The key defaults to ``$DUNE_EMULATOR_API_KEY``, else ``emulator-key``. Binding to a non-loopback address
needs ``--allow-remote`` (e.g. ``0.0.0.0`` inside a container network). SIGTERM/SIGINT stop it cleanly.
"""

from __future__ import annotations

import argparse
import contextlib
import ipaddress
import json
import os
import re
import signal
import socket
import sys
import threading
import time
import urllib.error
import urllib.parse
import urllib.request
from collections.abc import Callable, Mapping, Sequence
from dataclasses import asdict
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from pathlib import Path
from typing import Any, TextIO, cast

import jsonschema

from airflow_provider_dune.testing import _spec
from airflow_provider_dune.testing._profiles import DEFAULT_PROFILE, PROFILE_ENV, PROFILES, SEED_ENV, ResponseProfile
from airflow_provider_dune.testing._state import (
    ENDPOINTS,
    PERFORMANCE_TIERS,
    WRITE_ACCESS_ENDPOINTS,
    ApiError,
    Clock,
    EmulatorState,
    NodeStateStyle,
    RecordedRequest,
)
from airflow_provider_dune.testing.faults import Fault, format_retry_after

__all__ = [
    "DEFAULT_SEED_PATH",
    "ENDPOINTS",
    "DuneEmulator",
    "DuneEmulatorClient",
    "DuneEmulatorClientError",
    "Fault",
    "RecordedRequest",
    "main",
]

DEFAULT_SEED_PATH = Path(__file__).with_name("default_seed.json")
DEFAULT_CLI_API_KEY = "emulator-key"
API_KEY_ENV = "DUNE_EMULATOR_API_KEY"
API_KEY_HEADER = "X-Dune-Api-Key"
MASK = "***"
MAX_BODY_BYTES = 10 * 1024 * 1024
_MALFORMED_BODY = b'{"execution_id": "01HKZJ2683PHF9Q9PHHQ8FW4Q1", "state": "QUERY_STAT'
_FORBIDDEN_EXECUTE = "Not allowed to execute query. Query is archived, unsaved or not enough permissions"
_FORBIDDEN_OTHER = "not enough permissions: this action needs an API key with write access"

#: What Dune's execution ids look like (26 characters of Crockford base32); others get Dune's 400.
_EXECUTION_ID = re.compile(r"[0-9A-HJKMNP-TV-Z]{26}", re.IGNORECASE)
#: Dune's query ids are 32-bit; a larger number is "invalid", not "not found".
_MAX_QUERY_ID = 2**31 - 1

_Q = r"(?P<query_id>[^/]+)"
_E = r"(?P<execution_id>[^/]+)"
_ROUTES: tuple[tuple[str, re.Pattern[str], str, str], ...] = tuple(
    (method, re.compile("/api" + pattern), name, spec_path)
    for method, pattern, name, spec_path in (
        ("POST", f"/v1/query/{_Q}/pipeline/execute", "execute_query_pipeline", "/v1/query/{query_id}/pipeline/execute"),
        ("POST", "/v1/pipelines/execute", "execute_pipeline", "/v1/pipelines/execute"),
        ("GET", f"/v1/query/{_Q}/pipeline", "get_query_pipeline", "/v1/query/{query_id}/pipeline"),
        (
            "GET",
            "/v1/pipelines/executions/(?P<pipeline_execution_id>[^/]+)/status",
            "pipeline_status",
            "/v1/pipelines/executions/{pipeline_execution_id}/status",
        ),
        ("POST", f"/v1/query/{_Q}/execute", "execute_query", "/v1/query/{query_id}/execute"),
        ("GET", f"/v1/execution/{_E}/status", "execution_status", "/v1/execution/{execution_id}/status"),
        ("GET", f"/v1/execution/{_E}/results", "execution_results", "/v1/execution/{execution_id}/results"),
        ("GET", f"/v1/query/{_Q}/results", "query_results", "/v1/query/{query_id}/results"),
        ("POST", f"/v1/execution/{_E}/cancel", "cancel_execution", "/v1/execution/{execution_id}/cancel"),
        (
            "POST",
            "/v1/materialized-views/(?P<name>[^/]+)/refresh",
            "refresh_materialized_view",
            "/v1/materialized-views/{name}/refresh",
        ),
        ("GET", "/v1/materialized-views/(?P<name>[^/]+)", "get_materialized_view", "/v1/materialized-views/{name}"),
        ("GET", "/v1/query/(?P<query_id>[^/]+)", "get_query", "/v1/query/{queryId}"),
        ("POST", "/v1/usage", "usage", "/v1/usage"),
    )
)
#: Endpoint name -> (OpenAPI path, method) in Dune's spec.
SPEC_OPERATIONS: dict[str, tuple[str, str]] = {name: (spec_path, method) for method, _, name, spec_path in _ROUTES}

_NUMBER = {"type": "number", "minimum": 0}
_NAMES = {"type": "array", "items": {"type": "string", "minLength": 1}}
_QUERY_SCHEMA: dict[str, Any] = {
    "type": "object",
    "required": ["query_id"],
    "additionalProperties": False,
    "properties": {
        "query_id": {"type": "integer", "minimum": 1},
        "name": {"type": ["string", "null"]},
        "duration": _NUMBER,
        "pending": _NUMBER,
        "error": {"type": ["string", "null"]},
        "depends_on": _NAMES,
        "rows": {"type": ["array", "null"], "items": {"type": "object"}},
        "parameters": _NAMES,
        "partial": {"type": "boolean"},
    },
}
_VIEW_SCHEMA: dict[str, Any] = {
    "type": "object",
    "required": ["name", "query_id"],
    "additionalProperties": False,
    "properties": {
        "name": {"type": "string", "minLength": 1},
        "query_id": {"type": "integer", "minimum": 1},
        "duration": _NUMBER,
        "pending": _NUMBER,
        "error": {"type": ["string", "null"]},
        "depends_on": _NAMES,
        "refresh_every": {"type": ["number", "null"], "exclusiveMinimum": 0},
    },
}
_SEED_SCHEMA: dict[str, Any] = {
    "type": "object",
    "additionalProperties": False,
    "properties": {
        "description": {"type": "string"},
        "queries": {"type": "array", "items": _QUERY_SCHEMA},
        "materialized_views": {"type": "array", "items": _VIEW_SCHEMA},
    },
}


def _schema_error(schema: dict[str, Any], instance: Any, what: str) -> str | None:
    error = jsonschema.exceptions.best_match(jsonschema.Draft7Validator(schema).iter_errors(instance))
    if error is None:
        return None
    where = "".join(f"[{p!r}]" if isinstance(p, int) else f".{p}" for p in error.absolute_path)
    return f"invalid {what}{' at ' + where.lstrip('.') if where else ''}: {error.message}"


def is_loopback(host: str) -> bool:
    """Whether ``host`` names a loopback address (``localhost``, ``127.0.0.0/8``, ``::1``)."""
    if host.lower() == "localhost":
        return True
    try:
        return ipaddress.ip_address(host.strip("[]")).is_loopback
    except ValueError:
        return False


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
        path, method = SPEC_OPERATIONS[endpoint]
        return _spec.request_body_validator(path, method)

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

    def pipeline_status(self, request: _Request) -> dict[str, Any]:
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

    def execution_status(self, request: _Request) -> dict[str, Any]:
        return self.state.execution_status(request.execution_id())

    def execution_results(self, request: _Request) -> dict[str, Any]:
        execution_id = request.execution_id()
        limit, offset = request.int_arg("limit", 1), request.int_arg("offset", 0) or 0
        allow = request.bool_arg("allow_partial_results")
        return self.state.execution_results(
            execution_id, limit, offset, request.base_url, allow, self._max_datapoints(request)
        )

    def query_results(self, request: _Request) -> dict[str, Any]:
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

    def usage(self, request: _Request) -> dict[str, Any]:
        request.validate(self._body_validator(request.endpoint), request.json_object())
        return self.state.usage()


class _Server(ThreadingHTTPServer):
    daemon_threads = True
    allow_reuse_address = True
    request_queue_size = 256

    def __init__(self, address: tuple[str, int], emulator: DuneEmulator, family: socket.AddressFamily) -> None:
        self.address_family = family
        self.emulator = emulator
        self._connections: set[socket.socket] = set()
        self._connections_lock = threading.Lock()
        self.connections_opened = 0
        super().__init__(address, _Handler)

    def process_request(self, request: Any, client_address: Any) -> None:
        with self._connections_lock:
            self._connections.add(request)
            self.connections_opened += 1
        super().process_request(request, client_address)

    def shutdown_request(self, request: Any) -> None:
        with self._connections_lock:
            self._connections.discard(request)
        super().shutdown_request(request)

    def close_connections(self) -> None:
        with self._connections_lock:
            connections = list(self._connections)
            self._connections.clear()
        for connection in connections:
            with contextlib.suppress(OSError):
                connection.shutdown(socket.SHUT_RDWR)


class _Handler(BaseHTTPRequestHandler):
    protocol_version = "HTTP/1.1"
    server_version = "DuneEmulator/1.0"
    sys_version = ""
    timeout = 120  # idle keep-alive connections are closed after this many seconds
    disable_nagle_algorithm = True  # headers and body go out in separate writes; avoid delayed-ACK stalls
    server: _Server

    def log_message(self, format: str, *args: Any) -> None:
        """Silence the default per-request logging (it would include query strings)."""

    def do_GET(self) -> None:
        self._dispatch()

    def do_POST(self) -> None:
        self._dispatch()

    def do_PUT(self) -> None:
        self._dispatch()

    def do_PATCH(self) -> None:
        self._dispatch()

    def do_DELETE(self) -> None:
        self._dispatch()

    # ------------------------------------------------------------------------------------------- plumbing

    def _read_body(self) -> bytes | None:
        """The request body; ``None`` (after answering 413/400) when it cannot be read."""
        if "chunked" in self.headers.get("Transfer-Encoding", "").lower():
            chunks: list[bytes] = []
            total = 0
            while True:
                line = self.rfile.readline(65537)
                try:
                    size = int(line.split(b";", 1)[0].strip() or b"0", 16)
                except ValueError:
                    self._send_json(400, {"error": "invalid chunked encoding"}, close=True)
                    return None
                if size == 0:
                    while self.rfile.readline(65537) not in (b"\r\n", b"\n", b""):
                        pass
                    return b"".join(chunks)
                total += size
                if total > MAX_BODY_BYTES:
                    self._send_json(413, {"error": "request body too large"}, close=True)
                    return None
                chunks.append(self.rfile.read(size))
                self.rfile.readline(65537)
        try:
            length = int(self.headers.get("Content-Length") or 0)
        except ValueError:
            self._send_json(400, {"error": "invalid Content-Length"}, close=True)
            return None
        if length > MAX_BODY_BYTES:
            self._send_json(413, {"error": "request body too large"}, close=True)
            return None
        return self.rfile.read(length) if length > 0 else b""

    def _send(
        self,
        status: int,
        body: bytes,
        *,
        content_type: str = "application/json",
        headers: Mapping[str, str] | None = None,
        close: bool = False,
    ) -> None:
        try:
            self.send_response(status)
            self.send_header("Content-Type", content_type)
            self.send_header("Content-Length", str(len(body)))
            for key, value in (headers or {}).items():
                self.send_header(key, value)
            if close:
                self.send_header("Connection", "close")
                self.close_connection = True
            self.end_headers()
            if self.command != "HEAD":
                self.wfile.write(body)
            self.wfile.flush()
        except OSError:
            self.close_connection = True

    def _send_json(
        self, status: int, payload: Any, *, headers: Mapping[str, str] | None = None, close: bool = False
    ) -> None:
        self._send(status, json.dumps(payload).encode(), headers=headers, close=close)

    def _reply(
        self, record: RecordedRequest, status: int, payload: Any, *, headers: Mapping[str, str] | None = None
    ) -> None:
        """Record the answer (before sending it, so it is visible once the client has it), then send it."""
        body = json.dumps(payload).encode()
        record.response_body, record.status = body, status
        self._send(status, body, headers=headers)

    def _drop(self) -> None:
        """Close the connection without sending anything."""
        self.close_connection = True
        with contextlib.suppress(OSError):
            self.connection.shutdown(socket.SHUT_RDWR)

    def _log(self, status: int | None, path: str) -> None:
        emulator = self.server.emulator
        if emulator.verbose:
            shown = "dropped" if status is None else str(status)
            print(f"dune-emulator: {self.command} {path} -> {shown}", file=emulator.log_stream, flush=True)

    # ------------------------------------------------------------------------------------------- dispatch

    def _dispatch(self) -> None:
        emulator = self.server.emulator
        split = urllib.parse.urlsplit(self.path)
        path = urllib.parse.unquote(split.path)
        if len(path) > 1:
            path = path.rstrip("/")
        query = {key: values[-1] for key, values in urllib.parse.parse_qs(split.query).items()}
        raw = self._read_body()
        if raw is None:
            self._log(400, path)
            return
        has_body = bool(raw.strip())
        body: Any = None
        body_error: str | None = None
        if has_body:
            try:
                body = json.loads(raw)
            except ValueError as exc:
                body_error = f"invalid JSON body: {exc}"

        if path.startswith("/_emulator/") and emulator.control_api:
            status, payload = emulator._control(self.command, path, query, body, body_error)
            self._send_json(status, payload)
            self._log(status, path)
            return

        endpoint, path_params, allowed = "unknown", {}, []
        for method, pattern, name, _ in _ROUTES:
            match = pattern.fullmatch(path)
            if match:
                if method == self.command:
                    endpoint, path_params = name, match.groupdict()
                    break
                allowed.append(method)

        record = RecordedRequest(
            method=self.command,
            path=path,
            endpoint=endpoint,
            query={k: (MASK if k == "api_key" else v) for k, v in query.items()},
            headers={k: (MASK if k.lower() == API_KEY_HEADER.lower() else v) for k, v in self.headers.items()},
            json_body=body,
            at=time.time(),
        )
        emulator._state.record(record)

        if endpoint == "unknown":
            if allowed:
                message = f"method {self.command} not allowed on {path}"
                self._reply(record, 405, {"error": message}, headers={"Allow": ", ".join(allowed)})
            else:
                self._reply(record, 404, {"error": f"not found: no endpoint {path}"})
            self._log(record.status, path)
            return

        state = emulator._state
        fault = state.take_fault(endpoint, state.related_query_ids(endpoint, {**query, **path_params}, body))
        after_processing = False
        if fault is not None:
            record.fault = fault.kind
            if fault.kind == "status":
                code = cast(int, fault.code)
                headers = {} if fault.retry_after is None else {"Retry-After": format_retry_after(fault.retry_after)}
                self._reply(record, code, {"error": fault.error_message}, headers=headers)
                self._log(code, path)
                return
            if fault.kind == "malformed":
                record.response_body, record.status = _MALFORMED_BODY, 200
                self._send(200, _MALFORMED_BODY)
                self._log(200, path)
                return
            if fault.kind == "drop":
                self._drop()
                self._log(None, path)
                return
            if fault.kind in ("oversized", "echo_key", "redirect"):
                status = self._hostile_answer(record, fault)
                self._log(status, path)
                return
            if fault.kind == "slow":
                emulator._stopping.wait(fault.seconds)
            after_processing = fault.kind in ("drop_after_processing", "drip", "truncated")

        status, payload, headers = self._answer(endpoint, path_params, query, body, has_body, body_error)
        if fault is not None and after_processing:
            answer = json.dumps(payload).encode()
            if fault.kind != "drop_after_processing":  # a dropped answer was never sent: no status recorded
                record.response_body, record.status = answer, status
            if fault.kind == "drip":
                self._drip(status, answer, fault.seconds)
            elif fault.kind == "truncated":
                self._send_truncated(status, answer)
            else:
                self._drop()
            self._log(None if fault.kind == "drop_after_processing" else status, path)
            return
        self._reply(record, status, payload, headers=headers)
        self._log(status, path)

    def _hostile_answer(self, record: RecordedRequest, fault: Fault) -> int:
        """Answer for the faults that do not perform the request: oversized body, echoed key, redirect."""
        code = cast(int, fault.code) if fault.kind != "oversized" else 200
        if fault.kind == "echo_key":
            key = self.headers.get(API_KEY_HEADER) or ""
            self._reply(record, code, {"error": f"invalid API Key {key} (sent in {API_KEY_HEADER})"})
        elif fault.kind == "redirect":
            record.status = code
            self._send(code, b"", headers={"Location": fault.location or "/"})
        else:
            record.status = 200
            self._send_stream(fault.size)
        return code

    def _send_stream(self, size: int) -> None:
        """HTTP 200 with a ``size``-byte JSON-looking body, written in chunks (never built in memory)."""
        try:
            self.send_response(200)
            self.send_header("Content-Type", "application/json")
            self.send_header("Content-Length", str(size))
            self.end_headers()
            prefix = b'{"padding": "'
            self.wfile.write(prefix[:size])
            left = size - min(size, len(prefix))
            chunk = b"x" * 65536
            while left > 0 and not self.server.emulator._stopping.is_set():
                self.wfile.write(chunk[:left])
                left -= min(left, len(chunk))
            self.wfile.flush()
        except OSError:
            pass
        self.close_connection = True

    def _drip(self, status: int, body: bytes, seconds_per_byte: float) -> None:
        """Send the headers, then the body one byte at a time (each read on the client gets a byte in time)."""
        stopping = self.server.emulator._stopping
        try:
            self.send_response(status)
            self.send_header("Content-Type", "application/json")
            self.send_header("Content-Length", str(len(body)))
            self.end_headers()
            self.wfile.flush()
            for index in range(len(body)):
                if stopping.wait(seconds_per_byte):
                    break
                self.wfile.write(body[index : index + 1])
                self.wfile.flush()
        except OSError:
            pass
        self.close_connection = True

    def _send_truncated(self, status: int, body: bytes) -> None:
        """Promise the whole body in ``Content-Length``, send half of it, close."""
        try:
            self.send_response(status)
            self.send_header("Content-Type", "application/json")
            self.send_header("Content-Length", str(len(body)))
            self.end_headers()
            self.wfile.write(body[: len(body) // 2])
            self.wfile.flush()
        except OSError:
            pass
        self._drop()

    def _answer(
        self,
        endpoint: str,
        path_params: dict[str, str],
        query: dict[str, str],
        body: Any,
        has_body: bool,
        body_error: str | None,
    ) -> tuple[int, dict[str, Any], dict[str, str]]:
        emulator = self.server.emulator
        key = self.headers.get(API_KEY_HEADER) or query.get("api_key") or ""
        role = emulator._api_keys.get(key)
        if role is None:
            return 401, {"error": "invalid API Key"}, {}
        if role != "write" and endpoint in WRITE_ACCESS_ENDPOINTS:
            message = _FORBIDDEN_EXECUTE if endpoint.startswith("execute") else _FORBIDDEN_OTHER
            return 403, {"error": message}, {}
        if not emulator._state.take_token(key, endpoint):
            return 429, {"error": "Too many requests"}, {}
        if body_error is not None and self.command == "POST":
            return 400, {"error": body_error}, {}
        host = self.headers.get("Host")
        base_url = f"http://{host}/api" if host else emulator.url
        request = _Request(endpoint, path_params, query, body, has_body, base_url, key)
        try:
            _, payload = emulator._api.handle(request)
        except ApiError as exc:
            return emulator.profile.error_status(endpoint, exc.status, exc.message), {"error": exc.message}, {}
        status, payload = emulator.profile.answer(endpoint, payload)
        return status, payload, {}


class DuneEmulator:
    """An in-process Dune API server on loopback.

    :param host: address to bind; must be loopback unless ``allow_remote`` is set.
    :param port: port to bind; ``0`` picks a free one (see :attr:`port` after :meth:`start`).
    :param api_keys: accepted API keys mapped to their role, ``"write"`` or ``"read"``; defaults to
        ``{"test-key": "write", "read-key": "read"}``.
    :param control_api: serve the ``/_emulator/`` control API.
    :param verbose: log ``METHOD path -> status`` for each request (never headers or query strings).
    :param allow_remote: allow binding to a non-loopback address.
    :param clock: monotonic clock in seconds (default ``time.monotonic``); a fake one makes tests deterministic.
    :param seed: a seed document (mapping or path) to load, see the module docstring.
    :param node_state_style: how node statuses are spelled in pipeline status, see :attr:`node_state_style`.
    :param record_limit: how many requests :attr:`requests` keeps (oldest dropped first); ``None`` = all.
    :param log_stream: where ``verbose`` logging goes (default ``sys.stderr``).
    :param profile: ``realistic`` (answers drawn from the shapes real Dune was seen to send) or ``strict``
        (the spec's ideal shape every time); ``None`` reads ``$DUNE_EMULATOR_PROFILE``, default realistic.
        A :class:`~airflow_provider_dune.testing._profiles.ResponseProfile` may force chosen shapes on.
    :param profile_seed: seed of the realistic draws; ``None`` reads ``$DUNE_EMULATOR_SEED``, else picks one
        (:attr:`profile` tells which).
    """

    def __init__(
        self,
        host: str = "127.0.0.1",
        port: int = 0,
        api_keys: Mapping[str, str] | None = None,
        *,
        control_api: bool = True,
        verbose: bool = False,
        allow_remote: bool = False,
        clock: Clock | None = None,
        seed: Mapping[str, Any] | str | os.PathLike[str] | None = None,
        node_state_style: NodeStateStyle = "lower",
        record_limit: int | None = 100_000,
        log_stream: TextIO | None = None,
        profile: str | ResponseProfile | None = None,
        profile_seed: int | None = None,
    ) -> None:
        if not allow_remote and not is_loopback(host):
            raise ValueError(
                f"refusing to bind the Dune API emulator to non-loopback address {host!r}; "
                f"pass allow_remote=True (--allow-remote) to allow it"
            )
        keys = dict(api_keys) if api_keys is not None else {"test-key": "write", "read-key": "read"}
        for key, role in keys.items():
            if not isinstance(key, str) or not key:
                raise ValueError("API keys must be non-empty strings")
            if role not in ("read", "write"):
                raise ValueError(f"API key roles must be 'read' or 'write', got {role!r}")
        self._host = host
        self._requested_port = port
        self._api_keys = keys
        self.control_api = control_api
        self.verbose = verbose
        self.log_stream: TextIO = log_stream or sys.stderr
        self.profile = profile if isinstance(profile, ResponseProfile) else ResponseProfile(profile, profile_seed)
        self._state = EmulatorState(clock=clock, record_limit=record_limit)
        self._api = _Api(self._state)
        self._server: _Server | None = None
        self._thread: threading.Thread | None = None
        self._stopping = threading.Event()
        self.node_state_style = node_state_style
        if seed is not None:
            self.load_seed(seed)

    # --------------------------------------------------------------------------------------- lifecycle

    def start(self) -> DuneEmulator:
        """Bind and serve in a background thread; returns ``self``."""
        if self._server is not None:
            raise RuntimeError("the Dune API emulator is already running")
        family = socket.AF_INET6 if ":" in self._host else socket.AF_INET
        self._stopping.clear()
        self._server = _Server((self._host.strip("[]"), self._requested_port), self, family)
        self._thread = threading.Thread(
            target=self._server.serve_forever,
            kwargs={"poll_interval": 0.5},
            name=f"dune-emulator-{self.port}",
            daemon=True,
        )
        self._thread.start()
        return self

    def stop(self) -> None:
        """Stop serving, close open connections, free the port and join the server thread."""
        server, thread = self._server, self._thread
        if server is None:
            return
        self._stopping.set()
        shutter = threading.Thread(target=server.shutdown, name="dune-emulator-shutdown", daemon=True)
        shutter.start()
        while shutter.is_alive():
            self._wake(server)
            shutter.join(0.01)
        server.server_close()
        server.close_connections()
        if thread is not None:
            thread.join(timeout=10)
        self._server = None
        self._thread = None

    @staticmethod
    def _wake(server: _Server) -> None:
        """Connect to the listening socket so that ``serve_forever`` notices a shutdown request at once."""
        host, port = str(server.server_address[0]), int(server.server_address[1])
        with contextlib.suppress(ValueError):
            if ipaddress.ip_address(host).is_unspecified:  # bound to all interfaces: knock on loopback
                host = "::1" if ":" in host else "127.0.0.1"
        with contextlib.suppress(OSError), socket.create_connection((host, port), timeout=0.2):
            pass

    def __enter__(self) -> DuneEmulator:
        return self.start()

    def __exit__(self, *exc_info: object) -> None:
        self.stop()

    @property
    def running(self) -> bool:
        """Whether the server is serving."""
        return self._server is not None

    @property
    def host(self) -> str:
        """The address bound (or to be bound)."""
        return self._host

    @property
    def port(self) -> int:
        """The port bound (the requested port before :meth:`start`)."""
        if self._server is not None:
            return int(self._server.server_address[1])
        return self._requested_port

    @property
    def base_url(self) -> str:
        """Root URL of the server, e.g. ``http://127.0.0.1:8765`` (the control API lives under it)."""
        host = f"[{self._host.strip('[]')}]" if ":" in self._host else self._host
        return f"http://{host}:{self.port}"

    @property
    def url(self) -> str:
        """Base URL of the API, like ``https://api.dune.com/api``: ``http://127.0.0.1:<port>/api``."""
        return self.base_url + "/api"

    @property
    def api_key(self) -> str:
        """The first configured key with write access (or any key if none has)."""
        for key, role in self._api_keys.items():
            if role == "write":
                return key
        return next(iter(self._api_keys), "")

    # ----------------------------------------------------------------------------------------- catalog

    def add_query(
        self,
        query_id: int,
        *,
        name: str | None = None,
        duration: float = 0.5,
        pending: float = 0.0,
        error: str | None = None,
        depends_on: Sequence[str] = (),
        rows: list[dict[str, Any]] | None = None,
        parameters: Sequence[str] = (),
        partial: bool = False,
    ) -> None:
        """Register (or replace) a query.

        :param query_id: Dune query id.
        :param name: display name (``query_<id>`` by default).
        :param duration: seconds a run spends executing.
        :param pending: seconds a run spends pending (queued) before executing.
        :param error: when set, runs end failed with this message.
        :param depends_on: names of the materialized views the query reads (its lineage).
        :param rows: result rows (default: a few generated rows).
        :param parameters: allowed parameter names; others in a request are answered with 400.
        :param partial: runs end ``QUERY_STATE_COMPLETED_PARTIAL`` (a result Dune truncated); their results are
            answered with a failed state unless asked for with ``allow_partial_results=true``.
        """
        self._state.add_query(
            query_id,
            name=name,
            duration=duration,
            pending=pending,
            error=error,
            depends_on=depends_on,
            rows=rows,
            parameters=parameters,
            partial=partial,
        )

    def add_materialized_view(
        self,
        name: str,
        *,
        query_id: int,
        duration: float = 0.5,
        pending: float = 0.0,
        error: str | None = None,
        depends_on: Sequence[str] = (),
        refresh_every: float | None = None,
    ) -> None:
        """Register (or replace) a materialized view.

        :param name: full name, e.g. ``dune.team.result_x``.
        :param query_id: the query that defines the view (registered with defaults if unknown).
        :param duration: seconds a refresh spends executing.
        :param pending: seconds a refresh spends pending before executing.
        :param error: when set, refreshes end failed with this message.
        :param depends_on: names of other materialized views it reads (besides its query's ``depends_on``).
        :param refresh_every: Dune refreshes the view on its own every so many seconds (its ``cron_expression``),
            counted from now; replacing the view keeps the schedule (e.g. to make the next refreshes fail).
        """
        self._state.add_view(
            name,
            query_id=query_id,
            duration=duration,
            pending=pending,
            error=error,
            depends_on=depends_on,
            refresh_every=refresh_every,
        )

    def load_seed(self, seed: Mapping[str, Any] | str | os.PathLike[str], *, time_scale: float = 1.0) -> None:
        """Add the queries and views of a seed document (a mapping or a JSON file path).

        :param seed: the seed, see the module docstring for its shape.
        :param time_scale: factor applied to every ``duration`` and ``pending``.
        """
        if isinstance(seed, (str, os.PathLike)):
            with open(seed, encoding="utf-8") as fh:
                seed = cast(Mapping[str, Any], json.load(fh))
        error = _schema_error(_SEED_SCHEMA, seed, "seed")
        if error is not None:
            raise ValueError(error)
        if isinstance(time_scale, bool) or not isinstance(time_scale, (int, float)) or time_scale < 0:
            raise ValueError(f"time_scale must be a non-negative number, got {time_scale!r}")
        with self._state.lock:
            for view in seed.get("materialized_views", []):
                kwargs = _scaled(view, time_scale)
                self.add_materialized_view(kwargs.pop("name"), **kwargs)
            for query in seed.get("queries", []):
                kwargs = _scaled(query, time_scale)
                self.add_query(kwargs.pop("query_id"), **kwargs)

    # ------------------------------------------------------------------------------------ faults, state

    def inject(self, endpoint: str, *faults: Fault, query_id: int | None = None) -> None:
        """Queue ``faults`` for ``endpoint``; each matching request consumes one use of the head fault.

        :param endpoint: endpoint name (see the module docstring).
        :param faults: the faults, applied in order.
        :param query_id: only apply to requests about this query id (path id, or the query of the
            execution / pipeline / materialized view the request is about).
        """
        self._state.add_faults(endpoint, faults, query_id)

    def set_datapoint_limit(self, limit: int, api_key: str | None = None) -> None:
        """Cap datapoints (rows x columns) per results request, for ``api_key`` or (``None``) every key.

        Dune's default is 250,000, an account setting; ``ignore_max_datapoints_per_request=true`` lifts it.
        """
        self._state.set_datapoint_limit(limit, api_key)

    def set_rate_limit(self, read_per_minute: int | None, write_per_minute: int | None) -> None:
        """Enable per-key token buckets (``None`` disables one); exceeding them answers 429."""
        self._state.set_rate_limit(read_per_minute, write_per_minute)

    @property
    def node_state_style(self) -> NodeStateStyle:
        """Spelling of node statuses in pipeline status: ``"lower"`` (``completed``) or ``"query_state"``
        (``QUERY_STATE_COMPLETED``)."""
        return self._state.node_state_style

    @node_state_style.setter
    def node_state_style(self, style: NodeStateStyle) -> None:
        if style not in ("lower", "query_state"):
            raise ValueError(f"node_state_style must be 'lower' or 'query_state', got {style!r}")
        self._state.node_state_style = style

    @property
    def counts(self) -> dict[str, int]:
        """Requests received per endpoint name (including faulted and unauthorised ones)."""
        with self._state.lock:
            return dict(self._state.counts)

    @property
    def requests(self) -> list[RecordedRequest]:
        """The requests received, oldest first (API keys masked)."""
        with self._state.lock:
            return list(self._state.requests)

    @property
    def connections_opened(self) -> int:
        """TCP connections accepted since start (or the last :meth:`reset`): shows whether clients reuse them."""
        server = self._server
        return server.connections_opened if server is not None else 0

    def executions_started(self, query_id: int | None = None) -> int:
        """How many execute / pipeline execute / refresh calls really started a run.

        With ``query_id``: the calls whose run was for that query (the path query of a query pipeline or
        execution, the query of a refreshed view, or any query node of an explicit pipeline).
        """
        return self._state.executions_started(query_id)

    def reset(self) -> None:
        """Forget runs, counts, requests, faults and the connection count; keep queries, views, keys and settings."""
        self._state.reset()
        self.profile.reset()
        server = self._server
        if server is not None:
            with server._connections_lock:
                server.connections_opened = 0

    # ------------------------------------------------------------------------------------- control API

    def _control(
        self, method: str, path: str, query: Mapping[str, str], body: Any, body_error: str | None
    ) -> tuple[int, dict[str, Any]]:
        action = (method, path.removeprefix("/_emulator"))
        if body_error is not None and method == "POST":
            return 400, {"error": body_error}
        payload = body if body is not None else {}
        try:
            if action == ("GET", "/health"):
                return 200, {"status": "ok", "url": self.url}
            if action == ("GET", "/counts"):
                return 200, {
                    "counts": self.counts,
                    "executions_started": self._state.executions_started_by_query(),
                    "executions_started_total": self.executions_started(),
                    "connections_opened": self.connections_opened,
                }
            if action == ("GET", "/requests"):
                return 200, {"requests": [_request_dict(r) for r in self.requests]}
            if action == ("POST", "/reset"):
                self.reset()
                return 200, {"ok": True}
            if action == ("POST", "/queries"):
                _require(_QUERY_SCHEMA, payload, "query")
                kwargs = dict(payload)
                self.add_query(kwargs.pop("query_id"), **kwargs)
                return 200, {"ok": True}
            if action == ("POST", "/materialized-views"):
                _require(_VIEW_SCHEMA, payload, "materialized view")
                kwargs = dict(payload)
                self.add_materialized_view(kwargs.pop("name"), **kwargs)
                return 200, {"ok": True}
            if action == ("POST", "/faults"):
                if not isinstance(payload, dict) or not isinstance(payload.get("faults"), list):
                    raise ValueError('expected {"endpoint": ..., "query_id": ..., "faults": [...]}')
                faults = [Fault.from_dict(item) for item in payload["faults"]]
                self.inject(str(payload.get("endpoint")), *faults, query_id=payload.get("query_id"))
                return 200, {"ok": True}
            if action == ("POST", "/rate-limit"):
                if not isinstance(payload, dict):
                    raise ValueError("expected a JSON object")
                self.set_rate_limit(payload.get("read_per_minute"), payload.get("write_per_minute"))
                return 200, {"ok": True}
            if action == ("POST", "/settings"):
                if not isinstance(payload, dict):
                    raise ValueError("expected a JSON object")
                if "node_state_style" in payload:
                    self.node_state_style = payload["node_state_style"]
                if "max_datapoints_per_request" in payload:
                    self.set_datapoint_limit(payload["max_datapoints_per_request"], payload.get("api_key"))
                return 200, {"ok": True, "node_state_style": self.node_state_style, "profile": self.profile.describe()}
            if action == ("POST", "/seed"):
                try:
                    time_scale = float(query.get("time_scale", "1"))
                except ValueError:
                    raise ValueError("time_scale must be a number") from None
                self.load_seed(payload, time_scale=time_scale)
                return 200, {"ok": True}
        except (ValueError, TypeError) as exc:
            return 400, {"error": str(exc)}
        return 404, {"error": f"not found: no control endpoint {method} {path}"}


def _require(schema: dict[str, Any], payload: Any, what: str) -> None:
    error = _schema_error(schema, payload, what)
    if error is not None:
        raise ValueError(error)


def _scaled(item: Mapping[str, Any], time_scale: float) -> dict[str, Any]:
    kwargs = dict(item)
    for key in ("duration", "pending", "refresh_every"):
        if kwargs.get(key) is not None:
            kwargs[key] = float(kwargs[key]) * time_scale
    if "duration" not in kwargs:
        kwargs["duration"] = 0.5 * time_scale
    return kwargs


def _request_dict(request: RecordedRequest) -> dict[str, Any]:
    data = asdict(request)
    data["response_body"] = request.response_body.decode("utf-8", "replace")
    return data


class DuneEmulatorClientError(RuntimeError):
    """A control API call failed."""


class DuneEmulatorClient:
    """Drive an emulator running in another process through its ``/_emulator/`` control API.

    :param base_url: the emulator's root URL (``http://127.0.0.1:8765``) or its API URL (``.../api``).
    :param timeout: seconds to wait for each control call.
    """

    def __init__(self, base_url: str, timeout: float = 10.0) -> None:
        base = base_url.rstrip("/")
        self.base_url = base.removesuffix("/api")
        self.timeout = timeout

    @property
    def url(self) -> str:
        """The emulator's API base URL."""
        return self.base_url + "/api"

    def _call(self, method: str, path: str, payload: Any = None) -> dict[str, Any]:
        data = None if payload is None else json.dumps(payload).encode()
        request = urllib.request.Request(  # noqa: S310 - the URL is the emulator's http(s) address
            self.base_url + "/_emulator" + path,
            data=data,
            method=method,
            headers={"Content-Type": "application/json"},
        )
        try:
            with urllib.request.urlopen(request, timeout=self.timeout) as response:  # noqa: S310
                result: dict[str, Any] = json.loads(response.read() or b"{}")
                return result
        except urllib.error.HTTPError as exc:
            detail = exc.read().decode("utf-8", "replace")
            with contextlib.suppress(ValueError, AttributeError):
                detail = json.loads(detail).get("error", detail)
            raise DuneEmulatorClientError(f"{method} /_emulator{path} failed with HTTP {exc.code}: {detail}") from None

    def health(self) -> bool:
        """Whether the emulator answers its health check."""
        try:
            return self._call("GET", "/health").get("status") == "ok"
        except (OSError, DuneEmulatorClientError):
            return False

    def wait_until_ready(self, timeout: float = 10.0) -> None:
        """Poll the health check until it answers; raise ``TimeoutError`` after ``timeout`` seconds."""
        deadline = time.monotonic() + timeout
        while not self.health():
            if time.monotonic() > deadline:
                raise TimeoutError(f"the Dune API emulator at {self.base_url} did not become ready in {timeout}s")
            time.sleep(0.05)

    def add_query(self, query_id: int, **kwargs: Any) -> None:
        """Same as :meth:`DuneEmulator.add_query`."""
        if "depends_on" in kwargs:
            kwargs["depends_on"] = list(kwargs["depends_on"])
        if "parameters" in kwargs:
            kwargs["parameters"] = list(kwargs["parameters"])
        self._call("POST", "/queries", {"query_id": query_id, **kwargs})

    def add_materialized_view(self, name: str, *, query_id: int, **kwargs: Any) -> None:
        """Same as :meth:`DuneEmulator.add_materialized_view`."""
        if "depends_on" in kwargs:
            kwargs["depends_on"] = list(kwargs["depends_on"])
        self._call("POST", "/materialized-views", {"name": name, "query_id": query_id, **kwargs})

    def inject(self, endpoint: str, *faults: Fault, query_id: int | None = None) -> None:
        """Same as :meth:`DuneEmulator.inject`."""
        body = {"endpoint": endpoint, "query_id": query_id, "faults": [f.to_dict() for f in faults]}
        self._call("POST", "/faults", body)

    def counts(self) -> dict[str, int]:
        """Same as :attr:`DuneEmulator.counts`."""
        counts: dict[str, int] = self._call("GET", "/counts")["counts"]
        return counts

    def executions_started(self, query_id: int | None = None) -> int:
        """Same as :meth:`DuneEmulator.executions_started`."""
        data = self._call("GET", "/counts")
        if query_id is None:
            return int(data["executions_started_total"])
        return int(data["executions_started"].get(str(query_id), 0))

    def connections_opened(self) -> int:
        """Same as :attr:`DuneEmulator.connections_opened`."""
        return int(self._call("GET", "/counts")["connections_opened"])

    def requests(self) -> list[dict[str, Any]]:
        """The recorded requests, as dictionaries (see :class:`RecordedRequest`)."""
        requests: list[dict[str, Any]] = self._call("GET", "/requests")["requests"]
        return requests

    def reset(self) -> None:
        """Same as :meth:`DuneEmulator.reset`."""
        self._call("POST", "/reset", {})

    def set_rate_limit(self, read_per_minute: int | None, write_per_minute: int | None) -> None:
        """Same as :meth:`DuneEmulator.set_rate_limit`."""
        self._call("POST", "/rate-limit", {"read_per_minute": read_per_minute, "write_per_minute": write_per_minute})

    def set_node_state_style(self, style: str) -> None:
        """Same as setting :attr:`DuneEmulator.node_state_style`."""
        self._call("POST", "/settings", {"node_state_style": style})

    def load_seed(self, seed: Mapping[str, Any], *, time_scale: float = 1.0) -> None:
        """Same as :meth:`DuneEmulator.load_seed` (with a seed mapping)."""
        self._call("POST", f"/seed?time_scale={time_scale}", dict(seed))


# ---------------------------------------------------------------------------------------------------- CLI


def _parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(
        prog="dune-emulator",
        description="Serve a local emulator of the Dune API (https://api.dune.com/api) for tests and demos.",
    )
    parser.add_argument("--host", default="127.0.0.1", help="address to bind (default: 127.0.0.1)")
    parser.add_argument("--port", type=int, default=8765, help="port to bind; 0 picks a free one (default: 8765)")
    parser.add_argument(
        "--api-key",
        default=None,
        help=f"the accepted read/write API key (default: ${API_KEY_ENV}, else {DEFAULT_CLI_API_KEY!r})",
    )
    parser.add_argument("--read-api-key", default=None, help="an additional read-only API key")
    seed = parser.add_mutually_exclusive_group()
    seed.add_argument("--seed", default=None, help="seed JSON file (default: the bundled demo seed)")
    seed.add_argument("--no-seed", action="store_true", help="start without any query or view")
    parser.add_argument("--time-scale", type=float, default=1.0, help="multiply seed durations by this factor")
    parser.add_argument("--verbose", action="store_true", help="log method, path and status of each request")
    parser.add_argument("--allow-remote", action="store_true", help="allow binding to a non-loopback address")
    parser.add_argument("--no-control-api", action="store_true", help="do not serve the /_emulator/ control API")
    parser.add_argument(
        "--profile",
        choices=PROFILES,
        default=None,
        help="response shapes: realistic (drawn from what Dune was seen to send) or strict (the spec's ideal); "
        f"default ${PROFILE_ENV}, else {DEFAULT_PROFILE}",
    )
    parser.add_argument(
        "--profile-seed", type=int, default=None, help=f"seed of the realistic draws (default ${SEED_ENV}, else random)"
    )
    parser.add_argument(
        "--node-state-style",
        choices=("lower", "query_state"),
        default="lower",
        help="spelling of node statuses in pipeline status (default: lower)",
    )
    return parser


def main(argv: Sequence[str] | None = None) -> int:
    """Run the emulator until SIGTERM/SIGINT; returns the process exit code."""
    args = _parser().parse_args(argv)
    api_key = args.api_key or os.environ.get(API_KEY_ENV) or DEFAULT_CLI_API_KEY
    keys = {api_key: "write"}
    if args.read_api_key:
        keys[args.read_api_key] = "read"
    try:
        emulator = DuneEmulator(
            host=args.host,
            port=args.port,
            api_keys=keys,
            control_api=not args.no_control_api,
            verbose=args.verbose,
            allow_remote=args.allow_remote,
            node_state_style=args.node_state_style,
            profile=args.profile,
            profile_seed=args.profile_seed,
        )
        if not args.no_seed:
            emulator.load_seed(args.seed or DEFAULT_SEED_PATH, time_scale=args.time_scale)
    except (ValueError, OSError) as exc:
        print(f"dune-emulator: error: {exc}", file=sys.stderr)
        return 2
    stop = threading.Event()

    def _on_signal(signum: int, frame: object) -> None:
        stop.set()

    for signum in (signal.SIGTERM, signal.SIGINT):
        with contextlib.suppress(ValueError):  # not the main thread
            signal.signal(signum, _on_signal)
    try:
        emulator.start()
    except OSError as exc:
        print(f"dune-emulator: error: cannot bind {args.host}:{args.port}: {exc}", file=sys.stderr)
        return 2
    print(f"Dune API emulator listening on {emulator.url}", flush=True)
    print(f"Dune API emulator answers with {emulator.profile.describe()}", flush=True)
    try:
        while not stop.wait(0.5):
            pass
    finally:
        emulator.stop()
    print("Dune API emulator stopped", flush=True)
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
