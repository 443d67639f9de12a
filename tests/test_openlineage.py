"""OpenLineage facets of the operators, with apache-airflow-providers-openlineage installed."""

from __future__ import annotations

import json
import re
import sys
from typing import Any

import pytest

from airflow_provider_dune.operators.pipeline import DuneExecutePipelineOperator
from airflow_provider_dune.operators.query import DuneExecuteQueryOperator, DuneRefreshMaterializedViewOperator
from airflow_provider_dune.testing.emulator import DuneEmulator
from airflow_provider_dune.utils import task_records
from tests.operators.fakes import FakeTI, FakeVariables

pytest.importorskip("airflow.providers.openlineage", reason="needs apache-airflow-providers-openlineage")

from openlineage.client.serde import Serde


@pytest.fixture
def context(dune_emulator: DuneEmulator, dune_conn_id: str, monkeypatch: pytest.MonkeyPatch) -> dict[str, Any]:
    monkeypatch.setattr(task_records, "Variable", FakeVariables())
    return {"ti": FakeTI(dune_emulator)}


def _plain(facet: Any) -> dict[str, Any]:
    data: dict[str, Any] = json.loads(Serde.to_json(facet))
    return data


def test_query_pipeline_lineage(context: dict[str, Any]) -> None:
    task = DuneExecutePipelineOperator(
        task_id="p", query_id=1001, query_parameters={"date": "2024-06-01"}, poll_interval=0.05, deferrable=False
    )
    result = task.execute(context)
    lineage = task.get_openlineage_facets_on_complete(None)
    assert [(d.namespace, d.name) for d in lineage.outputs] == [
        ("dune", "views/dune.demo.result_dex_trades_daily"),
        ("dune", "queries/1001"),
    ]
    assert lineage.inputs == []
    run = _plain(lineage.run_facets["dune"])
    assert run["run_id_field"] == "pipeline_execution_id" and run["run_id"] == result["pipeline_execution_id"]
    assert run["execution_ids"] == [node["execution_id"] for node in result["nodes"]]
    assert run["credits"] == result["total_credits"] and run["credits"] > 0
    assert _plain(lineage.run_facets["externalQuery"])["externalQueryId"] == result["pipeline_execution_id"]
    job = _plain(lineage.job_facets["dune"])
    assert (job["operation"], job["query_id"]) == ("query_pipeline", 1001)
    assert job["_producer"] and job["_schemaURL"]


def test_query_and_view_lineage(context: dict[str, Any]) -> None:
    query = DuneExecuteQueryOperator(
        task_id="q", query_id=1003, query_parameters={"symbol": "ETH"}, poll_interval=0.05, deferrable=False
    )
    query.execute(context)
    (output,) = query.get_openlineage_facets_on_complete(None).outputs
    assert output.name == "queries/1003" and output.facets["outputStatistics"].rowCount == 3
    view = DuneRefreshMaterializedViewOperator(
        task_id="v", view_name="dune.demo.result_dex_trades_daily", poll_interval=0.05, deferrable=False
    )
    view.execute(context)
    lineage = view.get_openlineage_facets_on_complete(None)
    assert [o.name for o in lineage.outputs] == ["views/dune.demo.result_dex_trades_daily"]
    assert _plain(lineage.job_facets["dune"])["view_name"] == "dune.demo.result_dex_trades_daily"


def test_failure_lineage_carries_the_error_and_no_outputs(context: dict[str, Any]) -> None:
    task = DuneExecutePipelineOperator(task_id="p", query_id=1007, poll_interval=0.05, deferrable=False)
    with pytest.raises(Exception, match="failed"):
        task.execute(context)
    lineage = task.get_openlineage_facets_on_failure(None)
    assert lineage.outputs == []
    assert "Column 'balance_raw' cannot be resolved" in lineage.run_facets["errorMessage"].message
    assert "balance_raw" in _plain(lineage.run_facets["dune"])["error"]


@pytest.mark.parametrize("missing", ["airflow.providers.openlineage.extractors", "openlineage.client.facet_v2"])
def test_facets_without_the_extra_name_it(monkeypatch: pytest.MonkeyPatch, missing: str) -> None:
    """Without the ``openlineage`` extra (simulated: the module cannot be imported), the error says what to install."""
    from airflow_provider_dune.api.errors import DuneError
    from airflow_provider_dune.utils import openlineage

    monkeypatch.setitem(sys.modules, missing, None)
    monkeypatch.setattr(openlineage, "_FACETS", None)
    task = DuneExecutePipelineOperator(task_id="p", query_id=1001)
    with pytest.raises(DuneError, match=re.escape("pip install 'airflow-provider-dune[openlineage]'")):
        task.get_openlineage_facets_on_complete(None)
