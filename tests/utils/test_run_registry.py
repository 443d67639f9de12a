"""Where a task instance's Dune run is recorded: the task state store on Airflow 3.3+, Variables below."""

from __future__ import annotations

import json
from types import SimpleNamespace
from typing import Any

import pytest

from airflow_provider_dune.utils import run_registry, task_records
from tests.operators.fakes import FakeTaskStateStore, FakeVariables

TI = SimpleNamespace(dag_id="nightly", task_id="refresh", run_id="scheduled__2024-06-01", map_index=-1)


@pytest.fixture
def variables(monkeypatch: pytest.MonkeyPatch) -> FakeVariables:
    fake = FakeVariables()
    monkeypatch.setattr(task_records, "Variable", fake)
    return fake


def test_with_a_task_state_store_the_record_lives_there_and_no_variable_is_written(variables: FakeVariables) -> None:
    store = FakeTaskStateStore()
    context: dict[str, Any] = {"ti": TI, "task_state_store": store}
    run_registry.remember(context, "01PIPELINE", "fp")
    assert variables.store == {}
    assert json.loads(store.store[run_registry.STATE_KEY])["run_id"] == "01PIPELINE"
    assert run_registry.recall(context, "fp") == "01PIPELINE"
    assert run_registry.recall(context, "other request") is None
    assert run_registry.recall_any(context) == "01PIPELINE"
    run_registry.forget(context)
    assert store.store == {} and variables.store == {}
    assert run_registry.recall_any(context) is None


def test_without_a_task_state_store_the_record_is_a_variable(variables: FakeVariables) -> None:
    context: dict[str, Any] = {"ti": TI}
    run_registry.remember(context, "01PIPELINE", "fp")
    (key,) = variables.store
    assert key.startswith(run_registry.KEY_PREFIX)
    assert run_registry.recall(context, "fp") == "01PIPELINE"
    run_registry.forget(context)
    assert variables.store == {}


def test_a_record_written_before_the_upgrade_to_3_3_is_found_and_moved_into_the_store(
    variables: FakeVariables,
) -> None:
    run_registry.remember({"ti": TI}, "01BEFORE_UPGRADE", "fp")  # a try on Airflow < 3.3
    store = FakeTaskStateStore()
    upgraded: dict[str, Any] = {"ti": TI, "task_state_store": store}  # its retry, after the upgrade
    assert run_registry.recall(upgraded, "fp") == "01BEFORE_UPGRADE"
    assert variables.store == {}, "the Variable is gone once the record moved"
    assert json.loads(store.store[run_registry.STATE_KEY])["run_id"] == "01BEFORE_UPGRADE"
    run_registry.forget(upgraded)
    assert store.store == {} and variables.store == {}


def test_records_of_other_task_instances_are_not_read(variables: FakeVariables) -> None:
    run_registry.remember({"ti": TI}, "01PIPELINE", "fp")
    other = SimpleNamespace(**{**vars(TI), "map_index": 3})
    assert run_registry.recall({"ti": other, "task_state_store": FakeTaskStateStore()}, "fp") is None
    assert len(variables.store) == 1


class BrokenStore(FakeTaskStateStore):
    def get(self, key: str, default: Any = None) -> Any:
        raise RuntimeError("API server unavailable")


def test_an_unreadable_store_is_an_error_not_an_empty_record(variables: FakeVariables) -> None:
    with pytest.raises(run_registry.RunRecordUnavailable, match="API server unavailable"):
        run_registry.recall({"ti": TI, "task_state_store": BrokenStore()}, "fp")
