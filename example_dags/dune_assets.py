"""Data-aware scheduling on Dune refreshes: a DAG runs when a Dune query or materialized view is fresh.

Two ways, one DAG each:

``dune_after_nightly_refresh``
    Scheduled on the asset of the query ``dune_nightly_refresh`` runs (``dune://queries/<id>``). That task
    declares the asset as an outlet (and an asset alias that receives every view its pipeline refreshed), so
    this DAG runs once after each successful nightly refresh and never after a failed one. The triggering
    event carries the Dune execution id.

``dune_on_view_refresh`` (Airflow 3)
    Scheduled on a materialized view watched by ``DuneMaterializedViewRefreshTrigger`` in an ``AssetWatcher``:
    it runs once per completed refresh of the view, whoever started it, including the refreshes Dune runs on
    the view's own schedule. The emulator's demo catalog refreshes ``dune.demo.result_token_prices_hourly``
    on its own every 20 seconds.

Settings (read when the file is parsed)::

    DUNE_NIGHTLY_QUERY_ID   the query of dune_nightly_refresh (default: 1001)
    DUNE_WATCHED_VIEW       the view dune_on_view_refresh waits for (default: dune.demo.result_token_prices_hourly)
    DUNE_CONN_ID            connection of type ``dune`` (default: dune_default)
    DUNE_POLL_INTERVAL      seconds between reads of the watched view (default: 30)
"""

from __future__ import annotations

import os
from datetime import datetime
from typing import Any

try:  # Airflow 3
    from airflow.sdk import DAG, task
except ImportError:  # Airflow 2.11
    from airflow import DAG  # type: ignore[attr-defined,no-redef]
    from airflow.decorators import task  # type: ignore[no-redef]

from airflow_provider_dune.assets import dune_query_asset, dune_view_asset
from airflow_provider_dune.triggers.materialized_view import DuneMaterializedViewRefreshTrigger

NIGHTLY_QUERY_ID = int(os.environ.get("DUNE_NIGHTLY_QUERY_ID") or 1001)
WATCHED_VIEW = os.environ.get("DUNE_WATCHED_VIEW") or "dune.demo.result_token_prices_hourly"
CONN_ID = os.environ.get("DUNE_CONN_ID") or "dune_default"
POLL_INTERVAL = float(os.environ.get("DUNE_POLL_INTERVAL") or 30)


@task
def report_refresh(**context: Any) -> list[dict[str, Any]]:
    """Log and return the Dune refreshes that triggered this run (asset URI and event extra)."""
    events = context.get("triggering_asset_events") or context.get("triggering_dataset_events") or {}
    refreshes = []
    for asset, asset_events in events.items():
        for event in asset_events:
            uri = getattr(asset, "uri", asset)
            extra = dict(event.extra or {})
            # An AssetWatcher's event keeps the trigger's payload under "payload".
            details = extra.get("payload") if extra.get("from_trigger") else extra
            refreshes.append({"uri": str(uri), **dict(details or {})})
            print(f"Fresh from Dune: {uri} {details}")
    return refreshes


# [START howto_asset_dune_query_schedule]
with DAG(
    dag_id="dune_after_nightly_refresh",
    description="Runs after each successful dune_nightly_refresh",
    schedule=[dune_query_asset(NIGHTLY_QUERY_ID)],
    start_date=datetime(2024, 1, 1),
    catchup=False,
    max_active_runs=1,  # one refresh at a time; runs for later refreshes wait their turn
    tags=["dune", "example", "assets"],
    doc_md=__doc__,
):
    report_refresh()
# [END howto_asset_dune_query_schedule]

try:
    from airflow.sdk import AssetWatcher
except ImportError:  # Airflow 2.11 has no event-driven scheduling
    AssetWatcher = None

if AssetWatcher is not None:
    # [START howto_trigger_dune_materialized_view_refresh]
    watched = dune_view_asset(
        WATCHED_VIEW,
        watchers=[
            AssetWatcher(
                name="dune_view_refreshed",
                trigger=DuneMaterializedViewRefreshTrigger(
                    view_name=WATCHED_VIEW, dune_conn_id=CONN_ID, poll_interval=POLL_INTERVAL
                ),
            )
        ],
    )
    # [END howto_trigger_dune_materialized_view_refresh]
    with DAG(
        dag_id="dune_on_view_refresh",
        description="Runs once per completed refresh of a Dune materialized view, Dune's scheduled ones included",
        schedule=[watched],
        start_date=datetime(2024, 1, 1),
        catchup=False,
        max_active_runs=1,
        tags=["dune", "example", "assets"],
        doc_md=__doc__,
    ):
        report_refresh()
