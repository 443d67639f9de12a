"""The provider on a production-shaped Airflow: PostgreSQL, Redis, CeleryExecutor with two workers, two triggerers.

The processes and settings come from docker-compose.yaml (see :mod:`tests.e2e.production`). With the emulator
as Dune this proves: triggers spread over both triggerers and survive one of them being SIGKILLed mid-poll with
exactly one execute per task; tasks run on the Celery workers; the run-record Variable lives and dies in
PostgreSQL; the API key is in no log, PostgreSQL table or Redis key. It also measures two triggerers against one
polling with one key over Dune's Free-plan budget (429s and detection latency) and prints the figures.
"""

from __future__ import annotations

import json
import os
import signal
import statistics
import time
from collections.abc import Iterator
from datetime import datetime
from pathlib import Path
from typing import Any

import pytest

from airflow_provider_dune.utils import budget_leases
from airflow_provider_dune.utils.run_registry import KEY_PREFIX, STATE_KEY
from airflow_provider_dune.version_compat import AIRFLOW_V_3_3_PLUS
from tests.compose_file import airflow_environment, load_compose
from tests.e2e.production import (
    HOST_SPECIFIC,
    TRIGGERERS,
    WORKERS,
    ProductionStack,
    production_environment,
    running_production_stack,
)
from tests.e2e.services import PostgresServer, RedisServer, missing_services

pytestmark = pytest.mark.e2e

FAILOVER_TASKS = 6
BUDGET_TASKS = 8
FIGURES_FILE = Path(__file__).resolve().parents[2] / "build" / "production-stack-figures.json"

DAG_FILE_SOURCE = f"""
from datetime import datetime, timedelta

from airflow_provider_dune.operators.pipeline import DuneExecutePipelineOperator

try:
    from airflow.sdk import DAG
except ImportError:
    from airflow import DAG

ARGS = {{"retries": 1, "retry_delay": timedelta(seconds=1)}}

with DAG("dune_production_failover", schedule=None, start_date=datetime(2024, 1, 1), default_args=ARGS):
    for index in range({FAILOVER_TASKS}):
        DuneExecutePipelineOperator(
            task_id=f"pipeline_{{index}}", query_id=7100 + index, deferrable=True, poll_interval=1, timeout=600
        )

with DAG("dune_production_budget", schedule=None, start_date=datetime(2024, 1, 1), default_args=ARGS):
    for index in range({BUDGET_TASKS}):
        DuneExecutePipelineOperator(
            task_id=f"pipeline_{{index}}", query_id=7200 + index, deferrable=True, poll_interval=2, timeout=600,
            dune_conn_id="{{{{ dag_run.conf.get('conn', 'dune_default') }}}}",
            adaptive_polling=False,  # the budget phases measure pacing alone, every phase reading alike
        )
"""


@pytest.fixture(scope="module")
def production(tmp_path_factory: pytest.TempPathFactory) -> Iterator[ProductionStack]:
    missing = missing_services()
    if missing:
        message = f"production stack skipped: missing {', '.join(missing)}: apt-get install postgresql redis-server"
        if os.environ.get("DUNE_REQUIRE_PRODUCTION_STACK"):
            pytest.fail(message)
        pytest.skip(message)
    with running_production_stack(
        tmp_path_factory.mktemp("airflow_home"),
        {"production_dags.py": DAG_FILE_SOURCE},
        ("dune_production_failover", "dune_production_budget"),
        triggerer_capacity=FAILOVER_TASKS // 2 + 1,
        worker_slots=4,
    ) as stack:
        stack.airflow.airflow("dags", "unpause", "dune_production_failover")
        stack.airflow.airflow("dags", "unpause", "dune_production_budget")
        yield stack


def test_the_stack_runs_the_compose_files_settings() -> None:
    """Every Airflow setting of docker-compose.yaml reaches the e2e stack; only container names and paths differ."""
    compose = load_compose()
    source = airflow_environment(compose)
    env = production_environment(
        compose,
        postgres=PostgresServer(port=5999, database="airflow", user="airflow", bindir=Path("/x")),
        redis=RedisServer(port=6999),
        api_port=8999,
        emulator_url="http://127.0.0.1:8765/api",
        api_key="k",
        secrets_dir=Path("/tmp/s"),
    )
    assert set(env) == set(source)
    changed = {key for key in source if env[key] != source[key]}
    assert changed == HOST_SPECIFIC
    for key in HOST_SPECIFIC:
        for container in ("@postgres/", "//redis:", "//api-server:", "//dune-emulator:", "/opt/airflow"):
            assert container not in env[key], (key, env[key])


def _wait_assignment(production: ProductionStack, expected: int, timeout: float = 90) -> dict[str | None, int]:
    deadline = time.monotonic() + timeout
    while True:
        production.airflow.record_trigger_kwargs()
        assignment = production.trigger_assignment()
        if assignment.get(None, 0) == 0 and sum(assignment.values()) == expected and len(assignment) == 2:
            return assignment
        assert time.monotonic() < deadline, f"triggers not spread over both triggerers: {assignment}"
        time.sleep(0.25)


def _run_records(production: ProductionStack) -> list[str]:
    """The runs tasks recorded for a retry: in the task state store on Airflow 3.3+, as Variables before."""
    if AIRFLOW_V_3_3_PLUS:
        rows = production.airflow.query("SELECT task_id FROM task_state_store WHERE key = ?", (STATE_KEY,))
        assert production.airflow.query("SELECT key FROM variable WHERE key LIKE ?", (f"{KEY_PREFIX}%",)) == []
    else:
        rows = production.airflow.query("SELECT key FROM variable WHERE key LIKE ?", (f"{KEY_PREFIX}%",))
    return [str(row[0]) for row in rows]


def _hostnames(production: ProductionStack, dag_id: str, run_id: str) -> dict[str, str]:
    rows = production.airflow.query(
        "SELECT task_id, hostname FROM task_instance WHERE dag_id=? AND run_id=?", (dag_id, run_id)
    )
    return {str(task): str(host) for task, host in rows}


def test_triggers_spread_and_fail_over_with_one_execute_per_task(production: ProductionStack) -> None:
    stack = production.airflow
    for index in range(FAILOVER_TASKS):
        stack.emulator.add_query(7100 + index, duration=20, pending=0.5)
    run_id = "failover"
    stack.trigger("dune_production_failover", run_id)
    assignment = _wait_assignment(production, FAILOVER_TASKS)
    records_while_deferred = _run_records(production)
    victim = max((name for name in assignment if name), key=lambda name: assignment[name])
    survivor = next(name for name in TRIGGERERS if name != victim)
    time.sleep(2)  # let the victim poll a few times
    killed_at = time.monotonic()
    os.killpg(stack.processes[victim].pid, signal.SIGKILL)
    stack.processes.pop(victim).wait(10)
    # The survivor takes the victim's triggers as far as its capacity allows, the rest as its own ones end.
    first_taken = all_taken = None
    deadline = time.monotonic() + 120
    while all_taken is None:
        now = production.trigger_assignment()
        if first_taken is None and now.get(survivor, 0) > assignment[survivor]:
            first_taken = time.monotonic() - killed_at
        if now.get(victim, 0) == 0 and now.get(None, 0) == 0:
            all_taken = time.monotonic() - killed_at
        assert time.monotonic() < deadline, f"triggers of {victim} not picked up by {survivor}: {now}"
        time.sleep(0.25)
    states = stack.wait_for(
        "dune_production_failover",
        run_id,
        lambda s: len(s) == FAILOVER_TASKS and all(v in ("success", "failed") for v in s.values()),
        timeout=240,
    )
    hosts = _hostnames(production, "dune_production_failover", run_id)
    figures = {
        "triggers_per_triggerer_before_kill": assignment,
        "killed": victim,
        "first_trigger_taken_over_after_s": round(first_taken or all_taken, 1),
        "all_triggers_taken_over_after_s": round(all_taken, 1),
        "task_hosts": hosts,
    }
    _save_figures("failover", figures)
    print(f"\n[e2e] failover: {json.dumps(figures)}")
    assert set(states.values()) == {"success"}, states
    started = {index: stack.emulator.executions_started(7100 + index) for index in range(FAILOVER_TASKS)}
    assert set(started.values()) == {1}, started
    assert len(records_while_deferred) == FAILOVER_TASKS
    assert _run_records(production) == []
    assert set(hosts.values()) <= set(WORKERS), hosts
    # Restore two triggerers for the next test.
    production.start_triggerer(victim, FAILOVER_TASKS // 2 + 1)


def _budget_phase(
    production: ProductionStack, label: str, base_query: int, conn: str, duration: float = 20.0
) -> dict[str, Any]:
    """Run BUDGET_TASKS pipelines at once under the Free-plan budget; measure 429s and detection latency."""
    stack = production.airflow
    pending = 0.5
    for index in range(BUDGET_TASKS):
        stack.emulator.add_query(base_query + index, duration=duration, pending=pending)
    stack.emulator.reset()
    stack.emulator.set_rate_limit(40, 15)
    stack.rest(
        "POST",
        "/api/v2/dags/dune_production_budget/dagRuns",
        {"dag_run_id": label, "logical_date": None, "conf": {"conn": conn}},
    )
    # The DAG's tasks take their query ids from params; one run per phase with its own base.
    stack.wait_for(
        "dune_production_budget",
        label,
        lambda s: len(s) == BUDGET_TASKS and all(v in ("success", "failed") for v in s.values()),
        timeout=300,
    )
    stack.emulator.set_rate_limit(None, None)
    requests = stack.emulator.requests()
    executed: dict[str, float] = {}
    detected: dict[str, float] = {}
    throttled = 0
    for request in requests:
        if request["endpoint"] == "execute_query_pipeline" and request["status"] == 200:
            executed[json.loads(request["response_body"])["pipeline_execution_id"]] = request["at"]
        if request["endpoint"] == "get_pipeline_status":
            if request["status"] == 429:
                throttled += 1
            elif request["status"] == 200 and json.loads(request["response_body"]).get("status") == "completed":
                pipeline = request["path"].rsplit("/", 2)[-2]
                detected.setdefault(pipeline, request["at"])
    latencies = [detected[p] - (executed[p] + pending + duration) for p in executed if p in detected]
    states = stack.ti_states("dune_production_budget", label)
    first_minute_end = min(executed.values(), default=0.0) + 60
    return {
        "pipelines": len(executed),
        "detected": len(latencies),
        "status_reads": sum(1 for r in requests if r["endpoint"] == "get_pipeline_status"),
        "429s": throttled,
        "429s_after_first_minute": sum(
            1
            for r in requests
            if r["endpoint"] == "get_pipeline_status" and r["status"] == 429 and r["at"] > first_minute_end
        ),
        "latency_median_s": round(statistics.median(latencies), 1) if latencies else None,
        "latency_max_s": round(max(latencies), 1) if latencies else None,
        "task_states": sorted(set(states.values())),
    }


#: The phases without pacing, and two triggerers each pacing to the whole budget, are figures to compare with
#: (what docs/guides/rate-budgets.rst quotes): they run with DUNE_BUDGET_FIGURES=1. Without it only the phases
#: the assertions are about run, which keeps this test's minutes in CI down.
BUDGET_FIGURES = os.environ.get("DUNE_BUDGET_FIGURES") == "1"


def _leases(production: ProductionStack) -> dict[str, dict[str, float]]:
    """The budget leases Variables (name: {process: expiry}), read through the REST API."""
    answer = production.airflow.rest("GET", "/api/v2/variables?limit=100")
    return {
        v["key"]: json.loads(v["value"] or "{}")
        for v in answer["variables"]
        if v["key"].startswith(budget_leases.KEY_PREFIX)
    }


def _live_leases(production: ProductionStack) -> int:
    now = time.time()
    return max((sum(1 for e in held.values() if e > now) for held in _leases(production).values()), default=0)


def _survivor_phase(production: ProductionStack, base_query: int) -> dict[str, Any]:
    """Two triggerers with the automatic share hold a lease each; SIGKILL one and time how long until the
    survivor's lease is the only one (it then paces to the whole budget), and its reads a minute after that."""
    stack = production.airflow
    duration = 120.0
    for index in range(BUDGET_TASKS):
        stack.emulator.add_query(base_query + index, duration=duration, pending=0.5)
    stack.emulator.reset()
    stack.emulator.set_rate_limit(40, 15)
    label = "budget_survivor"
    stack.rest(
        "POST",
        "/api/v2/dags/dune_production_budget/dagRuns",
        {"dag_run_id": label, "logical_date": None, "conf": {"conn": "dune_free_plan"}},
    )
    deadline = time.monotonic() + 90
    while _live_leases(production) < 2:
        assert time.monotonic() < deadline, f"two triggerers did not both take a lease: {_leases(production)}"
        time.sleep(1)
    victim = TRIGGERERS[1]
    time.sleep(5)
    killed_at = time.time()
    os.killpg(stack.processes[victim].pid, signal.SIGKILL)
    stack.processes.pop(victim).wait(10)
    while _live_leases(production) > 1:
        assert time.time() - killed_at < 90, f"the dead triggerer's lease never went: {_leases(production)}"
        time.sleep(0.5)
    alone_after = time.time() - killed_at
    time.sleep(30)
    window_end = time.time()
    reads = [
        r
        for r in stack.emulator.requests()
        if r["endpoint"] == "get_pipeline_status" and window_end - 30 <= r["at"] <= window_end
    ]
    before = [
        r
        for r in stack.emulator.requests()
        if r["endpoint"] == "get_pipeline_status" and killed_at - 30 <= r["at"] <= killed_at
    ]
    production.start_triggerer(victim, BUDGET_TASKS // 2)  # the orphaned triggers need room
    states = stack.wait_for(
        "dune_production_budget",
        label,
        lambda s: len(s) == BUDGET_TASKS and all(v in ("success", "failed") for v in s.values()),
        timeout=400,
    )
    stack.emulator.set_rate_limit(None, None)
    return {
        "one_lease_left_after_kill_s": round(alone_after, 1),
        "status_reads_per_minute_both_before_kill": len(before) * 2,
        "status_reads_per_minute_survivor_alone": len(reads) * 2,
        "429s": sum(1 for r in stack.emulator.requests() if r["status"] == 429),
        "task_states": sorted(set(states.values())),
    }


def test_two_triggerers_against_one_over_the_free_plan_budget(production: ProductionStack) -> None:
    """Eight pipelines polled every 2 s (240 reads a minute asked, 40 allowed): two triggerers sharing the budget
    without settings (leases), then killing one (the survivor takes the whole budget), then one triggerer pacing
    to the whole budget (reads_per_minute=40 on the connection). With DUNE_BUDGET_FIGURES=1 also without pacing,
    two triggerers each pacing to the whole budget (``budget_share = 1``), each to half of it by hand
    (``budget_share = 0.5``) over 100 s runs, and two sharing it over 20 s runs."""
    stack = production.airflow
    figures: dict[str, Any] = {}
    for name in TRIGGERERS:  # half the pipelines each, default settings
        stack.stop(name)
        production.start_triggerer(name, BUDGET_TASKS // 2)
    _wait_triggerers(production, TRIGGERERS)
    automatic = figures["two_triggerers_automatic_share_100s_pipelines"] = _budget_phase(
        production, "budget_two_triggerers_automatic", 7200, "dune_free_plan", 100.0
    )
    survivor = figures["survivor_of_two_automatic_share"] = _survivor_phase(production, 7200)
    if BUDGET_FIGURES:
        for name in TRIGGERERS:
            stack.stop(name)
            production.start_triggerer(name, BUDGET_TASKS // 2, {"AIRFLOW__DUNE__BUDGET_SHARE": "1"})
        _wait_triggerers(production, TRIGGERERS)
        figures["two_triggerers_whole_budget_each_100s_pipelines"] = _budget_phase(
            production, "budget_two_triggerers_whole_each", 7200, "dune_free_plan", 100.0
        )
    if BUDGET_FIGURES:
        # The explicit override, long enough to empty Dune's bucket (a minute of reads) if it did not hold.
        for name in TRIGGERERS:  # half the pipelines each
            stack.stop(name)
            production.start_triggerer(name, BUDGET_TASKS // 2, {"AIRFLOW__DUNE__BUDGET_SHARE": "0.5"})
        _wait_triggerers(production, TRIGGERERS)
        figures["two_triggerers_paced_budget_share_half_100s_pipelines"] = _budget_phase(
            production, "budget_two_triggerers_half_share", 7200, "dune_free_plan", 100.0
        )
        for name in TRIGGERERS:
            stack.stop(name)
            production.start_triggerer(name, BUDGET_TASKS // 2)
        _wait_triggerers(production, TRIGGERERS)
        figures["two_triggerers"] = _budget_phase(production, "budget_two_triggerers", 7200, "dune_default")
        figures["two_triggerers_paced_40_per_minute"] = _budget_phase(
            production, "budget_two_triggerers_paced", 7200, "dune_free_plan"
        )
    for name in TRIGGERERS:
        stack.stop(name)
    production.start_triggerer(TRIGGERERS[0], BUDGET_TASKS)  # one triggerer with room for all of them
    _wait_triggerers(production, TRIGGERERS[:1])
    if BUDGET_FIGURES:
        figures["one_triggerer"] = _budget_phase(production, "budget_one_triggerer", 7200, "dune_default")
    one_paced = figures["one_triggerer_paced_40_per_minute"] = _budget_phase(
        production, "budget_one_triggerer_paced", 7200, "dune_free_plan"
    )
    _save_figures("free_plan_budget", figures)
    print(f"\n[e2e] Free-plan budget, one key: {json.dumps(figures)}")
    # Paced to the plan's 40 reads a minute, one triggerer stays inside the budget (the workers' first reads
    # before deferring come from other processes, hence the small allowance).
    assert one_paced["429s"] <= 2, figures
    if BUDGET_FIGURES:
        assert one_paced["status_reads"] < figures["one_triggerer"]["status_reads"], figures
        # Each of two triggerers paced to half the key's budget by hand: none over it.
        assert figures["two_triggerers_paced_budget_share_half_100s_pipelines"]["429s"] <= 2, figures
    # Without settings the two find their share themselves (the first minute may overshoot while they meet).
    assert automatic["429s_after_first_minute"] <= 2, figures
    # A dead triggerer's share goes to the survivor when its lease expires.
    assert survivor["one_lease_left_after_kill_s"] <= 60, figures
    assert survivor["429s"] <= 2, figures
    assert survivor["task_states"] == ["success"], figures
    for name, phase in figures.items():
        if name == "survivor_of_two_automatic_share":
            continue
        assert phase["task_states"] == ["success"], figures
        assert phase["pipelines"] == BUDGET_TASKS and phase["detected"] == BUDGET_TASKS, figures


def _wait_triggerers(production: ProductionStack, names: tuple[str, ...], timeout: float = 60) -> None:
    """Wait until the named triggerers have each sent a heartbeat since now."""
    since = time.time()
    deadline = time.monotonic() + timeout
    while True:
        rows = production.airflow.query(
            "SELECT hostname, latest_heartbeat FROM job WHERE job_type = 'TriggererJob' AND state = 'running'"
        )
        alive = {str(host) for host, beat in rows if beat is not None and beat.timestamp() > since}
        if set(names) <= alive:
            return
        assert time.monotonic() < deadline, f"triggerers {names} not running: {rows}"
        time.sleep(0.5)


def test_api_key_is_in_no_log_no_postgres_table_and_no_redis_key(production: ProductionStack) -> None:
    stack = production.airflow
    key = stack.api_key.encode()
    leaks = stack.find_key_leaks()
    dump = production.postgres.dump()
    redis_values = production.redis.contents()
    assert leaks["searched"]["log_files"] > 0 and leaks["searched"]["xcom_rows"] > 0
    assert b"dune_production_failover" in dump, "the dump is not of the metadata DB"
    assert redis_values, "nothing was read from Redis"
    print(
        f"\n[e2e] key search: {leaks['searched']}, PostgreSQL dump {len(dump)} bytes, "
        f"{len(redis_values)} Redis keys/values"
    )
    assert leaks["files"] == [] and leaks["xcom"] == [] and leaks["trigger_kwargs"] == []
    assert key not in dump
    assert not [value for value in redis_values if key in value]


def _save_figures(name: str, figures: dict[str, Any]) -> None:
    FIGURES_FILE.parent.mkdir(exist_ok=True)
    existing = json.loads(FIGURES_FILE.read_text()) if FIGURES_FILE.exists() else {}
    existing[name] = {"measured_at": datetime.now().isoformat(timespec="seconds"), **figures}
    FIGURES_FILE.write_text(json.dumps(existing, indent=2))
