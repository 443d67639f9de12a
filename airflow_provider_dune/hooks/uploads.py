"""The part of :class:`~airflow_provider_dune.hooks.dune.DuneHook` for uploaded tables: create, insert, clear,
delete."""

from __future__ import annotations

from collections.abc import Callable
from typing import Any

from airflow_provider_dune.api import endpoints
from airflow_provider_dune.api.definitions import TableDefinition
from airflow_provider_dune.api.models import parse_rows_written, parse_table_created
from airflow_provider_dune.utils.uploads import Chunk


class DuneUploadsMixin:
    """Uploaded tables; mixed into ``DuneHook`` (which provides ``run`` and ``_start``)."""

    run: Callable[..., Any]
    _start: Callable[..., Any]

    def create_table(self, table: TableDefinition) -> dict[str, Any]:
        """Create an uploaded table (billed: 10 credits); an existing one is reported (``already_existed``)."""
        created: dict[str, Any] = self._start(endpoints.create_table(table), parse_table_created)
        return created

    def insert_rows(self, namespace: str, table_name: str, chunk: Chunk) -> int:
        """Append one chunk of rows; returns the rows Dune says it wrote. Never resent after a lost answer."""
        request = endpoints.insert_rows(namespace, table_name, chunk.content, chunk.content_type)
        written: int = self._start(request, parse_rows_written)
        return written

    def clear_table(self, namespace: str, table_name: str) -> None:
        """Delete every row of an uploaded table (the table and its schema stay)."""
        self.run(endpoints.clear_table(namespace, table_name))

    def delete_table(self, namespace: str, table_name: str) -> None:
        """Drop an uploaded table."""
        self.run(endpoints.delete_table(namespace, table_name))
