"""Faults that the Dune API emulator can inject into its responses.

A :class:`Fault` is queued for an endpoint with :meth:`DuneEmulator.inject
<airflow_provider_dune.testing.emulator.DuneEmulator.inject>`; each request to that endpoint consumes one use
of the fault at the head of the queue.
"""

from __future__ import annotations

import http
import math
from collections.abc import Mapping
from dataclasses import dataclass
from typing import Any, Literal, get_args

FaultKind = Literal[
    "status",
    "slow",
    "malformed",
    "drop",
    "drop_after_processing",
    "drip",
    "oversized",
    "echo_key",
    "truncated",
    "redirect",
]
FAULT_KINDS: tuple[str, ...] = get_args(FaultKind)

#: Messages Dune sends (or that a proxy in front of it would send) for common status codes.
DEFAULT_ERROR_MESSAGES: dict[int, str] = {
    400: "Bad Request",
    401: "invalid API Key",
    402: "This API request would exceed your configured limits per billing cycle.",
    403: "Not allowed to execute query. Query is archived, unsaved or not enough permissions",
    404: "not found: Query not found or private",
    409: "Conflict",
    429: "Too many requests",
    500: "Internal error",
    502: "Bad gateway",
    503: "Service unavailable",
    504: "Gateway timeout",
}


def default_error_message(code: int) -> str:
    """Return the message used in ``{"error": ...}`` for ``code`` when none is given."""
    if code in DEFAULT_ERROR_MESSAGES:
        return DEFAULT_ERROR_MESSAGES[code]
    try:
        return http.HTTPStatus(code).phrase
    except ValueError:
        return "Error"


@dataclass(frozen=True)
class Fault:
    """One injected misbehaviour, applied to ``times`` consecutive matching requests.

    :param kind: ``status`` (answer with an HTTP error), ``slow`` (sleep, then answer normally),
        ``malformed`` (HTTP 200 whose body is not JSON; the request is not performed), ``drop`` (read the
        request, close the connection without answering; not performed), ``drop_after_processing``
        (perform the request, then close the connection without answering), ``drip`` (perform the request,
        then send the answer one byte every ``seconds``), ``oversized`` (HTTP 200 with a body of ``size``
        bytes; not performed), ``echo_key`` (an HTTP ``code`` error whose message repeats the API key the
        request carried; not performed), ``truncated`` (perform the request, then send only half of the
        answer's body and close) or ``redirect`` (an HTTP ``code`` redirect to ``location``; not performed).
    :param code: HTTP status code, for ``status``, ``echo_key`` and ``redirect``.
    :param message: the ``{"error": ...}`` message, for ``status``; a realistic default otherwise.
    :param retry_after: seconds to send in a ``Retry-After`` header, for ``status``.
    :param seconds: delay, for ``slow``; delay between bytes, for ``drip``.
    :param size: body size in bytes, for ``oversized``.
    :param location: the ``Location`` header, for ``redirect``.
    :param times: number of requests the fault applies to.
    """

    kind: FaultKind
    code: int | None = None
    message: str | None = None
    retry_after: float | None = None
    seconds: float = 0.0
    times: int = 1
    size: int = 0
    location: str | None = None

    def __post_init__(self) -> None:
        if self.kind not in FAULT_KINDS:
            raise ValueError(f"unknown fault kind {self.kind!r}; expected one of {', '.join(FAULT_KINDS)}")
        if not isinstance(self.times, int) or isinstance(self.times, bool) or self.times < 1:
            raise ValueError(f"times must be a positive integer, got {self.times!r}")
        if self.kind in ("status", "echo_key"):
            if not isinstance(self.code, int) or not 100 <= self.code <= 599:
                raise ValueError(f"{self.kind} fault needs an HTTP status code 100-599, got {self.code!r}")
            if self.code < 400:
                raise ValueError(f"{self.kind} fault code must be an error code (>= 400), got {self.code}")
        if self.kind == "redirect" and (not isinstance(self.code, int) or not 300 <= self.code <= 399):
            raise ValueError(f"redirect fault needs an HTTP status code 300-399, got {self.code!r}")
        if not isinstance(self.size, int) or isinstance(self.size, bool) or self.size < 0:
            raise ValueError(f"size must be a non-negative integer, got {self.size!r}")
        if self.retry_after is not None and (not math.isfinite(self.retry_after) or self.retry_after < 0):
            raise ValueError(f"retry_after must be a non-negative number, got {self.retry_after!r}")
        if not math.isfinite(self.seconds) or self.seconds < 0:
            raise ValueError(f"seconds must be a non-negative number, got {self.seconds!r}")

    @classmethod
    def status(cls, code: int, message: str | None = None, retry_after: float | None = None, times: int = 1) -> Fault:
        """Answer with HTTP ``code`` and ``{"error": message}`` (and ``Retry-After`` if given)."""
        return cls("status", code=code, message=message, retry_after=retry_after, times=times)

    @classmethod
    def slow(cls, seconds: float, times: int = 1) -> Fault:
        """Sleep ``seconds`` before answering normally."""
        return cls("slow", seconds=float(seconds), times=times)

    @classmethod
    def malformed(cls, times: int = 1) -> Fault:
        """Answer HTTP 200 with a body that is not valid JSON, without performing the request."""
        return cls("malformed", times=times)

    @classmethod
    def drop(cls, times: int = 1) -> Fault:
        """Read the request, then close the connection without answering or performing it."""
        return cls("drop", times=times)

    @classmethod
    def drop_after_processing(cls, times: int = 1) -> Fault:
        """Perform the request (e.g. really start the run), then close the connection without answering."""
        return cls("drop_after_processing", times=times)

    @classmethod
    def drip(cls, seconds_per_byte: float, times: int = 1) -> Fault:
        """Perform the request, then send the answer one byte every ``seconds_per_byte`` (a slowloris server)."""
        return cls("drip", seconds=float(seconds_per_byte), times=times)

    @classmethod
    def oversized(cls, size: int, times: int = 1) -> Fault:
        """Answer HTTP 200 with a body of ``size`` bytes (streamed, never held in memory), without performing."""
        return cls("oversized", size=size, times=times)

    @classmethod
    def echo_key(cls, code: int = 401, times: int = 1) -> Fault:
        """Answer HTTP ``code`` with an error message that repeats the request's API key."""
        return cls("echo_key", code=code, times=times)

    @classmethod
    def truncated(cls, times: int = 1) -> Fault:
        """Perform the request, then send half of the answer's body (its full ``Content-Length``) and close."""
        return cls("truncated", times=times)

    @classmethod
    def redirect(cls, location: str, code: int = 307, times: int = 1) -> Fault:
        """Answer with an HTTP ``code`` redirect to ``location``, without performing the request."""
        return cls("redirect", code=code, location=location, times=times)

    @property
    def error_message(self) -> str:
        """The message a ``status`` fault puts in its body."""
        if self.message is not None:
            return self.message
        return default_error_message(self.code or 500)

    def to_dict(self) -> dict[str, Any]:
        """The JSON form used by the control API (``POST /_emulator/faults``)."""
        data: dict[str, Any] = {"kind": self.kind, "times": self.times}
        if self.kind in ("status", "echo_key", "redirect"):
            data["code"] = self.code
        if self.kind == "status":
            if self.message is not None:
                data["message"] = self.message
            if self.retry_after is not None:
                data["retry_after"] = self.retry_after
        elif self.kind in ("slow", "drip"):
            data["seconds"] = self.seconds
        elif self.kind == "oversized":
            data["size"] = self.size
        elif self.kind == "redirect":
            data["location"] = self.location
        return data

    @classmethod
    def from_dict(cls, data: Mapping[str, Any]) -> Fault:
        """Build a fault from its JSON form (see :meth:`to_dict`); raises ``ValueError`` when invalid."""
        if not isinstance(data, Mapping):
            raise ValueError("a fault must be a JSON object")
        allowed = {"kind", "code", "message", "retry_after", "seconds", "times", "size", "location"}
        unknown = sorted(set(data) - allowed)
        if unknown:
            raise ValueError(f"unknown fault field(s): {', '.join(unknown)}")
        kind = data.get("kind")
        if kind not in FAULT_KINDS:
            raise ValueError(f"unknown fault kind {kind!r}; expected one of {', '.join(FAULT_KINDS)}")
        times = data.get("times", 1)
        retry_after = data.get("retry_after")
        seconds = data.get("seconds", 0.0)
        if retry_after is not None and not _is_number(retry_after):
            raise ValueError("retry_after must be a number")
        if not _is_number(seconds):
            raise ValueError("seconds must be a number")
        message = data.get("message")
        if message is not None and not isinstance(message, str):
            raise ValueError("message must be a string")
        location = data.get("location")
        if location is not None and not isinstance(location, str):
            raise ValueError("location must be a string")
        return cls(
            kind,
            code=data.get("code", 401 if kind == "echo_key" else 307 if kind == "redirect" else None),
            message=message,
            retry_after=None if retry_after is None else float(retry_after),
            seconds=float(seconds),
            times=times,
            size=data.get("size", 0),
            location=location,
        )


def _is_number(value: object) -> bool:
    return isinstance(value, (int, float)) and not isinstance(value, bool)


def format_retry_after(seconds: float) -> str:
    """Render a ``Retry-After`` value: whole seconds as an integer, fractions as a decimal number."""
    if float(seconds).is_integer():
        return str(int(seconds))
    return f"{seconds:g}"
