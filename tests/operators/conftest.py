"""Fixtures the operator tests share."""

from __future__ import annotations

import pytest

from airflow_provider_dune.utils import task_records
from tests.operators.fakes import FakeVariables


@pytest.fixture
def variables(monkeypatch: pytest.MonkeyPatch) -> FakeVariables:
    """Task records (Variables below Airflow 3.3) kept in memory for the test."""
    fake = FakeVariables()
    monkeypatch.setattr(task_records, "Variable", fake)
    return fake
