"""The "Dune query" extra link of each operator: the dune.com page Dune documents, or no link."""

from __future__ import annotations

from typing import Any

import pytest

from airflow_provider_dune.links import DuneQueryLink
from airflow_provider_dune.operators.definitions import DuneSyncQueryOperator, DuneUpsertMaterializedViewOperator
from airflow_provider_dune.operators.pipeline import DuneExecutePipelineOperator
from airflow_provider_dune.operators.query import DuneExecuteQueryOperator, DuneRefreshMaterializedViewOperator
from airflow_provider_dune.operators.sql import DuneExecuteSQLOperator

VIEW = "dune.demo.result_dex_trades_daily"
TI_KEY: Any = object()  # the link depends on the operator alone


def _link(operator: Any) -> str:
    (link,) = [link for link in operator.operator_extra_links if isinstance(link, DuneQueryLink)]
    assert link.name == "Dune query"
    return str(link.get_link(operator, ti_key=TI_KEY))


@pytest.mark.parametrize(
    ("operator", "url"),
    [
        (DuneExecutePipelineOperator(task_id="p", query_id=1001), "https://dune.com/queries/1001"),
        (
            DuneExecutePipelineOperator(
                task_id="nodes",
                nodes=[
                    {"id": 1, "query_execution": {"query_id": 1000}},
                    {"id": 2, "dependencies": [1], "materialized_view_refresh": {"name": VIEW}},
                    {"id": 3, "dependencies": [2], "query_execution": {"query_id": 1001}},
                ],
            ),
            "https://dune.com/queries/1001",  # the last query of the graph
        ),
        (
            DuneExecutePipelineOperator(
                task_id="views_only", nodes=[{"id": 1, "materialized_view_refresh": {"name": VIEW}}]
            ),
            "",
        ),
        (DuneExecuteQueryOperator(task_id="q", query_id=1003), "https://dune.com/queries/1003"),
        (DuneSyncQueryOperator(task_id="s", sql="select 1", name="n", query_id=7), "https://dune.com/queries/7"),
        (DuneSyncQueryOperator(task_id="remembered", sql="select 1", name="n", query_key="k"), ""),
        # Dune documents no page of a materialized view: the link opens the query behind it.
        (DuneUpsertMaterializedViewOperator(task_id="v", name=VIEW, query_id=1002), "https://dune.com/queries/1002"),
    ],
    ids=lambda value: getattr(value, "task_id", None) or str(value),
)
def test_each_operator_links_the_query_it_runs(operator: Any, url: str) -> None:
    assert _link(operator) == url


def test_a_templated_query_id_is_linked_once_rendered() -> None:
    """Airflow 3 computes the link when the task ends, on the rendered operator."""
    operator = DuneExecuteQueryOperator(task_id="q", query_id="{{ params.query_id }}")
    assert _link(operator) == ""
    operator.query_id = "1234"
    assert _link(operator) == "https://dune.com/queries/1234"


@pytest.mark.parametrize(
    "operator",
    [
        DuneRefreshMaterializedViewOperator(task_id="refresh", view_name=VIEW),
        DuneExecuteSQLOperator(task_id="sql", sql="select 1"),
    ],
    ids=["view-refresh", "raw-sql"],
)
def test_no_link_where_the_task_names_no_saved_query(operator: Any) -> None:
    """A refresh names only the view (its query is unknown until Dune is asked); raw SQL has no saved query."""
    assert not [link for link in operator.operator_extra_links if isinstance(link, DuneQueryLink)]
