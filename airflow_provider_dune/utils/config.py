"""The provider's options in Airflow's configuration (section ``[dune]``, declared in the provider info).

A wrong value never raises: options are read while DAG files are imported (an operator checks its
``poll_interval`` against ``min_poll_interval``), so one typo in ``airflow.cfg`` would break the import of every
DAG that uses Dune. It is logged once as a warning naming the option, and the default is used instead.
"""

from __future__ import annotations

import logging
import math
from collections.abc import Callable

log = logging.getLogger(__name__)

SECTION = "dune"
DEFAULT_MIN_POLL_INTERVAL = 1.0

_WARNED: set[tuple[str, str]] = set()


def _read_number(option: str, default: float | None, accept: Callable[[float], bool], expected: str) -> float | None:
    """``[dune] option`` as a number that ``accept`` takes, else ``default`` (with a warning, once per value;
    ``None`` for an option whose absence means something).

    :param expected: what a valid value is, for the warning (e.g. ``"a number of seconds, 0 or more"``).
    """
    from airflow.configuration import conf

    raw = conf.get(SECTION, option, fallback=None)
    if raw is None or str(raw).strip() == "":
        return default
    try:
        value = float(raw)
    except ValueError:
        value = math.nan
    if math.isfinite(value) and accept(value):
        return value
    if (option, str(raw)) not in _WARNED:
        _WARNED.add((option, str(raw)))
        log.warning(
            "[%s] %s = %r is not %s (airflow.cfg or AIRFLOW__%s__%s); %s instead",
            SECTION,
            option,
            str(raw),
            expected,
            SECTION.upper(),
            option.upper(),
            f"using {default:g}" if default is not None else "treating it as unset",
        )
    return default


def min_poll_interval() -> float:
    """``[dune] min_poll_interval``: the shortest ``poll_interval``/``poke_interval`` a task may ask for."""
    value = _read_number(
        "min_poll_interval", DEFAULT_MIN_POLL_INTERVAL, lambda value: value >= 0, "a number of seconds, 0 or more"
    )
    return DEFAULT_MIN_POLL_INTERVAL if value is None else value


def configured_budget_share() -> float | None:
    """``[dune] budget_share``: the share (0-1] of each key's ``reads_per_minute``/``writes_per_minute`` this
    process paces to, when set; ``None`` (unset) lets triggerers share each key's budget among themselves
    (:mod:`airflow_provider_dune.utils.budget_leases`)."""
    return _read_number(
        "budget_share",
        None,
        lambda value: 0 < value <= 1,
        "a number above 0 and at most 1 (e.g. 0.5 for one of two processes sharing a key)",
    )
