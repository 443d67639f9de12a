"""The query catalog of the Dune API emulator: registering queries, their parameters, generated rows and the
``GET /v1/query/{queryId}`` body."""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from dataclasses import replace
from typing import Any

from airflow_provider_dune.testing._model import (
    NOT_FOUND,
    ApiError,
    QuerySpec,
    _check_times,
    _is_int,
    _StateBase,
    _unique,
)


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


#: Queries saved through the API get ids above this one (the demo catalog uses small ids).
SAVED_QUERY_IDS_FROM = 2_000_000


class QueriesMixin(_StateBase):
    """Queries of :class:`~airflow_provider_dune.testing._state.EmulatorState`: catalog, parameters, ``get_query``."""

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

    def _query(self, query_id: int) -> QuerySpec:
        query = self.queries.get(query_id)
        if query is None:
            raise ApiError(404, NOT_FOUND)
        return query

    @staticmethod
    def _check_parameters(query: QuerySpec, params: Mapping[str, Any], where: str = "") -> None:
        unknown = sorted(set(params) - set(query.parameters))
        if unknown:
            allowed = ", ".join(query.parameters) if query.parameters else "none"
            raise ApiError(
                400,
                f"{where}unknown parameters ({', '.join(unknown)}); query {query.query_id} has: {allowed}",
            )

    def save_query(self, query_id: int | None, body: Mapping[str, Any]) -> int:
        """``POST /v1/query`` (``query_id`` None: a new query) or ``PATCH /v1/query/{queryId}``; returns the id."""
        with self.lock:
            if query_id is None:
                for key in ("name", "query_sql"):
                    if not isinstance(body.get(key), str) or not body[key].strip():
                        raise ApiError(400, f"invalid request body: {key} is required")
                query_id = max([SAVED_QUERY_IDS_FROM, *self.queries]) + 1
                saved: dict[str, Any] = {
                    "description": "",
                    "parameters": [],
                    "is_private": False,
                    "tags": [],
                    "version": 0,
                }
                current: QuerySpec | None = None
            else:
                current = self._query(query_id)
                saved = dict(current.saved or self.get_query(query_id))
            for key in ("name", "query_sql", "description", "parameters", "is_private", "tags"):
                if key in body:
                    saved[key] = body[key]
            if not isinstance(saved.get("parameters"), list) or not all(
                isinstance(p, Mapping) and isinstance(p.get("key"), str) for p in saved["parameters"]
            ):
                raise ApiError(400, "invalid request body: parameters must be a list of objects with a key")
            saved["version"] = int(saved.get("version") or 0) + 1
            keys = tuple(str(p["key"]) for p in saved["parameters"])
            if current is None:
                self.add_query(query_id, name=str(saved["name"]), parameters=keys)
            else:
                self.queries[query_id] = replace(current, name=str(saved["name"]), parameters=keys)
            self.queries[query_id] = replace(self.queries[query_id], saved=saved)
            return query_id

    def get_query(self, query_id: int) -> dict[str, Any]:
        """The ``GET /v1/query/{queryId}`` body."""
        with self.lock:
            query = self._query(query_id)
            if query.saved is not None:
                return {
                    "query_id": query.query_id,
                    "owner": "demo",
                    "query_engine": "medium",
                    "is_archived": False,
                    "is_unsaved": False,
                    **{k: v for k, v in query.saved.items()},
                }
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
