"""Load data into a Dune uploaded table: from a CSV/NDJSON file (local or object storage) or an Airflow SQL query."""

from __future__ import annotations

import json
from collections.abc import Iterator, Mapping, Sequence
from contextlib import AbstractContextManager, contextmanager, nullcontext
from typing import TYPE_CHECKING, Any

from airflow.exceptions import AirflowException

from airflow_provider_dune.api.definitions import TableDefinition
from airflow_provider_dune.api.errors import DuneAPIError, DuneConfigurationError, DuneNotFoundError
from airflow_provider_dune.hooks.dune import DuneHook
from airflow_provider_dune.utils.log_safety import quiet_debug_lines_that_echo_secrets
from airflow_provider_dune.utils.storage import storage_file
from airflow_provider_dune.utils.task_records import TaskRecord, TaskRecordUnavailable, try_number
from airflow_provider_dune.utils.unconfirmed import fail_when_unconfirmed
from airflow_provider_dune.utils.uploads import (
    DEFAULT_CHUNK_BYTES,
    Chunk,
    ChunkSpool,
    RowSchema,
    csv_chunks,
    ndjson_chunks,
    text_lines,
)
from airflow_provider_dune.version_compat import AirflowFailException, BaseHook, BaseOperator

if TYPE_CHECKING:
    from airflow.sdk import Context

MODES = ("replace", "append")
SQL_FETCH_ROWS = 10_000
#: Refusals of an insert that a retry of the same rows would get again (bad request, too large, bad type).
REFUSED_STATUSES = frozenset({400, 409, 413, 415, 422})
#: Where an append keeps the chunks Dune confirmed, so that a retry resumes after them.
UPLOAD_RECORD = TaskRecord(
    "airflow_provider_dune_upload",
    "airflow_provider_dune_upload_",
    what="the chunks this task instance appended",
    description="Chunks of an append upload Dune confirmed; lets a retry resume after them (deleted when done).",
)
#: The package that reads each object-storage scheme, for the error when it is missing.


class DuneUploadOperator(BaseOperator):
    """Load rows into ``dune.<namespace>.<table_name>``, creating the table if needed; returns row counts.

    Rows come from ``source`` (a ``.csv`` with a header line or a ``.jsonl``/``.ndjson`` file, UTF-8 with or
    without a byte-order mark, local or an object-storage URL) or from ``sql`` run on ``sql_conn_id`` (any
    Airflow connection whose hook has a DB-API cursor), and are sent in chunks of at most ``chunk_bytes``.

    **The whole input is checked before anything is cleared or sent.** Every row is read once, checked against
    ``schema`` (its columns, and the values Dune refuses: numbers, booleans, NULLs in columns that are not
    nullable) and encoded into a temporary file (deleted at the end; the worker's disk needs room for the
    encoded input); memory stays bounded by ``chunk_bytes``. A bad row fails the task without retries, naming its
    line (CSV counts the header as line 1), and leaves the table as it was. No line or row may be longer than
    ``chunk_bytes``: it must fit in one insert request.

    **Replace** (``mode="replace"``, the default) clears the table, then inserts the chunks. Dune's API cannot
    replace a table's rows atomically: it has create, clear, insert and delete for uploaded tables but no rename,
    swap or transaction, so rows loaded into a staging table could only reach this one by clearing it and
    inserting them again. If a try fails mid-way (Dune refuses a chunk, the connection fails), the table holds
    the input's first chunks only, until a try succeeds: a retry clears it and loads the whole input again, which
    is safe in this mode, even when an insert's answer was lost.

    **Append** (``mode="append"``) only inserts, and records each chunk Dune confirmed for the task instance (see
    :mod:`~airflow_provider_dune.utils.task_records`). A retry resumes after the confirmed chunks, when the input
    still starts with them; if it changed there, the task fails rather than append on top. An insert whose answer
    was lost fails the task without retries: its rows may be in the table, and only you can check
    (dune.com); the message names the chunks confirmed. A chunk Dune refused was not written: a refusal that
    would repeat (a bad value, 4xx) fails without retries; a rate limit or an outage before Dune processed it
    keeps Airflow's retries, and the retry resumes with it.

    :param namespace: your Dune namespace (team or user name).
    :param table_name: the table's name (lower case, digits, ``_``).
    :param schema: ``[{"name": "day", "type": "date"}, {"name": "volume", "type": "double"}, ...]``.
    :param source: file path or object-storage URL (templated).
    :param sql: a query whose rows to load (templated), with ``sql_conn_id``.
    :param sql_conn_id: the Airflow connection to run ``sql`` on.
    :param mode: ``replace`` or ``append``.
    :param chunk_bytes: largest insert request, and the longest line or row a source may have.
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
        if source is not None:
            _check_source(source)
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

    # -- reading and checking the input ----------------------------------------------------------------------

    def chunks(self) -> Iterator[Chunk]:
        """The rows to send, checked and chunked; a bad row raises before the chunk that holds it is yielded."""
        schema = RowSchema(self.table.columns)
        if self.source is None:
            yield from ndjson_chunks(self._sql_rows(), self.chunk_bytes, schema=schema, unit="row")
            return
        location = _check_source(self.source)
        lowered = location.lower()
        if not lowered.endswith((".csv", ".jsonl", ".ndjson", ".json")):
            raise DuneConfigurationError(f"source {location!r} must be a .csv or .jsonl/.ndjson file")
        with _reading(location):
            source = storage_file(location)
            if not source.exists():
                raise DuneConfigurationError(f"source {location!r} does not exist")
            with source.open_text("r") as handle:
                # Read the bytes under the text layer: decoding errors then know their line.
                binary = getattr(handle, "buffer", None)
                lines = text_lines(binary.read if binary is not None else handle.read, self.chunk_bytes)
                if lowered.endswith(".csv"):
                    yield from csv_chunks(lines, self.chunk_bytes, schema=schema)
                else:
                    yield from ndjson_chunks(lines, self.chunk_bytes, schema=schema)

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

    @contextmanager
    def _checked_input(self) -> Iterator[ChunkSpool]:
        """Every row read, checked and encoded into a temporary file, before anything is sent."""
        with ChunkSpool() as spool:
            for chunk in self.chunks():
                spool.add(chunk)
            self.log.info(
                "Read and checked %d row(s): %d chunk(s) of at most %d bytes", spool.rows, len(spool), self.chunk_bytes
            )
            yield spool

    def _where(self, first: int, last: int) -> str:
        if self.source is None:
            return f"rows {first}-{last} of the query's result"
        return f"source lines {first}-{last}"

    def _describe(self, spool: ChunkSpool, index: int) -> str:
        """``chunk 3 (source lines 62-91, 30 rows)`` for the ``index``-th chunk (0-based)."""
        entry = spool.entries[index]
        return f"chunk {index + 1} ({self._where(entry.first_line, entry.last_line)}, {entry.rows} rows)"

    def _describe_confirmed(self, spool: ChunkSpool, count: int) -> str:
        if not count:
            return "Dune confirmed no chunk of this input before it"
        first, last = spool.entries[0], spool.entries[count - 1]
        chunks = "chunk 1" if count == 1 else f"chunks 1-{count}"
        where = self._where(first.first_line, last.last_line)
        return f"Dune confirmed {chunks} ({where}, {spool.rows_before(count)} rows)"

    # -- sending -----------------------------------------------------------------------------------------------

    def execute(self, context: Context) -> dict[str, Any]:
        try:
            with self._checked_input() as spool:
                return self._load(context, spool)
        except DuneConfigurationError as err:
            raise AirflowFailException(str(err)) from None  # the same input or settings would fail again

    def _load(self, context: Context, spool: ChunkSpool) -> dict[str, Any]:
        table = self.table
        appending = self.mode == "append"
        sent = written = 0
        with DuneHook(self.dune_conn_id) as hook:
            start = self._resume_point(context, spool) if appending else 0
            exists = True
            if not appending:
                try:
                    hook.clear_table(table.namespace, table.table_name)
                    self.log.info("Cleared %s (mode=replace: a retry loads the data once, not twice)", table.full_name)
                except DuneNotFoundError:
                    exists = False
            for index in range(start, len(spool)):
                if not exists:
                    self._create(hook)
                    exists = True
                chunk = spool.chunk(index)
                accepted = self._insert(hook, spool, index, chunk)
                sent += chunk.rows
                written += accepted
                if appending:
                    self._record(context, spool, index + 1)
                self.log.info(
                    "Chunk %d/%d: %d row(s) sent, %d written (%d so far)",
                    index + 1,
                    len(spool),
                    chunk.rows,
                    accepted,
                    written,
                )
                if accepted != chunk.rows:
                    raise AirflowFailException(
                        f"Dune wrote {accepted} of the {chunk.rows} rows of {self._describe(spool, index)} to "
                        f"{table.full_name}: check those rows against the table's schema "
                        f"({json.dumps(table.to_request()['schema'])}). The chunks after it were not sent."
                    )
        if appending:
            self._forget(context)
        return {
            "table": table.full_name,
            "mode": self.mode,
            "chunks": len(spool),
            "rows_sent": sent,
            "rows_written": written,
            "resumed_after_chunk": start,
        }

    def _create(self, hook: DuneHook) -> None:
        """Create the table (Dune bills each creation, so only when it does not exist)."""
        created = hook.create_table(self.table)
        self.log.info("Created table %s (%s)", self.table.full_name, created.get("message") or "created")

    def _insert(self, hook: DuneHook, spool: ChunkSpool, index: int, chunk: Chunk) -> int:
        """Send one chunk (creating the table when it is not there); returns the rows Dune wrote."""
        try:
            return self._send(hook, spool, index, chunk)
        except DuneNotFoundError:  # the table is not there (yet): nothing was inserted
            pass
        self._create(hook)
        return self._send(hook, spool, index, chunk)

    def _send(self, hook: DuneHook, spool: ChunkSpool, index: int, chunk: Chunk) -> int:
        table = self.table
        try:
            with self._unconfirmed(spool, index):
                return hook.insert_rows(table.namespace, table.table_name, chunk)
        except DuneNotFoundError:
            raise
        except DuneAPIError as err:
            if err.http_status in REFUSED_STATUSES and not err.may_have_started_run:
                raise AirflowFailException(
                    f"{err}\nDune refused {self._describe(spool, index)}, so none of its rows were written; the "
                    f"same rows would be refused again, so this task fails without retries: fix them. "
                    f"{self._after_refusal(spool, index)}"
                ) from None
            if err.may_have_started_run:  # replace mode; append mode failed in _unconfirmed
                err.add_detail(
                    "mode=replace: the next try clears the table and loads the whole input again, so these rows "
                    "are not doubled"
                )
            raise

    def _after_refusal(self, spool: ChunkSpool, index: int) -> str:
        confirmed = self._describe_confirmed(spool, index)
        if self.mode == "replace":
            return f"{confirmed}: the table holds those rows only until a try of this task loads the whole input."
        return (
            f"{confirmed}, which stay in the table; once the rows are fixed, clear this task: it resumes with chunk "
            f"{index + 1} as long as the input before it is unchanged."
        )

    def _unconfirmed(self, spool: ChunkSpool, index: int) -> AbstractContextManager[None]:
        """In append mode, an insert whose answer was lost fails the task without retries, saying what to check."""
        if self.mode != "append":
            return nullcontext()
        table = self.table.full_name
        entry = spool.entries[index]
        count = f"SELECT count(*) FROM {table}"  # noqa: S608 - shown to the user; names checked by TableDefinition
        return fail_when_unconfirmed(
            effect=f"Dune may have appended {self._describe(spool, index)} to {table}",
            risk="appending those rows twice",
            check=(
                f"{self._describe_confirmed(spool, index)}. Check the table's rows on dune.com (e.g. {count}, "
                f"or look for the rows of {self._where(entry.first_line, entry.last_line)}): if they "
                f"are missing, clear this task: it resumes with chunk {index + 1} (the confirmed chunks are recorded "
                f"and not sent again). If they are there, do not clear it, which would append them again: load the "
                f"input after them separately."
            ),
        )

    # -- the record of confirmed chunks (append) ------------------------------------------------------------

    def _resume_point(self, context: Context, spool: ChunkSpool) -> int:
        """How many chunks of this input a previous try appended (0 on the first try); records this try's start.

        The record is written before anything is sent, so a try that could not record its chunks sends none.
        """
        done = 0
        if try_number(context) > 1:
            try:
                record = UPLOAD_RECORD.read(context)
            except TaskRecordUnavailable as err:
                raise AirflowException(
                    f"{err}. Not appending while the chunks a previous try appended are unknown; the next try of "
                    "this task checks again."
                ) from None
            done = self._confirmed_in(record, spool)
        try:
            self._write_record(context, spool, done)
        except TaskRecordUnavailable as err:
            raise AirflowException(f"{err}. Nothing was sent; the next try of this task tries again.") from None
        return done

    def _confirmed_in(self, record: Mapping[str, Any] | None, spool: ChunkSpool) -> int:
        """The chunks a previous try appended, when this input starts with them; fails when it does not."""
        if not record or record.get("table") != self.table.full_name:
            return 0
        done = record.get("chunks_confirmed")
        if not isinstance(done, int) or done <= 0:
            return 0
        rows = record.get("rows_confirmed")
        if done <= len(spool) and spool.entries[done - 1].digest == record.get("digest"):
            self.log.info(
                "A previous try of this task appended chunks 1-%d (%s rows) of this input; resuming after them",
                done,
                rows,
            )
            return done
        raise AirflowFailException(
            f"A previous try of this task appended {done} chunk(s) ({rows} rows) to {self.table.full_name} of an "
            "input that differs from this one in those chunks, so appending this input could leave rows of both "
            "in the table; nothing was sent. Restore the input the previous try read and clear this task to finish "
            "loading it (it resumes after the appended chunks), or check the table on dune.com and load this input "
            "in a new DAG run."
        )

    def _write_record(self, context: Context, spool: ChunkSpool, done: int) -> None:
        UPLOAD_RECORD.write(
            context,
            {
                "table": self.table.full_name,
                "chunks_confirmed": done,
                "rows_confirmed": spool.rows_before(done),
                "digest": spool.entries[done - 1].digest if done else "",
            },
        )

    def _record(self, context: Context, spool: ChunkSpool, done: int) -> None:
        """Record that Dune confirmed the first ``done`` chunks; a try that cannot record them stops."""
        try:
            self._write_record(context, spool, done)
        except TaskRecordUnavailable as err:
            raise AirflowFailException(
                f"{err}. {self._describe_confirmed(spool, done)}, but a retry could not tell and would append them "
                f"again, so this task fails without retries. The rest of the input (chunks {done + 1}-{len(spool)}) "
                "was not sent: load it separately, or clear the table and load the whole input with mode=replace."
            ) from None

    def _forget(self, context: Context) -> None:
        try:
            UPLOAD_RECORD.delete(context)
        except TaskRecordUnavailable as err:
            # Harmless: a later try of this task instance would find every chunk confirmed and send nothing.
            self.log.warning("%s", err)


def _check_source(source: str) -> str:
    if not isinstance(source, str) or not source.strip():
        raise DuneConfigurationError(
            f"source is empty ({source!r}): give a .csv or .jsonl/.ndjson file path or object-storage URL"
        )
    return source


@contextmanager
def _reading(location: str) -> Iterator[None]:
    """Errors of opening or reading a source file, as errors that say what to fix."""
    try:
        yield
    except OSError as err:
        reason = err.strerror or str(err) or type(err).__name__
        raise DuneConfigurationError(f"cannot read source {location!r}: {reason}") from None


def _plain(value: Any) -> Any:
    """A JSON-friendly cell: dates and decimals become strings."""
    if value is None or isinstance(value, (bool, int, float, str)):
        return value
    return str(value)
