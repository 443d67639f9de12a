from __future__ import annotations

import json

import pytest

from airflow_provider_dune.api.errors import DuneResponseError
from airflow_provider_dune.api.models import (
    NodeKind,
    PipelineOutcome,
    parse_execution_status,
    parse_pipeline_status,
    parse_query_pipeline,
    parse_result_page,
    resolve_unknown_nodes,
)
from airflow_provider_dune.api.states import RunState


def query_node(node_id: int, status: str, *, query_id: int = 100, execution_id: str = "", error: str = "") -> dict:
    return {
        "id": node_id,
        "query_execution_status": {
            "status": status,
            "query_id": query_id,
            "execution_id": execution_id,
            "error": error,
        },
    }


def view_node(node_id: int, status: str, *, name: str = "dune.team.result_x", execution_id: str = "", error: str = ""):
    return {
        "id": node_id,
        "materialized_view_refresh_status": {
            "status": status,
            "name": name,
            "execution_id": execution_id,
            "error": error,
        },
    }


def status(overall: str, *nodes: dict, error: str = "") -> dict:
    return {"status": overall, "error": error, "node_executions": list(nodes)}


def test_completed_pipeline_with_completed_nodes_succeeds() -> None:
    parsed = parse_pipeline_status(
        status(
            "completed", view_node(1, "completed", execution_id="E1"), query_node(2, "completed", execution_id="E2")
        ),
        "P1",
    )
    assert parsed.outcome is PipelineOutcome.SUCCESS
    assert parsed.succeeded and parsed.is_terminal
    assert parsed.nodes[0].kind is NodeKind.MATERIALIZED_VIEW_REFRESH
    assert parsed.nodes[0].label == "materialized view dune.team.result_x"
    assert parsed.nodes[1].label == "query 100"
    assert parsed.progress_summary() == "2/2 nodes done"


def test_running_pipeline_reports_progress_and_running_nodes() -> None:
    parsed = parse_pipeline_status(
        status(
            "executing",
            view_node(1, "completed", execution_id="E1"),
            view_node(2, "executing", name="dune.team.result_daily", execution_id="E2"),
            query_node(3, "pending", query_id=301),
            query_node(4, "pending", query_id=401),
            query_node(5, "completed", execution_id="E5"),
        ),
        "P1",
    )
    assert parsed.outcome is PipelineOutcome.RUNNING
    assert not parsed.is_terminal
    assert parsed.progress_summary() == (
        "2/5 nodes done, 1 running (materialized view dune.team.result_daily), 2 pending (query 301, query 401)"
    )
    assert [n.execution_id for n in parsed.running_nodes] == ["E2"]


def test_progress_names_at_most_three_nodes_per_state() -> None:
    nodes = [query_node(i, "pending", query_id=1000 + i) for i in range(1, 6)]
    parsed = parse_pipeline_status(status("executing", *nodes), "P1")
    assert parsed.progress_summary() == "0/5 nodes done, 5 pending (query 1001, query 1002, query 1003, +2 more)"


def test_node_error_means_failure_even_if_status_says_completed() -> None:
    parsed = parse_pipeline_status(
        status("executing", query_node(1, "completed", execution_id="E1", error="division by zero")), "P1"
    )
    assert parsed.nodes[0].state is RunState.FAILED
    assert parsed.outcome is PipelineOutcome.FAILED
    assert parsed.failure_message() == "Dune pipeline P1 failed: node 1 (query 100): division by zero"


def test_failed_node_while_others_run_is_terminal_with_cancellable_nodes() -> None:
    parsed = parse_pipeline_status(
        status(
            "executing",
            query_node(1, "QUERY_STATE_FAILED", execution_id="E1", error="syntax error"),
            query_node(2, "executing", query_id=200, execution_id="E2"),
        ),
        "P1",
    )
    assert parsed.outcome is PipelineOutcome.FAILED
    assert [n.node_id for n in parsed.failed_nodes] == [1]
    assert [n.execution_id for n in parsed.running_nodes] == ["E2"]


def test_overall_error_is_failure() -> None:
    parsed = parse_pipeline_status(status("executing", error="pipeline aborted"), "P1")
    assert parsed.outcome is PipelineOutcome.FAILED
    assert parsed.failure_message() == "Dune pipeline P1 failed: pipeline error: pipeline aborted"


def test_failure_is_stated_once_with_the_execution_s_line_and_column() -> None:
    """Dune repeats a node's error in the pipeline's; the node's execution status says where in the SQL."""
    parsed = parse_pipeline_status(
        status(
            "failed",
            query_node(1, "completed", execution_id="E1"),
            query_node(2, "failed", query_id=1001, execution_id="E2", error="Column 'x' cannot be resolved"),
            error="node 2 (query 1001) failed: Column 'x' cannot be resolved",
        ),
        "P1",
    )
    execution = parse_execution_status(
        {
            "execution_id": "E2",
            "state": "QUERY_STATE_FAILED",
            "error": {"message": "Column 'x' cannot be resolved", "metadata": {"line": 3, "column": 8}},
        }
    )
    assert parsed.failure_message() == "Dune pipeline P1 failed: node 2 (query 1001): Column 'x' cannot be resolved"
    message = parsed.failure_message({"E2": execution})
    assert message == "Dune pipeline P1 failed: node 2 (query 1001): Column 'x' cannot be resolved (line 3, column 8)"
    assert message.count("cannot be resolved") == 1


def test_cancelled_spellings() -> None:
    for spelling in ("cancelled", "CANCELED", "QUERY_STATE_CANCELED"):
        parsed = parse_pipeline_status(status(spelling, query_node(1, spelling)), "P1")
        assert parsed.outcome is PipelineOutcome.CANCELLED


@pytest.mark.parametrize("overall", ["finished_ok", "DONE", ""])
def test_unknown_overall_state_with_finished_nodes_is_never_success(overall: str) -> None:
    parsed = parse_pipeline_status(status(overall, query_node(1, "completed", execution_id="E1")), "P1")
    assert parsed.outcome is PipelineOutcome.UNKNOWN
    assert not parsed.succeeded


def test_unknown_overall_state_with_running_nodes_keeps_waiting() -> None:
    parsed = parse_pipeline_status(status("warming_up", query_node(1, "executing", execution_id="E1")), "P1")
    assert parsed.outcome is PipelineOutcome.RUNNING


def test_completed_overall_with_unknown_node_is_not_success() -> None:
    parsed = parse_pipeline_status(status("completed", query_node(1, "mystery", execution_id="E1")), "P1")
    assert parsed.outcome is PipelineOutcome.UNKNOWN
    assert "unrecognised Dune state 'mystery'" in parsed.failure_message()


def test_resolve_unknown_nodes_uses_execution_state() -> None:
    parsed = parse_pipeline_status(status("completed", query_node(1, "mystery", execution_id="E1")), "P1")
    execution = parse_execution_status({"execution_id": "E1", "state": "QUERY_STATE_COMPLETED"})
    resolved = resolve_unknown_nodes(parsed, {1: execution})
    assert resolved.outcome is PipelineOutcome.SUCCESS
    still_unknown = resolve_unknown_nodes(
        parsed, {1: parse_execution_status({"execution_id": "E1", "state": "QUERY_STATE_WHATEVER"})}
    )
    assert still_unknown.outcome is PipelineOutcome.UNKNOWN


def test_to_dict_is_json_serialisable() -> None:
    parsed = parse_pipeline_status(status("executing", view_node(1, "executing", execution_id="E1")), "P1")
    data = json.loads(json.dumps(parsed.to_dict()))
    assert data["pipeline_execution_id"] == "P1"
    assert data["outcome"] == "running"
    assert data["nodes"][0]["kind"] == "materialized_view_refresh"
    assert data["nodes"][0]["execution_id"] == "E1"


@pytest.mark.parametrize(
    "body",
    [
        [],
        "nope",
        {"status": "executing", "node_executions": "x"},
        {"status": "executing", "node_executions": [{"id": 1}]},
        {"status": "executing", "node_executions": [{"id": 1, "query_execution_status": "x"}]},
    ],
)
def test_malformed_pipeline_status_raises_response_error(body: object) -> None:
    with pytest.raises(DuneResponseError):
        parse_pipeline_status(body, "P1")


def test_execution_status_parses_error_and_metadata() -> None:
    parsed = parse_execution_status(
        {
            "execution_id": "E1",
            "query_id": 5,
            "state": "QUERY_STATE_FAILED",
            "is_execution_finished": True,
            "error": {"type": "syntax_error", "message": "mismatched input 'selecdt'"},
            "execution_cost_credits": 1.5,
        }
    )
    assert parsed.state is RunState.FAILED and parsed.is_terminal and not parsed.succeeded
    assert parsed.describe() == "execution E1: failed: syntax_error: mismatched input 'selecdt'"
    assert parsed.execution_cost_credits == 1.5
    partial = parse_execution_status(
        {"execution_id": "E2", "state": "QUERY_STATE_COMPLETED_PARTIAL", "result_metadata": {"row_count": 3}}
    )
    assert partial.is_terminal and not partial.succeeded
    assert partial.result_metadata is not None and partial.result_metadata.row_count == 3
    with pytest.raises(DuneResponseError, match="execution_id"):
        parse_execution_status({"state": "QUERY_STATE_COMPLETED"})


def test_result_metadata_with_column_lists_that_are_not_lists_is_read_without_them() -> None:
    page = parse_result_page(
        {"execution_id": "E1", "state": "QUERY_STATE_COMPLETED", "result": {"metadata": {"column_names": 5.0}}}
    )
    assert page.metadata is not None and page.metadata.column_names == ()
    status = parse_execution_status(
        {"execution_id": "E1", "state": "QUERY_STATE_COMPLETED", "result_metadata": {"column_types": "abc"}}
    )
    assert status.result_metadata is not None and status.result_metadata.column_types == ()


def test_result_page_pagination_fields() -> None:
    page = parse_result_page(
        {
            "execution_id": "E1",
            "state": "QUERY_STATE_COMPLETED",
            "result": {"rows": [{"a": 1}], "metadata": {"column_names": ["a"], "total_row_count": 10}},
            "next_offset": 1,
            "next_uri": "http://x/api/v1/execution/E1/results?offset=1&limit=1",
        }
    )
    assert page.rows == [{"a": 1}] and page.next_offset == 1
    assert page.metadata is not None and page.metadata.total_row_count == 10


# -- timestamps -------------------------------------------------------------------------------------------------


@pytest.mark.parametrize("text", ["2026-02-30T00:00:00Z", "2026-13-01T00:00:00Z", "2026-01-01T25:00:00Z", "yesterday"])
def test_an_unreadable_timestamp_is_a_clear_error_not_a_raw_valueerror(text: str) -> None:
    from airflow_provider_dune.api.models import parse_timestamp, result_age_seconds

    with pytest.raises(DuneResponseError, match="not a readable time"):
        parse_timestamp(text, "execution_ended_at")
    assert result_age_seconds(text) is None


def test_timestamps_are_read_with_nanoseconds_and_offsets() -> None:
    from datetime import datetime, timezone

    from airflow_provider_dune.api.models import parse_timestamp

    assert parse_timestamp("9999-12-31T23:59:59.999999999Z", "t") == datetime(
        9999, 12, 31, 23, 59, 59, 999999, tzinfo=timezone.utc
    )
    assert parse_timestamp("2026-01-01T01:00:00+01:00", "t") == datetime(2026, 1, 1, tzinfo=timezone.utc)
    assert parse_timestamp(None, "t") is None


def test_query_pipeline_plan_is_read_node_by_node() -> None:
    pipeline = parse_query_pipeline(
        {
            "pipeline": {
                "nodes": [
                    {
                        "id": 1,
                        "dependencies": [],
                        "materialized_view_refresh": {"name": "dune.t.v", "performance": "large"},
                    },
                    {
                        "id": 2,
                        "dependencies": [1],
                        "query_execution": {"query_id": 7, "performance": "large", "query_parameters": {"d": "x"}},
                    },
                ]
            }
        }
    )
    view, query = pipeline.nodes
    assert (view.kind, view.view_name, view.dependencies) == (NodeKind.MATERIALIZED_VIEW_REFRESH, "dune.t.v", ())
    assert (query.kind, query.query_id, query.dependencies) == (NodeKind.QUERY_EXECUTION, 7, (1,))
    assert query.query_parameters == {"d": "x"} and (view.performance, query.performance) == ("large", "large")


@pytest.mark.parametrize("body", [{}, {"pipeline": {}}, {"pipeline": {"nodes": [{"id": 1}]}}, [1]])
def test_malformed_query_pipeline_raises_response_error(body: object) -> None:
    with pytest.raises(DuneResponseError):
        parse_query_pipeline(body)
