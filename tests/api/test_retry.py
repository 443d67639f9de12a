from __future__ import annotations

import random

import pytest

from airflow_provider_dune.api import endpoints
from airflow_provider_dune.api.errors import (
    DuneAuthError,
    DuneConnectionError,
    DuneCreditsExhaustedError,
    DuneRateLimitError,
    DuneResponseError,
    DuneServerError,
)
from airflow_provider_dune.api.retry import RetryPolicy

READ = endpoints.get_pipeline_status("P1")
EXECUTE = endpoints.execute_query_pipeline(1)


@pytest.mark.parametrize(
    ("error", "read_retried", "execute_retried"),
    [
        (DuneRateLimitError("slow", http_status=429), True, True),
        (DuneServerError("oops", http_status=500), True, False),
        (DuneServerError("bad gateway", http_status=502), True, False),
        (DuneServerError("unavailable", http_status=503), True, True),
        (DuneServerError("gateway timeout", http_status=504), True, False),
        (DuneConnectionError("refused", request_sent=False), True, True),
        (DuneConnectionError("read timeout", request_sent=True), True, False),
        (DuneResponseError("not json", http_status=200), True, False),
        (DuneAuthError("invalid API Key", http_status=401), False, False),
        (DuneCreditsExhaustedError("limits", http_status=402), False, False),
    ],
)
def test_retry_decisions(error: Exception, read_retried: bool, execute_retried: bool) -> None:
    policy = RetryPolicy()
    assert policy.should_retry(READ, error) is read_retried
    assert policy.should_retry(EXECUTE, error) is execute_retried


def test_retry_after_wins_and_is_capped() -> None:
    policy = RetryPolicy(max_retry_after=10)
    assert policy.wait_seconds(1, DuneServerError("x", http_status=503, retry_after=3)) == 3
    assert policy.wait_seconds(1, DuneServerError("x", http_status=503, retry_after=3600)) == 10


def test_a_429_is_retried_after_the_keys_cooldown_not_a_backoff_of_its_own() -> None:
    # The key's pacer holds the retry back, with Retry-After (tests/api/test_rate_limit.py).
    assert RetryPolicy().wait_seconds(3, DuneRateLimitError("x", retry_after=3)) == 0.0


def test_exponential_backoff_with_jitter_stays_in_bounds() -> None:
    policy = RetryPolicy(min_wait=1, max_wait=8)
    rng = random.Random(7)
    for attempt, ceiling in ((1, 1), (2, 2), (3, 4), (4, 8), (9, 8)):
        waits = [policy.wait_seconds(attempt, DuneServerError("x"), rng) for _ in range(50)]
        assert all(0.5 <= w <= ceiling for w in waits)
        assert len(set(waits)) > 1  # jittered, not a fixed schedule


def test_invalid_policy_rejected() -> None:
    with pytest.raises(ValueError, match="max_attempts"):
        RetryPolicy(max_attempts=0)
    with pytest.raises(ValueError, match="min_wait"):
        RetryPolicy(min_wait=10, max_wait=1)
