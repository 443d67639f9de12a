"""Remember which Dune run a task instance started, so a retry re-attaches instead of paying for a second run.

XCom is cleared when a task instance is retried, so the record lives elsewhere:

- on Airflow 3.3+, in the task instance's own task state store (``context["task_state_store"]``, the store
  Airflow's ``ResumableJobMixin`` uses): scoped to the task instance, shared by its tries, removed with its DAG
  run;
- below 3.3, in an Airflow Variable keyed by the task instance (dag, task, run, map index).

A record a provider on Airflow < 3.3 wrote as a Variable is still found after the upgrade: it is moved into the
task state store and the Variable deleted. The record holds only ids and a fingerprint of the request, never
the API key, and is deleted once the task has acted on the run's final state. A record that cannot be written
or deleted is logged; one that cannot be read raises :class:`RunRecordUnavailable`, since a retry that cannot
tell whether its previous try started a run must not start another.
"""

from __future__ import annotations

import hashlib
import json
import logging
from collections.abc import Mapping
from typing import Any

from airflow_provider_dune.version_compat import Variable

log = logging.getLogger(__name__)

KEY_PREFIX = "airflow_provider_dune_run_"
#: The record's key in the task state store (Airflow 3.3+).
STATE_KEY = "airflow_provider_dune_run"


class RunRecordUnavailable(Exception):
    """The record of this task instance's run could not be read (the store or the Variable backend failed)."""


def request_fingerprint(request: Mapping[str, Any]) -> str:
    """Stable hash of what was asked of Dune; a retry with different parameters starts a new run."""
    canonical = json.dumps(request, sort_keys=True, separators=(",", ":"), default=str)
    return hashlib.sha256(canonical.encode()).hexdigest()[:32]


def _task_instance_fields(context: Mapping[str, Any]) -> dict[str, Any]:
    ti = context["ti"]
    return {
        "dag_id": ti.dag_id,
        "task_id": ti.task_id,
        "run_id": ti.run_id,
        "map_index": getattr(ti, "map_index", -1),
    }


def registry_key(context: Mapping[str, Any]) -> str:
    """Variable key for one task instance (hashed: Variable keys are limited to 250 characters)."""
    fields = _task_instance_fields(context)
    digest = hashlib.sha256(json.dumps(fields, sort_keys=True).encode()).hexdigest()[:40]
    return f"{KEY_PREFIX}{digest}"


def _task_state_store(context: Mapping[str, Any]) -> Any:
    """The task instance's task state store (Airflow 3.3+), or ``None`` where Airflow has none."""
    getter = getattr(context, "get", None)
    return getter("task_state_store") if callable(getter) else None


def remember(context: Mapping[str, Any], run_id: str, fingerprint: str) -> None:
    """Record the run this task instance started."""
    # The task instance fields are nested: their DAG ``run_id`` must not overwrite the Dune run id.
    value = {"run_id": run_id, "fingerprint": fingerprint, "task_instance": _task_instance_fields(context)}
    store = _task_state_store(context)
    try:
        if store is not None:
            store.set(STATE_KEY, value)
        else:
            Variable.set(
                registry_key(context),
                json.dumps(value),
                description="Dune run started by this task instance; lets a retry re-attach (deleted when done).",
            )
    except Exception as err:
        log.warning("Could not record Dune run %s for re-attachment on retry: %s", run_id, err)


def _variable_record(context: Mapping[str, Any]) -> dict[str, Any] | None:
    raw = Variable.get(registry_key(context), None)
    if not raw:
        return None
    try:
        record = json.loads(raw)
    except (TypeError, ValueError):
        return None
    return record if isinstance(record, dict) else None


def _record(context: Mapping[str, Any]) -> dict[str, Any] | None:
    store = _task_state_store(context)
    try:
        if store is not None:
            record = store.get(STATE_KEY)
            if isinstance(record, dict):
                return record
        record = _variable_record(context)
        if record is not None and store is not None:
            # Written before Airflow was upgraded to 3.3: move it where this version keeps it.
            store.set(STATE_KEY, record)
            Variable.delete(registry_key(context))
    except Exception as err:
        raise RunRecordUnavailable(f"could not read the recorded Dune run of this task instance: {err}") from err
    return record


def recall(context: Mapping[str, Any], fingerprint: str) -> str | None:
    """The run recorded for this task instance with the same request fingerprint, if any.

    :raises RunRecordUnavailable: the record could not be read.
    """
    record = _record(context)
    if record is None or record.get("fingerprint") != fingerprint:
        return None
    run_id = record.get("run_id")
    return run_id if isinstance(run_id, str) and run_id else None


def recall_any(context: Mapping[str, Any]) -> str | None:
    """The run recorded for this task instance, whatever request started it (:meth:`recall` raises the same)."""
    record = _record(context)
    run_id = record.get("run_id") if record else None
    return run_id if isinstance(run_id, str) and run_id else None


def forget(context: Mapping[str, Any]) -> None:
    """Delete the record once the run reached a final state."""
    store = _task_state_store(context)
    try:
        if store is not None:
            store.delete(STATE_KEY)
        else:
            Variable.delete(registry_key(context))
    except Exception as err:
        log.debug("Could not delete the recorded Dune run: %s", err)
