"""The 429 cooldown of an API key's pacer: every hook in a process with that key waits it out."""

from __future__ import annotations

import pytest

from airflow_provider_dune.api.budget import KeyPacer, KeyPacers
from airflow_provider_dune.api.retry import RetryPolicy

UNPACED = 0.0


class Clock:
    def __init__(self) -> None:
        self.now = 100.0

    def __call__(self) -> float:
        return self.now


@pytest.fixture
def clock() -> Clock:
    return Clock()


def pacer(clock: Clock, jitter: float = 0.0) -> KeyPacer:
    return KeyPacer(clock=clock, jitter=lambda: jitter)


def pause(limits: KeyPacer, per_minute: float = UNPACED) -> float:
    """The first wait of a request sent now (0.0: it goes at once)."""
    return next(limits.turns(per_minute), 0.0)


def retry(base_wait: float, max_wait: float, max_retry_after: float = 300.0) -> RetryPolicy:
    """A retry policy whose first cooldown after a 429 (twice ``min_wait``) is ``base_wait``."""
    return RetryPolicy(min_wait=base_wait / 2, max_wait=max_wait, max_retry_after=max_retry_after)


def test_no_delay_until_a_429(clock: Clock) -> None:
    limits = pacer(clock)
    assert pause(limits) == 0.0
    limits.succeeded()
    assert pause(limits) == 0.0


def test_a_429_holds_back_every_request_with_that_key_only(clock: Clock) -> None:
    pacers = KeyPacers(lambda: pacer(clock))
    limited = pacers.get("https://api.dune.com/api", "k", "read")
    other = pacers.get("https://api.dune.com/api", "other", "read")
    assert pacers.get("https://api.dune.com/api", "k", "read") is limited
    assert limited.rate_limited(None, retry(2.0, 60.0), UNPACED) == 2.0
    assert pause(limited) == 2.0
    assert pause(other) == 0.0
    clock.now += 1.5
    assert pause(limited) == pytest.approx(0.5)
    clock.now += 0.5
    assert pause(limited) == 0.0


def test_429s_after_each_cooldown_double_it_up_to_the_cap_and_successes_shrink_it(clock: Clock) -> None:
    limits = pacer(clock)
    policy = retry(2.0, 10.0)
    waits = []
    for _ in range(5):
        waits.append(limits.rate_limited(None, policy, UNPACED))
        clock.now += waits[-1]  # the next request went out once the cooldown was over, and was limited again
    assert waits == [2.0, 4.0, 8.0, 10.0, 10.0]
    for _ in range(3):  # successes within a minute of the last 429 do not shorten the next cooldown
        limits.succeeded()
    assert limits.rate_limited(None, policy, UNPACED) == 10.0
    for _ in range(4):  # each minute without a 429 halves it
        clock.now += 60
        limits.succeeded()
    assert limits.rate_limited(None, policy, UNPACED) == 8.0  # 6 - 4 = 2 strikes, then a 3rd


def test_a_key_starts_afresh_once_it_recovered(clock: Clock) -> None:
    limits = pacer(clock)
    limits.rate_limited(None, retry(2.0, 10.0), UNPACED)
    clock.now += 60
    limits.succeeded()
    assert pause(limits) == 0.0
    assert limits.rate_limited(None, retry(2.0, 10.0), UNPACED) == 2.0


def test_429s_of_one_burst_count_once(clock: Clock) -> None:
    # Twenty polls in flight together, seven of them limited: one cooldown, not 2 x 2^6 s.
    limits = pacer(clock)
    waits = [limits.rate_limited(None, retry(2.0, 60.0), UNPACED) for _ in range(7)]
    assert waits == [2.0] * 7
    assert pause(limits) == 2.0


def test_retry_after_sets_the_cooldown_up_to_max_retry_after(clock: Clock) -> None:
    limits = pacer(clock)
    policy = retry(2.0, 60.0, max_retry_after=100.0)
    assert limits.rate_limited(7.0, policy, UNPACED) == 7.0
    assert limits.rate_limited(600.0, policy, UNPACED) == 100.0  # the server said so, up to the cap
    assert pause(limits) == 100.0


def test_waiters_are_spread_over_the_cooldown(clock: Clock) -> None:
    limits = pacer(clock, jitter=0.5)
    limits.rate_limited(None, retry(4.0, 60.0), UNPACED)
    assert pause(limits) == 4.0 + 0.5 * 4.0


def test_a_request_that_would_wait_past_its_deadline_goes_out_then_without_a_slot(clock: Clock) -> None:
    limits = pacer(clock)
    limits.rate_limited(None, retry(20.0, 60.0), UNPACED)
    hurried, patient, queued = limits.turns(6, latest=5.0), limits.turns(6, latest=30.0), limits.turns(6)
    assert next(hurried) == 5.0
    assert list(hurried) == []  # then it goes, without taking a slot
    assert next(patient) == 20.0  # the first slot after the cooldown
    assert next(queued) == 30.0  # then one slot (10 s at 6 a minute) after another
    assert limits.queued() == 2


def test_keys_do_not_contain_the_api_key() -> None:
    key = KeyPacers.key_for("https://api.dune.com/api", "secret-api-key", "read")
    assert "secret-api-key" not in key
    assert key != KeyPacers.key_for("https://api.dune.com/api", "another-key", "read")
    assert key != KeyPacers.key_for("http://127.0.0.1:1/api", "secret-api-key", "read")
    assert key != KeyPacers.key_for("https://api.dune.com/api", "secret-api-key", "write")


def test_runs_started_and_reads_draw_on_separate_budgets() -> None:
    # Dune limits execute-like and read-like calls in two buckets: a 429 on one must not hold back the other.
    from airflow_provider_dune.api import endpoints
    from airflow_provider_dune.api.connection import settings_from_connection
    from airflow_provider_dune.hooks.dune import DuneHook

    settings = settings_from_connection("dune_default", host=None, password="k", port=None, extra={})
    execute = DuneHook._pacer(endpoints.execute_query_pipeline(1, "medium", None), settings)
    refresh = DuneHook._pacer(endpoints.refresh_materialized_view("dune.team.result_x", "medium"), settings)
    status = DuneHook._pacer(endpoints.get_pipeline_status("01ABC"), settings)
    cancel = DuneHook._pacer(endpoints.cancel_execution("01ABC"), settings)
    assert execute is refresh
    assert status is cancel
    assert execute is not status
