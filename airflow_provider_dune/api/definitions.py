"""Dune objects kept as code: a saved query's definition and a materialized view's, validated and compared.

Both are plain dataclasses shared by the hook and the operators; :meth:`QueryDefinition.changes_from` and
:meth:`MaterializedViewDefinition.fingerprint` decide whether Dune needs an update at all, so re-running a sync
task changes nothing (no new query version, no billed view refresh) when the code did not change.
"""

from __future__ import annotations

import hashlib
import json
import re
from collections.abc import Mapping, Sequence
from dataclasses import asdict, dataclass, field
from datetime import datetime, timezone
from typing import Any

from airflow_provider_dune.api.errors import DuneConfigurationError
from airflow_provider_dune.api.validation import (
    validate_query_id,
    validate_sql,
    validate_view_name,
    validate_view_performance,
)

PARAMETER_TYPES = ("text", "number", "datetime", "enum")
_PARAMETER_KEY = re.compile(r"^[A-Za-z_][A-Za-z0-9_]*$")
_CRON_FIELDS = 5


def _parameter(raw: Any, where: str) -> dict[str, Any]:
    if isinstance(raw, str):
        raw = {"key": raw}
    if not isinstance(raw, Mapping):
        raise DuneConfigurationError(f"{where} must be a name or a mapping with 'key', got {raw!r}")
    key = raw.get("key")
    if not isinstance(key, str) or not _PARAMETER_KEY.match(key):
        raise DuneConfigurationError(f"{where}: 'key' must be a name such as 'start_date', got {key!r}")
    kind = raw.get("type", "text")
    if kind not in PARAMETER_TYPES:
        raise DuneConfigurationError(
            f"{where} ({key}): 'type' must be one of {', '.join(PARAMETER_TYPES)}, got {kind!r}"
        )
    value = raw.get("value", "")
    if not isinstance(value, (str, int, float)) or isinstance(value, bool):
        raise DuneConfigurationError(f"{where} ({key}): 'value' (the default) must be a string or number")
    parameter: dict[str, Any] = {"key": key, "type": kind, "value": str(value)}
    if kind == "enum":
        options = raw.get("enumOptions")
        if not isinstance(options, list) or not options or not all(isinstance(o, str) for o in options):
            raise DuneConfigurationError(f"{where} ({key}): an enum parameter needs 'enumOptions', a list of strings")
        parameter["enumOptions"] = list(options)
    return parameter


@dataclass(frozen=True)
class QueryDefinition:
    """A saved Dune query as code.

    :param name: the query's name on dune.com.
    :param sql: its SQL (``{{param}}`` placeholders for parameters).
    :param description: free text.
    :param parameters: parameter names, or mappings ``{"key", "type", "value", "enumOptions"}``.
    :param is_private: visible to the owning team only.
    :param tags: labels on dune.com.
    """

    name: str
    sql: str
    description: str = ""
    parameters: tuple[Mapping[str, Any], ...] = ()
    is_private: bool = False
    tags: tuple[str, ...] = field(default_factory=tuple)

    @classmethod
    def build(
        cls,
        *,
        name: Any,
        sql: Any,
        description: Any = "",
        parameters: Any = None,
        is_private: Any = False,
        tags: Any = None,
    ) -> QueryDefinition:
        """Validated definition; every problem is a
        :class:`~airflow_provider_dune.api.errors.DuneConfigurationError` that says what to fix."""
        if not isinstance(name, str) or not name.strip():
            raise DuneConfigurationError(f"the query name must be a non-empty string, got {name!r}")
        if description is None:
            description = ""
        if not isinstance(description, str):
            raise DuneConfigurationError(f"description must be a string, got {description!r}")
        if not isinstance(is_private, bool):
            raise DuneConfigurationError(f"is_private must be True or False, got {is_private!r}")
        if parameters is None:
            parameters = ()
        if isinstance(parameters, (str, Mapping)) or not isinstance(parameters, Sequence):
            raise DuneConfigurationError("parameters must be a list of names or of parameter mappings")
        checked = tuple(_parameter(p, f"parameters[{i}]") for i, p in enumerate(parameters))
        keys = [p["key"] for p in checked]
        if len(set(keys)) != len(keys):
            raise DuneConfigurationError(f"parameters repeat a key: {keys}")
        if tags is None:
            tags = ()
        if isinstance(tags, str) or not all(isinstance(t, str) and t for t in tags):
            raise DuneConfigurationError(f"tags must be a list of non-empty strings, got {tags!r}")
        text = validate_sql(sql)
        missing = [key for key in keys if "{{" + key + "}}" not in text.replace(" ", "")]
        if missing:
            raise DuneConfigurationError(
                f"parameters {missing} do not appear in the SQL as {{{{name}}}}; remove them or use them in the SQL"
            )
        return cls(name.strip(), text, description, checked, is_private, tuple(tags))

    def to_request(self) -> dict[str, Any]:
        return {
            "name": self.name,
            "query_sql": self.sql,
            "description": self.description,
            "parameters": [dict(p) for p in self.parameters],
            "is_private": self.is_private,
            "tags": list(self.tags),
        }

    def changes_from(self, current: Mapping[str, Any]) -> list[str]:
        """The fields that differ from a ``GET /v1/query/{queryId}`` answer (empty: nothing to update)."""
        changed = []
        if _normalise_sql(str(current.get("query_sql") or "")) != _normalise_sql(self.sql):
            changed.append("sql")
        if (current.get("name") or "") != self.name:
            changed.append("name")
        if (current.get("description") or "") != self.description:
            changed.append("description")
        if bool(current.get("is_private")) != self.is_private:
            changed.append("is_private")
        if sorted(current.get("tags") or []) != sorted(self.tags):
            changed.append("tags")
        theirs = {
            str(p.get("key")): (str(p.get("type") or "text"), str(p.get("value") or ""))
            for p in current.get("parameters") or []
            if isinstance(p, Mapping)
        }
        ours = {str(p["key"]): (str(p["type"]), str(p["value"])) for p in self.parameters}
        if theirs != ours:
            changed.append("parameters")
        return changed


def _normalise_sql(sql: str) -> str:
    """SQL compared without trailing spaces and surrounding blank lines (editors add them, Dune may strip them)."""
    return "\n".join(line.rstrip() for line in sql.strip().splitlines())


def validate_cron(value: Any) -> str | None:
    """A five-field cron expression, or ``None`` for no Dune-side schedule."""
    if value is None or value == "":
        return None
    if not isinstance(value, str) or len(value.split()) != _CRON_FIELDS:
        raise DuneConfigurationError(
            f"cron_expression must have five fields such as '0 */6 * * *' (or be None), got {value!r}"
        )
    return " ".join(value.split())


_RFC3339 = re.compile(r"^(\d{4}-\d\d-\d\d)[Tt](\d\d:\d\d:\d\d)(?:\.(\d+))?([Zz]|[+-]\d\d:\d\d)$")


def normalise_rfc3339(value: Any, what: str) -> str:
    """One spelling of an RFC 3339 time, in UTC: ``2027-01-01T01:00:00.500+01:00`` -> ``2027-01-01T00:00:00.5Z``.

    Equal instants spelled differently (``Z`` or ``+00:00``, fractional zeros, another offset) compare equal, so
    a definition is not sent again (a billed view refresh) when only the spelling changed.
    """
    match = _RFC3339.match(value.strip()) if isinstance(value, str) else None
    try:
        if match is None:
            raise ValueError("not an RFC 3339 time")
        day, clock, fraction, zone = match.groups()
        zone = "+00:00" if zone in ("Z", "z") else zone
        when = datetime.fromisoformat(f"{day}T{clock}{zone}").astimezone(timezone.utc)
    except ValueError:
        raise DuneConfigurationError(
            f"{what} must be an RFC 3339 time with its offset, such as '2027-01-01T00:00:00Z', got {value!r}"
        ) from None
    # The fraction is kept as written (up to nanoseconds), minus trailing zeros: offsets are whole minutes.
    digits = (fraction or "").rstrip("0")
    return when.strftime("%Y-%m-%dT%H:%M:%S") + (f".{digits}" if digits else "") + "Z"


@dataclass(frozen=True)
class MaterializedViewDefinition:
    """A materialized view as code: Dune stores a query's result as a table and refreshes it on ``cron``.

    :param name: full name, e.g. ``dune.team.result_daily_volume``.
    :param query_id: the saved query whose result the view holds.
    :param cron_expression: Dune-side refresh schedule (``None``: refreshed only on request).
    :param performance: ``small``, ``medium`` or ``large``.
    :param is_private: visible to the owning team only.
    :param expires_at: when Dune drops the view (RFC 3339, kept in UTC as ``...Z``), ``None`` for never.
    """

    name: str
    query_id: int
    cron_expression: str | None = None
    performance: str = "medium"
    is_private: bool = False
    expires_at: str | None = None

    @classmethod
    def build(
        cls,
        *,
        name: Any,
        query_id: Any,
        cron_expression: Any = None,
        performance: Any = "medium",
        is_private: Any = False,
        expires_at: Any = None,
    ) -> MaterializedViewDefinition:
        if not isinstance(is_private, bool):
            raise DuneConfigurationError(f"is_private must be True or False, got {is_private!r}")
        return cls(
            validate_view_name(name),
            validate_query_id(query_id),
            validate_cron(cron_expression),
            validate_view_performance(performance),
            is_private,
            None if expires_at is None else normalise_rfc3339(expires_at, "expires_at"),
        )

    def to_request(self) -> dict[str, Any]:
        body: dict[str, Any] = {
            "name": self.name,
            "query_id": self.query_id,
            "performance": self.performance,
            "is_private": self.is_private,
        }
        if self.cron_expression is not None:
            body["cron_expression"] = self.cron_expression
        if self.expires_at is not None:
            body["expires_at"] = self.expires_at
        return body

    def fingerprint(self) -> str:
        """A stable digest: Dune's API does not return the schedule or tier, so a stored digest tells a change."""
        return hashlib.sha256(json.dumps(asdict(self), sort_keys=True).encode()).hexdigest()[:16]


_TABLE_PART = re.compile(r"^[a-z0-9_]{1,128}$")
#: Column types Dune's uploads accept (its docs list these; ``varchar`` is the default for text).
COLUMN_TYPES = (
    "varchar",
    "integer",
    "bigint",
    "double",
    "boolean",
    "timestamp",
    "date",
    "varbinary",
    "uint256",
    "int256",
)


def validate_table_part(value: Any, what: str) -> str:
    """A namespace or table name: lower-case letters, digits and ``_`` (Dune's rule for uploaded tables)."""
    if not isinstance(value, str) or not _TABLE_PART.match(value):
        raise DuneConfigurationError(f"{what} must be lower-case letters, digits and '_' (at most 128), got {value!r}")
    return value


@dataclass(frozen=True)
class TableDefinition:
    """An uploaded Dune table: ``dune.<namespace>.<table_name>`` with typed columns.

    :param namespace: your team or user namespace on Dune.
    :param table_name: the table's name.
    :param columns: ``(name, type, nullable)`` per column; types from :data:`COLUMN_TYPES`.
    :param description: free text.
    :param is_private: visible to the owning team only.
    """

    namespace: str
    table_name: str
    columns: tuple[tuple[str, str, bool], ...]
    description: str = ""
    is_private: bool = False

    @property
    def full_name(self) -> str:
        return f"dune.{self.namespace}.{self.table_name}"

    @property
    def column_names(self) -> tuple[str, ...]:
        return tuple(name for name, _, _ in self.columns)

    @classmethod
    def build(
        cls, *, namespace: Any, table_name: Any, schema: Any, description: Any = "", is_private: Any = False
    ) -> TableDefinition:
        """``schema``: a list of ``{"name", "type", "nullable"}`` mappings (``nullable`` defaults to True)."""
        if isinstance(schema, (str, Mapping)) or not isinstance(schema, Sequence) or not schema:
            raise DuneConfigurationError('schema must be a non-empty list of {"name": ..., "type": ...} mappings')
        columns = []
        for index, column in enumerate(schema):
            if not isinstance(column, Mapping):
                raise DuneConfigurationError(f"schema[{index}] must be a mapping with 'name' and 'type'")
            name = validate_table_part(column.get("name"), f"schema[{index}] name")
            kind = column.get("type")
            if not isinstance(kind, str) or kind.lower() not in COLUMN_TYPES:
                raise DuneConfigurationError(
                    f"schema[{index}] ({name}): type must be one of {', '.join(COLUMN_TYPES)}, got {kind!r}"
                )
            nullable = column.get("nullable", True)
            if not isinstance(nullable, bool):
                raise DuneConfigurationError(f"schema[{index}] ({name}): nullable must be True or False")
            columns.append((name, kind.lower(), nullable))
        names = [c[0] for c in columns]
        if len(set(names)) != len(names):
            raise DuneConfigurationError(f"schema repeats a column name: {names}")
        if not isinstance(description, str) or not isinstance(is_private, bool):
            raise DuneConfigurationError("description must be a string and is_private True or False")
        return cls(
            validate_table_part(namespace, "namespace"),
            validate_table_part(table_name, "table_name"),
            tuple(columns),
            description,
            is_private,
        )

    def to_request(self) -> dict[str, Any]:
        return {
            "namespace": self.namespace,
            "table_name": self.table_name,
            "description": self.description,
            "is_private": self.is_private,
            "schema": [{"name": n, "type": t, "nullable": null} for n, t, null in self.columns],
        }
