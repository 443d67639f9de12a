"""Reading an upload source's lines in bounded memory: block boundaries, line endings, BOM, limits, encodings."""

from __future__ import annotations

import io

import pytest

from airflow_provider_dune.api.errors import DuneConfigurationError
from airflow_provider_dune.utils import uploads
from airflow_provider_dune.utils.uploads import ChunkSpool, csv_chunks, text_lines

TEXT = "\ufeffa,b\r\n1,2\r3,4\n\n5,6"


@pytest.mark.parametrize("block", [1, 2, 3, 64 * 1024])
@pytest.mark.parametrize("kind", ["bytes", "text"])
def test_lines_across_block_boundaries_keep_their_endings(
    monkeypatch: pytest.MonkeyPatch, block: int, kind: str
) -> None:
    monkeypatch.setattr(uploads, "READ_BLOCK", block)
    source = io.BytesIO(TEXT.encode()) if kind == "bytes" else io.StringIO(TEXT)
    assert list(text_lines(source.read, 100)) == ["a,b\r\n", "1,2\r", "3,4\n", "\n", "5,6"]


@pytest.mark.parametrize("block", [3, 64 * 1024])
def test_a_line_over_the_limit_is_refused_without_reading_it_whole(monkeypatch: pytest.MonkeyPatch, block: int) -> None:
    monkeypatch.setattr(uploads, "READ_BLOCK", block)
    source = io.BytesIO(b"ok\n" + b"x" * 10_000 + b"\nnever read\n")
    with pytest.raises(DuneConfigurationError, match=r"line 2 is longer than 1024 characters"):
        list(text_lines(source.read, 1024))
    if block == 3:
        assert source.tell() < 1100  # stopped soon after the limit


def test_a_byte_that_is_not_utf8_is_reported_with_its_line() -> None:
    source = io.BytesIO(b"a\nb\nc\xffd\n")
    with pytest.raises(DuneConfigurationError, match=r"line 3 is not UTF-8 text \(byte 0xff\)"):
        list(text_lines(source.read, 1024))


def test_csv_chunks_number_records_by_their_first_line_in_the_file() -> None:
    lines = ["a,b\n", '1,"x\n', 'y"\n', "\n", "2,3\n"]
    (chunk,) = csv_chunks(lines, 1024, ("a", "b"))
    assert (chunk.rows, chunk.first_line, chunk.last_line) == (2, 2, 5)
    with pytest.raises(DuneConfigurationError, match="CSV line 4 has 1 values"):
        list(csv_chunks(["a,b\n", '1,"x\n', 'y"\n', "2\n"], 1024, ("a", "b")))


def test_the_spool_gives_back_each_chunk_and_a_digest_of_the_input_so_far() -> None:
    first = list(csv_chunks(["a\n", *(f"{i}\n" for i in range(600))], 1024, ("a",)))
    changed = list(csv_chunks(["a\n", *(f"{i}\n" for i in range(599)), "x\n"], 1024, ("a",)))
    with ChunkSpool() as spool, ChunkSpool() as other:
        for chunk in first:
            spool.add(chunk)
        for chunk in changed:
            other.add(chunk)
        assert [spool.chunk(i) for i in range(len(spool))] == first and spool.rows == 600
        assert [e.digest for e in spool.entries[:-1]] == [e.digest for e in other.entries[:-1]]
        assert spool.entries[-1].digest != other.entries[-1].digest
