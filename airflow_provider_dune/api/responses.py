"""Turning a raw HTTP answer into decoded JSON or the matching error, identically for both transports."""

from __future__ import annotations

import json
from collections.abc import Mapping
from typing import Any

from airflow_provider_dune.api.endpoints import DuneRequest
from airflow_provider_dune.api.errors import DuneResponseError, error_from_response


def decode_response(request: DuneRequest, status_code: int, content: bytes, headers: Mapping[str, str]) -> Any:
    """Return the JSON body of a 2xx answer; raise the mapped :class:`DuneAPIError` otherwise."""
    if not 200 <= status_code < 300:
        raise error_from_response(status_code, content, headers, endpoint=request.description)
    try:
        return json.loads(content) if content else {}
    except ValueError:
        preview = content[:120].decode("utf-8", errors="replace")
        raise DuneResponseError(
            f"the response is not valid JSON (starts with {preview!r})",
            http_status=status_code,
            endpoint=request.description,
        ) from None
