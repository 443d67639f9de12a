"""Loading data into Dune uploaded tables through the emulator: files, chunks, modes and retries."""

from __future__ import annotations

from pathlib import Path
from typing import Any

import pytest
from airflow.exceptions import AirflowException

from airflow_provider_dune.api.errors import DuneConfigurationError
from airflow_provider_dune.operators.uploads import DuneUploadOperator
from airflow_provider_dune.testing.emulator import DuneEmulator, Fault
from airflow_provider_dune.utils import task_records
from airflow_provider_dune.utils.uploads import csv_chunks, ndjson_chunks
from airflow_provider_dune.version_compat import AirflowFailException
from tests.operators.fakes import FakeTI, FakeVariables
from tests.operators.upload_files import write_csv, write_jsonl

SCHEMA = [{"name": "day", "type": "date"}, {"name": "pool", "type": "varchar"}, {"name": "volume", "type": "double"}]
ROWS = [
    {"day": f"2024-{6 + d // 28:02d}-{1 + d % 28:02d}", "pool": f"pool_{d % 7}", "volume": d * 1.5} for d in range(60)
]
TABLE = "dune.team_x.pool_volume"


@pytest.fixture
def context(dune_emulator: DuneEmulator, dune_conn_id: str, monkeypatch: pytest.MonkeyPatch) -> dict[str, Any]:
    monkeypatch.setattr(task_records, "Variable", FakeVariables())  # where append mode records its chunks
    return {"ti": FakeTI(dune_emulator)}


def upload(**kwargs: Any) -> DuneUploadOperator:
    kwargs.setdefault("task_id", "upload")
    kwargs.setdefault("namespace", "team_x")
    kwargs.setdefault("table_name", "pool_volume")
    kwargs.setdefault("schema", SCHEMA)
    return DuneUploadOperator(**kwargs)


@pytest.mark.slow
@pytest.mark.parametrize("kind", ["csv", "jsonl"])
def test_a_file_is_loaded_in_bounded_chunks(
    dune_emulator: DuneEmulator, context: dict[str, Any], tmp_path: Path, kind: str
) -> None:
    source = write_csv(tmp_path / "v.csv", ROWS) if kind == "csv" else write_jsonl(tmp_path / "v.jsonl", ROWS)
    result = upload(source=str(source), chunk_bytes=1024).execute(context)
    assert result == {
        "table": TABLE,
        "mode": "replace",
        "chunks": result["chunks"],
        "rows_sent": 60,
        "rows_written": 60,
        "resumed_after_chunk": 0,
    }
    assert result["chunks"] > 1 and dune_emulator.counts["insert_rows"] == result["chunks"]
    assert [row["volume"] for row in dune_emulator._state.table_rows(TABLE)] == [r["volume"] for r in ROWS]
    assert all(r.json_body["bytes"] <= 1024 for r in dune_emulator.requests if r.endpoint == "insert_rows")


@pytest.mark.slow
def test_replace_mode_makes_a_retry_load_the_data_once(
    dune_emulator: DuneEmulator, context: dict[str, Any], tmp_path: Path
) -> None:
    source = str(write_csv(tmp_path / "v.csv", ROWS))
    upload(source=source, chunk_bytes=1024).execute(context)  # a try that loaded everything, then failed later
    upload(source=source, chunk_bytes=1024).execute(context)  # the retry
    assert len(dune_emulator._state.table_rows(TABLE)) == 60
    assert dune_emulator.counts["create_table"] == 1  # created once (billed), found the second time


@pytest.mark.slow
def test_append_mode_adds(dune_emulator: DuneEmulator, context: dict[str, Any], tmp_path: Path) -> None:
    source = str(write_jsonl(tmp_path / "v.jsonl", ROWS[:5]))
    upload(source=source, mode="append").execute(context)
    upload(source=source, mode="append").execute(context)
    assert len(dune_emulator._state.table_rows(TABLE)) == 10 and "clear_table" not in dune_emulator.counts


def test_an_unanswered_insert_is_not_sent_again(
    dune_emulator: DuneEmulator, context: dict[str, Any], tmp_path: Path
) -> None:
    dune_emulator.inject("insert_rows", Fault.drop_after_processing())
    with pytest.raises(AirflowException, match="inserted the rows"):
        upload(source=str(write_csv(tmp_path / "v.csv", ROWS[:3]))).execute(context)
    assert dune_emulator.counts["insert_rows"] == 1


def test_rows_dune_would_refuse_fail_the_task_before_anything_is_sent(
    dune_emulator: DuneEmulator, context: dict[str, Any], tmp_path: Path
) -> None:
    bad = [ROWS[0], {**ROWS[1], "volume": "lots"}]
    with pytest.raises(AirflowFailException, match="line 2: 'lots' is not a valid double for column volume"):
        upload(source=str(write_jsonl(tmp_path / "v.jsonl", bad))).execute(context)
    assert "insert_rows" not in dune_emulator.counts and "clear_table" not in dune_emulator.counts


@pytest.mark.parametrize(
    ("kwargs", "message"),
    [
        ({"schema": [{"name": "Day", "type": "date"}]}, "lower-case"),
        ({"schema": [{"name": "day", "type": "datetime64"}]}, "type must be one of"),
        ({"schema": []}, "non-empty list"),
        ({"table_name": "Pool-Volume"}, "table_name must be lower-case"),
        ({"mode": "upsert"}, "mode must be one of"),
        ({"source": None}, "exactly one of source"),
        ({"sql": "SELECT 1"}, "exactly one of source"),
    ],
)
def test_bad_arguments_fail_when_the_dag_is_parsed(kwargs: dict[str, Any], message: str) -> None:
    kwargs.setdefault("source", "rows.csv")
    with pytest.raises(DuneConfigurationError, match=message):
        upload(**kwargs)


def test_a_missing_file_or_a_wrong_header_fails_before_inserting(
    dune_emulator: DuneEmulator, context: dict[str, Any], tmp_path: Path
) -> None:
    with pytest.raises(AirflowFailException, match="does not exist"):
        upload(source=str(tmp_path / "nope.csv")).execute(context)
    (tmp_path / "h.csv").write_text("day,pool\n2024-06-01,a\n")
    with pytest.raises(AirflowFailException, match="does not match the table's columns"):
        upload(source=str(tmp_path / "h.csv")).execute(context)
    assert "insert_rows" not in dune_emulator.counts


def test_chunkers() -> None:
    lines = ["a,b\n", "1,2\n", "3,4\n"]
    chunks = list(csv_chunks(lines, 1024, ("a", "b")))
    assert [(c.rows, c.content) for c in chunks] == [(2, b"a,b\n1,2\n3,4\n")]
    small = list(ndjson_chunks([{"a": i} for i in range(200)], 1024, ("a",)))
    assert sum(c.rows for c in small) == 200 and all(len(c.content) <= 1024 for c in small)
    with pytest.raises(DuneConfigurationError, match="columns the table does not have"):
        list(ndjson_chunks([{"z": 1}], 1024, ("a",)))
    with pytest.raises(DuneConfigurationError, match=">= 1024"):
        list(ndjson_chunks([], 10))


@pytest.mark.slow
def test_rows_from_an_airflow_sql_connection_stream_in_chunks(
    dune_emulator: DuneEmulator, context: dict[str, Any], tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    """``sql`` + ``sql_conn_id``: any connection whose hook gives a DB-API connection (here a SQLite file)."""
    import sqlite3

    from airflow_provider_dune.operators import uploads as uploads_module

    database = tmp_path / "source.db"
    with sqlite3.connect(database) as db:
        db.execute("CREATE TABLE v (day TEXT, pool TEXT, volume REAL)")
        db.executemany("INSERT INTO v VALUES (?, ?, ?)", [(r["day"], r["pool"], r["volume"]) for r in ROWS])

    class SQLiteHook:
        def get_conn(self) -> sqlite3.Connection:
            return sqlite3.connect(database)

    class Connection:
        def get_hook(self) -> SQLiteHook:
            return SQLiteHook()

    original = uploads_module.BaseHook.get_connection

    def get_connection(conn_id: str) -> Any:
        return Connection() if conn_id == "warehouse" else original(conn_id)

    monkeypatch.setattr(uploads_module.BaseHook, "get_connection", staticmethod(get_connection))
    monkeypatch.setattr(uploads_module, "SQL_FETCH_ROWS", 7)  # several fetches
    task = upload(sql="SELECT day, pool, volume FROM v ORDER BY day", sql_conn_id="warehouse", chunk_bytes=1024)
    result = task.execute(context)
    assert result["rows_sent"] == result["rows_written"] == 60 and result["chunks"] > 1
    assert [row["pool"] for row in dune_emulator._state.table_rows(TABLE)] == [r["pool"] for r in ROWS]
