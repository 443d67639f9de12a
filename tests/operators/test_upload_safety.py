"""Uploads that must not write rows twice, nor clear a table for an input that cannot be loaded.

Each Airflow try is a fresh operator whose ``execute`` gets the same task instance (``try_number`` counts up);
the table lives in the emulator; a try's records live in fake Variables or a fake task state store.
"""

from __future__ import annotations

from pathlib import Path
from typing import Any

import pytest
from airflow.exceptions import AirflowException

from airflow_provider_dune.api.errors import DuneAPIError, DuneConfigurationError
from airflow_provider_dune.hooks.dune import DuneHook
from airflow_provider_dune.operators.uploads import DuneUploadOperator
from airflow_provider_dune.testing.emulator import DuneEmulator, Fault
from airflow_provider_dune.utils import task_records
from airflow_provider_dune.utils.uploads import Chunk
from airflow_provider_dune.version_compat import AirflowFailException
from tests.conftest import dune_connection_json
from tests.operators.fakes import FakeTaskStateStore, FakeTI, FakeVariables
from tests.operators.upload_files import write_csv, write_jsonl

SCHEMA = [{"name": "day", "type": "date"}, {"name": "pool", "type": "varchar"}, {"name": "volume", "type": "double"}]
TABLE = "dune.team_x.pool_volume"
CHUNK_BYTES = 1024  # about 30 rows a chunk


def rows(count: int, start: int = 0) -> list[dict[str, Any]]:
    return [{"day": f"2024-06-{1 + d % 28:02d}", "pool": f"pool_{d}", "volume": d * 1.5} for d in range(start, count)]


@pytest.fixture(params=["variables", "task_state_store"])
def context(request: pytest.FixtureRequest, dune_emulator: DuneEmulator, dune_conn_id: str, monkeypatch: Any) -> Any:
    monkeypatch.setattr(task_records, "Variable", FakeVariables())
    # No pacing of writes (15 a minute by default): these tests send many inserts in a row.
    monkeypatch.setenv("AIRFLOW_CONN_DUNE_DEFAULT", dune_connection_json(dune_emulator.url, writes_per_minute=0))
    ti = FakeTI(dune_emulator)
    ti.task_id = "upload"
    if request.param == "task_state_store":
        return {"ti": ti, "task_state_store": FakeTaskStateStore()}
    return {"ti": ti}


def upload(**kwargs: Any) -> DuneUploadOperator:
    kwargs.setdefault("task_id", "upload")
    kwargs.setdefault("namespace", "team_x")
    kwargs.setdefault("table_name", "pool_volume")
    kwargs.setdefault("schema", SCHEMA)
    kwargs.setdefault("chunk_bytes", CHUNK_BYTES)
    return DuneUploadOperator(**kwargs)


def retry(context: dict[str, Any]) -> dict[str, Any]:
    context["ti"].try_number += 1
    return context


def table_rows(emulator: DuneEmulator) -> list[dict[str, Any]]:
    return emulator._state.table_rows(TABLE)


def fail_insert(monkeypatch: pytest.MonkeyPatch, emulator: DuneEmulator, number: int, fault: Fault) -> None:
    """Inject ``fault`` for the first request that sends chunk ``number`` of the input, whichever try sends it."""
    original = DuneHook.insert_rows
    seen: list[bytes] = []

    def insert_rows(self: DuneHook, namespace: str, table_name: str, chunk: Chunk) -> int:
        if chunk.content not in seen:
            seen.append(chunk.content)
            if len(seen) == number:
                emulator.inject("insert_rows", fault)
        return original(self, namespace, table_name, chunk)

    monkeypatch.setattr(DuneHook, "insert_rows", insert_rows)


# -- append: a lost answer, a retry, a changed input --------------------------------------------------------


def test_append_an_insert_whose_answer_was_lost_fails_without_retries(
    dune_emulator: DuneEmulator, context: dict[str, Any], tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    source = str(write_csv(tmp_path / "v.csv", rows(57)))
    fail_insert(monkeypatch, dune_emulator, 2, Fault.drop_after_processing())
    with pytest.raises(AirflowFailException) as failure:
        upload(source=source, mode="append").execute(context)
    message = str(failure.value)
    assert "dune.com" in message and "chunk 1 " in message and "chunk 2 " in message
    assert "source lines" in message
    assert len(table_rows(dune_emulator)) == 57  # chunk 2 was written, but its answer was lost
    assert dune_emulator.counts["insert_rows"] == 3  # chunk 1 twice (the table did not exist yet), chunk 2 once
    assert task_record(context)["chunks_confirmed"] == 1


def test_append_a_retry_after_a_refusal_before_processing_resumes_after_the_confirmed_chunks(
    dune_emulator: DuneEmulator, context: dict[str, Any], tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    source = str(write_jsonl(tmp_path / "v.jsonl", rows(57)))
    # 503: Dune did not process it; the hook retries it 5 times, then the try fails and Airflow retries the task
    fail_insert(monkeypatch, dune_emulator, 2, Fault.status(503, times=5))
    with pytest.raises(DuneAPIError) as failure:
        upload(source=source, mode="append").execute(context)
    assert not isinstance(failure.value, AirflowFailException) and not failure.value.may_have_started_run
    first_try = len(table_rows(dune_emulator))
    assert 0 < first_try < 57
    result = upload(source=source, mode="append").execute(retry(context))
    assert [r["pool"] for r in table_rows(dune_emulator)] == [r["pool"] for r in rows(57)]  # each row once
    assert result["rows_written"] == 57 - first_try and result["resumed_after_chunk"] == 1
    # done: the record is gone, so nothing is left for a later run of this task instance to resume
    assert task_record(context) is None


def task_record(context: dict[str, Any]) -> Any:
    from airflow_provider_dune.operators.uploads import UPLOAD_RECORD

    return UPLOAD_RECORD.read(context)


def test_append_a_retry_with_a_changed_input_after_confirmed_chunks_fails_instead_of_appending(
    dune_emulator: DuneEmulator, context: dict[str, Any], tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    path = write_csv(tmp_path / "v.csv", rows(57))
    fail_insert(monkeypatch, dune_emulator, 2, Fault.status(503, times=5))
    with pytest.raises(DuneAPIError):
        upload(source=str(path), mode="append").execute(context)
    first_try = len(table_rows(dune_emulator))
    inserts = dune_emulator.counts["insert_rows"]
    write_csv(path, rows(57, start=1))  # the input changed, also in the chunk already appended
    with pytest.raises(AirflowFailException, match="differs"):
        upload(source=str(path), mode="append").execute(retry(context))
    assert len(table_rows(dune_emulator)) == first_try and dune_emulator.counts["insert_rows"] == inserts


def test_append_a_chunk_dune_refuses_fails_without_retries_and_names_the_source_lines(
    dune_emulator: DuneEmulator, context: dict[str, Any], tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    path = write_csv(tmp_path / "v.csv", rows(57))
    fail_insert(monkeypatch, dune_emulator, 2, Fault.status(400, "row 4: 'x' is not a valid date for column day"))
    with pytest.raises(AirflowFailException) as failure:
        upload(source=str(path), mode="append").execute(context)
    message = str(failure.value)
    assert "row 4: 'x' is not a valid date" in message and "chunk 2" in message
    first = len(table_rows(dune_emulator))
    assert f"source lines {first + 2}-" in message  # absolute: the header is line 1
    rewritten = rows(57)
    rewritten[-1]["pool"] = "fixed"  # a fix after the appended chunk
    write_csv(path, rewritten)
    result = upload(source=str(path), mode="append").execute(retry(context))
    assert result["resumed_after_chunk"] == 1 and [r["pool"] for r in table_rows(dune_emulator)] == [
        r["pool"] for r in rewritten
    ]


@pytest.mark.parametrize("kind", ["csv", "jsonl"])
def test_append_a_bad_input_fails_without_retries_and_writes_nothing(
    dune_emulator: DuneEmulator, context: dict[str, Any], tmp_path: Path, kind: str
) -> None:
    records = rows(57)
    records[40]["volume"] = "lots"  # the 41st row: CSV line 42, NDJSON line 41
    path = write_csv(tmp_path / "v.csv", records) if kind == "csv" else write_jsonl(tmp_path / "v.jsonl", records)
    line = 42 if kind == "csv" else 41
    with pytest.raises(AirflowFailException, match=rf"line {line}\b.*'lots' is not a valid double for column volume"):
        upload(source=str(path), mode="append").execute(context)
    assert "insert_rows" not in dune_emulator.counts and "create_table" not in dune_emulator.counts


# -- replace: the table is only cleared for an input that can be loaded -------------------------------------


@pytest.fixture
def table_of_200(dune_emulator: DuneEmulator, tmp_path: Path, context: dict[str, Any]) -> list[dict[str, Any]]:
    upload(source=str(write_csv(tmp_path / "old.csv", rows(200))), chunk_bytes=4096).execute(context)
    before = table_rows(dune_emulator)
    assert len(before) == 200
    return before


def _bad_line_201(path: Path) -> None:
    text = write_csv(path, rows(250)).read_text().splitlines(keepends=True)
    text[200] = "2024-06-01,pool_x,not-a-number\n"  # line 201
    path.write_text("".join(text))


def _not_utf8(path: Path) -> None:
    write_csv(path, rows(250))
    path.write_bytes(path.read_bytes().replace(b"pool_230", b"pool_\xff30"))


def _refused_in_chunk_3(path: Path) -> None:
    records = rows(250)
    records[100]["volume"] = "lots"  # in chunk 3 (about 42 rows a chunk)
    write_csv(path, records)


@pytest.mark.parametrize(
    ("make_input", "message"),
    [
        (_bad_line_201, r"line 201\b.*'not-a-number' is not a valid double"),
        (_not_utf8, r"line 232 is not UTF-8 text"),
        (_refused_in_chunk_3, r"line 102\b.*'lots' is not a valid double"),
    ],
)
def test_replace_a_bad_input_leaves_the_table_as_it_was(
    dune_emulator: DuneEmulator,
    context: dict[str, Any],
    tmp_path: Path,
    table_of_200: list[dict[str, Any]],
    make_input: Any,
    message: str,
) -> None:
    path = tmp_path / "new.csv"
    make_input(path)
    with pytest.raises(AirflowFailException, match=message):
        upload(source=str(path), chunk_bytes=CHUNK_BYTES).execute(context)
    assert table_rows(dune_emulator) == table_of_200
    assert dune_emulator.counts.get("clear_table") == 1  # the one that loaded the 200 rows


def test_replace_a_lost_answer_leaves_the_retry_to_replace_the_table(
    dune_emulator: DuneEmulator, context: dict[str, Any], tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    source = str(write_csv(tmp_path / "v.csv", rows(57)))
    fail_insert(monkeypatch, dune_emulator, 2, Fault.drop_after_processing())
    with pytest.raises(DuneAPIError, match="clears the table") as failure:
        upload(source=source).execute(context)
    assert not isinstance(failure.value, AirflowFailException)
    upload(source=source).execute(retry(context))
    assert [r["pool"] for r in table_rows(dune_emulator)] == [r["pool"] for r in rows(57)]


# -- reading the source: bounded lines, clear errors ---------------------------------------------------------


@pytest.mark.parametrize("kind", ["csv", "jsonl"])
def test_a_line_longer_than_a_chunk_is_refused_with_its_line_number(
    dune_emulator: DuneEmulator, context: dict[str, Any], tmp_path: Path, kind: str
) -> None:
    records = rows(5)
    records[2]["pool"] = "x" * 5000
    path = write_csv(tmp_path / "v.csv", records) if kind == "csv" else write_jsonl(tmp_path / "v.jsonl", records)
    line = 4 if kind == "csv" else 3
    with pytest.raises(AirflowFailException, match=rf"line {line}\b.*longer than.*chunk_bytes=1024"):
        upload(source=str(path)).execute(context)
    assert "insert_rows" not in dune_emulator.counts


def test_a_quoted_csv_value_over_many_lines_is_bounded_too(
    dune_emulator: DuneEmulator, context: dict[str, Any], tmp_path: Path
) -> None:
    path = tmp_path / "v.csv"
    path.write_text('day,pool,volume\n2024-06-01,a,1\n2024-06-02,"' + "x\n" * 2000 + '",2\n')
    with pytest.raises(AirflowFailException, match=r"line 3\b.*longer than"):
        upload(source=str(path)).execute(context)
    assert "insert_rows" not in dune_emulator.counts


def test_a_csv_value_larger_than_pythons_default_field_limit_is_read(tmp_path: Path) -> None:
    """Python's csv module refuses fields over 131,072 characters by default; a row up to chunk_bytes is fine.

    (Read only: the emulator's own CSV parser keeps that default limit.)"""
    records = rows(2)
    records[1]["pool"] = "y" * 200_000
    path = write_csv(tmp_path / "v.csv", records)
    (chunk,) = upload(source=str(path), chunk_bytes=1024 * 1024).chunks()
    assert chunk.rows == 2 and (chunk.first_line, chunk.last_line) == (2, 3) and b"y" * 200_000 in chunk.content


@pytest.mark.parametrize(
    ("text", "message"),
    [
        ("day,pool,volume\n2024-06-01,a,1\n2024-06-02,b\n", r"CSV line 3 has 2 values for 3 columns"),
        ("day,pool,volume\n2024-06-01,a,1\n\n2024-06-02,b,1,9\n", r"CSV line 4 has 4 values"),
    ],
)
def test_csv_errors_name_the_line_of_the_file(
    dune_emulator: DuneEmulator, context: dict[str, Any], tmp_path: Path, text: str, message: str
) -> None:
    (tmp_path / "v.csv").write_text(text)
    with pytest.raises(AirflowFailException, match=message):
        upload(source=str(tmp_path / "v.csv")).execute(context)


def test_ndjson_errors_name_the_line_of_the_file(
    dune_emulator: DuneEmulator, context: dict[str, Any], tmp_path: Path
) -> None:
    (tmp_path / "v.jsonl").write_text('{"day": "2024-06-01"}\n\n{"day": \n')
    with pytest.raises(AirflowFailException, match=r"line 3 is not JSON"):
        upload(source=str(tmp_path / "v.jsonl")).execute(context)


def test_a_utf8_bom_is_accepted(dune_emulator: DuneEmulator, context: dict[str, Any], tmp_path: Path) -> None:
    path = write_csv(tmp_path / "v.csv", rows(3))
    path.write_bytes(b"\xef\xbb\xbf" + path.read_bytes())
    assert upload(source=str(path)).execute(context)["rows_written"] == 3


def test_a_directory_is_refused_clearly(dune_emulator: DuneEmulator, context: dict[str, Any], tmp_path: Path) -> None:
    (tmp_path / "dir.csv").mkdir()
    with pytest.raises(AirflowFailException, match=r"cannot read source .*dir\.csv"):
        upload(source=str(tmp_path / "dir.csv")).execute(context)


@pytest.mark.parametrize("source", ["", "  "])
def test_an_empty_source_is_refused(source: str) -> None:
    with pytest.raises(DuneConfigurationError, match="source is empty"):
        upload(source=source)


def test_a_source_rendered_empty_is_refused(
    dune_emulator: DuneEmulator, context: dict[str, Any], tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.chdir(tmp_path)
    write_csv(tmp_path / "v.csv", rows(3))
    task = upload(source="{{ params.file }}")
    task.source = ""  # what the template rendered
    with pytest.raises(AirflowFailException, match="source is empty"):
        task.execute(context)
    assert "insert_rows" not in dune_emulator.counts


def test_object_storage_without_its_filesystem_package_says_what_to_install(
    dune_emulator: DuneEmulator, context: dict[str, Any], monkeypatch: pytest.MonkeyPatch
) -> None:
    try:  # Airflow 3.1+
        from airflow.sdk.io.fs import _register_filesystems
    except ImportError:  # Airflow 2.11, 3.0
        from airflow.io import _register_filesystems  # type: ignore[attr-defined,no-redef]

    def s3(conn_id: str | None, options: Any = None) -> Any:
        raise ImportError("No module named 's3fs'", name="s3fs")

    monkeypatch.setitem(_register_filesystems(), "s3", s3)
    with pytest.raises(AirflowFailException, match=r"s3fs.*apache-airflow-providers-amazon\[s3fs\]"):
        upload(source="s3://bucket/in/v.csv").execute(context)


def test_bad_input_is_never_retried(dune_emulator: DuneEmulator, context: dict[str, Any], tmp_path: Path) -> None:
    with pytest.raises(AirflowFailException, match="does not exist"):
        upload(source=str(tmp_path / "none.csv")).execute(context)
    assert issubclass(AirflowFailException, AirflowException)
