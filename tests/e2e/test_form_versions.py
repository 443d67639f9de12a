"""The Dune connection form on the Airflow this suite runs with, served by a real web server and seen in Chromium.

Only what the form needs is started, once for the module, on loopback with a temporary ``AIRFLOW_HOME`` and
SQLite: ``airflow db migrate``, then ``airflow api-server`` (Airflow 3, the simple auth manager making everyone
admin) or ``airflow webserver`` (Airflow 2.11, Flask-AppBuilder with an admin created by
``airflow users create``). Run it with any matrix virtualenv, e.g.
``.venv-airflow-3.0.6-py3.11/bin/python -m pytest tests/e2e/test_form_versions.py -m e2e``.
"""

from __future__ import annotations

import os
import secrets
import subprocess
import sys
import time
import urllib.error
import urllib.request
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path

import pytest

from airflow_provider_dune.api.connection_fields import EXTRA_SETTINGS
from airflow_provider_dune.version_compat import AIRFLOW_V_3_0_PLUS, AIRFLOW_VERSION

from .browser import missing_browser
from .conftest import free_port, stop_process
from .form_checks import check_dune_form_in_browser, served_form_fields

pytestmark = pytest.mark.e2e

AIRFLOW_BIN = str(Path(sys.executable).parent / "airflow")
STARTUP_TIMEOUT = 120.0
#: The standard fields the Dune form hides; their default labels must not show.
HIDDEN = {"login": "Login", "port": "Port", "schema": "Schema"}


@dataclass(frozen=True)
class FormServer:
    """A running web server: its URL and, on Airflow 2.11, the admin's login."""

    base_url: str
    login: tuple[str, str] | None
    home: Path


def _env(home: Path, port: int) -> dict[str, str]:
    env = {k: v for k, v in os.environ.items() if not k.startswith(("AIRFLOW", "DUNE_"))}
    env.update(
        {
            "AIRFLOW_HOME": str(home),
            "AIRFLOW__CORE__DAGS_FOLDER": str(home / "dags"),
            "AIRFLOW__CORE__LOAD_EXAMPLES": "False",
            "AIRFLOW__DATABASE__SQL_ALCHEMY_CONN": f"sqlite:///{home / 'airflow.db'}",
        }
    )
    if AIRFLOW_V_3_0_PLUS:
        env.update(
            {
                "AIRFLOW__API__HOST": "127.0.0.1",
                "AIRFLOW__API__PORT": str(port),
                "AIRFLOW__API__BASE_URL": f"http://127.0.0.1:{port}",
                "AIRFLOW__API_AUTH__JWT_SECRET": secrets.token_hex(32),
                "AIRFLOW__CORE__SIMPLE_AUTH_MANAGER_ALL_ADMINS": "True",
            }
        )
    else:
        env.update(
            {
                "AIRFLOW__WEBSERVER__WEB_SERVER_HOST": "127.0.0.1",
                "AIRFLOW__WEBSERVER__WEB_SERVER_PORT": str(port),
                "AIRFLOW__WEBSERVER__BASE_URL": f"http://127.0.0.1:{port}",
                "AIRFLOW__WEBSERVER__SECRET_KEY": secrets.token_hex(16),
                "AIRFLOW__WEBSERVER__WORKERS": "1",
            }
        )
    return env


def _airflow(env: dict[str, str], *args: str, timeout: float = 240) -> None:
    result = subprocess.run(
        [AIRFLOW_BIN, *args], env=env, cwd=env["AIRFLOW_HOME"], capture_output=True, text=True, timeout=timeout
    )
    assert result.returncode == 0, f"airflow {args[0]} {args[1]} failed:\n{result.stderr[-3000:]}"


def _wait_ready(process: subprocess.Popen[bytes], url: str, log: Path) -> None:
    deadline = time.monotonic() + STARTUP_TIMEOUT
    while True:
        assert process.poll() is None, f"the web server exited with {process.returncode}; see {log}"
        try:
            with urllib.request.urlopen(url, timeout=5) as response:
                if response.status == 200:
                    return
        except (OSError, urllib.error.URLError):
            pass
        assert time.monotonic() < deadline, f"the web server did not answer {url} in {STARTUP_TIMEOUT:.0f}s; see {log}"
        time.sleep(0.5)


@pytest.fixture(scope="module")
def form_server(tmp_path_factory: pytest.TempPathFactory) -> Iterator[FormServer]:
    """The web server of this Airflow version on loopback, stopped (its whole process group) afterwards."""
    home = tmp_path_factory.mktemp("form_airflow_home")
    (home / "dags").mkdir()
    port = free_port()
    env = _env(home, port)
    base_url = f"http://127.0.0.1:{port}"
    _airflow(env, "db", "migrate")
    login = None
    if AIRFLOW_V_3_0_PLUS:
        command = ["api-server", "--host", "127.0.0.1", "--port", str(port), "--workers", "1"]
        health = base_url + "/api/v2/monitor/health"
    else:
        login = ("admin", secrets.token_urlsafe(12))
        _airflow(
            env, "users", "create", "--username", login[0], "--password", login[1], "--role", "Admin",
            "--email", "admin@example.invalid", "--firstname", "Form", "--lastname", "Check",
        )  # fmt: skip
        command = ["webserver", "--hostname", "127.0.0.1", "--port", str(port), "--workers", "1"]
        health = base_url + "/health"
    log = home / "web-server.log"
    with log.open("ab") as output:
        process = subprocess.Popen(
            [AIRFLOW_BIN, *command], env=env, cwd=home, stdout=output, stderr=subprocess.STDOUT, start_new_session=True
        )
    try:
        _wait_ready(process, health, log)
        yield FormServer(base_url, login, home)
    finally:
        stop_process(process)


def test_the_server_serves_every_dune_field(form_server: FormServer) -> None:
    """The API Key label, the hidden fields and one typed field per extra setting, as this version serves them."""
    fields = served_form_fields(form_server.base_url, None, AIRFLOW_VERSION, login=form_server.login)
    password, host = fields.get("password") or {}, fields.get("host") or {}
    assert password.get("label") == "API Key" and not password.get("hidden"), f"no API Key field: {fields}"
    assert host.get("label") == "API base URL (optional)", f"Host is not relabelled: {fields}"
    for name in HIDDEN:
        assert (fields.get(name) or {}).get("hidden"), f"{name} is not hidden: {fields}"
    extras = {name: field for name, field in fields.items() if field["extra"]}
    assert list(extras) == [setting.name for setting in EXTRA_SETTINGS]
    for setting in EXTRA_SETTINGS:
        field = extras[setting.name]
        assert field["label"] == setting.label, field
        assert field["description"] == setting.description, field
        # Airflow 2.11's form has text inputs for numbers (checked when saved); Airflow 3 serves the JSON type.
        expected = setting.kind if AIRFLOW_V_3_0_PLUS or setting.kind == "boolean" else "string"
        assert field["type"] == expected, (setting.name, field)


def test_chromium_shows_every_dune_field(form_server: FormServer) -> None:
    """Admin > Connections > Add, type Dune, Extra Fields opened: every setting's label and the API Key field."""
    reason = missing_browser()
    if reason and os.environ.get("DUNE_REQUIRE_BROWSER"):
        pytest.fail(f"DUNE_REQUIRE_BROWSER is set but {reason}")
    if reason:
        pytest.skip(f"the browser check needs Chromium: {reason}")
    labels = check_dune_form_in_browser(form_server.base_url, AIRFLOW_VERSION, login=form_server.login)
    print(f"\n[e2e] Airflow {AIRFLOW_VERSION}: Chromium shows {labels}")
    missing = [label for label in ["API Key", *(s.label for s in EXTRA_SETTINGS)] if label not in labels]
    assert not missing, f"not shown: {missing}; shown: {labels}"
    shown_hidden = [label for label in ("Password", *HIDDEN.values()) if label in labels]
    assert not shown_hidden, f"shown although the Dune form hides them: {shown_hidden}; shown: {labels}"
