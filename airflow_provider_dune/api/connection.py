"""Reading a Dune Airflow connection into validated settings (base URL, API key, timeouts, retries)."""

from __future__ import annotations

import ipaddress
from collections.abc import Mapping
from dataclasses import dataclass, field
from typing import Any
from urllib.parse import urlsplit

from airflow_provider_dune.api.errors import DuneConfigurationError
from airflow_provider_dune.api.retry import RetryPolicy

DEFAULT_BASE_URL = "https://api.dune.com/api"
DEFAULT_TIMEOUT = 30.0
DEFAULT_CONNECT_TIMEOUT = 10.0

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


def normalize_base_url(host: str | None, port: int | None = None, *, allow_insecure_http: bool = False) -> str:
    """Build the API base URL from the connection's host field.

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
    parts = urlsplit(text)
    scheme = parts.scheme.lower()
    if scheme not in ("http", "https"):
        raise DuneConfigurationError(
            f"the Dune connection host must be an http(s) URL such as {DEFAULT_BASE_URL}, got scheme {scheme!r}"
        )
    if not parts.hostname:
        raise DuneConfigurationError(f"the Dune connection host {host!r} has no host name")
    if parts.query or parts.fragment or parts.username or parts.password:
        raise DuneConfigurationError(
            "the Dune connection host must be a plain base URL without credentials, query or fragment; "
            "put the API key in the Password field"
        )
    if scheme == "http" and not is_loopback_host(parts.hostname) and not allow_insecure_http:
        raise DuneConfigurationError(
            f"refusing to send the Dune API key over plain http to {parts.hostname}: use https://, or set "
            '"allow_insecure_http": true in the connection extra for a trusted private network'
        )
    netloc = parts.netloc
    if port and parts.port is None:
        netloc = f"{netloc}:{int(port)}"
    path = parts.path.rstrip("/") or "/api"
    return f"{scheme}://{netloc}{path}"


def _number(extra: Mapping[str, Any], key: str, default: float, *, minimum: float) -> float:
    value = extra.get(key, default)
    try:
        number = float(value)
    except (TypeError, ValueError):
        raise DuneConfigurationError(f"connection extra '{key}' must be a number, got {value!r}") from None
    if number < minimum:
        raise DuneConfigurationError(f"connection extra '{key}' must be >= {minimum}, got {value!r}")
    return number


def _flag(extra: Mapping[str, Any], key: str) -> bool:
    value = extra.get(key, False)
    if isinstance(value, str):
        return value.strip().lower() in ("1", "true", "yes", "on")
    return bool(value)


@dataclass(frozen=True)
class DuneConnectionSettings:
    """Everything the hook needs from the Airflow connection.

    :param base_url: API base URL, e.g. ``https://api.dune.com/api``.
    :param api_key: the Dune API key (kept out of ``repr``).
    :param timeout: read timeout per request in seconds.
    :param connect_timeout: TCP/TLS connect timeout in seconds.
    :param retry: retry policy for transient failures.
    """

    base_url: str
    api_key: str = field(repr=False)
    timeout: float = DEFAULT_TIMEOUT
    connect_timeout: float = DEFAULT_CONNECT_TIMEOUT
    retry: RetryPolicy = field(default_factory=RetryPolicy)
    key_from_extra: bool = False


def settings_from_connection(
    conn_id: str,
    *,
    host: str | None,
    password: str | None,
    port: int | None,
    extra: Mapping[str, Any],
) -> DuneConnectionSettings:
    """Validate connection fields. The key is the Password field, or ``api_key`` in the extra."""
    extra = dict(extra or {})
    key_from_extra = False
    api_key = (password or "").strip()
    if not api_key and extra.get("api_key"):
        api_key = str(extra["api_key"]).strip()
        key_from_extra = True
    if not api_key:
        raise DuneConfigurationError(
            f"the Airflow connection {conn_id!r} has no Dune API key: put the key in its Password field "
            "(create one at dune.com > Settings > API)"
        )
    defaults = RetryPolicy()
    try:
        retry = RetryPolicy(
            max_attempts=int(_number(extra, "max_retries", defaults.max_attempts, minimum=1)),
            min_wait=_number(extra, "retry_min_wait", defaults.min_wait, minimum=0),
            max_wait=_number(extra, "retry_max_wait", defaults.max_wait, minimum=0),
        )
    except ValueError as err:
        raise DuneConfigurationError(f"invalid retry settings in connection {conn_id!r}: {err}") from None
    return DuneConnectionSettings(
        base_url=normalize_base_url(host, port, allow_insecure_http=_flag(extra, "allow_insecure_http")),
        api_key=api_key,
        timeout=_number(extra, "timeout", DEFAULT_TIMEOUT, minimum=0.1),
        connect_timeout=_number(extra, "connect_timeout", DEFAULT_CONNECT_TIMEOUT, minimum=0.1),
        retry=retry,
        key_from_extra=key_from_extra,
    )
