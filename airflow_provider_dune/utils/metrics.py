"""Metrics through Airflow's own metrics (StatsD, DogStatsD or OpenTelemetry, as the deployment configures).

Every name starts with ``dune.`` (after Airflow's ``[metrics] statsd_prefix``, ``airflow`` by default). The
dimensions are both in the name (plain StatsD has no tags) and in ``tags`` (for DogStatsD and OpenTelemetry):

- ``dune.requests.<endpoint>.<status>``: requests sent, by endpoint and HTTP status (``no_answer`` when none
  came); tags ``endpoint``, ``status``.
- ``dune.rate_limited.<endpoint>``: answers 429; tag ``endpoint``.
- ``dune.budget_wait.<bucket>``: timing, how long a request waited for the API key's budget (``read`` or
  ``write``); tag ``bucket``.
- ``dune.runs.started.<kind>``: billed runs started (``pipeline``, ``query``, ``sql``, ``view_refresh``,
  ``view_upsert``); tag ``kind``.
- ``dune.runs.finished.<kind>.<outcome>``: runs a task saw end (``success``, ``failed``, ``cancelled``,
  ``timeout``, ``error``); tags ``kind``, ``outcome``.
- ``dune.credits.<kind>``: counter of credits the finished runs cost (fractional); tag ``kind``.
- ``dune.detection_lag``: timing, from the end Dune reports for a run to the moment the task saw it; tag
  ``kind``.

Metrics never fail or slow down the work they describe: any error in the metrics backend is swallowed.
"""

from __future__ import annotations

import logging
import re
from typing import Any

log = logging.getLogger(__name__)

PREFIX = "dune"
_UNSAFE = re.compile(r"[^A-Za-z0-9_-]+")


def _stats() -> Any:
    """Airflow's ``Stats`` (``airflow.sdk.observability`` from Airflow 3.3, ``airflow.stats`` before)."""
    try:
        from airflow.sdk.observability.stats import Stats
    except ImportError:
        from airflow.stats import Stats
    return Stats


def _part(value: object) -> str:
    """One dot-free segment of a metric name (Airflow's name validation allows letters, digits, ``_``, ``-``)."""
    return _UNSAFE.sub("_", str(value)).strip("_") or "unknown"


def metric_name(*parts: object) -> str:
    """``dune.<part>.<part>...`` with every part made safe for StatsD."""
    return ".".join([PREFIX, *(_part(part) for part in parts)])


def _emit(kind: str, name: str, value: float | None, tags: dict[str, str]) -> None:
    try:
        stats = _stats()
        if kind == "incr":
            stats.incr(name, 1 if value is None else value, tags=tags)
        else:
            stats.timing(name, value, tags=tags)
    except Exception as err:  # a metrics backend problem must never fail a task
        log.debug("Could not send metric %s: %s", name, err)


def request_sent(endpoint: str, status: int | None) -> None:
    """One request's outcome; 429s are also counted as ``dune.rate_limited``."""
    shown = str(status) if status is not None else "no_answer"
    _emit("incr", metric_name("requests", endpoint, shown), None, {"endpoint": endpoint, "status": shown})
    if status == 429:
        _emit("incr", metric_name("rate_limited", endpoint), None, {"endpoint": endpoint})


def budget_waited(bucket: str, seconds: float) -> None:
    """A request waited ``seconds`` for the key's budget."""
    _emit("timing", metric_name("budget_wait", bucket), seconds * 1000.0, {"bucket": bucket})


def run_started(kind: str) -> None:
    _emit("incr", metric_name("runs", "started", kind), None, {"kind": kind})


def run_finished(kind: str, outcome: str, *, credits: float | None = None, detection_lag: float | None = None) -> None:
    """A run ended: its outcome, what it cost, and how long after its end the task saw it (seconds)."""
    _emit("incr", metric_name("runs", "finished", kind, outcome), None, {"kind": kind, "outcome": outcome})
    if credits is not None and credits > 0:
        _emit("incr", metric_name("credits", kind), round(credits, 4), {"kind": kind})
    if detection_lag is not None and detection_lag >= 0:
        _emit("timing", metric_name("detection_lag"), detection_lag * 1000.0, {"kind": kind})
