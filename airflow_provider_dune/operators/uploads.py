"""Load data into a Dune uploaded table: from a CSV/NDJSON file (local or object storage) or an Airflow SQL query."""

from __future__ import annotations

import json
from collections.abc import Iterator, Sequence
from typing import TYPE_CHECKING, Any

from airflow_provider_dune.api.definitions import TableDefinition
from airflow_provider_dune.api.errors import DuneConfigurationError, DuneNotFoundError
from airflow_provider_dune.hooks.dune import DuneHook
from airflow_provider_dune.utils.log_safety import quiet_debug_lines_that_echo_secrets
from airflow_provider_dune.utils.storage import storage_file
from airflow_provider_dune.utils.uploads import DEFAULT_CHUNK_BYTES, Chunk, csv_chunks, ndjson_chunks
from airflow_provider_dune.version_compat import BaseHook, BaseOperator

if TYPE_CHECKING:
    from airflow.sdk import Context

MODES = ("replace", "append")
SQL_FETCH_ROWS = 10_000


class DuneUploadOperator(BaseOperator):
    """Load rows into ``dune.<namespace>.<table_name>``, creating the table if needed; returns row counts.

    Rows are streamed in chunks of at most ``chunk_bytes`` from ``source`` (a ``.csv`` with a header line or a
    ``.jsonl``/``.ndjson`` file, local or an object-storage URL) or from ``sql`` run on ``sql_conn_id`` (any
    Airflow connection whose hook has a DB-API cursor), so the data is never held in memory whole.

    **Retries.** ``mode="replace"`` (the default) clears the table before inserting, so a retried task ends with
    the data once, not twice. ``mode="append"`` only inserts: a try that failed after some chunks were accepted
    leaves them, and a retry adds them again; use it for sources that are new rows only, with retries off or
    deduplication downstream. An insert whose answer was lost is never resent: the task fails and says so.

    :param namespace: your Dune namespace (team or user name).
    :param table_name: the table's name (lower case, digits, ``_``).
    :param schema: ``[{"name": "day", "type": "date"}, {"name": "volume", "type": "double"}, ...]``.
    :param source: file path or object-storage URL (templated).
    :param sql: a query whose rows to load (templated), with ``sql_conn_id``.
    :param sql_conn_id: the Airflow connection to run ``sql`` on.
    :param mode: ``replace`` or ``append``.
    :param chunk_bytes: largest insert request.
    :param description: table description on dune.com.
    :param is_private: visible to the owning team only.
    """

    template_fields: Sequence[str] = ("dune_conn_id", "source", "sql")
    template_fields_renderers = {"sql": "sql"}
    ui_color = "#ffe0b2"

    def __init__(
        self,
        *,
        namespace: str,
        table_name: str,
        schema: Sequence[dict[str, Any]],
        source: str | None = None,
        sql: str | None = None,
        sql_conn_id: str | None = None,
        mode: str = "replace",
        chunk_bytes: int = DEFAULT_CHUNK_BYTES,
        description: str = "",
        is_private: bool = False,
        dune_conn_id: str = DuneHook.default_conn_name,
        **kwargs: Any,
    ) -> None:
        super().__init__(**kwargs)
        self.table = TableDefinition.build(
            namespace=namespace, table_name=table_name, schema=schema, description=description, is_private=is_private
        )
        if (source is None) == (sql is None):
            raise DuneConfigurationError("give exactly one of source (a CSV/NDJSON file) or sql (with sql_conn_id)")
        if sql is not None and not sql_conn_id:
            raise DuneConfigurationError("sql needs sql_conn_id, the Airflow connection to run it on")
        if mode not in MODES:
            raise DuneConfigurationError(f"mode must be one of {', '.join(MODES)}, got {mode!r}")
        self.source = source
        self.sql = sql
        self.sql_conn_id = sql_conn_id
        self.mode = mode
        self.chunk_bytes = chunk_bytes
        self.dune_conn_id = dune_conn_id

    def _create(self, hook: DuneHook) -> None:
        """Create the table (Dune bills each creation, so only when it does not exist)."""
        created = hook.create_table(self.table)
        self.log.info("Created table %s (%s)", self.table.full_name, created.get("message") or "created")

    def chunks(self) -> Iterator[Chunk]:
        """The rows to send, chunked; format errors surface before the chunk that holds them is sent."""
        columns = self.table.column_names
        if self.source is not None:
            source = storage_file(self.source)
            lowered = self.source.lower()
            if not source.exists():
                raise DuneConfigurationError(f"source {self.source!r} does not exist")
            with source.open_text("r") as handle:
                lines = iter(handle.readline, "")  # Airflow 2.11's file wrapper is not iterable itself
                if lowered.endswith(".csv"):
                    yield from csv_chunks(lines, self.chunk_bytes, columns)
                elif lowered.endswith((".jsonl", ".ndjson", ".json")):
                    yield from ndjson_chunks(lines, self.chunk_bytes, columns)
                else:
                    raise DuneConfigurationError(f"source {self.source!r} must be a .csv or .jsonl/.ndjson file")
            return
        yield from ndjson_chunks(self._sql_rows(), self.chunk_bytes, columns)

    def _sql_rows(self) -> Iterator[dict[str, Any]]:
        quiet_debug_lines_that_echo_secrets()  # that connection's password too, on Airflow 3.0's dags test
        hook = BaseHook.get_connection(str(self.sql_conn_id)).get_hook()
        with hook.get_conn() as conn:
            cursor = conn.cursor()
            try:
                cursor.execute(self.sql)
                names = [column[0] for column in cursor.description or ()]
                while batch := cursor.fetchmany(SQL_FETCH_ROWS):
                    for row in batch:
                        yield {name: _plain(value) for name, value in zip(names, row, strict=True)}
            finally:
                cursor.close()

    def execute(self, context: Context) -> dict[str, Any]:
        table = self.table
        sent = written = count = 0
        with DuneHook(self.dune_conn_id) as hook:
            exists = True
            if self.mode == "replace":
                try:
                    hook.clear_table(table.namespace, table.table_name)
                    self.log.info("Cleared %s (mode=replace: a retry loads the data once, not twice)", table.full_name)
                except DuneNotFoundError:
                    exists = False
            for chunk in self.chunks():
                if not exists:
                    self._create(hook)
                    exists = True
                try:
                    accepted = hook.insert_rows(table.namespace, table.table_name, chunk)
                except DuneNotFoundError:  # append to a table that is not there yet: nothing was inserted
                    self._create(hook)
                    accepted = hook.insert_rows(table.namespace, table.table_name, chunk)
                count += 1
                sent += chunk.rows
                written += accepted
                self.log.info("Chunk %d: %d row(s) sent, %d written (%d so far)", count, chunk.rows, accepted, written)
        summary = {
            "table": table.full_name,
            "mode": self.mode,
            "chunks": count,
            "rows_sent": sent,
            "rows_written": written,
        }
        if written != sent:
            raise DuneConfigurationError(
                f"Dune wrote {written} of the {sent} rows sent to {table.full_name}: check the rows against the "
                f"table's schema ({json.dumps(table.to_request()['schema'])})"
            )
        return summary


def _plain(value: Any) -> Any:
    """A JSON-friendly cell: dates and decimals become strings."""
    if value is None or isinstance(value, (bool, int, float, str)):
        return value
    return str(value)
