"""Rows for Dune's uploaded tables: read in bounded memory, checked against the table's schema, cut into chunks.

Sources are CSV text (header first), NDJSON text, or mappings from any iterable (a SQL cursor's rows). Every
row is checked as Dune checks it (columns, and the value types Dune refuses) so that a bad row is found before
anything is sent, with the line of the source it came from. No line, CSV record or chunk may be larger than
``chunk_bytes``: a row must fit in one insert request anyway, and the limit keeps memory bounded however long
a source's lines are. :class:`ChunkSpool` keeps the encoded chunks in a temporary file until they are sent.
"""

from __future__ import annotations

import codecs
import csv
import hashlib
import io
import json
import re
import tempfile
from collections.abc import Callable, Iterable, Iterator, Mapping, Sequence
from dataclasses import dataclass
from types import TracebackType
from typing import IO, Any

from airflow_provider_dune.api.errors import DuneConfigurationError

CSV = "text/csv"
NDJSON = "application/x-ndjson"
#: Default largest insert request; Dune documents no limit, and smaller requests fail and retry in smaller units.
DEFAULT_CHUNK_BYTES = 8 * 1024 * 1024
#: Bytes read from a source at a time.
READ_BLOCK = 64 * 1024

_NEWLINE = re.compile(r"\r\n|\r|\n")
_INTEGER_TEXT = re.compile(r"\s*[+-]?\d+\s*\Z")
_INTEGER_RANGES = {"integer": (-(2**31), 2**31 - 1), "bigint": (-(2**63), 2**63 - 1)}


@dataclass(frozen=True)
class Chunk:
    """One insert request: ``rows`` rows encoded as ``content`` (CSV with its header line, or NDJSON).

    ``first_line`` and ``last_line``: where its rows are in the source (lines of a file, rows of a query).
    """

    content: bytes
    content_type: str
    rows: int
    first_line: int = 0
    last_line: int = 0


@dataclass(frozen=True)
class RowSchema:
    """The checks Dune makes on an inserted row, made before anything is sent.

    :param columns: ``(name, type, nullable)`` per column, as in
        :class:`~airflow_provider_dune.api.definitions.TableDefinition`. Numbers (``integer``, ``bigint``:
        whole numbers in range; ``double``) and ``boolean`` values are checked, as is ``nullable``; other types
        (dates, timestamps, ``varbinary``, 256-bit integers) are left to Dune.
    """

    columns: tuple[tuple[str, str, bool], ...]

    @classmethod
    def names_only(cls, names: Sequence[str]) -> RowSchema:
        """Columns whose values are not checked (only their names)."""
        return cls(tuple((name, "varchar", True) for name in names))

    @property
    def names(self) -> tuple[str, ...]:
        return tuple(name for name, _, _ in self.columns)

    def check(self, record: Mapping[str, Any], where: str) -> None:
        """Raise a :class:`DuneConfigurationError` naming ``where`` for the first value Dune would refuse."""
        for name, kind, nullable in self.columns:
            problem = _value_problem(record.get(name), kind, nullable)
            if problem:
                raise DuneConfigurationError(f"{where}: {problem} for column {name}")


def _value_problem(value: Any, kind: str, nullable: bool) -> str | None:
    """Why Dune would refuse ``value`` in a column of type ``kind`` (``None``: it would not); "" is NULL."""
    if value is None or value == "":
        return None if nullable else "an empty value (NULL) is not allowed"
    invalid = f"{value!r} is not a valid {kind}"
    if kind in _INTEGER_RANGES:
        if isinstance(value, bool):
            return invalid
        if isinstance(value, float) and value.is_integer():
            number = int(value)
        elif isinstance(value, int):
            number = value
        elif isinstance(value, str) and _INTEGER_TEXT.match(value):
            number = int(value)
        else:
            return invalid
        low, high = _INTEGER_RANGES[kind]
        return None if low <= number <= high else f"{value!r} is out of the range of {kind}"
    if kind == "double":
        if isinstance(value, bool):
            return invalid
        if isinstance(value, (int, float)):
            return None
        try:
            float(value)
        except (TypeError, ValueError):
            return invalid
        return None
    if kind == "boolean":
        if isinstance(value, bool) or (isinstance(value, str) and value.lower() in ("true", "false")):
            return None
        return invalid
    return None


def _check_chunk_bytes(max_bytes: int) -> None:
    if isinstance(max_bytes, bool) or not isinstance(max_bytes, int) or max_bytes < 1024:
        raise DuneConfigurationError(f"chunk_bytes must be a whole number >= 1024, got {max_bytes!r}")


def _too_long(line: int, max_chars: int) -> DuneConfigurationError:
    return DuneConfigurationError(
        f"line {line} is longer than {max_chars} characters, the most one row may hold (chunk_bytes={max_chars}: a "
        "row must fit in one insert request): split the row, or raise chunk_bytes"
    )


def text_lines(read: Callable[[int], bytes | str], max_chars: int) -> Iterator[str]:
    """The lines of a UTF-8 text read block by block (``read(size)`` of a binary or text file), endings kept.

    A leading byte-order mark is dropped; lines end at ``\\n``, ``\\r\\n`` or ``\\r``. Memory stays within
    ``max_chars`` plus one block, however long a line is.

    :raises DuneConfigurationError: a line is longer than ``max_chars``, or the text is not UTF-8.
    """
    decoder = codecs.getincrementaldecoder("utf-8-sig")()
    parts: list[str] = []  # the line being read, when it spans blocks
    size = number = 0
    first = True
    while True:
        block = read(READ_BLOCK)
        if isinstance(block, bytes):
            try:
                text = decoder.decode(block, final=not block)
            except UnicodeDecodeError as err:
                bad_line = number + 1 + err.object[: err.start].count(b"\n")
                byte = err.object[err.start : err.start + 1].hex()
                raise DuneConfigurationError(
                    f"line {bad_line} is not UTF-8 text (byte 0x{byte}): save the file as UTF-8"
                ) from None
        else:
            text = block.removeprefix("\ufeff") if first else block
        first = False
        start = 0
        if parts and parts[-1].endswith("\r") and not text.startswith("\n"):  # a line ended by "\r" alone
            number += 1
            yield "".join(parts)
            parts, size = [], 0
        for match in _NEWLINE.finditer(text):
            end = match.end()
            if match.group() == "\r" and end == len(text) and block:
                break  # the next block may start with the "\n" of this "\r\n"
            line = "".join([*parts, text[start:end]])
            parts, size = [], 0
            number += 1
            if len(line) - (end - match.start()) > max_chars:
                raise _too_long(number, max_chars)
            yield line
            start = end
        rest = text[start:]
        if rest:
            parts.append(rest)
            size += len(rest)
        if size > max_chars + 1:  # + a "\r" kept back
            raise _too_long(number + 1, max_chars)
        if not block:
            if parts:
                yield "".join(parts)
            return


def csv_chunks(
    lines: Iterable[str],
    max_bytes: int = DEFAULT_CHUNK_BYTES,
    columns: Sequence[str] = (),
    *,
    schema: RowSchema | None = None,
) -> Iterator[Chunk]:
    """Chunks of a CSV text (header first); every chunk repeats the header.

    :param lines: the text's lines, the header first (line 1).
    :param columns: the header to expect (or give ``schema``, whose values are checked too).
    """
    _check_chunk_bytes(max_bytes)
    schema = schema or RowSchema.names_only(columns)
    read = {"chars": 0, "record_start": 1}

    def bounded(source: Iterable[str]) -> Iterator[str]:
        """The lines, refusing a record (one line, or several in quotes) larger than a chunk."""
        for line in source:
            read["chars"] += len(line)
            if read["chars"] > max_bytes:
                raise DuneConfigurationError(
                    f"the CSV record from line {read['record_start']} (a quoted value over several lines) is longer "
                    f"than {max_bytes} characters, the most one row may hold (chunk_bytes={max_bytes})"
                )
            yield line

    reader = csv.reader(bounded(lines))

    def next_record() -> list[str] | None:
        read["chars"], read["record_start"] = 0, reader.line_num + 1
        try:
            return next(reader)
        except StopIteration:
            return None
        except csv.Error as err:
            raise DuneConfigurationError(f"CSV line {read['record_start']}: {err}") from None

    # The csv module refuses fields over 128 KiB by default; the record limit above is the one that counts.
    field_limit = csv.field_size_limit()
    csv.field_size_limit(max(field_limit, max_bytes + 1))
    try:
        header = next_record()
        if header is None:
            return
        if schema.names and [h.strip() for h in header] != list(schema.names):
            raise DuneConfigurationError(
                f"the CSV header {header} does not match the table's columns {list(schema.names)}"
            )
        head = _csv_line(header)
        names = schema.names or tuple(header)
        buffer, size, rows, first, last = [head], len(head), 0, 0, 0
        while (record := next_record()) is not None:
            if not record:
                continue
            where = f"CSV line {read['record_start']}"
            if len(record) != len(header):
                raise DuneConfigurationError(f"{where} has {len(record)} values for {len(header)} columns")
            schema.check(dict(zip(names, record, strict=True)), where)
            line = _csv_line(record)
            if len(head) + len(line) > max_bytes:
                raise DuneConfigurationError(f"{where} alone is larger than chunk_bytes={max_bytes}")
            if size + len(line) > max_bytes:
                yield Chunk(b"".join(buffer), CSV, rows, first, last)
                buffer, size, rows = [head], len(head), 0
            if not rows:
                first = read["record_start"]
            buffer.append(line)
            size += len(line)
            rows += 1
            last = reader.line_num
        if rows:
            yield Chunk(b"".join(buffer), CSV, rows, first, last)
    finally:
        csv.field_size_limit(field_limit)


def _csv_line(values: Sequence[str]) -> bytes:
    out = io.StringIO()
    csv.writer(out, lineterminator="\n").writerow(values)
    return out.getvalue().encode()


def ndjson_chunks(
    records: Iterable[Any],
    max_bytes: int = DEFAULT_CHUNK_BYTES,
    columns: Sequence[str] = (),
    *,
    schema: RowSchema | None = None,
    unit: str = "line",
) -> Iterator[Chunk]:
    """Chunks of JSON objects (NDJSON lines or mappings); keys outside the columns are refused.

    :param columns: the table's columns (or give ``schema``, whose values are checked too).
    :param unit: what a record is called in errors: ``line`` (of a file) or ``row`` (of a query's result).
    """
    _check_chunk_bytes(max_bytes)
    schema = schema or RowSchema.names_only(columns)
    allowed = set(schema.names)
    buffer: list[bytes] = []
    size = rows = first = last = 0
    for number, record in enumerate(records, start=1):
        where = f"{unit} {number}"
        if isinstance(record, (str, bytes)):
            text = record.decode() if isinstance(record, bytes) else record
            if not text.strip():
                continue
            try:
                record = json.loads(text)
            except ValueError:
                raise DuneConfigurationError(f"{where} is not JSON") from None
        if not isinstance(record, dict):
            raise DuneConfigurationError(f"{where} must be a JSON object, got {type(record).__name__}")
        extra = set(record) - allowed if allowed else set()
        if extra:
            raise DuneConfigurationError(f"{where} has columns the table does not have: {sorted(extra)}")
        schema.check(record, where)
        line = (json.dumps(record, default=str, separators=(",", ":")) + "\n").encode()
        if len(line) > max_bytes:
            raise DuneConfigurationError(f"{where} alone is larger than chunk_bytes={max_bytes}")
        if size + len(line) > max_bytes:
            yield Chunk(b"".join(buffer), NDJSON, rows, first, last)
            buffer, size, rows = [], 0, 0
        if not rows:
            first = number
        buffer.append(line)
        size += len(line)
        rows += 1
        last = number
    if rows:
        yield Chunk(b"".join(buffer), NDJSON, rows, first, last)


@dataclass(frozen=True)
class SpooledChunk:
    """Where a chunk is in a :class:`ChunkSpool`; ``digest`` covers it and every chunk before it."""

    offset: int
    size: int
    content_type: str
    rows: int
    first_line: int
    last_line: int
    digest: str


class ChunkSpool:
    """Encoded chunks kept in a temporary file (deleted when closed) until they are sent.

    The digest after each chunk identifies the input up to there: a retry compares it with what a previous try
    appended, so it resumes only where the rows already in the table are the same.
    """

    def __init__(self) -> None:
        self._file: IO[bytes] = tempfile.TemporaryFile(prefix="dune-upload-")  # noqa: SIM115 - closed by close()
        self._hash = hashlib.sha256()
        self._end = 0
        self.entries: list[SpooledChunk] = []

    def add(self, chunk: Chunk) -> None:
        self._file.seek(self._end)
        self._file.write(chunk.content)
        self._hash.update(f"{chunk.content_type}:{len(chunk.content)}:".encode())
        self._hash.update(chunk.content)
        digest = self._hash.hexdigest()[:32]
        self.entries.append(
            SpooledChunk(
                self._end, len(chunk.content), chunk.content_type, chunk.rows, chunk.first_line, chunk.last_line, digest
            )
        )
        self._end += len(chunk.content)

    def chunk(self, index: int) -> Chunk:
        """The ``index``-th chunk (0-based), read back from the file."""
        entry = self.entries[index]
        self._file.seek(entry.offset)
        return Chunk(self._file.read(entry.size), entry.content_type, entry.rows, entry.first_line, entry.last_line)

    def __len__(self) -> int:
        return len(self.entries)

    @property
    def rows(self) -> int:
        return sum(entry.rows for entry in self.entries)

    def rows_before(self, index: int) -> int:
        """Rows of the chunks before the ``index``-th."""
        return sum(entry.rows for entry in self.entries[:index])

    def close(self) -> None:
        self._file.close()

    def __enter__(self) -> ChunkSpool:
        return self

    def __exit__(
        self, kind: type[BaseException] | None, error: BaseException | None, traceback: TracebackType | None
    ) -> None:
        self.close()
