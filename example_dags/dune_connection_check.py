"""Check a Dune connection from the web UI: trigger this DAG, read the task's log.

The connection page's **Test** button answers *Bad Request* on Airflow 3.3.2 and older 3.x (an Airflow bug,
apache/airflow#73298), and Airflow turns connection testing off by default. This DAG works on every supported
Airflow without either: trigger it (the trigger dialog asks for the connection id, ``dune_default`` by default)
and its one task makes the same call as the Test button, ``POST /v1/usage``, which costs no credits
(``DuneHook.check_connection``).

On success the task log says which API it reached with which connection, and the credits used of those the
Dune plan includes in the current billing period::

    Connected to Dune at https://api.dune.com/api with Airflow connection 'dune_default'; 120.5 of 25000
    credits used this billing period (2026-12-01 to 2026-12-31)

On failure the task fails with what to fix, e.g. for a wrong key *Dune API error (HTTP 401) on POST
/v1/usage: invalid API key. Check the API Key field of Airflow connection 'dune_default'*. The API key is
never logged. Nothing is retried, so a wrong key answers at once.
"""

from __future__ import annotations

from datetime import datetime
from typing import Any

try:  # Airflow 3
    from airflow.sdk import DAG, Param, task
except ImportError:  # Airflow 2.11
    from airflow import DAG  # type: ignore[attr-defined,no-redef]
    from airflow.decorators import task  # type: ignore[no-redef]
    from airflow.models.param import Param  # type: ignore[no-redef]
from airflow_provider_dune.api.errors import DuneError
from airflow_provider_dune.hooks.dune import DuneHook

with DAG(
    dag_id="dune_connection_check",
    description="Check a Dune connection (key, host, credits) from the UI",
    schedule=None,
    start_date=datetime(2024, 6, 1),
    catchup=False,
    max_active_runs=1,
    params={
        "dune_conn_id": Param(
            DuneHook.default_conn_name,
            type="string",
            minLength=1,
            title="Dune connection id",
            description="The Airflow connection of type Dune to check.",
        )
    },
    default_args={"owner": "data-platform", "retries": 0},
    tags=["dune", "example"],
    doc_md=__doc__,
):
    # [START howto_dune_connection_check]
    @task
    def check_connection(params: Any = None) -> str:
        """Make the connection test's call; fail the task with Dune's error and what to fix."""
        hook = DuneHook(dune_conn_id=params["dune_conn_id"])
        try:
            ok, message = hook.check_connection()
        finally:
            hook.close()
        if not ok:
            raise DuneError(message)
        hook.log.info("%s", message)
        return message

    check_connection()
    # [END howto_dune_connection_check]
