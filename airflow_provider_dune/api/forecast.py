"""When a run is likely to end, and so when its status is worth reading (pure; triggers and worker waits share it).

A waiting task learns nothing from most status reads: "still running". Reads pay off near the end of a run, so
the wait between two reads follows a :class:`CompletionWindow`, the time span in which the run is expected to
end, forecast from what this deployment saw before (previous durations of the same request) or, failing that,
from Dune's progress (pipeline nodes done out of all, extrapolated from the time they took):

* before the window: read every ``poll_interval`` (the user's bound on detection delay) and once as it opens;
* inside it: read a few times across it (:data:`WINDOW_READS`), so the end is seen within seconds;
* after it (the run is late): the wait grows with the lateness, from the step used inside the window up to
  ``poll_interval`` (a run late by a minute is likely to be late by another);
* without a forecast: read every ``poll_interval``.

So reads are never further apart than ``poll_interval`` unless the key's rate budget forces it. Each read also
gets an urgency (how likely it is to find the run finished), by which the key's pacer serves the reads waiting
for a slot when the budget cannot serve them all at once (:mod:`airflow_provider_dune.api.budget`).
"""

from __future__ import annotations

import math
import statistics
from collections.abc import Sequence
from dataclasses import dataclass

#: Reads spread across the completion window (the gaps between them bound the detection delay there).
WINDOW_READS = 4
#: Previous durations kept per request; older ones say less about the next run.
HISTORY_SIZE = 10
#: The window is widened each side by at least this share of the median duration (and :data:`MIN_MARGIN` s).
MARGIN_SHARE = 0.02
#: Seconds the window is widened each side at least.
MIN_MARGIN = 2.0
#: With a single previous duration, the window is this share of it each side.
SINGLE_SAMPLE_SHARE = 0.15

#: Urgency of a read (0..1), by where it falls.
URGENCY_BEFORE_WINDOW = 0.1
URGENCY_IN_WINDOW = 1.0
URGENCY_LATE = 0.6
URGENCY_UNKNOWN = 0.5


@dataclass(frozen=True)
class CompletionWindow:
    """The span (seconds since the epoch) in which a run is expected to end."""

    opens: float
    closes: float
    basis: str  # what the forecast rests on, for logs: "5 previous runs", "2/3 nodes done"

    def describe(self, now: float) -> str:
        return f"expected to end {self.opens - now:+.0f}s to {self.closes - now:+.0f}s from now ({self.basis})"


@dataclass(frozen=True)
class ReadPlan:
    """When to read the status next (``wait`` seconds from now) and why (``phase``)."""

    wait: float
    phase: str


def usable_durations(durations: Sequence[object] | None) -> list[float]:
    """The positive, finite numbers of ``durations`` (anything else, from an edited Variable say, is dropped)."""
    usable = []
    for value in durations or ():
        if isinstance(value, bool) or not isinstance(value, (int, float)):
            continue
        if math.isfinite(value) and value > 0:
            usable.append(float(value))
    return usable[-HISTORY_SIZE:]


def window_from_history(started_at: float, durations: Sequence[float]) -> CompletionWindow | None:
    """The span between the shortest and the longest previous duration, widened each side by half that spread
    (at least :data:`MARGIN_SHARE` of the median and :data:`MIN_MARGIN` seconds); a single previous duration
    gives :data:`SINGLE_SAMPLE_SHARE` of it each side."""
    known = usable_durations(durations)
    if not known:
        return None
    shortest, longest = min(known), max(known)
    if len(known) == 1:
        margin = max(MIN_MARGIN, SINGLE_SAMPLE_SHARE * shortest)
    else:
        margin = max(MIN_MARGIN, MARGIN_SHARE * statistics.median(known), (longest - shortest) / 2)
    runs = "1 previous run" if len(known) == 1 else f"{len(known)} previous runs"
    return CompletionWindow(
        opens=started_at + max(0.0, shortest - margin), closes=started_at + longest + margin, basis=runs
    )


def window_from_progress(started_at: float, now: float, done: int, total: int) -> CompletionWindow | None:
    """Extrapolate the nodes done so far: the rest take as long each. Node durations vary a lot, so the window
    opens halfway to that estimate and closes as far past it."""
    elapsed = now - started_at
    if total < 2 or done <= 0 or done >= total or elapsed <= 0:
        return None
    expected_end = started_at + elapsed * total / done
    remaining = expected_end - now
    return CompletionWindow(
        opens=now + remaining / 2, closes=expected_end + remaining, basis=f"{done}/{total} nodes done"
    )


def forecast(
    *,
    started_at: float | None,
    now: float,
    durations: Sequence[float] | None = None,
    progress: tuple[int, int] | None = None,
) -> CompletionWindow | None:
    """The completion window of a run started at ``started_at``: from history if there is any, else progress."""
    if started_at is None:
        return None
    if window := window_from_history(started_at, usable_durations(durations)):
        return window
    if progress is not None:
        return window_from_progress(started_at, now, *progress)
    return None


def plan_next_read(*, now: float, poll_interval: float, floor: float, window: CompletionWindow | None) -> ReadPlan:
    """The wait before the next status read: never above ``poll_interval``, never below ``floor``."""
    floor = min(floor, poll_interval)
    if window is None:
        return ReadPlan(poll_interval, "no forecast")
    if now < window.opens:
        return ReadPlan(max(floor, min(poll_interval, window.opens - now)), "before the expected end")
    step = max(floor, min(poll_interval, (window.closes - window.opens) / WINDOW_READS))
    if now <= window.closes:
        return ReadPlan(step, "near the expected end")
    return ReadPlan(max(step, min(poll_interval, now - window.closes)), "later than expected")


def read_urgency(now: float, window: CompletionWindow | None) -> float:
    """How likely a read made now is to find the run finished (0..1), to order reads when the budget is short."""
    if window is None:
        return URGENCY_UNKNOWN
    if now < window.opens:
        return URGENCY_BEFORE_WINDOW
    if now <= window.closes:
        return URGENCY_IN_WINDOW
    return URGENCY_LATE


def observed_duration(started_at: float | None, last_running_at: float | None, finished_seen_at: float) -> float | None:
    """A run's duration as the reads saw it: it ended between the last read that found it running and the read
    that found it finished, so the middle of that gap (its start is when the request to start it was sent)."""
    if started_at is None:
        return None
    ended = finished_seen_at if last_running_at is None else (last_running_at + finished_seen_at) / 2
    duration = ended - started_at
    return duration if duration > 0 else None
