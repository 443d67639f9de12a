"""End to end: deferrable Dune pipelines in a real Airflow 3 (scheduler, triggerer, api-server, dag-processor).

One stack per module (``conftest.airflow_stack``), LocalExecutor with ``parallelism=1`` (one worker slot),
SQLite, the Dune API emulator in a subprocess. Cases run in order; the key grep is last so it sees every log.
Run with ``python -m pytest tests/e2e -m e2e -s -q`` to see the measured times and counts.
"""

from __future__ import annotations

import os
import signal
import time
from typing import Any

import pytest

from airflow_provider_dune.api.connection_fields import DEFAULT_MAX_ATTEMPTS
from airflow_provider_dune.testing.emulator import Fault
from airflow_provider_dune.utils.run_registry import KEY_PREFIX, STATE_KEY
from airflow_provider_dune.version_compat import AIRFLOW_V_3_3_PLUS

from .conftest import AirflowStack

pytestmark = pytest.mark.e2e

N_SLOTS = 5  # parallel pipelines in the one-slot case
D_SLOTS = 20.0  # seconds each of them runs in the emulator
N_RESTART = 4
D_RESTART = 25.0
D_FAULTS = 8.0
NODE_ERROR = "e2e: Line 3:7: Column 'volume_usdd' cannot be resolved"
FAILING_QUERY = 404  # its node fails for real: not retried (an SQL error), so the task's failure is that failure

RETRY_QUERY = 601  # its rows cannot be fetched on the first try: the retry must reuse the finished run
DAG_IDS = ["e2e_slots", "e2e_restart", "e2e_faults", "e2e_kill", "e2e_retry"]
DAG_FILE_SOURCE = f"""
from __future__ import annotations

from datetime import timedelta

import pendulum
from airflow.sdk import DAG

from airflow_provider_dune.operators.pipeline import DuneExecutePipelineOperator
from airflow_provider_dune.operators.query import DuneExecuteQueryOperator

START = pendulum.datetime(2024, 1, 1, tz="UTC")


def pipelines(dag_id, query_ids):
    with DAG(dag_id, schedule=None, start_date=START, catchup=False, max_active_tasks=32) as dag:
        for query_id in query_ids:
            DuneExecutePipelineOperator(
                task_id=f"pipeline_{{query_id}}",
                query_id=query_id,
                deferrable=True,
                poll_interval=1,
                # As users set it. Airflow <= 3.3.2 may fail a deferred task whose trigger fires within seconds
                # (apache/airflow#67287) without running it again; the retry then reuses the finished run instead
                # of starting another, and states a failed run's error once.
                retries=1,
                retry_delay=timedelta(seconds=1),
            )
    return dag


pipelines("e2e_slots", range(101, 101 + {N_SLOTS}))
pipelines("e2e_restart", range(301, 301 + {N_RESTART}))
pipelines("e2e_faults", [401, 402, 403, 404])
pipelines("e2e_kill", [501])

with DAG("e2e_retry", schedule=None, start_date=START, catchup=False):
    DuneExecuteQueryOperator(
        task_id="query_{RETRY_QUERY}",
        query_id={RETRY_QUERY},
        deferrable=True,
        poll_interval=1,
        fetch_results=True,
        # One retry for the failed fetch, one for Airflow's defer race (apache/airflow#67287): when the race
        # fails the first try before it resumes, the second try is the one whose fetch fails.
        retries=2,
        retry_delay=timedelta(seconds=2),
    )
"""


def _all_end(states: dict[str, str | None]) -> bool:
    return all(state in ("success", "failed", "upstream_failed") for state in states.values())


def _executions(stack: AirflowStack) -> dict[str, int]:
    data = stack.emulator._call("GET", "/counts")
    return {str(k): int(v) for k, v in data["executions_started"].items()}


def _retried(stack: AirflowStack, dag_id: str, run_id: str) -> dict[str, int]:
    """Tasks that needed more than one try (Airflow's defer race, see the DAG file), with their try number."""
    rows = stack.query(
        "SELECT task_id, try_number FROM task_instance WHERE dag_id=? AND run_id=? AND try_number > 1", (dag_id, run_id)
    )
    return dict(rows)


def _trigger_ids(stack: AirflowStack) -> set[int]:
    return {row[0] for row in stack.query("SELECT id FROM trigger")}


def test_one_worker_slot_runs_all_pipelines_concurrently(airflow_stack: AirflowStack) -> None:
    stack = airflow_stack
    for query_id in range(101, 101 + N_SLOTS):
        stack.emulator.add_query(query_id, duration=D_SLOTS)
    max_deferred = 0
    max_running = 0

    def sample(states: dict[str, str | None]) -> None:
        nonlocal max_deferred, max_running
        values = list(states.values())
        max_deferred = max(max_deferred, values.count("deferred"))
        max_running = max(max_running, values.count("running"))

    started = stack.trigger("e2e_slots", "slots")
    states = stack.wait_for("e2e_slots", "slots", _all_end, timeout=150, on_sample=sample, interval=0.2)
    wall = time.monotonic() - started
    (span,) = stack.query(
        "SELECT (julianday(max(end_date)) - julianday(min(start_date))) * 86400 FROM task_instance "
        "WHERE dag_id='e2e_slots' AND run_id='slots'"
    )[0]
    executions = _executions(stack)
    print(
        f"\n[e2e] slots: N={N_SLOTS} D={D_SLOTS:g}s parallelism=1: wall from `dags trigger` {wall:.1f}s, "
        f"first task start -> last task end {span:.1f}s (sequential would be >= {N_SLOTS * D_SLOTS:g}s; "
        f"Airflow overhead beyond D {span - D_SLOTS:.1f}s), "
        f"max concurrently DEFERRED {max_deferred}, max concurrently RUNNING {max_running}, "
        f"executions started {executions}, retried {_retried(stack, 'e2e_slots', 'slots')}"
    )
    assert set(states.values()) == {"success"}, states
    assert max_deferred >= 2
    assert max_running <= 1
    # holding the one slot while waiting would serialise the pipelines: at least N x D from first start to last end
    assert span < N_SLOTS * D_SLOTS
    assert executions == {str(q): 1 for q in range(101, 101 + N_SLOTS)}


def test_triggerer_killed_while_polling_then_restarted(airflow_stack: AirflowStack) -> None:
    stack = airflow_stack
    query_ids = range(301, 301 + N_RESTART)
    for query_id in query_ids:
        stack.emulator.add_query(query_id, duration=D_RESTART)
    stack.trigger("e2e_restart", "restart")
    stack.wait_for(
        "e2e_restart", "restart", lambda s: list(s.values()).count("deferred") == N_RESTART, timeout=90, interval=0.2
    )
    polls_before = stack.emulator.counts().get("get_pipeline_status", 0)
    time.sleep(2)  # let the triggers poll
    assert stack.emulator.counts().get("get_pipeline_status", 0) > polls_before, "triggers are not polling"
    triggers_before = _trigger_ids(stack)
    old_triggerers = {row[0] for row in stack.query("SELECT DISTINCT triggerer_id FROM trigger")}
    new_triggerers: set[int] = set()

    def sample(states: dict[str, str | None]) -> None:
        rows = stack.query("SELECT DISTINCT triggerer_id FROM trigger WHERE triggerer_id IS NOT NULL")
        new_triggerers.update(row[0] for row in rows if row[0] not in old_triggerers)

    triggerer = stack.processes["triggerer"]
    os.killpg(triggerer.pid, signal.SIGKILL)
    triggerer.wait(10)
    killed_at = time.monotonic()
    del stack.processes["triggerer"]
    stack.start("triggerer", "triggerer", "--skip-serve-logs")

    states = stack.wait_for("e2e_restart", "restart", _all_end, timeout=150, on_sample=sample, interval=0.25)
    recovered = time.monotonic() - killed_at
    executions = {q: n for q, n in _executions(stack).items() if int(q) in query_ids}
    print(
        f"\n[e2e] triggerer restart: SIGKILLed the triggerer with {N_RESTART} triggers polling "
        f"(pipelines of {D_RESTART:g}s), restarted it; all tasks ended {recovered:.1f}s after the kill: {states}; "
        f"executions started {executions}; triggers before kill {sorted(triggers_before)} on triggerer job(s) "
        f"{sorted(old_triggerers)}, taken over by triggerer job(s) {sorted(new_triggerers)}"
    )
    assert len(triggers_before) == N_RESTART
    assert new_triggerers, "the restarted triggerer never took the triggers over"
    assert set(states.values()) == {"success"}, states
    assert executions == {str(q): 1 for q in query_ids}


def test_faults_while_polling_and_a_real_node_failure(airflow_stack: AirflowStack) -> None:
    stack = airflow_stack
    for query_id in (401, 402, 403):
        stack.emulator.add_query(query_id, duration=D_FAULTS)
    stack.emulator.add_query(FAILING_QUERY, duration=4, error=NODE_ERROR)
    stack.trigger("e2e_faults", "faults")
    stack.wait_for("e2e_faults", "faults", lambda s: "deferred" in s.values(), timeout=90, interval=0.2)
    # Each succeeding pipeline gets its own faults, at most four failed answers in a row: fewer than a read's five
    # attempts, so wherever they land (the trigger's polls or the resumed task's last read) the run is still seen
    # through. The failing pipeline gets none, so its resumed task always reads Dune's error text.
    faults_by_query = {
        401: (Fault.status(429, times=3), Fault.status(500, times=1), Fault.slow(2.0, times=1)),
        402: (
            Fault.status(429, retry_after=1, times=2),
            Fault.status(500, times=1),
            Fault.drop(times=1),
            Fault.slow(2.0, times=1),
        ),
        403: (
            Fault.drop(times=1),
            Fault.status(503, times=1),
            Fault.slow(7.0, times=1),  # beyond the connection's 5 s read timeout
            Fault.status(502, times=1),
            Fault.slow(2.0, times=1),
        ),
    }
    for query_id, faults in faults_by_query.items():
        stack.emulator.inject("get_pipeline_status", *faults, query_id=query_id)
    injected = sum(f.times for faults in faults_by_query.values() for f in faults)
    states = stack.wait_for("e2e_faults", "faults", _all_end, timeout=150, interval=0.25)
    applied: dict[str, int] = {}
    for request in stack.emulator.requests():
        if request["endpoint"] == "get_pipeline_status" and request["fault"]:
            key = f"{request['fault']}:{request['status']}"
            applied[key] = applied.get(key, 0) + 1
    executions = {q: n for q, n in _executions(stack).items() if 401 <= int(q) <= 404}
    log = stack.task_log("e2e_faults", "faults", "pipeline_404", until=NODE_ERROR)
    print(
        f"\n[e2e] faults: injected {injected} faults on pipeline_status while polling, applied {applied}; "
        f"states {states}; executions started {executions}; retried {_retried(stack, 'e2e_faults', 'faults')}"
    )
    assert sum(applied.values()) == injected, "not every injected fault was consumed"
    assert states == {
        "pipeline_401": "success",
        "pipeline_402": "success",
        "pipeline_403": "success",
        "pipeline_404": "failed",
    }
    assert executions == {"401": 1, "402": 1, "403": 1, "404": 1}
    assert NODE_ERROR in log, log
    assert "Not retried" in log, log


def test_mark_deferred_task_failed_cancels_running_node(airflow_stack: AirflowStack) -> None:
    stack = airflow_stack
    stack.emulator.add_query(501, duration=300)
    cancels_before = stack.emulator.counts().get("cancel_execution", 0)
    stack.trigger("e2e_kill", "kill")
    stack.wait_for("e2e_kill", "kill", lambda s: s.get("pipeline_501") == "deferred", timeout=90, interval=0.2)
    pipeline_id = stack.xcom_execution_id("e2e_kill", "kill", "pipeline_501")
    deadline = time.monotonic() + 30
    while True:  # wait until the node has an execution to cancel
        nodes = stack.dune(f"/v1/pipelines/executions/{pipeline_id}/status")["node_executions"]
        execution_id = next((n.get("query_execution_status", {}).get("execution_id") for n in nodes), None)
        if execution_id:
            break
        assert time.monotonic() < deadline, nodes
        time.sleep(0.5)
    # Only a trigger the triggerer is running gets on_kill: wait for its first status line in the trigger log
    # (a trigger deleted before the triggerer picked it up is never run, so nothing would cancel the node)
    folder = stack.home / "logs" / "dag_id=e2e_kill" / "run_id=kill" / "task_id=pipeline_501"
    deadline = time.monotonic() + 60
    while not any(pipeline_id in p.read_text(errors="replace") for p in folder.glob("*.trigger.*.log")):
        assert time.monotonic() < deadline, "the triggerer never started the trigger"
        time.sleep(0.25)
    marked_at = time.monotonic()
    answer = stack.rest(
        "PATCH", "/api/v2/dags/e2e_kill/dagRuns/kill/taskInstances/pipeline_501", {"new_state": "failed"}
    )
    assert answer["task_instances"][0]["state"] == "failed"
    deadline = time.monotonic() + 60
    while True:
        status = stack.dune(f"/v1/execution/{execution_id}/status")
        cancels = stack.emulator.counts().get("cancel_execution", 0) - cancels_before
        if status["state"] == "QUERY_STATE_CANCELLED":
            break
        assert time.monotonic() < deadline, f"node execution not cancelled: {status} (cancel calls {cancels})"
        time.sleep(0.25)
    took = time.monotonic() - marked_at
    pipeline = stack.dune(f"/v1/pipelines/executions/{pipeline_id}/status")
    print(
        f"\n[e2e] mark failed: node execution {execution_id} {status['state']} {took:.1f}s after PATCH "
        f"new_state=failed; cancel_execution calls {cancels}; pipeline status {pipeline.get('status')}"
    )
    assert cancels == 1
    cancelled = f"Cancelled query 501 (execution {execution_id})"
    assert cancelled in stack.task_log("e2e_kill", "kill", "pipeline_501", until=cancelled)
    assert stack.ti_states("e2e_kill", "kill") == {"pipeline_501": "failed"}


def _run_record_variables(stack: AirflowStack) -> list[str]:
    return [row[0] for row in stack.query("SELECT key FROM variable WHERE key LIKE ?", (f"{KEY_PREFIX}%",))]


REUSED = "already succeeded; using it instead of starting another run"


@pytest.mark.skipif(not AIRFLOW_V_3_3_PLUS, reason="Airflow's task state store arrived in Airflow 3.3")
def test_a_retried_deferred_task_reattaches_through_the_task_state_store(airflow_stack: AirflowStack) -> None:
    """The query ran once; its rows could not be fetched (503 beyond the hook's tries), so the task failed after
    its trigger fired; the retry finds the run in the task state store and uses it instead of starting another."""
    stack = airflow_stack
    task_id = f"query_{RETRY_QUERY}"
    stack.emulator.add_query(RETRY_QUERY, duration=3, rows=[{"n": n} for n in range(5)])
    stack.emulator.inject("get_execution_results", Fault.status(503, times=DEFAULT_MAX_ATTEMPTS), query_id=RETRY_QUERY)
    records_between_tries: list[Any] = []
    variables_seen: set[str] = set()

    def sample(states: dict[str, str | None]) -> None:
        variables_seen.update(_run_record_variables(stack))
        if states.get(task_id) == "up_for_retry":
            records_between_tries.extend(
                stack.query(
                    "SELECT key, value FROM task_state_store WHERE dag_id=? AND run_id=? AND task_id=?",
                    ("e2e_retry", "retry", task_id),
                )
            )

    stack.trigger("e2e_retry", "retry")
    states = stack.wait_for("e2e_retry", "retry", _all_end, timeout=120, on_sample=sample, interval=0.2)
    tries = stack.query(
        "SELECT try_number FROM task_instance WHERE dag_id=? AND run_id=? AND task_id=?",
        ("e2e_retry", "retry", task_id),
    )
    left = stack.query("SELECT key FROM task_state_store WHERE dag_id=? AND run_id=?", ("e2e_retry", "retry"))
    log = stack.task_log("e2e_retry", "retry", task_id, until=REUSED)
    print(
        f"\n[e2e] retry through the task state store: {states}, try {tries}, executions started "
        f"{stack.emulator.executions_started(RETRY_QUERY)}, records between tries {records_between_tries[:1]}, "
        f"run-record Variables seen {sorted(variables_seen)}, store keys left {left}"
    )
    fetches_refused = sum(
        1 for r in stack.emulator.requests() if r["endpoint"] == "get_execution_results" and r["status"] == 503
    )
    assert states == {task_id: "success"}
    assert tries in ([(2,)], [(3,)]), "a try must have failed for this test to mean anything"
    assert fetches_refused == DEFAULT_MAX_ATTEMPTS, "the failed try is the one whose fetch was refused"
    assert stack.emulator.executions_started(RETRY_QUERY) == 1
    assert records_between_tries and records_between_tries[0][0] == STATE_KEY
    assert REUSED in log
    assert not variables_seen and not _run_record_variables(stack)
    assert left == [], "the record is deleted once the result was handled"


def test_api_key_appears_nowhere(airflow_stack: AirflowStack) -> None:
    found = airflow_stack.find_key_leaks()
    searched = found["searched"]
    hits = len(found["files"]) + len(found["xcom"]) + len(found["trigger_kwargs"])
    print(
        f"\n[e2e] key grep: {searched['log_files']} task/trigger log files and {searched['other_files']} other files "
        f"under AIRFLOW_HOME (metadata DB included), {searched['xcom_rows']} XCom rows, "
        f"{searched['trigger_kwargs']} trigger kwargs snapshots: {hits} hits"
    )
    assert searched["log_files"], "no task logs were written"
    assert searched["trigger_kwargs"], "no trigger row was ever seen"
    assert any("pipeline_execution_id" in k for k in found["kwargs_seen"])
    assert not found["files"]
    assert not found["xcom"]
    assert not found["trigger_kwargs"]
