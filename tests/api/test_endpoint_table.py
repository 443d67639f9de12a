"""The endpoint table: one entry per endpoint, matched by a request builder, an emulator handler and Dune's spec."""

from __future__ import annotations

import inspect

import pytest

from airflow_provider_dune.api import endpoints
from airflow_provider_dune.api.endpoint_table import ENDPOINTS
from airflow_provider_dune.testing._api import _Api
from airflow_provider_dune.testing._spec import load_spec

BUILDERS = {
    name: function
    for name, function in inspect.getmembers(endpoints, inspect.isfunction)
    if function.__module__ == endpoints.__name__ and inspect.signature(function).return_annotation == "DuneRequest"
}


def test_every_builder_has_an_entry_and_every_entry_a_builder() -> None:
    assert set(BUILDERS) == set(ENDPOINTS)


@pytest.mark.parametrize("name", sorted(ENDPOINTS))
def test_each_builder_sends_its_own_entry(name: str) -> None:
    assert f'ENDPOINTS["{name}"]' in inspect.getsource(BUILDERS[name])
    assert ENDPOINTS[name].name == name


@pytest.mark.parametrize("name", sorted(ENDPOINTS))
def test_each_entry_is_an_operation_of_dunes_spec_and_has_an_emulator_handler(name: str) -> None:
    endpoint = ENDPOINTS[name]
    assert endpoint.method.lower() in load_spec()["paths"].get(endpoint.path, {}), f"{endpoint.template} not in spec"
    assert callable(getattr(_Api, name, None)), f"the emulator has no handler _Api.{name}"


def test_the_write_bucket_is_the_calls_that_start_an_execution() -> None:
    """Dune's write-like bucket counts executions started (FACTS: execute; read-like: status, cancel)."""
    writes = {name for name, endpoint in ENDPOINTS.items() if endpoint.bucket == "write"}
    assert writes == {
        "execute_query_pipeline",
        "execute_pipeline",
        "execute_query",
        "execute_sql",
        "refresh_materialized_view",
        "upsert_materialized_view",
    }
    for name in writes:  # a started execution is billed: never resent, and a read-only key may not start one
        assert not ENDPOINTS[name].retry_safe and ENDPOINTS[name].write_key, name


def test_writes_that_are_not_executions_are_read_paced_but_never_resent() -> None:
    for name in ("create_query", "create_table", "insert_rows"):
        endpoint = ENDPOINTS[name]
        assert endpoint.bucket == "read" and not endpoint.retry_safe and endpoint.effect != "started a run", name
    assert ENDPOINTS["cancel_execution"].retry_safe and ENDPOINTS["cancel_execution"].bucket == "read"
