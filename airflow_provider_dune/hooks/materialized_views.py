"""The part of :class:`~airflow_provider_dune.hooks.dune.DuneHook` that manages materialized views as code: upsert
and delete. Refreshing and describing a view live with the other runs in ``hooks/dune.py``."""

from __future__ import annotations

from collections.abc import Callable
from typing import Any

from airflow_provider_dune.api import endpoints
from airflow_provider_dune.api.definitions import MaterializedViewDefinition
from airflow_provider_dune.api.models import (
    MaterializedViewUpsert,
    parse_materialized_view_deleted,
    parse_materialized_view_upsert,
)


class DuneMaterializedViewsMixin:
    """Views as code; mixed into ``DuneHook`` (which provides ``run`` and ``_start``)."""

    run: Callable[..., Any]
    _start: Callable[..., Any]

    def upsert_materialized_view(self, definition: MaterializedViewDefinition) -> MaterializedViewUpsert:
        """Create or change a view. Dune refreshes it right away, which is billed: compare before calling."""
        upsert: MaterializedViewUpsert = self._start(
            endpoints.upsert_materialized_view(definition), parse_materialized_view_upsert
        )
        return upsert

    def delete_materialized_view(self, name: str) -> str:
        """Drop a view; returns Dune's message."""
        return parse_materialized_view_deleted(self.run(endpoints.delete_materialized_view(name)), name)
