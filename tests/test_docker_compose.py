"""Static checks of docker-compose.yaml (no Docker needed): services, pinned images, connection, ports."""

from __future__ import annotations

import json
import re
from pathlib import Path
from typing import Any

import pytest
import yaml

from airflow_provider_dune.api.connection import settings_from_connection

COMPOSE_FILE = Path(__file__).resolve().parent.parent / "docker-compose.yaml"
AIRFLOW_SERVICES = ("airflow-init", "api-server", "scheduler", "dag-processor", "triggerer")
_VAR = re.compile(r"\$\{(?P<name>[A-Za-z_][A-Za-z0-9_]*)(?::-(?P<default>[^}]*))?\}")


def substitute(value: str, env: dict[str, str] | None = None) -> str:
    """Compose-style ``${VAR:-default}`` substitution (``$$`` escapes a dollar)."""
    env = env or {}
    value = _VAR.sub(lambda m: env.get(m["name"]) or (m["default"] or ""), value)
    return value.replace("$$", "$")


@pytest.fixture(scope="module")
def compose() -> dict[str, Any]:
    return yaml.safe_load(COMPOSE_FILE.read_text())


@pytest.fixture(scope="module")
def services(compose: dict[str, Any]) -> dict[str, Any]:
    return compose["services"]


def test_all_services_present(services):
    for name in ("postgres", "dune-emulator", *AIRFLOW_SERVICES):
        assert name in services, f"missing service {name}"


@pytest.mark.parametrize("name", ["postgres", "dune-emulator", *AIRFLOW_SERVICES])
def test_images_pinned_to_exact_tags(services, name):
    image = substitute(services[name]["image"])
    repository, _, tag = image.rpartition(":")
    assert repository and tag, f"{name}: image {image!r} has no tag"
    assert tag != "latest"
    assert re.match(r"^\d+\.\d+(\.\d+)?(-[\w.]+)?$", tag), f"{name}: tag {tag!r} is not an exact version"


def test_airflow_image_is_airflow_3(services):
    for name in (*AIRFLOW_SERVICES, "dune-emulator"):
        image = substitute(services[name]["image"])
        assert image.startswith("apache/airflow:3."), f"{name}: {image}"
    assert len({services[name]["image"] for name in (*AIRFLOW_SERVICES, "dune-emulator")}) == 1


@pytest.mark.parametrize("name", AIRFLOW_SERVICES)
def test_connection_points_at_emulator_by_default(services, name):
    env = services[name]["environment"]
    conn = json.loads(substitute(env["AIRFLOW_CONN_DUNE_DEFAULT"]))
    assert conn["conn_type"] == "dune"
    assert conn["host"] == "http://dune-emulator:8765/api"
    assert conn["extra"]["allow_insecure_http"] is True
    # The emulator's key and the connection's default key agree.
    command = services["dune-emulator"]["command"]
    assert command[command.index("--api-key") + 1] == conn["password"]
    # The hook accepts it (plain http to a non-loopback host needs allow_insecure_http).
    settings = settings_from_connection(
        "dune_default", host=conn["host"], password=conn["password"], port=None, extra=conn["extra"]
    )
    assert settings.base_url == "http://dune-emulator:8765/api"


def test_connection_points_at_dune_when_configured(services):
    env = services["triggerer"]["environment"]
    overrides = {"DUNE_API_URL": "https://api.dune.com/api", "DUNE_API_KEY": "real-key"}
    conn = json.loads(substitute(env["AIRFLOW_CONN_DUNE_DEFAULT"], overrides))
    assert conn["host"] == "https://api.dune.com/api"
    assert conn["password"] == "real-key"


def test_emulator_service(services):
    emulator = services["dune-emulator"]
    argv = [*emulator["entrypoint"], *emulator["command"]]
    assert argv[:3] == ["python", "-m", "airflow_provider_dune.testing.emulator"]
    assert argv[argv.index("--host") + 1] == "0.0.0.0"
    assert "--allow-remote" in argv
    assert argv[argv.index("--port") + 1] == "8765"
    assert "ports" not in emulator, "the emulator is reachable on the compose network only"
    assert "healthcheck" in emulator


def test_provider_installed_from_repo_and_dags_mounted(services):
    for name in AIRFLOW_SERVICES:
        service = services[name]
        assert "/opt/provider" in service["environment"]["_PIP_ADDITIONAL_REQUIREMENTS"]
        volumes = service["volumes"]
        assert "./:/opt/provider" in volumes
        assert "./example_dags:/opt/airflow/dags" in volumes
        depends = service["depends_on"]
        assert depends["postgres"]["condition"] == "service_healthy"
        assert depends["dune-emulator"]["condition"] == "service_healthy"


def test_services_run_the_right_commands(services):
    assert services["api-server"]["command"] == "api-server"
    assert services["scheduler"]["command"] == "scheduler"
    assert services["dag-processor"]["command"] == "dag-processor"
    assert services["triggerer"]["command"] == "triggerer"
    assert services["airflow-init"]["environment"]["_AIRFLOW_DB_MIGRATE"] == "true"
    for name in ("api-server", "scheduler", "dag-processor", "triggerer"):
        assert services[name]["depends_on"]["airflow-init"]["condition"] == "service_completed_successfully"


def test_ports_bound_to_loopback_only(services):
    published = []
    for name, service in services.items():
        for port in service.get("ports", []):
            spec = port if isinstance(port, str) else f"{port.get('host_ip', '')}:{port.get('published')}"
            published.append(spec)
            assert spec.startswith("127.0.0.1:"), f"{name} publishes {spec!r} beyond loopback"
    assert "127.0.0.1:8080:8080" in published


def test_execution_api_url_names_the_api_server(services):
    env = services["scheduler"]["environment"]
    assert env["AIRFLOW__CORE__EXECUTION_API_SERVER_URL"] == "http://api-server:8080/execution/"
    assert env["AIRFLOW__CORE__EXECUTOR"] == "LocalExecutor"
