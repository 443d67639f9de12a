"""The HTTP layer of the Dune API emulator: the threaded server, the request handler, dispatch to the control
API or to the Dune endpoints, and the answers of injected faults (hostile answers included)."""

from __future__ import annotations

import contextlib
import json
import socket
import sys
import threading
import time
import urllib.parse
from collections.abc import Mapping
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from typing import TYPE_CHECKING, Any, cast

from airflow_provider_dune.testing._api import ROUTES, _Request
from airflow_provider_dune.testing._state import ENDPOINTS, ApiError, RecordedRequest
from airflow_provider_dune.testing.faults import Fault, format_retry_after

if TYPE_CHECKING:
    from airflow_provider_dune.testing.emulator import DuneEmulator


API_KEY_HEADER = "X-Dune-Api-Key"
MASK = "***"
MAX_BODY_BYTES = 10 * 1024 * 1024
#: Endpoints whose body is data (CSV or NDJSON rows) handed to the handler as bytes.
RAW_BODY_ENDPOINTS = frozenset({"insert_rows"})
_MALFORMED_BODY = b'{"execution_id": "01HKZJ2683PHF9Q9PHHQ8FW4Q1", "state": "QUERY_STAT'
_FORBIDDEN_EXECUTE = "Not allowed to execute query. Query is archived, unsaved or not enough permissions"
_FORBIDDEN_OTHER = "not enough permissions: this action needs an API key with write access"


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

    def handle_error(self, request: Any, client_address: Any) -> None:
        """A client that hangs up is not an error of the emulator's (clients under test drop connections)."""
        if isinstance(sys.exc_info()[1], ConnectionError):
            return
        super().handle_error(request, client_address)

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
        """Log the request before its answer goes out, so the line exists once the client has the answer."""
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
            self._log(status, path)
            self._send_json(status, payload)
            return

        endpoint, path_params, allowed = "unknown", {}, []
        for method, pattern, name in ROUTES:
            match = pattern.fullmatch(path)
            if match:
                if method == self.command:
                    endpoint, path_params = name, match.groupdict()
                    break
                allowed.append(method)

        if endpoint in RAW_BODY_ENDPOINTS:  # rows as CSV or NDJSON, not a JSON document
            content_type = (self.headers.get("Content-Type") or "").split(";")[0].strip().lower()
            body, body_error = {"content": raw, "content_type": content_type}, None
            recorded_body: Any = {"content_type": content_type, "bytes": len(raw)}
        else:
            recorded_body = body

        record = RecordedRequest(
            method=self.command,
            path=path,
            endpoint=endpoint,
            query={k: (MASK if k == "api_key" else v) for k, v in query.items()},
            headers={k: (MASK if k.lower() == API_KEY_HEADER.lower() else v) for k, v in self.headers.items()},
            json_body=recorded_body,
            at=time.time(),
        )
        emulator._state.record(record)

        if endpoint == "unknown":
            if allowed:
                message = f"method {self.command} not allowed on {path}"
                self._log(405, path)
                self._reply(record, 405, {"error": message}, headers={"Allow": ", ".join(allowed)})
            else:
                self._log(404, path)
                self._reply(record, 404, {"error": f"not found: no endpoint {path}"})
            return

        state = emulator._state
        fault = state.take_fault(endpoint, state.related_query_ids(endpoint, {**query, **path_params}, body))
        after_processing = False
        if fault is not None:
            record.fault = fault.kind
            if fault.kind == "status":
                code = cast(int, fault.code)
                headers = {} if fault.retry_after is None else {"Retry-After": format_retry_after(fault.retry_after)}
                self._log(code, path)
                self._reply(record, code, {"error": fault.error_message}, headers=headers)
                return
            if fault.kind == "malformed":
                record.response_body, record.status = _MALFORMED_BODY, 200
                self._log(200, path)
                self._send(200, _MALFORMED_BODY)
                return
            if fault.kind == "drop":
                self._log(None, path)
                self._drop()
                return
            if fault.kind in ("oversized", "echo_key", "redirect"):
                self._hostile_answer(record, fault)
                return
            if fault.kind == "slow":
                emulator._stopping.wait(fault.seconds)
            after_processing = fault.kind in ("drop_after_processing", "drip", "truncated")

        status, payload, headers = self._answer(endpoint, path_params, query, body, has_body, body_error)
        if fault is not None and after_processing:
            answer = json.dumps(payload).encode()
            if fault.kind != "drop_after_processing":  # a dropped answer was never sent: no status recorded
                record.response_body, record.status = answer, status
            self._log(None if fault.kind == "drop_after_processing" else status, path)
            if fault.kind == "drip":
                self._drip(status, answer, fault.seconds)
            elif fault.kind == "truncated":
                self._send_truncated(status, answer)
            else:
                self._drop()
            return
        self._log(status, path)
        self._reply(record, status, payload, headers=headers)

    def _hostile_answer(self, record: RecordedRequest, fault: Fault) -> None:
        """Answer for the faults that do not perform the request: oversized body, echoed key, redirect."""
        code = cast(int, fault.code) if fault.kind != "oversized" else 200
        self._log(code, record.path)
        if fault.kind == "echo_key":
            key = self.headers.get(API_KEY_HEADER) or ""
            self._reply(record, code, {"error": f"invalid API Key {key} (sent in {API_KEY_HEADER})"})
        elif fault.kind == "redirect":
            record.status = code
            self._send(code, b"", headers={"Location": fault.location or "/"})
        else:
            record.status = 200
            self._send_stream(fault.size)

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
        if role != "write" and ENDPOINTS[endpoint].write_key:
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
