"""The credit guard: billed starts refused at the connection's ceiling, before anything is sent to Dune."""

from __future__ import annotations

import asyncio
from collections.abc import Iterator
from typing import Any

import pytest

from airflow_provider_dune.api.credits import USAGE_CACHE, CreditGuard, UsageCache, run_cost_warning
from airflow_provider_dune.api.errors import DuneConfigurationError, DuneCreditLimitError, DuneError
from airflow_provider_dune.api.models import CreditUsage
from airflow_provider_dune.hooks.dune import DuneHook
from airflow_provider_dune.operators.pipeline import DuneExecutePipelineOperator
from airflow_provider_dune.testing.emulator import DuneEmulator, Fault
from airflow_provider_dune.utils import task_records
from airflow_provider_dune.version_compat import AirflowFailException
from tests.conftest import TEST_API_KEY, dune_connection_json
from tests.operators.fakes import FakeTI, FakeVariables

QUERY = 5101
VIEW = "dune.team.result_guarded"
START_ENDPOINTS = (
    "execute_query",
    "execute_pipeline",
    "execute_query_pipeline",
    "refresh_materialized_view",
    "execute_sql",
    "upsert_materialized_view",
)


@pytest.fixture(autouse=True)
def fresh_usage_cache() -> Iterator[None]:
    USAGE_CACHE.clear()
    yield
    USAGE_CACHE.clear()


@pytest.fixture
def emulator(dune_emulator: DuneEmulator) -> DuneEmulator:
    dune_emulator.add_query(QUERY, duration=0.05)
    dune_emulator.add_materialized_view(VIEW, query_id=QUERY, duration=0.05)
    return dune_emulator


def connect(monkeypatch: pytest.MonkeyPatch, emulator: DuneEmulator, **extra: Any) -> DuneHook:
    monkeypatch.setenv("AIRFLOW_CONN_DUNE_GUARDED", dune_connection_json(emulator.url, **extra))
    return DuneHook("dune_guarded")


def spend_credits(emulator: DuneEmulator, monkeypatch: pytest.MonkeyPatch) -> float:
    """Run one query without a ceiling so the period has used some credits; return them."""
    hook = connect(monkeypatch, emulator)
    started = hook.execute_query(QUERY)
    for _ in range(200):
        if hook.get_execution_status(started.execution_id).is_terminal:
            break
        asyncio.run(asyncio.sleep(0.02))
    used = hook.get_usage().credits_used
    assert used is not None and used > 0
    return used


def start_requests(emulator: DuneEmulator) -> list[str]:
    return [r.endpoint for r in emulator.requests if r.endpoint in START_ENDPOINTS]


# -- the rules ----------------------------------------------------------------------------------------------------


def usage(used: float | None, included: float | None = 2500.0) -> CreditUsage:
    return CreditUsage(credits_used=used, credits_included=included, period_start="2026-12-01", period_end="2026-12-31")


def test_no_ceiling_never_refuses() -> None:
    assert not CreditGuard().active
    assert CreditGuard().refusal(None, "dune_default") is None


def test_absolute_ceiling_refuses_at_or_above_and_names_the_figures() -> None:
    guard = CreditGuard(credit_limit=1000)
    assert guard.refusal(usage(999.99), "dune_default") is None
    message = guard.refusal(usage(1000), "dune_default")
    assert message is not None
    assert "1,000.00 credits" in message and "credit_limit = 1000" in message and "'dune_default'" in message
    assert "2026-12-01 to 2026-12-31" in message and "Nothing was sent" in message


def test_percent_ceiling_uses_the_plans_included_credits_and_the_lower_ceiling_wins() -> None:
    guard = CreditGuard(credit_limit_percent=90)
    assert guard.refusal(usage(2249), "c") is None
    assert "90 % of the plan's 2500 included credits" in (guard.refusal(usage(2250), "c") or "")
    both = CreditGuard(credit_limit=2000, credit_limit_percent=90)
    assert "credit_limit = 2000" in (both.refusal(usage(2100), "c") or "")
    no_included = guard.refusal(usage(10, included=None), "c")
    assert no_included is not None and "Set credit_limit" in no_included


def test_unknown_usage_refuses_by_default_and_starts_when_told() -> None:
    refusal = CreditGuard(credit_limit=10).refusal(None, "c", unknown_reason="Dune answered 503")
    assert refusal is not None and "Dune answered 503" in refusal and "start_when_usage_unknown" in refusal
    assert CreditGuard(credit_limit=10, start_when_usage_unknown=True).refusal(None, "c") is None


def test_run_cost_warning_threshold() -> None:
    guard = CreditGuard(run_credit_warning=5)
    assert run_cost_warning(4.99, guard, "run") is None
    assert run_cost_warning(None, guard, "run") is None
    assert "cost 7.50 credits, more than the 5 credits" in (run_cost_warning(7.5, guard, "Dune pipeline x") or "")
    assert run_cost_warning(1e6, CreditGuard(), "run") is None


def test_usage_cache_expires_and_never_holds_the_key() -> None:
    now = [0.0]
    cache = UsageCache(max_age=60, clock=lambda: now[0])
    key = cache.key("http://x", "secret-key")
    assert "secret-key" not in key
    cache.put(key, usage(1))
    now[0] = 59.9
    assert cache.get(key) == usage(1)
    now[0] = 60.0
    assert cache.get(key) is None


@pytest.mark.parametrize(
    ("extra", "field"),
    [({"credit_limit": -1}, "credit_limit"), ({"credit_limit_percent": "lots"}, "credit_limit_percent")],
)
def test_invalid_settings_name_the_extra(
    emulator: DuneEmulator, monkeypatch: pytest.MonkeyPatch, extra: dict[str, Any], field: str
) -> None:
    with pytest.raises(DuneConfigurationError, match=field):
        _ = connect(monkeypatch, emulator, **extra).settings


# -- through HTTP -------------------------------------------------------------------------------------------------


@pytest.mark.parametrize("transport", ["sync", "async"])
@pytest.mark.parametrize(
    "start",
    [
        ("execute_query", (QUERY,)),
        ("execute_query_pipeline", (QUERY,)),
        ("execute_pipeline", ([{"id": 1, "query_execution": {"query_id": QUERY}}],)),
        ("refresh_materialized_view", (VIEW,)),
    ],
    ids=lambda s: s[0] if isinstance(s, tuple) else s,
)
def test_ceiling_below_usage_sends_no_start(
    emulator: DuneEmulator, monkeypatch: pytest.MonkeyPatch, transport: str, start: tuple[str, tuple[Any, ...]]
) -> None:
    used = spend_credits(emulator, monkeypatch)
    before = len(start_requests(emulator))
    runs_before = emulator.executions_started()
    hook = connect(monkeypatch, emulator, credit_limit=used / 2)
    name, args = start

    def attempt() -> None:
        if transport == "sync":
            getattr(hook, name)(*args)
            return

        async def run() -> None:
            try:
                await getattr(hook, f"a{name}")(*args)
            finally:
                await hook.aclose()

        asyncio.run(run())

    with pytest.raises(DuneCreditLimitError, match="Not starting a billed run") as info:
        attempt()
    assert isinstance(info.value, AirflowFailException)  # a retry cannot lower the period's usage
    assert TEST_API_KEY not in str(info.value)
    assert len(start_requests(emulator)) == before
    assert emulator.executions_started() == runs_before


def test_sql_start_is_guarded(emulator: DuneEmulator, monkeypatch: pytest.MonkeyPatch) -> None:
    used = spend_credits(emulator, monkeypatch)
    before = len(start_requests(emulator))
    with pytest.raises(DuneCreditLimitError):
        connect(monkeypatch, emulator, credit_limit=used / 2).execute_sql("select 1")
    assert len(start_requests(emulator)) == before


def test_under_the_ceiling_starts_and_reads_usage_at_most_once_a_minute(
    emulator: DuneEmulator, monkeypatch: pytest.MonkeyPatch
) -> None:
    hook = connect(monkeypatch, emulator, credit_limit=1_000_000)
    for _ in range(3):
        hook.execute_query(QUERY)
    assert emulator.executions_started() == 3
    assert emulator.counts["get_usage"] == 1


def test_usage_unknown_refuses_without_sending_and_keeps_retries(
    emulator: DuneEmulator, monkeypatch: pytest.MonkeyPatch
) -> None:
    emulator.inject("get_usage", Fault.status(503, times=5))
    with pytest.raises(DuneError, match="could not read this billing period's credits") as info:
        connect(monkeypatch, emulator, credit_limit=10).execute_query(QUERY)
    assert not isinstance(info.value, AirflowFailException)
    assert start_requests(emulator) == []


def test_usage_unknown_starts_when_the_connection_says_so(
    emulator: DuneEmulator, monkeypatch: pytest.MonkeyPatch
) -> None:
    emulator.inject("get_usage", Fault.status(503, times=5))
    connect(monkeypatch, emulator, credit_limit=10, start_when_usage_unknown=True).execute_query(QUERY)
    assert emulator.executions_started() == 1


def test_operator_fails_without_retries_and_starts_nothing(
    emulator: DuneEmulator, monkeypatch: pytest.MonkeyPatch
) -> None:
    used = spend_credits(emulator, monkeypatch)
    runs_before = emulator.executions_started()
    monkeypatch.setattr(task_records, "Variable", FakeVariables())
    monkeypatch.setenv("AIRFLOW_CONN_DUNE_DEFAULT", dune_connection_json(emulator.url, credit_limit=used / 2))
    op = DuneExecutePipelineOperator(task_id="guarded", query_id=QUERY, poll_interval=0.05, deferrable=False)
    with pytest.raises(AirflowFailException, match="at or above the ceiling"):
        op.execute({"ti": FakeTI(emulator), "ds": "2026-12-03", "params": {}})
    assert emulator.executions_started() == runs_before
    assert start_requests(emulator) == ["execute_query"]  # only the run that spent the credits
