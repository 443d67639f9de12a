from __future__ import annotations

import importlib
import json
import subprocess
import sys
from importlib.metadata import entry_points
from pathlib import Path

import airflow
import jsonschema
import pytest

from airflow_provider_dune.api.connection import settings_from_connection
from airflow_provider_dune.api.connection_fields import EXTRA_SETTINGS
from airflow_provider_dune.get_provider_info import get_provider_info
from airflow_provider_dune.version_compat import AIRFLOW_V_3_0_PLUS


def test_provider_info_validates_against_airflows_schema() -> None:
    schema_path = Path(airflow.__file__).parent / "provider_info.schema.json"
    schema = json.loads(schema_path.read_text())
    jsonschema.validate(get_provider_info(), schema)


def test_entry_point_is_registered() -> None:
    points = [ep for ep in entry_points(group="apache_airflow_provider") if ep.name == "provider_info"]
    targets = {ep.value for ep in points}
    assert "airflow_provider_dune.get_provider_info:get_provider_info" in targets


def test_every_referenced_class_and_module_imports() -> None:
    info = get_provider_info()
    modules = [
        m
        for section in ("hooks", "operators", "sensors", "triggers")
        for e in info.get(section, [])
        for m in e["python-modules"]
    ]
    for module in modules:
        importlib.import_module(module)
    class_paths = [c["hook-class-name"] for c in info["connection-types"]] + info.get("extra-links", [])
    for path in class_paths:
        module_name, _, class_name = path.rpartition(".")
        assert hasattr(importlib.import_module(module_name), class_name), path


def test_airflow_providers_manager_registers_the_dune_connection_type() -> None:
    from airflow.providers_manager import ProvidersManager

    manager = ProvidersManager()
    assert "airflow-provider-dune" in manager.providers
    hooks = manager.hooks  # the task-SDK variant does not exist on Airflow 2.11
    assert "dune" in hooks
    hook_info = hooks["dune"]
    assert hook_info is not None
    assert hook_info.hook_class_name == "airflow_provider_dune.hooks.dune.DuneHook"


def test_ui_field_behaviour_validates_against_airflows_schema() -> None:
    from airflow_provider_dune.hooks.dune import DuneHook

    schema_path = Path(airflow.__file__).parent / "customized_form_field_behaviours.schema.json"
    behaviour = DuneHook.get_ui_field_behaviour()
    jsonschema.validate(behaviour, json.loads(schema_path.read_text()))
    assert behaviour["relabeling"]["password"] == "API Key"
    assert "password" not in behaviour["hidden_fields"]


def test_the_form_airflow_builds_relabels_the_key_and_hides_unused_fields() -> None:
    """What the connection form gets on this Airflow: from the provider info on 3.2+, from the hook before."""
    from airflow.providers_manager import ProvidersManager

    behaviour = ProvidersManager().field_behaviours.get("dune")
    assert behaviour is not None, "Airflow registered no form behaviour for the dune connection type"
    assert behaviour["relabeling"] == {"password": "API Key", "host": "API base URL (optional)"}
    assert set(behaviour["hidden_fields"]) == {"schema", "login", "port"}
    assert behaviour["placeholders"]["host"] == "https://api.dune.com/api"


def test_the_form_has_one_field_per_extra_setting_the_parser_reads() -> None:
    from airflow.providers_manager import ProvidersManager

    widgets = {
        info.field_name: info
        for key, info in ProvidersManager().connection_form_widgets.items()
        if key.startswith("extra__dune__")
    }
    assert list(widgets) == [setting.name for setting in EXTRA_SETTINGS]
    assert not any(info.is_sensitive for info in widgets.values())


class _TypedData(dict):
    """What a browser posts, as WTForms reads it (``getlist``)."""

    def getlist(self, key: str) -> list[str]:
        return [self[key]] if key in self else []


def test_the_hook_form_checks_what_is_typed_into_it() -> None:
    """Airflow 2.11's web server validates the hook's form: numbers are text fields checked as numbers."""
    from wtforms import Form

    from airflow_provider_dune.hooks.dune import DuneHook

    form_class = type("DuneForm", (Form,), dict(DuneHook.get_connection_form_widgets()))

    def errors(**typed: str) -> set[str]:
        form = form_class(formdata=_TypedData(typed))
        form.validate()
        return set(form.errors)

    assert errors() == set()
    assert errors(timeout="2.5", connect_timeout="0.1", max_retries="3", reads_per_minute="0") == set()
    assert errors(timeout="abc", connect_timeout="0", retry_min_wait="-1", max_retries="0", reads_per_minute="x") == {
        "timeout",
        "connect_timeout",
        "retry_min_wait",
        "max_retries",
        "reads_per_minute",
    }


def test_each_declared_field_name_is_read_by_the_connection_parser() -> None:
    """A form that saves every field (numbers as numbers, blanks as null) yields the settings it shows."""
    extra = {"timeout": 12.5, "connect_timeout": None, "max_retries": 3, "retry_min_wait": "", "retry_max_wait": 9}
    extra["allow_insecure_http"] = True
    settings = settings_from_connection("c", host="http://10.1.2.3:8765", password="k", port=None, extra=extra)
    assert (settings.timeout, settings.connect_timeout) == (12.5, 10.0)
    assert (settings.retry.max_attempts, settings.retry.min_wait, settings.retry.max_wait) == (3, 1.0, 9.0)
    assert settings.base_url == "http://10.1.2.3:8765/api"


#: What a fresh api-server process answers on /ui/connections/hook_meta for the dune type, as JSON on stdout.
#: Its own process: Airflow 3.1 builds the answer from whatever hooks the process imported before (this test
#: process has imported them without the api-server's wtforms stand-ins), and caches it.
_HOOK_META_SCRIPT = """
import json
from airflow.api_fastapi.core_api.services.ui.connections import HookMetaService
print(json.dumps([m.model_dump(mode="json") for m in HookMetaService.hook_meta_data() if m.connection_type == "dune"]))
"""


@pytest.mark.slow
@pytest.mark.skipif(not AIRFLOW_V_3_0_PLUS, reason="the hook metadata endpoint of the REST API is Airflow 3's")
def test_hook_metadata_the_api_server_serves_describes_the_dune_form() -> None:
    """The API Key label, hidden unused fields and one field per extra setting with its label, JSON type and
    description: on Airflow 3.0/3.1 from the hook's form, on 3.2+ from the provider info."""
    result = subprocess.run(
        [sys.executable, "-c", _HOOK_META_SCRIPT], capture_output=True, text=True, timeout=120, check=False
    )
    assert result.returncode == 0, result.stderr[-3000:]
    (dune,) = json.loads(result.stdout.strip().splitlines()[-1])
    fields = dune["standard_fields"]
    assert fields is not None, "no standard field behaviour is served for the dune type"
    assert fields["password"]["title"] == "API Key" and not fields["password"]["hidden"]
    assert fields["host"]["placeholder"] == "https://api.dune.com/api"
    assert all(fields[name] is not None and fields[name]["hidden"] for name in ("login", "port", "url_schema"))
    extra_fields = dune["extra_fields"] or {}
    assert list(extra_fields) == [setting.name for setting in EXTRA_SETTINGS]
    for setting in EXTRA_SETTINGS:
        field = extra_fields[setting.name]
        assert field["schema"]["type"] == [setting.kind, "null"], (setting.name, field)
        assert field["schema"]["title"] == setting.label, (setting.name, field)
        assert field["description"] == setting.description, (setting.name, field)
        assert field["value"] is None, "no default is stored into the extra by the form"
        if "minimum" in field["schema"]:
            assert field["schema"]["minimum"] == setting.minimum, (setting.name, field)
