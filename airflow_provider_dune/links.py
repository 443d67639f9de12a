"""Operator extra links to dune.com.

Dune documents one page per saved query (``https://dune.com/queries/<id>``, with its latest executions) and none
for an execution, a pipeline or a materialized view, so the link opens the query a task runs or, for a view, the
query behind it. Airflow 2.11 and 3 show it on the task instance's *Details* tab (2.11 opens that tab first,
3 opens *Logs*, where the run's start line carries the same address): see the operators' how-to.
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from typing import TYPE_CHECKING, Any

from airflow_provider_dune.version_compat import BaseOperatorLink

if TYPE_CHECKING:
    from airflow.sdk.types import TaskInstanceKey

DUNE_WEB_URL = "https://dune.com"


def _query_id_of(operator: Any) -> int | None:
    """The query an operator runs: ``query_id``, or the last query node of an explicit pipeline."""
    query_id = getattr(operator, "query_id", None)
    if isinstance(query_id, int) or (isinstance(query_id, str) and query_id.isdigit()):
        return int(query_id)
    nodes = getattr(operator, "nodes", None)
    if isinstance(nodes, Sequence) and not isinstance(nodes, str):
        for node in reversed(nodes):
            action = node.get("query_execution") if isinstance(node, Mapping) else None
            candidate = action.get("query_id") if isinstance(action, Mapping) else None
            if isinstance(candidate, int) or (isinstance(candidate, str) and candidate.isdigit()):
                return int(candidate)
    return None


class DuneQueryLink(BaseOperatorLink):
    """ "Dune query" button: opens on dune.com the query the task runs (for a view, the query behind it)."""

    name = "Dune query"

    @staticmethod
    def url_for(query_id: int | str) -> str:
        return f"{DUNE_WEB_URL}/queries/{query_id}"

    def get_link(self, operator: Any, *, ti_key: TaskInstanceKey) -> str:
        query_id = _query_id_of(operator)
        return self.url_for(query_id) if query_id is not None else ""
