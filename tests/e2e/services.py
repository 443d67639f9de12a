"""PostgreSQL and Redis servers for the production-shaped stack, from Debian's packages, on loopback.

Each server gets a fresh temporary directory and a free port, and is stopped (and its directory removed) when
its context ends. PostgreSQL refuses to run as root: under root the server runs as the ``postgres`` user the
Debian package creates.
"""

from __future__ import annotations

import contextlib
import glob
import os
import pwd
import shutil
import subprocess
import tempfile
import time
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path

from tests.e2e.conftest import free_port, stop_process

INSTALL_HINT = "apt-get install postgresql redis-server (.ci/run installs them)"


def postgres_bindir() -> Path | None:
    """Debian's PostgreSQL server binaries (the newest version installed), or ``None``."""
    candidates = sorted(glob.glob("/usr/lib/postgresql/*/bin/initdb"), key=_version_key)
    if candidates:
        return Path(candidates[-1]).parent
    found = shutil.which("initdb")
    return Path(found).resolve().parent if found else None


def _version_key(path: str) -> tuple[int, ...]:
    version = Path(path).parent.parent.name
    return tuple(int(part) for part in version.split(".") if part.isdigit())


def redis_server_path() -> str | None:
    return shutil.which("redis-server")


def missing_services() -> list[str]:
    """What the production-shaped stack needs from the system and cannot find."""
    missing = []
    if postgres_bindir() is None:
        missing.append("PostgreSQL server (initdb)")
    if redis_server_path() is None:
        missing.append("redis-server")
    if os.geteuid() == 0 and shutil.which("runuser") is None:
        missing.append("runuser (to run PostgreSQL as a non-root user)")
    return missing


@dataclass(frozen=True)
class PostgresServer:
    port: int
    database: str
    user: str
    bindir: Path

    @property
    def sqlalchemy_url(self) -> str:
        return f"postgresql+psycopg2://{self.user}@127.0.0.1:{self.port}/{self.database}"

    @property
    def celery_result_backend(self) -> str:
        return f"db+postgresql+psycopg2://{self.user}@127.0.0.1:{self.port}/{self.database}"

    def dump(self) -> bytes:
        """Every table's data (``pg_dump --data-only``), to search it for secrets."""
        return subprocess.run(
            [
                str(self.bindir / "pg_dump"),
                "-h",
                "127.0.0.1",
                "-p",
                str(self.port),
                "-U",
                self.user,
                "--data-only",
                self.database,
            ],
            capture_output=True,
            check=True,
            timeout=120,
        ).stdout


def _as_postgres_user(argv: list[str]) -> list[str]:
    return ["runuser", "-u", "postgres", "--", *argv] if os.geteuid() == 0 else argv


@contextlib.contextmanager
def postgres_server(log_path: Path) -> Iterator[PostgresServer]:
    """A throwaway PostgreSQL cluster with trust authentication on 127.0.0.1 only."""
    bindir = postgres_bindir()
    if bindir is None:
        raise RuntimeError(f"no PostgreSQL server found: {INSTALL_HINT}")
    # Outside pytest's 0700 temp folders, so that the postgres user can reach it when we are root.
    base = Path(tempfile.mkdtemp(prefix="dune-e2e-postgres-"))
    data = base / "data"
    try:
        if os.geteuid() == 0:
            owner = pwd.getpwnam("postgres")
            os.chown(base, owner.pw_uid, owner.pw_gid)
        user, port = "airflow", free_port()
        init = subprocess.run(
            _as_postgres_user([str(bindir / "initdb"), "-D", str(data), "-U", user, "--auth=trust", "-E", "UTF8"]),
            capture_output=True,
            text=True,
            timeout=120,
            check=False,
        )
        if init.returncode != 0:
            raise RuntimeError(f"initdb failed: {init.stderr[-2000:]}")
        with log_path.open("ab") as log:
            process = subprocess.Popen(
                _as_postgres_user(
                    [
                        str(bindir / "postgres"),
                        "-D",
                        str(data),
                        "-p",
                        str(port),
                        "-c",
                        "listen_addresses=127.0.0.1",
                        "-c",
                        f"unix_socket_directories={base}",
                        "-c",
                        "max_connections=200",
                        "-c",
                        "fsync=off",  # a throwaway cluster: durability buys nothing here
                    ]
                ),
                stdout=log,
                stderr=subprocess.STDOUT,
                start_new_session=True,
            )
        try:
            _wait_until(lambda: _pg_ready(bindir, port, user), 30, f"PostgreSQL did not start; see {log_path}")
            subprocess.run(
                [str(bindir / "createdb"), "-h", "127.0.0.1", "-p", str(port), "-U", user, "airflow"],
                check=True,
                capture_output=True,
                timeout=30,
            )
            yield PostgresServer(port=port, database="airflow", user=user, bindir=bindir)
        finally:
            stop_process(process)
    finally:
        shutil.rmtree(base, ignore_errors=True)


def _pg_ready(bindir: Path, port: int, user: str) -> bool:
    ready = subprocess.run(
        [str(bindir / "pg_isready"), "-h", "127.0.0.1", "-p", str(port), "-U", user],
        capture_output=True,
        timeout=10,
        check=False,
    )
    return ready.returncode == 0


@dataclass(frozen=True)
class RedisServer:
    port: int

    @property
    def url(self) -> str:
        return f"redis://127.0.0.1:{self.port}/0"

    def contents(self) -> list[bytes]:
        """Every key and value in every database, to search them for secrets."""
        import redis

        found: list[bytes] = []
        for db in range(16):
            client = redis.Redis(host="127.0.0.1", port=self.port, db=db)
            for key in client.scan_iter(count=1000):
                found.append(key)
                kind = client.type(key)
                if kind == b"string":
                    found.append(client.get(key) or b"")
                elif kind == b"list":
                    found.extend(client.lrange(key, 0, -1))
                elif kind == b"hash":
                    for field, value in client.hgetall(key).items():
                        found.extend((field, value))
                elif kind == b"set":
                    found.extend(client.smembers(key))
                elif kind == b"zset":
                    found.extend(client.zrange(key, 0, -1))
            client.close()
        return found


@contextlib.contextmanager
def redis_server(log_path: Path) -> Iterator[RedisServer]:
    """A Redis server on 127.0.0.1 that keeps nothing on disk."""
    executable = redis_server_path()
    if executable is None:
        raise RuntimeError(f"no redis-server found: {INSTALL_HINT}")
    workdir = Path(tempfile.mkdtemp(prefix="dune-e2e-redis-"))
    port = free_port()
    try:
        with log_path.open("ab") as log:
            process = subprocess.Popen(
                [
                    executable,
                    "--port",
                    str(port),
                    "--bind",
                    "127.0.0.1",
                    "--save",
                    "",
                    "--appendonly",
                    "no",
                    "--dir",
                    str(workdir),
                    "--protected-mode",
                    "yes",
                ],
                stdout=log,
                stderr=subprocess.STDOUT,
                start_new_session=True,
            )
        try:
            _wait_until(lambda: _redis_ready(port), 20, f"redis-server did not start; see {log_path}")
            yield RedisServer(port=port)
        finally:
            stop_process(process)
    finally:
        shutil.rmtree(workdir, ignore_errors=True)


def _redis_ready(port: int) -> bool:
    import socket

    try:
        with socket.create_connection(("127.0.0.1", port), timeout=1) as sock:
            sock.sendall(b"PING\r\n")
            return sock.recv(16).startswith(b"+PONG")
    except OSError:
        return False


def _wait_until(ready: object, timeout: float, message: str) -> None:
    deadline = time.monotonic() + timeout
    while not ready():  # type: ignore[operator]
        if time.monotonic() > deadline:
            raise RuntimeError(message)
        time.sleep(0.2)
