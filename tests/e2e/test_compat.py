"""What every Airflow release of the compatibility matrix must do, checked from the user's side.

``make test-airflow AIRFLOW=<version>`` runs this module in that release's virtualenv (the newest release runs it
with the rest of ``tests/e2e``). In order:

1. ``python -m example_dags.demo`` (``make demo``) with this interpreter: it succeeds, the task really defers
   and starts exactly one Dune pipeline, and its summary says so. The demo runs before the stack starts, pointed
   through ``DUNE_API_URL``/``DUNE_API_KEY`` at an emulator of this module (the path of a user with a Dune key),
   so that the checks know the key and count the pipeline starts themselves.
2. On one Airflow stack (``conftest.AirflowRelease``: api-server, scheduler, dag-processor and triggerer on
   Airflow 3; webserver, scheduler and triggerer on 2.11): ``dune_nightly_refresh`` triggered through the REST
   API without a logical date defers in the triggerer and succeeds with one pipeline start.
3. ``airflow connections test`` against the emulator, with the right key and with a wrong one.
4. The API key is nowhere: the demo's output and ``.demo`` files, the stack's files, metadata DB, XCom and
   trigger kwargs.

Run alone with ``python -m pytest -m e2e tests/e2e/test_compat.py -q -s`` to see the measured times.
"""

from __future__ import annotations

import configparser
import contextlib
import json
import os
import re
import secrets
import sqlite3
import subprocess
import sys
import time
import urllib.parse
from dataclasses import dataclass, field
from datetime import datetime, timezone
from pathlib import Path
from typing import Any

import pytest
from cryptography.fernet import Fernet

from airflow_provider_dune.testing.process import emulator_process
from airflow_provider_dune.utils import budget_leases
from example_dags.demo import DAG_ID, DEMO_DIR, REPO_ROOT, TASK_ID

from .conftest import AIRFLOW_BIN, AirflowRelease, AirflowStack, StackOptions, stop_process

pytestmark = pytest.mark.e2e

RELEASE = AirflowRelease.installed()
EXAMPLE_DAGS = REPO_ROOT / "example_dags"
QUERY_ID = 1001  # the nightly refresh's query in the emulator's demo catalog
PIPELINE_TRIGGER = "airflow_provider_dune.triggers.pipeline.DunePipelineTrigger"
PIPELINE_START = "execute_query_pipeline"
#: The demo catalog's durations x this: query 1001's pipeline (a view refresh, then the query) takes ~3 s in the
#: demo, so the trigger reads its status a few times at one read a second.
DEMO_TIME_SCALE = 0.5
#: ~13 s on the stack: Airflow 3.3.2 and older fail a deferred task whose trigger fires before the scheduler has
#: seen the deferring worker exit (apache/airflow#67287, docs/guides/limitations.rst), which took ~5 s on a busy
#: 2-core machine; a pipeline ending ~3 s after it started lost that race on Airflow 3.1.8.
STACK_TIME_SCALE = 2.0
#: What the scheduler logs when a task loses that race (the state attribute is then queued or running).
DEFER_RACE = "finished with state success, but the task instance's state attribute is"
POLL_INTERVAL = "1"
#: The demo's own limit for `airflow dags test` is 300 s; migrating the DB comes on top.
DEMO_TIMEOUT = 420.0
REST_RUN_ID = "compat_rest_no_date"
TERMINAL = ("success", "failed", "upstream_failed", "skipped")

STACK_OPTIONS = StackOptions(
    dag_files={"dune_nightly_refresh.py": (EXAMPLE_DAGS / "dune_nightly_refresh.py").read_text()},
    dag_ids=(DAG_ID,),
    seed_emulator=True,
    # as a default installation: the user unpauses the DAG (the trigger dialog does it by default)
    paused_at_creation=True,
    emulator_args=("--time-scale", str(STACK_TIME_SCALE)),
    # The DAG's own retries (one, 5 minutes later), as users run it: a retry is accepted only after that race.
    extra_env=(("DUNE_POLL_INTERVAL", POLL_INTERVAL), ("AIRFLOW__CORE__TEST_CONNECTION", "Enabled")),
)


# -- helpers ---------------------------------------------------------------------------------------------


def _pipeline_starts(requests: list[dict[str, Any]]) -> list[dict[str, Any]]:
    """The accepted pipeline starts among the emulator's recorded requests."""
    return [r for r in requests if r["endpoint"] == PIPELINE_START and r["status"] == 200]


def _started_id(start: dict[str, Any]) -> str:
    """The pipeline execution id the emulator answered a start with."""
    return str(json.loads(start["response_body"])["pipeline_execution_id"])


def _one_line(text: str) -> str:
    """``text`` with its whitespace runs (Rich wraps the CLI's output at 80 columns) made single spaces."""
    return " ".join(text.split())


def _today() -> str:
    return datetime.now(timezone.utc).strftime("%Y-%m-%d")


def _xcom_value(value: Any) -> Any:
    return json.loads(value) if isinstance(value, (str, bytes)) else value


# -- 1. the demo -----------------------------------------------------------------------------------------


ANSI_ESCAPE = re.compile(r"\x1b\[[0-9;]*m")
EXCEPTION_LINE = re.compile(r"^\s*([\w.]+(Error|Exception)): ")


@dataclass
class DemoRun:
    """One ``python -m example_dags.demo`` and what it left behind."""

    returncode: int
    output: str = field(repr=False)
    seconds: float
    api_key: str = field(repr=False)
    #: every request the demo's Dune API (the emulator) received
    requests: list[dict[str, Any]] = field(repr=False)

    @property
    def dags_test_log(self) -> str:
        path = DEMO_DIR / "dags_test.log"
        return path.read_text(errors="replace") if path.is_file() else ""

    @property
    def db_path(self) -> Path:
        return DEMO_DIR / "airflow_home" / "airflow.db"

    def query(self, sql: str, params: tuple[Any, ...] = ()) -> list[tuple[Any, ...]]:
        assert self.db_path.is_file(), f"the demo left no metadata DB at {self.db_path}:\n{self.output[-3000:]}"
        with contextlib.closing(sqlite3.connect(f"file:{self.db_path}?mode=ro", uri=True)) as db:
            return db.execute(sql, params).fetchall()

    def failure(self) -> str:
        """What to show when an assertion fails: the demo's output, then the exceptions `airflow dags test`
        printed (Rich's tracebacks included) and the end of its output."""
        lines = ANSI_ESCAPE.sub("", self.dags_test_log).splitlines()
        exceptions = dict.fromkeys(line.strip()[:400] for line in lines if EXCEPTION_LINE.match(line))
        return "\n".join(
            [
                f"demo output:\n{self.output[-3000:]}",
                "--- exceptions in .demo/dags_test.log:",
                *exceptions,
                "--- .demo/dags_test.log (last lines):",
                *(line[:300] for line in lines[-10:]),
            ]
        )


@pytest.fixture(scope="module")
def demo_run(tmp_path_factory: pytest.TempPathFactory) -> DemoRun:
    """``make demo`` once for the module, before the module's stack starts (one Airflow at a time)."""
    api_key = f"compat-demo-key-{secrets.token_hex(8)}"
    log_dir = tmp_path_factory.mktemp("demo")
    with emulator_process(
        api_key, log_path=log_dir / "emulator.log", extra_args=("--time-scale", str(DEMO_TIME_SCALE))
    ) as emulator:
        env = {k: v for k, v in os.environ.items() if not k.startswith(("AIRFLOW", "DUNE_"))}
        env.update({"DUNE_API_URL": emulator.url, "DUNE_API_KEY": api_key, "DUNE_POLL_INTERVAL": POLL_INTERVAL})
        started = time.monotonic()
        process = subprocess.Popen(
            [sys.executable, "-m", "example_dags.demo"],
            cwd=REPO_ROOT,
            env=env,
            stdout=subprocess.PIPE,
            stderr=subprocess.STDOUT,
            text=True,
            start_new_session=True,
        )
        try:
            output, _ = process.communicate(timeout=DEMO_TIMEOUT)
        except subprocess.TimeoutExpired:
            output = f"(the demo did not end within {DEMO_TIMEOUT:g}s)"
        finally:
            # on SIGTERM the demo stops `airflow dags test`'s process group (which waits up to 10 s) itself
            stop_process(process, grace=30)
        seconds = time.monotonic() - started
        requests = emulator.client.requests()
    run = DemoRun(process.returncode, output, seconds, api_key, requests)
    dags_test = re.search(r"\(([\d.]+)s for `airflow dags test`\)", output)
    print(
        f"\n[e2e] Airflow {RELEASE.version}: demo exited {run.returncode} in {seconds:.1f}s "
        f"(`airflow dags test` {dags_test.group(1) + 's' if dags_test else 'n/a'}); "
        f"pipeline starts {len(_pipeline_starts(requests))}, "
        f"status reads {sum(r['endpoint'] == 'get_pipeline_status' for r in requests)}"
    )
    return run


def test_demo_runs_the_nightly_refresh_with_a_real_deferral(demo_run: DemoRun) -> None:
    run = demo_run
    assert run.returncode == 0 and "Demo succeeded" in run.output, run.failure()
    ((run_id, run_state),) = run.query("SELECT run_id, state FROM dag_run WHERE dag_id = ?", (DAG_ID,))
    assert run_state == "success", run.failure()
    ((task_state, try_number),) = run.query(
        "SELECT state, try_number FROM task_instance WHERE dag_id = ? AND run_id = ? AND task_id = ?",
        (DAG_ID, run_id, TASK_ID),
    )
    assert (task_state, try_number) == ("success", 1), run.failure()

    events = [
        event
        for (event,) in run.query(
            "SELECT event FROM log WHERE dag_id = ? AND run_id = ? AND task_id = ? ORDER BY id",
            (DAG_ID, run_id, TASK_ID),
        )
    ]
    triggers = [classpath for (classpath,) in run.query("SELECT classpath FROM trigger")]
    print(f"\n[e2e] demo: task events {events}, triggers stored {triggers}")
    # `airflow dags test` runs the trigger in its own process and says so, on every release
    assert run.dags_test_log.count("[DAG TEST] running trigger in line") == 1, run.failure()
    assert "[DAG TEST] Trigger completed" in run.dags_test_log, run.failure()
    if RELEASE.dags_test_keeps_trigger_row:
        assert triggers == [PIPELINE_TRIGGER], run.failure()
    if RELEASE.logs_task_states:
        assert events == ["running", "deferred", "running", "success"], run.failure()

    # exactly one pipeline started, and its status read by the task once, then by the trigger
    (start,) = _pipeline_starts(run.requests)
    assert start["path"].endswith(f"/v1/query/{QUERY_ID}/pipeline/execute")
    reads = [r for r in run.requests if r["endpoint"] == "get_pipeline_status" and r["at"] >= start["at"]]
    assert len(reads) >= 2, f"{len(reads)} status reads: the trigger did not poll"
    xcoms = {
        key: _xcom_value(value)
        for key, value in run.query(
            "SELECT key, value FROM xcom WHERE dag_id = ? AND run_id = ? AND task_id = ?", (DAG_ID, run_id, TASK_ID)
        )
    }
    assert xcoms.get("pipeline_execution_id") == _started_id(start), xcoms
    assert xcoms["return_value"]["outcome"] == "success", xcoms["return_value"]


def test_demo_summary_says_the_task_deferred(demo_run: DemoRun) -> None:
    """What ``make demo`` tells the user: the summary's "Deferred yes" line and the pipeline it ran."""
    run = demo_run
    said = f"the demo's summary does not say the task deferred:\n{run.output[-3000:]}"
    assert "Deferred  yes" in run.output, said
    assert "Deferred  NO" not in run.output, said
    pipeline_ids = {_started_id(s) for s in _pipeline_starts(run.requests)}
    summary = re.search(r"^Pipeline  (\S+): completed", run.output, re.MULTILINE)
    assert summary is not None and {summary.group(1)} == pipeline_ids, run.output[-3000:]


def _demo_trigger_kwargs() -> list[str]:
    """The demo's stored trigger kwargs as plain JSON (encrypted with the Fernet key of its airflow.cfg)."""
    home = DEMO_DIR / "airflow_home"
    config = configparser.ConfigParser(interpolation=None)
    config.read(home / "airflow.cfg")
    fernet_key = config.get("core", "fernet_key", fallback="").strip()
    with contextlib.closing(sqlite3.connect(f"file:{home / 'airflow.db'}?mode=ro", uri=True)) as db:
        stored = [row[0] for row in db.execute("SELECT kwargs FROM trigger")]
    plain = []
    for kwargs in stored:
        if not kwargs.startswith("{"):
            assert fernet_key, "trigger kwargs are encrypted but the demo's airflow.cfg has no fernet_key"
            kwargs = Fernet(fernet_key.encode()).decrypt(kwargs.encode()).decode()
        plain.append(kwargs)
    return plain


def test_api_key_appears_nowhere_in_the_demo(demo_run: DemoRun) -> None:
    """The demo's printed output, every file under ``.demo`` (the `dags test` output, task logs, airflow.cfg,
    the metadata DB with its XComs) and the trigger kwargs it stored."""
    run = demo_run
    key = run.api_key
    files = [p for p in DEMO_DIR.rglob("*") if p.is_file()]
    leaks = {
        "output": key in run.output,
        "files": [str(p.relative_to(REPO_ROOT)) for p in files if key.encode() in p.read_bytes()],
        "xcom": [row[0] for row in run.query("SELECT key, value FROM xcom") if key in str(row[1])],
        "trigger_kwargs": [k for k in _demo_trigger_kwargs() if key in k],
    }
    lines = [line.strip()[:300] for line in run.dags_test_log.splitlines() if key in line]
    print(f"\n[e2e] demo key grep: {len(run.output)} characters of output, {len(files)} files under .demo")
    # a demo that never reached Dune never handled the key: its absence would prove nothing
    assert _pipeline_starts(run.requests), f"no pipeline started, so the key grep proves nothing:\n{run.failure()}"
    assert not any(leaks.values()), f"the demo's API key was found: {leaks}; dags_test.log lines: {lines[:5]}"


# -- 2. a REST API run without a logical date ------------------------------------------------------------


def _run_ids(stack: AirflowStack) -> set[str]:
    return {row[0] for row in stack.query("SELECT run_id FROM dag_run WHERE dag_id = ?", (DAG_ID,))}


def _wait_runs_end(stack: AirflowStack, run_ids: set[str], timeout: float = 180) -> dict[str, str]:
    deadline = time.monotonic() + timeout
    states: dict[str, str] = {}
    while time.monotonic() < deadline:
        states = {
            run_id: stack.rest("GET", f"{RELEASE.api_root}/dags/{DAG_ID}/dagRuns/{urllib.parse.quote(run_id)}")["state"]
            for run_id in run_ids
        }
        stack.record_trigger_kwargs()
        if all(state in ("success", "failed") for state in states.values()):
            return states
        time.sleep(0.5)
    raise AssertionError(f"runs not finished after {timeout:.0f}s: {states}")


def test_rest_run_without_a_logical_date_defers_in_the_triggerer_and_starts_one_pipeline(
    airflow_stack: AirflowStack,
) -> None:
    stack = airflow_stack
    starts_before = len(_pipeline_starts(stack.emulator.requests()))
    runs_before = _run_ids(stack)
    stack.rest("PATCH", f"{RELEASE.api_root}/dags/{DAG_ID}", {"is_paused": False})
    posted_at = time.monotonic()
    run = stack.rest("POST", f"{RELEASE.api_root}/dags/{DAG_ID}/dagRuns", RELEASE.run_without_logical_date(REST_RUN_ID))
    assert run["dag_run_id"] == REST_RUN_ID, run
    if not RELEASE.is_airflow_2:
        assert run["logical_date"] is None, run

    seen_states: list[str] = []
    triggers_seen: dict[int, tuple[str, Any]] = {}
    deferred_at: list[float] = []

    def sample(states: dict[str, str | None]) -> None:
        state = states.get(TASK_ID)
        if state and (not seen_states or seen_states[-1] != state):
            seen_states.append(state)
            if state == "deferred":
                deferred_at.append(time.monotonic())
        for trigger_id, classpath, triggerer_id in stack.query("SELECT id, classpath, triggerer_id FROM trigger"):
            if triggerer_id is not None or trigger_id not in triggers_seen:
                triggers_seen[trigger_id] = (classpath, triggerer_id)

    states = stack.wait_for(
        DAG_ID, REST_RUN_ID, lambda s: s.get(TASK_ID) in TERMINAL, timeout=480, on_sample=sample, interval=0.2
    )
    seconds = time.monotonic() - posted_at
    (try_number,) = stack.query(
        "SELECT try_number FROM task_instance WHERE dag_id = ? AND run_id = ? AND task_id = ?",
        (DAG_ID, REST_RUN_ID, TASK_ID),
    )[0]
    deferred = f"deferred {deferred_at[0] - posted_at:.1f}s after it" if deferred_at else "never seen deferred"
    print(
        f"\n[e2e] Airflow {RELEASE.version}: REST run without a logical date {states[TASK_ID]} "
        f"{seconds:.1f}s after the POST ({deferred})"
    )
    scheduler_log = (stack.process_log_dir / "scheduler.log").read_text(errors="replace").splitlines()
    races = [line.strip()[:400] for line in scheduler_log if DEFER_RACE in line and REST_RUN_ID in line]
    print(f"[e2e] task states seen {seen_states}, try {try_number}, triggers seen {triggers_seen}")
    if races:
        print(f"[e2e] the task lost Airflow's defer race (apache/airflow#67287): {races[0]}")
    log = stack.task_log(DAG_ID, REST_RUN_ID, TASK_ID)
    assert states == {TASK_ID: "success"}, f"{states}; scheduler: {races}; task log:\n{log[-4000:]}"
    assert try_number == 1 or races, f"the task needed try {try_number}, not after Airflow's defer race:\n{log[-4000:]}"
    assert "deferred" in seen_states, seen_states
    assert seen_states.index("deferred") < len(seen_states) - 1
    # the trigger was stored and picked up by the triggerer process
    assert any(c == PIPELINE_TRIGGER and t is not None for c, t in triggers_seen.values()), triggers_seen

    # One pipeline per run: the REST run's, and on Airflow 2.11 the latest interval's, which unpausing starts.
    others = _run_ids(stack) - runs_before - {REST_RUN_ID}
    if RELEASE.unpausing_runs_the_latest_interval:
        assert len(others) <= 1, others
    else:
        assert not others, f"unpausing started another (billed) run: {others}"
    run_states = _wait_runs_end(stack, {REST_RUN_ID, *others})
    print(f"[e2e] runs of {DAG_ID}: {run_states}")
    assert set(run_states.values()) == {"success"}, run_states
    starts = _pipeline_starts(stack.emulator.requests())[starts_before:]
    rest_pipeline = stack.xcom_execution_id(DAG_ID, REST_RUN_ID, TASK_ID)
    started_ids = [_started_id(s) for s in starts]
    assert started_ids.count(rest_pipeline) == 1, (rest_pipeline, started_ids)
    assert len(starts) == 1 + len(others), f"{len(starts)} pipeline starts for the runs {run_states}"
    (rest_start,) = [s for s in starts if _started_id(s) == rest_pipeline]
    assert rest_start["path"].endswith(f"/v1/query/{QUERY_ID}/pipeline/execute")
    assert rest_start["json_body"]["query_parameters"] == {"date": _today()}
    # The trigger kept its process's lease on the key's budget in a Variable (read and written from trigger
    # code through this release's triggerer) and never failed to.
    leases = stack.query("SELECT key FROM variable WHERE key LIKE ?", (f"{budget_leases.KEY_PREFIX}%",))
    assert len(leases) == 1, leases
    triggerer_log = (stack.process_log_dir / "triggerer.log").read_text(errors="replace")
    assert "lease on a Dune API key's budget" not in triggerer_log, triggerer_log[-4000:]


# -- 3. `airflow connections test` -----------------------------------------------------------------------


def test_connections_test_cli_with_the_key_and_with_a_wrong_one(airflow_stack: AirflowStack) -> None:
    stack = airflow_stack
    started = time.monotonic()
    output = stack.airflow("connections", "test", "dune_default")
    assert "Connection success!" in output, output
    usage_calls = [r for r in stack.emulator.requests() if r["endpoint"] == "get_usage"]
    assert usage_calls and usage_calls[-1]["status"] == 200, usage_calls[-1:]

    wrong_key = f"not-the-key-{secrets.token_hex(4)}"
    connection = json.loads(stack.env["AIRFLOW_CONN_DUNE_DEFAULT"])
    result = subprocess.run(
        [AIRFLOW_BIN, "connections", "test", "dune_default"],
        env={**stack.env, "AIRFLOW_CONN_DUNE_DEFAULT": json.dumps({**connection, "password": wrong_key})},
        cwd=stack.home,
        capture_output=True,
        text=True,
        timeout=60,
        check=False,
    )
    print(f"\n[e2e] `airflow connections test` twice in {time.monotonic() - started:.1f}s")
    said = _one_line(result.stdout + result.stderr)
    assert "Connection failed!" in said, said[-2000:]
    assert "HTTP 401" in said and "Check the API Key field of this connection" in said, said[-2000:]
    assert wrong_key not in said
    assert stack.emulator.requests()[-1]["status"] == 401


# -- 4. the stack's key grep (last: it reads every log) ---------------------------------------------------


def test_api_key_appears_nowhere_in_the_stack(airflow_stack: AirflowStack) -> None:
    found = airflow_stack.find_key_leaks()
    print(f"\n[e2e] Airflow {RELEASE.version} stack key grep: searched {found['searched']}")
    assert found["searched"]["log_files"] and found["searched"]["trigger_kwargs"], found["searched"]
    assert not found["files"], found["files"]
    assert not found["xcom"], found["xcom"]
    assert not found["trigger_kwargs"], found["trigger_kwargs"]
