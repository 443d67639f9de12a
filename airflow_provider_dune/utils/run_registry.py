"""Remember which Dune run a task instance started, so a retry re-attaches instead of paying for a second run.

XCom is cleared when a task instance is retried, so the record lives in an Airflow Variable keyed by the task
instance (dag, task, run, map index). It holds only ids and a fingerprint of the request, never the API key,
and is deleted once the task has acted on the run's final state. Failures to read or write it are logged and
never fail the task: re-attaching is an optimisation on top of correct behaviour.
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


def remember(context: Mapping[str, Any], run_id: str, fingerprint: str) -> None:
    """Record the run this task instance started."""
    # The task instance fields are nested: their DAG ``run_id`` must not overwrite the Dune run id.
    value = {"run_id": run_id, "fingerprint": fingerprint, "task_instance": _task_instance_fields(context)}
    try:
        Variable.set(
            registry_key(context),
            json.dumps(value),
            description="Dune run started by this task instance; lets a retry re-attach (deleted when done).",
        )
    except Exception as err:
        log.warning("Could not record Dune run %s for re-attachment on retry: %s", run_id, err)


def _record(context: Mapping[str, Any]) -> dict[str, Any] | None:
    try:
        raw = Variable.get(registry_key(context), None)
    except Exception as err:
        log.warning("Could not read the recorded Dune run for this task instance: %s", err)
        return None
    if not raw:
        return None
    try:
        record = json.loads(raw)
    except (TypeError, ValueError):
        return None
    return record if isinstance(record, dict) else None


def recall(context: Mapping[str, Any], fingerprint: str) -> str | None:
    """The run recorded for this task instance with the same request fingerprint, if any."""
    record = _record(context)
    if record is None or record.get("fingerprint") != fingerprint:
        return None
    run_id = record.get("run_id")
    return run_id if isinstance(run_id, str) and run_id else None


def recall_any(context: Mapping[str, Any]) -> str | None:
    """The run recorded for this task instance, whatever request started it."""
    record = _record(context)
    run_id = record.get("run_id") if record else None
    return run_id if isinstance(run_id, str) and run_id else None


def forget(context: Mapping[str, Any]) -> None:
    """Delete the record once the run reached a final state."""
    try:
        Variable.delete(registry_key(context))
    except Exception as err:
        log.debug("Could not delete the recorded Dune run: %s", err)
