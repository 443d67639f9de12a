"""The emulator's response profiles, and Dune's error behaviours that do not depend on them.

``realistic`` draws each answer from the shapes in ``REAL_SHAPES.md``; ``strict`` sends the spec's ideal.
"""

from __future__ import annotations

import copy
import json
import time
from collections.abc import Iterator
from typing import Any

import pytest
import requests

from airflow_provider_dune.testing._profiles import (
    DATAPOINT_LIMIT_MESSAGE,
    PARTIAL_RESULT_MESSAGE,
    SHAPES,
    ZERO_TIMESTAMP,
    ResponseProfile,
)
from airflow_provider_dune.testing.emulator import DuneEmulator, _parser
from tests.emulator.conftest import WRITE_KEY, Api

RUNNING_STATES = ("QUERY_STATE_PENDING", "QUERY_STATE_EXECUTING")
WIDE_COLUMNS = 30
WIDE_ROWS = [{f"c{column:02d}": row * column for column in range(WIDE_COLUMNS)} for row in range(9_000)]

COMPLETED = {
    "execution_id": "01HKZJ2683PHF9Q9PHHQ8FW4Q1",
    "query_id": 1,
    "state": "QUERY_STATE_COMPLETED",
    "is_execution_finished": True,
    "submitted_at": "2026-01-01T00:00:00.000000000Z",
    "execution_ended_at": "2026-01-01T00:00:01.000000000Z",
    "expires_at": "2026-04-01T00:00:01.000000000Z",
    "result_metadata": {
        "column_names": ["a"],
        "row_count": 1,
        "total_row_count": 1,
        "pending_time_millis": 3,
        "execution_time_millis": 5,
    },
}
PENDING = {"execution_id": "01HKZJ2683PHF9Q9PHHQ8FW4Q1", "state": "QUERY_STATE_PENDING", "is_execution_finished": False}
CANCELLED = {"execution_id": "01HKZJ2683PHF9Q9PHHQ8FW4Q1", "state": "QUERY_STATE_CANCELLED"}
FAILED = {
    "execution_id": "01HKZJ2683PHF9Q9PHHQ8FW4Q1",
    "state": "QUERY_STATE_FAILED",
    "error": {"type": "FAILED_TYPE_EXECUTION_FAILED", "message": "x", "metadata": {"line": 1, "column": 2}},
}
RESULTS = {
    **{k: v for k, v in COMPLETED.items() if k != "result_metadata"},
    "result": {"rows": [{"a": 1}], "metadata": dict(COMPLETED["result_metadata"])},  # type: ignore[call-overload]
}
PIPELINE = {
    "status": "completed",
    "error": "",
    "node_executions": [{"id": 1, "query_execution_status": {"status": "completed", "query_id": 1}}],
}

# (endpoint, ideal body, does the answer show the shape?)
SHAPE_CASES: dict[str, tuple[str, dict[str, Any], Any]] = {
    "no_finished_flag": ("get_execution_status", PENDING, lambda b: "is_execution_finished" not in b),
    "large_queue_position": ("get_execution_status", PENDING, lambda b: b.get("queue_position", 0) >= 1_000),
    "zero_expires_at": ("get_execution_status", PENDING, lambda b: b.get("expires_at") == ZERO_TIMESTAMP),
    "cancelled_at_when_completed": ("get_execution_status", COMPLETED, lambda b: "cancelled_at" in b),
    "canceled_one_l": ("get_execution_status", CANCELLED, lambda b: b["state"] == "QUERY_STATE_CANCELED"),
    "extra_status_fields": ("get_execution_status", COMPLETED, lambda b: "max_inflight_interactive_executions" in b),
    "error_without_location": ("get_execution_status", FAILED, lambda b: "metadata" not in b["error"]),
    "metadata_fields_absent": ("get_execution_status", COMPLETED, lambda b: "row_count" not in b["result_metadata"]),
    "flat_result_metadata": ("get_execution_results", RESULTS, lambda b: "column_names" in b["result"]),
    "both_node_status_objects": (
        "get_pipeline_status",
        PIPELINE,
        lambda b: any(
            {} in (node.get("query_execution_status"), node.get("materialized_view_refresh_status"))
            for node in b["node_executions"]
        ),
    ),
    "extra_pipeline_fields": ("get_pipeline_status", PIPELINE, lambda b: "pipeline_execution_started_at" in b),
    "extra_view_fields": ("get_materialized_view", {"id": "v", "query_id": 1}, lambda b: "cron_expression" in b),
}


def test_every_shape_has_a_case() -> None:
    assert set(SHAPE_CASES) | {"partial_refusal_as_http_400"} == set(SHAPES)


@pytest.mark.parametrize("shape", sorted(SHAPE_CASES))
def test_realistic_profile_sends_each_shape_sometimes_and_not_always(shape: str) -> None:
    endpoint, ideal, shows = SHAPE_CASES[shape]
    profile = ResponseProfile("realistic", seed=7)
    seen = [shows(profile.answer(endpoint, copy.deepcopy(ideal))[1]) for _ in range(60)]
    assert any(seen) and not all(seen)


@pytest.mark.parametrize("shape", sorted(SHAPE_CASES))
def test_a_forced_shape_is_sent_every_time_and_strict_never(shape: str) -> None:
    endpoint, ideal, shows = SHAPE_CASES[shape]
    forced = ResponseProfile("realistic", seed=7, always=(shape,))
    assert all(shows(forced.answer(endpoint, copy.deepcopy(ideal))[1]) for _ in range(20))
    strict = ResponseProfile("strict")
    assert all(strict.answer(endpoint, copy.deepcopy(ideal)) == (200, ideal) for _ in range(20))


def test_the_same_seed_replays_the_same_answers_and_another_seed_differs() -> None:
    def answers(seed: int) -> list[str]:
        profile = ResponseProfile("realistic", seed=seed)
        return [
            json.dumps(profile.answer(endpoint, copy.deepcopy(ideal)), sort_keys=True)
            for endpoint, ideal, _ in SHAPE_CASES.values()
            for _ in range(5)
        ]

    assert answers(11) == answers(11)
    assert answers(11) != answers(12)


def test_reset_replays_from_the_start() -> None:
    profile = ResponseProfile("realistic", seed=3)
    first = [profile.answer("get_execution_status", copy.deepcopy(PENDING)) for _ in range(10)]
    profile.reset()
    assert [profile.answer("get_execution_status", copy.deepcopy(PENDING)) for _ in range(10)] == first


def test_profile_arguments_are_checked() -> None:
    with pytest.raises(ValueError, match="unknown response profile 'ideal'"):
        ResponseProfile("ideal")
    with pytest.raises(ValueError, match="unknown response shapes nope"):
        ResponseProfile("realistic", always=("nope",))
    with pytest.raises(ValueError, match="seed must be an integer"):
        ResponseProfile("realistic", seed="1")  # type: ignore[arg-type]


def test_environment_chooses_profile_and_seed(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("DUNE_EMULATOR_PROFILE", "realistic")
    monkeypatch.setenv("DUNE_EMULATOR_SEED", "42")
    assert ResponseProfile().describe() == "profile realistic, seed 42"
    monkeypatch.setenv("DUNE_EMULATOR_SEED", "x")
    with pytest.raises(ValueError, match="DUNE_EMULATOR_SEED must be an integer"):
        ResponseProfile()


def test_command_line_options() -> None:
    args = _parser().parse_args(["--profile", "strict", "--profile-seed", "5"])
    assert (args.profile, args.profile_seed) == ("strict", 5)


# ------------------------------------------------------------------------------------ over HTTP


@pytest.fixture
def make_emulator() -> Iterator[Any]:
    started: list[DuneEmulator] = []

    def make(profile: str | ResponseProfile = "strict") -> tuple[DuneEmulator, Api]:
        emulator = DuneEmulator(api_keys={WRITE_KEY: "write", "read-key": "read"}, profile=profile).start()
        started.append(emulator)
        emulator.add_query(50, duration=0.01, rows=WIDE_ROWS)
        emulator.add_query(51, duration=0.01, rows=[{"a": 1}], partial=True)
        emulator.add_materialized_view("dune.t.result_v", query_id=52, duration=0.01)
        return emulator, Api(emulator)

    yield make
    for emulator in started:
        emulator.stop()


def _finished_execution(api: Api, query_id: int) -> str:
    execution_id: str = api.post(f"/v1/query/{query_id}/execute", json={}).json()["execution_id"]
    deadline = time.monotonic() + 5
    while api.get(f"/v1/execution/{execution_id}/status").json()["state"] in RUNNING_STATES:
        assert time.monotonic() < deadline, "the execution did not finish"
        time.sleep(0.01)
    return execution_id


def test_realistic_answers_over_http_carry_the_forced_shapes(make_emulator: Any) -> None:
    _, api = make_emulator(ResponseProfile("realistic", seed=1, always=("flat_result_metadata",)))
    execution_id = _finished_execution(api, 50)
    body = api.get(f"/v1/execution/{execution_id}/results", params={"limit": 2}).json()
    assert "metadata" not in body["result"] and body["result"]["column_names"][0] == "c00"
    assert body["result"]["total_row_count"] == len(WIDE_ROWS)


def test_datapoint_cap_per_results_request(make_emulator: Any) -> None:
    """REAL_SHAPES.md, Results: the per-request datapoint limit, rows x columns, default 250,000."""
    _, api = make_emulator()
    execution_id = _finished_execution(api, 50)
    url = f"/v1/execution/{execution_id}/results"
    refused = api.get(url, params={"limit": 9_000})  # 270,000 datapoints
    assert (refused.status_code, refused.json()) == (400, {"error": DATAPOINT_LIMIT_MESSAGE})
    assert api.get(url).status_code == 400  # no limit: the whole result
    assert api.get(url, params={"limit": 8_333}).status_code == 200  # 249,990
    assert api.get(url, params={"limit": 100, "offset": 8_950}).json()["result"]["rows"][-1] == WIDE_ROWS[-1]
    lifted = api.get(url, params={"limit": 9_000, "ignore_max_datapoints_per_request": "true"})
    assert lifted.status_code == 200 and len(lifted.json()["result"]["rows"]) == 9_000


def test_datapoint_cap_is_an_account_setting(make_emulator: Any) -> None:
    emulator, api = make_emulator()
    execution_id = _finished_execution(api, 50)
    url = f"/v1/execution/{execution_id}/results"
    emulator.set_datapoint_limit(300, api_key=WRITE_KEY)
    assert api.get(url, params={"limit": 10}).status_code == 200  # 300 datapoints
    assert api.get(url, params={"limit": 11}).status_code == 400
    reader = Api(emulator, key="read-key")
    assert reader.get(url, params={"limit": 8_000}).status_code == 200  # other keys keep the default
    settings_url = emulator.url.removesuffix("/api") + "/_emulator/settings"
    control = requests.post(settings_url, json={"max_datapoints_per_request": 30}, timeout=5)
    assert control.status_code == 200
    assert reader.get(url, params={"limit": 2}).status_code == 400
    with pytest.raises(ValueError, match="positive integer"):
        emulator.set_datapoint_limit(0)


def test_realistic_datapoint_refusal_uses_several_status_codes(make_emulator: Any) -> None:
    _, api = make_emulator(ResponseProfile("realistic", seed=5))
    execution_id = _finished_execution(api, 50)
    codes = {api.get(f"/v1/execution/{execution_id}/results", params={"limit": 9_000}).status_code for _ in range(30)}
    assert codes == {400, 402, 403}


def test_partial_result_refusal_in_both_shapes(make_emulator: Any) -> None:
    """REAL_SHAPES.md, Results: a 200 with a failed state (spec) or an HTTP error with Dune's words (docs)."""
    _, strict = make_emulator("strict")
    execution_id = _finished_execution(strict, 51)
    body = strict.get(f"/v1/execution/{execution_id}/results").json()
    assert body["state"] == "QUERY_STATE_FAILED" and body["error"]["message"] == PARTIAL_RESULT_MESSAGE
    accepted = strict.get(f"/v1/execution/{execution_id}/results", params={"allow_partial_results": "true"})
    assert accepted.json()["state"] == "QUERY_STATE_COMPLETED_PARTIAL"

    _, realistic = make_emulator(ResponseProfile("realistic", seed=1, always=("partial_refusal_as_http_400",)))
    execution_id = _finished_execution(realistic, 51)
    refused = realistic.get(f"/v1/execution/{execution_id}/results")
    assert (refused.status_code, refused.json()) == (400, {"error": PARTIAL_RESULT_MESSAGE})


@pytest.mark.parametrize(
    ("path", "status", "message"),
    [
        ("/v1/execution/Wonky Job ID/status", 400, "The requested execution ID (ID: Wonky Job ID) is invalid."),
        ("/v1/execution/01NOPE/results", 400, "The requested execution ID (ID: 01NOPE) is invalid."),
        ("/v1/execution/01HKZJ2683PHF9Q9PHHQ8FW4Q1/status", 404, "not found: Query not found or private"),
        ("/v1/query/9999999999999/results", 400, "The requested query ID (ID: 9999999999999) is invalid."),
        ("/v1/query/2147483646/results", 404, "not found: Query not found or private"),
    ],
)
def test_invalid_ids_get_dunes_400_and_unknown_ones_404(
    make_emulator: Any, path: str, status: int, message: str
) -> None:
    """REAL_SHAPES.md, Errors: bad execution id and absurd query id: 400, not 404 (dune-client e2e)."""
    _, api = make_emulator()
    response = api.get(path)
    assert (response.status_code, response.json()) == (status, {"error": message})


def test_small_tier_for_view_refreshes_only(make_emulator: Any) -> None:
    """REAL_SHAPES.md, Materialized views: newer docs list a small tier; the spec lists medium/large."""
    _, api = make_emulator()
    assert api.post("/v1/materialized-views/dune.t.result_v/refresh", json={"performance": "small"}).status_code == 200
    refused = api.post("/v1/query/50/pipeline/execute", json={"performance": "small"})
    assert refused.status_code == 400
