"""Materialized views in the Dune API emulator: the catalog, refreshes, the ``GET /v1/materialized-views/{name}``
body and the refreshes Dune runs on its own schedule."""

from __future__ import annotations

import zlib
from collections.abc import Sequence
from typing import Any

from airflow_provider_dune.testing._model import (
    NOT_FOUND,
    ApiError,
    ViewSpec,
    _check_times,
    _is_int,
    _StateBase,
    _unique,
)


class ViewsMixin(_StateBase):
    """Materialized views of :class:`~airflow_provider_dune.testing._state.EmulatorState`: catalog, refreshes,
    ``get_view`` and Dune-side schedules."""

    # -------------------------------------------------------------------------------------------- catalog

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

    def _view(self, name: str) -> ViewSpec:
        view = self.views.get(name)
        if view is None:
            raise ApiError(404, NOT_FOUND)
        return view

    # ---------------------------------------------------------------------------------- refreshes & schedules

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
