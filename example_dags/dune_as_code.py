"""Dune as code: the SQL lives in this repository; the DAG syncs it to a saved Dune query, runs the query's
pipeline, then exports the result without running it again.

1. ``sync_query``: ``DuneSyncQueryOperator`` reads ``sql/dex_volume_7d.sql`` (a templated ``.sql`` file) and
   creates the saved query on the first run, updates it when the file changed, and sends nothing otherwise. Its
   id is remembered in an Airflow Variable and returned through XCom.
2. ``run_pipeline``: the query's pipeline (its materialized-view lineage, then the query), deferrable.
3. ``export``: ``DuneExecuteQueryOperator(reuse_latest_result_max_age=...)`` finds the result the pipeline just
   produced and streams it to a CSV file instead of paying for another run.

Settings (read when the file is parsed)::

    DUNE_CONN_ID            connection of type ``dune`` (default: dune_default)
    DUNE_POLL_INTERVAL      seconds between status reads (default: 30)
    DUNE_EXPORT_DIR         where the CSV goes (default: $AIRFLOW_HOME/dune_exports; an s3:// URL works too)
"""

from __future__ import annotations

import os
from datetime import datetime, timedelta

try:  # Airflow 3
    from airflow.sdk import DAG
except ImportError:  # Airflow 2.11
    from airflow import DAG  # type: ignore[attr-defined,no-redef]
from airflow_provider_dune.operators.definitions import DuneSyncQueryOperator
from airflow_provider_dune.operators.pipeline import DuneExecutePipelineOperator
from airflow_provider_dune.operators.query import DuneExecuteQueryOperator
from airflow_provider_dune.schedules import RUN_DATE

CONN_ID = os.environ.get("DUNE_CONN_ID") or "dune_default"
POLL_INTERVAL = float(os.environ.get("DUNE_POLL_INTERVAL") or 30)
EXPORT_DIR = os.environ.get("DUNE_EXPORT_DIR") or os.path.join(os.environ.get("AIRFLOW_HOME", "."), "dune_exports")
SYNCED_QUERY_ID = "{{ ti.xcom_pull(task_ids='sync_query') }}"

with DAG(
    dag_id="dune_as_code",
    description="Sync a query from git, run its pipeline, export the result",
    schedule=None,
    start_date=datetime(2024, 6, 1),
    catchup=False,
    max_active_runs=1,
    tags=["dune", "example"],
    doc_md=__doc__,
):
    # [START howto_operator_dune_sync_query]
    sync = DuneSyncQueryOperator(
        task_id="sync_query",
        dune_conn_id=CONN_ID,
        name="DEX volume, last 7 days (from git)",
        sql="sql/dex_volume_7d.sql",
        tags=["airflow"],
    )
    # [END howto_operator_dune_sync_query]
    run = DuneExecutePipelineOperator(
        task_id="run_pipeline",
        dune_conn_id=CONN_ID,
        query_id=SYNCED_QUERY_ID,
        deferrable=True,
        poll_interval=POLL_INTERVAL,
        timeout=timedelta(hours=1),
    )
    # [START howto_operator_dune_query_reuse_latest_result]
    export = DuneExecuteQueryOperator(
        task_id="export",
        dune_conn_id=CONN_ID,
        query_id=SYNCED_QUERY_ID,
        reuse_latest_result_max_age=timedelta(hours=1),
        output_path=f"{EXPORT_DIR}/dex_volume_7d_{RUN_DATE}.csv",
        deferrable=True,
        poll_interval=POLL_INTERVAL,
    )
    # [END howto_operator_dune_query_reuse_latest_result]
    sync >> run >> export
