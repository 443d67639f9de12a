"""How results are paged: page sizes that respect Dune's datapoint cap, and which pages carry no result."""

from __future__ import annotations

from collections.abc import Callable, Iterator

from airflow_provider_dune.api.errors import DunePartialResultError, DuneResultUnavailableError
from airflow_provider_dune.api.models import ResultPage
from airflow_provider_dune.api.states import RunState

#: Columns assumed for the first page while the result's column count is not known yet.
ASSUMED_COLUMNS = 100

_NO_RESULT_STATES = frozenset(
    {RunState.FAILED, RunState.CANCELLED, RunState.EXPIRED, RunState.PENDING, RunState.EXECUTING}
)


def rows_per_page(page_size: int, column_count: int | None, max_datapoints: int) -> int:
    """Rows to ask for so that rows x columns stays within ``max_datapoints`` (and at most ``page_size``)."""
    columns = column_count if column_count and column_count > 0 else ASSUMED_COLUMNS
    return max(1, min(page_size, max_datapoints // columns))


def check_result_page(page: ResultPage, endpoint: str) -> None:
    """Raise when a 200 answer to a results request holds no result, instead of reading it as zero rows."""
    if page.state not in _NO_RESULT_STATES:
        return
    message = page.error_message or f"the execution is {page.state.value}, so it has no result to read"
    if "allow_partial_results" in message.lower():
        raise DunePartialResultError(message, http_status=200, endpoint=endpoint)
    raise DuneResultUnavailableError(
        f"no result: the execution is {page.state.value}: {message}", http_status=200, endpoint=endpoint
    )


def iter_pages(
    fetch: Callable[[int, int], ResultPage], page_size: int, max_datapoints: int, column_count: int | None = None
) -> Iterator[ResultPage]:
    """Every page of a result: ``fetch(limit, offset)`` reads one; pages follow ``next_offset`` and are sized
    under ``max_datapoints`` (from ``column_count`` when known, then from the columns each page reports)."""
    offset: int | None = 0
    while offset is not None:
        page = fetch(rows_per_page(page_size, column_count, max_datapoints), offset)
        yield page
        if page.metadata and page.metadata.column_names:
            column_count = len(page.metadata.column_names)
        more = page.next_offset is not None and page.next_offset > offset and bool(page.rows)
        offset = page.next_offset if more else None
