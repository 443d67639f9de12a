"""What a run cost, in the task log, the returned summary and the metrics; the per-run credit warning."""

from __future__ import annotations

import logging
from typing import Any

import pytest

from airflow_provider_dune.operators.pipeline import DuneExecutePipelineOperator
from airflow_provider_dune.operators.query import DuneExecuteQueryOperator
from airflow_provider_dune.testing.emulator import DuneEmulator
from airflow_provider_dune.utils import metrics, task_records
from tests.conftest import dune_connection_json
from tests.operators.fakes import FakeTI, FakeVariables
from tests.operators.test_run_report import logged

LINEAGE = 1001  # seed: materialized view dune.demo.result_dex_trades_daily -> query 1001 (param "date")
FAILING = 1099  # seed: "line 3:8: Column 'amount_usdd' cannot be resolved"


@pytest.fixture
def sent(monkeypatch: pytest.MonkeyPatch) -> list[tuple[str, str, float | None]]:
    """The metrics the code sends, as ``(kind, name, value)``."""
    received: list[tuple[str, str, float | None]] = []
    monkeypatch.setattr(metrics, "_emit", lambda kind, name, value, tags: received.append((kind, name, value)))
    return received


@pytest.fixture
def context(dune_emulator: DuneEmulator, dune_conn_id: str, monkeypatch: pytest.MonkeyPatch) -> dict[str, Any]:
    monkeypatch.setattr(task_records, "Variable", FakeVariables())
    return {"ti": FakeTI(dune_emulator), "ds": "2024-06-01", "params": {}}


def test_pipeline_run_reports_its_credits_and_sends_its_metrics(
    dune_emulator: DuneEmulator,
    context: dict[str, Any],
    sent: list[tuple[str, str, float | None]],
    caplog: pytest.LogCaptureFixture,
    capsys: pytest.CaptureFixture[str],
) -> None:
    op = DuneExecutePipelineOperator(
        task_id="nightly", query_id=LINEAGE, query_parameters={"date": "2024-06-01"}, poll_interval=0.05
    )
    with caplog.at_level(logging.INFO):
        result = op.execute(context)

    cost = result["total_credits"]
    assert cost is not None and cost > 0
    assert cost == pytest.approx(sum(node["credits"] for node in result["nodes"]))
    assert f": success, 2/2 nodes done, {cost:,.2f} credits" in logged(caplog, capsys)
    names = [name for _, name, _ in sent]
    assert names.count("dune.runs.started.pipeline") == 1
    assert "dune.runs.finished.pipeline.success" in names
    assert ("incr", "dune.credits.pipeline", round(cost, 4)) in sent
    lags = [value for kind, name, value in sent if name == "dune.detection_lag"]
    assert len(lags) == 1 and lags[0] is not None and lags[0] >= 0
    assert any(name.startswith("dune.requests.execute_query_pipeline.200") for name in names)


def test_failed_run_is_counted_with_its_credits(
    dune_emulator: DuneEmulator, context: dict[str, Any], sent: list[tuple[str, str, float | None]]
) -> None:
    op = DuneExecuteQueryOperator(task_id="failing", query_id=FAILING, poll_interval=0.05, fetch_results=False)
    with pytest.raises(Exception, match="cannot be resolved"):
        op.execute(context)
    names = [name for _, name, _ in sent]
    assert "dune.runs.finished.query.failed" in names
    assert any(name == "dune.credits.query" for name in names)  # Dune bills failed executions too


def test_a_run_above_the_warning_threshold_logs_a_warning(
    dune_emulator: DuneEmulator,
    context: dict[str, Any],
    monkeypatch: pytest.MonkeyPatch,
    caplog: pytest.LogCaptureFixture,
    capsys: pytest.CaptureFixture[str],
) -> None:
    monkeypatch.setenv("AIRFLOW_CONN_DUNE_DEFAULT", dune_connection_json(dune_emulator.url, run_credit_warning=0.001))
    op = DuneExecutePipelineOperator(
        task_id="nightly", query_id=LINEAGE, query_parameters={"date": "2024-06-01"}, poll_interval=0.05
    )
    with caplog.at_level(logging.INFO):
        result = op.execute(context)
    expected = f"cost {result['total_credits']:,.2f} credits, more than the 0.001 credits set as run_credit_warning"
    lines = [line for line in logged(caplog, capsys).splitlines() if expected in line]
    assert lines and all("warn" in line.lower() for line in lines), lines
