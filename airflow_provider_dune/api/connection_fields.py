"""The settings a Dune connection holds, described once for the connection parser and the connection form.

Kept free of Airflow imports: Airflow reads the provider info (and so this module) while it is itself being
imported.
"""

from __future__ import annotations

from dataclasses import dataclass

DEFAULT_BASE_URL = "https://api.dune.com/api"
DEFAULT_TIMEOUT = 30.0
DEFAULT_CONNECT_TIMEOUT = 10.0
DEFAULT_MAX_ATTEMPTS = 5
DEFAULT_RETRY_MIN_WAIT = 1.0
DEFAULT_RETRY_MAX_WAIT = 60.0
#: Dune's Free-plan budget per API key: the safe default until the connection says otherwise.
DEFAULT_READS_PER_MINUTE = 40
DEFAULT_WRITES_PER_MINUTE = 15
#: Smallest pacing budget (requests a minute) besides 0 (no pacing): below it, one request waits over a minute.
MIN_REQUESTS_PER_MINUTE = 1
#: Dune's default cap on datapoints (rows x columns) per results request; an account setting.
DEFAULT_MAX_DATAPOINTS_PER_REQUEST = 250_000

#: The connection form's label of Airflow's Password field, which holds the API key.
API_KEY_LABEL = "API Key"
#: The connection form's label of Airflow's Host field (the form adds "(optional)").
BASE_URL_LABEL = "API base URL"


def connection_name(conn_id: str | None) -> str:
    """``Airflow connection 'dune_default'``, or ``the Airflow connection`` when the id is not known."""
    return f"Airflow connection {conn_id!r}" if conn_id else "the Airflow connection"


def form_field(label: str, conn_id: str | None = None) -> str:
    """How messages name a field of the connection form, by its label: ``the API Key field of Airflow
    connection 'dune_default'``."""
    return f"the {label} field of {connection_name(conn_id)}"


@dataclass(frozen=True)
class ExtraSetting:
    """One setting read from the connection's extra, described once for the parser and the connection form.

    :param name: key in the extra JSON (the form stores it under this name).
    :param label: label of the form field.
    :param kind: ``number``, ``integer`` or ``boolean``.
    :param default: value used when the extra does not set it.
    :param minimum: smallest accepted value (numbers only).
    :param description: help text under the form field.
    :param zero_or_at_least: when set, the only accepted values below it are ``0`` ("off") and ``minimum``
        does not apply above ``0`` (a budget of a thousandth of a read a minute waits hours per read).
    """

    name: str
    label: str
    kind: str
    default: float | bool
    description: str
    minimum: float | None = None
    zero_or_at_least: float | None = None

    def field(self, conn_id: str | None = None) -> str:
        """How messages name this setting: its form label, and its key for an extra written as JSON."""
        return f"the {self.label} field ({self.name} in the extra) of {connection_name(conn_id)}"


#: Every setting the connection's extra may hold, in form order. The API key is not here: it is the Password
#: field, labeled :data:`API_KEY_LABEL`.
EXTRA_SETTINGS: tuple[ExtraSetting, ...] = (
    ExtraSetting(
        "timeout",
        "Read timeout (seconds)",
        "number",
        DEFAULT_TIMEOUT,
        f"How long to wait for Dune's answer to one request (default {DEFAULT_TIMEOUT:g}).",
        minimum=0.1,
    ),
    ExtraSetting(
        "connect_timeout",
        "Connect timeout (seconds)",
        "number",
        DEFAULT_CONNECT_TIMEOUT,
        f"How long to wait for the TCP/TLS connection (default {DEFAULT_CONNECT_TIMEOUT:g}).",
        minimum=0.1,
    ),
    ExtraSetting(
        "max_retries",
        "Tries per request",
        "integer",
        DEFAULT_MAX_ATTEMPTS,
        "Total tries for a request that failed with a 429, a 5xx or a network error, the first included "
        f"(default {DEFAULT_MAX_ATTEMPTS}). Requests that start a billed run are only retried when "
        "Dune certainly did not start it.",
        minimum=1,
    ),
    ExtraSetting(
        "retry_min_wait",
        "First retry wait (seconds)",
        "number",
        DEFAULT_RETRY_MIN_WAIT,
        f"First backoff step; it doubles on every retry (default {DEFAULT_RETRY_MIN_WAIT:g}).",
        minimum=0,
    ),
    ExtraSetting(
        "retry_max_wait",
        "Longest retry wait (seconds)",
        "number",
        DEFAULT_RETRY_MAX_WAIT,
        f"Cap on one backoff step (default {DEFAULT_RETRY_MAX_WAIT:g}).",
        minimum=0,
    ),
    ExtraSetting(
        "reads_per_minute",
        "Reads per minute",
        "number",
        DEFAULT_READS_PER_MINUTE,
        "Your Dune plan's read budget for this key (status, results; default "
        f"{DEFAULT_READS_PER_MINUTE}, the Free plan). Every task and trigger in a process shares it, so Dune never has "
        f"to answer 429; 0 turns pacing off, otherwise at least {MIN_REQUESTS_PER_MINUTE}.",
        minimum=0,
        zero_or_at_least=MIN_REQUESTS_PER_MINUTE,
    ),
    ExtraSetting(
        "writes_per_minute",
        "Runs started per minute",
        "number",
        DEFAULT_WRITES_PER_MINUTE,
        f"Your plan's budget for executions and refreshes (default {DEFAULT_WRITES_PER_MINUTE}); 0 turns pacing off, "
        f"otherwise at least {MIN_REQUESTS_PER_MINUTE}.",
        minimum=0,
        zero_or_at_least=MIN_REQUESTS_PER_MINUTE,
    ),
    ExtraSetting(
        "max_datapoints_per_request",
        "Datapoints per results request",
        "integer",
        DEFAULT_MAX_DATAPOINTS_PER_REQUEST,
        "Your Dune account's cap on rows x columns per results request (default "
        f"{DEFAULT_MAX_DATAPOINTS_PER_REQUEST:,}); result pages are sized to stay under it.",
        minimum=1,
    ),
    ExtraSetting(
        "credit_limit",
        "Credit ceiling (credits)",
        "number",
        0,
        "Refuse to start billed runs once this billing period used this many credits (checked before every "
        "start, at most one usage read a minute; default 0: no ceiling).",
        minimum=0,
    ),
    ExtraSetting(
        "credit_limit_percent",
        "Credit ceiling (% of included)",
        "number",
        0,
        "The same ceiling as a percentage of your plan's included credits, e.g. 90 (default 0: none). With both "
        "set, the lower applies.",
        minimum=0,
    ),
    ExtraSetting(
        "start_when_usage_unknown",
        "Start when usage is unknown",
        "boolean",
        False,
        "With a credit ceiling set, start runs even when Dune's usage cannot be read (default: refuse).",
    ),
    ExtraSetting(
        "run_credit_warning",
        "Warn above (credits per run)",
        "number",
        0,
        "Log a warning when one run cost more than this many credits (default 0: never).",
        minimum=0,
    ),
    ExtraSetting(
        "allow_insecure_http",
        "Allow plain http",
        "boolean",
        False,
        "Send the API key over plain http:// to a host that is not loopback (a trusted private network only).",
    ),
)
