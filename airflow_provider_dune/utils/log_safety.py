"""Keeping the Dune API key out of what Airflow prints while it reads the connection."""

from __future__ import annotations

import logging
from typing import Any

from airflow_provider_dune.version_compat import AIRFLOW_V_3_0_PLUS, AIRFLOW_V_3_1_PLUS, amask_secret, mask_secret


def _in_process_comms() -> Any:
    """The task runner's channel to its supervisor, when this process has one (Airflow 3)."""
    try:
        from airflow.sdk.execution_time import task_runner
    except ImportError:  # Airflow 2.11
        return None
    return getattr(task_runner, "SUPERVISOR_COMMS", None)


def quiet_debug_lines_that_echo_secrets() -> bool:
    """Before a connection is read on Airflow 3.0: keep its password out of unconfigured debug output.

    Airflow 3.0's in-process runs (``airflow dags test``, ``airflow tasks test``) never configure structlog, so
    structlog's defaults print every debug line, and the in-process supervisor channel logs each message it
    sends at debug level: ``Sending request msg=MaskSecret(value='<the password>')`` for every connection
    password (and extra) Airflow reads, in clear. Airflow 3.1+ configures structlog with ``[logging]
    logging_level`` in every process; this applies that level on 3.0 when nothing configured structlog and a
    supervisor channel is there to be logged. Returns whether it did. ``logging_level = DEBUG`` is the user's
    choice and is left alone.
    """
    if not AIRFLOW_V_3_0_PLUS or AIRFLOW_V_3_1_PLUS or _in_process_comms() is None:
        return False
    import structlog

    if structlog.is_configured():
        return False
    from airflow.configuration import conf

    level = logging.getLevelName(str(conf.get("logging", "logging_level", fallback="INFO")).upper())
    if not isinstance(level, int):
        level = logging.INFO
    if level <= logging.DEBUG:
        return False
    structlog.configure(wrapper_class=structlog.make_filtering_bound_logger(level))
    return True


def mask_key_from_extra(api_key: str) -> None:
    """Register a key taken from the connection's extra for redaction (Airflow masks Password fields itself;
    in a task it also tells the supervisor, which writes the task log)."""
    quiet_debug_lines_that_echo_secrets()
    mask_secret(api_key)


async def amask_key_from_extra(api_key: str) -> None:
    """:func:`mask_key_from_extra` from an event loop (a trigger).

    Airflow 3.3+ has ``amask_secret`` for this. Before it, ``mask_secret`` tells the supervisor through a
    synchronous call that cannot run in the event loop's thread: on Airflow 3.0 it raises ("You cannot use
    AsyncToSync in the same thread as an async event loop"), failing the trigger; on 3.1 and 3.2 the supervisor
    is silently not told. So it runs in a worker thread there, as Airflow's own connection lookup does.
    """
    if amask_secret is not None:
        quiet_debug_lines_that_echo_secrets()
        await amask_secret(api_key)
        return
    from asgiref.sync import sync_to_async

    await sync_to_async(mask_key_from_extra)(api_key)
