"""Nightly refresh of one Dune query together with the materialized views it reads.

``DuneExecutePipelineOperator(query_id=...)`` asks Dune for the query's *query pipeline*: Dune walks the
query's materialized-view lineage, refreshes the upstream views first and then runs the query, all as one
pipeline execution. Here that is query 1001 ``daily_dex_volume`` of the emulator's demo catalog, which reads
``dune.demo.result_dex_trades_daily``; the ``date`` parameter is the run's date: its logical date for a
scheduled or backfilled run, the day it was triggered for a manual run without one.

The task is deferrable: after Dune accepted the pipeline, the wait happens in the triggerer, so no worker
slot is held while Dune works. The pipeline execution id is pushed to XCom (``pipeline_execution_id``) and
the task returns a summary with each node's final state and execution id.

Point it at your own query with environment variables (read when the DAG file is parsed)::

    DUNE_NIGHTLY_QUERY_ID=1234567   # your query (it needs a ``date`` parameter, or edit query_parameters)
    DUNE_CONN_ID=dune_default       # connection of type ``dune``, Password = API key
    DUNE_POLL_INTERVAL=30           # seconds between status calls (``make demo`` uses 1)
    DUNE_RETRIES=1                  # task retries (``make demo`` uses 0 to fail fast)
    DUNE_RETRY_DELAY=300            # seconds between them

The task emits an asset event for the query's result (``dune://queries/<id>``, extra: execution ids) and one
per view the pipeline refreshed through the ``dune_nightly_refreshed_views`` alias; ``dune_after_nightly_refresh``
(in ``dune_assets.py``) is scheduled on the first.

A retry does not start a second billed pipeline while the first one still runs: the operator re-attaches
to it (``reuse_existing_execution``). Unpausing the DAG (also the trigger dialog's "Unpause on trigger") does
not run last night's refresh on top of the manual run on Airflow 3 (see ``airflow_provider_dune.schedules``); on
Airflow 2.11 it does, so try the DAG once with ``airflow dags test dune_nightly_refresh`` there.
"""

from __future__ import annotations

import os
from datetime import timedelta
from typing import Any

try:  # Airflow 3
    from airflow.sdk import DAG
except ImportError:  # Airflow 2.11
    from airflow import DAG  # type: ignore[attr-defined,no-redef]
from airflow_provider_dune.assets import dune_query_asset
from airflow_provider_dune.operators.pipeline import DuneExecutePipelineOperator
from airflow_provider_dune.schedules import RUN_DATE, cron_schedule

try:
    from airflow.sdk import AssetAlias

    REFRESHED_VIEWS: list[Any] = [AssetAlias("dune_nightly_refreshed_views")]
except ImportError:  # Airflow 2.11: its DatasetAlias events fail in `airflow dags test` (docs/guides/limitations.rst)
    REFRESHED_VIEWS = []

QUERY_ID = int(os.environ.get("DUNE_NIGHTLY_QUERY_ID") or 1001)
CONN_ID = os.environ.get("DUNE_CONN_ID") or "dune_default"
POLL_INTERVAL = float(os.environ.get("DUNE_POLL_INTERVAL") or 30)
RETRIES = int(os.environ.get("DUNE_RETRIES") or 1)
RETRY_DELAY = timedelta(seconds=float(os.environ.get("DUNE_RETRY_DELAY") or 300))

with DAG(
    dag_id="dune_nightly_refresh",
    description="Refresh a Dune query and its materialized-view lineage every night",
    **cron_schedule("0 3 * * *"),  # unpausing starts no run for a past time
    catchup=False,
    max_active_runs=1,
    default_args={"owner": "data-platform", "retries": RETRIES, "retry_delay": RETRY_DELAY},
    tags=["dune", "example"],
    doc_md=__doc__,
) as dag:
    # [START howto_operator_dune_execute_pipeline]
    DuneExecutePipelineOperator(
        task_id="refresh_daily_dex_volume",
        dune_conn_id=CONN_ID,
        query_id=QUERY_ID,
        query_parameters={"date": RUN_DATE},
        performance="medium",
        deferrable=True,
        poll_interval=POLL_INTERVAL,
        timeout=timedelta(hours=2),
        # A fresh query result for DAGs scheduled on it (see dune_assets.py), and every view the pipeline
        # refreshed, found at run time, through the alias.
        outlets=[dune_query_asset(QUERY_ID), *REFRESHED_VIEWS],
    )
    # [END howto_operator_dune_execute_pipeline]
