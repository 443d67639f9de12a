"""Response profiles: which of the shapes Dune has been seen to send the emulator answers with.

``strict`` answers with the spec's complete, ideal field set, always the same. ``realistic`` (the default)
draws each answer, seeded and so reproducible, from the shapes listed in the Dune API reference's
``REAL_SHAPES.md``: fields left out rather than null, extra fields the spec does not list, zero timestamps,
``cancelled_at`` on a completed execution, ``QUERY_STATE_CANCELED`` spelled with one L, SQL errors with and
without line/column, result metadata flat inside ``result``, a pipeline node carrying both status objects, a
partial-result refusal as HTTP 400 as well as a 200 with a failed state, and the datapoint-cap refusal under
more than one status code (Dune's code for it is not documented).
"""

from __future__ import annotations

import os
import random
import secrets
import threading
from collections.abc import Callable
from typing import Any

PROFILES: tuple[str, ...] = ("realistic", "strict")
DEFAULT_PROFILE = "realistic"
#: Environment variables that choose the profile and seed of every emulator that is not told otherwise.
PROFILE_ENV = "DUNE_EMULATOR_PROFILE"
SEED_ENV = "DUNE_EMULATOR_SEED"

#: What Dune sends for "not set" instead of leaving a timestamp out.
ZERO_TIMESTAMP = "1970-01-01T00:00:00Z"
#: Dune's words when a truncated result is read without ``allow_partial_results=true`` (Dune's docs).
PARTIAL_RESULT_MESSAGE = "Partial Result, please request with 'allow_partial_results=true'"
#: Dune's words when a results request would return more datapoints than the account allows per request.
DATAPOINT_LIMIT_MESSAGE = (
    "This api request would exceed your configured limits per request. Please use pagination "
    "(limit/offset) or set ignore_max_datapoints_per_request=true"
)

_METADATA_OPTIONAL = ("row_count", "pending_time_millis")
_STATUS_EXTRAS = {"max_inflight_interactive_executions": 3, "max_inflight_interactive_reached": 0}
_FINISHED_STATES = frozenset(
    {
        "QUERY_STATE_COMPLETED",
        "QUERY_STATE_COMPLETED_PARTIAL",
        "QUERY_STATE_FAILED",
        "QUERY_STATE_CANCELLED",
        "QUERY_STATE_EXPIRED",
    }
)


def new_profile_seed() -> int:
    """A fresh seed for a realistic profile (print it: it replays the same shapes)."""
    return secrets.randbelow(1_000_000_000)


def profile_from_environment() -> tuple[str, int | None]:
    """The profile and seed set by ``DUNE_EMULATOR_PROFILE`` / ``DUNE_EMULATOR_SEED`` (defaults otherwise)."""
    name = os.environ.get(PROFILE_ENV, "").strip() or DEFAULT_PROFILE
    raw_seed = os.environ.get(SEED_ENV, "").strip()
    if not raw_seed:
        return name, None
    try:
        return name, int(raw_seed)
    except ValueError:
        raise ValueError(f"{SEED_ENV} must be an integer, got {raw_seed!r}") from None


class ResponseProfile:
    """Shapes the emulator's answers; one per emulator, safe to share between its request threads.

    :param name: ``realistic`` or ``strict``; ``None`` reads ``DUNE_EMULATOR_PROFILE`` (default realistic).
    :param seed: seed of the realistic draws; ``None`` reads ``DUNE_EMULATOR_SEED``, else picks one (see
        :attr:`seed`).
    """

    def __init__(self, name: str | None = None, seed: int | None = None) -> None:
        env_name, env_seed = profile_from_environment()
        name = env_name if name is None else name
        seed = env_seed if seed is None else seed
        if name not in PROFILES:
            raise ValueError(f"unknown response profile {name!r}: use one of {', '.join(PROFILES)}")
        if seed is not None and (isinstance(seed, bool) or not isinstance(seed, int)):
            raise ValueError(f"the profile seed must be an integer, got {seed!r}")
        self.name = name
        self.seed = new_profile_seed() if seed is None else seed
        self._lock = threading.Lock()
        self._drawn: dict[str, int] = {}

    @property
    def realistic(self) -> bool:
        return self.name == "realistic"

    def describe(self) -> str:
        return f"profile {self.name}, seed {self.seed}" if self.realistic else "profile strict"

    def reset(self) -> None:
        """Start the draws again from the seed (the emulator's reset calls this)."""
        with self._lock:
            self._drawn.clear()

    def _rng(self, endpoint: str) -> random.Random:
        # One stream per endpoint and answer number: an answer's shape does not depend on other endpoints' traffic.
        with self._lock:
            index = self._drawn.get(endpoint, 0)
            self._drawn[endpoint] = index + 1
        return random.Random(f"{self.seed}:{endpoint}:{index}")

    def answer(self, endpoint: str, payload: dict[str, Any]) -> tuple[int, dict[str, Any]]:
        """The status and body to send for a successful ``endpoint`` call whose ideal body is ``payload``."""
        if not self.realistic:
            return 200, payload
        rng = self._rng(endpoint)
        if endpoint in ("execution_results", "query_results") and _is_partial_refusal(payload) and rng.random() < 0.5:
            return 400, {"error": PARTIAL_RESULT_MESSAGE}
        shaper = _SHAPERS.get(endpoint)
        if shaper is not None:
            shaper(payload, rng)
        return 200, payload

    def error_status(self, endpoint: str, status: int, message: str) -> int:
        """The status code of an error answer; the datapoint refusal's is not documented, so it varies."""
        if self.realistic and message == DATAPOINT_LIMIT_MESSAGE:
            return self._rng(endpoint + ":error").choice((400, 402, 403))
        return status


def _is_partial_refusal(payload: dict[str, Any]) -> bool:
    error = payload.get("error")
    return isinstance(error, dict) and error.get("message") == PARTIAL_RESULT_MESSAGE


def _maybe(rng: random.Random, probability: float) -> bool:
    return rng.random() < probability


def _status_fields(body: dict[str, Any], rng: random.Random) -> None:
    """Execution status fields, as in the status and results answers."""
    state = body.get("state")
    if "is_execution_finished" in body and _maybe(rng, 0.5):
        del body["is_execution_finished"]
    if state == "QUERY_STATE_PENDING" and _maybe(rng, 0.5):
        body["queue_position"] = rng.randint(1_000, 60_000)
    if state not in _FINISHED_STATES and "expires_at" not in body and _maybe(rng, 0.5):
        body["expires_at"] = ZERO_TIMESTAMP
    if state == "QUERY_STATE_COMPLETED" and "cancelled_at" not in body and _maybe(rng, 0.3):
        body["cancelled_at"] = body.get("execution_ended_at") or ZERO_TIMESTAMP
    if state == "QUERY_STATE_CANCELLED" and _maybe(rng, 0.5):
        body["state"] = "QUERY_STATE_CANCELED"
    if _maybe(rng, 0.5):
        body.update(_STATUS_EXTRAS)
    error = body.get("error")
    if isinstance(error, dict) and "metadata" in error and _maybe(rng, 0.5):
        del error["metadata"]


def _drop_metadata_fields(metadata: Any, rng: random.Random) -> None:
    if isinstance(metadata, dict):
        for key in _METADATA_OPTIONAL:
            if key in metadata and _maybe(rng, 0.5):
                del metadata[key]


def _execution_status(body: dict[str, Any], rng: random.Random) -> None:
    _status_fields(body, rng)
    _drop_metadata_fields(body.get("result_metadata"), rng)


def _results(body: dict[str, Any], rng: random.Random) -> None:
    _status_fields(body, rng)
    result = body.get("result")
    if not isinstance(result, dict):
        return
    metadata = result.get("metadata")
    _drop_metadata_fields(metadata, rng)
    if isinstance(metadata, dict) and _maybe(rng, 0.3):
        # The older documented shape: the metadata fields straight inside ``result``.
        del result["metadata"]
        result.update(metadata)


def _pipeline_status(body: dict[str, Any], rng: random.Random) -> None:
    for node in body.get("node_executions") or ():
        if not isinstance(node, dict):
            continue
        has_query = "query_execution_status" in node
        sibling = "materialized_view_refresh_status" if has_query else "query_execution_status"
        if _maybe(rng, 0.3):
            node[sibling] = {}  # Dune's docs example: one node carrying both status objects.
        if _maybe(rng, 0.2):
            node["attempt"] = 1
    if _maybe(rng, 0.3):
        body["pipeline_execution_started_at"] = ZERO_TIMESTAMP


def _materialized_view(body: dict[str, Any], rng: random.Random) -> None:
    if _maybe(rng, 0.5):
        body.update(cron_expression=None, performance="medium")


_SHAPERS: dict[str, Callable[[dict[str, Any], random.Random], None]] = {
    "execution_status": _execution_status,
    "execution_results": _results,
    "query_results": _results,
    "pipeline_status": _pipeline_status,
    "get_materialized_view": _materialized_view,
}
