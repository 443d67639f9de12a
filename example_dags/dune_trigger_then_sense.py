"""Start a Dune pipeline in one task and wait for it in another (fire-and-forget plus a deferrable sensor).

``DuneExecutePipelineOperator(wait_for_completion=False)`` ends as soon as Dune accepted the pipeline and
pushes the pipeline execution id to XCom (``pipeline_execution_id``). ``DunePipelineSensor`` then waits for
that run in the triggerer (``deferrable=True``) and fails, naming each failed node with Dune's error, if the
pipeline did not succeed. The sensor never cancels the pipeline.

Split the two when something should happen in between (notify, start other work), when the wait needs its
own timeout / retries, or when the run is started elsewhere and you only want to watch it.

With the emulator's demo catalog the query is 1005 ``weekly_dex_summary``, whose lineage is a diamond
(two views feeding a third), so the pipeline has four nodes. Environment overrides:
``DUNE_TRIGGER_THEN_SENSE_QUERY_ID``, ``DUNE_CONN_ID``, ``DUNE_POLL_INTERVAL``.
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
from airflow_provider_dune.sensors.pipeline import DunePipelineSensor

QUERY_ID = int(os.environ.get("DUNE_TRIGGER_THEN_SENSE_QUERY_ID") or 1005)
CONN_ID = os.environ.get("DUNE_CONN_ID") or "dune_default"
POLL_INTERVAL = float(os.environ.get("DUNE_POLL_INTERVAL") or 30)

with DAG(
    dag_id="dune_trigger_then_sense",
    description="Start a Dune query pipeline, then wait for it with a deferrable sensor",
    **cron_schedule("0 6 * * 1"),  # unpausing starts no run for a past time
    catchup=False,
    max_active_runs=1,
    default_args={"owner": "data-platform"},
    tags=["dune", "example"],
    doc_md=__doc__,
) as dag:
    # [START howto_operator_dune_pipeline_no_wait]
    start = DuneExecutePipelineOperator(
        task_id="start_pipeline",
        dune_conn_id=CONN_ID,
        query_id=QUERY_ID,
        query_parameters={"week_start": RUN_DATE},
        wait_for_completion=False,
        # A retry would start a second billed pipeline; the sensor is the part that may retry.
        retries=0,
    )
    # [END howto_operator_dune_pipeline_no_wait]
    # [START howto_sensor_dune_pipeline]
    wait = DunePipelineSensor(
        task_id="wait_for_pipeline",
        dune_conn_id=CONN_ID,
        pipeline_execution_id="{{ ti.xcom_pull(task_ids='start_pipeline', key='pipeline_execution_id') }}",
        deferrable=True,
        poke_interval=POLL_INTERVAL,
        timeout=timedelta(hours=3).total_seconds(),
        retries=2,
        retry_delay=timedelta(minutes=1),
    )
    # [END howto_sensor_dune_pipeline]
    start >> wait
