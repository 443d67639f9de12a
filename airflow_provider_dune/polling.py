"""The polling core shared by the triggers (async) and the operators and sensors (sync).

:func:`decide` is pure: given the latest status (or the error the status call raised), the clock and the
deadline, it says whether to wait and for how long, or which final event to emit. :class:`PollingSession`
holds one wait's state around it (errors in a row, the last status, the read schedule, the progress log), so
each transport is a short loop of reads and deferrable and worker-side waiting behave the same.

Events are small JSON-serialisable dicts: ``{"status", "message", "<id field>"}`` (the session adds ``"timing"``)
where ``status`` is one of :data:`EVENT_STATUSES` and ``message`` is one line of at most
:data:`MAX_EVENT_MESSAGE` characters. They carry no node lists (Airflow logs each event and keeps it in its
metadata database): the task reads the final status again when it resumes. Events of earlier releases also
carry ``"details"`` (the last status); :func:`validate_event` still accepts them.

:class:`ProgressLog` turns successive statuses into log lines that say what changed.
"""

from __future__ import annotations

import logging
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
from airflow_provider_dune.api.models import ExecutionStatus, PipelineOutcome, PipelineStatus
from airflow_provider_dune.api.states import RunState
from airflow_provider_dune.utils.config import min_poll_interval

SUCCESS = "success"
FAILED = "failed"
CANCELLED = "cancelled"
TIMEOUT = "timeout"
ERROR = "error"
EVENT_STATUSES = (SUCCESS, FAILED, CANCELLED, TIMEOUT, ERROR)

TRANSIENT_ERRORS = (DuneRateLimitError, DuneServerError, DuneConnectionError, DuneResponseError)
MAX_ERROR_BACKOFF = 600.0
#: Longest ``message`` of an event; the whole explanation comes from the status the task reads again.
MAX_EVENT_MESSAGE = 200

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

    def failure_message(self, *, brief: bool = False) -> str: ...

    def to_dict(self) -> dict[str, Any]: ...


class Log(Protocol):
    """The logging calls the polling core makes: a standard logger, or Airflow 3's task and trigger loggers."""

    def info(self, msg: Any, /, *args: Any) -> Any: ...

    def warning(self, msg: Any, /, *args: Any) -> Any: ...

    def log(self, level: int, msg: Any, /, *args: Any) -> Any: ...


def one_line(text: str, limit: int = MAX_EVENT_MESSAGE) -> str:
    """``text`` on one line, shortened to ``limit`` characters (ending in ``...``) when longer."""
    flat = " ".join(text.split())
    return flat if len(flat) <= limit else flat[: limit - 3] + "..."


def _done(snapshot: Snapshot) -> str:
    """How far the run got, without naming nodes: ``3/10 nodes done`` or an execution's state."""
    progress = getattr(snapshot, "progress", None)
    return f"{progress[0]}/{progress[1]} nodes done" if progress else snapshot.progress_summary()


@dataclass(frozen=True)
class PollStep:
    """Either a final ``event`` or the number of seconds to ``wait`` before the next status call."""

    event: dict[str, Any] | None = None
    wait: float = 0.0


@dataclass(frozen=True)
class PollTarget:
    """What is being waited on: ``id_field``/``run_id`` go into every event; ``label`` into messages."""

    id_field: str
    run_id: str
    label: str

    def event(self, status: str, message: str) -> dict[str, Any]:
        return {"status": status, "message": one_line(message), self.id_field: self.run_id}


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
    :param last_snapshot: the last status that was read, whose progress timeouts report.
    :param next_read: seconds to the next read while the run goes on (default ``poll_interval``; see
        :class:`ReadSchedule`); errors back off from ``poll_interval``.
    """
    remaining = None if end_time is None else end_time - now
    if isinstance(result, BaseException):
        if not isinstance(result, TRANSIENT_ERRORS):
            reason = str(result) if isinstance(result, DuneError) else f"{type(result).__name__}: {result}"
            return PollStep(event=target.event(ERROR, f"Could not get the status of {target.label}: {reason}"))
        if remaining is not None and remaining <= 0:
            return PollStep(
                event=target.event(
                    TIMEOUT,
                    f"{target.label} did not finish before the timeout"
                    + (f" ({_done(last_snapshot)} when last read)" if last_snapshot is not None else "")
                    + f"; the last status call failed: {result}",
                )
            )
        wait = error_backoff(poll_interval, consecutive_errors)
        return PollStep(wait=wait if remaining is None else max(0.0, min(wait, remaining)))

    outcome = result.outcome
    if outcome.is_final:
        status = _OUTCOME_EVENTS[outcome]
        message = (
            f"{target.label} completed: {_done(result)}" if status == SUCCESS else result.failure_message(brief=True)
        )
        return PollStep(event=target.event(status, message))
    if remaining is not None and remaining <= 0:
        return PollStep(
            event=target.event(
                TIMEOUT,
                f"{target.label} did not finish before the timeout ({_done(result)})",
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
            "started_at": _rounded(self.started_at),
            "last_running_at": _rounded(self.last_running_at),
            "finished_seen_at": _rounded(finished_seen_at),
            "status_reads": self.reads,
        }


def _rounded(seconds: float | None) -> float | None:
    """Milliseconds are plenty for a duration learnt from reads seconds apart, and keep the event short."""
    return None if seconds is None else round(seconds, 3)


#: States a node or execution can end in without success: their line is a warning.
_BAD_ENDS = frozenset({RunState.FAILED, RunState.CANCELLED, RunState.EXPIRED, RunState.COMPLETED_PARTIAL})


def _parts(snapshot: Snapshot) -> list[tuple[str, str, RunState, str]]:
    """``(key, name, state, note)`` of each part whose progress is followed: a pipeline's nodes, or the one
    execution (with its queue position as note)."""
    if isinstance(snapshot, PipelineStatus):
        return [(n.name, n.name, n.state, "") for n in snapshot.nodes]
    if isinstance(snapshot, ExecutionStatus):
        note = f"queue position {snapshot.queue_position}" if snapshot.queue_position else ""
        return [("", "", snapshot.state, note)]
    return []


@dataclass
class ProgressLog:
    """Log lines for what changed between two status reads of one run, the same in the triggerer and the worker.

    The first read gives the run's progress (``Dune pipeline 01H...: 0/2 nodes done, 1 running (query 1001),
    1 pending (...)``); later reads say what changed: ``node 2 (query 1001) started``, ``node 1 (query 1001)
    completed in ~12 s (1/2 nodes done)``, ``node 2 (query 1001) failed``: a warning for a node (or an
    execution) that ended without success, information otherwise. Durations are measured between the reads
    that saw a start and an end, so they are approximate; the final report has Dune's own times.
    """

    label: str
    _seen: dict[str, tuple[RunState, str]] = field(default_factory=dict)
    _started: dict[str, float] = field(default_factory=dict)
    _first: bool = True

    def lines(self, snapshot: Snapshot, now: float) -> list[tuple[int, str]]:
        """``(logging level, message)`` for each change ``snapshot`` shows, read at ``now``."""
        parts = _parts(snapshot)
        if self._first:
            self._first = False
            for key, _, state, note in parts:
                self._seen[key] = (state, note)
                if state is RunState.EXECUTING:
                    self._started[key] = now
            return [(logging.INFO, f"{self.label}: {snapshot.progress_summary()}")]
        lines = []
        for key, name, state, note in parts:
            if self._seen.get(key) == (state, note):
                continue
            self._seen[key] = (state, note)
            subject = f"{self.label}: {name}" if name else self.label
            if state is RunState.EXECUTING:
                self._started.setdefault(key, now)
                lines.append((logging.INFO, f"{subject} started"))
            elif state is RunState.COMPLETED:
                took = self._started.pop(key, None)
                text = f"{subject} completed" + (f" in ~{now - took:.0f} s" if took is not None else "")
                progress = getattr(snapshot, "progress", None)
                lines.append((logging.INFO, text + (f" ({progress[0]}/{progress[1]} nodes done)" if progress else "")))
            elif state in _BAD_ENDS:
                word = state.value.replace("_", " ")
                lines.append((logging.WARNING, f"{subject} {'failed' if state is RunState.FAILED else word}"))
            elif state is RunState.UNKNOWN:
                lines.append((logging.WARNING, f"{subject} is in a state Dune did not document"))
            else:
                lines.append((logging.INFO, f"{subject} {state.value}" + (f" ({note})" if note else "")))
        return lines


@dataclass
class PollingSession:
    """One wait for one run, whatever waits (a trigger, a worker loop, the read before deferring, a sensor's poke).

    Each transport reads the status (or catches the error the read raised) and hands it to :meth:`after_read`,
    which counts errors in a row, logs what changed and the read plan, and returns what :func:`decide` says: a
    final event (with ``"timing"``) or the wait before the next read::

        while True:
            step = session.after_read(read(), time.time())
            if step.event is not None:
                return step.event
            sleep(step.wait)

    :param end_time: deadline (seconds since the epoch); ``None`` waits without limit.
    :param log: where progress, failed reads and plan changes go (the task's or the trigger's logger).
    """

    target: PollTarget
    schedule: ReadSchedule
    end_time: float | None
    log: Log
    consecutive_errors: int = 0
    last_snapshot: Snapshot | None = None
    progress: ProgressLog = field(init=False)

    def __post_init__(self) -> None:
        self.progress = ProgressLog(self.target.label)

    def urgency(self, now: float) -> float:
        """How likely a read now is to find the run finished (see :meth:`ReadSchedule.urgency`)."""
        return self.schedule.urgency(now, self.last_snapshot)

    def after_read(self, result: Snapshot | BaseException, now: float) -> PollStep:
        """Log what one status read showed and decide the next step.

        :param result: the status, or the exception the status call raised.
        :param now: when the read ended, seconds since the epoch.
        """
        label = self.target.label
        if isinstance(result, BaseException):
            self.consecutive_errors += 1
            self.log.warning("Status call for %s failed (%d in a row): %s", label, self.consecutive_errors, result)
        else:
            self.consecutive_errors = 0
            self.last_snapshot = result
            for level, line in self.progress.lines(result, now):
                self.log.log(level, "%s", line)
        next_read, plan_note = self.schedule.after_read(now, result)
        if plan_note:
            self.log.info("%s: %s", label, plan_note)
        step = decide(
            self.target,
            result,
            now=now,
            end_time=self.end_time,
            poll_interval=self.schedule.poll_interval,
            consecutive_errors=self.consecutive_errors,
            last_snapshot=self.last_snapshot,
            next_read=next_read,
        )
        if step.event is None:
            return step
        return PollStep(event={**step.event, "timing": self.schedule.timing(now)})


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
