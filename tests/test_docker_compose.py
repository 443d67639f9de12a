"""docker-compose.yaml and the Dockerfile, checked without a Docker engine.

The file is validated by Docker Compose's own parser (``docker-compose config``, from Debian's package) where it is
installed, and read as a user would: pinned images, secrets, settings that reach the containers, the init guard
that keeps a real API key away from the emulator. The production-shaped e2e stack runs the same commands and
settings (``tests/e2e/test_production_stack.py``).
"""

from __future__ import annotations

import json
import os
import re
import shutil
import stat
import subprocess
import sys
from pathlib import Path
from typing import Any

import pytest

from airflow_provider_dune.api.connection import settings_from_connection
from tests.compose_file import (
    AIRFLOW_SERVICES,
    COMPOSE_FILE,
    airflow_environment,
    load_compose,
    service_command,
    substitute,
)

REPO = COMPOSE_FILE.parent
DOCKERFILE = REPO / "Dockerfile"
REQUIRE_ENV = "DUNE_REQUIRE_PRODUCTION_STACK"


@pytest.fixture(scope="module")
def compose() -> dict[str, Any]:
    return load_compose()


@pytest.fixture(scope="module")
def services(compose: dict[str, Any]) -> dict[str, Any]:
    return dict(compose["services"])


def _compose_cli() -> list[str] | None:
    if shutil.which("docker-compose"):
        return ["docker-compose"]
    docker = shutil.which("docker")
    if docker and subprocess.run([docker, "compose", "version"], capture_output=True, check=False).returncode == 0:
        return [docker, "compose"]
    return None


@pytest.mark.slow
@pytest.mark.parametrize(
    "env",
    [{}, {"DUNE_API_URL": "https://api.dune.com/api", "DUNE_API_KEY": "k", "DUNE_NIGHTLY_QUERY_ID": "42"}],
    ids=["emulator", "real-dune"],
)
def test_docker_compose_accepts_the_file(env: dict[str, str], tmp_path: Path) -> None:
    cli = _compose_cli()
    if cli is None:
        message = "no Docker Compose CLI: apt-get install docker-compose (.ci/run installs it)"
        if os.environ.get(REQUIRE_ENV):
            pytest.fail(message)
        pytest.skip(message)
    clean = {k: v for k, v in os.environ.items() if not k.startswith(("DUNE_", "AIRFLOW"))}
    result = subprocess.run(
        [*cli, "--project-directory", str(REPO), "-f", str(COMPOSE_FILE), "config"],
        env={**clean, **env},
        capture_output=True,
        text=True,
        timeout=60,
        check=False,
        cwd=tmp_path,
    )
    assert result.returncode == 0, result.stderr
    assert "airflow-worker" in result.stdout and "airflow-provider-dune:" in result.stdout


def test_services_in_the_shape_of_airflows_production_compose(services: dict[str, Any]) -> None:
    assert set(services) == {"postgres", "redis", "dune-emulator", "airflow-init", *AIRFLOW_SERVICES}
    assert service_command({"services": services}, "airflow-worker") == ["celery", "worker"]
    for name in ("api-server", "scheduler", "dag-processor", "triggerer"):
        assert service_command({"services": services}, name) == [name]
    for name in AIRFLOW_SERVICES:
        depends = services[name]["depends_on"]
        assert depends["airflow-init"]["condition"] == "service_completed_successfully", name
        for backing in ("postgres", "redis", "dune-emulator"):
            assert depends[backing]["condition"] == "service_healthy", (name, backing)
        assert "healthcheck" in services[name], name


def test_celery_postgres_and_redis_settings(compose: dict[str, Any]) -> None:
    env = airflow_environment(compose)
    assert env["AIRFLOW__CORE__EXECUTOR"] == "CeleryExecutor"
    assert env["AIRFLOW__DATABASE__SQL_ALCHEMY_CONN"].startswith("postgresql+psycopg2://airflow:airflow@postgres/")
    assert env["AIRFLOW__CELERY__RESULT_BACKEND"].startswith("db+postgresql+psycopg2://airflow:airflow@postgres/")
    assert env["AIRFLOW__CELERY__BROKER_URL"] == "redis://redis:6379/0"
    assert env["AIRFLOW__CORE__EXECUTION_API_SERVER_URL"] == "http://api-server:8080/execution/"
    assert env["AIRFLOW__CORE__TEST_CONNECTION"] == "Enabled"


def test_images_are_pinned_and_the_provider_image_is_built_here(services: dict[str, Any]) -> None:
    for name in ("postgres", "redis"):
        repository, _, tag = services[name]["image"].rpartition(":")
        assert repository and re.fullmatch(r"\d+\.\d+(\.\d+)?(-[\w.]+)?", tag), (name, tag)
    built = {name: services[name] for name in (*AIRFLOW_SERVICES, "airflow-init", "dune-emulator")}
    for name, service in built.items():
        assert service["build"]["context"] == ".", name
        assert service["image"] == built["api-server"]["image"], name
    base = built["api-server"]["build"]["args"]["AIRFLOW_IMAGE"]
    assert re.fullmatch(r"apache/airflow:3\.\d+\.\d+-python3\.\d+", base), base
    dockerfile = DOCKERFILE.read_text()
    assert f"ARG AIRFLOW_IMAGE={base}" in dockerfile, "the Dockerfile's default base differs from the compose file's"
    assert '"apache-airflow==${AIRFLOW_VERSION}" /opt/provider' in dockerfile


def test_nothing_is_installed_at_start_and_the_checkout_is_not_mounted(services: dict[str, Any]) -> None:
    text = COMPOSE_FILE.read_text()
    assert "_PIP_ADDITIONAL_REQUIREMENTS" not in text and "pip install" not in text
    for name, service in services.items():
        for volume in service.get("volumes", []):
            source = str(volume).split(":", 1)[0]
            assert source != "./" and source != ".", f"{name} mounts the checkout"
            if source.startswith("./"):
                assert str(volume).endswith(":ro"), f"{name} mounts {volume} writable"
    assert "./example_dags:/opt/airflow/dags:ro" in services["scheduler"]["volumes"]


def test_fernet_key_and_jwt_secret_are_shared_from_the_init_volume(
    compose: dict[str, Any], services: dict[str, Any]
) -> None:
    env = airflow_environment(compose)
    assert env["AIRFLOW__CORE__FERNET_KEY_CMD"] == "cat /opt/airflow/secrets/fernet_key"
    assert env["AIRFLOW__API_AUTH__JWT_SECRET_CMD"] == "cat /opt/airflow/secrets/jwt_secret"
    assert "AIRFLOW__CORE__FERNET_KEY" not in env and "AIRFLOW__API_AUTH__JWT_SECRET" not in env
    for name in AIRFLOW_SERVICES:
        assert "airflow-secrets:/opt/airflow/secrets:ro" in services[name]["volumes"], name
    assert "airflow-secrets:/opt/airflow/secrets" in services["airflow-init"]["volumes"]


def test_connection_points_at_the_emulator_by_default(compose: dict[str, Any], services: dict[str, Any]) -> None:
    conn = json.loads(airflow_environment(compose)["AIRFLOW_CONN_DUNE_DEFAULT"])
    assert conn["host"] == "http://dune-emulator:8765/api"
    command = services["dune-emulator"]["command"]
    assert command[command.index("--api-key") + 1] == conn["password"]
    settings = settings_from_connection(
        "dune_default", host=conn["host"], password=conn["password"], port=None, extra=conn["extra"]
    )
    assert settings.base_url == "http://dune-emulator:8765/api"
    real = json.loads(
        airflow_environment(compose, {"DUNE_API_URL": "https://api.dune.com/api", "DUNE_API_KEY": "real"})[
            "AIRFLOW_CONN_DUNE_DEFAULT"
        ]
    )
    assert (real["host"], real["password"]) == ("https://api.dune.com/api", "real")


def test_every_setting_the_example_dags_read_reaches_the_containers(compose: dict[str, Any]) -> None:
    env = airflow_environment(compose)
    read: dict[str, str | None] = {}
    for path in (REPO / "example_dags").glob("*.py"):
        if path.name == "demo.py":  # the `make demo` driver, not a DAG
            continue
        pattern = r'os\.environ\.get\("(DUNE_[A-Z_]+)"\)(?: or (?:"([^"\n]*)"|([0-9][0-9.,]*)))?'
        for match in re.finditer(pattern, path.read_text()):
            read.setdefault(match[1], match[2] if match[2] is not None else match[3])  # a literal default only
    assert read, "no DUNE_* settings found in example_dags: the pattern above is out of date"
    for name, default in read.items():
        assert name in env, f"{name} is read by the example DAGs but not passed to the containers"
        if default is not None and name != "DUNE_POLL_INTERVAL":
            assert env[name] == default, (name, env[name], default)


def _init_script(services: dict[str, Any], secrets: Path) -> str:
    script = substitute(services["airflow-init"]["command"][1])
    return script.replace("/opt/airflow/secrets", str(secrets))


def _run_init(script: str, tmp_path: Path, **env: str) -> subprocess.CompletedProcess[str]:
    fake_bin = tmp_path / "bin"
    fake_bin.mkdir(exist_ok=True)
    airflow = fake_bin / "airflow"
    airflow.write_text('#!/bin/sh\necho "airflow $*" >> "$CALLS"\n')
    airflow.chmod(0o755)
    (fake_bin / "python").symlink_to(sys.executable) if not (fake_bin / "python").exists() else None
    return subprocess.run(
        ["bash", "-c", script],
        env={"PATH": f"{fake_bin}:/usr/bin:/bin", "CALLS": str(tmp_path / "calls"), **env},
        capture_output=True,
        text=True,
        timeout=60,
        check=False,
    )


def test_init_refuses_a_real_key_without_a_url(services: dict[str, Any], tmp_path: Path) -> None:
    secrets = tmp_path / "secrets"
    secrets.mkdir()
    result = _run_init(_init_script(services, secrets), tmp_path, DUNE_API_KEY="real-key", DUNE_API_URL="")
    assert result.returncode == 1
    assert "set DUNE_API_URL=https://api.dune.com/api" in result.stderr
    assert "real-key" not in result.stderr + result.stdout
    assert not (tmp_path / "calls").exists() and not list(secrets.iterdir())


def test_init_generates_the_secrets_once_and_migrates(services: dict[str, Any], tmp_path: Path) -> None:
    secrets = tmp_path / "secrets"
    secrets.mkdir()
    script = _init_script(services, secrets)
    first = _run_init(script, tmp_path, DUNE_API_KEY="", DUNE_API_URL="")
    assert first.returncode == 0, first.stderr
    fernet, jwt = (secrets / "fernet_key").read_text(), (secrets / "jwt_secret").read_text()
    assert len(fernet.strip()) == 44 and len(jwt.strip()) >= 48
    assert stat.S_IMODE((secrets / "fernet_key").stat().st_mode) == 0o600
    again = _run_init(script, tmp_path, DUNE_API_KEY="k", DUNE_API_URL="https://api.dune.com/api")
    assert again.returncode == 0, again.stderr
    assert (secrets / "fernet_key").read_text() == fernet and (secrets / "jwt_secret").read_text() == jwt
    assert (tmp_path / "calls").read_text().splitlines() == ["airflow db migrate", "airflow db migrate"]


def test_ports_bound_to_loopback_only(services: dict[str, Any]) -> None:
    published = []
    for name, service in services.items():
        for port in service.get("ports", []):
            published.append(str(port))
            assert str(port).startswith("127.0.0.1:"), f"{name} publishes {port!r} beyond loopback"
    assert published == ["127.0.0.1:8080:8080"]


def test_emulator_service(services: dict[str, Any]) -> None:
    emulator = services["dune-emulator"]
    argv = [*emulator["entrypoint"], *emulator["command"]]
    assert argv[:3] == ["python", "-m", "airflow_provider_dune.testing.emulator"]
    assert argv[argv.index("--host") + 1] == "0.0.0.0" and "--allow-remote" in argv
    assert "ports" not in emulator, "the emulator is reachable on the compose network only"
