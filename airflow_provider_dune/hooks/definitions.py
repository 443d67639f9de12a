"""The part of :class:`~airflow_provider_dune.hooks.dune.DuneHook` that manages Dune objects as code and reads
results without running anything: saved queries, raw SQL, latest results, materialized-view definitions."""

from __future__ import annotations

from collections.abc import Callable, Collection, Iterator
from typing import Any, TypeVar

from airflow_provider_dune.api import endpoints
from airflow_provider_dune.api.definitions import MaterializedViewDefinition, QueryDefinition, TableDefinition
from airflow_provider_dune.api.errors import DuneConfigurationError, DuneError, DuneResponseError
from airflow_provider_dune.api.models import (
    ExecutionStarted,
    MaterializedViewUpsert,
    ResultPage,
    parse_execution_started,
    parse_materialized_view_upsert,
    parse_query,
    parse_query_id,
    parse_result_page,
)
from airflow_provider_dune.api.paging import check_result_page, iter_pages
from airflow_provider_dune.utils.uploads import Chunk

T = TypeVar("T")


class DuneDefinitionsMixin:
    """Queries, SQL and views as code; mixed into ``DuneHook`` (which provides ``run``, ``_start``, ``settings``)."""

    run: Callable[..., Any]
    _start: Callable[..., Any]
    settings: Any

    # -- saved queries ---------------------------------------------------------------------------------------

    def get_query(self, query_id: int) -> dict[str, Any]:
        """A saved query: ``query_sql``, ``name``, ``parameters``, ``is_private``, ``tags``, ``version``..."""
        return parse_query(self.run(endpoints.get_query(query_id)))

    def create_query(self, definition: QueryDefinition) -> int:
        """Save a new query; returns its id. Saving is free: nothing runs."""
        created: int = self._start(
            endpoints.create_query(definition), lambda body: parse_query_id(body, "create query")
        )
        return created

    def update_query(self, query_id: int, definition: QueryDefinition) -> int:
        """Replace a saved query's SQL, name, parameters and flags (a new version on dune.com)."""
        return parse_query_id(self.run(endpoints.update_query(query_id, definition)), "update query")

    def sync_query(
        self, definition: QueryDefinition, query_id: int | None = None, expected_names: Collection[str] = ()
    ) -> tuple[int, str, list[str]]:
        """Make Dune's query match ``definition``: ``(query_id, "created" | "updated" | "unchanged", changed)``.

        With ``query_id`` the query is read first and only updated when something differs, so a re-run makes no
        new version; without one a query is created.

        :param expected_names: when given, the query on Dune must have one of these names, or nothing is sent
            (:class:`~airflow_provider_dune.api.errors.DuneConfigurationError`): a remembered id that points at
            another query must not overwrite it.
        """
        if query_id is None:
            return self.create_query(definition), "created", ["all"]
        current = self.get_query(query_id)
        if expected_names and current.get("name") not in expected_names:
            names = " or ".join(repr(name) for name in sorted(expected_names))
            raise DuneConfigurationError(
                f"Dune query {query_id} is named {current.get('name')!r}, not {names}: it is not the query this "
                "definition was synced to, so it is left unchanged"
            )
        changed = definition.changes_from(current)
        if not changed:
            return query_id, "unchanged", []
        return self.update_query(query_id, definition), "updated", changed

    # -- raw SQL and latest results --------------------------------------------------------------------------

    def execute_sql(self, sql: str, performance: str = "medium") -> ExecutionStarted:
        """Run SQL that is not saved as a query (billed); follow it with ``get_execution_status``."""
        started: ExecutionStarted = self._start(endpoints.execute_sql(sql, performance), parse_execution_started)
        return started

    def get_query_results(
        self,
        query_id: int,
        *,
        limit: int | None = None,
        offset: int | None = None,
        allow_partial_results: bool = False,
    ) -> ResultPage:
        """One page of the query's latest result, without running it (no execution credits)."""
        request = endpoints.get_query_results(
            query_id, limit=limit, offset=offset, allow_partial_results=allow_partial_results
        )
        page = parse_result_page(self.run(request))
        check_result_page(page, request.description)
        return page

    def iter_query_results(
        self, query_id: int, *, page_size: int = 10_000, allow_partial_results: bool = False
    ) -> Iterator[ResultPage]:
        """Every page of the query's latest result, sized under the connection's datapoint cap."""
        if page_size < 1:
            raise DuneError(f"page_size must be at least 1, got {page_size}")
        yield from iter_pages(
            lambda limit, offset: self.get_query_results(
                query_id, limit=limit, offset=offset, allow_partial_results=allow_partial_results
            ),
            page_size,
            self.settings.max_datapoints_per_request,
        )

    # -- uploaded tables -------------------------------------------------------------------------------------

    def create_table(self, table: TableDefinition) -> dict[str, Any]:
        """Create an uploaded table (billed: 10 credits); an existing one is reported (``already_existed``)."""
        created: dict[str, Any] = self._start(endpoints.create_table(table), lambda body: dict(body or {}))
        return created

    def insert_rows(self, namespace: str, table_name: str, chunk: Chunk) -> int:
        """Append one chunk of rows; returns the rows Dune says it wrote. Never resent after a lost answer."""
        request = endpoints.insert_rows(namespace, table_name, chunk.content, chunk.content_type)
        written: int = self._start(request, _rows_written)
        return written

    def clear_table(self, namespace: str, table_name: str) -> None:
        """Delete every row of an uploaded table (the table and its schema stay)."""
        self.run(endpoints.clear_table(namespace, table_name))

    def delete_table(self, namespace: str, table_name: str) -> None:
        """Drop an uploaded table."""
        self.run(endpoints.delete_table(namespace, table_name))

    # -- DataFrames ------------------------------------------------------------------------------------------

    def get_results_dataframe(
        self, execution_id: str | None = None, *, query_id: int | None = None, page_size: int = 10_000
    ) -> Any:
        """The whole result of an execution (or a query's latest result) as one pandas ``DataFrame``.

        Needs ``pip install airflow-provider-dune[pandas]``. For results too big for memory, iterate
        :meth:`iter_results_dataframes` instead.
        """
        pandas = _pandas()
        frames = list(self.iter_results_dataframes(execution_id, query_id=query_id, page_size=page_size))
        if not frames:
            return pandas.DataFrame()
        return pandas.concat(frames, ignore_index=True) if len(frames) > 1 else frames[0]

    def iter_results_dataframes(
        self, execution_id: str | None = None, *, query_id: int | None = None, page_size: int = 10_000
    ) -> Iterator[Any]:
        """One ``DataFrame`` per results page (columns in Dune's order), so only one page is in memory."""
        pandas = _pandas()
        if (execution_id is None) == (query_id is None):
            raise DuneError("pass exactly one of execution_id or query_id")
        pages = (
            self.iter_execution_results(execution_id, page_size=page_size)  # type: ignore[attr-defined]
            if execution_id is not None
            else self.iter_query_results(int(query_id), page_size=page_size)  # type: ignore[arg-type]
        )
        for page in pages:
            columns = list(page.metadata.column_names) if page.metadata and page.metadata.column_names else None
            if page.rows or columns:
                yield pandas.DataFrame(page.rows, columns=columns)

    # -- materialized views as code --------------------------------------------------------------------------

    def upsert_materialized_view(self, definition: MaterializedViewDefinition) -> MaterializedViewUpsert:
        """Create or change a view. Dune refreshes it right away, which is billed: compare before calling."""
        upsert: MaterializedViewUpsert = self._start(
            endpoints.upsert_materialized_view(definition), parse_materialized_view_upsert
        )
        return upsert

    def delete_materialized_view(self, name: str) -> str:
        """Drop a view; returns Dune's message."""
        body = self.run(endpoints.delete_materialized_view(name))
        return str((body or {}).get("message") or f"deleted {name}") if isinstance(body, dict) else f"deleted {name}"


def _rows_written(body: Any) -> int:
    rows = body.get("rows_written") if isinstance(body, dict) else None
    if isinstance(rows, bool) or not isinstance(rows, int):
        raise DuneResponseError("the insert response has no integer 'rows_written'")
    return rows


def _pandas() -> Any:
    try:
        import pandas
    except ImportError:
        raise DuneError("DataFrames need pandas: pip install 'airflow-provider-dune[pandas]'") from None
    return pandas
