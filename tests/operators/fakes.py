"""Stand-ins for the Airflow task instance and Variables used by operator tests (Dune itself is the emulator)."""

from __future__ import annotations

import json
from typing import Any

from airflow_provider_dune.testing.emulator import DuneEmulator


class FakeVariables:
    """In-memory stand-in for Airflow Variables: the run registry's storage (not Dune)."""

    def __init__(self) -> None:
        self.store: dict[str, str] = {}

    def get(self, key: str, default: Any = None, /) -> Any:
        # Positional only: Airflow 3 names the default `default`, Airflow 2.11 `default_var`; only the
        # positional form works on both, so the provider must use it.
        return self.store.get(key, default)

    def set(self, key: str, value: str, description: str | None = None) -> None:
        self.store[key] = value

    def delete(self, key: str) -> None:
        self.store.pop(key, None)


class FakeTaskStateStore:
    """In-memory stand-in for Airflow 3.3's ``context["task_state_store"]``: JSON values per key, one task
    instance, shared by its tries."""

    def __init__(self) -> None:
        self.store: dict[str, str] = {}

    def get(self, key: str, default: Any = None) -> Any:
        return json.loads(self.store[key]) if key in self.store else default

    def set(self, key: str, value: Any) -> None:
        if value is None:
            raise ValueError("Cannot set value as None")  # as Airflow's accessor
        self.store[key] = json.dumps(value)

    def delete(self, key: str) -> None:
        self.store.pop(key, None)


class FakeTI:
    def __init__(self, emulator: DuneEmulator, run_id: str = "manual__2024-06-01") -> None:
        self.dag_id = "dune_dag"
        self.task_id = "run_pipeline"
        self.run_id = run_id
        self.map_index = -1
        self.try_number = 1
        self.xcom: dict[str, Any] = {}
        self.status_calls_at_push: int | None = None
        self._emulator = emulator

    def xcom_push(self, key: str, value: Any) -> None:
        self.xcom[key] = value
        self.status_calls_at_push = self._emulator.counts.get("get_pipeline_status", 0)
