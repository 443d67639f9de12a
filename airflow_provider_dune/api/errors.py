"""Exceptions raised for Dune API failures, and the mapping from HTTP responses to them."""

from __future__ import annotations

import json
import re
from collections.abc import Mapping
from datetime import datetime, timezone
from email.utils import parsedate_to_datetime

from airflow.exceptions import AirflowException

from airflow_provider_dune.api.connection_fields import (
    API_KEY_LABEL,
    BASE_URL_LABEL,
    EXTRA_SETTINGS,
    connection_name,
)
from airflow_provider_dune.version_compat import AirflowFailException

_LABELS = {setting.name: setting.label for setting in EXTRA_SETTINGS}


class DuneError(AirflowException):
    """Base class of every error raised by this provider."""


class DuneConfigurationError(DuneError):
    """The connection or the task's arguments are invalid; the message says what to fix."""


class DuneAPIError(DuneError):
    """Dune answered with an HTTP error.

    :param message: Dune's own ``{"error": ...}`` message (or a description when the body had none).
    :param http_status: HTTP status code, ``None`` when no response was received.
    :param endpoint: the request, e.g. ``GET /v1/pipelines/executions/{pipeline_execution_id}/status for
        pipeline execution 01H...``.
    :param conn_id: the Airflow connection the request used; hints that name one of its fields name it too.
    """

    def __init__(
        self,
        message: str,
        *,
        http_status: int | None = None,
        endpoint: str | None = None,
        retry_after: float | None = None,
        conn_id: str | None = None,
    ) -> None:
        self.message = message
        self.http_status = http_status
        self.endpoint = endpoint
        self.retry_after = retry_after
        self.conn_id = conn_id
        #: Set on errors of a request that starts a billed run when Dune may have started it anyway.
        self.may_have_started_run = False
        super().__init__(self._format())

    #: What to do, appended to the message; ``{connection}`` becomes the connection's name (see ``conn_id``).
    hint: str = ""

    def _format(self) -> str:
        where = f" on {self.endpoint}" if self.endpoint else ""
        code = f"HTTP {self.http_status}" if self.http_status is not None else "no response"
        hint = f" {self.hint.format(connection=connection_name(self.conn_id))}" if self.hint else ""
        message = self.message.rstrip(".")
        return f"Dune API error ({code}){where}: {message}.{hint}"

    def add_detail(self, detail: str) -> None:
        """Append an explanation to the message (e.g. why the request was not retried)."""
        self.message = f"{self.message.rstrip('.')}. {detail}"
        self.args = (self._format(),)

    def mark_may_have_started_run(self, detail: str) -> None:
        """Record that the failed request may still have started a billed run, and say so in the message."""
        if not self.may_have_started_run:
            self.may_have_started_run = True
            self.add_detail(detail)

    def name_connection(self, conn_id: str) -> None:
        """Name the Airflow connection in the hint (the hook does, once it knows which one was used)."""
        if conn_id and conn_id != self.conn_id:
            self.conn_id = conn_id
            self.args = (self._format(),)

    def redact(self, secret: str) -> None:
        """Remove ``secret`` (the API key) from the message, e.g. when a server echoed it back."""
        redacted = redact(self.message, secret)
        if redacted != self.message:
            self.message = redacted
            self.args = (self._format(),)

    def __reduce__(self):  # type: ignore[no-untyped-def]
        # Keep keyword-only arguments across pickling (Airflow may pickle exceptions between processes).
        return (
            _rebuild_error,
            (
                type(self),
                self.message,
                self.http_status,
                self.endpoint,
                self.retry_after,
                self.may_have_started_run,
                self.conn_id,
            ),
        )


#: The shortest piece of the key at either end of a text that :func:`redact` removes (a text cut mid-key).
_MIN_REDACTED_PIECE = 4


def redact(text: str, secret: str) -> str:
    """``text`` with every occurrence of ``secret`` replaced by ``***``.

    A text that was cut elsewhere may also end with the key's beginning or start with its end; such pieces
    (from 4 characters) are replaced too. Callers redact before they truncate, so this is a second line.
    """
    if not secret:
        return text
    text = text.replace(secret, "***")
    for size in range(min(len(secret), len(text)) - 1, _MIN_REDACTED_PIECE - 1, -1):
        if text.endswith(secret[:size]):
            text = text[:-size] + "***"
            break
    for size in range(min(len(secret), len(text)) - 1, _MIN_REDACTED_PIECE - 1, -1):
        if text.startswith(secret[-size:]):
            text = "***" + text[size:]
            break
    return text


def _rebuild_error(
    cls: type[DuneAPIError],
    message: str,
    status_code: int | None,
    endpoint: str | None,
    retry_after: float | None,
    may_have_started_run: bool = False,
    conn_id: str | None = None,
) -> DuneAPIError:
    error = cls(message, http_status=status_code, endpoint=endpoint, retry_after=retry_after, conn_id=conn_id)
    error.may_have_started_run = may_have_started_run
    return error


class DuneBadRequestError(DuneAPIError):
    """Dune rejected the request (400/409/422): usually bad parameters or an invalid pipeline."""


class DuneAuthError(DuneAPIError):
    """The API key is missing, invalid (401) or lacks the permission needed (403)."""

    hint = (
        f"Check the {API_KEY_LABEL} field of {{connection}}; executing pipelines and refreshing materialized views "
        "needs a Read/Write key."
    )


class DuneNotFoundError(DuneAPIError):
    """The query, materialized view or execution does not exist or is private (404)."""

    hint = (
        "Check the id or name, and that the API key belongs to a team that can see it: Dune answers 404 for "
        "another team's private queries and views too."
    )


class DuneInvalidIdError(DuneNotFoundError):
    """Dune says the id itself is invalid (HTTP 400 "The requested execution ID (ID: ...) is invalid.").

    A subclass of :class:`DuneNotFoundError`: no run can have that id, so it is handled like a missing one.
    """

    hint = (
        "This id is invalid: check that it was copied whole (execution ids are 26 characters such as "
        "01HKZJ2683PHF9Q9PHHQ8FW4Q1; query ids are the number in the query's dune.com URL)."
    )


class DuneDatapointLimitError(DuneBadRequestError):
    """A results request would return more datapoints (rows x columns) than the account allows per request."""

    hint = (
        "Dune caps each results request at the account's datapoints-per-request limit (250,000 by default). "
        f"Set the {_LABELS['max_datapoints_per_request']} field of {{connection}} (max_datapoints_per_request in "
        "its extra) to your account's limit, or lower the operator's page_size; pages are then sized to stay under "
        "it."
    )


class DunePartialResultError(DuneBadRequestError):
    """Dune truncated the result and refused it because partial results were not allowed."""

    hint = "Set allow_partial_results=True on the operator to accept the truncated result."


class DuneResultUnavailableError(DuneAPIError):
    """Dune answered a results request without a result (the run failed, was cancelled or its result expired)."""


class DuneCreditsExhaustedError(DuneAPIError):
    """The request would exceed the plan's credit limits for this billing cycle (402)."""

    hint = "Raise the credit limit of the Dune team or wait for the next billing cycle; retrying will not help."


class DuneCreditLimitError(DuneError, AirflowFailException):
    """The connection's credit guard refused a billed start: the period's credits reached its ceiling.

    Nothing was sent; the task fails without retries (the period's usage only grows until it ends).
    """


class DuneRateLimitError(DuneAPIError):
    """Too many requests for the plan's rate limit (429)."""

    hint = (
        f"Set the {_LABELS['reads_per_minute']} and {_LABELS['writes_per_minute']} fields of {{connection}} "
        "(reads_per_minute/writes_per_minute in its extra) to your plan and, when tasks waiting in workers share "
        "the key with the triggerers, [dune] budget_share; or lower the polling frequency (poll_interval) or the "
        "number of concurrent Dune tasks."
    )


class DuneServerError(DuneAPIError):
    """Dune failed to handle the request (5xx)."""


class DuneConnectionError(DuneAPIError):
    """No usable HTTP response: connection refused, dropped, timed out or an unparsable body.

    :param request_sent: ``True`` when the request may have reached Dune (read timeout, connection dropped
        after sending), so a non-idempotent call may have taken effect.
    """

    def __init__(
        self,
        message: str,
        *,
        http_status: int | None = None,
        endpoint: str | None = None,
        retry_after: float | None = None,
        request_sent: bool = True,
        conn_id: str | None = None,
    ) -> None:
        self.request_sent = request_sent
        super().__init__(message, http_status=http_status, endpoint=endpoint, retry_after=retry_after, conn_id=conn_id)

    def __reduce__(self):  # type: ignore[no-untyped-def]
        return (
            _rebuild_connection_error,
            (
                type(self),
                self.message,
                self.http_status,
                self.endpoint,
                self.retry_after,
                self.request_sent,
                self.may_have_started_run,
                self.conn_id,
            ),
        )


def _rebuild_connection_error(
    cls: type[DuneConnectionError],
    message: str,
    status_code: int | None,
    endpoint: str | None,
    retry_after: float | None,
    request_sent: bool,
    may_have_started_run: bool = False,
    conn_id: str | None = None,
) -> DuneConnectionError:
    error = cls(
        message,
        http_status=status_code,
        endpoint=endpoint,
        retry_after=retry_after,
        request_sent=request_sent,
        conn_id=conn_id,
    )
    error.may_have_started_run = may_have_started_run
    return error


class DuneTLSError(DuneConnectionError):
    """The server's TLS certificate could not be verified; nothing was sent, and retrying will not help."""

    hint = (
        f"Check the {BASE_URL_LABEL} field of {{connection}}. Behind a TLS-inspecting proxy, point "
        "REQUESTS_CA_BUNDLE / SSL_CERT_FILE at its CA certificate."
    )


class DuneResponseError(DuneAPIError):
    """Dune answered 2xx but the body is not what the API documents (not JSON, or missing fields)."""


class DuneRedirectError(DuneAPIError):
    """The server answered with a redirect (3xx); the provider never follows one, so the key stays put."""

    hint = f"Set the {BASE_URL_LABEL} field of {{connection}} to the URL the redirect points to, if you trust it."


_STATUS_CLASSES: dict[int, type[DuneAPIError]] = {
    400: DuneBadRequestError,
    401: DuneAuthError,
    402: DuneCreditsExhaustedError,
    403: DuneAuthError,
    404: DuneNotFoundError,
    409: DuneBadRequestError,
    422: DuneBadRequestError,
    429: DuneRateLimitError,
}

_MAX_MESSAGE_CHARS = 500

# Dune's words for refusals that arrive under a general status code (wording in REAL_SHAPES.md).
_DATAPOINT_LIMIT_WORDS = "limits per request"
_PARTIAL_RESULT_WORDS = "allow_partial_results"
_INVALID_ID = re.compile(r"\bID\b.*\bis invalid\b", re.IGNORECASE)


def _error_class_for(status_code: int, message: str) -> type[DuneAPIError]:
    """The error class for a non-2xx status, refined by Dune's wording where one code means several things."""
    if status_code >= 500:
        return DuneServerError
    if 400 <= status_code < 500 and status_code != 429:
        lowered = message.lower()
        if _DATAPOINT_LIMIT_WORDS in lowered:
            return DuneDatapointLimitError
        if _PARTIAL_RESULT_WORDS in lowered:
            return DunePartialResultError
        if status_code == 400 and _INVALID_ID.search(message):
            return DuneInvalidIdError
    return _STATUS_CLASSES.get(status_code, DuneAPIError)


def error_message_from_body(body: bytes | str | None, status_code: int, *, secret: str = "") -> str:
    """Extract Dune's ``{"error": "..."}`` message, falling back to a trimmed body or the reason phrase.

    ``secret`` (the API key) is removed before the message is cut, so no piece of it survives the cut.
    """
    text = body.decode("utf-8", errors="replace") if isinstance(body, bytes) else (body or "")
    text = redact(text, secret)
    try:
        payload = json.loads(text) if text else None
    except (ValueError, RecursionError):
        payload = None
    if isinstance(payload, Mapping):
        for key in ("error", "message", "detail"):
            value = payload.get(key)
            if isinstance(value, str) and value:
                return value[:_MAX_MESSAGE_CHARS]
            if isinstance(value, Mapping) and isinstance(value.get("message"), str):
                return str(value["message"])[:_MAX_MESSAGE_CHARS]
    stripped = " ".join(text.split())
    if stripped:
        return stripped[:_MAX_MESSAGE_CHARS]
    return f"HTTP {status_code} with an empty body"


def parse_retry_after(value: str | None, *, now: datetime | None = None) -> float | None:
    """Seconds to wait from a ``Retry-After`` header (delta-seconds or HTTP date), ``None`` if absent/invalid."""
    if not value:
        return None
    value = value.strip()
    try:
        return max(0.0, float(value))
    except ValueError:
        pass
    try:
        when = parsedate_to_datetime(value)
    except (TypeError, ValueError):
        return None
    if when.tzinfo is None:
        when = when.replace(tzinfo=timezone.utc)
    current = now or datetime.now(timezone.utc)
    return max(0.0, (when - current).total_seconds())


def error_from_response(
    status_code: int,
    body: bytes | str | None,
    headers: Mapping[str, str] | None = None,
    *,
    endpoint: str | None = None,
    secret: str = "",
) -> DuneAPIError:
    """Map a non-2xx Dune response to the matching :class:`DuneAPIError` subclass (``secret`` redacted)."""
    lowered = {key.lower(): value for key, value in (headers or {}).items()}
    if 300 <= status_code < 400:
        location = lowered.get("location")
        where = f" to {redact(location, secret)[:200]}" if location else " (no Location header)"
        return DuneRedirectError(
            f"the server answered HTTP {status_code}, a redirect{where}; redirects are not followed, so the API key "
            "is only ever sent to the configured host",
            http_status=status_code,
            endpoint=endpoint,
        )
    message = error_message_from_body(body, status_code, secret=secret)
    retry_after = parse_retry_after(lowered.get("retry-after"))
    error_class = _error_class_for(status_code, message)
    return error_class(message, http_status=status_code, endpoint=endpoint, retry_after=retry_after)
