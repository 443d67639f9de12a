"""DuneHook against the Dune API emulator over real HTTP, through both the sync and the async transport."""

from __future__ import annotations

import asyncio
import logging
import time
from collections.abc import Callable, Iterator
from typing import Any

import pytest

from airflow_provider_dune.api.errors import (
    DuneAuthError,
    DuneBadRequestError,
    DuneConfigurationError,
    DuneConnectionError,
    DuneCreditsExhaustedError,
    DuneNotFoundError,
    DuneRateLimitError,
    DuneResponseError,
    DuneServerError,
)
from airflow_provider_dune.api.models import NodeKind, PipelineOutcome, PipelineStatus
from airflow_provider_dune.api.states import RunState
from airflow_provider_dune.hooks.async_clients import MAX_CONNECTIONS
from airflow_provider_dune.hooks.dune import USER_AGENT, DuneHook
from airflow_provider_dune.testing.emulator import DuneEmulator, Fault
from tests.conftest import dune_connection_json

Call = Callable[..., Any]

QUERY = 4001
VIEW = "dune.team.result_daily"
VIEW_QUERY = 4000
FAILING_QUERY = 4002


@pytest.fixture
def emulator(dune_emulator: DuneEmulator) -> DuneEmulator:
    dune_emulator.add_materialized_view(VIEW, query_id=VIEW_QUERY, duration=0.1)
    dune_emulator.add_query(VIEW_QUERY, duration=0.1)
    dune_emulator.add_query(QUERY, duration=0.1, depends_on=[VIEW], parameters=["date"])
    dune_emulator.add_query(FAILING_QUERY, duration=0.05, error="line 1: column 'x' does not exist")
    return dune_emulator


@pytest.fixture(params=["sync", "async"])
def call(request: pytest.FixtureRequest, emulator: DuneEmulator, dune_conn_id: str) -> Iterator[Call]:
    """Invoke a hook method by its sync name through the transport under test."""
    hook = DuneHook(dune_conn_id)

    def invoke(name: str, *args: Any, **kwargs: Any) -> Any:
        if request.param == "sync":
            return getattr(hook, name)(*args, **kwargs)

        async def run() -> Any:
            try:
                return await getattr(hook, f"a{name}")(*args, **kwargs)
            finally:
                await hook.aclose()

        return asyncio.run(run())

    invoke.transport = request.param  # type: ignore[attr-defined]
    yield invoke
    hook.close()


def wait_for_pipeline(call: Call, pipeline_execution_id: str, timeout: float = 10) -> PipelineStatus:
    deadline = time.monotonic() + timeout
    while True:
        status = call("get_pipeline_status", pipeline_execution_id)
        if status.is_terminal or time.monotonic() > deadline:
            return status
        time.sleep(0.05)


# -- every endpoint ---------------------------------------------------------------------------------------------


def test_query_pipeline_runs_lineage_then_query(call: Call, emulator: DuneEmulator) -> None:
    pipeline_id = call("execute_query_pipeline", QUERY, "medium", {"date": "2026-01-01"})
    assert isinstance(pipeline_id, str) and pipeline_id
    first = call("get_pipeline_status", pipeline_id)
    assert first.pipeline_execution_id == pipeline_id
    assert [n.label for n in first.nodes] == [f"materialized view {VIEW}", f"query {QUERY}"]
    final = wait_for_pipeline(call, pipeline_id)
    assert final.outcome is PipelineOutcome.SUCCESS
    assert all(n.execution_id for n in final.nodes)
    assert emulator.counts["execute_query_pipeline"] == 1
    body = next(r.json_body for r in emulator.requests if r.endpoint == "execute_query_pipeline")
    assert body == {"performance": "medium", "query_parameters": {"date": "2026-01-01"}}


def test_explicit_pipeline(call: Call, emulator: DuneEmulator) -> None:
    nodes = [
        {"id": 1, "query_execution": {"query_id": VIEW_QUERY}},
        {"id": 2, "dependencies": [1], "materialized_view_refresh": {"name": VIEW}},
        {"id": 3, "dependencies": [2], "query_execution": {"query_id": QUERY, "query_parameters": {"date": "x"}}},
    ]
    pipeline_id = call("execute_pipeline", nodes)
    final = wait_for_pipeline(call, pipeline_id)
    assert final.succeeded, final.failure_message()
    assert [n.node_id for n in final.nodes] == [1, 2, 3]
    sent = next(r.json_body for r in emulator.requests if r.endpoint == "execute_pipeline")
    assert sent["pipeline"]["nodes"][1]["materialized_view_refresh"] == {"name": VIEW, "performance": "medium"}


def test_get_query_pipeline_is_a_dry_run(call: Call, emulator: DuneEmulator) -> None:
    pipeline = call("get_query_pipeline", QUERY, "large", {"date": "2026-01-01"})
    assert [n.kind for n in pipeline.nodes] == [NodeKind.MATERIALIZED_VIEW_REFRESH, NodeKind.QUERY_EXECUTION]
    assert emulator.executions_started() == 0
    request = next(r for r in emulator.requests if r.endpoint == "get_query_pipeline")
    assert request.query["performance"] == "large"


def test_failed_node_is_reported_with_dunes_error(call: Call) -> None:
    pipeline_id = call("execute_query_pipeline", FAILING_QUERY)
    final = wait_for_pipeline(call, pipeline_id)
    assert final.outcome is PipelineOutcome.FAILED
    assert "column 'x' does not exist" in final.failure_message()
    assert final.failed_nodes[0].query_id == FAILING_QUERY


def test_query_execution_status_results_and_pagination(call: Call, emulator: DuneEmulator) -> None:
    emulator.add_query(4100, duration=0.05, rows=[{"n": i} for i in range(5)])
    started = call("execute_query", 4100)
    assert started.state is RunState.PENDING
    deadline = time.monotonic() + 5
    while not (status := call("get_execution_status", started.execution_id)).is_terminal:
        assert time.monotonic() < deadline
        time.sleep(0.05)
    assert status.succeeded and status.query_id == 4100
    first = call("get_execution_results", started.execution_id, limit=2)
    assert first.rows == [{"n": 0}, {"n": 1}] and first.next_offset is not None
    second = call("get_execution_results", started.execution_id, limit=2, offset=first.next_offset)
    assert second.rows == [{"n": 2}, {"n": 3}]


def test_cancel_running_execution(call: Call, emulator: DuneEmulator) -> None:
    emulator.add_query(4200, duration=30)
    started = call("execute_query", 4200)
    assert call("cancel_execution", started.execution_id) is True
    assert call("get_execution_status", started.execution_id).state is RunState.CANCELLED


def test_materialized_view_refresh_and_describe(call: Call, emulator: DuneEmulator) -> None:
    refresh = call("refresh_materialized_view", VIEW)
    assert refresh.execution_id
    view = call("get_materialized_view", VIEW)
    assert view.query_id == VIEW_QUERY
    assert emulator.counts["refresh_materialized_view"] == 1


# -- error classes ----------------------------------------------------------------------------------------------


def test_unknown_query_is_not_found(call: Call) -> None:
    with pytest.raises(DuneNotFoundError) as info:
        call("execute_query_pipeline", 999999)
    assert info.value.http_status == 404
    assert "not found" in info.value.message.lower()
    assert "for query 999999:" in str(info.value), "the message must name the id that was not found"


def test_undefined_connection_says_how_to_define_it(monkeypatch: pytest.MonkeyPatch) -> None:
    """Airflow's own "isn't defined" says nothing of Airflow 3's rule for code outside tasks; ours does."""
    monkeypatch.delenv("AIRFLOW_CONN_DUNE_NOWHERE", raising=False)
    for get_settings in (
        lambda: DuneHook("dune_nowhere").settings,
        lambda: asyncio.run(DuneHook("dune_nowhere").aget_settings()),
    ):
        with pytest.raises(DuneConfigurationError) as info:
            get_settings()
        message = str(info.value)
        assert "'dune_nowhere' is not defined" in message
        assert "AIRFLOW_CONN_DUNE_NOWHERE" in message and "outside a task" in message


def test_wrong_key_is_an_auth_error_without_the_key(
    call: Call, emulator: DuneEmulator, monkeypatch: pytest.MonkeyPatch, caplog: pytest.LogCaptureFixture
) -> None:
    monkeypatch.setenv("AIRFLOW_CONN_DUNE_DEFAULT", dune_connection_json(emulator.url, api_key="wrong-secret-key"))
    caplog.set_level(logging.DEBUG)
    with pytest.raises(DuneAuthError) as info:
        call("get_pipeline_status", "01HKZJ2683PHF9Q9PHHQ8FW4Q1")
    assert info.value.http_status == 401
    assert "invalid api key" in str(info.value).lower()
    assert "Check the API Key field of Airflow connection 'dune_default'" in str(info.value)
    assert "wrong-secret-key" not in str(info.value)
    assert "wrong-secret-key" not in caplog.text
    assert emulator.counts["get_pipeline_status"] == 1  # auth errors are not retried


def test_read_only_key_cannot_execute(call: Call, emulator: DuneEmulator, monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("AIRFLOW_CONN_DUNE_DEFAULT", dune_connection_json(emulator.url, api_key="read-key"))
    with pytest.raises(DuneAuthError) as info:
        call("execute_query_pipeline", QUERY)
    assert info.value.http_status == 403


def test_credits_exhausted(call: Call, emulator: DuneEmulator) -> None:
    emulator.inject("execute_query_pipeline", Fault.status(402))
    with pytest.raises(DuneCreditsExhaustedError) as info:
        call("execute_query_pipeline", QUERY)
    assert "exceed your configured limits" in str(info.value)
    assert emulator.counts["execute_query_pipeline"] == 1


def test_bad_parameters_are_a_bad_request(call: Call) -> None:
    with pytest.raises(DuneBadRequestError) as info:
        call("execute_query_pipeline", QUERY, "medium", {"no_such_param": 1})
    assert info.value.http_status == 400


def test_invalid_input_fails_before_any_request(call: Call, emulator: DuneEmulator) -> None:
    with pytest.raises(DuneConfigurationError, match="performance must be one of"):
        call("execute_query_pipeline", QUERY, "huge")
    with pytest.raises(DuneConfigurationError, match="dependency cycle"):
        call(
            "execute_pipeline",
            [
                {"id": 1, "dependencies": [2], "query_execution": {"query_id": QUERY}},
                {"id": 2, "dependencies": [1], "query_execution": {"query_id": QUERY}},
            ],
        )
    assert sum(emulator.counts.values()) == 0


# -- retries ----------------------------------------------------------------------------------------------------


def test_rate_limit_with_retry_after_is_honoured(call: Call, emulator: DuneEmulator) -> None:
    pipeline_id = call("execute_query_pipeline", QUERY)
    emulator.inject("get_pipeline_status", Fault.status(429, retry_after=0.3))
    started = time.monotonic()
    status = call("get_pipeline_status", pipeline_id)
    assert status.pipeline_execution_id == pipeline_id
    assert time.monotonic() - started >= 0.3
    assert emulator.counts["get_pipeline_status"] == 2


def test_rate_limit_storm_gives_up_with_rate_limit_error(call: Call, emulator: DuneEmulator) -> None:
    emulator.inject("get_pipeline_status", Fault.status(429, times=10))
    with pytest.raises(DuneRateLimitError) as info:
        call("get_pipeline_status", "01HKZJ2683PHF9Q9PHHQ8FW4Q1")
    assert "poll_interval" in str(info.value)
    assert emulator.counts["get_pipeline_status"] == 5  # the default max_attempts


async def test_a_429_holds_back_other_hooks_with_the_same_key(
    emulator: DuneEmulator, monkeypatch: pytest.MonkeyPatch
) -> None:
    # Dune's budget is per key: when one trigger's poll is rate limited, the others wait too (no 429 storm).
    monkeypatch.setenv(
        "AIRFLOW_CONN_DUNE_SLOW_RETRY", dune_connection_json(emulator.url, retry_min_wait=0.2, retry_max_wait=2)
    )
    emulator.add_query(9101, duration=0)
    with DuneHook("dune_slow_retry") as hook:
        pipeline_id = hook.execute_query_pipeline(9101)
    emulator.inject("get_pipeline_status", Fault.status(429))
    first, *others = [DuneHook("dune_slow_retry") for _ in range(5)]
    limited_poll = asyncio.ensure_future(first.aget_pipeline_status(pipeline_id))
    for _ in range(1000):  # until the emulator has answered the first poll with the 429
        if any(r.status == 429 for r in emulator.requests):
            break
        await asyncio.sleep(0.005)
    await asyncio.sleep(0.05)  # the 429 has been read by the first hook
    await asyncio.gather(limited_poll, *(hook.aget_pipeline_status(pipeline_id) for hook in others))
    await asyncio.gather(first.aclose(), *(hook.aclose() for hook in others))

    reads = [r for r in emulator.requests if r.endpoint == "get_pipeline_status"]
    (limited,) = [r for r in reads if r.status == 429]
    later = [r for r in reads if r.at > limited.at]
    assert len(later) == 5 and all(r.status == 200 for r in later)
    # The cooldown (2 x retry_min_wait = 0.4 s) applies to every hook with this key, not just the one limited.
    assert min(r.at for r in later) - limited.at >= 0.39


def test_server_errors_on_reads_are_retried(call: Call, emulator: DuneEmulator) -> None:
    pipeline_id = call("execute_query_pipeline", QUERY)
    emulator.inject("get_pipeline_status", Fault.status(500), Fault.status(503, times=2), Fault.malformed())
    assert call("get_pipeline_status", pipeline_id).pipeline_execution_id == pipeline_id
    assert emulator.counts["get_pipeline_status"] == 5


def test_dropped_connection_on_read_is_retried(call: Call, emulator: DuneEmulator) -> None:
    pipeline_id = call("execute_query_pipeline", QUERY)
    emulator.inject("get_pipeline_status", Fault.drop())
    assert call("get_pipeline_status", pipeline_id).pipeline_execution_id == pipeline_id
    assert emulator.counts["get_pipeline_status"] == 2


@pytest.mark.slow
def test_rate_limited_execute_is_retried_once_accepted(call: Call, emulator: DuneEmulator) -> None:
    emulator.inject("execute_query_pipeline", Fault.status(429), Fault.status(503))
    call("execute_query_pipeline", QUERY)
    assert emulator.counts["execute_query_pipeline"] == 3
    assert emulator.executions_started() == 1


@pytest.mark.parametrize("fault", [Fault.status(500), Fault.status(502), Fault.drop_after_processing()])
def test_ambiguous_execute_failure_is_never_retried(call: Call, emulator: DuneEmulator, fault: Fault) -> None:
    emulator.inject("execute_query_pipeline", fault)
    with pytest.raises((DuneServerError, DuneConnectionError)) as info:
        call("execute_query_pipeline", QUERY)
    assert "not retried to avoid a second billed run" in str(info.value)
    assert emulator.counts["execute_query_pipeline"] == 1


def test_slow_read_times_out_then_retries(call: Call, emulator: DuneEmulator, monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("AIRFLOW_CONN_DUNE_DEFAULT", dune_connection_json(emulator.url, timeout=0.3))
    pipeline_id = call("execute_query_pipeline", QUERY)
    emulator.inject("get_pipeline_status", Fault.slow(1.0))
    assert call("get_pipeline_status", pipeline_id).pipeline_execution_id == pipeline_id
    assert emulator.counts["get_pipeline_status"] == 2


def test_malformed_body_on_execute_is_not_retried(call: Call, emulator: DuneEmulator) -> None:
    emulator.inject("execute_query_pipeline", Fault.malformed())
    with pytest.raises(DuneResponseError, match="not valid JSON"):
        call("execute_query_pipeline", QUERY)
    assert emulator.counts["execute_query_pipeline"] == 1


@pytest.mark.slow
def test_connection_refused_is_a_connection_error(call: Call, monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv(
        "AIRFLOW_CONN_DUNE_DEFAULT", dune_connection_json("http://127.0.0.1:9/api", max_retries=2, retry_min_wait=0)
    )
    with pytest.raises(DuneConnectionError) as info:
        call("execute_query_pipeline", QUERY)
    assert info.value.request_sent is False
    assert "could not connect" in str(info.value)


# -- connection handling ----------------------------------------------------------------------------------------


def test_user_agent_and_key_header(call: Call, emulator: DuneEmulator) -> None:
    call("get_materialized_view", VIEW)
    request = emulator.requests[-1]
    headers = {k.lower(): v for k, v in request.headers.items()}
    assert headers["user-agent"] == USER_AGENT
    assert USER_AGENT.startswith("airflow-provider-dune/")
    assert headers["x-dune-api-key"] == "***"  # recorded masked; present means it was sent
    assert "api_key" not in request.query


def test_plain_http_to_a_remote_host_is_refused(call: Call, monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("AIRFLOW_CONN_DUNE_DEFAULT", dune_connection_json("http://dune.example.com/api"))
    with pytest.raises(DuneConfigurationError, match="plain http"):
        call("get_pipeline_status", "01HKZJ2683PHF9Q9PHHQ8FW4Q1")


def test_missing_key_is_explained(call: Call, monkeypatch: pytest.MonkeyPatch, emulator: DuneEmulator) -> None:
    monkeypatch.setenv("AIRFLOW_CONN_DUNE_DEFAULT", dune_connection_json(emulator.url, api_key=""))
    with pytest.raises(DuneConfigurationError, match="no Dune API key: put the key in its API Key field"):
        call("get_pipeline_status", "01HKZJ2683PHF9Q9PHHQ8FW4Q1")


def test_test_connection(emulator: DuneEmulator, dune_conn_id: str, monkeypatch: pytest.MonkeyPatch) -> None:
    ok, message = DuneHook(dune_conn_id).test_connection()
    assert ok, message
    assert message.startswith(f"Connected to Dune at {emulator.url}")
    assert emulator.counts["get_usage"] == 1
    monkeypatch.setenv("AIRFLOW_CONN_DUNE_DEFAULT", dune_connection_json(emulator.url, api_key="bad-key-123"))
    ok, message = DuneHook(dune_conn_id).test_connection()
    assert not ok
    assert "HTTP 401" in message and "bad-key-123" not in message
    # Airflow's Test button tests under a random transient id: the message does not name it.
    assert "Check the API Key field of this connection" in message and dune_conn_id not in message
    ok, message = DuneHook(dune_conn_id).check_connection()  # the connection check DAG names it
    assert not ok and f"Check the API Key field of Airflow connection '{dune_conn_id}'" in message


def test_hook_overrides_take_precedence(emulator: DuneEmulator, dune_conn_id: str) -> None:
    emulator.inject("get_pipeline_status", Fault.status(503, times=5))
    hook = DuneHook(dune_conn_id, max_retries=2, retry_min_wait=0, retry_max_wait=0, timeout=3)
    assert hook.settings.timeout == 3
    with pytest.raises(DuneServerError):
        hook.get_pipeline_status("01HKZJ2683PHF9Q9PHHQ8FW4Q1")
    assert emulator.counts["get_pipeline_status"] == 2


def test_sync_session_reuses_connections(emulator: DuneEmulator, dune_conn_id: str) -> None:
    emulator.reset()
    with DuneHook(dune_conn_id) as hook:
        session = hook.get_conn()
        for _ in range(3):
            hook.get_materialized_view(VIEW)
        assert hook.get_conn() is session
    assert hook._session is None
    assert emulator.connections_opened == 1


async def test_async_client_is_reused_and_lookup_runs_in_the_loop(emulator: DuneEmulator, dune_conn_id: str) -> None:
    async with DuneHook(dune_conn_id) as hook:
        client = await hook.aget_client()
        await asyncio.gather(*(hook.aget_materialized_view(VIEW) for _ in range(5)))
        assert await hook.aget_client() is client
    assert client.is_closed
    assert emulator.counts["get_materialized_view"] == 5


async def test_hooks_in_one_loop_share_a_client_and_its_warm_connections(
    emulator: DuneEmulator, dune_conn_id: str, monkeypatch: pytest.MonkeyPatch
) -> None:
    # A triggerer runs one hook per trigger; a client each meant a new TCP/TLS connection for most polls.
    monkeypatch.setenv("AIRFLOW_CONN_DUNE_BAD_KEY", dune_connection_json(emulator.url, api_key="wrong-key"))
    async with DuneHook(dune_conn_id) as first, DuneHook(dune_conn_id) as second, DuneHook("dune_bad_key") as bad:
        client = await first.aget_client()
        assert await second.aget_client() is client
        assert await bad.aget_client() is client  # same timeouts: shared, the key goes with each request
        assert "X-Dune-Api-Key" not in client.headers
        emulator.reset()
        await asyncio.gather(*(hook.aget_materialized_view(VIEW) for hook in (first, second) for _ in range(20)))
        warm = emulator.connections_opened
        assert 1 <= warm <= MAX_CONNECTIONS  # a too-small keep-alive limit opened one per request here (40)
        await asyncio.gather(*(hook.aget_materialized_view(VIEW) for hook in (first, second) for _ in range(20)))
        assert emulator.connections_opened == warm  # all reused
        with pytest.raises(DuneAuthError):
            await bad.aget_materialized_view(VIEW)
        await first.aclose()
        assert not client.is_closed  # still used by the others
    assert client.is_closed
    assert emulator.counts["get_materialized_view"] == 81


async def test_hooks_with_other_timeouts_get_their_own_client(emulator: DuneEmulator, dune_conn_id: str) -> None:
    async with DuneHook(dune_conn_id) as default, DuneHook(dune_conn_id, timeout=3) as short:
        assert await default.aget_client() is not await short.aget_client()


async def test_shared_tls_context_verifies_certificates(dune_conn_id: str) -> None:
    # Loading the CA bundle cost ~50 ms and ~0.8 MB per client: it is loaded once per process.
    import ssl

    from airflow_provider_dune.hooks.async_clients import shared_ssl_context

    async with DuneHook(dune_conn_id) as hook:
        client = await hook.aget_client()
        assert client._transport._pool._ssl_context is shared_ssl_context()  # type: ignore[attr-defined]
    context = shared_ssl_context()
    assert context.verify_mode == ssl.CERT_REQUIRED
    assert context.check_hostname
    assert context.cert_store_stats()["x509_ca"] > 0
