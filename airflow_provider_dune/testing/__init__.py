"""Test helpers for the Dune provider: a local Dune API emulator and its pytest plugin.

Nothing here imports Airflow. See :mod:`airflow_provider_dune.testing.emulator` for the emulator, and
``pytest_plugins = ["airflow_provider_dune.testing.pytest_plugin"]`` for the ``dune_emulator`` fixtures.
The names below are imported lazily, so ``python -m airflow_provider_dune.testing.emulator`` runs cleanly.
"""

from __future__ import annotations

import importlib
from typing import TYPE_CHECKING, Any

if TYPE_CHECKING:
    from airflow_provider_dune.testing._state import ENDPOINTS, RecordedRequest
    from airflow_provider_dune.testing.emulator import (
        DuneEmulator,
        DuneEmulatorClient,
        DuneEmulatorClientError,
    )
    from airflow_provider_dune.testing.faults import Fault

__all__ = [
    "ENDPOINTS",
    "DuneEmulator",
    "DuneEmulatorClient",
    "DuneEmulatorClientError",
    "Fault",
    "RecordedRequest",
]

_LOCATIONS = {
    "ENDPOINTS": "_state",
    "RecordedRequest": "_state",
    "DuneEmulator": "emulator",
    "DuneEmulatorClient": "emulator",
    "DuneEmulatorClientError": "emulator",
    "Fault": "faults",
}


def __getattr__(name: str) -> Any:
    if name in _LOCATIONS:
        module = importlib.import_module(f"{__name__}.{_LOCATIONS[name]}")
        return getattr(module, name)
    raise AttributeError(f"module {__name__!r} has no attribute {name!r}")
