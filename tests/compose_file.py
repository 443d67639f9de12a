"""Reading docker-compose.yaml: what its Airflow services run, with which settings.

The production-shaped end-to-end stack starts its processes from these, so the compose file and the tested
stack cannot drift apart.
"""

from __future__ import annotations

import re
import shlex
from pathlib import Path
from typing import Any

import yaml

COMPOSE_FILE = Path(__file__).resolve().parent.parent / "docker-compose.yaml"
#: The compose services that run an Airflow component (``airflow <command>``).
AIRFLOW_SERVICES = ("api-server", "scheduler", "dag-processor", "triggerer", "airflow-worker")
_VAR = re.compile(r"\$\$|\$\{(?P<name>[A-Za-z_][A-Za-z0-9_]*)(?::-(?P<default>[^}]*))?\}")


def substitute(value: str, env: dict[str, str] | None = None) -> str:
    """Compose-style ``${VAR:-default}`` substitution (``$$`` escapes a dollar)."""
    env = env or {}

    def replace(match: re.Match[str]) -> str:
        if match[0] == "$$":
            return "$"
        return env.get(match["name"]) or (match["default"] or "")

    return _VAR.sub(replace, value)


def load_compose(path: Path = COMPOSE_FILE) -> dict[str, Any]:
    compose: dict[str, Any] = yaml.safe_load(path.read_text())
    return compose


def airflow_environment(compose: dict[str, Any], env: dict[str, str] | None = None) -> dict[str, str]:
    """The environment every Airflow service shares, substituted with ``env`` (defaults otherwise)."""
    common = compose["x-airflow-common"]["environment"]
    return {key: substitute(str(value), env) for key, value in common.items()}


def service_command(compose: dict[str, Any], service: str) -> list[str]:
    """The arguments a service passes to ``airflow`` (the image's entrypoint)."""
    command = compose["services"][service]["command"]
    return shlex.split(command) if isinstance(command, str) else [str(part) for part in command]
