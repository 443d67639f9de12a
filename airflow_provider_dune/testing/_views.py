"""Materialized views in the Dune API emulator: the catalog, refreshes, the ``GET /v1/materialized-views/{name}``
body and the refreshes Dune runs on its own schedule."""

from __future__ import annotations

import zlib
from collections.abc import Mapping, Sequence
from dataclasses import replace
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


def cron_period(cron: Any) -> float | None:
    """Seconds between Dune-side refreshes for the cron forms the emulator runs (``*/N * * * *`` every N minutes,
    ``0 */N * * *`` every N hours); ``None`` for no schedule or a form it does not emulate."""
    if not isinstance(cron, str):
        return None
    fields = cron.split()
    if len(fields) != 5 or fields[2:] != ["*", "*", "*"]:
        return None
    minute, hour = fields[0], fields[1]
    if minute.startswith("*/") and hour == "*" and minute[2:].isdigit() and int(minute[2:]) > 0:
        return int(minute[2:]) * 60.0
    if minute == "0" and hour.startswith("*/") and hour[2:].isdigit() and int(hour[2:]) > 0:
        return int(hour[2:]) * 3600.0
    return None


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

    def upsert_view(self, body: Mapping[str, Any], performance: str) -> str:
        """``POST /v1/materialized-views``: create or change a view, then refresh it; return the execution id."""
        name, raw_query_id = body.get("name"), body.get("query_id")
        if not isinstance(name, str) or not name or "/" in name:
            raise ApiError(400, f"invalid name {name!r}")
        if not _is_int(raw_query_id) or int(raw_query_id) <= 0:  # type: ignore[arg-type]
            raise ApiError(400, f"invalid query_id {raw_query_id!r}")
        query_id = int(raw_query_id)  # type: ignore[arg-type]
        with self.lock:
            self._query(query_id)
            current = self.views.get(name)
            self.add_view(
                name,
                query_id=query_id,
                duration=current.duration if current else 0.5,
                pending=current.pending if current else 0.0,
                refresh_every=cron_period(body.get("cron_expression")),
            )
            self.views[name] = replace(self.views[name], is_private=bool(body.get("is_private")))
            execution_id, _ = self.refresh_view(name, performance)
            return execution_id

    def delete_view(self, name: str) -> None:
        with self.lock:
            self._view(name)
            del self.views[name]
            self.schedules.pop(name, None)

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
                "is_private": view.is_private,
                "owner_user_id": 1,
                "owner_team_id": 1,
                "table_size_bytes": 1_000_000 + zlib.crc32(name.encode()) % 1_000_000_000,
                "last_execution_ids": [eid for _, eid in refreshes[:10]],
            }
