"""Scheduling helpers for Dune DAGs: a run date that exists however a run starts, and schedules that bill once.

The example DAGs use both; import them in your own DAGs as ``from airflow_provider_dune.schedules import ...``.

**The run's date.** A scheduled or backfilled run has a logical date, so ``{{ ds }}`` works; a run triggered
from the UI, ``airflow dags trigger`` or the REST API on Airflow 3 may have none, and then ``ds``,
``logical_date`` and ``data_interval_start`` are undefined. :data:`RUN_DATE` uses the logical date when there
is one and the time the run was queued for (``run_after``, Airflow 3) otherwise.

**Unpausing without a second billed run.** The trigger dialog unpauses the DAG by default ("Unpause on
trigger"). With ``catchup=False`` and a ``start_date``, unpausing makes the scheduler also run the most recent
scheduled time, so one click starts two Dune runs. On Airflow 3, :func:`cron_schedule` leaves ``start_date``
out and uses ``CronTriggerTimetable(..., run_immediately=timedelta(0))``: after unpausing, the first scheduled
run is the next one in the future. (``run_immediately=False`` would still run the past one when unpausing
within 10% of the interval after it.) Airflow 2.11 has no such option: there, unpausing runs the latest
interval; try a DAG once with ``airflow dags test <dag_id>`` instead, which leaves it paused.
"""

from __future__ import annotations

from datetime import datetime, timedelta
from typing import Any

from airflow_provider_dune.version_compat import AIRFLOW_V_3_0_PLUS

# [START howto_run_date]
#: ``YYYY-MM-DD`` of the run: its logical date, or when it was queued to run if it has none.
RUN_DATE = "{{ (dag_run.logical_date or dag_run.run_after) | ds }}"
# [END howto_run_date]


def cron_schedule(expression: str, timezone: str = "UTC") -> dict[str, Any]:
    """``DAG(...)`` keyword arguments for a cron schedule that never starts a past run when unpaused."""
    if AIRFLOW_V_3_0_PLUS:
        try:
            from airflow.sdk import CronTriggerTimetable
        except ImportError:  # Airflow 3.0
            from airflow.timetables.trigger import CronTriggerTimetable  # type: ignore[assignment]
        return {"schedule": CronTriggerTimetable(expression, timezone=timezone, run_immediately=timedelta(0))}
    return {"schedule": expression, "start_date": datetime(2024, 6, 1)}
