"""Streaming query results to a file or object storage, page by page, as JSON lines or CSV.

Rows go to a temporary file next to the target (``.<name>.tmp-<random>``, same directory or bucket prefix),
which is moved into place only once the last page is written: a failure mid-way leaves the previous file
as it was and deletes the temporary one.
"""

from __future__ import annotations

import csv
import io
import json
import logging
import secrets
from collections.abc import Iterable, Sequence
from typing import IO, Any

from airflow_provider_dune.api.errors import DuneConfigurationError
from airflow_provider_dune.api.models import ResultPage
from airflow_provider_dune.utils.storage import StorageFile, storage_file

log = logging.getLogger(__name__)

OUTPUT_FORMATS = ("jsonl", "csv")


def output_format_for(path: str, output_format: str | None) -> str:
    """The format to write: the explicit one, else from the file suffix (``.csv`` or ``.jsonl``/``.json``)."""
    if not isinstance(path, str) or not path.strip():
        raise DuneConfigurationError(f"output_path must be a file path or an object-storage URL, got {path!r}")
    if output_format is not None and not isinstance(output_format, str):
        raise DuneConfigurationError(f"output_format must be 'csv' or 'jsonl', got {output_format!r}")
    if output_format is not None:
        fmt = output_format.strip().lower()
        if fmt not in OUTPUT_FORMATS:
            raise DuneConfigurationError(
                f"output_format must be one of {', '.join(OUTPUT_FORMATS)}, got {output_format!r}"
            )
        return fmt
    lowered = path.lower()
    if lowered.endswith(".csv"):
        return "csv"
    if lowered.endswith((".jsonl", ".ndjson", ".json")):
        return "jsonl"
    raise DuneConfigurationError(
        f"cannot tell the output format of {path!r}: name it *.csv or *.jsonl, or pass output_format='csv'|'jsonl'"
    )


def _csv_line(values: Sequence[Any]) -> str:
    buffer = io.StringIO()
    csv.writer(buffer, lineterminator="\n").writerow(
        [json.dumps(v) if isinstance(v, (dict, list)) else ("" if v is None else v) for v in values]
    )
    return buffer.getvalue()


def write_pages(pages: Iterable[ResultPage], path: str, output_format: str) -> int:
    """Write every row of ``pages`` to ``path``; only one page is held in memory. Returns the row count.

    The rows are written to a temporary file in the same place and moved over ``path`` when all pages are
    written (locally an atomic ``os.replace``; on object storage a copy and a delete, not atomic, but ``path``
    never holds a partial file). On any failure the temporary file is deleted and ``path`` is left untouched.
    """
    target = storage_file(path)
    target.make_parent()
    partial = temporary_sibling(target, path)
    try:
        with partial.open_text("w") as handle:
            rows_written = _write_rows(pages, handle, output_format)
        partial.move_to(target)
    except BaseException:
        _remove_quietly(partial)
        raise
    return rows_written


def temporary_sibling(target: StorageFile, path: str) -> StorageFile:
    """A fresh hidden name next to ``target``: ``.<name>.tmp-<random>``."""
    name = path.rstrip("/").rsplit("/", 1)[-1] or "output"
    return target.sibling(f".{name}.tmp-{secrets.token_hex(6)}")


def _remove_quietly(partial: StorageFile) -> None:
    try:
        partial.remove()
    except Exception as err:  # the export's own error is the one to report
        log.warning("Could not delete the temporary file %s: %s", partial, err)


def _write_rows(pages: Iterable[ResultPage], handle: IO[str], output_format: str) -> int:
    rows_written = 0
    columns: list[str] | None = None
    for page in pages:
        if output_format == "csv" and columns is None:
            columns = list(page.metadata.column_names) if page.metadata and page.metadata.column_names else []
            if not columns and page.rows:
                columns = list(page.rows[0])
            handle.write(_csv_line(columns))
        for row in page.rows:
            if output_format == "csv":
                handle.write(_csv_line([row.get(c) for c in columns or ()]))
            else:
                handle.write(json.dumps(row, default=str) + "\n")
            rows_written += 1
    return rows_written
