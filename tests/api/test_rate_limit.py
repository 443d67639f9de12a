"""The per-API-key 429 cooldown shared by every hook in a process."""

from __future__ import annotations

import pytest

from airflow_provider_dune.api.rate_limit import RateLimitCooldown


class Clock:
    def __init__(self) -> None:
        self.now = 100.0

    def __call__(self) -> float:
        return self.now


@pytest.fixture
def clock() -> Clock:
    return Clock()


def cooldown(clock: Clock, jitter: float = 0.0) -> RateLimitCooldown:
    return RateLimitCooldown(clock=clock, jitter=lambda: jitter)


def test_no_delay_until_a_429(clock: Clock) -> None:
    limits = cooldown(clock)
    assert limits.delay("k") == 0.0
    limits.record_success("k")
    assert limits.delay("k") == 0.0


def test_a_429_holds_back_every_request_with_that_key_only(clock: Clock) -> None:
    limits = cooldown(clock)
    assert limits.record_rate_limited("k", None, base_wait=2.0, max_wait=60.0) == 2.0
    assert limits.delay("k") == 2.0
    assert limits.delay("other") == 0.0
    clock.now += 1.5
    assert limits.delay("k") == pytest.approx(0.5)
    clock.now += 0.5
    assert limits.delay("k") == 0.0


def test_repeated_429s_double_the_cooldown_up_to_the_cap_and_successes_shrink_it(clock: Clock) -> None:
    limits = cooldown(clock)
    waits = [limits.record_rate_limited("k", None, base_wait=2.0, max_wait=10.0) for _ in range(5)]
    assert waits == [2.0, 4.0, 8.0, 10.0, 10.0]
    for _ in range(3):
        limits.record_success("k")
    clock.now += 60
    assert limits.record_rate_limited("k", None, base_wait=2.0, max_wait=10.0) == 8.0  # 2 strikes left -> 3rd


def test_retry_after_sets_the_cooldown(clock: Clock) -> None:
    limits = cooldown(clock)
    assert limits.record_rate_limited("k", 7.0, base_wait=2.0, max_wait=60.0) == 7.0
    assert limits.record_rate_limited("k", 600.0, base_wait=2.0, max_wait=60.0) == 60.0
    assert limits.delay("k") == 60.0


def test_waiters_are_spread_over_the_cooldown(clock: Clock) -> None:
    limits = cooldown(clock, jitter=0.5)
    limits.record_rate_limited("k", None, base_wait=4.0, max_wait=60.0)
    assert limits.delay("k") == 4.0 + 0.5 * 4.0


def test_keys_do_not_contain_the_api_key() -> None:
    key = RateLimitCooldown.key_for("https://api.dune.com/api", "secret-api-key")
    assert "secret-api-key" not in key
    assert key != RateLimitCooldown.key_for("https://api.dune.com/api", "another-key")
    assert key != RateLimitCooldown.key_for("http://127.0.0.1:1/api", "secret-api-key")
