"""One test per shape in the Dune API reference's ``REAL_SHAPES.md``, through the parsers and error mapping.

Each test names the shape (section and source) it feeds in. The same shapes reach the operators through the
emulator's realistic profile (``tests/operators/test_real_shapes_runs.py``).
"""

from __future__ import annotations

import json
from typing import Any

import pytest

from airflow_provider_dune.api.errors import (
    DuneAPIError,
    DuneAuthError,
    DuneBadRequestError,
    DuneConfigurationError,
    DuneCreditsExhaustedError,
    DuneDatapointLimitError,
    DuneInvalidIdError,
    DuneNotFoundError,
    DunePartialResultError,
    DuneRateLimitError,
    DuneResultUnavailableError,
    DuneServerError,
    error_from_response,
)
from airflow_provider_dune.api.models import (
    NodeKind,
    PipelineOutcome,
    parse_execution_status,
    parse_pipeline_execution_id,
    parse_pipeline_status,
    parse_result_page,
)
from airflow_provider_dune.api.paging import check_result_page, rows_per_page
from airflow_provider_dune.api.states import RunState
from airflow_provider_dune.api.validation import validate_performance, validate_view_performance

EXECUTION_ID = "01HKZJ2683PHF9Q9PHHQ8FW4Q1"
ENDPOINT = "GET /v1/execution/{execution_id}/results for execution " + EXECUTION_ID

# ------------------------------------------------------------------------------------- execution status


def test_completed_status_without_row_count_and_pending_time() -> None:
    """Execution status: fields absent, not null (dune-client issue #22, a curl of the live API)."""
    status = parse_execution_status(
        {
            "execution_id": EXECUTION_ID,
            "query_id": 1215383,
            "state": "QUERY_STATE_COMPLETED",
            "submitted_at": "2022-12-26T10:27:39.236347Z",
            "expires_at": "2024-12-25T10:27:39.505138Z",
            "execution_started_at": "2022-12-26T10:27:39.25097Z",
            "execution_ended_at": "2022-12-26T10:27:39.505137Z",
            "result_metadata": {
                "column_names": ["block_number"],
                "result_set_bytes": 40,
                "total_row_count": 1,
                "datapoint_count": 1,
                "execution_time_millis": 254,
            },
        }
    )
    assert status.outcome is PipelineOutcome.SUCCESS
    assert status.is_execution_finished is None and status.is_terminal
    assert status.result_metadata is not None
    assert status.result_metadata.row_count is None and status.result_metadata.pending_time_millis is None
    assert status.result_metadata.total_row_count == 1


def test_pending_status_with_large_queue_position_and_no_finished_flag() -> None:
    """Execution status: pending, queue position in the tens of thousands, no is_execution_finished (PR #17)."""
    status = parse_execution_status(
        {
            "execution_id": EXECUTION_ID,
            "query_id": 980708,
            "state": "QUERY_STATE_PENDING",
            "queue_position": 46911,
            "submitted_at": "2022-12-21T13:02:43.212624Z",
        }
    )
    assert status.outcome is PipelineOutcome.RUNNING and not status.is_terminal
    assert "queue position 46911" in status.progress_summary()


def test_completed_status_carrying_cancelled_at_is_a_success() -> None:
    """Execution status: a completed status with cancelled_at (older docs example): the state decides."""
    status = parse_execution_status(
        {
            "execution_id": EXECUTION_ID,
            "state": "QUERY_STATE_COMPLETED",
            "is_execution_finished": True,
            "cancelled_at": "2024-12-20T11:04:18.724658237Z",
            "execution_ended_at": "2024-12-20T11:04:18.724658237Z",
        }
    )
    assert status.outcome is PipelineOutcome.SUCCESS and status.succeeded


@pytest.mark.parametrize("zero", ["1970-01-01T00:00:00Z", "1970-01-01T00:00:00.000Z", "0001-01-01T00:00:00Z"])
def test_zero_expires_at_means_not_set(zero: str) -> None:
    """Execution status: an executing status whose expires_at is 1970-01-01T00:00:00Z (docs) means "not set"."""
    status = parse_execution_status(
        {"execution_id": EXECUTION_ID, "state": "QUERY_STATE_EXECUTING", "expires_at": zero, "cancelled_at": zero}
    )
    assert status.expires_at is None and status.cancelled_at is None
    assert status.outcome is PipelineOutcome.RUNNING


def test_real_timestamps_are_kept() -> None:
    status = parse_execution_status(
        {"execution_id": EXECUTION_ID, "state": "QUERY_STATE_COMPLETED", "expires_at": "2025-03-20T11:04:18Z"}
    )
    assert status.expires_at == "2025-03-20T11:04:18Z"


def test_unknown_extra_fields_are_ignored() -> None:
    """Execution status: extra fields not in the spec (max_inflight_interactive_*, docs example)."""
    status = parse_execution_status(
        {
            "execution_id": EXECUTION_ID,
            "state": "QUERY_STATE_EXECUTING",
            "max_inflight_interactive_executions": 3,
            "max_inflight_interactive_reached": 5,
            "something_new": {"nested": [1, 2]},
        }
    )
    assert status.outcome is PipelineOutcome.RUNNING


def test_failed_status_keeps_message_line_and_column() -> None:
    """Execution status: error object with metadata line/column (dune-client issue #89)."""
    status = parse_execution_status(
        {
            "execution_id": EXECUTION_ID,
            "state": "QUERY_STATE_FAILED",
            "error": {
                "type": "FAILED_TYPE_EXECUTION_FAILED",
                "message": "Column 'x' cannot be resolved",
                "metadata": {"line": 10, "column": 73},
            },
        }
    )
    assert (status.error_line, status.error_column) == (10, 73)
    assert status.outcome is PipelineOutcome.FAILED
    assert "Column 'x' cannot be resolved (line 10, column 73)" in status.failure_message()


def test_failed_status_without_line_and_column_and_no_repeated_location() -> None:
    without = parse_execution_status(
        {"execution_id": EXECUTION_ID, "state": "QUERY_STATE_FAILED", "error": {"message": "boom"}}
    )
    assert without.error_line is None and without.failure_message().endswith(": boom")
    already = parse_execution_status(
        {
            "execution_id": EXECUTION_ID,
            "state": "QUERY_STATE_FAILED",
            "error": {
                "message": "line 3:8: Column 'amount_usdd' cannot be resolved",
                "metadata": {"line": 3, "column": 8},
            },
        }
    )
    assert already.failure_message().count("line 3") == 1


@pytest.mark.parametrize(
    ("raw", "state"),
    [
        ("QUERY_STATE_CANCELED", RunState.CANCELLED),
        ("QUERY_STATE_CANCELLED", RunState.CANCELLED),
        ("QUERY_STATE_EXPIRED", RunState.EXPIRED),
        ("QUERY_STATE_COMPLETED_PARTIAL", RunState.COMPLETED_PARTIAL),
    ],
)
def test_states_seen(raw: str, state: RunState) -> None:
    """Execution status: states seen, CANCELED with one L among them (docs state list; dune-client #124)."""
    status = parse_execution_status({"execution_id": EXECUTION_ID, "state": raw})
    assert status.state is state and status.is_terminal and not status.succeeded


# --------------------------------------------------------------------------------------------- results


def _results(result: dict[str, Any], **extra: Any) -> dict[str, Any]:
    return {"execution_id": EXECUTION_ID, "query_id": 1, "state": "QUERY_STATE_COMPLETED", "result": result, **extra}


def test_flat_result_metadata() -> None:
    """Results: older docs put the metadata fields flat inside result (latest-results page)."""
    page = parse_result_page(
        _results(
            {
                "rows": [{"a": 1, "b": 2}],
                "column_names": ["a", "b"],
                "column_types": ["bigint", "bigint"],
                "total_row_count": 1,
                "datapoint_count": 2,
            }
        )
    )
    assert page.metadata is not None
    assert page.metadata.column_names == ("a", "b") and page.metadata.total_row_count == 1


def test_nested_result_metadata_wins_over_flat_fields() -> None:
    page = parse_result_page(_results({"rows": [], "metadata": {"column_names": ["x"], "total_row_count": 7}}))
    assert page.metadata is not None and page.metadata.column_names == ("x",) and page.metadata.total_row_count == 7


def test_page_past_the_end_is_empty_with_total_row_count() -> None:
    """Results: a request past the end returns empty rows with total_row_count still set (pagination docs)."""
    page = parse_result_page(_results({"rows": [], "metadata": {"column_names": ["a"], "total_row_count": 3}}))
    assert page.rows == [] and page.next_offset is None and page.next_uri is None
    check_result_page(page, ENDPOINT)  # an empty page of a completed result is not an error


@pytest.mark.parametrize("status_code", [400, 402, 403])
def test_datapoint_cap_refusal_is_its_own_error_whatever_the_status(status_code: int) -> None:
    """Results: the per-request datapoint limit (dune docs repo issue #486; its HTTP code is not stated)."""
    error = error_from_response(
        status_code,
        '{"error": "This api request would exceed your configured limits per request. Please use pagination"}',
        endpoint=ENDPOINT,
    )
    assert type(error) is DuneDatapointLimitError
    assert not isinstance(error, (DuneCreditsExhaustedError, DuneAuthError))
    assert "billing cycle" not in str(error) and "max_datapoints_per_request" in str(error)


def test_credits_refusal_is_still_credits() -> None:
    error = error_from_response(
        402, '{"error": "This api request would exceed your configured limits per billing cycle."}'
    )
    assert type(error) is DuneCreditsExhaustedError


def test_pages_are_sized_under_the_datapoint_cap() -> None:
    """Results: with 10,000-row pages any result of 26+ columns crosses the default 250,000 cap."""
    assert rows_per_page(10_000, 26, 250_000) == 9_615
    assert rows_per_page(10_000, 26, 250_000) * 26 <= 250_000
    assert rows_per_page(10_000, 3, 250_000) == 10_000
    assert rows_per_page(10_000, None, 250_000) == 2_500  # columns not known yet: assume many
    assert rows_per_page(10_000, 400_000, 250_000) == 1


def test_partial_result_refused_as_an_http_error() -> None:
    """Results: partial result refused with "Partial Result, please request with 'allow_partial_results=true'"."""
    error = error_from_response(
        400, json.dumps({"error": "Partial Result, please request with 'allow_partial_results=true'"})
    )
    assert isinstance(error, DunePartialResultError)
    assert "allow_partial_results=True" in str(error)


def test_partial_result_refused_as_a_failed_state() -> None:
    """Results: the spec's wording suggests a 200 with a failed state; it must not read as zero rows."""
    page = parse_result_page(
        {
            "execution_id": EXECUTION_ID,
            "state": "QUERY_STATE_FAILED",
            "error": {
                "type": "FAILED_TYPE_EXECUTION_FAILED",
                "message": "Partial Result, please request with 'allow_partial_results=true'",
            },
        }
    )
    with pytest.raises(DunePartialResultError, match="allow_partial_results=True"):
        check_result_page(page, ENDPOINT)


def test_results_of_a_failed_execution_are_an_error_not_zero_rows() -> None:
    page = parse_result_page(
        {"execution_id": EXECUTION_ID, "state": "QUERY_STATE_FAILED", "error": {"message": "boom"}}
    )
    with pytest.raises(DuneResultUnavailableError, match="no result: the execution is failed: boom"):
        check_result_page(page, ENDPOINT)


# ---------------------------------------------------------------------------------------------- errors


def test_invalid_execution_id_is_reported_as_invalid_with_the_id() -> None:
    """Errors: bad execution id: 400 "The requested execution ID (ID: <given>) is invalid." (dune-client e2e)."""
    error = error_from_response(
        400,
        '{"error": "The requested execution ID (ID: Wonky Job ID) is invalid."}',
        endpoint="GET /v1/execution/{execution_id}/status for execution Wonky Job ID",
    )
    assert isinstance(error, DuneInvalidIdError) and isinstance(error, DuneNotFoundError)
    assert "ID: Wonky Job ID" in str(error) and "This id is invalid" in str(error)


def test_absurd_query_id_is_invalid() -> None:
    """Errors: absurd query id (e.g. 9999999999999): 400, not 404 (dune-client e2e)."""
    error = error_from_response(400, '{"error": "The requested query ID (ID: 9999999999999) is invalid."}')
    assert isinstance(error, DuneInvalidIdError)


def test_unknown_parameter_is_a_bad_request() -> None:
    """Errors: unknown query parameter: 400 "unknown parameters (EnumField)" (dune-client #141)."""
    error = error_from_response(400, '{"error": "unknown parameters (EnumField)"}')
    assert type(error) is DuneBadRequestError and "unknown parameters (EnumField)" in str(error)


@pytest.mark.parametrize(
    ("status_code", "body", "error_class", "text"),
    [
        (401, '{"error": "invalid API Key"}', DuneAuthError, "invalid API Key"),
        (404, '{"error": "Query not found"}', DuneNotFoundError, "Query not found"),
        (404, '{"error": "not found: Query not found or private"}', DuneNotFoundError, "or private"),
        (500, '{"error": "An internal error occured"}', DuneServerError, "An internal error occured"),
        (402, '{"error": "exceed your configured limits per billing cycle"}', DuneCreditsExhaustedError, "cycle"),
        (429, '{"message": "Too Many Requests"}', DuneRateLimitError, "Too Many Requests"),  # a proxy's body
        (429, "<html><body><h1>429 Too Many Requests</h1></body></html>", DuneRateLimitError, "429 Too Many"),
    ],
)
def test_error_bodies_seen(status_code: int, body: str, error_class: type[DuneAPIError], text: str) -> None:
    """Errors: Dune's messages, and bodies that are not Dune's (proxies send {"message": ...} or HTML)."""
    error = error_from_response(status_code, body)
    assert type(error) is error_class and text in str(error)


# ------------------------------------------------------------------------------------------- pipelines


def test_docs_example_node_carrying_both_status_objects() -> None:
    """Pipelines: the rendered docs example, one node with both status objects, all values "<string>"."""
    status = parse_pipeline_status(
        {
            "status": "<string>",
            "node_executions": [
                {
                    "id": 123,
                    "query_execution_status": {"status": "<string>", "execution_id": "<string>", "query_id": 123},
                    "materialized_view_refresh_status": {"status": "<string>", "name": "<string>"},
                }
            ],
        },
        "01PIPE",
    )
    assert status.nodes[0].kind is NodeKind.QUERY_EXECUTION
    assert status.outcome is not PipelineOutcome.SUCCESS


def test_node_with_query_status_and_empty_view_status_is_a_query_node() -> None:
    """Pipelines: inference: a serialiser may emit an empty sibling object; the kind is the one with content."""
    status = parse_pipeline_status(
        {
            "status": "completed",
            "node_executions": [
                {
                    "id": 1,
                    "query_execution_status": {"status": "completed", "query_id": 7, "execution_id": EXECUTION_ID},
                    "materialized_view_refresh_status": {},
                }
            ],
        },
        "01PIPE",
    )
    assert status.nodes[0].kind is NodeKind.QUERY_EXECUTION
    assert status.outcome is PipelineOutcome.SUCCESS


def test_node_with_only_a_view_status() -> None:
    """Pipelines: the Python SDK 1.12 crashes on a node with only a materialized-view status."""
    status = parse_pipeline_status(
        {
            "status": "executing",
            "node_executions": [
                {"id": 1, "materialized_view_refresh_status": {"status": "executing", "name": "dune.t.result_v"}},
                {"id": 2, "query_execution_status": {"status": "pending", "query_id": 9}},
            ],
        },
        "01PIPE",
    )
    assert status.nodes[0].kind is NodeKind.MATERIALIZED_VIEW_REFRESH
    assert status.outcome is PipelineOutcome.RUNNING


@pytest.mark.parametrize("nodes", [None, []])
def test_completed_without_node_executions_is_not_success(nodes: Any) -> None:
    """Pipelines: inference, fail safe: completed with node_executions null or empty is not proof of success."""
    status = parse_pipeline_status({"status": "completed", "node_executions": nodes}, "01PIPE")
    assert status.outcome is PipelineOutcome.UNKNOWN
    assert "lists no node executions" in status.failure_message()


def test_node_without_id_is_tolerated() -> None:
    status = parse_pipeline_status(
        {"status": "executing", "node_executions": [{"query_execution_status": {"status": "failed", "error": "x"}}]},
        "01PIPE",
    )
    assert status.nodes[0].node_id is None
    assert "node #1" in status.failure_message()


def test_execute_answer_with_pipeline_execution_id() -> None:
    """Pipelines: the TypeScript client reads {"pipeline_execution_id": ...} from execute."""
    assert parse_pipeline_execution_id({"pipeline_execution_id": "01PIPE", "extra": 1}) == "01PIPE"


# -------------------------------------------------------------------------------------- materialized views


def test_small_tier_is_accepted_for_view_refreshes() -> None:
    """Materialized views: newer docs (duneanalytics/skills, matview-management) list a small tier."""
    assert validate_view_performance("small") == "small"
    with pytest.raises(DuneConfigurationError, match="materialized-view refreshes only"):
        validate_performance("small")
