"""The provider's ``[dune]`` options: a wrong value is warned about and replaced by the default, never raised."""

from __future__ import annotations

import pytest

from airflow_provider_dune.utils import config
from airflow_provider_dune.utils.config import DEFAULT_MIN_POLL_INTERVAL, configured_budget_share, min_poll_interval


@pytest.mark.parametrize("wrong", ["abc", "-1", "nan", "inf", "1e999"])
def test_a_wrong_min_poll_interval_falls_back_to_the_default_with_a_warning(
    wrong: str, monkeypatch: pytest.MonkeyPatch, caplog: pytest.LogCaptureFixture
) -> None:
    monkeypatch.setattr(config, "_WARNED", set())
    monkeypatch.setenv("AIRFLOW__DUNE__MIN_POLL_INTERVAL", wrong)
    assert min_poll_interval() == DEFAULT_MIN_POLL_INTERVAL
    assert f"[dune] min_poll_interval = '{wrong}' is not" in caplog.text
    assert f"using {DEFAULT_MIN_POLL_INTERVAL:g}" in caplog.text


def test_a_dag_file_with_a_wrong_min_poll_interval_still_imports(monkeypatch: pytest.MonkeyPatch) -> None:
    """Operators and triggers read the option when a DAG file builds them: it must not break the import."""
    from airflow_provider_dune.triggers.materialized_view import DuneMaterializedViewRefreshTrigger

    monkeypatch.setenv("AIRFLOW__DUNE__MIN_POLL_INTERVAL", "abc")
    assert DuneMaterializedViewRefreshTrigger(view_name="dune.team.result_x", poll_interval=60).poll_interval == 60


@pytest.mark.parametrize(("value", "read"), [("0.5", 0.5), ("0", 0.0), (" 2 ", 2.0)])
def test_a_valid_min_poll_interval_is_used(value: str, read: float, monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("AIRFLOW__DUNE__MIN_POLL_INTERVAL", value)
    assert min_poll_interval() == read


def test_each_wrong_value_is_warned_about_once(
    monkeypatch: pytest.MonkeyPatch, caplog: pytest.LogCaptureFixture
) -> None:
    monkeypatch.setattr(config, "_WARNED", set())
    monkeypatch.setenv("AIRFLOW__DUNE__BUDGET_SHARE", "half")
    assert configured_budget_share() is configured_budget_share() is None
    assert caplog.text.count("[dune] budget_share = 'half'") == 1
    assert "treating it as unset" in caplog.text


def test_budget_share_is_unset_by_default_and_read_when_set(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.delenv("AIRFLOW__DUNE__BUDGET_SHARE", raising=False)
    assert configured_budget_share() is None
    monkeypatch.setenv("AIRFLOW__DUNE__BUDGET_SHARE", "1")
    assert configured_budget_share() == 1.0
