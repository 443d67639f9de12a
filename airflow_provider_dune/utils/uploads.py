"""Rows for Dune's uploaded tables, cut into bounded chunks: from CSV or NDJSON files, or from any iterable."""

from __future__ import annotations

import csv
import io
import json
from collections.abc import Iterable, Iterator, Sequence
from dataclasses import dataclass
from typing import Any

from airflow_provider_dune.api.errors import DuneConfigurationError

CSV = "text/csv"
NDJSON = "application/x-ndjson"
#: Default largest insert request; Dune documents no limit, and smaller requests fail and retry in smaller units.
DEFAULT_CHUNK_BYTES = 8 * 1024 * 1024


@dataclass(frozen=True)
class Chunk:
    """One insert request: ``rows`` rows encoded as ``content`` (CSV with its header line, or NDJSON)."""

    content: bytes
    content_type: str
    rows: int


def _check_chunk_bytes(max_bytes: int) -> None:
    if isinstance(max_bytes, bool) or not isinstance(max_bytes, int) or max_bytes < 1024:
        raise DuneConfigurationError(f"chunk_bytes must be a whole number >= 1024, got {max_bytes!r}")


def csv_chunks(
    lines: Iterable[str], max_bytes: int = DEFAULT_CHUNK_BYTES, columns: Sequence[str] = ()
) -> Iterator[Chunk]:
    """Chunks of a CSV text (header first); every chunk repeats the header. ``columns``: the header to expect."""
    _check_chunk_bytes(max_bytes)
    reader = csv.reader(lines)
    try:
        header = next(reader)
    except StopIteration:
        return
    if columns and [h.strip() for h in header] != list(columns):
        raise DuneConfigurationError(f"the CSV header {header} does not match the table's columns {list(columns)}")
    head = _csv_line(header)
    buffer, size, rows = [head], len(head), 0
    for record in reader:
        if not record:
            continue
        if len(record) != len(header):
            raise DuneConfigurationError(f"CSV row {rows + 1} has {len(record)} values for {len(header)} columns")
        line = _csv_line(record)
        if len(head) + len(line) > max_bytes:
            raise DuneConfigurationError(f"CSV row {rows + 1} alone is larger than chunk_bytes={max_bytes}")
        if size + len(line) > max_bytes:
            yield Chunk(b"".join(buffer), CSV, rows)
            buffer, size, rows = [head], len(head), 0
        buffer.append(line)
        size += len(line)
        rows += 1
    if rows:
        yield Chunk(b"".join(buffer), CSV, rows)


def _csv_line(values: Sequence[str]) -> bytes:
    out = io.StringIO()
    csv.writer(out, lineterminator="\n").writerow(values)
    return out.getvalue().encode()


def ndjson_chunks(
    records: Iterable[Any], max_bytes: int = DEFAULT_CHUNK_BYTES, columns: Sequence[str] = ()
) -> Iterator[Chunk]:
    """Chunks of JSON objects (NDJSON lines or mappings); keys outside ``columns`` are refused."""
    _check_chunk_bytes(max_bytes)
    allowed = set(columns)
    buffer: list[bytes] = []
    size = rows = 0
    for number, record in enumerate(records, start=1):
        if isinstance(record, (str, bytes)):
            text = record.decode() if isinstance(record, bytes) else record
            if not text.strip():
                continue
            try:
                record = json.loads(text)
            except ValueError:
                raise DuneConfigurationError(f"line {number} is not JSON") from None
        if not isinstance(record, dict):
            raise DuneConfigurationError(f"row {number} must be a JSON object, got {type(record).__name__}")
        extra = set(record) - allowed if allowed else set()
        if extra:
            raise DuneConfigurationError(f"row {number} has columns the table does not have: {sorted(extra)}")
        line = (json.dumps(record, default=str, separators=(",", ":")) + "\n").encode()
        if len(line) > max_bytes:
            raise DuneConfigurationError(f"row {number} alone is larger than chunk_bytes={max_bytes}")
        if size + len(line) > max_bytes:
            yield Chunk(b"".join(buffer), NDJSON, rows)
            buffer, size, rows = [], 0, 0
        buffer.append(line)
        size += len(line)
        rows += 1
    if rows:
        yield Chunk(b"".join(buffer), NDJSON, rows)
