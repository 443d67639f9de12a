"""Local validation of user input before anything is sent to Dune.

Errors raise :class:`~airflow_provider_dune.api.errors.DuneConfigurationError` with a message that says what to
fix, so a bad DAG fails at parse time or at the start of ``execute`` instead of after a billed request.
"""

from __future__ import annotations

import json
import math
from collections.abc import Iterator, Mapping, Sequence
from datetime import timedelta
from typing import Any

from airflow_provider_dune.api.errors import DuneConfigurationError

PERFORMANCE_TIERS = ("medium", "large")
#: Dune's newer docs for materialized views (duneanalytics/skills, matview-management) add ``small``.
VIEW_PERFORMANCE_TIERS = ("small", "medium", "large")
#: Longest interval or timeout accepted: anything longer is a mistake (and overflows Airflow's own timers).
MAX_SECONDS = 366 * 24 * 3600.0
NODE_ACTIONS = ("query_execution", "materialized_view_refresh")
_NODE_KEYS = frozenset({"id", "dependencies", *NODE_ACTIONS})


def validate_query_id(value: Any, *, what: str = "query_id") -> int:
    """Return ``value`` as a positive ``int`` (numeric strings from templates are accepted)."""
    if isinstance(value, bool):
        raise DuneConfigurationError(f"{what} must be a positive integer Dune query id, got {value!r}")
    if isinstance(value, str) and value.strip().isascii() and value.strip().isdigit():
        value = int(value.strip())
    if not isinstance(value, int) or value <= 0:
        raise DuneConfigurationError(
            f"{what} must be a positive integer Dune query id (the number in dune.com/queries/<id>), got {value!r}"
        )
    return value


def validate_performance(value: Any, *, what: str = "performance", allow_small: bool = False) -> str:
    """Return the performance tier in lower case: ``medium`` or ``large`` (Dune's spec).

    :param allow_small: also accept ``small``, which Dune's newer docs list for materialized views only.
    """
    tiers = VIEW_PERFORMANCE_TIERS if allow_small else PERFORMANCE_TIERS
    if isinstance(value, str) and value.strip().lower() in tiers:
        return value.strip().lower()
    note = "" if allow_small or value != "small" else " ('small' is accepted for materialized-view refreshes only)"
    raise DuneConfigurationError(f"{what} must be one of {', '.join(tiers)}, got {value!r}{note}")


def validate_view_performance(value: Any, *, what: str = "performance") -> str:
    """Return a materialized-view refresh tier: ``small``, ``medium`` or ``large``."""
    return validate_performance(value, what=what, allow_small=True)


def validate_query_parameters(value: Any, *, what: str = "query_parameters") -> dict[str, Any]:
    """Return a JSON-serialisable ``{name: value}`` dict (``None`` means no parameters)."""
    if value is None:
        return {}
    if isinstance(value, str):
        # A templated value rendered to a JSON string (e.g. "{{ params.x | tojson }}").
        try:
            value = json.loads(value)
        except ValueError:
            raise DuneConfigurationError(
                f"{what} must be a dict of parameter name to value, got the string {value!r}"
            ) from None
    if not isinstance(value, Mapping):
        raise DuneConfigurationError(f"{what} must be a dict of parameter name to value, got {type(value).__name__}")
    for key in value:
        if not isinstance(key, str) or not key:
            raise DuneConfigurationError(f"{what} keys must be non-empty parameter names, got {key!r}")
    try:
        json.dumps(dict(value), allow_nan=False)
    except ValueError:
        raise DuneConfigurationError(f"{what} values must be finite numbers (no NaN or infinity)") from None
    except (TypeError, RecursionError) as err:
        raise DuneConfigurationError(
            f"{what} values must be JSON-serialisable (str, int, float, bool, list): {err}"
        ) from None
    return dict(value)


def validate_optional_seconds(value: Any, what: str) -> float | None:
    """Like :func:`validate_seconds`, with ``None`` meaning "no limit"."""
    return None if value is None else validate_seconds(value, what)


def validate_seconds(value: Any, what: str, *, minimum: float = 0.0) -> float:
    """Seconds from a number or ``timedelta``: finite, above zero and at least ``minimum``."""
    seconds = value.total_seconds() if isinstance(value, timedelta) else value
    if isinstance(seconds, bool) or not isinstance(seconds, (int, float)):
        raise DuneConfigurationError(f"{what} must be a number of seconds or a timedelta, got {value!r}")
    seconds = float(seconds)
    if not math.isfinite(seconds) or seconds <= 0:
        raise DuneConfigurationError(f"{what} must be a finite number of seconds above zero, got {value!r}")
    if seconds > MAX_SECONDS:
        raise DuneConfigurationError(f"{what} must be at most {MAX_SECONDS:g} s (a year), got {value!r}")
    if seconds < minimum:
        raise DuneConfigurationError(
            f"{what} must be at least {minimum:g} s, got {value!r}: polling faster spends the API key's rate "
            "budget without noticing the end of a run sooner"
        )
    return seconds


def validate_positive_int(value: Any, what: str) -> int:
    """A whole number of at least 1 (numeric strings from templates accepted)."""
    if isinstance(value, str) and value.strip().isascii() and value.strip().isdigit():
        value = int(value.strip())
    if isinstance(value, bool) or not isinstance(value, int) or value < 1:
        raise DuneConfigurationError(f"{what} must be a whole number of at least 1, got {value!r}")
    return value


def validate_execution_id(value: Any, *, what: str = "execution id") -> str:
    """Return a non-empty id without characters that could change the request path."""
    if not isinstance(value, str) or not value.strip():
        raise DuneConfigurationError(f"{what} must be a non-empty string, got {value!r}")
    value = value.strip()
    if any(ch in value for ch in "/?#% \t\r\n"):
        raise DuneConfigurationError(f"{what} {value!r} contains characters that are not valid in a Dune id")
    return value


#: Longest SQL accepted (Dune's editor handles far less; this only stops a wrong file from being sent).
MAX_SQL_CHARS = 1_000_000


def validate_sql(value: Any, *, what: str = "sql") -> str:
    """Return SQL text: a non-empty string without NUL characters (surrounding whitespace removed)."""
    if not isinstance(value, str):
        raise DuneConfigurationError(f"{what} must be a string of SQL, got {type(value).__name__}")
    text = value.strip()
    if not text:
        raise DuneConfigurationError(f"{what} is empty: give the SQL to run (or the path of a .sql file)")
    if "\x00" in text:
        raise DuneConfigurationError(f"{what} contains a NUL character: is it a binary file?")
    if len(text) > MAX_SQL_CHARS:
        raise DuneConfigurationError(f"{what} has {len(text):,} characters, more than {MAX_SQL_CHARS:,}")
    return text


def validate_view_name(value: Any, *, what: str = "materialized view name") -> str:
    """Return a materialized view name such as ``dune.team.result_x``."""
    if not isinstance(value, str) or not value.strip():
        raise DuneConfigurationError(f"{what} must be a non-empty string such as 'dune.team.result_x'")
    value = value.strip()
    if any(ch in value for ch in "/?#% \t\r\n"):
        raise DuneConfigurationError(f"{what} {value!r} contains characters not allowed in a view name")
    return value


def _node_id(value: Any, where: str) -> int:
    if isinstance(value, str) and value.strip().isascii() and value.strip().lstrip("-").isdigit():
        value = int(value.strip())
    if isinstance(value, bool) or not isinstance(value, int):
        raise DuneConfigurationError(f"{where}: 'id' must be an integer, got {value!r}")
    return value


def _validate_node(index: int, raw: Any, default_performance: str) -> dict[str, Any]:
    where = f"pipeline node #{index + 1}"
    if not isinstance(raw, Mapping):
        raise DuneConfigurationError(f"{where} must be a dict in Dune's node shape, got {type(raw).__name__}")
    unknown = sorted(set(raw) - _NODE_KEYS)
    if unknown:
        raise DuneConfigurationError(f"{where} has unknown key(s) {unknown}; allowed keys are {sorted(_NODE_KEYS)}")
    if "id" not in raw:
        raise DuneConfigurationError(f"{where} has no 'id'")
    node_id = _node_id(raw["id"], where)
    where = f"pipeline node {node_id}"
    dependencies_raw = raw.get("dependencies") or []
    if isinstance(dependencies_raw, (str, bytes)) or not isinstance(dependencies_raw, Sequence):
        raise DuneConfigurationError(f"{where}: 'dependencies' must be a list of node ids")
    dependencies = [_node_id(d, f"{where} dependency") for d in dependencies_raw]
    actions = [key for key in NODE_ACTIONS if raw.get(key) is not None]
    if len(actions) != 1:
        raise DuneConfigurationError(
            f"{where} must have exactly one of 'query_execution' or 'materialized_view_refresh' "
            f"(found {actions or 'neither'})"
        )
    node: dict[str, Any] = {"id": node_id, "dependencies": dependencies}
    action = raw[actions[0]]
    if not isinstance(action, Mapping):
        raise DuneConfigurationError(f"{where}: '{actions[0]}' must be a dict")
    performance = validate_performance(action.get("performance", default_performance), what=f"{where} performance")
    if actions[0] == "query_execution":
        extra = sorted(set(action) - {"query_id", "performance", "query_parameters"})
        if extra:
            raise DuneConfigurationError(f"{where}: unknown query_execution key(s) {extra}")
        node["query_execution"] = {
            "query_id": validate_query_id(action.get("query_id"), what=f"{where} query_id"),
            "performance": performance,
            "query_parameters": validate_query_parameters(
                action.get("query_parameters"), what=f"{where} query_parameters"
            ),
        }
    else:
        extra = sorted(set(action) - {"name", "performance"})
        if extra:
            raise DuneConfigurationError(f"{where}: unknown materialized_view_refresh key(s) {extra}")
        node["materialized_view_refresh"] = {
            "name": validate_view_name(action.get("name"), what=f"{where} materialized view name"),
            "performance": performance,
        }
    return node


def validate_pipeline_nodes(nodes: Any, *, default_performance: str = "medium") -> list[dict[str, Any]]:
    """Check an explicit pipeline and return it normalised to Dune's node shape.

    Rules: at least one node, unique integer ids, dependencies that name other nodes of the pipeline, no
    dependency cycles, and exactly one of ``query_execution`` / ``materialized_view_refresh`` per node.
    ``nodes`` may also be a JSON string (a rendered template); a node without its own ``performance`` gets
    ``default_performance``.
    """
    if isinstance(nodes, (str, bytes)):
        try:
            nodes = json.loads(nodes)
        except (ValueError, RecursionError):
            raise DuneConfigurationError(
                "nodes must be a list of pipeline nodes in Dune's node shape, or that list as a JSON string; "
                "the string given is not valid JSON"
            ) from None
    if isinstance(nodes, Mapping) and "nodes" in nodes:
        nodes = nodes["nodes"]
    if isinstance(nodes, (str, bytes)) or not isinstance(nodes, Sequence) or not nodes:
        raise DuneConfigurationError("nodes must be a non-empty list of pipeline nodes in Dune's node shape")
    default_performance = validate_performance(default_performance)
    validated = [_validate_node(i, raw, default_performance) for i, raw in enumerate(nodes)]
    ids = [node["id"] for node in validated]
    duplicates = sorted({i for i in ids if ids.count(i) > 1})
    if duplicates:
        raise DuneConfigurationError(f"pipeline node ids must be unique; repeated: {duplicates}")
    known = set(ids)
    for node in validated:
        missing = [d for d in node["dependencies"] if d not in known]
        if missing:
            raise DuneConfigurationError(
                f"pipeline node {node['id']} depends on unknown node id(s) {missing}; known ids: {sorted(known)}"
            )
        if node["id"] in node["dependencies"]:
            raise DuneConfigurationError(f"pipeline node {node['id']} depends on itself")
    cycle = find_dependency_cycle({node["id"]: node["dependencies"] for node in validated})
    if cycle:
        path = " -> ".join(str(i) for i in cycle)
        raise DuneConfigurationError(f"pipeline nodes have a dependency cycle: {path}")
    return validated


def find_dependency_cycle(graph: Mapping[int, Sequence[int]]) -> list[int] | None:
    """Return one cycle (as a closed path of node ids) in a dependency graph, or ``None``.

    Iterative depth-first search: a chain of thousands of nodes must not hit Python's recursion limit.
    """
    state: dict[int, int] = {}  # 1 = on the current path, 2 = fully explored
    for start in graph:
        if start in state:
            continue
        path: list[int] = [start]
        pending: list[Iterator[int]] = [iter(graph.get(start, ()))]
        state[start] = 1
        while pending:
            dep = next(pending[-1], None)
            if dep is None:
                state[path.pop()] = 2
                pending.pop()
            elif state.get(dep) == 1:
                return [*path[path.index(dep) :], dep]
            elif dep not in state:
                state[dep] = 1
                path.append(dep)
                pending.append(iter(graph.get(dep, ())))
    return None
