"""An explicit Dune pipeline: query -> materialized view refresh -> query, as one pipeline execution.

Use ``nodes`` instead of ``query_id`` when you want to state the graph yourself rather than let Dune derive
it from a query's lineage: e.g. to refresh a view that several reports share and then run only one of them,
or to chain steps that have no lineage link. Each node has an ``id``, optional ``dependencies`` (ids of
nodes that must complete first) and exactly one action (``query_execution`` or
``materialized_view_refresh``); the operator validates the graph locally before calling Dune. Dune starts a
node once its dependencies completed and cancels the nodes downstream of a failure.

With the emulator's demo catalog:

1. run query 1000 ``dex_trades_daily`` (the query behind the view),
2. refresh ``dune.demo.result_dex_trades_daily``,
3. run query 1001 ``daily_dex_volume`` for the run's date.

Environment overrides: ``DUNE_PIPELINE_SOURCE_QUERY_ID``, ``DUNE_PIPELINE_VIEW_NAME``,
``DUNE_PIPELINE_REPORT_QUERY_ID``, ``DUNE_CONN_ID``, ``DUNE_POLL_INTERVAL``.
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

SOURCE_QUERY_ID = int(os.environ.get("DUNE_PIPELINE_SOURCE_QUERY_ID") or 1000)
VIEW_NAME = os.environ.get("DUNE_PIPELINE_VIEW_NAME") or "dune.demo.result_dex_trades_daily"
REPORT_QUERY_ID = int(os.environ.get("DUNE_PIPELINE_REPORT_QUERY_ID") or 1001)
CONN_ID = os.environ.get("DUNE_CONN_ID") or "dune_default"
POLL_INTERVAL = float(os.environ.get("DUNE_POLL_INTERVAL") or 30)

# [START howto_operator_dune_pipeline_nodes]
NODES = [
    {"id": 1, "query_execution": {"query_id": SOURCE_QUERY_ID, "performance": "medium"}},
    {"id": 2, "dependencies": [1], "materialized_view_refresh": {"name": VIEW_NAME, "performance": "medium"}},
    {
        "id": 3,
        "dependencies": [2],
        "query_execution": {
            "query_id": REPORT_QUERY_ID,
            "performance": "medium",
            "query_parameters": {"date": RUN_DATE},
        },
    },
]
# [END howto_operator_dune_pipeline_nodes]

with DAG(
    dag_id="dune_explicit_pipeline",
    description="Run an explicit Dune pipeline: query, then materialized view refresh, then query",
    **cron_schedule("30 3 * * *"),  # unpausing starts no run for a past time
    catchup=False,
    max_active_runs=1,
    default_args={"owner": "data-platform", "retries": 1, "retry_delay": timedelta(minutes=5)},
    tags=["dune", "example"],
    doc_md=__doc__,
) as dag:
    # [START howto_operator_dune_execute_explicit_pipeline]
    DuneExecutePipelineOperator(
        task_id="run_explicit_pipeline",
        dune_conn_id=CONN_ID,
        nodes=NODES,
        deferrable=True,
        poll_interval=POLL_INTERVAL,
        timeout=timedelta(hours=2),
    )
    # [END howto_operator_dune_execute_explicit_pipeline]
