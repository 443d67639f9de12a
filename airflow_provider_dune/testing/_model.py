"""Data model of the Dune API emulator's state: endpoints, errors, catalog entries, runs and timelines.

Shared by :class:`~airflow_provider_dune.testing._state.EmulatorState` and its area mixins
(:mod:`._queries`, :mod:`._views`, :mod:`._pipelines`, :mod:`._executions`).
"""

from __future__ import annotations

import threading
from collections.abc import Callable, Iterable, Mapping, Sequence
from dataclasses import dataclass
from typing import TYPE_CHECKING, Any, Literal

Clock = Callable[[], float]
NodeKind = Literal["query", "view"]
NodeStateStyle = Literal["lower", "query_state"]
NodeState = Literal["waiting", "pending", "executing", "completed", "failed", "cancelled"]

PERFORMANCE_TIERS: tuple[str, ...] = ("medium", "large")
NOT_FOUND = "not found: Query not found or private"
RESULT_RETENTION_SECONDS = 90 * 24 * 3600


class ApiError(Exception):
    """An error answered as ``{"error": message}`` with HTTP ``status``."""

    def __init__(self, status: int, message: str) -> None:
        super().__init__(message)
        self.status = status
        self.message = message


@dataclass(frozen=True)
class QuerySpec:
    """A query known to the emulator (see ``DuneEmulator.add_query``)."""

    query_id: int
    name: str
    duration: float
    pending: float
    error: str | None
    depends_on: tuple[str, ...]
    rows: tuple[dict[str, Any], ...] | None
    parameters: tuple[str, ...]
    implicit: bool = False
    partial: bool = False
    #: Set for queries saved through ``POST /v1/query`` / ``PATCH`` (``GET /v1/query`` returns them).
    saved: dict[str, Any] | None = None


@dataclass(frozen=True)
class ViewSpec:
    """A materialized view known to the emulator (see ``DuneEmulator.add_materialized_view``)."""

    name: str
    query_id: int
    duration: float
    pending: float
    error: str | None
    depends_on: tuple[str, ...]
    refresh_every: float | None = None
    is_private: bool = False


@dataclass
class RecordedRequest:
    """One request the emulator received (API keys masked as ``***``).

    :param method: HTTP method.
    :param path: URL path, without the query string.
    :param endpoint: endpoint name (a key of ``ENDPOINTS``), ``"unknown"`` for unrouted paths.
    :param query: query-string parameters (last value wins).
    :param headers: request headers.
    :param json_body: parsed JSON body, ``None`` when absent or not JSON.
    :param status: response status code; ``None`` when the connection was closed without an answer.
    :param fault: kind of the injected fault that applied, if any.
    :param response_body: raw response body (``b""`` when none was sent).
    :param at: wall-clock time the request arrived.
    """

    method: str
    path: str
    endpoint: str
    query: dict[str, str]
    headers: dict[str, str]
    json_body: Any
    status: int | None = None
    fault: str | None = None
    response_body: bytes = b""
    at: float = 0.0


@dataclass
class _Node:
    node_id: int
    kind: NodeKind
    query_id: int
    view_name: str | None
    dependencies: tuple[int, ...]
    performance: str
    query_parameters: dict[str, Any]
    pending: float
    duration: float
    error: str | None
    rows: tuple[dict[str, Any], ...]
    execution_id: str
    cancel_at: float | None = None
    partial: bool = False

    @property
    def label(self) -> str:
        if self.kind == "view":
            return f"materialized view {self.view_name}"
        return f"query {self.query_id}"


@dataclass
class _Pipeline:
    pipeline_id: str
    started_at: float
    nodes: list[_Node]  # in request order; dependencies are acyclic
    exposed: bool
    root_query_id: int | None = None
    historical: bool = False


@dataclass(frozen=True)
class _Timeline:
    runnable_at: float | None  # None: never submitted (a dependency failed or was cancelled)
    exec_start: float | None  # None: never reached the executing state
    end: float
    outcome: Literal["completed", "failed", "cancelled"]
    user_cancelled: bool = False
    blocked_by: int | None = None


@dataclass(frozen=True)
class _NodeView:
    node: _Node
    timeline: _Timeline
    state: NodeState

    @property
    def visible(self) -> bool:
        return self.state != "waiting" and self.timeline.runnable_at is not None

    @property
    def finished(self) -> bool:
        return self.state in ("completed", "failed", "cancelled")


_QUERY_STATES = {
    "waiting": "QUERY_STATE_PENDING",
    "pending": "QUERY_STATE_PENDING",
    "executing": "QUERY_STATE_EXECUTING",
    "completed": "QUERY_STATE_COMPLETED",
    "failed": "QUERY_STATE_FAILED",
    "cancelled": "QUERY_STATE_CANCELLED",
}
#: Dune's default cap on datapoints (rows x columns) per results request.
DEFAULT_MAX_DATAPOINTS = 250_000


def _unique(items: Iterable[str]) -> tuple[str, ...]:
    return tuple(dict.fromkeys(items))


def _is_int(value: Any) -> bool:
    return isinstance(value, int) and not isinstance(value, bool)


def _check_times(duration: float, pending: float) -> None:
    for label, value in (("duration", duration), ("pending", pending)):
        if isinstance(value, bool) or not isinstance(value, (int, float)) or value < 0 or value != value:
            raise ValueError(f"{label} must be a non-negative number of seconds, got {value!r}")


class _StateBase:
    """What the area mixins of :class:`~airflow_provider_dune.testing._state.EmulatorState` rely on.

    The attributes are set by the core's ``__init__``; the methods are implemented by the core or by another
    area's mixin. Declared for type checking only: at run time this class is empty.
    """

    if TYPE_CHECKING:
        lock: threading.RLock
        clock: Clock
        _mono0: float
        _wall0: float
        node_state_style: NodeStateStyle
        queries: dict[int, QuerySpec]
        views: dict[str, ViewSpec]
        tables: dict[str, dict[str, Any]]
        pipelines: dict[str, _Pipeline]
        executions: dict[str, tuple[_Pipeline, _Node]]
        started: list[tuple[str, tuple[int, ...]]]
        schedules: dict[str, tuple[float, int]]

        def iso(self, t: float) -> str: ...

        def new_id(self) -> str: ...

        def add_query(
            self,
            query_id: int,
            *,
            name: str | None = None,
            duration: float = 0.5,
            pending: float = 0.0,
            error: str | None = None,
            depends_on: Sequence[str] = (),
            rows: Sequence[Mapping[str, Any]] | None = None,
            parameters: Sequence[str] = (),
            implicit: bool = False,
            partial: bool = False,
        ) -> None: ...

        def _query(self, query_id: int) -> QuerySpec: ...

        @staticmethod
        def _check_parameters(query: QuerySpec, params: Mapping[str, Any], where: str = "") -> None: ...

        def _view_dependencies(self, view: ViewSpec) -> tuple[str, ...]: ...

        def run_schedules(self) -> None: ...

        def _start(
            self,
            endpoint: str,
            node_specs: Sequence[Mapping[str, Any]],
            *,
            exposed: bool,
            root_query_id: int | None = None,
            started_at: float | None = None,
        ) -> _Pipeline: ...

        def _node_views(self, pipeline: _Pipeline, now: float) -> list[_NodeView]: ...
