"""Streaming query results to a file or object storage, page by page, as JSON lines or CSV."""

from __future__ import annotations

import csv
import io
import json
from collections.abc import Iterable, Sequence
from typing import Any

from airflow_provider_dune.api.errors import DuneConfigurationError
from airflow_provider_dune.api.models import ResultPage
from airflow_provider_dune.utils.storage import storage_file

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
    """Write every row of ``pages`` to ``path``; only one page is held in memory. Returns the row count."""
    target = storage_file(path)
    target.make_parent()
    rows_written = 0
    columns: list[str] | None = None
    with target.open_text("w") as handle:
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
