"""The part of :class:`~airflow_provider_dune.hooks.dune.DuneHook` for saved queries, raw SQL and latest results
(read without running anything), also as pandas ``DataFrame``\\ s."""

from __future__ import annotations

from collections.abc import Callable, Collection, Iterator
from typing import Any

from airflow_provider_dune.api import endpoints
from airflow_provider_dune.api.definitions import QueryDefinition
from airflow_provider_dune.api.errors import DuneConfigurationError, DuneError
from airflow_provider_dune.api.models import (
    ExecutionStarted,
    ResultPage,
    parse_execution_started,
    parse_query,
    parse_query_id,
)
from airflow_provider_dune.api.paging import iter_pages, read_result_page


class DuneQueriesMixin:
    """Saved queries, SQL, latest results and DataFrames; mixed into ``DuneHook`` (which provides ``run``,
    ``_start``, ``settings`` and ``iter_execution_results``)."""

    run: Callable[..., Any]
    _start: Callable[..., Any]
    settings: Any
    iter_execution_results: Callable[..., Iterator[ResultPage]]

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
        return read_result_page(self.run(request), request.description)

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
            self.iter_execution_results(execution_id, page_size=page_size)
            if execution_id is not None
            else self.iter_query_results(int(query_id), page_size=page_size)  # type: ignore[arg-type]
        )
        for page in pages:
            columns = list(page.metadata.column_names) if page.metadata and page.metadata.column_names else None
            if page.rows or columns:
                yield pandas.DataFrame(page.rows, columns=columns)


def _pandas() -> Any:
    try:
        import pandas
    except ImportError:
        raise DuneError("DataFrames need pandas: pip install 'airflow-provider-dune[pandas]'") from None
    return pandas
