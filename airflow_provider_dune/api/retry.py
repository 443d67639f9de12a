"""When and how long to wait before retrying a Dune request.

Retried: 429, 5xx, connection failures and unparsable bodies, with exponential backoff and jitter (honouring
``Retry-After``); the wait after a 429 is the API key's cooldown, which holds back every request with the key
(:class:`~airflow_provider_dune.api.budget.KeyPacer`). A request that starts billed work (execute, refresh) is
retried only when Dune certainly did not act on it: 429, 503, or a failure before the request was sent. A read
timeout, a dropped connection or another 5xx after sending an execute is ambiguous, and retrying it could start
a second billed run, so it is raised instead.
"""

from __future__ import annotations

import random
from dataclasses import dataclass

from airflow_provider_dune.api.connection_fields import (
    DEFAULT_MAX_ATTEMPTS,
    DEFAULT_RETRY_MAX_WAIT,
    DEFAULT_RETRY_MIN_WAIT,
)
from airflow_provider_dune.api.endpoints import DuneRequest
from airflow_provider_dune.api.errors import (
    DuneAPIError,
    DuneConnectionError,
    DuneRateLimitError,
    DuneResponseError,
    DuneServerError,
    DuneTLSError,
)

_UNPROCESSED_SERVER_CODES = frozenset({503})


@dataclass(frozen=True)
class RetryPolicy:
    """Retry settings for one hook.

    :param max_attempts: total tries per request, including the first (1 disables retries).
    :param min_wait: first backoff step in seconds.
    :param max_wait: cap for one exponential backoff step in seconds.
    :param max_retry_after: cap for a server-requested ``Retry-After`` wait in seconds.
    """

    max_attempts: int = DEFAULT_MAX_ATTEMPTS
    min_wait: float = DEFAULT_RETRY_MIN_WAIT
    max_wait: float = DEFAULT_RETRY_MAX_WAIT
    max_retry_after: float = 300.0

    def __post_init__(self) -> None:
        if self.max_attempts < 1:
            raise ValueError("max_attempts must be at least 1")
        if self.min_wait < 0 or self.max_wait < self.min_wait:
            raise ValueError("retry waits must satisfy 0 <= min_wait <= max_wait")

    def should_retry(self, request: DuneRequest, error: BaseException) -> bool:
        """Whether ``error`` raised by ``request`` is transient and safe to retry."""
        if isinstance(error, DuneTLSError):
            return False
        if isinstance(error, DuneRateLimitError):
            return True
        if isinstance(error, DuneServerError):
            return request.endpoint.retry_safe or error.http_status in _UNPROCESSED_SERVER_CODES
        if isinstance(error, DuneConnectionError):
            return request.endpoint.retry_safe or not error.request_sent
        if isinstance(error, DuneResponseError):
            return request.endpoint.retry_safe
        return False

    def wait_seconds(self, attempt: int, error: BaseException | None, rng: random.Random | None = None) -> float:
        """Seconds to sleep after failed try number ``attempt`` (1-based); 0.0 after a 429, whose retry waits for
        the key's cooldown instead."""
        if isinstance(error, DuneRateLimitError):
            return 0.0
        retry_after = error.retry_after if isinstance(error, DuneAPIError) else None
        if retry_after is not None:
            return min(retry_after, self.max_retry_after)
        ceiling = min(self.max_wait, self.min_wait * (2 ** max(0, attempt - 1)))
        return (rng or random).uniform(self.min_wait / 2, max(ceiling, self.min_wait / 2))


def may_have_started_run(request: DuneRequest, error: BaseException) -> bool:
    """Whether a failed ``request`` that starts a billed run may have started it anyway.

    Dune may have acted on it when the request was sent and no usable answer came back: a read timeout or a
    connection dropped after sending, a 5xx other than 503, or a 2xx whose body could not be read. A 429, a
    503, a refused connection or a 4xx means Dune did not start anything.
    """
    if request.endpoint.retry_safe:
        return False
    if isinstance(error, DuneConnectionError):
        return error.request_sent and not isinstance(error, DuneTLSError)
    if isinstance(error, DuneServerError):
        return error.http_status not in _UNPROCESSED_SERVER_CODES
    return isinstance(error, DuneResponseError)


def describe_unsafe_retry(request: DuneRequest) -> str:
    """Why an execute call was not retried, for the error message."""
    effect = request.endpoint.effect
    if effect != "started a run":
        return (
            f"{request.description} may have reached Dune and {effect}, so it was not retried to avoid "
            "doing it twice. Check on dune.com before running it again."
        )
    return (
        f"{request.description} may have reached Dune and started a run, so it was not retried to avoid a second "
        "billed run. Check the executions on dune.com before running it again."
    )
