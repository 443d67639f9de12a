"""The polling core shared by the triggers (async) and the non-deferrable operators and sensors (sync).

:func:`decide` is pure: given the latest status (or the error the status call raised), the clock and the
deadline, it says whether to wait and for how long, or which final event to emit. Each transport is then a
short loop around it, so deferrable and worker-side waiting behave the same.

Events are plain JSON-serialisable dicts: ``{"status", "message", "<id field>", "details"}`` where ``status`` is
one of :data:`EVENT_STATUSES`.
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from dataclasses import dataclass, field
from typing import Any, Protocol

from airflow_provider_dune.api.errors import (
    DuneConnectionError,
    DuneError,
    DuneRateLimitError,
    DuneResponseError,
    DuneServerError,
)
from airflow_provider_dune.api.forecast import (
    CompletionWindow,
    forecast,
    plan_next_read,
    read_urgency,
    usable_durations,
)
from airflow_provider_dune.api.models import PipelineOutcome
from airflow_provider_dune.utils.config import min_poll_interval

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
    next_read: float | None = None,
) -> PollStep:
    """Decide the next step after one status call.

    :param result: the status, or the exception the status call raised.
    :param now: current time, seconds since the epoch.
    :param end_time: deadline (seconds since the epoch); ``None`` waits without limit.
    :param consecutive_errors: status calls that failed in a row, including this one.
    :param last_snapshot: the last status that was read, reported with timeouts and errors.
    :param next_read: seconds to the next read while the run goes on (default ``poll_interval``; see
        :class:`ReadSchedule`); errors back off from ``poll_interval``.
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
    wait = poll_interval if next_read is None else next_read
    return PollStep(wait=wait if remaining is None else max(0.0, min(wait, remaining)))


@dataclass
class ReadSchedule:
    """When to read one run's status, for a trigger or a worker loop: adaptive around the forecast end of the run
    (:mod:`airflow_provider_dune.api.forecast`) unless ``adaptive`` is off, never further apart than
    ``poll_interval``; also the timing that goes into the final event.

    :param started_at: when the request that started the run was sent (seconds since the epoch), if known.
    :param durations: previous durations of the same request in this deployment (seconds).
    """

    poll_interval: float
    floor: float
    started_at: float | None = None
    durations: Sequence[float] = ()
    adaptive: bool = True
    last_running_at: float | None = None
    reads: int = 0
    _described: str | None = field(default=None, repr=False)

    def __post_init__(self) -> None:
        self.durations = usable_durations(self.durations)

    @classmethod
    def for_run(
        cls, poll_interval: float, *, started_at: float | None, durations: Sequence[float], adaptive: bool
    ) -> ReadSchedule:
        """The schedule of a task's wait: reads no closer together than ``[dune] min_poll_interval``."""
        return cls(
            poll_interval=poll_interval,
            floor=min(min_poll_interval(), poll_interval),
            started_at=started_at,
            durations=durations,
            adaptive=adaptive,
        )

    def window(self, now: float, snapshot: Snapshot | None) -> CompletionWindow | None:
        if not self.adaptive:
            return None
        progress = getattr(snapshot, "progress", None) if snapshot is not None else None
        return forecast(started_at=self.started_at, now=now, durations=self.durations, progress=progress)

    def urgency(self, now: float, snapshot: Snapshot | None) -> float:
        """How likely a read now is to find the run finished (orders reads when the key's budget is short)."""
        return read_urgency(now, self.window(now, snapshot))

    def after_read(self, now: float, result: Snapshot | BaseException) -> tuple[float, str | None]:
        """Count a read; return the wait before the next one and, when the plan changed, a line for the log."""
        self.reads += 1
        if isinstance(result, BaseException):
            return self.poll_interval, None
        if not result.outcome.is_final:
            self.last_running_at = now
        window = self.window(now, result)
        plan = plan_next_read(now=now, poll_interval=self.poll_interval, floor=self.floor, window=window)
        description = None
        if window is not None:
            description = f"{window.describe(now)}; next status read in {plan.wait:.0f}s ({plan.phase})"
        if plan.phase == self._described or description is None:
            return plan.wait, None
        self._described = plan.phase
        return plan.wait, description

    def timing(self, finished_seen_at: float) -> dict[str, Any]:
        """What the final event carries so the operator can learn the run's duration."""
        return {
            "started_at": self.started_at,
            "last_running_at": self.last_running_at,
            "finished_seen_at": finished_seen_at,
            "status_reads": self.reads,
        }


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
