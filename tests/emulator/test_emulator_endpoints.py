"""Every endpoint of the Dune API emulator over real HTTP: happy paths, auth, 404s and validation."""

from __future__ import annotations

import io
import json
import re
import socket
import struct
import threading
import time
from concurrent.futures import ThreadPoolExecutor

import pytest
import requests

from airflow_provider_dune.testing.emulator import DuneEmulator
from tests.emulator.conftest import READ_KEY, Api, FakeClock

ULID = re.compile(r"^[0-9A-HJKMNP-TV-Z]{26}$")
TIMESTAMP = re.compile(r"^\d{4}-\d\d-\d\dT\d\d:\d\d:\d\d\.\d{9}Z$")
NOT_FOUND = {"error": "not found: Query not found or private"}


# -- queries and plans ------------------------------------------------------------------------------------------


def test_get_query(api: Api) -> None:
    response = api.get("/v1/query/1001")
    assert response.status_code == 200
    body = response.json()
    assert body["query_id"] == 1001
    assert body["name"] == "daily_dex_volume"
    assert [p["key"] for p in body["parameters"]] == ["date"]
    assert "dune.demo.result_dex_trades_daily" in body["query_sql"]
    assert body["is_archived"] is False and body["is_private"] is False


def test_get_query_pipeline_is_a_plan_in_dependency_order(api: Api, emu: DuneEmulator) -> None:
    response = api.get(
        "/v1/query/1005/pipeline",
        params={"performance": "large", "query_parameters": json.dumps({"week_start": "2024-06-03"})},
    )
    assert response.status_code == 200
    nodes = response.json()["pipeline"]["nodes"]
    assert nodes == [
        {
            "id": 1,
            "dependencies": [],
            "materialized_view_refresh": {"name": "dune.demo.result_dex_trades_daily", "performance": "large"},
        },
        {
            "id": 2,
            "dependencies": [],
            "materialized_view_refresh": {"name": "dune.demo.result_token_prices_hourly", "performance": "large"},
        },
        {
            "id": 3,
            "dependencies": [1, 2],
            "materialized_view_refresh": {"name": "dune.demo.result_dex_volume_usd", "performance": "large"},
        },
        {
            "id": 4,
            "dependencies": [3],
            "query_execution": {
                "query_id": 1005,
                "performance": "large",
                "query_parameters": {"week_start": "2024-06-03"},
            },
        },
    ]
    assert emu.executions_started() == 0


def test_query_without_lineage_has_a_single_node_plan(api: Api) -> None:
    nodes = api.get("/v1/query/1003/pipeline").json()["pipeline"]["nodes"]
    assert nodes == [
        {
            "id": 1,
            "dependencies": [],
            "query_execution": {"query_id": 1003, "performance": "medium", "query_parameters": {}},
        }
    ]


@pytest.mark.parametrize(
    ("params", "fragment"),
    [
        ({"query_parameters": '{"nope": 1}'}, "unknown parameters (nope); query 1001 has: date"),
        ({"query_parameters": "{not json"}, "query_parameters: not valid JSON"),
        ({"query_parameters": "[1]"}, "must be a JSON object"),
        ({"performance": "huge"}, "invalid performance 'huge'"),
    ],
)
def test_get_query_pipeline_rejects_bad_arguments(api: Api, params: dict[str, str], fragment: str) -> None:
    response = api.get("/v1/query/1001/pipeline", params=params)
    assert response.status_code == 400
    assert fragment in response.json()["error"]


# -- query executions -------------------------------------------------------------------------------------------


def test_execute_query_with_json_body(api: Api, emu: DuneEmulator) -> None:
    response = api.post("/v1/query/1003/execute", json={"query_parameters": {"symbol": "WETH"}, "performance": "large"})
    assert response.status_code == 200
    body = response.json()
    assert set(body) == {"execution_id", "state"}
    assert ULID.match(body["execution_id"])
    assert body["state"] == "QUERY_STATE_PENDING"
    assert emu.executions_started(1003) == 1


def test_execute_query_with_query_string_form(api: Api, emu: DuneEmulator) -> None:
    response = api.post(
        "/v1/query/1003/execute", params={"performance": "large", "query_parameters": json.dumps({"symbol": "WBTC"})}
    )
    assert response.status_code == 200
    assert emu.executions_started(1003) == 1
    bad = api.post("/v1/query/1003/execute", params={"query_parameters": json.dumps({"nope": "x"})})
    assert bad.status_code == 400
    assert "nope" in bad.json()["error"]


@pytest.mark.parametrize(
    ("path", "kwargs", "status", "fragment"),
    [
        ("/v1/query/1003/execute", {"json": {"performance": "huge"}}, 400, "'huge' is not one of ['medium', 'large']"),
        ("/v1/query/1003/execute", {"json": {"query_parameters": "symbol=WETH"}}, 400, "is not of type 'object'"),
        ("/v1/query/1003/execute", {"json": {"query_parameters": {"date": "x"}}}, 400, "unknown parameters (date)"),
        ("/v1/query/1003/execute", {"data": b"{broken", "headers": {"Content-Type": "application/json"}}, 400, "JSON"),
        ("/v1/query/1003/execute", {"json": [1, 2]}, 400, "expected a JSON object"),
        ("/v1/query/abc/execute", {"json": {}}, 400, "The requested query ID (ID: abc) is invalid."),
        ("/v1/query/424242/execute", {"json": {}}, 404, "not found: Query not found or private"),
    ],
)
def test_execute_query_errors(
    api: Api, emu: DuneEmulator, path: str, kwargs: dict[str, object], status: int, fragment: str
) -> None:
    response = api.post(path, **kwargs)  # type: ignore[arg-type]
    assert response.status_code == status, response.text
    assert fragment in response.json()["error"]
    assert emu.executions_started() == 0


def test_execution_status_lifecycle(clocked: DuneEmulator, capi: Api, clock: FakeClock) -> None:
    clocked.add_query(7, pending=1.0, duration=2.0, rows=[{"a": 1, "b": "x"}, {"a": 2, "b": "y"}])
    execution_id = capi.post("/v1/query/7/execute", json={"performance": "medium"}).json()["execution_id"]

    pending = capi.execution(execution_id)
    assert pending["state"] == "QUERY_STATE_PENDING"
    assert pending["is_execution_finished"] is False
    assert pending["queue_position"] == 1
    assert pending["query_id"] == 7 and pending["execution_id"] == execution_id
    assert TIMESTAMP.match(pending["submitted_at"])
    assert "execution_started_at" not in pending and "result_metadata" not in pending

    clock.advance(1.5)
    executing = capi.execution(execution_id)
    assert executing["state"] == "QUERY_STATE_EXECUTING"
    assert TIMESTAMP.match(executing["execution_started_at"])
    assert "execution_ended_at" not in executing and "queue_position" not in executing
    results = capi.get(f"/v1/execution/{execution_id}/results").json()
    assert results["state"] == "QUERY_STATE_EXECUTING" and results["is_execution_finished"] is False
    assert "result" not in results

    clock.advance(1.5)
    done = capi.execution(execution_id)
    assert done["state"] == "QUERY_STATE_COMPLETED"
    assert done["is_execution_finished"] is True
    assert done["submitted_at"] < done["execution_started_at"] < done["execution_ended_at"] < done["expires_at"]
    metadata = done["result_metadata"]
    assert metadata["column_names"] == ["a", "b"]
    assert metadata["column_types"] == ["bigint", "varchar"]
    assert metadata["total_row_count"] == 2
    assert metadata["pending_time_millis"] == 1000 and metadata["execution_time_millis"] == 2000
    assert done["execution_cost_credits"] > 0
    assert "error" not in done and "cancelled_at" not in done


def test_failed_execution_reports_dunes_error(clocked: DuneEmulator, capi: Api, clock: FakeClock) -> None:
    clocked.add_query(8, duration=1.0, error="line 3:8: Column 'amount_usdd' cannot be resolved")
    execution_id = capi.post("/v1/query/8/execute").json()["execution_id"]
    clock.advance(2)
    status = capi.execution(execution_id)
    assert status["state"] == "QUERY_STATE_FAILED"
    assert status["is_execution_finished"] is True
    assert status["error"] == {
        "type": "FAILED_TYPE_EXECUTION_FAILED",
        "message": "line 3:8: Column 'amount_usdd' cannot be resolved",
        "metadata": {"line": 3, "column": 8},
    }
    results = capi.get(f"/v1/execution/{execution_id}/results").json()
    assert results["state"] == "QUERY_STATE_FAILED" and "result" not in results
    assert results["error"]["message"].startswith("line 3:8")


def test_partial_result_is_failed_unless_asked_for(clocked: DuneEmulator, capi: Api, clock: FakeClock) -> None:
    rows = [{"n": i} for i in range(4)]
    clocked.add_query(18, duration=0.5, rows=rows, partial=True)
    execution_id = capi.post("/v1/query/18/execute").json()["execution_id"]
    assert capi.execution(execution_id)["state"] == "QUERY_STATE_EXECUTING"  # partial only once it ended
    clock.advance(1)
    status = capi.execution(execution_id)
    assert status["state"] == "QUERY_STATE_COMPLETED_PARTIAL"
    assert status["is_execution_finished"] is True
    assert status["result_metadata"]["row_count"] == 4

    # Dune's spec: "By default allow_partial_results is set to false and a failed state is returned."
    refused = capi.get(f"/v1/execution/{execution_id}/results").json()
    assert refused["state"] == "QUERY_STATE_FAILED" and "result" not in refused
    assert "allow_partial_results" in refused["error"]["message"]
    allowed = capi.get(f"/v1/execution/{execution_id}/results", params={"allow_partial_results": "true"}).json()
    assert allowed["state"] == "QUERY_STATE_COMPLETED_PARTIAL"
    assert allowed["result"]["rows"] == rows
    latest = capi.get("/v1/query/18/results", params={"allow_partial_results": "true"}).json()
    assert latest["execution_id"] == execution_id and latest["result"]["rows"] == rows
    bad = capi.get(f"/v1/execution/{execution_id}/results", params={"allow_partial_results": "maybe"})
    assert bad.status_code == 400


def test_results_pagination_follows_next_uri(clocked: DuneEmulator, capi: Api, clock: FakeClock) -> None:
    rows = [{"n": i, "label": f"row-{i}"} for i in range(7)]
    clocked.add_query(9, duration=0.1, rows=rows)
    execution_id = capi.post("/v1/query/9/execute").json()["execution_id"]
    clock.advance(1)

    everything = capi.get(f"/v1/execution/{execution_id}/results").json()
    assert everything["result"]["rows"] == rows
    assert "next_uri" not in everything and "next_offset" not in everything

    collected: list[dict[str, object]] = []
    page = capi.get(f"/v1/execution/{execution_id}/results", params={"limit": 3}).json()
    pages = 1
    while True:
        collected.extend(page["result"]["rows"])
        assert page["result"]["metadata"]["row_count"] == len(page["result"]["rows"])
        assert page["result"]["metadata"]["total_row_count"] == 7
        if "next_uri" not in page:
            break
        assert page["next_uri"].startswith(clocked.url + f"/v1/execution/{execution_id}/results?")
        assert f"offset={page['next_offset']}" in page["next_uri"]
        page = capi.session.get(page["next_uri"], timeout=5).json()
        pages += 1
    assert collected == rows
    assert pages == 3

    beyond = capi.get(f"/v1/execution/{execution_id}/results", params={"limit": 3, "offset": 50}).json()
    assert beyond["result"]["rows"] == []
    for bad in ({"limit": "x"}, {"limit": 0}, {"offset": -1}):
        response = capi.get(f"/v1/execution/{execution_id}/results", params=bad)
        assert response.status_code == 400, bad


def test_query_results_returns_the_latest_run(clocked: DuneEmulator, capi: Api, clock: FakeClock) -> None:
    clocked.add_query(11, duration=1.0, rows=[{"x": i} for i in range(4)])
    historical = capi.get("/v1/query/11/results").json()
    assert historical["state"] == "QUERY_STATE_COMPLETED"
    assert historical["result"]["rows"] == [{"x": i} for i in range(4)]

    execution_id = capi.post("/v1/query/11/execute").json()["execution_id"]
    running = capi.get("/v1/query/11/results").json()
    assert running["execution_id"] != execution_id  # still running: the previous result is the latest
    clock.advance(2)
    latest = capi.get("/v1/query/11/results", params={"limit": 1}).json()
    assert latest["execution_id"] == execution_id
    assert latest["result"]["rows"] == [{"x": 0}]
    assert latest["next_offset"] == 1
    assert capi.get("/v1/query/999/results").json() == NOT_FOUND


def test_cancel_execution(clocked: DuneEmulator, capi: Api, clock: FakeClock) -> None:
    clocked.add_query(12, pending=0.5, duration=10)
    running = capi.post("/v1/query/12/execute").json()["execution_id"]
    queued = capi.post("/v1/query/12/execute").json()["execution_id"]
    clock.advance(1)
    assert capi.post(f"/v1/execution/{running}/cancel").json() == {"success": True}
    status = capi.execution(running)
    assert status["state"] == "QUERY_STATE_CANCELLED"
    assert status["is_execution_finished"] is True
    assert TIMESTAMP.match(status["cancelled_at"]) and "execution_started_at" in status
    assert capi.post(f"/v1/execution/{running}/cancel").json() == {"success": False}
    clock.advance(100)
    assert capi.execution(running)["state"] == "QUERY_STATE_CANCELLED"  # stays cancelled
    assert capi.post(f"/v1/execution/{queued}/cancel").json() == {"success": False}  # completed meanwhile
    assert capi.execution(queued)["state"] == "QUERY_STATE_COMPLETED"


def test_cancel_while_queued(clocked: DuneEmulator, capi: Api, clock: FakeClock) -> None:
    clocked.add_query(13, pending=5, duration=5)
    execution_id = capi.post("/v1/query/13/execute").json()["execution_id"]
    clock.advance(1)
    assert capi.post(f"/v1/execution/{execution_id}/cancel").json() == {"success": True}
    status = capi.execution(execution_id)
    assert status["state"] == "QUERY_STATE_CANCELLED"
    assert "execution_started_at" not in status


# -- materialized views and usage -------------------------------------------------------------------------------


def test_refresh_and_describe_materialized_view(clocked: DuneEmulator, capi: Api, clock: FakeClock) -> None:
    clocked.add_materialized_view("dune.team.result_x", query_id=20, duration=1)
    response = capi.post("/v1/materialized-views/dune.team.result_x/refresh", json={"performance": "large"})
    assert response.status_code == 200
    body = response.json()
    assert body["sql_id"] == "dune.team.result_x"
    assert ULID.match(body["execution_id"])
    assert capi.execution(body["execution_id"])["query_id"] == 20
    clock.advance(2)
    assert capi.execution(body["execution_id"])["state"] == "QUERY_STATE_COMPLETED"

    view = capi.get("/v1/materialized-views/dune.team.result_x").json()
    assert view["query_id"] == 20
    assert view["sql_id"] == view["id"] == "dune.team.result_x"
    assert view["last_execution_ids"] == [body["execution_id"]]
    assert capi.get("/v1/query/20").status_code == 200  # the view's query exists too
    assert clocked.executions_started(20) == 1


def test_refresh_without_body_and_errors(api: Api) -> None:
    assert api.post("/v1/materialized-views/dune.demo.result_dex_trades_daily/refresh").status_code == 200
    bad = api.post("/v1/materialized-views/dune.demo.result_dex_trades_daily/refresh", json={"performance": "xl"})
    assert bad.status_code == 400
    assert "invalid performance" in bad.json()["error"]
    bad_type = api.post("/v1/materialized-views/dune.demo.result_dex_trades_daily/refresh", json={"performance": 1})
    assert bad_type.status_code == 400
    assert "is not of type 'string'" in bad_type.json()["error"]
    assert api.post("/v1/materialized-views/dune.nope.result_y/refresh").json() == NOT_FOUND
    assert api.get("/v1/materialized-views/dune.nope.result_y").json() == NOT_FOUND


def test_usage_counts_credits(clocked: DuneEmulator, capi: Api, clock: FakeClock) -> None:
    clocked.add_query(30, duration=10)
    before = capi.post("/v1/usage", json={}).json()
    assert before["billing_periods"][0]["credits_used"] == 0
    capi.post("/v1/query/30/execute")
    clock.advance(20)
    after = capi.post("/v1/usage").json()
    assert after["billing_periods"][0]["credits_used"] > 0
    assert capi.post("/v1/usage", json={"start_date": 5}).status_code == 400


# -- auth, 404s, routing ----------------------------------------------------------------------------------------


@pytest.mark.parametrize("key", [None, "", "wrong-key"])
def test_missing_or_wrong_key_is_401(emu: DuneEmulator, key: str | None) -> None:
    client = Api(emu, key=key)
    for response in (client.get("/v1/query/1001"), client.post("/v1/query/1001/pipeline/execute", json={})):
        assert response.status_code == 401
        assert response.json() == {"error": "invalid API Key"}
    assert emu.counts == {"get_query": 1, "execute_query_pipeline": 1}
    assert emu.executions_started() == 0


def test_api_key_query_parameter_is_accepted_and_masked(emu: DuneEmulator) -> None:
    client = Api(emu, key=None)
    assert client.get("/v1/query/1001", params={"api_key": "test-key"}).status_code == 200
    recorded = emu.requests[-1]
    assert recorded.query == {"api_key": "***"}
    assert "test-key" not in repr(recorded)


def test_read_key_is_403_on_writes_only(emu: DuneEmulator) -> None:
    client = Api(emu, key=READ_KEY)
    writes = [
        client.post("/v1/query/1001/pipeline/execute", json={"performance": "medium"}),
        client.post("/v1/pipelines/execute", json={"pipeline": {"nodes": []}}),
        client.post("/v1/query/1003/execute", json={}),
        client.post("/v1/materialized-views/dune.demo.result_dex_trades_daily/refresh", json={}),
        client.post("/v1/execution/01HKZJ2683PHF9Q9PHHQ8FW4Q1/cancel"),
    ]
    assert [r.status_code for r in writes] == [403] * 5
    assert "not enough permissions" in writes[0].json()["error"]
    assert emu.executions_started() == 0
    reads = [
        client.get("/v1/query/1001"),
        client.get("/v1/query/1001/pipeline"),
        client.get("/v1/materialized-views/dune.demo.result_dex_trades_daily"),
        client.get("/v1/query/1003/results"),
        client.post("/v1/usage", json={}),
    ]
    assert [r.status_code for r in reads] == [200] * 5


@pytest.mark.parametrize(
    ("method", "path"),
    [
        ("GET", "/v1/query/424242"),
        ("GET", "/v1/query/424242/pipeline"),
        ("POST", "/v1/query/424242/pipeline/execute"),
        ("GET", "/v1/pipelines/executions/01HKZJ2683PHF9Q9PHHQ8FW4Q1/status"),
        ("GET", "/v1/execution/01HKZJ2683PHF9Q9PHHQ8FW4Q1/status"),
        ("GET", "/v1/execution/01HKZJ2683PHF9Q9PHHQ8FW4Q1/results"),
        ("POST", "/v1/execution/01HKZJ2683PHF9Q9PHHQ8FW4Q1/cancel"),
        ("GET", "/v1/query/424242/results"),
    ],
)
def test_unknown_ids_are_404(api: Api, method: str, path: str) -> None:
    response = api.session.request(method, api.url + path, json={"performance": "medium"}, timeout=5)
    assert response.status_code == 404
    assert response.json() == NOT_FOUND


def test_unknown_paths_and_methods(api: Api, emu: DuneEmulator) -> None:
    response = api.get("/v1/no/such/thing")
    assert response.status_code == 404
    assert "not found" in response.json()["error"]
    outside = api.session.get(emu.base_url + "/elsewhere", timeout=5)
    assert outside.status_code == 404
    wrong_method = api.get("/v1/query/1001/execute")
    assert wrong_method.status_code == 405
    assert wrong_method.headers["Allow"] == "POST"
    assert emu.counts["unknown"] == 3


def test_requests_are_recorded_with_keys_masked(api: Api, emu: DuneEmulator) -> None:
    api.post("/v1/query/1003/execute", json={"query_parameters": {"symbol": "WETH"}})
    recorded = emu.requests[-1]
    assert recorded.method == "POST"
    assert recorded.path == "/api/v1/query/1003/execute"
    assert recorded.endpoint == "execute_query"
    assert recorded.json_body == {"query_parameters": {"symbol": "WETH"}}
    assert recorded.status == 200
    assert recorded.fault is None
    headers = {k.lower(): v for k, v in recorded.headers.items()}
    assert headers["x-dune-api-key"] == "***"
    assert "test-key" not in json.dumps(recorded.headers)
    assert json.loads(recorded.response_body)["state"] == "QUERY_STATE_PENDING"


# -- HTTP behaviour ---------------------------------------------------------------------------------------------


def test_keep_alive_and_content_length(api: Api) -> None:
    first = api.get("/v1/query/1001")
    second = api.get("/v1/query/1003")
    assert first.raw.version == 11
    assert int(first.headers["Content-Length"]) == len(first.content)
    assert first.headers["Content-Type"] == "application/json"
    assert second.status_code == 200
    assert first.headers.get("Connection", "").lower() != "close"


def test_many_concurrent_connections(emu: DuneEmulator) -> None:
    def one(i: int) -> int:
        with requests.Session() as session:
            session.headers["X-Dune-Api-Key"] = "test-key"
            if i % 2:
                return session.post(f"{emu.url}/v1/query/1003/execute", json={}, timeout=10).status_code
            return session.get(f"{emu.url}/v1/query/1001", timeout=10).status_code

    with ThreadPoolExecutor(max_workers=32) as pool:
        statuses = list(pool.map(one, range(96)))
    assert statuses == [200] * 96
    assert emu.counts == {"get_query": 48, "execute_query": 48}
    assert emu.executions_started(1003) == 48


def test_no_thread_per_run(clocked: DuneEmulator, capi: Api) -> None:
    clocked.add_query(40, duration=60)
    capi.get("/v1/query/40")  # the connection's handler thread exists from now on
    before = threading.active_count()
    for _ in range(20):
        assert capi.post("/v1/query/40/execute").status_code == 200
    assert threading.active_count() <= before  # threads of earlier tests' connections may still be exiting


def test_verbose_logs_method_path_status_without_secrets() -> None:
    stream = io.StringIO()
    with DuneEmulator(api_keys={"secret-key-1": "write"}, verbose=True, log_stream=stream) as emulator:
        requests.get(f"{emulator.url}/v1/query/5", params={"api_key": "secret-key-1"}, timeout=5)
        requests.get(f"{emulator.url}/v1/query/5", headers={"X-Dune-Api-Key": "secret-key-1"}, timeout=5)
    lines = stream.getvalue().splitlines()
    assert lines == ["dune-emulator: GET /api/v1/query/5 -> 404", "dune-emulator: GET /api/v1/query/5 -> 404"]
    assert "secret-key-1" not in stream.getvalue()


def test_a_client_that_resets_its_connection_prints_no_traceback(
    capsys: pytest.CaptureFixture[str], emu: DuneEmulator, api: Api
) -> None:
    host, port = emu.url.split("//", 1)[1].split("/", 1)[0].rsplit(":", 1)
    for _ in range(3):
        with socket.create_connection((host, int(port)), timeout=5) as sock:
            sock.sendall(b"GET /api/v1/query/1001 HTTP/1.1\r\n")  # the request line only, then a reset
            sock.setsockopt(socket.SOL_SOCKET, socket.SO_LINGER, struct.pack("ii", 1, 0))
    assert api.get("/v1/query/1001").status_code == 200  # the emulator still answers
    time.sleep(0.2)  # the handler threads of the reset connections have ended
    assert "Traceback" not in capsys.readouterr().err


def test_quiet_by_default(capsys: pytest.CaptureFixture[str], emu: DuneEmulator, api: Api) -> None:
    api.get("/v1/query/1001")
    api.get("/v1/nope")
    captured = capsys.readouterr()
    assert captured.out == "" and captured.err == ""
