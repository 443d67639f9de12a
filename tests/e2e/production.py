"""The production-shaped stack: PostgreSQL, Redis, CeleryExecutor with two workers, two triggerers, api-server,
scheduler and dag-processor, on loopback, started and stopped by the test harness.

Its commands and settings are read from docker-compose.yaml (:mod:`tests.compose_file`): the settings that name
another container or a path inside one are mapped to their loopback equivalents (:data:`HOST_SPECIFIC`), every
other setting is used as the compose file says. Each worker and triggerer reports its own host name
(``worker-1``, ``triggerer-2``: ``[core] hostname_callable``), so the metadata DB tells them apart.
"""

from __future__ import annotations

import contextlib
import json
import os
import secrets
import time
from collections.abc import Iterator, Mapping
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from cryptography.fernet import Fernet

from airflow_provider_dune.testing.emulator import DuneEmulatorClient
from tests.compose_file import airflow_environment, load_compose, service_command
from tests.e2e.conftest import STARTUP_TIMEOUT, AirflowStack, free_port, start_emulator, stop_process
from tests.e2e.services import PostgresServer, RedisServer, postgres_server, redis_server

#: Compose settings that name another container or a path inside one; everything else is used unchanged.
HOST_SPECIFIC = frozenset(
    {
        "AIRFLOW__DATABASE__SQL_ALCHEMY_CONN",
        "AIRFLOW__CELERY__RESULT_BACKEND",
        "AIRFLOW__CELERY__BROKER_URL",
        "AIRFLOW__CORE__EXECUTION_API_SERVER_URL",
        "AIRFLOW__CORE__FERNET_KEY_CMD",
        "AIRFLOW__API_AUTH__JWT_SECRET_CMD",
        "AIRFLOW_CONN_DUNE_DEFAULT",
    }
)
#: Test-only speed-ups: heartbeats every second so that a dead triggerer is noticed in seconds, not minutes.
FAST_HEARTBEATS = {
    "AIRFLOW__SCHEDULER__SCHEDULER_HEARTBEAT_SEC": "1",
    "AIRFLOW__TRIGGERER__JOB_HEARTBEAT_SEC": "1",
    "AIRFLOW__TRIGGERER__TRIGGERER_HEALTH_CHECK_THRESHOLD": "6",
    "AIRFLOW__DAG_PROCESSOR__REFRESH_INTERVAL": "5",
}
HOSTNAME_MODULE = "e2e_process_name"
WORKERS = ("worker-1", "worker-2")
TRIGGERERS = ("triggerer-1", "triggerer-2")


def production_environment(
    compose: dict[str, Any],
    *,
    postgres: PostgresServer,
    redis: RedisServer,
    api_port: int,
    emulator_url: str,
    api_key: str,
    secrets_dir: Path,
) -> dict[str, str]:
    """The compose file's Airflow settings, with :data:`HOST_SPECIFIC` mapped to loopback."""
    env = airflow_environment(compose)
    env.update(
        {
            "AIRFLOW__DATABASE__SQL_ALCHEMY_CONN": postgres.sqlalchemy_url,
            "AIRFLOW__CELERY__RESULT_BACKEND": postgres.celery_result_backend,
            "AIRFLOW__CELERY__BROKER_URL": redis.url,
            "AIRFLOW__CORE__EXECUTION_API_SERVER_URL": f"http://127.0.0.1:{api_port}/execution/",
            "AIRFLOW__CORE__FERNET_KEY_CMD": env["AIRFLOW__CORE__FERNET_KEY_CMD"].replace(
                "/opt/airflow/secrets", str(secrets_dir)
            ),
            "AIRFLOW__API_AUTH__JWT_SECRET_CMD": env["AIRFLOW__API_AUTH__JWT_SECRET_CMD"].replace(
                "/opt/airflow/secrets", str(secrets_dir)
            ),
        }
    )
    connection = json.loads(env["AIRFLOW_CONN_DUNE_DEFAULT"])
    connection.update(host=emulator_url, password=api_key)
    connection["extra"] = {
        **connection["extra"],
        "timeout": 5,
        "retry_min_wait": 0.2,
        "retry_max_wait": 2,
        "reads_per_minute": 0,
    }
    env["AIRFLOW_CONN_DUNE_DEFAULT"] = json.dumps(connection)
    return env


@dataclass
class ProductionStack:
    """The running stack: :class:`AirflowStack` for the Airflow side, plus its servers and compose commands."""

    airflow: AirflowStack
    postgres: PostgresServer
    redis: RedisServer
    compose: dict[str, Any]

    def start_triggerer(self, name: str, capacity: int, extra_env: Mapping[str, str] | None = None) -> None:
        self.airflow.start(
            name,
            *service_command(self.compose, "triggerer"),
            "--capacity",
            str(capacity),
            "--skip-serve-logs",
            env={**_process_name_env(self.airflow.home, name), **(extra_env or {})},
        )

    def start_worker(self, name: str, concurrency: int) -> None:
        self.airflow.start(
            name,
            *service_command(self.compose, "airflow-worker"),
            "--celery-hostname",
            f"{name}@%h",
            "--concurrency",
            str(concurrency),
            "--skip-serve-logs",
            env=_process_name_env(self.airflow.home, name),
        )

    def triggerer_jobs(self) -> dict[int, str]:
        """Job id -> name of every triggerer that ever started."""
        rows = self.airflow.query("SELECT id, hostname FROM job WHERE job_type = 'TriggererJob'")
        return {int(job_id): str(hostname) for job_id, hostname in rows}

    def trigger_assignment(self) -> dict[str | None, int]:
        """Triggers per triggerer name (``None``: not assigned)."""
        jobs = self.triggerer_jobs()
        counts: dict[str | None, int] = {}
        for (triggerer_id,) in self.airflow.query("SELECT triggerer_id FROM trigger"):
            name = jobs.get(int(triggerer_id)) if triggerer_id is not None else None
            counts[name] = counts.get(name, 0) + 1
        return counts


def _process_name_env(home: Path, name: str) -> dict[str, str]:
    return {
        "E2E_PROCESS_NAME": name,
        "AIRFLOW__CORE__HOSTNAME_CALLABLE": f"{HOSTNAME_MODULE}.process_name",
        # Kept after the hostname module, so a checkout named by the caller's PYTHONPATH is the one imported.
        "PYTHONPATH": os.pathsep.join(filter(None, [str(home / "pylib"), os.environ.get("PYTHONPATH")])),
    }


def _write_hostname_module(home: Path) -> None:
    (home / "pylib").mkdir()
    (home / "pylib" / f"{HOSTNAME_MODULE}.py").write_text(
        '"""Host name of one e2e process, so that two processes on one machine can be told apart."""\n'
        "import os\n\n\n"
        "def process_name() -> str:\n"
        '    return os.environ["E2E_PROCESS_NAME"]\n'
    )


@contextlib.contextmanager
def running_production_stack(
    home: Path, dag_files: dict[str, str], dag_ids: tuple[str, ...], *, triggerer_capacity: int, worker_slots: int
) -> Iterator[ProductionStack]:
    """Start PostgreSQL, Redis, the emulator and the Airflow processes of the compose file; stop them all."""
    compose = load_compose()
    (home / "dags").mkdir()
    for name, source in dag_files.items():
        (home / "dags" / name).write_text(source)
    _write_hostname_module(home)
    secrets_dir = home / "secrets"
    secrets_dir.mkdir(mode=0o700)
    fernet_key = Fernet.generate_key().decode()
    (secrets_dir / "fernet_key").write_text(fernet_key)
    (secrets_dir / "jwt_secret").write_text(secrets.token_urlsafe(48))
    api_key = f"e2e-secret-key-{secrets.token_hex(8)}"
    started = time.monotonic()
    with contextlib.ExitStack() as cleanup:
        postgres = cleanup.enter_context(postgres_server(home / "postgres.log"))
        redis = cleanup.enter_context(redis_server(home / "redis.log"))
        emulator_process, emulator_url = start_emulator(api_key, home / "emulator.log", seed=False)
        cleanup.callback(stop_process, emulator_process)
        emulator = DuneEmulatorClient(emulator_url)
        emulator.wait_until_ready()
        api_port = free_port()
        env = {
            **{k: v for k, v in _base_env().items()},
            **production_environment(
                compose,
                postgres=postgres,
                redis=redis,
                api_port=api_port,
                emulator_url=emulator_url,
                api_key=api_key,
                secrets_dir=secrets_dir,
            ),
            **FAST_HEARTBEATS,
            "AIRFLOW_HOME": str(home),
            "AIRFLOW__CORE__DAGS_FOLDER": str(home / "dags"),
            "AIRFLOW__API__HOST": "127.0.0.1",
            "AIRFLOW__API__PORT": str(api_port),
            "AIRFLOW__API__BASE_URL": f"http://127.0.0.1:{api_port}",
            "AIRFLOW__LOGGING__WORKER_LOG_SERVER_PORT": str(free_port()),
            "AIRFLOW__LOGGING__TRIGGER_LOG_SERVER_PORT": str(free_port()),
        }
        # The same key with the provider's budget pacing at Dune's Free plan (the budget measurements use it).
        default = json.loads(env["AIRFLOW_CONN_DUNE_DEFAULT"])
        paced = {**default, "extra": {**default["extra"], "reads_per_minute": 40, "writes_per_minute": 15}}
        env["AIRFLOW_CONN_DUNE_FREE_PLAN"] = json.dumps(paced)
        stack = AirflowStack(home, env, api_port, emulator_url, emulator, api_key, fernet_key, postgres=postgres)
        production = ProductionStack(stack, postgres, redis, compose)
        cleanup.callback(_stop_all, stack)
        stack.airflow("db", "migrate", timeout=300)
        stack.start(
            "api-server",
            *service_command(compose, "api-server"),
            "--host",
            "127.0.0.1",
            "--port",
            str(api_port),
            "--workers",
            "1",
        )
        stack.start("scheduler", *service_command(compose, "scheduler"), "--skip-serve-logs")
        stack.start("dag-processor", *service_command(compose, "dag-processor"))
        for name in TRIGGERERS:
            production.start_triggerer(name, triggerer_capacity)
        for name in WORKERS:
            production.start_worker(name, worker_slots)
        _wait_ready(production, dag_ids)
        print(f"\n[e2e] production stack ready in {time.monotonic() - started:.1f}s (home {home})")
        yield production


def _stop_all(stack: AirflowStack) -> None:
    for name in list(stack.processes):
        stack.stop(name)


def _base_env() -> dict[str, str]:
    import os

    return {k: v for k, v in os.environ.items() if not k.startswith(("AIRFLOW", "DUNE_"))}


def _wait_ready(production: ProductionStack, dag_ids: tuple[str, ...]) -> None:
    stack = production.airflow
    deadline = time.monotonic() + STARTUP_TIMEOUT * 2
    while True:
        for name, process in stack.processes.items():
            assert process.poll() is None, f"airflow {name} exited at startup; see {stack.process_log_dir}"
        try:
            health = stack.rest("GET", "/api/v2/monitor/health")
            parsed = {row[0] for row in stack.query("SELECT dag_id FROM dag")}
            triggerers = set(production.triggerer_jobs().values())
        except Exception:  # not up yet: connection refused, tables not there
            health, parsed, triggerers = {}, set(), set()
        workers_ready = all(
            "ready." in (stack.process_log_dir / f"{name}.log").read_text(errors="replace") for name in WORKERS
        )
        ready = (
            health.get("scheduler", {}).get("status") == "healthy"
            and health.get("triggerer", {}).get("status") == "healthy"
            and set(dag_ids) <= parsed
            and set(TRIGGERERS) <= triggerers
            and workers_ready
        )
        if ready:
            return
        assert time.monotonic() < deadline, f"production stack not ready: {health} {parsed} {triggerers}"
        time.sleep(0.5)
