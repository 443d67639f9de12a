"""Streaming query results to a file or object storage, page by page, as JSON lines or CSV."""

from __future__ import annotations

import csv
import io
import json
import os
from collections.abc import Iterable, Sequence
from typing import Any

from airflow_provider_dune.api.errors import DuneConfigurationError
from airflow_provider_dune.api.models import ResultPage
from airflow_provider_dune.version_compat import ObjectStoragePath

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


def storage_path(path: str) -> ObjectStoragePath:
    """An ``ObjectStoragePath`` for a URL (``s3://...``, ``file:///...``) or a local path."""
    if "://" not in path:
        path = "file://" + os.path.abspath(path)
    return ObjectStoragePath(path)


def _csv_line(values: Sequence[Any]) -> str:
    buffer = io.StringIO()
    csv.writer(buffer, lineterminator="\n").writerow(
        [json.dumps(v) if isinstance(v, (dict, list)) else ("" if v is None else v) for v in values]
    )
    return buffer.getvalue()


def write_pages(pages: Iterable[ResultPage], path: str, output_format: str) -> int:
    """Write every row of ``pages`` to ``path``; only one page is held in memory. Returns the row count."""
    target = storage_path(path)
    if target.parent and not target.parent.exists():
        target.parent.mkdir(parents=True, exist_ok=True)
    rows_written = 0
    columns: list[str] | None = None
    with target.open("w", encoding="utf-8", newline="") as handle:
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
