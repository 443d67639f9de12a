"""The pure polling core: wait / timeout / final-check / backoff decisions and trigger event validation."""

from __future__ import annotations

import json
import logging
from typing import Any

import pytest

from airflow_provider_dune.api.errors import (
    DuneAuthError,
    DuneConnectionError,
    DuneError,
    DuneNotFoundError,
    DuneRateLimitError,
    DuneResponseError,
    DuneServerError,
)
from airflow_provider_dune.api.models import PipelineStatus, parse_execution_status, parse_pipeline_status
from airflow_provider_dune.polling import (
    CANCELLED,
    ERROR,
    EVENT_STATUSES,
    FAILED,
    MAX_ERROR_BACKOFF,
    MAX_EVENT_MESSAGE,
    SUCCESS,
    TIMEOUT,
    PollingSession,
    PollTarget,
    ProgressLog,
    ReadSchedule,
    decide,
    error_backoff,
    one_line,
    validate_event,
)

TARGET = PollTarget("pipeline_execution_id", "pipe-1", "Dune pipeline pipe-1")
NOW = 1_000_000.0


def status(overall: str, *nodes: tuple[str, str | None], error: str | None = None) -> PipelineStatus:
    """A pipeline status with query nodes 1..n in the given (state, error) pairs."""
    body: dict[str, Any] = {
        "status": overall,
        "node_executions": [
            {
                "id": i,
                "query_execution_status": {
                    "status": state,
                    "query_id": 100 + i,
                    "execution_id": f"exec-{i}",
                    "error": node_error,
                },
            }
            for i, (state, node_error) in enumerate(nodes, start=1)
        ],
    }
    if error is not None:
        body["error"] = error
    return parse_pipeline_status(body, "pipe-1")


RUNNING = status("executing", ("completed", None), ("executing", None))
DONE = status("completed", ("completed", None), ("completed", None))
FAILED_STATUS = status(
    "failed", ("failed", "line 3:8: Column 'amount_usdd' cannot be resolved"), ("cancelled", None), error="node 1"
)
# Dune explains a cancellation in the overall error; that must not turn it into a failure.
CANCELLED_STATUS = status(
    "cancelled", ("completed", None), ("cancelled", None), error="node 2 (query 102) was cancelled"
)


def rate_limited() -> DuneRateLimitError:
    return DuneRateLimitError("Too many requests", http_status=429, endpoint="GET status")


# -- running: wait -----------------------------------------------------------------------------------------------


def test_running_without_deadline_waits_poll_interval() -> None:
    step = decide(TARGET, RUNNING, now=NOW, end_time=None, poll_interval=7.5)
    assert step.event is None
    assert step.wait == 7.5


def test_running_with_far_deadline_waits_poll_interval() -> None:
    step = decide(TARGET, RUNNING, now=NOW, end_time=NOW + 100, poll_interval=5)
    assert step.event is None
    assert step.wait == 5


def test_running_near_deadline_wait_is_capped_at_remaining_time() -> None:
    step = decide(TARGET, RUNNING, now=NOW, end_time=NOW + 2, poll_interval=30)
    assert step.event is None
    assert step.wait == pytest.approx(2)


# -- terminal states ---------------------------------------------------------------------------------------------


def test_success_event_carries_id_and_progress_but_no_node_list() -> None:
    step = decide(TARGET, DONE, now=NOW, end_time=NOW + 100, poll_interval=5)
    event = step.event
    assert event is not None
    assert event["status"] == SUCCESS
    assert event["pipeline_execution_id"] == "pipe-1"
    assert event["message"] == "Dune pipeline pipe-1 completed: 2/2 nodes done"
    assert set(event) == {"status", "message", "pipeline_execution_id"}  # the caller adds "timing"
    json.dumps(event)  # events cross the triggerer boundary as JSON


def test_failed_event_names_the_failed_node_without_dunes_error() -> None:
    event = decide(TARGET, FAILED_STATUS, now=NOW, end_time=None, poll_interval=5).event
    assert event is not None
    assert event["status"] == FAILED
    assert "query 101" in event["message"]
    assert "amount_usdd" not in event["message"]  # stated once, by the task, from the status it reads
    assert "details" not in event and "\n" not in event["message"]


def test_cancelled_event() -> None:
    event = decide(TARGET, CANCELLED_STATUS, now=NOW, end_time=None, poll_interval=5).event
    assert event is not None
    assert event["status"] == CANCELLED
    assert "node 2 (query 102) cancelled" in event["message"]


def test_cancelled_pipeline_with_a_failed_node_is_a_failure() -> None:
    mixed = status("cancelled", ("failed", "division by zero"), ("cancelled", None), error="node 1 failed")
    event = decide(TARGET, mixed, now=NOW, end_time=None, poll_interval=5).event
    assert event is not None
    assert event["status"] == FAILED


def test_unknown_final_outcome_is_an_error_never_success() -> None:
    # Overall "completed" while a node is in a state nobody understands: never call it success.
    weird = status("completed", ("completed", None), ("teleporting", None))
    event = decide(TARGET, weird, now=NOW, end_time=None, poll_interval=5).event
    assert event is not None
    assert event["status"] == ERROR


# -- final check at the deadline ---------------------------------------------------------------------------------


def test_final_status_read_after_deadline_wins_over_timeout() -> None:
    """The status read at/after the deadline is the final check: a run that finished is not a timeout."""
    event = decide(TARGET, DONE, now=NOW + 10, end_time=NOW, poll_interval=5).event
    assert event is not None
    assert event["status"] == SUCCESS
    failed = decide(TARGET, FAILED_STATUS, now=NOW + 10, end_time=NOW, poll_interval=5).event
    assert failed is not None and failed["status"] == FAILED


def test_still_running_at_deadline_times_out_with_last_status() -> None:
    event = decide(TARGET, RUNNING, now=NOW, end_time=NOW, poll_interval=5).event
    assert event is not None
    assert event["status"] == TIMEOUT
    assert "did not finish before the timeout" in event["message"]
    assert "1/2 nodes done" in event["message"]
    assert "query" not in event["message"]  # progress only: no node names
    assert "details" not in event  # the operator reads the status again to find what to cancel


def test_transient_error_after_deadline_times_out_with_last_snapshot() -> None:
    event = decide(
        TARGET, rate_limited(), now=NOW + 1, end_time=NOW, poll_interval=5, consecutive_errors=1, last_snapshot=RUNNING
    ).event
    assert event is not None
    assert event["status"] == TIMEOUT
    assert "last status call failed" in event["message"]
    assert "Too many requests" in event["message"]
    assert "(1/2 nodes done when last read)" in event["message"]


def test_transient_error_after_deadline_without_snapshot_says_no_progress() -> None:
    event = decide(TARGET, rate_limited(), now=NOW + 1, end_time=NOW, poll_interval=5, consecutive_errors=1).event
    assert event is not None
    assert event["status"] == TIMEOUT
    assert "when last read" not in event["message"]


# -- errors and backoff ------------------------------------------------------------------------------------------


@pytest.mark.parametrize(
    "error",
    [
        DuneRateLimitError("Too many requests", http_status=429),
        DuneServerError("Internal error", http_status=500),
        DuneConnectionError("dropped", request_sent=True),
        DuneResponseError("not JSON"),
    ],
    ids=["429", "500", "dropped", "malformed"],
)
def test_transient_errors_keep_polling_with_backoff(error: BaseException) -> None:
    step = decide(TARGET, error, now=NOW, end_time=None, poll_interval=5, consecutive_errors=1)
    assert step.event is None
    assert step.wait == error_backoff(5, 1) == 10


@pytest.mark.parametrize(
    "error",
    [
        DuneAuthError("invalid API Key", http_status=401),
        DuneNotFoundError("not found", http_status=404),
        ValueError("boom"),
    ],
    ids=["401", "404", "unexpected"],
)
def test_permanent_errors_end_with_error_event(error: BaseException) -> None:
    event = decide(
        TARGET, error, now=NOW, end_time=NOW + 100, poll_interval=5, consecutive_errors=1, last_snapshot=RUNNING
    ).event
    assert event is not None
    assert event["status"] == ERROR
    reason = str(error) if isinstance(error, DuneError) else f"ValueError: {error}"
    assert event["message"] == one_line(f"Could not get the status of Dune pipeline pipe-1: {reason}")
    assert "details" not in event


def test_unexpected_exception_type_is_named_in_message() -> None:
    event = decide(TARGET, KeyError("nodes"), now=NOW, end_time=None, poll_interval=5, consecutive_errors=1).event
    assert event is not None
    assert "KeyError" in event["message"]


def test_error_backoff_doubles_and_is_capped() -> None:
    waits = [error_backoff(5, n) for n in range(1, 8)]
    assert waits[:4] == [10, 20, 40, 80]
    assert waits == sorted(waits)
    assert error_backoff(5, 50) == MAX_ERROR_BACKOFF
    assert error_backoff(0.05, 1) == 2.0  # a tiny poll interval still backs off at least 1 s * 2
    assert error_backoff(5, 0) == error_backoff(5, 1)


def test_backoff_through_decide_grows_with_consecutive_errors() -> None:
    waits = [
        decide(TARGET, rate_limited(), now=NOW, end_time=None, poll_interval=2, consecutive_errors=n).wait
        for n in (1, 2, 3)
    ]
    assert waits == [4, 8, 16]


def test_backoff_never_sleeps_past_the_deadline() -> None:
    step = decide(TARGET, rate_limited(), now=NOW, end_time=NOW + 3, poll_interval=5, consecutive_errors=4)
    assert step.event is None
    assert step.wait == pytest.approx(3)


# -- the session: one wait's state around decide ------------------------------------------------------------------


def session(end_time: float | None = None, poll_interval: float = 5) -> PollingSession:
    schedule = ReadSchedule(poll_interval=poll_interval, floor=poll_interval, adaptive=False)
    return PollingSession(TARGET, schedule, end_time, logging.getLogger("test_polling_session"))


def test_session_counts_errors_in_a_row_and_a_status_resets_them(caplog: pytest.LogCaptureFixture) -> None:
    waits = []
    polling = session()
    with caplog.at_level(logging.WARNING, logger="test_polling_session"):
        for _ in range(3):
            waits.append(polling.after_read(rate_limited(), NOW).wait)
    assert waits == [error_backoff(5, n) for n in (1, 2, 3)]
    assert [r.getMessage() for r in caplog.records] == [
        f"Status call for Dune pipeline pipe-1 failed ({n} in a row): {rate_limited()}" for n in (1, 2, 3)
    ]
    assert polling.after_read(RUNNING, NOW).wait == 5
    assert polling.consecutive_errors == 0
    assert polling.after_read(rate_limited(), NOW).wait == error_backoff(5, 1)


def test_session_logs_the_progress_once_then_what_changed(caplog: pytest.LogCaptureFixture) -> None:
    polling = session()
    with caplog.at_level(logging.INFO, logger="test_polling_session"):
        polling.after_read(RUNNING, NOW)
        polling.after_read(RUNNING, NOW + 5)
        polling.after_read(DONE, NOW + 10)
    assert [r.getMessage() for r in caplog.records] == [
        f"Dune pipeline pipe-1: {RUNNING.progress_summary()}",
        "Dune pipeline pipe-1: node 2 (query 102) completed in ~10 s (2/2 nodes done)",
    ]


def test_session_event_carries_the_timing_of_the_wait() -> None:
    polling = session()
    assert polling.after_read(RUNNING, NOW).event is None
    event = polling.after_read(DONE, NOW + 5).event
    assert event is not None
    assert event["status"] == SUCCESS
    assert event["timing"] == {
        "started_at": None,
        "last_running_at": NOW,
        "finished_seen_at": NOW + 5,
        "status_reads": 2,
    }


def test_session_timeout_after_an_error_reports_the_last_status_read() -> None:
    polling = session(end_time=NOW + 10)
    polling.after_read(RUNNING, NOW)
    event = polling.after_read(rate_limited(), NOW + 10).event
    assert event is not None
    assert event["status"] == TIMEOUT
    assert "(1/2 nodes done when last read)" in event["message"]


# -- event validation --------------------------------------------------------------------------------------------


@pytest.mark.parametrize("status_value", EVENT_STATUSES)
def test_validate_event_accepts_each_status(status_value: str) -> None:
    event = TARGET.event(status_value, "msg")
    assert validate_event(event, TARGET) == (status_value, "msg", None)


def test_validate_event_still_reads_details_of_events_of_earlier_releases() -> None:
    """A trigger serialized by an earlier release may fire after an upgrade, with the last status in details."""
    old = {"status": "failed", "message": "m", "pipeline_execution_id": "pipe-1", "details": FAILED_STATUS.to_dict()}
    assert validate_event(old, TARGET) == ("failed", "m", FAILED_STATUS.to_dict())


def test_event_message_is_one_short_line() -> None:
    long_error = "line 3:8: " + "x" * 1000 + "\nsecond line"
    event = decide(TARGET, status("failed", ("failed", long_error)), now=NOW, end_time=None, poll_interval=5).event
    assert event is not None
    assert event["message"] == "Dune pipeline pipe-1 failed: node 1 (query 101) failed"  # Dune's error: read again
    timeout = decide(TARGET, ValueError("x" * 1000 + "\nmore"), now=NOW, end_time=None, poll_interval=5).event
    assert timeout is not None and "\n" not in timeout["message"]
    assert len(timeout["message"]) == MAX_EVENT_MESSAGE and timeout["message"].endswith("...")


# -- progress lines ----------------------------------------------------------------------------------------------


def test_progress_log_says_what_changed_at_the_right_level() -> None:
    progress = ProgressLog("Dune pipeline pipe-1")
    pending = status("executing", ("executing", None), ("pending", None))
    first = progress.lines(pending, NOW)
    assert first == [
        (logging.INFO, "Dune pipeline pipe-1: 0/2 nodes done, 1 running (query 101), 1 pending (query 102)")
    ]
    assert progress.lines(pending, NOW + 5) == []  # nothing changed, nothing logged
    assert progress.lines(status("executing", ("completed", None), ("executing", None)), NOW + 12) == [
        (logging.INFO, "Dune pipeline pipe-1: node 1 (query 101) completed in ~12 s (1/2 nodes done)"),
        (logging.INFO, "Dune pipeline pipe-1: node 2 (query 102) started"),
    ]
    assert progress.lines(status("failed", ("completed", None), ("failed", "boom")), NOW + 20) == [
        (logging.WARNING, "Dune pipeline pipe-1: node 2 (query 102) failed")  # the error is stated once, at the end
    ]


def test_progress_log_of_one_execution() -> None:
    progress = ProgressLog("Dune execution E")
    queued = parse_execution_status({"execution_id": "E", "state": "QUERY_STATE_PENDING", "queue_position": 3})
    running = parse_execution_status({"execution_id": "E", "state": "QUERY_STATE_EXECUTING"})
    done = parse_execution_status({"execution_id": "E", "state": "QUERY_STATE_COMPLETED"})
    assert progress.lines(queued, NOW) == [(logging.INFO, "Dune execution E: pending (queue position 3)")]
    assert progress.lines(running, NOW + 1) == [(logging.INFO, "Dune execution E started")]
    assert progress.lines(done, NOW + 4) == [(logging.INFO, "Dune execution E completed in ~3 s")]


@pytest.mark.parametrize(
    ("event", "fragment"),
    [
        (None, "invalid trigger event"),
        ("success", "invalid trigger event"),
        ({"message": "no status", "pipeline_execution_id": "pipe-1"}, "unknown status None"),
        ({"status": "done", "pipeline_execution_id": "pipe-1"}, "unknown status 'done'"),
        ({"status": "success", "pipeline_execution_id": "pipe-2"}, "'pipe-2' while waiting for 'pipe-1'"),
    ],
    ids=["none", "string", "missing-status", "unknown-status", "wrong-id"],
)
def test_validate_event_rejects_bad_events(event: Any, fragment: str) -> None:
    with pytest.raises(DuneError) as info:
        validate_event(event, TARGET)
    assert fragment in str(info.value)


def test_validate_event_tolerates_missing_id_and_non_mapping_details() -> None:
    assert validate_event({"status": "failed", "details": "oops"}, TARGET) == ("failed", "", None)
