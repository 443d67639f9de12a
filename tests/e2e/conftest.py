"""A real Airflow stack on loopback for the end-to-end tests: one per module, torn down by pid.

On Airflow 3 the stack is ``airflow api-server`` (the REST API, the web UI and the Task Execution API),
``scheduler`` (LocalExecutor), ``dag-processor`` and ``triggerer``; on Airflow 2.11 it is ``airflow webserver``
(the web UI and REST API v1 with basic auth), ``scheduler`` (SequentialExecutor: Airflow 2 allows no other on
SQLite) and ``triggerer``. :class:`AirflowRelease` holds every difference between the releases. Each stack has
its own temporary ``AIRFLOW_HOME`` and SQLite database, plus the Dune API emulator as a subprocess. Every process
runs in its own process group and is stopped with SIGTERM then SIGKILL in the fixture finalizer.
:class:`StackOptions` says what differs per module (DAG files, one worker slot or several, a seeded emulator, a
login user instead of "everyone is admin").
"""

from __future__ import annotations

import base64
import contextlib
import importlib.metadata
import json
import os
import secrets
import signal
import socket
import sqlite3
import subprocess
import sys
import time
import urllib.request
from collections.abc import Callable, Iterator
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import pytest
from cryptography.fernet import Fernet
from packaging.version import Version

from airflow_provider_dune.testing.emulator import DuneEmulatorClient

VENV_BIN = Path(sys.executable).parent
AIRFLOW_BIN = str(VENV_BIN / "airflow")
STARTUP_TIMEOUT = 90.0


def free_port() -> int:
    with socket.socket(socket.AF_INET, socket.SOCK_STREAM) as sock:
        sock.bind(("127.0.0.1", 0))
        return int(sock.getsockname()[1])


def stop_process(process: subprocess.Popen[Any], grace: float = 10.0) -> None:
    """SIGTERM the process group of ``process``, then SIGKILL it if it has not ended within ``grace``."""
    if process.poll() is None:
        with contextlib.suppress(ProcessLookupError):
            os.killpg(process.pid, signal.SIGTERM)
        with contextlib.suppress(subprocess.TimeoutExpired):
            process.wait(grace)
    # children (task runners, log servers) may outlive their leader: always sweep the group
    with contextlib.suppress(ProcessLookupError):
        os.killpg(process.pid, signal.SIGKILL)
    with contextlib.suppress(subprocess.TimeoutExpired):
        process.wait(5)


@dataclass(frozen=True)
class StackOptions:
    """What one module's stack looks like.

    :param dag_files: file name -> source of the DAG files in the DAGs folder.
    :param dag_ids: DAGs that must be parsed before the stack counts as ready.
    :param parallelism: worker slots (``[core] parallelism``).
    :param seed_emulator: load the emulator's demo catalog (the example DAGs' queries and views).
    :param connection_env: define ``dune_default`` as ``AIRFLOW_CONN_DUNE_DEFAULT`` (else a test creates it).
    :param login: users log in as ``admin`` with :attr:`AirflowStack.admin_password` (else everyone is admin).
        Airflow 2.11 always has that user: its REST API takes basic auth only.
    :param paused_at_creation: new DAGs start paused, as in a default installation.
    :param extra_env: more environment for the Airflow processes.
    :param emulator_args: more command line options of the emulator, e.g. ``("--time-scale", "0.25")``.
    """

    dag_files: dict[str, str]
    dag_ids: tuple[str, ...]
    parallelism: int = 1
    seed_emulator: bool = False
    connection_env: bool = True
    login: bool = False
    paused_at_creation: bool = False
    extra_env: tuple[tuple[str, str], ...] = ()
    emulator_args: tuple[str, ...] = ()


ADMIN_USER = "admin"


@dataclass(frozen=True)
class AirflowRelease:
    """Everything that differs between the Airflow releases a stack runs on; tests ask this, not the version.

    Airflow 3.0 to 3.3 share one shape: ``api-server`` (REST API v2, the UI and the Task Execution API, which
    the workers find at ``[core] execution_api_server_url``), ``scheduler``, ``dag-processor`` and
    ``triggerer``, with the simple auth manager (``/auth/token``: without credentials when everyone is admin).
    Airflow 2.11: ``webserver`` (the UI and REST API v1, basic auth for FAB users made by ``airflow users
    create``), ``scheduler`` (which also parses the DAG files) and ``triggerer``; on SQLite it runs tasks with
    the SequentialExecutor, as ``airflow standalone`` does (it refuses LocalExecutor on SQLite).
    """

    version: Version

    @classmethod
    def installed(cls) -> AirflowRelease:
        """The release installed next to this interpreter (read without importing Airflow)."""
        return cls(Version(Version(importlib.metadata.version("apache-airflow")).base_version))

    @property
    def is_airflow_2(self) -> bool:
        return self.version.major < 3

    @property
    def api_root(self) -> str:
        """The stable REST API's prefix."""
        return "/api/v1" if self.is_airflow_2 else "/api/v2"

    @property
    def health_path(self) -> str:
        return "/api/v1/health" if self.is_airflow_2 else "/api/v2/monitor/health"

    @property
    def web_server(self) -> str:
        """The process serving the UI and the REST API."""
        return "webserver" if self.is_airflow_2 else "api-server"

    @property
    def executor(self) -> str:
        return "SequentialExecutor" if self.is_airflow_2 else "LocalExecutor"

    @property
    def always_login(self) -> bool:
        """Whether the REST API needs a user whatever :attr:`StackOptions.login` says (basic auth)."""
        return self.is_airflow_2

    @property
    def unpausing_runs_the_latest_interval(self) -> bool:
        """Airflow 2.11 runs the most recent cron interval when a DAG is unpaused (``cron_schedule`` avoids it
        on Airflow 3 only; see :mod:`airflow_provider_dune.schedules`)."""
        return self.is_airflow_2

    @property
    def dags_test_keeps_trigger_row(self) -> bool:
        """Whether ``airflow dags test`` leaves the trigger it ran in line in the ``trigger`` table (Airflow 3;
        Airflow 2 deletes it)."""
        return not self.is_airflow_2

    @property
    def logs_task_states(self) -> bool:
        """Whether the ``log`` table gets an event per task state (running, deferred, running, success): from
        Airflow 3.2 the Task Execution API writes them; 3.0 and 3.1 write none, Airflow 2 only the end state in
        ``airflow dags test``."""
        return self.version >= Version("3.2")

    def run_without_logical_date(self, run_id: str) -> dict[str, Any]:
        """The body of ``POST <api_root>/dags/{dag_id}/dagRuns`` for a run without a logical date: Airflow 3
        takes ``"logical_date": null``; REST API v1 always sets one (now) and rejects ``null``."""
        if self.is_airflow_2:
            return {"dag_run_id": run_id}
        return {"dag_run_id": run_id, "logical_date": None}

    def environment(self, home: Path, api_port: int, options: StackOptions) -> dict[str, str]:
        """The settings of this release's processes beyond those every release shares."""
        if self.is_airflow_2:
            return {
                "AIRFLOW__WEBSERVER__WEB_SERVER_HOST": "127.0.0.1",
                "AIRFLOW__WEBSERVER__WEB_SERVER_PORT": str(api_port),
                "AIRFLOW__WEBSERVER__BASE_URL": f"http://127.0.0.1:{api_port}",
                "AIRFLOW__WEBSERVER__SECRET_KEY": secrets.token_hex(32),
                "AIRFLOW__WEBSERVER__WORKERS": "1",
                "AIRFLOW__API__AUTH_BACKENDS": (
                    "airflow.providers.fab.auth_manager.api.auth.backend.basic_auth,airflow.api.auth.backend.session"
                ),
                "AIRFLOW__SCHEDULER__DAG_DIR_LIST_INTERVAL": "5",
                # the SequentialExecutor runs `airflow tasks run ...` found on the PATH, as in an activated venv
                "PATH": os.pathsep.join([str(VENV_BIN), os.environ.get("PATH", "")]),
            }
        env = {
            "AIRFLOW__CORE__EXECUTION_API_SERVER_URL": f"http://127.0.0.1:{api_port}/execution/",
            "AIRFLOW__API__HOST": "127.0.0.1",
            "AIRFLOW__API__PORT": str(api_port),
            "AIRFLOW__API__BASE_URL": f"http://127.0.0.1:{api_port}",
            "AIRFLOW__API_AUTH__JWT_SECRET": secrets.token_hex(32),
            "AIRFLOW__DAG_PROCESSOR__REFRESH_INTERVAL": "5",
        }
        if options.login:
            env["AIRFLOW__CORE__SIMPLE_AUTH_MANAGER_USERS"] = f"{ADMIN_USER}:admin"
            env["AIRFLOW__CORE__SIMPLE_AUTH_MANAGER_PASSWORDS_FILE"] = str(home / "passwords.json")
        else:
            env["AIRFLOW__CORE__SIMPLE_AUTH_MANAGER_ALL_ADMINS"] = "True"
        return env

    def server_commands(self, api_port: int) -> list[tuple[str, tuple[str, ...]]]:
        """(process name, ``airflow`` arguments) of the long-running processes, in start order."""
        if self.is_airflow_2:
            return [
                ("webserver", ("webserver", "--hostname", "127.0.0.1", "--port", str(api_port), "--workers", "1")),
                ("scheduler", ("scheduler", "--skip-serve-logs")),
                ("triggerer", ("triggerer", "--skip-serve-logs")),
            ]
        return [
            ("api-server", ("api-server", "--host", "127.0.0.1", "--port", str(api_port), "--workers", "1")),
            ("scheduler", ("scheduler", "--skip-serve-logs")),
            ("dag-processor", ("dag-processor",)),
            ("triggerer", ("triggerer", "--skip-serve-logs")),
        ]

    def add_admin(self, stack: AirflowStack) -> None:
        """Give the ``admin`` user :attr:`AirflowStack.admin_password` (after ``airflow db migrate``)."""
        if stack.admin_password is None:
            return
        if self.is_airflow_2:
            profile = ("--role", "Admin", "--firstname", "Ada", "--lastname", "Admin", "--email", "admin@example.org")
            stack.airflow("users", "create", "--username", ADMIN_USER, "--password", stack.admin_password, *profile)
        else:
            (stack.home / "passwords.json").write_text(json.dumps({ADMIN_USER: stack.admin_password}))

    def authorization(self, stack: AirflowStack) -> str:
        """The ``Authorization`` header of a REST API call."""
        if self.is_airflow_2:
            assert stack.admin_password is not None
            user = base64.b64encode(f"{ADMIN_USER}:{stack.admin_password}".encode()).decode()
            return f"Basic {user}"
        return f"Bearer {stack.token()}"


@dataclass
class AirflowStack:
    home: Path
    env: dict[str, str]
    api_port: int
    emulator_url: str
    emulator: DuneEmulatorClient
    api_key: str
    fernet_key: str
    admin_password: str | None = None
    #: the PostgreSQL server holding the metadata DB (``tests.e2e.services.PostgresServer``); SQLite when ``None``
    postgres: Any = None
    processes: dict[str, subprocess.Popen[Any]] = field(default_factory=dict)
    #: trigger kwargs seen while triggers were alive (the rows are deleted once triggers end)
    trigger_kwargs_seen: list[str] = field(default_factory=list)
    #: the Airflow release the processes run (all of the stack's version differences)
    release: AirflowRelease = field(default_factory=AirflowRelease.installed)

    @property
    def db_path(self) -> Path:
        return self.home / "airflow.db"

    @property
    def process_log_dir(self) -> Path:
        return self.home / "process-logs"

    # -- processes ------------------------------------------------------------------------------------

    def start(self, name: str, *args: str, env: dict[str, str] | None = None) -> subprocess.Popen[Any]:
        """Start ``airflow *args`` as process ``name`` (``env`` adds to the stack's environment)."""
        self.process_log_dir.mkdir(exist_ok=True)
        log = (self.process_log_dir / f"{name}.log").open("ab")
        process = subprocess.Popen(
            [AIRFLOW_BIN, *args],
            env={**self.env, **(env or {})},
            stdout=log,
            stderr=subprocess.STDOUT,
            start_new_session=True,
            cwd=self.home,
        )
        log.close()
        self.processes[name] = process
        return process

    def stop(self, name: str) -> None:
        process = self.processes.pop(name, None)
        if process is not None:
            stop_process(process)

    def airflow(self, *args: str, timeout: float = 60.0) -> str:
        result = subprocess.run(
            [AIRFLOW_BIN, *args],
            env=self.env,
            capture_output=True,
            text=True,
            timeout=timeout,
            cwd=self.home,
            check=False,
        )
        if result.returncode != 0:
            raise AssertionError(f"airflow {' '.join(args)} failed ({result.returncode}):\n{result.stderr[-3000:]}")
        return result.stdout

    # -- metadata DB ----------------------------------------------------------------------------------

    def query(self, sql: str, params: tuple[Any, ...] = ()) -> list[tuple[Any, ...]]:
        """Read the metadata DB (read-only; retries while Airflow holds a write lock); ``?`` marks parameters."""
        if self.postgres is not None:
            import psycopg2

            with (
                contextlib.closing(
                    psycopg2.connect(
                        host="127.0.0.1",
                        port=self.postgres.port,
                        user=self.postgres.user,
                        dbname=self.postgres.database,
                    )
                ) as conn,
                conn.cursor() as cursor,
            ):
                cursor.execute(sql.replace("?", "%s"), params or None)
                return list(cursor.fetchall())
        deadline = time.monotonic() + 20
        while True:
            try:
                conn = sqlite3.connect(f"file:{self.db_path}?mode=ro", uri=True, timeout=5)
                try:
                    return conn.execute(sql, params).fetchall()
                finally:
                    conn.close()
            except sqlite3.OperationalError as err:
                if "locked" not in str(err) or time.monotonic() > deadline:
                    raise
                time.sleep(0.1)

    def decrypt_trigger_kwargs(self, kwargs: str) -> str:
        """The plain JSON of a trigger's stored kwargs (Airflow encrypts them with the Fernet key)."""
        if kwargs.startswith("{"):
            return kwargs
        return Fernet(self.fernet_key.encode()).decrypt(kwargs.encode()).decode()

    def ti_states(self, dag_id: str, run_id: str) -> dict[str, str | None]:
        rows = self.query("SELECT task_id, state FROM task_instance WHERE dag_id=? AND run_id=?", (dag_id, run_id))
        return dict(rows)

    def record_trigger_kwargs(self) -> None:
        for (kwargs,) in self.query("SELECT kwargs FROM trigger"):
            if kwargs not in self.trigger_kwargs_seen:
                self.trigger_kwargs_seen.append(kwargs)

    def wait_for(
        self,
        dag_id: str,
        run_id: str,
        done: Callable[[dict[str, str | None]], bool],
        timeout: float,
        on_sample: Callable[[dict[str, str | None]], None] | None = None,
        interval: float = 0.25,
    ) -> dict[str, str | None]:
        """Sample the task states of a run until ``done(states)``; fail with the states after ``timeout``."""
        deadline = time.monotonic() + timeout
        states: dict[str, str | None] = {}
        while time.monotonic() < deadline:
            states = self.ti_states(dag_id, run_id)
            self.record_trigger_kwargs()
            if on_sample is not None:
                on_sample(states)
            if states and done(states):
                return states
            for name, process in self.processes.items():
                assert process.poll() is None, f"airflow {name} exited with {process.returncode}; see {self.home}"
            time.sleep(interval)
        raise AssertionError(f"{dag_id}/{run_id} not done after {timeout:.0f}s: {states}")

    def trigger(self, dag_id: str, run_id: str) -> float:
        """``airflow dags trigger``; returns the monotonic time just before the call."""
        started = time.monotonic()
        self.airflow("dags", "trigger", dag_id, "--run-id", run_id)
        return started

    def xcom_execution_id(self, dag_id: str, run_id: str, task_id: str) -> str:
        rows = self.query(
            "SELECT value FROM xcom WHERE dag_id=? AND run_id=? AND task_id=? AND key='pipeline_execution_id'",
            (dag_id, run_id, task_id),
        )
        assert rows, f"no pipeline_execution_id XCom for {dag_id}/{run_id}/{task_id}"
        value = rows[0][0]
        return str(json.loads(value) if isinstance(value, (str, bytes)) else value)

    def task_log(self, dag_id: str, run_id: str, task_id: str, *, until: str | None = None, timeout: float = 30) -> str:
        """The task's log files, joined. With ``until``, wait up to ``timeout`` seconds for that text: a task's
        state is saved before the process that runs it has written its last log lines."""
        folder = self.home / "logs" / f"dag_id={dag_id}" / f"run_id={run_id}" / f"task_id={task_id}"
        deadline = time.monotonic() + timeout
        while True:
            log = "\n".join(p.read_text(errors="replace") for p in sorted(folder.rglob("*.log")))
            if until is None or until in log or time.monotonic() > deadline:
                return log
            time.sleep(0.5)

    # -- REST API and Dune API ------------------------------------------------------------------------

    @property
    def base_url(self) -> str:
        """Where the web UI and the REST API are served."""
        return f"http://127.0.0.1:{self.api_port}"

    def token(self) -> str:
        """A REST API token (Airflow 3): the admin user's when users log in, else the all-admins token."""
        if self.admin_password is None:
            request = urllib.request.Request(f"{self.base_url}/auth/token")
        else:
            body = json.dumps({"username": ADMIN_USER, "password": self.admin_password}).encode()
            request = urllib.request.Request(
                f"{self.base_url}/auth/token", data=body, method="POST", headers={"Content-Type": "application/json"}
            )
        with urllib.request.urlopen(request, timeout=10) as response:
            return str(json.load(response)["access_token"])

    def rest(self, method: str, path: str, body: Any = None) -> Any:
        """Call the REST API; an HTTP error raises ``urllib.error.HTTPError`` (its body says why)."""
        request = urllib.request.Request(
            self.base_url + path,
            data=None if body is None else json.dumps(body).encode(),
            method=method,
            headers={"Authorization": self.release.authorization(self), "Content-Type": "application/json"},
        )
        with urllib.request.urlopen(request, timeout=30) as response:
            raw = response.read()
            return json.loads(raw) if raw else None

    def find_key_leaks(self) -> dict[str, Any]:
        """Where the Dune API key shows up: files under AIRFLOW_HOME (logs, metadata DB), XCom rows and every
        trigger's kwargs seen while it was alive. Also says how much was searched, so an empty result means
        something."""
        key = self.api_key.encode()
        files = [p for p in self.home.rglob("*") if p.is_file() and "dags" not in p.parts]
        log_files = [p for p in files if (self.home / "logs") in p.parents]
        xcom = self.query("SELECT dag_id, run_id, task_id, key, value FROM xcom")
        triggers = self.query("SELECT kwargs FROM trigger")
        kwargs_seen = [self.decrypt_trigger_kwargs(k) for k in self.trigger_kwargs_seen + [row[0] for row in triggers]]
        return {
            "files": [str(p) for p in files if key in p.read_bytes()],
            "xcom": [row[:4] for row in xcom if self.api_key in str(row[4])],
            "trigger_kwargs": [k for k in kwargs_seen if self.api_key in k],
            "searched": {
                "log_files": len(log_files),
                "other_files": len(files) - len(log_files),
                "xcom_rows": len(xcom),
                "trigger_kwargs": len(kwargs_seen),
            },
            "kwargs_seen": kwargs_seen,
        }

    def dune(self, path: str) -> Any:
        """GET a Dune API path on the emulator with the key (as the provider would)."""
        request = urllib.request.Request(self.emulator_url + path, headers={"X-Dune-Api-Key": self.api_key})
        with urllib.request.urlopen(request, timeout=10) as response:
            return json.load(response)


def start_emulator(
    api_key: str, log_path: Path, seed: bool, args: tuple[str, ...] = ()
) -> tuple[subprocess.Popen[str], str]:
    process = subprocess.Popen(
        [
            sys.executable,
            "-m",
            "airflow_provider_dune.testing.emulator",
            "--port",
            "0",
            *([] if seed else ["--no-seed"]),
            *args,
        ],
        env={**os.environ, "DUNE_EMULATOR_API_KEY": api_key},  # not on the command line (visible in ps)
        stdout=subprocess.PIPE,
        stderr=log_path.open("w"),
        text=True,
        start_new_session=True,
    )
    assert process.stdout is not None
    line = process.stdout.readline()
    if "listening on" not in line:
        stop_process(process)
        raise AssertionError(f"the emulator did not start: {line!r}; see {log_path}")
    return process, line.rsplit(" ", 1)[-1].strip()


def _child_env(
    home: Path,
    api_port: int,
    conn_json: str | None,
    fernet_key: str,
    options: StackOptions,
    release: AirflowRelease | None = None,
) -> dict[str, str]:
    release = release or AirflowRelease.installed()
    env = {k: v for k, v in os.environ.items() if not k.startswith(("AIRFLOW", "DUNE_"))}
    env.update(
        {
            "AIRFLOW_HOME": str(home),
            "AIRFLOW__CORE__DAGS_FOLDER": str(home / "dags"),
            "AIRFLOW__CORE__LOAD_EXAMPLES": "False",
            "AIRFLOW__DATABASE__SQL_ALCHEMY_CONN": f"sqlite:///{home / 'airflow.db'}",
            "AIRFLOW__CORE__EXECUTOR": release.executor,
            "AIRFLOW__CORE__PARALLELISM": str(options.parallelism),
            "AIRFLOW__CORE__DAGS_ARE_PAUSED_AT_CREATION": str(options.paused_at_creation),
            "AIRFLOW__CORE__FERNET_KEY": fernet_key,
            "AIRFLOW__LOGGING__WORKER_LOG_SERVER_PORT": str(free_port()),
            "AIRFLOW__LOGGING__TRIGGER_LOG_SERVER_PORT": str(free_port()),
            "AIRFLOW__SCHEDULER__SCHEDULER_HEARTBEAT_SEC": "1",
            "AIRFLOW__TRIGGERER__JOB_HEARTBEAT_SEC": "1",
            "AIRFLOW__TRIGGERER__TRIGGERER_HEALTH_CHECK_THRESHOLD": "6",
            **release.environment(home, api_port, options),
        }
    )
    if conn_json is not None:
        env["AIRFLOW_CONN_DUNE_DEFAULT"] = conn_json
    env.update(dict(options.extra_env))
    return env


@contextlib.contextmanager
def running_stack(home: Path, options: StackOptions) -> Iterator[AirflowStack]:
    """Start the emulator and the Airflow processes in ``home``; stop them all when the block ends."""
    (home / "dags").mkdir()
    for name, source in options.dag_files.items():
        (home / "dags" / name).parent.mkdir(parents=True, exist_ok=True)
        (home / "dags" / name).write_text(source)
    api_key = f"e2e-secret-key-{secrets.token_hex(8)}"
    started = time.monotonic()
    emulator_process, emulator_url = start_emulator(
        api_key, home / "emulator.log", options.seed_emulator, options.emulator_args
    )
    stack: AirflowStack | None = None
    try:
        emulator = DuneEmulatorClient(emulator_url)
        emulator.wait_until_ready()
        conn_json = json.dumps(
            {
                "conn_type": "dune",
                "host": emulator_url,
                "password": api_key,
                "extra": {"timeout": 5, "retry_min_wait": 0.2, "retry_max_wait": 1, "reads_per_minute": 0},
            }
        )
        api_port = free_port()
        fernet_key = Fernet.generate_key().decode()
        release = AirflowRelease.installed()
        env = _child_env(home, api_port, conn_json if options.connection_env else None, fernet_key, options, release)
        admin_password = secrets.token_urlsafe(12) if options.login or release.always_login else None
        stack = AirflowStack(
            home, env, api_port, emulator_url, emulator, api_key, fernet_key, admin_password, release=release
        )
        stack.airflow("db", "migrate", timeout=180)
        release.add_admin(stack)
        for name, args in release.server_commands(api_port):
            stack.start(name, *args)
        deadline = time.monotonic() + STARTUP_TIMEOUT
        while True:
            for name, process in stack.processes.items():
                assert process.poll() is None, f"airflow {name} exited at startup; see {stack.process_log_dir}"
            try:
                health = stack.rest("GET", release.health_path)
                parsed = {row[0] for row in stack.query("SELECT dag_id FROM dag")}
            except (OSError, sqlite3.OperationalError):
                health, parsed = {}, set()
            ready = (
                health.get("scheduler", {}).get("status") == "healthy"
                and health.get("triggerer", {}).get("status") == "healthy"
                and set(options.dag_ids) <= parsed
            )
            if ready:
                break
            assert time.monotonic() < deadline, f"stack not ready after {STARTUP_TIMEOUT}s: {health} {parsed}"
            time.sleep(0.5)
        print(f"\n[e2e] Airflow {release.version} stack ready in {time.monotonic() - started:.1f}s (home {home})")
        yield stack
    finally:
        if stack is not None:
            # the scheduler first, so that it starts nothing while the others stop
            for name in sorted(stack.processes, key=lambda name: name != "scheduler"):
                stack.stop(name)
        stop_process(emulator_process)


@pytest.fixture(scope="module")
def airflow_stack(tmp_path_factory: pytest.TempPathFactory, request: pytest.FixtureRequest) -> Iterator[AirflowStack]:
    """The stack of the requesting module: its ``STACK_OPTIONS``, or one ``DAG_FILE_SOURCE`` with one slot."""
    options = getattr(request.module, "STACK_OPTIONS", None)
    if options is None:
        options = StackOptions(
            dag_files={"e2e_dags.py": request.module.DAG_FILE_SOURCE}, dag_ids=tuple(request.module.DAG_IDS)
        )
    with running_stack(tmp_path_factory.mktemp("airflow_home"), options) as stack:
        yield stack
