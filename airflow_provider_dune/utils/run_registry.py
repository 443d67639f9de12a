"""Remember which Dune run a task instance started, so a retry re-attaches instead of paying for a second run.

The record is a :class:`~airflow_provider_dune.utils.task_records.TaskRecord` (the task state store on Airflow
3.3+, a Variable below). It holds only ids and a fingerprint of the request, never the API key, and is deleted
once the task has acted on the run's final state. A record that cannot be written or deleted is logged; one
that cannot be read raises :class:`RunRecordUnavailable`, since a retry that cannot tell whether its previous try
started a run must not start another.
"""

from __future__ import annotations

import logging
from collections.abc import Mapping
from typing import Any

from airflow_provider_dune.utils import task_records
from airflow_provider_dune.utils.task_records import TaskRecord, TaskRecordUnavailable

log = logging.getLogger(__name__)

KEY_PREFIX = "airflow_provider_dune_run_"
#: The record's key in the task state store (Airflow 3.3+).
STATE_KEY = "airflow_provider_dune_run"
RECORD = TaskRecord(
    STATE_KEY,
    KEY_PREFIX,
    what="the recorded Dune run of this task instance",
    description="Dune run started by this task instance; lets a retry re-attach (deleted when done).",
)

#: The record of this task instance's run could not be read.
RunRecordUnavailable = TaskRecordUnavailable


def request_fingerprint(request: Mapping[str, Any]) -> str:
    """Stable hash of what was asked of Dune; a retry with different parameters starts a new run."""
    return task_records.fingerprint(request)


def registry_key(context: Mapping[str, Any]) -> str:
    """Variable key for one task instance (below Airflow 3.3)."""
    return RECORD.variable_key(context)


def remember(context: Mapping[str, Any], run_id: str, fingerprint: str) -> None:
    """Record the run this task instance started."""
    try:
        RECORD.write(context, {"run_id": run_id, "fingerprint": fingerprint})
    except TaskRecordUnavailable as err:
        log.warning("Could not record Dune run %s for re-attachment on retry: %s", run_id, err)


def remember_ended(
    context: Mapping[str, Any], run_id: str, fingerprint: str, *, outcome: str, summary: str, try_number: int
) -> None:
    """Record that the run ended without success, so the next try names it in its log (and starts a new one)."""
    value = {"run_id": run_id, "fingerprint": fingerprint, "ended": outcome, "summary": summary, "try": try_number}
    try:
        RECORD.write(context, value)
    except TaskRecordUnavailable as err:
        log.debug("Could not record the outcome of Dune run %s: %s", run_id, err)


def read(context: Mapping[str, Any]) -> dict[str, Any] | None:
    """The whole record of this task instance (a run it started, or one that ended: ``ended`` is set).

    :raises RunRecordUnavailable: the record could not be read.
    """
    return RECORD.read(context)


def recall(context: Mapping[str, Any], fingerprint: str) -> str | None:
    """The run recorded for this task instance with the same request fingerprint, if it has not ended.

    :raises RunRecordUnavailable: the record could not be read.
    """
    record = RECORD.read(context)
    if record is None or record.get("fingerprint") != fingerprint or record.get("ended"):
        return None
    run_id = record.get("run_id")
    return run_id if isinstance(run_id, str) and run_id else None


def recall_any(context: Mapping[str, Any]) -> str | None:
    """The run recorded for this task instance, whatever request started it (:meth:`recall` raises the same)."""
    record = RECORD.read(context)
    run_id = record.get("run_id") if record and not record.get("ended") else None
    return run_id if isinstance(run_id, str) and run_id else None


def forget(context: Mapping[str, Any]) -> None:
    """Delete the record once the run reached a final state."""
    try:
        RECORD.delete(context)
    except TaskRecordUnavailable as err:
        log.debug("Could not delete the recorded Dune run: %s", err)
