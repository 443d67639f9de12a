from __future__ import annotations

import pickle
from datetime import datetime, timezone

import pytest

from airflow_provider_dune.api.errors import (
    DuneAPIError,
    DuneAuthError,
    DuneBadRequestError,
    DuneConnectionError,
    DuneCreditsExhaustedError,
    DuneNotFoundError,
    DuneRateLimitError,
    DuneServerError,
    error_from_response,
    parse_retry_after,
)


@pytest.mark.parametrize(
    ("code", "cls"),
    [
        (400, DuneBadRequestError),
        (401, DuneAuthError),
        (402, DuneCreditsExhaustedError),
        (403, DuneAuthError),
        (404, DuneNotFoundError),
        (429, DuneRateLimitError),
        (500, DuneServerError),
        (503, DuneServerError),
        (418, DuneAPIError),
    ],
)
def test_status_codes_map_to_error_classes(code: int, cls: type[DuneAPIError]) -> None:
    error = error_from_response(code, b'{"error": "the message"}', endpoint="GET /v1/x")
    assert type(error) is cls
    assert error.http_status == code
    assert error.message == "the message"
    assert f"HTTP {code}" in str(error) and "GET /v1/x" in str(error) and "the message" in str(error)


def test_credit_error_keeps_dunes_message_and_says_retrying_does_not_help() -> None:
    body = b'{"error": "This API request would exceed your configured limits per billing cycle."}'
    error = error_from_response(402, body)
    assert "exceed your configured limits" in str(error)
    assert "retrying will not help" in str(error)


def test_non_json_and_empty_bodies_still_give_a_message() -> None:
    assert error_from_response(502, b"<html>Bad gateway</html>").message == "<html>Bad gateway</html>"
    assert error_from_response(500, b"").message == "HTTP 500 with an empty body"


def test_retry_after_header_is_parsed_case_insensitively() -> None:
    assert error_from_response(429, b"{}", {"Retry-After": "7"}).retry_after == 7.0
    assert error_from_response(429, b"{}", {"retry-after": "1.5"}).retry_after == 1.5
    assert error_from_response(429, b"{}", {}).retry_after is None


def test_retry_after_http_date() -> None:
    now = datetime(2026, 1, 1, 12, 0, 0, tzinfo=timezone.utc)
    assert parse_retry_after("Thu, 01 Jan 2026 12:00:30 GMT", now=now) == 30.0
    assert parse_retry_after("garbage") is None
    assert parse_retry_after("-5") == 0.0


def test_errors_survive_pickling_with_their_fields() -> None:
    error = error_from_response(429, b'{"error": "slow down"}', {"Retry-After": "3"}, endpoint="GET /v1/x")
    copy = pickle.loads(pickle.dumps(error))
    assert type(copy) is DuneRateLimitError
    assert (copy.http_status, copy.message, copy.retry_after, str(copy)) == (429, "slow down", 3.0, str(error))
    conn = pickle.loads(pickle.dumps(DuneConnectionError("dropped", request_sent=False, conn_id="dune_prod")))
    assert conn.request_sent is False and conn.conn_id == "dune_prod"


def test_hints_name_the_connection_form_field_and_the_connection() -> None:
    """Hints name a field by the label the connection form shows, and the connection once the hook names it."""
    error = error_from_response(401, b'{"error": "invalid API key"}', endpoint="POST /v1/usage")
    assert "Check the API Key field of the Airflow connection;" in str(error)
    error.name_connection("dune_prod")
    assert "Check the API Key field of Airflow connection 'dune_prod';" in str(error)
    assert str(pickle.loads(pickle.dumps(error))) == str(error)
    limited = error_from_response(429, b"{}")
    limited.name_connection("dune_prod")
    assert "Reads per minute and Runs started per minute fields of Airflow connection 'dune_prod'" in str(limited)
    assert "Password" not in str(error) + str(limited)


def test_add_detail_extends_message() -> None:
    error = DuneServerError("Internal error", http_status=500)
    error.add_detail("Not retried.")
    assert str(error) == "Dune API error (HTTP 500): Internal error. Not retried."


# -- hostile answers: only the provider's errors, with messages that say what happened ---------------------------


def test_a_redirect_says_it_is_not_followed_and_where_it_pointed() -> None:
    from airflow_provider_dune.api.errors import DuneRedirectError

    error = error_from_response(307, b"", {"Location": "https://evil.example/api"}, endpoint="GET /v1/x")
    assert isinstance(error, DuneRedirectError)
    assert "HTTP 307, a redirect to https://evil.example/api" in str(error)
    assert "redirects are not followed" in str(error)


def test_deeply_nested_json_is_a_response_error_not_a_recursion_error() -> None:
    from airflow_provider_dune.api import endpoints
    from airflow_provider_dune.api.errors import DuneResponseError
    from airflow_provider_dune.api.responses import decode_response

    deep = b"[" * 100_000 + b"]" * 100_000
    request = endpoints.get_pipeline_status("P1")
    with pytest.raises(DuneResponseError, match="nested too deeply"):
        decode_response(request, 200, deep, {})
    with pytest.raises(DuneServerError):  # a 5xx with such a body still maps to its class
        decode_response(request, 500, deep, {})


def test_an_echoed_api_key_is_removed_from_every_message() -> None:
    from airflow_provider_dune.api import endpoints
    from airflow_provider_dune.api.errors import DuneResponseError
    from airflow_provider_dune.api.responses import decode_response

    key = "sk-live-0123456789abcdef"
    request = endpoints.get_pipeline_status("P1")
    with pytest.raises(DuneAuthError) as info:
        decode_response(request, 401, f'{{"error": "invalid API Key {key}"}}'.encode(), {}, secret=key)
    assert key not in str(info.value) and "***" in str(info.value)
    with pytest.raises(DuneResponseError) as bad:
        decode_response(request, 200, f"<html>{key}".encode(), {}, secret=key)
    assert key not in str(bad.value)


def test_may_have_started_run_survives_pickling() -> None:
    error = DuneConnectionError("dropped", request_sent=True)
    error.mark_may_have_started_run("it may have started")
    copy = pickle.loads(pickle.dumps(error))
    assert copy.may_have_started_run and copy.request_sent and "it may have started" in str(copy)


def _pieces(secret: str, size: int = 6) -> list[str]:
    return [secret[i : i + size] for i in range(len(secret) - size + 1)]


@pytest.mark.parametrize("shape", ["json-error", "json-message", "plain-text"])
@pytest.mark.parametrize("offset", range(470, 500, 3))
def test_a_key_echoed_across_the_message_cut_leaves_no_piece(shape: str, offset: int) -> None:
    """The message is cut at 500 characters: the key is removed before the cut, wherever it straddles it."""
    from airflow_provider_dune.api import endpoints
    from airflow_provider_dune.api.responses import decode_response

    key = "KEY0123456789abcdefghijklmnopqrstu"  # 34 characters, none of its 6-character pieces occur elsewhere
    text = "x" * offset + key + " trailing"
    body = {"json-error": f'{{"error": "{text}"}}', "json-message": f'{{"message": "{text}"}}', "plain-text": text}
    with pytest.raises(DuneAPIError) as info:
        decode_response(endpoints.get_pipeline_status("P1"), 500, body[shape].encode(), {}, secret=key)
    leaked = [piece for piece in _pieces(key) if piece in str(info.value)]
    assert leaked == [], str(info.value)[-80:]


@pytest.mark.parametrize("offset", range(100, 121, 2))
def test_a_key_echoed_across_the_preview_cut_leaves_no_piece(offset: int) -> None:
    from airflow_provider_dune.api import endpoints
    from airflow_provider_dune.api.errors import DuneResponseError
    from airflow_provider_dune.api.responses import decode_response

    key = "KEY0123456789abcdefghijklmnopqrstu"
    with pytest.raises(DuneResponseError) as info:
        decode_response(endpoints.get_pipeline_status("P1"), 200, ("<" * offset + key).encode(), {}, secret=key)
    assert [piece for piece in _pieces(key) if piece in str(info.value)] == [], str(info.value)


def test_redact_removes_a_piece_of_the_key_left_at_either_end_of_a_cut_text() -> None:
    from airflow_provider_dune.api.errors import redact

    key = "KEY0123456789abcdef"
    assert redact("invalid API key KEY0123456", key) == "invalid API key ***"
    assert redact("789abcdef was refused", key) == "*** was refused"
    assert redact("nothing here", key) == "nothing here"
