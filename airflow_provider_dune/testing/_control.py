"""The ``/_emulator/`` control API of the Dune API emulator, its seed documents, and :class:`DuneEmulatorClient`
(which drives an emulator in another process through that API)."""

from __future__ import annotations

import contextlib
import json
import time
import urllib.error
import urllib.request
from collections.abc import Mapping
from dataclasses import asdict
from typing import TYPE_CHECKING, Any

import jsonschema

from airflow_provider_dune.testing._state import RecordedRequest
from airflow_provider_dune.testing.faults import Fault

if TYPE_CHECKING:
    from airflow_provider_dune.testing.emulator import DuneEmulator


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


def handle_control(
    emulator: DuneEmulator,
    method: str,
    path: str,
    query: Mapping[str, str],
    body: Any,
    body_error: str | None,
) -> tuple[int, dict[str, Any]]:
    """Answer one ``/_emulator/`` control API request to ``emulator``: ``(status, JSON body)``."""
    action = (method, path.removeprefix("/_emulator"))
    if body_error is not None and method == "POST":
        return 400, {"error": body_error}
    payload = body if body is not None else {}
    try:
        if action == ("GET", "/health"):
            return 200, {"status": "ok", "url": emulator.url}
        if action == ("GET", "/counts"):
            return 200, {
                "counts": emulator.counts,
                "executions_started": emulator._state.executions_started_by_query(),
                "executions_started_total": emulator.executions_started(),
                "connections_opened": emulator.connections_opened,
            }
        if action == ("GET", "/requests"):
            return 200, {"requests": [_request_dict(r) for r in emulator.requests]}
        if action == ("POST", "/reset"):
            emulator.reset()
            return 200, {"ok": True}
        if action == ("POST", "/queries"):
            _require(_QUERY_SCHEMA, payload, "query")
            kwargs = dict(payload)
            emulator.add_query(kwargs.pop("query_id"), **kwargs)
            return 200, {"ok": True}
        if action == ("POST", "/materialized-views"):
            _require(_VIEW_SCHEMA, payload, "materialized view")
            kwargs = dict(payload)
            emulator.add_materialized_view(kwargs.pop("name"), **kwargs)
            return 200, {"ok": True}
        if action == ("POST", "/faults"):
            if not isinstance(payload, dict) or not isinstance(payload.get("faults"), list):
                raise ValueError('expected {"endpoint": ..., "query_id": ..., "faults": [...]}')
            faults = [Fault.from_dict(item) for item in payload["faults"]]
            emulator.inject(str(payload.get("endpoint")), *faults, query_id=payload.get("query_id"))
            return 200, {"ok": True}
        if action == ("POST", "/rate-limit"):
            if not isinstance(payload, dict):
                raise ValueError("expected a JSON object")
            emulator.set_rate_limit(payload.get("read_per_minute"), payload.get("write_per_minute"))
            return 200, {"ok": True}
        if action == ("POST", "/settings"):
            if not isinstance(payload, dict):
                raise ValueError("expected a JSON object")
            if "node_state_style" in payload:
                emulator.node_state_style = payload["node_state_style"]
            if "max_datapoints_per_request" in payload:
                emulator.set_datapoint_limit(payload["max_datapoints_per_request"], payload.get("api_key"))
            return 200, {
                "ok": True,
                "node_state_style": emulator.node_state_style,
                "profile": emulator.profile.describe(),
            }
        if action == ("POST", "/seed"):
            try:
                time_scale = float(query.get("time_scale", "1"))
            except ValueError:
                raise ValueError("time_scale must be a number") from None
            emulator.load_seed(payload, time_scale=time_scale)
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
