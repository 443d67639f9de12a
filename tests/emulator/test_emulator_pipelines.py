"""Pipelines in the Dune API emulator: lifecycle over time, dependency order, failures, cancellation, validation."""

from __future__ import annotations

import time
from typing import Any

import pytest

from airflow_provider_dune.testing.emulator import DuneEmulator
from tests.emulator.conftest import Api, FakeClock, node_status

A = "dune.team.result_a"
B = "dune.team.result_b"
C = "dune.team.result_c"


def statuses(body: dict[str, Any]) -> list[str]:
    return [node_status(node)["status"] for node in body["node_executions"]]


def execution_ids(body: dict[str, Any]) -> list[str | None]:
    return [node_status(node).get("execution_id") or None for node in body["node_executions"]]


def test_query_pipeline_lifecycle(clocked: DuneEmulator, capi: Api, clock: FakeClock) -> None:
    clocked.add_materialized_view(A, query_id=100, pending=1.0, duration=2.0)
    clocked.add_query(101, depends_on=[A], pending=0.5, duration=1.0, parameters=["date"])
    pipeline_id = capi.run_query_pipeline(101, query_parameters={"date": "2024-06-01"})

    body = capi.pipeline(pipeline_id)
    assert body["status"] == "pending" and body["error"] == ""
    assert statuses(body) == ["pending", "pending"]
    view_id, query_id = execution_ids(body)
    assert view_id is not None and query_id is None  # the query has not started: no execution id yet
    assert body["node_executions"][0] == {
        "id": 1,
        "materialized_view_refresh_status": {"status": "pending", "name": A, "execution_id": view_id, "error": ""},
    }
    assert body["node_executions"][1]["query_execution_status"]["query_id"] == 101

    clock.advance(1.5)
    body = capi.pipeline(pipeline_id)
    assert (body["status"], statuses(body)) == ("executing", ["executing", "pending"])
    assert execution_ids(body)[1] is None
    assert capi.execution(view_id)["state"] == "QUERY_STATE_EXECUTING"

    clock.advance(1.6)  # t=3.1: the view completed at t=3, the query is queued
    body = capi.pipeline(pipeline_id)
    assert (body["status"], statuses(body)) == ("executing", ["completed", "pending"])
    query_execution = execution_ids(body)[1]
    assert query_execution is not None and query_execution != view_id
    query_status = capi.execution(query_execution)
    assert query_status["state"] == "QUERY_STATE_PENDING" and query_status["query_id"] == 101

    clock.advance(0.5)
    assert statuses(capi.pipeline(pipeline_id)) == ["completed", "executing"]
    clock.advance(1.0)
    body = capi.pipeline(pipeline_id)
    assert (body["status"], statuses(body), body["error"]) == ("completed", ["completed", "completed"], "")
    assert execution_ids(body) == [view_id, query_execution]
    view_done, query_done = capi.execution(view_id), capi.execution(query_execution)
    assert view_done["state"] == query_done["state"] == "QUERY_STATE_COMPLETED"
    assert view_done["execution_ended_at"] <= query_done["submitted_at"]


def test_diamond_runs_in_dependency_order(clocked: DuneEmulator, capi: Api, clock: FakeClock) -> None:
    clocked.add_materialized_view(A, query_id=110, duration=1.0)
    clocked.add_materialized_view(B, query_id=111, duration=3.0)
    clocked.add_materialized_view(C, query_id=112, duration=1.0)
    clocked.add_query(112, depends_on=[A, B])  # the view's own query carries the lineage
    clocked.add_query(113, depends_on=[C, A], duration=1.0)
    pipeline_id = capi.run_query_pipeline(113)

    plan = capi.get("/v1/query/113/pipeline").json()["pipeline"]["nodes"]
    names = [n.get("materialized_view_refresh", {}).get("name") for n in plan]
    assert names == [A, B, C, None]
    assert [n["dependencies"] for n in plan] == [[], [], [1, 2], [3, 1]]

    seen: list[list[str]] = []
    for _ in range(7):
        seen.append(statuses(capi.pipeline(pipeline_id)))
        clock.advance(0.9)
    assert seen[0] == ["executing", "executing", "pending", "pending"]
    assert seen[2] == ["completed", "executing", "pending", "pending"]  # C waits for the slower B
    assert seen[4] == ["completed", "completed", "executing", "pending"]
    assert seen[5] == ["completed", "completed", "completed", "executing"]
    assert seen[6] == ["completed"] * 4

    body = capi.pipeline(pipeline_id)
    times = {n["id"]: capi.execution(node_status(n)["execution_id"]) for n in body["node_executions"]}
    assert times[3]["submitted_at"] >= max(times[1]["execution_ended_at"], times[2]["execution_ended_at"])
    assert times[4]["submitted_at"] >= times[3]["execution_ended_at"]


def test_failed_node_cancels_its_dependants(clocked: DuneEmulator, capi: Api, clock: FakeClock) -> None:
    clocked.add_materialized_view(A, query_id=120, duration=1.0, error="line 2:1: Table 'x' does not exist")
    clocked.add_materialized_view(B, query_id=121, duration=3.0)
    clocked.add_query(122, duration=1.0)
    nodes = [
        {"id": 1, "materialized_view_refresh": {"name": A}},
        {"id": 2, "dependencies": [1], "query_execution": {"query_id": 122}},
        {"id": 3, "dependencies": [2], "query_execution": {"query_id": 122}},
        {"id": 4, "materialized_view_refresh": {"name": B, "performance": "large"}},
    ]
    response = capi.post("/v1/pipelines/execute", json={"pipeline": {"nodes": nodes}})
    assert response.status_code == 200
    pipeline_id = response.json()["pipeline_execution_id"]

    clock.advance(1.5)
    body = capi.pipeline(pipeline_id)
    assert statuses(body) == ["failed", "cancelled", "cancelled", "executing"]
    assert body["status"] == "executing"  # node 4 is still running
    assert body["error"] == ""
    failed = node_status(body["node_executions"][0])
    assert failed["error"] == "line 2:1: Table 'x' does not exist"
    assert execution_ids(body)[1:3] == [None, None]  # cancelled before they started
    assert capi.execution(failed["execution_id"])["error"]["message"] == failed["error"]

    clock.advance(2)
    body = capi.pipeline(pipeline_id)
    assert statuses(body) == ["failed", "cancelled", "cancelled", "completed"]
    assert body["status"] == "failed"
    assert body["error"] == f"node 1 (materialized view {A}) failed: line 2:1: Table 'x' does not exist"


def test_failing_query_node_names_the_query(clocked: DuneEmulator, capi: Api, clock: FakeClock) -> None:
    clocked.add_query(130, duration=0.5, error="boom")
    pipeline_id = capi.run_query_pipeline(130)
    clock.advance(1)
    body = capi.pipeline(pipeline_id)
    assert (body["status"], body["error"]) == ("failed", "node 1 (query 130) failed: boom")


def test_cancel_a_running_node(clocked: DuneEmulator, capi: Api, clock: FakeClock) -> None:
    clocked.add_materialized_view(A, query_id=140, duration=10.0)
    clocked.add_query(141, depends_on=[A], duration=1.0)
    pipeline_id = capi.run_query_pipeline(141)
    clock.advance(1)
    view_execution = execution_ids(capi.pipeline(pipeline_id))[0]
    assert view_execution is not None
    assert capi.post(f"/v1/execution/{view_execution}/cancel").json() == {"success": True}

    body = capi.pipeline(pipeline_id)
    assert statuses(body) == ["cancelled", "cancelled"]
    assert body["status"] == "cancelled"
    assert body["error"] == f"node 1 (materialized view {A}) was cancelled"
    assert execution_ids(body)[1] is None
    assert capi.execution(view_execution)["state"] == "QUERY_STATE_CANCELLED"
    clock.advance(60)
    assert capi.pipeline(pipeline_id)["status"] == "cancelled"
    assert capi.post(f"/v1/execution/{view_execution}/cancel").json() == {"success": False}


def test_query_state_node_style(clocked: DuneEmulator, capi: Api, clock: FakeClock) -> None:
    clocked.add_materialized_view(A, query_id=150, duration=1.0)
    clocked.add_query(151, depends_on=[A], duration=1.0, error="bad")
    clocked.node_state_style = "query_state"
    pipeline_id = capi.run_query_pipeline(151)
    body = capi.pipeline(pipeline_id)
    assert statuses(body) == ["QUERY_STATE_EXECUTING", "QUERY_STATE_PENDING"]
    assert body["status"] == "executing"  # the overall status stays lowercase
    clock.advance(5)
    body = capi.pipeline(pipeline_id)
    assert statuses(body) == ["QUERY_STATE_COMPLETED", "QUERY_STATE_FAILED"]
    assert body["status"] == "failed"
    clocked.node_state_style = "lower"
    assert statuses(capi.pipeline(pipeline_id)) == ["completed", "failed"]
    with pytest.raises(ValueError, match="node_state_style"):
        clocked.node_state_style = "UPPER"  # type: ignore[assignment]


def test_explicit_pipeline_keeps_request_order(clocked: DuneEmulator, capi: Api, clock: FakeClock) -> None:
    clocked.add_materialized_view(A, query_id=160, duration=1.0)
    clocked.add_query(161, duration=1.0, parameters=["date"])
    nodes = [
        {"id": 7, "dependencies": [3], "query_execution": {"query_id": 161, "query_parameters": {"date": "d"}}},
        {"id": 3, "dependencies": [], "materialized_view_refresh": {"name": A, "performance": "medium"}},
    ]
    pipeline_id = capi.post("/v1/pipelines/execute", json={"pipeline": {"nodes": nodes}}).json()[
        "pipeline_execution_id"
    ]
    body = capi.pipeline(pipeline_id)
    assert [n["id"] for n in body["node_executions"]] == [7, 3]
    assert statuses(body) == ["pending", "executing"]
    clock.advance(3)
    assert capi.pipeline(pipeline_id)["status"] == "completed"
    assert clocked.executions_started(161) == 1
    assert clocked.executions_started() == 1


def _explicit(*nodes: dict[str, Any]) -> dict[str, Any]:
    return {"pipeline": {"nodes": list(nodes)}}


QE = {"query_execution": {"query_id": 1003}}
MV = {"materialized_view_refresh": {"name": "dune.demo.result_dex_trades_daily"}}


@pytest.mark.parametrize(
    ("body", "status", "fragment"),
    [
        ({}, 400, "pipeline.nodes is required"),
        (_explicit(), 400, "non-empty"),
        ({"pipeline": {"nodes": "x"}}, 400, "is not of type 'array'"),
        (_explicit({"id": "one", **QE}), 400, "is not of type 'integer'"),
        (_explicit({"id": 1, "query_execution": {"query_id": 1003, "performance": "huge"}}), 400, "'huge' is not one"),
        (_explicit({"id": 1}), 400, "pipeline node 1: must have exactly one of"),
        (_explicit({"id": 1, **QE, **MV}), 400, "pipeline node 1: must have exactly one of"),
        (_explicit({"id": 1, **QE}, {"id": 1, **MV}), 400, "pipeline node 1: duplicate node id"),
        (_explicit({"id": 1, "dependencies": [9], **QE}), 400, "pipeline node 1: dependency 9 is not a node"),
        (_explicit({"id": 1, "dependencies": [1], **QE}), 400, "pipeline node 1: a node cannot depend on itself"),
        (
            _explicit({"id": 1, "dependencies": [2], **QE}, {"id": 2, "dependencies": [1], **MV}),
            400,
            "dependency cycle: 1 -> 2 -> 1",
        ),
        (_explicit({"id": 1, "query_execution": {}}), 400, "pipeline node 1: query_execution.query_id is required"),
        (_explicit({"id": 1, "materialized_view_refresh": {}}), 400, "materialized_view_refresh.name is required"),
        (
            _explicit({"id": 1, **QE}, {"id": 2, "query_execution": {"query_id": 4242}}),
            404,
            "pipeline node 2: not found",
        ),
        (_explicit({"id": 5, "materialized_view_refresh": {"name": "dune.x.nope"}}), 404, "pipeline node 5: not found"),
        (
            _explicit({"id": 3, "query_execution": {"query_id": 1003, "query_parameters": {"zzz": 1}}}),
            400,
            "pipeline node 3: unknown parameters (zzz); query 1003 has: symbol",
        ),
    ],
)
def test_explicit_pipeline_validation(
    api: Api, emu: DuneEmulator, body: dict[str, Any], status: int, fragment: str
) -> None:
    response = api.post("/v1/pipelines/execute", json=body)
    assert response.status_code == status, response.text
    assert fragment in response.json()["error"]
    assert emu.executions_started() == 0


@pytest.mark.parametrize(
    ("body", "status", "fragment"),
    [
        (None, 400, "'performance' is a required property"),
        ({}, 400, "'performance' is a required property"),
        ({"performance": "small"}, 400, "'small' is not one of ['medium', 'large']"),
        ({"performance": "medium", "query_parameters": []}, 400, "is not of type 'object'"),
        ({"performance": "medium", "query_parameters": {"day": "x"}}, 400, "unknown parameters (day)"),
    ],
)
def test_query_pipeline_body_validation(
    api: Api, emu: DuneEmulator, body: dict[str, Any] | None, status: int, fragment: str
) -> None:
    response = api.post("/v1/query/1001/pipeline/execute", json=body)
    assert response.status_code == status, response.text
    assert fragment in response.json()["error"]
    assert emu.executions_started() == 0


def test_broken_lineage_is_reported(clocked: DuneEmulator, capi: Api) -> None:
    clocked.add_query(170, depends_on=["dune.x.missing"])
    response = capi.post("/v1/query/170/pipeline/execute", json={"performance": "medium"})
    assert response.status_code == 404
    assert "dune.x.missing" in response.json()["error"]
    clocked.add_materialized_view(A, query_id=171, depends_on=[B])
    clocked.add_materialized_view(B, query_id=172, depends_on=[A])
    clocked.add_query(173, depends_on=[A])
    response = capi.get("/v1/query/173/pipeline")
    assert response.status_code == 400
    assert f"cycle: {A} -> {B} -> {A}" in response.json()["error"]


def test_runs_snapshot_the_catalog(clocked: DuneEmulator, capi: Api, clock: FakeClock) -> None:
    clocked.add_query(180, duration=1.0)
    pipeline_id = capi.run_query_pipeline(180)
    clocked.add_query(180, duration=1.0, error="changed later")  # affects new runs only
    clock.advance(2)
    assert capi.pipeline(pipeline_id)["status"] == "completed"
    second = capi.run_query_pipeline(180)
    clock.advance(2)
    assert capi.pipeline(second)["status"] == "failed"


def test_real_clock_pipeline_completes(api: Api) -> None:
    pipeline_id = api.run_query_pipeline(1001, query_parameters={"date": "2024-06-01"})
    seen = set()
    deadline = time.monotonic() + 5
    while (body := api.pipeline(pipeline_id))["status"] not in ("completed", "failed", "cancelled"):
        seen.add(body["status"])
        assert time.monotonic() < deadline
        time.sleep(0.02)
    assert body["status"] == "completed"
    assert "executing" in seen
    query_execution = node_status(body["node_executions"][-1])["execution_id"]
    rows = api.get(f"/v1/execution/{query_execution}/results").json()["result"]["rows"]
    assert len(rows) == 7 and rows[0]["project"] == "uniswap"


def test_real_clock_failing_lineage(api: Api) -> None:
    pipeline_id = api.run_query_pipeline(1007)
    deadline = time.monotonic() + 5
    while (body := api.pipeline(pipeline_id))["status"] != "failed":
        assert time.monotonic() < deadline
        time.sleep(0.02)
    assert statuses(body) == ["failed", "cancelled"]
    assert "dune.demo.result_wallet_balances" in body["error"]
