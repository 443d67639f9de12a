"""Which failures a retry cannot change, decided in one place from Dune's error type, status and message.

A run that failed on an SQL error, an unknown parameter, a missing object or a missing permission fails the
same way every time, and Dune bills failed executions too: such a task fails without Airflow retries. Anything
else (a timeout, an internal error, a cluster or capacity problem, a failure with no explanation) keeps the
user's retries. A transient sign wins over a permanent one, so a doubtful case keeps the retries.
"""

from __future__ import annotations

import re
from collections.abc import Iterator, Mapping
from typing import Any

from airflow_provider_dune.api.errors import DuneAPIError, DuneBadRequestError, DuneNotFoundError

#: Messages that mean the same request will fail again, with what they are called in the task's log.
_PERMANENT: tuple[tuple[re.Pattern[str], str], ...] = (
    (re.compile(r"\bline \d+:\d+\b", re.IGNORECASE), "an SQL error"),
    (
        re.compile(
            r"cannot be resolved|mismatched input|extraneous input|no viable alternative|syntax error|"
            r"not registered|unexpected parameters?|unknown parameter|missing parameter|parameter .* not found|"
            r"type mismatch|cannot be applied to|must be an aggregate expression|ambiguous",
            re.IGNORECASE,
        ),
        "an error in the query (SQL or parameters)",
    ),
    (re.compile(r"does not exist|not found", re.IGNORECASE), "a missing table, query or view"),
    (
        re.compile(r"permission|not allowed|access denied|forbidden|is private|archived", re.IGNORECASE),
        "a missing permission",
    ),
)
#: Messages that may not repeat: these keep the user's retries even when a permanent sign is present.
_TRANSIENT = re.compile(
    r"timed? ?out|timeout|internal error|temporar|try again|unavailable|cluster|capacity|overloaded|"
    r"too many requests|rate limit|connection|interrupted|restart",
    re.IGNORECASE,
)


def permanent_reason(message: str | None, *, has_location: bool = False) -> str | None:
    """What makes the failure described by ``message`` certain to repeat, or ``None`` when a retry may help.

    :param has_location: Dune gave the error a line and column (an SQL error).
    """
    if not message or _TRANSIENT.search(message):
        return None
    if has_location:
        return "an SQL error"
    for pattern, reason in _PERMANENT:
        if pattern.search(message):
            return reason
    return None


def _errors(details: Mapping[str, Any]) -> Iterator[tuple[str, bool]]:
    """``(message, has_location)`` of every error in a run's status (an execution, or a pipeline and its nodes)."""
    for key in ("error_message", "error"):
        value = details.get(key)
        if isinstance(value, str) and value:
            yield value, details.get("error_line") is not None
    nodes = details.get("nodes")
    for node in nodes if isinstance(nodes, list) else ():
        if isinstance(node, Mapping) and isinstance(node.get("error"), str) and node["error"]:
            yield node["error"], False


def permanent_run_failure(details: Mapping[str, Any] | None) -> str | None:
    """Why a failed run would fail again on retry (from the first error that says so), or ``None``."""
    for message, has_location in _errors(details or {}):
        reason = permanent_reason(message, has_location=has_location)
        if reason:
            return reason
    return None


def permanent_request_failure(error: DuneAPIError) -> str | None:
    """Why Dune's refusal of a request would repeat on retry, or ``None`` (rate limits, 5xx, lost answers...)."""
    if error.may_have_started_run:
        return None
    if isinstance(error, DuneNotFoundError):
        return "a missing query, execution or view"
    if isinstance(error, DuneBadRequestError):
        return permanent_reason(error.message) or "a request Dune refused as invalid"
    if error.http_status == 403:
        return "a missing permission"
    return None


def not_retried(message: str, reason: str, outcome: str) -> str:
    """``message`` plus the one line that says why Airflow does not retry: another try would ``outcome``."""
    return (
        f"{message}\nNot retried: this is {reason}, so another try would {outcome} the same way. "
        "Fix it, then clear this task to run it again."
    )
