"""Normalisation of Dune's state strings.

Dune spells states differently per endpoint (``completed`` for pipelines, ``QUERY_STATE_COMPLETED`` for query
executions, ``CANCELLED`` and ``CANCELED`` both appear) and documents no failure value for pipelines. Every raw
state goes through :func:`normalize_state`; anything not recognised becomes ``RunState.UNKNOWN``, which is never
treated as success.
"""

from __future__ import annotations

import re
from enum import Enum


class RunState(str, Enum):
    """A Dune run state, normalised across endpoints and spellings."""

    PENDING = "pending"
    EXECUTING = "executing"
    COMPLETED = "completed"
    COMPLETED_PARTIAL = "completed_partial"
    FAILED = "failed"
    CANCELLED = "cancelled"
    EXPIRED = "expired"
    UNKNOWN = "unknown"

    @property
    def is_terminal(self) -> bool:
        """The run will not change state any more."""
        return self in TERMINAL_STATES

    @property
    def is_failure(self) -> bool:
        """The run ended without producing a complete result."""
        return self in FAILURE_STATES


TERMINAL_STATES = frozenset(
    {RunState.COMPLETED, RunState.COMPLETED_PARTIAL, RunState.FAILED, RunState.CANCELLED, RunState.EXPIRED}
)
FAILURE_STATES = frozenset({RunState.FAILED, RunState.CANCELLED, RunState.EXPIRED})

_PREFIX = re.compile(r"^(?:[a-z]+_)*state_")

_SYNONYMS: dict[str, RunState] = {
    "pending": RunState.PENDING,
    "queued": RunState.PENDING,
    "waiting": RunState.PENDING,
    "scheduled": RunState.PENDING,
    "created": RunState.PENDING,
    "not_started": RunState.PENDING,
    "executing": RunState.EXECUTING,
    "running": RunState.EXECUTING,
    "in_progress": RunState.EXECUTING,
    "started": RunState.EXECUTING,
    "completed": RunState.COMPLETED,
    "complete": RunState.COMPLETED,
    "succeeded": RunState.COMPLETED,
    "success": RunState.COMPLETED,
    "completed_partial": RunState.COMPLETED_PARTIAL,
    "partial": RunState.COMPLETED_PARTIAL,
    "failed": RunState.FAILED,
    "failure": RunState.FAILED,
    "error": RunState.FAILED,
    "errored": RunState.FAILED,
    "cancelled": RunState.CANCELLED,
    "canceled": RunState.CANCELLED,
    "cancelling": RunState.CANCELLED,
    "canceling": RunState.CANCELLED,
    "skipped": RunState.CANCELLED,
    "expired": RunState.EXPIRED,
    "timed_out": RunState.EXPIRED,
    "timeout": RunState.EXPIRED,
}


def normalize_state(raw: object) -> RunState:
    """Map a raw Dune state (any case, with or without a ``QUERY_STATE_``-style prefix) to a :class:`RunState`."""
    if not isinstance(raw, str):
        return RunState.UNKNOWN
    key = re.sub(r"[\s\-]+", "_", raw.strip().lower())
    key = _PREFIX.sub("", key)
    return _SYNONYMS.get(key, RunState.UNKNOWN)
