"""Typed views of Dune API responses and the parsers that build them.

Every answer body the hooks read is parsed here by a ``parse_*`` function: it accepts the decoded JSON body and
raises :class:`~airflow_provider_dune.api.errors.DuneResponseError` when a field the provider relies on is missing
or the body has the wrong shape. The models that reach XCom or trigger events have ``to_dict()`` returning
JSON-serialisable data.
"""

from __future__ import annotations

import re
from collections.abc import Mapping, Sequence
from dataclasses import asdict, dataclass, field, replace
from datetime import datetime, timezone
from enum import Enum
from typing import Any

from airflow_provider_dune.api.errors import DuneResponseError
from airflow_provider_dune.api.states import RunState, normalize_state


def _require_mapping(body: Any, what: str) -> Mapping[str, Any]:
    if not isinstance(body, Mapping):
        raise DuneResponseError(f"expected a JSON object for {what}, got {type(body).__name__}")
    return body


def _require_str(body: Mapping[str, Any], key: str, what: str) -> str:
    value = body.get(key)
    if not isinstance(value, str) or not value:
        raise DuneResponseError(f"the {what} response has no '{key}'")
    return value


def _opt_str(value: Any) -> str | None:
    return value if isinstance(value, str) and value else None


def _opt_int(value: Any) -> int | None:
    if isinstance(value, bool):
        return None
    if isinstance(value, int):
        return value
    if isinstance(value, str) and value.strip().isascii() and value.strip().isdigit():
        return int(value)
    return None


#: Timestamps Dune sends for "not set" instead of leaving the field out (``expires_at`` on a running execution).
_ZERO_TIMESTAMP_PREFIXES = ("1970-01-01T00:00:00", "0001-01-01T00:00:00")


def _opt_timestamp(value: Any) -> str | None:
    """A timestamp string, or ``None`` when absent, empty or one of the zero timestamps meaning "not set"."""
    text = _opt_str(value)
    if text is None or not text.strip():
        return None
    stripped = text.strip()
    if stripped.startswith(_ZERO_TIMESTAMP_PREFIXES) and not stripped[19:].strip(".0Z+:"):
        return None
    return text


def _opt_list(value: Any) -> list[Any]:
    return list(value) if isinstance(value, (list, tuple)) else []


def _opt_float(value: Any) -> float | None:
    if isinstance(value, bool):
        return None
    return float(value) if isinstance(value, (int, float)) else None


class NodeKind(str, Enum):
    """What a pipeline node does."""

    QUERY_EXECUTION = "query_execution"
    MATERIALIZED_VIEW_REFRESH = "materialized_view_refresh"


class PipelineOutcome(str, Enum):
    """What a pipeline status means for the Airflow task waiting on it."""

    RUNNING = "running"
    SUCCESS = "success"
    FAILED = "failed"
    CANCELLED = "cancelled"
    UNKNOWN = "unknown"

    @property
    def is_final(self) -> bool:
        return self is not PipelineOutcome.RUNNING


@dataclass(frozen=True)
class PipelineNodeStatus:
    """State of one node of a pipeline execution.

    :param node_id: the node's id inside the pipeline (``None`` if Dune left it out).
    :param kind: query execution or materialized view refresh.
    :param raw_state: the state string exactly as Dune sent it.
    :param state: the normalised state; a non-empty ``error`` makes it ``FAILED``.
    :param execution_id: the node's execution id, present once the node started.
    :param position: 1-based place of the node in Dune's list (names a node without an id).
    """

    node_id: int | None
    kind: NodeKind
    raw_state: str
    state: RunState
    query_id: int | None = None
    view_name: str | None = None
    execution_id: str | None = None
    error: str | None = None
    position: int = 0

    @property
    def label(self) -> str:
        """Human-readable name: ``query 1234`` or ``materialized view dune.team.result_x``."""
        if self.kind is NodeKind.MATERIALIZED_VIEW_REFRESH:
            return f"materialized view {self.view_name or '?'}"
        return f"query {self.query_id if self.query_id is not None else '?'}"

    @property
    def is_running(self) -> bool:
        """Started and not finished: the node can still be cancelled with its execution id."""
        return bool(self.execution_id) and not self.state.is_terminal

    @property
    def name(self) -> str:
        """``node 2 (query 1001)``: the node's id (or place in Dune's list) and what it runs."""
        number = f"node {self.node_id}" if self.node_id is not None else f"node #{self.position}"
        return f"{number} ({self.label})"

    def describe(self, execution: ExecutionStatus | None = None) -> str:
        """One line for logs and failure messages: ``node 2 (query 1001): <Dune's error>``, or the state.

        :param execution: the node's execution status, whose error carries the SQL error's line and column.
        """
        error = execution.error_text() if execution is not None else None
        if error or self.error:
            return f"{self.name}: {error or self.error}"
        if self.state is RunState.UNKNOWN:
            return f"{self.name}: unrecognised Dune state {self.raw_state!r}"
        return f"{self.name}: {self.state.value}"

    def to_dict(self) -> dict[str, Any]:
        data = asdict(self)
        data["kind"] = self.kind.value
        data["state"] = self.state.value
        return data


def _has_content(detail: Any) -> bool:
    """A node status object that says something (Dune's docs show a node with an empty sibling object)."""
    return isinstance(detail, Mapping) and any(
        detail.get(key) not in (None, "", [], {}) for key in ("status", "execution_id", "query_id", "name", "error")
    )


def _parse_node(raw: Any, position: int) -> PipelineNodeStatus:
    node = _require_mapping(raw, "a pipeline node execution")
    node_id = _opt_int(node.get("id"))
    raw_query = node.get("query_execution_status")
    raw_view = node.get("materialized_view_refresh_status")
    query_status = raw_query if isinstance(raw_query, Mapping) else None
    view_status = raw_view if isinstance(raw_view, Mapping) else None
    # The kind is decided by which status object has content, not by which key is present.
    kind: NodeKind
    detail: Mapping[str, Any]
    if view_status is not None and _has_content(view_status) and not _has_content(query_status):
        kind, detail = NodeKind.MATERIALIZED_VIEW_REFRESH, view_status
    elif query_status is not None:
        kind, detail = NodeKind.QUERY_EXECUTION, query_status
    elif view_status is not None:
        kind, detail = NodeKind.MATERIALIZED_VIEW_REFRESH, view_status
    else:
        where = f"pipeline node {node_id}" if node_id is not None else f"pipeline node #{position}"
        raise DuneResponseError(f"{where} has neither a query nor a materialized view status")
    raw_state = detail.get("status")
    error = _opt_str(detail.get("error"))
    state = normalize_state(raw_state)
    if error and not state.is_failure:
        state = RunState.FAILED
    return PipelineNodeStatus(
        node_id=node_id,
        kind=kind,
        raw_state=str(raw_state or ""),
        state=state,
        query_id=_opt_int(detail.get("query_id")),
        view_name=_opt_str(detail.get("name")),
        execution_id=_opt_str(detail.get("execution_id")),
        error=error,
        position=position,
    )


@dataclass(frozen=True)
class PipelineStatus:
    """State of a pipeline execution: overall state plus one entry per node.

    :param pipeline_execution_id: the id returned when the pipeline was started.
    :param raw_state: the overall state string exactly as Dune sent it.
    :param state: the normalised overall state.
    :param error: the overall error message, if any.
    :param nodes: per-node states in the order Dune listed them.
    """

    pipeline_execution_id: str
    raw_state: str
    state: RunState
    error: str | None
    nodes: tuple[PipelineNodeStatus, ...] = field(default_factory=tuple)

    @property
    def failed_nodes(self) -> tuple[PipelineNodeStatus, ...]:
        """Nodes that failed or expired (cancelled nodes are not counted as the cause of a failure)."""
        return tuple(n for n in self.nodes if n.state in (RunState.FAILED, RunState.EXPIRED))

    @property
    def running_nodes(self) -> tuple[PipelineNodeStatus, ...]:
        """Nodes that started and have not finished: what to cancel when giving up."""
        return tuple(n for n in self.nodes if n.is_running)

    @property
    def unknown_nodes(self) -> tuple[PipelineNodeStatus, ...]:
        return tuple(n for n in self.nodes if n.state is RunState.UNKNOWN)

    @property
    def outcome(self) -> PipelineOutcome:
        """The verdict for a waiting task. Success needs every node and the pipeline to say ``completed``."""
        if self.state is RunState.CANCELLED and not self.failed_nodes:
            # Dune may explain a cancellation in ``error`` ("node 1 ... was cancelled"): still a cancellation.
            return PipelineOutcome.CANCELLED
        if self.state is RunState.FAILED or self.state is RunState.EXPIRED or self.error or self.failed_nodes:
            return PipelineOutcome.FAILED
        if self.state is RunState.CANCELLED or any(n.state is RunState.CANCELLED for n in self.nodes):
            return PipelineOutcome.CANCELLED
        if self.state in (RunState.PENDING, RunState.EXECUTING):
            return PipelineOutcome.RUNNING
        if self.state is RunState.COMPLETED:
            if not self.nodes:
                # "completed" with no node executions proves nothing ran: never call that a success.
                return PipelineOutcome.UNKNOWN
            if all(n.state is RunState.COMPLETED for n in self.nodes):
                return PipelineOutcome.SUCCESS
            if any(not n.state.is_terminal and n.state is not RunState.UNKNOWN for n in self.nodes):
                # Overall says completed while a node still runs: trust the nodes and keep waiting.
                return PipelineOutcome.RUNNING
            return PipelineOutcome.UNKNOWN
        # Unrecognised overall state: keep waiting while nodes run, never call it success.
        if any(not n.state.is_terminal and n.state is not RunState.UNKNOWN for n in self.nodes):
            return PipelineOutcome.RUNNING
        return PipelineOutcome.UNKNOWN

    @property
    def progress(self) -> tuple[int, int] | None:
        """``(nodes completed, nodes)``, what Dune says of how far the pipeline is."""
        return (sum(1 for n in self.nodes if n.state is RunState.COMPLETED), len(self.nodes)) if self.nodes else None

    @property
    def is_terminal(self) -> bool:
        """The task's verdict is decided (it may still have nodes running that should be cancelled)."""
        return self.outcome.is_final

    @property
    def succeeded(self) -> bool:
        return self.outcome is PipelineOutcome.SUCCESS

    def progress_summary(self) -> str:
        """One line such as ``3/5 nodes done, 1 running (query 1234), 1 pending (materialized view dune.t.v)``."""
        total = len(self.nodes)
        done = sum(1 for n in self.nodes if n.state is RunState.COMPLETED)
        parts = [f"{done}/{total} nodes done"]
        groups = (
            ("running", [n for n in self.nodes if n.state is RunState.EXECUTING]),
            ("pending", [n for n in self.nodes if n.state is RunState.PENDING]),
            ("failed", list(self.failed_nodes)),
            ("cancelled", [n for n in self.nodes if n.state is RunState.CANCELLED]),
            ("in an unrecognised state", list(self.unknown_nodes)),
        )
        for word, nodes in groups:
            if nodes:
                parts.append(f"{len(nodes)} {word} ({_name_nodes(nodes)})")
        return ", ".join(parts)

    def failure_message(self, executions: Mapping[str, ExecutionStatus] | None = None, *, brief: bool = False) -> str:
        """Why the pipeline did not succeed, each cause stated once: ``Dune pipeline 01H... failed: node 2
        (query 1001): line 3:8: Column 'x' cannot be resolved``.

        :param executions: node execution statuses by execution id, when read: their errors say where in the
            SQL it failed (the pipeline status repeats a shorter form of the same error).
        :param brief: name the nodes that failed without Dune's error text (a trigger event's message: the task
            states the error once, from the status it reads).
        """
        if self.state is RunState.COMPLETED and not self.nodes:
            return (
                f"Dune says pipeline {self.pipeline_execution_id} completed but lists no node executions, so its "
                "success cannot be confirmed. Check the run on dune.com before relying on its data."
            )
        executions = executions or {}
        outcome = self.outcome
        verb = {
            PipelineOutcome.FAILED: "failed",
            PipelineOutcome.CANCELLED: "was cancelled",
            PipelineOutcome.RUNNING: "is still running",
        }.get(outcome, "ended in a state that is not a success")
        failed = [n for n in self.nodes if n.state.is_failure or n.state in (RunState.EXPIRED, RunState.UNKNOWN)]
        if brief:
            named = ", ".join(f"{n.name} {n.state.value}" for n in failed) or f"Dune status {self.raw_state!r}"
            return f"Dune pipeline {self.pipeline_execution_id} {verb}: {named}"
        causes = [n.describe(executions.get(n.execution_id or "")) for n in failed]
        node_errors = [n.error for n in self.nodes if n.error]
        if self.error and not any(e in self.error or self.error in e for e in node_errors):
            causes.append(f"pipeline error: {self.error}")
        if not causes:
            causes.append(f"Dune status {self.raw_state!r}, {self.progress_summary()}")
        return f"Dune pipeline {self.pipeline_execution_id} {verb}: {'; '.join(causes)}"

    def to_dict(self) -> dict[str, Any]:
        return {
            "pipeline_execution_id": self.pipeline_execution_id,
            "state": self.state.value,
            "raw_state": self.raw_state,
            "outcome": self.outcome.value,
            "error": self.error,
            "summary": self.progress_summary(),
            "nodes": [n.to_dict() for n in self.nodes],
        }


def _name_nodes(nodes: Sequence[PipelineNodeStatus], limit: int = 3) -> str:
    """``query 1, materialized view dune.t.v`` for up to ``limit`` nodes, then ``+N more``."""
    names = [n.label for n in nodes[:limit]]
    if len(nodes) > limit:
        names.append(f"+{len(nodes) - limit} more")
    return ", ".join(names)


def parse_pipeline_status(body: Any, pipeline_execution_id: str) -> PipelineStatus:
    """Build a :class:`PipelineStatus` from ``GET /v1/pipelines/executions/{id}/status``."""
    data = _require_mapping(body, "pipeline status")
    raw_nodes = data.get("node_executions") or []
    if not isinstance(raw_nodes, Sequence) or isinstance(raw_nodes, (str, bytes)):
        raise DuneResponseError("the pipeline status response has a 'node_executions' that is not a list")
    raw_state = data.get("status")
    return PipelineStatus(
        pipeline_execution_id=pipeline_execution_id,
        raw_state=str(raw_state or ""),
        state=normalize_state(raw_state),
        error=_opt_str(data.get("error")),
        nodes=tuple(_parse_node(n, position) for position, n in enumerate(raw_nodes, start=1)),
    )


@dataclass(frozen=True)
class ResultMetadata:
    """Shape and cost of a query result."""

    column_names: tuple[str, ...] = ()
    column_types: tuple[str, ...] = ()
    row_count: int | None = None
    total_row_count: int | None = None
    datapoint_count: int | None = None
    execution_time_millis: int | None = None
    pending_time_millis: int | None = None
    result_set_bytes: int | None = None
    total_result_set_bytes: int | None = None

    def to_dict(self) -> dict[str, Any]:
        data = asdict(self)
        data["column_names"] = list(self.column_names)
        data["column_types"] = list(self.column_types)
        return data


_METADATA_KEYS = frozenset(field_name for field_name in ResultMetadata.__dataclass_fields__)


def parse_result_metadata(raw: Any) -> ResultMetadata | None:
    """Result metadata from its mapping; ``None`` when absent or when none of its fields is there."""
    if not isinstance(raw, Mapping) or not _METADATA_KEYS.intersection(raw):
        return None
    return ResultMetadata(
        column_names=tuple(str(c) for c in _opt_list(raw.get("column_names"))),
        column_types=tuple(str(c) for c in _opt_list(raw.get("column_types"))),
        row_count=_opt_int(raw.get("row_count")),
        total_row_count=_opt_int(raw.get("total_row_count")),
        datapoint_count=_opt_int(raw.get("datapoint_count")),
        execution_time_millis=_opt_int(raw.get("execution_time_millis")),
        pending_time_millis=_opt_int(raw.get("pending_time_millis")),
        result_set_bytes=_opt_int(raw.get("result_set_bytes")),
        total_result_set_bytes=_opt_int(raw.get("total_result_set_bytes")),
    )


@dataclass(frozen=True)
class ExecutionStatus:
    """State of a single execution (a query run or a materialized view refresh)."""

    execution_id: str
    raw_state: str
    state: RunState
    query_id: int | None = None
    is_execution_finished: bool | None = None
    submitted_at: str | None = None
    execution_started_at: str | None = None
    execution_ended_at: str | None = None
    expires_at: str | None = None
    cancelled_at: str | None = None
    queue_position: int | None = None
    error_type: str | None = None
    error_message: str | None = None
    error_line: int | None = None
    error_column: int | None = None
    execution_cost_credits: float | None = None
    result_metadata: ResultMetadata | None = None

    @property
    def is_terminal(self) -> bool:
        return self.state.is_terminal or bool(self.is_execution_finished)

    @property
    def succeeded(self) -> bool:
        """Only a complete result counts: ``COMPLETED_PARTIAL`` is surfaced, not accepted."""
        return self.state is RunState.COMPLETED

    @property
    def outcome(self) -> PipelineOutcome:
        """The verdict for a waiting task; a partial result is a failure unless the caller accepts it."""
        if self.state is RunState.COMPLETED:
            return PipelineOutcome.SUCCESS
        if self.state in (RunState.FAILED, RunState.EXPIRED, RunState.COMPLETED_PARTIAL):
            return PipelineOutcome.FAILED
        if self.state is RunState.CANCELLED:
            return PipelineOutcome.CANCELLED
        if self.state is RunState.UNKNOWN and self.is_execution_finished:
            return PipelineOutcome.UNKNOWN
        return PipelineOutcome.RUNNING

    def progress_summary(self) -> str:
        """One line such as ``executing`` or ``pending (queue position 3)``."""
        text = self.state.value
        if self.state is RunState.UNKNOWN:
            text += f" (Dune state {self.raw_state!r})"
        if self.queue_position:
            text += f" (queue position {self.queue_position})"
        return text

    def failure_message(self, *, brief: bool = False) -> str:
        """Why the run did not succeed, with Dune's error text: ``Dune execution 01H... of query 1001 failed:
        line 3:8: ...``; ``brief`` leaves the error text out (a trigger event's message)."""
        subject = f"Dune execution {self.execution_id}" + (f" of query {self.query_id}" if self.query_id else "")
        if self.state is RunState.COMPLETED_PARTIAL:
            return (
                f"{subject} completed only partially: the result was truncated by Dune's limits. "
                "Set allow_partial_results=True to accept a partial result."
            )
        verb = {PipelineOutcome.FAILED: "failed", PipelineOutcome.CANCELLED: "was cancelled"}.get(
            self.outcome, f"ended {self.outcome.value}"
        )
        if brief:
            return f"{subject} {verb}"
        return f"{subject} {verb}: {self.error_text() or self.progress_summary()}"

    def error_text(self) -> str | None:
        """Dune's error message and where in the SQL it is (``Column 'x' cannot be resolved (line 3, column 8)``);
        ``error_type`` (e.g. ``FAILED_TYPE_EXECUTION_FAILED``) says nothing more and stays out."""
        if not self.error_message:
            return None
        return f"{self.error_message}{error_location(self.error_message, self.error_line, self.error_column)}"

    def describe(self) -> str:
        text = f"execution {self.execution_id}: {self.state.value}"
        if self.state is RunState.UNKNOWN:
            text += f" (unrecognised Dune state {self.raw_state!r})"
        error = self.error_text()
        if error and self.error_type:
            error = f"{self.error_type}: {error}"
        return f"{text}: {error}" if error else text

    def to_dict(self) -> dict[str, Any]:
        data = asdict(self)
        data["state"] = self.state.value
        data["outcome"] = self.outcome.value
        data["result_metadata"] = self.result_metadata.to_dict() if self.result_metadata else None
        return data


def error_location(message: str, line: int | None, column: int | None) -> str:
    """`` (line 3, column 8)`` for a SQL error, unless the message already says where."""
    if line is None:
        return ""
    if f"line {line}:{column}" in message or f"line {line}," in message:
        return ""
    return f" (line {line}" + (f", column {column})" if column is not None else ")")


def _error_fields(error: Any) -> tuple[str | None, str | None, int | None, int | None]:
    """``(type, message, line, column)`` from Dune's error object, or from a bare error string."""
    if not isinstance(error, Mapping):
        return None, _opt_str(error), None, None
    metadata = error.get("metadata")
    where = metadata if isinstance(metadata, Mapping) else {}
    return (
        _opt_str(error.get("type")),
        _opt_str(error.get("message")),
        _opt_int(where.get("line")),
        _opt_int(where.get("column")),
    )


_TIMESTAMP = re.compile(r"^(\d{4}-\d\d-\d\dT\d\d:\d\d:\d\d)(?:\.(\d+))?(Z|[+-]\d\d:\d\d)?$")


def parse_timestamp(text: str | None, what: str) -> datetime | None:
    """Dune's RFC 3339 time (nanoseconds allowed, UTC when no offset) as an aware ``datetime``; ``None`` if absent.

    :raises DuneResponseError: ``text`` is not a readable time (a bad format or an impossible date).
    """
    if not text or not text.strip():
        return None
    match = _TIMESTAMP.match(text.strip())
    try:
        if match is None:
            raise ValueError
        fraction = (match.group(2) or "0")[:6].ljust(6, "0")
        zone = match.group(3) or "Z"
        zone = "+00:00" if zone == "Z" else zone
        return datetime.fromisoformat(f"{match.group(1)}.{fraction}{zone}")
    except ValueError:
        raise DuneResponseError(f"{what} {text[:60]!r} is not a readable time") from None


def result_age_seconds(ended_at: str | None, now: datetime | None = None) -> float | None:
    """Seconds since ``ended_at`` (negative when it is in the future); ``None`` if absent or unreadable."""
    try:
        when = parse_timestamp(ended_at, "execution_ended_at")
    except DuneResponseError:
        return None
    return None if when is None else ((now or datetime.now(timezone.utc)) - when).total_seconds()


def is_partial_result(details: Mapping[str, Any] | None) -> bool:
    """Whether an execution summary (``ExecutionStatus.to_dict()``, an event's details) is a truncated result."""
    return bool(details) and (details or {}).get("state") == RunState.COMPLETED_PARTIAL.value


def parse_execution_status(body: Any) -> ExecutionStatus:
    """Build an :class:`ExecutionStatus` from ``GET /v1/execution/{id}/status``."""
    data = _require_mapping(body, "execution status")
    execution_id = _require_str(data, "execution_id", "execution status")
    raw_state = data.get("state")
    error_type, error_message, error_line, error_column = _error_fields(data.get("error"))
    finished = data.get("is_execution_finished")
    return ExecutionStatus(
        execution_id=execution_id,
        raw_state=str(raw_state or ""),
        state=normalize_state(raw_state),
        query_id=_opt_int(data.get("query_id")),
        is_execution_finished=finished if isinstance(finished, bool) else None,
        submitted_at=_opt_timestamp(data.get("submitted_at")),
        execution_started_at=_opt_timestamp(data.get("execution_started_at")),
        execution_ended_at=_opt_timestamp(data.get("execution_ended_at")),
        expires_at=_opt_timestamp(data.get("expires_at")),
        cancelled_at=_opt_timestamp(data.get("cancelled_at")),
        queue_position=_opt_int(data.get("queue_position")),
        error_type=error_type,
        error_message=error_message,
        error_line=error_line,
        error_column=error_column,
        execution_cost_credits=_opt_float(data.get("execution_cost_credits")),
        result_metadata=parse_result_metadata(data.get("result_metadata")),
    )


@dataclass(frozen=True)
class ExecutionStarted:
    """Answer to an execute call: the new execution's id and first state."""

    execution_id: str
    raw_state: str
    state: RunState

    def to_dict(self) -> dict[str, Any]:
        return {"execution_id": self.execution_id, "state": self.state.value, "raw_state": self.raw_state}


def parse_execution_started(body: Any) -> ExecutionStarted:
    data = _require_mapping(body, "execute query")
    raw_state = data.get("state")
    return ExecutionStarted(
        execution_id=_require_str(data, "execution_id", "execute query"),
        raw_state=str(raw_state or ""),
        state=normalize_state(raw_state) if raw_state else RunState.PENDING,
    )


def parse_query_id(body: Any, what: str) -> int:
    """The ``query_id`` of a create/update answer."""
    query_id = _opt_int(_require_mapping(body, what).get("query_id"))
    if query_id is None:
        raise DuneResponseError(f"the {what} response has no integer 'query_id'")
    return query_id


def parse_query(body: Any) -> dict[str, Any]:
    """A ``GET /v1/query/{queryId}`` answer, checked to be about a query."""
    data = dict(_require_mapping(body, "get query"))
    parse_query_id(data, "get query")
    return data


@dataclass(frozen=True)
class MaterializedViewUpsert:
    """Answer to a view upsert: its name and the refresh Dune started."""

    name: str
    execution_id: str | None


def parse_materialized_view_upsert(body: Any) -> MaterializedViewUpsert:
    data = _require_mapping(body, "upsert materialized view")
    return MaterializedViewUpsert(
        name=_require_str(data, "name", "upsert materialized view"), execution_id=_opt_str(data.get("execution_id"))
    )


def parse_pipeline_execution_id(body: Any) -> str:
    """Read ``pipeline_execution_id`` from either pipeline execute endpoint."""
    return _require_str(_require_mapping(body, "execute pipeline"), "pipeline_execution_id", "execute pipeline")


@dataclass(frozen=True)
class PlannedNode:
    """One node of a planned pipeline: what it would run and the node ids it waits for."""

    node_id: int | None
    kind: NodeKind
    dependencies: tuple[int, ...]
    query_id: int | None = None
    view_name: str | None = None
    performance: str | None = None
    query_parameters: dict[str, Any] = field(default_factory=dict)


@dataclass(frozen=True)
class QueryPipeline:
    """The pipeline Dune would run for a query (its materialized-view lineage, then the query), not started."""

    nodes: tuple[PlannedNode, ...]


def parse_query_pipeline(body: Any) -> QueryPipeline:
    """Build a :class:`QueryPipeline` from ``GET /v1/query/{query_id}/pipeline``."""
    pipeline = _require_mapping(body, "query pipeline").get("pipeline")
    nodes = pipeline.get("nodes") if isinstance(pipeline, Mapping) else None
    if not isinstance(nodes, list):
        raise DuneResponseError("the query pipeline response has no 'pipeline.nodes' list")
    return QueryPipeline(
        nodes=tuple(_parse_planned_node(node, position) for position, node in enumerate(nodes, start=1))
    )


def _parse_planned_node(raw: Any, position: int) -> PlannedNode:
    node = _require_mapping(raw, "a query pipeline node")
    query, view = node.get("query_execution"), node.get("materialized_view_refresh")
    detail: Mapping[str, Any]
    if isinstance(query, Mapping):
        kind, detail = NodeKind.QUERY_EXECUTION, query
    elif isinstance(view, Mapping):
        kind, detail = NodeKind.MATERIALIZED_VIEW_REFRESH, view
    else:
        raise DuneResponseError(f"query pipeline node #{position} has neither a query nor a materialized view")
    parameters = detail.get("query_parameters")
    return PlannedNode(
        node_id=_opt_int(node.get("id")),
        kind=kind,
        dependencies=tuple(dep for dep in map(_opt_int, _opt_list(node.get("dependencies"))) if dep is not None),
        query_id=_opt_int(detail.get("query_id")),
        view_name=_opt_str(detail.get("name")),
        performance=_opt_str(detail.get("performance")),
        query_parameters=dict(parameters) if isinstance(parameters, Mapping) else {},
    )


def parse_cancelled(body: Any) -> bool:
    """Whether ``POST /v1/execution/{id}/cancel`` says Dune accepted the cancel."""
    return bool(_require_mapping(body, "cancel execution").get("success"))


def parse_table_created(body: Any) -> dict[str, Any]:
    """The ``POST /v1/uploads`` answer (``already_existed`` and the table's name); an empty answer is ``{}``."""
    return dict(_require_mapping(body, "create table")) if body else {}


def parse_rows_written(body: Any) -> int:
    """The ``rows_written`` of an insert answer."""
    rows = body.get("rows_written") if isinstance(body, Mapping) else None
    if isinstance(rows, bool) or not isinstance(rows, int):
        raise DuneResponseError("the insert response has no integer 'rows_written'")
    return rows


def parse_materialized_view_deleted(body: Any, name: str) -> str:
    """Dune's message for a deleted view, or ``deleted <name>`` when it sent none."""
    message = body.get("message") if isinstance(body, dict) else None
    return str(message or f"deleted {name}")


@dataclass(frozen=True)
class ResultPage:
    """One page of an execution's result rows."""

    execution_id: str
    state: RunState
    rows: list[dict[str, Any]]
    metadata: ResultMetadata | None
    query_id: int | None = None
    next_offset: int | None = None
    next_uri: str | None = None
    error_message: str | None = None


def parse_result_page(body: Any) -> ResultPage:
    """Build a :class:`ResultPage` from ``GET /v1/execution/{id}/results`` (or a query's latest results)."""
    data = _require_mapping(body, "execution results")
    result = data.get("result")
    result_map = result if isinstance(result, Mapping) else {}
    rows = result_map.get("rows") or []
    if not isinstance(rows, list):
        raise DuneResponseError("the results response has 'rows' that is not a list")
    # Older Dune answers put the metadata fields straight into ``result`` instead of ``result.metadata``.
    metadata = parse_result_metadata(result_map.get("metadata")) or parse_result_metadata(result_map)
    _, error_message, line, column = _error_fields(data.get("error"))
    if error_message:
        error_message += error_location(error_message, line, column)
    return ResultPage(
        execution_id=_require_str(data, "execution_id", "execution results"),
        state=normalize_state(data.get("state")),
        rows=[dict(r) for r in rows if isinstance(r, Mapping)],
        metadata=metadata,
        query_id=_opt_int(data.get("query_id")),
        next_offset=_opt_int(data.get("next_offset")),
        next_uri=_opt_str(data.get("next_uri")),
        error_message=error_message,
    )


@dataclass(frozen=True)
class MaterializedViewRefresh:
    """Answer to a materialized view refresh: the execution to follow."""

    execution_id: str
    sql_id: str | None

    def to_dict(self) -> dict[str, Any]:
        return asdict(self)


def parse_materialized_view_refresh(body: Any) -> MaterializedViewRefresh:
    data = _require_mapping(body, "materialized view refresh")
    return MaterializedViewRefresh(
        execution_id=_require_str(data, "execution_id", "materialized view refresh"),
        sql_id=_opt_str(data.get("sql_id")),
    )


@dataclass(frozen=True)
class MaterializedView:
    """Description of a materialized view."""

    id: str | None
    sql_id: str | None
    query_id: int | None
    is_private: bool | None
    table_size_bytes: int | None
    last_execution_ids: tuple[str, ...]

    def to_dict(self) -> dict[str, Any]:
        data = asdict(self)
        data["last_execution_ids"] = list(self.last_execution_ids)
        return data


def parse_materialized_view(body: Any) -> MaterializedView:
    data = _require_mapping(body, "materialized view")
    private = data.get("is_private")
    return MaterializedView(
        id=_opt_str(data.get("id")),
        sql_id=_opt_str(data.get("sql_id")),
        query_id=_opt_int(data.get("query_id")),
        is_private=private if isinstance(private, bool) else None,
        table_size_bytes=_opt_int(data.get("table_size_bytes")),
        last_execution_ids=tuple(str(x) for x in _opt_list(data.get("last_execution_ids")) if _opt_str(x)),
    )


@dataclass(frozen=True)
class CreditUsage:
    """Credits of the current billing period, from ``POST /v1/usage``."""

    credits_used: float | None
    credits_included: float | None
    period_start: str | None
    period_end: str | None


def parse_usage(body: Any) -> CreditUsage:
    data = _require_mapping(body, "usage")
    periods = data.get("billing_periods") or []
    latest: Mapping[str, Any] = {}
    if isinstance(periods, list) and periods and isinstance(periods[-1], Mapping):
        latest = periods[-1]
    return CreditUsage(
        credits_used=_opt_float(latest.get("credits_used")),
        credits_included=_opt_float(latest.get("credits_included")),
        period_start=_opt_str(latest.get("start_date")),
        period_end=_opt_str(latest.get("end_date")),
    )


def resolve_unknown_nodes(status: PipelineStatus, lookups: Mapping[int, ExecutionStatus]) -> PipelineStatus:
    """Replace node states the pipeline endpoint spelled in an unknown way with the execution's own state.

    ``lookups`` maps a node's ``position`` to its execution's status.

    The execution status endpoint has a documented state enum; a node whose execution state is still not
    recognised stays ``UNKNOWN`` (and so never counts as success).
    """
    if not lookups:
        return status
    nodes = []
    for node in status.nodes:
        execution = lookups.get(node.position)
        if node.state is RunState.UNKNOWN and execution is not None:
            node = replace(node, state=execution.state, error=node.error or execution.error_message)
        nodes.append(node)
    return replace(status, nodes=tuple(nodes))
