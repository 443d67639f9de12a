"""The durations history is an optimisation: a value it cannot read is ignored with a warning, never fatal."""

from __future__ import annotations

import json
from typing import Any

import pytest

from airflow_provider_dune.operators.pipeline import DuneExecutePipelineOperator
from airflow_provider_dune.testing.emulator import DuneEmulator
from airflow_provider_dune.utils import run_durations, task_records
from tests.operators.fakes import FakeTI, FakeVariables

NESTED = "[" * 100_000 + "]" * 100_000  # json.loads raises RecursionError on it
UNREADABLE = [NESTED, "{not json", '{"a": 1}', "[1, 2", "x" * (run_durations.MAX_HISTORY_CHARS + 1), b"\xff"]


@pytest.mark.parametrize("raw", UNREADABLE, ids=["nested", "not-json", "object", "cut", "huge", "bytes"])
def test_an_unreadable_history_is_ignored_with_a_warning(
    raw: Any, run_durations_store: FakeVariables, caplog: pytest.LogCaptureFixture
) -> None:
    run_durations_store.store[run_durations.history_key("f")] = raw
    assert run_durations.recall("f") == []
    assert "previous durations of this Dune request cannot be read" in caplog.text
    run_durations.record("f", 12.0)  # and replaced by a readable one
    assert json.loads(run_durations_store.store[run_durations.history_key("f")]) == [12.0]


def test_a_readable_history_is_kept(run_durations_store: FakeVariables) -> None:
    run_durations_store.store[run_durations.history_key("f")] = json.dumps([5, "x", -1, 7.5])
    assert run_durations.recall("f") == [5.0, 7.5]


class CorruptHistories(FakeVariables):
    """Variables in which every request's durations history was left deeply nested."""

    def get(self, key: str, default: Any = None, /) -> Any:
        if key.startswith(run_durations.KEY_PREFIX):
            return self.store.get(key, NESTED)
        return super().get(key, default)


def test_a_task_whose_history_is_corrupt_succeeds(
    dune_emulator: DuneEmulator, dune_conn_id: str, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setattr(task_records, "Variable", FakeVariables())
    histories = CorruptHistories()
    monkeypatch.setattr(run_durations, "Variable", histories)
    dune_emulator.add_query(9805, duration=0.2)
    op = DuneExecutePipelineOperator(task_id="refresh", query_id=9805, poll_interval=0.1, deferrable=False)
    assert op.execute({"ti": FakeTI(dune_emulator), "params": {}})["outcome"] == "success"
    (learnt,) = [json.loads(v) for k, v in histories.store.items() if k.startswith(run_durations.KEY_PREFIX)]
    assert len(learnt) == 1
