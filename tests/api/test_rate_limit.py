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


def test_429s_after_each_cooldown_double_it_up_to_the_cap_and_successes_shrink_it(clock: Clock) -> None:
    limits = cooldown(clock)
    waits = []
    for _ in range(5):
        waits.append(limits.record_rate_limited("k", None, base_wait=2.0, max_wait=10.0))
        clock.now += waits[-1]  # the next request went out once the cooldown was over, and was limited again
    assert waits == [2.0, 4.0, 8.0, 10.0, 10.0]
    for _ in range(3):  # successes within a minute of the last 429 do not shorten the next cooldown
        limits.record_success("k")
    assert limits.record_rate_limited("k", None, base_wait=2.0, max_wait=10.0) == 10.0
    for _ in range(4):  # each minute without a 429 halves it
        clock.now += 60
        limits.record_success("k")
    assert limits.record_rate_limited("k", None, base_wait=2.0, max_wait=10.0) == 8.0  # 6 - 4 = 2 strikes, then a 3rd


def test_a_key_is_forgotten_once_it_recovered(clock: Clock) -> None:
    limits = cooldown(clock)
    limits.record_rate_limited("k", None, base_wait=2.0, max_wait=10.0)
    clock.now += 60
    limits.record_success("k")
    assert limits._keys == {}
    assert limits.record_rate_limited("k", None, base_wait=2.0, max_wait=10.0) == 2.0


def test_429s_of_one_burst_count_once(clock: Clock) -> None:
    # Twenty polls in flight together, seven of them limited: one cooldown, not 2 x 2^6 s.
    limits = cooldown(clock)
    waits = [limits.record_rate_limited("k", None, base_wait=2.0, max_wait=60.0) for _ in range(7)]
    assert waits == [2.0] * 7
    assert limits.delay("k") == 2.0


def test_retry_after_sets_the_cooldown(clock: Clock) -> None:
    limits = cooldown(clock)
    assert limits.record_rate_limited("k", 7.0, base_wait=2.0, max_wait=60.0) == 7.0
    assert limits.record_rate_limited("k", 600.0, base_wait=2.0, max_wait=60.0) == 60.0  # the server said so
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
    assert key != RateLimitCooldown.key_for("https://api.dune.com/api", "secret-api-key", "write")


def test_runs_started_and_reads_draw_on_separate_budgets() -> None:
    # Dune limits execute-like and read-like calls in two buckets: a 429 on one must not hold back the other.
    from airflow_provider_dune.api import endpoints
    from airflow_provider_dune.api.connection import settings_from_connection
    from airflow_provider_dune.hooks.dune import DuneHook

    settings = settings_from_connection("dune_default", host=None, password="k", port=None, extra={})
    execute = DuneHook._budget(endpoints.execute_query_pipeline(1, "medium", None), settings)
    refresh = DuneHook._budget(endpoints.refresh_materialized_view("dune.team.result_x", "medium"), settings)
    status = DuneHook._budget(endpoints.get_pipeline_status("01ABC"), settings)
    cancel = DuneHook._budget(endpoints.cancel_execution("01ABC"), settings)
    assert execute == refresh != status == cancel
