"""Since when a saved query has had its current version, as far as this deployment has seen.

Dune's query answer has a ``version`` counter but no time of the last change, and its latest result says
neither. To reuse a latest result safely, the provider notes the first time it saw each version of a query (or
the moment it changed the query itself, in :class:`~airflow_provider_dune.operators.definitions.DuneSyncQueryOperator`);
a result submitted after that moment, while the version is still the same, was computed by the current SQL.
The note is an Airflow Variable ``airflow_provider_dune_query_version__<query_id>`` holding
``{"version": 3, "since": "<RFC 3339>"}``; it holds no secret. Notes that cannot be read or written are ignored
(with a log line): the only cost is a result not reused.
"""

from __future__ import annotations

import json
import logging
from datetime import datetime, timezone
from typing import Any

from airflow_provider_dune.version_compat import Variable

log = logging.getLogger(__name__)

KEY_PREFIX = "airflow_provider_dune_query_version__"


def _key(query_id: int) -> str:
    return f"{KEY_PREFIX}{int(query_id)}"


def note(query_id: int, version: Any, when: datetime | None = None) -> None:
    """Record that ``query_id`` has had ``version`` since ``when`` (default: now)."""
    if isinstance(version, bool) or not isinstance(version, int):
        return
    since = (when or datetime.now(timezone.utc)).astimezone(timezone.utc).isoformat()
    try:
        Variable.set(
            _key(query_id),
            json.dumps({"version": version, "since": since}),
            description=f"Since when Dune query {query_id} has this version (lets a fresh result be reused)",
        )
    except Exception as err:
        log.warning("Could not note version %s of Dune query %s: %s", version, query_id, err)


def current_since(query_id: int, version: Any) -> datetime | None:
    """When this deployment first saw ``version`` of the query, if it has a note of that very version."""
    try:
        raw = Variable.get(_key(query_id), None)
        record = json.loads(raw) if raw else None
        if not isinstance(record, dict) or record.get("version") != version or isinstance(version, bool):
            return None
        since = datetime.fromisoformat(str(record["since"]))
    except Exception as err:  # an unreadable note only means no reuse this time
        log.warning("Ignoring the version note of Dune query %s: %s", query_id, err)
        return None
    return since if since.tzinfo else since.replace(tzinfo=timezone.utc)
