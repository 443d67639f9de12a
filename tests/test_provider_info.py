from __future__ import annotations

import importlib
import json
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


def test_each_declared_field_name_is_read_by_the_connection_parser() -> None:
    """A form that saves every field (numbers as numbers, blanks as null) yields the settings it shows."""
    extra = {"timeout": 12.5, "connect_timeout": None, "max_retries": 3, "retry_min_wait": "", "retry_max_wait": 9}
    extra["allow_insecure_http"] = True
    settings = settings_from_connection("c", host="http://10.1.2.3:8765", password="k", port=None, extra=extra)
    assert (settings.timeout, settings.connect_timeout) == (12.5, 10.0)
    assert (settings.retry.max_attempts, settings.retry.min_wait, settings.retry.max_wait) == (3, 1.0, 9.0)
    assert settings.base_url == "http://10.1.2.3:8765/api"


@pytest.mark.skipif(not AIRFLOW_V_3_0_PLUS, reason="the hook metadata endpoint of the REST API is Airflow 3's")
def test_hook_metadata_the_api_server_serves_describes_the_dune_form() -> None:
    from airflow.api_fastapi.core_api.services.ui.connections import HookMetaService

    (dune,) = [meta for meta in HookMetaService.hook_meta_data() if meta.connection_type == "dune"]
    fields = dune.standard_fields
    assert fields is not None
    assert fields.password is not None and fields.password.title == "API Key"
    assert fields.host is not None and fields.host.placeholder == "https://api.dune.com/api"
    assert all(f is not None and f.hidden for f in (fields.login, fields.port, fields.url_schema))
    extra_fields = dune.extra_fields or {}
    types = {name: field["schema"]["type"][0] for name, field in extra_fields.items()}
    assert types == {setting.name: setting.kind for setting in EXTRA_SETTINGS}
