"""Refresh several independent Dune queries in parallel, one mapped task per query.

Dynamic task mapping (``.partial(...).expand(query_id=[...])``) creates one
``DuneExecutePipelineOperator`` task instance per query id at run time: each runs that query's query
pipeline (its materialized-view lineage first), waits in the triggerer (``deferrable=True``), retries and
shows up on its own in the grid, and one failing query does not stop the others. ``max_active_tis_per_dag``
caps how many pipelines run at once, which keeps you within Dune's concurrency and credit budget.

The query ids come from ``DUNE_REFRESH_QUERY_IDS`` (comma-separated; default ``1001,1003,1005`` from the
emulator's demo catalog). Queries that take parameters get the run's date under the names they declare;
the ``query_parameters`` mapping is expanded together with the ids. Other overrides: ``DUNE_CONN_ID``,
``DUNE_POLL_INTERVAL``.
"""

from __future__ import annotations

import os
from datetime import timedelta

try:  # Airflow 3
    from airflow.sdk import DAG
except ImportError:  # Airflow 2.11
    from airflow import DAG  # type: ignore[attr-defined,no-redef]
from airflow_provider_dune.operators.pipeline import DuneExecutePipelineOperator
from airflow_provider_dune.schedules import RUN_DATE, cron_schedule

QUERY_IDS = [int(part) for part in (os.environ.get("DUNE_REFRESH_QUERY_IDS") or "1001,1003,1005").split(",") if part]
CONN_ID = os.environ.get("DUNE_CONN_ID") or "dune_default"
POLL_INTERVAL = float(os.environ.get("DUNE_POLL_INTERVAL") or 30)

#: Parameters of the demo catalog's queries; a query not listed here runs with its saved defaults.
QUERY_PARAMETERS: dict[int, dict[str, str]] = {
    1001: {"date": RUN_DATE},
    1003: {"symbol": "WETH"},
    1005: {"week_start": RUN_DATE},
}

with DAG(
    dag_id="dune_refresh_many",
    description="Refresh several independent Dune queries in parallel with dynamic task mapping",
    **cron_schedule("0 4 * * *"),  # unpausing starts no run for a past time
    catchup=False,
    max_active_runs=1,
    default_args={"owner": "data-platform", "retries": 1, "retry_delay": timedelta(minutes=5)},
    tags=["dune", "example"],
    doc_md=__doc__,
) as dag:
    # [START howto_operator_dune_execute_pipeline_mapped]
    DuneExecutePipelineOperator.partial(
        task_id="refresh_query",
        dune_conn_id=CONN_ID,
        deferrable=True,
        poll_interval=POLL_INTERVAL,
        timeout=timedelta(hours=2),
        max_active_tis_per_dag=4,
    ).expand_kwargs(
        [{"query_id": query_id, "query_parameters": QUERY_PARAMETERS.get(query_id)} for query_id in QUERY_IDS]
    )
    # [END howto_operator_dune_execute_pipeline_mapped]
