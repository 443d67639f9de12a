from __future__ import annotations

import importlib
import json
from importlib.metadata import entry_points
from pathlib import Path

import airflow
import jsonschema

from airflow_provider_dune.get_provider_info import get_provider_info


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
