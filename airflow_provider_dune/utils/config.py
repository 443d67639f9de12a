"""The provider's options in Airflow's configuration (section ``[dune]``, declared in the provider info)."""

from __future__ import annotations

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
