from __future__ import annotations

import pytest

from airflow_provider_dune.api.states import RunState, normalize_state


@pytest.mark.parametrize(
    ("raw", "expected"),
    [
        ("completed", RunState.COMPLETED),
        ("COMPLETED", RunState.COMPLETED),
        ("QUERY_STATE_COMPLETED", RunState.COMPLETED),
        ("query_state_completed_partial", RunState.COMPLETED_PARTIAL),
        ("QUERY_STATE_PENDING", RunState.PENDING),
        ("executing", RunState.EXECUTING),
        ("QUERY_STATE_EXECUTING", RunState.EXECUTING),
        ("QUERY_STATE_FAILED", RunState.FAILED),
        ("QUERY_STATE_CANCELLED", RunState.CANCELLED),
        ("QUERY_STATE_CANCELED", RunState.CANCELLED),
        ("Canceled", RunState.CANCELLED),
        ("PIPELINE_STATE_FAILED", RunState.FAILED),
        ("QUERY_STATE_EXPIRED", RunState.EXPIRED),
        ("  running ", RunState.EXECUTING),
        ("in-progress", RunState.EXECUTING),
    ],
)
def test_known_spellings_normalise(raw: str, expected: RunState) -> None:
    assert normalize_state(raw) is expected


@pytest.mark.parametrize("raw", ["", None, 3, "QUERY_STATE_", "completed_with_warnings", "done?", "STATE_MAYBE"])
def test_unrecognised_states_are_unknown_never_success(raw: object) -> None:
    state = normalize_state(raw)
    assert state is RunState.UNKNOWN
    assert not state.is_terminal


def test_terminal_and_failure_sets() -> None:
    assert RunState.COMPLETED.is_terminal and not RunState.COMPLETED.is_failure
    assert RunState.COMPLETED_PARTIAL.is_terminal and not RunState.COMPLETED_PARTIAL.is_failure
    for state in (RunState.FAILED, RunState.CANCELLED, RunState.EXPIRED):
        assert state.is_terminal and state.is_failure
    for state in (RunState.PENDING, RunState.EXECUTING, RunState.UNKNOWN):
        assert not state.is_terminal
