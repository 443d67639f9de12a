"""The per-node report of a finished Dune run: what each node ran, its state, times and credits.

A pipeline's status has no times or costs, so the report reads each started node's execution status
(``GET /v1/execution/{id}/status``: ``submitted_at``, ``execution_started_at``, ``execution_ended_at``,
``execution_cost_credits``). Assembly and formatting are pure functions over those statuses (or over the summary
a task returned, for tools that read its XCom), so the task log, the return value and ``make demo`` show the same
table::

    Dune pipeline 01M8Y6SW4BYBV52PR8QBF1EPSS: failed, 1/2 nodes done, 0.05 credits
      node  what        state       queued      ran  execution                   credits
      1     query 2001  completed     0.0s     0.1s  01M8Y6SW4AG4XS902X39XDRES0     0.03
      2     query 1099  failed        0.0s     0.1s  01M8Y6SW4BZ278YQ2SPWPR6446     0.02
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from dataclasses import dataclass, field
from typing import Any

from airflow_provider_dune.api.errors import DuneResponseError
from airflow_provider_dune.api.models import ExecutionStatus, NodeKind, PipelineStatus, parse_timestamp


@dataclass(frozen=True)
class ReportRow:
    """One line of the report: a pipeline node, or the single execution of a query, SQL or view refresh.

    :param node: the node's id in the pipeline (``"-"`` for a single execution).
    :param what: what it ran, e.g. ``query 1001`` or ``refresh dune.team.result_x``.
    :param queued_seconds: from submission to the start of execution, when Dune said both.
    :param run_seconds: from the start to the end of execution, when Dune said both.
    :param credits: ``execution_cost_credits``, when Dune said it.
    :param ended_at: when Dune says the execution ended (its timestamp as sent), for the detection delay.
    """

    node: str
    what: str
    state: str
    execution_id: str | None = None
    queued_seconds: float | None = None
    run_seconds: float | None = None
    credits: float | None = None
    ended_at: str | None = field(default=None, compare=False)

    def times(self) -> dict[str, Any]:
        """The fields the report adds to a node (or an execution) in the task's return value."""
        return {"queued_seconds": self.queued_seconds, "run_seconds": self.run_seconds, "credits": self.credits}


def seconds_between(start: str | None, end: str | None) -> float | None:
    """Seconds from one Dune timestamp to another, rounded to milliseconds; ``None`` if either is missing or
    unreadable."""
    try:
        first, second = parse_timestamp(start, "start"), parse_timestamp(end, "end")
    except DuneResponseError:
        return None
    if first is None or second is None:
        return None
    return round((second - first).total_seconds(), 3)


def execution_row(status: ExecutionStatus, what: str, node: str = "-", state: str | None = None) -> ReportRow:
    """The row of one execution, timed from its own status."""
    return ReportRow(
        node=node,
        what=what,
        state=state or status.state.value,
        execution_id=status.execution_id,
        queued_seconds=seconds_between(status.submitted_at, status.execution_started_at),
        run_seconds=seconds_between(status.execution_started_at, status.execution_ended_at),
        credits=status.execution_cost_credits,
        ended_at=status.execution_ended_at,
    )


def pipeline_rows(status: PipelineStatus, executions: Mapping[str, ExecutionStatus]) -> list[ReportRow]:
    """One row per node; ``executions`` maps the execution ids read to their statuses (a node that never
    started, or whose status could not be read, has no times)."""
    rows = []
    for node in status.nodes:
        node_id = str(node.node_id) if node.node_id is not None else f"#{node.position}"
        what = (
            f"refresh {node.view_name or '?'}"
            if node.kind is NodeKind.MATERIALIZED_VIEW_REFRESH
            else f"query {node.query_id if node.query_id is not None else '?'}"
        )
        execution = executions.get(node.execution_id or "")
        if execution is not None:
            rows.append(execution_row(execution, what, node_id, node.state.value))
        else:
            rows.append(ReportRow(node_id, what, node.state.value, node.execution_id))
    return rows


def total_credits(rows: Sequence[ReportRow]) -> float | None:
    """Credits of the whole run, when known for every execution that started (a node that never started cost
    nothing); ``None`` when any is unknown."""
    started = [row for row in rows if row.execution_id]
    if not started or any(row.credits is None for row in started):
        return None
    return round(sum(row.credits or 0.0 for row in started), 6)


def detection_delay(rows: Sequence[ReportRow], seen_at: float) -> float | None:
    """Seconds from the run's end as Dune reports it (its last execution's end) to ``seen_at`` (seconds since the
    epoch), when Dune said when every started execution ended; ``None`` otherwise."""
    started = [row for row in rows if row.execution_id]
    if not started:
        return None
    ends = []
    for row in started:
        try:
            ended = parse_timestamp(row.ended_at, "execution_ended_at")
        except DuneResponseError:
            return None
        if ended is None:
            return None
        ends.append(ended.timestamp())
    return round(seen_at - max(ends), 3)


def pipeline_summary(status: PipelineStatus, executions: Mapping[str, ExecutionStatus]) -> dict[str, Any]:
    """``status.to_dict()`` with each node's times and credits, and the run's ``total_credits``."""
    rows = pipeline_rows(status, executions)
    summary = status.to_dict()
    summary["nodes"] = [{**node, **row.times()} for node, row in zip(summary["nodes"], rows, strict=True)]
    summary["total_credits"] = total_credits(rows)
    return summary


def execution_summary(status: ExecutionStatus) -> dict[str, Any]:
    """``status.to_dict()`` with the execution's queued and run seconds and its ``total_credits``."""
    row = execution_row(status, "")
    return {
        **status.to_dict(),
        "queued_seconds": row.queued_seconds,
        "run_seconds": row.run_seconds,
        "total_credits": row.credits,
    }


def rows_from_summary(summary: Mapping[str, Any], what: str | None = None) -> list[ReportRow]:
    """The report's rows back from a summary a task returned (its XCom): :func:`pipeline_summary` or
    :func:`execution_summary`.

    :param what: what a single execution ran (default ``query <id>``, or ``execution``).
    """

    def number(value: Any) -> float | None:
        return float(value) if isinstance(value, (int, float)) and not isinstance(value, bool) else None

    nodes = summary.get("nodes")
    if not isinstance(nodes, list):
        query_id = summary.get("query_id")
        return [
            ReportRow(
                "-",
                what or (f"query {query_id}" if query_id is not None else "execution"),
                str(summary.get("state")),
                summary.get("execution_id"),
                number(summary.get("queued_seconds")),
                number(summary.get("run_seconds")),
                number(summary.get("total_credits", summary.get("execution_cost_credits"))),
            )
        ]
    rows = []
    for node in nodes:
        if not isinstance(node, Mapping):
            continue
        node_id = node.get("node_id")
        rows.append(
            ReportRow(
                str(node_id) if node_id is not None else f"#{node.get('position')}",
                f"refresh {node.get('view_name')}"
                if node.get("kind") == NodeKind.MATERIALIZED_VIEW_REFRESH.value
                else f"query {node.get('query_id')}",
                str(node.get("state")),
                node.get("execution_id"),
                number(node.get("queued_seconds")),
                number(node.get("run_seconds")),
                number(node.get("credits")),
            )
        )
    return rows


def _seconds(value: float | None) -> str:
    return "-" if value is None else f"{value:.1f}s"


def _credits(value: float | None) -> str:
    return "-" if value is None else f"{value:g}"


def format_report(title: str, rows: Sequence[ReportRow]) -> str:
    """The report as text: a title line (with the total credits when known), then one line per row; columns are
    as wide as their longest value, so names are never cut."""
    total = total_credits(rows)
    node_width = max([4, *(len(row.node) for row in rows)]) + 2
    what_width = max([4, *(len(row.what) for row in rows)]) + 2
    state_width = max([5, *(len(row.state) for row in rows)]) + 2
    execution_width = max([9, *(len(row.execution_id or "-") for row in rows)]) + 2
    lines = [f"{title}, {_credits(total)} credits" if total is not None else title]
    lines.append(
        f"  {'node':<{node_width}}{'what':<{what_width}}{'state':<{state_width}}{'queued':>7}{'ran':>9}  "
        f"{'execution':<{execution_width}}{'credits':>7}"
    )
    for row in rows:
        lines.append(
            f"  {row.node:<{node_width}}{row.what:<{what_width}}{row.state:<{state_width}}"
            f"{_seconds(row.queued_seconds):>7}{_seconds(row.run_seconds):>9}  "
            f"{row.execution_id or '-':<{execution_width}}{_credits(row.credits):>7}"
        )
    return "\n".join(lines)
