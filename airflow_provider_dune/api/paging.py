"""How results are paged: page sizes that respect Dune's datapoint cap, and which pages carry no result."""

from __future__ import annotations

from collections.abc import Callable, Iterator

from airflow_provider_dune.api.errors import DunePartialResultError, DuneResultUnavailableError
from airflow_provider_dune.api.models import ResultMetadata, ResultPage, parse_result_page
from airflow_provider_dune.api.states import RunState

#: Columns assumed for the first page while the result's column count is not known yet.
ASSUMED_COLUMNS = 100
#: Rows per page are chosen so that a page's JSON is about this size, from the bytes per row Dune reports
#: (``result_set_bytes``); the answer's hard cap is ``RESULTS_MAX_RESPONSE_BYTES`` in ``endpoints``.
PAGE_TARGET_BYTES = 32 * 1024 * 1024

_NO_RESULT_STATES = frozenset(
    {RunState.FAILED, RunState.CANCELLED, RunState.EXPIRED, RunState.PENDING, RunState.EXECUTING}
)


def rows_per_page(page_size: int, column_count: int | None, max_datapoints: int, row_bytes: float | None = None) -> int:
    """Rows to ask for so that rows x columns stays within ``max_datapoints``, a page's JSON stays near
    :data:`PAGE_TARGET_BYTES` when ``row_bytes`` (estimated JSON bytes per row) is known, and at most
    ``page_size``."""
    columns = column_count if column_count and column_count > 0 else ASSUMED_COLUMNS
    rows = min(page_size, max_datapoints // columns)
    if row_bytes and row_bytes > 0:
        rows = min(rows, int(PAGE_TARGET_BYTES // row_bytes))
    return max(1, rows)


def json_bytes_per_row(metadata: ResultMetadata | None, *, total: bool = False) -> float | None:
    """Estimated JSON bytes of one row, from the raw bytes Dune reports (which leave out the column names
    repeated in every JSON row, quotes and escapes); ``None`` when Dune does not say."""
    if metadata is None:
        return None
    raw = metadata.total_result_set_bytes if total else metadata.result_set_bytes
    rows = metadata.total_row_count if total else metadata.row_count
    if not raw or not rows or raw <= 0 or rows <= 0:
        return None
    names = sum(len(name) + 6 for name in metadata.column_names)  # "name": , plus the quotes of a string value
    return 1.5 * raw / rows + names


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


def read_result_page(body: object, endpoint: str) -> ResultPage:
    """One page parsed from a results answer; raises (see :func:`check_result_page`) when it holds no result."""
    page = parse_result_page(body)
    check_result_page(page, endpoint)
    return page


def iter_pages(
    fetch: Callable[[int, int], ResultPage],
    page_size: int,
    max_datapoints: int,
    column_count: int | None = None,
    row_bytes: float | None = None,
) -> Iterator[ResultPage]:
    """Every page of a result: ``fetch(limit, offset)`` reads one; pages follow ``next_offset`` and are sized
    under ``max_datapoints`` (from ``column_count`` when known, then from the columns each page reports) and
    near :data:`PAGE_TARGET_BYTES` (from ``row_bytes`` when known, then from the bytes each page reports; the
    largest estimate seen is kept), so one page in memory stays bounded however wide the rows are."""
    offset: int | None = 0
    while offset is not None:
        page = fetch(rows_per_page(page_size, column_count, max_datapoints, row_bytes), offset)
        yield page
        if page.metadata and page.metadata.column_names:
            column_count = len(page.metadata.column_names)
        seen = json_bytes_per_row(page.metadata)
        if seen is not None:
            row_bytes = max(seen, row_bytes or 0.0)
        more = page.next_offset is not None and page.next_offset > offset and bool(page.rows)
        offset = page.next_offset if more else None
