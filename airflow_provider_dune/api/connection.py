"""Reading a Dune Airflow connection into validated settings (base URL, API key, timeouts, retries)."""

from __future__ import annotations

import ipaddress
import json
import math
import re
from collections.abc import Mapping
from dataclasses import dataclass, field
from typing import Any
from urllib.parse import urlsplit

from airflow_provider_dune.api.connection_fields import (
    API_KEY_LABEL,
    BASE_URL_LABEL,
    DEFAULT_BASE_URL,
    DEFAULT_CONNECT_TIMEOUT,
    DEFAULT_MAX_DATAPOINTS_PER_REQUEST,
    DEFAULT_READS_PER_MINUTE,
    DEFAULT_TIMEOUT,
    DEFAULT_WRITES_PER_MINUTE,
    EXTRA_SETTINGS,
    connection_name,
    form_field,
)
from airflow_provider_dune.api.credits import CreditGuard
from airflow_provider_dune.api.errors import DuneConfigurationError
from airflow_provider_dune.api.retry import RetryPolicy

_LOOPBACK_NAMES = frozenset({"localhost", "localhost.localdomain", "ip6-localhost"})


def is_loopback_host(hostname: str) -> bool:
    """``True`` for ``localhost`` and addresses in 127.0.0.0/8 or ``::1``."""
    name = hostname.strip("[]").lower()
    if name in _LOOPBACK_NAMES or name.endswith(".localhost"):
        return True
    try:
        return ipaddress.ip_address(name).is_loopback
    except ValueError:
        return False


#: Dotted labels of letters, digits, ``-`` and ``_`` (docker-compose service names use ``_``).
_HOST_NAME = re.compile(r"^[A-Za-z0-9_-]{1,63}(?:\.[A-Za-z0-9_-]{1,63})*\.?$")


def _shown(host: str) -> str:
    """``host`` as it may appear in an error message: anything before an ``@`` (pasted credentials) removed."""
    scheme, sep, rest = host.partition("://")
    if not sep:
        scheme, rest = "", host
    netloc, slash, path = rest.partition("/")
    if "@" in netloc:
        netloc = "***@" + netloc.rsplit("@", 1)[1]
    return f"{scheme}{sep}{netloc}{slash}{path}"


def _valid_host_name(hostname: str) -> bool:
    name = hostname.strip("[]")
    try:
        ipaddress.ip_address(name)
        return True
    except ValueError:
        return bool(_HOST_NAME.match(hostname))


def normalize_base_url(
    host: str | None, port: int | None = None, *, allow_insecure_http: bool = False, conn_id: str | None = None
) -> str:
    """Build the API base URL from the connection's Host field (labeled API base URL in the form); errors name
    the field of connection ``conn_id``.

    Accepts a full URL (``https://api.dune.com/api``, ``http://127.0.0.1:8765/api``) or a bare host name
    (``api.dune.com``, https assumed). A URL without a path gets Dune's ``/api`` prefix. Plain ``http`` is
    refused for non-loopback hosts unless ``allow_insecure_http`` is set, because the API key travels in a
    header.
    """
    text = (host or "").strip()
    if not text:
        return DEFAULT_BASE_URL
    if "://" not in text:
        text = f"https://{text}"
    shown = _shown(text)
    field = form_field(BASE_URL_LABEL, conn_id)
    if any(ch.isspace() or not ch.isprintable() for ch in text):
        raise DuneConfigurationError(f"{field}, {shown!r}, contains spaces or control characters")
    parts = urlsplit(text)
    scheme = parts.scheme.lower()
    if scheme not in ("http", "https"):
        raise DuneConfigurationError(
            f"{field} must be an http(s) URL such as {DEFAULT_BASE_URL}, got scheme {scheme!r}"
        )
    if parts.username or parts.password or "@" in parts.netloc:
        raise DuneConfigurationError(
            f"{field}, {shown!r}, contains credentials: remove them from the URL and put the API key in the "
            f"{API_KEY_LABEL} field"
        )
    if parts.query or parts.fragment:
        raise DuneConfigurationError(f"{field}, {shown!r}, must be a plain base URL without a query or fragment")
    if not parts.hostname:
        raise DuneConfigurationError(f"{field}, {shown!r}, has no host name")
    if not _valid_host_name(parts.hostname):
        raise DuneConfigurationError(f"{field}, {shown!r}, has an invalid host name {parts.hostname!r}")
    try:
        url_port = parts.port
    except ValueError:
        raise DuneConfigurationError(f"{field}, {shown!r}, has an invalid port: use a number from 1 to 65535") from None
    if port is not None and not (isinstance(port, int) and not isinstance(port, bool) and 0 < port < 65536):
        raise DuneConfigurationError(
            f"the port of {connection_name(conn_id)} must be a number from 1 to 65535, got {port!r}"
        )
    if scheme == "http" and not is_loopback_host(parts.hostname) and not allow_insecure_http:
        raise DuneConfigurationError(
            f"refusing to send the Dune API key over plain http to {parts.hostname}: use https:// in {field}, or "
            f"for a trusted private network turn on {_SETTINGS_BY_NAME['allow_insecure_http'].field(conn_id)}"
        )
    netloc = parts.netloc
    if port and url_port is None:
        netloc = f"{netloc}:{int(port)}"
    path = parts.path.rstrip("/") or "/api"
    return f"{scheme}://{netloc}{path}"


def extra_from_connection(conn_id: str, extra: Any) -> dict[str, Any]:
    """The connection's extra as a dict: Airflow silently reads invalid JSON as ``{}``, the provider does not
    (a typo there must not run with defaults against real credits)."""
    if extra is None or extra == "":
        return {}
    if isinstance(extra, Mapping):
        return dict(extra)
    try:
        value = json.loads(extra)
    except (TypeError, ValueError) as err:
        position = f" (line {err.lineno}, column {err.colno})" if isinstance(err, json.JSONDecodeError) else ""
        raise DuneConfigurationError(
            f"the extra of {connection_name(conn_id)} is not valid JSON{position}: fix it, or empty it to use the "
            "defaults"
        ) from None
    if not isinstance(value, dict):
        raise DuneConfigurationError(
            f"the extra of {connection_name(conn_id)} must be a JSON object, got {type(value).__name__}"
        )
    return value


_EXTRA_PREFIX = "extra__dune__"


def _extra_value(extra: Mapping[str, Any], key: str) -> Any:
    """The extra's value for ``key`` (also under the ``extra__dune__`` prefix older forms used); ``None`` when
    unset or blank, as a form leaves an empty field."""
    for name in (key, _EXTRA_PREFIX + key):
        value = extra.get(name)
        if isinstance(value, str):
            value = value.strip()
        if value is not None and value != "":
            return value
    return None


_SETTINGS_BY_NAME = {setting.name: setting for setting in EXTRA_SETTINGS}
_TRUE_WORDS = ("1", "true", "yes", "on")
_FALSE_WORDS = ("0", "false", "no", "off")


def read_extra_setting(extra: Mapping[str, Any], name: str, conn_id: str | None = None) -> Any:
    """The validated value of one :data:`~airflow_provider_dune.api.connection_fields.EXTRA_SETTINGS` entry, or its
    default when the extra leaves it unset; errors name the form field of connection ``conn_id``."""
    setting = _SETTINGS_BY_NAME[name]
    field = setting.field(conn_id)
    value = _extra_value(extra, name)
    if value is None:
        return setting.default
    if setting.kind == "boolean":
        if isinstance(value, bool):
            return value
        if str(value).lower() in _TRUE_WORDS + _FALSE_WORDS:
            return str(value).lower() in _TRUE_WORDS
        raise DuneConfigurationError(f"{field} must be true or false, got {value!r}")
    try:
        if isinstance(value, bool):
            raise TypeError
        number = float(value)
    except (TypeError, ValueError):
        raise DuneConfigurationError(f"{field} must be a number, got {value!r}") from None
    if not math.isfinite(number):
        raise DuneConfigurationError(f"{field} must be a finite number, got {value!r}")
    if setting.kind == "integer" and not number.is_integer():
        raise DuneConfigurationError(f"{field} must be a whole number, got {value!r}")
    if setting.minimum is not None and number < setting.minimum:
        raise DuneConfigurationError(f"{field} must be >= {setting.minimum:g}, got {value!r}")
    if setting.zero_or_at_least is not None and 0 < number < setting.zero_or_at_least:
        raise DuneConfigurationError(
            f"{field} must be 0 (no pacing) or >= {setting.zero_or_at_least:g} a minute, got "
            f"{value!r}: set it to your Dune plan's budget"
        )
    return int(number) if setting.kind == "integer" else number


@dataclass(frozen=True)
class RequestLimits:
    """How long one request may take.

    :param connect_timeout: seconds for the TCP and TLS connection.
    :param read_timeout: seconds any single read may wait.
    :param deadline: seconds for the whole request, connection to last byte.
    """

    connect_timeout: float
    read_timeout: float
    deadline: float


@dataclass(frozen=True)
class DuneConnectionSettings:
    """Everything the hook needs from the Airflow connection.

    :param base_url: API base URL, e.g. ``https://api.dune.com/api``.
    :param api_key: the Dune API key (kept out of ``repr``).
    :param conn_id: the Airflow connection they were read from (named in errors), empty when not known.
    :param timeout: read timeout per request in seconds.
    :param connect_timeout: TCP/TLS connect timeout in seconds.
    :param retry: retry policy for transient failures.
    :param max_datapoints_per_request: the account's cap on rows x columns per results request.
    :param reads_per_minute: the key's read budget the process paces to (0: no pacing).
    :param writes_per_minute: the key's budget of runs started per minute (0: no pacing).
    :param credit_guard: the credit ceiling and per-run warning threshold.
    """

    base_url: str
    api_key: str = field(repr=False)
    conn_id: str = ""
    timeout: float = DEFAULT_TIMEOUT
    connect_timeout: float = DEFAULT_CONNECT_TIMEOUT
    retry: RetryPolicy = field(default_factory=RetryPolicy)
    key_from_extra: bool = False
    max_datapoints_per_request: int = DEFAULT_MAX_DATAPOINTS_PER_REQUEST
    reads_per_minute: float = DEFAULT_READS_PER_MINUTE
    writes_per_minute: float = DEFAULT_WRITES_PER_MINUTE
    credit_guard: CreditGuard = field(default_factory=CreditGuard)

    @property
    def is_loopback(self) -> bool:
        """The API is on this machine (the emulator): no proxy may stand between it and the key."""
        return is_loopback_host(urlsplit(self.base_url).hostname or "")

    @property
    def limits(self) -> RequestLimits:
        """Per-request limits: ``timeout`` bounds each read and, with ``connect_timeout``, the whole answer."""
        return RequestLimits(
            connect_timeout=self.connect_timeout,
            read_timeout=self.timeout,
            deadline=self.connect_timeout + self.timeout,
        )


def connection_env_var(conn_id: str) -> str:
    """The environment variable Airflow reads connection ``conn_id`` from."""
    return "AIRFLOW_CONN_" + conn_id.upper()


def env_connection_problem(conn_id: str, environ: Mapping[str, str]) -> DuneConfigurationError | None:
    """Why the ``AIRFLOW_CONN_<ID>`` variable set for ``conn_id`` could not be read, when Airflow reported the
    connection as missing instead (Airflow 3.0 and 3.1 swallow the parse error). Never quotes the value."""
    env_name = connection_env_var(conn_id)
    value = environ.get(env_name)
    if value is None or not value.strip().startswith("{"):
        return None  # not set, or the URI form: Airflow's own message stands
    try:
        conn = json.loads(value)
    except ValueError as err:
        position = f" (line {err.lineno}, column {err.colno})" if isinstance(err, json.JSONDecodeError) else ""
        return DuneConfigurationError(
            f"the Airflow connection {conn_id!r} is set by {env_name}, which is not valid JSON{position}: fix it"
        )
    if not isinstance(conn, dict):
        return None
    try:
        extra_from_connection(conn_id, conn.get("extra"))
    except DuneConfigurationError as err:
        return DuneConfigurationError(f"{err} (it is set by {env_name})")
    return None


def missing_connection_message(conn_id: str) -> str:
    """What to do when Airflow has no connection ``conn_id``."""
    env_name = connection_env_var(conn_id)
    return (
        f"the Airflow connection {conn_id!r} is not defined: create it with type Dune (Admin > Connections, "
        f"`airflow connections add {conn_id} --conn-type dune --conn-password <API key>`, or the environment "
        f"variable {env_name}). On Airflow 3, code that runs outside a task or trigger (a script, a notebook, "
        "`python -c`) cannot read connections stored in the metadata database: there, define it with "
        f"{env_name} or a secrets backend."
    )


def settings_from_connection(
    conn_id: str,
    *,
    host: str | None,
    password: str | None,
    port: int | None,
    extra: Mapping[str, Any],
) -> DuneConnectionSettings:
    """Validate connection fields. The key is the Password field (labeled API Key), or ``api_key`` in the extra."""
    extra = dict(extra or {})

    def setting(name: str) -> Any:
        return read_extra_setting(extra, name, conn_id)

    key_from_extra = False
    api_key = (password or "").strip()
    if not api_key and _extra_value(extra, "api_key") is not None:
        api_key = str(_extra_value(extra, "api_key"))
        key_from_extra = True
    if not api_key:
        raise DuneConfigurationError(
            f"{connection_name(conn_id)} has no Dune API key: put the key in its {API_KEY_LABEL} field "
            "(create one at dune.com > Settings > API)"
        )
    try:
        retry = RetryPolicy(
            max_attempts=setting("max_retries"),
            min_wait=setting("retry_min_wait"),
            max_wait=setting("retry_max_wait"),
        )
    except ValueError as err:
        raise DuneConfigurationError(f"invalid retry settings in {connection_name(conn_id)}: {err}") from None
    return DuneConnectionSettings(
        base_url=normalize_base_url(host, port, allow_insecure_http=setting("allow_insecure_http"), conn_id=conn_id),
        conn_id=conn_id,
        api_key=api_key,
        timeout=setting("timeout"),
        connect_timeout=setting("connect_timeout"),
        retry=retry,
        key_from_extra=key_from_extra,
        max_datapoints_per_request=setting("max_datapoints_per_request"),
        reads_per_minute=setting("reads_per_minute"),
        writes_per_minute=setting("writes_per_minute"),
        credit_guard=CreditGuard(
            credit_limit=setting("credit_limit"),
            credit_limit_percent=setting("credit_limit_percent"),
            start_when_usage_unknown=setting("start_when_usage_unknown"),
            run_credit_warning=setting("run_credit_warning"),
        ),
    )
