"""Records a task instance keeps across its tries: what it started or wrote on Dune, so a retry does not repeat it.

XCom is cleared when a task instance is retried, so the records live elsewhere:

- on Airflow 3.3+, in the task instance's own task state store (``context["task_state_store"]``, the store
  Airflow's ``ResumableJobMixin`` uses): scoped to the task instance, shared by its tries, removed with its DAG
  run;
- below 3.3, in an Airflow Variable keyed by the task instance (dag, task, run, map index) and the record's name.

A record written as a Variable before an upgrade to 3.3 is still found: it is moved into the task state store
and the Variable deleted. Records hold ids, counts and fingerprints, never the API key. One that cannot be read
raises :class:`TaskRecordUnavailable`: a retry that cannot tell what its previous try did must not do it again.
"""

from __future__ import annotations

import hashlib
import json
from collections.abc import Mapping
from dataclasses import dataclass
from typing import Any

from airflow_provider_dune.version_compat import Variable


class TaskRecordUnavailable(Exception):
    """A record of this task instance could not be read or written (the store or the Variable backend failed)."""


def fingerprint(value: Any) -> str:
    """Stable hash of a JSON-like value (a request, a definition, an input's digest)."""
    canonical = json.dumps(value, sort_keys=True, separators=(",", ":"), default=str)
    return hashlib.sha256(canonical.encode()).hexdigest()[:32]


def task_instance_fields(context: Mapping[str, Any]) -> dict[str, Any]:
    ti = context["ti"]
    return {
        "dag_id": ti.dag_id,
        "task_id": ti.task_id,
        "run_id": ti.run_id,
        "map_index": getattr(ti, "map_index", -1),
    }


def try_number(context: Mapping[str, Any]) -> int:
    """This try's number (1 for the first)."""
    number = getattr(context["ti"], "try_number", 1)
    return number if isinstance(number, int) else 1


def _task_state_store(context: Mapping[str, Any]) -> Any:
    """The task instance's task state store (Airflow 3.3+), or ``None`` where Airflow has none."""
    getter = getattr(context, "get", None)
    return getter("task_state_store") if callable(getter) else None


@dataclass(frozen=True)
class TaskRecord:
    """One named record per task instance.

    :param state_key: its key in the task state store (Airflow 3.3+).
    :param variable_prefix: prefix of its Variable key below 3.3 (the rest is a hash of the task instance).
    :param what: what it records, for messages ("the recorded Dune run of this task instance").
    :param description: the Variable's description.
    """

    state_key: str
    variable_prefix: str
    what: str
    description: str

    def variable_key(self, context: Mapping[str, Any]) -> str:
        """Variable key for one task instance (hashed: Variable keys are limited to 250 characters)."""
        fields = task_instance_fields(context)
        digest = hashlib.sha256(json.dumps(fields, sort_keys=True).encode()).hexdigest()[:40]
        return f"{self.variable_prefix}{digest}"

    def write(self, context: Mapping[str, Any], value: dict[str, Any]) -> None:
        """Store ``value`` (a JSON object); the task instance's fields are added under ``task_instance``.

        :raises TaskRecordUnavailable: it could not be stored.
        """
        value = {**value, "task_instance": task_instance_fields(context)}
        store = _task_state_store(context)
        try:
            if store is not None:
                store.set(self.state_key, value)
            else:
                Variable.set(self.variable_key(context), json.dumps(value), description=self.description)
        except Exception as err:
            raise TaskRecordUnavailable(f"could not store {self.what}: {err}") from err

    def read(self, context: Mapping[str, Any]) -> dict[str, Any] | None:
        """The stored record, or ``None``.

        :raises TaskRecordUnavailable: the store could not be read.
        """
        store = _task_state_store(context)
        try:
            if store is not None:
                record = store.get(self.state_key)
                if isinstance(record, dict):
                    return record
            record = self._variable_record(context)
            if record is not None and store is not None:
                # Written before Airflow was upgraded to 3.3: move it where this version keeps it.
                store.set(self.state_key, record)
                Variable.delete(self.variable_key(context))
        except Exception as err:
            raise TaskRecordUnavailable(f"could not read {self.what}: {err}") from err
        return record

    def _variable_record(self, context: Mapping[str, Any]) -> dict[str, Any] | None:
        raw = Variable.get(self.variable_key(context), None)
        if not raw:
            return None
        try:
            record = json.loads(raw)
        except (TypeError, ValueError):
            return None
        return record if isinstance(record, dict) else None

    def delete(self, context: Mapping[str, Any]) -> None:
        """Delete the record (nothing happens when there is none).

        :raises TaskRecordUnavailable: it could not be deleted.
        """
        store = _task_state_store(context)
        try:
            if store is not None:
                store.delete(self.state_key)
            else:
                Variable.delete(self.variable_key(context))
        except Exception as err:
            raise TaskRecordUnavailable(f"could not delete {self.what}: {err}") from err
