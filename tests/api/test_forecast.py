"""Forecasting a run's end and planning status reads around it (pure functions)."""

from __future__ import annotations

import math

import pytest

from airflow_provider_dune.api.forecast import (
    CompletionWindow,
    forecast,
    observed_duration,
    plan_next_read,
    read_urgency,
    usable_durations,
    window_from_history,
    window_from_progress,
)

START = 1_000.0


def test_history_window_spans_the_previous_durations_plus_a_margin() -> None:
    window = window_from_history(START, [600.0, 590.0, 612.0])
    assert window is not None
    assert window.opens == pytest.approx(START + 590 - 12)  # 2% of the median (more than half the spread, 11 s)
    assert window.closes == pytest.approx(START + 612 + 12)
    spread = window_from_history(START, [500.0, 600.0])
    assert spread is not None and (spread.opens, spread.closes) == pytest.approx((START + 450, START + 650))
    assert window.basis == "3 previous runs"
    single = window_from_history(START, [100.0])
    assert single is not None
    assert (single.opens, single.closes) == pytest.approx((START + 85, START + 115))
    tiny = window_from_history(START, [1.0])
    assert tiny is not None and tiny.opens == START  # the margin never opens the window before the start


def test_junk_durations_are_dropped_and_only_the_latest_kept() -> None:
    assert usable_durations([5, "6", None, True, -1, 0, math.inf, math.nan, 7.5]) == [5.0, 7.5]
    assert usable_durations(list(range(1, 30))) == [float(v) for v in range(20, 30)]
    assert window_from_history(START, []) is None


def test_progress_window_extrapolates_nodes_done() -> None:
    # 1 of 4 nodes done after 60 s: about 180 s to go; the window opens halfway there.
    window = window_from_progress(START, START + 60, 1, 4)
    assert window is not None
    assert window.opens == pytest.approx(START + 60 + 90)
    assert window.closes == pytest.approx(START + 240 + 180)
    assert window_from_progress(START, START + 60, 0, 4) is None  # nothing to extrapolate
    assert window_from_progress(START, START + 60, 4, 4) is None
    assert window_from_progress(START, START + 60, 1, 1) is None


def test_history_wins_over_progress_and_an_unknown_start_gives_no_forecast() -> None:
    from_history = forecast(started_at=START, now=START + 10, durations=[50.0], progress=(1, 2))
    assert from_history is not None and from_history.basis == "1 previous run"
    from_progress = forecast(started_at=START, now=START + 10, durations=[], progress=(1, 2))
    assert from_progress is not None and from_progress.basis == "1/2 nodes done"
    assert forecast(started_at=None, now=START, durations=[50.0]) is None


@pytest.mark.parametrize("poll_interval", [5.0, 30.0, 300.0])
def test_reads_are_never_further_apart_than_poll_interval_nor_closer_than_the_floor(poll_interval: float) -> None:
    window = CompletionWindow(opens=START + 570, closes=START + 630, basis="test")
    for offset in range(0, 900, 7):
        plan = plan_next_read(now=START + offset, poll_interval=poll_interval, floor=1.0, window=window)
        assert 1.0 <= plan.wait <= poll_interval


def test_reads_wait_for_the_window_then_cross_it_in_a_few_steps_then_fall_back() -> None:
    window = CompletionWindow(opens=START + 570, closes=START + 630, basis="test")
    early = plan_next_read(now=START + 100, poll_interval=300, floor=1, window=window)
    assert (early.wait, early.phase) == (300, "before the expected end")
    just_before = plan_next_read(now=START + 500, poll_interval=300, floor=1, window=window)
    assert just_before.wait == pytest.approx(70)  # lands as the window opens
    inside = plan_next_read(now=START + 580, poll_interval=300, floor=1, window=window)
    assert (inside.wait, inside.phase) == (pytest.approx(15), "near the expected end")
    late = plan_next_read(now=START + 640, poll_interval=300, floor=1, window=window)
    assert (late.wait, late.phase) == (pytest.approx(15), "later than expected")  # just late: the window's step
    later = plan_next_read(now=START + 730, poll_interval=300, floor=1, window=window)
    assert later.wait == pytest.approx(100)  # as late again as it already is
    assert plan_next_read(now=START + 5000, poll_interval=300, floor=1, window=window).wait == 300
    assert plan_next_read(now=START, poll_interval=30, floor=1, window=None).wait == 30


def test_urgency_is_highest_inside_the_window() -> None:
    window = CompletionWindow(opens=START + 10, closes=START + 20, basis="test")
    before, inside, late = (read_urgency(START + t, window) for t in (0, 15, 25))
    assert before < late < inside
    assert before < read_urgency(START, None) < inside


def test_observed_duration_is_the_middle_of_the_last_gap() -> None:
    assert observed_duration(START, START + 50, START + 60) == pytest.approx(55)
    assert observed_duration(START, None, START + 60) == pytest.approx(60)
    assert observed_duration(None, START + 50, START + 60) is None
    assert observed_duration(START, None, START - 5) is None
