"""Everything besides pipelines: a view refresh, saved queries with their rows, raw SQL, a sensor on a run
started elsewhere, a view defined as code and a file loaded into a Dune table.

1. ``refresh_prices``: ``DuneRefreshMaterializedViewOperator`` refreshes one materialized view (deferrable).
2. ``token_price``: ``DuneExecuteQueryOperator`` runs a saved query with a parameter and returns its rows.
3. ``start_volume`` / ``wait_volume``: a query started without waiting, then ``DuneExecutionSensor`` waits for
   that execution in the triggerer.
4. ``trades_count``: ``DuneExecuteSQLOperator`` runs SQL that is not a saved query; ``pools_of_the_day``: the same
   with ``@task.dune_sql``, the function returning the SQL.
5. ``define_volume_view``: ``DuneUpsertMaterializedViewOperator`` keeps a view's definition in the DAG (nothing is
   sent, so nothing is billed, when the definition did not change).
6. ``load_token_labels``: ``DuneUploadOperator`` loads ``data/token_labels.csv`` into a Dune table.

Settings (read when the file is parsed)::

    DUNE_CONN_ID            connection of type ``dune`` (default: dune_default)
    DUNE_POLL_INTERVAL      seconds between status reads (default: 30)
    DUNE_RETRIES            task retries, 30 s apart (default: 1); a retry re-attaches to the run its previous
                            try started, so it pays for no second run
    DUNE_REFRESHED_VIEW     view refreshed (default: dune.demo.result_token_prices_hourly)
    DUNE_PRICE_QUERY_ID     saved query with a ``symbol`` parameter (default: 1003)
    DUNE_VOLUME_QUERY_ID    saved query with a ``date`` parameter, watched by the sensor (default: 1001)
    DUNE_VIEW_QUERY_ID      query of the view defined as code (default: 1002)
    DUNE_VIEW_AS_CODE       name of that view (default: dune.demo.result_token_prices_daily)
    DUNE_UPLOAD_NAMESPACE   your Dune namespace (team or user name) for the uploaded table (default: demo)
"""

from __future__ import annotations

import os
from datetime import date, datetime, timedelta
from pathlib import Path

try:  # Airflow 3
    from airflow.sdk import DAG, task
except ImportError:  # Airflow 2.11
    from airflow import DAG  # type: ignore[attr-defined,no-redef]
    from airflow.decorators import task  # type: ignore[attr-defined,no-redef]
from airflow_provider_dune.operators.definitions import DuneUpsertMaterializedViewOperator
from airflow_provider_dune.operators.query import DuneExecuteQueryOperator, DuneRefreshMaterializedViewOperator
from airflow_provider_dune.operators.sql import DuneExecuteSQLOperator
from airflow_provider_dune.operators.uploads import DuneUploadOperator
from airflow_provider_dune.schedules import RUN_DATE
from airflow_provider_dune.sensors.execution import DuneExecutionSensor

CONN_ID = os.environ.get("DUNE_CONN_ID") or "dune_default"
POLL_INTERVAL = float(os.environ.get("DUNE_POLL_INTERVAL") or 30)
REFRESHED_VIEW = os.environ.get("DUNE_REFRESHED_VIEW") or "dune.demo.result_token_prices_hourly"
PRICE_QUERY_ID = int(os.environ.get("DUNE_PRICE_QUERY_ID") or 1003)
VOLUME_QUERY_ID = int(os.environ.get("DUNE_VOLUME_QUERY_ID") or 1001)
VIEW_QUERY_ID = int(os.environ.get("DUNE_VIEW_QUERY_ID") or 1002)
VIEW_AS_CODE = os.environ.get("DUNE_VIEW_AS_CODE") or "dune.demo.result_token_prices_daily"
UPLOAD_NAMESPACE = os.environ.get("DUNE_UPLOAD_NAMESPACE") or "demo"
RETRIES = int(os.environ.get("DUNE_RETRIES") or 1)
TOKEN_LABELS = str(Path(__file__).resolve().parent / "data" / "token_labels.csv")

with DAG(
    dag_id="dune_queries_views_and_data",
    description="View refresh, saved queries and raw SQL with results, a sensor, a view as code, an upload",
    schedule=None,
    start_date=datetime(2024, 6, 1),
    catchup=False,
    max_active_runs=1,
    tags=["dune", "example"],
    doc_md=__doc__,
    default_args={"dune_conn_id": CONN_ID, "retries": RETRIES, "retry_delay": timedelta(seconds=30)},
):
    # [START howto_operator_dune_refresh_materialized_view]
    refresh = DuneRefreshMaterializedViewOperator(
        task_id="refresh_prices",
        view_name=REFRESHED_VIEW,
        deferrable=True,
        poll_interval=POLL_INTERVAL,
    )
    # [END howto_operator_dune_refresh_materialized_view]

    # [START howto_operator_dune_execute_query]
    price = DuneExecuteQueryOperator(
        task_id="token_price",
        query_id=PRICE_QUERY_ID,
        query_parameters={"symbol": "WETH"},
        fetch_results=True,  # the rows in the return value (up to max_xcom_rows)
        deferrable=True,
        poll_interval=POLL_INTERVAL,
    )
    # [END howto_operator_dune_execute_query]
    refresh >> price

    # [START howto_sensor_dune_execution]
    start_volume = DuneExecuteQueryOperator(
        task_id="start_volume",
        query_id=VOLUME_QUERY_ID,
        query_parameters={"date": RUN_DATE},
        wait_for_completion=False,  # ends once Dune accepted the run; its id is in XCom
        retries=0,  # a retry would start a second billed run; the sensor is the part that may retry
    )
    wait_volume = DuneExecutionSensor(
        task_id="wait_volume",
        execution_id="{{ ti.xcom_pull(task_ids='start_volume', key='execution_id') }}",
        deferrable=True,
        poke_interval=POLL_INTERVAL,
    )
    start_volume >> wait_volume
    # [END howto_sensor_dune_execution]

    # [START howto_operator_dune_execute_sql]
    DuneExecuteSQLOperator(
        task_id="trades_count",
        # Templated; the run's date as RUN_DATE renders it, since a manual run may have no logical date.
        sql="SELECT COUNT(*) AS trades FROM dex.trades "
        "WHERE block_date = DATE '{{ (dag_run.logical_date or dag_run.run_after) | ds }}'",
        fetch_results=True,
        deferrable=True,
        poll_interval=POLL_INTERVAL,
    )
    # [END howto_operator_dune_execute_sql]

    # [START howto_decorator_dune_sql]
    @task.dune_sql(fetch_results=True, deferrable=True, poll_interval=POLL_INTERVAL)
    def pools_of_the_day(day: str) -> str:
        day = date.fromisoformat(day).isoformat()  # only a date goes into the SQL
        return f"SELECT project, SUM(amount_usd) AS volume FROM dex.trades WHERE block_date = DATE '{day}' GROUP BY 1"  # noqa: S608

    pools_of_the_day(RUN_DATE)
    # [END howto_decorator_dune_sql]

    # [START howto_operator_dune_upsert_materialized_view]
    DuneUpsertMaterializedViewOperator(
        task_id="define_volume_view",
        name=VIEW_AS_CODE,
        query_id=VIEW_QUERY_ID,
        cron_expression="0 4 * * *",  # Dune refreshes it daily on its own
    )
    # [END howto_operator_dune_upsert_materialized_view]

    # [START howto_operator_dune_upload]
    DuneUploadOperator(
        task_id="load_token_labels",
        namespace=UPLOAD_NAMESPACE,
        table_name="token_labels",
        schema=[
            {"name": "symbol", "type": "varchar"},
            {"name": "label", "type": "varchar"},
            {"name": "decimals", "type": "integer"},
        ],
        source=TOKEN_LABELS,  # a local or object-storage CSV/NDJSON file, or sql=... with sql_conn_id=...
    )
    # [END howto_operator_dune_upload]
