"""How results are paged: page sizes that respect Dune's datapoint cap, and which pages carry no result."""

from __future__ import annotations

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
