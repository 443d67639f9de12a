"""Pipelines in the Dune API emulator: query-pipeline plans, explicit-pipeline validation, starting runs, node
timelines and the ``GET /v1/pipelines/executions/{id}/status`` body.

A node's timeline (when it becomes runnable, starts executing, ends) is a pure function of the pipeline's start
time, the nodes' configured ``pending``/``duration``/``error`` and any cancellation (see :func:`_timelines`).
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from typing import Any

from airflow_provider_dune.testing._model import (
    _QUERY_STATES,
    NOT_FOUND,
    ApiError,
    NodeState,
    _is_int,
    _Node,
    _NodeView,
    _Pipeline,
    _StateBase,
    _Timeline,
)
from airflow_provider_dune.testing._queries import generated_rows


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


class PipelinesMixin(_StateBase):
    """Pipelines of :class:`~airflow_provider_dune.testing._state.EmulatorState`: plans, explicit pipelines, runs
    and their node timelines, pipeline status."""

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

    def _node_views(self, pipeline: _Pipeline, now: float) -> list[_NodeView]:
        timelines = _timelines(pipeline)
        return [_NodeView(n, timelines[n.node_id], _state_at(timelines[n.node_id], now)) for n in pipeline.nodes]

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
