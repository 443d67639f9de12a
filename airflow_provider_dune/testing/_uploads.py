"""Uploaded tables in the Dune API emulator: create, insert CSV or NDJSON rows, clear, delete."""

from __future__ import annotations

import csv
import io
import json
import re
from collections.abc import Mapping
from typing import Any

from airflow_provider_dune.testing._model import ApiError, _StateBase

_NAME = re.compile(r"^[a-z0-9_]{1,128}$")
_NUMBER_TYPES = {"integer": int, "bigint": int, "double": float}


def _cell(value: Any, column: Mapping[str, Any], row: int) -> Any:
    """A value checked against its column's type (what Dune refuses with a 400)."""
    if value is None or value == "":
        if not column.get("nullable", True):
            raise ApiError(400, f"row {row}: column {column['name']} is not nullable")
        return None
    kind = column["type"]
    try:
        if kind in _NUMBER_TYPES:
            return _NUMBER_TYPES[kind](value)
        if kind == "boolean":
            if isinstance(value, bool):
                return value
            if str(value).lower() in ("true", "false"):
                return str(value).lower() == "true"
            raise ValueError(value)
    except (TypeError, ValueError):
        raise ApiError(400, f"row {row}: {value!r} is not a valid {kind} for column {column['name']}") from None
    return value


class UploadsMixin(_StateBase):
    """Uploaded tables of :class:`~airflow_provider_dune.testing._state.EmulatorState`."""

    def _table(self, namespace: str, table_name: str) -> dict[str, Any]:
        table = self.tables.get(f"dune.{namespace}.{table_name}")
        if table is None:
            raise ApiError(404, f"table dune.{namespace}.{table_name} not found")
        return table

    def create_table(self, body: Mapping[str, Any]) -> dict[str, Any]:
        namespace, name, schema = body.get("namespace"), body.get("table_name"), body.get("schema")
        for what, value in (("namespace", namespace), ("table_name", name)):
            if not isinstance(value, str) or not _NAME.match(value):
                raise ApiError(400, f"invalid {what} {value!r}")
        if (
            not isinstance(schema, list)
            or not schema
            or not all(
                isinstance(c, Mapping) and isinstance(c.get("name"), str) and isinstance(c.get("type"), str)
                for c in schema
            )
        ):
            raise ApiError(400, "invalid schema: a non-empty list of columns with name and type")
        full_name = f"dune.{namespace}.{name}"
        with self.lock:
            existed = full_name in self.tables
            if not existed:
                self.tables[full_name] = {"schema": [dict(c) for c in schema], "rows": []}
        return {
            "namespace": namespace,
            "table_name": name,
            "full_name": full_name,
            "example_query": f"SELECT * FROM {full_name} LIMIT 10",  # noqa: S608 - example text, names checked above
            "already_existed": existed,
            "message": "table already existed" if existed else "table created",
        }

    def insert_rows(self, namespace: str, table_name: str, content: bytes, content_type: str) -> tuple[int, int]:
        """Parse and append rows; returns ``(rows written, bytes)``. Any bad row refuses the whole request."""
        with self.lock:
            table = self._table(namespace, table_name)
            columns = {c["name"]: c for c in table["schema"]}
            text = content.decode("utf-8", errors="strict") if content else ""
            if content_type == "text/csv":
                reader = csv.DictReader(io.StringIO(text))
                unknown = set(reader.fieldnames or ()) - set(columns)
                if unknown:
                    raise ApiError(400, f"unknown columns {sorted(unknown)}")
                records: list[Mapping[str, Any]] = list(reader)
            elif content_type in ("application/x-ndjson", "application/json"):
                records = []
                for number, line in enumerate(text.splitlines(), start=1):
                    if not line.strip():
                        continue
                    try:
                        record = json.loads(line)
                    except ValueError:
                        raise ApiError(400, f"line {number} is not JSON") from None
                    if not isinstance(record, dict) or set(record) - set(columns):
                        raise ApiError(400, f"line {number}: not an object of the table's columns")
                    records.append(record)
            else:
                raise ApiError(400, f"unsupported content type {content_type!r}: use text/csv or application/x-ndjson")
            rows = [
                {name: _cell(record.get(name), column, number) for name, column in columns.items()}
                for number, record in enumerate(records, start=1)
            ]
            table["rows"].extend(rows)
            return len(rows), len(content)

    def clear_table(self, namespace: str, table_name: str) -> None:
        with self.lock:
            self._table(namespace, table_name)["rows"] = []

    def delete_table(self, namespace: str, table_name: str) -> None:
        with self.lock:
            self._table(namespace, table_name)
            del self.tables[f"dune.{namespace}.{table_name}"]

    def table_rows(self, full_name: str) -> list[dict[str, Any]]:
        """The rows of an uploaded table (for tests)."""
        with self.lock:
            return [dict(row) for row in self.tables.get(full_name, {}).get("rows", [])]
