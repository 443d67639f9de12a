"""Executions in the Dune API emulator: starting a query execution, execution status and results, the latest
results of a query, cancellation, result metadata, costs and the ``POST /v1/usage`` body."""

from __future__ import annotations

import re
import zlib
from collections.abc import Mapping, Sequence
from datetime import datetime, timedelta, timezone
from typing import Any

from airflow_provider_dune.testing._model import (
    _QUERY_STATES,
    NOT_FOUND,
    RESULT_RETENTION_SECONDS,
    ApiError,
    QuerySpec,
    _Node,
    _NodeView,
    _Pipeline,
    _StateBase,
)
from airflow_provider_dune.testing._profiles import DATAPOINT_LIMIT_MESSAGE, PARTIAL_RESULT_MESSAGE
from airflow_provider_dune.testing._queries import generated_rows

_LINE_COLUMN = re.compile(r"line (\d+):(\d+)", re.IGNORECASE)


def _is_partial(view: _NodeView) -> bool:
    """A query run set up with ``partial=True`` that completed: Dune truncated its result."""
    return view.state == "completed" and view.node.partial


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


#: Raw SQL runs get a query id from this range (one per distinct SQL text), as Dune attaches them to a query.
RAW_SQL_QUERY_IDS_FROM = 900_000_000
_FAIL_MARKER = re.compile(r"^\s*--\s*emulator:\s*fail\s+(.+)$", re.MULTILINE)


class ExecutionsMixin(_StateBase):
    """Executions of :class:`~airflow_provider_dune.testing._state.EmulatorState`: status, results, cancel, costs."""

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

    def execute_sql(self, sql: str, performance: str) -> str:
        """Run SQL that is not a saved query (``POST /v1/sql/execute``); return the execution id.

        The run behaves like a query's: generated rows, or a failure when the SQL has a line
        ``-- emulator: fail <message>`` (a way for tests to make raw SQL fail).
        """
        with self.lock:
            query_id = RAW_SQL_QUERY_IDS_FROM + zlib.crc32(sql.encode()) % 100_000_000
            match = _FAIL_MARKER.search(sql)
            self.add_query(query_id, name="raw SQL", implicit=True, error=match.group(1).strip() if match else None)
            spec = {
                "id": 1,
                "dependencies": [],
                "query_execution": {"query_id": query_id, "performance": performance, "query_parameters": {}},
            }
            pipeline = self._start("execute_sql", [spec], exposed=False, root_query_id=query_id)
            return pipeline.nodes[0].execution_id

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
