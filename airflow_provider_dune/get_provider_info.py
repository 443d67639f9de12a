"""Provider metadata read by Airflow's ``ProvidersManager`` (``apache_airflow_provider`` entry point)."""

from __future__ import annotations

from typing import Any

from airflow_provider_dune import __version__
from airflow_provider_dune.hooks.connection_form import provider_info_connection_fields

_DUNE_URIS = {
    "schemes": ["dune"],
    "handler": "airflow_provider_dune.assets.sanitize_uri",
    "factory": "airflow_provider_dune.assets.create_asset",
    "to_openlineage_converter": "airflow_provider_dune.assets.convert_asset_to_openlineage",
}


def get_provider_info() -> dict[str, Any]:
    """Return the provider description Airflow uses to register hooks, connection types and links."""
    return {
        "package-name": "airflow-provider-dune",
        "name": "Dune",
        "description": "Run Dune (https://dune.com) query pipelines, queries and materialized-view refreshes, and "
        "wait for them in the triggerer.",
        "versions": [__version__],
        "integrations": [
            {
                "integration-name": "Dune",
                "external-doc-url": "https://docs.dune.com/api-reference/overview/introduction",
                "tags": ["service"],
            }
        ],
        "hooks": [
            {
                "integration-name": "Dune",
                "python-modules": ["airflow_provider_dune.hooks.dune"],
            }
        ],
        "operators": [
            {
                "integration-name": "Dune",
                "python-modules": [
                    "airflow_provider_dune.operators.base",
                    "airflow_provider_dune.operators.pipeline",
                    "airflow_provider_dune.operators.query",
                    "airflow_provider_dune.operators.sql",
                    "airflow_provider_dune.operators.definitions",
                    "airflow_provider_dune.operators.uploads",
                ],
            }
        ],
        "sensors": [
            {
                "integration-name": "Dune",
                "python-modules": ["airflow_provider_dune.sensors.pipeline", "airflow_provider_dune.sensors.execution"],
            }
        ],
        "triggers": [
            {
                "integration-name": "Dune",
                "python-modules": [
                    "airflow_provider_dune.triggers.pipeline",
                    "airflow_provider_dune.triggers.execution",
                    "airflow_provider_dune.triggers.materialized_view",
                ],
            }
        ],
        "extra-links": ["airflow_provider_dune.links.DuneQueryLink"],
        "task-decorators": [
            {"name": "dune_sql", "class-name": "airflow_provider_dune.decorators.dune_sql.dune_sql_task"}
        ],
        # dune://views/<name> and dune://queries/<id> (Airflow 3 reads asset-uris, Airflow 2.11 dataset-uris).
        "asset-uris": [_DUNE_URIS],
        "dataset-uris": [_DUNE_URIS],
        "config": {
            "dune": {
                "description": "Options of the Dune provider.",
                "options": {
                    "min_poll_interval": {
                        "description": "Shortest poll_interval (operators) or poke_interval (sensors), in seconds, "
                        "that a Dune task may use; a DAG asking for less fails when it is parsed. Polling faster "
                        "spends the API key's rate budget without noticing the end of a run sooner.",
                        "version_added": "0.2.0",
                        "type": "float",
                        "example": "5",
                        "default": "1",
                    },
                    "budget_share": {
                        "description": "Share (more than 0, at most 1) of each API key's reads_per_minute and "
                        "writes_per_minute (connection extras) that this process paces its requests to. Unset "
                        "(the default), the processes running Dune triggers with a key share its budget evenly "
                        "among themselves (leases in an Airflow Variable per key) and other processes use the "
                        "whole budget; set, this share applies and no lease is taken.",
                        "version_added": "0.2.0",
                        "type": "float",
                        "example": "0.5",
                        "default": None,
                    },
                },
            }
        },
        "connection-types": [
            {
                "connection-type": "dune",
                "hook-class-name": "airflow_provider_dune.hooks.dune.DuneHook",
                "hook-name": "Dune",
                **provider_info_connection_fields(),
            }
        ],
    }
