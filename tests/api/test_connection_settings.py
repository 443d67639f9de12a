from __future__ import annotations

import json

import pytest

from airflow_provider_dune.api.connection import (
    DEFAULT_BASE_URL,
    is_loopback_host,
    normalize_base_url,
    settings_from_connection,
)
from airflow_provider_dune.api.errors import DuneConfigurationError


@pytest.mark.parametrize(
    ("host", "port", "expected"),
    [
        (None, None, DEFAULT_BASE_URL),
        ("", None, DEFAULT_BASE_URL),
        ("api.dune.com", None, "https://api.dune.com/api"),
        ("https://api.dune.com", None, "https://api.dune.com/api"),
        ("https://api.dune.com/api/", None, "https://api.dune.com/api"),
        ("http://127.0.0.1:8765/api", None, "http://127.0.0.1:8765/api"),
        ("http://localhost", 8765, "http://localhost:8765/api"),
        ("http://[::1]:9000/api", None, "http://[::1]:9000/api"),
        ("https://proxy.example.com/dune/api", None, "https://proxy.example.com/dune/api"),
    ],
)
def test_base_url_normalisation(host: str | None, port: int | None, expected: str) -> None:
    assert normalize_base_url(host, port) == expected


def test_plain_http_to_remote_host_is_refused_with_a_fix() -> None:
    with pytest.raises(DuneConfigurationError, match="refusing to send the Dune API key over plain http"):
        normalize_base_url("http://api.dune.com/api")
    assert normalize_base_url("http://dune-emulator:8765/api", allow_insecure_http=True).startswith("http://")


@pytest.mark.parametrize("host", ["ftp://api.dune.com", "https://user:pw@api.dune.com", "https://x.com/api?k=1"])
def test_unusable_hosts_are_rejected(host: str) -> None:
    with pytest.raises(DuneConfigurationError):
        normalize_base_url(host)


def test_loopback_detection() -> None:
    assert all(map(is_loopback_host, ["localhost", "127.0.0.1", "127.5.5.5", "::1", "[::1]", "a.localhost"]))
    assert not any(map(is_loopback_host, ["10.0.0.1", "example.com", "192.168.1.1", "localhost.evil.com"]))


def test_missing_key_says_where_to_put_it() -> None:
    with pytest.raises(DuneConfigurationError, match="no Dune API key: put the key in its API Key field"):
        settings_from_connection("dune_default", host=None, password="", port=None, extra={})


def test_key_from_extra_and_tuning_extras() -> None:
    settings = settings_from_connection(
        "c",
        host=None,
        password=None,
        port=None,
        extra={"api_key": "from-extra", "timeout": "12", "max_retries": 2, "allow_insecure_http": "false"},
    )
    assert settings.api_key == "from-extra" and settings.key_from_extra
    assert settings.timeout == 12.0 and settings.retry.max_attempts == 2
    assert "from-extra" not in repr(settings)


@pytest.mark.parametrize(
    ("extra", "message"),
    [
        ({"timeout": "soon"}, "the Read timeout \\(seconds\\) field \\(timeout in the extra\\) .* must be a number"),
        ({"timeout": 0}, "\\(timeout in the extra\\) of Airflow connection 'c' must be >= 0.1"),
        ({"retry_min_wait": 100}, "invalid retry settings in Airflow connection 'c'"),
        # A budget of a thousandth of a read a minute would hold each read back for 17 hours, past any timeout.
        ({"reads_per_minute": 0.001}, "the Reads per minute field .* must be 0 \\(no pacing\\) or >= 1 a minute"),
        ({"reads_per_minute": "1e-320"}, "\\(reads_per_minute in the extra\\) .* must be 0 \\(no pacing\\) or >= 1"),
        ({"writes_per_minute": 0.5}, "the Runs started per minute field .* must be 0 \\(no pacing\\) or >= 1 a minute"),
        ({"reads_per_minute": -1}, "\\(reads_per_minute in the extra\\) of Airflow connection 'c' must be >= 0"),
    ],
)
def test_bad_extras_are_explained(extra: dict, message: str) -> None:
    with pytest.raises(DuneConfigurationError, match=message):
        settings_from_connection("c", host=None, password="k", port=None, extra=extra)


@pytest.mark.parametrize("per_minute", [0, "0", 1, 40, 1e6])
def test_pacing_budgets_are_off_or_at_least_one_a_minute(per_minute: object) -> None:
    extra = {"reads_per_minute": per_minute, "writes_per_minute": per_minute}
    settings = settings_from_connection("c", host=None, password="k", port=None, extra=extra)
    assert settings.reads_per_minute == settings.writes_per_minute == float(per_minute)  # type: ignore[arg-type]


# -- malformed hosts and extras are refused before any request, without echoing credentials ---------------------


@pytest.mark.parametrize(
    ("host", "message"),
    [
        ("api.dune.com:abc", "invalid port"),
        ("https://api.dune.com:99999/api", "invalid port"),
        ("https://api dune.com/api", "spaces or control characters"),
        ("https://api.dune.com\t/api", "spaces or control characters"),
        ("https://api.dune!com/api", "invalid host name"),
    ],
)
def test_malformed_hosts_say_what_is_wrong(host: str, message: str) -> None:
    with pytest.raises(DuneConfigurationError, match=message):
        normalize_base_url(host)


@pytest.mark.parametrize("host", ["https://me:s3cret-key@api.dune.com/api", "https://:s3cret-key@/api", "s3cret-key@"])
def test_credentials_pasted_in_the_host_are_never_echoed(host: str) -> None:
    with pytest.raises(DuneConfigurationError) as info:
        normalize_base_url(host)
    assert "s3cret-key" not in str(info.value)
    assert "the API base URL field" in str(info.value) and "the API Key field" in str(info.value)


@pytest.mark.parametrize("port", [0, 70000, -1, True])
def test_an_impossible_port_field_is_refused(port: object) -> None:
    with pytest.raises(DuneConfigurationError, match="port of the Airflow connection must be a number from 1 to 65535"):
        normalize_base_url("https://api.dune.com", port)  # type: ignore[arg-type]


TRAILING_COMMA = '{"timeout": 5,}'


def _json_error_column(text: str) -> int:
    """Where this Python's json module places the error (3.13 points at a trailing comma, older ones after it)."""
    try:
        json.loads(text)
    except json.JSONDecodeError as err:
        return err.colno
    raise AssertionError(f"{text!r} is valid JSON")


@pytest.mark.parametrize(
    ("extra", "message"),
    [
        (TRAILING_COMMA, f"not valid JSON \\(line 1, column {_json_error_column(TRAILING_COMMA)}\\)"),
        ('["timeout"]', "must be a JSON object"),
    ],
)
def test_an_unreadable_extra_is_an_error_not_the_defaults(extra: str, message: str) -> None:
    from airflow_provider_dune.api.connection import extra_from_connection

    with pytest.raises(DuneConfigurationError, match=message):
        extra_from_connection("dune_default", extra)
    assert extra_from_connection("dune_default", "") == {}
    assert extra_from_connection("dune_default", '{"timeout": 5}') == {"timeout": 5}
