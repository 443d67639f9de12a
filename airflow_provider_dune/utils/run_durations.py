"""How long the same Dune request took before in this deployment, to forecast when the next run ends.

Kept in one Airflow Variable per request fingerprint (the same query, parameters and performance tier give the
same fingerprint, whichever DAG asks): the last :data:`~airflow_provider_dune.api.forecast.HISTORY_SIZE`
durations in seconds, nothing else. Reading or writing it never fails a task: without a history the status is
read every ``poll_interval``, as before.
"""

from __future__ import annotations

import json
import logging

from airflow_provider_dune.api.forecast import usable_durations
from airflow_provider_dune.version_compat import Variable

log = logging.getLogger(__name__)

KEY_PREFIX = "airflow_provider_dune_durations_"
#: Longest stored history read (a history is a few numbers: anything longer is not one this module wrote).
MAX_HISTORY_CHARS = 10_000


def history_key(fingerprint: str) -> str:
    return f"{KEY_PREFIX}{fingerprint}"


def recall(fingerprint: str) -> list[float]:
    """Previous durations (seconds, oldest first) of runs of the request with this fingerprint; ``[]`` when there
    are none or the stored value cannot be read (logged as a warning: the next :func:`record` replaces it)."""
    key = history_key(fingerprint)
    try:
        raw = Variable.get(key, None)
    except Exception as err:
        log.warning("Could not read the previous durations of this Dune request: %s", err)
        return []
    if raw is None or raw == "":
        return []
    try:
        if not isinstance(raw, str) or len(raw) > MAX_HISTORY_CHARS:
            raise ValueError(f"not a short JSON text ({type(raw).__name__} of {len(raw)} characters)")
        values = json.loads(raw)
        if not isinstance(values, list):
            raise ValueError(f"a JSON {type(values).__name__}, not a list")
        return usable_durations(values)
    except Exception as err:  # RecursionError for a deeply nested value, among others: never fail the task
        log.warning(
            "The previous durations of this Dune request cannot be read (Variable %s: %s): polling without a "
            "forecast; this run's duration replaces them",
            key,
            str(err)[:200],
        )
        return []


def record(fingerprint: str, seconds: float) -> None:
    """Add one run's duration to the history of its request (the oldest falls out)."""
    durations = usable_durations([*recall(fingerprint), round(seconds, 1)])  # keeps the latest HISTORY_SIZE
    if not durations:
        return
    try:
        Variable.set(
            history_key(fingerprint),
            json.dumps(durations),
            description="Durations (s) of previous Dune runs of one request; forecast when the next run ends.",
        )
    except Exception as err:
        log.warning("Could not record the duration of this Dune run: %s", err)
