"""The query catalog of the Dune API emulator: registering queries, their parameters, generated rows and the
``GET /v1/query/{queryId}`` body."""

from __future__ import annotations

from collections.abc import Mapping, Sequence
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
