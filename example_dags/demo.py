"""``make demo``: run the ``dune_nightly_refresh`` example DAG for real, deferral included, and summarise it.

What it does (``python -m example_dags.demo``):

1. Creates a fresh, isolated ``AIRFLOW_HOME`` under ``.demo/airflow_home`` and runs ``airflow db migrate``
   (on Airflow 3.0 also ``airflow dags reserialize``, which activates the DAGs' assets: see
   :func:`dags_test_setup_commands`).
2. Starts the Dune API emulator (``python -m airflow_provider_dune.testing.emulator``) on a free loopback port
   with a random API key, unless ``DUNE_API_KEY`` is set: then it targets real Dune (``DUNE_API_URL``,
   default ``https://api.dune.com/api``) with that key, which is never printed. Set
   ``DUNE_NIGHTLY_QUERY_ID`` to one of your queries (with a ``date`` parameter) in that case; it uses
   credits.
3. Runs ``airflow dags test dune_nightly_refresh <date>`` with the example DAGs as DAGS_FOLDER and
   ``AIRFLOW_CONN_DUNE_DEFAULT`` pointing at the emulator. The task is deferrable; ``dags test`` (Airflow 3)
   runs the trigger in-process, so the task really goes running -> deferred -> running -> success.
4. Prints the task's state history and tries, the trigger Airflow stored, the status calls the emulator
   served, and the task's per-node report (the table the task logs, from its XCom); then stops the emulator.

The full ``airflow dags test`` output is kept in ``.demo/dags_test.log``. Exits non-zero if the run failed.
Environment: ``DUNE_DEMO_DATE`` (logical date, default 2024-06-01), ``DUNE_POLL_INTERVAL`` (default 1 s
against the emulator, 10 s against Dune).
"""

from __future__ import annotations

import contextlib
import json
import os
import re
import secrets
import shutil
import signal
import sqlite3
import subprocess
import sys
import time
import urllib.request
from pathlib import Path
from typing import Any

from airflow_provider_dune.api.run_report import format_report, rows_from_summary
from airflow_provider_dune.testing.process import emulator_process

REPO_ROOT = Path(__file__).resolve().parent.parent
DAGS_FOLDER = REPO_ROOT / "example_dags"
DEMO_DIR = REPO_ROOT / ".demo"
DAG_ID = "dune_nightly_refresh"
TASK_ID = "refresh_daily_dex_volume"
DUNE_API_URL = "https://api.dune.com/api"
DAGS_TEST_TIMEOUT = 300.0


def _say(message: str = "") -> None:
    print(message, flush=True)


def airflow_env(airflow_home: Path, conn_json: str, poll_interval: str) -> dict[str, str]:
    """Environment for the Airflow child processes: isolated home, sqlite DB, example DAGs, the connection."""
    env = {k: v for k, v in os.environ.items() if not k.startswith(("AIRFLOW__", "AIRFLOW_CONN_", "AIRFLOW_VAR_"))}
    env.update(
        {
            "AIRFLOW_HOME": str(airflow_home),
            "AIRFLOW__DATABASE__SQL_ALCHEMY_CONN": f"sqlite:///{airflow_home / 'airflow.db'}",
            "AIRFLOW__CORE__DAGS_FOLDER": str(DAGS_FOLDER),
            "AIRFLOW__CORE__LOAD_EXAMPLES": "False",
            "AIRFLOW_CONN_DUNE_DEFAULT": conn_json,
            "DUNE_POLL_INTERVAL": poll_interval,
            # Fail fast: the DAG's 5-minute retry delay would keep `airflow dags test` waiting.
            "DUNE_RETRIES": os.environ.get("DUNE_RETRIES") or "0",
            "PYTHONPATH": os.pathsep.join(p for p in (str(REPO_ROOT), env.get("PYTHONPATH", "")) if p),
        }
    )
    return env


def dags_test_setup_commands() -> list[list[str]]:
    """The ``airflow`` subcommands to run once, after ``db migrate``, before ``airflow dags test`` works.

    Airflow 3.0's ``dags test`` does not write the DAG to the metadata DB, so the assets in its tasks' outlets
    are never activated and the task fails with ``AirflowInactiveAssetInInletOrOutletException``
    (apache/airflow#51644). ``airflow dags reserialize`` writes the DAG folder's DAGs, activating their assets,
    as the DAG processor of a running deployment does. Airflow 2.11 and 3.1+ need nothing.
    """
    from airflow import __version__ as airflow_version
    from packaging.version import Version

    release = Version(Version(airflow_version).base_version).release[:2]
    return [["dags", "reserialize"]] if release == (3, 0) else []


def _get_json(url: str, api_key: str | None = None, timeout: float = 10.0) -> Any:
    headers = {"X-Dune-Api-Key": api_key} if api_key else {}
    request = urllib.request.Request(url, headers=headers)  # noqa: S310 - emulator or Dune https URL
    with urllib.request.urlopen(request, timeout=timeout) as response:  # noqa: S310
        return json.loads(response.read())


def read_run(db_path: Path) -> dict[str, Any]:
    """What the metadata DB says about the demo's DAG run, task, trigger and XComs."""
    with contextlib.closing(sqlite3.connect(db_path)) as db:
        run = db.execute(
            "SELECT run_id, state FROM dag_run WHERE dag_id = ? ORDER BY id DESC LIMIT 1", (DAG_ID,)
        ).fetchone()
        if run is None:
            return {"run_state": None}
        run_id, run_state = run
        task = db.execute(
            "SELECT state, try_number, start_date, end_date FROM task_instance "
            "WHERE dag_id = ? AND run_id = ? AND task_id = ?",
            (DAG_ID, run_id, TASK_ID),
        ).fetchone()
        events = [
            row[0]
            for row in db.execute(
                "SELECT event FROM log WHERE dag_id = ? AND run_id = ? AND task_id = ? ORDER BY id",
                (DAG_ID, run_id, TASK_ID),
            )
        ]
        triggers = [
            {"classpath": row[0], "created": row[1]}
            for row in db.execute("SELECT classpath, created_date FROM trigger ORDER BY id")
        ]
        xcoms = {
            row[0]: json.loads(row[1]) if row[1] else None
            for row in db.execute(
                "SELECT key, value FROM xcom WHERE dag_id = ? AND run_id = ? AND task_id = ?",
                (DAG_ID, run_id, TASK_ID),
            )
        }
    return {
        "run_id": run_id,
        "run_state": run_state,
        "task": dict(zip(("state", "try_number", "start_date", "end_date"), task, strict=True)) if task else None,
        "events": events,
        "triggers": triggers,
        "xcoms": xcoms,
    }


def print_summary(run: dict[str, Any], api_url: str, emulator: bool, elapsed: float, output: str = "") -> None:
    task = run.get("task") or {}
    events = run.get("events") or []
    # Airflow 2.11 deletes the trigger row and records no "deferred" event: its output says it ran the trigger.
    in_line = "[DAG TEST] running trigger in line" in output
    deferred = "deferred" in events or bool(run.get("triggers")) or in_line
    _say("")
    _say("=" * 78)
    _say(f"DAG run   {DAG_ID} / {run.get('run_id')}: {run.get('run_state')}  ({elapsed:.1f}s for `airflow dags test`)")
    _say(f"Task      {TASK_ID}: {task.get('state')}, try {task.get('try_number')}")
    _say(f"          state history: {' -> '.join(events) if events else '(none recorded)'}")
    for trigger in run.get("triggers") or []:
        _say(f"Deferred  yes: Airflow stored trigger {trigger['classpath'].rsplit('.', 1)[-1]} at {trigger['created']}")
    if in_line and not run.get("triggers"):
        _say("Deferred  yes: `airflow dags test` ran the task's trigger in line")
    if not deferred:
        _say("Deferred  NO: the task finished without deferring")
    if emulator:
        with contextlib.suppress(OSError, ValueError):
            counts = _get_json(api_url.removesuffix("/api") + "/_emulator/counts")["counts"]
            polls = counts.get("get_pipeline_status", 0)
            how = " (once by the task before deferring, then by the trigger)" if deferred and polls > 1 else ""
            _say(
                f"Emulator  execute_query_pipeline called {counts.get('execute_query_pipeline', 0)}x; "
                f"pipeline status read {polls}x{how}"
            )
    result = (run.get("xcoms") or {}).get("return_value")
    if isinstance(result, dict):
        title = f"Pipeline  {result.get('pipeline_execution_id')}: {result.get('state')} ({result.get('summary')})"
        _say(format_report(title, rows_from_summary(result)))
    else:
        _say("Pipeline  no result in XCom (the task did not succeed)")
    _say("=" * 78)


def run_child(argv: list[str], env: dict[str, str], log: Any) -> int:
    """Run ``argv`` in its own process group; on timeout, Ctrl-C or SIGTERM stop that whole group."""
    process = subprocess.Popen(  # noqa: S603 - fixed argv, no shell
        argv, env=env, cwd=REPO_ROOT, stdout=log, stderr=subprocess.STDOUT, start_new_session=True
    )
    try:
        return process.wait(timeout=DAGS_TEST_TIMEOUT)
    except subprocess.TimeoutExpired:
        _say(f"`{' '.join(argv[-4:])}` did not finish within {DAGS_TEST_TIMEOUT:g}s")
        return 124
    finally:
        if process.poll() is None:
            with contextlib.suppress(ProcessLookupError):
                os.killpg(process.pid, signal.SIGTERM)
            try:
                process.wait(timeout=10)
            except subprocess.TimeoutExpired:
                with contextlib.suppress(ProcessLookupError):
                    os.killpg(process.pid, signal.SIGKILL)
                process.wait()


def _error_lines(log_path: Path, limit: int = 5) -> list[str]:
    """The exception lines of a failed run's output (e.g. ``DuneBadRequestError: ...``)."""
    try:
        lines = log_path.read_text(errors="replace").splitlines()
    except OSError:
        return []
    found = [line.strip() for line in lines if re.match(r"^[\w.]+(Error|Exception|Timeout): ", line.strip())]
    return [line[:400] for line in dict.fromkeys(found)][-limit:]


def _interrupt(signum: int, frame: object) -> None:
    raise KeyboardInterrupt


def main() -> int:
    signal.signal(signal.SIGTERM, _interrupt)
    logical_date = os.environ.get("DUNE_DEMO_DATE") or "2024-06-01"
    real_key = os.environ.get("DUNE_API_KEY", "").strip()
    airflow_home = DEMO_DIR / "airflow_home"
    shutil.rmtree(airflow_home, ignore_errors=True)
    airflow_home.mkdir(parents=True)
    airflow = Path(sys.executable).with_name("airflow")
    airflow_cmd = [str(airflow)] if airflow.exists() else [sys.executable, "-m", "airflow"]
    started = time.monotonic()

    with contextlib.ExitStack() as stack:
        if real_key:
            api_url, api_key, emulator = os.environ.get("DUNE_API_URL") or DUNE_API_URL, real_key, False
            poll_interval = os.environ.get("DUNE_POLL_INTERVAL") or "10"
            extra: dict[str, Any] = {}
            _say(f"Using real Dune at {api_url} (key from DUNE_API_KEY, not shown); this uses credits.")
            if not os.environ.get("DUNE_NIGHTLY_QUERY_ID"):
                _say("  hint: set DUNE_NIGHTLY_QUERY_ID to one of your queries; 1001 is the emulator's demo query")
        else:
            api_key = "demo-" + secrets.token_hex(8)
            child = stack.enter_context(emulator_process(api_key, log_path=DEMO_DIR / "emulator.log"))
            api_url, pid = child.url, child.pid
            emulator = True
            poll_interval = os.environ.get("DUNE_POLL_INTERVAL") or "1"
            extra = {"timeout": 10}
            _say(f"Started the Dune API emulator at {api_url} (pid {pid})")
        conn_json = json.dumps({"conn_type": "dune", "host": api_url, "password": api_key, "extra": extra})
        env = airflow_env(airflow_home, conn_json, poll_interval)

        _say(f"Migrating a fresh Airflow metadata DB in {airflow_home.relative_to(REPO_ROOT)} ...")
        migrate = subprocess.run(  # noqa: S603 - fixed argv, no shell
            [*airflow_cmd, "db", "migrate"], env=env, cwd=REPO_ROOT, capture_output=True, text=True, check=False
        )
        if migrate.returncode != 0:
            _say(migrate.stdout[-3000:] + migrate.stderr[-3000:])
            _say("airflow db migrate failed")
            return 2
        for command in dags_test_setup_commands():
            setup = subprocess.run(  # noqa: S603 - fixed argv, no shell
                [*airflow_cmd, *command], env=env, cwd=REPO_ROOT, capture_output=True, text=True, check=False
            )
            if setup.returncode != 0:
                _say(setup.stdout[-3000:] + setup.stderr[-3000:])
                _say(f"airflow {' '.join(command)} failed")
                return 2

        log_path = DEMO_DIR / "dags_test.log"
        _say(
            f"Running `airflow dags test {DAG_ID} {logical_date}` (poll interval {poll_interval}s; "
            f"output in {log_path.relative_to(REPO_ROOT)}) ..."
        )
        test_started = time.monotonic()
        with log_path.open("w") as log:
            returncode = run_child([*airflow_cmd, "dags", "test", DAG_ID, logical_date], env, log)
        elapsed = time.monotonic() - test_started

        run = read_run(airflow_home / "airflow.db")
        print_summary(run, api_url, emulator, elapsed, log_path.read_text(errors="replace"))
    if emulator:
        _say("Stopped the emulator.")
    ok = returncode == 0 and run.get("run_state") == "success"
    _say(f"Demo {'succeeded' if ok else 'FAILED'} in {time.monotonic() - started:.1f}s.")
    if not ok:
        for line in _error_lines(log_path):
            _say(f"  {line}")
        _say(f"See {log_path} for the full Airflow output.")
    return 0 if ok else 1


if __name__ == "__main__":
    try:
        sys.exit(main())
    except KeyboardInterrupt:
        print("\nInterrupted; the emulator was stopped.", file=sys.stderr)
        sys.exit(130)
