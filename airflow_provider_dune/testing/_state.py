"""State of the Dune API emulator: queries, materialized views, runs, faults, counters.

Everything here is HTTP-agnostic and guarded by one lock. Run states are never advanced by a background
thread: every node's timeline (when it becomes runnable, starts executing, ends) is a pure function of the
pipeline's start time, the nodes' configured ``pending``/``duration``/``error`` and any cancellation, and is
evaluated against the clock whenever something is read.
"""

from __future__ import annotations

import re
import secrets
import threading
import time
import zlib
from collections import deque
from collections.abc import Callable, Iterable, Mapping, Sequence
from dataclasses import dataclass
from datetime import datetime, timedelta, timezone
from typing import Any, Literal

from airflow_provider_dune.testing._profiles import DATAPOINT_LIMIT_MESSAGE, PARTIAL_RESULT_MESSAGE
from airflow_provider_dune.testing.faults import Fault

Clock = Callable[[], float]
NodeKind = Literal["query", "view"]
NodeStateStyle = Literal["lower", "query_state"]
NodeState = Literal["waiting", "pending", "executing", "completed", "failed", "cancelled"]

#: Endpoint names (as used by ``counts`` and ``inject``).
ENDPOINTS: tuple[str, ...] = (
    "execute_query_pipeline",
    "execute_pipeline",
    "get_query_pipeline",
    "pipeline_status",
    "execute_query",
    "execution_status",
    "execution_results",
    "query_results",
    "cancel_execution",
    "refresh_materialized_view",
    "get_materialized_view",
    "get_query",
    "usage",
)
#: Endpoints that need a key with write access and count against the write rate-limit bucket.
WRITE_ENDPOINTS: frozenset[str] = frozenset(
    {"execute_query_pipeline", "execute_pipeline", "execute_query", "refresh_materialized_view"}
)
#: Endpoints that need a key with write access (a read-only key gets 403).
WRITE_ACCESS_ENDPOINTS: frozenset[str] = WRITE_ENDPOINTS | {"cancel_execution"}
PERFORMANCE_TIERS: tuple[str, ...] = ("medium", "large")
NOT_FOUND = "not found: Query not found or private"
RESULT_RETENTION_SECONDS = 90 * 24 * 3600
_CROCKFORD = "0123456789ABCDEFGHJKMNPQRSTVWXYZ"
_LINE_COLUMN = re.compile(r"line (\d+):(\d+)", re.IGNORECASE)


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


@dataclass
class RecordedRequest:
    """One request the emulator received (API keys masked as ``***``).

    :param method: HTTP method.
    :param path: URL path, without the query string.
    :param endpoint: endpoint name (see ``ENDPOINTS``), ``"unknown"`` for unrouted paths.
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


def _is_partial(view: _NodeView) -> bool:
    """A query run set up with ``partial=True`` that completed: Dune truncated its result."""
    return view.state == "completed" and view.node.partial


def _timelines(pipeline: _Pipeline) -> dict[int, _Timeline]:
    by_id = {node.node_id: node for node in pipeline.nodes}
    out: dict[int, _Timeline] = {}

    def resolve(node: _Node) -> _Timeline:
        if node.node_id in out:
            return out[node.node_id]
        deps = {dep: resolve(by_id[dep]) for dep in node.dependencies}
        blockers = [(tl.end, dep) for dep, tl in deps.items() if tl.outcome != "completed"]
        if blockers:
            end, blocker = min(blockers)
            timeline = _Timeline(None, None, end, "cancelled", blocked_by=blocker)
        else:
            runnable = max((tl.end for tl in deps.values()), default=pipeline.started_at)
            exec_start = runnable + node.pending
            end = exec_start + node.duration
            if node.cancel_at is not None and node.cancel_at < end:
                started = exec_start if exec_start <= node.cancel_at else None
                timeline = _Timeline(runnable, started, node.cancel_at, "cancelled", user_cancelled=True)
            else:
                timeline = _Timeline(runnable, exec_start, end, "failed" if node.error else "completed")
        out[node.node_id] = timeline
        return timeline

    for node in pipeline.nodes:
        resolve(node)
    return out


def _state_at(tl: _Timeline, now: float) -> NodeState:
    if tl.runnable_at is None:
        return "cancelled" if now >= tl.end else "waiting"
    if now < tl.runnable_at:
        return "waiting"
    if now >= tl.end:
        return tl.outcome
    if tl.exec_start is not None and now >= tl.exec_start:
        return "executing"
    return "pending"


def generated_rows(query_id: int) -> tuple[dict[str, Any], ...]:
    """The rows a query without configured rows returns: a few deterministic DEX-volume-like rows."""
    projects = ("uniswap", "curve", "balancer", "sushiswap", "pancakeswap")
    return tuple(
        {
            "block_date": f"2024-06-{day + 1:02d}",
            "project": project,
            "volume_usd": round(1_000_000 * (1 + query_id % 7 + day * 0.37), 2),
            "trades": 1000 + 137 * day + query_id % 100,
        }
        for day, project in enumerate(projects)
    )


def _column_type(value: Any) -> str:
    if isinstance(value, bool):
        return "boolean"
    if isinstance(value, int):
        return "bigint"
    if isinstance(value, float):
        return "double"
    if isinstance(value, (list, tuple)):
        return "array(varchar)"
    if isinstance(value, dict):
        return "map(varchar, varchar)"
    return "varchar"


def _columns(rows: Sequence[Mapping[str, Any]]) -> tuple[list[str], list[str]]:
    names: list[str] = []
    types: dict[str, str] = {}
    for row in rows:
        for key, value in row.items():
            if key not in types:
                names.append(key)
                types[key] = "varchar"
            if value is not None and types[key] == "varchar" and not isinstance(value, str):
                types[key] = _column_type(value)
    return names, [types[name] for name in names]


def _unique(items: Iterable[str]) -> tuple[str, ...]:
    return tuple(dict.fromkeys(items))


def _is_int(value: Any) -> bool:
    return isinstance(value, int) and not isinstance(value, bool)


class EmulatorState:
    """All mutable state of one emulator, guarded by :attr:`lock`."""

    def __init__(self, clock: Clock | None = None, record_limit: int | None = 100_000) -> None:
        self.lock = threading.RLock()
        self.clock: Clock = clock or time.monotonic
        self._mono0 = self.clock()
        self._wall0 = time.time()
        self.node_state_style: NodeStateStyle = "lower"
        self.queries: dict[int, QuerySpec] = {}
        self.views: dict[str, ViewSpec] = {}
        self.read_per_minute: int | None = None
        self.datapoint_limits: dict[str | None, int] = {None: DEFAULT_MAX_DATAPOINTS}
        self.write_per_minute: int | None = None
        self._record_limit = record_limit
        self._init_runs()

    def _init_runs(self) -> None:
        self.pipelines: dict[str, _Pipeline] = {}
        self.executions: dict[str, tuple[_Pipeline, _Node]] = {}
        self.counts: dict[str, int] = {}
        self.requests: deque[RecordedRequest] = deque(maxlen=self._record_limit)
        self.faults: dict[tuple[str, int | None], deque[list[Any]]] = {}
        self.started: list[tuple[str, tuple[int, ...]]] = []
        self._buckets: dict[tuple[str, str], tuple[float, float]] = {}
        self._ids: set[str] = set()
        #: Dune-side schedules: view name -> (clock time of the schedule's start, refreshes started so far).
        self.schedules: dict[str, tuple[float, int]] = {}

    def reset(self) -> None:
        """Forget runs, counts, requests, faults and rate-limit buckets; keep queries and views."""
        with self.lock:
            self._init_runs()
            for name, view in self.views.items():
                if view.refresh_every is not None:
                    self.schedules[name] = (self.clock(), 0)

    # ----------------------------------------------------------------------------------------- time & ids

    def iso(self, t: float) -> str:
        """Render clock time ``t`` as an RFC 3339 UTC timestamp with nanoseconds, like Dune does."""
        wall = self._wall0 + (t - self._mono0)
        seconds = int(wall // 1)
        nanos = round((wall - seconds) * 1e9)
        if nanos >= 1_000_000_000:
            seconds, nanos = seconds + 1, nanos - 1_000_000_000
        stamp = datetime.fromtimestamp(seconds, tz=timezone.utc).strftime("%Y-%m-%dT%H:%M:%S")
        return f"{stamp}.{nanos:09d}Z"

    def new_id(self) -> str:
        """A new unique ULID-like identifier (26 characters of Crockford base32)."""
        while True:
            millis = int((self._wall0 + self.clock() - self._mono0) * 1000)
            stamp = ""
            for _ in range(10):
                stamp = _CROCKFORD[millis & 31] + stamp
                millis >>= 5
            candidate = stamp + "".join(secrets.choice(_CROCKFORD) for _ in range(16))
            if candidate not in self._ids:
                self._ids.add(candidate)
                return candidate

    # -------------------------------------------------------------------------------------------- catalog

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
    ) -> None:
        """Register (or replace) a query."""
        if not _is_int(query_id) or query_id <= 0:
            raise ValueError(f"query_id must be a positive integer, got {query_id!r}")
        _check_times(duration, pending)
        if isinstance(depends_on, str) or isinstance(parameters, str):
            raise TypeError("depends_on and parameters must be sequences of names, not a string")
        spec = QuerySpec(
            query_id=query_id,
            name=name or f"query_{query_id}",
            duration=float(duration),
            pending=float(pending),
            error=error or None,
            depends_on=_unique(depends_on),
            rows=None if rows is None else tuple(dict(row) for row in rows),
            parameters=_unique(parameters),
            implicit=implicit,
            partial=bool(partial),
        )
        with self.lock:
            self.queries[query_id] = spec

    def add_view(
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
        """Register (or replace) a materialized view; its query is registered too if unknown.

        ``refresh_every`` makes Dune refresh it on its own every so many seconds (a view's ``cron_expression``);
        replacing a scheduled view keeps its schedule running (so a test can make the next refreshes fail).
        """
        if not isinstance(name, str) or not name or "/" in name:
            raise ValueError(f"invalid materialized view name {name!r}")
        if not _is_int(query_id) or query_id <= 0:
            raise ValueError(f"query_id must be a positive integer, got {query_id!r}")
        if isinstance(depends_on, str):
            raise TypeError("depends_on must be a sequence of names, not a string")
        _check_times(duration, pending)
        if refresh_every is not None and (_is_int(refresh_every) or isinstance(refresh_every, float)):
            if not refresh_every > 0:
                raise ValueError(f"refresh_every must be a positive number of seconds, got {refresh_every!r}")
        elif refresh_every is not None:
            raise ValueError(f"refresh_every must be a positive number of seconds, got {refresh_every!r}")
        every = float(refresh_every) if refresh_every is not None else None
        spec = ViewSpec(name, query_id, float(duration), float(pending), error or None, _unique(depends_on), every)
        with self.lock:
            self.views[name] = spec
            if every is None:
                self.schedules.pop(name, None)
            elif name not in self.schedules:
                self.schedules[name] = (self.clock(), 0)
            if query_id not in self.queries:
                self.add_query(query_id, name=name.rsplit(".", 1)[-1], duration=duration, implicit=True)

    def _view_dependencies(self, view: ViewSpec) -> tuple[str, ...]:
        query = self.queries.get(view.query_id)
        return _unique([*view.depends_on, *(query.depends_on if query else ())])

    def _query(self, query_id: int) -> QuerySpec:
        query = self.queries.get(query_id)
        if query is None:
            raise ApiError(404, NOT_FOUND)
        return query

    def _view(self, name: str) -> ViewSpec:
        view = self.views.get(name)
        if view is None:
            raise ApiError(404, NOT_FOUND)
        return view

    @staticmethod
    def _check_parameters(query: QuerySpec, params: Mapping[str, Any], where: str = "") -> None:
        unknown = sorted(set(params) - set(query.parameters))
        if unknown:
            allowed = ", ".join(query.parameters) if query.parameters else "none"
            raise ApiError(
                400,
                f"{where}unknown parameters ({', '.join(unknown)}); query {query.query_id} has: {allowed}",
            )

    # ------------------------------------------------------------------------------------- pipeline plans

    def plan_query_pipeline(self, query_id: int, performance: str, params: Mapping[str, Any]) -> list[dict[str, Any]]:
        """The nodes Dune would run for ``query_id``: its materialized-view lineage, then the query."""
        with self.lock:
            query = self._query(query_id)
            self._check_parameters(query, params)
            order: list[str] = []
            done: set[str] = set()

            def visit(name: str, path: list[str]) -> None:
                if name in done:
                    return
                if name in path:
                    cycle = " -> ".join([*path[path.index(name) :], name])
                    raise ApiError(400, f"the lineage of query {query_id} has a cycle: {cycle}")
                view = self.views.get(name)
                if view is None:
                    raise ApiError(404, f"not found: materialized view {name} in the lineage of query {query_id}")
                for dep in self._view_dependencies(view):
                    visit(dep, [*path, name])
                done.add(name)
                order.append(name)

            for dep in query.depends_on:
                visit(dep, [])
            ids = {name: index for index, name in enumerate(order, start=1)}
            nodes: list[dict[str, Any]] = []
            for name in order:
                deps = [ids[dep] for dep in self._view_dependencies(self.views[name])]
                nodes.append(
                    {
                        "id": ids[name],
                        "dependencies": deps,
                        "materialized_view_refresh": {"name": name, "performance": performance},
                    }
                )
            nodes.append(
                {
                    "id": len(order) + 1,
                    "dependencies": [ids[dep] for dep in query.depends_on],
                    "query_execution": {
                        "query_id": query_id,
                        "performance": performance,
                        "query_parameters": dict(params),
                    },
                }
            )
            return nodes

    def _validate_explicit_nodes(self, nodes: Any) -> list[dict[str, Any]]:
        """Check an explicit pipeline's structure (ids, one action per node, dependencies, no cycles)."""
        if not isinstance(nodes, list) or not nodes:
            raise ApiError(400, "invalid request body: pipeline.nodes must be a non-empty list")
        by_id: dict[int, dict[str, Any]] = {}
        for index, node in enumerate(nodes):
            if not isinstance(node, dict):
                raise ApiError(400, f"pipeline node at index {index}: must be an object")
            node_id: Any = node.get("id")
            if not _is_int(node_id):
                raise ApiError(400, f"pipeline node at index {index}: id is required and must be an integer")
            if node_id in by_id:
                raise ApiError(400, f"pipeline node {node_id}: duplicate node id")
            kinds = [key for key in ("query_execution", "materialized_view_refresh") if node.get(key) is not None]
            if len(kinds) != 1:
                raise ApiError(
                    400,
                    f"pipeline node {node_id}: must have exactly one of query_execution or materialized_view_refresh",
                )
            if kinds[0] == "query_execution" and not _is_int((node["query_execution"] or {}).get("query_id")):
                raise ApiError(400, f"pipeline node {node_id}: query_execution.query_id is required")
            if kinds[0] == "materialized_view_refresh":
                name = node["materialized_view_refresh"].get("name")
                if not isinstance(name, str) or not name:
                    raise ApiError(400, f"pipeline node {node_id}: materialized_view_refresh.name is required")
            by_id[node_id] = node
        for node_id, node in by_id.items():
            deps = node.get("dependencies") or []
            if len(set(deps)) != len(deps):
                raise ApiError(400, f"pipeline node {node_id}: duplicate dependency")
            for dep in deps:
                if dep == node_id:
                    raise ApiError(400, f"pipeline node {node_id}: a node cannot depend on itself")
                if dep not in by_id:
                    raise ApiError(400, f"pipeline node {node_id}: dependency {dep} is not a node of this pipeline")
        marks: dict[int, str] = {}

        def visit(node_id: int, path: list[int]) -> None:
            if marks.get(node_id) == "done":
                return
            if marks.get(node_id) == "visiting":
                cycle = " -> ".join(str(n) for n in [*path[path.index(node_id) :], node_id])
                raise ApiError(400, f"pipeline has a dependency cycle: {cycle}")
            marks[node_id] = "visiting"
            for dep in by_id[node_id].get("dependencies") or []:
                visit(dep, [*path, node_id])
            marks[node_id] = "done"

        for node_id in by_id:
            visit(node_id, [])
        return list(by_id.values())

    # ------------------------------------------------------------------------------------------ execution

    def _make_node(self, spec: Mapping[str, Any]) -> _Node:
        node_id = spec["id"]
        deps = tuple(spec.get("dependencies") or ())
        if spec.get("query_execution") is not None:
            qe = spec["query_execution"]
            query = self.queries.get(qe["query_id"])
            if query is None:
                raise ApiError(404, f"pipeline node {node_id}: {NOT_FOUND} (query_id {qe['query_id']})")
            params = qe.get("query_parameters") or {}
            self._check_parameters(query, params, where=f"pipeline node {node_id}: ")
            return _Node(
                node_id=node_id,
                kind="query",
                query_id=query.query_id,
                view_name=None,
                dependencies=deps,
                performance=qe.get("performance") or "medium",
                query_parameters=dict(params),
                pending=query.pending,
                duration=query.duration,
                error=query.error,
                rows=query.rows if query.rows is not None else generated_rows(query.query_id),
                execution_id=self.new_id(),
                partial=query.partial,
            )
        mv = spec["materialized_view_refresh"]
        view = self.views.get(mv["name"])
        if view is None:
            raise ApiError(404, f"pipeline node {node_id}: not found: materialized view {mv['name']}")
        source = self.queries.get(view.query_id)
        rows = source.rows if source is not None and source.rows is not None else None
        return _Node(
            node_id=node_id,
            kind="view",
            query_id=view.query_id,
            view_name=view.name,
            dependencies=deps,
            performance=mv.get("performance") or "medium",
            query_parameters={},
            pending=view.pending,
            duration=view.duration,
            error=view.error,
            rows=rows if rows is not None else generated_rows(view.query_id),
            execution_id=self.new_id(),
        )

    def _start(
        self,
        endpoint: str,
        node_specs: Sequence[Mapping[str, Any]],
        *,
        exposed: bool,
        root_query_id: int | None = None,
        started_at: float | None = None,
    ) -> _Pipeline:
        nodes = [self._make_node(spec) for spec in node_specs]
        start = self.clock() if started_at is None else started_at
        pipeline = _Pipeline(self.new_id(), start, nodes, exposed, root_query_id)
        self.pipelines[pipeline.pipeline_id] = pipeline
        for node in nodes:
            self.executions[node.execution_id] = (pipeline, node)
        if root_query_id is not None:
            started_ids: tuple[int, ...] = (root_query_id,)
        else:
            started_ids = tuple(dict.fromkeys(n.query_id for n in nodes if n.kind == "query"))
            if not started_ids:
                started_ids = tuple(dict.fromkeys(n.query_id for n in nodes))
        if endpoint != "scheduled_refresh":  # Dune's own refreshes are not requests of the API key
            self.started.append((endpoint, started_ids))
        return pipeline

    def run_schedules(self) -> None:
        """Start the Dune-side scheduled refreshes that are due (lazily, whenever runs are read)."""
        with self.lock:
            now = self.clock()
            for name, (origin, count) in list(self.schedules.items()):
                view = self.views.get(name)
                if view is None or view.refresh_every is None:
                    continue
                while origin + (count + 1) * view.refresh_every <= now:
                    count += 1
                    spec = {"id": 1, "dependencies": [], "materialized_view_refresh": {"name": name}}
                    started = origin + count * view.refresh_every
                    self._start(
                        "scheduled_refresh", [spec], exposed=False, root_query_id=view.query_id, started_at=started
                    )
                self.schedules[name] = (origin, count)

    def execute_query_pipeline(self, query_id: int, performance: str, params: Mapping[str, Any]) -> str:
        """Start the query pipeline of ``query_id``; return the pipeline execution id."""
        with self.lock:
            plan = self.plan_query_pipeline(query_id, performance, params)
            pipeline = self._start("execute_query_pipeline", plan, exposed=True, root_query_id=query_id)
            return pipeline.pipeline_id

    def execute_pipeline(self, nodes: Any) -> str:
        """Start an explicit pipeline (``{"pipeline": {"nodes": [...]}}``); return its execution id."""
        with self.lock:
            specs = self._validate_explicit_nodes(nodes)
            return self._start("execute_pipeline", specs, exposed=True).pipeline_id

    def execute_query(self, query_id: int, performance: str, params: Mapping[str, Any]) -> str:
        """Start one query execution; return its execution id."""
        with self.lock:
            self._query(query_id)
            spec = {
                "id": 1,
                "dependencies": [],
                "query_execution": {
                    "query_id": query_id,
                    "performance": performance,
                    "query_parameters": dict(params),
                },
            }
            try:
                pipeline = self._start("execute_query", [spec], exposed=False, root_query_id=query_id)
            except ApiError as exc:
                raise ApiError(exc.status, exc.message.removeprefix("pipeline node 1: ")) from None
            return pipeline.nodes[0].execution_id

    def refresh_view(self, name: str, performance: str) -> tuple[str, str]:
        """Start a refresh of one materialized view; return ``(execution_id, sql_id)``."""
        with self.lock:
            view = self._view(name)
            spec = {
                "id": 1,
                "dependencies": [],
                "materialized_view_refresh": {"name": name, "performance": performance},
            }
            pipeline = self._start("refresh_materialized_view", [spec], exposed=False, root_query_id=view.query_id)
            return pipeline.nodes[0].execution_id, view.name

    def _node_views(self, pipeline: _Pipeline, now: float) -> list[_NodeView]:
        timelines = _timelines(pipeline)
        return [_NodeView(n, timelines[n.node_id], _state_at(timelines[n.node_id], now)) for n in pipeline.nodes]

    def _execution(self, execution_id: str, now: float) -> _NodeView:
        self.run_schedules()
        found = self.executions.get(execution_id)
        if found is None:
            raise ApiError(404, NOT_FOUND)
        pipeline, node = found
        for view in self._node_views(pipeline, now):
            if view.node is node:
                if not view.visible:
                    raise ApiError(404, NOT_FOUND)
                return view
        raise ApiError(404, NOT_FOUND)  # pragma: no cover

    # ------------------------------------------------------------------------------------------ rendering

    def _node_status_name(self, state: str) -> str:
        if self.node_state_style == "query_state":
            return _QUERY_STATES[state]
        return "pending" if state == "waiting" else state

    def pipeline_status(self, pipeline_id: str) -> dict[str, Any]:
        """The ``GET /v1/pipelines/executions/{id}/status`` body."""
        with self.lock:
            pipeline = self.pipelines.get(pipeline_id)
            if pipeline is None or not pipeline.exposed:
                raise ApiError(404, NOT_FOUND)
            views = self._node_views(pipeline, self.clock())
            node_executions: list[dict[str, Any]] = []
            for view in views:
                node = view.node
                status: dict[str, Any] = {"status": self._node_status_name(view.state)}
                if node.kind == "query":
                    status["query_id"] = node.query_id
                else:
                    status["name"] = node.view_name
                if view.visible:
                    status["execution_id"] = node.execution_id
                status["error"] = node.error if view.state == "failed" and node.error else ""
                key = "query_execution_status" if node.kind == "query" else "materialized_view_refresh_status"
                node_executions.append({"id": node.node_id, key: status})
            overall, error = _overall(views)
            return {"status": overall, "error": error, "node_executions": node_executions}

    def _cost(self, view: _NodeView, now: float) -> float:
        tl = view.timeline
        if tl.exec_start is None or now < tl.exec_start:
            return 0.0
        ran = min(now, tl.end) - tl.exec_start
        rate = 0.5 if view.node.performance == "large" else 0.2
        return round(max(ran, 0.0) * rate + 0.01, 3)

    def _metadata(self, view: _NodeView, rows: Sequence[Mapping[str, Any]]) -> dict[str, Any]:
        all_rows = view.node.rows
        names, types = _columns(all_rows)
        size = sum(len(repr(row)) for row in rows)
        total = sum(len(repr(row)) for row in all_rows)
        tl = view.timeline
        return {
            "column_names": names,
            "column_types": types,
            "row_count": len(rows),
            "total_row_count": len(all_rows),
            "datapoint_count": len(rows) * len(names),
            "result_set_bytes": size,
            "total_result_set_bytes": total,
            "pending_time_millis": round(((tl.exec_start or tl.end) - (tl.runnable_at or tl.end)) * 1000),
            "execution_time_millis": round((tl.end - (tl.exec_start or tl.end)) * 1000),
        }

    def _status_fields(self, view: _NodeView, now: float) -> dict[str, Any]:
        tl = view.timeline
        node = view.node
        body: dict[str, Any] = {
            "execution_id": node.execution_id,
            "query_id": node.query_id,
            "state": "QUERY_STATE_COMPLETED_PARTIAL" if _is_partial(view) else _QUERY_STATES[view.state],
            "is_execution_finished": view.finished,
            "submitted_at": self.iso(tl.runnable_at if tl.runnable_at is not None else tl.end),
        }
        if view.state == "pending":
            body["queue_position"] = 1
        if tl.exec_start is not None and now >= tl.exec_start:
            body["execution_started_at"] = self.iso(tl.exec_start)
        if view.finished:
            body["execution_ended_at"] = self.iso(tl.end)
        if view.state == "completed":
            body["expires_at"] = self.iso(tl.end + RESULT_RETENTION_SECONDS)
        if view.state == "cancelled":
            body["cancelled_at"] = self.iso(tl.end)
        if view.state == "failed":
            error: dict[str, Any] = {"type": "FAILED_TYPE_EXECUTION_FAILED", "message": node.error or "failed"}
            match = _LINE_COLUMN.search(node.error or "")
            if match:
                error["metadata"] = {"line": int(match.group(1)), "column": int(match.group(2))}
            body["error"] = error
        return body

    def execution_status(self, execution_id: str) -> dict[str, Any]:
        """The ``GET /v1/execution/{id}/status`` body."""
        with self.lock:
            now = self.clock()
            view = self._execution(execution_id, now)
            body = self._status_fields(view, now)
            if view.state == "completed":
                body["result_metadata"] = self._metadata(view, view.node.rows)
            body["execution_cost_credits"] = self._cost(view, now)
            return body

    def execution_results(
        self,
        execution_id: str,
        limit: int | None,
        offset: int,
        base_url: str,
        allow_partial: bool = False,
        max_datapoints: int | None = None,
    ) -> dict[str, Any]:
        """The ``GET /v1/execution/{id}/results`` body (``limit``/``offset`` paginated)."""
        with self.lock:
            now = self.clock()
            view = self._execution(execution_id, now)
            return self._results(view, now, limit, offset, base_url, allow_partial, max_datapoints)

    def _results(
        self,
        view: _NodeView,
        now: float,
        limit: int | None,
        offset: int,
        base_url: str,
        allow_partial: bool = False,
        max_datapoints: int | None = None,
    ) -> dict[str, Any]:
        body = self._status_fields(view, now)
        body.pop("queue_position", None)
        if _is_partial(view) and not allow_partial:
            # Dune's spec: without allow_partial_results a truncated result is answered with a failed state.
            body["state"] = "QUERY_STATE_FAILED"
            body["error"] = {"type": "FAILED_TYPE_EXECUTION_FAILED", "message": PARTIAL_RESULT_MESSAGE}
            return body
        if view.state != "completed":
            return body
        all_rows = view.node.rows
        end = len(all_rows) if limit is None else min(len(all_rows), offset + limit)
        datapoints = max(0, end - offset) * len(_columns(all_rows)[0])
        if max_datapoints is not None and datapoints > max_datapoints:
            raise ApiError(400, DATAPOINT_LIMIT_MESSAGE)
        page = [dict(row) for row in all_rows[offset:end]]
        body["result"] = {"rows": page, "metadata": self._metadata(view, page)}
        if limit is not None and end < len(all_rows):
            body["next_offset"] = end
            body["next_uri"] = f"{base_url}/v1/execution/{view.node.execution_id}/results?limit={limit}&offset={end}"
        return body

    def query_results(
        self,
        query_id: int,
        limit: int | None,
        offset: int,
        base_url: str,
        allow_partial: bool = False,
        max_datapoints: int | None = None,
    ) -> dict[str, Any]:
        """The ``GET /v1/query/{id}/results`` body: the latest finished run of the query.

        A query that was never run through the API answers with a run that finished when the emulator
        started (as if it had been run earlier from Dune's web app).
        """
        with self.lock:
            now = self.clock()
            query = self._query(query_id)
            latest: _NodeView | None = None
            for pipeline in self.pipelines.values():
                for view in self._node_views(pipeline, now):
                    if view.node.kind != "query" or view.node.query_id != query_id or not view.visible:
                        continue
                    if view.state not in ("completed", "failed"):
                        continue
                    if latest is None or view.timeline.end >= latest.timeline.end:
                        latest = view
            if latest is None:
                latest = self._historical_run(query)
            return self._results(latest, now, limit, offset, base_url, allow_partial, max_datapoints)

    def _historical_run(self, query: QuerySpec) -> _NodeView:
        node = _Node(
            node_id=1,
            kind="query",
            query_id=query.query_id,
            view_name=None,
            dependencies=(),
            performance="medium",
            query_parameters={},
            pending=query.pending,
            duration=query.duration,
            error=query.error,
            rows=query.rows if query.rows is not None else generated_rows(query.query_id),
            execution_id=self.new_id(),
        )
        started = min(self._mono0, self.clock()) - query.pending - query.duration
        pipeline = _Pipeline(self.new_id(), started, [node], exposed=False, historical=True)
        self.pipelines[pipeline.pipeline_id] = pipeline
        self.executions[node.execution_id] = (pipeline, node)
        return self._node_views(pipeline, self.clock())[0]

    def cancel(self, execution_id: str) -> bool:
        """Cancel a pending or executing execution; ``False`` if it had already finished."""
        with self.lock:
            now = self.clock()
            view = self._execution(execution_id, now)
            if view.finished:
                return False
            view.node.cancel_at = now
            return True

    def get_view(self, name: str) -> dict[str, Any]:
        """The ``GET /v1/materialized-views/{name}`` body."""
        with self.lock:
            self.run_schedules()
            now = self.clock()
            view = self._view(name)
            refreshes: list[tuple[float, str]] = []
            for pipeline in self.pipelines.values():
                for node_view in self._node_views(pipeline, now):
                    if node_view.node.view_name == name and node_view.visible:
                        refreshes.append((node_view.timeline.runnable_at or 0.0, node_view.node.execution_id))
            refreshes.sort(reverse=True)
            return {
                "id": view.name,
                "sql_id": view.name,
                "query_id": view.query_id,
                "is_private": False,
                "owner_user_id": 1,
                "owner_team_id": 1,
                "table_size_bytes": 1_000_000 + zlib.crc32(name.encode()) % 1_000_000_000,
                "last_execution_ids": [eid for _, eid in refreshes[:10]],
            }

    def get_query(self, query_id: int) -> dict[str, Any]:
        """The ``GET /v1/query/{queryId}`` body."""
        with self.lock:
            query = self._query(query_id)
            sources = ", ".join(query.depends_on) or "dex.trades"
            sql = f"-- {query.name}\nSELECT *\nFROM {sources}"
            if query.parameters:
                sql += "\nWHERE " + "\n  AND ".join(f"{p} = '{{{{{p}}}}}'" for p in query.parameters)
            return {
                "query_id": query.query_id,
                "name": query.name,
                "description": f"Emulated query {query.name}",
                "owner": "demo",
                "query_engine": "medium",
                "query_sql": sql,
                "parameters": [{"key": p, "type": "text", "value": ""} for p in query.parameters],
                "tags": [],
                "version": 1,
                "is_archived": False,
                "is_private": False,
                "is_unsaved": False,
            }

    def usage(self) -> dict[str, Any]:
        """The ``POST /v1/usage`` body: credits used by the runs so far."""
        with self.lock:
            now = self.clock()
            used = 0.0
            for pipeline in self.pipelines.values():
                if not pipeline.historical:
                    used += sum(self._cost(view, now) for view in self._node_views(pipeline, now))
            today = datetime.fromtimestamp(self._wall0 + now - self._mono0, tz=timezone.utc).date()
            start = today.replace(day=1)
            next_month = (start + timedelta(days=32)).replace(day=1)
            end = next_month - timedelta(days=1)
            return {
                "billing_periods": [
                    {
                        "start_date": start.isoformat(),
                        "end_date": end.isoformat(),
                        "credits_included": 2500,
                        "credits_used": round(used, 3),
                    }
                ],
                "bytes_allowed": 1_000_000_000,
                "bytes_used": 0,
                "private_dashboards": 0,
                "private_queries": 0,
            }

    # ------------------------------------------------------------------------- faults, limits, bookkeeping

    def related_query_ids(self, endpoint: str, params: Mapping[str, str], body: Any) -> list[int]:
        """Query ids a request is about (used to match faults injected for one query id)."""
        with self.lock:
            ids: list[int] = []
            raw = params.get("query_id")
            if raw is not None and raw.isdigit():
                ids.append(int(raw))
            if "execution_id" in params:
                found = self.executions.get(params["execution_id"])
                if found:
                    ids.append(found[1].query_id)
            if "pipeline_execution_id" in params:
                pipeline = self.pipelines.get(params["pipeline_execution_id"])
                if pipeline is not None:
                    if pipeline.root_query_id is not None:
                        ids.append(pipeline.root_query_id)
                    ids.extend(n.query_id for n in pipeline.nodes)
            if "name" in params and params["name"] in self.views:
                ids.append(self.views[params["name"]].query_id)
            if endpoint == "execute_pipeline" and isinstance(body, dict):
                pipeline_body = body.get("pipeline")
                nodes = pipeline_body.get("nodes") if isinstance(pipeline_body, dict) else None
                for node in nodes if isinstance(nodes, list) else []:
                    qe = node.get("query_execution") if isinstance(node, dict) else None
                    if isinstance(qe, dict) and _is_int(qe.get("query_id")):
                        ids.append(qe["query_id"])
            return list(dict.fromkeys(ids))

    def add_faults(self, endpoint: str, faults: Sequence[Fault], query_id: int | None) -> None:
        """Queue ``faults`` for ``endpoint`` (optionally only for requests about ``query_id``)."""
        if endpoint not in ENDPOINTS:
            raise ValueError(f"unknown endpoint {endpoint!r}; expected one of {', '.join(ENDPOINTS)}")
        if query_id is not None and (not _is_int(query_id) or query_id <= 0):
            raise ValueError(f"query_id must be a positive integer, got {query_id!r}")
        for fault in faults:
            if not isinstance(fault, Fault):
                raise TypeError(f"expected Fault instances, got {type(fault).__name__}")
        with self.lock:
            queue = self.faults.setdefault((endpoint, query_id), deque())
            queue.extend([fault, fault.times] for fault in faults)

    def take_fault(self, endpoint: str, query_ids: Sequence[int]) -> Fault | None:
        """Consume one use of the next fault that applies to this request, if any."""
        with self.lock:
            for key in [*((endpoint, qid) for qid in query_ids), (endpoint, None)]:
                queue = self.faults.get(key)
                if queue:
                    entry = queue[0]
                    entry[1] -= 1
                    if entry[1] <= 0:
                        queue.popleft()
                    fault: Fault = entry[0]
                    return fault
            return None

    def set_datapoint_limit(self, limit: int, api_key: str | None = None) -> None:
        if isinstance(limit, bool) or not isinstance(limit, int) or limit < 1:
            raise ValueError(f"max_datapoints_per_request must be a positive integer, got {limit!r}")
        with self.lock:
            self.datapoint_limits[api_key] = limit

    def datapoint_limit(self, api_key: str) -> int:
        """The datapoints-per-request cap of ``api_key`` (the emulator-wide one unless set for the key)."""
        with self.lock:
            return self.datapoint_limits.get(api_key, self.datapoint_limits[None])

    def set_rate_limit(self, read_per_minute: int | None, write_per_minute: int | None) -> None:
        """Enable (or with ``None`` disable) the per-key read and write token buckets."""
        for value in (read_per_minute, write_per_minute):
            if value is not None and (not _is_int(value) or value < 1):
                raise ValueError(f"rate limits must be positive integers or None, got {value!r}")
        with self.lock:
            self.read_per_minute = read_per_minute
            self.write_per_minute = write_per_minute
            self._buckets.clear()

    def take_token(self, api_key: str, endpoint: str) -> bool:
        """Take one token from the key's bucket for ``endpoint``; ``False`` when the bucket is empty."""
        bucket = "write" if endpoint in WRITE_ENDPOINTS else "read"
        limit = self.write_per_minute if bucket == "write" else self.read_per_minute
        if limit is None:
            return True
        with self.lock:
            now = self.clock()
            tokens, last = self._buckets.get((api_key, bucket), (float(limit), now))
            tokens = min(float(limit), tokens + (now - last) * limit / 60.0)
            if tokens < 1.0:
                self._buckets[(api_key, bucket)] = (tokens, now)
                return False
            self._buckets[(api_key, bucket)] = (tokens - 1.0, now)
            return True

    def record(self, request: RecordedRequest) -> None:
        """Count and remember one request."""
        with self.lock:
            self.counts[request.endpoint] = self.counts.get(request.endpoint, 0) + 1
            self.requests.append(request)

    def executions_started(self, query_id: int | None = None) -> int:
        """How many execute/refresh calls started a run (for ``query_id``, or in total)."""
        with self.lock:
            if query_id is None:
                return len(self.started)
            return sum(1 for _, ids in self.started if query_id in ids)

    def executions_started_by_query(self) -> dict[str, int]:
        """``executions_started`` per query id (as strings, for JSON)."""
        with self.lock:
            out: dict[str, int] = {}
            for _, ids in self.started:
                for qid in ids:
                    out[str(qid)] = out.get(str(qid), 0) + 1
            return out


def _overall(views: Sequence[_NodeView]) -> tuple[str, str]:
    if all(view.finished for view in views):
        cancelled = [view for view in views if view.timeline.user_cancelled]
        if cancelled:
            node = cancelled[0].node
            return "cancelled", f"node {node.node_id} ({node.label}) was cancelled"
        failed = [view for view in views if view.state == "failed"]
        if failed:
            node = failed[0].node
            return "failed", f"node {node.node_id} ({node.label}) failed: {node.error}"
        return "completed", ""
    if any(view.state not in ("waiting", "pending") for view in views):
        return "executing", ""
    return "pending", ""


def _check_times(duration: float, pending: float) -> None:
    for label, value in (("duration", duration), ("pending", pending)):
        if isinstance(value, bool) or not isinstance(value, (int, float)) or value < 0 or value != value:
            raise ValueError(f"{label} must be a non-negative number of seconds, got {value!r}")
