"""The provider's options in Airflow's configuration (section ``[dune]``, declared in the provider info)."""

from __future__ import annotations

import logging

log = logging.getLogger(__name__)

SECTION = "dune"
DEFAULT_MIN_POLL_INTERVAL = 1.0


def min_poll_interval() -> float:
    """``[dune] min_poll_interval``: the shortest ``poll_interval``/``poke_interval`` a task may ask for."""
    from airflow.configuration import conf

    try:
        value = conf.getfloat(SECTION, "min_poll_interval", fallback=DEFAULT_MIN_POLL_INTERVAL)
    except ValueError:
        return DEFAULT_MIN_POLL_INTERVAL
    return value if value >= 0 else DEFAULT_MIN_POLL_INTERVAL


DEFAULT_BUDGET_SHARE = 1.0


def budget_share() -> float:
    """``[dune] budget_share``: the share (0-1] of each key's ``reads_per_minute``/``writes_per_minute`` this
    process paces to, for deployments where several processes (triggerers, workers) poll with one key."""
    from airflow.configuration import conf

    raw = conf.get(SECTION, "budget_share", fallback=None)
    if raw is None or str(raw).strip() == "":
        return DEFAULT_BUDGET_SHARE
    try:
        value = float(raw)
    except ValueError:
        value = float("nan")
    if 0 < value <= 1:
        return value
    if raw not in _WARNED:
        _WARNED.add(raw)
        log.warning(
            "[dune] budget_share = %r is not a number above 0 and at most 1 (e.g. 0.5 for one of two processes "
            "sharing a key); pacing to the whole budget instead",
            raw,
        )
    return DEFAULT_BUDGET_SHARE


_WARNED: set[str] = set()
