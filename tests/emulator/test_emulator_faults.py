"""Fault injection, rate limiting and bookkeeping (counts, executions_started, reset) of the Dune API emulator."""

from __future__ import annotations

import json
import time
from typing import Any

import pytest
import requests

from airflow_provider_dune.testing.emulator import ENDPOINTS, DuneEmulator, Fault
from tests.emulator.conftest import WRITE_KEY, Api, FakeClock


@pytest.mark.parametrize(
    ("code", "message"),
    [
        (402, "This API request would exceed your configured limits per billing cycle."),
        (429, "Too many requests"),
        (500, "Internal error"),
        (503, "Service unavailable"),
        (401, "invalid API Key"),
    ],
)
def test_status_fault_default_messages(api: Api, emu: DuneEmulator, code: int, message: str) -> None:
    emu.inject("execute_query_pipeline", Fault.status(code))
    response = api.post("/v1/query/1001/pipeline/execute", json={"performance": "medium"})
    assert response.status_code == code
    assert response.json() == {"error": message}
    assert "Retry-After" not in response.headers
    assert emu.executions_started() == 0
    assert api.post("/v1/query/1001/pipeline/execute", json={"performance": "medium"}).status_code == 200
    assert emu.executions_started() == 1
    assert emu.counts["execute_query_pipeline"] == 2
    assert [r.fault for r in emu.requests] == ["status", None]


def test_status_fault_with_message_retry_after_and_times(api: Api, emu: DuneEmulator) -> None:
    emu.inject("get_query", Fault.status(429, "slow down", retry_after=1), Fault.status(503, retry_after=0.25, times=2))
    first = api.get("/v1/query/1001")
    assert (first.status_code, first.json(), first.headers["Retry-After"]) == (429, {"error": "slow down"}, "1")
    for _ in range(2):
        again = api.get("/v1/query/1001")
        assert (again.status_code, again.headers["Retry-After"]) == (503, "0.25")
    assert api.get("/v1/query/1001").status_code == 200
    assert emu.counts["get_query"] == 4


def test_faults_only_hit_their_endpoint(api: Api, emu: DuneEmulator) -> None:
    emu.inject("get_pipeline_status", Fault.status(500))
    assert api.get("/v1/query/1001").status_code == 200
    assert api.get("/v1/pipelines/executions/01HKZJ2683PHF9Q9PHHQ8FW4Q1/status").status_code == 500
    assert api.get("/v1/pipelines/executions/01HKZJ2683PHF9Q9PHHQ8FW4Q1/status").status_code == 404


def test_faults_scoped_to_a_query_id(api: Api, emu: DuneEmulator) -> None:
    emu.inject("execute_query", Fault.status(503), query_id=1099)
    assert api.post("/v1/query/1003/execute", json={}).status_code == 200
    assert api.post("/v1/query/1099/execute", json={}).status_code == 503
    assert api.post("/v1/query/1099/execute", json={}).status_code == 200

    first = api.post("/v1/query/1003/execute", json={}).json()["execution_id"]
    other = api.post("/v1/query/1099/execute", json={}).json()["execution_id"]
    emu.inject("get_execution_status", Fault.status(500), query_id=1003)
    emu.inject("get_pipeline_status", Fault.status(502), query_id=1001)
    assert api.get(f"/v1/execution/{other}/status").status_code == 200
    assert api.get(f"/v1/execution/{first}/status").status_code == 500
    assert api.get(f"/v1/execution/{first}/status").status_code == 200

    unrelated = api.run_query_pipeline(1003)
    related = api.run_query_pipeline(1001, query_parameters={"date": "2024-06-01"})
    assert api.get(f"/v1/pipelines/executions/{unrelated}/status").status_code == 200
    assert api.get(f"/v1/pipelines/executions/{related}/status").status_code == 502

    emu.inject("refresh_materialized_view", Fault.status(500), query_id=1000)
    refresh = "/v1/materialized-views/{}/refresh"
    assert api.post(refresh.format("dune.demo.result_token_prices_hourly"), json={}).status_code == 200
    assert api.post(refresh.format("dune.demo.result_dex_trades_daily"), json={}).status_code == 500

    emu.inject("execute_pipeline", Fault.status(500), query_id=1003)
    body = {"pipeline": {"nodes": [{"id": 1, "query_execution": {"query_id": 1003}}]}}
    assert api.post("/v1/pipelines/execute", json=body).status_code == 500


def test_query_specific_faults_come_before_general_ones(api: Api, emu: DuneEmulator) -> None:
    emu.inject("get_query", Fault.status(500))
    emu.inject("get_query", Fault.status(502), query_id=1001)
    assert api.get("/v1/query/1001").status_code == 502
    assert api.get("/v1/query/1001").status_code == 500
    assert api.get("/v1/query/1001").status_code == 200


def test_slow_fault(api: Api, emu: DuneEmulator) -> None:
    emu.inject("get_query", Fault.slow(0.3))
    started = time.monotonic()
    response = api.get("/v1/query/1001")
    assert response.status_code == 200
    assert time.monotonic() - started >= 0.3
    emu.inject("get_query", Fault.slow(0.5))
    with pytest.raises(requests.exceptions.ReadTimeout):
        api.get("/v1/query/1001", timeout=0.1)
    assert [r.fault for r in emu.requests] == ["slow", "slow"]


def test_malformed_fault(api: Api, emu: DuneEmulator) -> None:
    emu.inject("execute_query_pipeline", Fault.malformed())
    response = api.post("/v1/query/1001/pipeline/execute", json={"performance": "medium"})
    assert response.status_code == 200
    with pytest.raises(json.JSONDecodeError):
        json.loads(response.text)
    assert emu.executions_started() == 0  # the request was not performed
    assert emu.requests[-1].status == 200 and emu.requests[-1].fault == "malformed"


def test_drop_fault(api: Api, emu: DuneEmulator) -> None:
    emu.inject("execute_query", Fault.drop())
    with pytest.raises(requests.exceptions.ConnectionError):
        api.post("/v1/query/1003/execute", json={})
    assert emu.executions_started() == 0
    recorded = emu.requests[-1]
    assert (recorded.endpoint, recorded.status, recorded.fault) == ("execute_query", None, "drop")
    assert recorded.json_body == {}  # the request was read before the connection was closed
    assert api.post("/v1/query/1003/execute", json={}).status_code == 200
    assert emu.executions_started() == 1


def test_drop_after_processing_really_starts_the_run(api: Api, emu: DuneEmulator) -> None:
    emu.inject("execute_query_pipeline", Fault.drop_after_processing())
    with pytest.raises(requests.exceptions.ConnectionError):
        api.post("/v1/query/1001/pipeline/execute", json={"performance": "medium"})
    assert emu.executions_started() == 1
    assert emu.executions_started(1001) == 1
    assert emu.requests[-1].status is None

    view = "dune.demo.result_dex_trades_daily"
    emu.inject("refresh_materialized_view", Fault.drop_after_processing(times=2))
    for _ in range(2):
        with pytest.raises(requests.exceptions.ConnectionError):
            api.post(f"/v1/materialized-views/{view}/refresh", json={})
    # the refreshes exist: two from the drops, one from the query pipeline's lineage
    assert len(api.get(f"/v1/materialized-views/{view}").json()["last_execution_ids"]) == 3
    assert emu.executions_started() == 3
    assert emu.counts["refresh_materialized_view"] == 2


def test_faults_are_consumed_even_by_unauthorised_requests(emu: DuneEmulator) -> None:
    emu.inject("get_query", Fault.status(503))
    assert Api(emu, key="bad").get("/v1/query/1001").status_code == 503
    assert Api(emu, key="bad").get("/v1/query/1001").status_code == 401
    assert emu.counts["get_query"] == 2


def test_inject_validation(emu: DuneEmulator) -> None:
    with pytest.raises(ValueError, match="unknown endpoint"):
        emu.inject("execute", Fault.drop())
    with pytest.raises(TypeError):
        emu.inject("get_query", "drop")  # type: ignore[arg-type]
    with pytest.raises(ValueError, match="query_id"):
        emu.inject("get_query", Fault.drop(), query_id=0)
    with pytest.raises(ValueError, match="error code"):
        Fault.status(200)
    with pytest.raises(ValueError, match="times"):
        Fault.status(429, times=0)
    with pytest.raises(ValueError, match="seconds"):
        Fault.slow(-1)
    with pytest.raises(ValueError, match="retry_after"):
        Fault.status(429, retry_after=-1)


def test_fault_json_round_trip() -> None:
    faults = [
        Fault.status(429, "x", retry_after=1.5, times=2),
        Fault.slow(0.5),
        Fault.malformed(),
        Fault.drop(times=3),
        Fault.drop_after_processing(),
        Fault.drip(0.2, times=2),
        Fault.oversized(1024),
        Fault.echo_key(403),
        Fault.truncated(),
        Fault.redirect("https://elsewhere.example/", code=301),
    ]
    assert [Fault.from_dict(json.loads(json.dumps(f.to_dict()))) for f in faults] == faults
    with pytest.raises(ValueError, match="unknown fault kind"):
        Fault.from_dict({"kind": "explode"})
    with pytest.raises(ValueError, match="unknown fault field"):
        Fault.from_dict({"kind": "drop", "sometimes": True})


@pytest.mark.slow
def test_hostile_faults_over_raw_http(api: Api, emu: DuneEmulator) -> None:
    """What the hostile faults put on the wire, seen by a plain HTTP client."""
    emu.inject("get_usage", Fault.oversized(3 * 1024 * 1024))
    big = api.post("/v1/usage", json={})
    assert big.status_code == 200 and len(big.content) == 3 * 1024 * 1024
    emu.inject("get_usage", Fault.echo_key(401))
    echoed = api.post("/v1/usage", json={})
    assert echoed.status_code == 401 and WRITE_KEY in echoed.json()["error"]
    emu.inject("get_usage", Fault.redirect("https://elsewhere.example/api"))
    moved = api.post("/v1/usage", json={}, allow_redirects=False)
    assert moved.status_code == 307 and moved.headers["Location"] == "https://elsewhere.example/api"
    emu.inject("execute_query_pipeline", Fault.truncated())
    with pytest.raises(requests.exceptions.ChunkedEncodingError):
        api.post("/v1/query/1001/pipeline/execute", json={"performance": "medium"})
    assert emu.executions_started(1001) == 1  # performed, then the answer was cut
    emu.inject("get_usage", Fault.drip(0.01))
    started = time.monotonic()
    dripped = api.post("/v1/usage", json={})
    assert dripped.status_code == 200 and time.monotonic() - started >= 0.01 * len(dripped.content) * 0.8


# -- rate limits ------------------------------------------------------------------------------------------------


def test_rate_limit_per_key_and_bucket(clocked: DuneEmulator, clock: FakeClock) -> None:
    clocked.add_query(1, duration=1)
    clocked.set_rate_limit(read_per_minute=3, write_per_minute=2)
    write, read = Api(clocked), Api(clocked, key="read-key")
    assert [write.get("/v1/query/1").status_code for _ in range(4)] == [200, 200, 200, 429]
    limited = write.get("/v1/query/1")
    assert limited.json() == {"error": "Too many requests"}
    assert "Retry-After" not in limited.headers
    assert read.get("/v1/query/1").status_code == 200  # another key has its own buckets
    assert [write.post("/v1/query/1/execute").status_code for _ in range(3)] == [200, 200, 429]
    assert clocked.executions_started() == 2

    clock.advance(20)  # one read token back (3 per minute)
    assert [write.get("/v1/query/1").status_code for _ in range(2)] == [200, 429]
    clock.advance(60)
    assert [write.get("/v1/query/1").status_code for _ in range(4)] == [200, 200, 200, 429]

    clocked.set_rate_limit(None, None)
    assert all(write.get("/v1/query/1").status_code == 200 for _ in range(10))
    with pytest.raises(ValueError, match="positive integers"):
        clocked.set_rate_limit(0, None)


def test_rate_limit_applies_after_auth(clocked: DuneEmulator) -> None:
    clocked.add_query(1)
    clocked.set_rate_limit(read_per_minute=1, write_per_minute=None)
    bad = Api(clocked, key="nope")
    assert [bad.get("/v1/query/1").status_code for _ in range(3)] == [401, 401, 401]
    assert Api(clocked).get("/v1/query/1").status_code == 200


# -- bookkeeping ------------------------------------------------------------------------------------------------


def test_counts_and_executions_started(api: Api, emu: DuneEmulator) -> None:
    api.run_query_pipeline(1001, query_parameters={"date": "2024-06-01"})
    api.run_query_pipeline(1005)
    api.post("/v1/query/1003/execute", json={})
    api.post("/v1/query/1003/execute", json={"query_parameters": {"bad": 1}})  # 400: not started
    nodes = [
        {"id": 1, "query_execution": {"query_id": 1003}},
        {"id": 2, "dependencies": [1], "query_execution": {"query_id": 1099}},
    ]
    api.post("/v1/pipelines/execute", json={"pipeline": {"nodes": nodes}})
    api.post("/v1/materialized-views/dune.demo.result_dex_volume_usd/refresh", json={})
    Api(emu, key="bad").get("/v1/query/1001")
    assert emu.counts == {
        "execute_query_pipeline": 2,
        "execute_query": 2,
        "execute_pipeline": 1,
        "refresh_materialized_view": 1,
        "get_query": 1,
    }
    assert emu.executions_started() == 5
    assert emu.executions_started(1001) == 1
    assert emu.executions_started(1003) == 2  # the execute call and the explicit pipeline's node
    assert emu.executions_started(1099) == 1
    assert emu.executions_started(1004) == 1  # the refreshed view's query
    assert emu.executions_started(1000) == 0  # lineage nodes do not count as separate calls


def test_reset_forgets_runs_but_keeps_the_catalog(api: Api, emu: DuneEmulator) -> None:
    execution_id = api.post("/v1/query/1003/execute", json={}).json()["execution_id"]
    emu.inject("get_query", Fault.status(500))
    emu.reset()
    assert emu.counts == {} and emu.requests == [] and emu.executions_started() == 0
    assert api.get("/v1/query/1001").status_code == 200  # fault forgotten, query kept
    assert api.get(f"/v1/execution/{execution_id}/status").status_code == 404
    assert emu.counts == {"get_query": 1, "get_execution_status": 1}


def _every_endpoint_request(api: Api, emu: DuneEmulator, endpoint: str) -> tuple[str, str, dict[str, Any]]:
    """A valid request to ``endpoint`` on the demo catalog (setting up what it needs): method, path, options."""
    schema = [{"name": "a", "type": "integer"}]
    ndjson = {"data": b'{"a": 1}\n', "headers": {"Content-Type": "application/x-ndjson"}}
    if endpoint in ("insert_rows", "clear_table", "delete_table"):
        assert api.post("/v1/uploads", json={"namespace": "s", "table_name": "t", "schema": schema}).ok
        assert api.post("/v1/uploads/s/t/insert", **ndjson).ok
    if endpoint in ("get_pipeline_status",):
        return "GET", f"/v1/pipelines/executions/{api.run_query_pipeline(1001)}/status", {}
    execution = ""
    if endpoint in ("get_execution_status", "get_execution_results", "cancel_execution"):
        execution = api.post("/v1/query/1003/execute", json={}).json()["execution_id"]
    created = 0
    if endpoint in ("update_query", "upsert_materialized_view", "delete_materialized_view"):
        created = api.post("/v1/query", json={"name": "q", "query_sql": "SELECT 1"}).json()["query_id"]
    if endpoint == "delete_materialized_view":
        assert api.post("/v1/materialized-views", json={"name": "dune.s.result_code", "query_id": created}).ok
    view = "dune.demo.result_dex_trades_daily"
    requests_by_endpoint: dict[str, tuple[str, str, dict[str, Any]]] = {
        "execute_query_pipeline": ("POST", "/v1/query/1001/pipeline/execute", {"json": {"performance": "medium"}}),
        "execute_pipeline": (
            "POST",
            "/v1/pipelines/execute",
            {"json": {"pipeline": {"nodes": [{"id": 1, "query_execution": {"query_id": 1003}}]}}},
        ),
        "get_query_pipeline": ("GET", "/v1/query/1001/pipeline", {}),
        "execute_query": ("POST", "/v1/query/1003/execute", {"json": {}}),
        "get_execution_status": ("GET", f"/v1/execution/{execution}/status", {}),
        "get_execution_results": ("GET", f"/v1/execution/{execution}/results", {}),
        "get_query_results": ("GET", "/v1/query/1003/results", {}),
        "cancel_execution": ("POST", f"/v1/execution/{execution}/cancel", {}),
        "refresh_materialized_view": ("POST", f"/v1/materialized-views/{view}/refresh", {"json": {}}),
        "get_materialized_view": ("GET", f"/v1/materialized-views/{view}", {}),
        "get_query": ("GET", "/v1/query/1003", {}),
        "get_usage": ("POST", "/v1/usage", {"json": {}}),
        "create_query": ("POST", "/v1/query", {"json": {"name": "lost", "query_sql": "SELECT 1"}}),
        "update_query": ("PATCH", f"/v1/query/{created}", {"json": {"query_sql": "SELECT 2"}}),
        "execute_sql": ("POST", "/v1/sql/execute", {"json": {"sql": "SELECT 1", "performance": "medium"}}),
        "upsert_materialized_view": (
            "POST",
            "/v1/materialized-views",
            {"json": {"name": "dune.s.result_lost", "query_id": created}},
        ),
        "delete_materialized_view": ("DELETE", "/v1/materialized-views/dune.s.result_code", {}),
        "create_table": ("POST", "/v1/uploads", {"json": {"namespace": "s", "table_name": "u", "schema": schema}}),
        "insert_rows": ("POST", "/v1/uploads/s/t/insert", ndjson),
        "clear_table": ("POST", "/v1/uploads/s/t/clear", {}),
        "delete_table": ("DELETE", "/v1/uploads/s/t", {}),
    }
    return requests_by_endpoint[endpoint]


@pytest.mark.parametrize("endpoint", ENDPOINTS)
def test_any_endpoint_can_lose_its_answer_after_doing_the_work(api: Api, emu: DuneEmulator, endpoint: str) -> None:
    """``drop_after_processing`` works on every endpoint: the request is performed (a second, identical request
    then sees its effect where it has one) and the connection closes without an answer."""
    method, path, options = _every_endpoint_request(api, emu, endpoint)
    emu.inject(endpoint, Fault.drop_after_processing())
    with pytest.raises(requests.exceptions.ConnectionError):
        api.session.request(method, api.url + path, timeout=5, **options)
    recorded = emu.requests[-1]
    assert (recorded.endpoint, recorded.status, recorded.fault) == (endpoint, None, "drop_after_processing")
    again = api.session.request(method, api.url + path, timeout=5, **options)
    effects = {
        "create_table": lambda: again.json().get("already_existed") is True,
        "delete_materialized_view": lambda: again.status_code == 404,
        "delete_table": lambda: again.status_code == 404,
        "insert_rows": lambda: again.ok,
        "create_query": lambda: again.ok and again.json()["query_id"] != recorded.json_body,
    }
    if endpoint in effects:
        assert effects[endpoint](), (again.status_code, again.text)
    else:
        assert again.status_code < 500, (again.status_code, again.text)
