"""State of the Dune API emulator: queries, materialized views, runs, faults, counters.

Everything here is HTTP-agnostic and guarded by one lock. Run states are never advanced by a background
thread: every node's timeline (when it becomes runnable, starts executing, ends) is a pure function of the
pipeline's start time, the nodes' configured ``pending``/``duration``/``error`` and any cancellation, and is
evaluated against the clock whenever something is read.

:class:`EmulatorState` is the core below (lock, clock, ids and timestamps, catalog registries, recorded requests,
counts, faults, rate limits, datapoint limits, started-executions bookkeeping) composed with one mixin per API
area: :mod:`._queries`, :mod:`._views`, :mod:`._pipelines` and :mod:`._executions`; the data model they share is
in :mod:`._model`.
"""

from __future__ import annotations

import secrets
import threading
import time
from collections import deque
from collections.abc import Mapping, Sequence
from datetime import datetime, timezone
from typing import Any

from airflow_provider_dune.api.endpoint_table import ENDPOINTS
from airflow_provider_dune.testing._executions import ExecutionsMixin
from airflow_provider_dune.testing._model import (
    DEFAULT_MAX_DATAPOINTS,
    NOT_FOUND,
    PERFORMANCE_TIERS,
    RESULT_RETENTION_SECONDS,
    ApiError,
    Clock,
    NodeKind,
    NodeState,
    NodeStateStyle,
    QuerySpec,
    RecordedRequest,
    ViewSpec,
    _is_int,
    _Node,
    _Pipeline,
    _StateBase,
)
from airflow_provider_dune.testing._pipelines import PipelinesMixin
from airflow_provider_dune.testing._queries import QueriesMixin, generated_rows
from airflow_provider_dune.testing._uploads import UploadsMixin
from airflow_provider_dune.testing._views import ViewsMixin
from airflow_provider_dune.testing.faults import Fault

__all__ = [
    "DEFAULT_MAX_DATAPOINTS",
    "ENDPOINTS",
    "NOT_FOUND",
    "PERFORMANCE_TIERS",
    "RESULT_RETENTION_SECONDS",
    "ApiError",
    "Clock",
    "EmulatorState",
    "NodeKind",
    "NodeState",
    "NodeStateStyle",
    "QuerySpec",
    "RecordedRequest",
    "ViewSpec",
    "generated_rows",
]


_CROCKFORD = "0123456789ABCDEFGHJKMNPQRSTVWXYZ"


class _CoreState(_StateBase):
    """The core of :class:`EmulatorState`: lock, clock, ids and timestamps, catalog registries, recorded requests,
    counts, faults, rate limits, datapoint limits and started-executions bookkeeping."""

    def __init__(self, clock: Clock | None = None, record_limit: int | None = 100_000) -> None:
        self.lock = threading.RLock()
        self.clock: Clock = clock or time.monotonic
        self._mono0 = self.clock()
        self._wall0 = time.time()
        self.node_state_style: NodeStateStyle = "lower"
        self.queries: dict[int, QuerySpec] = {}
        self.views: dict[str, ViewSpec] = {}
        #: Uploaded tables: full name -> {"schema": [...], "rows": [...]}.
        self.tables: dict[str, dict[str, Any]] = {}
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
        bucket = ENDPOINTS[endpoint].bucket
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


class EmulatorState(QueriesMixin, ViewsMixin, PipelinesMixin, ExecutionsMixin, UploadsMixin, _CoreState):
    """All mutable state of one emulator, guarded by :attr:`lock`."""
