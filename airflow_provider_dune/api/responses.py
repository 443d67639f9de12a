"""Turning a raw HTTP answer into decoded JSON or the matching error, identically for both transports."""

from __future__ import annotations

import json
from collections.abc import Mapping
from typing import Any

from airflow_provider_dune.api.endpoints import DuneRequest
from airflow_provider_dune.api.errors import (
    DuneConfigurationError,
    DuneError,
    DuneResponseError,
    error_from_response,
    redact,
)

_PREVIEW_BYTES = 120


def decode_response(
    request: DuneRequest, status_code: int, content: bytes, headers: Mapping[str, str], *, secret: str = ""
) -> Any:
    """Return the JSON body of a 2xx answer; raise the mapped :class:`DuneAPIError` otherwise.

    ``secret`` (the API key) is removed from every message built from the body, should a server echo it.
    """
    if not 200 <= status_code < 300:
        raise error_from_response(status_code, content, headers, endpoint=request.description, secret=secret)
    try:
        return json.loads(content) if content else {}
    except (ValueError, RecursionError) as err:
        reason = "nested too deeply" if isinstance(err, RecursionError) else "not valid JSON"
        # Redacted before the cut, over enough bytes to hold a key that straddles it.
        preview = redact(content[: _PREVIEW_BYTES + len(secret.encode())].decode("utf-8", errors="replace"), secret)
        preview = preview[:_PREVIEW_BYTES]
        raise DuneResponseError(
            f"the response is {reason} (starts with {preview!r})",
            http_status=status_code,
            endpoint=request.description,
        ) from None


def response_too_large(request: DuneRequest, limit: int, status_code: int | None = None) -> DuneError:
    """The error for an answer longer than ``limit`` bytes (the rest is not read).

    A results page over the limit is a :class:`DuneConfigurationError` (not retried: reading it again costs
    the same and fails the same) that says how many rows were asked for and to lower ``page_size``.
    """
    rows = (request.params or {}).get("limit")
    if "/results" in request.path and status_code is not None and 200 <= status_code < 300:
        asked = f"{rows} rows" if rows else "a page without a row limit"
        smaller = f" (e.g. page_size={max(1, int(rows) // 4)})" if rows and rows.isdigit() else ""
        return DuneConfigurationError(
            f"{request.description}: the results page ({asked}) is larger than {limit / (1024 * 1024):g} MiB, the "
            f"most read into memory at once. Set a lower page_size on the task{smaller}, or select fewer or "
            "narrower columns"
        )
    return DuneResponseError(
        f"the response is larger than {limit / (1024 * 1024):g} MiB and was not read to the end",
        http_status=status_code,
        endpoint=request.description,
    )
