"""The polling core shared by the triggers (async) and the non-deferrable operators and sensors (sync).

:func:`decide` is pure: given the latest status (or the error the status call raised), the clock and the
deadline, it says whether to wait and for how long, or which final event to emit. Each transport is then a
short loop around it, so deferrable and worker-side waiting behave the same.

Events are plain JSON-serialisable dicts: ``{"status", "message", "<id field>", "details"}`` where ``status`` is
one of :data:`EVENT_STATUSES`.
"""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass
from typing import Any, Protocol

from airflow_provider_dune.api.errors import (
    DuneConnectionError,
    DuneError,
    DuneRateLimitError,
    DuneResponseError,
    DuneServerError,
)
from airflow_provider_dune.api.models import PipelineOutcome

SUCCESS = "success"
FAILED = "failed"
CANCELLED = "cancelled"
TIMEOUT = "timeout"
ERROR = "error"
EVENT_STATUSES = (SUCCESS, FAILED, CANCELLED, TIMEOUT, ERROR)

TRANSIENT_ERRORS = (DuneRateLimitError, DuneServerError, DuneConnectionError, DuneResponseError)
MAX_ERROR_BACKOFF = 600.0

_OUTCOME_EVENTS = {
    PipelineOutcome.SUCCESS: SUCCESS,
    PipelineOutcome.FAILED: FAILED,
    PipelineOutcome.CANCELLED: CANCELLED,
    PipelineOutcome.UNKNOWN: ERROR,
}


class Snapshot(Protocol):
    """What the polling core needs from a status (a pipeline's or a single execution's)."""

    @property
    def outcome(self) -> PipelineOutcome: ...

    def progress_summary(self) -> str: ...

    def failure_message(self) -> str: ...

    def to_dict(self) -> dict[str, Any]: ...


@dataclass(frozen=True)
class PollStep:
    """Either a final ``event`` or the number of seconds to ``wait`` before the next status call."""

    event: dict[str, Any] | None = None
    wait: float = 0.0

    @property
    def done(self) -> bool:
        return self.event is not None


@dataclass(frozen=True)
class PollTarget:
    """What is being waited on: ``id_field``/``run_id`` go into every event; ``label`` into messages."""

    id_field: str
    run_id: str
    label: str

    def event(self, status: str, message: str, details: Mapping[str, Any] | None = None) -> dict[str, Any]:
        return {"status": status, "message": message, self.id_field: self.run_id, "details": details}


def error_backoff(poll_interval: float, consecutive_errors: int) -> float:
    """Wait after a status call failed even after the hook's own retries: doubles per failure, capped."""
    return min(MAX_ERROR_BACKOFF, max(poll_interval, 1.0) * 2 ** min(max(consecutive_errors, 1), 10))


def decide(
    target: PollTarget,
    result: Snapshot | BaseException,
    *,
    now: float,
    end_time: float | None,
    poll_interval: float,
    consecutive_errors: int = 0,
    last_snapshot: Snapshot | None = None,
) -> PollStep:
    """Decide the next step after one status call.

    :param result: the status, or the exception the status call raised.
    :param now: current time, seconds since the epoch.
    :param end_time: deadline (seconds since the epoch); ``None`` waits without limit.
    :param consecutive_errors: status calls that failed in a row, including this one.
    :param last_snapshot: the last status that was read, reported with timeouts and errors.
    """
    last_details = last_snapshot.to_dict() if last_snapshot is not None else None
    remaining = None if end_time is None else end_time - now
    if isinstance(result, BaseException):
        if not isinstance(result, TRANSIENT_ERRORS):
            reason = str(result) if isinstance(result, DuneError) else f"{type(result).__name__}: {result}"
            return PollStep(
                event=target.event(ERROR, f"Could not get the status of {target.label}: {reason}", last_details)
            )
        if remaining is not None and remaining <= 0:
            return PollStep(
                event=target.event(
                    TIMEOUT,
                    f"{target.label} did not finish before the timeout; the last status call failed: {result}",
                    last_details,
                )
            )
        wait = error_backoff(poll_interval, consecutive_errors)
        return PollStep(wait=wait if remaining is None else max(0.0, min(wait, remaining)))

    outcome = result.outcome
    if outcome.is_final:
        status = _OUTCOME_EVENTS[outcome]
        if status == SUCCESS:
            message = f"{target.label} completed: {result.progress_summary()}"
        else:
            message = result.failure_message()
        return PollStep(event=target.event(status, message, result.to_dict()))
    if remaining is not None and remaining <= 0:
        return PollStep(
            event=target.event(
                TIMEOUT,
                f"{target.label} did not finish before the timeout ({result.progress_summary()})",
                result.to_dict(),
            )
        )
    return PollStep(wait=poll_interval if remaining is None else max(0.0, min(poll_interval, remaining)))


def validate_event(event: Any, target: PollTarget) -> tuple[str, str, Mapping[str, Any] | None]:
    """Check a trigger event before acting on it; a missing or unknown status is an error, never success."""
    if not isinstance(event, Mapping):
        raise DuneError(f"received an invalid trigger event for {target.label}: {event!r}")
    status = event.get("status")
    if status not in EVENT_STATUSES:
        raise DuneError(
            f"received a trigger event with an unknown status {status!r} for {target.label}; "
            f"expected one of {', '.join(EVENT_STATUSES)}"
        )
    event_id = event.get(target.id_field)
    if event_id is not None and event_id != target.run_id:
        raise DuneError(f"received a trigger event for {event_id!r} while waiting for {target.run_id!r}")
    details = event.get("details")
    return status, str(event.get("message") or ""), details if isinstance(details, Mapping) else None
