"""The per-node report's pure assembly and formatting (the operators' and the demo's table)."""

from __future__ import annotations

import json
from typing import Any

from airflow_provider_dune.api.models import parse_execution_status, parse_pipeline_status
from airflow_provider_dune.api.run_report import (
    execution_summary,
    format_report,
    pipeline_rows,
    pipeline_summary,
    rows_from_summary,
    seconds_between,
    total_credits,
)


def execution(execution_id: str, credits: float | None, *, ended: str | None = "2024-06-01T00:00:12.5Z") -> Any:
    body: dict[str, Any] = {
        "execution_id": execution_id,
        "state": "QUERY_STATE_COMPLETED",
        "submitted_at": "2024-06-01T00:00:00Z",
        "execution_started_at": "2024-06-01T00:00:00.500000001Z",
        "execution_ended_at": ended,
    }
    if credits is not None:
        body["execution_cost_credits"] = credits
    return parse_execution_status(body)


PIPELINE = parse_pipeline_status(
    {
        "status": "failed",
        "node_executions": [
            {
                "id": 1,
                "materialized_view_refresh_status": {"status": "completed", "name": "dune.t.v", "execution_id": "E1"},
            },
            {
                "id": 2,
                "query_execution_status": {"status": "failed", "query_id": 7, "execution_id": "E2", "error": "x"},
            },
            {"id": 3, "query_execution_status": {"status": "cancelled", "query_id": 8}},
        ],
    },
    "P1",
)


def test_seconds_between_dune_timestamps() -> None:
    assert seconds_between("2024-06-01T00:00:00Z", "2024-06-01T00:00:00.500000001Z") == 0.5
    assert seconds_between(None, "2024-06-01T00:00:00Z") is None
    assert seconds_between("not a time", "2024-06-01T00:00:00Z") is None


def test_pipeline_rows_and_summary_carry_times_and_credits() -> None:
    executions = {"E1": execution("E1", 1.5), "E2": execution("E2", 0.25)}
    rows = pipeline_rows(PIPELINE, executions)
    assert [(r.node, r.what, r.state, r.execution_id) for r in rows] == [
        ("1", "refresh dune.t.v", "completed", "E1"),
        ("2", "query 7", "failed", "E2"),
        ("3", "query 8", "cancelled", None),
    ]
    assert (rows[0].queued_seconds, rows[0].run_seconds, rows[0].credits) == (0.5, 12.0, 1.5)
    assert rows[2].queued_seconds is None and rows[2].credits is None
    summary = pipeline_summary(PIPELINE, executions)
    assert json.loads(json.dumps(summary)) == summary
    assert summary["total_credits"] == 1.75  # the node that never started cost nothing
    assert [n["credits"] for n in summary["nodes"]] == [1.5, 0.25, None]
    assert rows_from_summary(summary) == rows  # what the demo reads back from the XCom


def test_total_credits_only_when_every_started_execution_s_is_known() -> None:
    rows = pipeline_rows(PIPELINE, {"E1": execution("E1", 1.5), "E2": execution("E2", None)})
    assert total_credits(rows) is None
    assert "credits" not in format_report("Dune pipeline P1: failed", rows).splitlines()[0]


def test_format_report_never_cuts_a_name_and_shows_unknowns_as_dashes() -> None:
    rows = pipeline_rows(PIPELINE, {"E1": execution("E1", 1.5, ended=None)})
    lines = format_report("Dune pipeline P1: failed, 1/3 nodes done", rows).splitlines()
    assert lines[0] == "Dune pipeline P1: failed, 1/3 nodes done"
    assert lines[1].split() == ["node", "what", "state", "queued", "ran", "execution", "credits"]
    assert lines[2].split() == ["1", "refresh", "dune.t.v", "completed", "0.5s", "-", "E1", "1.5"]
    assert lines[3].split() == ["2", "query", "7", "failed", "-", "-", "E2", "-"]
    assert lines[4].split() == ["3", "query", "8", "cancelled", "-", "-", "-", "-"]


def test_a_single_execution_is_one_row() -> None:
    summary = execution_summary(execution("E9", 0.5))
    assert (summary["queued_seconds"], summary["run_seconds"], summary["total_credits"]) == (0.5, 12.0, 0.5)
    (row,) = rows_from_summary(summary, "raw SQL")
    assert (row.node, row.what, row.execution_id, row.credits) == ("-", "raw SQL", "E9", 0.5)
